//! The member side of the classic group protocol (Kafka's `ConsumerCoordinator`): join, run the
//! assignor when leader, sync, apply the assignment with the rebalance callbacks, and keep the
//! session alive with a heartbeat task.
//!
//! Eager assignors revoke everything before joining. Cooperative ones (cooperative-sticky) keep
//! what stays: after a join, the member revokes only the partitions that move, and rejoins at
//! once so that the new owners get them in a follow-up rebalance.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use fjord_log::TopicPartition;
use fjord_log::topic::is_internal;
use parking_lot::Mutex;

use super::assignor::{Assignment, RebalanceProtocol, Subscription as MemberSubscription};
use super::{Consumer, Inner, Subscription};
use crate::error::{BrokerError, Result};
use crate::events::ClientEvent;
use crate::group::{JoinGroupRequest, SyncGroupRequest};

#[derive(Debug)]
struct MemberState {
    member_id: String,
    generation: i32,
    /// The group's chosen assignor for the current generation.
    protocol: Option<String>,
    joined: bool,
    joining: bool,
    rejoin_needed: bool,
    /// The member was evicted: its partitions are lost, not revoked.
    lost: bool,
    last_poll: Instant,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
    /// A join and sync in flight, picked up by the next `poll`.
    pending: Option<JoinTask>,
}

/// A consumer's membership of its group.
#[derive(Debug)]
pub(crate) struct Membership {
    group_id: String,
    state: Mutex<MemberState>,
}

impl Membership {
    pub(crate) fn new(group_id: String) -> Self {
        Membership {
            group_id,
            state: Mutex::new(MemberState {
                member_id: String::new(),
                generation: -1,
                protocol: None,
                joined: false,
                joining: false,
                rejoin_needed: true,
                lost: false,
                last_poll: Instant::now(),
                heartbeat: None,
                pending: None,
            }),
        }
    }

    pub(crate) fn group_id(&self) -> &str {
        &self.group_id
    }

    /// The member id and generation while joined.
    pub(crate) fn generation(&self) -> Option<(String, i32)> {
        let state = self.state.lock();
        state.joined.then(|| (state.member_id.clone(), state.generation))
    }

    pub(crate) fn request_rejoin(&self) {
        self.state.lock().rejoin_needed = true;
    }

    pub(crate) fn record_poll(&self) {
        self.state.lock().last_poll = Instant::now();
    }

    /// Forgets the membership (after leaving).
    pub(crate) fn reset(&self) {
        let mut state = self.state.lock();
        state.member_id.clear();
        state.generation = -1;
        state.joined = false;
        state.rejoin_needed = true;
        state.lost = false;
        state.protocol = None;
    }

    /// Stops the heartbeat task and any join in flight.
    pub(crate) fn stop(&self) {
        let mut state = self.state.lock();
        if let Some(task) = state.heartbeat.take() {
            task.abort();
        }
        if let Some(task) = state.pending.take() {
            task.abort();
        }
    }

    pub(crate) fn needs_join(&self) -> bool {
        let state = self.state.lock();
        state.rejoin_needed || !state.joined || state.lost || state.pending.is_some()
    }
}

fn listener(consumer: &Consumer) -> Option<Arc<dyn super::ConsumerRebalanceListener>> {
    consumer.inner.listener.lock().clone()
}

/// The rebalance protocol for a generation: cooperative only if every configured assignor
/// supports it (Kafka's rule, so that mixed lists upgrade safely).
fn protocol_of(consumer: &Consumer) -> RebalanceProtocol {
    let all_cooperative = consumer
        .inner
        .config
        .assignors
        .iter()
        .all(|a| a.supported_protocols().contains(&RebalanceProtocol::Cooperative));
    if all_cooperative { RebalanceProtocol::Cooperative } else { RebalanceProtocol::Eager }
}

/// The topics the subscription covers now.
fn resolve_topics(consumer: &Consumer) -> BTreeSet<String> {
    let state = consumer.inner.state.lock();
    match &state.subscription {
        Subscription::Topics(topics) => topics.clone(),
        Subscription::Pattern(regex) => consumer
            .inner
            .broker
            .logs()
            .topics()
            .iter()
            .map(|t| t.name().to_string())
            .filter(|name| !is_internal(name) && regex.is_match(name))
            .collect(),
        Subscription::None | Subscription::Assigned => BTreeSet::new(),
    }
}

async fn revoke(consumer: &Consumer, partitions: Vec<TopicPartition>, lost: bool) -> Result<()> {
    if partitions.is_empty() {
        return Ok(());
    }
    let inner = &consumer.inner;
    if !lost && inner.config.enable_auto_commit {
        let offsets: Vec<(TopicPartition, i64)> = {
            let state = inner.state.lock();
            partitions
                .iter()
                .filter_map(|tp| {
                    state.assignment.get(tp).and_then(|p| p.position).map(|o| (tp.clone(), o))
                })
                .collect()
        };
        if !offsets.is_empty()
            && let Err(e) = consumer.commit_offsets(&offsets).await
        {
            tracing::warn!(group = ?inner.config.group_id, error = %e, "commit before revocation failed");
        }
    }
    if let Some(listener) = listener(consumer) {
        if lost {
            listener.on_partitions_lost(consumer, &partitions).await;
        } else {
            listener.on_partitions_revoked(consumer, &partitions).await;
        }
    }
    let mut state = inner.state.lock();
    for tp in &partitions {
        state.assignment.remove(tp);
    }
    Ok(())
}

/// Joins (or rejoins) the group until the member is stable with a current assignment, or
/// until `deadline`. The join and sync run in a task of their own, as Kafka's requests stay in
/// flight across polls: a `poll` whose timeout ends during a rebalance returns, and the next
/// `poll` picks the rebalance up where it is. Returns whether the member is stable.
pub(crate) async fn ensure_active_group(consumer: &Consumer, deadline: Instant) -> Result<bool> {
    let inner = &consumer.inner;
    let Some(membership) = &inner.membership else { return Ok(true) };
    // A pattern subscription looks for new topics now and then.
    {
        let due = inner.state.lock().last_metadata_check.elapsed() >= inner.config.metadata_max_age;
        if due {
            inner.state.lock().last_metadata_check = Instant::now();
            let topics = resolve_topics(consumer);
            if topics != inner.state.lock().subscribed_topics {
                membership.request_rejoin();
            }
        }
    }
    let mut attempts = 0u32;
    loop {
        let pending = membership.state.lock().pending.take();
        let task = match pending {
            Some(task) => task,
            None => {
                if !membership.needs_join() {
                    return Ok(true);
                }
                attempts += 1;
                if attempts > 100 {
                    return Err(BrokerError::IllegalState(format!(
                        "group {} did not stabilise after 100 join attempts",
                        membership.group_id
                    )));
                }
                prepare_join(consumer).await?
            }
        };
        let mut task = task;
        let result = tokio::select! {
            joined = &mut task => joined,
            _ = tokio::time::sleep_until(deadline.into()) => {
                membership.state.lock().pending = Some(task);
                return Ok(false);
            }
        };
        membership.state.lock().joining = false;
        let result =
            result.map_err(|e| BrokerError::IllegalState(format!("join task failed: {e}")))?;
        match result {
            Ok(joined) => complete_join(consumer, joined).await?,
            Err(BrokerError::UnknownMemberId { .. }) => {
                // Evicted meanwhile: what we own is lost.
                membership.state.lock().lost = true;
            }
            Err(BrokerError::RebalanceInProgress(_) | BrokerError::IllegalGeneration { .. }) => {
                membership.request_rejoin();
            }
            Err(e) => {
                membership.request_rejoin();
                return Err(e);
            }
        }
    }
}

type JoinTask = tokio::task::JoinHandle<Result<Joined>>;

/// Runs what comes before a join in the caller's task (lost or, for eager assignors, revoked
/// partitions and their callbacks) and starts the join and sync.
async fn prepare_join(consumer: &Consumer) -> Result<JoinTask> {
    let inner = &consumer.inner;
    let Some(membership) = &inner.membership else {
        return Err(BrokerError::IllegalState("no group".into()));
    };
    inner.events.emit(|| ClientEvent::RebalanceStarted {
        client_id: inner.config.client_id.clone(),
        group_id: membership.group_id.clone(),
    });
    let lost = std::mem::take(&mut membership.state.lock().lost);
    let owned: Vec<TopicPartition> = inner.state.lock().assignment.keys().cloned().collect();
    if lost {
        revoke(consumer, owned, true).await?;
        membership.reset();
    } else if protocol_of(consumer) == RebalanceProtocol::Eager {
        revoke(consumer, owned, false).await?;
    }
    let owned: Vec<TopicPartition> = inner.state.lock().assignment.keys().cloned().collect();
    let topics = resolve_topics(consumer);
    inner.state.lock().subscribed_topics = topics.clone();
    let (member_id, generation) = {
        let mut state = membership.state.lock();
        state.joining = true;
        state.rejoin_needed = false;
        (state.member_id.clone(), state.generation)
    };
    let task_inner = inner.clone();
    Ok(tokio::spawn(async move {
        join_and_sync(&task_inner, member_id, generation, &topics, &owned).await
    }))
}

/// Applies a completed join: revocations (cooperative), the new partitions, positions and the
/// callbacks.
async fn complete_join(consumer: &Consumer, joined: Joined) -> Result<()> {
    let inner = &consumer.inner;
    let Some(membership) = &inner.membership else { return Ok(()) };
    let (member_id, generation, leader, assignment, started) = joined;
    {
        let mut state = membership.state.lock();
        state.member_id = member_id.clone();
        state.generation = generation;
        state.joined = true;
    }
    let chosen = membership.state.lock().protocol.clone();
    if let Some(assignor) =
        inner.config.assignors.iter().find(|a| Some(a.name()) == chosen.as_deref())
    {
        assignor.on_assignment(&assignment, generation);
    }
    let protocol = protocol_of(consumer);
    let new: BTreeSet<TopicPartition> = assignment.partitions.iter().cloned().collect();
    let owned_now: BTreeSet<TopicPartition> =
        inner.state.lock().assignment.keys().cloned().collect();
    let revoked: Vec<TopicPartition> = owned_now.difference(&new).cloned().collect();
    let added: Vec<TopicPartition> = new.difference(&owned_now).cloned().collect();
    if !revoked.is_empty() {
        // Cooperative: give up what moves, then rejoin so its new owner gets it.
        revoke(consumer, revoked, false).await?;
        membership.request_rejoin();
    }
    {
        let mut state = inner.state.lock();
        for tp in &added {
            state.assignment.entry(tp.clone()).or_default();
        }
    }
    consumer.initialize_positions().await?;
    if let Some(listener) = listener(consumer)
        && (!added.is_empty() || protocol == RebalanceProtocol::Eager)
    {
        listener.on_partitions_assigned(consumer, &added).await;
    }
    start_heartbeat(consumer);
    let assignment_now: Vec<TopicPartition> =
        inner.state.lock().assignment.keys().cloned().collect();
    tracing::info!(group = %membership.group_id, member = %member_id, generation, assignment = ?assignment_now, "joined group");
    inner.events.emit(|| ClientEvent::GroupJoined {
        client_id: inner.config.client_id.clone(),
        group_id: membership.group_id.clone(),
        member_id: member_id.clone(),
        generation_id: generation,
        is_leader: leader == member_id,
        leader_id: leader.clone(),
        member_assignment: assignment_now.clone(),
        duration: started.elapsed(),
    });
    Ok(())
}

type Joined = (String, i32, String, Assignment, Instant);

async fn join_and_sync(
    inner: &Inner,
    member_id: String,
    generation: i32,
    topics: &BTreeSet<String>,
    owned: &[TopicPartition],
) -> Result<Joined> {
    let Some(membership) = &inner.membership else {
        return Err(BrokerError::IllegalState("no group".into()));
    };
    let coordinator = inner.broker.group_coordinator();
    let started = Instant::now();
    let topic_list: Vec<String> = topics.iter().cloned().collect();
    let protocols = inner
        .config
        .assignors
        .iter()
        .map(|a| {
            let subscription = MemberSubscription {
                topics: topic_list.clone(),
                user_data: a.subscription_user_data(&topic_list),
                owned_partitions: owned.to_vec(),
                generation_id: generation,
            };
            (a.name().to_string(), subscription.encode())
        })
        .collect();
    let join = coordinator
        .join_group(JoinGroupRequest {
            group_id: membership.group_id.clone(),
            member_id,
            client_id: inner.config.client_id.clone(),
            session_timeout: inner.config.session_timeout,
            rebalance_timeout: inner.config.max_poll_interval,
            protocol_type: "consumer".into(),
            protocols,
        })
        .await?;
    {
        // Keep the id the coordinator gave us even if the sync fails: rejoining with it (and
        // not as a new member) is what lets the rebalance complete without waiting for this
        // member's old self to time out.
        let mut state = membership.state.lock();
        state.protocol = Some(join.protocol_name.clone());
        state.member_id = join.member_id.clone();
        state.generation = join.generation_id;
    }
    let assignments = if join.leader == join.member_id {
        leader_assign(inner, &join.protocol_name, &join.members)?
    } else {
        Vec::new()
    };
    let bytes = coordinator
        .sync_group(SyncGroupRequest {
            group_id: membership.group_id.clone(),
            generation_id: join.generation_id,
            member_id: join.member_id.clone(),
            assignments,
        })
        .await?;
    let assignment = if bytes.is_empty() {
        Assignment { partitions: Vec::new(), user_data: None }
    } else {
        Assignment::decode(&bytes).map_err(|e| {
            BrokerError::IllegalState(format!("bad assignment from the leader: {e}"))
        })?
    };
    Ok((join.member_id, join.generation_id, join.leader, assignment, started))
}

/// The leader runs the group's assignor over every member's subscription.
fn leader_assign(
    inner: &Inner,
    protocol: &str,
    members: &[crate::group::JoinedMember],
) -> Result<Vec<(String, bytes::Bytes)>> {
    let assignor =
        inner.config.assignors.iter().find(|a| a.name() == protocol).ok_or_else(|| {
            BrokerError::IllegalState(format!(
                "the group chose assignor `{protocol}`, which this member does not have"
            ))
        })?;
    let mut subscriptions = BTreeMap::new();
    for member in members {
        let subscription = MemberSubscription::decode(&member.metadata).map_err(|e| {
            BrokerError::IllegalState(format!(
                "member {} sent a bad subscription: {e}",
                member.member_id
            ))
        })?;
        subscriptions.insert(member.member_id.clone(), subscription);
    }
    let mut partitions_per_topic = BTreeMap::new();
    for subscription in subscriptions.values() {
        for topic in &subscription.topics {
            if let Ok(t) = inner.broker.logs().topic(topic) {
                partitions_per_topic.insert(topic.clone(), t.partition_count());
            }
        }
    }
    let assignments = assignor.assign(&partitions_per_topic, &subscriptions);
    Ok(assignments.into_iter().map(|(member, assignment)| (member, assignment.encode())).collect())
}

/// Gives up every partition (with the revocation callback and a commit) and leaves the group.
pub(crate) async fn revoke_all_and_leave(consumer: &Consumer) -> Result<()> {
    let inner = &consumer.inner;
    let Some(membership) = &inner.membership else { return Ok(()) };
    let owned: Vec<TopicPartition> = inner.state.lock().assignment.keys().cloned().collect();
    let joined = membership.generation();
    revoke(consumer, owned, false).await?;
    if let Some((member_id, _)) = joined {
        match inner.broker.group_coordinator().leave_group(&membership.group_id, &member_id).await {
            Ok(()) | Err(BrokerError::UnknownMemberId { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    membership.stop();
    membership.reset();
    Ok(())
}

fn start_heartbeat(consumer: &Consumer) {
    let inner = &consumer.inner;
    let Some(membership) = &inner.membership else { return };
    let mut state = membership.state.lock();
    if state.heartbeat.as_ref().is_some_and(|h| !h.is_finished()) {
        return;
    }
    let weak = Arc::downgrade(inner);
    let signal = inner.broker.group_coordinator().rebalance_signal(&membership.group_id);
    state.heartbeat =
        Some(tokio::spawn(heartbeat_loop(weak, signal, inner.config.heartbeat_interval)));
}

async fn heartbeat_loop(
    weak: Weak<Inner>,
    mut signal: tokio::sync::watch::Receiver<u64>,
    interval: Duration,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            changed = signal.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let Some(inner) = weak.upgrade() else { return };
        let Some(membership) = &inner.membership else { return };
        let (member_id, generation, joining, last_poll) = {
            let state = membership.state.lock();
            (
                state.member_id.clone(),
                state.generation,
                state.joining || !state.joined,
                state.last_poll,
            )
        };
        if joining {
            continue;
        }
        if last_poll.elapsed() > inner.config.max_poll_interval {
            tracing::warn!(group = %membership.group_id, member = %member_id, "max.poll.interval.ms exceeded: leaving the group");
            let _ = inner
                .broker
                .group_coordinator()
                .leave_group(&membership.group_id, &member_id)
                .await;
            membership.state.lock().lost = true;
            inner.wake.notify_waiters();
            continue;
        }
        match inner.broker.group_coordinator().heartbeat(
            &membership.group_id,
            &member_id,
            generation,
        ) {
            Ok(()) => inner.events.emit(|| ClientEvent::Heartbeat {
                client_id: inner.config.client_id.clone(),
                group_id: membership.group_id.clone(),
                member_id: member_id.clone(),
                generation_id: generation,
            }),
            Err(BrokerError::RebalanceInProgress(_)) => {
                membership.request_rejoin();
                inner.wake.notify_waiters();
            }
            Err(BrokerError::UnknownMemberId { .. } | BrokerError::IllegalGeneration { .. }) => {
                membership.state.lock().lost = true;
                inner.wake.notify_waiters();
            }
            Err(e) => tracing::warn!(group = %membership.group_id, error = %e, "heartbeat failed"),
        }
    }
}
