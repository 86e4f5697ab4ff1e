//! State store read-modify-write: the inner loop of a count aggregation without a cache. Per
//! record: get a key's u64 counter, increment it, put it back; over 10,000 keys.
//!
//! - `rocksdb_per_record`: each put is its own one-op write batch (WAL on, no sync);
//! - `rocksdb_batch_1000`: puts are staged and written in batches of 1,000 (as a commit would);
//! - `memory_per_record`: the in-memory store, for reference.
//!
//! `cargo bench --bench state -- --warm-up-time 1 --measurement-time 3`; numbers in
//! `docs/benchmarks.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fjord_state::{InMemoryStore, KeyValueBytesStore, RocksDbEnv, RocksDbStore, WriteBatch};

const KEYS: u64 = 10_000;

fn increment(store: &dyn KeyValueBytesStore, key: &[u8]) -> Vec<u8> {
    let count = store.get(key).unwrap().map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap()));
    (count + 1).to_be_bytes().to_vec()
}

/// One pass over all keys, one write per record.
fn pass_per_record(store: &dyn KeyValueBytesStore, batch: &mut WriteBatch) {
    for i in 0..KEYS {
        let key = i.to_be_bytes();
        let value = increment(store, &key);
        batch.clear();
        batch.put(key.to_vec(), value);
        store.write(batch, None).unwrap();
    }
}

/// One pass over all keys, writes staged and applied every 1,000 records (keys within a batch
/// are distinct, so reads need not look into the staged batch).
fn pass_batched(store: &dyn KeyValueBytesStore, batch: &mut WriteBatch, offset: &mut i64) {
    batch.clear();
    for i in 0..KEYS {
        let key = i.to_be_bytes();
        let value = increment(store, &key);
        batch.put(key.to_vec(), value);
        if batch.len() == 1000 {
            *offset += 1000;
            store.write(batch, Some(*offset)).unwrap();
            batch.clear();
        }
    }
}

fn read_modify_write(c: &mut Criterion) {
    let mut group = c.benchmark_group("state_rmw_10k_keys");
    group.throughput(Throughput::Elements(KEYS));
    let env = RocksDbEnv::default();

    let dir = tempfile::tempdir().unwrap();
    let store = RocksDbStore::open(&env, "per-record", &dir.path().join("per-record")).unwrap();
    let mut batch = WriteBatch::new();
    group.bench_function("rocksdb_per_record", |b| b.iter(|| pass_per_record(&store, &mut batch)));

    let store = RocksDbStore::open(&env, "batched", &dir.path().join("batched")).unwrap();
    let mut offset = 0;
    group.bench_function("rocksdb_batch_1000", |b| {
        b.iter(|| pass_batched(&store, &mut batch, &mut offset))
    });

    let memory = InMemoryStore::new("memory");
    group.bench_function("memory_per_record", |b| b.iter(|| pass_per_record(&memory, &mut batch)));
    group.finish();
}

criterion_group!(benches, read_modify_write);
criterion_main!(benches);
