//! The runtime on the real embedded broker: end-to-end pipelines, repartitioning, several
//! stream threads, restarts resuming from committed offsets, and the dead-letter topic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord_broker::{
    Admin, Broker, BrokerConfig, Consumer, ConsumerConfig, ConsumerRecord, NewTopic, OffsetReset,
    OffsetSpec, Producer, ProducerConfig, ProducerRecord,
};
use fjord_log::TopicPartition;
use fjord_streams::{
    Consumed, EmbeddedBackend, ErrorAction, Materialized, Produced, Serdes, Streams,
    StreamsBuilder, StreamsConfig, StreamsState,
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

async fn create_topics(admin: &Admin, names: &[&str], partitions: i32) {
    for name in names {
        admin.create_topic(NewTopic::new(*name, partitions)).await.unwrap();
    }
}

async fn produce(broker: &Broker, topic: &str, records: &[(String, String)]) {
    let producer = Producer::new(broker, ProducerConfig::default()).unwrap();
    for (k, v) in records {
        producer.send(ProducerRecord::new(topic, v.as_bytes()).key(k.as_bytes())).await.unwrap();
    }
    producer.close().await.unwrap();
}

/// A consumer outside any group, assigned every partition of `topic` from the beginning.
fn from_beginning(broker: &Broker, topic: &str) -> Consumer {
    let consumer = Consumer::new(
        broker,
        ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() },
    )
    .unwrap();
    let partitions = broker.logs().topic(topic).unwrap().partition_count();
    consumer
        .assign(&(0..partitions).map(|p| TopicPartition::new(topic, p)).collect::<Vec<_>>())
        .unwrap();
    consumer
}

/// Reads `topic` from the beginning until `n` records arrived.
async fn read_n(broker: &Broker, topic: &str, n: usize) -> Vec<ConsumerRecord> {
    let consumer = from_beginning(broker, topic);
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
async fn repartitioning_keeps_every_record_groups_keys_by_partition_and_purges_what_it_consumed() {
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
    // Purge the repartition topic at every commit.
    let config =
        StreamsConfig { repartition_purge_interval: Duration::ZERO, ..config("rekey", dir.path()) };
    let mut streams =
        Streams::new(topology, Arc::new(EmbeddedBackend::new(&broker)), config).unwrap();
    streams.start().await.unwrap();
    // The repartition topic was created with the source's partition count.
    let repartition = "rekey-KSTREAM-REPARTITION-0000000002-repartition";
    let internal = broker.logs().topic(repartition).unwrap();
    assert_eq!(internal.partition_count(), 4);
    let out = read_n(&broker, "out", 2000).await;
    // Once its records are consumed and committed, they are deleted: every partition of the
    // repartition topic ends up empty, its log start offset at its end.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut written = 0;
    for p in 0..4 {
        let tp = TopicPartition::new(repartition, p);
        let end = broker.list_offset(&tp, OffsetSpec::Latest).unwrap().offset;
        while broker.list_offset(&tp, OffsetSpec::Earliest).unwrap().offset < end {
            assert!(Instant::now() < deadline, "partition {p} of the repartition topic not purged");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        written += end;
    }
    assert_eq!(written, 2000, "every record went through the repartition topic");
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
    create_topics(&admin, &["in", "out", "dlq"], 1).await;
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

/// Reads `topic` from the beginning until the latest value of every key in `expected` is
/// what it expects (table updates: earlier values of a key come and go).
async fn await_latest(broker: &Broker, topic: &str, expected: &BTreeMap<String, i64>) {
    let consumer = from_beginning(broker, topic);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut latest: BTreeMap<String, i64> = BTreeMap::new();
    while &latest != expected {
        assert!(Instant::now() < deadline, "{topic}: latest values {latest:?}, want {expected:?}");
        for r in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            let count = i64::from_be_bytes(r.value.as_deref().unwrap().try_into().unwrap());
            latest.insert(text(&r.key), count);
        }
    }
}

fn word_count() -> fjord_streams::Topology {
    let builder = StreamsBuilder::new();
    builder
        .stream("words", Consumed::with(Serdes::string(), Serdes::string()))
        .group_by_key()
        .count(Materialized::named("counts"))
        .to_stream()
        .to("counts");
    builder.build().unwrap()
}

fn words(range: std::ops::Range<u32>) -> Vec<(String, String)> {
    range.map(|i| (format!("w{}", i % 10), i.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_survive_restarts_from_local_rocksdb_and_are_rebuilt_from_the_changelog() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let admin = Admin::new(&broker);
    admin.create_topic(NewTopic::new("words", 3)).await.unwrap();
    admin.create_topic(NewTopic::new("counts", 3)).await.unwrap();
    let expect = |n: i64| (0..10).map(|i| (format!("w{i}"), n)).collect::<BTreeMap<_, _>>();
    let start = || async {
        let mut streams = Streams::new(
            word_count(),
            Arc::new(EmbeddedBackend::new(&broker)),
            config("wordcount", dir.path()),
        )
        .unwrap();
        streams.start().await.unwrap();
        streams.wait_for_state(StreamsState::Running, Duration::from_secs(20)).await.unwrap();
        streams
    };
    produce(&broker, "words", &words(0..300)).await;
    let streams = start().await;
    await_latest(&broker, "counts", &expect(30)).await;
    let store = streams.key_value_store("counts", Serdes::string(), Serdes::i64()).unwrap();
    assert_eq!(store.tasks().len(), 3);
    streams.close().await.unwrap();
    // The stores are RocksDB databases in the state directory, one per task.
    for p in 0..3 {
        assert!(dir.path().join(format!("state/0_{p}/counts/CURRENT")).exists());
    }
    // A restart keeps the local state: nothing to replay, counts go on.
    produce(&broker, "words", &words(300..400)).await;
    let streams = start().await;
    assert_eq!(streams.records_restored(), 0, "local stores were up to date");
    await_latest(&broker, "counts", &expect(40)).await;
    // Interactive queries see the committed state.
    let store = streams.key_value_store("counts", Serdes::string(), Serdes::i64()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.get(&"w3".to_string()).unwrap() != Some(40) {
        assert!(Instant::now() < deadline, "the store did not reach 40");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    streams.close().await.unwrap();
    // Without its state directory, the application rebuilds every store from its changelog.
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    produce(&broker, "words", &words(400..410)).await;
    let streams = start().await;
    assert!(streams.records_restored() >= 10, "the changelogs were replayed");
    await_latest(&broker, "counts", &expect(41)).await;
    let all =
        streams.key_value_store("counts", Serdes::string(), Serdes::i64()).unwrap().all().unwrap();
    streams.close().await.unwrap();
    assert_eq!(all.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_topics_that_are_not_co_partitioned_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let admin = Admin::new(&broker);
    admin.create_topic(NewTopic::new("orders", 3)).await.unwrap();
    admin.create_topic(NewTopic::new("customers", 2)).await.unwrap();
    let builder = StreamsBuilder::new();
    let customers = builder.table(
        "customers",
        Consumed::with(Serdes::string(), Serdes::string()),
        Materialized::named("customers"),
    );
    builder
        .stream("orders", Consumed::with(Serdes::string(), Serdes::string()))
        .join(&customers, |o, c| format!("{o}:{c}"))
        .to("out");
    let mut streams = Streams::new(
        builder.build().unwrap(),
        Arc::new(EmbeddedBackend::new(&broker)),
        config("copartition", dir.path()),
    )
    .unwrap();
    let err = streams.start().await.unwrap_err().to_string();
    assert!(
        err.contains("not co-partitioned")
            && err.contains("`customers` has 2")
            && err.contains("`orders` has 3"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocksdb_memory_stays_within_the_budget_under_a_large_key_space() {
    const BUDGET: usize = 8 << 20;
    const KEYS: usize = 150_000;
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let admin = Admin::new(&broker);
    admin.create_topic(NewTopic::new("events", 2)).await.unwrap();
    admin.create_topic(NewTopic::new("latest", 2)).await.unwrap();
    // 150,000 keys with 200-byte values: about 35 MB of state against an 8 MiB budget.
    let input: Vec<(String, String)> =
        (0..KEYS).map(|i| (format!("key-{i:08}"), format!("{i:0>200}"))).collect();
    produce(&broker, "events", &input).await;
    let builder = StreamsBuilder::new();
    builder
        .stream("events", Consumed::with(Serdes::string(), Serdes::string()))
        .group_by_key()
        .reduce(|_, newer| newer, Materialized::named("latest"))
        .to_stream()
        .to("latest");
    let mut streams = Streams::new(
        builder.build().unwrap(),
        Arc::new(EmbeddedBackend::new(&broker)),
        StreamsConfig {
            rocksdb_memory: fjord_streams::MemoryConfig {
                total_bytes: BUDGET,
                write_buffer_fraction: 0.5,
            },
            cache_max_bytes: 1 << 20,
            ..config("memory", dir.path())
        },
    )
    .unwrap();
    streams.start().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut peak = 0;
    loop {
        let usage = streams.rocksdb_memory_usage();
        peak = peak.max(usage.block_cache_bytes);
        // The cache is not in strict-capacity mode: pinned blocks may push it briefly over.
        assert!(usage.block_cache_bytes <= BUDGET + BUDGET / 20, "{usage:?}");
        if streams.records_processed() >= KEYS as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "processed {}", streams.records_processed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    streams.close().await.unwrap();
    assert!(peak > 0, "the stores used the shared cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_counts_are_queryable_by_key_and_time_range() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let admin = Admin::new(&broker);
    admin.create_topic(NewTopic::new("clicks", 2)).await.unwrap();
    admin.create_topic(NewTopic::new("clicks-per-second", 2)).await.unwrap();
    // Two one-second windows for each of two users: 3 clicks at 1.x s, 2 at 5.x s.
    let producer = Producer::new(&broker, ProducerConfig::default()).unwrap();
    for user in ["ann", "bob"] {
        for ts in [1_000, 1_200, 1_900, 5_000, 5_500] {
            let record = ProducerRecord::new("clicks", b"x").key(user.as_bytes()).timestamp(ts);
            producer.send(record).await.unwrap();
        }
    }
    producer.close().await.unwrap();
    let builder = StreamsBuilder::new();
    builder
        .stream("clicks", Consumed::with(Serdes::string(), Serdes::string()))
        .group_by_key()
        .windowed_by(fjord_streams::TimeWindows::of_size_and_grace(
            Duration::from_secs(1),
            Duration::from_secs(60),
        ))
        .count(Materialized::named("per-second"))
        .to_stream()
        .to_with(
            "clicks-per-second",
            Produced::with(
                Serdes::windowed(Serdes::string(), 1_000),
                Serdes::option(Serdes::i64()),
            ),
        );
    let mut streams = Streams::new(
        builder.build().unwrap(),
        Arc::new(EmbeddedBackend::new(&broker)),
        config("windows", dir.path()),
    )
    .unwrap();
    streams.start().await.unwrap();
    let store = streams.window_store("per-second", Serdes::string(), Serdes::i64()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    // The store shows the last commit: wait for the one that holds all of Bob's clicks.
    while store.fetch(&"bob".to_string(), 0, i64::MAX).unwrap() != vec![(1_000, 3), (5_000, 2)] {
        assert!(Instant::now() < deadline, "{:?}", store.fetch(&"bob".to_string(), 0, i64::MAX));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.fetch(&"ann".to_string(), 2_000, 6_000).unwrap(), vec![(5_000, 2)]);
    assert_eq!(store.fetch(&"carl".to_string(), 0, i64::MAX).unwrap(), vec![]);
    assert!(streams.key_value_store("per-second", Serdes::string(), Serdes::i64()).is_err());
    streams.close().await.unwrap();
}

/// Clicks of users at the given times after `base` (a changelog's time-based retention would
/// delete records from 1970).
async fn produce_clicks(broker: &Broker, topic: &str, base: i64, records: &[(&str, i64)]) {
    let records: Vec<(&str, &str, i64)> =
        records.iter().map(|(user, ts)| (*user, "x", base + ts)).collect();
    produce_at(broker, topic, &records, None).await;
}

/// Reads session-windowed counts from the beginning until the table they leave (the latest
/// value per windowed key, tombstones deleting) is `expected`, in times after `base`.
async fn await_sessions(
    broker: &Broker,
    topic: &str,
    base: i64,
    expected: &BTreeMap<(String, i64, i64), i64>,
) {
    let serde = Serdes::session_windowed(Serdes::string());
    let consumer = from_beginning(broker, topic);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut table = BTreeMap::new();
    while &table != expected {
        assert!(Instant::now() < deadline, "{topic}: sessions {table:?}, want {expected:?}");
        for r in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            let windowed = serde.deserialize(r.key.as_deref().unwrap()).unwrap();
            let key = (windowed.key, windowed.window.start - base, windowed.window.end - base);
            match r.value.as_deref() {
                Some(v) => table.insert(key, i64::from_be_bytes(v.try_into().unwrap())),
                None => table.remove(&key),
            };
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_counts_survive_a_restart_and_merge_with_restored_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let admin = Admin::new(&broker);
    admin.create_topic(NewTopic::new("clicks", 2)).await.unwrap();
    admin.create_topic(NewTopic::new("sessions", 2)).await.unwrap();
    let topology = || {
        let builder = StreamsBuilder::new();
        builder
            .stream("clicks", Consumed::with(Serdes::string(), Serdes::string()))
            .group_by_key()
            .windowed_by(fjord_streams::SessionWindows::of_inactivity_gap_and_grace(
                Duration::from_secs(1),
                Duration::from_secs(60),
            ))
            .count(Materialized::named("sessions"))
            .to_stream()
            .to_with(
                "sessions",
                Produced::with(
                    Serdes::session_windowed(Serdes::string()),
                    Serdes::option(Serdes::i64()),
                ),
            );
        builder.build().unwrap()
    };
    let start = || async {
        let mut streams = Streams::new(
            topology(),
            Arc::new(EmbeddedBackend::new(&broker)),
            config("sessions", dir.path()),
        )
        .unwrap();
        streams.start().await.unwrap();
        streams.wait_for_state(StreamsState::Running, Duration::from_secs(20)).await.unwrap();
        streams
    };
    let s = |user: &str, start: i64, end: i64| (user.to_string(), start, end);
    let base =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as i64;
    // Two sessions each: ann's [1000, 1500] and [5000, 5000], bob's [1000, 1000] and
    // [3000, 3200].
    produce_clicks(
        &broker,
        "clicks",
        base,
        &[
            ("ann", 1_000),
            ("ann", 1_500),
            ("bob", 1_000),
            ("bob", 3_000),
            ("ann", 5_000),
            ("bob", 3_200),
        ],
    )
    .await;
    let streams = start().await;
    await_sessions(
        &broker,
        "sessions",
        base,
        &BTreeMap::from([
            (s("ann", 1_000, 1_500), 2),
            (s("ann", 5_000, 5_000), 1),
            (s("bob", 1_000, 1_000), 1),
            (s("bob", 3_000, 3_200), 2),
        ]),
    )
    .await;
    streams.close().await.unwrap();
    for p in 0..2 {
        assert!(dir.path().join(format!("state/0_{p}/sessions/CURRENT")).exists());
    }
    // After the restart, records bridge the stored sessions: ann's at 2500, 3500 and 4500
    // join her two sessions into one (the restarted task's stream time is behind their
    // end), bob's at 2000 joins his.
    produce_clicks(
        &broker,
        "clicks",
        base,
        &[("ann", 2_500), ("ann", 3_500), ("ann", 4_500), ("bob", 2_000)],
    )
    .await;
    let streams = start().await;
    assert_eq!(streams.records_restored(), 0, "local stores were up to date");
    let expected = BTreeMap::from([(s("ann", 1_000, 5_000), 6), (s("bob", 1_000, 3_200), 4)]);
    await_sessions(&broker, "sessions", base, &expected).await;
    // Interactive queries see the merged sessions once they are committed.
    let store = streams.session_store("sessions", Serdes::string(), Serdes::i64()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let want = vec![(fjord_streams::Window { start: base + 1_000, end: base + 5_000 }, 6)];
    while store.fetch(&"ann".to_string()).unwrap() != want {
        assert!(Instant::now() < deadline, "{:?}", store.fetch(&"ann".to_string()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(streams.window_store("sessions", Serdes::string(), Serdes::i64()).is_err());
    streams.close().await.unwrap();
    // Rebuilt from the changelog alone, the sessions are the same.
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    produce_clicks(&broker, "clicks", base, &[("bob", 4_000)]).await;
    let streams = start().await;
    assert!(streams.records_restored() > 0, "the changelog was replayed");
    let mut expected = expected;
    expected.remove(&s("bob", 1_000, 3_200));
    expected.insert(s("bob", 1_000, 4_000), 5);
    await_sessions(&broker, "sessions", base, &expected).await;
    streams.close().await.unwrap();
}

/// Two instances of one application on one broker, each with its own state directory.
async fn start_instance(
    broker: &Broker,
    topology: fjord_streams::Topology,
    app: &str,
    dir: &std::path::Path,
) -> Streams {
    let mut streams = Streams::new(
        topology,
        Arc::new(EmbeddedBackend::new(broker)),
        StreamsConfig { state_dir: dir.to_path_buf(), ..config(app, dir) },
    )
    .unwrap();
    streams.start().await.unwrap();
    streams
}

fn enrich_orders() -> fjord_streams::Topology {
    let builder = StreamsBuilder::new();
    let customers = builder.global_table(
        "customers",
        Consumed::with(Serdes::string(), Serdes::string()),
        Materialized::named("customers"),
    );
    builder
        .stream("orders", Consumed::with(Serdes::string(), Serdes::string()))
        .join_global(
            &customers,
            |_, customer| customer.clone(),
            |order, name| format!("{order}:{name}"),
        )
        .to("enriched");
    builder.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_table_is_held_in_full_by_every_instance_and_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let admin = Admin::new(&broker);
    // The table's topic has more partitions than the stream's: no co-partitioning needed.
    admin.create_topic(NewTopic::new("customers", 5)).await.unwrap();
    admin.create_topic(NewTopic::new("orders", 2)).await.unwrap();
    admin.create_topic(NewTopic::new("enriched", 2)).await.unwrap();
    let customers = |range: std::ops::Range<u32>| -> Vec<(String, String)> {
        range.map(|i| (format!("c{i}"), format!("name-{i}"))).collect()
    };
    produce(&broker, "customers", &customers(0..20)).await;
    // A later value replaces an earlier one; a tombstone deletes the row.
    produce(&broker, "customers", &[("c3".into(), "renamed-3".into())]).await;
    let producer = Producer::new(&broker, ProducerConfig::default()).unwrap();
    let tombstone = ProducerRecord { value: None, ..ProducerRecord::new("customers", b"") };
    producer.send(tombstone.key(b"c4")).await.unwrap();
    producer.close().await.unwrap();
    let mut table: BTreeMap<String, String> = customers(0..20).into_iter().collect();
    table.insert("c3".into(), "renamed-3".into());
    table.remove("c4");

    let a = start_instance(&broker, enrich_orders(), "enrich", &dir.path().join("a")).await;
    let b = start_instance(&broker, enrich_orders(), "enrich", &dir.path().join("b")).await;
    // start() returns once the global store is bootstrapped: every row is there at once, on
    // every instance, whichever stream partitions it gets.
    for streams in [&a, &b] {
        let store = streams.key_value_store("customers", Serdes::string(), Serdes::string());
        let rows: BTreeMap<String, String> = store.unwrap().all().unwrap().into_iter().collect();
        assert_eq!(rows, table);
        assert_eq!(streams.records_restored(), 22, "20 rows, an update and a tombstone");
    }
    for streams in [&a, &b] {
        streams.wait_for_state(StreamsState::Running, Duration::from_secs(20)).await.unwrap();
    }
    // Orders for customers c0..c24: those of c4 (deleted) and c20.. (unknown) are dropped.
    let orders: Vec<(String, String)> =
        (0..100).map(|i| (format!("o{i}"), format!("c{}", i % 25))).collect();
    produce(&broker, "orders", &orders).await;
    let expected: BTreeMap<String, String> = orders
        .iter()
        .filter_map(|(o, c)| table.get(c).map(|name| (o.clone(), format!("{c}:{name}"))))
        .collect();
    let out = read_n(&broker, "enriched", expected.len()).await;
    let got: BTreeMap<String, String> =
        out.iter().map(|r| (text(&r.key), text(&r.value))).collect();
    assert_eq!(got, expected);
    // The global thread keeps the store up to date after the bootstrap.
    produce(&broker, "customers", &[("c50".into(), "late".into())]).await;
    let store = b.key_value_store("customers", Serdes::string(), Serdes::string()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.get(&"c50".to_string()).unwrap().is_none() {
        assert!(Instant::now() < deadline, "the global store did not see the new row");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.close().await.unwrap();
    b.close().await.unwrap();
    assert!(dir.path().join("a/global/customers/CURRENT").exists());

    // A restart with the local state kept reads only what was appended since.
    produce(&broker, "customers", &customers(20..25)).await;
    let a = start_instance(&broker, enrich_orders(), "enrich", &dir.path().join("a")).await;
    assert_eq!(a.records_restored(), 5, "only the five new rows were read");
    let rows = a.key_value_store("customers", Serdes::string(), Serdes::string()).unwrap();
    assert_eq!(rows.all().unwrap().len(), table.len() + 1 + 5);
    assert_eq!(rows.get(&"c22".to_string()).unwrap(), Some("name-22".to_string()));
    assert!(rows.tasks().is_empty(), "a global store belongs to no task");
    a.close().await.unwrap();
}

/// Closing wakes the stream threads' and the global thread's polls: with a minute-long poll
/// timeout, `close` would otherwise wait a minute. And a poll that gets an assignment returns
/// with it: the application is `Running` long before the poll timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_ends_the_waiting_polls_of_stream_and_global_threads() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let admin = Admin::new(&broker);
    create_topics(&admin, &["customers", "orders", "enriched"], 1).await;
    let config = StreamsConfig {
        poll_timeout: Duration::from_secs(60),
        num_stream_threads: 2,
        ..config("idle", dir.path())
    };
    let mut streams =
        Streams::new(enrich_orders(), Arc::new(EmbeddedBackend::new(&broker)), config).unwrap();
    streams.start().await.unwrap();
    streams.wait_for_state(StreamsState::Running, Duration::from_secs(20)).await.unwrap();
    // Nothing arrives: every thread waits in its poll.
    tokio::time::timeout(Duration::from_secs(30), streams.close())
        .await
        .expect("close waited for the polls to time out")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_global_table_topic_is_reported_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    Admin::new(&broker).create_topic(NewTopic::new("orders", 1)).await.unwrap();
    let mut streams = Streams::new(
        enrich_orders(),
        Arc::new(EmbeddedBackend::new(&broker)),
        config("no-customers", dir.path()),
    )
    .unwrap();
    let err = streams.start().await.unwrap_err().to_string();
    assert!(err.contains("topic `customers` of global table `customers` does not exist"), "{err}");
    assert_eq!(streams.state(), StreamsState::Error);
    assert!(streams.error().is_some());
}

/// Sends `(key, value, timestamp)` records, to `partition` if given (else by key).
async fn produce_at(
    broker: &Broker,
    topic: &str,
    records: &[(&str, &str, i64)],
    partition: Option<u32>,
) {
    let producer = Producer::new(broker, ProducerConfig::default()).unwrap();
    for (k, v, t) in records {
        let mut record = ProducerRecord::new(topic, v.as_bytes()).key(k.as_bytes()).timestamp(*t);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        producer.send(record).await.unwrap();
    }
    producer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_stream_join_restarts_with_its_buffered_records() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let admin = Admin::new(&broker);
    create_topics(&admin, &["clicks", "views", "joined"], 2).await;
    let topology = || {
        let builder = StreamsBuilder::new();
        let views = builder.stream("views", Consumed::with(Serdes::string(), Serdes::string()));
        builder
            .stream("clicks", Consumed::with(Serdes::string(), Serdes::string()))
            .left_join_stream(
                &views,
                |c, v| format!("{c}+{}", v.map_or("none", String::as_str)),
                fjord_streams::JoinWindows::of_time_difference_with_no_grace(Duration::from_secs(
                    1,
                )),
                fjord_streams::StreamJoined::default().with_store_name("clicks-views"),
            )
            .to("joined");
        builder.build().unwrap()
    };
    let start = || async {
        let mut streams = Streams::new(
            topology(),
            Arc::new(EmbeddedBackend::new(&broker)),
            config("join", dir.path()),
        )
        .unwrap();
        streams.start().await.unwrap();
        streams.wait_for_state(StreamsState::Running, Duration::from_secs(20)).await.unwrap();
        streams
    };
    let keys: Vec<String> = (0..12).map(|i| format!("k{i}")).collect();
    let clicks: Vec<(&str, &str, i64)> =
        keys.iter().map(|k| (k.as_str(), "click", 1_000)).collect();
    let views = |range: std::ops::Range<usize>, t: i64| -> Vec<(&str, &str, i64)> {
        keys[range].iter().map(|k| (k.as_str(), "view", t)).collect()
    };
    // First run: every click is buffered, five of them join at once.
    produce_at(&broker, "clicks", &clicks, None).await;
    produce_at(&broker, "views", &views(0..5, 1_000), None).await;
    let streams = start().await;
    read_n(&broker, "joined", 5).await;
    streams.close().await.unwrap();
    // A restart on the local RocksDB buffers: clicks from the first run still join.
    let streams = start().await;
    assert_eq!(streams.records_restored(), 0, "the local stores were up to date");
    produce_at(&broker, "views", &views(5..8, 1_500), None).await;
    read_n(&broker, "joined", 8).await;
    streams.close().await.unwrap();
    // Without the state directory, the buffers come back from their changelogs.
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    let streams = start().await;
    assert!(streams.records_restored() >= 12, "the join buffers were replayed");
    produce_at(&broker, "views", &views(8..10, 1_900), None).await;
    // Stream time moves past the windows in both tasks: the clicks that never joined come
    // out, once.
    for p in 0..2 {
        produce_at(&broker, "clicks", &[("tick", "tick", 10_000)], Some(p)).await;
    }
    let out = read_n(&broker, "joined", 12).await;
    streams.close().await.unwrap();
    let got: BTreeSet<(String, String)> =
        out.iter().map(|r| (text(&r.key), text(&r.value))).collect();
    let want: BTreeSet<(String, String)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), if i < 10 { "click+view" } else { "click+none" }.to_string()))
        .collect();
    assert_eq!(out.len(), 12, "no result twice: {got:?}");
    assert_eq!(got, want);
}
