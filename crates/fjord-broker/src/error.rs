//! The broker's errors, named after Kafka's error codes so that a Kafka user recognises them
//! and a wire-protocol server can map them one to one.

use fjord_log::{LogError, TopicPartition};

/// Errors of the broker and its in-process clients.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// An error of the log: unknown topic, offset out of range, invalid record, I/O, ...
    #[error(transparent)]
    Log(#[from] LogError),
    /// A setting has a value the broker cannot accept.
    #[error("invalid value for `{name}`: {reason}")]
    InvalidConfig {
        /// The setting.
        name: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A replication factor above 1 on a single node (Kafka's `INVALID_REPLICATION_FACTOR`).
    #[error(
        "replication factor {0} is impossible on a single-node Fjord broker: use 1 (or -1 for the default)"
    )]
    InvalidReplicationFactor(i16),
    /// The client was closed.
    #[error("the {0} is closed")]
    Closed(&'static str),
    /// The broker is shutting down or shut down.
    #[error("the broker is shut down")]
    BrokerShutdown,
    /// An operation did not finish in time (Kafka's `REQUEST_TIMED_OUT`).
    #[error("{operation} timed out after {timeout_ms} ms")]
    Timeout {
        /// What timed out.
        operation: &'static str,
        /// The limit.
        timeout_ms: u64,
    },

    // Consumer groups.
    /// The group id is empty or otherwise unusable (Kafka's `INVALID_GROUP_ID`).
    #[error("invalid group id `{0}`: a group id must not be empty")]
    InvalidGroupId(String),
    /// No such group (Kafka's `GROUP_ID_NOT_FOUND`).
    #[error("group `{0}` does not exist")]
    GroupIdNotFound(String),
    /// The member is not (or no longer) in the group (Kafka's `UNKNOWN_MEMBER_ID`).
    #[error(
        "member `{member_id}` is not in group `{group_id}`: it left or was evicted; rejoin the group"
    )]
    UnknownMemberId {
        /// The group.
        group_id: String,
        /// The member.
        member_id: String,
    },
    /// A request from an older generation (Kafka's `ILLEGAL_GENERATION`).
    #[error(
        "generation {generation} of group `{group_id}` is stale: the group is at generation {current}; rejoin the group"
    )]
    IllegalGeneration {
        /// The group.
        group_id: String,
        /// The generation sent.
        generation: i32,
        /// The group's generation.
        current: i32,
    },
    /// The group is rebalancing; the member must rejoin (Kafka's `REBALANCE_IN_PROGRESS`).
    #[error("group `{0}` is rebalancing: rejoin to get the new assignment")]
    RebalanceInProgress(String),
    /// The member's protocols do not match the group's (Kafka's `INCONSISTENT_GROUP_PROTOCOL`).
    #[error("group `{group_id}` uses {expected}; this member offers none of those")]
    InconsistentGroupProtocol {
        /// The group.
        group_id: String,
        /// What the group uses.
        expected: String,
    },
    /// The session timeout is outside the broker's bounds (Kafka's `INVALID_SESSION_TIMEOUT`).
    #[error(
        "session timeout {timeout_ms} ms is outside the broker's bounds [{min_ms}, {max_ms}] (group.min/max.session.timeout.ms)"
    )]
    InvalidSessionTimeout {
        /// The timeout asked for.
        timeout_ms: u64,
        /// The lower bound.
        min_ms: u64,
        /// The upper bound.
        max_ms: u64,
    },
    /// The operation needs a group without members (Kafka's `NON_EMPTY_GROUP`).
    #[error("group `{0}` has active members: stop its consumers first")]
    NonEmptyGroup(String),
    /// The group is full (Kafka's `GROUP_MAX_SIZE_REACHED`).
    #[error("group `{group_id}` already has the maximum of {max} members (group.max.size)")]
    GroupMaxSizeReached {
        /// The group.
        group_id: String,
        /// The limit.
        max: usize,
    },
    /// Another member uses this static member id (Kafka's `FENCED_INSTANCE_ID`).
    #[error("group instance id `{0}` was taken over by another member")]
    FencedInstanceId(String),
    /// A consumer operation that needs an assignment or subscription that is not there.
    #[error("{0}")]
    IllegalState(String),
    /// The partition is not assigned to this consumer.
    #[error("partition {0} is not assigned to this consumer")]
    NotAssigned(TopicPartition),
    /// The consumer has no position for a partition and `auto.offset.reset=none`
    /// (Kafka's `NoOffsetForPartitionException`).
    #[error("no committed offset for {0} and auto.offset.reset is none: seek to an offset first")]
    NoOffsetForPartition(TopicPartition),

    // Producers and transactions.
    /// A newer producer with the same transactional id took over (Kafka's `PRODUCER_FENCED`).
    #[error("producer with transactional id `{0}` was fenced by a newer instance with the same id")]
    ProducerFenced(String),
    /// The transaction is in a state that does not allow the operation (Kafka's
    /// `INVALID_TXN_STATE`).
    #[error("invalid transaction state: {0}")]
    InvalidTxnState(String),
    /// A transaction for this id is still completing (Kafka's `CONCURRENT_TRANSACTIONS`).
    #[error("transaction of `{0}` is still completing; retry")]
    ConcurrentTransactions(String),
    /// The transaction timeout is above `transaction.max.timeout.ms` (Kafka's
    /// `INVALID_TRANSACTION_TIMEOUT`).
    #[error("transaction timeout {timeout_ms} ms exceeds transaction.max.timeout.ms ({max_ms} ms)")]
    InvalidTransactionTimeout {
        /// The timeout asked for.
        timeout_ms: u64,
        /// The limit.
        max_ms: u64,
    },
    /// Offsets of the partition are part of an open transaction (Kafka's
    /// `UNSTABLE_OFFSET_COMMIT`, KIP-447): wait for it to end before fetching them.
    #[error("committed offsets of {0} are pending in an open transaction; retry when it ends")]
    UnstableOffsetCommit(TopicPartition),
    /// No such transactional id (Kafka's `TRANSACTIONAL_ID_NOT_FOUND`).
    #[error("transactional id `{0}` is not known")]
    TransactionalIdNotFound(String),
    /// The producer's buffer is full and stayed full for `max.block.ms`.
    #[error(
        "the producer's buffer ({buffer_memory} bytes) stayed full for max.block.ms ({max_block_ms} ms)"
    )]
    BufferExhausted {
        /// `buffer.memory`.
        buffer_memory: usize,
        /// `max.block.ms`.
        max_block_ms: u64,
    },
    /// The batch holding a record failed; every record of the batch gets this error.
    #[error("delivery failed: {0}")]
    Delivery(#[source] std::sync::Arc<BrokerError>),
    /// A record is larger than the producer's `max.request.size`.
    #[error("record of {size} bytes exceeds max.request.size ({max} bytes)")]
    RecordTooLarge {
        /// The record's size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// Shorthand for results of the broker.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;
