//! The runtime on the real embedded broker: end-to-end pipelines, repartitioning, several
//! stream threads, restarts resuming from committed offsets, and the dead-letter topic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord_broker::{
    Admin, Broker, BrokerConfig, Consumer, ConsumerConfig, ConsumerRecord, NewTopic, OffsetReset,
    Producer, ProducerConfig, ProducerRecord,
};
use fjord_log::TopicPartition;
use fjord_streams::{
    Consumed, EmbeddedBackend, ErrorAction, Produced, Serdes, Streams, StreamsBuilder,
    StreamsConfig, StreamsState,
};

async fn broker(dir: &std::path::Path) -> Broker {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut config = BrokerConfig::new(dir);
    config.offsets_topic_num_partitions = 4;
    config.transaction_state_log_num_partitions = 2;
    config.group.min_session_timeout = Duration::from_millis(100);
    Broker::open(config).await.unwrap()
}

async fn produce(broker: &Broker, topic: &str, records: &[(String, String)]) {
    let producer = Producer::new(broker, ProducerConfig::default()).unwrap();
    for (k, v) in records {
        producer.send(ProducerRecord::new(topic, v.as_bytes()).key(k.as_bytes())).await.unwrap();
    }
    producer.close().await.unwrap();
}

/// Reads `topic` from the beginning until `n` records arrived.
async fn read_n(broker: &Broker, topic: &str, n: usize) -> Vec<ConsumerRecord> {
    let consumer = Consumer::new(
        broker,
        ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() },
    )
    .unwrap();
    let partitions = broker.logs().topic(topic).unwrap().partition_count();
    consumer
        .assign(&(0..partitions).map(|p| TopicPartition::new(topic, p)).collect::<Vec<_>>())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while out.len() < n {
        assert!(Instant::now() < deadline, "{topic}: {} of {n} records arrived", out.len());
        out.extend(consumer.poll(Duration::from_millis(200)).await.unwrap());
    }
    out
}

fn text(b: &Option<bytes::Bytes>) -> String {
    String::from_utf8(b.as_ref().unwrap().to_vec()).unwrap()
}

fn config(app: &str, dir: &std::path::Path) -> StreamsConfig {
    StreamsConfig {
        commit_interval: Some(Duration::from_millis(50)),
        state_dir: dir.join("state"),
        ..StreamsConfig::new(app)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_pipeline_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let admin = Admin::new(&broker);
    admin.create_topic(NewTopic::new("in", 3)).await.unwrap();
    admin.create_topic(NewTopic::new("out", 3)).await.unwrap();
    let input: Vec<(String, String)> =
        (0..3000).map(|i| (format!("k{}", i % 50), i.to_string())).collect();
    produce(&broker, "in", &input).await;
    let builder = StreamsBuilder::new();
    builder
        .stream("in", Consumed::with(Serdes::string(), Serdes::string()))
        .filter(|_, v| v.parse::<u32>().unwrap() % 3 != 0)
        .map_values(|v| format!("v{v}"))
        .to("out");
    let mut streams = Streams::new(
        builder.build().unwrap(),
        Arc::new(EmbeddedBackend::new(&broker)),
        config("pipeline", dir.path()),
    )
    .unwrap();
    streams.start().await.unwrap();
    streams.wait_for_state(StreamsState::Running, Duration::from_secs(20)).await.unwrap();
    let out = read_n(&broker, "out", 2000).await;
    let values: BTreeSet<String> = out.iter().map(|r| text(&r.value)).collect();
    let expected: BTreeSet<String> =
        (0..3000).filter(|i| i % 3 != 0).map(|i| format!("v{i}")).collect();
    assert_eq!(values, expected);
    // Keys keep their partitions: the sink partitions by murmur2 of the key, like the source.
    for r in &out {
        assert_eq!(
            r.partition,
            fjord_log::partitioner::partition_for_key(r.key.as_ref().unwrap(), 3)
        );
    }
    streams.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repartitioning_keeps_every_record_and_groups_keys_by_partition() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let admin = Admin::new(&broker);
    admin.create_topic(NewTopic::new("in", 4)).await.unwrap();
    admin.create_topic(NewTopic::new("out", 4)).await.unwrap();
    let input: Vec<(String, String)> =
        (0..2000).map(|i| (format!("k{i}"), format!("customer-{}", i % 13))).collect();
    produce(&broker, "in", &input).await;
    let builder = StreamsBuilder::new();
    builder
        .stream("in", Consumed::with(Serdes::string(), Serdes::string()))
        .select_key(|_, customer| customer.clone())
        .repartition()
        .to("out");
    let topology = builder.build().unwrap();
    let mut streams = Streams::new(
        topology,
        Arc::new(EmbeddedBackend::new(&broker)),
        config("rekey", dir.path()),
    )
    .unwrap();
    streams.start().await.unwrap();
    // The repartition topic was created with the source's partition count.
    let internal = broker.logs().topic("rekey-KSTREAM-REPARTITION-0000000002-repartition").unwrap();
    assert_eq!(internal.partition_count(), 4);
    let out = read_n(&broker, "out", 2000).await;
    assert_eq!(out.len(), 2000);
    let mut partitions_of: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for r in &out {
        assert_eq!(text(&r.key), text(&r.value));
        partitions_of.entry(text(&r.key)).or_default().insert(r.partition);
    }
    assert_eq!(partitions_of.len(), 13);
    assert!(partitions_of.values().all(|p| p.len() == 1), "each customer on one partition");
    streams.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_threads_split_the_tasks_and_a_restart_resumes_from_committed_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let admin = Admin::new(&broker);
    admin.create_topic(NewTopic::new("in", 6)).await.unwrap();
    admin.create_topic(NewTopic::new("out", 6)).await.unwrap();
    let first: Vec<(String, String)> =
        (0..1200).map(|i| (format!("k{i}"), i.to_string())).collect();
    produce(&broker, "in", &first).await;
    let build = || {
        let builder = StreamsBuilder::new();
        builder.stream("in", Consumed::with(Serdes::string(), Serdes::string())).to("out");
        builder.build().unwrap()
    };
    let mut streams = Streams::new(
        build(),
        Arc::new(EmbeddedBackend::new(&broker)),
        StreamsConfig { num_stream_threads: 3, ..config("restart", dir.path()) },
    )
    .unwrap();
    streams.start().await.unwrap();
    streams.wait_for_state(StreamsState::Running, Duration::from_secs(20)).await.unwrap();
    read_n(&broker, "out", 1200).await;
    // Three members of the application's group, two partitions each.
    let group = admin.describe_group("restart").unwrap();
    assert_eq!(group.members.len(), 3);
    streams.close().await.unwrap();
    let committed: i64 =
        admin.list_group_offsets("restart").unwrap().values().map(|o| o.offset).sum();
    assert_eq!(committed, 1200, "a clean stop commits everything processed");
    let written: i64 = (0..6)
        .map(|p| {
            broker
                .list_offset(&TopicPartition::new("out", p), fjord_broker::OffsetSpec::Latest)
                .unwrap()
                .offset
        })
        .sum();
    assert_eq!(written, 1200, "nothing was written twice before the stop");
    // More input while the application is down; a restart processes only that.
    let second: Vec<(String, String)> =
        (1200..1500).map(|i| (format!("k{i}"), i.to_string())).collect();
    produce(&broker, "in", &second).await;
    let mut streams = Streams::new(
        build(),
        Arc::new(EmbeddedBackend::new(&broker)),
        config("restart", dir.path()),
    )
    .unwrap();
    streams.start().await.unwrap();
    let out = read_n(&broker, "out", 1500).await;
    let values: Vec<u32> = out.iter().map(|r| text(&r.value).parse().unwrap()).collect();
    let distinct: BTreeSet<u32> = values.iter().copied().collect();
    assert_eq!(distinct, (0..1500).collect(), "nothing lost");
    assert_eq!(values.len(), 1500, "nothing processed twice after a clean stop");
    streams.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_go_to_the_dead_letter_topic_with_their_source_in_headers() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let admin = Admin::new(&broker);
    for t in ["in", "out", "dlq"] {
        admin.create_topic(NewTopic::new(t, 1)).await.unwrap();
    }
    produce(
        &broker,
        "in",
        &[
            ("a".into(), "{\"n\":1}".into()),
            ("b".into(), "not json".into()),
            ("c".into(), "{\"n\":3}".into()),
        ],
    )
    .await;
    let builder = StreamsBuilder::new();
    builder
        .stream("in", Consumed::with(Serdes::string(), Serdes::json::<serde_json::Value>()))
        .map_values(|v| v["n"].as_i64().unwrap_or(-1))
        .to_with("out", Produced::with(Serdes::string(), Serdes::i64()));
    let mut streams = Streams::new(
        builder.build().unwrap(),
        Arc::new(EmbeddedBackend::new(&broker)),
        StreamsConfig {
            deserialization_errors: ErrorAction::DeadLetter { topic: "dlq".into() },
            ..config("dlq-app", dir.path())
        },
    )
    .unwrap();
    streams.start().await.unwrap();
    let out = read_n(&broker, "out", 2).await;
    assert_eq!(out.len(), 2);
    let dead = read_n(&broker, "dlq", 1).await;
    assert_eq!(text(&dead[0].value), "not json");
    assert_eq!(text(&dead[0].key), "b");
    let header = |k: &str| {
        dead[0]
            .headers()
            .iter()
            .find(|h| h.key == k)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).to_string())
    };
    assert_eq!(header("__streams.errors.topic").as_deref(), Some("in"));
    assert_eq!(header("__streams.errors.offset").as_deref(), Some("1"));
    assert!(header("__streams.errors.message").unwrap().contains("json"));
    streams.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_record_stops_the_application_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let admin = Admin::new(&broker);
    admin.create_topic(NewTopic::new("in", 1)).await.unwrap();
    produce(&broker, "in", &[("a".into(), "oops".into())]).await;
    let builder = StreamsBuilder::new();
    builder.stream("in", Consumed::with(Serdes::string(), Serdes::i64())).to("out");
    let mut streams = Streams::new(
        builder.build().unwrap(),
        Arc::new(EmbeddedBackend::new(&broker)),
        config("fails", dir.path()),
    )
    .unwrap();
    streams.start().await.unwrap();
    let err = streams.wait_for_state(StreamsState::Running, Duration::from_secs(20)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while streams.state() != StreamsState::Error {
        assert!(Instant::now() < deadline, "the application did not stop: {err:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let message = streams.error().unwrap();
    assert!(message.contains("deserialization error") && message.contains("in-0@0"), "{message}");
    assert!(streams.close().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_source_topic_is_reported_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let builder = StreamsBuilder::new();
    builder.stream("nowhere", Consumed::with(Serdes::string(), Serdes::string())).to("out");
    let mut streams = Streams::new(
        builder.build().unwrap(),
        Arc::new(EmbeddedBackend::new(&broker)),
        config("missing", dir.path()),
    )
    .unwrap();
    let err = streams.start().await.unwrap_err();
    assert!(err.to_string().contains("source topic `nowhere` does not exist"), "{err}");
}
