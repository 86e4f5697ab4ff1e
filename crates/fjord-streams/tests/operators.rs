//! Operators on the embedded broker, with RocksDB on disk, against an independent computation
//! of the same input: flat_map_values, split into branches, map_values, merge, a re-keying
//! aggregation, a table re-grouped with subtraction (rows moving between groups and deleted)
//! and a table-table join. The driver tests check each operator record by record; this one
//! checks that they compose over real topics, repartitions, caches and commits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord_broker::{
    Admin, Broker, BrokerConfig, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, TopicPartition,
};
use fjord_streams::{
    Consumed, EmbeddedBackend, Grouped, Materialized, Produced, Serdes, Streams, StreamsBuilder,
    StreamsConfig, StreamsState,
};

const PARTITIONS: u32 = 2;
const USERS: u64 = 40;
const REGIONS: [&str; 4] = ["eu", "us", "apac", "latam"];

fn group_of(user: &str) -> String {
    format!("group-{}", user.bytes().map(u64::from).sum::<u64>() % 3)
}

fn topology() -> fjord_streams::Topology {
    let builder = StreamsBuilder::new();
    // Each event record holds several actions, `kind:amount` separated by commas.
    let actions = builder
        .stream("events", Consumed::with(Serdes::string(), Serdes::string()))
        .flat_map_values(|line: String| line.split(',').map(str::to_string).collect::<Vec<_>>());
    let branches = actions
        .split()
        .branch("buy", |_, a: &String| a.starts_with("buy:"))
        .branch("refund", |_, a: &String| a.starts_with("refund:"))
        .finish();
    let amount =
        |a: &String| a.split_once(':').and_then(|(_, n)| n.parse::<i64>().ok()).unwrap_or(0);
    let buys = branches["buy"].map_values(move |a: String| amount(&a));
    let refunds = branches["refund"].map_values(move |a: String| -amount(&a));
    // Net amount per user, and per group of users (a re-keying aggregation through a
    // repartition topic).
    let net = buys.merge(&refunds);
    net.group_by_key_with(Grouped::with(Serdes::string(), Serdes::i64()))
        .reduce(|a, b| a + b, Materialized::named("net-per-user"))
        .to_stream()
        .to_with("net-per-user", Produced::with(Serdes::string(), Serdes::option(Serdes::i64())));
    net.group_by(|user: &String, _| group_of(user), Grouped::with(Serdes::string(), Serdes::i64()))
        .reduce(|a, b| a + b, Materialized::named("net-per-group"))
        .to_stream()
        .to_with("net-per-group", Produced::with(Serdes::string(), Serdes::option(Serdes::i64())));

    // Users per region: a table re-grouped by its value, rows moving and leaving.
    let per_region = builder
        .table(
            "users",
            Consumed::with(Serdes::string(), Serdes::string()),
            Materialized::named("users"),
        )
        .group_by(
            |_, region: &String| (region.clone(), 1i64),
            Grouped::with(Serdes::string(), Serdes::i64()),
        )
        .aggregate(
            || 0i64,
            |_, v, n| n + v,
            |_, v, n| n - v,
            Materialized::named("users-per-region").with_value_serde(Serdes::i64()),
        );
    let budgets = builder.table(
        "budgets",
        Consumed::with(Serdes::string(), Serdes::i64()),
        Materialized::named("budgets"),
    );
    per_region
        .join(
            &budgets,
            |users: &i64, budget: &i64| users * budget,
            Materialized::named("capacity").with_value_serde(Serdes::i64()),
        )
        .to_stream()
        .to_with("capacity", Produced::with(Serdes::string(), Serdes::option(Serdes::i64())));
    builder.build().unwrap()
}

/// The input: for each step, a users-table update (some moves and deletions) and an event
/// record with a few actions.
struct Input {
    users: Vec<(String, Option<String>)>,
    events: Vec<(String, String)>,
    budgets: Vec<(String, i64)>,
}

fn input() -> Input {
    let mut users = Vec::new();
    let mut events = Vec::new();
    for i in 0..2_000u64 {
        let user = format!("user-{}", (i * 7) % USERS);
        let region = REGIONS[((i * 13) % 4) as usize].to_string();
        // Every 11th update deletes the user, the others set (or move) the region.
        users.push((user.clone(), (i % 11 != 5).then_some(region)));
        let kinds = ["buy", "view", "refund", "buy"];
        let line = (0..(1 + i % 3))
            .map(|j| format!("{}:{}", kinds[((i + j) % 4) as usize], (i * 31 + j) % 97))
            .collect::<Vec<_>>()
            .join(",");
        events.push((user, line));
    }
    let budgets = vec![("eu".into(), 100), ("us".into(), 250), ("apac".into(), 70)];
    Input { users, events, budgets }
}

/// What the outputs must end with, computed directly.
fn expected(input: &Input) -> [BTreeMap<String, i64>; 3] {
    let mut per_user: BTreeMap<String, i64> = BTreeMap::new();
    let mut per_group: BTreeMap<String, i64> = BTreeMap::new();
    for (user, line) in &input.events {
        for action in line.split(',') {
            let (kind, n) = action.split_once(':').unwrap();
            let n: i64 = n.parse().unwrap();
            let signed = match kind {
                "buy" => n,
                "refund" => -n,
                _ => continue,
            };
            *per_user.entry(user.clone()).or_default() += signed;
            *per_group.entry(group_of(user)).or_default() += signed;
        }
    }
    // A region's count row exists once a user was in it, and stays (at 0 if it empties).
    let mut current: BTreeMap<&str, &str> = BTreeMap::new();
    let mut regions_seen: BTreeMap<String, i64> = BTreeMap::new();
    for (user, region) in &input.users {
        match region {
            Some(r) => {
                current.insert(user, r);
                regions_seen.entry(r.clone()).or_default();
            }
            None => {
                current.remove(user.as_str());
            }
        }
    }
    for region in current.values() {
        *regions_seen.get_mut(*region).unwrap() += 1;
    }
    let budgets: BTreeMap<&str, i64> =
        input.budgets.iter().map(|(r, b)| (r.as_str(), *b)).collect();
    let capacity = regions_seen
        .iter()
        .filter_map(|(r, n)| budgets.get(r.as_str()).map(|b| (r.clone(), n * b)))
        .collect();
    [per_user, per_group, capacity]
}

/// Reads `topic` until its latest value per key equals `want` (tombstones remove the key).
async fn await_latest(broker: &Broker, topic: &str, want: &BTreeMap<String, i64>) {
    let consumer = Consumer::new(
        broker,
        ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() },
    )
    .unwrap();
    consumer
        .assign(&(0..PARTITIONS).map(|p| TopicPartition::new(topic, p)).collect::<Vec<_>>())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut latest: BTreeMap<String, i64> = BTreeMap::new();
    while &latest != want {
        assert!(Instant::now() < deadline, "{topic}: latest {latest:?}, want {want:?}");
        for r in consumer.poll(Duration::from_millis(100)).await.unwrap() {
            let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
            match r.value {
                Some(v) => latest.insert(key, i64::from_be_bytes(v[..].try_into().unwrap())),
                None => latest.remove(&key),
            };
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composed_operators_match_an_independent_computation() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::new(dir.path().join("log"));
    config.offsets_topic_num_partitions = 2;
    config.transaction_state_log_num_partitions = 1;
    let broker = Broker::open(config).await.unwrap();
    let admin = Admin::new(&broker);
    for topic in ["events", "users", "budgets", "net-per-user", "net-per-group", "capacity"] {
        admin.create_topic(NewTopic::new(topic, PARTITIONS as i32)).await.unwrap();
    }
    let input = input();
    let producer = Producer::new(&broker, ProducerConfig::default()).unwrap();
    for (region, budget) in &input.budgets {
        let value = budget.to_be_bytes();
        let record = ProducerRecord::new("budgets", &value).key(region.as_bytes());
        producer.send(record).await.unwrap();
    }
    for ((user, region), (event_user, line)) in input.users.iter().zip(&input.events) {
        let update = match region {
            Some(r) => ProducerRecord::new("users", r.as_bytes()),
            None => ProducerRecord { value: None, ..ProducerRecord::new("users", b"") },
        };
        producer.send(update.key(user.as_bytes())).await.unwrap();
        let event = ProducerRecord::new("events", line.as_bytes()).key(event_user.as_bytes());
        producer.send(event).await.unwrap();
    }
    producer.close().await.unwrap();

    let config = StreamsConfig {
        commit_interval: Some(Duration::from_millis(100)),
        state_dir: dir.path().join("state"),
        num_stream_threads: 2,
        ..StreamsConfig::new("operators")
    };
    let mut streams =
        Streams::new(topology(), Arc::new(EmbeddedBackend::new(&broker)), config).unwrap();
    streams.start().await.unwrap();
    streams.wait_for_state(StreamsState::Running, Duration::from_secs(30)).await.unwrap();
    let [per_user, per_group, capacity] = expected(&input);
    assert_eq!(per_group.len(), 3);
    assert_eq!(capacity.len(), 3, "latam has users but no budget: no joined row");
    await_latest(&broker, "net-per-user", &per_user).await;
    await_latest(&broker, "net-per-group", &per_group).await;
    await_latest(&broker, "capacity", &capacity).await;
    streams.close().await.unwrap();
}
