//! The transaction coordinator (Kafka's `TransactionCoordinator`): transactional ids, their
//! producer ids and epochs, the partitions of each open transaction, and the two-phase commit
//! that ends it.
//!
//! Every state change is written to `__transaction_state` before it takes effect, so a restart
//! knows each transaction's last state:
//! - `init_producer_id` bumps the epoch of the transactional id, fencing any older producer
//!   with it; an open transaction of the old producer is aborted first.
//! - `add_partitions` (and `add_offsets`, for a group's `__consumer_offsets` partition) records
//!   a partition before the producer writes to it, so the coordinator always knows where to
//!   put markers.
//! - `end_txn` writes `PrepareCommit`/`PrepareAbort`, then a marker into every partition of the
//!   transaction (which makes its records visible to `read_committed` readers, or drops them),
//!   completes the group's transactional offset commits, and writes `CompleteCommit`/
//!   `CompleteAbort`.
//! - On open, a transaction found in `PrepareCommit` is committed, and any other unfinished one
//!   is aborted (with an epoch bump, so its producer is fenced).
//! - A transaction open longer than its timeout is aborted the same way by a background task.

mod records;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use fjord_log::record::{
    BatchIter, BatchOptions, ControlRecordType, EndTxnMarker, RecordBatchBuilder,
};
use fjord_log::topic::CONSUMER_OFFSETS_TOPIC;
use fjord_log::{FetchIsolation, LogError, Topic, TopicPartition};
use parking_lot::Mutex;

use crate::broker::Broker;
use crate::error::{BrokerError, Result};

/// Transaction coordinator settings (Kafka's `transaction.*` broker configs).
#[derive(Debug, Clone)]
pub struct TransactionConfig {
    /// Largest transaction timeout a producer may ask for (`transaction.max.timeout.ms`,
    /// 15 min).
    pub max_timeout: Duration,
    /// How often timed-out transactions are looked for
    /// (`transaction.abort.timed.out.transaction.cleanup.interval.ms`, 10 s).
    pub abort_check_interval: Duration,
}

impl Default for TransactionConfig {
    fn default() -> Self {
        TransactionConfig {
            max_timeout: Duration::from_secs(900),
            abort_check_interval: Duration::from_secs(10),
        }
    }
}

/// A transaction's state, with Kafka's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionState {
    /// No transaction open.
    Empty,
    /// A transaction is open.
    Ongoing,
    /// Commit decided; markers being written.
    PrepareCommit,
    /// Abort decided; markers being written.
    PrepareAbort,
    /// The last transaction committed.
    CompleteCommit,
    /// The last transaction aborted.
    CompleteAbort,
    /// The transactional id expired.
    Dead,
    /// An older producer is being fenced; its transaction is aborted.
    PrepareEpochFence,
}

impl TransactionState {
    fn id(self) -> i8 {
        match self {
            TransactionState::Empty => 0,
            TransactionState::Ongoing => 1,
            TransactionState::PrepareCommit => 2,
            TransactionState::PrepareAbort => 3,
            TransactionState::CompleteCommit => 4,
            TransactionState::CompleteAbort => 5,
            TransactionState::Dead => 6,
            TransactionState::PrepareEpochFence => 7,
        }
    }

    fn from_id(id: i8) -> Option<Self> {
        Some(match id {
            0 => TransactionState::Empty,
            1 => TransactionState::Ongoing,
            2 => TransactionState::PrepareCommit,
            3 => TransactionState::PrepareAbort,
            4 => TransactionState::CompleteCommit,
            5 => TransactionState::CompleteAbort,
            6 => TransactionState::Dead,
            7 => TransactionState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// Kafka's name (`Ongoing`, `PrepareCommit`, ...).
    pub fn name(self) -> &'static str {
        match self {
            TransactionState::Empty => "Empty",
            TransactionState::Ongoing => "Ongoing",
            TransactionState::PrepareCommit => "PrepareCommit",
            TransactionState::PrepareAbort => "PrepareAbort",
            TransactionState::CompleteCommit => "CompleteCommit",
            TransactionState::CompleteAbort => "CompleteAbort",
            TransactionState::Dead => "Dead",
            TransactionState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    fn is_open(self) -> bool {
        matches!(
            self,
            TransactionState::Ongoing
                | TransactionState::PrepareCommit
                | TransactionState::PrepareAbort
                | TransactionState::PrepareEpochFence
        )
    }
}

/// What the coordinator knows of a transactional id (Kafka's `DescribeTransactions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionMetadata {
    /// The transactional id.
    pub transactional_id: String,
    /// Its producer id.
    pub producer_id: i64,
    /// Its current producer epoch.
    pub producer_epoch: i16,
    /// The transaction timeout.
    pub timeout_ms: u64,
    /// The state.
    pub state: TransactionState,
    /// Partitions of the open transaction.
    pub partitions: BTreeSet<TopicPartition>,
    /// When the open transaction started (ms), or -1.
    pub start_ms: i64,
    /// The last state change (ms).
    pub last_update_ms: i64,
}

/// The transaction coordinator of a broker.
pub struct TransactionCoordinator {
    topic: Arc<Topic>,
    config: TransactionConfig,
    /// One lock per transactional id: its operations are serialised, others run alongside.
    transactions: Mutex<HashMap<String, Arc<Mutex<TransactionMetadata>>>>,
    timer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for TransactionCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionCoordinator").finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl TransactionCoordinator {
    /// Loads every transactional id's last state from `__transaction_state`.
    pub(crate) fn load(topic: Arc<Topic>, config: TransactionConfig) -> Result<Self> {
        let mut transactions = HashMap::new();
        let mut scratch = Vec::new();
        for log in topic.partitions() {
            let mut offset = log.log_start_offset();
            loop {
                let data = log.read(offset, 1 << 20, FetchIsolation::HighWatermark)?;
                let Some(next) = data.next_offset else { break };
                for batch in BatchIter::new(&data.records) {
                    let batch = batch.map_err(|source| LogError::InvalidRecord {
                        tp: log.topic_partition().clone(),
                        source,
                    })?;
                    if batch.header().attributes.is_control() {
                        continue;
                    }
                    for record in batch.records(&mut scratch).map_err(|source| {
                        LogError::InvalidRecord { tp: log.topic_partition().clone(), source }
                    })? {
                        let record = record.map_err(|source| LogError::InvalidRecord {
                            tp: log.topic_partition().clone(),
                            source,
                        })?;
                        let Some(id) = record.key.and_then(records::decode_key) else {
                            tracing::warn!(partition = %log.topic_partition(), offset = record.offset, "skipping unreadable transaction log key");
                            continue;
                        };
                        match record.value {
                            None => {
                                transactions.remove(&id);
                            }
                            Some(value) => match records::decode_value(&id, value) {
                                Some(meta) => {
                                    transactions.insert(id, meta);
                                }
                                None => {
                                    tracing::warn!(partition = %log.topic_partition(), offset = record.offset, "skipping unreadable transaction log value")
                                }
                            },
                        }
                    }
                }
                offset = next;
            }
        }
        let transactions =
            transactions.into_iter().map(|(id, meta)| (id, Arc::new(Mutex::new(meta)))).collect();
        Ok(TransactionCoordinator {
            topic,
            config,
            transactions: Mutex::new(transactions),
            timer: Mutex::new(None),
        })
    }

    /// Finishes what a crash interrupted: commits transactions that reached `PrepareCommit` and
    /// aborts (fencing their producers) every other unfinished one. Blocking.
    pub(crate) fn recover(&self, broker: &Broker) -> Result<()> {
        let entries: Vec<_> = self.transactions.lock().values().cloned().collect();
        for entry in entries {
            let mut meta = entry.lock();
            match meta.state {
                TransactionState::PrepareCommit => {
                    tracing::info!(transactional_id = %meta.transactional_id, "completing a transaction that was prepared to commit before the restart");
                    self.complete(broker, &mut meta, true)?;
                }
                TransactionState::Ongoing
                | TransactionState::PrepareAbort
                | TransactionState::PrepareEpochFence => {
                    tracing::info!(transactional_id = %meta.transactional_id, state = meta.state.name(), "aborting a transaction left open by the restart");
                    self.fence_and_abort(broker, &mut meta)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Starts the timer that aborts transactions past their timeout.
    pub(crate) fn start(&self, broker: &Broker) {
        let weak = Arc::downgrade(&broker.inner);
        let interval = self.config.abort_check_interval;
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(inner) = weak.upgrade() else { return };
                let broker = Broker { inner };
                let result =
                    tokio::task::spawn_blocking(move || broker.inner.txns.abort_timed_out(&broker))
                        .await;
                if let Ok(Err(e)) = result {
                    tracing::error!(error = %e, "aborting timed-out transactions failed");
                }
            }
        });
        *self.timer.lock() = Some(task);
    }

    /// Stops the timer.
    pub(crate) fn shutdown(&self) {
        if let Some(task) = self.timer.lock().take() {
            task.abort();
        }
    }

    fn entry(&self, transactional_id: &str) -> Result<Arc<Mutex<TransactionMetadata>>> {
        self.transactions
            .lock()
            .get(transactional_id)
            .cloned()
            .ok_or_else(|| BrokerError::TransactionalIdNotFound(transactional_id.to_string()))
    }

    fn persist(&self, meta: &TransactionMetadata) -> Result<()> {
        let partition =
            crate::group::partition_for_key(&meta.transactional_id, self.topic.partition_count());
        let log = self.topic.partition(partition)?;
        let mut builder = RecordBatchBuilder::new(BatchOptions::default());
        builder.append(
            now_ms(),
            Some(&records::encode_key(&meta.transactional_id)),
            Some(&records::encode_value(meta)),
            &[],
        );
        let mut batch = builder.build().map_err(|source| LogError::InvalidRecord {
            tp: log.topic_partition().clone(),
            source,
        })?;
        log.append(&mut batch)?;
        Ok(())
    }

    fn check_epoch(meta: &TransactionMetadata, producer_id: i64, epoch: i16) -> Result<()> {
        if producer_id != meta.producer_id || epoch < meta.producer_epoch {
            return Err(BrokerError::ProducerFenced(meta.transactional_id.clone()));
        }
        if epoch > meta.producer_epoch {
            return Err(BrokerError::InvalidTxnState(format!(
                "epoch {epoch} is ahead of the coordinator's {} for `{}`",
                meta.producer_epoch, meta.transactional_id
            )));
        }
        Ok(())
    }

    /// Kafka's `InitProducerId` with a transactional id: a producer id and a new epoch that
    /// fences every older producer with this id. An open transaction of theirs is aborted.
    /// Blocking.
    pub fn init_producer_id(
        &self,
        broker: &Broker,
        transactional_id: &str,
        timeout: Duration,
    ) -> Result<(i64, i16)> {
        if transactional_id.is_empty() {
            return Err(BrokerError::InvalidConfig {
                name: "transactional.id",
                reason: "must not be empty".into(),
            });
        }
        if timeout > self.config.max_timeout || timeout.is_zero() {
            return Err(BrokerError::InvalidTransactionTimeout {
                timeout_ms: timeout.as_millis() as u64,
                max_ms: self.config.max_timeout.as_millis() as u64,
            });
        }
        let entry = {
            let mut map = self.transactions.lock();
            match map.get(transactional_id) {
                Some(entry) => entry.clone(),
                None => {
                    let meta = TransactionMetadata {
                        transactional_id: transactional_id.to_string(),
                        producer_id: broker.inner.producer_ids.next()?,
                        producer_epoch: -1,
                        timeout_ms: timeout.as_millis() as u64,
                        state: TransactionState::Empty,
                        partitions: BTreeSet::new(),
                        start_ms: -1,
                        last_update_ms: now_ms(),
                    };
                    let entry = Arc::new(Mutex::new(meta));
                    map.insert(transactional_id.to_string(), entry.clone());
                    entry
                }
            }
        };
        let mut meta = entry.lock();
        if meta.state.is_open() {
            self.fence_and_abort(broker, &mut meta)?;
        }
        if meta.producer_epoch >= i16::MAX - 1 {
            meta.producer_id = broker.inner.producer_ids.next()?;
            meta.producer_epoch = -1;
        }
        let mut next = meta.clone();
        next.producer_epoch += 1;
        next.timeout_ms = timeout.as_millis() as u64;
        next.state = TransactionState::Empty;
        next.partitions.clear();
        next.start_ms = -1;
        next.last_update_ms = now_ms();
        self.persist(&next)?;
        *meta = next;
        Ok((meta.producer_id, meta.producer_epoch))
    }

    /// Kafka's `AddPartitionsToTxn`: records partitions before the producer writes to them.
    /// Blocking.
    pub fn add_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[TopicPartition],
    ) -> Result<()> {
        let entry = self.entry(transactional_id)?;
        let mut meta = entry.lock();
        Self::check_epoch(&meta, producer_id, epoch)?;
        match meta.state {
            TransactionState::PrepareCommit
            | TransactionState::PrepareAbort
            | TransactionState::PrepareEpochFence => {
                return Err(BrokerError::ConcurrentTransactions(transactional_id.to_string()));
            }
            TransactionState::Dead => {
                return Err(BrokerError::TransactionalIdNotFound(transactional_id.to_string()));
            }
            _ => {}
        }
        if meta.state == TransactionState::Ongoing
            && partitions.iter().all(|tp| meta.partitions.contains(tp))
        {
            return Ok(());
        }
        let mut next = meta.clone();
        if next.state != TransactionState::Ongoing {
            next.state = TransactionState::Ongoing;
            next.partitions.clear();
            next.start_ms = now_ms();
        }
        next.partitions.extend(partitions.iter().cloned());
        next.last_update_ms = now_ms();
        self.persist(&next)?;
        *meta = next;
        Ok(())
    }

    /// Kafka's `AddOffsetsToTxn`: adds the group's `__consumer_offsets` partition to the
    /// transaction, so its offset commits complete with it. Blocking.
    pub fn add_offsets(
        &self,
        broker: &Broker,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        group_id: &str,
    ) -> Result<TopicPartition> {
        let partition = broker.inner.groups.partition_for(group_id);
        let tp = TopicPartition::new(CONSUMER_OFFSETS_TOPIC, partition);
        self.add_partitions(transactional_id, producer_id, epoch, std::slice::from_ref(&tp))?;
        Ok(tp)
    }

    /// Kafka's `EndTxn`: commits or aborts the producer's open transaction. Returns when the
    /// markers are written. Blocking.
    pub fn end_txn(
        &self,
        broker: &Broker,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<()> {
        let entry = self.entry(transactional_id)?;
        let mut meta = entry.lock();
        Self::check_epoch(&meta, producer_id, epoch)?;
        match (meta.state, commit) {
            (TransactionState::Ongoing, _) => {}
            // Nothing was sent: nothing to end.
            (
                TransactionState::Empty
                | TransactionState::CompleteCommit
                | TransactionState::CompleteAbort,
                _,
            ) => {
                return Ok(());
            }
            (state, _) => {
                return Err(BrokerError::InvalidTxnState(format!(
                    "cannot {} the transaction of `{transactional_id}` in state {}",
                    if commit { "commit" } else { "abort" },
                    state.name()
                )));
            }
        }
        let mut prepared = meta.clone();
        prepared.state =
            if commit { TransactionState::PrepareCommit } else { TransactionState::PrepareAbort };
        prepared.last_update_ms = now_ms();
        self.persist(&prepared)?;
        *meta = prepared;
        self.complete(broker, &mut meta, commit)
    }

    /// Writes the markers of a prepared transaction and its completion.
    fn complete(
        &self,
        broker: &Broker,
        meta: &mut TransactionMetadata,
        commit: bool,
    ) -> Result<()> {
        let kind = if commit { ControlRecordType::Commit } else { ControlRecordType::Abort };
        let marker = EndTxnMarker { kind, coordinator_epoch: 0 };
        for tp in &meta.partitions {
            let log = match broker.partition(tp) {
                Ok(log) => log,
                // A deleted topic has nothing left to mark.
                Err(BrokerError::Log(
                    LogError::UnknownTopic(_) | LogError::UnknownPartition { .. },
                )) => continue,
                Err(e) => return Err(e),
            };
            log.append_end_txn_marker(meta.producer_id, meta.producer_epoch, marker)?;
            if &*tp.topic == CONSUMER_OFFSETS_TOPIC {
                broker.inner.groups.complete_txn_offsets(meta.producer_id, commit);
            }
            broker.notify_append(&tp.topic);
        }
        let mut done = meta.clone();
        done.state =
            if commit { TransactionState::CompleteCommit } else { TransactionState::CompleteAbort };
        done.partitions.clear();
        done.start_ms = -1;
        done.last_update_ms = now_ms();
        self.persist(&done)?;
        *meta = done;
        metrics::counter!("fjord_transactions_total", "result" => if commit { "commit" } else { "abort" }).increment(1);
        Ok(())
    }

    /// Aborts the open transaction with a bumped epoch, so that its producer is fenced.
    fn fence_and_abort(&self, broker: &Broker, meta: &mut TransactionMetadata) -> Result<()> {
        let mut fenced = meta.clone();
        fenced.producer_epoch = fenced.producer_epoch.saturating_add(1);
        fenced.state = TransactionState::PrepareAbort;
        fenced.last_update_ms = now_ms();
        self.persist(&fenced)?;
        *meta = fenced;
        self.complete(broker, meta, false)
    }

    /// Aborts and fences every transaction open longer than its timeout. Blocking.
    pub(crate) fn abort_timed_out(&self, broker: &Broker) -> Result<usize> {
        let now = now_ms();
        let entries: Vec<_> = self.transactions.lock().values().cloned().collect();
        let mut aborted = 0;
        for entry in entries {
            let mut meta = entry.lock();
            if meta.state == TransactionState::Ongoing
                && meta.start_ms >= 0
                && now - meta.start_ms > meta.timeout_ms as i64
            {
                tracing::warn!(transactional_id = %meta.transactional_id, timeout_ms = meta.timeout_ms, "aborting a transaction past its timeout and fencing its producer");
                self.fence_and_abort(broker, &mut meta)?;
                aborted += 1;
            }
        }
        Ok(aborted)
    }

    /// Kafka's `ListTransactions`.
    pub fn list(&self) -> Vec<TransactionMetadata> {
        let entries: Vec<_> = self.transactions.lock().values().cloned().collect();
        let mut out: Vec<TransactionMetadata> = entries.iter().map(|e| e.lock().clone()).collect();
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        out
    }

    /// Kafka's `DescribeTransactions`.
    pub fn describe(&self, transactional_id: &str) -> Result<TransactionMetadata> {
        Ok(self.entry(transactional_id)?.lock().clone())
    }
}
