//! Stream processing throughput, log to log: `filter` + `map_values` + `to`, at-least-once, one
//! stream thread, 100-byte values (targets: 3,000,000 records/s with the compact binary serde,
//! 1,000,000 with JSON).
//!
//! The input is written first; the clock runs from `start()` until the last output record is
//! in the output topic.
//!
//! `cargo bench --bench streams [-- <records, default 5000000>]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord::broker::{
    Admin, Broker, BrokerConfig, NewTopic, OffsetSpec, Producer, ProducerConfig, ProducerRecord,
};
use fjord::log::TopicPartition;
use fjord::streams::{
    Consumed, EmbeddedBackend, SerdeRef, Serdes, Streams, StreamsBuilder, StreamsConfig,
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

async fn run(broker: &Broker, name: &str, serde: SerdeRef<Event>, records: u64) -> f64 {
    let admin = Admin::new(broker);
    let input = format!("{name}-in");
    let output = format!("{name}-out");
    for t in [&input, &output] {
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
    for i in 0..records {
        buf.clear();
        serde.serialize(&event(i), &mut buf).unwrap();
        producer.send(ProducerRecord::new(&input, &buf).key(&i.to_be_bytes())).await.unwrap();
    }
    producer.close().await.unwrap();
    let builder = StreamsBuilder::new();
    builder
        .stream(&input, Consumed::with(Serdes::u64(), serde.clone()))
        .filter(|_, e| e.amount % 10 != 0)
        .map_values(|mut e| {
            e.amount *= 2;
            e
        })
        .to(&output);
    let mut streams = Streams::new(
        builder.build().unwrap(),
        Arc::new(EmbeddedBackend::new(broker)),
        StreamsConfig { max_poll_records: 10_000, ..StreamsConfig::new(name) },
    )
    .unwrap();
    let expected = (0..records).filter(|i| i % 10 != 0).count() as i64;
    let started = Instant::now();
    streams.start().await.unwrap();
    let out = TopicPartition::new(output.as_str(), 0);
    while broker.list_offset(&out, OffsetSpec::Latest).unwrap().offset < expected {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = records as f64 / started.elapsed().as_secs_f64();
    streams.close().await.unwrap();
    rate
}

fn main() {
    support::prefault_memory();
    let records: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5_000_000);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(BrokerConfig::new(dir.path())).await.unwrap();
        println!("| workload | input records/s | target |");
        println!("|---|---|---|");
        let binary = run(&broker, "binary", Serdes::binary::<Event>(), records).await;
        println!("| filter + map_values + to, compact binary serde, {records} records | {binary:.0} | 3,000,000 |");
        let json = run(&broker, "json", Serdes::json::<Event>(), records).await;
        println!("| filter + map_values + to, JSON serde, {records} records | {json:.0} | 1,000,000 |");
        broker.shutdown().await.unwrap();
    });
}
