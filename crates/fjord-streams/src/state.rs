//! State stores as a task sees them: a write-back record cache in front of a store engine
//! (`fjord-state`: RocksDB or memory), the store's changelog, and typed access through serdes.
//!
//! The commit protocol of design.md section 6 lives here, so that exactly-once only has to
//! wrap it in a transaction:
//!
//! 1. Between commits, writes land in the cache. Repeated updates of a key cost one entry
//!    (Kafka Streams' record cache): the operator that owns the store forwards one update per
//!    key downstream when the cache is flushed, not one per input record.
//! 2. At a flush (every commit, or earlier when the cache is over its byte budget), dirty
//!    entries go downstream and to the changelog, and their writes are *staged*: they serve
//!    reads but are not in the engine yet.
//! 3. Once the changelog records are durable (at-least-once: the producer flushed;
//!    exactly-once: the transaction committed), the runtime applies the staged writes to the
//!    engine in one atomic batch that also records the changelog offset they bring the store
//!    up to.
//!
//! So the engine only ever holds committed state, and its recorded changelog offset never runs
//! ahead of the committed changelog. A crash anywhere costs at most a replay of the changelog
//! tail from that offset (restoration, on start or when a task moves).
//!
//! Reads from other threads (interactive queries) go to the engine: they see the state as of
//! the last commit.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::rc::Rc;
use std::sync::Arc;

use fjord_state::{KeyValueBytesStore, WriteBatch, WriteOp};
use indexmap::IndexMap;

use crate::error::StreamsError;
use crate::node::TaskContext;
use crate::record::Headers;
use crate::serdes::SerdeRef;

/// An update of a table row: the new value and, where the operator needs it, the old one
/// (Kafka Streams' `Change`). `None` is a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<V> {
    /// The value after the update.
    pub new: Option<V>,
    /// The value before it.
    pub old: Option<V>,
}

/// What kind of store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// Key-value.
    KeyValue,
    /// Windows of a windowed aggregation or join buffer, kept for `retention_ms`.
    Window {
        /// How long windows are kept (window size + grace at least).
        retention_ms: i64,
    },
    /// Sessions, kept for `retention_ms` after they end.
    Session {
        /// How long sessions are kept after their end (inactivity gap + grace at least).
        retention_ms: i64,
    },
}

/// How a store is set up: its name, kind, engine, cache and changelog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSpec {
    /// The name, unique in the topology; its changelog is `<application.id>-<name>-changelog`.
    pub name: String,
    /// Key-value, window or session.
    pub kind: StoreKind,
    /// RocksDB on disk (`true`, the default) or memory.
    pub persistent: bool,
    /// Whether writes go through the record cache (Kafka's `withCachingEnabled`, on by
    /// default).
    pub cached: bool,
    /// Whether the store has a changelog topic (on by default; without one, state is lost when
    /// a task moves or a memory store restarts).
    pub logged: bool,
    /// For a global store (a `GlobalKTable`'s): the topic every instance mirrors into it, all
    /// partitions; the topic is its changelog.
    pub global_topic: Option<String>,
}

impl StoreSpec {
    /// A persistent, cached, logged store.
    pub fn new(name: impl Into<String>, kind: StoreKind) -> Self {
        StoreSpec {
            name: name.into(),
            kind,
            persistent: true,
            cached: true,
            logged: true,
            global_topic: None,
        }
    }

    /// The changelog topic's name without the application id prefix.
    pub fn changelog_topic(&self) -> String {
        format!("{}-changelog", self.name)
    }
}

/// One cached row.
#[derive(Debug)]
struct Entry {
    /// The current value (`None`: deleted or known absent).
    value: Option<Vec<u8>>,
    /// The value before the first write since the last flush, while `dirty`.
    old: Option<Vec<u8>>,
    timestamp: i64,
    /// Written since the last flush.
    dirty: bool,
    /// Flushed, its write staged and not yet applied to the engine: cannot be evicted.
    staged: bool,
}

const ENTRY_OVERHEAD: usize = 64;

/// A flushed row, as the owning operator forwards it.
#[derive(Debug)]
pub(crate) struct FlushedEntry {
    pub(crate) key: Vec<u8>,
    pub(crate) new: Option<Vec<u8>>,
    pub(crate) old: Option<Vec<u8>>,
    pub(crate) timestamp: i64,
}

/// A store of one task: cache, staged writes, engine and changelog.
pub struct CachedStore {
    spec: Arc<StoreSpec>,
    engine: Arc<dyn KeyValueBytesStore>,
    /// The changelog topic (resolved) and partition, if logged.
    changelog: Option<(Arc<str>, u32)>,
    /// Rows by serialized key, found by hash: a read-modify-write of a cached key costs one
    /// lookup (an ordered map cost a dozen key comparisons per lookup, most of a count's time).
    cache: IndexMap<Rc<[u8]>, Entry, foldhash::fast::RandomState>,
    /// The keys of the dirty or staged rows, in key order: what a flush forwards, in that
    /// order, and what a range read merges over the engine (clean rows are in the engine).
    pending: BTreeSet<Rc<[u8]>>,
    cache_bytes: usize,
    max_cache_bytes: usize,
    dirty: usize,
    staged: WriteBatch,
    /// The spare value buffer of a read-modify-write: it swaps with the row's value.
    spare: Vec<u8>,
    hits: u64,
    misses: u64,
}

impl std::fmt::Debug for CachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedStore").field("name", &self.spec.name).finish()
    }
}

impl CachedStore {
    pub(crate) fn new(
        spec: Arc<StoreSpec>,
        engine: Arc<dyn KeyValueBytesStore>,
        changelog: Option<(Arc<str>, u32)>,
        max_cache_bytes: usize,
    ) -> Self {
        let max_cache_bytes = if spec.cached { max_cache_bytes } else { 0 };
        CachedStore {
            spec,
            engine,
            changelog,
            cache: IndexMap::default(),
            pending: BTreeSet::new(),
            cache_bytes: 0,
            max_cache_bytes,
            dirty: 0,
            staged: WriteBatch::default(),
            spare: Vec::new(),
            hits: 0,
            misses: 0,
        }
    }

    /// The store's spec.
    pub fn spec(&self) -> &StoreSpec {
        &self.spec
    }

    /// The engine, for restoration and interactive queries.
    pub(crate) fn engine(&self) -> &Arc<dyn KeyValueBytesStore> {
        &self.engine
    }

    /// The changelog partition.
    pub(crate) fn changelog(&self) -> Option<&(Arc<str>, u32)> {
        self.changelog.as_ref()
    }

    /// An error of this store (its engine, or bytes it holds that do not decode).
    pub(crate) fn error(&self, message: impl std::fmt::Display) -> StreamsError {
        StreamsError::State { store: self.spec.name.clone(), message: message.to_string() }
    }

    /// The cache slot of a key's row, read from the engine (and cached) on a miss.
    fn slot(&mut self, key: &[u8]) -> Result<usize, StreamsError> {
        if let Some(slot) = self.cache.get_index_of(key) {
            self.hits += 1;
            return Ok(slot);
        }
        self.misses += 1;
        let value = self.engine.get(key).map_err(|e| self.error(e))?;
        self.cache_bytes += ENTRY_OVERHEAD + key.len() + value.as_ref().map_or(0, Vec::len);
        let entry = Entry { value, old: None, timestamp: -1, dirty: false, staged: false };
        Ok(self.cache.insert_full(Rc::from(key), entry).0)
    }

    /// The value of a key: cache, then engine (which then is cached).
    pub fn get(&mut self, key: &[u8]) -> Result<Option<&[u8]>, StreamsError> {
        let slot = self.slot(key)?;
        Ok(self.cache[slot].value.as_deref())
    }

    /// Replaces a key's value in one cache lookup: `write` gets the current value (`None`:
    /// absent) and an empty buffer, serializes the new value into it and says whether it is
    /// present (`false` deletes). The buffers are reused, so a cached key updated again
    /// allocates nothing.
    pub fn update_with(
        &mut self,
        key: &[u8],
        timestamp: i64,
        write: impl FnOnce(Option<&[u8]>, &mut Vec<u8>) -> Result<bool, crate::serdes::SerdeError>,
    ) -> Result<(), StreamsError> {
        let slot = self.slot(key)?;
        let mut buf = std::mem::take(&mut self.spare);
        buf.clear();
        let Some((key, entry)) = self.cache.get_index_mut(slot) else {
            return Err(StreamsError::IllegalState(format!(
                "store `{}`: cache slot {slot} vanished",
                self.spec.name
            )));
        };
        let current = entry.value.take();
        let present = match write(current.as_deref(), &mut buf) {
            Ok(present) => present,
            Err(e) => {
                entry.value = current;
                self.spare = buf;
                return Err(StreamsError::State {
                    store: self.spec.name.clone(),
                    message: e.to_string(),
                });
            }
        };
        let before = current.as_ref().map_or(0, Vec::len);
        let after = if present { buf.len() } else { 0 };
        if entry.dirty {
            // The value before the first write since the flush is kept already.
            if let Some(current) = current {
                self.spare = current;
            }
        } else {
            entry.dirty = true;
            entry.old = current;
            self.dirty += 1;
            if !entry.staged {
                self.pending.insert(Rc::clone(key));
            }
        }
        if present {
            entry.value = Some(buf);
        } else if self.spare.capacity() == 0 {
            self.spare = buf;
        }
        entry.timestamp = entry.timestamp.max(timestamp);
        self.cache_bytes = self.cache_bytes + after - before.min(self.cache_bytes);
        Ok(())
    }

    /// Writes a value (`None`: deletes), serialized by `write` into a reused buffer.
    pub fn put_with(
        &mut self,
        key: &[u8],
        timestamp: i64,
        write: impl FnOnce(&mut Vec<u8>) -> Result<bool, crate::serdes::SerdeError>,
    ) -> Result<(), StreamsError> {
        self.update_with(key, timestamp, |_, buf| write(buf))
    }

    /// Writes a value.
    pub fn put(&mut self, key: &[u8], value: &[u8], timestamp: i64) -> Result<(), StreamsError> {
        self.put_with(key, timestamp, |buf| {
            buf.extend_from_slice(value);
            Ok(true)
        })
    }

    /// Deletes a key.
    pub fn delete(&mut self, key: &[u8], timestamp: i64) -> Result<(), StreamsError> {
        self.put_with(key, timestamp, |_| Ok(false))
    }

    /// Whether the owner must flush now: the cache is over its budget (always, uncached).
    pub fn needs_flush(&self) -> bool {
        self.dirty > 0 && self.cache_bytes > self.max_cache_bytes
    }

    /// Pairs in key order within the range, merging the cache over the engine.
    pub fn range(
        &self,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
    ) -> Result<Vec<KeyValueBytes>, StreamsError> {
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for pair in self.engine.range(from, to).map_err(|e| self.error(e))? {
            let (k, v) = pair.map_err(|e| self.error(e))?;
            merged.insert(k, Some(v));
        }
        for key in self.pending.range::<[u8], _>((from, to)) {
            if let Some(e) = self.cache.get(&**key) {
                merged.insert(key.to_vec(), e.value.clone());
            }
        }
        Ok(merged.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect())
    }

    /// Takes the dirty entries: sends them to the changelog and stages their writes. Returns
    /// them in key order for the owner to forward.
    pub(crate) fn flush(&mut self, ctx: &mut TaskContext) -> Vec<FlushedEntry> {
        let mut out = Vec::with_capacity(self.dirty);
        if self.dirty > 0 {
            let headers = Headers::new();
            for key in &self.pending {
                let Some(entry) = self.cache.get_mut(&**key).filter(|e| e.dirty) else {
                    continue;
                };
                entry.dirty = false;
                entry.staged = true;
                let old = entry.old.take();
                if let Some((topic, partition)) = &self.changelog {
                    ctx.send(
                        topic,
                        Some(*partition),
                        Some(key),
                        entry.value.as_deref(),
                        &headers,
                        entry.timestamp,
                    );
                }
                match &entry.value {
                    Some(v) => self.staged.put(key.to_vec(), v.clone()),
                    None => self.staged.delete(key.to_vec()),
                }
                out.push(FlushedEntry {
                    key: key.to_vec(),
                    new: entry.value.clone(),
                    old,
                    timestamp: entry.timestamp,
                });
            }
            self.dirty = 0;
        }
        self.evict();
        out
    }

    /// Drops clean entries while the cache is over budget.
    fn evict(&mut self) {
        if self.cache_bytes <= self.max_cache_bytes {
            return;
        }
        let mut freed = 0;
        // Dirty and staged rows (the pending keys) stay: the engine does not have them yet.
        self.cache.retain(|k, e| {
            let keep = e.dirty || e.staged;
            if !keep {
                freed += ENTRY_OVERHEAD + k.len() + e.value.as_ref().map_or(0, Vec::len);
            }
            keep
        });
        self.cache_bytes -= freed.min(self.cache_bytes);
    }

    /// The staged writes, for operators that stage more than puts (a window store's expiry).
    pub(crate) fn staged_mut(&mut self) -> &mut WriteBatch {
        &mut self.staged
    }

    /// Whether writes are staged and wait for [`Self::apply`].
    pub(crate) fn has_staged(&self) -> bool {
        !self.staged.is_empty()
    }

    /// Applies the staged writes to the engine, atomically with the changelog offset they
    /// bring it up to (the changelog's end once the flushed records are durable).
    pub(crate) fn apply(&mut self, changelog_offset: Option<i64>) -> Result<(), StreamsError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        self.engine.write(&self.staged, changelog_offset).map_err(|e| self.error(e))?;
        for op in &self.staged.ops {
            let key = match op {
                WriteOp::Put(key, _) | WriteOp::Delete(key) => key,
                // Caches never stage range deletes: only point writes are flushed.
                WriteOp::DeleteRange(..) => continue,
            };
            if let Some(e) = self.cache.get_mut(key.as_slice()) {
                e.staged = false;
                if !e.dirty {
                    self.pending.remove(key.as_slice());
                }
            }
        }
        self.staged = WriteBatch::default();
        self.evict();
        Ok(())
    }

    /// Cache hits and misses so far.
    pub fn cache_stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }
}

/// A key and value as a store holds them.
pub type KeyValueBytes = (Vec<u8>, Vec<u8>);

/// A store engine open here, with its store name and task.
type OpenEngine = (String, crate::TaskId, Arc<dyn KeyValueBytesStore>);

/// A shared handle on a task's store.
pub(crate) type StoreRef = Rc<RefCell<CachedStore>>;

/// Typed access to a key-value store of a task, for operators and custom processors.
pub struct KeyValueStore<K, V> {
    pub(crate) store: StoreRef,
    pub(crate) key_serde: SerdeRef<K>,
    pub(crate) value_serde: SerdeRef<V>,
    key_buf: Vec<u8>,
}

impl<K: 'static, V: 'static> KeyValueStore<K, V> {
    pub(crate) fn new(store: StoreRef, key_serde: SerdeRef<K>, value_serde: SerdeRef<V>) -> Self {
        KeyValueStore { store, key_serde, value_serde, key_buf: Vec::new() }
    }

    fn serde_error(&self, e: crate::serdes::SerdeError) -> StreamsError {
        self.store.borrow().error(e)
    }

    fn encode_key(&mut self, key: &K) -> Result<(), StreamsError> {
        self.key_buf.clear();
        let mut buf = std::mem::take(&mut self.key_buf);
        let result = self.key_serde.serialize(key, &mut buf);
        self.key_buf = buf;
        result.map_err(|e| self.serde_error(e))
    }

    /// The value of a key.
    pub fn get(&mut self, key: &K) -> Result<Option<V>, StreamsError> {
        self.encode_key(key)?;
        self.get_encoded()
    }

    /// The value of the key in `key_buf`.
    fn get_encoded(&mut self) -> Result<Option<V>, StreamsError> {
        let mut store = self.store.borrow_mut();
        match store.get(&self.key_buf)? {
            Some(bytes) => {
                self.value_serde.deserialize(bytes).map(Some).map_err(|e| store.error(e))
            }
            None => Ok(None),
        }
    }

    /// Writes (`Some`) or deletes (`None`) the key in `key_buf`.
    fn put_encoded(&mut self, value: Option<&V>, timestamp: i64) -> Result<(), StreamsError> {
        let serde = &self.value_serde;
        self.store.borrow_mut().put_with(&self.key_buf, timestamp, |buf| match value {
            Some(value) => serde.serialize(value, buf).map(|()| !serde.is_null(value)),
            None => Ok(false),
        })
    }

    /// Writes a value.
    pub fn put(&mut self, key: &K, value: &V, timestamp: i64) -> Result<(), StreamsError> {
        self.encode_key(key)?;
        self.put_encoded(Some(value), timestamp)
    }

    /// Deletes a key.
    pub fn delete(&mut self, key: &K, timestamp: i64) -> Result<(), StreamsError> {
        self.encode_key(key)?;
        self.put_encoded(None, timestamp)
    }

    /// Replaces a key's value with `f(old value)` (`None` deletes), serializing the key once:
    /// the read-modify-write of every aggregation.
    pub fn update(
        &mut self,
        key: &K,
        timestamp: i64,
        f: impl FnOnce(Option<V>) -> Option<V>,
    ) -> Result<(), StreamsError> {
        self.encode_key(key)?;
        let value_serde = &self.value_serde;
        self.store.borrow_mut().update_with(&self.key_buf, timestamp, |current, buf| {
            let old = current.map(|bytes| value_serde.deserialize(bytes)).transpose()?;
            match f(old) {
                Some(new) => value_serde.serialize(&new, buf).map(|()| !value_serde.is_null(&new)),
                None => Ok(false),
            }
        })
    }

    /// Whether the cache must flush now (over its budget, or caching is off).
    pub(crate) fn needs_flush(&self) -> bool {
        self.store.borrow().needs_flush()
    }

    /// Flushes the store's cache (changelog records sent, writes staged) and returns the
    /// flushed rows as table updates, in key order.
    pub(crate) fn flush_changes(
        &self,
        ctx: &mut TaskContext,
    ) -> Result<Vec<crate::record::Record<K, Change<V>>>, StreamsError> {
        let flushed = self.store.borrow_mut().flush(ctx);
        let value = |bytes: Option<Vec<u8>>| {
            bytes
                .map(|b| self.value_serde.deserialize(&b))
                .transpose()
                .map_err(|e| self.serde_error(e))
        };
        flushed
            .into_iter()
            .map(|e| {
                Ok(crate::record::Record {
                    key: self.key_serde.deserialize(&e.key).map_err(|e| self.serde_error(e))?,
                    value: Change { new: value(e.new)?, old: value(e.old)? },
                    timestamp: e.timestamp,
                    headers: Headers::new(),
                })
            })
            .collect()
    }

    /// Every pair, in the order of the serialized keys.
    pub fn all(&self) -> Result<Vec<(K, V)>, StreamsError> {
        let pairs = self.store.borrow().range(Bound::Unbounded, Bound::Unbounded)?;
        pairs
            .into_iter()
            .map(|(k, v)| {
                let k = self.key_serde.deserialize(&k).map_err(|e| self.serde_error(e))?;
                let v = self.value_serde.deserialize(&v).map_err(|e| self.serde_error(e))?;
                Ok((k, v))
            })
            .collect()
    }
}

/// What the read-only store views share: the store's name, the engines of this instance
/// (looked up at each read and never held after it, so that a task closing here closes its
/// stores) and the serdes.
struct StoreView<K, V> {
    name: String,
    engines: Arc<StoreEngines>,
    key_serde: SerdeRef<K>,
    value_serde: SerdeRef<V>,
}

impl<K: 'static, V: 'static> StoreView<K, V> {
    fn new(
        name: &str,
        engines: Arc<StoreEngines>,
        key_serde: SerdeRef<K>,
        value_serde: SerdeRef<V>,
    ) -> Self {
        StoreView { name: name.to_string(), engines, key_serde, value_serde }
    }

    fn error(&self, message: impl std::fmt::Display) -> StreamsError {
        StreamsError::State { store: self.name.clone(), message: message.to_string() }
    }

    fn key_bytes(&self, key: &K) -> Result<Vec<u8>, StreamsError> {
        let mut bytes = Vec::new();
        self.key_serde.serialize(key, &mut bytes).map_err(|e| self.error(e))?;
        Ok(bytes)
    }

    fn value(&self, bytes: &[u8]) -> Result<V, StreamsError> {
        self.value_serde.deserialize(bytes).map_err(|e| self.error(e))
    }

    /// The engines to read: the global store's, or those of the tasks running here.
    fn engines(&self) -> Vec<Arc<dyn KeyValueBytesStore>> {
        match self.engines.global(&self.name) {
            Some(engine) => vec![engine],
            None => self.engines.engines(&self.name).into_iter().map(|(_, e)| e).collect(),
        }
    }

    /// The rows `read` finds in the first engine that has any (one task holds a key), each
    /// made typed by `typed`.
    fn first_rows<R, T>(
        &self,
        read: impl Fn(Arc<dyn KeyValueBytesStore>) -> Result<Vec<R>, fjord_state::StoreError>,
        typed: impl Fn(R) -> Result<T, StreamsError>,
    ) -> Result<Vec<T>, StreamsError> {
        for engine in self.engines() {
            let rows = read(engine).map_err(|e| self.error(e))?;
            if !rows.is_empty() {
                return rows.into_iter().map(typed).collect();
            }
        }
        Ok(Vec::new())
    }
}

/// A key-value store of a running application, read from outside its stream threads
/// (interactive queries). Each read sees the tasks running on this instance at that moment,
/// as of their last commit.
pub struct ReadOnlyKeyValueStore<K, V>(StoreView<K, V>);

impl<K: 'static, V: 'static> ReadOnlyKeyValueStore<K, V> {
    pub(crate) fn new(
        name: &str,
        engines: Arc<StoreEngines>,
        key_serde: SerdeRef<K>,
        value_serde: SerdeRef<V>,
    ) -> Self {
        ReadOnlyKeyValueStore(StoreView::new(name, engines, key_serde, value_serde))
    }

    /// The tasks of this instance whose stores it reads now (none for a global store, which
    /// every instance holds in full).
    pub fn tasks(&self) -> Vec<crate::TaskId> {
        self.0.engines.engines(&self.0.name).into_iter().map(|(t, _)| t).collect()
    }

    /// The value of a key, if a task here holds it.
    pub fn get(&self, key: &K) -> Result<Option<V>, StreamsError> {
        let bytes = self.0.key_bytes(key)?;
        for engine in self.0.engines() {
            if let Some(v) = engine.get(&bytes).map_err(|e| self.0.error(e))? {
                return self.0.value(&v).map(Some);
            }
        }
        Ok(None)
    }

    /// Every pair held here, in the order of the serialized keys.
    pub fn all(&self) -> Result<Vec<(K, V)>, StreamsError> {
        let mut rows = BTreeMap::new();
        for engine in self.0.engines() {
            for pair in
                engine.range(Bound::Unbounded, Bound::Unbounded).map_err(|e| self.0.error(e))?
            {
                let (k, v) = pair.map_err(|e| self.0.error(e))?;
                rows.insert(k, v);
            }
        }
        rows.into_iter()
            .map(|(k, v)| {
                let k = self.0.key_serde.deserialize(&k).map_err(|e| self.0.error(e))?;
                Ok((k, self.0.value(&v)?))
            })
            .collect()
    }
}

/// A window store of a running application (a windowed aggregation's), read from outside its
/// stream threads (interactive queries), as of each task's last commit.
pub struct ReadOnlyWindowStore<K, V> {
    view: StoreView<K, V>,
    retention_ms: i64,
}

impl<K: 'static, V: 'static> ReadOnlyWindowStore<K, V> {
    pub(crate) fn new(
        name: &str,
        retention_ms: i64,
        engines: Arc<StoreEngines>,
        key_serde: SerdeRef<K>,
        value_serde: SerdeRef<V>,
    ) -> Self {
        ReadOnlyWindowStore {
            view: StoreView::new(name, engines, key_serde, value_serde),
            retention_ms,
        }
    }

    /// The windows of `key` that start in `[time_from, time_to]`, as `(window start, value)`
    /// in start order (Kafka's `WindowStore.fetch`), if a task here holds the key.
    pub fn fetch(
        &self,
        key: &K,
        time_from: i64,
        time_to: i64,
    ) -> Result<Vec<(i64, V)>, StreamsError> {
        let bytes = self.view.key_bytes(key)?;
        self.view.first_rows(
            |engine| {
                crate::window::window_layout(engine, self.retention_ms)
                    .fetch(&bytes, time_from, time_to)
            },
            |(start, v)| {
                let (_, aggregate) = crate::window::split_timestamp(&v)
                    .ok_or_else(|| self.view.error("window value without its timestamp"))?;
                Ok((start, self.view.value(aggregate)?))
            },
        )
    }
}

/// A session store of a running application (a session-windowed aggregation's), read from
/// outside its stream threads (interactive queries), as of each task's last commit.
pub struct ReadOnlySessionStore<K, V> {
    view: StoreView<K, V>,
    retention_ms: i64,
}

impl<K: 'static, V: 'static> ReadOnlySessionStore<K, V> {
    pub(crate) fn new(
        name: &str,
        retention_ms: i64,
        engines: Arc<StoreEngines>,
        key_serde: SerdeRef<K>,
        value_serde: SerdeRef<V>,
    ) -> Self {
        let view = StoreView::new(name, engines, key_serde, value_serde);
        ReadOnlySessionStore { view, retention_ms }
    }

    /// The sessions of `key`, as `(window, value)` ordered by end, then start (Kafka's
    /// `SessionStore.fetch`), if a task here holds the key.
    pub fn fetch(&self, key: &K) -> Result<Vec<(crate::Window, V)>, StreamsError> {
        let bytes = self.view.key_bytes(key)?;
        self.view.first_rows(
            |engine| crate::window::session_layout(engine, self.retention_ms).fetch(&bytes),
            |(start, end, v)| Ok((crate::Window { start, end }, self.view.value(&v)?)),
        )
    }
}

/// The engines of the stores of one process: opened per task, and kept readable for
/// interactive queries while the task runs here. Persistent stores are RocksDB databases in
/// `<state.dir>/<task>/<store>`, all sharing one memory budget ([`fjord_state::RocksDbEnv`]).
pub(crate) struct StoreEngines {
    state_dir: std::path::PathBuf,
    rocksdb: fjord_state::RocksDbEnv,
    open: parking_lot::Mutex<Vec<OpenEngine>>,
    /// The global stores, by name: opened by the global stream thread.
    global: parking_lot::Mutex<BTreeMap<String, Arc<dyn KeyValueBytesStore>>>,
}

impl StoreEngines {
    pub(crate) fn new(state_dir: &std::path::Path, memory: fjord_state::MemoryConfig) -> Self {
        StoreEngines {
            state_dir: state_dir.to_path_buf(),
            rocksdb: fjord_state::RocksDbEnv::new(memory),
            open: parking_lot::Mutex::new(Vec::new()),
            global: parking_lot::Mutex::new(BTreeMap::new()),
        }
    }

    /// Opens the engine of a task's store: RocksDB for persistent stores (keeping what an
    /// earlier run committed, so restoration replays only the changelog's tail), else memory.
    /// Opening blocks; the runtime calls it while no task of the thread is processing.
    pub(crate) fn open(
        &self,
        spec: &StoreSpec,
        task: crate::TaskId,
    ) -> Result<Arc<dyn KeyValueBytesStore>, StreamsError> {
        if spec.global_topic.is_some() {
            // Tasks read a global store; the global stream thread opened it before they start.
            return self.global(&spec.name).ok_or_else(|| {
                StreamsError::IllegalState(format!(
                    "global store `{}` is not open: the global stream thread has not started",
                    spec.name
                ))
            });
        }
        let engine: Arc<dyn KeyValueBytesStore> = if spec.persistent {
            let dir = self.state_dir.join(task.to_string()).join(&spec.name);
            Arc::new(self.open_rocksdb(spec, &dir)?)
        } else {
            Arc::new(fjord_state::InMemoryStore::new(spec.name.clone()))
        };
        self.open.lock().push((spec.name.clone(), task, engine.clone()));
        Ok(engine)
    }

    /// Opens a RocksDB store. A store of this process that closed a moment ago may still be
    /// held by an interactive query in flight: its lock is retried for a few seconds before
    /// giving up (another process holding it is reported at once after that).
    fn open_rocksdb(
        &self,
        spec: &StoreSpec,
        dir: &std::path::Path,
    ) -> Result<fjord_state::RocksDbStore, StreamsError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match fjord_state::RocksDbStore::open(&self.rocksdb, &spec.name, dir) {
                Ok(store) => return Ok(store),
                Err(fjord_state::StoreError::Locked { .. })
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => {
                    return Err(StreamsError::State {
                        store: spec.name.clone(),
                        message: e.to_string(),
                    });
                }
            }
        }
    }

    /// Opens a global store: RocksDB in `<state.dir>/global/<store>` (keeping what an earlier
    /// run read, with the offsets it read up to), else memory. Blocks.
    pub(crate) fn open_global(
        &self,
        spec: &StoreSpec,
    ) -> Result<Arc<dyn KeyValueBytesStore>, StreamsError> {
        let engine: Arc<dyn KeyValueBytesStore> = if spec.persistent {
            let dir = self.state_dir.join("global").join(&spec.name);
            Arc::new(self.open_rocksdb(spec, &dir)?)
        } else {
            Arc::new(fjord_state::InMemoryStore::new(spec.name.clone()))
        };
        self.global.lock().insert(spec.name.clone(), engine.clone());
        Ok(engine)
    }

    /// A global store open here.
    pub(crate) fn global(&self, store: &str) -> Option<Arc<dyn KeyValueBytesStore>> {
        self.global.lock().get(store).cloned()
    }

    /// Forgets the global stores (every thread of the instance stopped).
    pub(crate) fn close_global(&self) {
        self.global.lock().clear();
    }

    /// The memory the RocksDB stores of this process use, against their budget.
    pub(crate) fn rocksdb_usage(&self) -> fjord_state::MemoryUsage {
        self.rocksdb.usage()
    }

    /// Forgets the engines of a task that closed here.
    pub(crate) fn close_task(&self, task: crate::TaskId) {
        self.open.lock().retain(|(_, t, _)| *t != task);
    }

    /// The engines of a store open here, by task.
    pub(crate) fn engines(&self, store: &str) -> Vec<(crate::TaskId, Arc<dyn KeyValueBytesStore>)> {
        self.open
            .lock()
            .iter()
            .filter(|(name, _, _)| name == store)
            .map(|(_, t, e)| (*t, e.clone()))
            .collect()
    }
}

/// Brings a new task's stores up to the end of their changelogs, each from the offset its
/// engine recorded (from the start for a fresh or in-memory engine).
pub(crate) async fn restore(
    task: &mut crate::task::Task,
    consumer: &mut dyn crate::backend::RestoreConsumer,
    backend: &dyn crate::backend::Backend,
    read_committed: bool,
    shutdown: &std::sync::atomic::AtomicBool,
) -> Result<Restoration, StreamsError> {
    use fjord_log::TopicPartition;
    struct Restoring {
        tp: TopicPartition,
        end: i64,
        engine: Arc<dyn KeyValueBytesStore>,
        name: String,
        restored: u64,
        done: bool,
    }
    let mut work = Vec::new();
    let mut starts = Vec::new();
    for store in &task.stores {
        let store = store.borrow();
        let Some((topic, partition)) = store.changelog() else { continue };
        let from = store
            .engine()
            .changelog_offset()
            .map_err(|e| StreamsError::State {
                store: store.spec.name.clone(),
                message: e.to_string(),
            })?
            .unwrap_or(0);
        let tp = TopicPartition::new(topic.clone(), *partition);
        starts.push((tp.clone(), from));
        work.push(Restoring {
            tp,
            end: 0,
            engine: store.engine().clone(),
            name: store.spec.name.clone(),
            restored: 0,
            done: false,
        });
    }
    if work.is_empty() {
        return Ok(Restoration::Complete);
    }
    let tps: Vec<TopicPartition> = work.iter().map(|w| w.tp.clone()).collect();
    let ends = backend.end_offsets(&tps, read_committed).await?;
    let mut assigned = Vec::new();
    for ((w, end), (_, from)) in work.iter_mut().zip(ends).zip(&starts) {
        w.end = end;
        w.done = *from >= end;
        if !w.done {
            assigned.push((w.tp.clone(), *from));
        }
    }
    if assigned.is_empty() {
        return Ok(Restoration::Complete);
    }
    let started = std::time::Instant::now();
    tracing::info!(task = %task.id, partitions = ?assigned, "restoring state stores from their changelogs");
    consumer.assign(&assigned)?;
    while work.iter().any(|w| !w.done) {
        if shutdown.load(std::sync::atomic::Ordering::Acquire) {
            // Every batch written so far carries its changelog offset: the next owner of the
            // task resumes from there.
            consumer.assign(&[])?;
            return Ok(Restoration::Interrupted);
        }
        let records = consumer.poll(std::time::Duration::from_millis(100)).await?;
        let mut batches: Vec<WriteBatch> = work.iter().map(|_| WriteBatch::default()).collect();
        for r in records {
            let Some(i) =
                work.iter().position(|w| w.tp.partition == r.partition && *w.tp.topic == *r.topic)
            else {
                continue;
            };
            let key = r.key.map(|k| k.to_vec()).unwrap_or_default();
            match r.value {
                Some(v) => batches[i].put(key, v.to_vec()),
                None => batches[i].delete(key),
            }
        }
        for (w, batch) in work.iter_mut().zip(&batches) {
            if w.done {
                continue;
            }
            let position = consumer.position(&w.tp)?;
            w.engine.write(batch, Some(position)).map_err(|e| StreamsError::State {
                store: w.name.clone(),
                message: e.to_string(),
            })?;
            w.restored += batch.ops.len() as u64;
            metrics::counter!("fjord_streams_restored_records_total", "store" => w.name.clone())
                .increment(batch.ops.len() as u64);
            metrics::gauge!("fjord_streams_restore_remaining_records", "store" => w.name.clone(), "partition" => w.tp.partition.to_string())
                .set((w.end - position).max(0) as f64);
            if position >= w.end {
                w.done = true;
                tracing::info!(task = %task.id, store = %w.name, partition = w.tp.partition, records = w.restored, elapsed_ms = started.elapsed().as_millis() as u64, "store restored");
                metrics::histogram!("fjord_streams_restore_seconds", "store" => w.name.clone())
                    .record(started.elapsed().as_secs_f64());
            }
        }
    }
    consumer.assign(&[])?;
    task.restored_records = work.iter().map(|w| w.restored).sum();
    Ok(Restoration::Complete)
}

/// How a task's restoration ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Restoration {
    /// The stores caught up with their changelogs.
    Complete,
    /// The application is shutting down: the stores hold a consistent prefix.
    Interrupted,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::MemoryCollector;
    use crate::error::ErrorAction;
    use crate::node::ErrorPolicy;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, Vec<u8>),
        Delete(u8),
        Get(u8),
        /// Appends a byte to the value (or starts it), as an aggregation does.
        Update(u8),
        Range(u8, u8),
        /// Flush only: writes staged, not applied (the changelog is not durable yet).
        Flush,
        /// Flush and apply: a commit.
        Commit,
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few keys, so that updates hit cached, dirty and staged rows.
        let key = 0u8..12;
        prop_oneof![
            4 => (key.clone(), proptest::collection::vec(any::<u8>(), 0..40))
                .prop_map(|(k, v)| Op::Put(k, v)),
            1 => key.clone().prop_map(Op::Delete),
            2 => key.clone().prop_map(Op::Get),
            3 => key.clone().prop_map(Op::Update),
            1 => (key.clone(), key).prop_map(|(a, b)| Op::Range(a.min(b), a.max(b))),
            1 => Just(Op::Flush),
            1 => Just(Op::Commit),
        ]
    }

    proptest! {
        /// The cache against a plain map: reads see every write, a flush forwards each key
        /// written since the last flush once, in key order, with its new value and its value
        /// at the previous flush, and sends the same to the changelog; after a commit the
        /// engine holds exactly the model. A small budget makes evictions frequent.
        #[test]
        fn cached_store_matches_a_map(
            ops in proptest::collection::vec(op(), 1..200),
            budget in prop_oneof![Just(0usize), Just(300), Just(1 << 20)],
        ) {
            let engine = Arc::new(fjord_state::InMemoryStore::new("model"));
            let spec = Arc::new(StoreSpec::new("model", StoreKind::KeyValue));
            let mut store = CachedStore::new(
                spec,
                engine.clone(),
                Some((Arc::from("model-changelog"), 0)),
                budget,
            );
            let changelog = Rc::new(RefCell::new(MemoryCollector::default()));
            let mut ctx = TaskContext::new(
                crate::TaskId { subtopology: 0, partition: 0 },
                Arc::from("app"),
                changelog.clone(),
                ErrorPolicy { deserialization: ErrorAction::Fail, processing: ErrorAction::Fail },
            );
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            // The model as of the last flush: what a flush reports as the old values.
            let mut flushed = model.clone();
            for (ts, op) in ops.into_iter().enumerate() {
                let ts = ts as i64;
                match op {
                    Op::Put(k, v) => {
                        store.put(&[k], &v, ts).unwrap();
                        model.insert(vec![k], v);
                    }
                    Op::Delete(k) => {
                        store.delete(&[k], ts).unwrap();
                        model.remove(&vec![k]);
                    }
                    Op::Get(k) => {
                        let got = store.get(&[k]).unwrap().map(<[u8]>::to_vec);
                        prop_assert_eq!(got, model.get(&vec![k]).cloned());
                    }
                    Op::Update(k) => {
                        store
                            .update_with(&[k], ts, |old, buf| {
                                buf.extend_from_slice(old.unwrap_or_default());
                                buf.push(k);
                                Ok(true)
                            })
                            .unwrap();
                        model.entry(vec![k]).or_default().push(k);
                    }
                    Op::Range(a, b) => {
                        let got = store
                            .range(Bound::Included(&[a][..]), Bound::Excluded(&[b][..]))
                            .unwrap();
                        let want: Vec<KeyValueBytes> = model
                            .range(vec![a]..vec![b])
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect();
                        prop_assert_eq!(got, want);
                    }
                    Op::Flush | Op::Commit => {
                        let out = store.flush(&mut ctx);
                        prop_assert!(out.windows(2).all(|w| w[0].key < w[1].key), "key order");
                        for e in &out {
                            prop_assert_eq!(&e.new, &model.get(&e.key).cloned());
                            prop_assert_eq!(&e.old, &flushed.get(&e.key).cloned());
                        }
                        let sent: Vec<_> =
                            out.iter().map(|e| (e.key.clone(), e.new.clone())).collect();
                        let logged: Vec<_> = changelog
                            .borrow_mut()
                            .outputs
                            .remove("model-changelog")
                            .unwrap_or_default()
                            .into_iter()
                            .map(|r| {
                                (r.key.unwrap_or_default().to_vec(), r.value.map(|v| v.to_vec()))
                            })
                            .collect();
                        prop_assert_eq!(&logged, &sent);
                        // Every key whose value changed since the last flush was forwarded.
                        for (k, v) in &model {
                            if flushed.get(k) != Some(v) {
                                prop_assert!(out.iter().any(|e| &e.key == k), "{k:?} not flushed");
                            }
                        }
                        flushed = model.clone();
                        if matches!(op, Op::Commit) {
                            store.apply(Some(ts)).unwrap();
                            let engine_rows: BTreeMap<Vec<u8>, Vec<u8>> = engine
                                .range(Bound::Unbounded, Bound::Unbounded)
                                .unwrap()
                                .map(Result::unwrap)
                                .collect();
                            prop_assert_eq!(&engine_rows, &model);
                        }
                    }
                }
            }
        }
    }
}
