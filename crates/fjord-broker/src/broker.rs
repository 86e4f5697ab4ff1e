//! The broker: Kafka's request semantics over the log, inside one process.
//!
//! A [`Broker`] owns the data directory's [`LogManager`], the group coordinator and the
//! producer id allocator, and offers the operations Kafka's requests stand for: produce,
//! fetch, list offsets, metadata. The in-process clients ([`crate::Producer`],
//! [`crate::Consumer`], [`crate::Admin`]) are built on these.
//!
//! The log is synchronous. Appends come from producers' sender threads (never from async
//! tasks); fetches run on tokio's blocking pool. A per-topic watch counter, bumped after every
//! append, wakes long-polling consumers the moment data arrives.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use fjord_log::topic::{CONSUMER_OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC};
use fjord_log::{
    AppendInfo, FetchData, FetchIsolation, LogError, LogManager, LogManagerConfig, PartitionLog,
    Topic, TopicPartition,
};
use parking_lot::RwLock;
use tokio::sync::watch;

use crate::error::{BrokerError, Result};
use crate::group::{GroupConfig, GroupCoordinator};
use crate::pid::ProducerIdManager;
use crate::txn::{TransactionConfig, TransactionCoordinator};

/// Settings of a [`Broker`], with Kafka's broker config names in the docs.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// The data directory (`log.dirs`).
    pub data_dir: PathBuf,
    /// Log settings, including the defaults for topic configs.
    pub log: LogManagerConfig,
    /// Create a topic on first produce or metadata request for it
    /// (`auto.create.topics.enable`; off by default in Fjord).
    pub auto_create_topics_enable: bool,
    /// Partitions of an auto-created topic (`num.partitions`, 1).
    pub num_partitions: u32,
    /// Partitions of `__consumer_offsets` (`offsets.topic.num.partitions`, 50).
    pub offsets_topic_num_partitions: u32,
    /// Partitions of `__transaction_state` (`transaction.state.log.num.partitions`, 50).
    pub transaction_state_log_num_partitions: u32,
    /// Consumer group settings.
    pub group: GroupConfig,
    /// Transaction coordinator settings.
    pub transaction: TransactionConfig,
}

impl BrokerConfig {
    /// Defaults for a broker on `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        BrokerConfig {
            data_dir: data_dir.into(),
            log: LogManagerConfig::default(),
            auto_create_topics_enable: false,
            num_partitions: 1,
            offsets_topic_num_partitions: 50,
            transaction_state_log_num_partitions: 50,
            group: GroupConfig::default(),
            transaction: TransactionConfig::default(),
        }
    }
}

/// What `ListOffsets` is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The log end offset (high watermark).
    Latest,
    /// The last stable offset (what a `read_committed` consumer sees as the end).
    LatestCommitted,
    /// The offset of the record with the largest timestamp (KIP-734).
    MaxTimestamp,
    /// The first offset whose timestamp is at or after this one.
    Timestamp(i64),
}

/// An answer to `ListOffsets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    /// The offset; for a timestamp with no record at or after it, the log end offset (as Kafka
    /// answers, with timestamp -1).
    pub offset: i64,
    /// The record's timestamp, or -1.
    pub timestamp: i64,
}

pub(crate) struct BrokerInner {
    pub(crate) logs: LogManager,
    pub(crate) config: BrokerConfig,
    topic_watches: RwLock<HashMap<Arc<str>, watch::Sender<u64>>>,
    pub(crate) producer_ids: ProducerIdManager,
    pub(crate) groups: GroupCoordinator,
    pub(crate) txns: TransactionCoordinator,
}

/// A Kafka broker in this process. Cheap to clone; all clones share one broker.
#[derive(Clone)]
pub struct Broker {
    pub(crate) inner: Arc<BrokerInner>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("data_dir", &self.inner.config.data_dir).finish()
    }
}

impl Broker {
    /// Opens the broker on its data directory: recovers the log, creates the internal topics
    /// if needed, loads group offsets, and starts the coordinators' timers. Must be called
    /// inside a tokio runtime.
    pub async fn open(config: BrokerConfig) -> Result<Broker> {
        let (logs, reports) = {
            let dir = config.data_dir.clone();
            let log_config = config.log.clone();
            tokio::task::spawn_blocking(move || LogManager::open(dir, log_config))
                .await
                .map_err(|e| BrokerError::IllegalState(format!("log open task failed: {e}")))??
        };
        for report in &reports {
            tracing::warn!(?report, "partition needed repairs on open");
        }
        let compacted = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
        let offsets_topic = internal_topic(
            &logs,
            CONSUMER_OFFSETS_TOPIC,
            config.offsets_topic_num_partitions,
            &compacted,
        )?;
        let txn_topic = internal_topic(
            &logs,
            TRANSACTION_STATE_TOPIC,
            config.transaction_state_log_num_partitions,
            &compacted,
        )?;
        let producer_ids = ProducerIdManager::open(&config.data_dir)?;
        let groups = GroupCoordinator::load(offsets_topic, config.group.clone())?;
        let txns = TransactionCoordinator::load(txn_topic, config.transaction.clone())?;
        let inner = Arc::new(BrokerInner {
            logs,
            config,
            topic_watches: RwLock::new(HashMap::new()),
            producer_ids,
            groups,
            txns,
        });
        inner.groups.start();
        let broker = Broker { inner };
        // Finish or abort the transactions a crash left open before anyone reads.
        let recovering = broker.clone();
        tokio::task::spawn_blocking(move || recovering.inner.txns.recover(&recovering))
            .await
            .map_err(|e| {
                BrokerError::IllegalState(format!("transaction recovery task failed: {e}"))
            })??;
        broker.inner.txns.start(&broker);
        Ok(broker)
    }

    /// The log.
    pub fn logs(&self) -> &LogManager {
        &self.inner.logs
    }

    /// The broker's settings.
    pub fn config(&self) -> &BrokerConfig {
        &self.inner.config
    }

    /// The group coordinator.
    pub fn group_coordinator(&self) -> &GroupCoordinator {
        &self.inner.groups
    }

    /// The transaction coordinator.
    pub fn transaction_coordinator(&self) -> &TransactionCoordinator {
        &self.inner.txns
    }

    /// A topic, created first if it does not exist and `auto.create.topics.enable` is on.
    pub fn topic_or_create(&self, name: &str) -> Result<Arc<Topic>> {
        match self.inner.logs.topic(name) {
            Ok(topic) => Ok(topic),
            Err(LogError::UnknownTopic(_)) if self.inner.config.auto_create_topics_enable => {
                match self.inner.logs.create_topic(
                    name,
                    self.inner.config.num_partitions,
                    BTreeMap::new(),
                ) {
                    Ok(topic) => Ok(topic),
                    // Another client created it meanwhile.
                    Err(LogError::TopicExists(_)) => Ok(self.inner.logs.topic(name)?),
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Number of partitions of a topic (Kafka's `Metadata`).
    pub fn partition_count(&self, topic: &str) -> Result<u32> {
        Ok(self.topic_or_create(topic)?.partition_count())
    }

    /// One partition's log.
    pub fn partition(&self, tp: &TopicPartition) -> Result<Arc<PartitionLog>> {
        Ok(self.topic_or_create(&tp.topic)?.partition(tp.partition)?)
    }

    /// Appends a producer's batch to a partition, blocking the calling thread for the write
    /// (and the fsync under `flush.messages=1`). Producers call this from their sender thread;
    /// async callers use [`Self::produce`]. Wakes consumers waiting on the topic.
    pub fn produce_blocking(&self, tp: &TopicPartition, batch: &mut Vec<u8>) -> Result<AppendInfo> {
        let log = self.partition(tp)?;
        let info = log.append(batch)?;
        self.notify_append(&tp.topic);
        Ok(info)
    }

    /// Appends a batch from async code, on tokio's blocking pool.
    pub async fn produce(&self, tp: TopicPartition, mut batch: Vec<u8>) -> Result<AppendInfo> {
        let broker = self.clone();
        tokio::task::spawn_blocking(move || broker.produce_blocking(&tp, &mut batch))
            .await
            .map_err(|e| BrokerError::IllegalState(format!("produce task failed: {e}")))?
    }

    /// Reads whole batches from a partition (Kafka's `Fetch` for one partition), on tokio's
    /// blocking pool. Returns at once, empty if there is nothing at `offset` yet: wait for data
    /// with [`Self::topic_watch`].
    pub async fn fetch(
        &self,
        tp: &TopicPartition,
        offset: i64,
        max_bytes: usize,
        isolation: FetchIsolation,
    ) -> Result<FetchData> {
        let log = self.partition(tp)?;
        tokio::task::spawn_blocking(move || log.read(offset, max_bytes, isolation))
            .await
            .map_err(|e| BrokerError::IllegalState(format!("fetch task failed: {e}")))?
            .map_err(Into::into)
    }

    /// A receiver whose value changes after every append to `topic` (data or transaction
    /// markers): long-polling consumers wait on it instead of sleeping.
    pub fn topic_watch(&self, topic: &str) -> watch::Receiver<u64> {
        if let Some(sender) = self.inner.topic_watches.read().get(topic) {
            return sender.subscribe();
        }
        let mut watches = self.inner.topic_watches.write();
        watches.entry(Arc::from(topic)).or_insert_with(|| watch::channel(0).0).subscribe()
    }

    /// Wakes the consumers waiting on `topic`.
    pub fn notify_append(&self, topic: &str) {
        if let Some(sender) = self.inner.topic_watches.read().get(topic) {
            sender.send_modify(|version| *version = version.wrapping_add(1));
        }
    }

    /// Kafka's `ListOffsets` for one partition.
    pub fn list_offset(&self, tp: &TopicPartition, spec: OffsetSpec) -> Result<ListedOffset> {
        let log = self.partition(tp)?;
        Ok(match spec {
            OffsetSpec::Earliest => ListedOffset { offset: log.log_start_offset(), timestamp: -1 },
            OffsetSpec::Latest => ListedOffset { offset: log.high_watermark(), timestamp: -1 },
            OffsetSpec::LatestCommitted => {
                ListedOffset { offset: log.last_stable_offset(), timestamp: -1 }
            }
            OffsetSpec::MaxTimestamp => {
                log.max_timestamp_offset().map_or(ListedOffset { offset: -1, timestamp: -1 }, |t| {
                    ListedOffset { offset: t.offset, timestamp: t.timestamp }
                })
            }
            OffsetSpec::Timestamp(ts) => match log.offset_for_timestamp(ts)? {
                Some(t) => ListedOffset { offset: t.offset, timestamp: t.timestamp },
                None => ListedOffset { offset: log.high_watermark(), timestamp: -1 },
            },
        })
    }

    /// Allocates a producer id for an idempotent producer (Kafka's `InitProducerId` without a
    /// transactional id): a fresh id at epoch 0.
    pub fn init_producer_id(&self) -> Result<(i64, i16)> {
        Ok((self.inner.producer_ids.next()?, 0))
    }

    /// Stops the coordinators and closes the log, flushing every partition.
    pub async fn shutdown(&self) -> Result<()> {
        self.inner.txns.shutdown();
        self.inner.groups.shutdown().await;
        let broker = self.clone();
        tokio::task::spawn_blocking(move || broker.inner.logs.close())
            .await
            .map_err(|e| BrokerError::IllegalState(format!("close task failed: {e}")))??;
        Ok(())
    }
}

fn internal_topic(
    logs: &LogManager,
    name: &str,
    partitions: u32,
    configs: &BTreeMap<String, String>,
) -> Result<Arc<Topic>> {
    match logs.topic(name) {
        Ok(topic) => Ok(topic),
        Err(LogError::UnknownTopic(_)) => {
            Ok(logs.create_internal_topic(name, partitions, configs.clone())?)
        }
        Err(e) => Err(e.into()),
    }
}
