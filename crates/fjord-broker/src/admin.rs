//! The admin client, as Kafka's `Admin`: topics, partitions, configs, offsets, consumer groups
//! and lag.

use std::collections::BTreeMap;

use fjord_log::config::ConfigEntry;
use fjord_log::topic::is_internal;
use fjord_log::{LogError, TopicId, TopicPartition};

use crate::broker::{Broker, ListedOffset, OffsetSpec};
use crate::error::{BrokerError, Result};
use crate::group::{GroupDescription, GroupListing, OffsetAndMetadata};
use crate::txn::TransactionMetadata;

/// A topic to create.
#[derive(Debug, Clone)]
pub struct NewTopic {
    /// The name.
    pub name: String,
    /// Partitions (`-1` for the broker default, `num.partitions`).
    pub num_partitions: i32,
    /// Replicas per partition: 1 (or -1 for the default); more is impossible on one node.
    pub replication_factor: i16,
    /// Config overrides with Kafka's names.
    pub configs: BTreeMap<String, String>,
}

impl NewTopic {
    /// A topic with `partitions` partitions and default configs.
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        NewTopic {
            name: name.into(),
            num_partitions: partitions,
            replication_factor: -1,
            configs: BTreeMap::new(),
        }
    }

    /// With a config override.
    pub fn config(mut self, name: &str, value: &str) -> Self {
        self.configs.insert(name.to_string(), value.to_string());
        self
    }
}

/// One partition in a topic description. A single node leads every partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The partition number.
    pub partition: u32,
    /// The leader's node id (always 0).
    pub leader: i32,
    /// Replica node ids (`[0]`).
    pub replicas: Vec<i32>,
    /// In-sync replica node ids (`[0]`).
    pub isr: Vec<i32>,
}

/// `DescribeTopics` for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// The name.
    pub name: String,
    /// The topic id.
    pub topic_id: TopicId,
    /// Whether it is internal (`__consumer_offsets`, `__transaction_state`).
    pub internal: bool,
    /// The partitions.
    pub partitions: Vec<PartitionInfo>,
}

/// An incremental config change (Kafka's `AlterConfigOp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterConfigOp {
    /// Set a config.
    Set(String, String),
    /// Remove an override, going back to the default.
    Delete(String),
}

/// A config as `DescribeConfigs` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedConfig {
    /// The config and its effective value.
    pub entry: ConfigEntry,
    /// Whether the topic overrides it.
    pub overridden: bool,
}

/// Where to reset a group's offsets to (`kafka-consumer-groups --reset-offsets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetResetSpec {
    /// The log start offset.
    Earliest,
    /// The log end offset.
    Latest,
    /// An offset (clamped to the log's range, as Kafka's tool does).
    Offset(i64),
    /// The first offset at or after a timestamp.
    Timestamp(i64),
}

/// Consumer lag of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// The partition.
    pub partition: TopicPartition,
    /// The group's committed offset, if any.
    pub committed: Option<i64>,
    /// The log end offset.
    pub log_end_offset: i64,
    /// `log_end_offset - committed` (the whole log when nothing is committed).
    pub lag: i64,
}

/// The admin client.
#[derive(Debug, Clone)]
pub struct Admin {
    broker: Broker,
}

impl Admin {
    /// An admin client on `broker`.
    pub fn new(broker: &Broker) -> Self {
        Admin { broker: broker.clone() }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Broker) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let broker = self.broker.clone();
        tokio::task::spawn_blocking(move || f(&broker))
            .await
            .map_err(|e| BrokerError::IllegalState(format!("admin task failed: {e}")))?
    }

    /// Creates topics; each gets its own result (Kafka's `CreateTopics`).
    pub async fn create_topics(&self, topics: Vec<NewTopic>) -> Vec<(String, Result<()>)> {
        let mut results = Vec::with_capacity(topics.len());
        for topic in topics {
            let name = topic.name.clone();
            let result = self
                .blocking(move |broker| {
                    if topic.replication_factor > 1
                        || topic.replication_factor == 0
                        || topic.replication_factor < -1
                    {
                        return Err(BrokerError::InvalidReplicationFactor(
                            topic.replication_factor,
                        ));
                    }
                    let partitions = match topic.num_partitions {
                        -1 => broker.config().num_partitions,
                        n if n >= 1 => n as u32,
                        n => {
                            return Err(LogError::InvalidPartitions {
                                topic: topic.name.clone(),
                                reason: format!(
                                    "{n} partitions: use at least 1 (or -1 for the default)"
                                ),
                            }
                            .into());
                        }
                    };
                    broker.logs().create_topic(&topic.name, partitions, topic.configs)?;
                    Ok(())
                })
                .await;
            results.push((name, result));
        }
        results
    }

    /// Creates one topic.
    pub async fn create_topic(&self, topic: NewTopic) -> Result<()> {
        let mut results = self.create_topics(vec![topic]).await;
        results.pop().map_or(Ok(()), |(_, r)| r)
    }

    /// Deletes topics (internal topics cannot be deleted).
    pub async fn delete_topics(&self, names: &[&str]) -> Vec<(String, Result<()>)> {
        let mut results = Vec::with_capacity(names.len());
        for name in names {
            let owned = name.to_string();
            let result = self
                .blocking(move |broker| {
                    if is_internal(&owned) {
                        return Err(BrokerError::InvalidConfig {
                            name: "topic",
                            reason: format!("`{owned}` is an internal topic and cannot be deleted"),
                        });
                    }
                    Ok(broker.logs().delete_topic(&owned)?)
                })
                .await;
            results.push((name.to_string(), result));
        }
        results
    }

    /// Raises a topic's partition count (Kafka's `CreatePartitions`).
    pub async fn create_partitions(&self, topic: &str, total: u32) -> Result<()> {
        let topic = topic.to_string();
        self.blocking(move |broker| Ok(broker.logs().add_partitions(&topic, total)?)).await
    }

    /// The names of all topics, internal ones only if asked.
    pub fn list_topics(&self, include_internal: bool) -> Vec<String> {
        self.broker
            .logs()
            .topics()
            .iter()
            .map(|t| t.name().to_string())
            .filter(|n| include_internal || !is_internal(n))
            .collect()
    }

    /// Describes topics (Kafka's `DescribeTopics`).
    pub fn describe_topics(&self, names: &[&str]) -> Result<Vec<TopicDescription>> {
        names
            .iter()
            .map(|name| {
                let topic = self.broker.logs().topic(name)?;
                Ok(TopicDescription {
                    name: topic.name().to_string(),
                    topic_id: topic.id(),
                    internal: is_internal(topic.name()),
                    partitions: (0..topic.partition_count())
                        .map(|p| PartitionInfo {
                            partition: p,
                            leader: 0,
                            replicas: vec![0],
                            isr: vec![0],
                        })
                        .collect(),
                })
            })
            .collect()
    }

    /// Every config of a topic with its effective value (Kafka's `DescribeConfigs`).
    pub fn describe_configs(&self, topic: &str) -> Result<Vec<DescribedConfig>> {
        let topic = self.broker.logs().topic(topic)?;
        Ok(topic
            .describe_configs()
            .into_iter()
            .map(|(entry, overridden)| DescribedConfig { entry, overridden })
            .collect())
    }

    /// Changes some configs of a topic, validating the result first (Kafka's
    /// `IncrementalAlterConfigs`).
    pub async fn incremental_alter_configs(
        &self,
        topic: &str,
        ops: Vec<AlterConfigOp>,
    ) -> Result<()> {
        let topic = topic.to_string();
        self.blocking(move |broker| {
            let mut overrides = broker.logs().topic(&topic)?.overrides();
            for op in ops {
                match op {
                    AlterConfigOp::Set(name, value) => {
                        overrides.insert(name, value);
                    }
                    AlterConfigOp::Delete(name) => {
                        if !fjord_log::config::TOPIC_CONFIG_NAMES.contains(&name.as_str()) {
                            // Names are checked before values: this reports the unknown name
                            // with the nearest known one.
                            fjord_log::config::validate_overrides(&BTreeMap::from([(
                                name.clone(),
                                String::new(),
                            )]))
                            .map_err(LogError::from)?;
                        }
                        overrides.remove(&name);
                    }
                }
            }
            Ok(broker.logs().set_topic_config(&topic, overrides)?)
        })
        .await
    }

    /// Kafka's `ListOffsets`.
    pub fn list_offsets(
        &self,
        query: &[(TopicPartition, OffsetSpec)],
    ) -> Result<Vec<(TopicPartition, ListedOffset)>> {
        query
            .iter()
            .map(|(tp, spec)| Ok((tp.clone(), self.broker.list_offset(tp, *spec)?)))
            .collect()
    }

    /// Moves log start offsets forward (Kafka's `DeleteRecords`).
    pub async fn delete_records(
        &self,
        before: Vec<(TopicPartition, i64)>,
    ) -> Result<Vec<(TopicPartition, i64)>> {
        self.blocking(move |broker| {
            before
                .into_iter()
                .map(|(tp, offset)| {
                    let log = broker.partition(&tp)?;
                    let start = log.delete_records_before(offset)?;
                    Ok((tp, start))
                })
                .collect()
        })
        .await
    }

    /// Kafka's `ListGroups`.
    pub fn list_groups(&self) -> Vec<GroupListing> {
        self.broker.group_coordinator().list_groups()
    }

    /// Kafka's `DescribeGroups`.
    pub fn describe_group(&self, group_id: &str) -> Result<GroupDescription> {
        self.broker.group_coordinator().describe_group(group_id)
    }

    /// A group's committed offsets (Kafka's `ListConsumerGroupOffsets`).
    pub fn list_group_offsets(
        &self,
        group_id: &str,
    ) -> Result<BTreeMap<TopicPartition, OffsetAndMetadata>> {
        self.broker.group_coordinator().fetch_offsets(group_id, None)
    }

    /// Resets a group's offsets; refused while the group has members.
    pub async fn reset_group_offsets(
        &self,
        group_id: &str,
        partitions: &[TopicPartition],
        spec: OffsetResetSpec,
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let mut offsets = BTreeMap::new();
        for tp in partitions {
            let start = self.broker.list_offset(tp, OffsetSpec::Earliest)?.offset;
            let end = self.broker.list_offset(tp, OffsetSpec::Latest)?.offset;
            let offset = match spec {
                OffsetResetSpec::Earliest => start,
                OffsetResetSpec::Latest => end,
                OffsetResetSpec::Offset(o) => o.clamp(start, end),
                OffsetResetSpec::Timestamp(ts) => {
                    self.broker.list_offset(tp, OffsetSpec::Timestamp(ts))?.offset
                }
            };
            offsets.insert(tp.clone(), offset);
        }
        self.broker.group_coordinator().reset_offsets(group_id, offsets.clone()).await?;
        Ok(offsets)
    }

    /// Deletes a group and its offsets; refused while it has members.
    pub async fn delete_group(&self, group_id: &str) -> Result<()> {
        self.broker.group_coordinator().delete_group(group_id).await
    }

    /// Kafka's `ListTransactions`: every transactional id the coordinator knows.
    pub fn list_transactions(&self) -> Vec<TransactionMetadata> {
        self.broker.transaction_coordinator().list()
    }

    /// Kafka's `DescribeTransactions`: state, producer id and epoch, timeout, start time and
    /// partitions of a transactional id.
    pub fn describe_transaction(&self, transactional_id: &str) -> Result<TransactionMetadata> {
        self.broker.transaction_coordinator().describe(transactional_id)
    }

    /// Lag of a group on every partition of the topics it has committed offsets for, or of
    /// `topics` if given.
    pub fn group_lag(&self, group_id: &str, topics: Option<&[&str]>) -> Result<Vec<PartitionLag>> {
        let committed = self.broker.group_coordinator().fetch_offsets(group_id, None)?;
        let mut names: Vec<String> = match topics {
            Some(topics) => topics.iter().map(|t| t.to_string()).collect(),
            None => committed.keys().map(|tp| tp.topic.to_string()).collect(),
        };
        names.sort();
        names.dedup();
        let mut out = Vec::new();
        for name in names {
            let topic = self.broker.logs().topic(&name)?;
            for p in 0..topic.partition_count() {
                let tp = TopicPartition::new(name.as_str(), p);
                let log_end_offset = self.broker.list_offset(&tp, OffsetSpec::Latest)?.offset;
                let start = self.broker.list_offset(&tp, OffsetSpec::Earliest)?.offset;
                let committed_offset = committed.get(&tp).map(|c| c.offset);
                let lag = log_end_offset - committed_offset.unwrap_or(start).max(start);
                out.push(PartitionLag {
                    partition: tp,
                    committed: committed_offset,
                    log_end_offset,
                    lag: lag.max(0),
                });
            }
        }
        Ok(out)
    }
}
