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

pub mod record;
