//! Errors of the stream processing layer.

use crate::TaskId;

/// What to do with a record that cannot be deserialized or processed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ErrorAction {
    /// Stop the application with the error (Kafka's `LogAndFailExceptionHandler`, the
    /// default).
    #[default]
    Fail,
    /// Log the error, count the record as dropped, and go on
    /// (`LogAndContinueExceptionHandler`).
    LogAndContinue,
    /// Send the source record, bytes as they were, to this topic with the error, the node and
    /// the source topic, partition and offset in `__streams.errors.*` headers (KIP-1034), and go
    /// on.
    DeadLetter {
        /// The dead-letter topic.
        topic: String,
    },
}

/// Errors of building or running a topology.
#[derive(Debug, thiserror::Error)]
pub enum StreamsError {
    /// The topology is not valid; the message says what to change.
    #[error("invalid topology: {0}")]
    Topology(String),
    /// A setting is invalid.
    #[error("invalid config `{name}`: {reason}")]
    Config {
        /// The setting.
        name: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A record failed and the error handler says to stop.
    #[error("{kind} error in task {task}, node `{node}`, record {source_record}: {message}")]
    Record {
        /// The task.
        task: TaskId,
        /// The node.
        node: String,
        /// `deserialization` or `processing`.
        kind: &'static str,
        /// The source record, `topic-partition@offset`.
        source_record: String,
        /// The error.
        message: String,
    },
    /// The backend (broker or Kafka) failed.
    #[error(transparent)]
    Broker(#[from] fjord_broker::BrokerError),
    /// A state store failed (its engine, or a value its serde cannot read or write).
    #[error("state store `{store}`: {message}")]
    State {
        /// The store.
        store: String,
        /// What happened.
        message: String,
    },
    /// The application is not in a state that allows the call.
    #[error("{0}")]
    IllegalState(String),
    /// A stream thread stopped with an error.
    #[error("stream thread {thread} failed: {message}")]
    ThreadFailed {
        /// The thread's name.
        thread: String,
        /// What happened.
        message: String,
    },
}
