//! The macro benchmark: every standard workload end to end on the embedded log, in one table.
//!
//! The log alone: appending 100-byte records through a producer (`log-append`) and reading them
//! back with a consumer (`log-read`).
//!
//! Stream processing throughput, log to log, at-least-once, one stream thread, 100-byte values:
//! `filter` + `map_values` + `to` (targets: 3,000,000 records/s with the compact binary serde,
//! 1,000,000 with JSON); count per key over 10,000 keys in a cached RocksDB store (target
//! 2,000,000 records/s); a tumbling-window count; a stream-table join.
//!
//! The same count per key under exactly-once with a 100 ms commit interval (targets: 85% of
//! the at-least-once rate, and 1,500,000 records/s), and its end-to-end latency at a steady
//! 100,000 records/s: from the input record's timestamp (set when it is produced) to when a
//! `read_committed` consumer sees the count it caused.
//!
//! The input is written first; the clock runs from `start()` until every input record was
//! processed and `close()` returned (it commits: caches flushed, outputs in the log).
//!
//! The Nexmark queries the DSL expresses (`streams/nexmark.rs`: q0, q1, q2, q5, q7, q8) on
//! Beam's event generator, each checked against a direct computation.
//!
//! `cargo bench --bench streams [-- <records, default 5000000>] [workload names...]`, names
//! from the table (`log-append log-read binary json count count-100ms count-eos window join
//! latency-eos q0 q1 q2 q5 q7 q8`); all when none.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Not `benches/nexmark.rs`: Cargo would build that as a bench of its own.
#[path = "streams/nexmark.rs"]
mod nexmark;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord::broker::{
    Admin, Broker, BrokerConfig, Consumer, ConsumerConfig, IsolationLevel, NewTopic, OffsetReset,
    Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use fjord::streams::{
    Consumed, EmbeddedBackend, Materialized, ProcessingGuarantee, Produced, SerdeRef, Serdes,
    Streams, StreamsBuilder, TimeWindows,
};
use support::{Commits, streams_config};

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

/// A row of the table: name, serde, workload, commits, description, target.
type Row = (&'static str, SerdeRef<Event>, Workload, Commits, &'static str, &'static str);

/// Distinct keys of the stateful workloads.
const KEYS: u64 = 10_000;

async fn run(
    broker: &Broker,
    state_dir: &std::path::Path,
    name: &str,
    serde: SerdeRef<Event>,
    workload: Workload,
    commits: Commits,
    records: u64,
) -> f64 {
    let input = format!("{name}-in");
    let output = format!("{name}-out");
    let table = format!("{name}-table");
    support::create_topics(broker, &[&input, &output, &table]).await;
    let producer = support::input_producer(broker);
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
    let expected = records + if workload == Workload::Join { KEYS } else { 0 };
    // Closing commits: the caches flush, and every output is in the log when it returns.
    let elapsed = support::run_until(
        broker,
        builder.build().unwrap(),
        streams_config(state_dir, name, commits),
        |s| s.records_processed() >= expected,
    )
    .await
    .unwrap();
    records as f64 / elapsed.as_secs_f64()
}

/// Count per key under exactly-once at a steady `rate` for `seconds`: the latency from each
/// input record's timestamp to when its count is visible to a `read_committed` consumer, as
/// `(p50, p99)` in milliseconds.
async fn latency(
    broker: &Broker,
    state_dir: &std::path::Path,
    rate: u64,
    seconds: u64,
) -> (f64, f64) {
    let name = "latency-eos";
    let (input, output) = (format!("{name}-in"), format!("{name}-out"));
    let admin = Admin::new(broker);
    for t in [&input, &output] {
        admin.create_topic(NewTopic::new(t.as_str(), 1)).await.unwrap();
    }
    let builder = StreamsBuilder::new();
    builder
        .stream(&input, Consumed::with(Serdes::u64(), Serdes::binary::<Event>()))
        .group_by_key()
        .count(Materialized::named("counts"))
        .to_stream()
        .to(&output);
    let mut streams = Streams::new(
        builder.build().unwrap(),
        Arc::new(EmbeddedBackend::new(broker)),
        streams_config(state_dir, name, (ProcessingGuarantee::ExactlyOnce, None)),
    )
    .unwrap();
    streams.start().await.unwrap();
    let consumer = Consumer::new(
        broker,
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            isolation_level: IsolationLevel::ReadCommitted,
            ..ConsumerConfig::default()
        },
    )
    .unwrap();
    consumer.assign(&[TopicPartition::new(output.as_str(), 0)]).unwrap();
    let total = rate * seconds;
    let producing = {
        let broker = broker.clone();
        tokio::spawn(async move {
            let producer = Producer::new(&broker, ProducerConfig::default()).unwrap();
            let serde = Serdes::binary::<Event>();
            let mut buf = Vec::new();
            let started = Instant::now();
            // Sent in 1 ms slices of `rate / 1000` records.
            let per_slice = (rate / 1000).max(1);
            let mut sent = 0u64;
            while sent < total {
                let due = started + Duration::from_micros(sent * 1_000_000 / rate);
                tokio::time::sleep_until(due.into()).await;
                for _ in 0..per_slice.min(total - sent) {
                    buf.clear();
                    serde.serialize(&event(sent), &mut buf).unwrap();
                    let key = (sent % KEYS).to_be_bytes();
                    let now = wall_clock_ms();
                    producer
                        .send(ProducerRecord::new(&input, &buf).key(&key).timestamp(now))
                        .await
                        .unwrap();
                    sent += 1;
                }
            }
            producer.close().await.unwrap();
        })
    };
    // With caching, one count per key and commit comes out; each stands for the input records
    // of its key since the last commit, the oldest of which waited longest: the latency of
    // the update is measured from its own (the newest) record, a lower bound per record.
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(seconds + 60);
    // Until the last input was processed and one commit interval more has passed.
    let mut done_at: Option<Instant> = None;
    while done_at.is_none_or(|t| t.elapsed() < Duration::from_millis(300)) {
        assert!(Instant::now() < deadline, "the latency run did not finish");
        for r in consumer.poll(Duration::from_millis(50)).await.unwrap() {
            latencies.push((wall_clock_ms() - r.timestamp) as f64);
        }
        if done_at.is_none() && streams.records_processed() >= total {
            done_at = Some(Instant::now());
        }
    }
    producing.await.unwrap();
    streams.close().await.unwrap();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| {
        latencies.get(((latencies.len() as f64 - 1.0) * q) as usize).copied().unwrap_or(f64::NAN)
    };
    (at(0.5), at(0.99))
}

/// The log alone: `records` 100-byte records appended through a producer (until all are
/// acknowledged), then read back by a consumer, each timed.
async fn log_rows(broker: &Broker, records: u64, wanted: &impl Fn(&str) -> bool) {
    if !wanted("log-append") && !wanted("log-read") {
        return;
    }
    let topic = "log-bench";
    support::create_topics(broker, &[topic]).await;
    let producer = support::input_producer(broker);
    let value = [7u8; 100];
    let started = Instant::now();
    for i in 0..records {
        producer.send(ProducerRecord::new(topic, &value).key(&i.to_be_bytes())).await.unwrap();
    }
    producer.flush().await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    producer.close().await.unwrap();
    if wanted("log-append") {
        println!(
            "| log append through a producer, 100-byte values, {records} records | {:.0} | - |",
            records as f64 / seconds
        );
    }
    if wanted("log-read") {
        let consumer = support::reader(broker, topic);
        let started = Instant::now();
        let mut read = 0;
        while read < records {
            read += consumer.poll(Duration::from_millis(100)).await.unwrap().len() as u64;
        }
        println!(
            "| log read through a consumer, 100-byte values, {records} records | {:.0} | - |",
            records as f64 / started.elapsed().as_secs_f64()
        );
    }
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn main() {
    support::prefault_memory();
    let args = support::Args::parse(5_000_000);
    let records = args.count;
    let wanted = |name: &str| args.wanted(name);
    support::runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(BrokerConfig::new(dir.path().join("log"))).await.unwrap();
        println!("| workload | input records/s | target |");
        println!("|---|---|---|");
        log_rows(&broker, records, &wanted).await;
        let alos = (ProcessingGuarantee::AtLeastOnce, None);
        let runs: [Row; 7] = [
            (
                "binary",
                Serdes::binary::<Event>(),
                Workload::Stateless,
                alos,
                "filter + map_values + to, compact binary serde",
                "3,000,000",
            ),
            (
                "json",
                Serdes::json::<Event>(),
                Workload::Stateless,
                alos,
                "filter + map_values + to, JSON serde",
                "1,000,000",
            ),
            (
                "count",
                Serdes::binary::<Event>(),
                Workload::CountPerKey,
                alos,
                "count per key, 10,000 keys, RocksDB + cache, binary serde",
                "2,000,000",
            ),
            (
                "count-100ms",
                Serdes::binary::<Event>(),
                Workload::CountPerKey,
                (ProcessingGuarantee::AtLeastOnce, Some(Duration::from_millis(100))),
                "the same count, at-least-once, 100 ms commits",
                "-",
            ),
            (
                "count-eos",
                Serdes::binary::<Event>(),
                Workload::CountPerKey,
                (ProcessingGuarantee::ExactlyOnce, None),
                "the same count, exactly-once, 100 ms commits",
                "1,500,000 and 85% of at-least-once",
            ),
            (
                "window",
                Serdes::binary::<Event>(),
                Workload::WindowedCount,
                alos,
                "1 s tumbling-window count, 10,000 keys, RocksDB + cache",
                "-",
            ),
            (
                "join",
                Serdes::binary::<Event>(),
                Workload::Join,
                alos,
                "stream-table join, 10,000-row table, RocksDB + cache",
                "-",
            ),
        ];
        let state_dir = dir.path().join("state");
        for (name, serde, workload, commits, what, target) in runs {
            if !wanted(name) {
                continue;
            }
            let rate = run(&broker, &state_dir, name, serde, workload, commits, records).await;
            println!("| {what}, {records} records | {rate:.0} | {target} |");
        }
        if wanted("latency-eos") {
            let (p50, p99) = latency(&broker, &state_dir, 100_000, 10).await;
            println!(
                "| exactly-once count per key at 100,000 records/s for 10 s: produce to committed output | p50 {p50:.0} ms, p99 {p99:.0} ms | - |"
            );
        }
        nexmark::run_queries(&broker, dir.path(), records, wanted).await;
        broker.shutdown().await.unwrap();
    });
}
