//! Log append and read throughput on one core: 100-byte records in batches of 1,000, fsync left
//! to the OS (the targets: 3,000,000 records/s appended, 10,000,000 records/s read).
//!
//! `cargo bench --bench log`; numbers in `docs/benchmarks.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

mod support;
use fjord::log::clock::SystemClock;
use fjord::log::config::TopicConfig;
use fjord::log::record::{BatchIter, BatchOptions, Compression, RecordBatchBuilder};
use fjord::log::{FetchIsolation, PartitionLog, TopicPartition};

const RECORDS_PER_BATCH: usize = 1000;
const VALUE_SIZE: usize = 100;

fn batch(compression: Compression) -> Vec<u8> {
    let mut builder = RecordBatchBuilder::new(BatchOptions { compression, ..Default::default() });
    let value = [b'x'; VALUE_SIZE];
    for i in 0..RECORDS_PER_BATCH {
        let key = (i as u64).to_be_bytes();
        builder.append(1_700_000_000_000 + i as i64, Some(&key), Some(&value), &[]);
    }
    builder.build().unwrap()
}

fn open(dir: &std::path::Path) -> PartitionLog {
    PartitionLog::create(
        dir,
        TopicPartition::new("bench", 0),
        Arc::new(TopicConfig { retention_ms: None, ..TopicConfig::default() }),
        Arc::new(SystemClock),
    )
    .unwrap()
}

fn append(c: &mut Criterion) {
    support::prefault_memory();
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Elements(RECORDS_PER_BATCH as u64));
    for codec in [Compression::None, Compression::Lz4] {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        // The same buffer is appended again and again: the log rewrites only the base offset,
        // which lies outside the CRC, so this measures exactly the log's own work.
        let mut bytes = batch(codec);
        group.bench_function(format!("100B_x1000_{codec}"), |b| {
            b.iter(|| log.append(&mut bytes).unwrap())
        });
    }
    group.finish();
}

fn read(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let mut bytes = batch(Compression::None);
    let batches = 2_000;
    for _ in 0..batches {
        log.append(&mut bytes).unwrap();
    }
    let end = log.log_end_offset();
    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Elements(end as u64));
    group.sample_size(20);
    // What a broker serves: whole batches, CRC-checked, 1 MiB per fetch.
    group.bench_function("fetch_1MiB_whole_log", |b| {
        b.iter(|| {
            let mut offset = 0;
            while offset < end {
                let data = log.read(offset, 1 << 20, FetchIsolation::HighWatermark).unwrap();
                offset = data.next_offset.unwrap();
            }
        })
    });
    // What a consumer does with it: fetch and walk every record.
    group.bench_function("fetch_and_decode_whole_log", |b| {
        let mut scratch = Vec::new();
        b.iter(|| {
            let mut offset = 0;
            let mut value_bytes = 0usize;
            while offset < end {
                let data = log.read(offset, 1 << 20, FetchIsolation::HighWatermark).unwrap();
                for batch in BatchIter::new(&data.records) {
                    for record in batch.unwrap().records(&mut scratch).unwrap() {
                        value_bytes += record.unwrap().value.map_or(0, <[u8]>::len);
                    }
                }
                offset = data.next_offset.unwrap();
            }
            value_bytes
        })
    });
    group.finish();
}

criterion_group!(benches, append, read);
criterion_main!(benches);
