//! State store engines: where stateful operators keep their state.
//!
//! Stores work on bytes; `fjord-streams` puts typed access, the record cache and the changelog
//! on top. Every store writes through atomic batches that also record the changelog offset the
//! batch brings the store up to, so that a store is always consistent with a changelog position
//! (design.md section 6): after a crash, restoring from that offset to the end of the
//! changelog gives exactly the committed state.
//!
//! Engines: RocksDB (persistent, in the state directory, memory bounded for every store sharing
//! one [`RocksDbEnv`]: one block cache and write buffer manager; the streams runtime has one
//! per application instance) and in-memory
//! (restored from the changelog on start).
//!
//! Layouts over any engine: [`WindowStore`] (windowed aggregates) and [`SessionStore`]
//! (session windows) encode time-segmented keys into a [`KeyValueBytesStore`], so that both
//! work on RocksDB and in memory and expire old data with one range delete
//! ([`WriteBatch::delete_range`]). See the [`window`] and [`session`] modules for the key
//! layouts.

use std::ops::Bound;

mod memory;
pub mod rocksdb;
mod segments;
pub mod session;
pub mod window;

pub use self::rocksdb::{MemoryConfig, MemoryUsage, RocksDbEnv, RocksDbStore};
pub use memory::InMemoryStore;
pub use session::SessionStore;
pub use window::WindowStore;

/// Errors of the stores.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB failed.
    #[error("state store `{store}` ({path}): {message}")]
    RocksDb {
        /// The store.
        store: String,
        /// Its directory.
        path: String,
        /// What RocksDB said.
        message: String,
    },
    /// The store's directory is locked by another open store: another instance of the
    /// application (or another store object in this process) uses the same state directory.
    #[error(
        "state store `{store}`: directory {path} is in use by another open store ({message}); \
         another application instance is probably using the same state directory: stop it, or \
         give each instance its own state directory"
    )]
    Locked {
        /// The store.
        store: String,
        /// Its directory.
        path: String,
        /// What RocksDB said.
        message: String,
    },
    /// A file operation failed.
    #[error("state store `{store}`: {op} {path}: {source}")]
    Io {
        /// The store.
        store: String,
        /// What was done.
        op: &'static str,
        /// The path.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Stored bytes are not what the store wrote.
    #[error("state store `{store}` is corrupt: {reason}")]
    Corrupt {
        /// The store.
        store: String,
        /// What is wrong.
        reason: String,
    },
}

/// One write of a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Sets a key's value.
    Put(Vec<u8>, Vec<u8>),
    /// Removes a key.
    Delete(Vec<u8>),
    /// Removes every key in the half-open range `[from, to)` (bytewise order). Empty when
    /// `from >= to`.
    DeleteRange(Vec<u8>, Vec<u8>),
}

/// A batch of writes applied atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// The writes, applied in order: a later op sees the effect of earlier ones (a put after
    /// a covering delete-range survives it).
    pub ops: Vec<WriteOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a put.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push(WriteOp::Put(key, value));
    }
    /// Adds a delete.
    pub fn delete(&mut self, key: Vec<u8>) {
        self.ops.push(WriteOp::Delete(key));
    }
    /// Adds a put (`Some`) or a delete (`None`).
    pub fn put_or_delete(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        match value {
            Some(value) => self.put(key, value),
            None => self.delete(key),
        }
    }
    /// Adds a delete of every key in `[from, to)`; nothing when `from >= to`.
    pub fn delete_range(&mut self, from: Vec<u8>, to: Vec<u8>) {
        if from < to {
            self.ops.push(WriteOp::DeleteRange(from, to));
        }
    }
    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    /// The number of ops.
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    /// Removes every op.
    pub fn clear(&mut self) {
        self.ops.clear();
    }
}

/// Key-value pairs in key order.
pub type KeyValueIter<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + 'a>;

/// A key-value store of bytes, ordered by key (bytewise).
///
/// Reads may come from any thread (interactive queries) while the owning stream thread
/// writes; writes come from one thread at a time.
pub trait KeyValueBytesStore: Send + Sync {
    /// The store's name.
    fn name(&self) -> &str;
    /// The value of a key.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// The pairs with keys in the range, in key order.
    fn range(&self, from: Bound<&[u8]>, to: Bound<&[u8]>) -> Result<KeyValueIter<'_>, StoreError>;
    /// Applies a batch atomically, together with the changelog offset it brings the store up
    /// to (the next changelog offset to restore from), if given.
    fn write(&self, batch: &WriteBatch, changelog_offset: Option<i64>) -> Result<(), StoreError>;
    /// The changelog offset recorded by the last write that had one.
    fn changelog_offset(&self) -> Result<Option<i64>, StoreError>;
    /// Applies a batch atomically, together with the offsets (the next offset to read) of the
    /// source partitions it brings the store up to: for a store that mirrors every partition
    /// of a topic (a global store, whose topic is its changelog). Partitions not listed keep
    /// their recorded offsets.
    fn write_with_partition_offsets(
        &self,
        batch: &WriteBatch,
        offsets: &[(u32, i64)],
    ) -> Result<(), StoreError>;
    /// The source partition offsets recorded by [`Self::write_with_partition_offsets`].
    fn partition_offsets(&self) -> Result<std::collections::BTreeMap<u32, i64>, StoreError>;
    /// An estimate of the number of keys.
    fn approximate_num_entries(&self) -> Result<u64, StoreError>;
    /// Makes written data durable (RocksDB: flushes memtables; memory: nothing).
    fn flush(&self) -> Result<(), StoreError>;
}
