//! Consumers against the real broker on a real disk: manual assignment, seek, pause/resume,
//! long polling, commits surviving restarts, groups sharing partitions, rebalances with
//! commits in the revoke callback, eviction, lag and reset-offsets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord_broker::consumer::assignor::RangeAssignor;
use fjord_broker::{
    Admin, Broker, BrokerConfig, BrokerError, ClientEvent, Consumer, ConsumerConfig,
    ConsumerRebalanceListener, NewTopic, OffsetReset, OffsetResetSpec, OffsetSpec, Producer,
    ProducerConfig, ProducerRecord,
};
use fjord_log::TopicPartition;
use parking_lot::Mutex;

async fn broker(dir: &std::path::Path) -> Broker {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut config = BrokerConfig::new(dir);
    config.offsets_topic_num_partitions = 3;
    config.transaction_state_log_num_partitions = 1;
    config.log.background = false;
    config.group.min_session_timeout = Duration::from_millis(10);
    Broker::open(config).await.unwrap()
}

fn consumer_config(group: Option<&str>) -> ConsumerConfig {
    ConsumerConfig {
        group_id: group.map(str::to_string),
        auto_offset_reset: OffsetReset::Earliest,
        enable_auto_commit: false,
        session_timeout: Duration::from_millis(2_000),
        heartbeat_interval: Duration::from_millis(100),
        ..ConsumerConfig::default()
    }
}

async fn produce(broker: &Broker, topic: &str, from: u32, count: u32) {
    let producer = Producer::new(
        broker,
        ProducerConfig { linger: Duration::ZERO, ..ProducerConfig::default() },
    )
    .unwrap();
    for i in from..from + count {
        let key = format!("key-{}", i % 97);
        let value = i.to_string();
        producer
            .send(ProducerRecord::new(topic, value.as_bytes()).key(key.as_bytes()))
            .await
            .unwrap();
    }
    producer.close().await.unwrap();
}

fn value(record: &fjord_broker::ConsumerRecord) -> u32 {
    std::str::from_utf8(record.value.as_ref().unwrap()).unwrap().parse().unwrap()
}

/// Polls until `n` records arrived (or fails after a generous timeout).
async fn poll_n(consumer: &Consumer, n: usize) -> Vec<fjord_broker::ConsumerRecord> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < n {
        assert!(Instant::now() < deadline, "got {} of {n} records", out.len());
        out.extend(consumer.poll(Duration::from_millis(200)).await.unwrap());
    }
    out
}

#[tokio::test]
async fn manual_assignment_reads_in_order_and_seeks_pauses_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    Admin::new(&broker).create_topic(NewTopic::new("t", 1)).await.unwrap();
    produce(&broker, "t", 0, 1000).await;
    let consumer = Consumer::new(&broker, consumer_config(None)).unwrap();
    let tp = TopicPartition::new("t", 0);
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    let records = poll_n(&consumer, 1000).await;
    assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), (0..1000).collect::<Vec<_>>());
    assert_eq!(records.iter().map(value).collect::<Vec<_>>(), (0..1000).collect::<Vec<_>>());
    assert_eq!(consumer.position(&tp).unwrap(), Some(1000));
    // Seek back into the middle of a batch: records start exactly there.
    consumer.seek(&tp, 517).unwrap();
    let records = poll_n(&consumer, 483).await;
    assert_eq!(records[0].offset, 517);
    // Paused partitions return nothing; resumed ones continue.
    consumer.seek_to_beginning(std::slice::from_ref(&tp)).unwrap();
    consumer.pause(std::slice::from_ref(&tp)).unwrap();
    assert!(consumer.poll(Duration::from_millis(50)).await.unwrap().is_empty());
    assert_eq!(consumer.paused(), vec![tp.clone()]);
    consumer.resume(std::slice::from_ref(&tp)).unwrap();
    assert_eq!(consumer.poll(Duration::from_secs(5)).await.unwrap()[0].offset, 0);
    consumer.seek_to_end(std::slice::from_ref(&tp)).unwrap();
    assert_eq!(consumer.position(&tp).unwrap(), Some(1000));
    // max.poll.records bounds each poll.
    let small =
        Consumer::new(&broker, ConsumerConfig { max_poll_records: 7, ..consumer_config(None) })
            .unwrap();
    small.assign(std::slice::from_ref(&tp)).unwrap();
    assert_eq!(small.poll(Duration::from_secs(5)).await.unwrap().len(), 7);
}

#[tokio::test]
async fn a_long_poll_wakes_as_soon_as_data_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    Admin::new(&broker).create_topic(NewTopic::new("t", 1)).await.unwrap();
    let consumer = Consumer::new(&broker, consumer_config(None)).unwrap();
    consumer.assign(&[TopicPartition::new("t", 0)]).unwrap();
    let producer_broker = broker.clone();
    let started = Instant::now();
    let (records, ()) = tokio::join!(consumer.poll(Duration::from_secs(30)), async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        produce(&producer_broker, "t", 0, 1).await;
    });
    let records = records.unwrap();
    assert_eq!(records.len(), 1);
    assert!(started.elapsed() < Duration::from_secs(10), "woke on data, not on the 30 s timeout");
}

#[tokio::test]
async fn wakeup_ends_a_waiting_poll_or_else_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    Admin::new(&broker).create_topic(NewTopic::new("t", 1)).await.unwrap();
    let consumer = Consumer::new(&broker, consumer_config(None)).unwrap();
    consumer.assign(&[TopicPartition::new("t", 0)]).unwrap();
    let waker = consumer.waker();
    // A wakeup during a poll ends it.
    let started = Instant::now();
    let (records, ()) = tokio::join!(consumer.poll(Duration::from_secs(30)), async {
        tokio::task::yield_now().await;
        waker.wakeup();
    });
    assert!(records.unwrap().is_empty());
    assert!(started.elapsed() < Duration::from_secs(10), "woken, not timed out");
    // A wakeup with no poll waiting ends the next poll at once, and only that one.
    consumer.wakeup();
    let started = Instant::now();
    assert!(consumer.poll(Duration::from_secs(30)).await.unwrap().is_empty());
    assert!(started.elapsed() < Duration::from_secs(10), "the next poll returned at once");
    produce(&broker, "t", 0, 1).await;
    assert_eq!(consumer.poll(Duration::from_secs(30)).await.unwrap().len(), 1);
    // The handle outlives the consumer harmlessly.
    drop(consumer);
    waker.wakeup();
}

#[tokio::test]
async fn seek_to_timestamp_and_offsets_for_times() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    Admin::new(&broker).create_topic(NewTopic::new("t", 1)).await.unwrap();
    let producer = Producer::new(&broker, ProducerConfig::default()).unwrap();
    for i in 0..100i64 {
        producer.send(ProducerRecord::new("t", b"v").timestamp(10_000 + i * 10)).await.unwrap();
    }
    producer.close().await.unwrap();
    let consumer = Consumer::new(&broker, consumer_config(None)).unwrap();
    let tp = TopicPartition::new("t", 0);
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    consumer.seek_to_timestamp(std::slice::from_ref(&tp), 10_505).unwrap();
    assert_eq!(consumer.position(&tp).unwrap(), Some(51));
    let found = consumer.offsets_for_times(&[(tp.clone(), 10_500), (tp.clone(), 99_999)]).unwrap();
    assert_eq!(found[0].1, Some(fjord_log::TimestampAndOffset { offset: 50, timestamp: 10_500 }));
    assert_eq!(found[1].1, None);
}

#[tokio::test]
async fn committed_offsets_survive_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let tp = TopicPartition::new("t", 0);
    {
        let broker = broker(dir.path()).await;
        Admin::new(&broker).create_topic(NewTopic::new("t", 1)).await.unwrap();
        produce(&broker, "t", 0, 100).await;
        let consumer = Consumer::new(&broker, consumer_config(Some("g"))).unwrap();
        consumer.assign(std::slice::from_ref(&tp)).unwrap();
        poll_n(&consumer, 100).await;
        consumer.commit_offsets(&[(tp.clone(), 60)]).await.unwrap();
        consumer.close().await.unwrap();
        broker.shutdown().await.unwrap();
    }
    let broker = broker(dir.path()).await;
    let consumer = Consumer::new(&broker, consumer_config(Some("g"))).unwrap();
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    assert_eq!(consumer.committed(std::slice::from_ref(&tp)).unwrap()[&tp], 60);
    let records = poll_n(&consumer, 40).await;
    assert_eq!(records[0].offset, 60, "resumes from the committed offset");
}

/// Records what the rebalance callbacks saw and commits, in the revoke callback, exactly what
/// the consumer has handed out so far.
struct CommitOnRevoke {
    log: Mutex<Vec<(&'static str, Vec<TopicPartition>)>>,
}

#[async_trait::async_trait]
impl ConsumerRebalanceListener for CommitOnRevoke {
    async fn on_partitions_revoked(&self, consumer: &Consumer, partitions: &[TopicPartition]) {
        let positions = consumer.positions();
        let offsets: Vec<_> = partitions
            .iter()
            .filter_map(|tp| positions.get(tp).map(|o| (tp.clone(), *o)))
            .collect();
        if !offsets.is_empty() {
            consumer.commit_offsets(&offsets).await.unwrap();
        }
        self.log.lock().push(("revoked", partitions.to_vec()));
    }

    async fn on_partitions_assigned(&self, _consumer: &Consumer, partitions: &[TopicPartition]) {
        self.log.lock().push(("assigned", partitions.to_vec()));
    }
}

#[tokio::test]
async fn three_members_share_six_partitions_and_a_leaver_loses_nothing_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    Admin::new(&broker).create_topic(NewTopic::new("orders", 6)).await.unwrap();
    produce(&broker, "orders", 0, 3000).await;
    let consumers: Vec<Arc<Consumer>> = (0..3)
        .map(|i| {
            let config = ConsumerConfig {
                client_id: format!("c{i}"),
                max_poll_records: 100,
                ..consumer_config(Some("shared"))
            };
            Arc::new(Consumer::new(&broker, config).unwrap())
        })
        .collect();
    let listeners: Vec<Arc<CommitOnRevoke>> =
        (0..3).map(|_| Arc::new(CommitOnRevoke { log: Mutex::new(Vec::new()) })).collect();
    for (c, l) in consumers.iter().zip(&listeners) {
        c.set_rebalance_listener(l.clone());
        c.subscribe(&["orders"]).unwrap();
    }
    // Poll all three together until everyone has partitions and the group is stable.
    let seen: Arc<Mutex<Vec<(TopicPartition, i64, u32)>>> = Arc::default();
    let poll_round = |consumers: Vec<Arc<Consumer>>,
                      seen: Arc<Mutex<Vec<(TopicPartition, i64, u32)>>>| async move {
        let tasks: Vec<_> = consumers
            .into_iter()
            .map(|c| {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let records = c.poll(Duration::from_millis(100)).await.unwrap();
                    let mut seen = seen.lock();
                    for r in &records {
                        seen.push((r.topic_partition(), r.offset, value(r)));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    };
    // Consume about half of the records with three members.
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().len() < 1500 {
        assert!(Instant::now() < deadline, "three members consumed only {}", seen.lock().len());
        poll_round(consumers.clone(), seen.clone()).await;
    }
    let assignments: Vec<BTreeSet<TopicPartition>> =
        consumers.iter().map(|c| c.assignment().into_iter().collect()).collect();
    assert!(
        assignments.iter().all(|a| a.len() == 2),
        "six partitions over three members: {assignments:?}"
    );
    let all: BTreeSet<_> = assignments.iter().flatten().cloned().collect();
    assert_eq!(all.len(), 6, "no partition owned twice, none unowned");
    // One member leaves: close runs its revoke callback, which commits what it processed.
    consumers[2].close().await.unwrap();
    let remaining = vec![consumers[0].clone(), consumers[1].clone()];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        poll_round(remaining.clone(), seen.clone()).await;
        let total: usize = remaining.iter().map(|c| c.assignment().len()).sum();
        let done = seen.lock().len() >= 3000 && total == 6;
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the leave: {} records, {total} partitions",
            seen.lock().len()
        );
    }
    // Every record exactly once: the revoke callback committed the leaver's positions and the
    // new owners resumed from them.
    let seen = seen.lock();
    let unique: BTreeSet<_> = seen.iter().map(|(tp, o, _)| (tp.clone(), *o)).collect();
    assert_eq!(unique.len(), seen.len(), "a record was processed twice");
    assert_eq!(seen.len(), 3000);
    let values: BTreeSet<u32> = seen.iter().map(|s| s.2).collect();
    assert_eq!(values, (0..3000).collect());
    // The leaver's revoke callback ran with its partitions.
    assert!(listeners[2].log.lock().iter().any(|(what, p)| *what == "revoked" && !p.is_empty()));
}

#[tokio::test]
async fn a_member_that_stops_heartbeating_is_evicted_and_its_partitions_move() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    Admin::new(&broker).create_topic(NewTopic::new("t", 4)).await.unwrap();
    let config = |id: &str| ConsumerConfig {
        client_id: id.into(),
        session_timeout: Duration::from_millis(300),
        heartbeat_interval: Duration::from_millis(50),
        ..consumer_config(Some("g"))
    };
    let a = Consumer::new(&broker, config("a")).unwrap();
    let b = Consumer::new(&broker, config("b")).unwrap();
    a.subscribe(&["t"]).unwrap();
    b.subscribe(&["t"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while a.assignment().len() + b.assignment().len() != 4
        || a.assignment().is_empty()
        || b.assignment().is_empty()
    {
        assert!(Instant::now() < deadline);
        let (ra, rb) =
            tokio::join!(a.poll(Duration::from_millis(50)), b.poll(Duration::from_millis(50)));
        ra.unwrap();
        rb.unwrap();
    }
    // `b` goes silent: dropping it stops its heartbeats without leaving the group.
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(20);
    while a.assignment().len() != 4 {
        assert!(Instant::now() < deadline, "the silent member was never evicted");
        a.poll(Duration::from_millis(100)).await.unwrap();
    }
    let described = Admin::new(&broker).describe_group("g").unwrap();
    assert_eq!(described.members.len(), 1);
}

#[tokio::test]
async fn pattern_subscriptions_pick_up_new_topics() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let admin = Admin::new(&broker);
    admin.create_topic(NewTopic::new("metrics.cpu", 1)).await.unwrap();
    admin.create_topic(NewTopic::new("logs", 1)).await.unwrap();
    let consumer = Consumer::new(
        &broker,
        ConsumerConfig {
            metadata_max_age: Duration::from_millis(50),
            ..consumer_config(Some("p"))
        },
    )
    .unwrap();
    consumer.subscribe_pattern("metrics\\..*").unwrap();
    consumer.poll(Duration::from_millis(50)).await.unwrap();
    assert_eq!(consumer.assignment(), vec![TopicPartition::new("metrics.cpu", 0)]);
    admin.create_topic(NewTopic::new("metrics.mem", 1)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while consumer.assignment().len() != 2 {
        assert!(Instant::now() < deadline, "new topic not picked up: {:?}", consumer.assignment());
        consumer.poll(Duration::from_millis(60)).await.unwrap();
    }
}

#[tokio::test]
async fn lag_reset_offsets_and_group_admin() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let admin = Admin::new(&broker);
    admin.create_topic(NewTopic::new("t", 2)).await.unwrap();
    produce(&broker, "t", 0, 200).await;
    let consumer = Consumer::new(
        &broker,
        ConsumerConfig { assignors: vec![Arc::new(RangeAssignor)], ..consumer_config(Some("g")) },
    )
    .unwrap();
    let mut events = consumer.events();
    consumer.subscribe(&["t"]).unwrap();
    poll_n(&consumer, 200).await;
    consumer.commit_sync().await.unwrap();
    let lag = admin.group_lag("g", None).unwrap();
    assert_eq!(lag.iter().map(|l| l.lag).sum::<i64>(), 0);
    produce(&broker, "t", 200, 50).await;
    let lag = admin.group_lag("g", None).unwrap();
    assert_eq!(lag.iter().map(|l| l.lag).sum::<i64>(), 50);
    // The group joined with one member, and its events said so.
    let mut joined = false;
    while let Ok(event) = events.try_recv() {
        if let ClientEvent::GroupJoined { member_assignment, is_leader, .. } = event {
            assert_eq!(member_assignment.len(), 2);
            assert!(is_leader);
            joined = true;
        }
    }
    assert!(joined);
    // Reset is refused while the group has members.
    let tps: Vec<_> = (0..2).map(|p| TopicPartition::new("t", p)).collect();
    let err = admin.reset_group_offsets("g", &tps, OffsetResetSpec::Earliest).await.unwrap_err();
    assert!(matches!(err, BrokerError::NonEmptyGroup(_)), "{err}");
    consumer.close().await.unwrap();
    let reset = admin.reset_group_offsets("g", &tps, OffsetResetSpec::Offset(10)).await.unwrap();
    assert_eq!(reset.values().copied().collect::<Vec<_>>(), [10, 10]);
    assert_eq!(admin.group_lag("g", None).unwrap().iter().map(|l| l.lag).sum::<i64>(), 250 - 20);
    let earliest = admin.list_offsets(&[(tps[0].clone(), OffsetSpec::Earliest)]).unwrap();
    assert_eq!(earliest[0].1.offset, 0);
    let groups = admin.list_groups();
    assert!(groups.iter().any(|g| g.group_id == "g"));
    admin.delete_group("g").await.unwrap();
    assert!(admin.list_group_offsets("g").map(|o| o.is_empty()).unwrap_or(true));
    let _ = BTreeMap::<(), ()>::new();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_polling_in_short_rounds_settle_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    Admin::new(&broker).create_topic(NewTopic::new("t", 6)).await.unwrap();
    let consumers: Vec<Arc<Consumer>> = (0..3)
        .map(|i| {
            let config = ConsumerConfig {
                client_id: format!("m{i}"),
                session_timeout: Duration::from_secs(10),
                heartbeat_interval: Duration::from_secs(1),
                ..consumer_config(Some("short"))
            };
            Arc::new(Consumer::new(&broker, config).unwrap())
        })
        .collect();
    for c in &consumers {
        c.subscribe(&["t"]).unwrap();
    }
    let started = Instant::now();
    loop {
        let tasks: Vec<_> = consumers
            .iter()
            .cloned()
            .map(|c| tokio::spawn(async move { c.poll(Duration::from_millis(20)).await.unwrap() }))
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        if consumers.iter().all(|c| c.assignment().len() == 2) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not settled after {:?}",
            started.elapsed()
        );
    }
}
