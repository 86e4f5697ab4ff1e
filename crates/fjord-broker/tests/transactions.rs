//! Transactions against the real broker on a real disk: read_committed visibility, the last
//! stable offset, fencing, timeouts, transactional offset commits, and a child process killed
//! with SIGKILL in the middle of transactions, many times.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fjord_broker::{
    Admin, Broker, BrokerConfig, BrokerError, Consumer, ConsumerConfig, ConsumerGroupMetadata,
    IsolationLevel, NewTopic, OffsetReset, OffsetSpec, Producer, ProducerConfig, ProducerRecord,
    TransactionState,
};
use fjord_log::TopicPartition;

fn config(dir: &std::path::Path) -> BrokerConfig {
    let mut config = BrokerConfig::new(dir);
    config.offsets_topic_num_partitions = 2;
    config.transaction_state_log_num_partitions = 2;
    config.log.background = false;
    config.transaction.abort_check_interval = Duration::from_millis(50);
    config
}

async fn broker(dir: &std::path::Path) -> Broker {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Broker::open(config(dir)).await.unwrap()
}

fn txn_producer(broker: &Broker, id: &str) -> Producer {
    Producer::new(
        broker,
        ProducerConfig {
            transactional_id: Some(id.into()),
            linger: Duration::ZERO,
            ..ProducerConfig::default()
        },
    )
    .unwrap()
}

/// Every value a consumer with `isolation` reads from the whole topic.
async fn read_all(broker: &Broker, topic: &str, isolation: IsolationLevel) -> Vec<String> {
    let consumer = Consumer::new(
        broker,
        ConsumerConfig {
            isolation_level: isolation,
            auto_offset_reset: OffsetReset::Earliest,
            ..ConsumerConfig::default()
        },
    )
    .unwrap();
    let partitions = broker.logs().topic(topic).unwrap().partition_count();
    let tps: Vec<_> = (0..partitions).map(|p| TopicPartition::new(topic, p)).collect();
    consumer.assign(&tps).unwrap();
    let mut out = Vec::new();
    loop {
        let records = consumer.poll(Duration::from_millis(100)).await.unwrap();
        if records.is_empty() {
            break;
        }
        out.extend(
            records.iter().map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap()),
        );
    }
    out
}

#[tokio::test]
async fn read_committed_sees_exactly_the_committed_transactions_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    Admin::new(&broker).create_topic(NewTopic::new("out", 3)).await.unwrap();
    let a = txn_producer(&broker, "a");
    let b = txn_producer(&broker, "b");
    a.init_transactions().await.unwrap();
    b.init_transactions().await.unwrap();
    let mut committed = Vec::new();
    let mut all = Vec::new();
    for round in 0..10 {
        a.begin_transaction().unwrap();
        b.begin_transaction().unwrap();
        // Interleave the two transactions' records on the same partitions.
        for i in 0..6 {
            for (producer, name) in [(&a, "a"), (&b, "b")] {
                let value = format!("{name}-{round}-{i}");
                let key = format!("k{i}");
                producer
                    .send(ProducerRecord::new("out", value.as_bytes()).key(key.as_bytes()))
                    .await
                    .unwrap();
                all.push(value);
            }
        }
        // a commits on even rounds, b on odd rounds; the other aborts.
        let (winner, loser, name) = if round % 2 == 0 { (&a, &b, "a") } else { (&b, &a, "b") };
        loser.abort_transaction().await.unwrap();
        winner.commit_transaction().await.unwrap();
        committed.extend((0..6).map(|i| format!("{name}-{round}-{i}")));
    }
    let read = read_all(&broker, "out", IsolationLevel::ReadCommitted).await;
    assert_eq!(
        read.iter().cloned().collect::<BTreeSet<_>>(),
        committed.iter().cloned().collect::<BTreeSet<_>>()
    );
    assert_eq!(read.len(), committed.len(), "no duplicates");
    // Per key (= per partition), committed records keep their order.
    for i in 0..6 {
        let of_key: Vec<_> =
            read.iter().filter(|v| v.ends_with(&format!("-{i}"))).cloned().collect();
        let expected: Vec<_> =
            committed.iter().filter(|v| v.ends_with(&format!("-{i}"))).cloned().collect();
        assert_eq!(of_key, expected);
    }
    let uncommitted = read_all(&broker, "out", IsolationLevel::ReadUncommitted).await;
    assert_eq!(uncommitted.len(), all.len(), "read_uncommitted sees every data record, no markers");
}

#[tokio::test]
async fn the_last_stable_offset_holds_readers_back_until_commit_or_abort() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    Admin::new(&broker).create_topic(NewTopic::new("out", 1)).await.unwrap();
    let tp = TopicPartition::new("out", 0);
    let plain = Producer::new(&broker, ProducerConfig::default()).unwrap();
    plain.send_and_wait(ProducerRecord::new("out", b"before")).await.unwrap();
    let txn = txn_producer(&broker, "t");
    txn.init_transactions().await.unwrap();
    txn.begin_transaction().unwrap();
    txn.send_and_wait(ProducerRecord::new("out", b"in-txn")).await.unwrap();
    plain.send_and_wait(ProducerRecord::new("out", b"after")).await.unwrap();
    let lso = broker.list_offset(&tp, OffsetSpec::LatestCommitted).unwrap().offset;
    let hw = broker.list_offset(&tp, OffsetSpec::Latest).unwrap().offset;
    assert_eq!((lso, hw), (1, 3), "the LSO stops at the open transaction's first offset");
    assert_eq!(read_all(&broker, "out", IsolationLevel::ReadCommitted).await, ["before"]);
    txn.commit_transaction().await.unwrap();
    assert_eq!(broker.list_offset(&tp, OffsetSpec::LatestCommitted).unwrap().offset, 4);
    assert_eq!(
        read_all(&broker, "out", IsolationLevel::ReadCommitted).await,
        ["before", "in-txn", "after"]
    );
    // Same with an abort.
    txn.begin_transaction().unwrap();
    txn.send_and_wait(ProducerRecord::new("out", b"dropped")).await.unwrap();
    assert_eq!(read_all(&broker, "out", IsolationLevel::ReadCommitted).await.len(), 3);
    txn.abort_transaction().await.unwrap();
    plain.send_and_wait(ProducerRecord::new("out", b"last")).await.unwrap();
    assert_eq!(
        read_all(&broker, "out", IsolationLevel::ReadCommitted).await,
        ["before", "in-txn", "after", "last"]
    );
}

#[tokio::test]
async fn a_second_producer_with_the_same_id_fences_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    Admin::new(&broker).create_topic(NewTopic::new("out", 2)).await.unwrap();
    let first = txn_producer(&broker, "same");
    first.init_transactions().await.unwrap();
    first.begin_transaction().unwrap();
    first.send_and_wait(ProducerRecord::new("out", b"zombie").partition(0)).await.unwrap();
    let second = txn_producer(&broker, "same");
    second.init_transactions().await.unwrap();
    assert!(second.producer_id().1 > first.producer_id().1);
    // The first can neither send nor commit; its open transaction was aborted.
    let err = first.commit_transaction().await.unwrap_err();
    assert!(matches!(err, BrokerError::ProducerFenced(_)), "{err}");
    let err = first.send(ProducerRecord::new("out", b"more")).await.unwrap_err();
    assert!(matches!(err, BrokerError::InvalidTxnState(_)), "{err}");
    second.begin_transaction().unwrap();
    second.send_and_wait(ProducerRecord::new("out", b"fresh").partition(0)).await.unwrap();
    second.commit_transaction().await.unwrap();
    assert_eq!(read_all(&broker, "out", IsolationLevel::ReadCommitted).await, ["fresh"]);
    let described = Admin::new(&broker).describe_transaction("same").unwrap();
    assert_eq!(described.state, TransactionState::CompleteCommit);
}

#[tokio::test]
async fn a_transaction_past_its_timeout_is_aborted_and_its_producer_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    Admin::new(&broker).create_topic(NewTopic::new("out", 1)).await.unwrap();
    let producer = Producer::new(
        &broker,
        ProducerConfig {
            transactional_id: Some("slow".into()),
            transaction_timeout: Duration::from_millis(200),
            linger: Duration::ZERO,
            ..ProducerConfig::default()
        },
    )
    .unwrap();
    producer.init_transactions().await.unwrap();
    producer.begin_transaction().unwrap();
    producer.send_and_wait(ProducerRecord::new("out", b"late")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let admin = Admin::new(&broker);
    while admin.describe_transaction("slow").unwrap().state != TransactionState::CompleteAbort {
        assert!(Instant::now() < deadline, "the timed-out transaction was never aborted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = producer.commit_transaction().await.unwrap_err();
    assert!(matches!(err, BrokerError::ProducerFenced(_)), "{err}");
    let tp = TopicPartition::new("out", 0);
    assert_eq!(
        broker.list_offset(&tp, OffsetSpec::LatestCommitted).unwrap(),
        broker.list_offset(&tp, OffsetSpec::Latest).unwrap()
    );
    assert!(read_all(&broker, "out", IsolationLevel::ReadCommitted).await.is_empty());
}

#[tokio::test]
async fn offsets_sent_to_a_transaction_commit_with_it_and_stale_generations_are_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let admin = Admin::new(&broker);
    admin.create_topic(NewTopic::new("in", 1)).await.unwrap();
    admin.create_topic(NewTopic::new("out", 1)).await.unwrap();
    let tp = TopicPartition::new("in", 0);
    let producer = txn_producer(&broker, "etl");
    producer.init_transactions().await.unwrap();
    let manual =
        ConsumerGroupMetadata { group_id: "g".into(), member_id: String::new(), generation_id: -1 };
    producer.begin_transaction().unwrap();
    producer.send(ProducerRecord::new("out", b"x")).await.unwrap();
    producer.send_offsets_to_transaction(&[(tp.clone(), 10)], &manual).await.unwrap();
    assert!(!admin.list_group_offsets("g").unwrap().contains_key(&tp), "invisible until commit");
    producer.commit_transaction().await.unwrap();
    assert_eq!(admin.list_group_offsets("g").unwrap()[&tp].offset, 10);
    producer.begin_transaction().unwrap();
    producer.send_offsets_to_transaction(&[(tp.clone(), 20)], &manual).await.unwrap();
    producer.abort_transaction().await.unwrap();
    assert_eq!(
        admin.list_group_offsets("g").unwrap()[&tp].offset,
        10,
        "aborted offsets never commit"
    );
    // A consumer group member's generation is checked: a stale one is refused.
    let consumer = Consumer::new(
        &broker,
        ConsumerConfig {
            group_id: Some("members".into()),
            auto_offset_reset: OffsetReset::Earliest,
            enable_auto_commit: false,
            ..ConsumerConfig::default()
        },
    )
    .unwrap();
    consumer.subscribe(&["in"]).unwrap();
    consumer.poll(Duration::from_millis(100)).await.unwrap();
    let mut stale = consumer.group_metadata().unwrap();
    assert!(stale.generation_id >= 1);
    stale.generation_id -= 1;
    producer.begin_transaction().unwrap();
    let err = producer.send_offsets_to_transaction(&[(tp.clone(), 5)], &stale).await.unwrap_err();
    assert!(matches!(err, BrokerError::IllegalGeneration { .. }), "{err}");
    producer.abort_transaction().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// The crash test.

const RECORDS_PER_TXN: u32 = 20;

/// Run by `transactions_survive_sigkill` in a child process: consumes "in" from the committed
/// offset and, per transaction, writes 20 derived records to "out" and commits the consumed
/// offset in the same transaction, forever.
#[test]
#[ignore = "child process of transactions_survive_sigkill"]
fn child_transactor() {
    let Some(dir) = std::env::var_os("FJORD_CHILD_DATA_DIR") else { return };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let broker = Broker::open(config(std::path::Path::new(&dir))).await.unwrap();
        let producer = Producer::new(
            &broker,
            ProducerConfig {
                transactional_id: Some("crasher".into()),
                linger: Duration::ZERO,
                ..ProducerConfig::default()
            },
        )
        .unwrap();
        producer.init_transactions().await.unwrap();
        let group = ConsumerGroupMetadata {
            group_id: "etl".into(),
            member_id: String::new(),
            generation_id: -1,
        };
        let tp = TopicPartition::new("in", 0);
        let consumer = Consumer::new(
            &broker,
            ConsumerConfig {
                group_id: Some("etl".into()),
                isolation_level: IsolationLevel::ReadCommitted,
                auto_offset_reset: OffsetReset::Earliest,
                enable_auto_commit: false,
                max_poll_records: RECORDS_PER_TXN as usize,
                ..ConsumerConfig::default()
            },
        )
        .unwrap();
        consumer.assign(std::slice::from_ref(&tp)).unwrap();
        let mut out = std::io::stdout().lock();
        loop {
            let records = consumer.poll(Duration::from_millis(200)).await.unwrap();
            if records.is_empty() {
                continue;
            }
            producer.begin_transaction().unwrap();
            for r in &records {
                let value = format!("out-{}", String::from_utf8_lossy(r.value.as_ref().unwrap()));
                producer
                    .send(ProducerRecord::new("out", value.as_bytes()).key(value.as_bytes()))
                    .await
                    .unwrap();
            }
            let next = records.last().unwrap().offset + 1;
            producer.send_offsets_to_transaction(&[(tp.clone(), next)], &group).await.unwrap();
            producer.commit_transaction().await.unwrap();
            writeln!(out, "COMMITTED {next}").unwrap();
            out.flush().unwrap();
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let total: u32 = 20_000;
    {
        let broker = broker(dir.path()).await;
        let admin = Admin::new(&broker);
        admin.create_topic(NewTopic::new("in", 1)).await.unwrap();
        admin.create_topic(NewTopic::new("out", 3)).await.unwrap();
        let producer = Producer::new(&broker, ProducerConfig::default()).unwrap();
        for i in 0..total {
            producer.send(ProducerRecord::new("in", i.to_string().as_bytes())).await.unwrap();
        }
        producer.close().await.unwrap();
        broker.shutdown().await.unwrap();
    }
    let rounds: u32 =
        std::env::var("FJORD_CRASH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let tp = TopicPartition::new("in", 0);
    let mut finished = false;
    let mut commits_seen = 0u64;
    let mut last_committed_offset = 0i64;
    for round in 0..rounds {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_transactor", "--ignored", "--nocapture", "--test-threads=1"])
            .env("FJORD_CHILD_DATA_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Kill after a random number of commits, plus a random delay so that some kills land
        // inside a transaction or a commit.
        let commits_before_kill = seed % 6;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        let mut last_committed = 0;
        while seen < commits_before_kill {
            let Some(Ok(line)) = lines.next() else { break };
            if let Some(at) = line.find("COMMITTED ") {
                last_committed = line[at + 10..].trim().parse::<u32>().unwrap();
                seen += 1;
                commits_seen += 1;
            }
            if last_committed >= total {
                break;
            }
        }
        std::thread::sleep(Duration::from_micros(seed % 5_000));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        // After the restart: whole transactions only, offsets matching outputs, nothing open.
        let broker = broker(dir.path()).await;
        let admin = Admin::new(&broker);
        assert!(
            admin.list_transactions().iter().all(|t| t.state != TransactionState::Ongoing),
            "round {round}: a transaction stayed open after recovery"
        );
        for p in 0..3 {
            let out = TopicPartition::new("out", p);
            assert_eq!(
                broker.list_offset(&out, OffsetSpec::LatestCommitted).unwrap(),
                broker.list_offset(&out, OffsetSpec::Latest).unwrap(),
                "round {round}: out-{p} has an open transaction after recovery"
            );
        }
        let committed = admin.list_group_offsets("etl").unwrap().get(&tp).map_or(0, |o| o.offset);
        assert!(
            committed >= last_committed_offset,
            "round {round}: the committed offset went back"
        );
        assert!(
            committed >= last_committed as i64,
            "round {round}: an acknowledged commit was lost"
        );
        last_committed_offset = committed;
        let outputs = read_all(&broker, "out", IsolationLevel::ReadCommitted).await;
        let distinct: BTreeSet<&String> = outputs.iter().collect();
        assert_eq!(distinct.len(), outputs.len(), "round {round}: an output appears twice");
        let expected: BTreeSet<String> = (0..committed).map(|i| format!("out-{i}")).collect();
        assert_eq!(
            outputs.iter().cloned().collect::<BTreeSet<_>>(),
            expected,
            "round {round}: outputs do not match the committed offset {committed}"
        );
        broker.shutdown().await.unwrap();
        if committed as u32 >= total {
            finished = true;
            break;
        }
    }
    // The test is only meaningful if the children made progress between kills.
    assert!(
        commits_seen >= u64::from(rounds.min(10)),
        "children committed only {commits_seen} transactions"
    );
    assert!(last_committed_offset > 0);
    eprintln!(
        "{commits_seen} transactions committed by children, final offset {last_committed_offset}, finished: {finished}"
    );
    let _ = BTreeMap::<(), ()>::new();
}
