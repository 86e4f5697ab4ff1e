// The `state` benchmark's criterion wiring, included by the facade's `benches/state.rs`
// (criterion is not a dependency of fjord-state: see `examples/rmw_timing.rs`).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

include!("rmw_core.rs");

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
