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
//! Transactional offset commits (Kafka's `TxnOffsetCommit`, KIP-447): a transactional producer's
//! `send_offsets_to_transaction` appends the offsets in a transactional batch
//! ([`GroupCoordinator::commit_txn_offsets`], fenced by the member's generation and by the
//! producer's epoch); they stay invisible to fetches until the transaction coordinator ends the
//! transaction ([`GroupCoordinator::complete_txn_offsets`]), and a `require_stable` fetch
//! ([`GroupCoordinator::fetch_offsets_stable`]) refuses to answer for a partition while they are
//! pending.
//!
//! In-process members do not have to wait for their next heartbeat to learn of a rebalance:
//! [`GroupCoordinator::rebalance_signal`] wakes them as soon as one starts.
//!
//! Where Fjord differs from Kafka's classic protocol: a new member gets its id in the join
//! response directly (no `MEMBER_ID_REQUIRED` round trip, KIP-394); any join while Stable
//! starts a rebalance (Kafka answers a follower that rejoins with unchanged metadata with the
//! current generation); a member whose join request was abandoned (its future dropped) is
//! removed when the join phase completes instead of being handed a generation it would never
//! sync; static membership (`group.instance.id`) is not supported; groups come back Empty after
//! a restart (with their offsets and last generation), without their members.

mod load;
pub(crate) mod records;
mod state;
mod txn_offsets;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fjord_log::{LogError, Topic, TopicPartition};
use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot, watch};

use crate::error::{BrokerError, Result};
use state::{Committer, Ctx, Group, Reply, Shared, State};
use writer::WriteQueue;

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

/// A transactional producer's offset commit (Kafka's `TxnOffsetCommit`), sent by the
/// transaction coordinator for `send_offsets_to_transaction` once the group's
/// `__consumer_offsets` partition is part of the transaction.
#[derive(Debug, Clone)]
pub struct TxnOffsetCommitRequest {
    /// The group.
    pub group_id: String,
    /// The producer id of the transaction.
    pub producer_id: i64,
    /// The producer's epoch; an epoch older than the partition knows is fenced.
    pub producer_epoch: i16,
    /// The consumer's member id (from its group metadata), or empty for a producer not tied
    /// to a group member.
    pub member_id: String,
    /// The consumer's generation, or -1 for a producer not tied to a group member.
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
///
/// Its state is in memory, rebuilt from `__consumer_offsets` by [`GroupCoordinator::load`];
/// every offset commit and every rebalance is appended there. Timeouts (sessions, rebalance
/// timeouts, the initial rebalance delay) are enforced by a task that [`GroupCoordinator::start`]
/// spawns; without it, a join phase completes only once every member has rejoined.
pub struct GroupCoordinator {
    shared: Arc<Shared>,
    offsets_topic: Arc<Topic>,
}

impl std::fmt::Debug for GroupCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCoordinator")
            .field("offsets_topic", &self.offsets_topic.name())
            .field("partitions", &self.shared.partitions)
            .finish_non_exhaustive()
    }
}

/// Waits for an answer a member is owed; a dropped sender means the coordinator went away.
async fn wait<T>(rx: oneshot::Receiver<Result<T>>) -> Result<T> {
    rx.await.unwrap_or(Err(BrokerError::BrokerShutdown))
}

impl GroupCoordinator {
    /// Loads committed offsets and group metadata from `__consumer_offsets` (blocking file
    /// I/O: call it where blocking is fine). Groups come back Empty, with their offsets and
    /// last generation, so that the next generation is larger than any handed out before.
    pub fn load(offsets_topic: Arc<Topic>, config: GroupConfig) -> Result<Self> {
        let logs = offsets_topic.partitions();
        if logs.is_empty() {
            return Err(BrokerError::Log(LogError::UnknownPartition {
                topic: offsets_topic.name().to_string(),
                partition: 0,
                partitions: 0,
            }));
        }
        let partitions = logs.len() as u32;
        let load::Loaded { groups: loaded, pending } = load::load_groups(&offsets_topic)?;
        let wake = Arc::new(Notify::new());
        let mut ctx = Ctx::new(config, partitions, wake.clone());
        let mut groups = HashMap::with_capacity(loaded.len());
        for (id, l) in loaded {
            let mut group = Group::new(id.clone(), ctx.next_incarnation());
            group.generation = l.generation;
            group.protocol_type = l.protocol_type;
            group.offsets = l.offsets;
            groups.insert(id, group);
        }
        let shared = Arc::new(Shared {
            partitions,
            state: parking_lot::Mutex::new(State { groups, txn_offsets: pending, ctx }),
            writers: logs.into_iter().map(WriteQueue::new).collect(),
            in_flight: watch::channel(0).0,
            wake,
            timer: Mutex::new(None),
            runtime: std::sync::OnceLock::new(),
        });
        Ok(GroupCoordinator { shared, offsets_topic })
    }

    /// Starts the session timers (on the current tokio runtime).
    pub fn start(&self) {
        let mut timer = self.shared.timer.lock();
        if timer.is_some() || self.shared.state.lock().ctx.shutdown {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let _ = self.shared.runtime.set(runtime.clone());
                *timer = Some(runtime.spawn(run_timer(Arc::clone(&self.shared))));
            }
            Err(_) => tracing::warn!(
                "GroupCoordinator::start called outside a tokio runtime: sessions and rebalance timeouts will not expire"
            ),
        }
    }

    /// Stops the timers and fails pending joins and syncs.
    pub async fn shutdown(&self) {
        // Never hold the state lock while taking the timer's (`start` takes them the other way).
        self.shared.state.lock().shut_down();
        let timer = self.shared.timer.lock().take();
        self.shared.wake.notify_one();
        if let Some(timer) = timer {
            let _ = timer.await;
        }
        // Let appends already queued finish before the log closes.
        let mut in_flight = self.shared.in_flight.subscribe();
        let _ = in_flight.wait_for(|n| *n == 0).await;
        tracing::debug!("group coordinator shut down");
    }

    /// The `__consumer_offsets` partition of a group: Kafka's
    /// `abs(groupId.hashCode) % offsets.topic.num.partitions`.
    pub fn partition_for(&self, group_id: &str) -> u32 {
        partition_for_key(group_id, self.shared.partitions)
    }

    /// Kafka's `JoinGroup`: completes when the rebalance completes.
    ///
    /// A member joins with an empty `member_id` the first time and gets its id in the
    /// response. The join phase ends when every known member has (re)joined, or after the
    /// largest rebalance timeout (members that did not rejoin are removed); the leader's
    /// response lists every member with its metadata for the chosen protocol.
    pub async fn join_group(&self, request: JoinGroupRequest) -> Result<JoinGroupResponse> {
        match self.shared.locked(|state, now| state.join(request, now))? {
            Reply::Ready(response) => Ok(response),
            Reply::Wait(rx) => wait(rx).await,
        }
    }

    /// Kafka's `SyncGroup`: completes when the leader's assignment is in; returns this
    /// member's assignment bytes.
    pub async fn sync_group(&self, request: SyncGroupRequest) -> Result<Bytes> {
        match self.shared.locked(|state, now| state.sync(request, now))? {
            Reply::Ready(assignment) => Ok(assignment),
            Reply::Wait(rx) => wait(rx).await,
        }
    }

    /// Kafka's `Heartbeat`. `RebalanceInProgress` tells the member to rejoin.
    pub fn heartbeat(&self, group_id: &str, member_id: &str, generation_id: i32) -> Result<()> {
        self.shared.locked(|state, now| state.heartbeat(group_id, member_id, generation_id, now))
    }

    /// Kafka's `LeaveGroup`.
    pub async fn leave_group(&self, group_id: &str, member_id: &str) -> Result<()> {
        self.shared.locked(|state, now| state.leave(group_id, member_id, now))
    }

    /// Changes whenever a rebalance of the group starts, so an in-process member learns at
    /// once that it must rejoin.
    ///
    /// The value is bumped each time the group enters PreparingRebalance, including the
    /// rebalance a member's own join starts, so a member marks the value seen
    /// (`borrow_and_update`) when its join returns: a rebalance that starts later bumps the
    /// value again, and one that started in between makes its sync fail with
    /// `RebalanceInProgress` or `IllegalGeneration`. The channel closes (`changed()` fails) when
    /// the coordinator shuts down.
    pub fn rebalance_signal(&self, group_id: &str) -> watch::Receiver<u64> {
        let mut state = self.shared.state.lock();
        if state.ctx.shutdown {
            return watch::channel(0).1;
        }
        state
            .ctx
            .signals
            .entry(group_id.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Kafka's `OffsetCommit`, durable in `__consumer_offsets` when it returns.
    ///
    /// A member commits with its member id and generation (also while the group prepares a
    /// rebalance, from its revocation callback); a consumer that assigns partitions by hand
    /// commits with generation -1 and an empty member id, allowed while the group has no
    /// members. The offsets become visible to [`Self::fetch_offsets`] once appended.
    pub async fn commit_offsets(&self, request: OffsetCommitRequest) -> Result<()> {
        let OffsetCommitRequest { group_id, member_id, generation_id, offsets } = request;
        let rx = self.shared.locked(|state, now| {
            state.commit(&group_id, &member_id, generation_id, offsets, Committer::Member, now)
        })?;
        match rx {
            Some(rx) => wait(rx).await,
            None => Ok(()),
        }
    }

    /// Kafka's `OffsetFetch`: the committed offsets of the group, for `partitions` or all.
    /// Partitions without a committed offset (and unknown groups) are absent from the map.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<&[TopicPartition]>,
    ) -> Result<BTreeMap<TopicPartition, OffsetAndMetadata>> {
        state::validate_group_id(group_id)?;
        let state = self.shared.state.lock();
        let Some(group) = state.groups.get(group_id) else {
            return Ok(BTreeMap::new());
        };
        Ok(match partitions {
            None => group.offsets.iter().map(|(tp, c)| (tp.clone(), c.value.clone())).collect(),
            Some(partitions) => partitions
                .iter()
                .filter_map(|tp| group.offsets.get(tp).map(|c| (tp.clone(), c.value.clone())))
                .collect(),
        })
    }

    /// Kafka's `OffsetFetch` with `require_stable` (KIP-447), what consumers under
    /// `read_committed` use: the committed offsets of `partitions`, or
    /// `UnstableOffsetCommit(tp)` if an open transaction holds an offset of the group for one of
    /// them (or a commit for it is being appended), so that a new owner of a partition never
    /// starts from an offset a pending transaction is about to replace. Retry once the
    /// transaction has ended. Partitions without a committed offset (and unknown groups) are
    /// absent from the map.
    pub fn fetch_offsets_stable(
        &self,
        group_id: &str,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, OffsetAndMetadata>> {
        state::validate_group_id(group_id)?;
        let state = self.shared.state.lock();
        if let Some(tp) = partitions.iter().find(|tp| state.offset_unstable(group_id, tp)) {
            return Err(BrokerError::UnstableOffsetCommit(tp.clone()));
        }
        let Some(group) = state.groups.get(group_id) else {
            return Ok(BTreeMap::new());
        };
        Ok(partitions
            .iter()
            .filter_map(|tp| group.offsets.get(tp).map(|c| (tp.clone(), c.value.clone())))
            .collect())
    }

    /// Kafka's `TxnOffsetCommit`: appends the offsets to the group's `__consumer_offsets`
    /// partition in one transactional batch of the producer, and holds them as pending for the
    /// producer once appended. Pending offsets are invisible to [`Self::fetch_offsets`] (and
    /// make [`Self::fetch_offsets_stable`] refuse their partitions) until
    /// [`Self::complete_txn_offsets`] commits or aborts them. A later transactional commit of
    /// the same producer for the same partition replaces the earlier pending one.
    ///
    /// The transaction coordinator must have added the group's partition to the transaction
    /// first. Returns once the batch is in the log (through the same ordered queue as every
    /// other write to that partition), so a marker written after this returns follows it.
    ///
    /// Fencing (KIP-447): a request with a generation (`>= 0`) or a member id needs a current
    /// member of the group (else `UnknownMemberId`) in the group's generation (else
    /// `IllegalGeneration`), so a producer whose consumer lost its partitions in a rebalance
    /// cannot commit offsets for them; one with generation -1 and no member id is not checked
    /// against the group (as in Kafka, neither is one with generation -1 while the group is
    /// empty). A producer epoch older than the partition knows fails with `ProducerFenced`
    /// (carrying the producer id) and holds nothing.
    pub async fn commit_txn_offsets(&self, request: TxnOffsetCommitRequest) -> Result<()> {
        let TxnOffsetCommitRequest {
            group_id,
            producer_id,
            producer_epoch,
            member_id,
            generation_id,
            offsets,
        } = request;
        let committer = Committer::Transaction { producer_id, producer_epoch };
        let rx = self.shared.locked(|state, now| {
            state.commit(&group_id, &member_id, generation_id, offsets, committer, now)
        })?;
        match rx {
            Some(rx) => wait(rx).await,
            None => Ok(()),
        }
    }

    /// Ends the transaction of `producer_id` for its offset commits: on `commit` its pending
    /// offsets become the committed ones (each unless a plain commit appended after it is
    /// already there: record offsets decide, as in Kafka), otherwise they are dropped. The
    /// transaction coordinator calls it after appending the marker to the group's
    /// `__consumer_offsets` partition. Idempotent: without pending offsets it does nothing.
    /// Offsets of a group deleted meanwhile were dropped with it and do not come back.
    pub fn complete_txn_offsets(&self, producer_id: i64, commit: bool) {
        self.shared.state.lock().complete_txn(producer_id, commit);
    }

    /// Kafka's `ListGroups`.
    pub fn list_groups(&self) -> Vec<GroupListing> {
        let state = self.shared.state.lock();
        let mut groups: Vec<GroupListing> = state.groups.values().map(Group::listing).collect();
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        groups
    }

    /// Kafka's `DescribeGroups`. As in Kafka, the protocol and the members' metadata and
    /// assignments are filled in only while the group is Stable.
    pub fn describe_group(&self, group_id: &str) -> Result<GroupDescription> {
        let state = self.shared.state.lock();
        state
            .groups
            .get(group_id)
            .map(Group::describe)
            .ok_or_else(|| BrokerError::GroupIdNotFound(group_id.to_string()))
    }

    /// Kafka's `DeleteGroups`: refused while the group has members.
    pub async fn delete_group(&self, group_id: &str) -> Result<()> {
        let rx = self.shared.locked(|state, _| state.delete(group_id))?;
        wait(rx).await
    }

    /// Overwrites committed offsets (the admin's reset-offsets): refused while the group has
    /// members, as `kafka-consumer-groups --reset-offsets` is.
    pub async fn reset_offsets(
        &self,
        group_id: &str,
        offsets: BTreeMap<TopicPartition, i64>,
    ) -> Result<()> {
        let commit_timestamp = state::now_ms();
        let offsets = offsets
            .into_iter()
            .map(|(tp, offset)| {
                (
                    tp,
                    OffsetAndMetadata {
                        offset,
                        leader_epoch: -1,
                        metadata: String::new(),
                        commit_timestamp,
                    },
                )
            })
            .collect();
        let rx = self
            .shared
            .locked(|state, now| state.commit(group_id, "", -1, offsets, Committer::Admin, now))?;
        match rx {
            Some(rx) => wait(rx).await,
            None => Ok(()),
        }
    }
}

impl Drop for GroupCoordinator {
    fn drop(&mut self) {
        self.shared.state.lock().shut_down();
        if let Some(timer) = self.shared.timer.lock().take() {
            timer.abort();
        }
    }
}

/// Kafka's `Utils.abs(key.hashCode) % partitions` with Java's `String.hashCode`
/// (`Utils.abs(Integer.MIN_VALUE)` is 0): the `__consumer_offsets` partition of a group id, and
/// the `__transaction_state` partition of a transactional id.
pub(crate) fn partition_for_key(key: &str, partitions: u32) -> u32 {
    let hash = state::java_string_hash(key);
    let abs = if hash == i32::MIN { 0 } else { hash.unsigned_abs() };
    abs % partitions.max(1)
}

/// The timer task: processes passed deadlines, then sleeps until the nearest one or until a
/// nearer one is set.
async fn run_timer(shared: Arc<Shared>) {
    loop {
        let next = shared.locked(|state, now| {
            if state.ctx.shutdown {
                return Err(());
            }
            state.expire(now);
            let next = state.next_deadline();
            state.ctx.timer_target = next;
            Ok(next)
        });
        let Ok(next) = next else {
            return;
        };
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = shared.wake.notified() => {}
                }
            }
            None => shared.wake.notified().await,
        }
    }
}
