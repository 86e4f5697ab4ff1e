//! The DSL: `StreamsBuilder` and `KStream`, with Kafka Streams' operators and names.
//!
//! Serdes travel with a stream: a source's serdes stay known through operators that keep the
//! types (`filter`, `peek`, `merge`, ...), and a sink or repartition uses them unless told
//! otherwise. An operator that changes a type forgets that serde, and `build()` reports a sink
//! that has none.

use std::any::TypeId;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::error::StreamsError;
use crate::graph::{Graph, GraphNode, InternalTopic, InternalTopicKind, NodeId, NodeKind};
use crate::node::{
    Emitter, Instantiator, NodeFactory, ProcessorNode, SinkNode, SinkTopic, SourceFactory,
    SourceNode, stateless_factory, wrap,
};
use crate::processor::Processor;
use crate::record::Record;
use crate::serdes::SerdeRef;
use crate::topology::Topology;

/// Picks a record's timestamp from its key, value, the timestamp it was written with, and the
/// partition's stream time so far (Kafka's `TimestampExtractor`). A negative result drops the
/// record.
pub type TimestampExtractor<K, V> = Arc<dyn Fn(&K, &V, i64, i64) -> i64 + Send + Sync>;

/// Picks the partition of an output record from its key, value and the topic's partition
/// count (Kafka's `StreamPartitioner`).
pub type Partitioner<K, V> = Arc<dyn Fn(&K, &V, u32) -> u32 + Send + Sync>;

/// A branch predicate of `split`.
pub type Predicate<K, V> = Arc<dyn Fn(&K, &V) -> bool + Send + Sync>;

/// How to read a source topic (Kafka's `Consumed`).
pub struct Consumed<K, V> {
    pub(crate) key_serde: SerdeRef<K>,
    pub(crate) value_serde: SerdeRef<V>,
    pub(crate) timestamp_extractor: Option<TimestampExtractor<K, V>>,
    pub(crate) name: Option<String>,
}

impl<K, V> Consumed<K, V> {
    /// With these serdes.
    pub fn with(key_serde: SerdeRef<K>, value_serde: SerdeRef<V>) -> Self {
        Consumed { key_serde, value_serde, timestamp_extractor: None, name: None }
    }

    /// With a timestamp extractor instead of the records' own timestamps.
    pub fn with_timestamp_extractor(
        mut self,
        f: impl Fn(&K, &V, i64, i64) -> i64 + Send + Sync + 'static,
    ) -> Self {
        self.timestamp_extractor = Some(Arc::new(f));
        self
    }

    /// Names the source node.
    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }
}

/// How to write a sink topic (Kafka's `Produced`).
pub struct Produced<K, V> {
    pub(crate) key_serde: Option<SerdeRef<K>>,
    pub(crate) value_serde: Option<SerdeRef<V>>,
    pub(crate) partitioner: Option<Partitioner<K, V>>,
    pub(crate) name: Option<String>,
}

impl<K, V> Default for Produced<K, V> {
    fn default() -> Self {
        Produced { key_serde: None, value_serde: None, partitioner: None, name: None }
    }
}

impl<K, V> Produced<K, V> {
    /// With these serdes.
    pub fn with(key_serde: SerdeRef<K>, value_serde: SerdeRef<V>) -> Self {
        Produced {
            key_serde: Some(key_serde),
            value_serde: Some(value_serde),
            ..Produced::default()
        }
    }

    /// With a partitioner instead of murmur2 of the serialized key.
    pub fn with_partitioner(
        mut self,
        f: impl Fn(&K, &V, u32) -> u32 + Send + Sync + 'static,
    ) -> Self {
        self.partitioner = Some(Arc::new(f));
        self
    }

    /// Names the sink node.
    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }
}

/// How to repartition (Kafka's `Repartitioned`).
pub struct Repartitioned<K, V> {
    pub(crate) name: Option<String>,
    pub(crate) partitions: Option<u32>,
    pub(crate) key_serde: Option<SerdeRef<K>>,
    pub(crate) value_serde: Option<SerdeRef<V>>,
}

impl<K, V> Default for Repartitioned<K, V> {
    fn default() -> Self {
        Repartitioned { name: None, partitions: None, key_serde: None, value_serde: None }
    }
}

impl<K, V> Repartitioned<K, V> {
    /// With these serdes.
    pub fn with(key_serde: SerdeRef<K>, value_serde: SerdeRef<V>) -> Self {
        Repartitioned {
            key_serde: Some(key_serde),
            value_serde: Some(value_serde),
            ..Repartitioned::default()
        }
    }

    /// Names the repartition topic (`<application.id>-<name>-repartition`).
    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// With a fixed number of partitions (else: the most of the upstream source topics).
    pub fn with_partitions(mut self, partitions: u32) -> Self {
        self.partitions = Some(partitions);
        self
    }
}

pub(crate) struct BuilderState {
    pub(crate) graph: Graph,
    counter: usize,
    pub(crate) errors: Vec<String>,
}

/// Builds a topology (Kafka's `StreamsBuilder`).
pub struct StreamsBuilder {
    pub(crate) state: Rc<RefCell<BuilderState>>,
}

impl Default for StreamsBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamsBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        StreamsBuilder {
            state: Rc::new(RefCell::new(BuilderState {
                graph: Graph::default(),
                counter: 0,
                errors: Vec::new(),
            })),
        }
    }

    /// A stream of the records of `topic`.
    pub fn stream<K, V>(&self, topic: &str, consumed: Consumed<K, V>) -> KStream<K, V>
    where
        K: Clone + 'static,
        V: Clone + 'static,
    {
        self.stream_topics(&[topic], consumed)
    }

    /// A stream of the records of several topics.
    pub fn stream_topics<K, V>(&self, topics: &[&str], consumed: Consumed<K, V>) -> KStream<K, V>
    where
        K: Clone + 'static,
        V: Clone + 'static,
    {
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        let node = add_source(
            &self.state,
            topics,
            &consumed.key_serde,
            &consumed.value_serde,
            consumed.timestamp_extractor,
            consumed.name,
        );
        KStream {
            state: self.state.clone(),
            node,
            key_serde: Some(consumed.key_serde),
            value_serde: Some(consumed.value_serde),
            repartition_required: false,
        }
    }

    /// Validates the graph and freezes it into a topology.
    pub fn build(self) -> Result<Topology, StreamsError> {
        // Streams of this builder may still be alive; they keep an empty graph.
        let mut state = self.state.borrow_mut();
        let graph = std::mem::take(&mut state.graph);
        let errors = std::mem::take(&mut state.errors);
        if !errors.is_empty() {
            return Err(StreamsError::Topology(errors.join("; ")));
        }
        Topology::new(graph)
    }
}

pub(crate) fn next_name(state: &Rc<RefCell<BuilderState>>, kind: &str) -> String {
    let mut s = state.borrow_mut();
    let name = format!("KSTREAM-{kind}-{:010}", s.counter);
    s.counter += 1;
    name
}

pub(crate) fn add_node(
    state: &Rc<RefCell<BuilderState>>,
    name: String,
    kind: NodeKind,
    parents: &[NodeId],
    factory: Box<dyn std::any::Any + Send + Sync>,
) -> NodeId {
    let mut s = state.borrow_mut();
    let id = s.graph.nodes.len();
    s.graph.nodes.push(GraphNode {
        name,
        kind,
        parents: parents.to_vec(),
        children: Vec::new(),
        stores: Vec::new(),
        factory,
    });
    for &p in parents {
        s.graph.nodes[p].children.push(id);
    }
    id
}

fn add_source<K: Clone + 'static, V: Clone + 'static>(
    state: &Rc<RefCell<BuilderState>>,
    topics: Vec<String>,
    key_serde: &SerdeRef<K>,
    value_serde: &SerdeRef<V>,
    timestamp_extractor: Option<TimestampExtractor<K, V>>,
    name: Option<String>,
) -> NodeId {
    let name = name.unwrap_or_else(|| next_name(state, "SOURCE"));
    let (key_serde, value_serde) = (key_serde.clone(), value_serde.clone());
    let factory: SourceFactory = Box::new(move |inst: &mut Instantiator<'_>, id| {
        let children = inst.children::<K, V>(id)?;
        let node = SourceNode {
            name: inst.name(id)?,
            key_serde: key_serde.clone(),
            value_serde: value_serde.clone(),
            timestamp_extractor: timestamp_extractor.clone(),
            children,
        };
        let rc = Rc::new(RefCell::new(node));
        Ok((rc.clone(), rc))
    });
    add_node(state, name, NodeKind::Source { topics }, &[], Box::new(factory))
}

/// Keeps a serde if the type did not change.
fn same_type_serde<A: 'static, B: 'static>(serde: &Option<SerdeRef<A>>) -> Option<SerdeRef<B>> {
    if TypeId::of::<A>() != TypeId::of::<B>() {
        return None;
    }
    let any: Box<dyn std::any::Any> = Box::new(serde.clone()?);
    any.downcast::<SerdeRef<B>>().ok().map(|b| *b)
}

/// A stream of records (Kafka's `KStream`).
pub struct KStream<K, V> {
    pub(crate) state: Rc<RefCell<BuilderState>>,
    pub(crate) node: NodeId,
    pub(crate) key_serde: Option<SerdeRef<K>>,
    pub(crate) value_serde: Option<SerdeRef<V>>,
    /// A key-changing operator ran since the last repartition: grouping and joining must
    /// repartition first.
    pub(crate) repartition_required: bool,
}

impl<K, V> Clone for KStream<K, V> {
    fn clone(&self) -> Self {
        KStream {
            state: self.state.clone(),
            node: self.node,
            key_serde: self.key_serde.clone(),
            value_serde: self.value_serde.clone(),
            repartition_required: self.repartition_required,
        }
    }
}

impl<K: Clone + 'static, V: Clone + 'static> KStream<K, V> {
    pub(crate) fn derive<K2: 'static, V2: 'static>(
        &self,
        node: NodeId,
        key_changed: bool,
    ) -> KStream<K2, V2> {
        KStream {
            state: self.state.clone(),
            node,
            key_serde: same_type_serde::<K, K2>(&self.key_serde),
            value_serde: same_type_serde::<V, V2>(&self.value_serde),
            repartition_required: self.repartition_required || key_changed,
        }
    }

    /// Adds a stateless operator node; `f` gets each record and an emitter for its output.
    pub fn stateless<K2, V2, F>(&self, kind: &str, key_changed: bool, f: F) -> KStream<K2, V2>
    where
        K2: Clone + 'static,
        V2: Clone + 'static,
        F: Fn(Record<K, V>, &mut Emitter<'_, K2, V2>) + Send + Sync + 'static,
    {
        let name = next_name(&self.state, kind);
        let factory: NodeFactory<K, V> = stateless_factory(Arc::new(f));
        let node =
            add_node(&self.state, name, NodeKind::Processor, &[self.node], Box::new(factory));
        self.derive(node, key_changed)
    }

    /// Gives the node this stream comes from a name of its own (Kafka's `Named`); names must be
    /// unique in the topology.
    pub fn named(self, name: &str) -> Self {
        self.state.borrow_mut().graph.nodes[self.node].name = name.to_string();
        self
    }

    /// Keeps the records for which `predicate` holds.
    pub fn filter(
        &self,
        predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static,
    ) -> KStream<K, V> {
        self.stateless("FILTER", false, move |r: Record<K, V>, e: &mut Emitter<'_, K, V>| {
            if predicate(&r.key, &r.value) {
                e.emit(r);
            }
        })
    }

    /// Drops the records for which `predicate` holds.
    pub fn filter_not(
        &self,
        predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static,
    ) -> KStream<K, V> {
        self.stateless("FILTER", false, move |r: Record<K, V>, e: &mut Emitter<'_, K, V>| {
            if !predicate(&r.key, &r.value) {
                e.emit(r);
            }
        })
    }

    /// Maps each record to a new key and value (changes the key: grouping afterwards
    /// repartitions).
    pub fn map<K2: Clone + 'static, V2: Clone + 'static>(
        &self,
        f: impl Fn(K, V) -> (K2, V2) + Send + Sync + 'static,
    ) -> KStream<K2, V2> {
        self.stateless("MAP", true, move |r: Record<K, V>, e: &mut Emitter<'_, K2, V2>| {
            let (key, value) = f(r.key, r.value);
            e.emit(Record { key, value, timestamp: r.timestamp, headers: r.headers });
        })
    }

    /// Maps each value, keeping the key.
    pub fn map_values<V2: Clone + 'static>(
        &self,
        f: impl Fn(V) -> V2 + Send + Sync + 'static,
    ) -> KStream<K, V2> {
        self.stateless("MAPVALUES", false, move |r: Record<K, V>, e: &mut Emitter<'_, K, V2>| {
            let value = f(r.value);
            e.emit(Record { key: r.key, value, timestamp: r.timestamp, headers: r.headers });
        })
    }

    /// Maps each value with read access to the key.
    pub fn map_values_with_key<V2: Clone + 'static>(
        &self,
        f: impl Fn(&K, V) -> V2 + Send + Sync + 'static,
    ) -> KStream<K, V2> {
        self.stateless("MAPVALUES", false, move |r: Record<K, V>, e: &mut Emitter<'_, K, V2>| {
            let value = f(&r.key, r.value);
            e.emit(Record { key: r.key, value, timestamp: r.timestamp, headers: r.headers });
        })
    }

    /// Maps each value with a fallible function; an error goes to the processing error
    /// handler (fail, log and continue, or dead-letter topic).
    pub fn try_map_values<V2: Clone + 'static, E: std::fmt::Display>(
        &self,
        f: impl Fn(V) -> Result<V2, E> + Send + Sync + 'static,
    ) -> KStream<K, V2> {
        self.stateless("MAPVALUES", false, move |r: Record<K, V>, e: &mut Emitter<'_, K, V2>| {
            match f(r.value) {
                Ok(value) => {
                    e.emit(Record { key: r.key, value, timestamp: r.timestamp, headers: r.headers })
                }
                Err(error) => e.error(error),
            }
        })
    }

    /// Maps each record with a fallible function (changes the key).
    pub fn try_map<K2: Clone + 'static, V2: Clone + 'static, E: std::fmt::Display>(
        &self,
        f: impl Fn(K, V) -> Result<(K2, V2), E> + Send + Sync + 'static,
    ) -> KStream<K2, V2> {
        self.stateless("MAP", true, move |r: Record<K, V>, e: &mut Emitter<'_, K2, V2>| {
            match f(r.key, r.value) {
                Ok((key, value)) => {
                    e.emit(Record { key, value, timestamp: r.timestamp, headers: r.headers })
                }
                Err(error) => e.error(error),
            }
        })
    }

    /// Maps each record to any number of records (changes the key).
    pub fn flat_map<K2: Clone + 'static, V2: Clone + 'static, I>(
        &self,
        f: impl Fn(K, V) -> I + Send + Sync + 'static,
    ) -> KStream<K2, V2>
    where
        I: IntoIterator<Item = (K2, V2)>,
    {
        self.stateless("FLATMAP", true, move |r: Record<K, V>, e: &mut Emitter<'_, K2, V2>| {
            for (key, value) in f(r.key, r.value) {
                e.emit(Record { key, value, timestamp: r.timestamp, headers: r.headers.clone() });
            }
        })
    }

    /// Maps each value to any number of values, keeping the key.
    pub fn flat_map_values<V2: Clone + 'static, I>(
        &self,
        f: impl Fn(V) -> I + Send + Sync + 'static,
    ) -> KStream<K, V2>
    where
        I: IntoIterator<Item = V2>,
    {
        self.stateless(
            "FLATMAPVALUES",
            false,
            move |r: Record<K, V>, e: &mut Emitter<'_, K, V2>| {
                for value in f(r.value) {
                    e.emit(Record {
                        key: r.key.clone(),
                        value,
                        timestamp: r.timestamp,
                        headers: r.headers.clone(),
                    });
                }
            },
        )
    }

    /// Sets a new key computed from each record (changes the key).
    pub fn select_key<K2: Clone + 'static>(
        &self,
        f: impl Fn(&K, &V) -> K2 + Send + Sync + 'static,
    ) -> KStream<K2, V> {
        self.stateless("KEY-SELECT", true, move |r: Record<K, V>, e: &mut Emitter<'_, K2, V>| {
            let key = f(&r.key, &r.value);
            e.emit(r.with_key(key));
        })
    }

    /// Looks at each record and passes it on.
    pub fn peek(&self, f: impl Fn(&K, &V) + Send + Sync + 'static) -> KStream<K, V> {
        self.stateless("PEEK", false, move |r: Record<K, V>, e: &mut Emitter<'_, K, V>| {
            f(&r.key, &r.value);
            e.emit(r);
        })
    }

    /// Runs `f` on each record; nothing comes out (Kafka's `foreach`).
    pub fn for_each(&self, f: impl Fn(K, V) + Send + Sync + 'static) {
        let _: KStream<K, V> =
            self.stateless("FOREACH", false, move |r: Record<K, V>, _e: &mut Emitter<'_, K, V>| {
                f(r.key, r.value);
            });
    }

    /// Splits the stream by predicates: each record goes to the first branch whose predicate
    /// holds, or to the default branch (Kafka's `split()`).
    pub fn split(&self) -> BranchedKStream<K, V> {
        BranchedKStream { stream: self.clone(), prefix: None, branches: Vec::new() }
    }

    /// Merges another stream into this one.
    pub fn merge(&self, other: &KStream<K, V>) -> KStream<K, V> {
        let name = next_name(&self.state, "MERGE");
        let factory: NodeFactory<K, V> =
            stateless_factory(Arc::new(|r: Record<K, V>, e: &mut Emitter<'_, K, V>| e.emit(r)));
        let node = add_node(
            &self.state,
            name,
            NodeKind::Processor,
            &[self.node, other.node],
            Box::new(factory),
        );
        let mut merged: KStream<K, V> = self.derive(node, other.repartition_required);
        if merged.key_serde.is_none() {
            merged.key_serde = other.key_serde.clone();
        }
        if merged.value_serde.is_none() {
            merged.value_serde = other.value_serde.clone();
        }
        merged
    }

    /// Runs a custom processor on each record (Kafka's `process`); `supplier` makes one
    /// processor per task. Counts as a key change.
    pub fn process<K2, V2, P>(
        &self,
        supplier: impl Fn() -> P + Send + Sync + 'static,
    ) -> KStream<K2, V2>
    where
        K2: Clone + 'static,
        V2: Clone + 'static,
        P: Processor<K, V, K2, V2>,
    {
        let name = next_name(&self.state, "PROCESSOR");
        let factory: NodeFactory<K, V> = Box::new(move |inst: &mut Instantiator<'_>, id| {
            let children = inst.children::<K2, V2>(id)?;
            Ok(wrap(ProcessorNode {
                processor: supplier(),
                children,
                node: id,
                _types: std::marker::PhantomData,
            }))
        });
        let node =
            add_node(&self.state, name, NodeKind::Processor, &[self.node], Box::new(factory));
        self.derive(node, true)
    }

    /// Writes the stream to a topic with the stream's serdes.
    pub fn to(&self, topic: &str) {
        self.to_with(topic, Produced::default());
    }

    /// Writes the stream to a topic.
    pub fn to_with(&self, topic: &str, produced: Produced<K, V>) {
        self.add_sink(SinkTopic::Fixed(Arc::from(topic)), Some(topic.to_string()), produced);
    }

    /// Writes each record to the topic `extractor` names for it.
    pub fn to_dynamic(
        &self,
        extractor: impl Fn(&K, &V) -> String + Send + Sync + 'static,
        produced: Produced<K, V>,
    ) {
        self.add_sink(SinkTopic::Dynamic(Arc::new(extractor)), None, produced);
    }

    fn add_sink(
        &self,
        topic: SinkTopic<K, V>,
        topic_name: Option<String>,
        produced: Produced<K, V>,
    ) -> NodeId {
        let name = produced.name.clone().unwrap_or_else(|| next_name(&self.state, "SINK"));
        let key_serde = produced.key_serde.or_else(|| self.key_serde.clone());
        let value_serde = produced.value_serde.or_else(|| self.value_serde.clone());
        let (Some(key_serde), Some(value_serde)) = (key_serde, value_serde) else {
            let what = topic_name.clone().unwrap_or_else(|| "a dynamic topic".into());
            self.state.borrow_mut().errors.push(format!(
                "sink `{name}` to {what} has no key or value serde: the stream's types changed since its source; pass Produced::with(key_serde, value_serde)"
            ));
            let factory: NodeFactory<K, V> =
                Box::new(|_, _| Err(StreamsError::Topology("sink without serde".into())));
            return add_node(
                &self.state,
                name,
                NodeKind::Sink { topic: topic_name },
                &[self.node],
                Box::new(factory),
            );
        };
        let partitioner = produced.partitioner;
        let fixed = match &topic {
            SinkTopic::Fixed(t) => Some(t.clone()),
            SinkTopic::Dynamic(_) => None,
        };
        let dynamic = match topic {
            SinkTopic::Dynamic(f) => Some(f),
            SinkTopic::Fixed(_) => None,
        };
        let factory: NodeFactory<K, V> = Box::new(move |inst: &mut Instantiator<'_>, id| {
            let topic = match (&fixed, &dynamic) {
                (Some(t), _) => SinkTopic::Fixed(inst.topic(t)),
                (None, Some(f)) => SinkTopic::Dynamic(f.clone()),
                (None, None) => return Err(StreamsError::Topology("sink without topic".into())),
            };
            Ok(wrap(SinkNode {
                name: inst.name(id)?,
                topic,
                key_serde: key_serde.clone(),
                value_serde: value_serde.clone(),
                partitioner: partitioner.clone(),
                key_buf: Vec::new(),
                value_buf: Vec::new(),
            }))
        });
        add_node(
            &self.state,
            name,
            NodeKind::Sink { topic: topic_name },
            &[self.node],
            Box::new(factory),
        )
    }

    /// Writes the stream through an internal repartition topic and reads it back, so that
    /// records with the same key meet in the same task (Kafka's `repartition()`).
    pub fn repartition(&self) -> KStream<K, V> {
        self.repartition_with(Repartitioned::default())
    }

    /// Repartitions with a name, partition count or serdes of its own.
    pub fn repartition_with(&self, options: Repartitioned<K, V>) -> KStream<K, V> {
        let base = options.name.clone().unwrap_or_else(|| next_name(&self.state, "REPARTITION"));
        let topic = format!("{base}-repartition");
        self.state.borrow_mut().graph.internal_topics.push(InternalTopic {
            name: topic.clone(),
            kind: InternalTopicKind::Repartition,
            partitions: options.partitions,
        });
        let key_serde = options.key_serde.or_else(|| self.key_serde.clone());
        let value_serde = options.value_serde.or_else(|| self.value_serde.clone());
        self.add_sink(
            SinkTopic::Fixed(Arc::from(topic.as_str())),
            Some(topic.clone()),
            Produced {
                key_serde: key_serde.clone(),
                value_serde: value_serde.clone(),
                partitioner: None,
                name: Some(format!("{base}-sink")),
            },
        );
        let (Some(key_serde), Some(value_serde)) = (key_serde, value_serde) else {
            // The sink above recorded the missing serde; keep building so every error is
            // reported at once.
            return self.clone();
        };
        let node = add_source(
            &self.state,
            vec![topic],
            &key_serde,
            &value_serde,
            None,
            Some(format!("{base}-source")),
        );
        KStream {
            state: self.state.clone(),
            node,
            key_serde: Some(key_serde),
            value_serde: Some(value_serde),
            repartition_required: false,
        }
    }
}

/// A split of a stream into named branches (Kafka's `BranchedKStream`).
pub struct BranchedKStream<K, V> {
    stream: KStream<K, V>,
    prefix: Option<String>,
    branches: Vec<(String, Option<Predicate<K, V>>)>,
}

impl<K: Clone + 'static, V: Clone + 'static> BranchedKStream<K, V> {
    /// Prefixes the branch names (Kafka's `split(Named.as(prefix))`).
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = Some(prefix.to_string());
        self
    }

    /// Adds a branch for the records `predicate` accepts that no earlier branch took.
    pub fn branch(
        mut self,
        name: &str,
        predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.branches.push((name.to_string(), Some(Arc::new(predicate))));
        self
    }

    /// Adds the branch for records no predicate accepted, and finishes the split.
    pub fn default_branch(mut self, name: &str) -> BTreeMap<String, KStream<K, V>> {
        self.branches.push((name.to_string(), None));
        self.finish()
    }

    /// Finishes the split: records no predicate accepts are dropped. Returns the branches by
    /// name (prefixed).
    pub fn finish(self) -> BTreeMap<String, KStream<K, V>> {
        let prefix = self.prefix.unwrap_or_default();
        let predicates: Vec<Option<Predicate<K, V>>> =
            self.branches.iter().map(|(_, p)| p.clone()).collect();
        let split = self.stream.stateless(
            "BRANCH",
            false,
            move |r: Record<K, V>, e: &mut Emitter<'_, K, V>| {
                for (i, predicate) in predicates.iter().enumerate() {
                    match predicate {
                        Some(p) if !p(&r.key, &r.value) => continue,
                        _ => return e.emit_to(i, r),
                    }
                }
            },
        );
        let mut out = BTreeMap::new();
        for (name, _) in &self.branches {
            let full = format!("{prefix}{name}");
            let branch = split
                .stateless("BRANCHCHILD", false, |r: Record<K, V>, e: &mut Emitter<'_, K, V>| {
                    e.emit(r)
                })
                .named(&full);
            out.insert(full, branch);
        }
        out
    }
}
