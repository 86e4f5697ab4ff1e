//! The RecordBatch v2 header: a zero-copy view over the first 61 bytes of a batch, and the
//! few in-place edits the log makes on append (base offset, partition leader epoch, log-append
//! time).
//!
//! Layout (all integers big-endian), as in Kafka's `DefaultRecordBatch`:
//!
//! ```text
//!  0 baseOffset: int64          \_ LOG_OVERHEAD (12 bytes), not covered by the CRC
//!  8 batchLength: int32         /
//! 12 partitionLeaderEpoch: int32
//! 16 magic: int8 (= 2)
//! 17 crc: uint32 (CRC-32C of everything from `attributes` to the end of the batch)
//! 21 attributes: int16
//! 23 lastOffsetDelta: int32
//! 27 baseTimestamp: int64
//! 35 maxTimestamp: int64
//! 43 producerId: int64
//! 51 producerEpoch: int16
//! 53 baseSequence: int32
//! 57 recordsCount: int32
//! 61 records...
//! ```
//!
//! Because the base offset and the leader epoch sit before the CRC'd region, the log can assign
//! offsets to a batch a client produced without touching the CRC, and serve the bytes back as they
//! are.

use super::{Compression, RecordError, TimestampType};

/// Size of the base offset and batch length fields that precede every batch.
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed part of a v2 batch, up to the first record.
pub const RECORD_BATCH_OVERHEAD: usize = 61;
/// The only batch format Fjord stores.
pub const MAGIC_V2: i8 = 2;
/// Producer id of a batch written by a non-idempotent producer.
pub const NO_PRODUCER_ID: i64 = -1;
/// Producer epoch of a batch written by a non-idempotent producer.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// Base sequence of a batch written by a non-idempotent producer.
pub const NO_SEQUENCE: i32 = -1;
/// Partition leader epoch of a batch the log has not stamped yet.
pub const NO_PARTITION_LEADER_EPOCH: i32 = -1;

pub(crate) const BASE_OFFSET_OFFSET: usize = 0;
pub(crate) const LENGTH_OFFSET: usize = 8;
pub(crate) const PARTITION_LEADER_EPOCH_OFFSET: usize = 12;
pub(crate) const MAGIC_OFFSET: usize = 16;
pub(crate) const CRC_OFFSET: usize = 17;
pub(crate) const ATTRIBUTES_OFFSET: usize = 21;
pub(crate) const LAST_OFFSET_DELTA_OFFSET: usize = 23;
pub(crate) const BASE_TIMESTAMP_OFFSET: usize = 27;
pub(crate) const MAX_TIMESTAMP_OFFSET: usize = 35;
pub(crate) const PRODUCER_ID_OFFSET: usize = 43;
pub(crate) const PRODUCER_EPOCH_OFFSET: usize = 51;
pub(crate) const BASE_SEQUENCE_OFFSET: usize = 53;
pub(crate) const RECORDS_COUNT_OFFSET: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_MASK: i16 = 0x08;
const TRANSACTIONAL_MASK: i16 = 0x10;
const CONTROL_MASK: i16 = 0x20;
const DELETE_HORIZON_MASK: i16 = 0x40;

/// The batch attributes word: compression codec, timestamp type and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attributes(pub i16);

impl Attributes {
    /// Builds the attributes word from its parts.
    pub fn new(
        compression: Compression,
        timestamp_type: TimestampType,
        transactional: bool,
        control: bool,
    ) -> Self {
        let mut bits = compression.id() as i16;
        if timestamp_type == TimestampType::LogAppendTime {
            bits |= TIMESTAMP_TYPE_MASK;
        }
        if transactional {
            bits |= TRANSACTIONAL_MASK;
        }
        if control {
            bits |= CONTROL_MASK;
        }
        Attributes(bits)
    }

    /// The compression codec id (bits 0-2).
    pub fn compression(self) -> Result<Compression, RecordError> {
        Compression::from_id((self.0 & COMPRESSION_MASK) as u8)
    }

    /// Create time or log-append time (bit 3).
    pub fn timestamp_type(self) -> TimestampType {
        if self.0 & TIMESTAMP_TYPE_MASK != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// Whether the batch belongs to a transaction (bit 4).
    pub fn is_transactional(self) -> bool {
        self.0 & TRANSACTIONAL_MASK != 0
    }

    /// Whether the batch holds control records (commit/abort markers) (bit 5).
    pub fn is_control(self) -> bool {
        self.0 & CONTROL_MASK != 0
    }

    /// Whether `baseTimestamp` holds the compaction delete horizon (bit 6, KIP-534).
    pub fn has_delete_horizon(self) -> bool {
        self.0 & DELETE_HORIZON_MASK != 0
    }

    /// The same attributes with another timestamp type.
    pub fn with_timestamp_type(self, timestamp_type: TimestampType) -> Self {
        match timestamp_type {
            TimestampType::CreateTime => Attributes(self.0 & !TIMESTAMP_TYPE_MASK),
            TimestampType::LogAppendTime => Attributes(self.0 | TIMESTAMP_TYPE_MASK),
        }
    }

    /// The same attributes with the delete-horizon flag set or cleared.
    pub fn with_delete_horizon(self, set: bool) -> Self {
        if set {
            Attributes(self.0 | DELETE_HORIZON_MASK)
        } else {
            Attributes(self.0 & !DELETE_HORIZON_MASK)
        }
    }
}

/// The fixed fields of a RecordBatch v2, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record (assigned by the log on append).
    pub base_offset: i64,
    /// Length of the batch after the `batchLength` field.
    pub batch_length: i32,
    /// Leader epoch stamped by the log.
    pub partition_leader_epoch: i32,
    /// Format version; always 2 once parsed.
    pub magic: i8,
    /// Stored CRC-32C of the bytes from `attributes` to the end.
    pub crc: u32,
    /// Compression, timestamp type and flags.
    pub attributes: Attributes,
    /// Offset of the last record relative to `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record (or the delete horizon, see [`Attributes::has_delete_horizon`]).
    pub base_timestamp: i64,
    /// Largest timestamp in the batch (the log-append time under `LogAppendTime`).
    pub max_timestamp: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub records_count: i32,
}

impl BatchHeader {
    /// Decodes the header at the start of `buf`, checking the magic byte and the length fields
    /// but not the CRC (see [`validate_crc`]). `buf` may be longer than the batch.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, RecordError> {
        if buf.len() < RECORD_BATCH_OVERHEAD {
            return Err(RecordError::Truncated {
                needed: RECORD_BATCH_OVERHEAD,
                available: buf.len(),
            });
        }
        let magic = buf[MAGIC_OFFSET] as i8;
        if magic != MAGIC_V2 {
            return Err(RecordError::UnsupportedMagic(magic));
        }
        let header = BatchHeader {
            base_offset: read_i64(buf, BASE_OFFSET_OFFSET),
            batch_length: read_i32(buf, LENGTH_OFFSET),
            partition_leader_epoch: read_i32(buf, PARTITION_LEADER_EPOCH_OFFSET),
            magic,
            crc: read_i32(buf, CRC_OFFSET) as u32,
            attributes: Attributes(read_i16(buf, ATTRIBUTES_OFFSET)),
            last_offset_delta: read_i32(buf, LAST_OFFSET_DELTA_OFFSET),
            base_timestamp: read_i64(buf, BASE_TIMESTAMP_OFFSET),
            max_timestamp: read_i64(buf, MAX_TIMESTAMP_OFFSET),
            producer_id: read_i64(buf, PRODUCER_ID_OFFSET),
            producer_epoch: read_i16(buf, PRODUCER_EPOCH_OFFSET),
            base_sequence: read_i32(buf, BASE_SEQUENCE_OFFSET),
            records_count: read_i32(buf, RECORDS_COUNT_OFFSET),
        };
        if (header.batch_length as i64) < (RECORD_BATCH_OVERHEAD - LOG_OVERHEAD) as i64 {
            return Err(RecordError::InvalidBatchLength(header.batch_length));
        }
        if header.records_count < 0 || header.last_offset_delta < 0 {
            return Err(RecordError::InvalidRecordCount {
                records_count: header.records_count,
                last_offset_delta: header.last_offset_delta,
            });
        }
        Ok(header)
    }

    /// Total size of the batch in bytes, including the 12-byte log overhead.
    pub fn size_in_bytes(&self) -> usize {
        self.batch_length as usize + LOG_OVERHEAD
    }

    /// Offset of the last record (or of the last record before compaction removed any).
    ///
    /// Wraps like Kafka's Java arithmetic: a produced batch's base offset is whatever the
    /// client wrote (the log assigns the real one), so it must not be able to overflow here.
    pub fn last_offset(&self) -> i64 {
        self.base_offset.wrapping_add(self.last_offset_delta as i64)
    }

    /// The offset following this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().wrapping_add(1)
    }

    /// Sequence number of the last record, wrapping as Kafka does.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence == NO_SEQUENCE {
            NO_SEQUENCE
        } else {
            // Kafka's DefaultRecordBatch.incrementSequence: wraps at Int.MAX to 0.
            let last = self.base_sequence as i64 + self.last_offset_delta as i64;
            if last > i32::MAX as i64 { (last - i32::MAX as i64 - 1) as i32 } else { last as i32 }
        }
    }

    /// Whether an idempotent or transactional producer wrote the batch.
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
}

/// Computes the CRC-32C the batch should carry: everything from `attributes` to the end.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..])
}

/// Checks the stored CRC of one complete batch (`batch` must be exactly the batch's bytes).
pub fn validate_crc(batch: &[u8], header: &BatchHeader) -> Result<(), RecordError> {
    let actual = compute_crc(batch);
    if actual != header.crc {
        return Err(RecordError::CrcMismatch {
            base_offset: header.base_offset,
            stored: header.crc,
            computed: actual,
        });
    }
    Ok(())
}

/// Rewrites the base offset of a batch (outside the CRC'd region).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[BASE_OFFSET_OFFSET..BASE_OFFSET_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Rewrites the partition leader epoch of a batch (outside the CRC'd region).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[PARTITION_LEADER_EPOCH_OFFSET..PARTITION_LEADER_EPOCH_OFFSET + 4]
        .copy_from_slice(&epoch.to_be_bytes());
}

/// Stamps a batch with log-append time: sets the timestamp-type bit and `maxTimestamp`, and
/// recomputes the CRC (both fields are inside the CRC'd region). Records keep their own deltas;
/// readers of a log-append-time batch use `maxTimestamp` for every record, as in Kafka.
pub fn set_log_append_time(batch: &mut [u8], timestamp: i64) {
    let attributes = Attributes(read_i16(batch, ATTRIBUTES_OFFSET))
        .with_timestamp_type(TimestampType::LogAppendTime);
    batch[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.0.to_be_bytes());
    batch[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8].copy_from_slice(&timestamp.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

pub(crate) fn read_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

pub(crate) fn read_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

pub(crate) fn read_i64(buf: &[u8], at: usize) -> i64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(bytes)
}
