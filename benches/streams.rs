//! Stream processing throughput, log to log, at-least-once, one stream thread, 100-byte values:
//! `filter` + `map_values` + `to` (targets: 3,000,000 records/s with the compact binary serde,
//! 1,000,000 with JSON); count per key over 10,000 keys in a cached RocksDB store (target
//! 2,000,000 records/s); a tumbling-window count; a stream-table join.
//!
//! The input is written first; the clock runs from `start()` until every input record was
//! processed and `close()` returned (it commits: caches flushed, outputs in the log).
//!
//! `cargo bench --bench streams [-- <records, default 5000000>]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord::broker::{
    Admin, Broker, BrokerConfig, NewTopic, Producer, ProducerConfig, ProducerRecord,
};
use fjord::streams::{
    Consumed, EmbeddedBackend, Materialized, Produced, SerdeRef, Serdes, Streams, StreamsBuilder,
    StreamsConfig, TimeWindows,
};

/// A value of about 100 bytes in either encoding.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Event {
    id: u64,
    user: String,
    amount: i64,
    note: String,
}

fn event(i: u64) -> Event {
    Event {
        id: i,
        user: format!("user-{:06}", i % 100_000),
        amount: (i % 1000) as i64,
        note: "x".repeat(60),
    }
}

/// The workloads: what the topology does between input and output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    /// `filter` + `map_values` + `to`.
    Stateless,
    /// `group_by_key` + `count` (RocksDB, cached) + `to_stream` + `to`, over [`KEYS`] keys.
    CountPerKey,
    /// The same count in one-second tumbling windows.
    WindowedCount,
    /// A stream-table join with a table of [`KEYS`] rows.
    Join,
}

/// Distinct keys of the stateful workloads.
const KEYS: u64 = 10_000;

async fn run(
    broker: &Broker,
    state_dir: &std::path::Path,
    name: &str,
    serde: SerdeRef<Event>,
    workload: Workload,
    records: u64,
) -> f64 {
    let admin = Admin::new(broker);
    let input = format!("{name}-in");
    let output = format!("{name}-out");
    let table = format!("{name}-table");
    for t in [&input, &output, &table] {
        admin
            .create_topic(NewTopic::new(t.as_str(), 1).config("retention.ms", "-1"))
            .await
            .unwrap();
    }
    let producer = Producer::new(
        broker,
        ProducerConfig { batch_size: 256 * 1024, ..ProducerConfig::default() },
    )
    .unwrap();
    let mut buf = Vec::new();
    let keys = if workload == Workload::Stateless { u64::MAX } else { KEYS };
    if workload == Workload::Join {
        for k in 0..KEYS {
            let region = format!("region-{}", k % 16);
            producer
                .send(ProducerRecord::new(&table, region.as_bytes()).key(&k.to_be_bytes()))
                .await
                .unwrap();
        }
    }
    for i in 0..records {
        buf.clear();
        serde.serialize(&event(i), &mut buf).unwrap();
        let key = (i % keys).to_be_bytes();
        producer.send(ProducerRecord::new(&input, &buf).key(&key)).await.unwrap();
    }
    producer.close().await.unwrap();
    let builder = StreamsBuilder::new();
    let stream = builder.stream(&input, Consumed::with(Serdes::u64(), serde.clone()));
    match workload {
        Workload::Stateless => stream
            .filter(|_, e| e.amount % 10 != 0)
            .map_values(|mut e| {
                e.amount *= 2;
                e
            })
            .to(&output),
        Workload::CountPerKey => {
            stream.group_by_key().count(Materialized::named("counts")).to_stream().to(&output)
        }
        Workload::WindowedCount => stream
            .group_by_key()
            .windowed_by(TimeWindows::of_size_with_no_grace(Duration::from_secs(1)))
            .count(Materialized::named("windowed-counts"))
            .to_stream()
            .to(&output),
        Workload::Join => {
            let regions = builder.table(
                &table,
                Consumed::with(Serdes::u64(), Serdes::string()),
                Materialized::named("regions"),
            );
            stream
                .join(&regions, |e: &Event, region: &String| e.amount + region.len() as i64)
                .to_with(&output, Produced::with(Serdes::u64(), Serdes::i64()))
        }
    }
    let mut streams = Streams::new(
        builder.build().unwrap(),
        Arc::new(EmbeddedBackend::new(broker)),
        StreamsConfig {
            max_poll_records: 10_000,
            state_dir: state_dir.join(name),
            ..StreamsConfig::new(name)
        },
    )
    .unwrap();
    let expected = records + if workload == Workload::Join { KEYS } else { 0 };
    let started = Instant::now();
    streams.start().await.unwrap();
    while streams.records_processed() < expected {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Closing commits: the caches flush, and every output is in the log when it returns.
    streams.close().await.unwrap();
    records as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    support::prefault_memory();
    let records: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5_000_000);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(BrokerConfig::new(dir.path().join("log"))).await.unwrap();
        println!("| workload | input records/s | target |");
        println!("|---|---|---|");
        let runs: [(&str, SerdeRef<Event>, Workload, &str, &str); 5] = [
            (
                "binary",
                Serdes::binary::<Event>(),
                Workload::Stateless,
                "filter + map_values + to, compact binary serde",
                "3,000,000",
            ),
            (
                "json",
                Serdes::json::<Event>(),
                Workload::Stateless,
                "filter + map_values + to, JSON serde",
                "1,000,000",
            ),
            (
                "count",
                Serdes::binary::<Event>(),
                Workload::CountPerKey,
                "count per key, 10,000 keys, RocksDB + cache, binary serde",
                "2,000,000",
            ),
            (
                "window",
                Serdes::binary::<Event>(),
                Workload::WindowedCount,
                "1 s tumbling-window count, 10,000 keys, RocksDB + cache",
                "-",
            ),
            (
                "join",
                Serdes::binary::<Event>(),
                Workload::Join,
                "stream-table join, 10,000-row table, RocksDB + cache",
                "-",
            ),
        ];
        for (name, serde, workload, what, target) in runs {
            let rate =
                run(&broker, &dir.path().join("state"), name, serde, workload, records).await;
            println!("| {what}, {records} records | {rate:.0} | {target} |");
        }
        broker.shutdown().await.unwrap();
    });
}
