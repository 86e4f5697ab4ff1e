//! The Prometheus exporter end to end: installed after the broker opened (as an application
//! that enables metrics in its streams config does), then produce, fetch, commit, transactions
//! and delete-records through the embedded broker, scraped over real TCP.
//!
//! Its own test binary because the recorder is process-wide: only one test here installs it,
//! and the other test fails before installing anything, so the order they run in (threads of
//! one process under `cargo test`, processes under nextest) does not matter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use fjord_broker::metrics::{MetricsError, PrometheusExporter, install_prometheus_exporter};
use fjord_broker::{
    Admin, Broker, BrokerConfig, Consumer, ConsumerConfig, IsolationLevel, NewTopic, OffsetReset,
    Producer, ProducerConfig, ProducerRecord,
};
use fjord_log::TopicPartition;

/// One sample of a scrape: metric name and its labels, sorted.
type Series = (String, BTreeMap<String, String>);

async fn broker(dir: &std::path::Path) -> Broker {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut config = BrokerConfig::new(dir);
    config.offsets_topic_num_partitions = 1;
    config.transaction_state_log_num_partitions = 1;
    config.group.min_session_timeout = Duration::from_millis(10);
    // The log's background thread stays on (every 20 ms): it binds idle partitions' metrics to
    // the recorder installed after they opened.
    Broker::open(config).await.unwrap()
}

/// Installs the exporter on a port that was free a moment ago; another process may take it in
/// between, so a few tries.
fn install_on_a_free_port() -> PrometheusExporter {
    let mut last = None;
    for _ in 0..5 {
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        match install_prometheus_exporter(addr) {
            Ok(exporter) => return exporter,
            Err(e @ MetricsError::Listen { .. }) => last = Some(e),
            Err(e) => panic!("installing the exporter failed: {e}"),
        }
    }
    panic!("no free port for the exporter: {last:?}");
}

/// An HTTP/1.1 GET of `/metrics` over TCP; the body, after checking the status and content type.
fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain"), "{head}");
    body.to_string()
}

/// The samples of a page in Prometheus's text format.
fn parse(page: &str) -> BTreeMap<Series, f64> {
    let mut samples = BTreeMap::new();
    for line in page.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.strip_suffix('}').expect("closing brace")),
            None => (series, ""),
        };
        // Fjord's label values have no quotes or commas, so splitting is enough here.
        let labels = labels
            .split(',')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once('=').expect("label=value");
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        samples.insert((name.to_string(), labels), value.parse().expect("a number"));
    }
    samples
}

fn series(name: &str, labels: &[(&str, &str)]) -> Series {
    (name.to_string(), labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

fn tp_labels(topic: &'static str, partition: &'static str) -> [(&'static str, &'static str); 2] {
    [("topic", topic), ("partition", partition)]
}

/// Scrapes until every expected sample has its value, or fails at the deadline showing what
/// differed. The exporter reads the recorder at each scrape; only idle partitions need the
/// log's next background pass, hence the retries.
fn expect_samples(addr: SocketAddr, expected: &[(Series, f64)]) -> BTreeMap<Series, f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let samples = parse(&scrape(addr));
        let wrong: Vec<_> = expected
            .iter()
            .filter(|(s, v)| samples.get(s) != Some(v))
            .map(|(s, v)| format!("{s:?}: expected {v}, scraped {:?}", samples.get(s)))
            .collect();
        if wrong.is_empty() {
            return samples;
        }
        assert!(Instant::now() < deadline, "samples differ:\n{}", wrong.join("\n"));
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exporter_serves_partition_client_group_and_transaction_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let admin = Admin::new(&broker);
    admin.create_topic(NewTopic::new("orders", 2)).await.unwrap();
    admin.create_topic(NewTopic::new("idle", 1)).await.unwrap();
    admin.create_topic(NewTopic::new("payments", 1)).await.unwrap();
    let producer = Producer::new(
        &broker,
        ProducerConfig { linger: Duration::ZERO, ..ProducerConfig::default() },
    )
    .unwrap();
    // Before the exporter: counted by no recorder, but the offsets they reach are published.
    for i in 0..3 {
        let value = format!("early-{i}");
        producer
            .send_and_wait(ProducerRecord::new("orders", value.as_bytes()).partition(1))
            .await
            .unwrap();
    }

    let exporter = install_on_a_free_port();
    let addr = exporter.local_addr();
    // A second recorder is refused, and the port it asked for is released.
    let other = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let err = install_prometheus_exporter(other).unwrap_err();
    assert!(matches!(err, MetricsError::RecorderAlreadyInstalled { addr } if addr == other));
    assert!(err.to_string().contains(&other.to_string()), "{err}");
    TcpListener::bind(other).expect("the refused exporter released its port");

    // Ten single-record batches to orders-0, then everything read by a group member.
    for i in 0..10 {
        let value = format!("order-{i}");
        producer
            .send_and_wait(ProducerRecord::new("orders", value.as_bytes()).partition(0))
            .await
            .unwrap();
    }
    let consumer = Consumer::new(
        &broker,
        ConsumerConfig {
            group_id: Some("billing".into()),
            client_id: "billing-1".into(),
            auto_offset_reset: OffsetReset::Earliest,
            enable_auto_commit: false,
            ..ConsumerConfig::default()
        },
    )
    .unwrap();
    consumer.subscribe(&["orders"]).unwrap();
    let mut received = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while received < 13 {
        assert!(Instant::now() < deadline, "got {received} of 13 records");
        received += consumer.poll(Duration::from_millis(200)).await.unwrap().len();
    }
    // One more poll: the consumer fetches at its end and sees it is caught up.
    consumer.poll(Duration::from_millis(50)).await.unwrap();
    consumer.commit_sync().await.unwrap();

    // One aborted and one committed transaction on payments.
    let txn = Producer::new(
        &broker,
        ProducerConfig {
            transactional_id: Some("payer".into()),
            linger: Duration::ZERO,
            ..ProducerConfig::default()
        },
    )
    .unwrap();
    txn.init_transactions().await.unwrap();
    txn.begin_transaction().unwrap();
    txn.send_and_wait(ProducerRecord::new("payments", b"refused")).await.unwrap();
    txn.send_and_wait(ProducerRecord::new("payments", b"refused too")).await.unwrap();
    txn.abort_transaction().await.unwrap();
    txn.begin_transaction().unwrap();
    txn.send_and_wait(ProducerRecord::new("payments", b"paid")).await.unwrap();
    txn.commit_transaction().await.unwrap();
    // A read_committed reader gets the committed record; the log counts the three data records
    // it returned (the aborted ones are dropped by the consumer) and not the two markers.
    let reader = Consumer::new(
        &broker,
        ConsumerConfig {
            isolation_level: IsolationLevel::ReadCommitted,
            auto_offset_reset: OffsetReset::Earliest,
            ..ConsumerConfig::default()
        },
    )
    .unwrap();
    reader.assign(&[TopicPartition::new("payments", 0)]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let paid = loop {
        assert!(Instant::now() < deadline, "the committed payment never arrived");
        if let Some(record) = reader.poll(Duration::from_millis(200)).await.unwrap().pop() {
            break record;
        }
    };
    assert_eq!(paid.value.as_deref(), Some(&b"paid"[..]));

    // Delete-records moves the log start offset of orders-0.
    admin.delete_records(vec![(TopicPartition::new("orders", 0), 4)]).await.unwrap();

    let orders0 = broker.partition(&TopicPartition::new("orders", 0)).unwrap();
    let orders0_bytes = orders0.size_in_bytes() as f64;
    let orders1_bytes =
        broker.partition(&TopicPartition::new("orders", 1)).unwrap().size_in_bytes();
    let payments_bytes =
        broker.partition(&TopicPartition::new("payments", 0)).unwrap().size_in_bytes() as f64;
    let orders_0 = tp_labels("orders", "0");
    let orders_1 = tp_labels("orders", "1");
    let payments = tp_labels("payments", "0");
    let idle = tp_labels("idle", "0");
    let lag = |p| [("group", "billing"), ("topic", "orders"), ("partition", p)];
    let samples = expect_samples(
        addr,
        &[
            // Appends and fetches, per partition, counted since the exporter was installed.
            (series("fjord_log_append_records_total", &orders_0), 10.0),
            (series("fjord_log_append_bytes_total", &orders_0), orders0_bytes),
            (series("fjord_log_fetch_records_total", &orders_0), 10.0),
            (series("fjord_log_fetch_bytes_total", &orders_0), orders0_bytes),
            (series("fjord_log_fetch_records_total", &orders_1), 3.0),
            (series("fjord_log_fetch_bytes_total", &orders_1), orders1_bytes as f64),
            // Gauges: orders-1 carries what it reached before the exporter.
            (series("fjord_log_start_offset", &orders_0), 4.0),
            (series("fjord_log_end_offset", &orders_0), 10.0),
            (series("fjord_log_high_watermark", &orders_0), 10.0),
            (series("fjord_log_last_stable_offset", &orders_0), 10.0),
            (series("fjord_log_size_bytes", &orders_0), orders0_bytes),
            (series("fjord_log_segments", &orders_0), 1.0),
            (series("fjord_log_start_offset", &orders_1), 0.0),
            (series("fjord_log_end_offset", &orders_1), 3.0),
            (series("fjord_log_size_bytes", &orders_1), orders1_bytes as f64),
            // A partition nobody touched since the exporter came, through the background pass.
            (series("fjord_log_end_offset", &idle), 0.0),
            (series("fjord_log_size_bytes", &idle), 0.0),
            // Two aborted records, their marker, the committed record and its marker.
            (series("fjord_log_append_records_total", &payments), 3.0),
            (series("fjord_log_fetch_records_total", &payments), 3.0),
            (series("fjord_log_fetch_bytes_total", &payments), payments_bytes),
            (series("fjord_log_end_offset", &payments), 5.0),
            (series("fjord_log_last_stable_offset", &payments), 5.0),
            (series("fjord_log_size_bytes", &payments), payments_bytes),
            // Clients, groups and transactions.
            (series("fjord_producer_records_total", &[("topic", "orders")]), 10.0),
            (series("fjord_producer_records_total", &[("topic", "payments")]), 3.0),
            (series("fjord_consumer_records_total", &[("client", "billing-1")]), 13.0),
            (series("fjord_consumer_lag", &lag("0")), 0.0),
            (series("fjord_consumer_lag", &lag("1")), 0.0),
            (series("fjord_group_rebalances_total", &[("group", "billing")]), 1.0),
            (series("fjord_group_offset_commits_total", &[("group", "billing")]), 2.0),
            (series("fjord_transactions_total", &[("result", "abort")]), 1.0),
            (series("fjord_transactions_total", &[("result", "commit")]), 1.0),
            // `_seconds` histograms are Prometheus histograms.
            (series("fjord_consumer_commit_latency_seconds_count", &[]), 1.0),
            (series("fjord_producer_request_latency_seconds_count", &[]), 13.0),
            (
                series("fjord_producer_transaction_commit_seconds_count", &[("result", "abort")]),
                1.0,
            ),
        ],
    );
    let commit_buckets: Vec<_> = samples
        .iter()
        .filter(|((name, _), _)| name == "fjord_consumer_commit_latency_seconds_bucket")
        .map(|((_, labels), count)| (labels["le"].clone(), *count))
        .collect();
    assert!(commit_buckets.contains(&("+Inf".to_string(), 1.0)), "{commit_buckets:?}");
    assert!(commit_buckets.contains(&("60".to_string(), 1.0)), "{commit_buckets:?}");

    // Descriptions and types come with the page.
    let page = exporter.render();
    for line in [
        "# TYPE fjord_log_append_bytes_total counter",
        "# TYPE fjord_log_end_offset gauge",
        "# TYPE fjord_consumer_commit_latency_seconds histogram",
        "# HELP fjord_log_end_offset The partition's log end offset (next offset to assign)",
        "# HELP fjord_transactions_total Transactions the transaction coordinator completed",
    ] {
        assert!(page.lines().any(|l| l.starts_with(line)), "no `{line}` in\n{page}");
    }
    consumer.close().await.unwrap();
    reader.close().await.unwrap();
    producer.close().await.unwrap();
    txn.close().await.unwrap();
    broker.shutdown().await.unwrap();
}

#[test]
fn a_port_in_use_or_port_zero_is_refused_before_anything_is_installed() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = install_prometheus_exporter(addr).unwrap_err();
    assert!(matches!(&err, MetricsError::Listen { addr: a, .. } if *a == addr), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&addr.to_string()) && message.contains("pick another"), "{message}");

    let ephemeral: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let err = install_prometheus_exporter(ephemeral).unwrap_err();
    assert!(matches!(err, MetricsError::EphemeralPort { .. }), "{err:?}");
    assert!(err.to_string().contains("give a fixed port"), "{err}");
}
