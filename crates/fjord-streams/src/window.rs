//! Windowed aggregations on event time, and suppression of intermediate results.
//!
//! A record belongs to every window that contains its timestamp: one for tumbling windows,
//! `size / advance` for hopping ones. A window accepts records until stream time passes its
//! end plus the grace period (it *closes*); a record for a closed window is dropped and counted
//! (`fjord_streams_dropped_records_total{reason="late"}`), as Kafka Streams does.
//!
//! The aggregates live in a window store (the `fjord-state` layout: segment, key, window
//! start) behind the record cache, so the changelog and downstream see one update per window
//! per commit. Expired segments (older than the retention, at least size plus grace) are
//! removed at each flush with one range delete.
//!
//! `suppress_until_window_closes` holds each window's latest result in a logged store of its
//! own (so a crash loses none) and emits it once, when the window closes.

use std::collections::BTreeSet;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use fjord_state::WindowStore;

use crate::error::StreamsError;
use crate::node::{Children, Instantiator, Lifecycle, Node, NodeFactory, TaskContext, wrap};
use crate::record::{Headers, Record};
use crate::serdes::{Serde, SerdeError, SerdeRef, Serdes};
use crate::state::{Change, StoreKind, StoreRef};
use crate::table::{
    KGroupedStream, KTable, Materialized, add_store, add_store_node, failed_table,
    materialized_with,
};

/// A time window: `[start, end)` in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    /// Inclusive start.
    pub start: i64,
    /// Exclusive end.
    pub end: i64,
}

/// A key with the window it was aggregated in (Kafka's `Windowed<K>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Windowed<K> {
    /// The record key.
    pub key: K,
    /// The window.
    pub window: Window,
}

/// Fixed-size windows on event time, tumbling or hopping (Kafka's `TimeWindows`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindows {
    size_ms: i64,
    advance_ms: i64,
    grace_ms: i64,
}

pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl TimeWindows {
    /// Tumbling windows of `size` that close as soon as stream time passes their end.
    pub fn of_size_with_no_grace(size: Duration) -> Self {
        Self::of_size_and_grace(size, Duration::ZERO)
    }

    /// Tumbling windows of `size` that accept out-of-order records for `grace` after their
    /// end.
    pub fn of_size_and_grace(size: Duration, grace: Duration) -> Self {
        let size_ms = millis(size).max(1);
        TimeWindows { size_ms, advance_ms: size_ms, grace_ms: millis(grace) }
    }

    /// Hopping windows: a new window every `advance` (at most the size; at least 1 ms).
    pub fn advance_by(mut self, advance: Duration) -> Self {
        self.advance_ms = millis(advance).clamp(1, self.size_ms);
        self
    }

    /// The window size in milliseconds.
    pub fn size_ms(&self) -> i64 {
        self.size_ms
    }

    /// The grace period in milliseconds.
    pub fn grace_ms(&self) -> i64 {
        self.grace_ms
    }

    /// The start of the oldest window that contains `timestamp` (as Kafka's `windowsFor`:
    /// windows start at multiples of the advance, from 0); the others follow every advance up
    /// to `timestamp`.
    pub fn first_window_start(&self, timestamp: i64) -> i64 {
        ((timestamp - self.size_ms + self.advance_ms).max(0) / self.advance_ms) * self.advance_ms
    }
}

impl Serdes {
    /// Windowed keys as Kafka's `TimeWindowedSerde` writes them: the key's bytes, then the
    /// window start as 8 big-endian bytes; the end is the start plus `window_size_ms`.
    pub fn windowed<K: 'static>(inner: SerdeRef<K>, window_size_ms: i64) -> SerdeRef<Windowed<K>> {
        Arc::new(WindowedSerde { inner, size_ms: window_size_ms })
    }
}

struct WindowedSerde<K> {
    inner: SerdeRef<K>,
    size_ms: i64,
}

impl<K: 'static> Serde<Windowed<K>> for WindowedSerde<K> {
    fn name(&self) -> &'static str {
        "windowed"
    }
    fn serialize(&self, value: &Windowed<K>, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        self.inner.serialize(&value.key, out)?;
        out.extend_from_slice(&value.window.start.to_be_bytes());
        Ok(())
    }
    fn deserialize(&self, bytes: &[u8]) -> Result<Windowed<K>, SerdeError> {
        let Some(split) = bytes.len().checked_sub(8) else {
            return Err(SerdeError::Deserialize {
                serde: "windowed",
                len: bytes.len(),
                reason: "shorter than the 8-byte window start".into(),
            });
        };
        let mut start = [0u8; 8];
        start.copy_from_slice(&bytes[split..]);
        let start = i64::from_be_bytes(start);
        let key = self.inner.deserialize(&bytes[..split])?;
        Ok(Windowed { key, window: Window { start, end: start.saturating_add(self.size_ms) } })
    }
}

/// A grouped stream with windows, ready to aggregate (Kafka's `TimeWindowedKStream`).
pub struct TimeWindowedKStream<K, V> {
    grouped: KGroupedStream<K, V>,
    windows: TimeWindows,
}

impl<K: Clone + 'static, V: Clone + 'static> KGroupedStream<K, V> {
    /// Aggregates per key and time window.
    pub fn windowed_by(&self, windows: TimeWindows) -> TimeWindowedKStream<K, V> {
        TimeWindowedKStream { grouped: KGroupedStream { stream: self.stream.clone() }, windows }
    }
}

impl<K: Clone + 'static, V: Clone + 'static> TimeWindowedKStream<K, V> {
    /// Counts the records per key and window.
    pub fn count(&self, materialized: Materialized<K, i64>) -> KTable<Windowed<K>, i64> {
        self.aggregate(|| 0, |_, _, n| n + 1, materialized_with(materialized, Some(Serdes::i64())))
    }

    /// Combines the values per key and window.
    pub fn reduce(
        &self,
        reducer: impl Fn(V, V) -> V + Send + Sync + 'static,
        materialized: Materialized<K, V>,
    ) -> KTable<Windowed<K>, V> {
        let materialized = materialized_with(materialized, self.grouped.stream.value_serde.clone());
        self.add(materialized, move |_: &K, value: V, old: Option<V>| match old {
            Some(old) => reducer(old, value),
            None => value,
        })
    }

    /// Folds the values per key and window into an aggregate that starts at `initializer()`.
    pub fn aggregate<A: Clone + 'static>(
        &self,
        initializer: impl Fn() -> A + Send + Sync + 'static,
        aggregator: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
        materialized: Materialized<K, A>,
    ) -> KTable<Windowed<K>, A> {
        self.add(materialized, move |key: &K, value: V, old: Option<A>| {
            aggregator(key, value, old.unwrap_or_else(&initializer))
        })
    }

    fn add<A: Clone + 'static>(
        &self,
        materialized: Materialized<K, A>,
        aggregator: impl Fn(&K, V, Option<A>) -> A + Send + Sync + 'static,
    ) -> KTable<Windowed<K>, A> {
        let state = &self.grouped.stream.state;
        let parent = self.grouped.stream.node;
        let windows = self.windows;
        let retention_ms = windows.size_ms.saturating_add(windows.grace_ms);
        let store = add_store(
            state,
            materialized,
            StoreKind::Window { retention_ms },
            self.grouped.stream.key_serde.clone(),
            None,
            "windowed aggregation",
        );
        let Some((store, key_serde, value_serde)) = store else {
            return failed_table::<K, V, _, _>(state, "AGGREGATE", parent);
        };
        let aggregator = Arc::new(aggregator);
        let (node_key_serde, node_value_serde, store_name) =
            (key_serde.clone(), value_serde.clone(), store.clone());
        let factory: NodeFactory<K, V> = Box::new(move |inst: &mut Instantiator<'_>, id| {
            let children = inst.children::<Windowed<K>, Change<A>>(id)?;
            let cached = inst.store(&store_name)?;
            let layout = window_layout(cached.borrow().engine().clone(), retention_ms);
            let aggregator = aggregator.clone();
            Ok(wrap(WindowAggregateNode {
                name: inst.name(id)?,
                store: cached,
                layout,
                windows,
                key_serde: node_key_serde.clone(),
                value_serde: node_value_serde.clone(),
                aggregator: move |k: &K, v: V, old: Option<A>| aggregator(k, v, old),
                children,
                key_buf: Vec::new(),
                _types: PhantomData,
            }))
        });
        let node = add_store_node(state, "AGGREGATE", &[parent], &[&store], Box::new(factory));
        let mut table = KTable::new(
            state,
            node,
            Some(Serdes::windowed(key_serde, windows.size_ms)),
            Some(value_serde),
            Some(store),
        );
        table.grace_ms = Some(windows.grace_ms);
        table
    }
}

/// The window layout of a windowed aggregation's store (the same for the operator and for
/// interactive queries: the segment interval is part of the key).
pub(crate) fn window_layout(
    engine: Arc<dyn fjord_state::KeyValueBytesStore>,
    retention_ms: i64,
) -> WindowStore {
    WindowStore::new(
        engine,
        retention_ms,
        fjord_state::window::default_segment_interval(retention_ms),
    )
}

/// Aggregates records per key and window into a window store.
struct WindowAggregateNode<K, V, A, F> {
    name: Arc<str>,
    store: StoreRef,
    layout: WindowStore,
    windows: TimeWindows,
    key_serde: SerdeRef<K>,
    value_serde: SerdeRef<A>,
    aggregator: F,
    children: Children<Windowed<K>, Change<A>>,
    key_buf: Vec<u8>,
    _types: PhantomData<fn(V)>,
}

impl<K, V, A, F> WindowAggregateNode<K, V, A, F>
where
    K: Clone + 'static,
    A: Clone + 'static,
{
    fn state_error(&self, message: impl std::fmt::Display) -> StreamsError {
        self.store.borrow().error(message)
    }

    /// Forwards what the cache flushed, then drops expired segments.
    fn flush_windows(&mut self, ctx: &mut TaskContext) -> Result<(), StreamsError> {
        let flushed = self.store.borrow_mut().flush(ctx);
        for entry in flushed {
            let (key, start) =
                self.layout.decode_key(&entry.key).map_err(|e| self.state_error(e))?;
            let key = self.key_serde.deserialize(&key).map_err(|e| self.state_error(e))?;
            let value = |bytes: Option<Vec<u8>>| {
                bytes.map(|b| self.value_serde.deserialize(&b)).transpose()
            };
            let change = Change {
                new: value(entry.new).map_err(|e| self.state_error(e))?,
                old: value(entry.old).map_err(|e| self.state_error(e))?,
            };
            let window = Window { start, end: start.saturating_add(self.windows.size_ms) };
            self.children.forward(
                ctx,
                Record {
                    key: Windowed { key, window },
                    value: change,
                    timestamp: entry.timestamp,
                    headers: Headers::new(),
                },
            );
        }
        if ctx.stream_time >= 0 {
            let mut store = self.store.borrow_mut();
            self.layout.expire(store.staged_mut(), ctx.stream_time).map_err(|e| store.error(e))?;
        }
        Ok(())
    }
}

impl<K, V, A, F> Node<K, V> for WindowAggregateNode<K, V, A, F>
where
    K: Clone + 'static,
    V: Clone,
    A: Clone + 'static,
    F: Fn(&K, V, Option<A>) -> A,
{
    fn process(&mut self, ctx: &mut TaskContext, record: Record<K, V>) {
        if self.key_serde.is_null(&record.key) {
            return ctx.skip_record(&self.name, "null-key");
        }
        self.key_buf.clear();
        if let Err(e) = self.key_serde.serialize(&record.key, &mut self.key_buf) {
            return ctx.fail(self.state_error(e));
        }
        // A window is closed once stream time reaches its end plus the grace period.
        let close_time = ctx.stream_time.saturating_sub(self.windows.grace_ms);
        let mut start = self.windows.first_window_start(record.timestamp) - self.windows.advance_ms;
        loop {
            start += self.windows.advance_ms;
            if start > record.timestamp {
                break;
            }
            let end = start.saturating_add(self.windows.size_ms);
            if end <= close_time {
                ctx.skip_record(&self.name, "late");
                continue;
            }
            let key = self.layout.encode_key(&self.key_buf, start);
            let mut store = self.store.borrow_mut();
            let old = match store.get(&key) {
                Ok(Some(bytes)) => match self.value_serde.deserialize(bytes) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        drop(store);
                        return ctx.fail(self.state_error(e));
                    }
                },
                Ok(None) => None,
                Err(e) => {
                    drop(store);
                    return ctx.fail(e);
                }
            };
            let new = (self.aggregator)(&record.key, record.value.clone(), old);
            let serde = &self.value_serde;
            let written = store
                .put_with(&key, record.timestamp, |buf| serde.serialize(&new, buf).map(|()| true));
            let needs_flush = store.needs_flush();
            drop(store);
            if let Err(e) = written {
                return ctx.fail(e);
            }
            if needs_flush && let Err(e) = self.flush_windows(ctx) {
                return ctx.fail(e);
            }
        }
    }
}

impl<K: Clone + 'static, V, A: Clone + 'static, F> Lifecycle for WindowAggregateNode<K, V, A, F> {
    fn flush(&mut self, ctx: &mut TaskContext) {
        if let Err(e) = self.flush_windows(ctx) {
            ctx.fail(e);
        }
    }
}

impl<K: Clone + 'static, V: Clone + 'static> KTable<Windowed<K>, V> {
    /// Holds back each window's updates and emits only its final result, once, when the
    /// window closes (Kafka's `suppress(Suppressed.untilWindowCloses(unbounded()))`). The
    /// buffer is a logged store, so results survive a crash.
    pub fn suppress_until_window_closes(&self) -> KTable<Windowed<K>, V> {
        let state = &self.state;
        let (Some(grace_ms), Some(key_serde), Some(value_serde)) =
            (self.grace_ms, self.key_serde.clone(), self.value_serde.clone())
        else {
            state.borrow_mut().errors.push(
                "suppress_until_window_closes needs a windowed aggregation upstream (with its serdes)".into(),
            );
            return failed_table::<Windowed<K>, Change<V>, _, _>(state, "SUPPRESS", self.node);
        };
        let buffer = add_store(
            state,
            Materialized::<Vec<u8>, Vec<u8>>::default(),
            StoreKind::KeyValue,
            Some(Serdes::bytes()),
            Some(Serdes::bytes()),
            "suppression buffer",
        );
        let Some((buffer, _, _)) = buffer else {
            return failed_table::<Windowed<K>, Change<V>, _, _>(state, "SUPPRESS", self.node);
        };
        let (node_key_serde, node_value_serde, buffer_name) =
            (key_serde.clone(), value_serde.clone(), buffer.clone());
        let factory: NodeFactory<Windowed<K>, Change<V>> =
            Box::new(move |inst: &mut Instantiator<'_>, id| {
                Ok(wrap(SuppressNode {
                    buffer: inst.store(&buffer_name)?,
                    key_serde: node_key_serde.clone(),
                    value_serde: node_value_serde.clone(),
                    grace_ms,
                    pending: BTreeSet::new(),
                    loaded: false,
                    children: inst.children::<Windowed<K>, Change<V>>(id)?,
                    key_buf: Vec::new(),
                }))
            });
        let node = add_store_node(state, "SUPPRESS", &[self.node], &[&buffer], Box::new(factory));
        KTable::new(state, node, Some(key_serde), Some(value_serde), None)
    }
}

/// Buffers the latest update per window and emits it when the window closes.
struct SuppressNode<K, V> {
    /// Windowed key bytes → timestamp (8 bytes) and value bytes.
    buffer: StoreRef,
    key_serde: SerdeRef<Windowed<K>>,
    value_serde: SerdeRef<V>,
    grace_ms: i64,
    /// The buffered windows by close order: (window end, windowed key bytes).
    pending: BTreeSet<(i64, Vec<u8>)>,
    /// Whether `pending` was rebuilt from the store (after restoration).
    loaded: bool,
    children: Children<Windowed<K>, Change<V>>,
    key_buf: Vec<u8>,
}

impl<K: Clone + 'static, V: Clone + 'static> SuppressNode<K, V> {
    fn state_error(&self, message: impl std::fmt::Display) -> StreamsError {
        self.buffer.borrow().error(message)
    }

    /// Rebuilds the close-order index from what the store holds (restored state included).
    fn load(&mut self) -> Result<(), StreamsError> {
        if self.loaded {
            return Ok(());
        }
        self.loaded = true;
        let rows =
            self.buffer.borrow().range(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded)?;
        for (key, _) in rows {
            let windowed = self.key_serde.deserialize(&key).map_err(|e| self.state_error(e))?;
            self.pending.insert((windowed.window.end, key));
        }
        Ok(())
    }

    fn buffer_update(
        &mut self,
        record: Record<Windowed<K>, Change<V>>,
    ) -> Result<(), StreamsError> {
        self.key_buf.clear();
        self.key_serde
            .serialize(&record.key, &mut self.key_buf)
            .map_err(|e| self.state_error(e))?;
        let entry = (record.key.window.end, self.key_buf.clone());
        let mut buffer = self.buffer.borrow_mut();
        match &record.value.new {
            Some(value) => {
                let serde = &self.value_serde;
                buffer.put_with(&self.key_buf, record.timestamp, |buf| {
                    buf.extend_from_slice(&record.timestamp.to_be_bytes());
                    serde.serialize(value, buf).map(|()| true)
                })?;
                self.pending.insert(entry);
            }
            None => {
                buffer.delete(&self.key_buf, record.timestamp)?;
                self.pending.remove(&entry);
            }
        }
        Ok(())
    }

    /// Emits every buffered window that has closed by `stream_time`, oldest first.
    fn emit_closed(&mut self, ctx: &mut TaskContext) -> Result<(), StreamsError> {
        let close_time = ctx.stream_time.saturating_sub(self.grace_ms);
        while let Some((end, _)) = self.pending.first() {
            if *end > close_time {
                break;
            }
            let Some((_, key)) = self.pending.pop_first() else { break };
            let row = self.buffer.borrow_mut().get(&key)?.map(<[u8]>::to_vec);
            self.buffer.borrow_mut().delete(&key, ctx.stream_time)?;
            let Some(row) = row else { continue };
            if row.len() < 8 {
                return Err(self.state_error("suppression buffer row shorter than its timestamp"));
            }
            let (ts, value) = row.split_at(8);
            let mut ts_bytes = [0u8; 8];
            ts_bytes.copy_from_slice(ts);
            let windowed = self.key_serde.deserialize(&key).map_err(|e| self.state_error(e))?;
            let value = self.value_serde.deserialize(value).map_err(|e| self.state_error(e))?;
            self.children.forward(
                ctx,
                Record {
                    key: windowed,
                    value: Change { new: Some(value), old: None },
                    timestamp: i64::from_be_bytes(ts_bytes),
                    headers: Headers::new(),
                },
            );
        }
        Ok(())
    }
}

impl<K: Clone + 'static, V: Clone + 'static> Node<Windowed<K>, Change<V>> for SuppressNode<K, V> {
    fn process(&mut self, ctx: &mut TaskContext, record: Record<Windowed<K>, Change<V>>) {
        let result = self
            .load()
            .and_then(|()| self.buffer_update(record))
            .and_then(|()| self.emit_closed(ctx));
        if let Err(e) = result {
            ctx.fail(e);
        }
    }
}

impl<K: Clone + 'static, V: Clone + 'static> Lifecycle for SuppressNode<K, V> {
    /// Windows also close when stream time moves on without reaching this node (at a commit,
    /// after the windowed aggregation upstream flushed).
    fn flush(&mut self, ctx: &mut TaskContext) {
        if let Err(e) = self.load().and_then(|()| self.emit_closed(ctx)) {
            ctx.fail(e);
        }
    }
}
