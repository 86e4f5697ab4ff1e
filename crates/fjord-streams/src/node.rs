//! The processing nodes of a task, and how a task builds them from the topology.
//!
//! The topology is a graph of node factories, shared by all threads. A task instantiates the
//! nodes of its sub-topology once: every node is an `Rc<RefCell<..>>` its parents hold, so a
//! node reached from two parents (after a `merge`) exists once, with one state. Records move
//! by value from node to node; a node with several children clones a record for all but the
//! last. Within a node, the operator's closure is a generic parameter, so each hop costs one
//! dynamic call and the closure itself is inlined.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::TaskId;
use crate::error::{ErrorAction, StreamsError};
use crate::graph::{Graph, NodeId};
use crate::processor::{Processor, ProcessorContext, PunctuationType, ScheduleId};
use crate::record::{Headers, Record};
use crate::serdes::{SerdeRef, deserialize_opt};
use crate::state::{CachedStore, StoreRef, StoreSpec};

/// A fetched record as the runtime hands it to a task: raw key and value bytes, shared with the
/// fetch buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: u32,
    /// The offset.
    pub offset: i64,
    /// The timestamp.
    pub timestamp: i64,
    /// The key bytes.
    pub key: Option<Bytes>,
    /// The value bytes.
    pub value: Option<Bytes>,
    /// The headers.
    pub headers: Headers,
}

/// Where output records go: the runtime's producer, or the test driver's memory.
pub trait RecordCollector {
    /// Sends a serialized record. `partition: None` lets the key decide (murmur2, as Kafka).
    fn send(
        &mut self,
        topic: &str,
        partition: Option<u32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &Headers,
        timestamp: i64,
    ) -> Result<(), StreamsError>;

    /// Number of partitions of a topic, for sinks with their own partitioner.
    fn partition_count(&mut self, topic: &str) -> Result<u32, StreamsError>;
}

/// The shared collector of a thread's tasks.
pub(crate) type CollectorRef = Rc<RefCell<dyn RecordCollector>>;

pub(crate) struct Schedule {
    pub(crate) node: usize,
    pub(crate) id: ScheduleId,
    pub(crate) interval: i64,
    pub(crate) kind: PunctuationType,
    pub(crate) next: i64,
}

/// Error handling settings of a task.
#[derive(Debug, Clone)]
pub(crate) struct ErrorPolicy {
    pub(crate) deserialization: ErrorAction,
    pub(crate) processing: ErrorAction,
}

/// The task-wide state every node sees while it runs.
pub struct TaskContext {
    pub(crate) task_id: TaskId,
    pub(crate) application_id: Arc<str>,
    pub(crate) current: Option<RawRecord>,
    pub(crate) stream_time: i64,
    pub(crate) wall_clock: i64,
    pub(crate) collector: CollectorRef,
    pub(crate) schedules: Vec<Schedule>,
    next_schedule: u32,
    pub(crate) errors: ErrorPolicy,
    /// A failure that must stop the task (with `ErrorAction::Fail`, or a failed send).
    pub(crate) failure: Option<StreamsError>,
    pub(crate) dropped_records: u64,
    pub(crate) dead_lettered: u64,
    /// Per node of the graph (by [`crate::graph::NodeId`]): records processed and a sample of
    /// their latency. Nodes outside the task's sub-topology keep no-op handles.
    pub(crate) node_metrics: Vec<NodeMetrics>,
}

/// How often a node's (and a task's) processing is timed: one record in this many. Reading the
/// clock for every record would cost more than many operators do.
pub(crate) const LATENCY_SAMPLE: u64 = 64;

/// Runs `work`; when `sampled`, returns how long it took, in seconds.
pub(crate) fn timed_if(sampled: bool, work: impl FnOnce()) -> Option<f64> {
    if !sampled {
        work();
        return None;
    }
    let started = std::time::Instant::now();
    work();
    Some(started.elapsed().as_secs_f64())
}

/// A node's metrics (Kafka Streams' processor-node `process-total` and `process-latency`; the
/// latency includes the nodes it forwards to, as in Kafka). Counted in plain integers on the
/// hot path, handed to the `metrics` registry at each commit.
pub(crate) struct NodeMetrics {
    pub(crate) processed: u64,
    exported: u64,
    total: metrics::Counter,
    latency: metrics::Histogram,
}

impl NodeMetrics {
    /// The metrics of node `name` of a task.
    pub(crate) fn new(application_id: &str, task: TaskId, name: &str) -> Self {
        let labels = [
            ("application", application_id.to_string()),
            ("task", task.to_string()),
            ("processor", name.to_string()),
        ];
        NodeMetrics {
            processed: 0,
            exported: 0,
            total: metrics::counter!("fjord_streams_processor_records_total", &labels),
            latency: metrics::histogram!("fjord_streams_processor_latency_seconds", &labels),
        }
    }

    /// A node that is not part of the task.
    pub(crate) fn none() -> Self {
        NodeMetrics {
            processed: 0,
            exported: 0,
            total: metrics::Counter::noop(),
            latency: metrics::Histogram::noop(),
        }
    }

    /// Adds what was processed since the last export to the registry's counter.
    pub(crate) fn export(&mut self) {
        self.total.increment(self.processed - self.exported);
        self.exported = self.processed;
    }
}

/// Has `node` process `record`, counting it and timing one in [`LATENCY_SAMPLE`].
fn deliver<K, V>(ctx: &mut TaskContext, id: NodeId, node: &NodeRef<K, V>, record: Record<K, V>) {
    let sampled = match ctx.node_metrics.get_mut(id) {
        Some(m) => {
            m.processed += 1;
            m.processed.is_multiple_of(LATENCY_SAMPLE)
        }
        None => false,
    };
    if let Some(seconds) = timed_if(sampled, || node.borrow_mut().process(ctx, record))
        && let Some(m) = ctx.node_metrics.get(id)
    {
        m.latency.record(seconds);
    }
}

impl TaskContext {
    pub(crate) fn new(
        task_id: TaskId,
        application_id: Arc<str>,
        collector: CollectorRef,
        errors: ErrorPolicy,
    ) -> Self {
        TaskContext {
            task_id,
            application_id,
            current: None,
            stream_time: -1,
            wall_clock: 0,
            collector,
            schedules: Vec::new(),
            next_schedule: 0,
            errors,
            failure: None,
            dropped_records: 0,
            dead_lettered: 0,
            node_metrics: Vec::new(),
        }
    }

    pub(crate) fn schedule(
        &mut self,
        node: usize,
        interval: Duration,
        kind: PunctuationType,
    ) -> ScheduleId {
        let id = ScheduleId(self.next_schedule);
        self.next_schedule += 1;
        let interval = (interval.as_millis() as i64).max(1);
        let now = match kind {
            PunctuationType::StreamTime => self.stream_time.max(0),
            PunctuationType::WallClockTime => self.wall_clock,
        };
        self.schedules.push(Schedule { node, id, interval, kind, next: now + interval });
        id
    }

    pub(crate) fn cancel(&mut self, node: usize, id: ScheduleId) {
        self.schedules.retain(|s| !(s.node == node && s.id == id));
    }

    /// Sends a record through the collector, recording a failure that stops the task.
    pub(crate) fn send(
        &mut self,
        topic: &str,
        partition: Option<u32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &Headers,
        timestamp: i64,
    ) {
        let result =
            self.collector.borrow_mut().send(topic, partition, key, value, headers, timestamp);
        if let Err(e) = result {
            self.fail(e);
        }
    }

    /// `topic-partition@offset` of the record being processed, for logs and errors.
    fn source_description(&self) -> Option<String> {
        self.current.as_ref().map(|c| format!("{}-{}@{}", c.topic, c.partition, c.offset))
    }

    /// Drops a record an operator cannot take (a null key for an aggregation, a record too
    /// late for its window), counted and logged as Kafka's dropped-records sensor does.
    pub(crate) fn skip_record(&mut self, node: &str, reason: &'static str) {
        let source = self.source_description();
        tracing::debug!(task = %self.task_id, node, source = ?source, reason, "record dropped");
        self.dropped_records += 1;
        metrics::counter!("fjord_streams_dropped_records_total", "reason" => reason).increment(1);
    }

    pub(crate) fn fail(&mut self, error: StreamsError) {
        if self.failure.is_none() {
            self.failure = Some(error);
        }
    }

    /// Handles a record that could not be deserialized or processed, as the configured
    /// handler says: stop, log and drop it, or send the source record to a dead-letter topic
    /// with the error in headers (KIP-1034's `__streams.errors.*`).
    pub(crate) fn record_error(&mut self, node: &str, deserialization: bool, error: String) {
        let action =
            if deserialization { &self.errors.deserialization } else { &self.errors.processing };
        let what = if deserialization { "deserialization" } else { "processing" };
        let source = self.source_description();
        match action.clone() {
            ErrorAction::Fail => self.fail(StreamsError::Record {
                task: self.task_id,
                node: node.to_string(),
                kind: what,
                source_record: source.unwrap_or_default(),
                message: error,
            }),
            ErrorAction::LogAndContinue => {
                tracing::warn!(task = %self.task_id, node, source = ?source, error = %error, "{what} error: record skipped");
                self.dropped_records += 1;
                metrics::counter!("fjord_streams_dropped_records_total", "reason" => what)
                    .increment(1);
            }
            ErrorAction::DeadLetter { topic } => {
                let Some(current) = self.current.clone() else {
                    self.fail(StreamsError::Record {
                        task: self.task_id,
                        node: node.to_string(),
                        kind: what,
                        source_record: String::new(),
                        message: error,
                    });
                    return;
                };
                let mut headers = current.headers.clone();
                headers
                    .add("__streams.errors.exception", Some(Bytes::from(what)))
                    .add("__streams.errors.message", Some(Bytes::from(error)))
                    .add("__streams.errors.node", Some(Bytes::from(node.to_string())))
                    .add("__streams.errors.topic", Some(Bytes::from(current.topic.to_string())))
                    .add(
                        "__streams.errors.partition",
                        Some(Bytes::from(current.partition.to_string())),
                    )
                    .add("__streams.errors.offset", Some(Bytes::from(current.offset.to_string())));
                self.send(
                    &topic,
                    None,
                    current.key.as_deref(),
                    current.value.as_deref(),
                    &headers,
                    current.timestamp,
                );
                self.dead_lettered += 1;
                metrics::counter!("fjord_streams_dead_letter_records_total", "reason" => what)
                    .increment(1);
            }
        }
    }
}

/// A node that takes records of `K`/`V`.
pub(crate) trait Node<K, V> {
    fn process(&mut self, ctx: &mut TaskContext, record: Record<K, V>);
}

/// Lifecycle hooks every node has.
pub(crate) trait Lifecycle {
    fn init(&mut self, _ctx: &mut TaskContext) {}
    /// Flushes the node's store cache, forwarding what it held back (at commit).
    fn flush(&mut self, _ctx: &mut TaskContext) {}
    fn punctuate(&mut self, _ctx: &mut TaskContext, _id: ScheduleId, _timestamp: i64) {}
    fn close(&mut self) {}
}

/// A source: takes raw records.
pub(crate) trait RawSource: Lifecycle {
    /// Processes `ctx.current`, the record the task is working on.
    fn process_current(&mut self, ctx: &mut TaskContext);
}

pub(crate) type NodeRef<K, V> = Rc<RefCell<dyn Node<K, V>>>;
pub(crate) type LifeRef = Rc<RefCell<dyn Lifecycle>>;
pub(crate) type SourceRef = Rc<RefCell<dyn RawSource>>;

/// Builds a node of a task, given the task's instantiator and the node's id.
pub(crate) type NodeFactory<K, V> = Box<
    dyn Fn(&mut Instantiator<'_>, NodeId) -> Result<(NodeRef<K, V>, LifeRef), StreamsError>
        + Send
        + Sync,
>;
/// Builds a source node of a task.
pub(crate) type SourceFactory = Box<
    dyn Fn(&mut Instantiator<'_>, NodeId) -> Result<(SourceRef, LifeRef), StreamsError>
        + Send
        + Sync,
>;

/// Both handles of a new node.
pub(crate) fn wrap<K, V, T: Node<K, V> + Lifecycle + 'static>(node: T) -> (NodeRef<K, V>, LifeRef) {
    let rc = Rc::new(RefCell::new(node));
    (rc.clone(), rc)
}

/// The children of a node, with their names (for `forward_to`).
pub struct Children<K, V> {
    nodes: Vec<(Arc<str>, NodeRef<K, V>, NodeId)>,
}

impl<K: Clone, V: Clone> Children<K, V> {
    /// Sends a record to every child, cloning it for all but the last.
    pub(crate) fn forward(&self, ctx: &mut TaskContext, record: Record<K, V>) {
        match self.nodes.as_slice() {
            [] => {}
            [(_, only, id)] => deliver(ctx, *id, only, record),
            [rest @ .., (_, last, last_id)] => {
                for (_, child, id) in rest {
                    deliver(ctx, *id, child, record.clone());
                }
                deliver(ctx, *last_id, last, record);
            }
        }
    }

    pub(crate) fn forward_to(&self, ctx: &mut TaskContext, name: &str, record: Record<K, V>) {
        if let Some((_, child, id)) = self.nodes.iter().find(|(n, _, _)| &**n == name) {
            deliver(ctx, *id, child, record);
        } else {
            ctx.fail(StreamsError::Topology(format!("forward_to: no child named `{name}`")));
        }
    }

    pub(crate) fn get(&self, index: usize) -> Option<&NodeRef<K, V>> {
        self.nodes.get(index).map(|(_, n, _)| n)
    }
}

/// Opens the engine of a store for a task (RocksDB in the state directory, or memory); for a
/// global store, the instance's one engine that every task reads.
pub(crate) type EngineOpener<'a> =
    &'a mut dyn FnMut(
        &StoreSpec,
        TaskId,
    ) -> Result<Arc<dyn fjord_state::KeyValueBytesStore>, StreamsError>;

/// Builds the nodes of one task from the shared graph, each node once.
pub(crate) struct Instantiator<'g> {
    graph: &'g Graph,
    application_id: &'g str,
    built: HashMap<NodeId, Box<dyn Any>>,
    pub(crate) lifecycles: Vec<(NodeId, LifeRef)>,
    task_id: TaskId,
    opener: EngineOpener<'g>,
    cache_bytes: usize,
    pub(crate) stores: Vec<StoreRef>,
}

impl<'g> Instantiator<'g> {
    pub(crate) fn new(
        graph: &'g Graph,
        application_id: &'g str,
        task_id: TaskId,
        opener: EngineOpener<'g>,
        cache_bytes: usize,
    ) -> Self {
        Instantiator {
            graph,
            application_id,
            built: HashMap::new(),
            lifecycles: Vec::new(),
            task_id,
            opener,
            cache_bytes,
            stores: Vec::new(),
        }
    }

    /// The engine of the global store `name`, which every task of the instance shares.
    pub(crate) fn global_store(
        &mut self,
        name: &str,
    ) -> Result<Arc<dyn fjord_state::KeyValueBytesStore>, StreamsError> {
        let spec = self.graph.store(name).cloned().ok_or_else(|| {
            StreamsError::Topology(format!(
                "no global store named `{name}`: add the global table to the builder"
            ))
        })?;
        (self.opener)(&spec, self.task_id)
    }

    /// The store `name` of this task, opened on first use.
    pub(crate) fn store(&mut self, name: &str) -> Result<StoreRef, StreamsError> {
        if let Some(store) = self.stores.iter().find(|s| s.borrow().spec().name == name) {
            return Ok(store.clone());
        }
        let spec = self.graph.store(name).cloned().ok_or_else(|| {
            StreamsError::Topology(format!("no state store named `{name}`: add it to the builder"))
        })?;
        let engine = (self.opener)(&spec, self.task_id)?;
        let changelog =
            spec.logged.then(|| (self.topic(&spec.changelog_topic()), self.task_id.partition));
        let store =
            Rc::new(RefCell::new(CachedStore::new(spec, engine, changelog, self.cache_bytes)));
        self.stores.push(store.clone());
        Ok(store)
    }

    /// The name of node `id`.
    pub(crate) fn name(&self, id: NodeId) -> Result<Arc<str>, StreamsError> {
        Ok(Arc::from(self.graph.node(id)?.name.as_str()))
    }

    /// The real name of a topic: internal topics get the application id as a prefix.
    pub(crate) fn topic(&self, name: &str) -> Arc<str> {
        Arc::from(self.graph.resolve_topic(self.application_id, name))
    }

    /// The node `id` of this task, built on first use.
    pub(crate) fn node<K: 'static, V: 'static>(
        &mut self,
        id: NodeId,
    ) -> Result<NodeRef<K, V>, StreamsError> {
        if let Some(built) = self.built.get(&id) {
            return built.downcast_ref::<NodeRef<K, V>>().cloned().ok_or_else(|| {
                StreamsError::Topology(format!("node {id} was built with other types"))
            });
        }
        let graph = self.graph;
        let node = graph.node(id)?;
        let factory = node.factory.downcast_ref::<NodeFactory<K, V>>().ok_or_else(|| {
            StreamsError::Topology(format!(
                "node `{}` does not take the record types its parent sends",
                node.name
            ))
        })?;
        let (built, life) = factory(self, id)?;
        self.built.insert(id, Box::new(built.clone()));
        self.lifecycles.push((id, life));
        Ok(built)
    }

    /// The children of node `id`, built.
    pub(crate) fn children<K: 'static, V: 'static>(
        &mut self,
        id: NodeId,
    ) -> Result<Children<K, V>, StreamsError> {
        let graph = self.graph;
        let mut nodes = Vec::new();
        for &child in &graph.node(id)?.children {
            let name: Arc<str> = Arc::from(graph.node(child)?.name.as_str());
            nodes.push((name, self.node::<K, V>(child)?, child));
        }
        Ok(Children { nodes })
    }

    /// Builds a source node.
    pub(crate) fn source(&mut self, id: NodeId) -> Result<SourceRef, StreamsError> {
        let graph = self.graph;
        let node = graph.node(id)?;
        let factory = node.factory.downcast_ref::<SourceFactory>().ok_or_else(|| {
            StreamsError::Topology(format!("node `{}` is not a source", node.name))
        })?;
        let (source, life) = factory(self, id)?;
        self.lifecycles.push((id, life));
        Ok(source)
    }
}

/// Lets an operator's closure send records on and report errors.
pub struct Emitter<'a, K, V> {
    pub(crate) ctx: &'a mut TaskContext,
    pub(crate) children: &'a Children<K, V>,
    pub(crate) node: &'a str,
}

impl<K: Clone, V: Clone> Emitter<'_, K, V> {
    /// Sends a record to the children.
    pub fn emit(&mut self, record: Record<K, V>) {
        self.children.forward(self.ctx, record);
    }

    /// Reports a processing error for the current record (handled by the processing error
    /// handler).
    pub fn error(&mut self, error: impl std::fmt::Display) {
        self.ctx.record_error(self.node, false, error.to_string());
    }

    /// Sends a record to the child at `index` only (for `split`).
    pub(crate) fn emit_to(&mut self, index: usize, record: Record<K, V>) {
        if let Some(child) = self.children.get(index) {
            child.borrow_mut().process(self.ctx, record);
        }
    }
}

/// A stateless operator: a closure from one record to any number of records.
pub(crate) struct StatelessNode<K, V, K2, V2, F> {
    pub(crate) name: Arc<str>,
    pub(crate) f: F,
    pub(crate) children: Children<K2, V2>,
    pub(crate) _types: std::marker::PhantomData<fn(K, V)>,
}

impl<K, V, K2: Clone, V2: Clone, F> Node<K, V> for StatelessNode<K, V, K2, V2, F>
where
    F: Fn(Record<K, V>, &mut Emitter<'_, K2, V2>),
{
    #[inline]
    fn process(&mut self, ctx: &mut TaskContext, record: Record<K, V>) {
        let mut emitter = Emitter { ctx, children: &self.children, node: &self.name };
        (self.f)(record, &mut emitter);
    }
}

impl<K, V, K2, V2, F> Lifecycle for StatelessNode<K, V, K2, V2, F> {}

/// The factory of a stateless operator node.
pub(crate) fn stateless_factory<K, V, K2, V2, F>(f: Arc<F>) -> NodeFactory<K, V>
where
    K: 'static,
    V: 'static,
    K2: Clone + 'static,
    V2: Clone + 'static,
    F: Fn(Record<K, V>, &mut Emitter<'_, K2, V2>) + Send + Sync + 'static,
{
    Box::new(move |inst: &mut Instantiator<'_>, id| {
        let children = inst.children::<K2, V2>(id)?;
        let f = f.clone();
        Ok(wrap(StatelessNode {
            name: inst.name(id)?,
            f: move |r: Record<K, V>, e: &mut Emitter<'_, K2, V2>| f(r, e),
            children,
            _types: std::marker::PhantomData,
        }))
    })
}

/// Reads raw records into typed ones.
pub(crate) struct SourceNode<K, V> {
    pub(crate) name: Arc<str>,
    pub(crate) key_serde: SerdeRef<K>,
    pub(crate) value_serde: SerdeRef<V>,
    pub(crate) timestamp_extractor: Option<crate::dsl::TimestampExtractor<K, V>>,
    pub(crate) children: Children<K, V>,
}

impl<K: Clone + 'static, V: Clone + 'static> RawSource for SourceNode<K, V> {
    fn process_current(&mut self, ctx: &mut TaskContext) {
        // Deserialize from the record in the context (no copy of its bytes), then forward with
        // the context free for the children.
        let Some(raw) = ctx.current.as_ref() else { return };
        let key = deserialize_opt(&*self.key_serde, raw.key.as_deref());
        let value = deserialize_opt(&*self.value_serde, raw.value.as_deref());
        let (raw_timestamp, topic_offset) = (raw.timestamp, raw.offset);
        let headers = raw.headers.clone();
        let key = match key {
            Ok(k) => k,
            Err(e) => return ctx.record_error(&self.name, true, format!("key: {e}")),
        };
        let value = match value {
            Ok(v) => v,
            Err(e) => return ctx.record_error(&self.name, true, format!("value: {e}")),
        };
        let timestamp = match &self.timestamp_extractor {
            Some(extract) => extract(&key, &value, raw_timestamp, ctx.stream_time),
            None => raw_timestamp,
        };
        if timestamp < 0 {
            // Kafka's default: a record without a valid timestamp is skipped and counted.
            tracing::warn!(task = %ctx.task_id, offset = topic_offset, timestamp, "skipping a record with a negative timestamp");
            ctx.dropped_records += 1;
            metrics::counter!("fjord_streams_dropped_records_total", "reason" => "invalid-timestamp")
                .increment(1);
            return;
        }
        let record = Record { key, value, timestamp, headers };
        self.children.forward(ctx, record);
    }
}

impl<K, V> Lifecycle for SourceNode<K, V> {}

/// Picks the topic of a record (Kafka's `TopicNameExtractor`).
pub(crate) type TopicExtractor<K, V> = Arc<dyn Fn(&K, &V) -> String + Send + Sync>;

/// Where a sink writes.
pub(crate) enum SinkTopic<K, V> {
    Fixed(Arc<str>),
    Dynamic(TopicExtractor<K, V>),
}

/// Serializes records and hands them to the collector.
pub(crate) struct SinkNode<K, V> {
    pub(crate) name: Arc<str>,
    pub(crate) topic: SinkTopic<K, V>,
    pub(crate) key_serde: SerdeRef<K>,
    pub(crate) value_serde: SerdeRef<V>,
    pub(crate) partitioner: Option<crate::dsl::Partitioner<K, V>>,
    pub(crate) key_buf: Vec<u8>,
    pub(crate) value_buf: Vec<u8>,
}

impl<K: 'static, V: 'static> Node<K, V> for SinkNode<K, V> {
    fn process(&mut self, ctx: &mut TaskContext, record: Record<K, V>) {
        self.key_buf.clear();
        self.value_buf.clear();
        let key_null = self.key_serde.is_null(&record.key);
        let value_null = self.value_serde.is_null(&record.value);
        if let Err(e) = self.key_serde.serialize(&record.key, &mut self.key_buf) {
            return ctx.record_error(&self.name, false, format!("key: {e}"));
        }
        if let Err(e) = self.value_serde.serialize(&record.value, &mut self.value_buf) {
            return ctx.record_error(&self.name, false, format!("value: {e}"));
        }
        let topic: Arc<str> = match &self.topic {
            SinkTopic::Fixed(t) => t.clone(),
            SinkTopic::Dynamic(f) => Arc::from(f(&record.key, &record.value)),
        };
        let partition = match &self.partitioner {
            Some(p) => {
                let count = ctx.collector.borrow_mut().partition_count(&topic);
                match count {
                    Ok(count) => Some(p(&record.key, &record.value, count) % count.max(1)),
                    Err(e) => return ctx.fail(e),
                }
            }
            None => None,
        };
        ctx.send(
            &topic,
            partition,
            (!key_null).then_some(self.key_buf.as_slice()),
            (!value_null).then_some(self.value_buf.as_slice()),
            &record.headers,
            record.timestamp,
        );
    }
}

impl<K, V> Lifecycle for SinkNode<K, V> {}

/// Wraps a user's [`Processor`].
pub(crate) struct ProcessorNode<KIn, VIn, KOut, VOut, P> {
    pub(crate) processor: P,
    pub(crate) children: Children<KOut, VOut>,
    pub(crate) node: usize,
    pub(crate) _types: std::marker::PhantomData<fn(KIn, VIn)>,
}

impl<KIn, VIn, KOut, VOut, P: Processor<KIn, VIn, KOut, VOut>> Node<KIn, VIn>
    for ProcessorNode<KIn, VIn, KOut, VOut, P>
{
    fn process(&mut self, ctx: &mut TaskContext, record: Record<KIn, VIn>) {
        let mut pctx = ProcessorContext { task: ctx, children: &self.children, node: self.node };
        self.processor.process(&mut pctx, record);
    }
}

impl<KIn, VIn, KOut, VOut, P: Processor<KIn, VIn, KOut, VOut>> Lifecycle
    for ProcessorNode<KIn, VIn, KOut, VOut, P>
{
    fn init(&mut self, ctx: &mut TaskContext) {
        let mut pctx = ProcessorContext { task: ctx, children: &self.children, node: self.node };
        self.processor.init(&mut pctx);
    }
    fn punctuate(&mut self, ctx: &mut TaskContext, id: ScheduleId, timestamp: i64) {
        let mut pctx = ProcessorContext { task: ctx, children: &self.children, node: self.node };
        self.processor.punctuate(&mut pctx, id, timestamp);
    }
    fn close(&mut self) {
        self.processor.close();
    }
}
