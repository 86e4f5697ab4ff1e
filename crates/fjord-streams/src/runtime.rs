//! The runtime (Kafka's `KafkaStreams`): stream threads that join the application's consumer
//! group, turn their assigned partitions into tasks, process records, punctuate and commit.
//!
//! Each stream thread is an OS thread with its own single-threaded tokio runtime: processing
//! is CPU work and never runs on the application's async runtime, and a thread's tasks and
//! processors never move between threads.
//!
//! At-least-once: every `commit_interval` (and before a rebalance and at shutdown) a thread
//! flushes its producer and then commits the offsets its tasks consumed, so an output is
//! written before the input that caused it is marked done.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fjord_log::TopicPartition;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::TaskId;
use crate::backend::{
    Backend, ConsumerSpec, ProducerSpec, StreamConsumer, StreamProducer, TopicSpec,
};
use crate::error::{ErrorAction, StreamsError};
use crate::graph::InternalTopicKind;
use crate::node::{CollectorRef, ErrorPolicy, RecordCollector};
use crate::record::Headers;
use crate::task::Task;
use crate::topology::Topology;

/// The processing guarantee (`processing.guarantee`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessingGuarantee {
    /// Every input record is reflected at least once; a crash may repeat some.
    AtLeastOnce,
    /// Every input record is reflected exactly once in outputs and state (`exactly_once_v2`).
    ExactlyOnce,
}

/// Settings of a streams application, with Kafka Streams' names in the docs.
#[derive(Debug, Clone)]
pub struct StreamsConfig {
    /// `application.id`: the consumer group, the prefix of internal topics and transactional
    /// ids.
    pub application_id: String,
    /// `num.stream.threads` (1).
    pub num_stream_threads: usize,
    /// `commit.interval.ms` (30 s under at-least-once; 100 ms under exactly-once when left
    /// `None`).
    pub commit_interval: Option<Duration>,
    /// `processing.guarantee` (at-least-once).
    pub processing_guarantee: ProcessingGuarantee,
    /// `state.dir`: where state stores live.
    pub state_dir: std::path::PathBuf,
    /// `default.deserialization.exception.handler`.
    pub deserialization_errors: ErrorAction,
    /// `processing.exception.handler`.
    pub processing_errors: ErrorAction,
    /// How long a poll waits for records when nothing is buffered.
    pub poll_timeout: Duration,
    /// `max.poll.records` of the stream threads' consumers.
    pub max_poll_records: usize,
    /// `session.timeout.ms` of the stream threads' consumers (10 s): a thread that sends no
    /// heartbeat for this long (a stalled processor blocks its thread's heartbeats) leaves the
    /// group and its tasks move.
    pub session_timeout: Duration,
    /// `max.poll.interval.ms` (5 min): a thread that does not poll for this long leaves the
    /// group.
    pub max_poll_interval: Duration,
    /// `statestore.cache.max.bytes`: the record caches of all threads together (10 MiB).
    pub cache_max_bytes: usize,
    /// The memory of all RocksDB stores together: one shared block cache that memtables are
    /// charged to (64 MiB, half of it for memtables).
    pub rocksdb_memory: fjord_state::MemoryConfig,
    /// `application.server`: the `host:port` where this instance serves interactive queries
    /// (see [`crate::QueryServer`]). It is advertised to the other instances through the
    /// group protocol, so that [`Streams::query_metadata_for_key`] names the instance that
    /// holds any key. `None` (the default): this instance is not listed.
    pub application_server: Option<crate::HostInfo>,
    /// Where to serve metrics for Prometheus (HTTP, a fixed port), or `None` (the default):
    /// [`Streams::start`] installs the process's Prometheus exporter there
    /// ([`fjord_broker::metrics::install_prometheus_exporter`], `docs/metrics.md`). Instances
    /// of one process may name the same address; the first one installs it.
    pub metrics_endpoint: Option<std::net::SocketAddr>,
    /// `repartition.purge.interval.ms` (30 s): how often, after a commit, a stream thread
    /// deletes the records of repartition topics its tasks have consumed and committed, so
    /// that those topics (kept forever otherwise: `retention.ms=-1`) do not grow without
    /// bound.
    pub repartition_purge_interval: Duration,
}

impl StreamsConfig {
    /// Defaults for `application_id`.
    pub fn new(application_id: impl Into<String>) -> Self {
        let application_id = application_id.into();
        StreamsConfig {
            state_dir: std::env::temp_dir().join("fjord-streams").join(&application_id),
            application_id,
            num_stream_threads: 1,
            commit_interval: None,
            processing_guarantee: ProcessingGuarantee::AtLeastOnce,
            deserialization_errors: ErrorAction::Fail,
            processing_errors: ErrorAction::Fail,
            poll_timeout: Duration::from_millis(100),
            max_poll_records: 1000,
            session_timeout: Duration::from_secs(10),
            max_poll_interval: Duration::from_secs(300),
            cache_max_bytes: 10 * 1024 * 1024,
            rocksdb_memory: fjord_state::MemoryConfig::default(),
            application_server: None,
            metrics_endpoint: None,
            repartition_purge_interval: Duration::from_secs(30),
        }
    }

    /// The commit interval in force.
    pub fn effective_commit_interval(&self) -> Duration {
        self.commit_interval.unwrap_or(match self.processing_guarantee {
            ProcessingGuarantee::AtLeastOnce => Duration::from_secs(30),
            ProcessingGuarantee::ExactlyOnce => Duration::from_millis(100),
        })
    }
}

/// The state of an application, with Kafka Streams' names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamsState {
    /// Built, not started.
    Created,
    /// Threads are joining the group or taking over tasks: at the start, and whenever the
    /// group rebalances (an instance joins or leaves, a commit found the generation gone).
    Rebalancing,
    /// Processing; every thread has the tasks of the group's current assignment.
    Running,
    /// Closing.
    PendingShutdown,
    /// Closed.
    NotRunning,
    /// A thread failed; see [`Streams::error`].
    Error,
}

/// Called with the new state and the old one at each change (Kafka's `StateListener`).
type StateListener = Box<dyn Fn(StreamsState, StreamsState) + Send + Sync>;

/// What the threads of an application share.
pub(crate) struct Shared {
    pub(crate) config: StreamsConfig,
    pub(crate) topology: Topology,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) shutdown: AtomicBool,
    state: watch::Sender<StreamsState>,
    state_listener: std::sync::OnceLock<StateListener>,
    error: Mutex<Option<String>>,
    processed: AtomicU64,
    /// Changelog records replayed into stores, and records read into global stores while
    /// bootstrapping them.
    pub(crate) restored: AtomicU64,
    committed: AtomicU64,
    /// Commits that failed and were rolled back to the last committed state.
    failed_commits: AtomicU64,
    /// This instance's id, kept in the state directory across restarts: part of the
    /// transactional ids, so that a restarted instance fences its predecessor's transactions.
    process_id: String,
    /// Threads that have their assignment and are processing.
    running_threads: Mutex<BTreeSet<usize>>,
    /// The stream threads' and the global thread's poll wakers: closing ends their polls
    /// instead of waiting them out.
    wakers: Mutex<Vec<crate::backend::PollWaker>>,
    /// The stores' engines: opened per task (global stores by the global stream thread), and
    /// readable by interactive queries.
    pub(crate) stores: Arc<crate::state::StoreEngines>,
    /// Which instance runs which partitions, as the last rebalance told the stream threads.
    pub(crate) cluster: Arc<Mutex<crate::query::ClusterMetadata>>,
    /// The partition count of every topic the topology reads (internal ones by their
    /// unprefixed names), known once `start` created the internal topics.
    partition_counts: std::sync::OnceLock<BTreeMap<String, u32>>,
}

/// A running streams application (Kafka's `KafkaStreams`).
pub struct Streams {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("application_id", &self.shared.config.application_id)
            .finish()
    }
}

impl Streams {
    /// An application running `topology` on `backend`.
    pub fn new(
        topology: Topology,
        backend: Arc<dyn Backend>,
        config: StreamsConfig,
    ) -> Result<Self, StreamsError> {
        if config.application_id.is_empty() {
            return Err(StreamsError::Config {
                name: "application.id",
                reason: "must not be empty".into(),
            });
        }
        if config.num_stream_threads == 0 {
            return Err(StreamsError::Config {
                name: "num.stream.threads",
                reason: "must be at least 1".into(),
            });
        }
        let config_state_dir = config.state_dir.clone();
        let config_rocksdb_memory = config.rocksdb_memory;
        let process_id = process_id(&config_state_dir)?;
        Ok(Streams {
            shared: Arc::new(Shared {
                config,
                topology,
                backend,
                shutdown: AtomicBool::new(false),
                state: watch::channel(StreamsState::Created).0,
                state_listener: std::sync::OnceLock::new(),
                error: Mutex::new(None),
                processed: AtomicU64::new(0),
                restored: AtomicU64::new(0),
                committed: AtomicU64::new(0),
                failed_commits: AtomicU64::new(0),
                process_id,
                running_threads: Mutex::new(BTreeSet::new()),
                wakers: Mutex::new(Vec::new()),
                stores: Arc::new(crate::state::StoreEngines::new(
                    &config_state_dir,
                    config_rocksdb_memory,
                )),
                cluster: Arc::default(),
                partition_counts: std::sync::OnceLock::new(),
            }),
            threads: Vec::new(),
        })
    }

    /// Checks the source topics, creates the internal topics, bootstraps the global stores (if
    /// the topology has global tables), and starts the stream threads.
    pub async fn start(&mut self) -> Result<(), StreamsError> {
        if *self.shared.state.borrow() != StreamsState::Created {
            return Err(StreamsError::IllegalState("start() can only be called once".into()));
        }
        if let Some(addr) = self.shared.config.metrics_endpoint {
            install_metrics_exporter(addr)?;
        }
        self.create_internal_topics().await?;
        // For operators: `fjord app describe --state-dir` shows it.
        let description = self.shared.config.state_dir.join("topology.txt");
        std::fs::write(&description, self.shared.topology.describe()).map_err(|e| {
            StreamsError::IllegalState(format!("cannot write {}: {e}", description.display()))
        })?;
        self.shared.transition(StreamsState::Rebalancing);
        match crate::global_thread::start(&self.shared).await {
            Ok(Some(global)) => self.threads.push(global),
            Ok(None) => {}
            Err(e) => {
                *self.shared.error.lock() = Some(e.to_string());
                self.shared.transition(StreamsState::Error);
                return Err(e);
            }
        }
        for index in 0..self.shared.config.num_stream_threads {
            let shared = self.shared.clone();
            let name = format!("{}-StreamThread-{}", shared.config.application_id, index + 1);
            let handle = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || run_thread(shared, index, name))
                .map_err(|e| {
                    StreamsError::IllegalState(format!("cannot start a stream thread: {e}"))
                })?;
            self.threads.push(handle);
        }
        Ok(())
    }

    async fn create_internal_topics(&self) -> Result<(), StreamsError> {
        let shared = &self.shared;
        let topology = &shared.topology;
        let app = &shared.config.application_id;
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        for topic in topology.external_source_topics() {
            match shared.backend.partition_count(&topic).await? {
                Some(n) => {
                    counts.insert(topic, n);
                }
                None => {
                    return Err(StreamsError::Topology(format!(
                        "source topic `{topic}` does not exist: create it before starting the application"
                    )));
                }
            }
        }
        let internal = topology.internal_topics().to_vec();
        let external = counts.clone();
        resolve_internal_counts(topology, &mut counts, &BTreeMap::new());
        // A joining sub-topology reads co-partitioned topics: the same partition count, so
        // that partition n of each holds the same keys. Its repartition topics follow the
        // topics it reads from outside; those must already agree.
        let mut forced = BTreeMap::new();
        for sub in topology.subtopologies().iter().filter(|s| s.copartitioned) {
            let fixed: BTreeMap<&String, u32> = sub
                .source_topics
                .iter()
                .filter_map(|t| {
                    let explicit =
                        internal.iter().find(|i| &i.name == t).and_then(|i| i.partitions);
                    external.get(t).copied().or(explicit).map(|n| (t, n))
                })
                .collect();
            let distinct: BTreeSet<u32> = fixed.values().copied().collect();
            if distinct.len() > 1 {
                return Err(StreamsError::Topology(format!(
                    "sub-topology {} joins topics that are not co-partitioned: {}; give them the same number of partitions (or repartition one side)",
                    sub.id,
                    fixed
                        .iter()
                        .map(|(t, n)| format!("`{t}` has {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            let target = match distinct.first() {
                Some(&n) => n,
                None => sub
                    .source_topics
                    .iter()
                    .filter_map(|t| counts.get(t).copied())
                    .max()
                    .unwrap_or(1),
            };
            for t in &sub.source_topics {
                if !fixed.contains_key(t) {
                    forced.insert(t.clone(), target);
                }
            }
        }
        if !forced.is_empty() {
            counts = external;
            resolve_internal_counts(topology, &mut counts, &forced);
        }
        let mut specs = Vec::new();
        for topic in &internal {
            let partitions = *counts.get(&topic.name).ok_or_else(|| {
                StreamsError::Topology(format!(
                    "cannot work out the partition count of internal topic `{}`",
                    topic.name
                ))
            })?;
            let configs = match topic.kind {
                InternalTopicKind::Repartition => BTreeMap::from([
                    ("cleanup.policy".to_string(), "delete".to_string()),
                    ("retention.ms".to_string(), "-1".to_string()),
                ]),
                InternalTopicKind::Changelog => changelog_configs(topology, &topic.name),
            };
            specs.push(TopicSpec {
                name: topology.resolve_topic(app, &topic.name),
                partitions,
                configs,
            });
        }
        shared.backend.ensure_topics(&specs).await?;
        // `start` runs once, so the counts are set once.
        let _ = shared.partition_counts.set(counts);
        Ok(())
    }

    /// Sets the function told of every state change, with the new state and the old one
    /// (Kafka's `setStateListener`). It runs on the thread that made the change, so it should
    /// be quick. Only before [`Streams::start`], and once.
    pub fn set_state_listener(
        &self,
        listener: impl Fn(StreamsState, StreamsState) + Send + Sync + 'static,
    ) -> Result<(), StreamsError> {
        if self.state() != StreamsState::Created {
            return Err(StreamsError::IllegalState(
                "the state listener can only be set before start()".into(),
            ));
        }
        self.shared
            .state_listener
            .set(Box::new(listener))
            .map_err(|_| StreamsError::IllegalState("the state listener is already set".into()))
    }

    /// The application's state.
    pub fn state(&self) -> StreamsState {
        *self.shared.state.borrow()
    }

    /// Waits until the application reaches `state` (or fails), up to `timeout`.
    pub async fn wait_for_state(
        &self,
        state: StreamsState,
        timeout: Duration,
    ) -> Result<(), StreamsError> {
        let mut rx = self.shared.state.subscribe();
        let waited = tokio::time::timeout(
            timeout,
            rx.wait_for(|s| *s == state || *s == StreamsState::Error),
        )
        .await;
        match waited {
            Ok(Ok(s)) if *s == state => Ok(()),
            Ok(_) => Err(self.failure()),
            Err(_) => Err(StreamsError::IllegalState(format!(
                "the application did not reach {state:?} within {timeout:?}"
            ))),
        }
    }

    fn failure(&self) -> StreamsError {
        StreamsError::ThreadFailed {
            thread: self.shared.config.application_id.clone(),
            message: self.error().unwrap_or_else(|| "unknown".into()),
        }
    }

    /// The error that stopped a thread, if one did.
    pub fn error(&self) -> Option<String> {
        self.shared.error.lock().clone()
    }

    /// Records processed so far, over all threads.
    pub fn records_processed(&self) -> u64 {
        self.shared.processed.load(Ordering::Relaxed)
    }

    /// Changelog records replayed into state stores so far (on start and when tasks moved
    /// here), and records read into global stores while bootstrapping them: after a clean stop
    /// with local state kept, only what the local stores missed.
    pub fn records_restored(&self) -> u64 {
        self.shared.restored.load(Ordering::Relaxed)
    }

    /// The memory of this instance's RocksDB stores (block cache with the memtables charged to
    /// it) against `StreamsConfig::rocksdb_memory`.
    pub fn rocksdb_memory_usage(&self) -> fjord_state::MemoryUsage {
        self.shared.stores.rocksdb_usage()
    }

    /// Read-only access to a key-value store of this instance, for interactive queries: reads
    /// go to the stores of the tasks running here and see the state as of their last commit.
    /// A key of a task that runs on another instance is not found here
    /// ([`Streams::query_metadata_for_key`] names the instance that has it).
    pub fn key_value_store<K: 'static, V: 'static>(
        &self,
        name: &str,
        key_serde: crate::serdes::SerdeRef<K>,
        value_serde: crate::serdes::SerdeRef<V>,
    ) -> Result<crate::state::ReadOnlyKeyValueStore<K, V>, StreamsError> {
        self.shared.key_value_store(name, key_serde, value_serde)
    }

    /// Read-only access to the window store of a windowed aggregation of this instance, for
    /// interactive queries (`fetch` by key and time range), as of each task's last commit.
    pub fn window_store<K: 'static, V: 'static>(
        &self,
        name: &str,
        key_serde: crate::serdes::SerdeRef<K>,
        value_serde: crate::serdes::SerdeRef<V>,
    ) -> Result<crate::state::ReadOnlyWindowStore<K, V>, StreamsError> {
        self.shared.window_store(name, key_serde, value_serde)
    }

    /// Read-only access to the session store of a session-windowed aggregation of this
    /// instance, for interactive queries (`fetch` of a key's sessions), as of each task's last
    /// commit.
    pub fn session_store<K: 'static, V: 'static>(
        &self,
        name: &str,
        key_serde: crate::serdes::SerdeRef<K>,
        value_serde: crate::serdes::SerdeRef<V>,
    ) -> Result<crate::state::ReadOnlySessionStore<K, V>, StreamsError> {
        self.shared.session_store(name, key_serde, value_serde)
    }

    /// What the threads share, for the interactive query server.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Where the state of `key` in store `store` lives (Kafka's `queryMetadataForKey`): its
    /// partition, the instance that owns it as of the last rebalance, and whether a task here
    /// holds it now. `key_serde` must be the serde the store's input topic is keyed with: the
    /// partition is murmur2 of the serialized key, as the producer that wrote it computed.
    pub fn query_metadata_for_key<K: 'static>(
        &self,
        store: &str,
        key: &K,
        key_serde: &crate::serdes::SerdeRef<K>,
    ) -> Result<crate::KeyQueryMetadata, StreamsError> {
        let mut bytes = Vec::new();
        key_serde.serialize(key, &mut bytes).map_err(|e| StreamsError::State {
            store: store.to_string(),
            message: format!("cannot serialize the key: {e}"),
        })?;
        key_metadata(&self.shared, store, &bytes)
    }

    /// Every instance of the application with an `application.server`, with the partitions
    /// and stores it has as of the last rebalance (Kafka's `metadataForAllStreamsClients`).
    pub fn metadata_for_all_clients(&self) -> Vec<crate::StreamsMetadata> {
        all_metadata(&self.shared)
    }

    /// Commits done so far, over all threads.
    pub fn commits(&self) -> u64 {
        self.shared.committed.load(Ordering::Relaxed)
    }

    /// Commits that failed (a lost generation, a fenced producer, a timeout) and were rolled
    /// back: the transaction aborted, the tasks reopened from their last committed state.
    pub fn failed_commits(&self) -> u64 {
        self.shared.failed_commits.load(Ordering::Relaxed)
    }

    /// Stops the threads: each commits what it processed, closes its tasks and leaves the
    /// group. Returns the error that stopped a thread, if one did.
    pub async fn close(mut self) -> Result<(), StreamsError> {
        self.shared.transition(StreamsState::PendingShutdown);
        self.shared.begin_shutdown();
        let threads = std::mem::take(&mut self.threads);
        tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await
        .map_err(|e| StreamsError::IllegalState(format!("joining stream threads failed: {e}")))?;
        self.shared.stores.close_global();
        let failed = self.shared.error.lock().clone();
        self.shared.transition(if failed.is_some() {
            StreamsState::Error
        } else {
            StreamsState::NotRunning
        });
        match failed {
            Some(message) => Err(StreamsError::ThreadFailed {
                thread: self.shared.config.application_id.clone(),
                message,
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        self.shared.begin_shutdown();
    }
}

/// The collector of a thread's tasks: the thread's producer.
struct ProducerCollector {
    /// Taken out by the thread while it awaits the producer (flush, commit), so no borrow of
    /// the collector is held across an await.
    producer: Option<Box<dyn StreamProducer>>,
    /// Exactly-once: whether the current transaction has begun.
    in_transaction: bool,
    transactional: bool,
}

impl RecordCollector for ProducerCollector {
    fn send(
        &mut self,
        topic: &str,
        partition: Option<u32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &Headers,
        timestamp: i64,
    ) -> Result<(), StreamsError> {
        if self.transactional && !self.in_transaction {
            self.producer()?.begin_transaction()?;
            self.in_transaction = true;
        }
        self.producer()?.send(topic, partition, key, value, headers, timestamp)
    }

    fn partition_count(&mut self, topic: &str) -> Result<u32, StreamsError> {
        self.producer()?.partition_count(topic)
    }
}

impl ProducerCollector {
    fn producer(&mut self) -> Result<&mut Box<dyn StreamProducer>, StreamsError> {
        self.producer
            .as_mut()
            .ok_or_else(|| StreamsError::IllegalState("the thread's producer is in use".into()))
    }
}

fn run_thread(shared: Arc<Shared>, index: usize, name: String) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            fail(
                &shared,
                &name,
                StreamsError::IllegalState(format!("cannot start the thread's runtime: {e}")),
            );
            return;
        }
    };
    let result = runtime.block_on(StreamThread::run(shared.clone(), index, name.clone()));
    shared.running_threads.lock().remove(&index);
    if let Err(e) = result {
        fail(&shared, &name, e);
    }
}

pub(crate) fn fail(shared: &Shared, thread: &str, error: StreamsError) {
    tracing::error!(thread, error = %error, "stream thread failed");
    shared.error.lock().get_or_insert_with(|| format!("{thread}: {error}"));
    shared.transition(StreamsState::Error);
    // One failed thread stops the application: the others stop cleanly.
    shared.begin_shutdown();
}

struct StreamThread {
    shared: Arc<Shared>,
    index: usize,
    name: String,
    consumer: Box<dyn StreamConsumer>,
    restore_consumer: Box<dyn crate::backend::RestoreConsumer>,
    collector: Rc<RefCell<ProducerCollector>>,
    /// How the producer is made: again after a failed exactly-once commit.
    producer_spec: ProducerSpec,
    /// The topics the thread subscribes to.
    topics: Vec<String>,
    /// Commits that failed in a row; past [`MAX_FAILED_COMMITS`] the thread stops.
    failed_commits_in_a_row: u32,
    tasks: BTreeMap<TaskId, Task>,
    last_commit: Instant,
    /// The repartition topics (real names) and when their consumed records were last deleted.
    repartition_topics: BTreeSet<Arc<str>>,
    last_purge: Instant,
    /// Which sub-topology reads each topic, looked up once per topic.
    routes: std::collections::HashMap<Arc<str>, Option<u32>>,
}

impl StreamThread {
    async fn run(shared: Arc<Shared>, index: usize, name: String) -> Result<(), StreamsError> {
        let config = &shared.config;
        let app = config.application_id.clone();
        let exactly_once = config.processing_guarantee == ProcessingGuarantee::ExactlyOnce;
        let assignor = Arc::new(crate::query::StreamsAssignor::new(
            config.application_server.clone(),
            shared.cluster.clone(),
            index,
        ));
        let mut consumer = shared
            .backend
            .consumer(ConsumerSpec {
                group_id: app.clone(),
                client_id: format!("{name}-consumer"),
                read_committed: exactly_once,
                max_poll_records: config.max_poll_records,
                session_timeout: config.session_timeout,
                max_poll_interval: config.max_poll_interval,
                assignor: assignor.clone(),
                revocations: Arc::new(ThreadRevocations {
                    assignor,
                    shared: Arc::downgrade(&shared),
                    index,
                }),
            })
            .await?;
        let topics: Vec<String> = shared
            .topology
            .subtopologies()
            .iter()
            .flat_map(|s| s.source_topics.iter().map(|t| shared.topology.resolve_topic(&app, t)))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        consumer.subscribe(&topics)?;
        shared.add_waker(consumer.waker());
        // Kafka Streams' exactly-once v2 transactional id: one per thread of this instance.
        let producer_spec = ProducerSpec {
            client_id: format!("{name}-producer"),
            transactional_id: exactly_once
                .then(|| format!("{app}-{}-{}", shared.process_id, index + 1)),
        };
        let producer = new_producer(shared.backend.as_ref(), &producer_spec).await?;
        let collector = Rc::new(RefCell::new(ProducerCollector {
            producer: Some(producer),
            in_transaction: false,
            transactional: exactly_once,
        }));
        let restore_consumer = shared
            .backend
            .restore_consumer(format!("{name}-restore-consumer"), exactly_once)
            .await?;
        let mut thread = StreamThread {
            shared: shared.clone(),
            index,
            name,
            consumer,
            restore_consumer,
            collector,
            producer_spec,
            topics,
            failed_commits_in_a_row: 0,
            tasks: BTreeMap::new(),
            last_commit: Instant::now(),
            repartition_topics: shared
                .topology
                .internal_topics()
                .iter()
                .filter(|t| t.kind == InternalTopicKind::Repartition)
                .map(|t| Arc::from(shared.topology.resolve_topic(&app, &t.name)))
                .collect(),
            last_purge: Instant::now(),
            routes: std::collections::HashMap::new(),
        };
        let result = thread.run_loop().await;
        let closed = thread.shutdown(result.is_ok()).await;
        result.and(closed)
    }

    async fn run_loop(&mut self) -> Result<(), StreamsError> {
        let commit_interval = self.shared.config.effective_commit_interval();
        let app: Arc<str> = Arc::from(self.shared.config.application_id.as_str());
        loop {
            if self.shared.shutdown.load(Ordering::Acquire) {
                return Ok(());
            }
            if self.consumer.rebalance_pending() {
                self.set_running(false);
                if self.tasks.values().any(|t| t.dirty) {
                    self.commit().await?;
                }
            }
            let buffered = self.tasks.values().any(|t| t.buffered() > 0);
            let timeout = if buffered { Duration::ZERO } else { self.shared.config.poll_timeout };
            let records = self.consumer.poll(timeout).await?;
            self.reconcile_tasks(&app).await?;
            self.route(&app, records);
            // Process what is buffered, task by task, within a time budget so that polls (and
            // with them heartbeats and rebalances) keep happening.
            let started = Instant::now();
            let mut processed = 0u64;
            loop {
                let mut progress = 0;
                for task in self.tasks.values_mut() {
                    progress += task.process(1000)?;
                }
                processed += progress as u64;
                if progress == 0 || started.elapsed() > Duration::from_millis(100) {
                    break;
                }
            }
            self.shared.processed.fetch_add(processed, Ordering::Relaxed);
            if processed > 0 {
                metrics::counter!("fjord_streams_records_processed_total", "thread" => self.name.clone()).increment(processed);
            }
            let now = wall_clock_ms();
            for task in self.tasks.values_mut() {
                task.punctuate_wall_clock(now)?;
            }
            if self.last_commit.elapsed() >= commit_interval {
                self.commit().await?;
            }
        }
    }

    /// Hands fetched records to their tasks, a run of one partition at a time.
    fn route(&mut self, app: &Arc<str>, records: Vec<crate::node::RawRecord>) {
        let mut run: Vec<crate::node::RawRecord> = Vec::new();
        let mut run_key: Option<(Arc<str>, u32)> = None;
        for record in records {
            let same = run_key
                .as_ref()
                .is_some_and(|(t, p)| Arc::ptr_eq(t, &record.topic) && *p == record.partition);
            if !same {
                if let Some((topic, partition)) = run_key.take() {
                    self.add_run(app, topic, partition, std::mem::take(&mut run));
                }
                run_key = Some((record.topic.clone(), record.partition));
            }
            run.push(record);
        }
        if let Some((topic, partition)) = run_key {
            self.add_run(app, topic, partition, run);
        }
    }

    fn add_run(
        &mut self,
        app: &Arc<str>,
        topic: Arc<str>,
        partition: u32,
        run: Vec<crate::node::RawRecord>,
    ) {
        let subtopology = match self.routes.get(&topic) {
            Some(s) => *s,
            None => {
                let s = self.shared.topology.subtopology_of(app, &topic);
                self.routes.insert(topic.clone(), s);
                s
            }
        };
        let Some(subtopology) = subtopology else { return };
        if let Some(task) = self.tasks.get_mut(&TaskId { subtopology, partition }) {
            task.add_records(&TopicPartition::new(topic, partition), run);
        }
    }

    /// Makes the tasks match the assignment: a task per (sub-topology, partition) of the
    /// assigned partitions.
    async fn reconcile_tasks(&mut self, app: &Arc<str>) -> Result<(), StreamsError> {
        let assignment = self.consumer.assignment();
        let mut wanted = BTreeSet::new();
        for tp in &assignment {
            if let Some(subtopology) = self.shared.topology.subtopology_of(app, &tp.topic) {
                wanted.insert(TaskId { subtopology, partition: tp.partition });
            }
        }
        let gone: Vec<TaskId> =
            self.tasks.keys().filter(|id| !wanted.contains(id)).copied().collect();
        for id in gone {
            if let Some(task) = self.tasks.remove(&id) {
                tracing::info!(thread = %self.name, task = %id, "closing revoked task");
                self.close_task(id, task);
            }
        }
        let new_tasks = wanted.iter().filter(|id| !self.tasks.contains_key(id)).count();
        // The cache budget is shared by the thread's tasks' stores.
        let cache_bytes = self.shared.config.cache_max_bytes
            / self.shared.config.num_stream_threads
            / wanted.len().max(1)
            / self.shared.topology.stores().len().max(1);
        for id in wanted {
            if self.tasks.contains_key(&id) {
                continue;
            }
            let collector: CollectorRef = self.collector.clone();
            let errors = ErrorPolicy {
                deserialization: self.shared.config.deserialization_errors.clone(),
                processing: self.shared.config.processing_errors.clone(),
            };
            let stores = &self.shared.stores;
            let mut opener = |spec: &crate::state::StoreSpec, task: TaskId| stores.open(spec, task);
            let mut task = self.shared.topology.build_task(
                id,
                app,
                collector,
                errors,
                &mut opener,
                cache_bytes,
            )?;
            let restoration = crate::state::restore(
                &mut task,
                self.restore_consumer.as_mut(),
                self.shared.backend.as_ref(),
                self.shared.config.processing_guarantee == ProcessingGuarantee::ExactlyOnce,
                &self.shared.shutdown,
            )
            .await?;
            if restoration == crate::state::Restoration::Interrupted {
                // Closing while a task restores is a clean stop. Its processors were never
                // initialized, so only its stores are closed.
                self.shared.stores.close_task(id);
                return Ok(());
            }
            self.shared.restored.fetch_add(task.restored_records, Ordering::Relaxed);
            task.ctx.wall_clock = wall_clock_ms();
            task.initialize()?;
            tracing::info!(thread = %self.name, task = %id, "created task");
            self.tasks.insert(id, task);
        }
        if new_tasks > 0 {
            tracing::debug!(thread = %self.name, new_tasks, "tasks created");
        }
        self.set_running(!self.consumer.rebalance_pending());
        Ok(())
    }

    fn set_running(&self, running: bool) {
        self.shared.set_thread_running(self.index, running);
    }

    fn take_producer(&self) -> Result<Box<dyn StreamProducer>, StreamsError> {
        self.collector
            .borrow_mut()
            .producer
            .take()
            .ok_or_else(|| StreamsError::IllegalState("the thread's producer is in use".into()))
    }

    fn return_producer(&self, producer: Box<dyn StreamProducer>) {
        self.collector.borrow_mut().producer = Some(producer);
    }

    /// Commits. A commit that fails with an error the thread can recover from (it lost its
    /// group generation, its producer was fenced, a request timed out) is rolled back, as
    /// Kafka Streams handles a `TaskMigratedException`: the open transaction is aborted, the
    /// tasks are dropped with their uncommitted state, and the thread rejoins the group,
    /// resuming from the committed offsets and the stores' committed state. Other errors, and
    /// more than [`MAX_FAILED_COMMITS`] failures in a row, stop the thread.
    async fn commit(&mut self) -> Result<(), StreamsError> {
        let error = match self.try_commit().await {
            Ok(()) => {
                self.failed_commits_in_a_row = 0;
                self.purge_repartition_topics().await;
                return Ok(());
            }
            Err(e) => e,
        };
        if !recoverable(&error) {
            return Err(error);
        }
        if !self.collector.borrow().transactional
            && matches!(
                error,
                StreamsError::Broker(fjord_broker::BrokerError::RebalanceInProgress(_))
            )
        {
            // Kafka's `RebalanceInProgressException`: the group is between its members' joins
            // and the leader's assignment. Nothing is lost by waiting: the next poll completes
            // the rebalance, and the tasks that stay commit then. What the revoked tasks did
            // since their last commit, their new owner does again (at-least-once). Rolling back
            // would leave the group and set off another rebalance.
            tracing::debug!(thread = %self.name, "commit deferred until the rebalance completes");
            return Ok(());
        }
        self.failed_commits_in_a_row += 1;
        if self.failed_commits_in_a_row > MAX_FAILED_COMMITS {
            return Err(StreamsError::ThreadFailed {
                thread: self.name.clone(),
                message: format!(
                    "{MAX_FAILED_COMMITS} commits failed in a row, the last with: {error}"
                ),
            });
        }
        self.shared.failed_commits.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("fjord_streams_failed_commits_total", "thread" => self.name.clone())
            .increment(1);
        tracing::warn!(
            thread = %self.name,
            error = %error,
            "commit failed: rolling back to the last committed state and rejoining the group"
        );
        self.roll_back().await
    }

    /// Drops everything since the last commit; see [`StreamThread::commit`].
    async fn roll_back(&mut self) -> Result<(), StreamsError> {
        if self.collector.borrow().transactional {
            // A new producer with the same transactional id bumps its epoch, which aborts the
            // open transaction whether or not the old producer could still abort it (a fenced
            // one cannot).
            let mut old = self.take_producer()?;
            if let Err(e) = old.close().await {
                tracing::debug!(thread = %self.name, error = %e, "closing the old producer");
            }
            let producer = new_producer(self.shared.backend.as_ref(), &self.producer_spec).await?;
            let mut collector = self.collector.borrow_mut();
            collector.producer = Some(producer);
            collector.in_transaction = false;
        }
        // Caches and staged store writes go with the tasks: RocksDB holds the last committed
        // state, and the changelogs' aborted records are never read.
        self.close_all_tasks();
        self.set_running(false);
        self.consumer.unsubscribe().await?;
        self.consumer.subscribe(&self.topics)
    }

    /// At-least-once: flush the outputs, then commit the inputs. Exactly-once: the consumed
    /// offsets go into the open transaction, which then commits.
    async fn try_commit(&mut self) -> Result<(), StreamsError> {
        self.last_commit = Instant::now();
        let started = Instant::now();
        // 1. Caches go downstream and to the changelogs (in the transaction, exactly-once).
        for task in self.tasks.values_mut() {
            task.flush_state()?;
        }
        let offsets: Vec<(TopicPartition, i64)> =
            self.tasks.values().filter(|t| t.dirty).flat_map(|t| t.committable_offsets()).collect();
        let (transactional, in_transaction) = {
            let c = self.collector.borrow();
            (c.transactional, c.in_transaction)
        };
        if transactional && offsets.is_empty() && !in_transaction {
            return Ok(());
        }
        let mut producer = self.take_producer()?;
        let result = async {
            if transactional {
                if !in_transaction {
                    producer.begin_transaction()?;
                }
                let group = self.consumer.group_metadata().ok_or_else(|| {
                    StreamsError::IllegalState(
                        "no group metadata for a transactional commit".into(),
                    )
                })?;
                producer.send_offsets_to_transaction(&offsets, &group).await?;
                producer.commit_transaction().await
            } else {
                producer.flush().await?;
                if offsets.is_empty() { Ok(()) } else { self.consumer.commit(&offsets).await }
            }
        }
        .await;
        self.return_producer(producer);
        result?;
        self.collector.borrow_mut().in_transaction = false;
        // 2. The changelog records are durable: apply the staged store writes with the
        // changelog offsets they reflect.
        let changelogs: Vec<TopicPartition> =
            self.tasks.values().flat_map(|t| t.staged_changelogs()).collect();
        let end_offsets: Vec<(TopicPartition, i64)> = if changelogs.is_empty() {
            Vec::new()
        } else {
            let ends = self.shared.backend.end_offsets(&changelogs, transactional).await?;
            changelogs.into_iter().zip(ends).collect()
        };
        for task in self.tasks.values_mut() {
            task.apply_staged(&end_offsets)?;
        }
        for task in self.tasks.values_mut() {
            task.dirty = false;
            task.export_metrics();
        }
        self.shared.committed.fetch_add(1, Ordering::Relaxed);
        metrics::histogram!("fjord_streams_commit_latency_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Deletes what the tasks consumed from repartition topics, up to the offsets just
    /// committed (Kafka Streams' purge), at most every `repartition_purge_interval`. A failure
    /// only delays the purge: the records stay until the next one.
    async fn purge_repartition_topics(&mut self) {
        let interval = self.shared.config.repartition_purge_interval;
        if self.repartition_topics.is_empty() || self.last_purge.elapsed() < interval {
            return;
        }
        self.last_purge = Instant::now();
        let before: Vec<(TopicPartition, i64)> = self
            .tasks
            .values()
            .flat_map(Task::committable_offsets)
            .filter(|(tp, _)| self.repartition_topics.contains(&tp.topic))
            .collect();
        if before.is_empty() {
            return;
        }
        if let Err(e) = self.shared.backend.delete_records(&before).await {
            tracing::warn!(thread = %self.name, error = %e, "cannot purge repartition topics; retrying at a later commit");
        }
    }

    /// Closes a task's processors and its stores' engines, without committing.
    fn close_task(&self, id: TaskId, mut task: Task) {
        task.close();
        self.shared.stores.close_task(id);
    }

    fn close_all_tasks(&mut self) {
        for (id, task) in std::mem::take(&mut self.tasks) {
            self.close_task(id, task);
        }
    }

    async fn shutdown(&mut self, clean: bool) -> Result<(), StreamsError> {
        let mut result = Ok(());
        if clean && self.tasks.values().any(|t| t.dirty) {
            result = self.commit().await;
        }
        self.close_all_tasks();
        let in_transaction = std::mem::take(&mut self.collector.borrow_mut().in_transaction);
        let mut producer = self.take_producer()?;
        if in_transaction {
            let _ = producer.abort_transaction().await;
        }
        if let Err(e) = producer.close().await {
            result = result.and(Err(e));
        }
        self.return_producer(producer);
        if let Err(e) = self.consumer.close().await {
            result = result.and(Err(e));
        }
        tracing::info!(thread = %self.name, "stream thread stopped");
        result
    }
}

/// Commits that may fail in a row, each rolled back, before a thread gives up.
const MAX_FAILED_COMMITS: u32 = 10;

/// Whether a failed commit can be rolled back and retried: the group moved on (a lost
/// generation, a rebalance, an eviction), the producer was fenced, or a request timed out.
fn recoverable(error: &StreamsError) -> bool {
    use fjord_broker::BrokerError as B;
    matches!(
        error,
        StreamsError::Broker(
            B::IllegalGeneration { .. }
                | B::UnknownMemberId { .. }
                | B::RebalanceInProgress(_)
                | B::FencedInstanceId(_)
                | B::ProducerFenced(_)
                | B::ConcurrentTransactions(_)
                | B::Timeout { .. }
        )
    )
}

/// A stream thread's consumer gave partitions up (inside `poll`, before it rejoins): the
/// instance stops answering queries for them, and the thread is in a rebalance (Kafka's
/// `PARTITIONS_REVOKED`) until it has reconciled its tasks with the new assignment.
struct ThreadRevocations {
    assignor: Arc<crate::query::StreamsAssignor>,
    /// Weak: the consumer that holds this must not keep the application alive.
    shared: std::sync::Weak<Shared>,
    index: usize,
}

impl std::fmt::Debug for ThreadRevocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadRevocations").field("thread", &self.index).finish_non_exhaustive()
    }
}

impl crate::backend::RevocationListener for ThreadRevocations {
    fn on_partitions_revoked(&self, partitions: &[TopicPartition]) {
        self.assignor.on_partitions_revoked(partitions);
        if let Some(shared) = self.shared.upgrade() {
            shared.set_thread_running(self.index, false);
        }
    }
}

/// The thread's producer, ready for transactions when it has a transactional id.
async fn new_producer(
    backend: &dyn Backend,
    spec: &ProducerSpec,
) -> Result<Box<dyn StreamProducer>, StreamsError> {
    let mut producer = backend.producer(spec.clone()).await?;
    if spec.transactional_id.is_some() {
        producer.init_transactions().await?;
    }
    Ok(producer)
}

/// Works out the partition counts of internal topics: a fixed or forced count, else the
/// largest count of the topics the sub-topology writing them reads; resolved in dependency
/// order.
fn resolve_internal_counts(
    topology: &Topology,
    counts: &mut BTreeMap<String, u32>,
    forced: &BTreeMap<String, u32>,
) {
    let internal = topology.internal_topics();
    for _ in 0..=internal.len() {
        for topic in internal {
            if counts.contains_key(&topic.name) {
                continue;
            }
            let count =
                topic.partitions.or_else(|| forced.get(&topic.name).copied()).or_else(|| {
                    topology.writer_of(&topic.name).and_then(|s| {
                        let known: Option<Vec<u32>> =
                            s.source_topics.iter().map(|t| counts.get(t).copied()).collect();
                        known.and_then(|k| k.into_iter().max())
                    })
                });
            if let Some(n) = count {
                counts.insert(topic.name.clone(), n);
            }
        }
    }
}

/// A changelog is compacted; a window or session store's also drops what is older than the
/// store's retention plus a day (Kafka's `windowstore.changelog.additional.retention.ms`).
fn changelog_configs(topology: &Topology, topic: &str) -> BTreeMap<String, String> {
    let retention = topology.stores().iter().find(|s| s.changelog_topic() == topic).and_then(|s| {
        match s.kind {
            crate::state::StoreKind::KeyValue => None,
            crate::state::StoreKind::Window { retention_ms }
            | crate::state::StoreKind::Session { retention_ms } => Some(retention_ms),
        }
    });
    match retention {
        None => BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]),
        Some(ms) => BTreeMap::from([
            ("cleanup.policy".to_string(), "compact,delete".to_string()),
            ("retention.ms".to_string(), (ms.saturating_add(86_400_000)).to_string()),
        ]),
    }
}

/// The instance's process id (Kafka Streams' `processId`), read from `<state.dir>/process-id`
/// or created there: a restart reuses it, and with it the transactional ids of its threads.
fn process_id(state_dir: &std::path::Path) -> Result<String, StreamsError> {
    let path = state_dir.join("process-id");
    let unusable = |e: std::io::Error| StreamsError::Config {
        name: "state.dir",
        reason: format!(
            "cannot read or write `{}`: {e}; point state.dir at a writable directory",
            path.display()
        ),
    };
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(unusable(e)),
    }
    let id = uuid::Uuid::new_v4().to_string();
    std::fs::create_dir_all(state_dir).map_err(unusable)?;
    // Written to a temporary file and renamed: a crash leaves the old file or the new one.
    let tmp = state_dir.join("process-id.tmp");
    std::fs::write(&tmp, &id).map_err(unusable)?;
    std::fs::rename(&tmp, &path).map_err(unusable)?;
    Ok(id)
}

/// Installs the Prometheus exporter at `addr` once per process: another instance that asks
/// for the same address shares it; a different address is an error (one recorder per process).
fn install_metrics_exporter(addr: std::net::SocketAddr) -> Result<(), StreamsError> {
    static INSTALLED: Mutex<Option<std::net::SocketAddr>> = Mutex::new(None);
    let mut installed = INSTALLED.lock();
    match *installed {
        Some(at) if at == addr => Ok(()),
        Some(at) => Err(StreamsError::Config {
            name: "metrics.endpoint",
            reason: format!(
                "{addr} asked for, but this process already serves its metrics on {at}: use the same address"
            ),
        }),
        None => {
            fjord_broker::metrics::install_prometheus_exporter(addr).map_err(|e| {
                StreamsError::Config { name: "metrics.endpoint", reason: e.to_string() }
            })?;
            crate::metrics::describe();
            *installed = Some(addr);
            Ok(())
        }
    }
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Shared {
    fn transition(&self, new: StreamsState) {
        self.transition_if(|_| Some(new));
    }

    /// Moves to the state `next` gives for the current one, if any, and tells the listener.
    fn transition_if(&self, next: impl FnOnce(StreamsState) -> Option<StreamsState>) {
        let mut change = None;
        self.state.send_if_modified(|state| match next(*state) {
            Some(new) if new != *state => {
                change = Some((new, *state));
                *state = new;
                true
            }
            _ => false,
        });
        if let (Some((new, old)), Some(listener)) = (change, self.state_listener.get()) {
            listener(new, old);
        }
    }

    /// Marks a stream thread as in a rebalance or not. The application is `Rebalancing` while
    /// any of its threads is, and `Running` when none is, as Kafka Streams' state follows its
    /// threads'.
    fn set_thread_running(&self, index: usize, running: bool) {
        let mut threads = self.running_threads.lock();
        if running {
            threads.insert(index);
        } else {
            threads.remove(&index);
        }
        let all = threads.len() == self.config.num_stream_threads;
        self.transition_if(|state| match (state, all) {
            (StreamsState::Rebalancing, true) => Some(StreamsState::Running),
            (StreamsState::Running, false) => Some(StreamsState::Rebalancing),
            _ => None,
        });
    }

    /// Has [`Shared::begin_shutdown`] end a thread's waiting polls.
    pub(crate) fn add_waker(&self, waker: crate::backend::PollWaker) {
        let mut wakers = self.wakers.lock();
        // Read under the lock that `begin_shutdown` takes after setting the flag: a waker
        // added too late for it is woken here.
        if self.shutdown.load(Ordering::Acquire) {
            waker();
        }
        wakers.push(waker);
    }

    /// Tells the stream threads to stop, ending their waiting polls.
    fn begin_shutdown(&self) {
        self.shutdown.store(true, Ordering::Release);
        for wake in self.wakers.lock().iter() {
            wake();
        }
    }

    fn store_spec(&self, name: &str) -> Result<&crate::state::StoreSpec, StreamsError> {
        self.topology.stores().iter().find(|s| s.name == name).map(|s| &**s).ok_or_else(|| {
            StreamsError::Topology(format!("no state store named `{name}` in the topology"))
        })
    }

    /// Read-only access to a key-value store of this instance, for interactive queries: reads
    /// go to the stores of the tasks running here and see the state as of their last commit.
    /// A key of a task that runs on another instance is not found here.
    pub(crate) fn key_value_store<K: 'static, V: 'static>(
        &self,
        name: &str,
        key_serde: crate::serdes::SerdeRef<K>,
        value_serde: crate::serdes::SerdeRef<V>,
    ) -> Result<crate::state::ReadOnlyKeyValueStore<K, V>, StreamsError> {
        let spec = self.store_spec(name)?;
        if spec.kind != crate::state::StoreKind::KeyValue {
            return Err(StreamsError::Topology(format!(
                "state store `{name}` is a {:?} store, not a key-value store",
                spec.kind
            )));
        }
        Ok(crate::state::ReadOnlyKeyValueStore::new(
            name,
            self.stores.clone(),
            key_serde,
            value_serde,
        ))
    }

    /// Read-only access to the window store of a windowed aggregation of this instance, for
    /// interactive queries (`fetch` by key and time range), as of each task's last commit.
    pub(crate) fn window_store<K: 'static, V: 'static>(
        &self,
        name: &str,
        key_serde: crate::serdes::SerdeRef<K>,
        value_serde: crate::serdes::SerdeRef<V>,
    ) -> Result<crate::state::ReadOnlyWindowStore<K, V>, StreamsError> {
        let spec = self.store_spec(name)?;
        let crate::state::StoreKind::Window { retention_ms } = spec.kind else {
            return Err(StreamsError::Topology(format!(
                "state store `{name}` is a {:?} store, not a window store",
                spec.kind
            )));
        };
        Ok(crate::state::ReadOnlyWindowStore::new(
            name,
            retention_ms,
            self.stores.clone(),
            key_serde,
            value_serde,
        ))
    }

    /// Read-only access to the session store of a session-windowed aggregation of this
    /// instance, for interactive queries (`fetch` of a key's sessions), as of each task's last
    /// commit.
    pub(crate) fn session_store<K: 'static, V: 'static>(
        &self,
        name: &str,
        key_serde: crate::serdes::SerdeRef<K>,
        value_serde: crate::serdes::SerdeRef<V>,
    ) -> Result<crate::state::ReadOnlySessionStore<K, V>, StreamsError> {
        let spec = self.store_spec(name)?;
        let crate::state::StoreKind::Session { retention_ms } = spec.kind else {
            return Err(StreamsError::Topology(format!(
                "state store `{name}` is a {:?} store, not a session store",
                spec.kind
            )));
        };
        Ok(crate::state::ReadOnlySessionStore::new(
            name,
            retention_ms,
            self.stores.clone(),
            key_serde,
            value_serde,
        ))
    }
}

/// The sub-topology that holds a (non-global) store, and the partition count of its input.
fn store_partitions<'a>(
    shared: &'a Shared,
    store: &str,
) -> Result<(&'a crate::Subtopology, u32), StreamsError> {
    let sub = shared
        .topology
        .subtopologies()
        .iter()
        .find(|s| s.stores.iter().any(|name| name == store))
        .ok_or_else(|| {
            StreamsError::Topology(format!("no state store named `{store}` in the topology"))
        })?;
    let counts = shared.partition_counts.get().ok_or_else(|| {
        StreamsError::IllegalState(format!(
            "cannot locate keys of store `{store}` before the application started"
        ))
    })?;
    let partitions =
        sub.source_topics.iter().filter_map(|t| counts.get(t).copied()).max().ok_or_else(|| {
            StreamsError::IllegalState(format!("the input of store `{store}` has no partitions"))
        })?;
    Ok((sub, partitions))
}

/// [`Streams::query_metadata_for_key`] on a serialized key.
pub(crate) fn key_metadata(
    shared: &Shared,
    store: &str,
    key: &[u8],
) -> Result<crate::KeyQueryMetadata, StreamsError> {
    if shared.topology.global_stores().any(|s| s.name == store) {
        return Ok(crate::KeyQueryMetadata {
            partition: None,
            active_host: shared.config.application_server.clone(),
            local: true,
        });
    }
    let (sub, partitions) = store_partitions(shared, store)?;
    let partition = fjord_log::partitioner::partition_for_key(key, partitions);
    let task = TaskId { subtopology: sub.id, partition };
    let app = &shared.config.application_id;
    let sources: Vec<TopicPartition> = sub
        .source_topics
        .iter()
        .map(|t| TopicPartition::new(shared.topology.resolve_topic(app, t), partition))
        .collect();
    let cluster = shared.cluster.lock();
    // The task closes only after its consumer gave the partition up; in between, the new
    // owner answers.
    let local = sources.iter().any(|tp| cluster.holds(tp))
        && shared.stores.engines(store).iter().any(|(t, _)| *t == task);
    let active_host = sources.iter().find_map(|tp| cluster.owner(tp)).cloned();
    Ok(crate::KeyQueryMetadata { partition: Some(partition), active_host, local })
}

/// [`Streams::metadata_for_all_clients`].
pub(crate) fn all_metadata(shared: &Shared) -> Vec<crate::StreamsMetadata> {
    let app = &shared.config.application_id;
    let topology = &shared.topology;
    let globals: BTreeSet<String> = topology.global_stores().map(|s| s.name.clone()).collect();
    let cluster = shared.cluster.lock();
    cluster
        .hosts()
        .iter()
        .map(|(host, partitions)| {
            let mut state_stores = globals.clone();
            for sub in topology.subtopologies() {
                let runs_here = sub.source_topics.iter().any(|t| {
                    let topic = topology.resolve_topic(app, t);
                    partitions.iter().any(|tp| *tp.topic == *topic)
                });
                if runs_here {
                    state_stores.extend(sub.stores.iter().cloned());
                }
            }
            crate::StreamsMetadata {
                host_info: host.clone(),
                topic_partitions: partitions.clone(),
                state_stores,
            }
        })
        .collect()
}
