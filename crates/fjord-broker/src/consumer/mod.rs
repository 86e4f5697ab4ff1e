//! The consumer: reads partitions it is assigned, by its group or by hand, as Kafka's
//! `KafkaConsumer`.
//!
//! - `subscribe` (a list of topics or a regex) makes it a member of the group `group_id`:
//!   `poll` joins the group, runs the rebalance callbacks and keeps the membership, and a
//!   heartbeat task keeps the session alive. `assign` reads the given partitions without a
//!   group.
//! - `poll` returns up to `max_poll_records` records. It long-polls: with nothing to return it
//!   waits until data arrives on an assigned topic (the broker wakes it), a rebalance starts,
//!   or the timeout passes. There are no busy loops and no fixed sleeps.
//! - Positions start at the committed offset, else at `auto_offset_reset`; `seek`,
//!   `seek_to_beginning`, `seek_to_end` and `offsets_for_times` move them; `pause`/`resume`
//!   stop and restart fetching a partition.
//! - Commits: automatic every `auto_commit_interval` (in `poll`, before a rebalance revokes
//!   partitions, and at `close`), or manual with `commit_sync`/`commit_offsets`/`commit_async`.
//! - `isolation_level = ReadCommitted` reads up to the last stable offset and drops the records
//!   of aborted transactions.
//!
//! Methods take `&self`, so a rebalance listener can use the consumer (to commit what it
//! processed) while `poll` runs it; calls are meant to come from one task at a time, as with
//! Kafka's consumer.

pub mod assignor;
mod fetcher;
mod membership;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fjord_log::{FetchIsolation, LogError, TopicPartition};
use futures::Stream;
use parking_lot::Mutex;
use tokio::sync::{Notify, broadcast};

use crate::broker::{Broker, OffsetSpec};
use crate::error::{BrokerError, Result};
use crate::events::{ClientEvent, Events};
use crate::group::{OffsetAndMetadata, OffsetCommitRequest};
pub use assignor::PartitionAssignor;
use fetcher::CompletedFetch;
pub use fetcher::ConsumerRecord;
use membership::Membership;

/// Where to start when a partition has no committed offset (`auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    /// The log start offset.
    Earliest,
    /// The log end offset (Kafka's default).
    Latest,
    /// Fail with [`BrokerError::NoOffsetForPartition`].
    None,
}

/// Which records a consumer reads (`isolation.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsolationLevel {
    /// Everything up to the high watermark, including open and aborted transactions' records.
    ReadUncommitted,
    /// Up to the last stable offset, without aborted transactions' records.
    ReadCommitted,
}

/// Consumer settings, with Kafka's names in the docs.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// `client.id`.
    pub client_id: String,
    /// `group.id`: needed to subscribe and to commit.
    pub group_id: Option<String>,
    /// `auto.offset.reset` (latest).
    pub auto_offset_reset: OffsetReset,
    /// `enable.auto.commit` (true).
    pub enable_auto_commit: bool,
    /// `auto.commit.interval.ms` (5 s).
    pub auto_commit_interval: Duration,
    /// `isolation.level` (read_uncommitted).
    pub isolation_level: IsolationLevel,
    /// `max.partition.fetch.bytes` (1 MiB): most bytes fetched per partition at once (at least
    /// one batch, however large).
    pub max_partition_fetch_bytes: usize,
    /// `fetch.max.bytes` (50 MiB): most bytes fetched at once in total.
    pub fetch_max_bytes: usize,
    /// `max.poll.records` (500).
    pub max_poll_records: usize,
    /// `session.timeout.ms` (45 s).
    pub session_timeout: Duration,
    /// `heartbeat.interval.ms` (3 s).
    pub heartbeat_interval: Duration,
    /// `max.poll.interval.ms` (5 min): a member that does not poll for this long leaves the
    /// group, and is the rebalance timeout of its joins.
    pub max_poll_interval: Duration,
    /// `partition.assignment.strategy`, in preference order (cooperative-sticky).
    pub assignors: Vec<Arc<dyn PartitionAssignor>>,
    /// `metadata.max.age.ms` (5 min): how often a pattern subscription looks for new topics.
    pub metadata_max_age: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            client_id: "fjord-consumer".into(),
            group_id: None,
            auto_offset_reset: OffsetReset::Latest,
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            isolation_level: IsolationLevel::ReadUncommitted,
            max_partition_fetch_bytes: 1024 * 1024,
            fetch_max_bytes: 50 * 1024 * 1024,
            max_poll_records: 500,
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(3),
            max_poll_interval: Duration::from_secs(300),
            assignors: vec![Arc::new(assignor::CooperativeStickyAssignor)],
            metadata_max_age: Duration::from_secs(300),
        }
    }
}

/// Called around rebalances, before the new assignment takes effect (Kafka's
/// `ConsumerRebalanceListener`). The consumer is passed in so the callback can commit.
#[async_trait::async_trait]
pub trait ConsumerRebalanceListener: Send + Sync {
    /// The partitions are being taken away: commit what was processed from them. Runs before
    /// any other member gets them.
    async fn on_partitions_revoked(&self, consumer: &Consumer, partitions: &[TopicPartition]) {
        let _ = (consumer, partitions);
    }

    /// The partitions were assigned; positions are set when this runs.
    async fn on_partitions_assigned(&self, consumer: &Consumer, partitions: &[TopicPartition]) {
        let _ = (consumer, partitions);
    }

    /// The partitions were lost without a revocation (the member was evicted): others may
    /// already own them, so committing is pointless.
    async fn on_partitions_lost(&self, consumer: &Consumer, partitions: &[TopicPartition]) {
        self.on_partitions_revoked(consumer, partitions).await;
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Subscription {
    None,
    Topics(BTreeSet<String>),
    Pattern(regex::Regex),
    Assigned,
}

#[derive(Debug, Default)]
pub(crate) struct PartitionState {
    /// Next offset to return; `None` until initialised.
    pub(crate) position: Option<i64>,
    pub(crate) paused: bool,
    pub(crate) fetched: Option<CompletedFetch>,
    pub(crate) high_watermark: i64,
    /// `fjord_consumer_lag` of this partition, registered once per assignment (and again after
    /// a recorder is installed: the generation) instead of at every fetch.
    pub(crate) lag_gauge: Option<(u64, metrics::Gauge)>,
}

pub(crate) struct ConsumerState {
    pub(crate) subscription: Subscription,
    /// Topics the subscription resolved to at the last rebalance.
    pub(crate) subscribed_topics: BTreeSet<String>,
    pub(crate) assignment: BTreeMap<TopicPartition, PartitionState>,
    pub(crate) last_auto_commit: Instant,
    pub(crate) last_metadata_check: Instant,
}

pub(crate) struct Inner {
    pub(crate) broker: Broker,
    pub(crate) config: ConsumerConfig,
    pub(crate) state: Mutex<ConsumerState>,
    pub(crate) membership: Option<Membership>,
    pub(crate) listener: Mutex<Option<Arc<dyn ConsumerRebalanceListener>>>,
    pub(crate) events: Events,
    /// Wakes a waiting `poll` (rebalance needed, wakeup, close).
    pub(crate) wake: Notify,
    /// A [`Consumer::wakeup`] not yet answered by a `poll` returning.
    woken: AtomicBool,
    pub(crate) closed: AtomicBool,
}

impl Inner {
    /// [`Consumer::wakeup`].
    fn wakeup(&self) {
        self.woken.store(true, Ordering::Release);
        self.wake.notify_waiters();
    }
}

/// Wakes a consumer's `poll` ([`Consumer::wakeup`]) without owning the consumer; does nothing
/// once the consumer is gone.
#[derive(Debug, Clone)]
pub struct ConsumerWaker(std::sync::Weak<Inner>);

impl ConsumerWaker {
    /// See [`Consumer::wakeup`].
    pub fn wakeup(&self) {
        if let Some(inner) = self.0.upgrade() {
            inner.wakeup();
        }
    }
}

/// A consumer. See the module docs.
pub struct Consumer {
    pub(crate) inner: Arc<Inner>,
    poll_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").field("client_id", &self.inner.config.client_id).finish()
    }
}

impl Consumer {
    /// A consumer on `broker`.
    pub fn new(broker: &Broker, config: ConsumerConfig) -> Result<Consumer> {
        if config.max_poll_records == 0 {
            return Err(BrokerError::InvalidConfig {
                name: "max.poll.records",
                reason: "must be at least 1".into(),
            });
        }
        if config.heartbeat_interval >= config.session_timeout {
            return Err(BrokerError::InvalidConfig {
                name: "heartbeat.interval.ms",
                reason: "must be lower than session.timeout.ms".into(),
            });
        }
        if config.assignors.is_empty() {
            return Err(BrokerError::InvalidConfig {
                name: "partition.assignment.strategy",
                reason: "name at least one assignor".into(),
            });
        }
        let membership = match &config.group_id {
            Some(group) if group.is_empty() => {
                return Err(BrokerError::InvalidGroupId(group.clone()));
            }
            Some(group) => Some(Membership::new(group.clone())),
            None => None,
        };
        let now = Instant::now();
        let inner = Arc::new(Inner {
            broker: broker.clone(),
            config,
            state: Mutex::new(ConsumerState {
                subscription: Subscription::None,
                subscribed_topics: BTreeSet::new(),
                assignment: BTreeMap::new(),
                last_auto_commit: now,
                last_metadata_check: now,
            }),
            membership,
            listener: Mutex::new(None),
            events: Events::default(),
            wake: Notify::new(),
            woken: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        Ok(Consumer { inner, poll_lock: tokio::sync::Mutex::new(()) })
    }

    /// Subscribes to events.
    pub fn events(&self) -> broadcast::Receiver<ClientEvent> {
        self.inner.events.subscribe()
    }

    /// The group id.
    pub fn group_id(&self) -> Option<&str> {
        self.inner.config.group_id.as_deref()
    }

    fn group(&self) -> Result<&Membership> {
        self.inner.membership.as_ref().ok_or_else(|| {
            BrokerError::IllegalState(
                "this consumer has no group.id: set one to subscribe or commit".into(),
            )
        })
    }

    /// Subscribes to topics as a member of the group (replacing any earlier subscription).
    pub fn subscribe(&self, topics: &[&str]) -> Result<()> {
        self.group()?;
        let topics: BTreeSet<String> = topics.iter().map(|t| t.to_string()).collect();
        self.set_subscription(Subscription::Topics(topics))
    }

    /// Subscribes to every topic whose whole name matches `pattern` (internal topics excluded),
    /// now and as topics are created.
    pub fn subscribe_pattern(&self, pattern: &str) -> Result<()> {
        self.group()?;
        let regex = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
            BrokerError::InvalidConfig { name: "subscription pattern", reason: e.to_string() }
        })?;
        self.set_subscription(Subscription::Pattern(regex))
    }

    /// Sets the rebalance listener.
    pub fn set_rebalance_listener(&self, listener: Arc<dyn ConsumerRebalanceListener>) {
        *self.inner.listener.lock() = Some(listener);
    }

    fn set_subscription(&self, subscription: Subscription) -> Result<()> {
        let mut state = self.inner.state.lock();
        if matches!(state.subscription, Subscription::Assigned) {
            return Err(BrokerError::IllegalState(
                "the consumer has a manual assignment: unsubscribe before subscribing".into(),
            ));
        }
        state.subscription = subscription;
        drop(state);
        if let Some(m) = &self.inner.membership {
            m.request_rejoin();
        }
        self.inner.wake.notify_waiters();
        Ok(())
    }

    /// Reads exactly these partitions, without group membership (Kafka's `assign`).
    pub fn assign(&self, partitions: &[TopicPartition]) -> Result<()> {
        for tp in partitions {
            self.inner.broker.partition(tp)?;
        }
        let mut state = self.inner.state.lock();
        if matches!(state.subscription, Subscription::Topics(_) | Subscription::Pattern(_)) {
            return Err(BrokerError::IllegalState(
                "the consumer is subscribed: unsubscribe before assigning partitions by hand"
                    .into(),
            ));
        }
        state.subscription = Subscription::Assigned;
        let wanted: BTreeSet<_> = partitions.iter().cloned().collect();
        state.assignment.retain(|tp, _| wanted.contains(tp));
        for tp in wanted {
            state.assignment.entry(tp).or_default();
        }
        Ok(())
    }

    /// Drops the subscription or assignment (leaving the group).
    pub async fn unsubscribe(&self) -> Result<()> {
        if let Some(m) = &self.inner.membership {
            membership::revoke_all_and_leave(self).await?;
            m.reset();
        }
        let mut state = self.inner.state.lock();
        state.subscription = Subscription::None;
        state.assignment.clear();
        Ok(())
    }

    /// The partitions currently assigned.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.inner.state.lock().assignment.keys().cloned().collect()
    }

    /// The member id and generation, when in a group.
    pub fn group_generation(&self) -> Option<(String, i32)> {
        self.inner.membership.as_ref().and_then(Membership::generation)
    }

    /// Whether the next `poll` will rebalance (the group is rebalancing, or this member must
    /// rejoin): a stream thread commits its progress first, so nothing is processed twice.
    pub fn rebalance_pending(&self) -> bool {
        self.is_subscribed() && self.inner.membership.as_ref().is_some_and(Membership::needs_join)
    }

    /// The group position to pass to a transactional producer's
    /// `send_offsets_to_transaction` (Kafka's `groupMetadata()`).
    pub fn group_metadata(&self) -> Option<crate::producer::ConsumerGroupMetadata> {
        let group_id = self.inner.config.group_id.clone()?;
        let (member_id, generation_id) = self.group_generation().unwrap_or((String::new(), -1));
        Some(crate::producer::ConsumerGroupMetadata { group_id, member_id, generation_id })
    }

    /// Fetches records: up to `max_poll_records`, waiting up to `timeout` for some to arrive.
    /// Runs the group protocol (and the rebalance listener) as needed.
    pub async fn poll(&self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let _polling = self.poll_lock.lock().await;
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(BrokerError::Closed("consumer"));
        }
        let deadline = Instant::now() + timeout;
        if let Some(m) = &self.inner.membership {
            m.record_poll();
        }
        let mut first = true;
        loop {
            let group_member = self.inner.membership.is_some() && self.is_subscribed();
            // A rebalance noticed while this poll waited ends the poll first, so the caller
            // can commit what it processed before partitions move (a stream thread does).
            if group_member && !first && self.rebalance_pending() {
                return Ok(Vec::new());
            }
            first = false;
            let stable = if group_member {
                membership::ensure_active_group(self, deadline).await?
            } else {
                true
            };
            self.maybe_auto_commit().await?;
            self.initialize_positions().await?;
            // Register for wakeups before looking at the data, so nothing slips in between.
            let mut watches = self.topic_watches();
            for w in &mut watches {
                w.borrow_and_update();
            }
            let wake = self.inner.wake.notified();
            let mut wake = std::pin::pin!(wake);
            wake.as_mut().enable();
            let started = Instant::now();
            let records = self.fetch_records().await?;
            if !records.is_empty() {
                let records_len = records.len();
                self.inner.events.emit(|| ClientEvent::Fetch {
                    client_id: self.inner.config.client_id.clone(),
                    batches: 0,
                    records: records_len,
                    duration: started.elapsed(),
                });
                return Ok(records);
            }
            let now = Instant::now();
            // A wakeup that came before or during this poll ends it (`wake` was enabled before
            // the fetch, so one that comes after this check ends the wait below).
            if now >= deadline || !stable || self.inner.woken.swap(false, Ordering::AcqRel) {
                return Ok(Vec::new());
            }
            let changed = async {
                if watches.is_empty() {
                    futures::future::pending::<()>().await;
                }
                let futures = watches.iter_mut().map(|w| Box::pin(w.changed()));
                let _ = futures::future::select_all(futures).await;
            };
            tokio::select! {
                _ = changed => {}
                _ = &mut wake => {}
                _ = tokio::time::sleep_until(deadline.into()) => return Ok(Vec::new()),
            }
        }
    }

    /// The records as a stream (each `poll` waits up to 500 ms; the stream never ends by
    /// itself, only with an error or when the consumer is closed).
    pub fn stream(&self) -> impl Stream<Item = Result<ConsumerRecord>> + '_ {
        futures::stream::unfold(std::collections::VecDeque::new(), move |mut buffer| async move {
            loop {
                if let Some(record) = buffer.pop_front() {
                    return Some((Ok(record), buffer));
                }
                match self.poll(Duration::from_millis(500)).await {
                    Ok(records) => buffer.extend(records),
                    Err(BrokerError::Closed(_)) => return None,
                    Err(e) => return Some((Err(e), buffer)),
                }
            }
        })
    }

    fn is_subscribed(&self) -> bool {
        matches!(
            self.inner.state.lock().subscription,
            Subscription::Topics(_) | Subscription::Pattern(_)
        )
    }

    fn topic_watches(&self) -> Vec<tokio::sync::watch::Receiver<u64>> {
        let state = self.inner.state.lock();
        let mut topics: BTreeSet<Arc<str>> =
            state.assignment.keys().map(|tp| tp.topic.clone()).collect();
        if state.assignment.values().any(|p| p.position.is_none()) {
            // Waiting for a transaction to end: its markers land in __consumer_offsets.
            topics.insert(Arc::from(fjord_log::topic::CONSUMER_OFFSETS_TOPIC));
        }
        drop(state);
        topics.iter().map(|t| self.inner.broker.topic_watch(t)).collect()
    }

    /// Gives every assigned partition without a position one: its committed offset, else the
    /// reset policy.
    async fn initialize_positions(&self) -> Result<()> {
        let missing: Vec<TopicPartition> = {
            let state = self.inner.state.lock();
            state
                .assignment
                .iter()
                .filter(|(_, p)| p.position.is_none())
                .map(|(tp, _)| tp.clone())
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let coordinator = self.inner.broker.group_coordinator();
        let committed = match &self.inner.config.group_id {
            // Under read_committed a committed offset that an open transaction is about to
            // replace must not be used (KIP-447): wait for the transaction to end.
            Some(group) if self.inner.config.isolation_level == IsolationLevel::ReadCommitted => {
                match coordinator.fetch_offsets_stable(group, &missing) {
                    Ok(offsets) => offsets,
                    Err(BrokerError::UnstableOffsetCommit(tp)) => {
                        tracing::debug!(partition = %tp, "committed offset pending in a transaction: waiting");
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                }
            }
            Some(group) => coordinator.fetch_offsets(group, Some(&missing))?,
            None => BTreeMap::new(),
        };
        for tp in missing {
            let position = match committed.get(&tp) {
                Some(c) => c.offset,
                None => self.reset_position(&tp)?,
            };
            if let Some(p) = self.inner.state.lock().assignment.get_mut(&tp) {
                p.position.get_or_insert(position);
            }
        }
        Ok(())
    }

    fn reset_position(&self, tp: &TopicPartition) -> Result<i64> {
        let spec = match self.inner.config.auto_offset_reset {
            OffsetReset::Earliest => OffsetSpec::Earliest,
            OffsetReset::Latest => OffsetSpec::Latest,
            OffsetReset::None => return Err(BrokerError::NoOffsetForPartition(tp.clone())),
        };
        Ok(self.inner.broker.list_offset(tp, spec)?.offset)
    }

    /// Hands out buffered records, fetching for the partitions that have none buffered.
    async fn fetch_records(&self) -> Result<Vec<ConsumerRecord>> {
        let max = self.inner.config.max_poll_records;
        let mut out = Vec::new();
        self.drain_buffered(&mut out, max)?;
        if !out.is_empty() {
            return Ok(out);
        }
        let isolation = match self.inner.config.isolation_level {
            IsolationLevel::ReadUncommitted => FetchIsolation::HighWatermark,
            IsolationLevel::ReadCommitted => FetchIsolation::TxnCommitted,
        };
        let requests: Vec<(TopicPartition, i64)> = {
            let state = self.inner.state.lock();
            state
                .assignment
                .iter()
                .filter(|(_, p)| !p.paused && p.fetched.is_none())
                .filter_map(|(tp, p)| p.position.map(|pos| (tp.clone(), pos)))
                .collect()
        };
        if requests.is_empty() {
            return Ok(out);
        }
        let mut logs = Vec::with_capacity(requests.len());
        for (tp, position) in requests {
            logs.push((self.inner.broker.partition(&tp)?, tp, position));
        }
        let per_partition = self.inner.config.max_partition_fetch_bytes;
        let total = self.inner.config.fetch_max_bytes;
        let results = tokio::task::spawn_blocking(move || {
            let mut budget = total;
            let mut results = Vec::with_capacity(logs.len());
            for (log, tp, position) in logs {
                if budget == 0 {
                    break;
                }
                let result = log.read(position, per_partition.min(budget), isolation);
                if let Ok(data) = &result {
                    budget = budget.saturating_sub(data.records.len());
                }
                results.push((tp, position, result));
            }
            results
        })
        .await
        .map_err(|e| BrokerError::IllegalState(format!("fetch task failed: {e}")))?;
        let read_committed = isolation == FetchIsolation::TxnCommitted;
        for (tp, position, result) in results {
            match result {
                Ok(data) => {
                    let mut state = self.inner.state.lock();
                    // Skip if the partition was revoked or sought meanwhile.
                    let Some(p) = state.assignment.get_mut(&tp) else { continue };
                    if p.position != Some(position) {
                        continue;
                    }
                    p.high_watermark = data.high_watermark;
                    if let Some(group) = &self.inner.config.group_id {
                        // Kafka's records-lag: from where this fetch leaves the consumer to
                        // the end it may read (the LSO under read_committed).
                        let end = if read_committed {
                            data.last_stable_offset
                        } else {
                            data.high_watermark
                        };
                        let lag = (end - data.next_offset.unwrap_or(position)).max(0);
                        let generation = fjord_log::metrics::generation();
                        let gauge = match &mut p.lag_gauge {
                            Some((g, gauge)) if *g == generation => gauge,
                            slot => {
                                let gauge = metrics::gauge!("fjord_consumer_lag", "group" => group.clone(), "topic" => tp.topic.clone(), "partition" => tp.partition.to_string());
                                &slot.insert((generation, gauge)).1
                            }
                        };
                        gauge.set(lag as f64);
                    }
                    if !data.records.is_empty() {
                        p.fetched = Some(CompletedFetch::new(
                            data.records,
                            data.aborted_transactions,
                            read_committed,
                        ));
                    } else if let Some(next) = data.next_offset {
                        p.position = Some(next);
                    }
                }
                Err(LogError::OffsetOutOfRange { .. }) => {
                    let reset = self.reset_position(&tp);
                    let mut state = self.inner.state.lock();
                    if let Some(p) = state.assignment.get_mut(&tp) {
                        tracing::info!(partition = %tp, position, "offset out of range: resetting by auto.offset.reset");
                        p.position = Some(reset?);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.drain_buffered(&mut out, max)?;
        metrics::counter!("fjord_consumer_records_total", "client" => self.inner.config.client_id.clone())
            .increment(out.len() as u64);
        Ok(out)
    }

    fn drain_buffered(&self, out: &mut Vec<ConsumerRecord>, max: usize) -> Result<()> {
        let mut state = self.inner.state.lock();
        for (tp, p) in state.assignment.iter_mut() {
            if out.len() >= max {
                break;
            }
            if p.paused {
                continue;
            }
            let Some(fetched) = &mut p.fetched else { continue };
            let Some(position) = &mut p.position else { continue };
            let done = fetched.drain(tp, position, max - out.len(), out).map_err(|e| {
                BrokerError::Log(LogError::InvalidRecord { tp: e.partition, source: e.source })
            })?;
            if done {
                p.fetched = None;
            }
        }
        Ok(())
    }

    async fn maybe_auto_commit(&self) -> Result<()> {
        if !self.inner.config.enable_auto_commit || self.inner.config.group_id.is_none() {
            return Ok(());
        }
        let due = {
            let mut state = self.inner.state.lock();
            let due = state.last_auto_commit.elapsed() >= self.inner.config.auto_commit_interval;
            if due {
                state.last_auto_commit = Instant::now();
            }
            due
        };
        if due {
            match self.commit_sync().await {
                Ok(()) => {}
                // A rebalance is under way: the next poll rejoins and commits before revoking.
                Err(
                    BrokerError::RebalanceInProgress(_)
                    | BrokerError::IllegalGeneration { .. }
                    | BrokerError::UnknownMemberId { .. },
                ) => {
                    if let Some(m) = &self.inner.membership {
                        m.request_rejoin();
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The current positions of all assigned partitions.
    pub fn positions(&self) -> BTreeMap<TopicPartition, i64> {
        let state = self.inner.state.lock();
        state.assignment.iter().filter_map(|(tp, p)| p.position.map(|o| (tp.clone(), o))).collect()
    }

    /// The position of one assigned partition (the offset of the next record `poll` returns).
    pub fn position(&self, tp: &TopicPartition) -> Result<Option<i64>> {
        let state = self.inner.state.lock();
        state
            .assignment
            .get(tp)
            .map(|p| p.position)
            .ok_or_else(|| BrokerError::NotAssigned(tp.clone()))
    }

    /// Commits the positions of all assigned partitions and waits (Kafka's `commitSync()`).
    pub async fn commit_sync(&self) -> Result<()> {
        let offsets: Vec<(TopicPartition, i64)> = self.positions().into_iter().collect();
        if offsets.is_empty() {
            return Ok(());
        }
        self.commit_offsets(&offsets).await
    }

    /// Commits explicit offsets (the next offset to read, as Kafka) and waits.
    pub async fn commit_offsets(&self, offsets: &[(TopicPartition, i64)]) -> Result<()> {
        let group = self.group()?;
        let (member_id, generation_id) = if self.is_subscribed() {
            group.generation().unwrap_or_else(|| (String::new(), -1))
        } else {
            (String::new(), -1)
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let request = OffsetCommitRequest {
            group_id: group.group_id().to_string(),
            member_id,
            generation_id,
            offsets: offsets
                .iter()
                .map(|(tp, offset)| {
                    (
                        tp.clone(),
                        OffsetAndMetadata {
                            offset: *offset,
                            leader_epoch: -1,
                            metadata: String::new(),
                            commit_timestamp: now,
                        },
                    )
                })
                .collect(),
        };
        let started = Instant::now();
        self.inner.broker.group_coordinator().commit_offsets(request).await?;
        metrics::histogram!("fjord_consumer_commit_latency_seconds")
            .record(started.elapsed().as_secs_f64());
        self.inner.events.emit(|| ClientEvent::CommitOffsets {
            client_id: self.inner.config.client_id.clone(),
            group_id: group.group_id().to_string(),
            offsets: offsets.to_vec(),
        });
        Ok(())
    }

    /// Commits the current positions in the background (Kafka's `commitAsync()`); the handle
    /// gives the result.
    pub fn commit_async(self: &Arc<Self>) -> tokio::task::JoinHandle<Result<()>> {
        let consumer = self.clone();
        tokio::spawn(async move { consumer.commit_sync().await })
    }

    /// The group's committed offsets for these partitions.
    pub fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let group = self.group()?;
        let offsets = self
            .inner
            .broker
            .group_coordinator()
            .fetch_offsets(group.group_id(), Some(partitions))?;
        Ok(offsets.into_iter().map(|(tp, o)| (tp, o.offset)).collect())
    }

    /// Moves the position of an assigned partition.
    pub fn seek(&self, tp: &TopicPartition, offset: i64) -> Result<()> {
        let mut state = self.inner.state.lock();
        let p = state.assignment.get_mut(tp).ok_or_else(|| BrokerError::NotAssigned(tp.clone()))?;
        p.position = Some(offset);
        p.fetched = None;
        Ok(())
    }

    /// Moves positions to the log start.
    pub fn seek_to_beginning(&self, partitions: &[TopicPartition]) -> Result<()> {
        self.seek_to(partitions, OffsetSpec::Earliest)
    }

    /// Moves positions to the log end (the last stable offset under read_committed).
    pub fn seek_to_end(&self, partitions: &[TopicPartition]) -> Result<()> {
        let spec = match self.inner.config.isolation_level {
            IsolationLevel::ReadUncommitted => OffsetSpec::Latest,
            IsolationLevel::ReadCommitted => OffsetSpec::LatestCommitted,
        };
        self.seek_to(partitions, spec)
    }

    /// Moves positions to the first record at or after `timestamp` (the log end if none).
    pub fn seek_to_timestamp(&self, partitions: &[TopicPartition], timestamp: i64) -> Result<()> {
        self.seek_to(partitions, OffsetSpec::Timestamp(timestamp))
    }

    fn seek_to(&self, partitions: &[TopicPartition], spec: OffsetSpec) -> Result<()> {
        for tp in partitions {
            let offset = self.inner.broker.list_offset(tp, spec)?.offset;
            self.seek(tp, offset)?;
        }
        Ok(())
    }

    /// The offsets of the first records at or after the timestamps (Kafka's
    /// `offsetsForTimes`); `None` where there is no such record.
    pub fn offsets_for_times(
        &self,
        query: &[(TopicPartition, i64)],
    ) -> Result<Vec<(TopicPartition, Option<fjord_log::TimestampAndOffset>)>> {
        query
            .iter()
            .map(|(tp, ts)| {
                let listed = self.inner.broker.list_offset(tp, OffsetSpec::Timestamp(*ts))?;
                Ok((
                    tp.clone(),
                    (listed.timestamp >= 0).then_some(fjord_log::TimestampAndOffset {
                        offset: listed.offset,
                        timestamp: listed.timestamp,
                    }),
                ))
            })
            .collect()
    }

    /// Stops fetching these partitions (their positions and assignment stay).
    pub fn pause(&self, partitions: &[TopicPartition]) -> Result<()> {
        self.set_paused(partitions, true)
    }

    /// Resumes fetching these partitions.
    pub fn resume(&self, partitions: &[TopicPartition]) -> Result<()> {
        self.set_paused(partitions, false)
    }

    /// The paused partitions.
    pub fn paused(&self) -> Vec<TopicPartition> {
        let state = self.inner.state.lock();
        state.assignment.iter().filter(|(_, p)| p.paused).map(|(tp, _)| tp.clone()).collect()
    }

    fn set_paused(&self, partitions: &[TopicPartition], paused: bool) -> Result<()> {
        let mut state = self.inner.state.lock();
        for tp in partitions {
            state
                .assignment
                .get_mut(tp)
                .ok_or_else(|| BrokerError::NotAssigned(tp.clone()))?
                .paused = paused;
        }
        drop(state);
        self.inner.wake.notify_waiters();
        Ok(())
    }

    /// Lag per assigned partition: high watermark minus position, as of the last fetch.
    pub fn lag(&self) -> HashMap<TopicPartition, i64> {
        let state = self.inner.state.lock();
        state
            .assignment
            .iter()
            .filter_map(|(tp, p)| {
                p.position.map(|pos| (tp.clone(), (p.high_watermark - pos).max(0)))
            })
            .collect()
    }

    /// Ends a `poll` that is waiting (it returns what it has, possibly nothing), or, when no
    /// poll is waiting, the next one without waiting (Kafka's `wakeup`).
    pub fn wakeup(&self) {
        self.inner.wakeup();
    }

    /// A handle that wakes this consumer from another thread or task while its owner polls.
    pub fn waker(&self) -> ConsumerWaker {
        ConsumerWaker(Arc::downgrade(&self.inner))
    }

    /// Commits (with auto-commit on), runs the revocation callback, leaves the group and stops
    /// the heartbeats. Polls after `close` fail.
    pub async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.wake.notify_waiters();
        let _polling = self.poll_lock.lock().await;
        if self.inner.membership.is_some() && self.is_subscribed() {
            membership::revoke_all_and_leave(self).await?;
        } else if self.inner.config.enable_auto_commit && self.inner.config.group_id.is_some() {
            self.commit_sync().await?;
        }
        if let Some(m) = &self.inner.membership {
            m.stop();
        }
        self.inner
            .events
            .emit(|| ClientEvent::Stopped { client_id: self.inner.config.client_id.clone() });
        Ok(())
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Some(m) = &self.inner.membership {
            m.stop();
        }
    }
}
