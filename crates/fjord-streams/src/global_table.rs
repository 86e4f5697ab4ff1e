//! Global tables (Kafka's `GlobalKTable`): a table that every instance of the application holds
//! in full, read from every partition of its topic by the global stream thread
//! (`global_thread.rs`), and the stream joins that look rows up in it.
//!
//! A global store keeps the topic's records as they are (key bytes to value bytes; a null
//! value deletes the key), so its serdes are those of the `Consumed` it was built with. It has
//! no changelog: the topic is its changelog, and the store records the offset of each partition
//! it has read atomically with the data, so a restart reads on from there.
//!
//! A join with a global table needs no co-partitioning and no repartitioning: the stream's
//! records are joined on a key that `key_mapper` computes from each record, which may differ
//! from the stream's key.

use std::marker::PhantomData;
use std::sync::Arc;

use fjord_state::KeyValueBytesStore;

use crate::dsl::{Consumed, KStream, StreamsBuilder};
use crate::error::StreamsError;
use crate::node::{Children, Instantiator, Lifecycle, Node, NodeFactory, TaskContext, wrap};
use crate::record::Record;
use crate::serdes::SerdeRef;
use crate::state::StoreKind;
use crate::table::{Materialized, add_store, add_store_node, forward_joined};

/// A table that every instance holds in full (Kafka's `GlobalKTable`): built with
/// [`StreamsBuilder::global_table`], joined with [`KStream::join_global`] and
/// [`KStream::left_join_global`], and queryable by its store name through
/// `Streams::key_value_store` on every instance.
pub struct GlobalKTable<K, V> {
    store: String,
    key_serde: SerdeRef<K>,
    value_serde: SerdeRef<V>,
}

impl<K, V> Clone for GlobalKTable<K, V> {
    fn clone(&self) -> Self {
        GlobalKTable {
            store: self.store.clone(),
            key_serde: self.key_serde.clone(),
            value_serde: self.value_serde.clone(),
        }
    }
}

impl<K, V> GlobalKTable<K, V> {
    /// The name of the store that holds the table, for interactive queries.
    pub fn queryable_store_name(&self) -> &str {
        &self.store
    }
}

impl StreamsBuilder {
    /// A table of the latest value per key of every partition of `topic`, held in full by
    /// every instance (Kafka's `builder.globalTable`). A null value (a tombstone) deletes the
    /// key. `materialized` names the store and picks RocksDB (the default) or memory; the store
    /// holds the topic's bytes, so the serdes are those of `consumed` (giving serdes in
    /// `materialized` is a build error).
    pub fn global_table<K, V>(
        &self,
        topic: &str,
        consumed: Consumed<K, V>,
        materialized: Materialized<K, V>,
    ) -> GlobalKTable<K, V>
    where
        K: 'static,
        V: 'static,
    {
        let Consumed { key_serde, value_serde, .. } = consumed;
        if materialized.key_serde.is_some() || materialized.value_serde.is_some() {
            self.state.borrow_mut().errors.push(format!(
                "global table of topic `{topic}`: its store holds the topic's bytes as they are, so it uses the serdes of Consumed; remove the serdes from Materialized"
            ));
        }
        let materialized = Materialized {
            key_serde: None,
            value_serde: None,
            ..materialized.with_caching_disabled().with_logging_disabled()
        };
        let added = add_store(
            &self.state,
            materialized,
            StoreKind::KeyValue,
            Some(key_serde.clone()),
            Some(value_serde.clone()),
            "global table",
        );
        let store = match added {
            Some((store, _, _)) => {
                let mut state = self.state.borrow_mut();
                if let Some(spec) = state.graph.stores.last_mut() {
                    Arc::make_mut(spec).global_topic = Some(topic.to_string());
                }
                store
            }
            // The error is recorded; `build()` reports it.
            None => String::new(),
        };
        GlobalKTable { store, key_serde, value_serde }
    }
}

impl<K: Clone + 'static, V: Clone + 'static> KStream<K, V> {
    /// Joins each record with the row of `global` under `key_mapper(key, value)` (Kafka's
    /// `KStream.join(GlobalKTable, ...)`); records without a row are dropped. No
    /// co-partitioning is needed: every instance holds the whole table.
    pub fn join_global<GK: 'static, VT: 'static, VR: Clone + 'static>(
        &self,
        global: &GlobalKTable<GK, VT>,
        key_mapper: impl Fn(&K, &V) -> GK + Send + Sync + 'static,
        joiner: impl Fn(&V, &VT) -> VR + Send + Sync + 'static,
    ) -> KStream<K, VR> {
        self.global_join(global, "GLOBAL-JOIN", key_mapper, move |v, t| t.map(|t| joiner(v, t)))
    }

    /// Joins each record with the row of `global` under `key_mapper(key, value)`, if any
    /// (Kafka's `KStream.leftJoin(GlobalKTable, ...)`).
    pub fn left_join_global<GK: 'static, VT: 'static, VR: Clone + 'static>(
        &self,
        global: &GlobalKTable<GK, VT>,
        key_mapper: impl Fn(&K, &V) -> GK + Send + Sync + 'static,
        joiner: impl Fn(&V, Option<&VT>) -> VR + Send + Sync + 'static,
    ) -> KStream<K, VR> {
        self.global_join(global, "GLOBAL-LEFTJOIN", key_mapper, move |v, t| Some(joiner(v, t)))
    }

    fn global_join<GK: 'static, VT: 'static, VR: Clone + 'static>(
        &self,
        global: &GlobalKTable<GK, VT>,
        kind: &str,
        key_mapper: impl Fn(&K, &V) -> GK + Send + Sync + 'static,
        joiner: impl Fn(&V, Option<&VT>) -> Option<VR> + Send + Sync + 'static,
    ) -> KStream<K, VR> {
        let GlobalKTable { store, key_serde, value_serde } = global.clone();
        let key_mapper = Arc::new(key_mapper);
        let joiner = Arc::new(joiner);
        let factory: NodeFactory<K, V> = Box::new(move |inst: &mut Instantiator<'_>, id| {
            Ok(wrap(GlobalJoinNode {
                name: inst.name(id)?,
                children: inst.children::<K, VR>(id)?,
                engine: inst.global_store(&store)?,
                store: store.clone(),
                key_serde: key_serde.clone(),
                value_serde: value_serde.clone(),
                key_mapper: key_mapper.clone(),
                joiner: joiner.clone(),
                key_buf: Vec::new(),
                _types: PhantomData,
            }))
        });
        // The global store is not one of the node's task stores: it does not tie the node's
        // sub-topology to any other.
        let node = add_store_node(&self.state, kind, &[self.node], &[], Box::new(factory));
        self.derive(node, false)
    }
}

/// Looks each stream record's mapped key up in a global store.
struct GlobalJoinNode<K, V, GK, VT, VR, M, F> {
    name: Arc<str>,
    children: Children<K, VR>,
    engine: Arc<dyn KeyValueBytesStore>,
    store: String,
    key_serde: SerdeRef<GK>,
    value_serde: SerdeRef<VT>,
    key_mapper: Arc<M>,
    joiner: Arc<F>,
    key_buf: Vec<u8>,
    _types: PhantomData<fn(V)>,
}

impl<K, V, GK, VT, VR, M, F> GlobalJoinNode<K, V, GK, VT, VR, M, F>
where
    GK: 'static,
    VT: 'static,
{
    /// The row of `key`, `None` if there is none or the key is null.
    fn row(&mut self, key: &GK) -> Result<Option<VT>, StreamsError> {
        if self.key_serde.is_null(key) {
            return Ok(None);
        }
        let error = |e: &dyn std::fmt::Display| StreamsError::State {
            store: self.store.clone(),
            message: e.to_string(),
        };
        self.key_buf.clear();
        self.key_serde.serialize(key, &mut self.key_buf).map_err(|e| error(&e))?;
        match self.engine.get(&self.key_buf).map_err(|e| error(&e))? {
            Some(bytes) => self.value_serde.deserialize(&bytes).map(Some).map_err(|e| error(&e)),
            None => Ok(None),
        }
    }
}

impl<K, V, GK, VT, VR, M, F> Node<K, V> for GlobalJoinNode<K, V, GK, VT, VR, M, F>
where
    K: Clone + 'static,
    GK: 'static,
    VT: 'static,
    VR: Clone + 'static,
    M: Fn(&K, &V) -> GK,
    F: Fn(&V, Option<&VT>) -> Option<VR>,
{
    fn process(&mut self, ctx: &mut TaskContext, record: Record<K, V>) {
        let key = (self.key_mapper)(&record.key, &record.value);
        let row = match self.row(&key) {
            Ok(row) => row,
            Err(e) => return ctx.fail(e),
        };
        let null_key = self.key_serde.is_null(&key);
        let joined = (self.joiner)(&record.value, row.as_ref());
        forward_joined(ctx, &self.children, &self.name, record, joined, null_key);
    }
}

impl<K, V, GK, VT, VR, M, F> Lifecycle for GlobalJoinNode<K, V, GK, VT, VR, M, F> {}
