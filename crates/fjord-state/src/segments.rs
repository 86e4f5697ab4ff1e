//! Time segments shared by the window and session layouts.
//!
//! Both layouts put a segment id first in every key, so that everything older than the
//! retention period is a contiguous key range that one range delete removes, whatever the
//! engine. A segment covers `segment_interval` milliseconds: segment id =
//! `floor(time / segment_interval)` (negative times give negative ids).
//!
//! Times and segment ids are signed; they are encoded as 8 bytes big-endian with the sign bit
//! flipped, so that bytewise key order is numeric order, negative values included.

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use parking_lot::Mutex;

use crate::{KeyValueBytesStore, StoreError, WriteBatch};

/// Encodes a signed integer so that bytewise order is numeric order.
pub(crate) fn encode_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

/// The inverse of [`encode_i64`].
pub(crate) fn decode_i64(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

/// Reads an encoded `i64` at `at`.
pub(crate) fn read_i64(bytes: &[u8], at: usize) -> Option<i64> {
    let slice = bytes.get(at..at.checked_add(8)?)?;
    let array: [u8; 8] = slice.try_into().ok()?;
    Some(decode_i64(array))
}

/// The default segment interval for a retention period, as Kafka Streams computes it for its
/// default of 3 segments: `max(retention / 2, 60_000)`.
pub fn default_segment_interval(retention_ms: i64) -> i64 {
    (retention_ms / 2).max(60_000)
}

/// Segment bookkeeping of one window or session store.
pub(crate) struct Segments {
    pub(crate) inner: Arc<dyn KeyValueBytesStore>,
    pub(crate) retention_ms: i64,
    pub(crate) interval_ms: i64,
    /// The largest time seen by puts and expiries (`i64::MIN`: none yet).
    observed: AtomicI64,
    /// The lowest segment that may hold data, once known.
    min_segment: Mutex<MinSegment>,
}

#[derive(Default)]
struct MinSegment {
    /// The lowest segment staged by puts or found in the store.
    lowest: Option<i64>,
    /// Whether the store was scanned for its lowest segment (done once, on the first expiry).
    scanned: bool,
}

impl Segments {
    pub(crate) fn new(
        inner: Arc<dyn KeyValueBytesStore>,
        retention_ms: i64,
        interval_ms: i64,
    ) -> Self {
        Self {
            inner,
            retention_ms: retention_ms.max(0),
            interval_ms: interval_ms.max(1),
            observed: AtomicI64::new(i64::MIN),
            min_segment: Mutex::new(MinSegment::default()),
        }
    }

    pub(crate) fn segment_id(&self, time: i64) -> i64 {
        time.div_euclid(self.interval_ms)
    }

    pub(crate) fn observed(&self) -> i64 {
        self.observed.load(Ordering::Acquire)
    }

    pub(crate) fn observe(&self, time: i64) {
        self.observed.fetch_max(time, Ordering::AcqRel);
    }

    /// The lowest live time: data with a time below it is expired (Kafka's rule: expired when
    /// `time <= observed stream time - retention`).
    pub(crate) fn live_from(&self) -> i64 {
        let observed = self.observed();
        if observed == i64::MIN {
            i64::MIN
        } else {
            observed.saturating_sub(self.retention_ms).saturating_add(1)
        }
    }

    /// Notes a staged write in `segment`.
    pub(crate) fn note_segment(&self, segment: i64) {
        let mut min = self.min_segment.lock();
        min.lowest = Some(min.lowest.map_or(segment, |m| m.min(segment)));
    }

    /// Observes `stream_time` and stages the deletion of every segment that holds only expired
    /// data.
    pub(crate) fn expire(
        &self,
        batch: &mut WriteBatch,
        stream_time: i64,
    ) -> Result<(), StoreError> {
        self.observe(stream_time);
        let live_from = self.live_from();
        if live_from == i64::MIN {
            return Ok(());
        }
        // Segment `s` holds times in [s * interval, (s + 1) * interval): all expired when
        // s < segment_id(live_from).
        let cut = self.segment_id(live_from);
        let mut min = self.min_segment.lock();
        if !min.scanned {
            if let Some(first) = self.first_segment_at_or_after(i64::MIN)? {
                min.lowest = Some(min.lowest.map_or(first, |m| m.min(first)));
            }
            min.scanned = true;
        }
        if let Some(lowest) = min.lowest
            && lowest < cut
        {
            batch.delete_range(encode_i64(lowest).to_vec(), encode_i64(cut).to_vec());
            min.lowest = Some(cut);
        }
        Ok(())
    }

    /// The first segment at or after `segment` that has data in the store.
    pub(crate) fn first_segment_at_or_after(
        &self,
        segment: i64,
    ) -> Result<Option<i64>, StoreError> {
        let from = encode_i64(segment);
        let mut iter = self.inner.range(Bound::Included(&from), Bound::Unbounded)?;
        match iter.next() {
            None => Ok(None),
            Some(item) => {
                let (key, _) = item?;
                read_i64(&key, 0)
                    .map(Some)
                    .ok_or_else(|| self.corrupt("key shorter than a segment id"))
            }
        }
    }

    /// Calls `f` for each segment in `[from, to]` that has data, in order, skipping empty
    /// segments with one seek each.
    pub(crate) fn for_each_segment(
        &self,
        from: i64,
        to: i64,
        mut f: impl FnMut(i64) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut next = from;
        while next <= to {
            let Some(segment) = self.first_segment_at_or_after(next)? else {
                break;
            };
            if segment > to {
                break;
            }
            f(segment)?;
            match segment.checked_add(1) {
                Some(n) => next = n,
                None => break,
            }
        }
        Ok(())
    }

    /// The last segment that has data in the store (one seek per segment with data).
    pub(crate) fn last_segment(&self) -> Result<Option<i64>, StoreError> {
        let mut last = None;
        self.for_each_segment(i64::MIN, i64::MAX, |segment| {
            last = Some(segment);
            Ok(())
        })?;
        Ok(last)
    }

    /// The segments of the times in `[from, to]`, in order (none when `from > to`).
    pub(crate) fn span(&self, from: i64, to: i64) -> impl Iterator<Item = i64> + use<> {
        let last = if from > to { i64::MIN } else { self.segment_id(to) };
        let first = if from > to { i64::MAX } else { self.segment_id(from) };
        first..=last
    }

    pub(crate) fn corrupt(&self, reason: &str) -> StoreError {
        StoreError::Corrupt { store: self.inner.name().to_string(), reason: reason.to_string() }
    }
}

/// Appends `[key len: u32 BE][key]`. Keys are Kafka record keys, whose length the protocol
/// bounds by `i32::MAX`.
pub(crate) fn push_key(out: &mut Vec<u8>, key: &[u8]) {
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
}

/// Reads `[key len][key]` at `at`; returns the key and the offset after it.
pub(crate) fn read_key(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let len_bytes: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let start = at + 4;
    let end = start.checked_add(len)?;
    Some((bytes.get(start..end)?, end))
}
