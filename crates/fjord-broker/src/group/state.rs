//! The coordinator's in-memory state and Kafka's classic group state machine (`ClassicGroup`
//! and the classic-group half of `GroupMetadataManager`).
//!
//! Everything here runs under one `parking_lot` mutex, never across an `.await`. Members that
//! must wait (a join until the join phase completes, a follower's sync until the leader's
//! assignment) get a `oneshot` receiver; whoever completes the phase answers them. Records to
//! append to `__consumer_offsets` are queued under the lock (so the log gets them in the order
//! the state changed) and appended by the writer (`writer.rs`); answers that depend on a
//! record (join and sync responses, offset commits) are sent after its append.
//!
//! Timers: deadlines are fields of groups and members (session expiry, the end of a join phase,
//! the end of the initial rebalance delay, the sync deadline). One task sleeps until the
//! nearest; whoever sets a deadline earlier than the one the task sleeps towards wakes it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fjord_log::clock::{Clock, SystemClock};
use fjord_log::{LogError, TopicPartition};
use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::records::{self, GroupMetadataValue, KeyValue, MemberMetadata};
use super::txn_offsets::{self, Committed, Completed, PendingTxnOffsets};
use super::writer::{PendingWrite, WriteDone, WriteQueue};
use super::{
    GroupConfig, GroupDescription, GroupListing, GroupState, JoinGroupRequest, JoinGroupResponse,
    JoinedMember, MemberDescription, OffsetAndMetadata, SyncGroupRequest, partition_for_key,
};
use crate::error::{BrokerError, Result};

/// The client host recorded for members (in-process clients have no address).
const CLIENT_HOST: &str = "";

pub(super) type JoinTx = oneshot::Sender<Result<JoinGroupResponse>>;
pub(super) type SyncTx = oneshot::Sender<Result<Bytes>>;

/// An answer now, or one to wait for.
pub(super) enum Reply<T> {
    Ready(T),
    Wait(oneshot::Receiver<Result<T>>),
}

/// What the coordinator's handle and its timer task share.
pub(super) struct Shared {
    pub(super) partitions: u32,
    pub(super) state: Mutex<State>,
    pub(super) writers: Vec<WriteQueue>,
    /// Writes queued and not yet completed; `shutdown` waits for 0.
    pub(super) in_flight: watch::Sender<usize>,
    pub(super) wake: Arc<Notify>,
    pub(super) timer: Mutex<Option<JoinHandle<()>>>,
    /// The broker's runtime, set by `start`: writes run on its blocking pool, never on a
    /// caller's runtime, which may be a client thread's that goes away with queued work.
    pub(super) runtime: std::sync::OnceLock<tokio::runtime::Handle>,
}

impl Shared {
    /// Runs `f` under the state lock, then queues the writes it decided (still under the lock,
    /// so the queue's order is the decisions' order).
    pub(super) fn locked<R>(self: &Arc<Self>, f: impl FnOnce(&mut State, Instant) -> R) -> R {
        let mut state = self.state.lock();
        let result = f(&mut state, Instant::now());
        for write in std::mem::take(&mut state.ctx.writes) {
            self.enqueue(write);
        }
        result
    }
}

pub(super) struct State {
    pub(super) groups: HashMap<String, Group>,
    /// Transactional offset commits whose transaction has not ended.
    pub(super) txn_offsets: PendingTxnOffsets,
    pub(super) ctx: Ctx,
}

/// Everything of the state that is not a group, so that a group and this can be borrowed
/// mutably at once.
pub(super) struct Ctx {
    pub(super) config: GroupConfig,
    pub(super) partitions: u32,
    pub(super) signals: HashMap<String, watch::Sender<u64>>,
    pub(super) shutdown: bool,
    /// The deadline the timer task sleeps towards (`None`: no deadline, or not started).
    pub(super) timer_target: Option<Instant>,
    pub(super) wake: Arc<Notify>,
    /// Writes decided under the lock, queued by [`Shared::locked`].
    pub(super) writes: Vec<PendingWrite>,
    next_incarnation: u64,
    next_join_seq: u64,
    id_counter: u64,
}

impl Ctx {
    pub(super) fn new(config: GroupConfig, partitions: u32, wake: Arc<Notify>) -> Self {
        Ctx {
            config,
            partitions,
            signals: HashMap::new(),
            shutdown: false,
            timer_target: None,
            wake,
            writes: Vec::new(),
            next_incarnation: 0,
            next_join_seq: 0,
            id_counter: 0,
        }
    }

    pub(super) fn next_incarnation(&mut self) -> u64 {
        self.next_incarnation += 1;
        self.next_incarnation
    }

    fn next_join_seq(&mut self) -> u64 {
        self.next_join_seq += 1;
        self.next_join_seq
    }

    /// Makes sure the timer wakes by `at`.
    fn schedule(&mut self, at: Instant) {
        if self.timer_target.is_none_or(|t| at < t) {
            self.timer_target = Some(at);
            self.wake.notify_one();
        }
    }

    /// Wakes in-process members: a rebalance of `group` started.
    fn signal(&self, group: &str) {
        if let Some(sender) = self.signals.get(group) {
            sender.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// A member id: `<client id>-<random UUID v4>`, as Kafka makes them.
    fn member_id(&mut self, client_id: &str) -> String {
        self.id_counter += 1;
        format!("{client_id}-{}", random_uuid(self.id_counter))
    }

    /// Queues a batch of records for the group's partition.
    pub(super) fn write(&mut self, group: &str, records: Result<Vec<KeyValue>>, done: WriteDone) {
        self.write_as(group, records, None, done);
    }

    /// Queues a batch of records for the group's partition; a transactional batch of the
    /// producer (id and epoch) when `producer` is given.
    fn write_as(
        &mut self,
        group: &str,
        records: Result<Vec<KeyValue>>,
        producer: Option<(i64, i16)>,
        done: WriteDone,
    ) {
        let partition = partition_for_key(group, self.partitions);
        let batch = records.and_then(|records| {
            let now = now_ms();
            match producer {
                None => records::build_batch(&records, now),
                Some((id, epoch)) => records::build_transactional_batch(&records, now, id, epoch),
            }
            .map_err(|e| {
                BrokerError::IllegalState(format!("cannot encode a __consumer_offsets batch: {e}"))
            })
        });
        self.writes.push(PendingWrite { partition, batch, done });
    }

    /// Queues the group's metadata record; `replies` are sent once it is appended.
    fn write_group_metadata(&mut self, g: &Group, replies: Replies) {
        let group_id = g.id.clone();
        let generation = g.generation;
        let records = encode_group_metadata(g);
        let done: WriteDone = Box::new(move |_, result| {
            if let Err(e) = result {
                // The members get their answers anyway: the in-memory group is consistent, and
                // only the durability of this generation is lost.
                tracing::error!(group = %group_id, generation, error = %e, "failed to write group metadata to __consumer_offsets");
            }
            replies.send();
        });
        self.write(&g.id, records, done);
    }
}

/// Answers sent after a group metadata record is appended.
enum Replies {
    None,
    Joins(Vec<(JoinTx, JoinGroupResponse)>),
    Syncs(Vec<(SyncTx, Bytes)>),
}

impl Replies {
    fn send(self) {
        match self {
            Replies::None => {}
            Replies::Joins(joins) => {
                for (tx, response) in joins {
                    let _ = tx.send(Ok(response));
                }
            }
            Replies::Syncs(syncs) => {
                for (tx, assignment) in syncs {
                    let _ = tx.send(Ok(assignment));
                }
            }
        }
    }
}

pub(super) struct Member {
    id: String,
    client_id: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocol_type: String,
    /// Assignors in preference order, with the member's metadata for each.
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    /// Set while the member waits for the join phase to complete (it has joined this round).
    join_tx: Option<JoinTx>,
    /// Set while a follower waits for the leader's assignment.
    sync_tx: Option<SyncTx>,
    /// Last request from the member; its session ends `session_timeout` later unless it waits
    /// on a join or sync (Kafka's `hasSatisfiedHeartbeat`).
    last_seen: Instant,
    /// When the member joined in this round (the leader is the first to join, if the old leader
    /// did not).
    join_seq: u64,
}

impl Member {
    fn session_deadline(&self) -> Option<Instant> {
        if self.join_tx.is_some() || self.sync_tx.is_some() {
            None
        } else {
            Some(deadline(self.last_seen, self.session_timeout))
        }
    }

    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn renew(&mut self, now: Instant) {
        self.last_seen = now;
    }
}

/// Who commits offsets: what [`State::commit`] checks and what it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Committer {
    /// A member of the group, or a consumer that assigns partitions by hand (`OffsetCommit`).
    Member,
    /// An admin's reset: only while the group has no members.
    Admin,
    /// A transactional producer (`TxnOffsetCommit`): a transactional batch, held until the
    /// transaction ends.
    Transaction {
        /// The producer id.
        producer_id: i64,
        /// Its epoch (the partition fences older ones).
        producer_epoch: i16,
    },
}

/// The initial rebalance delay in progress (Kafka's `InitialDelayedJoin`).
struct InitialDelay {
    /// Time left of the rebalance timeout for further delays.
    remaining: Duration,
    /// A member joined during the current delay: wait once more.
    new_member_added: bool,
}

pub(super) struct Group {
    pub(super) id: String,
    /// Distinguishes a group from a later one of the same name (after a delete), so that a
    /// write queued for the old one does not touch the new one.
    pub(super) incarnation: u64,
    pub(super) state: GroupState,
    pub(super) protocol_type: String,
    protocol: Option<String>,
    pub(super) generation: i32,
    leader: Option<String>,
    pub(super) members: HashMap<String, Member>,
    /// PreparingRebalance: when the join phase ends whoever has rejoined.
    join_deadline: Option<Instant>,
    initial_delay: Option<InitialDelay>,
    /// Members that have not sent their sync for the generation (Kafka's pending sync members)
    /// and the deadline by which they must.
    pending_sync: HashSet<String>,
    sync_deadline: Option<Instant>,
    /// When the current rebalance started (for `fjord_group_rebalance_seconds`).
    rebalance_started: Option<Instant>,
    state_timestamp: i64,
    /// Committed offsets, with the offsets of their records.
    pub(super) offsets: BTreeMap<TopicPartition, Committed>,
    /// Offset commits (plain and transactional) queued and not yet appended, by partition:
    /// deleting the group must tombstone these too, and `require_stable` fetches treat them as
    /// unstable.
    pub(super) pending_offsets: HashMap<TopicPartition, u32>,
}

impl Group {
    pub(super) fn new(id: String, incarnation: u64) -> Self {
        Group {
            id,
            incarnation,
            state: GroupState::Empty,
            protocol_type: String::new(),
            protocol: None,
            generation: 0,
            leader: None,
            members: HashMap::new(),
            join_deadline: None,
            initial_delay: None,
            pending_sync: HashSet::new(),
            sync_deadline: None,
            rebalance_started: None,
            state_timestamp: now_ms(),
            offsets: BTreeMap::new(),
            pending_offsets: HashMap::new(),
        }
    }

    /// The largest rebalance timeout of the members (Kafka's `rebalanceTimeoutMs`).
    fn rebalance_timeout(&self) -> Duration {
        self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or_default()
    }

    fn members_in_join_order(&self) -> Vec<&Member> {
        let mut members: Vec<&Member> = self.members.values().collect();
        members.sort_by(|a, b| a.join_seq.cmp(&b.join_seq).then_with(|| a.id.cmp(&b.id)));
        members
    }

    fn joined_members(&self, protocol: &str) -> Vec<JoinedMember> {
        self.members_in_join_order()
            .into_iter()
            .map(|m| JoinedMember { member_id: m.id.clone(), metadata: m.metadata_for(protocol) })
            .collect()
    }

    /// The current generation's join response for `member_id`.
    fn join_response(&self, member_id: &str) -> JoinGroupResponse {
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = if leader == member_id { self.joined_members(&protocol) } else { Vec::new() };
        JoinGroupResponse {
            generation_id: self.generation,
            protocol_name: protocol,
            leader,
            member_id: member_id.to_string(),
            members,
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |at: Option<Instant>| {
            if let Some(at) = at {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        };
        if self.state == GroupState::PreparingRebalance {
            consider(self.join_deadline);
        }
        if self.sync_pending() {
            consider(self.sync_deadline);
        }
        for m in self.members.values() {
            consider(m.session_deadline());
        }
        next
    }

    fn sync_pending(&self) -> bool {
        matches!(self.state, GroupState::CompletingRebalance | GroupState::Stable)
            && !self.pending_sync.is_empty()
    }

    pub(super) fn listing(&self) -> GroupListing {
        GroupListing {
            group_id: self.id.clone(),
            protocol_type: self.protocol_type.clone(),
            state: self.state,
        }
    }

    pub(super) fn describe(&self) -> GroupDescription {
        // As Kafka: the protocol and the members' metadata and assignments only when Stable.
        let stable = self.state == GroupState::Stable;
        let protocol =
            if stable { self.protocol.clone().unwrap_or_default() } else { String::new() };
        let members = self
            .members_in_join_order()
            .into_iter()
            .map(|m| MemberDescription {
                member_id: m.id.clone(),
                client_id: m.client_id.clone(),
                metadata: if stable { m.metadata_for(&protocol) } else { Bytes::new() },
                assignment: if stable { m.assignment.clone() } else { Bytes::new() },
            })
            .collect();
        GroupDescription {
            group_id: self.id.clone(),
            state: self.state,
            protocol_type: self.protocol_type.clone(),
            protocol,
            generation_id: self.generation,
            leader: self.leader.clone().unwrap_or_default(),
            members,
        }
    }
}

// -------------------------------------------------------------------------------------------
// Helpers.

pub(super) fn now_ms() -> i64 {
    SystemClock.now_ms()
}

/// `now + d`, saturating far in the future (Kafka's timeouts are ints; ours may be anything).
fn deadline(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

fn ms_i32(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

/// Java's `String.hashCode`: `s[0]*31^(n-1) + ... + s[n-1]` over UTF-16 code units, wrapping.
pub(super) fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// A random UUID v4 in its usual text form, from std's randomly keyed hasher (no extra
/// dependency): each `RandomState` has fresh keys.
fn random_uuid(counter: u64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut words = [0u64; 2];
    for (i, word) in words.iter_mut().enumerate() {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(counter);
        hasher.write_usize(i);
        hasher.write_u128(nanos);
        *word = hasher.finish();
    }
    let mut v = (u128::from(words[0]) << 64) | u128::from(words[1]);
    v = (v & !(0xf << 76)) | (0x4 << 76); // version 4
    v = (v & !(0x3 << 62)) | (0x2 << 62); // variant 10
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        v >> 96,
        (v >> 80) & 0xffff,
        (v >> 64) & 0xffff,
        (v >> 48) & 0xffff,
        v & 0xffff_ffff_ffff
    )
}

fn unknown_member(group: &str, member: &str) -> BrokerError {
    BrokerError::UnknownMemberId { group_id: group.to_string(), member_id: member.to_string() }
}

fn illegal_generation(group: &str, generation: i32, current: i32) -> BrokerError {
    BrokerError::IllegalGeneration { group_id: group.to_string(), generation, current }
}

pub(super) fn validate_group_id(group_id: &str) -> Result<()> {
    // Kafka's record format stores the id as an int16-length string.
    if group_id.is_empty() || group_id.len() > i16::MAX as usize {
        return Err(BrokerError::InvalidGroupId(group_id.to_string()));
    }
    Ok(())
}

fn encode_group_metadata(g: &Group) -> Result<Vec<KeyValue>> {
    let protocol = g.protocol.clone().unwrap_or_default();
    let value = GroupMetadataValue {
        protocol_type: g.protocol_type.clone(),
        generation: g.generation,
        protocol: g.protocol.clone(),
        leader: g.leader.clone(),
        current_state_timestamp: g.state_timestamp,
        members: g
            .members_in_join_order()
            .into_iter()
            .map(|m| MemberMetadata {
                member_id: m.id.clone(),
                group_instance_id: None,
                client_id: m.client_id.clone(),
                client_host: CLIENT_HOST.to_string(),
                rebalance_timeout_ms: ms_i32(m.rebalance_timeout),
                session_timeout_ms: ms_i32(m.session_timeout),
                subscription: m.metadata_for(&protocol),
                assignment: m.assignment.clone(),
            })
            .collect(),
    };
    let encode_error = |e: records::EncodeError| {
        BrokerError::IllegalState(format!("cannot encode group metadata: {e}"))
    };
    let key = records::group_metadata_key(&g.id).map_err(encode_error)?;
    let value = records::group_metadata_value(&value).map_err(encode_error)?;
    Ok(vec![(key, Some(value))])
}

// -------------------------------------------------------------------------------------------
// The state machine.

/// Starts a rebalance (Kafka's `prepareRebalance`): in CompletingRebalance the assignments are
/// dropped and waiting syncs fail with `RebalanceInProgress`; the join phase lasts at most the
/// largest rebalance timeout, or the initial delay when the group was empty.
fn prepare_rebalance(g: &mut Group, ctx: &mut Ctx, now: Instant, reason: &str) {
    if g.state == GroupState::CompletingRebalance {
        for m in g.members.values_mut() {
            m.assignment = Bytes::new();
            if let Some(tx) = m.sync_tx.take() {
                let _ = tx.send(Err(BrokerError::RebalanceInProgress(g.id.clone())));
                m.renew(now);
            }
        }
    }
    g.pending_sync.clear();
    g.sync_deadline = None;
    let timeout = g.rebalance_timeout();
    let delay = ctx.config.initial_rebalance_delay;
    let first_wait = if g.state == GroupState::Empty && !delay.is_zero() {
        let first = delay.min(timeout);
        g.initial_delay = Some(InitialDelay {
            remaining: timeout.saturating_sub(first),
            new_member_added: false,
        });
        first
    } else {
        g.initial_delay = None;
        timeout
    };
    let at = deadline(now, first_wait);
    g.join_deadline = Some(at);
    ctx.schedule(at);
    g.state = GroupState::PreparingRebalance;
    g.state_timestamp = now_ms();
    g.rebalance_started.get_or_insert(now);
    ctx.signal(&g.id);
    metrics::counter!("fjord_group_rebalances_total", "group" => g.id.clone()).increment(1);
    tracing::info!(
        group = %g.id,
        generation = g.generation,
        members = g.members.len(),
        reason,
        "preparing to rebalance group"
    );
}

/// Completes the join phase if it can: every member has rejoined (and no initial delay is
/// running), or no member is left.
fn maybe_complete_join(g: &mut Group, ctx: &mut Ctx, now: Instant) {
    if g.state != GroupState::PreparingRebalance {
        return;
    }
    let all_joined = g.members.values().all(|m| m.join_tx.is_some());
    if g.members.is_empty() || (g.initial_delay.is_none() && all_joined) {
        complete_join(g, ctx, now);
    }
}

/// Ends the join phase (Kafka's `completeClassicGroupJoin`): members that did not rejoin are
/// removed, the generation is bumped, the protocol and leader chosen, every waiting join
/// answered (after the group metadata record is appended).
fn complete_join(g: &mut Group, ctx: &mut Ctx, now: Instant) {
    // A join whose caller went away (its future was dropped) counts as joined, so it does not
    // hold up the phase, but its member would never sync: it is removed too (Kafka cannot
    // tell; an in-process coordinator can).
    let missing: Vec<(String, bool)> = g
        .members
        .values()
        .filter(|m| m.join_tx.as_ref().is_none_or(oneshot::Sender::is_closed))
        .map(|m| (m.id.clone(), m.join_tx.is_some()))
        .collect();
    for (id, abandoned) in &missing {
        if *abandoned {
            tracing::info!(group = %g.id, member = %id, "removing member whose join request was abandoned");
        } else {
            tracing::info!(group = %g.id, member = %id, "removing member that did not rejoin before the rebalance timeout");
        }
        remove_member(g, id);
    }
    g.generation = g.generation.wrapping_add(1);
    g.join_deadline = None;
    g.initial_delay = None;
    g.state_timestamp = now_ms();
    if g.members.is_empty() {
        g.state = GroupState::Empty;
        g.protocol = None;
        g.leader = None;
        record_rebalance_time(g, now);
        tracing::info!(group = %g.id, generation = g.generation, "group is empty");
        ctx.write_group_metadata(g, Replies::None);
        return;
    }
    let leader = match &g.leader {
        Some(leader) if g.members.contains_key(leader) => leader.clone(),
        _ => g.members_in_join_order().first().map(|m| m.id.clone()).unwrap_or_default(),
    };
    let protocol = select_protocol(g, &leader);
    g.leader = Some(leader.clone());
    g.protocol = Some(protocol.clone());
    g.state = GroupState::CompletingRebalance;
    let timeout = g.rebalance_timeout();
    g.pending_sync = g.members.keys().cloned().collect();
    let sync_at = deadline(now, timeout);
    g.sync_deadline = Some(sync_at);
    ctx.schedule(sync_at);
    let all = g.joined_members(&protocol);
    let mut joins = Vec::with_capacity(g.members.len());
    for m in g.members.values_mut() {
        m.renew(now);
        if let Some(tx) = m.join_tx.take() {
            let members = if m.id == leader { all.clone() } else { Vec::new() };
            joins.push((
                tx,
                JoinGroupResponse {
                    generation_id: g.generation,
                    protocol_name: protocol.clone(),
                    leader: leader.clone(),
                    member_id: m.id.clone(),
                    members,
                },
            ));
        }
        ctx.schedule(deadline(now, m.session_timeout));
    }
    tracing::info!(
        group = %g.id,
        generation = g.generation,
        members = g.members.len(),
        %leader,
        %protocol,
        "rebalance: join phase complete, waiting for the leader's assignment"
    );
    ctx.write_group_metadata(g, Replies::Joins(joins));
}

/// Kafka's `selectProtocol`: among the protocols every member supports, the one most members
/// prefer (each votes for its first supported candidate); ties go to the leader's preference.
fn select_protocol(g: &Group, leader: &str) -> String {
    let mut candidates: Option<Vec<&str>> = None;
    for m in g.members.values() {
        let names: Vec<&str> = m.protocols.iter().map(|(n, _)| n.as_str()).collect();
        candidates = Some(match candidates {
            None => names,
            Some(mut c) => {
                c.retain(|n| names.contains(n));
                c
            }
        });
    }
    let candidates = candidates.unwrap_or_default();
    let mut votes: HashMap<&str, usize> = HashMap::new();
    for m in g.members.values() {
        if let Some((name, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(&n.as_str()))
        {
            *votes.entry(name.as_str()).or_default() += 1;
        }
    }
    let leader_rank = |name: &str| {
        g.members
            .get(leader)
            .and_then(|m| m.protocols.iter().position(|(n, _)| n == name))
            .unwrap_or(usize::MAX)
    };
    let chosen = candidates.iter().copied().max_by(|a, b| {
        let (va, vb) = (votes.get(a).copied().unwrap_or(0), votes.get(b).copied().unwrap_or(0));
        va.cmp(&vb).then_with(|| leader_rank(b).cmp(&leader_rank(a)))
    });
    // Joins check compatibility, so candidates are never empty; fall back to the leader's first.
    match chosen {
        Some(name) => name.to_string(),
        None => g
            .members
            .get(leader)
            .and_then(|m| m.protocols.first())
            .map(|(n, _)| n.clone())
            .unwrap_or_default(),
    }
}

/// Removes a member; its waiting join or sync fails with `UnknownMemberId`.
fn remove_member(g: &mut Group, member_id: &str) {
    let Some(mut m) = g.members.remove(member_id) else {
        return;
    };
    if let Some(tx) = m.join_tx.take() {
        let _ = tx.send(Err(unknown_member(&g.id, member_id)));
    }
    if let Some(tx) = m.sync_tx.take() {
        let _ = tx.send(Err(unknown_member(&g.id, member_id)));
    }
    g.pending_sync.remove(member_id);
    if g.leader.as_deref() == Some(member_id) {
        g.leader = None;
    }
}

/// After members left or were removed (Kafka's `removeMemberAndUpdateClassicGroup`): a stable
/// or completing group rebalances; a preparing one may now be complete.
fn after_removal(g: &mut Group, ctx: &mut Ctx, now: Instant, reason: &str) {
    match g.state {
        GroupState::Stable | GroupState::CompletingRebalance => {
            prepare_rebalance(g, ctx, now, reason);
            maybe_complete_join(g, ctx, now);
        }
        GroupState::PreparingRebalance => maybe_complete_join(g, ctx, now),
        GroupState::Empty | GroupState::Dead => {}
    }
}

fn record_rebalance_time(g: &mut Group, now: Instant) {
    if let Some(started) = g.rebalance_started.take() {
        metrics::histogram!("fjord_group_rebalance_seconds")
            .record(now.duration_since(started).as_secs_f64());
    }
}

/// Kafka's `supportsProtocols`: the member needs a protocol type and at least one protocol;
/// with other members present, the same protocol type and a protocol they all support.
fn check_protocols(
    g: Option<&Group>,
    member_id: Option<&str>,
    req: &JoinGroupRequest,
) -> Result<()> {
    let inconsistent = |expected: String| BrokerError::InconsistentGroupProtocol {
        group_id: req.group_id.clone(),
        expected,
    };
    if req.protocol_type.is_empty() || req.protocols.is_empty() {
        return Err(inconsistent("a protocol type and at least one protocol (assignor)".into()));
    }
    let Some(g) = g else {
        return Ok(());
    };
    let others: Vec<&Member> =
        g.members.values().filter(|m| Some(m.id.as_str()) != member_id).collect();
    let Some((first, rest)) = others.split_first() else {
        return Ok(());
    };
    let mut candidates: BTreeSet<&str> = first.protocols.iter().map(|(n, _)| n.as_str()).collect();
    for m in rest {
        candidates.retain(|c| m.protocols.iter().any(|(n, _)| n == c));
    }
    let offers = req.protocols.iter().any(|(n, _)| candidates.contains(n.as_str()));
    if req.protocol_type != g.protocol_type || !offers {
        let names: Vec<&str> = candidates.into_iter().collect();
        return Err(inconsistent(format!(
            "protocol type `{}` with assignors [{}]",
            g.protocol_type,
            names.join(", ")
        )));
    }
    Ok(())
}

impl State {
    fn check_open(&self) -> Result<()> {
        if self.ctx.shutdown { Err(BrokerError::BrokerShutdown) } else { Ok(()) }
    }

    /// `JoinGroup` (Kafka's `classicGroupJoin`).
    pub(super) fn join(
        &mut self,
        req: JoinGroupRequest,
        now: Instant,
    ) -> Result<Reply<JoinGroupResponse>> {
        self.check_open()?;
        validate_group_id(&req.group_id)?;
        let config = &self.ctx.config;
        if req.session_timeout < config.min_session_timeout
            || req.session_timeout > config.max_session_timeout
        {
            return Err(BrokerError::InvalidSessionTimeout {
                timeout_ms: req.session_timeout.as_millis() as u64,
                min_ms: config.min_session_timeout.as_millis() as u64,
                max_ms: config.max_session_timeout.as_millis() as u64,
            });
        }
        let new_member = req.member_id.is_empty();
        let existing = self.groups.get(&req.group_id);
        if !new_member && existing.is_none() {
            return Err(unknown_member(&req.group_id, &req.member_id));
        }
        check_protocols(existing, (!new_member).then_some(req.member_id.as_str()), &req)?;
        if new_member && existing.is_some_and(|g| g.members.len() >= self.ctx.config.max_size) {
            return Err(BrokerError::GroupMaxSizeReached {
                group_id: req.group_id.clone(),
                max: self.ctx.config.max_size,
            });
        }
        let incarnation = self.ctx.next_incarnation();
        let State { groups, ctx, .. } = self;
        let g = groups
            .entry(req.group_id.clone())
            .or_insert_with(|| Group::new(req.group_id.clone(), incarnation));
        if new_member {
            Ok(join_new_member(g, ctx, req, now))
        } else {
            join_existing_member(g, ctx, req, now)
        }
    }

    /// `SyncGroup` (Kafka's `classicGroupSync`).
    pub(super) fn sync(&mut self, req: SyncGroupRequest, now: Instant) -> Result<Reply<Bytes>> {
        self.check_open()?;
        let State { groups, ctx, .. } = self;
        let g = groups
            .get_mut(&req.group_id)
            .ok_or_else(|| unknown_member(&req.group_id, &req.member_id))?;
        let Some(m) = g.members.get_mut(&req.member_id) else {
            return Err(unknown_member(&req.group_id, &req.member_id));
        };
        if req.generation_id != g.generation {
            return Err(illegal_generation(&g.id, req.generation_id, g.generation));
        }
        m.renew(now);
        match g.state {
            GroupState::Empty | GroupState::Dead => Err(unknown_member(&g.id, &req.member_id)),
            GroupState::PreparingRebalance => Err(BrokerError::RebalanceInProgress(g.id.clone())),
            GroupState::Stable => {
                g.pending_sync.remove(&req.member_id);
                Ok(Reply::Ready(m.assignment.clone()))
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(old) = m.sync_tx.replace(tx) {
                    let _ = old.send(Err(BrokerError::RebalanceInProgress(g.id.clone())));
                }
                g.pending_sync.remove(&req.member_id);
                if g.leader.as_deref() == Some(req.member_id.as_str()) {
                    complete_sync(g, ctx, req.assignments, now);
                }
                Ok(Reply::Wait(rx))
            }
        }
    }

    /// `Heartbeat` (Kafka's `classicGroupHeartbeat`).
    pub(super) fn heartbeat(
        &mut self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        now: Instant,
    ) -> Result<()> {
        self.check_open()?;
        let g = self.groups.get_mut(group_id).ok_or_else(|| unknown_member(group_id, member_id))?;
        let Some(m) = g.members.get_mut(member_id) else {
            return Err(unknown_member(group_id, member_id));
        };
        if generation != g.generation {
            return Err(illegal_generation(group_id, generation, g.generation));
        }
        m.renew(now);
        match g.state {
            GroupState::PreparingRebalance => {
                Err(BrokerError::RebalanceInProgress(group_id.to_string()))
            }
            GroupState::Empty | GroupState::Dead => Err(unknown_member(group_id, member_id)),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    /// `LeaveGroup`.
    pub(super) fn leave(&mut self, group_id: &str, member_id: &str, now: Instant) -> Result<()> {
        self.check_open()?;
        let State { groups, ctx, .. } = self;
        let g = groups.get_mut(group_id).ok_or_else(|| unknown_member(group_id, member_id))?;
        if !g.members.contains_key(member_id) {
            return Err(unknown_member(group_id, member_id));
        }
        tracing::info!(group = %group_id, member = %member_id, "member left the group");
        remove_member(g, member_id);
        after_removal(g, ctx, now, "a member left the group");
        Ok(())
    }

    /// Checks an offset commit as Kafka's `doCommitOffsets` / `doTxnCommitOffsets` /
    /// `validateOffsetCommit` do, and queues its batch (a transactional one for a
    /// [`Committer::Transaction`]). The receiver answers once the batch is appended and applied:
    /// a plain commit is then committed, a transactional one held until its transaction ends.
    pub(super) fn commit(
        &mut self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
        committer: Committer,
        now: Instant,
    ) -> Result<Option<oneshot::Receiver<Result<()>>>> {
        self.check_open()?;
        validate_group_id(group_id)?;
        let exists = self.groups.contains_key(group_id);
        if !exists {
            if generation >= 0 && committer != Committer::Admin {
                // Kafka: a commit with a generation for a group that does not exist is from a
                // member of a group that is gone.
                return Err(illegal_generation(group_id, generation, -1));
            }
            let incarnation = self.ctx.next_incarnation();
            self.groups.insert(group_id.to_string(), Group::new(group_id.to_string(), incarnation));
        }
        let State { groups, ctx, .. } = self;
        let Some(g) = groups.get_mut(group_id) else {
            return Err(BrokerError::GroupIdNotFound(group_id.to_string()));
        };
        match committer {
            Committer::Admin => {
                if !g.members.is_empty() {
                    return Err(BrokerError::NonEmptyGroup(group_id.to_string()));
                }
            }
            Committer::Transaction { .. } => {
                // KIP-447 zombie fencing: a producer that commits for a group member must
                // still be that member, in the group's current generation. A producer not tied
                // to a member (generation -1, no member id) is not checked, and neither
                // rebalancing nor members stop it (Kafka's `validateOffsetCommit` with
                // `isTransactional`).
                if generation < 0 && g.state == GroupState::Empty {
                } else if generation >= 0 || !member_id.is_empty() {
                    if !g.members.contains_key(member_id) {
                        return Err(unknown_member(group_id, member_id));
                    }
                    if generation != g.generation {
                        return Err(illegal_generation(group_id, generation, g.generation));
                    }
                }
            }
            Committer::Member => {
                if generation < 0 && g.state == GroupState::Empty {
                    // A consumer that assigns partitions by hand: allowed without members.
                } else if g.state == GroupState::CompletingRebalance {
                    return Err(BrokerError::RebalanceInProgress(group_id.to_string()));
                } else if let Some(m) = g.members.get_mut(member_id) {
                    if generation != g.generation {
                        return Err(illegal_generation(group_id, generation, g.generation));
                    }
                    m.renew(now);
                } else {
                    return Err(unknown_member(group_id, member_id));
                }
            }
        }
        if offsets.is_empty() {
            return Ok(None);
        }
        let records = records::offset_commit_records(group_id, &offsets).map_err(|e| {
            BrokerError::IllegalState(format!("cannot commit offsets for group `{group_id}`: {e}"))
        })?;
        for (tp, _) in &offsets {
            *g.pending_offsets.entry(tp.clone()).or_default() += 1;
        }
        let (tx, rx) = oneshot::channel();
        let group = group_id.to_string();
        let incarnation = g.incarnation;
        let log_partition = partition_for_key(group_id, ctx.partitions);
        let producer = match committer {
            Committer::Transaction { producer_id, producer_epoch } => {
                Some((producer_id, producer_epoch))
            }
            Committer::Member | Committer::Admin => None,
        };
        let done: WriteDone = Box::new(move |shared, result| {
            let result = match (producer, result) {
                (
                    Some((producer_id, _)),
                    Err(BrokerError::Log(LogError::InvalidProducerEpoch { .. })),
                ) => Err(BrokerError::ProducerFenced(producer_id.to_string())),
                (_, result) => result,
            };
            let count = offsets.len() as u64;
            {
                let mut state = shared.state.lock();
                let State { groups, txn_offsets, .. } = &mut *state;
                // A group deleted meanwhile (even if recreated since) does not get these: its
                // tombstones follow this batch in the log.
                if let Some(g) = groups.get_mut(&group).filter(|g| g.incarnation == incarnation) {
                    for (i, (tp, value)) in offsets.into_iter().enumerate() {
                        if let Some(n) = g.pending_offsets.get_mut(&tp) {
                            *n -= 1;
                            if *n == 0 {
                                g.pending_offsets.remove(&tp);
                            }
                        }
                        let Ok(first_offset) = result else {
                            continue;
                        };
                        let committed = Committed { value, record_offset: first_offset + i as i64 };
                        match producer {
                            Some((producer_id, _)) => {
                                txn_offsets.add(producer_id, &group, tp, committed, log_partition);
                            }
                            None => txn_offsets::apply_commit(&mut g.offsets, tp, committed),
                        }
                    }
                }
            }
            match (producer, &result) {
                (None, Ok(_)) => {
                    metrics::counter!("fjord_group_offset_commits_total", "group" => group)
                        .increment(count);
                }
                (Some((producer_id, _)), Ok(_)) => {
                    tracing::debug!(group = %group, producer_id, partitions = count, "transactional offset commit pending until its transaction ends");
                }
                (_, Err(_)) => {}
            }
            let _ = tx.send(result.map(drop));
        });
        ctx.write_as(group_id, Ok(records), producer, done);
        Ok(Some(rx))
    }

    /// The transaction of `producer_id` ended: on commit its held offsets become committed
    /// (each unless a newer plain commit is already there), on abort they are dropped. Returns
    /// how many offsets were held.
    pub(super) fn complete_txn(&mut self, producer_id: i64, commit: bool) -> usize {
        let ended = self.txn_offsets.take(producer_id, None);
        let count = ended.len();
        if !commit {
            if count > 0 {
                tracing::debug!(
                    producer_id,
                    offsets = count,
                    "transaction aborted: dropping its offset commits"
                );
            }
            return count;
        }
        for Completed { group, tp, committed } in ended {
            match self.groups.get_mut(&group) {
                Some(g) => {
                    txn_offsets::apply_txn_commit(&mut g.offsets, tp, committed);
                    metrics::counter!("fjord_group_offset_commits_total", "group" => group)
                        .increment(1);
                }
                // Deleting a group drops its held offsets, so this does not happen.
                None => {
                    tracing::warn!(group = %group, partition = %tp, producer_id, "dropping a transactional offset commit of a group that no longer exists")
                }
            }
        }
        count
    }

    /// Whether the group's committed offset of `tp` may change once a transaction (or a commit
    /// being appended) completes (KIP-447's unstable offsets).
    pub(super) fn offset_unstable(&self, group_id: &str, tp: &TopicPartition) -> bool {
        self.txn_offsets.is_pending(group_id, tp)
            || self.groups.get(group_id).is_some_and(|g| g.pending_offsets.contains_key(tp))
    }

    /// `DeleteGroups` for one group: tombstones for its offsets (committed, being appended, and
    /// held by open transactions, which it drops) and its metadata.
    pub(super) fn delete(&mut self, group_id: &str) -> Result<oneshot::Receiver<Result<()>>> {
        self.check_open()?;
        validate_group_id(group_id)?;
        let g = self
            .groups
            .get(group_id)
            .ok_or_else(|| BrokerError::GroupIdNotFound(group_id.to_string()))?;
        if !g.members.is_empty() {
            return Err(BrokerError::NonEmptyGroup(group_id.to_string()));
        }
        let partitions: BTreeSet<&TopicPartition> = g
            .offsets
            .keys()
            .chain(g.pending_offsets.keys())
            .chain(self.txn_offsets.partitions_of(group_id))
            .collect();
        let encode_error = |e: records::EncodeError| {
            BrokerError::IllegalState(format!("cannot delete group `{group_id}`: {e}"))
        };
        let mut tombstones = Vec::with_capacity(partitions.len() + 1);
        for tp in partitions {
            tombstones
                .push((records::offset_commit_key(group_id, tp).map_err(encode_error)?, None));
        }
        tombstones.push((records::group_metadata_key(group_id).map_err(encode_error)?, None));
        self.groups.remove(group_id);
        self.txn_offsets.remove_group(group_id);
        tracing::info!(group = %group_id, "deleted group");
        let (tx, rx) = oneshot::channel();
        self.ctx.write(
            group_id,
            Ok(tombstones),
            Box::new(move |_, result| {
                let _ = tx.send(result.map(drop));
            }),
        );
        Ok(rx)
    }

    /// Processes every deadline that has passed.
    pub(super) fn expire(&mut self, now: Instant) {
        let State { groups, ctx, .. } = self;
        for g in groups.values_mut() {
            let expired: Vec<String> = g
                .members
                .values()
                .filter(|m| m.session_deadline().is_some_and(|d| d <= now))
                .map(|m| m.id.clone())
                .collect();
            if !expired.is_empty() {
                for id in &expired {
                    tracing::info!(group = %g.id, member = %id, "evicting member: its session timed out");
                    remove_member(g, id);
                }
                after_removal(g, ctx, now, "a member's session timed out");
            }
            if g.state == GroupState::PreparingRebalance
                && g.join_deadline.is_some_and(|d| d <= now)
            {
                let step = ctx.config.initial_rebalance_delay;
                match &mut g.initial_delay {
                    Some(delay) if delay.new_member_added && !delay.remaining.is_zero() => {
                        let wait = step.min(delay.remaining);
                        delay.remaining = delay.remaining.saturating_sub(wait);
                        delay.new_member_added = false;
                        let at = deadline(now, wait);
                        g.join_deadline = Some(at);
                        ctx.schedule(at);
                    }
                    _ => complete_join(g, ctx, now),
                }
            }
            if g.sync_pending() && g.sync_deadline.is_some_and(|d| d <= now) {
                let late: Vec<String> = g.pending_sync.drain().collect();
                for id in &late {
                    tracing::info!(group = %g.id, member = %id, "removing member that did not sync before the rebalance timeout");
                    remove_member(g, id);
                }
                g.sync_deadline = None;
                after_removal(g, ctx, now, "members did not sync in time");
            }
        }
    }

    /// The nearest deadline of any group.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.groups.values().filter_map(Group::next_deadline).min()
    }

    /// Shuts down: every waiting join and sync fails with `BrokerShutdown`, rebalance signals
    /// close.
    pub(super) fn shut_down(&mut self) {
        self.ctx.shutdown = true;
        // Dropping the senders ends every `changed()` wait on a rebalance signal.
        self.ctx.signals.clear();
        for g in self.groups.values_mut() {
            for m in g.members.values_mut() {
                if let Some(tx) = m.join_tx.take() {
                    let _ = tx.send(Err(BrokerError::BrokerShutdown));
                }
                if let Some(tx) = m.sync_tx.take() {
                    let _ = tx.send(Err(BrokerError::BrokerShutdown));
                }
            }
        }
    }
}

fn join_new_member(
    g: &mut Group,
    ctx: &mut Ctx,
    req: JoinGroupRequest,
    now: Instant,
) -> Reply<JoinGroupResponse> {
    let member_id = ctx.member_id(&req.client_id);
    let (tx, rx) = oneshot::channel();
    if g.members.is_empty() {
        g.protocol_type = req.protocol_type.clone();
    }
    let join_seq = ctx.next_join_seq();
    tracing::debug!(group = %g.id, member = %member_id, "new member joins");
    g.members.insert(
        member_id.clone(),
        Member {
            id: member_id,
            client_id: req.client_id,
            session_timeout: req.session_timeout,
            rebalance_timeout: req.rebalance_timeout,
            protocol_type: req.protocol_type,
            protocols: req.protocols,
            assignment: Bytes::new(),
            join_tx: Some(tx),
            sync_tx: None,
            last_seen: now,
            join_seq,
        },
    );
    match g.state {
        GroupState::Empty | GroupState::Stable | GroupState::CompletingRebalance => {
            prepare_rebalance(g, ctx, now, "a new member joined");
        }
        GroupState::PreparingRebalance => {
            if let Some(delay) = &mut g.initial_delay {
                delay.new_member_added = true;
            }
        }
        GroupState::Dead => {}
    }
    maybe_complete_join(g, ctx, now);
    Reply::Wait(rx)
}

fn join_existing_member(
    g: &mut Group,
    ctx: &mut Ctx,
    req: JoinGroupRequest,
    now: Instant,
) -> Result<Reply<JoinGroupResponse>> {
    let group_id = g.id.clone();
    let Some(m) = g.members.get_mut(&req.member_id) else {
        return Err(unknown_member(&group_id, &req.member_id));
    };
    let unchanged = m.protocol_type == req.protocol_type && m.protocols == req.protocols;
    match g.state {
        GroupState::Empty | GroupState::Dead => Err(unknown_member(&group_id, &req.member_id)),
        GroupState::CompletingRebalance if unchanged => {
            // A repeated join (its response was lost): the current generation, no rebalance.
            m.renew(now);
            Ok(Reply::Ready(g.join_response(&req.member_id)))
        }
        state => {
            let seq = ctx.next_join_seq();
            let rx = update_member(m, req, seq, now, &group_id);
            if state != GroupState::PreparingRebalance {
                let reason = if unchanged {
                    "a member rejoined"
                } else {
                    "a member changed its subscription"
                };
                prepare_rebalance(g, ctx, now, reason);
            }
            maybe_complete_join(g, ctx, now);
            Ok(Reply::Wait(rx))
        }
    }
}

fn update_member(
    m: &mut Member,
    req: JoinGroupRequest,
    seq: u64,
    now: Instant,
    group_id: &str,
) -> oneshot::Receiver<Result<JoinGroupResponse>> {
    m.client_id = req.client_id;
    m.session_timeout = req.session_timeout;
    m.rebalance_timeout = req.rebalance_timeout;
    m.protocol_type = req.protocol_type;
    m.protocols = req.protocols;
    if m.join_tx.is_none() {
        m.join_seq = seq;
    }
    let (tx, rx) = oneshot::channel();
    if let Some(old) = m.join_tx.replace(tx) {
        // The same member joined twice: the newer request wins.
        let _ = old.send(Err(BrokerError::RebalanceInProgress(group_id.to_string())));
    }
    m.renew(now);
    rx
}

/// The leader's sync: every member's assignment is stored, the group is Stable, and every
/// waiting sync is answered once the group metadata record is appended.
fn complete_sync(g: &mut Group, ctx: &mut Ctx, assignments: Vec<(String, Bytes)>, now: Instant) {
    for m in g.members.values_mut() {
        m.assignment = Bytes::new();
    }
    for (member_id, assignment) in assignments {
        if let Some(m) = g.members.get_mut(&member_id) {
            m.assignment = assignment;
        }
    }
    g.state = GroupState::Stable;
    g.state_timestamp = now_ms();
    let mut syncs = Vec::new();
    for m in g.members.values_mut() {
        if let Some(tx) = m.sync_tx.take() {
            m.renew(now);
            syncs.push((tx, m.assignment.clone()));
            ctx.schedule(deadline(now, m.session_timeout));
        }
    }
    record_rebalance_time(g, now);
    tracing::info!(group = %g.id, generation = g.generation, members = g.members.len(), "group is stable");
    ctx.write_group_metadata(g, Replies::Syncs(syncs));
}
