//! Encoding records into RecordBatch v2.
//!
//! A [`RecordBatchBuilder`] keeps its buffers between batches: the producer's hot path appends
//! into already-grown vectors and allocates nothing per record.

use super::batch::{
    Attributes, LOG_OVERHEAD, MAGIC_V2, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH,
    NO_PRODUCER_ID, NO_SEQUENCE, RECORD_BATCH_OVERHEAD,
};
use super::decode::Header;
use super::varint::{put_varint, put_varlong, varint_size, varlong_size};
use super::{Compression, RecordError, TimestampType, compress};

/// Batch-level settings of a [`RecordBatchBuilder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// Codec for the records section.
    pub compression: Compression,
    /// Create time (producers) or log-append time.
    pub timestamp_type: TimestampType,
    /// Base offset written into the header; the log overwrites it on append.
    pub base_offset: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Whether the batch is part of a transaction.
    pub transactional: bool,
    /// Whether the batch holds control records.
    pub control: bool,
    /// Partition leader epoch; the log stamps it on append.
    pub partition_leader_epoch: i32,
    /// Compaction's delete horizon for the batch's tombstones (KIP-534): when set, it is written
    /// as the base timestamp (record timestamps are deltas from it) and attributes bit 6 is set.
    pub delete_horizon_ms: Option<i64>,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            compression: Compression::None,
            timestamp_type: TimestampType::CreateTime,
            base_offset: 0,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            transactional: false,
            control: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            delete_horizon_ms: None,
        }
    }
}

/// Accumulates records and encodes them as one batch.
#[derive(Debug, Clone)]
pub struct RecordBatchBuilder {
    options: BatchOptions,
    records: Vec<u8>,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    last_offset_delta: i32,
}

impl RecordBatchBuilder {
    /// An empty builder.
    pub fn new(options: BatchOptions) -> Self {
        RecordBatchBuilder {
            options,
            records: Vec::new(),
            count: 0,
            base_timestamp: 0,
            max_timestamp: -1,
            last_offset_delta: -1,
        }
    }

    /// The batch settings.
    pub fn options(&self) -> &BatchOptions {
        &self.options
    }

    /// Changes the batch settings; only allowed while the builder is empty.
    pub fn set_options(&mut self, options: BatchOptions) {
        debug_assert!(self.is_empty(), "options change on a non-empty batch");
        self.options = options;
    }

    /// Number of records appended.
    pub fn record_count(&self) -> usize {
        self.count as usize
    }

    /// Whether no record was appended.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the batch if encoded uncompressed now.
    pub fn uncompressed_size_in_bytes(&self) -> usize {
        RECORD_BATCH_OVERHEAD + self.records.len()
    }

    /// Size a record would add to [`Self::uncompressed_size_in_bytes`], for batch-size limits.
    pub fn record_size_upper_bound(
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header<'_>],
    ) -> usize {
        // length (5) + attributes (1) + timestamp delta (10) + offset delta (5) + body.
        21 + body_size(key, value, headers.iter().copied()).0
    }

    /// Appends a record at the next offset delta; returns that delta.
    pub fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header<'_>],
    ) -> i32 {
        let delta = self.last_offset_delta + 1;
        self.write(delta, timestamp, key, value, headers.iter().copied());
        delta
    }

    /// Appends a record at an explicit offset delta, which must exceed every delta appended so
    /// far. Compaction uses this to keep the offsets of the records it retains.
    pub fn append_with_offset_delta<'h, I>(
        &mut self,
        offset_delta: i32,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: I,
    ) -> Result<(), RecordError>
    where
        I: IntoIterator<Item = Header<'h>>,
        I::IntoIter: Clone,
    {
        if offset_delta <= self.last_offset_delta {
            return Err(RecordError::NonSequentialOffsets {
                expected: self.last_offset_delta as i64 + 1,
                found: offset_delta as i64,
            });
        }
        self.write(offset_delta, timestamp, key, value, headers.into_iter());
        Ok(())
    }

    /// Keeps `lastOffsetDelta` at `delta` even if the last record appended has a smaller one:
    /// a compacted batch still covers the offsets (and producer sequences) of the original.
    pub fn set_last_offset_delta(&mut self, delta: i32) {
        debug_assert!(delta >= self.last_offset_delta);
        self.last_offset_delta = delta;
    }

    fn write<'h, I>(
        &mut self,
        offset_delta: i32,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: I,
    ) where
        I: Iterator<Item = Header<'h>> + Clone,
    {
        if self.count == 0 {
            self.base_timestamp = self.options.delete_horizon_ms.unwrap_or(timestamp);
        }
        let timestamp_delta = timestamp.wrapping_sub(self.base_timestamp);
        let (body, header_count) = body_size(key, value, headers.clone());
        let size = 1 + varlong_size(timestamp_delta) + varint_size(offset_delta) + body;
        let buf = &mut self.records;
        buf.reserve(size + 5);
        put_varint(buf, size as i32);
        buf.push(0); // record attributes: unused
        put_varlong(buf, timestamp_delta);
        put_varint(buf, offset_delta);
        put_nullable(buf, key);
        put_nullable(buf, value);
        put_varint(buf, header_count);
        for header in headers {
            put_nullable(buf, Some(header.key.as_bytes()));
            put_nullable(buf, header.value);
        }
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.last_offset_delta = offset_delta;
    }

    /// Encodes the batch, appends it to `out`, and empties the builder for the next batch
    /// (keeping its buffers). The CRC is computed; the base offset is `options.base_offset`.
    pub fn build_into(&mut self, out: &mut Vec<u8>) -> Result<(), RecordError> {
        if self.count == 0 {
            return Err(RecordError::EmptyBatch);
        }
        let o = self.options;
        let start = out.len();
        out.extend_from_slice(&o.base_offset.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes()); // batch length, filled below
        out.extend_from_slice(&o.partition_leader_epoch.to_be_bytes());
        out.push(MAGIC_V2 as u8);
        out.extend_from_slice(&0u32.to_be_bytes()); // crc, filled below
        let attributes =
            Attributes::new(o.compression, o.timestamp_type, o.transactional, o.control)
                .with_delete_horizon(o.delete_horizon_ms.is_some());
        out.extend_from_slice(&attributes.0.to_be_bytes());
        out.extend_from_slice(&self.last_offset_delta.to_be_bytes());
        out.extend_from_slice(&self.base_timestamp.to_be_bytes());
        out.extend_from_slice(&self.max_timestamp.to_be_bytes());
        out.extend_from_slice(&o.producer_id.to_be_bytes());
        out.extend_from_slice(&o.producer_epoch.to_be_bytes());
        out.extend_from_slice(&o.base_sequence.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        // On failure, leave `out` as it was (and the records in the builder).
        let batch_length = compress(o.compression, &self.records, out).and_then(|()| {
            i32::try_from(out.len() - start - LOG_OVERHEAD)
                .map_err(|_| RecordError::InvalidBatchLength(i32::MAX))
        });
        let batch_length = match batch_length {
            Ok(length) => length,
            Err(e) => {
                out.truncate(start);
                return Err(e);
            }
        };
        out[start + 8..start + 12].copy_from_slice(&batch_length.to_be_bytes());
        let crc = crc32c::crc32c(&out[start + 21..]);
        out[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
        self.reset();
        Ok(())
    }

    /// Encodes the batch into a new buffer (see [`Self::build_into`]).
    pub fn build(&mut self) -> Result<Vec<u8>, RecordError> {
        let mut out = Vec::with_capacity(self.uncompressed_size_in_bytes());
        self.build_into(&mut out)?;
        Ok(out)
    }

    /// Sets the producer fields of the batch header. Unlike the other options they may change
    /// after records were appended: a producer learns a batch's sequence number only when it
    /// sends the batch.
    pub fn set_producer(&mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) {
        self.options.producer_id = producer_id;
        self.options.producer_epoch = producer_epoch;
        self.options.base_sequence = base_sequence;
    }

    /// Marks the batch as part of a transaction or not (also allowed after appends).
    pub fn set_transactional(&mut self, transactional: bool) {
        self.options.transactional = transactional;
    }

    /// Drops the records appended so far, keeping the options and buffers.
    pub fn reset(&mut self) {
        self.records.clear();
        self.count = 0;
        self.base_timestamp = 0;
        self.max_timestamp = -1;
        self.last_offset_delta = -1;
    }
}

/// Encoded size of key, value and headers, and the number of headers.
fn body_size<'h>(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: impl Iterator<Item = Header<'h>>,
) -> (usize, i32) {
    let mut size = nullable_size(key) + nullable_size(value);
    let mut count = 0;
    for header in headers {
        size += nullable_size(Some(header.key.as_bytes())) + nullable_size(header.value);
        count += 1;
    }
    (size + varint_size(count), count)
}

fn nullable_size(bytes: Option<&[u8]>) -> usize {
    match bytes {
        None => 1,
        Some(b) => varint_size(b.len() as i32) + b.len(),
    }
}

fn put_nullable(buf: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(buf, -1),
        Some(b) => {
            put_varint(buf, b.len() as i32);
            buf.extend_from_slice(b);
        }
    }
}
