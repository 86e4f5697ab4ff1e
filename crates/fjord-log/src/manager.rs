//! The data directory: topics, their partitions, and the background work that keeps them in
//! shape (Kafka's `LogManager`).
//!
//! Layout:
//! ```text
//! <data dir>/
//!   .lock                      held (flock) while a LogManager has the directory open
//!   meta/topics/<topic>.json   a topic's id, partition count and config overrides
//!   <topic>-<partition>/       one directory per partition (see PartitionLog)
//! ```
//! The metadata file is the commit point of topic creation and deletion: partition directories
//! are created before it is written and deleted after it is removed, and directories without
//! metadata are removed on open.
//!
//! A background thread flushes partitions whose `flush.ms` is due and segments that were rolled,
//! applies retention, runs the log cleaner on compacted topics and writes checkpoints. Every
//! piece of that work is also a public method, so tests drive it directly with a manual clock.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::TopicPartition;
use crate::checkpoint::{sync_dir, write_atomically};
use crate::clock::{SharedClock, SystemClock};
use crate::config::{ConfigEntry, TopicConfig};
use crate::error::{LogError, Result};
use crate::log::{CleanResult, CleanerConfig, PartitionLog, RecoveryReport, RetentionResult};
use crate::topic::{is_internal, topic_names_collide, validate_topic_name};

/// Settings of a [`LogManager`] (Kafka's broker-level `log.*` settings).
#[derive(Debug, Clone)]
pub struct LogManagerConfig {
    /// Defaults for every topic's config; a topic's overrides apply on top.
    pub topic_defaults: TopicConfig,
    /// Run the background thread (flushes, retention, compaction, checkpoints).
    pub background: bool,
    /// How often the background thread looks for due flushes.
    pub flush_check_interval: Duration,
    /// How often retention runs (`log.retention.check.interval.ms`, 5 minutes).
    pub retention_check_interval: Duration,
    /// How often the cleaner looks for work (`log.cleaner.backoff.ms`, 15 seconds).
    pub cleaner_interval: Duration,
    /// How often recovery points are checkpointed (`log.flush.offset.checkpoint.interval.ms`,
    /// 1 minute).
    pub checkpoint_interval: Duration,
    /// Idle producers are forgotten after this long (`producer.id.expiration.ms`, 1 day).
    pub producer_id_expiration_ms: i64,
    /// Log cleaner settings.
    pub cleaner: CleanerConfig,
    /// The clock.
    pub clock: SharedClock,
}

impl Default for LogManagerConfig {
    fn default() -> Self {
        LogManagerConfig {
            topic_defaults: TopicConfig::default(),
            background: true,
            flush_check_interval: Duration::from_millis(20),
            retention_check_interval: Duration::from_secs(300),
            cleaner_interval: Duration::from_secs(15),
            checkpoint_interval: Duration::from_secs(60),
            producer_id_expiration_ms: 86_400_000,
            cleaner: CleanerConfig::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// Kafka's topic id: a random UUID fixed at creation, so that a re-created topic with the same
/// name is a different topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicId(pub u128);

impl TopicId {
    fn random() -> Self {
        TopicId(uuid::Uuid::new_v4().as_u128())
    }
}

impl std::fmt::Display for TopicId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        uuid::Uuid::from_u128(self.0).fmt(f)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct TopicMetadata {
    name: String,
    topic_id: String,
    partitions: u32,
    configs: BTreeMap<String, String>,
}

/// A topic and its partitions.
#[derive(Debug)]
pub struct Topic {
    name: Arc<str>,
    id: TopicId,
    partitions: RwLock<Vec<Arc<PartitionLog>>>,
    overrides: RwLock<BTreeMap<String, String>>,
    config: RwLock<Arc<TopicConfig>>,
}

impl Topic {
    /// The topic name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topic id.
    pub fn id(&self) -> TopicId {
        self.id
    }

    /// Number of partitions.
    pub fn partition_count(&self) -> u32 {
        self.partitions.read().len() as u32
    }

    /// One partition.
    pub fn partition(&self, partition: u32) -> Result<Arc<PartitionLog>> {
        let partitions = self.partitions.read();
        partitions.get(partition as usize).cloned().ok_or_else(|| LogError::UnknownPartition {
            topic: self.name.to_string(),
            partition,
            partitions: partitions.len() as u32,
        })
    }

    /// All partitions, by number.
    pub fn partitions(&self) -> Vec<Arc<PartitionLog>> {
        self.partitions.read().clone()
    }

    /// The config overrides set on the topic.
    pub fn overrides(&self) -> BTreeMap<String, String> {
        self.overrides.read().clone()
    }

    /// The effective config.
    pub fn config(&self) -> Arc<TopicConfig> {
        self.config.read().clone()
    }

    /// Every config with its effective value, marking which are overrides (Kafka's
    /// `DescribeConfigs`).
    pub fn describe_configs(&self) -> Vec<(ConfigEntry, bool)> {
        let overrides = self.overrides.read();
        self.config()
            .entries()
            .into_iter()
            .map(|e| {
                let overridden = overrides.contains_key(e.name);
                (e, overridden)
            })
            .collect()
    }

    fn metadata(&self) -> TopicMetadata {
        TopicMetadata {
            name: self.name.to_string(),
            topic_id: self.id.to_string(),
            partitions: self.partition_count(),
            configs: self.overrides(),
        }
    }
}

struct Inner {
    dir: PathBuf,
    _lock: File,
    config: LogManagerConfig,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serialises topic creation, deletion and changes.
    admin: Mutex<()>,
    shutdown: Mutex<bool>,
    wake: Condvar,
}

/// The log of one data directory.
pub struct LogManager {
    inner: Arc<Inner>,
    background: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for LogManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogManager").field("dir", &self.inner.dir).finish()
    }
}

fn topics_dir(dir: &Path) -> PathBuf {
    dir.join("meta").join("topics")
}

impl LogManager {
    /// Opens (creating if needed) a data directory, taking its lock and recovering every
    /// partition. Returns the recovery reports of partitions that needed repairs.
    pub fn open(
        dir: impl AsRef<Path>,
        config: LogManagerConfig,
    ) -> Result<(LogManager, Vec<RecoveryReport>)> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(topics_dir(&dir))
            .map_err(|e| LogError::io("create data directory", &dir, e))?;
        let lock_path = dir.join(".lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| LogError::io("open lock file", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LogError::DirectoryLocked { dir });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(LogError::io("lock", &lock_path, e));
            }
        }
        let inner = Arc::new(Inner {
            dir: dir.clone(),
            _lock: lock,
            config,
            topics: RwLock::new(BTreeMap::new()),
            admin: Mutex::new(()),
            shutdown: Mutex::new(false),
            wake: Condvar::new(),
        });
        let reports = Self::load_topics(&inner)?;
        let manager = LogManager { inner, background: Mutex::new(None) };
        if manager.inner.config.background {
            let inner = manager.inner.clone();
            let handle = std::thread::Builder::new()
                .name("fjord-log-maintenance".into())
                .spawn(move || background_loop(&inner))
                .map_err(|e| LogError::io("start background thread", &dir, e))?;
            *manager.background.lock() = Some(handle);
        }
        Ok((manager, reports))
    }

    fn load_topics(inner: &Inner) -> Result<Vec<RecoveryReport>> {
        let meta_dir = topics_dir(&inner.dir);
        let mut reports = Vec::new();
        let mut topics = BTreeMap::new();
        for entry in std::fs::read_dir(&meta_dir).map_err(|e| LogError::io("list", &meta_dir, e))? {
            let entry = entry.map_err(|e| LogError::io("list", &meta_dir, e))?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                if path.extension().and_then(|e| e.to_str()) == Some("tmp") {
                    std::fs::remove_file(&path)
                        .map_err(|e| LogError::io("remove leftover", &path, e))?;
                }
                continue;
            }
            let bad = |reason: String| LogError::BadMetadata { path: path.clone(), reason };
            let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
            let meta: TopicMetadata =
                serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
            let id = uuid::Uuid::parse_str(&meta.topic_id).map_err(|e| bad(e.to_string()))?;
            let config = Arc::new(
                TopicConfig::from_overrides(&inner.config.topic_defaults, &meta.configs)
                    .map_err(|e| bad(e.to_string()))?,
            );
            let mut partitions = Vec::with_capacity(meta.partitions as usize);
            for p in 0..meta.partitions {
                let tp = TopicPartition::new(meta.name.as_str(), p);
                let pdir = inner.dir.join(tp.dir_name());
                if !pdir.exists() {
                    tracing::warn!(partition = %tp, "partition directory is missing: starting it empty");
                    std::fs::create_dir_all(&pdir).map_err(|e| LogError::io("create", &pdir, e))?;
                }
                let (log, report) =
                    PartitionLog::open(&pdir, tp, config.clone(), inner.config.clock.clone())?;
                if !report.truncations.is_empty()
                    || !report.corruptions.is_empty()
                    || !report.indexes_rebuilt.is_empty()
                {
                    reports.push(report);
                }
                partitions.push(Arc::new(log));
            }
            let topic = Topic {
                name: meta.name.as_str().into(),
                id: TopicId(id.as_u128()),
                partitions: RwLock::new(partitions),
                overrides: RwLock::new(meta.configs),
                config: RwLock::new(config),
            };
            topics.insert(meta.name, Arc::new(topic));
        }
        // Partition directories without a topic: a creation or deletion interrupted by a crash.
        for entry in
            std::fs::read_dir(&inner.dir).map_err(|e| LogError::io("list", &inner.dir, e))?
        {
            let entry = entry.map_err(|e| LogError::io("list", &inner.dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some((topic, partition)) = name.rsplit_once('-') else { continue };
            let Ok(partition) = partition.parse::<u32>() else { continue };
            if validate_topic_name(topic).is_err() || !entry.path().is_dir() {
                continue;
            }
            let known = topics.get(topic).is_some_and(|t| partition < t.partition_count());
            if !known {
                tracing::warn!(dir = %entry.path().display(), "removing partition directory of a topic that does not exist (interrupted create or delete)");
                std::fs::remove_dir_all(entry.path())
                    .map_err(|e| LogError::io("remove", entry.path(), e))?;
            }
        }
        *inner.topics.write() = topics;
        Ok(reports)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The manager's settings.
    pub fn config(&self) -> &LogManagerConfig {
        &self.inner.config
    }

    /// Creates a topic with `partitions` partitions and config `overrides` (validated with
    /// Kafka's names and rules). Internal topics (`__consumer_offsets`, ...) can only be created
    /// with `allow_internal`.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        overrides: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>> {
        if is_internal(name) {
            return Err(LogError::InvalidPartitions {
                topic: name.to_string(),
                reason: "internal topics are created by the broker, not by clients".into(),
            });
        }
        self.create_topic_inner(name, partitions, overrides)
    }

    /// Creates an internal topic (for the broker's coordinators).
    pub fn create_internal_topic(
        &self,
        name: &str,
        partitions: u32,
        overrides: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>> {
        self.create_topic_inner(name, partitions, overrides)
    }

    fn create_topic_inner(
        &self,
        name: &str,
        partitions: u32,
        overrides: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>> {
        validate_topic_name(name)?;
        if partitions == 0 {
            return Err(LogError::InvalidPartitions {
                topic: name.to_string(),
                reason: "a topic needs at least one partition".into(),
            });
        }
        let config =
            Arc::new(TopicConfig::from_overrides(&self.inner.config.topic_defaults, &overrides)?);
        let _admin = self.inner.admin.lock();
        {
            let topics = self.inner.topics.read();
            if topics.contains_key(name) {
                return Err(LogError::TopicExists(name.to_string()));
            }
            if let Some(existing) = topics.keys().find(|t| topic_names_collide(t, name)) {
                return Err(LogError::TopicCollision {
                    name: name.to_string(),
                    existing: existing.clone(),
                });
            }
        }
        let mut logs = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            logs.push(Arc::new(self.create_partition(name, p, config.clone())?));
        }
        let topic = Arc::new(Topic {
            name: name.into(),
            id: TopicId::random(),
            partitions: RwLock::new(logs),
            overrides: RwLock::new(overrides),
            config: RwLock::new(config),
        });
        self.write_metadata(&topic)?;
        self.inner.topics.write().insert(name.to_string(), topic.clone());
        tracing::info!(topic = name, partitions, id = %topic.id, "created topic");
        Ok(topic)
    }

    fn create_partition(
        &self,
        topic: &str,
        partition: u32,
        config: Arc<TopicConfig>,
    ) -> Result<PartitionLog> {
        let tp = TopicPartition::new(topic, partition);
        let pdir = self.inner.dir.join(tp.dir_name());
        if pdir.exists() {
            // Left by an interrupted operation; the topic does not exist, so neither does its data.
            std::fs::remove_dir_all(&pdir).map_err(|e| LogError::io("remove", &pdir, e))?;
        }
        PartitionLog::create(&pdir, tp, config, self.inner.config.clock.clone())
    }

    fn write_metadata(&self, topic: &Topic) -> Result<()> {
        let path = topics_dir(&self.inner.dir).join(format!("{}.json", topic.name));
        let json = serde_json::to_vec_pretty(&topic.metadata())
            .map_err(|e| LogError::BadMetadata { path: path.clone(), reason: e.to_string() })?;
        write_atomically(&path, &json).map_err(|e| LogError::io("write topic metadata", &path, e))
    }

    /// Deletes a topic and its data.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        let _admin = self.inner.admin.lock();
        let topic = self
            .inner
            .topics
            .write()
            .remove(name)
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))?;
        let path = topics_dir(&self.inner.dir).join(format!("{name}.json"));
        std::fs::remove_file(&path).map_err(|e| LogError::io("remove topic metadata", &path, e))?;
        sync_dir(path.parent().unwrap_or(&self.inner.dir))
            .map_err(|e| LogError::io("fsync directory", &path, e))?;
        for log in topic.partitions() {
            log.close()?;
            log.delete_dir()?;
        }
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Raises a topic's partition count (Kafka's `CreatePartitions`); it can only grow.
    pub fn add_partitions(&self, name: &str, total: u32) -> Result<()> {
        let _admin = self.inner.admin.lock();
        let topic = self.topic(name)?;
        let current = topic.partition_count();
        if total <= current {
            return Err(LogError::InvalidPartitions {
                topic: name.to_string(),
                reason: format!(
                    "the topic has {current} partitions; the count can only grow, so ask for more than {current}"
                ),
            });
        }
        let config = topic.config();
        let mut added = Vec::new();
        for p in current..total {
            added.push(Arc::new(self.create_partition(name, p, config.clone())?));
        }
        topic.partitions.write().extend(added);
        self.write_metadata(&topic)
    }

    /// Replaces a topic's config overrides (validated first; nothing changes on error).
    pub fn set_topic_config(&self, name: &str, overrides: BTreeMap<String, String>) -> Result<()> {
        let _admin = self.inner.admin.lock();
        let topic = self.topic(name)?;
        let config =
            Arc::new(TopicConfig::from_overrides(&self.inner.config.topic_defaults, &overrides)?);
        *topic.overrides.write() = overrides;
        *topic.config.write() = config.clone();
        for log in topic.partitions() {
            log.set_config(config.clone());
        }
        self.write_metadata(&topic)
    }

    /// A topic.
    pub fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.inner
            .topics
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))
    }

    /// All topics, by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.inner.topics.read().values().cloned().collect()
    }

    /// One partition's log.
    pub fn partition(&self, tp: &TopicPartition) -> Result<Arc<PartitionLog>> {
        self.topic(&tp.topic)?.partition(tp.partition)
    }

    /// Flushes every partition.
    pub fn flush_all(&self) -> Result<()> {
        for log in self.all_partitions() {
            log.flush()?;
        }
        Ok(())
    }

    fn all_partitions(&self) -> Vec<Arc<PartitionLog>> {
        self.topics().iter().flat_map(|t| t.partitions()).collect()
    }

    /// Applies retention to every partition.
    pub fn enforce_retention(&self) -> Result<Vec<(TopicPartition, RetentionResult)>> {
        let mut out = Vec::new();
        for log in self.all_partitions() {
            let result = log.enforce_retention()?;
            log.expire_producers(self.inner.config.producer_id_expiration_ms);
            if result.segments_deleted > 0 {
                out.push((log.topic_partition().clone(), result));
            }
        }
        Ok(out)
    }

    /// Compacts every partition that needs it.
    pub fn run_cleaner(&self) -> Result<Vec<(TopicPartition, CleanResult)>> {
        let mut out = Vec::new();
        for log in self.all_partitions() {
            if log.needs_compaction()
                && let Some(result) = log.compact(&self.inner.config.cleaner)?
            {
                out.push((log.topic_partition().clone(), result));
            }
        }
        Ok(out)
    }

    /// Stops the background thread and closes every partition (flushing it). Idempotent.
    pub fn close(&self) -> Result<()> {
        *self.inner.shutdown.lock() = true;
        self.inner.wake.notify_all();
        if let Some(handle) = self.background.lock().take() {
            let _ = handle.join();
        }
        for log in self.all_partitions() {
            log.close()?;
        }
        Ok(())
    }
}

impl Drop for LogManager {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "closing the log failed");
        }
    }
}

fn background_loop(inner: &Inner) {
    let started = std::time::Instant::now();
    let mut last_retention = started;
    let mut last_cleaner = started;
    let mut last_checkpoint = started;
    let manager_view = |f: &mut dyn FnMut(&Arc<PartitionLog>)| {
        let partitions: Vec<_> =
            inner.topics.read().values().flat_map(|t| t.partitions()).collect();
        for log in &partitions {
            f(log);
        }
    };
    loop {
        {
            let mut shutdown = inner.shutdown.lock();
            if *shutdown {
                return;
            }
            inner.wake.wait_for(&mut shutdown, inner.config.flush_check_interval);
            if *shutdown {
                return;
            }
        }
        manager_view(&mut |log| {
            if let Err(e) = log.flush_if_due() {
                tracing::error!(partition = %log.topic_partition(), error = %e, "background flush failed");
            }
            // Idle partitions bind their metrics to a recorder installed after they opened.
            log.refresh_metrics();
        });
        let now = std::time::Instant::now();
        if now - last_retention >= inner.config.retention_check_interval {
            last_retention = now;
            manager_view(&mut |log| {
                if let Err(e) = log.enforce_retention() {
                    tracing::error!(partition = %log.topic_partition(), error = %e, "retention failed");
                }
                log.expire_producers(inner.config.producer_id_expiration_ms);
            });
        }
        if now - last_cleaner >= inner.config.cleaner_interval {
            last_cleaner = now;
            manager_view(&mut |log| {
                if log.needs_compaction()
                    && let Err(e) = log.compact(&inner.config.cleaner)
                {
                    tracing::error!(partition = %log.topic_partition(), error = %e, "compaction failed");
                }
            });
        }
        if now - last_checkpoint >= inner.config.checkpoint_interval {
            last_checkpoint = now;
            manager_view(&mut |log| {
                if let Err(e) = log.write_checkpoint_if_changed() {
                    tracing::error!(partition = %log.topic_partition(), error = %e, "checkpoint failed");
                }
            });
        }
    }
}
