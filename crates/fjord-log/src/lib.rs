//! The built-in partitioned log: Fjord's storage engine.
//!
//! A topic has partitions; a partition is a directory of segments; a segment is a file of Kafka
//! RecordBatch v2 bytes with a sparse offset index, a time index and an aborted-transaction
//! index beside it. The layout and the names follow Kafka's own log (`UnifiedLog`,
//! `LogSegment`, `OffsetIndex`, `TimeIndex`) so that anyone who knows Kafka can find their way,
//! and so that a later Kafka wire-protocol server can serve the stored bytes as they are.
//!
//! This crate is synchronous and does no networking; the broker crate puts producers, consumer
//! groups and transactions on top of it.

pub mod checkpoint;
pub mod clock;
pub mod config;
mod error;
pub mod index;
mod log;
pub mod manager;
pub mod metrics;
pub mod partitioner;
pub mod producer_state;
pub mod record;
pub mod segment;
pub mod topic;

pub use error::{LogError, Result};
pub use log::{
    AppendInfo, CleanResult, CleanerConfig, FetchData, FetchIsolation, LEADER_EPOCH, PartitionLog,
    RecoveryReport, RetentionResult, TimestampAndOffset, Truncation,
};
pub use manager::{LogManager, LogManagerConfig, Topic, TopicId};

use std::sync::Arc;

/// A topic name and partition number: the unit of ordering, storage and assignment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition number, from 0.
    pub partition: u32,
}

impl TopicPartition {
    /// A topic-partition.
    pub fn new(topic: impl Into<Arc<str>>, partition: u32) -> Self {
        TopicPartition { topic: topic.into(), partition }
    }

    /// The partition's directory name, `<topic>-<partition>`, as Kafka names it.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}
