//! `TopologyTestDriver`: runs a topology synchronously, in memory, with no threads, no broker
//! and no disk, as Kafka Streams' test driver does. Pipe records into input topics, read what
//! comes out of output topics, and move wall-clock time to fire punctuations.
//!
//! Every topic has one partition, so a sub-topology has one task. Records written to a
//! repartition topic are handed to the sub-topology that reads it at once, so a piped record
//! has gone all the way through when `pipe_input` returns.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fjord_log::TopicPartition;

use crate::TaskId;
use crate::error::{ErrorAction, StreamsError};
use crate::node::{CollectorRef, ErrorPolicy, RawRecord, RecordCollector};
use crate::record::{Headers, Record};
use crate::serdes::{SerdeRef, deserialize_opt};
use crate::task::Task;
use crate::topology::Topology;

/// A record written to an output topic, as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord {
    /// The key bytes.
    pub key: Option<Bytes>,
    /// The value bytes.
    pub value: Option<Bytes>,
    /// The timestamp.
    pub timestamp: i64,
    /// The headers.
    pub headers: Headers,
    /// The partition a partitioner chose, if one did.
    pub partition: Option<u32>,
}

/// Output records kept in memory, by topic (also the state tests' changelog).
#[derive(Default)]
pub(crate) struct MemoryCollector {
    pub(crate) outputs: HashMap<String, VecDeque<OutputRecord>>,
    /// Records for the application's own topics, to be processed next.
    internal: VecDeque<(String, OutputRecord)>,
    internal_topics: Vec<String>,
}

impl RecordCollector for MemoryCollector {
    fn send(
        &mut self,
        topic: &str,
        partition: Option<u32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &Headers,
        timestamp: i64,
    ) -> Result<(), StreamsError> {
        let record = OutputRecord {
            key: key.map(Bytes::copy_from_slice),
            value: value.map(Bytes::copy_from_slice),
            timestamp,
            headers: headers.clone(),
            partition,
        };
        if self.internal_topics.iter().any(|t| t == topic) {
            self.internal.push_back((topic.to_string(), record));
        } else {
            self.outputs.entry(topic.to_string()).or_default().push_back(record);
        }
        Ok(())
    }

    fn partition_count(&mut self, _topic: &str) -> Result<u32, StreamsError> {
        Ok(1)
    }
}

/// Settings of the test driver.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// The application id (prefix of internal topic names).
    pub application_id: String,
    /// The wall-clock time the driver starts at (ms).
    pub initial_wall_clock: i64,
    /// What to do with records that cannot be deserialized.
    pub deserialization_errors: ErrorAction,
    /// What to do with records whose processing fails.
    pub processing_errors: ErrorAction,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            application_id: "test-driver".into(),
            initial_wall_clock: 0,
            deserialization_errors: ErrorAction::Fail,
            processing_errors: ErrorAction::Fail,
        }
    }
}

struct DriverState {
    topology: Topology,
    application_id: Arc<str>,
    errors: ErrorPolicy,
    tasks: BTreeMap<TaskId, Task>,
    collector: Rc<RefCell<MemoryCollector>>,
    offsets: HashMap<String, i64>,
    wall_clock: i64,
    /// The global stores, by name, in memory.
    globals: HashMap<String, Arc<dyn fjord_state::KeyValueBytesStore>>,
}

impl DriverState {
    fn task(&mut self, subtopology: u32) -> Result<&mut Task, StreamsError> {
        let id = TaskId { subtopology, partition: 0 };
        if !self.tasks.contains_key(&id) {
            let collector: CollectorRef = self.collector.clone();
            let globals = &mut self.globals;
            let mut opener = |spec: &crate::state::StoreSpec, _task: TaskId| {
                let engine: Arc<dyn fjord_state::KeyValueBytesStore> = match spec.global_topic {
                    Some(_) => global_engine(globals, &spec.name),
                    None => Arc::new(fjord_state::InMemoryStore::new(spec.name.clone())),
                };
                Ok(engine)
            };
            let mut task = self.topology.build_task(
                id,
                &self.application_id,
                collector,
                self.errors.clone(),
                &mut opener,
                usize::MAX,
            )?;
            task.ctx.wall_clock = self.wall_clock;
            task.initialize()?;
            self.tasks.insert(id, task);
        }
        self.tasks.get_mut(&id).ok_or_else(|| StreamsError::IllegalState("task vanished".into()))
    }

    /// Processes a record of `topic`, then everything it wrote to repartition topics, so the
    /// record has gone all the way through when this returns.
    fn process(&mut self, topic: &str, record: OutputRecord) -> Result<(), StreamsError> {
        self.feed(topic, record)?;
        loop {
            let next = self.collector.borrow_mut().internal.pop_front();
            if let Some((topic, record)) = next {
                self.feed(&topic, record)?;
                continue;
            }
            // Kafka's test driver commits after every input record: caches flush, and what
            // they forward may feed repartition topics again.
            for task in self.tasks.values_mut() {
                task.flush_state()?;
                task.apply_staged(&[])?;
            }
            if self.collector.borrow().internal.is_empty() {
                return Ok(());
            }
        }
    }

    /// Hands one record to the task that reads `topic` and processes it; a record of a global
    /// table's topic goes to its store.
    fn feed(&mut self, topic: &str, record: OutputRecord) -> Result<(), StreamsError> {
        if let Some(spec) = self.topology.global_store_of(topic) {
            let engine = global_engine(&mut self.globals, &spec.name);
            let mut batch = fjord_state::WriteBatch::new();
            let key = record.key.map(|k| k.to_vec()).unwrap_or_default();
            batch.put_or_delete(key, record.value.map(|v| v.to_vec()));
            return engine.write(&batch, None).map_err(|e| StreamsError::State {
                store: spec.name.clone(),
                message: e.to_string(),
            });
        }
        let subtopology =
            self.topology.subtopology_of(&self.application_id, topic).ok_or_else(|| {
                StreamsError::IllegalState(format!(
                    "no source of the topology reads topic `{topic}`"
                ))
            })?;
        let offset = self.offsets.entry(topic.to_string()).or_insert(0);
        let raw = RawRecord {
            topic: Arc::from(topic),
            partition: 0,
            offset: *offset,
            timestamp: record.timestamp,
            key: record.key,
            value: record.value,
            headers: record.headers,
        };
        *offset += 1;
        let tp = TopicPartition::new(topic, 0);
        let task = self.task(subtopology)?;
        task.add_records(&tp, [raw]);
        task.process(usize::MAX)?;
        Ok(())
    }
}

/// The memory engine of a global store, created on first use.
fn global_engine(
    globals: &mut HashMap<String, Arc<dyn fjord_state::KeyValueBytesStore>>,
    store: &str,
) -> Arc<dyn fjord_state::KeyValueBytesStore> {
    globals
        .entry(store.to_string())
        .or_insert_with(|| Arc::new(fjord_state::InMemoryStore::new(store)))
        .clone()
}

/// Runs a topology in memory for tests.
pub struct TopologyTestDriver {
    state: Rc<RefCell<DriverState>>,
}

impl TopologyTestDriver {
    /// A driver for `topology`.
    pub fn new(topology: Topology, config: DriverConfig) -> Self {
        let application_id: Arc<str> = Arc::from(config.application_id.as_str());
        // Only repartition topics feed a sub-topology; changelogs are readable as outputs.
        let internal_topics = topology
            .internal_topics()
            .iter()
            .filter(|t| t.kind == crate::graph::InternalTopicKind::Repartition)
            .map(|t| topology.resolve_topic(&application_id, &t.name))
            .collect();
        let collector = Rc::new(RefCell::new(MemoryCollector {
            internal_topics,
            ..MemoryCollector::default()
        }));
        TopologyTestDriver {
            state: Rc::new(RefCell::new(DriverState {
                topology,
                application_id,
                errors: ErrorPolicy {
                    deserialization: config.deserialization_errors,
                    processing: config.processing_errors,
                },
                tasks: BTreeMap::new(),
                collector,
                offsets: HashMap::new(),
                wall_clock: config.initial_wall_clock,
                globals: HashMap::new(),
            })),
        }
    }

    /// An input topic to pipe records into.
    pub fn input_topic<K, V>(
        &self,
        topic: &str,
        key_serde: SerdeRef<K>,
        value_serde: SerdeRef<V>,
    ) -> TestInputTopic<K, V> {
        TestInputTopic {
            state: self.state.clone(),
            topic: topic.to_string(),
            key_serde,
            value_serde,
            next_timestamp: 0,
        }
    }

    /// An output topic to read records from.
    pub fn output_topic<K, V>(
        &self,
        topic: &str,
        key_serde: SerdeRef<K>,
        value_serde: SerdeRef<V>,
    ) -> TestOutputTopic<K, V> {
        TestOutputTopic {
            state: self.state.clone(),
            topic: topic.to_string(),
            key_serde,
            value_serde,
        }
    }

    /// Moves wall-clock time forward and fires the wall-clock punctuations now due.
    pub fn advance_wall_clock_time(&self, by: Duration) -> Result<(), StreamsError> {
        let mut state = self.state.borrow_mut();
        state.wall_clock += by.as_millis() as i64;
        let now = state.wall_clock;
        let ids: Vec<TaskId> = state.tasks.keys().copied().collect();
        for id in ids {
            if let Some(task) = state.tasks.get_mut(&id) {
                task.punctuate_wall_clock(now)?;
            }
        }
        Ok(())
    }

    /// Records dropped so far: by a `LogAndContinue` error handler, and as late records,
    /// records with a null key where one is needed, or records with a negative timestamp.
    pub fn dropped_records(&self) -> u64 {
        self.state.borrow().tasks.values().map(|t| t.ctx.dropped_records).sum()
    }

    /// Closes every task's processors.
    pub fn close(self) {
        for task in self.state.borrow_mut().tasks.values_mut() {
            task.close();
        }
    }
}

/// An input topic of the test driver.
pub struct TestInputTopic<K, V> {
    state: Rc<RefCell<DriverState>>,
    topic: String,
    key_serde: SerdeRef<K>,
    value_serde: SerdeRef<V>,
    next_timestamp: i64,
}

impl<K: 'static, V: 'static> TestInputTopic<K, V> {
    /// Pipes a record with a timestamp through the topology.
    pub fn pipe_input(&mut self, key: K, value: V, timestamp: i64) -> Result<(), StreamsError> {
        self.pipe_record(Record::new(key, value, timestamp))
    }

    /// Pipes a value with the next automatic timestamp (the last one plus 1 ms).
    pub fn pipe_value(&mut self, key: K, value: V) -> Result<(), StreamsError> {
        let ts = self.next_timestamp;
        self.pipe_input(key, value, ts)
    }

    /// Pipes a full record (with headers).
    pub fn pipe_record(&mut self, record: Record<K, V>) -> Result<(), StreamsError> {
        let mut key = Vec::new();
        let mut value = Vec::new();
        let serde_error =
            |e: crate::serdes::SerdeError| StreamsError::IllegalState(format!("test input: {e}"));
        self.key_serde.serialize(&record.key, &mut key).map_err(serde_error)?;
        self.value_serde.serialize(&record.value, &mut value).map_err(serde_error)?;
        let output = OutputRecord {
            key: (!self.key_serde.is_null(&record.key)).then(|| Bytes::from(key)),
            value: (!self.value_serde.is_null(&record.value)).then(|| Bytes::from(value)),
            timestamp: record.timestamp,
            headers: record.headers,
            partition: None,
        };
        self.next_timestamp = record.timestamp + 1;
        self.state.borrow_mut().process(&self.topic, output)
    }

    /// Pipes raw bytes, to test what bad input does.
    pub fn pipe_raw(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
    ) -> Result<(), StreamsError> {
        let output = OutputRecord {
            key: key.map(Bytes::copy_from_slice),
            value: value.map(Bytes::copy_from_slice),
            timestamp,
            headers: Headers::new(),
            partition: None,
        };
        self.state.borrow_mut().process(&self.topic, output)
    }
}

/// An output topic of the test driver.
pub struct TestOutputTopic<K, V> {
    state: Rc<RefCell<DriverState>>,
    topic: String,
    key_serde: SerdeRef<K>,
    value_serde: SerdeRef<V>,
}

impl<K: 'static, V: 'static> TestOutputTopic<K, V> {
    /// The next record as bytes, if any.
    pub fn read_raw(&self) -> Option<OutputRecord> {
        let state = self.state.borrow();
        let mut collector = state.collector.borrow_mut();
        collector.outputs.get_mut(&self.topic).and_then(VecDeque::pop_front)
    }

    /// The next record, deserialized.
    pub fn read_record(&self) -> Result<Option<Record<K, V>>, StreamsError> {
        let Some(raw) = self.read_raw() else { return Ok(None) };
        let key = deserialize_opt(&*self.key_serde, raw.key.as_deref())
            .map_err(|e| StreamsError::IllegalState(format!("test output key: {e}")))?;
        let value = deserialize_opt(&*self.value_serde, raw.value.as_deref())
            .map_err(|e| StreamsError::IllegalState(format!("test output value: {e}")))?;
        Ok(Some(Record { key, value, timestamp: raw.timestamp, headers: raw.headers }))
    }

    /// The next key and value.
    pub fn read_key_value(&self) -> Result<Option<(K, V)>, StreamsError> {
        Ok(self.read_record()?.map(|r| (r.key, r.value)))
    }

    /// Every record still queued, as key-value pairs.
    pub fn read_key_values(&self) -> Result<Vec<(K, V)>, StreamsError> {
        let mut out = Vec::new();
        while let Some(kv) = self.read_key_value()? {
            out.push(kv);
        }
        Ok(out)
    }

    /// Every value still queued.
    pub fn read_values(&self) -> Result<Vec<V>, StreamsError> {
        Ok(self.read_key_values()?.into_iter().map(|(_, v)| v).collect())
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue_size() == 0
    }

    /// How many records are queued.
    pub fn queue_size(&self) -> usize {
        let state = self.state.borrow();
        let collector = state.collector.borrow();
        collector.outputs.get(&self.topic).map_or(0, VecDeque::len)
    }
}
