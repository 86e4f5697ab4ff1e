//! Kafka's RecordBatch v2 format: the bytes Fjord stores on disk and serves to readers.
//!
//! The log never re-encodes what a producer sent: it parses the 61-byte header, checks the CRC
//! and the record framing, rewrites the base offset, and stores the batch as it arrived. The
//! encoder and the borrowed decoder here are for the clients, for compaction and for tools.
//!
//! Written by hand rather than with the `kafka-protocol` crate's record codec because that codec
//! allocates per record (a header map per record) and merges repeated header keys, which Kafka
//! allows; its tests here cross-check both directions against it, and `benches/record_codec.rs`
//! measures the difference.

pub mod batch;
mod builder;
mod compression;
pub mod control;
mod decode;
mod varint;

pub use batch::{Attributes, BatchHeader};
pub use builder::{BatchOptions, RecordBatchBuilder};
pub use compression::{Compression, compress, decompress};
pub use control::{ControlRecordType, EndTxnMarker};
pub use decode::{
    BatchIter, Header, HeaderIter, Headers, MAX_DECOMPRESSED_BATCH_BYTES, Record, RecordBatch,
    Records,
};

/// Which clock a batch's timestamps come from (`message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TimestampType {
    /// The producer's timestamp for each record.
    #[default]
    CreateTime,
    /// The broker's clock when the batch was appended; one timestamp for the whole batch.
    LogAppendTime,
}

impl TimestampType {
    /// Kafka's name, as in `message.timestamp.type`.
    pub fn name(self) -> &'static str {
        match self {
            TimestampType::CreateTime => "CreateTime",
            TimestampType::LogAppendTime => "LogAppendTime",
        }
    }
}

/// A batch or record that cannot be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Fewer bytes than the batch needs.
    #[error("record batch is truncated: needs {needed} bytes, {available} available")]
    Truncated {
        /// Bytes the batch needs.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// A buffer meant to hold one batch holds more.
    #[error("{buffer} bytes given for one record batch of {batch_size} bytes")]
    TrailingBytes {
        /// Size of the batch per its header.
        batch_size: usize,
        /// Size of the buffer.
        buffer: usize,
    },
    /// Only RecordBatch v2 (magic 2) is stored; older message formats are not.
    #[error(
        "unsupported record batch magic {0}: only v2 batches (Kafka 0.11+ clients) are accepted"
    )]
    UnsupportedMagic(i8),
    /// The batch length field is impossible.
    #[error("invalid record batch length {0}")]
    InvalidBatchLength(i32),
    /// `recordsCount` or `lastOffsetDelta` is negative, or, in a batch a producer sent, they are
    /// not `recordsCount == lastOffsetDelta + 1 > 0`.
    #[error(
        "invalid record count: recordsCount {records_count}, lastOffsetDelta {last_offset_delta}"
    )]
    InvalidRecordCount {
        /// The header's record count.
        records_count: i32,
        /// The header's last offset delta.
        last_offset_delta: i32,
    },
    /// Record offset deltas must be 0, 1, 2, ... within a produced batch.
    #[error("record offset deltas are not sequential: expected {expected}, found {found}")]
    NonSequentialOffsets {
        /// The delta that should have come next.
        expected: i64,
        /// The delta found.
        found: i64,
    },
    /// The stored CRC does not match the contents: the batch is corrupt.
    #[error(
        "CRC mismatch in the batch at offset {base_offset}: stored {stored:#010x}, computed {computed:#010x}"
    )]
    CrcMismatch {
        /// Base offset of the corrupt batch.
        base_offset: i64,
        /// CRC in the header.
        stored: u32,
        /// CRC of the contents.
        computed: u32,
    },
    /// The attributes name a codec that does not exist.
    #[error("unknown compression codec id {0}")]
    UnknownCompression(u8),
    /// A codec name that Kafka does not know.
    #[error("unknown compression type `{0}`: use none, gzip, snappy, lz4 or zstd")]
    UnknownCompressionName(String),
    /// The codec failed to compress.
    #[error("{codec} compression failed: {message}")]
    Compression {
        /// The codec.
        codec: Compression,
        /// What the codec said.
        message: String,
    },
    /// The codec failed to decompress: the batch is corrupt.
    #[error("{codec} decompression failed: {message}")]
    Decompression {
        /// The codec.
        codec: Compression,
        /// What the codec said.
        message: String,
    },
    /// The records decompress to more than the limit.
    #[error("{codec} records decompress to more than {limit} bytes")]
    DecompressedTooLarge {
        /// The codec.
        codec: Compression,
        /// The limit.
        limit: usize,
    },
    /// A record's fields do not fit its framing.
    #[error("malformed record: {0}")]
    MalformedRecord(&'static str),
    /// A batch needs at least one record.
    #[error("a record batch needs at least one record")]
    EmptyBatch,
}
