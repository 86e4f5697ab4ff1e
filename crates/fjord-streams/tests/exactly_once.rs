//! Exactly-once under crashes, with real processes on a real disk.
//!
//! The test process prepares a data directory (topics, a users table, the input), then runs
//! the job in a child process (this test binary again, running the ignored test
//! `crash_child`) and kills it with SIGKILL at random points, restarting it each time: while
//! the broker recovers and stores restore, while it processes and commits, and after its
//! stores were deleted (a full restore from the changelogs). A last run goes to the end.
//! Then the test reads the committed outputs and compares them with an independent
//! computation over the input.
//!
//! The job repartitions by user, counts per user, sums per user and minute, and joins each
//! event with the users table; caching is off, so every input record produces exactly one
//! output record in each output topic, whatever the commit timing. Under exactly-once the
//! outputs must be exactly the expected ones: no record missing, none twice, final counts and
//! sums equal. Under at-least-once the same kills lose nothing but may duplicate; the test
//! reports how many duplicates it saw, so the difference between the guarantees shows.
//!
//! The default suite runs short versions; `cargo nextest run --run-ignored only -E
//! 'test(million)'` runs the long one (1,000,000 records, 20 kills).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fjord_broker::{
    Admin, Broker, BrokerConfig, Consumer, ConsumerConfig, ConsumerRecord, IsolationLevel,
    NewTopic, OffsetReset, Producer, ProducerConfig, ProducerRecord,
};
use fjord_log::TopicPartition;
use fjord_streams::{
    Consumed, EmbeddedBackend, Materialized, ProcessingGuarantee, Produced, Serdes, Streams,
    StreamsBuilder, StreamsConfig, StreamsState, TimeWindows, Topology,
};

const APP: &str = "crash-job";
const PARTITIONS: u32 = 4;
const USERS: u64 = 500;
const WINDOW_MS: i64 = 60_000;
/// Event `i` happens at `i * EVENT_SPACING_MS`.
const EVENT_SPACING_MS: i64 = 10;
const OUTPUTS: [&str; 3] = ["counts", "window-sums", "enriched"];

/// The child's settings, passed in its environment.
const ENV_DIR: &str = "FJORD_CRASH_DIR";
const ENV_GUARANTEE: &str = "FJORD_CRASH_GUARANTEE";
const ENV_EVENTS: &str = "FJORD_CRASH_EVENTS";

/// Event `i`: key `o<i>`, value `<i>:<user>:<amount>`.
fn event(i: u64) -> (String, u64, i64) {
    let user = (i * 7919) % USERS;
    let amount = (i % 100) as i64 + 1;
    (format!("o{i}"), user, amount)
}

fn user_name(user: u64) -> String {
    format!("name-{user}")
}

async fn open_broker(dir: &Path) -> Broker {
    let mut config = BrokerConfig::new(dir.join("log"));
    config.offsets_topic_num_partitions = 2;
    config.transaction_state_log_num_partitions = 2;
    config.group.min_session_timeout = Duration::from_millis(100);
    Broker::open(config).await.unwrap()
}

fn topology() -> Topology {
    let builder = StreamsBuilder::new();
    let users = builder.table(
        "users",
        Consumed::with(Serdes::string(), Serdes::string()),
        Materialized::named("users"),
    );
    let by_user = builder
        .stream("events", Consumed::with(Serdes::string(), Serdes::string()))
        .select_key(|_, v: &String| format!("u{}", v.split(':').nth(1).unwrap_or("?")))
        .repartition();
    by_user
        .group_by_key()
        .count(Materialized::named("counts").with_caching_disabled())
        .to_stream()
        .to("counts");
    by_user
        .group_by_key()
        .windowed_by(TimeWindows::of_size_and_grace(
            Duration::from_millis(WINDOW_MS as u64),
            Duration::from_secs(86_400),
        ))
        .aggregate(
            || 0i64,
            |_, v: String, sum: i64| {
                sum + v.rsplit(':').next().and_then(|a| a.parse().ok()).unwrap_or(0)
            },
            Materialized::named("window-sums")
                .with_value_serde(Serdes::i64())
                .with_caching_disabled(),
        )
        .to_stream()
        .map(|w, sum: Option<i64>| (format!("{}@{}", w.key, w.window.start), sum.unwrap_or(0)))
        .to_with("window-sums", Produced::with(Serdes::string(), Serdes::i64()));
    by_user
        .left_join(&users, |v: &String, name: Option<&String>| {
            let order = v.split(':').next().unwrap_or("?");
            format!("{order}:{}", name.map_or("-", String::as_str))
        })
        .to_with("enriched", Produced::with(Serdes::string(), Serdes::string()));
    builder.build().unwrap()
}

fn streams_config(dir: &Path, guarantee: ProcessingGuarantee) -> StreamsConfig {
    StreamsConfig {
        state_dir: dir.join("state"),
        processing_guarantee: guarantee,
        // The same commit interval for both guarantees, so that they see the same kills.
        commit_interval: Some(Duration::from_millis(100)),
        ..StreamsConfig::new(APP)
    }
}

fn guarantee_name(g: ProcessingGuarantee) -> &'static str {
    match g {
        ProcessingGuarantee::AtLeastOnce => "at_least_once",
        ProcessingGuarantee::ExactlyOnce => "exactly_once",
    }
}

/// A consumer outside any group, on `partitions` partitions of `topic` from the beginning.
fn reader(broker: &Broker, topic: &str, partitions: u32, isolation: IsolationLevel) -> Consumer {
    let consumer = Consumer::new(
        broker,
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            isolation_level: isolation,
            ..ConsumerConfig::default()
        },
    )
    .unwrap();
    consumer
        .assign(&(0..partitions).map(|p| TopicPartition::new(topic, p)).collect::<Vec<_>>())
        .unwrap();
    consumer
}

/// The child: runs the job until every event is in `enriched`, committed, then closes cleanly.
/// It prints `CHILD-RUNNING` once processing starts and `CHILD-DONE` at the end.
#[test]
#[ignore = "the child process of the crash tests"]
fn crash_child() {
    let Ok(dir) = std::env::var(ENV_DIR) else { return };
    let guarantee = match std::env::var(ENV_GUARANTEE).unwrap().as_str() {
        "exactly_once" => ProcessingGuarantee::ExactlyOnce,
        _ => ProcessingGuarantee::AtLeastOnce,
    };
    let events: usize = std::env::var(ENV_EVENTS).unwrap().parse().unwrap();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let dir = PathBuf::from(dir);
        let broker = open_broker(&dir).await;
        let mut streams = Streams::new(
            topology(),
            Arc::new(EmbeddedBackend::new(&broker)),
            streams_config(&dir, guarantee),
        )
        .unwrap();
        streams.start().await.unwrap();
        streams.wait_for_state(StreamsState::Running, Duration::from_secs(120)).await.unwrap();
        println!("CHILD-RUNNING restored={}", streams.records_restored());
        let enriched = reader(&broker, "enriched", PARTITIONS, IsolationLevel::ReadCommitted);
        let mut seen = std::collections::HashSet::new();
        while seen.len() < events {
            assert_ne!(streams.state(), StreamsState::Error, "{:?}", streams.error());
            for r in enriched.poll(Duration::from_millis(200)).await.unwrap() {
                let value = r.value.unwrap();
                let order = std::str::from_utf8(&value).unwrap().split(':').next().unwrap();
                seen.insert(order.to_string());
            }
        }
        streams.close().await.unwrap();
        broker.shutdown().await.unwrap();
        println!("CHILD-DONE");
    });
}

/// A small deterministic generator (SplitMix64) for kill points; the seed is printed so a
/// failing run can be repeated with `FJORD_CRASH_SEED`.
struct Rng(u64);

impl Rng {
    fn from_env() -> Rng {
        let seed = std::env::var("FJORD_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        println!("FJORD_CRASH_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

/// A running child and the lines it prints.
struct ChildJob {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl ChildJob {
    fn spawn(dir: &Path, guarantee: ProcessingGuarantee, events: u64) -> ChildJob {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--ignored", "--nocapture", "--test-threads=1"])
            .env(ENV_DIR, dir)
            .env(ENV_GUARANTEE, guarantee_name(guarantee))
            .env(ENV_EVENTS, events.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ChildJob { child, lines }
    }

    /// Waits for a line with `prefix`; `None` when the child exits first.
    fn wait_for(&self, prefix: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the child printed no `{prefix}` within {timeout:?}");
            match self.lines.recv_timeout(left) {
                // libtest may print `test crash_child ... ` before it on the same line.
                Ok(line) if line.contains(prefix) => return Some(line),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Creates the topics and writes the users table and `events` input records.
fn prepare(dir: &Path, events: u64) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let broker = open_broker(dir).await;
        let admin = Admin::new(&broker);
        for topic in ["events", "users"].into_iter().chain(OUTPUTS) {
            admin.create_topic(NewTopic::new(topic, PARTITIONS as i32)).await.unwrap();
        }
        let producer = Producer::new(&broker, ProducerConfig::default()).unwrap();
        for user in 0..USERS {
            let (key, value) = (format!("u{user}"), user_name(user));
            // Stream time is per task, over all its inputs: users at time 0, so that they do
            // not push the events' windows past their grace period.
            let record = ProducerRecord::new("users", value.as_bytes()).key(key.as_bytes());
            producer.send(record.timestamp(0)).await.unwrap();
        }
        for i in 0..events {
            let (key, user, amount) = event(i);
            let value = format!("{i}:{user}:{amount}");
            producer
                .send(
                    ProducerRecord::new("events", value.as_bytes())
                        .key(key.as_bytes())
                        .timestamp(i as i64 * EVENT_SPACING_MS),
                )
                .await
                .unwrap();
        }
        producer.close().await.unwrap();
        broker.shutdown().await.unwrap();
    });
}

/// Deletes the application's stores, keeping the rest of the state directory, so that the
/// next run restores every store from its changelog.
fn delete_stores(dir: &Path) {
    let state = dir.join("state");
    let Ok(entries) = std::fs::read_dir(&state) else { return };
    for entry in entries.map_while(Result::ok) {
        if entry.file_type().unwrap().is_dir() {
            std::fs::remove_dir_all(entry.path()).unwrap();
        }
    }
}

/// Where the kills landed.
#[derive(Debug, Default)]
struct Kills {
    while_starting: u32,
    while_processing: u32,
    after_deleting_stores: u32,
    /// The run had finished when the kill came.
    too_late: u32,
}

/// Runs the child `kills` times, killing each run at a random point (up to `max_run_ms` after
/// it started processing), then once to the end.
fn run_with_kills(
    dir: &Path,
    guarantee: ProcessingGuarantee,
    events: u64,
    kills: u32,
    max_run_ms: u64,
) -> Kills {
    let mut rng = Rng::from_env();
    let mut done = Kills::default();
    let mut run = 0;
    while run < kills {
        run += 1;
        // Every fifth restart starts without stores: restoration reads whole changelogs.
        let wiped = run % 5 == 0;
        if wiped {
            delete_stores(dir);
        }
        let job = ChildJob::spawn(dir, guarantee, events);
        match rng.below(3) {
            // While the broker recovers its log and the stores restore.
            0 => {
                std::thread::sleep(Duration::from_millis(50 + rng.below(400)));
                done.while_starting += 1;
            }
            // While processing, committing every 100 ms.
            _ => {
                let running = job.wait_for("CHILD-RUNNING", Duration::from_secs(120));
                assert!(running.is_some(), "the child exited before it ran");
                std::thread::sleep(Duration::from_millis(rng.below(max_run_ms)));
                done.while_processing += 1;
            }
        }
        if wiped {
            done.after_deleting_stores += 1;
        }
        if job.lines.try_iter().any(|l| l.contains("CHILD-DONE")) {
            done.too_late += 1;
        }
        job.kill();
    }
    // The last run goes to the end.
    let mut job = ChildJob::spawn(dir, guarantee, events);
    let finished = job.wait_for("CHILD-DONE", Duration::from_secs(900));
    let status = job.child.wait().unwrap();
    assert!(finished.is_some() && status.success(), "the last run failed: {status}");
    println!("{guarantee:?}: {events} events, kills {done:?}");
    done
}

/// What the committed outputs hold, with duplicates counted.
#[derive(Debug, Default)]
struct Outputs {
    /// Per user, every count emitted.
    counts: BTreeMap<String, Vec<i64>>,
    /// Per `user@window-start`, every sum emitted, in order.
    window_sums: BTreeMap<String, Vec<i64>>,
    /// Per order, the user names it was joined with.
    enriched: HashMap<u64, Vec<String>>,
}

/// Every record of `topic` (its first `partitions` partitions), from the beginning to the
/// end.
async fn read_all(
    broker: &Broker,
    topic: &str,
    partitions: u32,
    isolation: IsolationLevel,
) -> Vec<ConsumerRecord> {
    let consumer = reader(broker, topic, partitions, isolation);
    let mut out = Vec::new();
    loop {
        let batch = consumer.poll(Duration::from_millis(100)).await.unwrap();
        let lag = consumer.lag();
        if batch.is_empty() && lag.len() == partitions as usize && lag.values().all(|l| *l == 0) {
            return out;
        }
        out.extend(batch);
    }
}

async fn read_committed(broker: &Broker, topic: &str) -> Vec<ConsumerRecord> {
    read_all(broker, topic, PARTITIONS, IsolationLevel::ReadCommitted).await
}

fn read_outputs(dir: &Path) -> Outputs {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let broker = open_broker(dir).await;
        let mut outputs = Outputs::default();
        let text =
            |b: &Option<bytes::Bytes>| String::from_utf8(b.as_ref().unwrap().to_vec()).unwrap();
        let number = |b: &Option<bytes::Bytes>| {
            i64::from_be_bytes(b.as_ref().unwrap().as_ref().try_into().unwrap())
        };
        for r in read_committed(&broker, "counts").await {
            outputs.counts.entry(text(&r.key)).or_default().push(number(&r.value));
        }
        for r in read_committed(&broker, "window-sums").await {
            outputs.window_sums.entry(text(&r.key)).or_default().push(number(&r.value));
        }
        for r in read_committed(&broker, "enriched").await {
            let value = text(&r.value);
            let (order, name) = value.split_once(':').unwrap();
            outputs.enriched.entry(order.parse().unwrap()).or_default().push(name.to_string());
        }
        broker.shutdown().await.unwrap();
        outputs
    })
}

/// What a single clean run writes, computed from the input: per user its number of events,
/// per user and window the number of events and their sum.
struct Expected {
    counts: BTreeMap<String, i64>,
    windows: BTreeMap<String, (usize, i64)>,
}

fn expected(events: u64) -> Expected {
    let mut counts = BTreeMap::new();
    let mut windows: BTreeMap<String, (usize, i64)> = BTreeMap::new();
    for i in 0..events {
        let (_, user, amount) = event(i);
        *counts.entry(format!("u{user}")).or_default() += 1;
        let ts = i as i64 * EVENT_SPACING_MS;
        let w = windows.entry(format!("u{user}@{}", ts - ts % WINDOW_MS)).or_default();
        w.0 += 1;
        w.1 += amount;
    }
    Expected { counts, windows }
}

/// Checks that nothing is lost: every event joined, each user's final count and each
/// window's final sum at least what the events make (at-least-once may count an event twice,
/// and then skip an intermediate count: a changelog record written before a crash and its
/// output record not). Returns how many output records are beyond one clean run's.
fn check_no_loss(outputs: &Outputs, events: u64) -> usize {
    let expected = expected(events);
    let mut extra = 0;
    for (user, n) in &expected.counts {
        let seen = outputs.counts.get(user).map_or(&[][..], Vec::as_slice);
        let last = seen.iter().max().copied().unwrap_or(0);
        assert!(last >= *n, "{user}: counted {last} of {n} events");
        extra += seen.len().saturating_sub(*n as usize);
    }
    assert_eq!(outputs.counts.len(), expected.counts.len(), "counts for unknown users");
    for (window, (n, sum)) in &expected.windows {
        let seen = outputs.window_sums.get(window).map_or(&[][..], Vec::as_slice);
        let last = seen.iter().max().copied().unwrap_or(0);
        assert!(last >= *sum, "{window}: summed {last} of {sum}");
        extra += seen.len().saturating_sub(*n);
    }
    for i in 0..events {
        let (_, user, _) = event(i);
        let names = outputs.enriched.get(&i).unwrap_or_else(|| panic!("order {i} is missing"));
        for name in names {
            assert!(name == "-" || *name == user_name(user), "order {i} joined with {name}");
        }
        extra += names.len() - 1;
    }
    extra
}

/// Checks that the outputs are exactly those of one clean run.
fn check_exactly_once(outputs: &Outputs, events: u64) {
    let expected = expected(events);
    for (user, n) in &expected.counts {
        let mut seen = outputs.counts[user].clone();
        seen.sort_unstable();
        assert_eq!(seen, (1..=*n).collect::<Vec<_>>(), "counts of {user}");
    }
    for (window, (n, sum)) in &expected.windows {
        let seen = &outputs.window_sums[window];
        assert_eq!(seen.len(), *n, "{window}: updates");
        assert_eq!(seen.last(), Some(sum), "{window}: final sum");
    }
    assert_eq!(outputs.window_sums.len(), expected.windows.len(), "unexpected windows");
    assert_eq!(outputs.enriched.len(), events as usize, "joined orders");
    for (order, names) in &outputs.enriched {
        assert_eq!(names.len(), 1, "order {order} joined {} times", names.len());
    }
}

fn crash_test(guarantee: ProcessingGuarantee, events: u64, kills: u32, max_run_ms: u64) -> usize {
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path(), events);
    let done = run_with_kills(dir.path(), guarantee, events, kills, max_run_ms);
    assert!(kills == 0 || done.too_late < kills, "no kill came before the job finished: {done:?}");
    let outputs = read_outputs(dir.path());
    let duplicates = check_no_loss(&outputs, events);
    println!("{guarantee:?}: {duplicates} output records beyond one clean run's");
    if guarantee == ProcessingGuarantee::ExactlyOnce {
        check_exactly_once(&outputs, events);
    }
    duplicates
}

#[test]
fn exactly_once_outputs_survive_sigkill() {
    assert_eq!(crash_test(ProcessingGuarantee::ExactlyOnce, 100_000, 6, 800), 0);
}

#[test]
fn at_least_once_loses_nothing_under_sigkill() {
    crash_test(ProcessingGuarantee::AtLeastOnce, 100_000, 6, 800);
}

#[test]
#[ignore = "long: 1,000,000 records and 20 kills; run with --run-ignored"]
fn exactly_once_survives_twenty_kills_over_a_million_records() {
    assert_eq!(crash_test(ProcessingGuarantee::ExactlyOnce, 1_000_000, 20, 3000), 0);
}

/// Holds records at a chosen value while closed, and says when one is held.
struct Gate {
    value: &'static str,
    closed: parking_lot::Mutex<bool>,
    opened: parking_lot::Condvar,
    held: tokio::sync::watch::Sender<bool>,
}

impl Gate {
    fn pass(&self, value: &str) {
        if value != self.value {
            return;
        }
        let mut closed = self.closed.lock();
        if *closed {
            self.held.send_replace(true);
        }
        while *closed {
            self.opened.wait(&mut closed);
        }
    }

    fn open(&self) {
        *self.closed.lock() = false;
        self.opened.notify_all();
    }
}

fn fencing_topology(gate: Option<Arc<Gate>>) -> Topology {
    let builder = StreamsBuilder::new();
    builder
        .stream("in", Consumed::with(Serdes::string(), Serdes::string()))
        .peek(move |_, v: &String| {
            if let Some(gate) = &gate {
                gate.pass(v);
            }
        })
        .map_values(|v: String| format!("out-{v}"))
        .to("out");
    builder.build().unwrap()
}

async fn read_values(broker: &Broker, topic: &str, isolation: IsolationLevel) -> Vec<String> {
    let records = read_all(broker, topic, 2, isolation).await;
    records.iter().map(|r| String::from_utf8(r.value.as_ref().unwrap().to_vec()).unwrap()).collect()
}

/// Waits until `topic` holds `n` committed records.
async fn wait_for_committed(broker: &Broker, topic: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_values(broker, topic, IsolationLevel::ReadCommitted).await.len() < n {
        assert!(Instant::now() < deadline, "{topic} never held {n} committed records");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two instances of one exactly-once application. Instance A stalls inside a processor with
/// records of an open transaction behind it; the group evicts it and instance B takes its
/// tasks over and processes the same input. When A wakes up, its commit is rejected (it lost
/// its generation), its transaction is aborted, and none of its late output becomes visible:
/// every input appears exactly once, although the log holds A's aborted copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_instance_is_fenced_and_its_output_never_becomes_visible() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_broker(dir.path()).await;
    let admin = Admin::new(&broker);
    for topic in ["in", "out"] {
        admin.create_topic(NewTopic::new(topic, 2)).await.unwrap();
    }
    let gate = Arc::new(Gate {
        value: "b9",
        closed: parking_lot::Mutex::new(true),
        opened: parking_lot::Condvar::new(),
        held: tokio::sync::watch::channel(false).0,
    });
    let mut held = gate.held.subscribe();
    let config = |name: &str| StreamsConfig {
        state_dir: dir.path().join(name),
        processing_guarantee: ProcessingGuarantee::ExactlyOnce,
        session_timeout: Duration::from_millis(1000),
        ..StreamsConfig::new("fencing")
    };
    let backend = Arc::new(EmbeddedBackend::new(&broker));
    let mut a =
        Streams::new(fencing_topology(Some(gate.clone())), backend.clone(), config("a")).unwrap();
    a.start().await.unwrap();
    a.wait_for_state(StreamsState::Running, Duration::from_secs(20)).await.unwrap();

    let producer = Producer::new(&broker, ProducerConfig::default()).unwrap();
    let send = |values: Vec<String>| {
        let producer = &producer;
        async move {
            // One key, one partition, one batch: A fetches them together and processes them in
            // one go, so b0..b8 are in its open transaction when it stalls at b9.
            let records: Vec<ProducerRecord<'_>> =
                values.iter().map(|v| ProducerRecord::new("in", v.as_bytes()).key(b"k")).collect();
            producer.send_batch(&records).await.unwrap();
        }
    };
    send((0..10).map(|i| format!("a{i}")).collect()).await;
    wait_for_committed(&broker, "out", 10).await;
    send((0..10).map(|i| format!("b{i}")).collect()).await;
    held.wait_for(|h| *h).await.unwrap();

    // B joins; A sends no heartbeats while stalled, is evicted, and B processes b0..b9.
    let mut b = Streams::new(fencing_topology(None), backend.clone(), config("b")).unwrap();
    b.start().await.unwrap();
    wait_for_committed(&broker, "out", 20).await;

    // A wakes up: its commit fails, and it rolls back.
    gate.open();
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.failed_commits() == 0 {
        assert!(Instant::now() < deadline, "the stalled instance's commit was not rejected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.close().await.unwrap();
    b.close().await.unwrap();

    let mut committed = read_values(&broker, "out", IsolationLevel::ReadCommitted).await;
    committed.sort();
    let mut expected: Vec<String> =
        ["a", "b"].iter().flat_map(|p| (0..10).map(move |i| format!("out-{p}{i}"))).collect();
    expected.sort();
    assert_eq!(committed, expected, "every input exactly once");
    let uncommitted = read_values(&broker, "out", IsolationLevel::ReadUncommitted).await;
    assert!(
        uncommitted.iter().filter(|v| *v == "out-b0").count() > 1,
        "the stalled instance's aborted output is in the log: {uncommitted:?}"
    );
    producer.close().await.unwrap();
    broker.shutdown().await.unwrap();
}
