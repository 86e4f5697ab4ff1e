//! The stateful DSL: grouping, aggregations, tables, and stream-table joins.
//!
//! A [`KTable`] node forwards `Record<K, Change<V>>`: each update of a row with the row's old
//! value, so that table operators downstream can undo it (a filter that drops a row it passed
//! before, a re-grouping that subtracts the old value from its old group). Aggregations and
//! table sources own a key-value store behind the record cache (`state.rs`): with caching on,
//! repeated updates of a key between commits reach downstream as one update, emitted at the
//! commit.
//!
//! Every store gets a changelog topic (`<application.id>-<store>-changelog`, compacted) unless
//! logging is disabled, and the sub-topology that owns a store is the only one that touches it:
//! a stream-table join puts the join and the table in one sub-topology, and the runtime checks
//! at start that the topics they read are co-partitioned.

use std::marker::PhantomData;
use std::sync::Arc;

use crate::dsl::{BuilderState, KStream, StreamsBuilder, add_node, next_name};
use crate::error::StreamsError;
use crate::graph::{InternalTopic, InternalTopicKind, NodeId, NodeKind};
use crate::node::{
    Children, Emitter, Instantiator, Lifecycle, Node, NodeFactory, TaskContext, wrap,
};
use crate::record::Record;
use crate::serdes::{Serde, SerdeError, SerdeRef, Serdes};
use crate::state::{Change, KeyValueStore, StoreKind, StoreSpec};

use std::cell::RefCell;
use std::rc::Rc;

/// How an aggregation or table keeps its state (Kafka's `Materialized`): the store's name (its
/// changelog and interactive queries use it), serdes, engine, cache and changelog.
pub struct Materialized<K, V> {
    pub(crate) name: Option<String>,
    pub(crate) key_serde: Option<SerdeRef<K>>,
    pub(crate) value_serde: Option<SerdeRef<V>>,
    pub(crate) persistent: bool,
    pub(crate) cached: bool,
    pub(crate) logged: bool,
}

impl<K, V> Default for Materialized<K, V> {
    fn default() -> Self {
        Materialized {
            name: None,
            key_serde: None,
            value_serde: None,
            persistent: true,
            cached: true,
            logged: true,
        }
    }
}

impl<K, V> Materialized<K, V> {
    /// A store named `name` (Kafka's `Materialized.as(name)`), queryable under that name.
    pub fn named(name: &str) -> Self {
        Materialized { name: Some(name.to_string()), ..Materialized::default() }
    }

    /// With these serdes.
    pub fn with(key_serde: SerdeRef<K>, value_serde: SerdeRef<V>) -> Self {
        Materialized {
            key_serde: Some(key_serde),
            value_serde: Some(value_serde),
            ..Materialized::default()
        }
    }

    /// With this key serde.
    pub fn with_key_serde(mut self, serde: SerdeRef<K>) -> Self {
        self.key_serde = Some(serde);
        self
    }

    /// With this value serde.
    pub fn with_value_serde(mut self, serde: SerdeRef<V>) -> Self {
        self.value_serde = Some(serde);
        self
    }

    /// Keeps the store in memory instead of RocksDB (its changelog still restores it).
    pub fn in_memory(mut self) -> Self {
        self.persistent = false;
        self
    }

    /// Writes every update through to the store and downstream at once (Kafka's
    /// `withCachingDisabled`).
    pub fn with_caching_disabled(mut self) -> Self {
        self.cached = false;
        self
    }

    /// No changelog topic: the state is lost when the task moves or a memory store restarts.
    pub fn with_logging_disabled(mut self) -> Self {
        self.logged = false;
        self
    }
}

/// How to group a stream when grouping repartitions it (Kafka's `Grouped`).
pub struct Grouped<K, V> {
    pub(crate) name: Option<String>,
    pub(crate) key_serde: Option<SerdeRef<K>>,
    pub(crate) value_serde: Option<SerdeRef<V>>,
}

impl<K, V> Default for Grouped<K, V> {
    fn default() -> Self {
        Grouped { name: None, key_serde: None, value_serde: None }
    }
}

impl<K, V> Grouped<K, V> {
    /// With these serdes for the repartition topic.
    pub fn with(key_serde: SerdeRef<K>, value_serde: SerdeRef<V>) -> Self {
        Grouped { name: None, key_serde: Some(key_serde), value_serde: Some(value_serde) }
    }

    /// Names the repartition topic (`<application.id>-<name>-repartition`).
    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }
}

/// Registers a store of a materialization with the builder: its spec, and its changelog topic
/// when logged. Returns its name and serdes, or records a build error when a serde is missing.
pub(crate) fn add_store<K, V>(
    state: &Rc<RefCell<BuilderState>>,
    materialized: Materialized<K, V>,
    kind: StoreKind,
    key_serde: Option<SerdeRef<K>>,
    value_serde: Option<SerdeRef<V>>,
    what: &str,
) -> Option<(String, SerdeRef<K>, SerdeRef<V>)> {
    let name = materialized.name.unwrap_or_else(|| next_name(state, "STATE-STORE"));
    let key_serde = materialized.key_serde.or(key_serde);
    let value_serde = materialized.value_serde.or(value_serde);
    let mut s = state.borrow_mut();
    let (Some(key_serde), Some(value_serde)) = (key_serde, value_serde) else {
        s.errors.push(format!(
            "{what} store `{name}` has no key or value serde: pass Materialized::with(key_serde, value_serde)"
        ));
        return None;
    };
    if s.graph.store(&name).is_some() {
        s.errors.push(format!("two state stores are named `{name}`: store names must be unique"));
        return None;
    }
    let spec = StoreSpec {
        name: name.clone(),
        kind,
        persistent: materialized.persistent,
        cached: materialized.cached,
        logged: materialized.logged,
        global_topic: None,
    };
    if spec.logged {
        s.graph.internal_topics.push(InternalTopic {
            name: spec.changelog_topic(),
            kind: InternalTopicKind::Changelog,
            partitions: None,
        });
    }
    s.graph.stores.push(Arc::new(spec));
    Some((name, key_serde, value_serde))
}

/// Adds a processor node that uses a store.
pub(crate) fn add_store_node(
    state: &Rc<RefCell<BuilderState>>,
    kind: &str,
    parents: &[NodeId],
    stores: &[&str],
    factory: Box<dyn std::any::Any + Send + Sync>,
) -> NodeId {
    let name = next_name(state, kind);
    let id = add_node(state, name, NodeKind::Processor, parents, factory);
    state.borrow_mut().graph.nodes[id].stores = stores.iter().map(|s| s.to_string()).collect();
    id
}

/// The table of an operator that could not be added (a build error was recorded): a node
/// that reports it if it is ever instantiated, with records of `KIn`/`VIn` from `parent`.
pub(crate) fn failed_table<KIn: 'static, VIn: 'static, K, V>(
    state: &Rc<RefCell<BuilderState>>,
    kind: &str,
    parent: NodeId,
) -> KTable<K, V> {
    let factory: NodeFactory<KIn, VIn> =
        Box::new(|_, _| Err(StreamsError::Topology("node with a build error".into())));
    let node = add_store_node(state, kind, &[parent], &[], Box::new(factory));
    KTable::new(state, node, None, None, None)
}

/// Forwards what a store's cache flushed as table updates.
pub(crate) fn forward_changes<K: Clone + 'static, V: Clone + 'static>(
    store: &KeyValueStore<K, V>,
    ctx: &mut TaskContext,
    children: &Children<K, Change<V>>,
) {
    match store.flush_changes(ctx) {
        Ok(records) => {
            for record in records {
                children.forward(ctx, record);
            }
        }
        Err(e) => ctx.fail(e),
    }
}

/// Aggregates records into a key-value store: `aggregator(key, value, old)` gives the new
/// aggregate, or `None` to delete the row. Count, reduce and aggregate of streams and grouped
/// tables, and table sources, are all this node.
struct AggregateNode<K, V, A, F> {
    name: Arc<str>,
    store: KeyValueStore<K, A>,
    aggregator: F,
    children: Children<K, Change<A>>,
    _types: PhantomData<fn(V)>,
}

impl<K, V, A, F> Node<K, V> for AggregateNode<K, V, A, F>
where
    K: Clone + 'static,
    A: Clone + 'static,
    F: Fn(&K, V, Option<A>) -> Option<A>,
{
    fn process(&mut self, ctx: &mut TaskContext, record: Record<K, V>) {
        if self.store.key_serde.is_null(&record.key) {
            return ctx.skip_record(&self.name, "null-key");
        }
        let aggregator = &self.aggregator;
        let written = self.store.update(&record.key, record.timestamp, |old| {
            aggregator(&record.key, record.value, old)
        });
        if let Err(e) = written {
            return ctx.fail(e);
        }
        if self.store.needs_flush() {
            forward_changes(&self.store, ctx, &self.children);
        }
    }
}

impl<K: Clone + 'static, V, A: Clone + 'static, F> Lifecycle for AggregateNode<K, V, A, F> {
    fn flush(&mut self, ctx: &mut TaskContext) {
        forward_changes(&self.store, ctx, &self.children);
    }
}

fn aggregate_factory<K, V, A, F>(
    store: String,
    key_serde: SerdeRef<K>,
    value_serde: SerdeRef<A>,
    aggregator: Arc<F>,
) -> NodeFactory<K, V>
where
    K: Clone + 'static,
    V: 'static,
    A: Clone + 'static,
    F: Fn(&K, V, Option<A>) -> Option<A> + Send + Sync + 'static,
{
    Box::new(move |inst: &mut Instantiator<'_>, id| {
        let children = inst.children::<K, Change<A>>(id)?;
        let store = KeyValueStore::new(inst.store(&store)?, key_serde.clone(), value_serde.clone());
        let aggregator = aggregator.clone();
        Ok(wrap(AggregateNode {
            name: inst.name(id)?,
            store,
            aggregator: move |k: &K, v: V, old: Option<A>| aggregator(k, v, old),
            children,
            _types: PhantomData,
        }))
    })
}

/// Adds an aggregation of the records of `parent` and returns its table.
fn aggregate_into_table<K, V, A, F>(
    state: &Rc<RefCell<BuilderState>>,
    parent: NodeId,
    key_serde: Option<SerdeRef<K>>,
    materialized: Materialized<K, A>,
    default_value_serde: Option<SerdeRef<A>>,
    aggregator: F,
) -> KTable<K, A>
where
    K: Clone + 'static,
    V: 'static,
    A: Clone + 'static,
    F: Fn(&K, V, Option<A>) -> Option<A> + Send + Sync + 'static,
{
    let store = add_store(
        state,
        materialized,
        StoreKind::KeyValue,
        key_serde,
        default_value_serde,
        "aggregation",
    );
    let Some((store, key_serde, value_serde)) = store else {
        return failed_table::<K, V, K, A>(state, "AGGREGATE", parent);
    };
    let factory = aggregate_factory::<K, V, A, F>(
        store.clone(),
        key_serde.clone(),
        value_serde.clone(),
        Arc::new(aggregator),
    );
    let node = add_store_node(state, "AGGREGATE", &[parent], &[&store], Box::new(factory));
    KTable::new(state, node, Some(key_serde), Some(value_serde), Some(store))
}

impl<K: Clone + 'static, V: Clone + 'static> KStream<K, V> {
    /// Groups the records by their key, repartitioning first if a key-changing operator ran
    /// since the stream's source (Kafka's `groupByKey`).
    pub fn group_by_key(&self) -> KGroupedStream<K, V> {
        self.group_by_key_with(Grouped::default())
    }

    /// Groups by key with serdes or a name for the repartition topic.
    pub fn group_by_key_with(&self, grouped: Grouped<K, V>) -> KGroupedStream<K, V> {
        let mut stream = self.clone();
        if grouped.key_serde.is_some() {
            stream.key_serde = grouped.key_serde.clone();
        }
        if grouped.value_serde.is_some() {
            stream.value_serde = grouped.value_serde.clone();
        }
        if stream.repartition_required {
            stream = stream.repartition_with(crate::dsl::Repartitioned {
                name: grouped.name,
                ..Default::default()
            });
        }
        KGroupedStream { stream }
    }

    /// Groups the records by a new key, through a repartition topic (Kafka's `groupBy`).
    pub fn group_by<K2: Clone + 'static>(
        &self,
        selector: impl Fn(&K, &V) -> K2 + Send + Sync + 'static,
        grouped: Grouped<K2, V>,
    ) -> KGroupedStream<K2, V> {
        self.select_key(selector).group_by_key_with(grouped)
    }

    /// Joins each record with the row of its key in `table` (Kafka's stream-table inner
    /// join); records whose key has no row are dropped. The stream is repartitioned first if
    /// its key changed; the table must be materialized (a source table or an aggregation).
    pub fn join<VT: Clone + 'static, VR: Clone + 'static>(
        &self,
        table: &KTable<K, VT>,
        joiner: impl Fn(&V, &VT) -> VR + Send + Sync + 'static,
    ) -> KStream<K, VR> {
        self.stream_table_join(table, "JOIN", move |v, t| t.map(|t| joiner(v, t)))
    }

    /// Joins each record with the row of its key in `table`, if any (Kafka's stream-table
    /// left join).
    pub fn left_join<VT: Clone + 'static, VR: Clone + 'static>(
        &self,
        table: &KTable<K, VT>,
        joiner: impl Fn(&V, Option<&VT>) -> VR + Send + Sync + 'static,
    ) -> KStream<K, VR> {
        self.stream_table_join(table, "LEFTJOIN", move |v, t| Some(joiner(v, t)))
    }

    fn stream_table_join<VT: Clone + 'static, VR: Clone + 'static>(
        &self,
        table: &KTable<K, VT>,
        kind: &str,
        joiner: impl Fn(&V, Option<&VT>) -> Option<VR> + Send + Sync + 'static,
    ) -> KStream<K, VR> {
        let stream = if self.repartition_required { self.repartition() } else { self.clone() };
        let (Some(store), Some(key_serde), Some(value_serde)) =
            (table.store.clone(), table.key_serde.clone(), table.value_serde.clone())
        else {
            let table_node = self.state.borrow().graph.nodes[table.node].name.clone();
            self.state.borrow_mut().errors.push(format!(
                "a stream-table join needs a materialized table: join with a source table or an aggregation, or materialize the table first (table node `{table_node}`)"
            ));
            let failed: KTable<K, VR> = failed_table::<K, V, K, VR>(&self.state, kind, stream.node);
            return stream.derive(failed.node, false);
        };
        let joiner = Arc::new(joiner);
        let factory: NodeFactory<K, V> = Box::new(move |inst: &mut Instantiator<'_>, id| {
            let children = inst.children::<K, VR>(id)?;
            let table =
                KeyValueStore::new(inst.store(&store)?, key_serde.clone(), value_serde.clone());
            let joiner = joiner.clone();
            Ok(wrap(StreamTableJoinNode {
                name: inst.name(id)?,
                table,
                joiner: move |v: &V, t: Option<&VT>| joiner(v, t),
                children,
                _types: PhantomData,
            }))
        });
        let store_name = table.store.clone().unwrap_or_default();
        let node =
            add_store_node(&self.state, kind, &[stream.node], &[&store_name], Box::new(factory));
        self.state.borrow_mut().graph.copartitioned.push(node);
        stream.derive(node, false)
    }
}

/// Forwards a stream-table join's result with the stream record's key, timestamp and headers.
/// An inner join without a result drops the record; one whose (mapped) key is null is counted,
/// as Kafka does.
pub(crate) fn forward_joined<K: Clone + 'static, V, VR: Clone + 'static>(
    ctx: &mut TaskContext,
    children: &Children<K, VR>,
    node: &str,
    record: Record<K, V>,
    joined: Option<VR>,
    null_key: bool,
) {
    match joined {
        Some(value) => {
            let out = Record {
                key: record.key,
                value,
                timestamp: record.timestamp,
                headers: record.headers,
            };
            children.forward(ctx, out);
        }
        None if null_key => ctx.skip_record(node, "null-key"),
        None => {}
    }
}

/// Looks each stream record's key up in a table's store.
struct StreamTableJoinNode<K, V, VT, VR, F> {
    name: Arc<str>,
    table: KeyValueStore<K, VT>,
    joiner: F,
    children: Children<K, VR>,
    _types: PhantomData<fn(V)>,
}

impl<K, V, VT, VR, F> Node<K, V> for StreamTableJoinNode<K, V, VT, VR, F>
where
    K: Clone + 'static,
    VT: 'static,
    VR: Clone + 'static,
    F: Fn(&V, Option<&VT>) -> Option<VR>,
{
    fn process(&mut self, ctx: &mut TaskContext, record: Record<K, V>) {
        let row = if self.table.key_serde.is_null(&record.key) {
            None
        } else {
            match self.table.get(&record.key) {
                Ok(row) => row,
                Err(e) => return ctx.fail(e),
            }
        };
        let null_key = row.is_none() && self.table.key_serde.is_null(&record.key);
        let joined = (self.joiner)(&record.value, row.as_ref());
        forward_joined(ctx, &self.children, &self.name, record, joined, null_key);
    }
}

impl<K, V, VT, VR, F> Lifecycle for StreamTableJoinNode<K, V, VT, VR, F> {}

/// A grouped stream, ready to aggregate (Kafka's `KGroupedStream`).
pub struct KGroupedStream<K, V> {
    pub(crate) stream: KStream<K, V>,
}

impl<K: Clone + 'static, V: Clone + 'static> KGroupedStream<K, V> {
    /// Counts the records per key.
    pub fn count(&self, materialized: Materialized<K, i64>) -> KTable<K, i64> {
        aggregate_into_table(
            &self.stream.state,
            self.stream.node,
            self.stream.key_serde.clone(),
            materialized,
            Some(Serdes::i64()),
            |_: &K, _: V, old: Option<i64>| Some(old.unwrap_or(0) + 1),
        )
    }

    /// Combines the values per key: the first value as it is, then `reducer(aggregate, value)`.
    pub fn reduce(
        &self,
        reducer: impl Fn(V, V) -> V + Send + Sync + 'static,
        materialized: Materialized<K, V>,
    ) -> KTable<K, V> {
        aggregate_into_table(
            &self.stream.state,
            self.stream.node,
            self.stream.key_serde.clone(),
            materialized,
            self.stream.value_serde.clone(),
            move |_: &K, value: V, old: Option<V>| {
                Some(match old {
                    Some(old) => reducer(old, value),
                    None => value,
                })
            },
        )
    }

    /// Folds the values per key into an aggregate that starts at `initializer()`.
    pub fn aggregate<A: Clone + 'static>(
        &self,
        initializer: impl Fn() -> A + Send + Sync + 'static,
        aggregator: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
        materialized: Materialized<K, A>,
    ) -> KTable<K, A> {
        aggregate_into_table(
            &self.stream.state,
            self.stream.node,
            self.stream.key_serde.clone(),
            materialized,
            None,
            move |key: &K, value: V, old: Option<A>| {
                Some(aggregator(key, value, old.unwrap_or_else(&initializer)))
            },
        )
    }
}

impl StreamsBuilder {
    /// A table of the latest value per key of `topic`, kept in a store; a null value (a
    /// tombstone) deletes the key (Kafka's `builder.table`).
    pub fn table<K, V>(
        &self,
        topic: &str,
        consumed: crate::dsl::Consumed<K, V>,
        materialized: Materialized<K, V>,
    ) -> KTable<K, V>
    where
        K: Clone + 'static,
        V: Clone + 'static,
    {
        let key_serde = consumed.key_serde.clone();
        let value_serde = consumed.value_serde.clone();
        let source: crate::dsl::Consumed<K, Option<V>> = crate::dsl::Consumed {
            key_serde: consumed.key_serde,
            value_serde: Serdes::option(consumed.value_serde),
            timestamp_extractor: None,
            name: consumed.name,
        };
        let stream = self.stream(topic, source);
        let store = add_store(
            &self.state,
            materialized,
            StoreKind::KeyValue,
            Some(key_serde),
            Some(value_serde),
            "table",
        );
        let Some((store, key_serde, value_serde)) = store else {
            return failed_table::<K, Option<V>, K, V>(&self.state, "TABLE-SOURCE", stream.node);
        };
        let factory = aggregate_factory::<K, Option<V>, V, _>(
            store.clone(),
            key_serde.clone(),
            value_serde.clone(),
            Arc::new(|_: &K, value: Option<V>, _old: Option<V>| value),
        );
        let node = add_store_node(
            &self.state,
            "TABLE-SOURCE",
            &[stream.node],
            &[&store],
            Box::new(factory),
        );
        KTable::new(&self.state, node, Some(key_serde), Some(value_serde), Some(store))
    }
}

/// A changelog stream: the latest value per key (Kafka's `KTable`).
pub struct KTable<K, V> {
    pub(crate) state: Rc<RefCell<BuilderState>>,
    pub(crate) node: NodeId,
    pub(crate) key_serde: Option<SerdeRef<K>>,
    pub(crate) value_serde: Option<SerdeRef<V>>,
    /// The store that holds the table's rows, when it is materialized.
    pub(crate) store: Option<String>,
    /// The grace period of the windowed aggregation this table comes from, if any.
    pub(crate) grace_ms: Option<i64>,
}

impl<K, V> KTable<K, V> {
    pub(crate) fn new(
        state: &Rc<RefCell<BuilderState>>,
        node: NodeId,
        key_serde: Option<SerdeRef<K>>,
        value_serde: Option<SerdeRef<V>>,
        store: Option<String>,
    ) -> Self {
        KTable { state: state.clone(), node, key_serde, value_serde, store, grace_ms: None }
    }
}

impl<K, V> Clone for KTable<K, V> {
    fn clone(&self) -> Self {
        KTable {
            grace_ms: self.grace_ms,
            ..KTable::new(
                &self.state,
                self.node,
                self.key_serde.clone(),
                self.value_serde.clone(),
                self.store.clone(),
            )
        }
    }
}

impl<K: Clone + 'static, V: Clone + 'static> KTable<K, V> {
    /// The name of the store that holds this table, for interactive queries (`None` when the
    /// table is computed from another and not materialized).
    pub fn queryable_store_name(&self) -> Option<&str> {
        self.store.as_deref()
    }

    /// The table's updates as a stream of changes, for the operators below.
    pub(crate) fn changes(&self) -> KStream<K, Change<V>> {
        KStream::<K, Change<V>> {
            state: self.state.clone(),
            node: self.node,
            key_serde: None,
            value_serde: None,
            repartition_required: false,
        }
    }

    fn stateless_table<V2: Clone + 'static>(
        &self,
        kind: &str,
        f: impl Fn(Change<V>) -> Change<V2> + Send + Sync + 'static,
    ) -> KTable<K, V2> {
        let stream = self.changes();
        let out = stream.stateless(
            kind,
            false,
            move |r: Record<K, Change<V>>, e: &mut Emitter<'_, K, Change<V2>>| {
                let change = f(r.value);
                if change.new.is_some() || change.old.is_some() {
                    e.emit(Record {
                        key: r.key,
                        value: change,
                        timestamp: r.timestamp,
                        headers: r.headers,
                    });
                }
            },
        );
        KTable {
            grace_ms: self.grace_ms,
            ..KTable::new(&self.state, out.node, self.key_serde.clone(), None, None)
        }
    }

    /// Keeps the rows for which `predicate` holds; a row that stops matching is deleted
    /// downstream.
    pub fn filter(
        &self,
        predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static,
    ) -> KTable<K, V> {
        // The key is not in the change: filter inside a node that sees the whole record.
        let stream = self.changes();
        let out = stream.stateless(
            "KTABLE-FILTER",
            false,
            move |r: Record<K, Change<V>>, e: &mut Emitter<'_, K, Change<V>>| {
                let keep = |v: Option<V>| v.filter(|v| predicate(&r.key, v));
                let change = Change { new: keep(r.value.new), old: keep(r.value.old) };
                if change.new.is_some() || change.old.is_some() {
                    e.emit(Record {
                        key: r.key.clone(),
                        value: change,
                        timestamp: r.timestamp,
                        headers: r.headers,
                    });
                }
            },
        );
        KTable {
            grace_ms: self.grace_ms,
            ..KTable::new(
                &self.state,
                out.node,
                self.key_serde.clone(),
                self.value_serde.clone(),
                None,
            )
        }
    }

    /// Maps each row's value.
    pub fn map_values<V2: Clone + 'static>(
        &self,
        f: impl Fn(V) -> V2 + Send + Sync + 'static,
    ) -> KTable<K, V2> {
        self.stateless_table("KTABLE-MAPVALUES", move |c: Change<V>| Change {
            new: c.new.map(&f),
            old: c.old.map(&f),
        })
    }

    /// The stream of the table's updates: each new value, `None` for a deleted row (written
    /// as a tombstone by `to`).
    pub fn to_stream(&self) -> KStream<K, Option<V>> {
        let stream = self.changes();
        let mut out = stream.stateless(
            "KTABLE-TOSTREAM",
            false,
            |r: Record<K, Change<V>>, e: &mut Emitter<'_, K, Option<V>>| {
                e.emit(Record {
                    key: r.key,
                    value: r.value.new,
                    timestamp: r.timestamp,
                    headers: r.headers,
                });
            },
        );
        out.key_serde = self.key_serde.clone();
        out.value_serde = self.value_serde.clone().map(Serdes::option);
        out
    }

    /// Re-groups the rows by a new key and value, through a repartition topic, for an
    /// aggregation that adds each new value to its group and subtracts each old one (Kafka's
    /// `KTable.groupBy`).
    pub fn group_by<K2: Clone + 'static, V2: Clone + 'static>(
        &self,
        selector: impl Fn(&K, &V) -> (K2, V2) + Send + Sync + 'static,
        grouped: Grouped<K2, V2>,
    ) -> KGroupedTable<K2, V2> {
        let stream = self.changes();
        // The old value leaves its group before the new one joins its own, as Kafka does.
        let mut ops = stream.stateless(
            "KTABLE-SELECT",
            true,
            move |r: Record<K, Change<V>>, e: &mut Emitter<'_, K2, TableOp<V2>>| {
                if let Some(old) = &r.value.old {
                    let (k2, v2) = selector(&r.key, old);
                    e.emit(Record {
                        key: k2,
                        value: TableOp::Subtract(v2),
                        timestamp: r.timestamp,
                        headers: r.headers.clone(),
                    });
                }
                if let Some(new) = &r.value.new {
                    let (k2, v2) = selector(&r.key, new);
                    e.emit(Record {
                        key: k2,
                        value: TableOp::Add(v2),
                        timestamp: r.timestamp,
                        headers: r.headers,
                    });
                }
            },
        );
        ops.key_serde = grouped.key_serde.clone();
        ops.value_serde = grouped
            .value_serde
            .clone()
            .map(|s| -> SerdeRef<TableOp<V2>> { Arc::new(TableOpSerde(s)) });
        let options = crate::dsl::Repartitioned { name: grouped.name, ..Default::default() };
        KGroupedTable { stream: ops.repartition_with(options), value_serde: grouped.value_serde }
    }
}

/// An update of a re-grouped table row on its way to the aggregation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TableOp<V> {
    Add(V),
    Subtract(V),
}

/// One tag byte (`+` or `-`) before the value's bytes.
struct TableOpSerde<V>(SerdeRef<V>);

impl<V: 'static> Serde<TableOp<V>> for TableOpSerde<V> {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn serialize(&self, value: &TableOp<V>, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        let (tag, v) = match value {
            TableOp::Add(v) => (b'+', v),
            TableOp::Subtract(v) => (b'-', v),
        };
        out.push(tag);
        self.0.serialize(v, out)
    }
    fn deserialize(&self, bytes: &[u8]) -> Result<TableOp<V>, SerdeError> {
        match bytes.split_first() {
            Some((b'+', rest)) => self.0.deserialize(rest).map(TableOp::Add),
            Some((b'-', rest)) => self.0.deserialize(rest).map(TableOp::Subtract),
            _ => Err(SerdeError::Deserialize {
                serde: "table-op",
                len: bytes.len(),
                reason: "a re-grouped table update starts with `+` or `-`".into(),
            }),
        }
    }
}

/// A re-grouped table, ready to aggregate with adders and subtractors (Kafka's
/// `KGroupedTable`).
pub struct KGroupedTable<K, V> {
    stream: KStream<K, TableOp<V>>,
    value_serde: Option<SerdeRef<V>>,
}

impl<K: Clone + 'static, V: Clone + 'static> KGroupedTable<K, V> {
    /// Counts the rows per group.
    pub fn count(&self, materialized: Materialized<K, i64>) -> KTable<K, i64> {
        self.aggregate(
            || 0,
            |_, _, n| n + 1,
            |_, _, n| n - 1,
            materialized_with(materialized, Some(Serdes::i64())),
        )
    }

    /// Combines the rows per group: `adder(aggregate, value)` for a row that joins,
    /// `subtractor(aggregate, value)` for one that leaves.
    pub fn reduce(
        &self,
        adder: impl Fn(V, V) -> V + Send + Sync + 'static,
        subtractor: impl Fn(V, V) -> V + Send + Sync + 'static,
        materialized: Materialized<K, V>,
    ) -> KTable<K, V> {
        let materialized = materialized_with(materialized, self.value_serde.clone());
        aggregate_into_table(
            &self.stream.state,
            self.stream.node,
            self.stream.key_serde.clone(),
            materialized,
            None,
            move |_: &K, op: TableOp<V>, old: Option<V>| match (op, old) {
                (TableOp::Add(v), Some(agg)) => Some(adder(agg, v)),
                (TableOp::Add(v), None) => Some(v),
                (TableOp::Subtract(v), Some(agg)) => Some(subtractor(agg, v)),
                // Nothing to subtract from: the group has no row to take it from.
                (TableOp::Subtract(_), None) => None,
            },
        )
    }

    /// Folds the rows per group: `adder(key, value, aggregate)` for a row that joins,
    /// `subtractor(key, value, aggregate)` for one that leaves.
    pub fn aggregate<A: Clone + 'static>(
        &self,
        initializer: impl Fn() -> A + Send + Sync + 'static,
        adder: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
        subtractor: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
        materialized: Materialized<K, A>,
    ) -> KTable<K, A> {
        aggregate_into_table(
            &self.stream.state,
            self.stream.node,
            self.stream.key_serde.clone(),
            materialized,
            None,
            move |key: &K, op: TableOp<V>, old: Option<A>| {
                let agg = old.unwrap_or_else(&initializer);
                Some(match op {
                    TableOp::Add(v) => adder(key, v, agg),
                    TableOp::Subtract(v) => subtractor(key, v, agg),
                })
            },
        )
    }
}

/// `m`, with `serde` as its value serde unless it has one.
pub(crate) fn materialized_with<K, V>(
    m: Materialized<K, V>,
    serde: Option<SerdeRef<V>>,
) -> Materialized<K, V> {
    match serde {
        Some(serde) if m.value_serde.is_none() => m.with_value_serde(serde),
        _ => m,
    }
}
