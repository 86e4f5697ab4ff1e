//! The storage backend the runtime runs on: topics, a consumer with group membership, and a
//! (transactional) producer. Nothing above this module knows which backend is in use.
//!
//! [`EmbeddedBackend`] runs on Fjord's in-process broker; a Kafka backend on rdkafka
//! (`fjord-kafka`, not built yet) is meant to implement the same trait. The shape follows what
//! both can do: consumers that subscribe as group members and report when a rebalance is
//! coming, producers whose `send` is synchronous (the stream thread is a thread of its own) and
//! whose transactions take consumed offsets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fjord_broker::{
    Admin, Broker, BrokerError, ConsumerConfig, ConsumerGroupMetadata, IsolationLevel, NewTopic,
    OffsetReset, OffsetSpec, Producer, ProducerConfig, ProducerRecord,
};
use fjord_log::record::Header as LogHeader;
use fjord_log::{LogError, TopicPartition};

use crate::error::StreamsError;
use crate::node::RawRecord;
use crate::record::Headers;

/// A topic to create if it does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// The name.
    pub name: String,
    /// Partitions.
    pub partitions: u32,
    /// Config overrides (Kafka names).
    pub configs: BTreeMap<String, String>,
}

/// How the runtime's consumer is set up.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// `group.id`: the application id.
    pub group_id: String,
    /// `client.id`.
    pub client_id: String,
    /// Read committed data only (exactly-once).
    pub read_committed: bool,
    /// Most records one poll returns.
    pub max_poll_records: usize,
    /// `session.timeout.ms`.
    pub session_timeout: Duration,
    /// `max.poll.interval.ms`.
    pub max_poll_interval: Duration,
    /// The partition assignor (`partition.assignment.strategy`): Fjord's streams assignor,
    /// which assigns as the range assignor does (partition `p` of co-partitioned topics to one
    /// member) and tells every member which instance's endpoint owns which partitions.
    pub assignor: Arc<dyn fjord_broker::consumer::assignor::PartitionAssignor>,
    /// Told when the consumer gives partitions up.
    pub revocations: Arc<dyn RevocationListener>,
}

/// What the runtime hears of partitions a stream thread's consumer gives up (Kafka's
/// `onPartitionsRevoked` and `onPartitionsLost`). A backend calls it from inside `poll`, before
/// the member rejoins its group, so before any other member can be assigned the partitions.
pub trait RevocationListener: Send + Sync + std::fmt::Debug {
    /// The consumer no longer holds `partitions`.
    fn on_partitions_revoked(&self, partitions: &[TopicPartition]);
}

/// A stream thread consumer's rebalance listener on the embedded broker: revocations go to
/// the runtime's [`RevocationListener`], and an assignment ends the `poll` that got it, so that
/// the thread creates and closes its tasks now rather than when data or the poll timeout come.
struct EmbeddedRebalanceListener(Arc<dyn RevocationListener>);

#[async_trait]
impl fjord_broker::ConsumerRebalanceListener for EmbeddedRebalanceListener {
    async fn on_partitions_revoked(
        &self,
        _consumer: &fjord_broker::Consumer,
        partitions: &[TopicPartition],
    ) {
        self.0.on_partitions_revoked(partitions);
    }

    async fn on_partitions_assigned(
        &self,
        consumer: &fjord_broker::Consumer,
        _partitions: &[TopicPartition],
    ) {
        consumer.wakeup();
    }
}

/// How the runtime's producer is set up.
#[derive(Debug, Clone)]
pub struct ProducerSpec {
    /// `client.id`.
    pub client_id: String,
    /// A transactional id for exactly-once, else none.
    pub transactional_id: Option<String>,
}

/// A backend.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Creates the topics that do not exist yet; existing ones are left as they are.
    async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<(), StreamsError>;
    /// The partition count of a topic, `None` if it does not exist.
    async fn partition_count(&self, topic: &str) -> Result<Option<u32>, StreamsError>;
    /// A consumer that will subscribe as a member of `spec.group_id`.
    async fn consumer(&self, spec: ConsumerSpec) -> Result<Box<dyn StreamConsumer>, StreamsError>;
    /// A producer.
    async fn producer(&self, spec: ProducerSpec) -> Result<Box<dyn StreamProducer>, StreamsError>;
    /// A consumer outside any group, for restoring stores from their changelogs.
    async fn restore_consumer(
        &self,
        client_id: String,
        read_committed: bool,
    ) -> Result<Box<dyn RestoreConsumer>, StreamsError>;
    /// The end of each partition as a reader sees it now: the high watermark, or the last
    /// stable offset when `read_committed`.
    async fn end_offsets(
        &self,
        partitions: &[TopicPartition],
        read_committed: bool,
    ) -> Result<Vec<i64>, StreamsError>;
    /// Deletes the records of each partition before its offset (Kafka's `DeleteRecords`).
    async fn delete_records(&self, before: &[(TopicPartition, i64)]) -> Result<(), StreamsError>;
}

/// Reads changelog partitions from given offsets (Kafka Streams' restore consumer).
#[async_trait]
pub trait RestoreConsumer: Send {
    /// Reads these partitions, each from its offset (out of range: from the earliest).
    fn assign(&mut self, partitions: &[(TopicPartition, i64)]) -> Result<(), StreamsError>;
    /// Fetches records.
    async fn poll(&mut self, timeout: Duration) -> Result<Vec<RawRecord>, StreamsError>;
    /// The next offset it will read of a partition.
    fn position(&self, partition: &TopicPartition) -> Result<i64, StreamsError>;
    /// A handle that ends a waiting `poll` from another thread, as [`StreamConsumer::waker`].
    fn waker(&self) -> PollWaker;
}

/// The consumer side of a stream thread.
#[async_trait]
pub trait StreamConsumer: Send {
    /// Subscribes to topics as a group member (with [`ConsumerSpec::assignor`]).
    fn subscribe(&mut self, topics: &[String]) -> Result<(), StreamsError>;
    /// Leaves the group and drops the assignment; a later `subscribe` and `poll` join again
    /// and resume from the committed offsets.
    async fn unsubscribe(&mut self) -> Result<(), StreamsError>;
    /// Fetches records (running the group protocol as needed). A poll in which the consumer
    /// gets a new assignment returns once it has it, so that the thread acts on it at once.
    async fn poll(&mut self, timeout: Duration) -> Result<Vec<RawRecord>, StreamsError>;
    /// The partitions assigned now.
    fn assignment(&self) -> Vec<TopicPartition>;
    /// Whether the next poll will rebalance: commit progress first.
    fn rebalance_pending(&self) -> bool;
    /// Commits offsets (the next offset to read) for the group.
    async fn commit(&mut self, offsets: &[(TopicPartition, i64)]) -> Result<(), StreamsError>;
    /// The group position, for transactional offset commits.
    fn group_metadata(&self) -> Option<ConsumerGroupMetadata>;
    /// Stops fetching partitions whose task has enough buffered.
    fn pause(&mut self, partitions: &[TopicPartition]) -> Result<(), StreamsError>;
    /// Fetches them again.
    fn resume(&mut self, partitions: &[TopicPartition]) -> Result<(), StreamsError>;
    /// Leaves the group.
    async fn close(&mut self) -> Result<(), StreamsError>;
    /// A handle that ends a waiting `poll` from another thread (Kafka's `wakeup`), so that
    /// closing an application does not wait out a poll timeout.
    fn waker(&self) -> PollWaker;
}

/// Ends a stream thread's waiting poll: [`StreamConsumer::waker`].
pub type PollWaker = Arc<dyn Fn() + Send + Sync>;

/// The producer side of a stream thread.
#[async_trait]
pub trait StreamProducer: Send {
    /// Queues a record; blocks the thread only while the producer's buffer is full. Failures
    /// are reported by the next `flush`.
    fn send(
        &mut self,
        topic: &str,
        partition: Option<u32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &Headers,
        timestamp: i64,
    ) -> Result<(), StreamsError>;
    /// The partition count of a topic.
    fn partition_count(&mut self, topic: &str) -> Result<u32, StreamsError>;
    /// Waits until everything queued is written; fails if any of it failed.
    async fn flush(&mut self) -> Result<(), StreamsError>;
    /// Registers the transactional id (fencing older instances).
    async fn init_transactions(&mut self) -> Result<(), StreamsError>;
    /// Starts a transaction.
    fn begin_transaction(&mut self) -> Result<(), StreamsError>;
    /// Adds consumed offsets to the transaction, checked against the group generation.
    async fn send_offsets_to_transaction(
        &mut self,
        offsets: &[(TopicPartition, i64)],
        group: &ConsumerGroupMetadata,
    ) -> Result<(), StreamsError>;
    /// Commits the transaction.
    async fn commit_transaction(&mut self) -> Result<(), StreamsError>;
    /// Aborts the transaction.
    async fn abort_transaction(&mut self) -> Result<(), StreamsError>;
    /// Sends what is queued and stops.
    async fn close(&mut self) -> Result<(), StreamsError>;
}

/// The embedded broker as a backend.
#[derive(Debug, Clone)]
pub struct EmbeddedBackend {
    broker: Broker,
}

impl EmbeddedBackend {
    /// A backend on `broker`.
    pub fn new(broker: &Broker) -> Self {
        EmbeddedBackend { broker: broker.clone() }
    }

    /// The broker.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }
}

#[async_trait]
impl Backend for EmbeddedBackend {
    async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<(), StreamsError> {
        let admin = Admin::new(&self.broker);
        let mut new = Vec::new();
        for spec in topics {
            if self.broker.logs().topic(&spec.name).is_err() {
                let mut topic = NewTopic::new(spec.name.as_str(), spec.partitions as i32);
                topic.configs = spec.configs.clone();
                new.push(topic);
            }
        }
        for (name, result) in admin.create_topics(new).await {
            match result {
                Ok(()) | Err(BrokerError::Log(LogError::TopicExists(_))) => {}
                Err(e) => {
                    return Err(StreamsError::IllegalState(format!(
                        "cannot create internal topic `{name}`: {e}"
                    )));
                }
            }
        }
        Ok(())
    }

    async fn partition_count(&self, topic: &str) -> Result<Option<u32>, StreamsError> {
        Ok(self.broker.logs().topic(topic).ok().map(|t| t.partition_count()))
    }

    async fn consumer(&self, spec: ConsumerSpec) -> Result<Box<dyn StreamConsumer>, StreamsError> {
        let config = ConsumerConfig {
            client_id: spec.client_id,
            group_id: Some(spec.group_id),
            auto_offset_reset: OffsetReset::Earliest,
            enable_auto_commit: false,
            isolation_level: if spec.read_committed {
                IsolationLevel::ReadCommitted
            } else {
                IsolationLevel::ReadUncommitted
            },
            max_poll_records: spec.max_poll_records,
            assignors: vec![spec.assignor],
            // Kafka's rule of thumb: a third of the session timeout.
            heartbeat_interval: (spec.session_timeout / 3).min(Duration::from_millis(500)),
            session_timeout: spec.session_timeout,
            max_poll_interval: spec.max_poll_interval,
            ..ConsumerConfig::default()
        };
        let consumer = fjord_broker::Consumer::new(&self.broker, config)?;
        consumer.set_rebalance_listener(Arc::new(EmbeddedRebalanceListener(spec.revocations)));
        Ok(Box::new(EmbeddedConsumer { consumer }))
    }

    async fn producer(&self, spec: ProducerSpec) -> Result<Box<dyn StreamProducer>, StreamsError> {
        let config = ProducerConfig {
            client_id: spec.client_id,
            transactional_id: spec.transactional_id,
            batch_size: 256 * 1024,
            linger: Duration::from_millis(5),
            // Kafka Streams' exactly-once default: a transaction left open by a crashed
            // instance that does not come back is aborted after 10 s.
            transaction_timeout: Duration::from_secs(10),
            ..ProducerConfig::default()
        };
        let producer = Producer::new(&self.broker, config)?;
        Ok(Box::new(EmbeddedProducer {
            producer,
            broker: self.broker.clone(),
            header_scratch: Vec::new(),
        }))
    }

    async fn restore_consumer(
        &self,
        client_id: String,
        read_committed: bool,
    ) -> Result<Box<dyn RestoreConsumer>, StreamsError> {
        let config = ConsumerConfig {
            client_id,
            group_id: None,
            auto_offset_reset: OffsetReset::Earliest,
            enable_auto_commit: false,
            isolation_level: if read_committed {
                IsolationLevel::ReadCommitted
            } else {
                IsolationLevel::ReadUncommitted
            },
            max_poll_records: 10_000,
            ..ConsumerConfig::default()
        };
        Ok(Box::new(EmbeddedConsumer {
            consumer: fjord_broker::Consumer::new(&self.broker, config)?,
        }))
    }

    async fn end_offsets(
        &self,
        partitions: &[TopicPartition],
        read_committed: bool,
    ) -> Result<Vec<i64>, StreamsError> {
        let spec = if read_committed { OffsetSpec::LatestCommitted } else { OffsetSpec::Latest };
        partitions.iter().map(|tp| Ok(self.broker.list_offset(tp, spec)?.offset)).collect()
    }

    async fn delete_records(&self, before: &[(TopicPartition, i64)]) -> Result<(), StreamsError> {
        Admin::new(&self.broker).delete_records(before.to_vec()).await?;
        Ok(())
    }
}

struct EmbeddedConsumer {
    consumer: fjord_broker::Consumer,
}

fn raw_records(records: Vec<fjord_broker::ConsumerRecord>) -> Vec<RawRecord> {
    records
        .into_iter()
        .map(|r| {
            let headers = Headers::from_log(r.headers());
            RawRecord {
                topic: r.topic,
                partition: r.partition,
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key,
                value: r.value,
                headers,
            }
        })
        .collect()
}

#[async_trait]
impl RestoreConsumer for EmbeddedConsumer {
    fn assign(&mut self, partitions: &[(TopicPartition, i64)]) -> Result<(), StreamsError> {
        let tps: Vec<TopicPartition> = partitions.iter().map(|(tp, _)| tp.clone()).collect();
        self.consumer.assign(&tps)?;
        for (tp, offset) in partitions {
            self.consumer.seek(tp, *offset)?;
        }
        Ok(())
    }

    async fn poll(&mut self, timeout: Duration) -> Result<Vec<RawRecord>, StreamsError> {
        Ok(raw_records(self.consumer.poll(timeout).await?))
    }

    fn position(&self, partition: &TopicPartition) -> Result<i64, StreamsError> {
        Ok(self.consumer.position(partition)?.unwrap_or(0))
    }

    fn waker(&self) -> PollWaker {
        let waker = self.consumer.waker();
        Arc::new(move || waker.wakeup())
    }
}

#[async_trait]
impl StreamConsumer for EmbeddedConsumer {
    fn waker(&self) -> PollWaker {
        RestoreConsumer::waker(self)
    }

    fn subscribe(&mut self, topics: &[String]) -> Result<(), StreamsError> {
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        Ok(self.consumer.subscribe(&topics)?)
    }

    async fn unsubscribe(&mut self) -> Result<(), StreamsError> {
        Ok(self.consumer.unsubscribe().await?)
    }

    async fn poll(&mut self, timeout: Duration) -> Result<Vec<RawRecord>, StreamsError> {
        Ok(raw_records(self.consumer.poll(timeout).await?))
    }

    fn assignment(&self) -> Vec<TopicPartition> {
        self.consumer.assignment()
    }

    fn rebalance_pending(&self) -> bool {
        self.consumer.rebalance_pending()
    }

    async fn commit(&mut self, offsets: &[(TopicPartition, i64)]) -> Result<(), StreamsError> {
        Ok(self.consumer.commit_offsets(offsets).await?)
    }

    fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        self.consumer.group_metadata()
    }

    fn pause(&mut self, partitions: &[TopicPartition]) -> Result<(), StreamsError> {
        Ok(self.consumer.pause(partitions)?)
    }

    fn resume(&mut self, partitions: &[TopicPartition]) -> Result<(), StreamsError> {
        Ok(self.consumer.resume(partitions)?)
    }

    async fn close(&mut self) -> Result<(), StreamsError> {
        Ok(self.consumer.close().await?)
    }
}

struct EmbeddedProducer {
    producer: Producer,
    broker: Broker,
    header_scratch: Vec<(String, Option<bytes::Bytes>)>,
}

#[async_trait]
impl StreamProducer for EmbeddedProducer {
    fn send(
        &mut self,
        topic: &str,
        partition: Option<u32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &Headers,
        timestamp: i64,
    ) -> Result<(), StreamsError> {
        self.header_scratch.clear();
        self.header_scratch.extend(headers.iter().map(|h| (h.key.to_string(), h.value.clone())));
        let log_headers: Vec<LogHeader<'_>> = self
            .header_scratch
            .iter()
            .map(|(k, v)| LogHeader { key: k, value: v.as_deref() })
            .collect();
        let record = ProducerRecord {
            topic,
            partition,
            key,
            value,
            headers: &log_headers,
            timestamp: Some(timestamp),
        };
        // Delivery is checked at flush time, not per record.
        self.producer.send_blocking(record)?;
        Ok(())
    }

    fn partition_count(&mut self, topic: &str) -> Result<u32, StreamsError> {
        Ok(self.broker.partition_count(topic)?)
    }

    async fn flush(&mut self) -> Result<(), StreamsError> {
        self.producer.flush().await?;
        match self.producer.take_send_error() {
            Some(e) => Err(StreamsError::IllegalState(format!("sending records failed: {e}"))),
            None => Ok(()),
        }
    }

    async fn init_transactions(&mut self) -> Result<(), StreamsError> {
        Ok(self.producer.init_transactions().await?)
    }

    fn begin_transaction(&mut self) -> Result<(), StreamsError> {
        Ok(self.producer.begin_transaction()?)
    }

    async fn send_offsets_to_transaction(
        &mut self,
        offsets: &[(TopicPartition, i64)],
        group: &ConsumerGroupMetadata,
    ) -> Result<(), StreamsError> {
        Ok(self.producer.send_offsets_to_transaction(offsets, group).await?)
    }

    async fn commit_transaction(&mut self) -> Result<(), StreamsError> {
        Ok(self.producer.commit_transaction().await?)
    }

    async fn abort_transaction(&mut self) -> Result<(), StreamsError> {
        Ok(self.producer.abort_transaction().await?)
    }

    async fn close(&mut self) -> Result<(), StreamsError> {
        Ok(self.producer.close().await?)
    }
}
