//! Client instrumentation events, as KafkaJS's `producer.on('producer.network.request')`,
//! `consumer.on('consumer.fetch')`, `consumer.on('consumer.group_join')` ...: an application
//! subscribes to a client's events and gets every one after it subscribed.
//!
//! Events are delivered through a bounded broadcast channel; a subscriber that falls behind
//! loses the oldest events (and is told how many), it never slows the client down. Sending
//! costs nothing when nobody subscribed.

use std::time::Duration;

use fjord_log::TopicPartition;
use tokio::sync::broadcast;

/// Events a client publishes.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// A producer sent a batch to the broker (KafkaJS `producer.network.request`).
    RequestSent {
        /// The client.
        client_id: String,
        /// The partition.
        partition: TopicPartition,
        /// Records in the batch.
        records: usize,
        /// Bytes of the batch as stored.
        bytes: usize,
        /// How long the append took.
        duration: Duration,
    },
    /// A consumer fetched (KafkaJS `consumer.fetch`).
    Fetch {
        /// The client.
        client_id: String,
        /// Batches fetched.
        batches: usize,
        /// Records handed to the application.
        records: usize,
        /// How long the fetch took.
        duration: Duration,
    },
    /// A consumer committed offsets (KafkaJS `consumer.commit_offsets`).
    CommitOffsets {
        /// The client.
        client_id: String,
        /// The group.
        group_id: String,
        /// The offsets committed.
        offsets: Vec<(TopicPartition, i64)>,
    },
    /// A consumer noticed its group is rebalancing (KafkaJS `consumer.rebalancing`).
    RebalanceStarted {
        /// The client.
        client_id: String,
        /// The group.
        group_id: String,
    },
    /// A consumer joined its group (KafkaJS `consumer.group_join`).
    GroupJoined {
        /// The client.
        client_id: String,
        /// The group.
        group_id: String,
        /// The member id.
        member_id: String,
        /// The generation joined.
        generation_id: i32,
        /// The leader's member id.
        leader_id: String,
        /// Whether this member is the leader.
        is_leader: bool,
        /// The member's assignment.
        member_assignment: Vec<TopicPartition>,
        /// How long the join and sync took.
        duration: Duration,
    },
    /// A consumer's heartbeat (KafkaJS `consumer.heartbeat`).
    Heartbeat {
        /// The client.
        client_id: String,
        /// The group.
        group_id: String,
        /// The member id.
        member_id: String,
        /// The generation.
        generation_id: i32,
    },
    /// A client stopped (KafkaJS `consumer.stop` / `producer.disconnect`).
    Stopped {
        /// The client.
        client_id: String,
    },
}

/// How many events a slow subscriber may lag before it loses the oldest.
const EVENT_BUFFER: usize = 1024;

/// A client's event publisher.
#[derive(Debug, Clone)]
pub(crate) struct Events {
    sender: broadcast::Sender<ClientEvent>,
}

impl Default for Events {
    fn default() -> Self {
        Events { sender: broadcast::channel(EVENT_BUFFER).0 }
    }
}

impl Events {
    /// Publishes an event built only if someone listens.
    pub(crate) fn emit(&self, event: impl FnOnce() -> ClientEvent) {
        if self.sender.receiver_count() > 0 {
            let _ = self.sender.send(event());
        }
    }

    /// A new subscription.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<ClientEvent> {
        self.sender.subscribe()
    }
}
