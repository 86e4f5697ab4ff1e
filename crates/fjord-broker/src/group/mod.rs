//! The group coordinator: Kafka's classic consumer group protocol, server side (Kafka's
//! `GroupCoordinator`), and committed offsets stored in `__consumer_offsets`.
//!
//! Members join (`join_group`), the coordinator waits for every known member to rejoin, bumps
//! the generation, and answers every join; the leader gets all members' subscriptions, runs the
//! assignor (client side, as in Kafka) and sends the assignments with its `sync_group`; every
//! member gets its own assignment from `sync_group`. Heartbeats keep a member's session alive
//! and tell it when to rejoin; a member silent for its session timeout is evicted, which starts
//! a rebalance. Offset commits carry the member id and generation; a stale generation or an
//! unknown member is refused.
//!
//! In-process members do not have to wait for their next heartbeat to learn of a rebalance:
//! [`GroupCoordinator::rebalance_signal`] wakes them as soon as one starts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fjord_log::{Topic, TopicPartition};
use tokio::sync::watch;

use crate::error::Result;

/// Consumer group settings (Kafka's `group.*` and `offsets.*` broker configs).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// Smallest session timeout a member may ask for (`group.min.session.timeout.ms`, 6 s).
    pub min_session_timeout: Duration,
    /// Largest session timeout a member may ask for (`group.max.session.timeout.ms`, 30 min).
    pub max_session_timeout: Duration,
    /// How long the first rebalance of an empty group waits for more members
    /// (`group.initial.rebalance.delay.ms`; Kafka's default is 3 s, Fjord's 0 because an
    /// embedded application starts its consumers together).
    pub initial_rebalance_delay: Duration,
    /// Most members a group may have (`group.max.size`).
    pub max_size: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout: Duration::from_millis(6_000),
            max_session_timeout: Duration::from_millis(1_800_000),
            initial_rebalance_delay: Duration::ZERO,
            max_size: i32::MAX as usize,
        }
    }
}

/// A member's `JoinGroup`.
#[derive(Debug, Clone)]
pub struct JoinGroupRequest {
    /// The group.
    pub group_id: String,
    /// The member id from an earlier join, or empty for a new member (the coordinator then
    /// assigns one, `<client id>-<uuid>`).
    pub member_id: String,
    /// The client id, for descriptions.
    pub client_id: String,
    /// Evict the member if it sends nothing for this long.
    pub session_timeout: Duration,
    /// How long the coordinator waits for members to rejoin during a rebalance
    /// (the consumer's `max.poll.interval.ms`).
    pub rebalance_timeout: Duration,
    /// `consumer` for consumers.
    pub protocol_type: String,
    /// The assignors the member supports, in preference order, each with the member's
    /// subscription metadata (Kafka's `ConsumerProtocolSubscription` bytes).
    pub protocols: Vec<(String, Bytes)>,
}

/// A member of a group as the leader sees it in its join response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    /// The member id.
    pub member_id: String,
    /// Its metadata for the chosen protocol.
    pub metadata: Bytes,
}

/// The answer to `JoinGroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroupResponse {
    /// The new generation.
    pub generation_id: i32,
    /// The protocol (assignor) chosen for the generation.
    pub protocol_name: String,
    /// The leader's member id.
    pub leader: String,
    /// This member's id (assigned if it joined with an empty one).
    pub member_id: String,
    /// Every member with its metadata, for the leader only; empty for followers.
    pub members: Vec<JoinedMember>,
}

/// A member's `SyncGroup`.
#[derive(Debug, Clone)]
pub struct SyncGroupRequest {
    /// The group.
    pub group_id: String,
    /// The generation from the join response.
    pub generation_id: i32,
    /// The member.
    pub member_id: String,
    /// From the leader: each member's assignment (Kafka's `ConsumerProtocolAssignment`
    /// bytes). Empty from followers.
    pub assignments: Vec<(String, Bytes)>,
}

/// An offset commit for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetAndMetadata {
    /// The next offset to consume.
    pub offset: i64,
    /// The leader epoch of the record before `offset`, or -1.
    pub leader_epoch: i32,
    /// Free text the committer attaches.
    pub metadata: String,
    /// When the commit happened (ms since the epoch).
    pub commit_timestamp: i64,
}

/// A member's (or a standalone consumer's) `OffsetCommit`.
#[derive(Debug, Clone)]
pub struct OffsetCommitRequest {
    /// The group.
    pub group_id: String,
    /// The member, or empty for a consumer that assigns partitions by hand.
    pub member_id: String,
    /// The member's generation, or -1 for a consumer that assigns partitions by hand.
    pub generation_id: i32,
    /// The offsets.
    pub offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
}

/// The state of a group, as Kafka names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupState {
    /// No members (offsets may still be committed).
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// Deleted.
    Dead,
}

impl GroupState {
    /// Kafka's name (`Empty`, `PreparingRebalance`, ...).
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// One line of `ListGroups`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// The group.
    pub group_id: String,
    /// `consumer` for consumer groups, empty for groups that only commit offsets.
    pub protocol_type: String,
    /// Its state.
    pub state: GroupState,
}

/// A member in `DescribeGroups`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// The member id.
    pub member_id: String,
    /// The client id.
    pub client_id: String,
    /// Its subscription metadata for the group's protocol.
    pub metadata: Bytes,
    /// Its current assignment bytes.
    pub assignment: Bytes,
}

/// `DescribeGroups` for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group.
    pub group_id: String,
    /// Its state.
    pub state: GroupState,
    /// `consumer`, or empty.
    pub protocol_type: String,
    /// The chosen assignor, or empty.
    pub protocol: String,
    /// The current generation.
    pub generation_id: i32,
    /// The leader's member id, or empty.
    pub leader: String,
    /// The members.
    pub members: Vec<MemberDescription>,
}

/// The group coordinator of a broker.
pub struct GroupCoordinator {
    _offsets_topic: Arc<Topic>,
    _config: GroupConfig,
}

impl std::fmt::Debug for GroupCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCoordinator").finish_non_exhaustive()
    }
}

impl GroupCoordinator {
    /// Loads committed offsets and group metadata from `__consumer_offsets`.
    pub fn load(offsets_topic: Arc<Topic>, config: GroupConfig) -> Result<Self> {
        Ok(GroupCoordinator { _offsets_topic: offsets_topic, _config: config })
    }

    /// Starts the session timers (on the current tokio runtime).
    pub fn start(&self) {}

    /// Stops the timers and fails pending joins and syncs.
    pub async fn shutdown(&self) {}

    /// The `__consumer_offsets` partition of a group: Kafka's
    /// `abs(groupId.hashCode) % offsets.topic.num.partitions`.
    pub fn partition_for(&self, group_id: &str) -> u32 {
        let _ = group_id;
        todo!()
    }

    /// Kafka's `JoinGroup`: completes when the rebalance completes.
    pub async fn join_group(&self, request: JoinGroupRequest) -> Result<JoinGroupResponse> {
        let _ = request;
        todo!()
    }

    /// Kafka's `SyncGroup`: completes when the leader's assignment is in; returns this
    /// member's assignment bytes.
    pub async fn sync_group(&self, request: SyncGroupRequest) -> Result<Bytes> {
        let _ = request;
        todo!()
    }

    /// Kafka's `Heartbeat`. `RebalanceInProgress` tells the member to rejoin.
    pub fn heartbeat(&self, group_id: &str, member_id: &str, generation_id: i32) -> Result<()> {
        let _ = (group_id, member_id, generation_id);
        todo!()
    }

    /// Kafka's `LeaveGroup`.
    pub async fn leave_group(&self, group_id: &str, member_id: &str) -> Result<()> {
        let _ = (group_id, member_id);
        todo!()
    }

    /// Changes whenever a rebalance of the group starts, so an in-process member learns at
    /// once that it must rejoin.
    pub fn rebalance_signal(&self, group_id: &str) -> watch::Receiver<u64> {
        let _ = group_id;
        todo!()
    }

    /// Kafka's `OffsetCommit`, durable in `__consumer_offsets` when it returns.
    pub async fn commit_offsets(&self, request: OffsetCommitRequest) -> Result<()> {
        let _ = request;
        todo!()
    }

    /// Kafka's `OffsetFetch`: the committed offsets of the group, for `partitions` or all.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<&[TopicPartition]>,
    ) -> Result<BTreeMap<TopicPartition, OffsetAndMetadata>> {
        let _ = (group_id, partitions);
        todo!()
    }

    /// Kafka's `ListGroups`.
    pub fn list_groups(&self) -> Vec<GroupListing> {
        todo!()
    }

    /// Kafka's `DescribeGroups`.
    pub fn describe_group(&self, group_id: &str) -> Result<GroupDescription> {
        let _ = group_id;
        todo!()
    }

    /// Kafka's `DeleteGroups`: refused while the group has members.
    pub async fn delete_group(&self, group_id: &str) -> Result<()> {
        let _ = group_id;
        todo!()
    }

    /// Overwrites committed offsets (the admin's reset-offsets): refused while the group has
    /// members, as `kafka-consumer-groups --reset-offsets` is.
    pub async fn reset_offsets(
        &self,
        group_id: &str,
        offsets: BTreeMap<TopicPartition, i64>,
    ) -> Result<()> {
        let _ = (group_id, offsets);
        todo!()
    }
}
