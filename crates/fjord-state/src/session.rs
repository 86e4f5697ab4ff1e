//! The session store layout: session windows over any [`KeyValueBytesStore`].
//!
//! # Key layout
//!
//! ```text
//! [segment id: i64, 8 bytes][key len: u32 BE][key][session end: i64, 8 bytes][session start: i64, 8 bytes]
//! ```
//!
//! `i64`s are big-endian with the sign bit flipped (byte order = numeric order, negative
//! timestamps included). Segment id = `floor(session end / segment interval)`.
//!
//! - Segmented by session **end**, because a session expires when its end falls out of the
//!   retention period: expiry is one range delete of whole segments, as for windows.
//! - Within a segment, the sessions of a key are contiguous (length-prefixed key) and ordered by
//!   end, then start. `find_sessions(key, earliest_end, latest_start)` starts each segment's
//!   scan at `earliest_end` and skips segments that end before it entirely; the start condition
//!   is a filter.
//!
//! # Retention
//!
//! As in Kafka Streams: the observed stream time is the largest session end put (or the stream
//! time given to [`SessionStore::expire`]); a session is expired when
//! `end <= observed stream time - retention`. Puts of expired sessions are dropped and reads
//! skip them. The observed stream time is in memory only.

use std::ops::Bound;
use std::sync::Arc;

use crate::segments::{Segments, encode_i64, push_key, read_i64, read_key};
use crate::{KeyValueBytesStore, StoreError, WriteBatch};

/// One session: `(start, end, value)`.
pub type Session = (i64, i64, Vec<u8>);

/// One session of [`SessionStore::all`]: `(key, start, end, value)`.
pub type KeyedSession = (Vec<u8>, i64, i64, Vec<u8>);

/// A session store over a key-value store. Writes are staged into [`WriteBatch`]es that the
/// caller applies with [`KeyValueBytesStore::write`] (with its changelog offset).
pub struct SessionStore {
    segments: Segments,
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore")
            .field("store", &self.segments.inner.name())
            .field("retention_ms", &self.segments.retention_ms)
            .field("segment_interval_ms", &self.segments.interval_ms)
            .finish()
    }
}

impl SessionStore {
    /// A session store over `inner` (which it owns), keeping sessions for `retention_ms` (at
    /// least the inactivity gap plus the grace period) after their end, in segments of
    /// `segment_interval_ms` (see [`crate::window::default_segment_interval`]; at least 1).
    pub fn new(
        inner: Arc<dyn KeyValueBytesStore>,
        retention_ms: i64,
        segment_interval_ms: i64,
    ) -> Self {
        Self { segments: Segments::new(inner, retention_ms, segment_interval_ms) }
    }

    /// The underlying store.
    pub fn inner(&self) -> &Arc<dyn KeyValueBytesStore> {
        &self.segments.inner
    }

    /// The retention period.
    pub fn retention_ms(&self) -> i64 {
        self.segments.retention_ms
    }

    /// The observed stream time (`i64::MIN` before any).
    pub fn observed_stream_time(&self) -> i64 {
        self.segments.observed()
    }

    /// Advances the observed stream time (never moves it back).
    pub fn observe(&self, stream_time: i64) {
        self.segments.observe(stream_time);
    }

    /// The store key of a session.
    pub fn encode_key(&self, key: &[u8], start: i64, end: i64) -> Vec<u8> {
        let mut out = self.prefix(self.segments.segment_id(end), key);
        out.extend_from_slice(&encode_i64(end));
        out.extend_from_slice(&encode_i64(start));
        out
    }

    /// The `(key, start, end)` of a store key.
    pub fn decode_key(&self, stored: &[u8]) -> Result<(Vec<u8>, i64, i64), StoreError> {
        decode(stored).ok_or_else(|| self.segments.corrupt("malformed session key"))
    }

    /// Whether a session with this end is expired (see the module docs).
    pub fn is_expired(&self, end: i64) -> bool {
        end < self.segments.live_from()
    }

    /// Stages a put (`Some`) or removal (`None`) of the session `[start, end]` of `key`, and
    /// advances the observed stream time to `end`. Returns false, staging nothing, if the
    /// session is already expired.
    pub fn put(
        &self,
        batch: &mut WriteBatch,
        key: &[u8],
        start: i64,
        end: i64,
        value: Option<&[u8]>,
    ) -> bool {
        self.segments.observe(end);
        if self.is_expired(end) {
            return false;
        }
        self.segments.note_segment(self.segments.segment_id(end));
        batch.put_or_delete(self.encode_key(key, start, end), value.map(<[u8]>::to_vec));
        true
    }

    /// The value of one session.
    pub fn get(&self, key: &[u8], start: i64, end: i64) -> Result<Option<Vec<u8>>, StoreError> {
        if self.is_expired(end) {
            return Ok(None);
        }
        self.segments.inner.get(&self.encode_key(key, start, end))
    }

    /// The sessions of `key` with `end >= earliest_session_end` and
    /// `start <= latest_session_start` (those a new event could merge with), ordered by end,
    /// then start.
    pub fn find_sessions(
        &self,
        key: &[u8],
        earliest_session_end: i64,
        latest_session_start: i64,
    ) -> Result<Vec<Session>, StoreError> {
        let from_end = earliest_session_end.max(self.segments.live_from());
        let mut out = Vec::new();
        let first = self.segments.segment_id(from_end);
        self.segments.for_each_segment(first, i64::MAX, |segment| {
            let (lower, upper) = self.segment_bounds(segment, key, from_end, i64::MAX);
            for item in
                self.segments.inner.range(Bound::Included(&lower), Bound::Included(&upper))?
            {
                let (stored, value) = item?;
                let (start, end) = self.session_window(&stored)?;
                if start <= latest_session_start {
                    out.push((start, end, value));
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The store keys (inclusive bounds, one pair per segment) that hold the live sessions of
    /// `key` with an end in `[earliest_end, latest_end]`: for reading through a cache in
    /// front of the store, which has to see segments the store does not have yet. The caller
    /// bounds the range: every segment in it gets a pair.
    pub fn key_ranges(
        &self,
        key: &[u8],
        earliest_end: i64,
        latest_end: i64,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        let from = earliest_end.max(self.segments.live_from());
        self.segments
            .span(from, latest_end)
            .map(|segment| self.segment_bounds(segment, key, from, latest_end))
            .collect()
    }

    /// An upper bound of the session ends the store holds (the last time of its last
    /// segment), or `None` when it is empty: sessions can end after the stream time a
    /// restarted task has seen so far.
    pub fn max_end_bound(&self) -> Result<Option<i64>, StoreError> {
        let interval = self.segments.interval_ms;
        Ok(self
            .segments
            .last_segment()?
            .map(|s| s.saturating_add(1).saturating_mul(interval).saturating_sub(1)))
    }

    /// The `(start, end)` of the session of a store key.
    pub fn session_window(&self, stored: &[u8]) -> Result<(i64, i64), StoreError> {
        let at = stored.len().saturating_sub(16);
        match (read_i64(stored, at), read_i64(stored, at + 8)) {
            (Some(end), Some(start)) if stored.len() >= 16 => Ok((start, end)),
            _ => Err(self.segments.corrupt("malformed session key")),
        }
    }

    fn segment_bounds(
        &self,
        segment: i64,
        key: &[u8],
        earliest_end: i64,
        latest_end: i64,
    ) -> (Vec<u8>, Vec<u8>) {
        let mut lower = self.prefix(segment, key);
        let mut upper = lower.clone();
        lower.extend_from_slice(&encode_i64(earliest_end));
        upper.extend_from_slice(&encode_i64(latest_end));
        upper.extend_from_slice(&[0xff; 8]);
        (lower, upper)
    }

    /// Every live session of `key`, ordered by end, then start.
    pub fn fetch(&self, key: &[u8]) -> Result<Vec<Session>, StoreError> {
        self.find_sessions(key, i64::MIN, i64::MAX)
    }

    /// Every live session, as `(key, start, end, value)`, ordered by segment, then key
    /// (shorter keys first), then end and start.
    pub fn all(&self) -> Result<Vec<KeyedSession>, StoreError> {
        let live_from = self.segments.live_from();
        let mut out = Vec::new();
        self.segments.for_each_segment(
            self.segments.segment_id(live_from),
            i64::MAX,
            |segment| {
                let lower = encode_i64(segment);
                let upper = segment.checked_add(1).map(encode_i64);
                let upper_bound = match &upper {
                    Some(u) => Bound::Excluded(u.as_slice()),
                    None => Bound::Unbounded,
                };
                for item in self.segments.inner.range(Bound::Included(&lower), upper_bound)? {
                    let (stored, value) = item?;
                    let (key, start, end) = self.decode_key(&stored)?;
                    if end >= live_from {
                        out.push((key, start, end, value));
                    }
                }
                Ok(())
            },
        )?;
        Ok(out)
    }

    /// Advances the observed stream time to `stream_time` and stages the removal of every
    /// segment that only holds expired sessions (one range delete).
    pub fn expire(&self, batch: &mut WriteBatch, stream_time: i64) -> Result<(), StoreError> {
        self.segments.expire(batch, stream_time)
    }

    fn prefix(&self, segment: i64, key: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 4 + key.len() + 16);
        out.extend_from_slice(&encode_i64(segment));
        push_key(&mut out, key);
        out
    }
}

fn decode(stored: &[u8]) -> Option<(Vec<u8>, i64, i64)> {
    read_i64(stored, 0)?;
    let (key, after) = read_key(stored, 8)?;
    if stored.len() != after + 16 {
        return None;
    }
    Some((key.to_vec(), read_i64(stored, after + 8)?, read_i64(stored, after)?))
}
