//! Kafka broker semantics over Fjord's log, and the in-process async clients that use them.
//!
//! The [`Broker`] is a Kafka broker inside the application's process: topics and partitions
//! from `fjord-log`, producer ids and idempotence, consumer groups with Kafka's classic
//! protocol, committed offsets in `__consumer_offsets`, and admin operations. Its clients have
//! the shape of Kafka's: a batching [`Producer`], a [`Consumer`] that subscribes as a group
//! member or is assigned partitions by hand, and an [`Admin`].

mod admin;
mod broker;
pub mod consumer;
mod error;
mod events;
pub mod group;
pub mod metrics;
mod pid;
mod producer;
pub mod txn;

pub use admin::{
    Admin, AlterConfigOp, DescribedConfig, NewTopic, OffsetResetSpec, PartitionInfo, PartitionLag,
    TopicDescription,
};
pub use broker::{Broker, BrokerConfig, ListedOffset, OffsetSpec};
pub use consumer::{
    Consumer, ConsumerConfig, ConsumerRebalanceListener, ConsumerRecord, ConsumerWaker,
    IsolationLevel, OffsetReset,
};
pub use error::{BrokerError, Result};
pub use events::ClientEvent;
pub use fjord_log::{FetchIsolation, TopicPartition};
pub use pid::ProducerIdManager;
pub use producer::{
    ConsumerGroupMetadata, DeliveryFuture, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
};
pub use txn::{TransactionConfig, TransactionMetadata, TransactionState};
