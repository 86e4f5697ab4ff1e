//! The `state` benchmark's loops timed without criterion: read-modify-write of a u64 counter
//! per record over 10,000 keys, on RocksDB (one write per record, and batches of 1,000) and in
//! memory. Criterion's dependencies change the feature set RocksDB's build script is built
//! with, which costs a 20-minute RocksDB rebuild; this runs on the crate's own build:
//!
//! `cargo run -p fjord-state --example rmw_timing`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

include!("../benches/support/rmw_core.rs");

fn time(name: &str, passes: u32, mut pass: impl FnMut()) {
    pass(); // warm-up
    let started = std::time::Instant::now();
    for _ in 0..passes {
        pass();
    }
    let elapsed = started.elapsed();
    let per_record = elapsed / (passes * KEYS as u32);
    let rate = (passes as f64 * KEYS as f64) / elapsed.as_secs_f64();
    println!("{name:<20} {per_record:>10.2?}/record  {:>12.0} records/s", rate);
}

fn main() {
    let env = RocksDbEnv::default();
    let dir = tempfile::tempdir().unwrap();
    let mut batch = WriteBatch::new();
    let store = RocksDbStore::open(&env, "per-record", &dir.path().join("per-record")).unwrap();
    time("rocksdb_per_record", 30, || pass_per_record(&store, &mut batch));
    let store = RocksDbStore::open(&env, "batched", &dir.path().join("batched")).unwrap();
    let mut offset = 0;
    time("rocksdb_batch_1000", 30, || pass_batched(&store, &mut batch, &mut offset));
    let memory = InMemoryStore::new("memory");
    time("memory_per_record", 30, || pass_per_record(&memory, &mut batch));
}
