//! Windowed aggregations on event time, and suppression of intermediate results.
//!
//! Three kinds of windows, as in Kafka Streams:
//!
//! - [`TimeWindows`]: fixed windows at multiples of the advance from 0. A record belongs to
//!   every window that contains its timestamp: one for tumbling windows, `size / advance` for
//!   hopping ones.
//! - [`SlidingWindows`]: windows of a fixed size placed by the records themselves (KIP-450),
//!   so that every distinct set of records within the time difference gets one window.
//! - [`SessionWindows`]: one window per burst of activity of a key, ending when no record
//!   came for the inactivity gap; a record that bridges two sessions merges them.
//!
//! A window accepts records until stream time passes its close time (its end plus the grace
//! period; for sessions also plus the gap); a record for a closed window is dropped and
//! counted (`fjord_streams_dropped_records_total{reason="late"}`), as Kafka Streams does.
//!
//! One node runs all three ([`WindowedAggregateNode`]): what differs is which windows a
//! record updates ([`WindowAggregation`]) and how the store keys hold windows
//! ([`WindowedLayout`]: the `fjord-state` window layout keyed by start, or the session layout
//! keyed by end and start). The aggregates live behind the record cache, so the changelog and
//! downstream see one update per window per commit, and reads of several windows (a key's
//! sessions, the sliding windows around a record) go through the cache too. Windows hold the
//! largest timestamp of their records next to the aggregate (Kafka's timestamped window
//! store), which the sliding algorithm needs; a session's is its end. Expired segments (older than the retention) are
//! removed at each flush with one range delete.
//!
//! `suppress_until_window_closes` holds each window's latest result in a logged store of its
//! own (so a crash loses none) and emits it once, when the window closes.

use std::collections::BTreeSet;
use std::marker::PhantomData;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use fjord_state::{KeyValueBytesStore, SessionStore, StoreError, WindowStore};

use crate::error::StreamsError;
use crate::node::{Children, Instantiator, Lifecycle, Node, NodeFactory, TaskContext, wrap};
use crate::record::{Headers, Record};
use crate::serdes::{Serde, SerdeError, SerdeRef, Serdes};
use crate::state::{Change, StoreKind, StoreRef};
use crate::table::{
    KGroupedStream, KTable, Materialized, add_store, add_store_node, failed_table,
    materialized_with,
};

pub use crate::session_window::{SessionWindowedKStream, SessionWindows};
use crate::sliding_window::SlidingAggregation;
pub use crate::sliding_window::SlidingWindows;

/// A window in milliseconds. Time windows are `[start, end)`; session and sliding windows
/// include their end, as in Kafka Streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    /// Inclusive start.
    pub start: i64,
    /// The end: exclusive for time windows, inclusive for session and sliding windows.
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
    /// window start as 8 big-endian bytes; the end is the start plus `window_size_ms` (for
    /// sliding windows, the time difference).
    pub fn windowed<K: 'static>(inner: SerdeRef<K>, window_size_ms: i64) -> SerdeRef<Windowed<K>> {
        Arc::new(WindowedSerde { inner, size_ms: Some(window_size_ms) })
    }

    /// Session-windowed keys as Kafka's `SessionWindowedSerde` writes them: the key's bytes,
    /// then the session end and start as 8 big-endian bytes each.
    pub fn session_windowed<K: 'static>(inner: SerdeRef<K>) -> SerdeRef<Windowed<K>> {
        Arc::new(WindowedSerde { inner, size_ms: None })
    }
}

/// Windowed keys: with a window size, the start only; without one (sessions), end and start.
struct WindowedSerde<K> {
    inner: SerdeRef<K>,
    size_ms: Option<i64>,
}

fn read_be_i64(bytes: &[u8]) -> i64 {
    let mut array = [0u8; 8];
    array.copy_from_slice(&bytes[..8]);
    i64::from_be_bytes(array)
}

impl<K: 'static> Serde<Windowed<K>> for WindowedSerde<K> {
    fn name(&self) -> &'static str {
        if self.size_ms.is_some() { "windowed" } else { "session-windowed" }
    }
    fn serialize(&self, value: &Windowed<K>, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        self.inner.serialize(&value.key, out)?;
        if self.size_ms.is_none() {
            out.extend_from_slice(&value.window.end.to_be_bytes());
        }
        out.extend_from_slice(&value.window.start.to_be_bytes());
        Ok(())
    }
    fn deserialize(&self, bytes: &[u8]) -> Result<Windowed<K>, SerdeError> {
        let suffix = if self.size_ms.is_some() { 8 } else { 16 };
        let Some(split) = bytes.len().checked_sub(suffix) else {
            return Err(SerdeError::Deserialize {
                serde: self.name(),
                len: bytes.len(),
                reason: format!("shorter than the {suffix}-byte window bounds"),
            });
        };
        let key = self.inner.deserialize(&bytes[..split])?;
        let window = match self.size_ms {
            Some(size) => {
                let start = read_be_i64(&bytes[split..]);
                Window { start, end: start.saturating_add(size) }
            }
            None => Window {
                start: read_be_i64(&bytes[split + 8..]),
                end: read_be_i64(&bytes[split..]),
            },
        };
        Ok(Windowed { key, window })
    }
}

/// What [`KGroupedStream::windowed_by`] takes: [`TimeWindows`] and [`SlidingWindows`] give a
/// [`TimeWindowedKStream`], [`SessionWindows`] a [`SessionWindowedKStream`] (Kafka's
/// overloads of `windowedBy`).
pub trait WindowedBy<K, V> {
    /// The windowed stream.
    type Stream;
    /// Windows a grouped stream.
    fn windowed(self, grouped: KGroupedStream<K, V>) -> Self::Stream;
}

impl<K: Clone + 'static, V: Clone + 'static> KGroupedStream<K, V> {
    /// Aggregates per key and window: time, sliding or session windows.
    pub fn windowed_by<W: WindowedBy<K, V>>(&self, windows: W) -> W::Stream {
        windows.windowed(KGroupedStream { stream: self.stream.clone() })
    }
}

/// A grouped stream with time or sliding windows, ready to aggregate (Kafka's
/// `TimeWindowedKStream`).
pub struct TimeWindowedKStream<K, V> {
    grouped: KGroupedStream<K, V>,
    windows: FixedSizeWindows,
}

/// The windows of a [`TimeWindowedKStream`].
#[derive(Clone, Copy)]
enum FixedSizeWindows {
    Time(TimeWindows),
    Sliding(SlidingWindows),
}

impl<K: Clone + 'static, V: Clone + 'static> WindowedBy<K, V> for TimeWindows {
    type Stream = TimeWindowedKStream<K, V>;
    fn windowed(self, grouped: KGroupedStream<K, V>) -> TimeWindowedKStream<K, V> {
        TimeWindowedKStream { grouped, windows: FixedSizeWindows::Time(self) }
    }
}

impl<K: Clone + 'static, V: Clone + 'static> WindowedBy<K, V> for SlidingWindows {
    type Stream = TimeWindowedKStream<K, V>;
    fn windowed(self, grouped: KGroupedStream<K, V>) -> TimeWindowedKStream<K, V> {
        TimeWindowedKStream { grouped, windows: FixedSizeWindows::Sliding(self) }
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
        match self.windows {
            FixedSizeWindows::Time(windows) => {
                let aggregation = TimeWindowAggregation { windows, aggregator };
                windowed_aggregation(&self.grouped, materialized, aggregation)
            }
            FixedSizeWindows::Sliding(windows) => {
                let aggregation = SlidingAggregation { windows, aggregator };
                windowed_aggregation(&self.grouped, materialized, aggregation)
            }
        }
    }
}

/// The window layout of a windowed aggregation's store (the same for the operator and for
/// interactive queries: the segment interval is part of the key).
pub(crate) fn window_layout(engine: Arc<dyn KeyValueBytesStore>, retention_ms: i64) -> WindowStore {
    let interval = fjord_state::window::default_segment_interval(retention_ms);
    WindowStore::new(engine, retention_ms, interval)
}

/// The session layout of a session-windowed aggregation's store.
pub(crate) fn session_layout(
    engine: Arc<dyn KeyValueBytesStore>,
    retention_ms: i64,
) -> SessionStore {
    let interval = fjord_state::window::default_segment_interval(retention_ms);
    SessionStore::new(engine, retention_ms, interval)
}

/// The aggregate of a window in a window store's value: after the largest timestamp of the
/// window's records (8 big-endian bytes, as Kafka's timestamped window stores write it).
pub(crate) fn split_timestamp(value: &[u8]) -> Option<(i64, &[u8])> {
    (value.len() >= 8).then(|| (read_be_i64(value), &value[8..]))
}

/// How the store keys of a windowed aggregation hold its windows.
pub(crate) enum WindowedLayout {
    /// Windows of one size, keyed by start; values start with the largest record timestamp.
    Fixed { store: WindowStore, size_ms: i64 },
    /// Sessions, keyed by end and start; the largest record timestamp is the end.
    Session(SessionStore),
}

impl WindowedLayout {
    /// The window layout for windows of `size_ms`, kept for `retention_ms`.
    pub(crate) fn fixed(
        engine: Arc<dyn KeyValueBytesStore>,
        retention_ms: i64,
        size_ms: i64,
    ) -> Self {
        WindowedLayout::Fixed { store: window_layout(engine, retention_ms), size_ms }
    }

    fn encode_key(&self, key: &[u8], window: Window) -> Vec<u8> {
        match self {
            WindowedLayout::Fixed { store, .. } => store.encode_key(key, window.start),
            WindowedLayout::Session(store) => store.encode_key(key, window.start, window.end),
        }
    }

    fn window(&self, stored: &[u8]) -> Result<Window, StoreError> {
        match self {
            WindowedLayout::Fixed { store, size_ms } => {
                let start = store.decode_start(stored)?;
                Ok(Window { start, end: start.saturating_add(*size_ms) })
            }
            WindowedLayout::Session(store) => {
                let (start, end) = store.session_window(stored)?;
                Ok(Window { start, end })
            }
        }
    }

    fn decode_key(&self, stored: &[u8]) -> Result<(Vec<u8>, Window), StoreError> {
        match self {
            WindowedLayout::Fixed { store, size_ms } => {
                let (key, start) = store.decode_key(stored)?;
                Ok((key, Window { start, end: start.saturating_add(*size_ms) }))
            }
            WindowedLayout::Session(store) => {
                let (key, start, end) = store.decode_key(stored)?;
                Ok((key, Window { start, end }))
            }
        }
    }

    /// Store key ranges of `key`'s windows with a start (fixed) or end (sessions) in
    /// `[from, to]`.
    fn key_ranges(&self, key: &[u8], from: i64, to: i64) -> Vec<(Vec<u8>, Vec<u8>)> {
        match self {
            WindowedLayout::Fixed { store, .. } => store.key_ranges(key, from, to),
            WindowedLayout::Session(store) => store.key_ranges(key, from, to),
        }
    }

    fn observe(&self, stream_time: i64) {
        match self {
            WindowedLayout::Fixed { store, .. } => store.observe(stream_time),
            WindowedLayout::Session(store) => store.observe(stream_time),
        }
    }

    fn expire(
        &self,
        batch: &mut fjord_state::WriteBatch,
        stream_time: i64,
    ) -> Result<(), StoreError> {
        match self {
            WindowedLayout::Fixed { store, .. } => store.expire(batch, stream_time),
            WindowedLayout::Session(store) => store.expire(batch, stream_time),
        }
    }
}

/// A window of the current key as the store holds it.
pub(crate) struct StoredWindow<A> {
    pub(crate) window: Window,
    pub(crate) aggregate: A,
    /// The largest timestamp of the window's records.
    pub(crate) timestamp: i64,
}

/// The store of a windowed aggregation, with the key of the record being processed: typed
/// reads and writes of that key's windows through the record cache, and the flush that
/// forwards what the cache held back.
pub(crate) struct WindowedStore<K, A> {
    pub(crate) name: Arc<str>,
    store_name: String,
    store: StoreRef,
    layout: WindowedLayout,
    pub(crate) key_serde: SerdeRef<K>,
    value_serde: SerdeRef<A>,
    children: Children<Windowed<K>, Change<A>>,
    /// The serialized key of the record being processed.
    key_buf: Vec<u8>,
    /// The latest session end the store may hold, once read from the engine.
    latest_end: Option<i64>,
}

impl<K: Clone + 'static, A: Clone + 'static> WindowedStore<K, A> {
    fn error(&self, message: impl std::fmt::Display) -> StreamsError {
        StreamsError::State { store: self.store_name.clone(), message: message.to_string() }
    }

    /// Serializes the key of the record the next reads and writes are about, and moves the
    /// store's stream time (what is expired) to `stream_time`.
    fn begin(&mut self, key: &K, stream_time: i64) -> Result<(), StreamsError> {
        self.layout.observe(stream_time);
        self.key_buf.clear();
        let mut buf = std::mem::take(&mut self.key_buf);
        let result = self.key_serde.serialize(key, &mut buf);
        self.key_buf = buf;
        result.map_err(|e| self.error(e))
    }

    /// The aggregate and largest record timestamp of a stored value.
    fn decode_value(&self, bytes: &[u8], window: Window) -> Result<(A, i64), StreamsError> {
        let (timestamp, bytes) = match &self.layout {
            WindowedLayout::Fixed { .. } => split_timestamp(bytes)
                .ok_or_else(|| self.error("window value shorter than its timestamp"))?,
            WindowedLayout::Session(_) => (window.end, bytes),
        };
        let aggregate = self.value_serde.deserialize(bytes).map_err(|e| self.error(e))?;
        Ok((aggregate, timestamp))
    }

    /// The latest session end the store may hold: what the engine held when the task
    /// started (stream time starts over then), and every end written since.
    pub(crate) fn latest_end(&mut self) -> Result<i64, StreamsError> {
        if let Some(latest) = self.latest_end {
            return Ok(latest);
        }
        let latest = match &self.layout {
            WindowedLayout::Session(store) => store.max_end_bound().map_err(|e| self.error(e))?,
            WindowedLayout::Fixed { .. } => None,
        };
        let latest = latest.unwrap_or(i64::MIN);
        self.latest_end = Some(latest);
        Ok(latest)
    }

    /// A window of the current key, if the store has it.
    pub(crate) fn get(&mut self, window: Window) -> Result<Option<(A, i64)>, StreamsError> {
        let key = self.layout.encode_key(&self.key_buf, window);
        let mut store = self.store.borrow_mut();
        match store.get(&key)? {
            Some(bytes) => self.decode_value(bytes, window).map(Some),
            None => Ok(None),
        }
    }

    /// The live windows of the current key with a start (fixed windows) or end (sessions)
    /// in `[from, to]`, in the store's order (by start; sessions by end, then start).
    pub(crate) fn fetch(&self, from: i64, to: i64) -> Result<Vec<StoredWindow<A>>, StreamsError> {
        let store = self.store.borrow();
        let mut out = Vec::new();
        for (lower, upper) in self.layout.key_ranges(&self.key_buf, from, to) {
            for (stored, bytes) in store.range(Bound::Included(&lower), Bound::Included(&upper))? {
                let window = self.layout.window(&stored).map_err(|e| self.error(e))?;
                let (aggregate, timestamp) = self.decode_value(&bytes, window)?;
                out.push(StoredWindow { window, aggregate, timestamp });
            }
        }
        Ok(out)
    }

    /// Writes (`Some`) or removes (`None`) a window of the current key whose records' largest
    /// timestamp is `timestamp`; flushes if the cache is over its budget.
    pub(crate) fn put(
        &mut self,
        ctx: &mut TaskContext,
        window: Window,
        value: Option<&A>,
        timestamp: i64,
    ) -> Result<(), StreamsError> {
        let latest_end = self.latest_end()?.max(window.end);
        self.latest_end = Some(latest_end);
        let key = self.layout.encode_key(&self.key_buf, window);
        let timestamped = matches!(self.layout, WindowedLayout::Fixed { .. });
        let serde = &self.value_serde;
        let needs_flush = {
            let mut store = self.store.borrow_mut();
            store.put_with(&key, timestamp, |buf| match value {
                Some(value) => {
                    if timestamped {
                        buf.extend_from_slice(&timestamp.to_be_bytes());
                    }
                    serde.serialize(value, buf).map(|()| true)
                }
                None => Ok(false),
            })?;
            store.needs_flush()
        };
        if needs_flush { self.flush(ctx) } else { Ok(()) }
    }

    /// Forwards what the cache flushed, then drops expired segments.
    fn flush(&mut self, ctx: &mut TaskContext) -> Result<(), StreamsError> {
        let flushed = self.store.borrow_mut().flush(ctx);
        for entry in flushed {
            let (key, window) = self.layout.decode_key(&entry.key).map_err(|e| self.error(e))?;
            let key = self.key_serde.deserialize(&key).map_err(|e| self.error(e))?;
            let value = |bytes: Option<Vec<u8>>| {
                bytes.map(|b| self.decode_value(&b, window).map(|(a, _)| a)).transpose()
            };
            let change = Change { new: value(entry.new)?, old: value(entry.old)? };
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

/// What a kind of windows does with a record: which windows of its key it reads and updates
/// in the store, and how the store and the resulting table are set up.
pub(crate) trait WindowAggregation<K, V, A>: Send + Sync + 'static {
    /// The store's kind, with its retention.
    fn store_kind(&self) -> StoreKind;
    /// The layout of the store's keys over its engine.
    fn layout(&self, engine: Arc<dyn KeyValueBytesStore>) -> WindowedLayout;
    /// How long after a window's end stream time must move before the window closes (what
    /// `suppress_until_window_closes` waits for).
    fn close_after_ms(&self) -> i64;
    /// The serde of the table's windowed keys.
    fn windowed_serde(&self, key_serde: SerdeRef<K>) -> SerdeRef<Windowed<K>>;
    /// Aggregates a record (its key is the store's current key).
    fn process(
        &self,
        store: &mut WindowedStore<K, A>,
        ctx: &mut TaskContext,
        record: Record<K, V>,
    ) -> Result<(), StreamsError>;
}

/// Adds a windowed aggregation of a grouped stream and returns its table.
pub(crate) fn windowed_aggregation<K, V, A, W>(
    grouped: &KGroupedStream<K, V>,
    materialized: Materialized<K, A>,
    aggregation: W,
) -> KTable<Windowed<K>, A>
where
    K: Clone + 'static,
    V: Clone + 'static,
    A: Clone + 'static,
    W: WindowAggregation<K, V, A>,
{
    let state = &grouped.stream.state;
    let parent = grouped.stream.node;
    let store = add_store(
        state,
        materialized,
        aggregation.store_kind(),
        grouped.stream.key_serde.clone(),
        None,
        "windowed aggregation",
    );
    let Some((store, key_serde, value_serde)) = store else {
        return failed_table::<K, V, _, _>(state, "AGGREGATE", parent);
    };
    let table_key_serde = aggregation.windowed_serde(key_serde.clone());
    let close_after_ms = aggregation.close_after_ms();
    let aggregation = Arc::new(aggregation);
    let (node_value_serde, store_name) = (value_serde.clone(), store.clone());
    let factory: NodeFactory<K, V> = Box::new(move |inst: &mut Instantiator<'_>, id| {
        let children = inst.children::<Windowed<K>, Change<A>>(id)?;
        let cached = inst.store(&store_name)?;
        let layout = aggregation.layout(cached.borrow().engine().clone());
        Ok(wrap(WindowedAggregateNode {
            store: WindowedStore {
                name: inst.name(id)?,
                store_name: store_name.clone(),
                store: cached,
                layout,
                key_serde: key_serde.clone(),
                value_serde: node_value_serde.clone(),
                children,
                key_buf: Vec::new(),
                latest_end: None,
            },
            aggregation: aggregation.clone(),
            _types: PhantomData,
        }))
    });
    let node = add_store_node(state, "AGGREGATE", &[parent], &[&store], Box::new(factory));
    let mut table = KTable::new(state, node, Some(table_key_serde), Some(value_serde), Some(store));
    table.grace_ms = Some(close_after_ms);
    table
}

/// Aggregates records per key and window into a window or session store.
struct WindowedAggregateNode<K, V, A, W> {
    store: WindowedStore<K, A>,
    aggregation: Arc<W>,
    _types: PhantomData<fn(V)>,
}

impl<K, V, A, W> Node<K, V> for WindowedAggregateNode<K, V, A, W>
where
    K: Clone + 'static,
    A: Clone + 'static,
    W: WindowAggregation<K, V, A>,
{
    fn process(&mut self, ctx: &mut TaskContext, record: Record<K, V>) {
        if self.store.key_serde.is_null(&record.key) {
            return ctx.skip_record(&self.store.name, "null-key");
        }
        let result = self
            .store
            .begin(&record.key, ctx.stream_time)
            .and_then(|()| self.aggregation.process(&mut self.store, ctx, record));
        if let Err(e) = result {
            ctx.fail(e);
        }
    }
}

impl<K: Clone + 'static, V, A: Clone + 'static, W> Lifecycle for WindowedAggregateNode<K, V, A, W> {
    fn flush(&mut self, ctx: &mut TaskContext) {
        if let Err(e) = self.store.flush(ctx) {
            ctx.fail(e);
        }
    }
}

/// Time windows: a record updates every window that contains it.
struct TimeWindowAggregation<F> {
    windows: TimeWindows,
    aggregator: F,
}

impl<F> TimeWindowAggregation<F> {
    /// Windows are kept until they close.
    fn retention_ms(&self) -> i64 {
        self.windows.size_ms.saturating_add(self.windows.grace_ms)
    }
}

impl<K, V, A, F> WindowAggregation<K, V, A> for TimeWindowAggregation<F>
where
    K: Clone + 'static,
    V: Clone + 'static,
    A: Clone + 'static,
    F: Fn(&K, V, Option<A>) -> A + Send + Sync + 'static,
{
    fn store_kind(&self) -> StoreKind {
        StoreKind::Window { retention_ms: self.retention_ms() }
    }

    fn layout(&self, engine: Arc<dyn KeyValueBytesStore>) -> WindowedLayout {
        WindowedLayout::fixed(engine, self.retention_ms(), self.windows.size_ms)
    }

    fn close_after_ms(&self) -> i64 {
        self.windows.grace_ms
    }

    fn windowed_serde(&self, key_serde: SerdeRef<K>) -> SerdeRef<Windowed<K>> {
        Serdes::windowed(key_serde, self.windows.size_ms)
    }

    fn process(
        &self,
        store: &mut WindowedStore<K, A>,
        ctx: &mut TaskContext,
        record: Record<K, V>,
    ) -> Result<(), StreamsError> {
        let windows = &self.windows;
        // A window is closed once stream time reaches its end plus the grace period.
        let close_time = ctx.stream_time.saturating_sub(windows.grace_ms);
        let mut start = windows.first_window_start(record.timestamp);
        while start <= record.timestamp {
            let window = Window { start, end: start.saturating_add(windows.size_ms) };
            start += windows.advance_ms;
            if window.end <= close_time {
                ctx.skip_record(&store.name, "late");
                continue;
            }
            let (old, timestamp) = match store.get(window)? {
                Some((old, timestamp)) => (Some(old), timestamp.max(record.timestamp)),
                None => (None, record.timestamp),
            };
            let new = (self.aggregator)(&record.key, record.value.clone(), old);
            store.put(ctx, window, Some(&new), timestamp)?;
        }
        Ok(())
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
    /// Only buffers. Emitting here could emit a window before its last update: the windowed
    /// aggregation upstream forwards its cache in key order, so while it flushes, the update
    /// of one window may reach this node before the newer value of another window that stream
    /// time has already closed.
    fn process(&mut self, ctx: &mut TaskContext, record: Record<Windowed<K>, Change<V>>) {
        if let Err(e) = self.load().and_then(|()| self.buffer_update(record)) {
            ctx.fail(e);
        }
    }
}

impl<K: Clone + 'static, V: Clone + 'static> Lifecycle for SuppressNode<K, V> {
    /// Emits the windows that stream time closed. The task flushes upstream operators first,
    /// so every update of a closed window is in the buffer by now (no record can update a
    /// closed window: it is late).
    fn flush(&mut self, ctx: &mut TaskContext) {
        if let Err(e) = self.load().and_then(|()| self.emit_closed(ctx)) {
            ctx.fail(e);
        }
    }
}
