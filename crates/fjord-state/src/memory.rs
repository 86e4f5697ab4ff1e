//! The in-memory key-value store: a `BTreeMap` behind a lock.
//!
//! Nothing is durable; a task restores it from the changelog from offset 0 whenever it starts.

use std::collections::BTreeMap;
use std::ops::Bound;

use parking_lot::RwLock;

use crate::{KeyValueBytesStore, KeyValueIter, StoreError, WriteBatch};

/// An in-memory [`KeyValueBytesStore`].
#[derive(Debug)]
pub struct InMemoryStore {
    name: String,
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    changelog_offset: Option<i64>,
}

impl InMemoryStore {
    /// An empty store.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), inner: RwLock::new(Inner::default()) }
    }
}

impl KeyValueBytesStore for InMemoryStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.inner.read().map.get(key).cloned())
    }

    fn range(&self, from: Bound<&[u8]>, to: Bound<&[u8]>) -> Result<KeyValueIter<'_>, StoreError> {
        // Copies the range out: readers from other threads must not hold the lock while they
        // iterate at their own pace.
        let pairs: Vec<_> = self
            .inner
            .read()
            .map
            .range::<[u8], _>((from, to))
            .map(|(k, v)| Ok((k.clone(), v.clone())))
            .collect();
        Ok(Box::new(pairs.into_iter()))
    }

    fn write(&self, batch: &WriteBatch, changelog_offset: Option<i64>) -> Result<(), StoreError> {
        let mut inner = self.inner.write();
        for (key, value) in &batch.ops {
            match value {
                Some(value) => inner.map.insert(key.clone(), value.clone()),
                None => inner.map.remove(key),
            };
        }
        if changelog_offset.is_some() {
            inner.changelog_offset = changelog_offset;
        }
        Ok(())
    }

    fn changelog_offset(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.inner.read().changelog_offset)
    }

    fn approximate_num_entries(&self) -> Result<u64, StoreError> {
        Ok(self.inner.read().map.len() as u64)
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
