//! The log's errors. Each names the topic-partition, file or setting involved and, where there
//! is one, the fix.

use std::path::PathBuf;

use crate::TopicPartition;
use crate::config::ConfigError;
use crate::record::RecordError;
use crate::topic::InvalidTopicName;

/// Errors of the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Another process (or another `LogManager` in this one) has the data directory open.
    #[error(
        "data directory {dir} is in use by another process (its lock file {dir}/.lock is held); stop that process or use another directory"
    )]
    DirectoryLocked {
        /// The data directory.
        dir: PathBuf,
    },
    /// Stored data failed its CRC or framing checks: it is reported, never served or skipped.
    #[error(
        "corrupt data in {tp} at {path} position {position}: {source}; inspect it with `fjord log inspect`"
    )]
    Corrupt {
        /// The partition.
        tp: TopicPartition,
        /// The segment file.
        path: PathBuf,
        /// Byte position of the corrupt batch.
        position: u32,
        /// What is wrong.
        #[source]
        source: RecordError,
    },
    /// A produced batch is malformed (Kafka's `CORRUPT_MESSAGE`/`INVALID_RECORD`).
    #[error("invalid record batch for {tp}: {source}")]
    InvalidRecord {
        /// The partition.
        tp: TopicPartition,
        /// What is wrong.
        #[source]
        source: RecordError,
    },
    /// A produced batch breaks a topic rule (Kafka's `INVALID_RECORD`), e.g. a null key on a
    /// compacted topic or a timestamp outside the allowed window.
    #[error("record rejected by {tp}: {reason}")]
    RecordRejected {
        /// The partition.
        tp: TopicPartition,
        /// The rule broken.
        reason: String,
    },
    /// A batch is larger than `max.message.bytes` (Kafka's `MESSAGE_TOO_LARGE`).
    #[error(
        "record batch of {size} bytes for {tp} exceeds max.message.bytes ({max}); send smaller batches or raise the topic's max.message.bytes"
    )]
    RecordBatchTooLarge {
        /// The partition.
        tp: TopicPartition,
        /// Batch size.
        size: usize,
        /// The limit.
        max: u32,
    },
    /// A read outside `[log start offset, log end offset]` (Kafka's `OFFSET_OUT_OF_RANGE`).
    #[error(
        "offset {offset} is out of range for {tp}: valid offsets are {log_start_offset} to {log_end_offset}"
    )]
    OffsetOutOfRange {
        /// The partition.
        tp: TopicPartition,
        /// The offset asked for.
        offset: i64,
        /// First offset in the log.
        log_start_offset: i64,
        /// Next offset to be written.
        log_end_offset: i64,
    },
    /// No such topic (Kafka's `UNKNOWN_TOPIC_OR_PARTITION`).
    #[error("unknown topic `{0}`: create it first (or list topics to check the name)")]
    UnknownTopic(String),
    /// No such partition.
    #[error("topic `{topic}` has no partition {partition}: it has {partitions} partitions")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many it has.
        partitions: u32,
    },
    /// The topic exists already (Kafka's `TOPIC_ALREADY_EXISTS`).
    #[error("topic `{0}` already exists")]
    TopicExists(String),
    /// The name collides with an existing topic once `.` and `_` are treated alike, as Kafka
    /// refuses because their metric names would clash.
    #[error(
        "topic `{name}` collides with existing topic `{existing}` (`.` and `_` are treated alike in metric names); choose another name"
    )]
    TopicCollision {
        /// The new name.
        name: String,
        /// The existing topic.
        existing: String,
    },
    /// The topic name is invalid.
    #[error(transparent)]
    InvalidTopicName(#[from] InvalidTopicName),
    /// A topic config is unknown or has a bad value.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A bad partition count (Kafka's `INVALID_PARTITIONS`).
    #[error("invalid partition count for topic `{topic}`: {reason}")]
    InvalidPartitions {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// A topic's metadata file cannot be read.
    #[error(
        "topic metadata {path} is unreadable: {reason}; restore it from a backup or delete the topic's directories"
    )]
    BadMetadata {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The log was closed.
    #[error("the log is closed")]
    Closed,
    /// The producer's epoch is older than the one the partition knows: another producer with
    /// the same transactional id took over (Kafka's `INVALID_PRODUCER_EPOCH`/`PRODUCER_FENCED`).
    #[error("producer {producer_id} with epoch {epoch} is fenced by epoch {current_epoch} on {tp}")]
    InvalidProducerEpoch {
        /// The partition.
        tp: TopicPartition,
        /// The producer id.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The epoch the partition knows.
        current_epoch: i16,
    },
    /// A batch's sequence number leaves a gap or goes back (Kafka's
    /// `OUT_OF_ORDER_SEQUENCE_NUMBER`).
    #[error(
        "out of order sequence number for producer {producer_id} on {tp}: expected {expected}, got {found}"
    )]
    OutOfOrderSequence {
        /// The partition.
        tp: TopicPartition,
        /// The producer id.
        producer_id: i64,
        /// The sequence that should have come.
        expected: i32,
        /// The batch's first sequence.
        found: i32,
    },
    /// The partition has no state for this producer and the batch does not start a sequence
    /// (Kafka's `UNKNOWN_PRODUCER_ID`).
    #[error("unknown producer id {producer_id} on {tp} (first sequence {sequence}, expected 0)")]
    UnknownProducerId {
        /// The partition.
        tp: TopicPartition,
        /// The producer id.
        producer_id: i64,
        /// The batch's first sequence.
        sequence: i32,
    },
    /// A transactional write that does not fit the producer's transaction state (Kafka's
    /// `INVALID_TXN_STATE`).
    #[error("invalid transaction state for producer {producer_id} on {tp}: {reason}")]
    InvalidTxnState {
        /// The partition.
        tp: TopicPartition,
        /// The producer id.
        producer_id: i64,
        /// What does not fit.
        reason: &'static str,
    },
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LogError::Io { op, path: path.into(), source }
    }
}

/// Shorthand for results of the log.
pub type Result<T, E = LogError> = std::result::Result<T, E>;
