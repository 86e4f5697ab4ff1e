//! `StreamsConfig::metrics_endpoint`, the one line that turns on Prometheus: a word count on
//! the embedded broker, its metrics scraped over real TCP. Its own test binary, because the
//! metrics recorder is process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord_broker::{
    Admin, Broker, BrokerConfig, NewTopic, Producer, ProducerConfig, ProducerRecord,
};
use fjord_streams::{
    Consumed, EmbeddedBackend, Materialized, Serdes, Streams, StreamsBuilder, StreamsConfig,
    StreamsState,
};

/// The scraped page: every sample line, as `name{labels}` → value.
fn scrape(addr: std::net::SocketAddr) -> BTreeMap<String, f64> {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut page = String::new();
    stream.read_to_string(&mut page).unwrap();
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(name, value)| Some((name.to_string(), value.parse().ok()?)))
        .collect()
}

/// The sum of the samples of `metric` whose labels contain every one of `labels`.
fn sum(page: &BTreeMap<String, f64>, metric: &str, labels: &[&str]) -> f64 {
    page.iter()
        .filter(|(k, _)| k.starts_with(&format!("{metric}{{")) || *k == metric)
        .filter(|(k, _)| labels.iter().all(|l| k.contains(l)))
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_config_line_serves_log_task_processor_and_store_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(BrokerConfig::new(dir.path())).await.unwrap();
    Admin::new(&broker).create_topic(NewTopic::new("words", 2)).await.unwrap();
    let producer = Producer::new(&broker, ProducerConfig::default()).unwrap();
    for i in 0..1_000 {
        let word = format!("w{}", i % 10);
        producer.send(ProducerRecord::new("words", b"x").key(word.as_bytes())).await.unwrap();
    }
    producer.close().await.unwrap();

    // A free port: the exporter needs a fixed one.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let builder = StreamsBuilder::new();
    builder
        .stream("words", Consumed::with(Serdes::string(), Serdes::string()))
        .group_by_key()
        .count(Materialized::named("counts"));
    let config = StreamsConfig {
        metrics_endpoint: Some(addr),
        commit_interval: Some(Duration::from_millis(50)),
        state_dir: dir.path().join("state"),
        ..StreamsConfig::new("metered")
    };
    let mut streams =
        Streams::new(builder.build().unwrap(), Arc::new(EmbeddedBackend::new(&broker)), config)
            .unwrap();
    streams.start().await.unwrap();
    streams.wait_for_state(StreamsState::Running, Duration::from_secs(20)).await.unwrap();

    // Counters reach the registry at each commit: scrape until the last one is in. A scrape
    // is not a snapshot; a task's record count is exported after the rest of its counts, so
    // the scrape after the one that saw the tasks' counts complete sees the rest too.
    let app = "application=\"metered\"";
    let deadline = Instant::now() + Duration::from_secs(20);
    while sum(&scrape(addr), "fjord_streams_task_records_total", &[app]) != 1_000.0 {
        assert!(Instant::now() < deadline, "tasks never reported 1000 records");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = scrape(addr);
    for task in ["task=\"0_0\"", "task=\"0_1\""] {
        assert!(sum(&page, "fjord_streams_task_records_total", &[app, task]) > 0.0, "{task}");
    }
    // Every processor of the count saw every record (the source is counted by the task).
    let processors: Vec<&String> = page
        .keys()
        .filter(|k| k.starts_with("fjord_streams_processor_records_total{") && k.contains(app))
        .collect();
    assert!(!processors.is_empty());
    for name in processors {
        let processor = name.split("processor=\"").nth(1).unwrap().split('"').next().unwrap();
        let label = format!("processor=\"{processor}\"");
        assert_eq!(sum(&page, "fjord_streams_processor_records_total", &[app, &label]), 1_000.0);
    }
    // Sampled latency: one record in 64 per task is timed.
    assert!(sum(&page, "fjord_streams_task_latency_seconds_count", &[app]) >= 14.0);
    // The count's store: ten words over two tasks; every record read the cache or the engine.
    let store = "store=\"counts\"";
    let hits = sum(&page, "fjord_streams_store_cache_hits_total", &[app, store]);
    let misses = sum(&page, "fjord_streams_store_cache_misses_total", &[app, store]);
    assert_eq!(hits + misses, 1_000.0, "hits {hits}, misses {misses}");
    assert!(hits >= 980.0, "ten keys stay cached: {hits} hits");
    // The log's own metrics come through the same endpoint (counted from the installation,
    // which came after the input was written).
    assert!(sum(&page, "fjord_log_fetch_records_total", &["topic=\"words\""]) > 0.0);
    let changelog = "topic=\"metered-counts-changelog\"";
    assert!(sum(&page, "fjord_log_append_records_total", &[changelog]) > 0.0);
    assert!(sum(&page, "fjord_streams_commit_latency_seconds_count", &[]) >= 1.0);

    // The store's size shows at the commits after its flushes reached RocksDB.
    let deadline = Instant::now() + Duration::from_secs(20);
    while sum(&scrape(addr), "fjord_streams_store_entries", &[app, store]) < 10.0 {
        assert!(Instant::now() < deadline, "the store's entries never reached 10");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A second instance in this process may name the same endpoint, not another one.
    let other = StreamsConfig {
        metrics_endpoint: Some("127.0.0.1:1".parse().unwrap()),
        state_dir: dir.path().join("other"),
        ..StreamsConfig::new("metered-2")
    };
    let builder = StreamsBuilder::new();
    builder.stream("words", Consumed::with(Serdes::string(), Serdes::string())).to("elsewhere");
    let mut second =
        Streams::new(builder.build().unwrap(), Arc::new(EmbeddedBackend::new(&broker)), other)
            .unwrap();
    let refused = second.start().await.unwrap_err().to_string();
    assert!(refused.contains(&addr.to_string()), "{refused}");
    streams.close().await.unwrap();
}
