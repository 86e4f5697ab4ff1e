//! The RocksDB key-value store, and the environment that bounds the memory of all of them.
//!
//! # Layout
//!
//! One RocksDB database per store, in its own directory. User data lives in the default
//! column family; the changelog offset lives in a second column family, `fjord_meta`, under
//! the key `changelog_offset` (8 bytes, big-endian `i64`). [`KeyValueBytesStore::write`] puts
//! the data and the offset in the same RocksDB write batch, so they are applied atomically:
//! after any crash the recorded offset is exactly the one that goes with the data. A global
//! store, which mirrors every partition of its topic, records one offset per partition the same
//! way, under `partition_offset` followed by the big-endian `u32` partition.
//!
//! # Durability
//!
//! Writes go to the write-ahead log (WAL) without an fsync per write. So:
//!
//! - a process crash (SIGKILL, panic, abort) loses nothing that [`write`] returned for: the WAL
//!   is in the OS page cache and is replayed on open;
//! - an OS crash or power loss may lose the unsynced tail of the WAL, always as a consistent
//!   prefix of the write batches (point-in-time recovery), data and offset together;
//! - [`flush`] writes the memtables of both column families to SST files and waits (RocksDB
//!   fsyncs SST files and the manifest), so everything written before a `flush` survives any
//!   crash.
//!
//! Losing a tail is harmless for Fjord: the store then records an older changelog offset and
//! the runtime restores the tail from the changelog (design.md section 6). What must never
//! happen is the offset running ahead of the data; the single batch and `atomic_flush` (both
//! column families are always flushed together, also when RocksDB flushes on its own)
//! guarantee it.
//!
//! # Memory
//!
//! A process may run hundreds of stores. Left alone, each RocksDB instance sizes its own
//! memtables (64 MiB each by default), block cache and table readers, and the process's memory
//! grows with the number of stores. [`RocksDbEnv`] bounds all of it with one budget, the way
//! Kafka Streams' `BoundedMemoryRocksDBConfig` does:
//!
//! - one LRU block cache of `total_bytes` shared by every store;
//! - one write buffer manager, limiting the memtables of all stores to
//!   `total_bytes * write_buffer_fraction`, that charges the memtable memory to that same
//!   cache (so the cache evicts blocks to make room for memtables);
//! - index and filter blocks are kept in the block cache too (with high priority, pinned for
//!   level-0 files) rather than in table readers outside of any budget.
//!
//! The write buffer manager does not stall writers (with several databases, a stall can wait
//! forever on memtables of idle stores): it triggers flushes, and while they run the memtables
//! may go over their share, evicting blocks from the cache instead (the measured peak in the
//! `memory_bound` test: 24 MiB of memtables in a 32 MiB budget with a 16 MiB share; the cache
//! stayed under 32 MiB). Each store's own memtable size is a quarter of the share (1 to
//! 16 MiB), at most 3 per store.
//!
//! The cache is not in strict-capacity mode (reads never fail for lack of cache), so its usage
//! can go over the budget by what is pinned at a given moment: blocks held by open iterators,
//! and L0 index and filter blocks. [`RocksDbEnv::usage`] reports what is in use.
//!
//! [`write`]: KeyValueBytesStore::write
//! [`flush`]: KeyValueBytesStore::flush

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType,
    FlushOptions, IteratorMode, LogLevel, Options, ReadOptions, WriteBufferManager, WriteOptions,
};

use crate::{KeyValueBytesStore, KeyValueIter, StoreError, WriteBatch, WriteOp};

/// The column family holding the store's metadata (the changelog offset).
pub const META_COLUMN_FAMILY: &str = "fjord_meta";
/// The key of the changelog offset in [`META_COLUMN_FAMILY`].
const CHANGELOG_OFFSET_KEY: &[u8] = b"changelog_offset";
/// The prefix of the per-partition source offsets in [`META_COLUMN_FAMILY`].
const PARTITION_OFFSET_PREFIX: &[u8] = b"partition_offset";

/// The memory budget of all RocksDB stores of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryConfig {
    /// The whole budget: the capacity of the shared block cache, which is also charged for
    /// memtables. Default 64 MiB.
    pub total_bytes: usize,
    /// The share of `total_bytes` memtables may use (the write buffer manager's limit).
    /// Default 0.5; clamped to `[0.05, 0.9]`.
    pub write_buffer_fraction: f64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self { total_bytes: 64 << 20, write_buffer_fraction: 0.5 }
    }
}

/// Memory in use by the stores of a [`RocksDbEnv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUsage {
    /// The shared block cache's usage: data, index and filter blocks, plus the memtable memory
    /// charged to it by the write buffer manager. This is the number to hold against
    /// [`MemoryConfig::total_bytes`].
    pub block_cache_bytes: usize,
    /// The part of the cache that is pinned (in use, cannot be evicted).
    pub pinned_bytes: usize,
    /// Memtable memory of all stores, as counted by the write buffer manager (already included
    /// in `block_cache_bytes`).
    pub write_buffer_bytes: usize,
    /// The budget, [`MemoryConfig::total_bytes`].
    pub capacity_bytes: usize,
}

/// Process-wide RocksDB resources: the shared block cache and write buffer manager that bound
/// the memory of every store opened with it. Cheap to clone (all clones share them).
#[derive(Clone)]
pub struct RocksDbEnv {
    inner: Arc<EnvInner>,
}

struct EnvInner {
    config: MemoryConfig,
    cache: Cache,
    write_buffers: WriteBufferManager,
    /// Per-store memtable size (the write buffer manager usually flushes before it is hit).
    write_buffer_size: usize,
}

impl std::fmt::Debug for RocksDbEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDbEnv")
            .field("config", &self.inner.config)
            .field("usage", &self.usage())
            .finish()
    }
}

impl Default for RocksDbEnv {
    fn default() -> Self {
        Self::new(MemoryConfig::default())
    }
}

impl RocksDbEnv {
    /// Creates the shared cache and write buffer manager.
    pub fn new(config: MemoryConfig) -> Self {
        let total = config.total_bytes.max(1 << 20);
        let fraction = if config.write_buffer_fraction.is_finite() {
            config.write_buffer_fraction.clamp(0.05, 0.9)
        } else {
            0.5
        };
        let write_buffer_bytes = ((total as f64) * fraction) as usize;
        let cache = Cache::new_lru_cache(total);
        let write_buffers = WriteBufferManager::new_write_buffer_manager_with_cache(
            write_buffer_bytes,
            false,
            cache.clone(),
        );
        // A quarter of the memtable budget per store, within [1 MiB, 16 MiB]: small budgets
        // shared by many stores flush through the write buffer manager anyway.
        let write_buffer_size = (write_buffer_bytes / 4).clamp(1 << 20, 16 << 20);
        Self {
            inner: Arc::new(EnvInner {
                config: MemoryConfig { total_bytes: total, write_buffer_fraction: fraction },
                cache,
                write_buffers,
                write_buffer_size,
            }),
        }
    }

    /// The configuration in force (after clamping).
    pub fn config(&self) -> MemoryConfig {
        self.inner.config
    }

    /// Current memory usage, for metrics.
    pub fn usage(&self) -> MemoryUsage {
        MemoryUsage {
            block_cache_bytes: self.inner.cache.get_usage(),
            pinned_bytes: self.inner.cache.get_pinned_usage(),
            write_buffer_bytes: self.inner.write_buffers.get_usage(),
            capacity_bytes: self.inner.config.total_bytes,
        }
    }

    fn table_options(&self) -> BlockBasedOptions {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&self.inner.cache);
        table.set_cache_index_and_filter_blocks(true);
        table.set_cache_index_and_filter_blocks_with_high_priority(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        table.set_bloom_filter(10.0, false);
        table.set_optimize_filters_for_memory(true);
        table.set_block_size(4 << 10);
        table.set_format_version(6);
        table
    }

    fn column_family_options(&self, write_buffer_size: usize) -> Options {
        let mut opts = Options::default();
        opts.set_block_based_table_factory(&self.table_options());
        opts.set_write_buffer_size(write_buffer_size);
        opts.set_max_write_buffer_number(3);
        opts.set_compression_type(DBCompressionType::Lz4);
        opts
    }

    fn db_options(&self) -> Options {
        let mut opts = self.column_family_options(self.inner.write_buffer_size);
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_write_buffer_manager(&self.inner.write_buffers);
        // Data and offset live in two column families: flush them together so the flushed
        // offset never runs ahead of the flushed data.
        opts.set_atomic_flush(true);
        opts.set_max_background_jobs(2);
        opts.set_log_level(LogLevel::Warn);
        opts.set_keep_log_file_num(2);
        opts.set_max_log_file_size(1 << 20);
        opts
    }
}

/// A persistent [`KeyValueBytesStore`] on RocksDB. See the module docs for durability and
/// memory.
pub struct RocksDbStore {
    name: String,
    path: PathBuf,
    db: DB,
    write_options: WriteOptions,
    // Keeps the shared cache and write buffer manager alive as long as the store.
    _env: RocksDbEnv,
}

impl std::fmt::Debug for RocksDbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDbStore").field("name", &self.name).field("path", &self.path).finish()
    }
}

impl RocksDbStore {
    /// Opens (creating if needed) the store `name` in `dir`, bounded by `env`.
    ///
    /// Fails with [`StoreError::Locked`] if another open store (in this process or another)
    /// holds the directory.
    pub fn open(env: &RocksDbEnv, name: &str, dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            store: name.to_string(),
            op: "create directory",
            path: dir.display().to_string(),
            source,
        })?;
        let opts = env.db_options();
        let meta_opts = env.column_family_options(256 << 10);
        let cfs = vec![
            ColumnFamilyDescriptor::new(
                rocksdb::DEFAULT_COLUMN_FAMILY_NAME,
                env.column_family_options(env.inner.write_buffer_size),
            ),
            ColumnFamilyDescriptor::new(META_COLUMN_FAMILY, meta_opts),
        ];
        let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(|e| open_error(name, dir, e))?;
        let mut write_options = WriteOptions::default();
        write_options.set_sync(false);
        write_options.disable_wal(false);
        let store = Self {
            name: name.to_string(),
            path: dir.to_path_buf(),
            db,
            write_options,
            _env: env.clone(),
        };
        store.meta()?;
        Ok(store)
    }

    /// Deletes the store in `dir` (all its files and the directory). Nothing if `dir` does not
    /// exist. The store must not be open.
    pub fn destroy(dir: &Path) -> Result<(), StoreError> {
        if !dir.exists() {
            return Ok(());
        }
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        DB::destroy(&Options::default(), dir).map_err(|e| open_error(&name, dir, e))?;
        match std::fs::remove_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Io {
                store: name,
                op: "remove directory",
                path: dir.display().to_string(),
                source,
            }),
        }
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Forces a compaction of the whole key space (tests and tools; drops deleted data).
    pub fn compact(&self) {
        self.db.compact_range::<&[u8], &[u8]>(None, None);
    }

    fn meta(&self) -> Result<&ColumnFamily, StoreError> {
        self.db.cf_handle(META_COLUMN_FAMILY).ok_or_else(|| StoreError::Corrupt {
            store: self.name.clone(),
            reason: format!("column family `{META_COLUMN_FAMILY}` is missing"),
        })
    }

    fn data(&self) -> Result<&ColumnFamily, StoreError> {
        self.db.cf_handle(rocksdb::DEFAULT_COLUMN_FAMILY_NAME).ok_or_else(|| StoreError::Corrupt {
            store: self.name.clone(),
            reason: "default column family is missing".into(),
        })
    }

    /// The RocksDB batch of the data writes of `batch`.
    fn write_batch(&self, batch: &WriteBatch) -> Result<rocksdb::WriteBatch, StoreError> {
        let data = self.data()?;
        let mut wb = rocksdb::WriteBatch::default();
        for op in &batch.ops {
            match op {
                WriteOp::Put(k, v) => wb.put_cf(data, k, v),
                WriteOp::Delete(k) => wb.delete_cf(data, k),
                WriteOp::DeleteRange(from, to) => {
                    if from < to {
                        wb.delete_range_cf(data, from, to)
                    }
                }
            }
        }
        Ok(wb)
    }

    fn error(&self, what: &str, e: rocksdb::Error) -> StoreError {
        StoreError::RocksDb {
            store: self.name.clone(),
            path: self.path.display().to_string(),
            message: format!("{what}: {e}"),
        }
    }
}

fn open_error(name: &str, dir: &Path, e: rocksdb::Error) -> StoreError {
    let message = e.to_string();
    if message.contains("/LOCK") || message.contains("lock hold by current process") {
        StoreError::Locked { store: name.to_string(), path: dir.display().to_string(), message }
    } else {
        StoreError::RocksDb {
            store: name.to_string(),
            path: dir.display().to_string(),
            message: format!("open: {message}"),
        }
    }
}

/// The smallest key greater than `key` in bytewise order.
fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

impl KeyValueBytesStore for RocksDbStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let data = self.data()?;
        self.db
            .get_pinned_cf(data, key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| self.error("get", e))
    }

    fn range(&self, from: Bound<&[u8]>, to: Bound<&[u8]>) -> Result<KeyValueIter<'_>, StoreError> {
        let data = self.data()?;
        let lower = match from {
            Bound::Included(k) => Some(k.to_vec()),
            Bound::Excluded(k) => Some(successor(k)),
            Bound::Unbounded => None,
        };
        let upper = match to {
            Bound::Included(k) => Some(successor(k)),
            Bound::Excluded(k) => Some(k.to_vec()),
            Bound::Unbounded => None,
        };
        if let (Some(lower), Some(upper)) = (&lower, &upper)
            && lower >= upper
        {
            return Ok(Box::new(std::iter::empty()));
        }
        let mut read = ReadOptions::default();
        let mode = match &lower {
            Some(lower) => IteratorMode::From(lower.as_slice(), rocksdb::Direction::Forward),
            None => IteratorMode::Start,
        };
        if let Some(lower) = &lower {
            read.set_iterate_lower_bound(lower.clone());
        }
        if let Some(upper) = upper {
            read.set_iterate_upper_bound(upper);
        }
        let iter = self.db.iterator_cf_opt(data, read, mode);
        Ok(Box::new(iter.map(move |item| match item {
            Ok((k, v)) => Ok((k.into_vec(), v.into_vec())),
            Err(e) => Err(self.error("iterate", e)),
        })))
    }

    fn write(&self, batch: &WriteBatch, changelog_offset: Option<i64>) -> Result<(), StoreError> {
        if batch.is_empty() && changelog_offset.is_none() {
            return Ok(());
        }
        let mut wb = self.write_batch(batch)?;
        if let Some(offset) = changelog_offset {
            wb.put_cf(self.meta()?, CHANGELOG_OFFSET_KEY, offset.to_be_bytes());
        }
        self.db.write_opt(wb, &self.write_options).map_err(|e| self.error("write", e))
    }

    fn write_with_partition_offsets(
        &self,
        batch: &WriteBatch,
        offsets: &[(u32, i64)],
    ) -> Result<(), StoreError> {
        if batch.is_empty() && offsets.is_empty() {
            return Ok(());
        }
        let mut wb = self.write_batch(batch)?;
        let meta = self.meta()?;
        for (partition, offset) in offsets {
            let mut key = PARTITION_OFFSET_PREFIX.to_vec();
            key.extend_from_slice(&partition.to_be_bytes());
            wb.put_cf(meta, key, offset.to_be_bytes());
        }
        self.db.write_opt(wb, &self.write_options).map_err(|e| self.error("write", e))
    }

    fn partition_offsets(&self) -> Result<std::collections::BTreeMap<u32, i64>, StoreError> {
        let mut offsets = std::collections::BTreeMap::new();
        let mode = IteratorMode::From(PARTITION_OFFSET_PREFIX, rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(self.meta()?, mode) {
            let (key, value) = item.map_err(|e| self.error("read partition offsets", e))?;
            let Some(partition) = key.strip_prefix(PARTITION_OFFSET_PREFIX) else { break };
            let corrupt = || StoreError::Corrupt {
                store: self.name.clone(),
                reason: format!(
                    "partition offset entry has a {}-byte key suffix and a {}-byte value, expected 4 and 8",
                    partition.len(),
                    value.len()
                ),
            };
            let partition: [u8; 4] = partition.try_into().map_err(|_| corrupt())?;
            let offset: [u8; 8] = value.as_ref().try_into().map_err(|_| corrupt())?;
            offsets.insert(u32::from_be_bytes(partition), i64::from_be_bytes(offset));
        }
        Ok(offsets)
    }

    fn changelog_offset(&self) -> Result<Option<i64>, StoreError> {
        let meta = self.meta()?;
        let Some(value) = self
            .db
            .get_pinned_cf(meta, CHANGELOG_OFFSET_KEY)
            .map_err(|e| self.error("get offset", e))?
        else {
            return Ok(None);
        };
        let bytes: [u8; 8] = value.as_ref().try_into().map_err(|_| StoreError::Corrupt {
            store: self.name.clone(),
            reason: format!("changelog offset has {} bytes, expected 8", value.len()),
        })?;
        Ok(Some(i64::from_be_bytes(bytes)))
    }

    fn approximate_num_entries(&self) -> Result<u64, StoreError> {
        let data = self.data()?;
        self.db
            .property_int_value_cf(data, rocksdb::properties::ESTIMATE_NUM_KEYS)
            .map(|v| v.unwrap_or(0))
            .map_err(|e| self.error("estimate keys", e))
    }

    fn flush(&self) -> Result<(), StoreError> {
        let mut opts = FlushOptions::default();
        opts.set_wait(true);
        let (data, meta) = (self.data()?, self.meta()?);
        self.db.flush_cfs_opt(&[data, meta], &opts).map_err(|e| self.error("flush", e))
    }
}
