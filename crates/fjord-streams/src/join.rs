//! Stream-stream windowed joins and table-table joins.
//!
//! Both join two inputs in one node: each input goes through a small node that tags its
//! records with their side ([`JoinSide`]), and the join node takes both. One node (rather than
//! Kafka's pair of processors) keeps the state the two sides share, the join's stream time and
//! its non-joined records, in one place, and its stores make the runtime put both inputs in
//! one sub-topology, whose topics must be co-partitioned.
//!
//! # Stream-stream joins
//!
//! Each side's records wait in a window store of their own that keeps duplicates (several
//! records of one key may share a timestamp: `fjord-state`'s sequence-number layout), for the
//! join window plus the grace period. A record joins every record of the other side whose
//! timestamp is within the window (`before`/`after`, seen from the left), and is then buffered
//! for the other side's later records; a result has the larger of the two timestamps.
//!
//! Left and outer joins do not emit a record's non-joined result (`joiner(v, None)`) when it
//! finds no partner, since one may still come: as Kafka Streams since KIP-633 (KAFKA-10847),
//! the record waits in a shared key-value store ordered by timestamp, is removed from it when a
//! partner arrives, and is emitted with its own timestamp once the join's stream time passes
//! its window end plus the grace period. A record that arrives after that point for its own
//! window is dropped and counted (`reason="late"`), as windowed aggregations do.
//!
//! # Table-table joins
//!
//! An update on either side looks up the other side's store and writes the joined value (or a
//! delete) to the join's own store, which forwards it as a table update with the old value,
//! through the record cache like an aggregation. Both tables must be materialized.

use std::cell::RefCell;
use std::ops::Bound;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use fjord_state::WindowStore;

use crate::dsl::{BuilderState, KStream, next_name};
use crate::error::StreamsError;
use crate::graph::NodeId;
use crate::node::{
    Children, Emitter, Instantiator, Lifecycle, Node, NodeFactory, TaskContext, wrap,
};
use crate::record::{Headers, Record};
use crate::serdes::{SerdeRef, Serdes};
use crate::state::{Change, KeyValueStore, StoreKind, StoreRef};
use crate::table::{
    KTable, Materialized, add_store, add_store_node, failed_table, forward_changes,
};
use crate::window::millis;

/// The windows of a stream-stream join (Kafka's `JoinWindows`): a left record at `t` joins
/// the right records in `[t - before, t + after]`. Records are accepted until stream time
/// passes their window's end plus the grace period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinWindows {
    before_ms: i64,
    after_ms: i64,
    grace_ms: i64,
}

impl JoinWindows {
    /// Joins records at most `difference` apart, in either order; no grace period.
    pub fn of_time_difference_with_no_grace(difference: Duration) -> Self {
        Self::of_time_difference_and_grace(difference, Duration::ZERO)
    }

    /// Joins records at most `difference` apart, accepting out-of-order records for `grace`
    /// after a window's end.
    pub fn of_time_difference_and_grace(difference: Duration, grace: Duration) -> Self {
        let d = millis(difference);
        JoinWindows { before_ms: d, after_ms: d, grace_ms: millis(grace) }
    }

    /// How much earlier than a left record a right record may be.
    pub fn before(mut self, before: Duration) -> Self {
        self.before_ms = millis(before);
        self
    }

    /// How much later than a left record a right record may be.
    pub fn after(mut self, after: Duration) -> Self {
        self.after_ms = millis(after);
        self
    }

    /// `before` in milliseconds.
    pub fn before_ms(&self) -> i64 {
        self.before_ms
    }

    /// `after` in milliseconds.
    pub fn after_ms(&self) -> i64 {
        self.after_ms
    }

    /// The window size, `before + after`, in milliseconds.
    pub fn size_ms(&self) -> i64 {
        self.before_ms.saturating_add(self.after_ms)
    }

    /// The grace period in milliseconds.
    pub fn grace_ms(&self) -> i64 {
        self.grace_ms
    }

    /// How far back and ahead a record of `side` looks at the other side.
    fn reach(&self, side: Side) -> (i64, i64) {
        match side {
            Side::Left => (self.before_ms, self.after_ms),
            Side::Right => (self.after_ms, self.before_ms),
        }
    }

    /// Whether the window of a record of `side` at `timestamp` is still open at `stream_time`.
    fn is_open(&self, side: Side, timestamp: i64, stream_time: i64) -> bool {
        let (_, ahead) = self.reach(side);
        timestamp.saturating_add(ahead).saturating_add(self.grace_ms) >= stream_time
    }
}

/// The serdes and stores of a stream-stream join (Kafka's `StreamJoined`). The stores are
/// `<name>-this-join-store` and `<name>-other-join-store` (and, for left and outer joins,
/// `<name>-outer-shared-join-store`), with a generated name unless one is given.
pub struct StreamJoined<K, V1, V2> {
    pub(crate) store_name: Option<String>,
    pub(crate) key_serde: Option<SerdeRef<K>>,
    pub(crate) value_serde: Option<SerdeRef<V1>>,
    pub(crate) other_value_serde: Option<SerdeRef<V2>>,
    pub(crate) persistent: bool,
    pub(crate) logged: bool,
}

impl<K, V1, V2> Default for StreamJoined<K, V1, V2> {
    fn default() -> Self {
        StreamJoined {
            store_name: None,
            key_serde: None,
            value_serde: None,
            other_value_serde: None,
            persistent: true,
            logged: true,
        }
    }
}

impl<K, V1, V2> StreamJoined<K, V1, V2> {
    /// With these serdes for the key, this stream's values and the other stream's values.
    pub fn with(
        key_serde: SerdeRef<K>,
        value_serde: SerdeRef<V1>,
        other_value_serde: SerdeRef<V2>,
    ) -> Self {
        StreamJoined {
            key_serde: Some(key_serde),
            value_serde: Some(value_serde),
            other_value_serde: Some(other_value_serde),
            ..StreamJoined::default()
        }
    }

    /// Names the join's stores (and so their changelogs) after `name`.
    pub fn with_store_name(mut self, name: &str) -> Self {
        self.store_name = Some(name.to_string());
        self
    }

    /// Keeps the buffers in memory instead of RocksDB (their changelogs still restore them).
    pub fn in_memory(mut self) -> Self {
        self.persistent = false;
        self
    }

    /// No changelog topics: buffered records are lost when the task moves or restarts.
    pub fn with_logging_disabled(mut self) -> Self {
        self.logged = false;
        self
    }

    fn materialized<V>(
        &self,
        name: String,
        value_serde: Option<SerdeRef<V>>,
    ) -> Materialized<K, V> {
        Materialized {
            name: Some(name),
            key_serde: self.key_serde.clone(),
            value_serde,
            persistent: self.persistent,
            cached: true,
            logged: self.logged,
        }
    }
}

/// Which input of a join (the index of its buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Left = 0,
    Right = 1,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Left => Side::Right,
            Side::Right => Side::Left,
        }
    }
}

/// A record of either input of a join, tagged with its side.
#[derive(Debug, Clone)]
pub(crate) enum JoinSide<L, R> {
    Left(L),
    Right(R),
}

/// Inner, left or outer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JoinKind {
    Inner,
    Left,
    Outer,
}

impl JoinKind {
    /// Whether records of `side` without a partner still give a result.
    fn keeps(self, side: Side) -> bool {
        matches!((self, side), (JoinKind::Outer, _) | (JoinKind::Left, Side::Left))
    }
}

/// The joiners of the three kinds as one shape: `None` where the kind gives no result.
fn inner_joiner<A, B, R>(
    joiner: impl Fn(&A, &B) -> R,
) -> impl Fn(Option<&A>, Option<&B>) -> Option<R> {
    move |a, b| match (a, b) {
        (Some(a), Some(b)) => Some(joiner(a, b)),
        _ => None,
    }
}

fn left_joiner<A, B, R>(
    joiner: impl Fn(&A, Option<&B>) -> R,
) -> impl Fn(Option<&A>, Option<&B>) -> Option<R> {
    move |a, b| a.map(|a| joiner(a, b))
}

fn outer_joiner<A, B, R>(
    joiner: impl Fn(Option<&A>, Option<&B>) -> R,
) -> impl Fn(Option<&A>, Option<&B>) -> Option<R> {
    move |a, b| (a.is_some() || b.is_some()).then(|| joiner(a, b))
}

/// Tags the records of `stream` with their side, for the join node.
fn tag<K, V, L, R>(
    stream: &KStream<K, V>,
    kind: &str,
    f: fn(V) -> JoinSide<L, R>,
) -> KStream<K, JoinSide<L, R>>
where
    K: Clone + 'static,
    V: Clone + 'static,
    L: Clone + 'static,
    R: Clone + 'static,
{
    stream.stateless(kind, false, move |r: Record<K, V>, e: &mut Emitter<'_, K, JoinSide<L, R>>| {
        e.emit(Record { key: r.key, value: f(r.value), timestamp: r.timestamp, headers: r.headers })
    })
}

/// Adds the join node over both tagged inputs; the runtime checks that its topics are
/// co-partitioned.
fn add_join_node(
    state: &Rc<RefCell<BuilderState>>,
    kind: &str,
    parents: [NodeId; 2],
    stores: &[&str],
    factory: Box<dyn std::any::Any + Send + Sync>,
) -> NodeId {
    let node = add_store_node(state, kind, &parents, stores, factory);
    state.borrow_mut().graph.copartitioned.push(node);
    node
}

impl<K: Clone + 'static, V: Clone + 'static> KStream<K, V> {
    /// Joins each record with every record of `other` with the same key within `windows`
    /// (Kafka's stream-stream inner `join`; named apart from the stream-table `join`). Both
    /// streams are repartitioned first if their key changed.
    pub fn join_stream<V2: Clone + 'static, VR: Clone + 'static>(
        &self,
        other: &KStream<K, V2>,
        joiner: impl Fn(&V, &V2) -> VR + Send + Sync + 'static,
        windows: JoinWindows,
        joined: StreamJoined<K, V, V2>,
    ) -> KStream<K, VR> {
        self.stream_stream_join(other, JoinKind::Inner, windows, joined, inner_joiner(joiner))
    }

    /// As [`Self::join_stream`], and a record of this stream that joins nothing gives
    /// `joiner(v, None)` once its window closes (Kafka's stream-stream `leftJoin`).
    pub fn left_join_stream<V2: Clone + 'static, VR: Clone + 'static>(
        &self,
        other: &KStream<K, V2>,
        joiner: impl Fn(&V, Option<&V2>) -> VR + Send + Sync + 'static,
        windows: JoinWindows,
        joined: StreamJoined<K, V, V2>,
    ) -> KStream<K, VR> {
        self.stream_stream_join(other, JoinKind::Left, windows, joined, left_joiner(joiner))
    }

    /// As [`Self::left_join_stream`], for the records of both streams (Kafka's
    /// stream-stream `outerJoin`).
    pub fn outer_join_stream<V2: Clone + 'static, VR: Clone + 'static>(
        &self,
        other: &KStream<K, V2>,
        joiner: impl Fn(Option<&V>, Option<&V2>) -> VR + Send + Sync + 'static,
        windows: JoinWindows,
        joined: StreamJoined<K, V, V2>,
    ) -> KStream<K, VR> {
        self.stream_stream_join(other, JoinKind::Outer, windows, joined, outer_joiner(joiner))
    }

    fn stream_stream_join<V2: Clone + 'static, VR: Clone + 'static>(
        &self,
        other: &KStream<K, V2>,
        kind: JoinKind,
        windows: JoinWindows,
        joined: StreamJoined<K, V, V2>,
        joiner: impl Fn(Option<&V>, Option<&V2>) -> Option<VR> + Send + Sync + 'static,
    ) -> KStream<K, VR> {
        let node_kind = match kind {
            JoinKind::Inner => "JOIN",
            JoinKind::Left => "LEFTJOIN",
            JoinKind::Outer => "OUTERJOIN",
        };
        let state = &self.state;
        let this = if self.repartition_required { self.repartition() } else { self.clone() };
        let other = if other.repartition_required { other.repartition() } else { other.clone() };
        let base = joined.store_name.clone().unwrap_or_else(|| next_name(state, node_kind));
        let retention_ms = windows.size_ms().saturating_add(windows.grace_ms);
        let window = StoreKind::Window { retention_ms };
        let key_serde = this.key_serde.clone().or_else(|| other.key_serde.clone());
        let what = "stream-stream join";
        let left = add_store(
            state,
            joined.materialized(format!("{base}-this-join-store"), joined.value_serde.clone()),
            window,
            key_serde.clone(),
            this.value_serde.clone(),
            what,
        );
        let right = add_store(
            state,
            joined
                .materialized(format!("{base}-other-join-store"), joined.other_value_serde.clone()),
            window,
            key_serde,
            other.value_serde.clone(),
            what,
        );
        // The shared store of non-joined records, for left and outer joins: `Some(None)` for an
        // inner join, `None` if it could not be added (a build error was recorded).
        let shared = match kind {
            JoinKind::Inner => Some(None),
            JoinKind::Left | JoinKind::Outer => {
                let m = Materialized::<Vec<u8>, Vec<u8>> {
                    name: Some(format!("{base}-outer-shared-join-store")),
                    persistent: joined.persistent,
                    logged: joined.logged,
                    ..Materialized::with(Serdes::bytes(), Serdes::bytes())
                };
                add_store(state, m, StoreKind::KeyValue, None, None, what)
                    .map(|(name, ..)| Some(name))
            }
        };
        let (Some((left, key_serde, left_serde)), Some((right, _, right_serde)), Some(shared)) =
            (left, right, shared)
        else {
            let failed: KTable<K, VR> = failed_table::<K, V, K, VR>(state, node_kind, this.node);
            return this.derive(failed.node, false);
        };
        let this_side = tag(&this, "JOINTHIS", JoinSide::<V, V2>::Left);
        let other_side = tag(&other, "JOINOTHER", JoinSide::<V, V2>::Right);
        let joiner = Arc::new(joiner);
        let (l, r, s) = (left.clone(), right.clone(), shared.clone());
        let factory: NodeFactory<K, JoinSide<V, V2>> =
            Box::new(move |inst: &mut Instantiator<'_>, id| {
                let buffer = |inst: &mut Instantiator<'_>, name: &str| -> Result<_, StreamsError> {
                    let store = inst.store(name)?;
                    let layout = join_layout(store.borrow().engine().clone(), retention_ms);
                    Ok(JoinBuffer { store, layout })
                };
                let joiner = joiner.clone();
                Ok(wrap(StreamStreamJoinNode {
                    name: inst.name(id)?,
                    buffers: [buffer(inst, &l)?, buffer(inst, &r)?],
                    shared: match &s {
                        Some(name) => Some(inst.store(name)?),
                        None => None,
                    },
                    key_serde: key_serde.clone(),
                    left_serde: left_serde.clone(),
                    right_serde: right_serde.clone(),
                    windows,
                    kind,
                    joiner: move |a: Option<&V>, b: Option<&V2>| joiner(a, b),
                    children: inst.children::<K, VR>(id)?,
                    stream_time: -1,
                    shared_min_time: None,
                    key_buf: Vec::new(),
                    value_buf: Vec::new(),
                }))
            });
        let mut stores = vec![left.as_str(), right.as_str()];
        stores.extend(shared.as_deref());
        let node = add_join_node(
            state,
            node_kind,
            [this_side.node, other_side.node],
            &stores,
            Box::new(factory),
        );
        this.derive(node, false)
    }
}

/// The layout of a join buffer: a window store with duplicates.
fn join_layout(engine: Arc<dyn fjord_state::KeyValueBytesStore>, retention_ms: i64) -> WindowStore {
    WindowStore::with_duplicates(
        engine,
        retention_ms,
        fjord_state::window::default_segment_interval(retention_ms),
    )
}

/// One side's buffered records: a window store with duplicates behind the record cache.
struct JoinBuffer {
    store: StoreRef,
    layout: WindowStore,
}

impl JoinBuffer {
    /// The records of `key` with a timestamp in `[from, to]`, in timestamp order (the cache
    /// merged over the store).
    fn fetch(&self, key: &[u8], from: i64, to: i64) -> Result<Vec<(i64, Vec<u8>)>, StreamsError> {
        let store = self.store.borrow();
        let mut out = Vec::new();
        for (lower, upper) in self.layout.segment_ranges(key, from, to) {
            for (stored, value) in store.range(Bound::Included(&lower), Bound::Included(&upper))? {
                out.push((self.layout.decode_start(&stored).map_err(|e| store.error(e))?, value));
            }
        }
        Ok(out)
    }

    /// Buffers a record.
    fn put(&self, key: &[u8], timestamp: i64, value: &[u8]) -> Result<(), StreamsError> {
        let mut store = self.store.borrow_mut();
        let stored = self.layout.put_key(key, timestamp).map_err(|e| store.error(e))?;
        self.layout.note_put(timestamp);
        store.put(&stored, value, timestamp)
    }

    /// Stages the cache's writes, then the removal of the segments no record of the other
    /// side can reach any more.
    fn flush(&self, ctx: &mut TaskContext, stream_time: i64) -> Result<(), StreamsError> {
        let mut store = self.store.borrow_mut();
        // Nothing goes downstream from a buffer: results were emitted as records arrived.
        drop(store.flush(ctx));
        if stream_time >= 0 {
            // The oldest record a non-late record can join is at stream time - retention: keep
            // it (`expire` removes what is at or before its argument - retention).
            let expire_at = stream_time - 1;
            self.layout.expire(store.staged_mut(), expire_at).map_err(|e| store.error(e))?;
        }
        Ok(())
    }
}

/// Encodes a timestamp so that byte order is numeric order.
fn encode_time(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

fn decode_time(bytes: &[u8]) -> Option<i64> {
    let array: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some((u64::from_be_bytes(array) ^ (1 << 63)) as i64)
}

/// Joins the records of two streams within join windows.
///
/// The shared store of non-joined records: key `[timestamp: 8 bytes][side: 0 left, 1 right]
/// [key]`, so that the oldest come first; value: the records' values with that key, side and
/// timestamp, each as `[len: u32 BE][bytes]`.
struct StreamStreamJoinNode<K, V1, V2, VR, F> {
    name: Arc<str>,
    /// Left, right.
    buffers: [JoinBuffer; 2],
    shared: Option<StoreRef>,
    key_serde: SerdeRef<K>,
    left_serde: SerdeRef<V1>,
    right_serde: SerdeRef<V2>,
    windows: JoinWindows,
    kind: JoinKind,
    joiner: F,
    children: Children<K, VR>,
    /// The largest timestamp the join has seen (-1: none since the task started).
    stream_time: i64,
    /// A lower bound of the timestamps in the shared store (`None`: unknown, after a start).
    shared_min_time: Option<i64>,
    key_buf: Vec<u8>,
    value_buf: Vec<u8>,
}

impl<K, V1, V2, VR, F> StreamStreamJoinNode<K, V1, V2, VR, F>
where
    K: Clone + 'static,
    V1: 'static,
    V2: 'static,
    VR: Clone + 'static,
    F: Fn(Option<&V1>, Option<&V2>) -> Option<VR>,
{
    fn forward(
        &self,
        ctx: &mut TaskContext,
        key: K,
        value: Option<VR>,
        timestamp: i64,
        headers: Headers,
    ) {
        if let Some(value) = value {
            self.children.forward(ctx, Record { key, value, timestamp, headers });
        }
    }

    fn join(
        &mut self,
        ctx: &mut TaskContext,
        record: Record<K, JoinSide<V1, V2>>,
    ) -> Result<(), StreamsError> {
        let Record { key, value, timestamp, headers } = record;
        let side = match value {
            JoinSide::Left(_) => Side::Left,
            JoinSide::Right(_) => Side::Right,
        };
        self.stream_time = self.stream_time.max(timestamp);
        let null_value = match &value {
            JoinSide::Left(v) => self.left_serde.is_null(v),
            JoinSide::Right(v) => self.right_serde.is_null(v),
        };
        if null_value {
            ctx.skip_record(&self.name, "null-value");
            return Ok(());
        }
        if self.key_serde.is_null(&key) {
            // No partner can have a null key: an outer side's result is due at once.
            if self.kind.keeps(side) {
                let result = match &value {
                    JoinSide::Left(v) => (self.joiner)(Some(v), None),
                    JoinSide::Right(v) => (self.joiner)(None, Some(v)),
                };
                self.forward(ctx, key, result, timestamp, headers);
            } else {
                ctx.skip_record(&self.name, "null-key");
            }
            return Ok(());
        }
        if !self.windows.is_open(side, timestamp, self.stream_time) {
            ctx.skip_record(&self.name, "late");
            return Ok(());
        }
        if timestamp == self.stream_time {
            self.emit_non_joined(ctx)?;
        }
        self.key_buf.clear();
        let key_error = |e| self.buffers[0].store.borrow().error(e);
        self.key_serde.serialize(&key, &mut self.key_buf).map_err(key_error)?;
        let (back, ahead) = self.windows.reach(side);
        let from = timestamp.saturating_sub(back).max(0);
        let to = timestamp.saturating_add(ahead);
        let (this, other) = (side as usize, side.other() as usize);
        let partners = self.buffers[other].fetch(&self.key_buf, from, to)?;
        let mut unbuffered = None;
        for (other_time, bytes) in &partners {
            let store_error = |e| self.buffers[other].store.borrow().error(e);
            let result = match &value {
                JoinSide::Left(v) => {
                    let partner = self.right_serde.deserialize(bytes).map_err(store_error)?;
                    (self.joiner)(Some(v), Some(&partner))
                }
                JoinSide::Right(v) => {
                    let partner = self.left_serde.deserialize(bytes).map_err(store_error)?;
                    (self.joiner)(Some(&partner), Some(v))
                }
            };
            self.forward(ctx, key.clone(), result, timestamp.max(*other_time), headers.clone());
            // The partner has joined: it no longer waits for its non-joined result.
            if self.kind.keeps(side.other()) && unbuffered != Some(*other_time) {
                unbuffered = Some(*other_time);
                self.unbuffer_non_joined(side.other(), *other_time)?;
            }
        }
        self.value_buf.clear();
        let value_error = |e| self.buffers[this].store.borrow().error(e);
        match &value {
            JoinSide::Left(v) => self.left_serde.serialize(v, &mut self.value_buf),
            JoinSide::Right(v) => self.right_serde.serialize(v, &mut self.value_buf),
        }
        .map_err(value_error)?;
        if partners.is_empty() && self.kind.keeps(side) {
            self.buffer_non_joined(ctx, side, timestamp)?;
        }
        self.buffers[this].put(&self.key_buf, timestamp, &self.value_buf)?;
        if self.buffers[this].store.borrow().needs_flush() {
            self.buffers[this].flush(ctx, self.stream_time)?;
        }
        Ok(())
    }

    /// The shared store's key of the records of `side` at `timestamp` with the key in
    /// `key_buf`.
    fn shared_key(&self, side: Side, timestamp: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.key_buf.len());
        out.extend_from_slice(&encode_time(timestamp));
        out.push(side as u8);
        out.extend_from_slice(&self.key_buf);
        out
    }

    /// Adds the record in `value_buf` to the shared store of non-joined records.
    fn buffer_non_joined(
        &mut self,
        ctx: &mut TaskContext,
        side: Side,
        timestamp: i64,
    ) -> Result<(), StreamsError> {
        let Some(shared) = &self.shared else { return Ok(()) };
        let key = self.shared_key(side, timestamp);
        let mut store = shared.borrow_mut();
        let before = store.get(&key)?.map(<[u8]>::to_vec).unwrap_or_default();
        let value = &self.value_buf;
        store.put_with(&key, timestamp, |buf| {
            buf.extend_from_slice(&before);
            buf.extend_from_slice(&(value.len() as u32).to_be_bytes());
            buf.extend_from_slice(value);
            Ok(true)
        })?;
        self.shared_min_time = self.shared_min_time.map(|t| t.min(timestamp));
        if store.needs_flush() {
            // Nothing goes downstream from this store either.
            drop(store.flush(ctx));
        }
        Ok(())
    }

    /// Removes the non-joined records of `side` at `timestamp` with the key in `key_buf`: a
    /// partner arrived for them.
    fn unbuffer_non_joined(&mut self, side: Side, timestamp: i64) -> Result<(), StreamsError> {
        let Some(shared) = &self.shared else { return Ok(()) };
        let key = self.shared_key(side, timestamp);
        let mut store = shared.borrow_mut();
        if store.get(&key)?.is_some() {
            store.delete(&key, timestamp)?;
        }
        Ok(())
    }

    /// Emits the non-joined results of every record whose window has closed, oldest first,
    /// and removes them from the shared store.
    fn emit_non_joined(&mut self, ctx: &mut TaskContext) -> Result<(), StreamsError> {
        let Some(shared) = self.shared.clone() else { return Ok(()) };
        let reach = self.windows.before_ms.min(self.windows.after_ms);
        // Records at or after this time are open whatever their side.
        let open_from =
            self.stream_time.saturating_sub(reach).saturating_sub(self.windows.grace_ms);
        if self.shared_min_time.is_some_and(|t| t >= open_from) {
            return Ok(());
        }
        let upper = encode_time(open_from);
        let rows = shared.borrow().range(Bound::Unbounded, Bound::Excluded(&upper))?;
        let mut min_time = open_from;
        for (stored, values) in rows {
            let error = |what: &str| shared.borrow().error(format!("outer join store: {what}"));
            let timestamp = decode_time(&stored).ok_or_else(|| error("key without a timestamp"))?;
            let side = match stored.get(8) {
                Some(0) => Side::Left,
                Some(1) => Side::Right,
                _ => return Err(error("key without a join side")),
            };
            if self.windows.is_open(side, timestamp, self.stream_time) {
                min_time = min_time.min(timestamp);
                continue;
            }
            let key =
                self.key_serde.deserialize(&stored[9..]).map_err(|e| error(&e.to_string()))?;
            let mut rest = values.as_slice();
            while !rest.is_empty() {
                let (value, tail) = split_value(rest).ok_or_else(|| error("truncated value"))?;
                rest = tail;
                let result = match side {
                    Side::Left => {
                        let v = self
                            .left_serde
                            .deserialize(value)
                            .map_err(|e| error(&e.to_string()))?;
                        (self.joiner)(Some(&v), None)
                    }
                    Side::Right => {
                        let v = self
                            .right_serde
                            .deserialize(value)
                            .map_err(|e| error(&e.to_string()))?;
                        (self.joiner)(None, Some(&v))
                    }
                };
                self.forward(ctx, key.clone(), result, timestamp, Headers::new());
            }
            shared.borrow_mut().delete(&stored, timestamp)?;
        }
        self.shared_min_time = Some(min_time);
        Ok(())
    }
}

/// Splits `[len: u32 BE][value]` off the front of `bytes`.
fn split_value(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let len: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    let end = 4usize.checked_add(u32::from_be_bytes(len) as usize)?;
    Some((bytes.get(4..end)?, bytes.get(end..)?))
}

impl<K, V1, V2, VR, F> Node<K, JoinSide<V1, V2>> for StreamStreamJoinNode<K, V1, V2, VR, F>
where
    K: Clone + 'static,
    V1: 'static,
    V2: 'static,
    VR: Clone + 'static,
    F: Fn(Option<&V1>, Option<&V2>) -> Option<VR>,
{
    fn process(&mut self, ctx: &mut TaskContext, record: Record<K, JoinSide<V1, V2>>) {
        if let Err(e) = self.join(ctx, record) {
            ctx.fail(e);
        }
    }
}

impl<K, V1, V2, VR, F> Lifecycle for StreamStreamJoinNode<K, V1, V2, VR, F> {
    fn flush(&mut self, ctx: &mut TaskContext) {
        for buffer in &self.buffers {
            if let Err(e) = buffer.flush(ctx, self.stream_time) {
                return ctx.fail(e);
            }
        }
    }
}

impl<K: Clone + 'static, V: Clone + 'static> KTable<K, V> {
    /// Joins the rows of two tables with the same key (Kafka's table-table inner `join`): a
    /// row exists where both tables have one; an update on either side re-computes it, and a
    /// row that loses a side is deleted. Both tables must be materialized; the result is kept
    /// in a store of its own (`materialized`), queryable and joinable in turn.
    pub fn join<V2: Clone + 'static, VR: Clone + 'static>(
        &self,
        other: &KTable<K, V2>,
        joiner: impl Fn(&V, &V2) -> VR + Send + Sync + 'static,
        materialized: Materialized<K, VR>,
    ) -> KTable<K, VR> {
        self.table_table_join(other, "KTABLE-JOIN", materialized, inner_joiner(joiner))
    }

    /// As [`Self::join`], with a row wherever this table has one (Kafka's table-table
    /// `leftJoin`).
    pub fn left_join<V2: Clone + 'static, VR: Clone + 'static>(
        &self,
        other: &KTable<K, V2>,
        joiner: impl Fn(&V, Option<&V2>) -> VR + Send + Sync + 'static,
        materialized: Materialized<K, VR>,
    ) -> KTable<K, VR> {
        self.table_table_join(other, "KTABLE-LEFTJOIN", materialized, left_joiner(joiner))
    }

    /// As [`Self::join`], with a row wherever either table has one (Kafka's table-table
    /// `outerJoin`).
    pub fn outer_join<V2: Clone + 'static, VR: Clone + 'static>(
        &self,
        other: &KTable<K, V2>,
        joiner: impl Fn(Option<&V>, Option<&V2>) -> VR + Send + Sync + 'static,
        materialized: Materialized<K, VR>,
    ) -> KTable<K, VR> {
        self.table_table_join(other, "KTABLE-OUTERJOIN", materialized, outer_joiner(joiner))
    }

    fn table_table_join<V2: Clone + 'static, VR: Clone + 'static>(
        &self,
        other: &KTable<K, V2>,
        kind: &str,
        materialized: Materialized<K, VR>,
        joiner: impl Fn(Option<&V>, Option<&V2>) -> Option<VR> + Send + Sync + 'static,
    ) -> KTable<K, VR> {
        let state = &self.state;
        let sides = (
            (self.store.clone(), self.key_serde.clone(), self.value_serde.clone()),
            (other.store.clone(), other.value_serde.clone()),
        );
        let ((Some(left), Some(key_serde), Some(left_serde)), (Some(right), Some(right_serde))) =
            sides
        else {
            state.borrow_mut().errors.push(format!(
                "a table-table join needs two materialized tables (a table() or an aggregation, with serdes): join node `{kind}`"
            ));
            return failed_table::<K, Change<V>, K, VR>(state, kind, self.node);
        };
        let result = add_store(
            state,
            materialized,
            StoreKind::KeyValue,
            Some(key_serde.clone()),
            None,
            "table-table join",
        );
        let Some((result, _, result_serde)) = result else {
            return failed_table::<K, Change<V>, K, VR>(state, kind, self.node);
        };
        let this_side =
            tag(&self.changes(), "KTABLE-JOINTHIS", JoinSide::<Change<V>, Change<V2>>::Left);
        let other_side =
            tag(&other.changes(), "KTABLE-JOINOTHER", JoinSide::<Change<V>, Change<V2>>::Right);
        let joiner = Arc::new(joiner);
        let (l, r, out) = (left.clone(), right.clone(), result.clone());
        let (node_key_serde, node_result_serde) = (key_serde.clone(), result_serde.clone());
        let factory: NodeFactory<K, JoinSide<Change<V>, Change<V2>>> =
            Box::new(move |inst: &mut Instantiator<'_>, id| {
                let joiner = joiner.clone();
                Ok(wrap(TableTableJoinNode {
                    left: KeyValueStore::new(
                        inst.store(&l)?,
                        node_key_serde.clone(),
                        left_serde.clone(),
                    ),
                    right: KeyValueStore::new(
                        inst.store(&r)?,
                        node_key_serde.clone(),
                        right_serde.clone(),
                    ),
                    result: KeyValueStore::new(
                        inst.store(&out)?,
                        node_key_serde.clone(),
                        node_result_serde.clone(),
                    ),
                    joiner: move |a: Option<&V>, b: Option<&V2>| joiner(a, b),
                    children: inst.children::<K, Change<VR>>(id)?,
                }))
            });
        let node = add_join_node(
            state,
            kind,
            [this_side.node, other_side.node],
            &[&left, &right, &result],
            Box::new(factory),
        );
        KTable::new(state, node, Some(key_serde), Some(result_serde), Some(result))
    }
}

/// Joins the rows of two tables into a store of its own.
struct TableTableJoinNode<K, V1, V2, VR, F> {
    left: KeyValueStore<K, V1>,
    right: KeyValueStore<K, V2>,
    result: KeyValueStore<K, VR>,
    joiner: F,
    children: Children<K, Change<VR>>,
}

impl<K, V1, V2, VR, F> TableTableJoinNode<K, V1, V2, VR, F>
where
    K: Clone + 'static,
    V1: 'static,
    V2: 'static,
    VR: Clone + 'static,
    F: Fn(Option<&V1>, Option<&V2>) -> Option<VR>,
{
    fn update(
        &mut self,
        ctx: &mut TaskContext,
        record: Record<K, JoinSide<Change<V1>, Change<V2>>>,
    ) -> Result<(), StreamsError> {
        let new = match &record.value {
            JoinSide::Left(change) => {
                let right = self.right.get(&record.key)?;
                (self.joiner)(change.new.as_ref(), right.as_ref())
            }
            JoinSide::Right(change) => {
                let left = self.left.get(&record.key)?;
                (self.joiner)(left.as_ref(), change.new.as_ref())
            }
        };
        // A row that neither exists nor existed gives no update (no tombstone for a key the
        // join never had).
        let (key, timestamp) = (&record.key, record.timestamp);
        match new {
            Some(new) => self.result.put(key, &new, timestamp)?,
            None if self.result.get(key)?.is_some() => self.result.delete(key, timestamp)?,
            None => {}
        }
        if self.result.needs_flush() {
            forward_changes(&self.result, ctx, &self.children);
        }
        Ok(())
    }
}

impl<K, V1, V2, VR, F> Node<K, JoinSide<Change<V1>, Change<V2>>>
    for TableTableJoinNode<K, V1, V2, VR, F>
where
    K: Clone + 'static,
    V1: 'static,
    V2: 'static,
    VR: Clone + 'static,
    F: Fn(Option<&V1>, Option<&V2>) -> Option<VR>,
{
    fn process(
        &mut self,
        ctx: &mut TaskContext,
        record: Record<K, JoinSide<Change<V1>, Change<V2>>>,
    ) {
        if self.result.key_serde.is_null(&record.key) {
            return;
        }
        if let Err(e) = self.update(ctx, record) {
            ctx.fail(e);
        }
    }
}

impl<K: Clone + 'static, V1, V2, VR: Clone + 'static, F> Lifecycle
    for TableTableJoinNode<K, V1, V2, VR, F>
{
    fn flush(&mut self, ctx: &mut TaskContext) {
        forward_changes(&self.result, ctx, &self.children);
    }
}
