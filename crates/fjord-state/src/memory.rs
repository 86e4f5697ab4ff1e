//! The in-memory key-value store: a `BTreeMap` behind a lock.
//!
//! Nothing is durable; a task restores it from the changelog from offset 0 whenever it starts.

use std::collections::BTreeMap;
use std::ops::Bound;

use parking_lot::RwLock;

use crate::{KeyValueBytesStore, KeyValueIter, StoreError, WriteBatch, WriteOp};

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
    partition_offsets: BTreeMap<u32, i64>,
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
        // `BTreeMap::range` panics on an inverted range (or an empty one excluded at both
        // ends); such a range is empty.
        if let (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) =
            (from, to)
            && (a > b
                || (a == b && !matches!((from, to), (Bound::Included(_), Bound::Included(_)))))
        {
            return Ok(Box::new(std::iter::empty()));
        }
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
        inner.apply(batch);
        if changelog_offset.is_some() {
            inner.changelog_offset = changelog_offset;
        }
        Ok(())
    }

    fn changelog_offset(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.inner.read().changelog_offset)
    }

    fn write_with_partition_offsets(
        &self,
        batch: &WriteBatch,
        offsets: &[(u32, i64)],
    ) -> Result<(), StoreError> {
        let mut inner = self.inner.write();
        inner.apply(batch);
        inner.partition_offsets.extend(offsets.iter().copied());
        Ok(())
    }

    fn partition_offsets(&self) -> Result<BTreeMap<u32, i64>, StoreError> {
        Ok(self.inner.read().partition_offsets.clone())
    }

    fn approximate_num_entries(&self) -> Result<u64, StoreError> {
        Ok(self.inner.read().map.len() as u64)
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl Inner {
    fn apply(&mut self, batch: &WriteBatch) {
        let inner = self;
        for op in &batch.ops {
            match op {
                WriteOp::Put(key, value) => {
                    inner.map.insert(key.clone(), value.clone());
                }
                WriteOp::Delete(key) => {
                    inner.map.remove(key);
                }
                WriteOp::DeleteRange(from, to) => {
                    if from < to {
                        let doomed: Vec<Vec<u8>> = inner
                            .map
                            .range::<[u8], _>((
                                Bound::Included(from.as_slice()),
                                Bound::Excluded(to.as_slice()),
                            ))
                            .map(|(k, _)| k.clone())
                            .collect();
                        for key in doomed {
                            inner.map.remove(&key);
                        }
                    }
                }
            }
        }
    }
}
