//! The RocksDB store on real files: basic operations, reopen, atomicity of data and changelog
//! offset, the directory lock, destroy, concurrent readers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ops::Bound;
use std::sync::Arc;

use fjord_state::{
    InMemoryStore, KeyValueBytesStore, MemoryConfig, RocksDbEnv, RocksDbStore, StoreError,
    WriteBatch,
};

fn collect(
    store: &dyn KeyValueBytesStore,
    from: Bound<&[u8]>,
    to: Bound<&[u8]>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    store.range(from, to).unwrap().map(|r| r.unwrap()).collect()
}

fn kv(k: &str, v: &str) -> (Vec<u8>, Vec<u8>) {
    (k.as_bytes().to_vec(), v.as_bytes().to_vec())
}

fn basic_ops(store: &dyn KeyValueBytesStore) {
    let mut b = WriteBatch::new();
    for (k, v) in [("a", "1"), ("b", "2"), ("ba", "3"), ("c", "4"), ("d", "5")] {
        b.put(k.into(), v.into());
    }
    store.write(&b, None).unwrap();
    assert_eq!(store.get(b"b").unwrap(), Some(b"2".to_vec()));
    assert_eq!(store.get(b"zz").unwrap(), None);
    assert_eq!(store.changelog_offset().unwrap(), None);

    assert_eq!(
        collect(store, Bound::Included(b"b"), Bound::Excluded(b"c")),
        vec![kv("b", "2"), kv("ba", "3")]
    );
    assert_eq!(
        collect(store, Bound::Excluded(b"b"), Bound::Included(b"c")),
        vec![kv("ba", "3"), kv("c", "4")]
    );
    assert_eq!(collect(store, Bound::Unbounded, Bound::Excluded(b"b")), vec![kv("a", "1")]);
    assert_eq!(collect(store, Bound::Included(b"d"), Bound::Unbounded), vec![kv("d", "5")]);
    assert!(collect(store, Bound::Included(b"c"), Bound::Excluded(b"b")).is_empty());
    assert!(collect(store, Bound::Excluded(b"c"), Bound::Excluded(b"c")).is_empty());
    assert_eq!(collect(store, Bound::Unbounded, Bound::Unbounded).len(), 5);

    // Delete, delete-range [b, c), and a put inside the range after it in the same batch.
    let mut b = WriteBatch::new();
    b.delete(b"a".to_vec());
    b.delete_range(b"b".to_vec(), b"c".to_vec());
    b.put(b"bb".to_vec(), b"6".to_vec());
    store.write(&b, Some(42)).unwrap();
    assert_eq!(
        collect(store, Bound::Unbounded, Bound::Unbounded),
        vec![kv("bb", "6"), kv("c", "4"), kv("d", "5")]
    );
    assert_eq!(store.changelog_offset().unwrap(), Some(42));
    // An empty batch with an offset only moves the offset; one without keeps it.
    store.write(&WriteBatch::new(), Some(43)).unwrap();
    store.write(&WriteBatch::new(), None).unwrap();
    assert_eq!(store.changelog_offset().unwrap(), Some(43));
    store.flush().unwrap();
    assert!(store.approximate_num_entries().unwrap() >= 1);
}

#[test]
fn memory_basic_ops() {
    basic_ops(&InMemoryStore::new("mem"));
}

#[test]
fn rocksdb_basic_ops() {
    let dir = tempfile::tempdir().unwrap();
    let env = RocksDbEnv::default();
    let store = RocksDbStore::open(&env, "counts", &dir.path().join("counts")).unwrap();
    assert_eq!(store.name(), "counts");
    basic_ops(&store);
}

#[test]
fn reopen_keeps_data_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/store");
    let env = RocksDbEnv::new(MemoryConfig { total_bytes: 16 << 20, write_buffer_fraction: 0.25 });
    {
        let store = RocksDbStore::open(&env, "s", &path).unwrap();
        let mut b = WriteBatch::new();
        for i in 0..1000u32 {
            b.put(i.to_be_bytes().to_vec(), vec![i as u8; 10]);
        }
        store.write(&b, Some(1000)).unwrap();
        store.flush().unwrap();
        // Written after the flush: only in the WAL.
        let mut b = WriteBatch::new();
        b.delete_range(0u32.to_be_bytes().to_vec(), 10u32.to_be_bytes().to_vec());
        b.put(b"tail".to_vec(), b"x".to_vec());
        store.write(&b, Some(1002)).unwrap();
    }
    let store = RocksDbStore::open(&env, "s", &path).unwrap();
    assert_eq!(store.changelog_offset().unwrap(), Some(1002));
    assert_eq!(store.get(b"tail").unwrap(), Some(b"x".to_vec()));
    assert_eq!(store.get(&5u32.to_be_bytes()).unwrap(), None);
    assert_eq!(store.get(&10u32.to_be_bytes()).unwrap(), Some(vec![10; 10]));
    assert_eq!(collect(&store, Bound::Unbounded, Bound::Unbounded).len(), 991);
}

/// The offset is written in the same batch as the data: after every write, a reopened store
/// (in another directory copy, as a crash would leave it) has exactly the pairs that go with
/// its offset.
#[test]
fn offset_and_data_are_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let env = RocksDbEnv::default();
    let path = dir.path().join("s");
    {
        let store = RocksDbStore::open(&env, "s", &path).unwrap();
        for round in 0..20i64 {
            let mut b = WriteBatch::new();
            for i in 0..50i64 {
                b.put(format!("k{i:03}").into_bytes(), round.to_be_bytes().to_vec());
            }
            store.write(&b, Some(round)).unwrap();
            if round % 7 == 0 {
                store.flush().unwrap();
            }
        }
        // Dropped without a final flush: the last rounds are only in the WAL.
    }
    let store = RocksDbStore::open(&env, "s", &path).unwrap();
    let offset = store.changelog_offset().unwrap().unwrap();
    assert_eq!(offset, 19);
    for (_, v) in collect(&store, Bound::Unbounded, Bound::Unbounded) {
        assert_eq!(i64::from_be_bytes(v.try_into().unwrap()), offset);
    }
}

/// A global store records the offset of each partition of its topic with the data.
fn partition_offsets(store: &dyn KeyValueBytesStore) {
    assert!(store.partition_offsets().unwrap().is_empty());
    let mut b = WriteBatch::new();
    b.put(b"a".to_vec(), b"1".to_vec());
    store.write_with_partition_offsets(&b, &[(0, 5), (3, 7)]).unwrap();
    let mut b = WriteBatch::new();
    b.delete(b"a".to_vec());
    b.put(b"b".to_vec(), b"2".to_vec());
    store.write_with_partition_offsets(&b, &[(3, 9), (1, 1)]).unwrap();
    assert_eq!(
        store.partition_offsets().unwrap().into_iter().collect::<Vec<_>>(),
        vec![(0, 5), (1, 1), (3, 9)]
    );
    assert_eq!(store.get(b"a").unwrap(), None);
    assert_eq!(store.get(b"b").unwrap(), Some(b"2".to_vec()));
    // Separate from the changelog offset of a task's store.
    assert_eq!(store.changelog_offset().unwrap(), None);
}

#[test]
fn partition_offsets_are_kept_with_the_data() {
    partition_offsets(&InMemoryStore::new("mem"));
    let dir = tempfile::tempdir().unwrap();
    let env = RocksDbEnv::default();
    let path = dir.path().join("global");
    partition_offsets(&RocksDbStore::open(&env, "global", &path).unwrap());
    let store = RocksDbStore::open(&env, "global", &path).unwrap();
    assert_eq!(
        store.partition_offsets().unwrap().into_iter().collect::<Vec<_>>(),
        vec![(0, 5), (1, 1), (3, 9)]
    );
    assert_eq!(store.get(b"b").unwrap(), Some(b"2".to_vec()));
}

#[test]
fn second_open_of_same_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let env = RocksDbEnv::default();
    let path = dir.path().join("store");
    let _first = RocksDbStore::open(&env, "store", &path).unwrap();
    let err = RocksDbStore::open(&env, "store", &path).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("same state directory"), "{message}");
}

#[test]
fn destroy_wipes_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let env = RocksDbEnv::default();
    let path = dir.path().join("store");
    {
        let store = RocksDbStore::open(&env, "store", &path).unwrap();
        let mut b = WriteBatch::new();
        b.put(b"k".to_vec(), b"v".to_vec());
        store.write(&b, Some(7)).unwrap();
    }
    RocksDbStore::destroy(&path).unwrap();
    assert!(!path.exists());
    RocksDbStore::destroy(&path).unwrap();
    let store = RocksDbStore::open(&env, "store", &path).unwrap();
    assert_eq!(store.get(b"k").unwrap(), None);
    assert_eq!(store.changelog_offset().unwrap(), None);
}

#[test]
fn readers_on_other_threads_while_one_writes() {
    let dir = tempfile::tempdir().unwrap();
    let env = RocksDbEnv::default();
    let store: Arc<dyn KeyValueBytesStore> =
        Arc::new(RocksDbStore::open(&env, "store", &dir.path().join("store")).unwrap());
    // Each batch sets all 100 keys to the same round number: any reader's scan (one
    // iterator, one snapshot) sees a single round.
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for round in 0..300u64 {
                let mut b = WriteBatch::new();
                for i in 0..100u32 {
                    b.put(i.to_be_bytes().to_vec(), round.to_be_bytes().to_vec());
                }
                store.write(&b, Some(round as i64)).unwrap();
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    let values: Vec<_> = store
                        .range(Bound::Unbounded, Bound::Unbounded)
                        .unwrap()
                        .map(|r| r.unwrap().1)
                        .collect();
                    assert!(values.is_empty() || values.len() == 100);
                    assert!(values.windows(2).all(|w| w[0] == w[1]));
                }
            })
        })
        .collect();
    writer.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(store.changelog_offset().unwrap(), Some(299));
}
