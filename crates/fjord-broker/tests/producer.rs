//! The producer against the real broker on a real disk: partitioning, batching, ordering,
//! idempotence, flush, back-pressure and errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use fjord_broker::{
    Admin, Broker, BrokerConfig, BrokerError, NewTopic, Producer, ProducerConfig, ProducerRecord,
};
use fjord_log::partitioner::partition_for_key;
use fjord_log::record::{BatchIter, Header};
use fjord_log::{FetchIsolation, LogError, TopicPartition};

async fn broker(dir: &std::path::Path) -> Broker {
    let mut config = BrokerConfig::new(dir);
    config.offsets_topic_num_partitions = 2;
    config.transaction_state_log_num_partitions = 2;
    config.log.background = false;
    Broker::open(config).await.unwrap()
}

/// A stored record as (offset, key, value, header keys).
type Stored = (i64, Vec<u8>, Vec<u8>, Vec<String>);

/// Every record of a partition.
fn read_partition(broker: &Broker, tp: &TopicPartition) -> Vec<Stored> {
    let log = broker.partition(tp).unwrap();
    let mut out = Vec::new();
    let mut offset = 0;
    let mut scratch = Vec::new();
    while let Some(next) =
        log.read(offset, 1 << 20, FetchIsolation::HighWatermark).unwrap().next_offset
    {
        let data = log.read(offset, 1 << 20, FetchIsolation::HighWatermark).unwrap();
        for batch in BatchIter::new(&data.records) {
            for r in batch.unwrap().records(&mut scratch).unwrap() {
                let r = r.unwrap();
                out.push((
                    r.offset,
                    r.key.unwrap_or_default().to_vec(),
                    r.value.unwrap_or_default().to_vec(),
                    r.headers.iter().map(|h| h.key.to_string()).collect(),
                ));
            }
        }
        offset = next;
    }
    out
}

#[tokio::test]
async fn keyed_records_land_on_their_murmur2_partition_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    Admin::new(&broker).create_topic(NewTopic::new("orders", 6)).await.unwrap();
    let producer = Producer::new(&broker, ProducerConfig::default()).unwrap();
    let mut futures = Vec::new();
    for i in 0..3000u32 {
        let key = format!("customer-{}", i % 50);
        let value = format!("{i}");
        let headers = [Header { key: "n", value: Some(value.as_bytes()) }];
        let record =
            ProducerRecord::new("orders", value.as_bytes()).key(key.as_bytes()).headers(&headers);
        let future = producer.send(record).await.unwrap();
        futures.push((key.clone(), future));
    }
    for (key, future) in futures {
        let metadata = future.await.unwrap();
        assert_eq!(metadata.partition.partition, partition_for_key(key.as_bytes(), 6));
    }
    let mut seen = 0;
    for p in 0..6 {
        let records = read_partition(&broker, &TopicPartition::new("orders", p));
        let mut last_per_key: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
        for (i, (offset, key, value, headers)) in records.iter().enumerate() {
            assert_eq!(*offset, i as i64);
            assert_eq!(partition_for_key(key, 6), p);
            assert_eq!(headers, &["n"]);
            let n: u32 = String::from_utf8(value.clone()).unwrap().parse().unwrap();
            if let Some(previous) = last_per_key.insert(key.clone(), n) {
                assert!(previous < n, "per-key order");
            }
            seen += 1;
        }
    }
    assert_eq!(seen, 3000);
    producer.close().await.unwrap();
}

#[tokio::test]
async fn records_batch_up_by_batch_size_and_linger() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    Admin::new(&broker).create_topic(NewTopic::new("t", 1)).await.unwrap();
    let config = ProducerConfig {
        linger: Duration::from_secs(3600),
        batch_size: 10_000,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(&broker, config).unwrap();
    let value = [7u8; 100];
    let mut futures = Vec::new();
    for _ in 0..250 {
        futures.push(producer.send(ProducerRecord::new("t", &value)).await.unwrap());
    }
    // Full batches went out without waiting for the (hour-long) linger; the rest waits.
    let log = broker.partition(&TopicPartition::new("t", 0)).unwrap();
    let first = futures.remove(0).await.unwrap();
    assert_eq!(first.offset, 0);
    assert!(log.log_end_offset() < 250, "the last partial batch waits for linger or flush");
    producer.flush().await.unwrap();
    assert_eq!(log.log_end_offset(), 250);
    let data = log.read(0, 1 << 30, FetchIsolation::HighWatermark).unwrap();
    let batches = BatchIter::new(&data.records).count();
    assert!((3..=5).contains(&batches), "about 10 KB per batch: {batches} batches");
    for (i, f) in futures.into_iter().enumerate() {
        assert_eq!(f.await.unwrap().offset, i as i64 + 1);
    }
}

#[tokio::test]
async fn idempotent_batches_carry_the_producer_id_and_a_retry_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    Admin::new(&broker).create_topic(NewTopic::new("t", 1)).await.unwrap();
    let producer = Producer::new(&broker, ProducerConfig::default()).unwrap();
    let (pid, epoch) = producer.producer_id();
    assert!(pid >= 0);
    assert_eq!(epoch, 0);
    for i in 0..3u8 {
        producer.send_and_wait(ProducerRecord::new("t", &[i])).await.unwrap();
    }
    let tp = TopicPartition::new("t", 0);
    let log = broker.partition(&tp).unwrap();
    let data = log.read(0, 1 << 20, FetchIsolation::HighWatermark).unwrap();
    let headers: Vec<_> = BatchIter::new(&data.records).map(|b| *b.unwrap().header()).collect();
    assert_eq!(headers.iter().map(|h| h.base_sequence).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(headers.iter().all(|h| h.producer_id == pid));
    // A retry of the last batch (same producer, epoch, sequence) is answered with the original
    // offset and not stored again.
    let last = BatchIter::new(&data.records).last().unwrap().unwrap().as_bytes().to_vec();
    let info = broker.produce(tp.clone(), last).await.unwrap();
    assert!(info.duplicate);
    assert_eq!(info.first_offset, 2);
    assert_eq!(log.log_end_offset(), 3);
    // A gap in sequences is refused with Kafka's error.
    let mut builder = fjord_log::record::RecordBatchBuilder::new(Default::default());
    builder.append(0, None, Some(b"x"), &[]);
    builder.set_producer(pid, 0, 7);
    let err = broker.produce(tp, builder.build().unwrap()).await.unwrap_err();
    assert!(
        matches!(err, BrokerError::Log(LogError::OutOfOrderSequence { expected: 3, found: 7, .. })),
        "{err}"
    );
}

#[tokio::test]
async fn small_buffers_apply_back_pressure_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    Admin::new(&broker).create_topic(NewTopic::new("t", 3)).await.unwrap();
    let config = ProducerConfig {
        batch_size: 2_000,
        buffer_memory: 4_000,
        linger: Duration::from_secs(3600),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(&broker, config).unwrap();
    let value = [1u8; 300];
    for i in 0..2_000u32 {
        let key = i.to_be_bytes();
        producer.send(ProducerRecord::new("t", &value).key(&key)).await.unwrap();
    }
    producer.flush().await.unwrap();
    let total: i64 = (0..3)
        .map(|p| broker.partition(&TopicPartition::new("t", p)).unwrap().log_end_offset())
        .sum();
    assert_eq!(total, 2_000);
}

#[tokio::test]
async fn bad_sends_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    Admin::new(&broker).create_topic(NewTopic::new("t", 2)).await.unwrap();
    let producer = Producer::new(
        &broker,
        ProducerConfig { max_request_size: 1000, ..ProducerConfig::default() },
    )
    .unwrap();
    let err = producer.send(ProducerRecord::new("nope", b"x")).await.unwrap_err();
    assert!(matches!(err, BrokerError::Log(LogError::UnknownTopic(_))), "{err}");
    let err = producer.send(ProducerRecord::new("t", b"x").partition(5)).await.unwrap_err();
    assert!(
        matches!(err, BrokerError::Log(LogError::UnknownPartition { partitions: 2, .. })),
        "{err}"
    );
    let err = producer.send(ProducerRecord::new("t", &[0u8; 2000])).await.unwrap_err();
    assert!(matches!(err, BrokerError::RecordTooLarge { .. }), "{err}");
    producer.close().await.unwrap();
    let err = producer.send(ProducerRecord::new("t", b"x")).await.unwrap_err();
    assert!(matches!(err, BrokerError::Closed(_)), "{err}");
}

#[tokio::test]
async fn auto_creation_creates_unknown_topics_when_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::new(dir.path());
    config.auto_create_topics_enable = true;
    config.num_partitions = 3;
    config.offsets_topic_num_partitions = 1;
    config.transaction_state_log_num_partitions = 1;
    let broker = Broker::open(config).await.unwrap();
    let producer = Producer::new(&broker, ProducerConfig::default()).unwrap();
    producer.send_and_wait(ProducerRecord::new("fresh", b"x")).await.unwrap();
    assert_eq!(broker.logs().topic("fresh").unwrap().partition_count(), 3);
}
