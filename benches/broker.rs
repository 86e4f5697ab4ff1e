//! End-to-end throughput of the in-process clients and the cost of the group and transaction
//! protocols, printed as one table:
//! - produce and consume of 100-byte records (targets: 2,000,000 records/s produced and
//!   4,000,000 consumed);
//! - a rebalance of 3 group members (target: under 100 ms);
//! - transactions of 10,000 records committed back to back against the same workload without
//!   transactions (target: at least 80 %), with commit latency p50 and p99.
//!
//! `cargo bench --bench broker [-- <records, default 5000000>]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord::broker::{
    Admin, Broker, BrokerConfig, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer,
    ProducerConfig, ProducerRecord,
};
use fjord::log::TopicPartition;

fn producer_config() -> ProducerConfig {
    ProducerConfig {
        batch_size: 256 * 1024,
        linger: Duration::from_millis(5),
        ..ProducerConfig::default()
    }
}

async fn produce(broker: &Broker, topic: &str, records: u64) -> f64 {
    let producer = Producer::new(broker, producer_config()).unwrap();
    let value = [b'v'; 100];
    let started = Instant::now();
    for i in 0..records {
        let key = i.to_be_bytes();
        producer.send(ProducerRecord::new(topic, &value).key(&key)).await.unwrap();
    }
    producer.flush().await.unwrap();
    let rate = records as f64 / started.elapsed().as_secs_f64();
    producer.close().await.unwrap();
    rate
}

async fn consume(broker: &Broker, topic: &str, partitions: u32, records: u64) -> f64 {
    let consumer = Consumer::new(
        broker,
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            max_poll_records: 10_000,
            max_partition_fetch_bytes: 1 << 20,
            ..ConsumerConfig::default()
        },
    )
    .unwrap();
    let tps: Vec<_> = (0..partitions).map(|p| TopicPartition::new(topic, p)).collect();
    consumer.assign(&tps).unwrap();
    let started = Instant::now();
    let mut seen = 0u64;
    let mut bytes = 0usize;
    while seen < records {
        let polled = consumer.poll(Duration::from_secs(5)).await.unwrap();
        seen += polled.len() as u64;
        bytes += polled.iter().map(|r| r.value.as_ref().map_or(0, |v| v.len())).sum::<usize>();
    }
    std::hint::black_box(bytes);
    seen as f64 / started.elapsed().as_secs_f64()
}

async fn rebalance(broker: &Broker) -> (Duration, Duration) {
    Admin::new(broker).create_topic(NewTopic::new("group-bench", 6)).await.unwrap();
    let consumers: Vec<Arc<Consumer>> = (0..4)
        .map(|i| {
            Arc::new(
                Consumer::new(
                    broker,
                    ConsumerConfig {
                        client_id: format!("member-{i}"),
                        group_id: Some("bench".into()),
                        session_timeout: Duration::from_secs(10),
                        heartbeat_interval: Duration::from_secs(1),
                        ..ConsumerConfig::default()
                    },
                )
                .unwrap(),
            )
        })
        .collect();
    let settle = |members: Vec<Arc<Consumer>>| async move {
        let started = Instant::now();
        loop {
            let tasks: Vec<_> = members
                .iter()
                .cloned()
                .map(|c| {
                    tokio::spawn(async move { c.poll(Duration::from_millis(20)).await.unwrap() })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            let owned: usize = members.iter().map(|c| c.assignment().len()).sum();
            if owned == 6 && members.iter().all(|c| !c.assignment().is_empty()) {
                return started.elapsed();
            }
        }
    };
    for c in &consumers[..3] {
        c.subscribe(&["group-bench"]).unwrap();
    }
    let first = settle(consumers[..3].to_vec()).await;
    // A fourth member joins a stable group of three: the rebalance everyone waits for.
    consumers[3].subscribe(&["group-bench"]).unwrap();
    let join = settle(consumers.to_vec()).await;
    (first, join)
}

async fn transactions(
    broker: &Broker,
    records_per_txn: u64,
    txns: u64,
) -> (f64, f64, Duration, Duration) {
    let admin = Admin::new(broker);
    admin.create_topic(NewTopic::new("txn-bench", 1)).await.unwrap();
    admin.create_topic(NewTopic::new("plain-bench", 1)).await.unwrap();
    let value = [b'v'; 100];
    // Without transactions: the same batches, flushed every 10,000 records.
    let plain = Producer::new(broker, producer_config()).unwrap();
    let started = Instant::now();
    for _ in 0..txns {
        for i in 0..records_per_txn {
            plain
                .send(ProducerRecord::new("plain-bench", &value).key(&i.to_be_bytes()))
                .await
                .unwrap();
        }
        plain.flush().await.unwrap();
    }
    let plain_rate = (records_per_txn * txns) as f64 / started.elapsed().as_secs_f64();
    let producer = Producer::new(
        broker,
        ProducerConfig { transactional_id: Some("bench".into()), ..producer_config() },
    )
    .unwrap();
    producer.init_transactions().await.unwrap();
    let mut commit_latencies = Vec::with_capacity(txns as usize);
    let started = Instant::now();
    for _ in 0..txns {
        producer.begin_transaction().unwrap();
        for i in 0..records_per_txn {
            producer
                .send(ProducerRecord::new("txn-bench", &value).key(&i.to_be_bytes()))
                .await
                .unwrap();
        }
        let commit = Instant::now();
        producer.commit_transaction().await.unwrap();
        commit_latencies.push(commit.elapsed());
    }
    let txn_rate = (records_per_txn * txns) as f64 / started.elapsed().as_secs_f64();
    commit_latencies.sort();
    let p = |q: f64| commit_latencies[((commit_latencies.len() - 1) as f64 * q) as usize];
    (plain_rate, txn_rate, p(0.5), p(0.99))
}

fn main() {
    support::prefault_memory();
    let records: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5_000_000);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut config = BrokerConfig::new(dir.path());
        config.group.min_session_timeout = Duration::from_millis(100);
        let broker = Broker::open(config).await.unwrap();
        let admin = Admin::new(&broker);
        println!("| workload | result | target |");
        println!("|---|---|---|");
        for partitions in [1u32, 4] {
            let topic = format!("e2e-{partitions}");
            admin
                .create_topic(NewTopic::new(topic.as_str(), partitions as i32).config("retention.ms", "-1"))
                .await
                .unwrap();
            let produced = produce(&broker, &topic, records).await;
            let consumed = consume(&broker, &topic, partitions, records).await;
            println!("| produce 100 B records, {partitions} partition(s), {records} records | {produced:.0} records/s | 2,000,000 |");
            println!("| consume 100 B records, {partitions} partition(s) | {consumed:.0} records/s | 4,000,000 |");
        }
        let (first, join) = rebalance(&broker).await;
        println!("| 3 members join an empty group, until all own partitions | {:.1} ms | |", first.as_secs_f64() * 1000.0);
        println!("| a 4th member joins a stable group of 3, until all 4 own partitions | {:.1} ms | < 100 ms |", join.as_secs_f64() * 1000.0);
        let (plain, txn, p50, p99) = transactions(&broker, 10_000, 200).await;
        println!("| 10,000-record batches flushed back to back, no transactions | {plain:.0} records/s | |");
        println!(
            "| 10,000-record transactions committed back to back | {txn:.0} records/s ({:.0}% of the above) | ≥ 80% |",
            100.0 * txn / plain
        );
        println!(
            "| transaction commit latency | p50 {:.2} ms, p99 {:.2} ms | |",
            p50.as_secs_f64() * 1000.0,
            p99.as_secs_f64() * 1000.0
        );
        broker.shutdown().await.unwrap();
    });
}
