//! Commits that fail, injected between the runtime and the real embedded broker: a backend that
//! is the embedded one except that its consumers refuse a given number of offset commits with
//! the error Kafka gives while the group is between its members' joins and the leader's
//! assignment (`REBALANCE_IN_PROGRESS`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fjord_broker::{
    Admin, Broker, BrokerConfig, BrokerError, ConsumerGroupMetadata, NewTopic, Producer,
    ProducerConfig, ProducerRecord, TopicPartition,
};
use fjord_streams::backend::{
    ConsumerSpec, PollWaker, ProducerSpec, RestoreConsumer, StreamConsumer, StreamProducer,
    TopicSpec,
};
use fjord_streams::{
    Backend, Consumed, EmbeddedBackend, Materialized, RawRecord, Serdes, Streams, StreamsBuilder,
    StreamsConfig, StreamsError, StreamsState,
};

/// The embedded backend, with consumers that refuse the next `refusals` commits.
struct RefusingBackend {
    embedded: EmbeddedBackend,
    refusals: Arc<AtomicUsize>,
}

struct RefusingConsumer {
    consumer: Box<dyn StreamConsumer>,
    group: String,
    refusals: Arc<AtomicUsize>,
}

#[async_trait]
impl Backend for RefusingBackend {
    async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<(), StreamsError> {
        self.embedded.ensure_topics(topics).await
    }

    async fn partition_count(&self, topic: &str) -> Result<Option<u32>, StreamsError> {
        self.embedded.partition_count(topic).await
    }

    async fn consumer(&self, spec: ConsumerSpec) -> Result<Box<dyn StreamConsumer>, StreamsError> {
        let group = spec.group_id.clone();
        let consumer = self.embedded.consumer(spec).await?;
        Ok(Box::new(RefusingConsumer { consumer, group, refusals: self.refusals.clone() }))
    }

    async fn producer(&self, spec: ProducerSpec) -> Result<Box<dyn StreamProducer>, StreamsError> {
        self.embedded.producer(spec).await
    }

    async fn restore_consumer(
        &self,
        client_id: String,
        read_committed: bool,
    ) -> Result<Box<dyn RestoreConsumer>, StreamsError> {
        self.embedded.restore_consumer(client_id, read_committed).await
    }

    async fn end_offsets(
        &self,
        partitions: &[TopicPartition],
        read_committed: bool,
    ) -> Result<Vec<i64>, StreamsError> {
        self.embedded.end_offsets(partitions, read_committed).await
    }

    async fn delete_records(&self, before: &[(TopicPartition, i64)]) -> Result<(), StreamsError> {
        self.embedded.delete_records(before).await
    }
}

#[async_trait]
impl StreamConsumer for RefusingConsumer {
    fn subscribe(&mut self, topics: &[String]) -> Result<(), StreamsError> {
        self.consumer.subscribe(topics)
    }

    async fn unsubscribe(&mut self) -> Result<(), StreamsError> {
        self.consumer.unsubscribe().await
    }

    async fn poll(&mut self, timeout: Duration) -> Result<Vec<RawRecord>, StreamsError> {
        self.consumer.poll(timeout).await
    }

    fn assignment(&self) -> Vec<TopicPartition> {
        self.consumer.assignment()
    }

    fn rebalance_pending(&self) -> bool {
        self.consumer.rebalance_pending()
    }

    async fn commit(&mut self, offsets: &[(TopicPartition, i64)]) -> Result<(), StreamsError> {
        let refuse =
            self.refusals.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        if refuse.is_ok() {
            return Err(BrokerError::RebalanceInProgress(self.group.clone()).into());
        }
        self.consumer.commit(offsets).await
    }

    fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        self.consumer.group_metadata()
    }

    fn pause(&mut self, partitions: &[TopicPartition]) -> Result<(), StreamsError> {
        self.consumer.pause(partitions)
    }

    fn resume(&mut self, partitions: &[TopicPartition]) -> Result<(), StreamsError> {
        self.consumer.resume(partitions)
    }

    async fn close(&mut self) -> Result<(), StreamsError> {
        self.consumer.close().await
    }

    fn waker(&self) -> PollWaker {
        self.consumer.waker()
    }
}

/// Kafka's advice for `RebalanceInProgressException` is to poll, which completes the
/// rebalance, and commit again. Fjord does that: the refused commits are neither failures nor a
/// reason to leave the group (which would rebalance it once more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_refused_mid_rebalance_wait_for_the_next_poll_and_keep_the_member() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(BrokerConfig::new(dir.path())).await.unwrap();
    let admin = Admin::new(&broker);
    admin.create_topic(NewTopic::new("words", 1)).await.unwrap();
    let producer = Producer::new(&broker, ProducerConfig::default()).unwrap();
    for i in 0..100 {
        let word = format!("w{}", i % 10);
        producer.send(ProducerRecord::new("words", b"x").key(word.as_bytes())).await.unwrap();
    }
    producer.close().await.unwrap();

    let builder = StreamsBuilder::new();
    builder
        .stream("words", Consumed::with(Serdes::string(), Serdes::string()))
        .group_by_key()
        .count(Materialized::named("counts"));
    let refusals = Arc::new(AtomicUsize::new(3));
    let backend = RefusingBackend { embedded: EmbeddedBackend::new(&broker), refusals };
    let config = StreamsConfig {
        commit_interval: Some(Duration::from_millis(20)),
        state_dir: dir.path().join("state"),
        ..StreamsConfig::new("refused")
    };
    let mut streams = Streams::new(builder.build().unwrap(), Arc::new(backend), config).unwrap();
    streams.start().await.unwrap();
    streams.wait_for_state(StreamsState::Running, Duration::from_secs(20)).await.unwrap();

    // The commit after the refused ones goes through.
    let input = TopicPartition::new("words", 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let committed = admin.list_group_offsets("refused").unwrap();
        if committed.get(&input).map(|o| o.offset) == Some(100) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the input's offsets were never committed: {committed:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // No commit failed, and the member never left: the group is in its first generation.
    assert_eq!(streams.failed_commits(), 0);
    let group = admin.describe_group("refused").unwrap();
    assert_eq!((group.generation_id, group.members.len()), (1, 1), "{group:?}");
    let counts = streams.key_value_store("counts", Serdes::string(), Serdes::i64()).unwrap();
    for i in 0..10 {
        assert_eq!(counts.get(&format!("w{i}")).unwrap(), Some(10));
    }
    streams.close().await.unwrap();
}
