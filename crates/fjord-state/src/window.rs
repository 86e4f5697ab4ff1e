//! The window store layout: windowed aggregates over any [`KeyValueBytesStore`].
//!
//! # Key layout
//!
//! ```text
//! [segment id: i64, 8 bytes][key len: u32 BE][key][window start: i64, 8 bytes]
//! ```
//!
//! `i64`s are big-endian with the sign bit flipped, so byte order is numeric order and
//! negative timestamps sort before positive ones. Segment id = `floor(window start /
//! segment interval)`.
//!
//! - The segment id comes first so that expiring old windows is one range delete of whole
//!   segments (`[lowest segment, first live segment)`), with no scan, on RocksDB a single range
//!   tombstone.
//! - The key is length-prefixed so that the windows of one key are contiguous within a segment:
//!   with a bare key, key `a` at some time and key `a\x00` would interleave.
//! - The window start comes last, so the windows of a key in a segment are in time order and
//!   `fetch(key, from, to)` is one range scan per segment that has data (empty segments are
//!   skipped with one seek).
//!
//! # Retention
//!
//! The store tracks the observed stream time (the largest window start put, or the stream time
//! given to [`WindowStore::expire`]). Like Kafka Streams, a window is expired when
//! `window start <= observed stream time - retention`: puts of expired windows are dropped and
//! reads do not return them, even before `expire` has removed them. The observed stream time is
//! kept in memory only; after a restart it advances again with the puts (or
//! [`WindowStore::observe`]).
//!
//! # Duplicates
//!
//! A store made with [`WindowStore::with_duplicates`] keeps every put (Kafka's
//! `retainDuplicates`, for the buffers of stream-stream joins, where one key can have several
//! records with the same timestamp): each key gets a 4-byte big-endian sequence number after the
//! window start, so puts of the same (key, start) never overwrite each other and `fetch` returns
//! them in put order. The sequence is per store object: it starts after the largest number the
//! store holds (one scan of the store at the first put, so that a reopened store never reuses a
//! key), and wraps around after `u32::MAX` puts.

use std::ops::Bound;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::segments::{Segments, encode_i64, push_key, read_i64, read_key};
use crate::{KeyValueBytesStore, StoreError, WriteBatch};

pub use crate::segments::default_segment_interval;

/// One window of [`WindowStore::fetch_all`]: `(key, window start, value)`.
pub type WindowEntry = (Vec<u8>, i64, Vec<u8>);

/// A window store over a key-value store. Writes are staged into [`WriteBatch`]es that the
/// caller applies with [`KeyValueBytesStore::write`] (with its changelog offset).
pub struct WindowStore {
    segments: Segments,
    /// With duplicates: the next sequence number, once the store was scanned for it.
    duplicates: Option<Mutex<Option<u32>>>,
}

/// The length of the sequence number after the window start of a store with duplicates.
const SEQ_LEN: usize = 4;

impl std::fmt::Debug for WindowStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowStore")
            .field("store", &self.segments.inner.name())
            .field("retention_ms", &self.segments.retention_ms)
            .field("segment_interval_ms", &self.segments.interval_ms)
            .finish()
    }
}

impl WindowStore {
    /// A window store over `inner` (which it owns: nothing else may write other keys to it),
    /// keeping windows for `retention_ms` (at least the window size plus the grace period) in
    /// segments of `segment_interval_ms` (see [`default_segment_interval`]; at least 1).
    pub fn new(
        inner: Arc<dyn KeyValueBytesStore>,
        retention_ms: i64,
        segment_interval_ms: i64,
    ) -> Self {
        Self { segments: Segments::new(inner, retention_ms, segment_interval_ms), duplicates: None }
    }

    /// A window store that keeps every put, duplicates of a (key, window start) included (see
    /// the module docs).
    pub fn with_duplicates(
        inner: Arc<dyn KeyValueBytesStore>,
        retention_ms: i64,
        segment_interval_ms: i64,
    ) -> Self {
        Self {
            duplicates: Some(Mutex::new(None)),
            ..Self::new(inner, retention_ms, segment_interval_ms)
        }
    }

    /// Whether it keeps duplicates.
    pub fn retains_duplicates(&self) -> bool {
        self.duplicates.is_some()
    }

    fn suffix_len(&self) -> usize {
        if self.duplicates.is_some() { SEQ_LEN } else { 0 }
    }

    /// The underlying store.
    pub fn inner(&self) -> &Arc<dyn KeyValueBytesStore> {
        &self.segments.inner
    }

    /// The retention period.
    pub fn retention_ms(&self) -> i64 {
        self.segments.retention_ms
    }

    /// The segment interval.
    pub fn segment_interval_ms(&self) -> i64 {
        self.segments.interval_ms
    }

    /// The observed stream time (`i64::MIN` before any).
    pub fn observed_stream_time(&self) -> i64 {
        self.segments.observed()
    }

    /// Advances the observed stream time (never moves it back).
    pub fn observe(&self, stream_time: i64) {
        self.segments.observe(stream_time);
    }

    /// The segment of a window start.
    pub fn segment_id(&self, window_start: i64) -> i64 {
        self.segments.segment_id(window_start)
    }

    /// The store key of `(key, window start)`.
    pub fn encode_key(&self, key: &[u8], window_start: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 4 + key.len() + 8);
        out.extend_from_slice(&encode_i64(self.segment_id(window_start)));
        push_key(&mut out, key);
        out.extend_from_slice(&encode_i64(window_start));
        out
    }

    /// The store key a put of `(key, window start)` writes: [`Self::encode_key`], or with
    /// duplicates a new key with the next sequence number (the first call scans the store for
    /// the largest one it holds).
    pub fn put_key(&self, key: &[u8], window_start: i64) -> Result<Vec<u8>, StoreError> {
        let mut out = self.encode_key(key, window_start);
        if let Some(next) = &self.duplicates {
            let mut next = next.lock();
            let seq = match *next {
                Some(seq) => seq,
                None => self.first_free_seq()?,
            };
            *next = Some(seq.wrapping_add(1));
            out.extend_from_slice(&seq.to_be_bytes());
        }
        Ok(out)
    }

    /// One more than the largest sequence number in the store (0 when empty).
    fn first_free_seq(&self) -> Result<u32, StoreError> {
        let mut max = None;
        for item in self.segments.inner.range(Bound::Unbounded, Bound::Unbounded)? {
            let (stored, _) = item?;
            let seq = stored
                .len()
                .checked_sub(SEQ_LEN)
                .and_then(|at| stored.get(at..))
                .and_then(|b| <[u8; SEQ_LEN]>::try_from(b).ok())
                .map(u32::from_be_bytes)
                .ok_or_else(|| self.segments.corrupt("window key shorter than its sequence"))?;
            max = Some(max.map_or(seq, |m: u32| m.max(seq)));
        }
        Ok(max.map_or(0, |m| m.wrapping_add(1)))
    }

    /// The `(key, window start)` of a store key.
    pub fn decode_key(&self, stored: &[u8]) -> Result<(Vec<u8>, i64), StoreError> {
        stored
            .len()
            .checked_sub(self.suffix_len())
            .and_then(|end| decode(&stored[..end]))
            .ok_or_else(|| self.segments.corrupt("malformed window key"))
    }

    /// The window start of a store key, without copying its key.
    pub fn decode_start(&self, stored: &[u8]) -> Result<i64, StoreError> {
        stored
            .len()
            .checked_sub(8 + self.suffix_len())
            .and_then(|at| read_i64(stored, at))
            .ok_or_else(|| self.segments.corrupt("malformed window key"))
    }

    /// The inclusive bounds of the store keys of `key`'s windows that start in
    /// `[time_from, time_to]` within one segment ([`Self::segment_ranges`] gives them for
    /// every segment).
    pub fn segment_range(
        &self,
        segment: i64,
        key: &[u8],
        time_from: i64,
        time_to: i64,
    ) -> (Vec<u8>, Vec<u8>) {
        let mut prefix = Vec::with_capacity(8 + 4 + key.len() + 8 + SEQ_LEN);
        prefix.extend_from_slice(&encode_i64(segment));
        push_key(&mut prefix, key);
        let mut lower = prefix.clone();
        lower.extend_from_slice(&encode_i64(time_from));
        let mut upper = prefix;
        upper.extend_from_slice(&encode_i64(time_to));
        if self.duplicates.is_some() {
            upper.extend_from_slice(&[0xff; SEQ_LEN]);
        }
        (lower, upper)
    }

    /// Whether a window with this start is expired (see the module docs).
    pub fn is_expired(&self, window_start: i64) -> bool {
        window_start < self.segments.live_from()
    }

    /// Stages a put (`Some`) or delete (`None`) of the window of `key` starting at
    /// `window_start`, and advances the observed stream time to it. Returns false, staging
    /// nothing, if the window is already expired, or for a delete in a store with duplicates
    /// (as Kafka's, such a store ignores null puts).
    pub fn put(
        &self,
        batch: &mut WriteBatch,
        key: &[u8],
        window_start: i64,
        value: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        self.segments.observe(window_start);
        if self.is_expired(window_start) || (value.is_none() && self.retains_duplicates()) {
            return Ok(false);
        }
        self.note_put(window_start);
        batch.put_or_delete(self.put_key(key, window_start)?, value.map(<[u8]>::to_vec));
        Ok(true)
    }

    /// Notes a write of a window with this start made outside [`Self::put`] (through a cache
    /// over the store), so that [`Self::expire`] knows its segment may hold data.
    pub fn note_put(&self, window_start: i64) {
        self.segments.note_segment(self.segment_id(window_start));
    }

    /// The value of one window (in a store with duplicates: none, use [`Self::fetch`]).
    pub fn get(&self, key: &[u8], window_start: i64) -> Result<Option<Vec<u8>>, StoreError> {
        if self.is_expired(window_start) || self.retains_duplicates() {
            return Ok(None);
        }
        self.segments.inner.get(&self.encode_key(key, window_start))
    }

    /// The windows of `key` with a start in `[time_from, time_to]`, as `(start, value)` in
    /// ascending start order.
    pub fn fetch(
        &self,
        key: &[u8],
        time_from: i64,
        time_to: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let from = time_from.max(self.segments.live_from());
        let mut out = Vec::new();
        if from > time_to {
            return Ok(out);
        }
        let (first, last) = (self.segment_id(from), self.segment_id(time_to));
        self.segments.for_each_segment(first, last, |segment| {
            let (lower, upper) = self.segment_range(segment, key, from, time_to);
            for item in
                self.segments.inner.range(Bound::Included(&lower), Bound::Included(&upper))?
            {
                let (stored, value) = item?;
                out.push((self.decode_start(&stored)?, value));
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The store keys (inclusive bounds, one pair per segment) that hold the live windows of
    /// `key` with a start in `[time_from, time_to]`: for reading through a cache in front of
    /// the store, which has to see segments the store does not have yet. The caller bounds
    /// the range: every segment in it gets a pair.
    pub fn key_ranges(&self, key: &[u8], time_from: i64, time_to: i64) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.segment_ranges(key, time_from.max(self.segments.live_from()), time_to)
    }

    /// As [`Self::key_ranges`], expired windows included: for a reader that bounds the range
    /// by its own retention.
    pub fn segment_ranges(
        &self,
        key: &[u8],
        time_from: i64,
        time_to: i64,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.segments
            .span(time_from, time_to)
            .map(|segment| self.segment_range(segment, key, time_from, time_to))
            .collect()
    }

    /// The windows of every key with a start in `[time_from, time_to]`, as
    /// `(key, start, value)`, ordered by segment, then key (shorter keys first, then bytewise),
    /// then start.
    pub fn fetch_all(&self, time_from: i64, time_to: i64) -> Result<Vec<WindowEntry>, StoreError> {
        let from = time_from.max(self.segments.live_from());
        let mut out = Vec::new();
        if from > time_to {
            return Ok(out);
        }
        let (first, last) = (self.segment_id(from), self.segment_id(time_to));
        self.segments.for_each_segment(first, last, |segment| {
            let lower = encode_i64(segment);
            let upper = segment.checked_add(1).map(encode_i64);
            let upper_bound = match &upper {
                Some(u) => Bound::Excluded(u.as_slice()),
                None => Bound::Unbounded,
            };
            for item in self.segments.inner.range(Bound::Included(&lower), upper_bound)? {
                let (stored, value) = item?;
                let (key, start) = self.decode_key(&stored)?;
                if (from..=time_to).contains(&start) {
                    out.push((key, start, value));
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Every live window, as in [`fetch_all`](Self::fetch_all).
    pub fn all(&self) -> Result<Vec<WindowEntry>, StoreError> {
        self.fetch_all(i64::MIN, i64::MAX)
    }

    /// Advances the observed stream time to `stream_time` and stages the removal of every
    /// segment that only holds expired windows (one range delete). The first call scans the
    /// store once for its lowest segment; later calls only delete from the lowest segment
    /// known to exist.
    pub fn expire(&self, batch: &mut WriteBatch, stream_time: i64) -> Result<(), StoreError> {
        self.segments.expire(batch, stream_time)
    }
}

fn decode(stored: &[u8]) -> Option<(Vec<u8>, i64)> {
    read_i64(stored, 0)?;
    let (key, after) = read_key(stored, 8)?;
    if stored.len() != after + 8 {
        return None;
    }
    Some((key.to_vec(), read_i64(stored, after)?))
}
