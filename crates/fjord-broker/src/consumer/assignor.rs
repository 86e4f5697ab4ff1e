//! Client-side partition assignment for Kafka's classic consumer group protocol.
//!
//! In the classic protocol the group coordinator does not assign partitions itself. Every member
//! sends its [`Subscription`] with its `JoinGroup` (the protocol metadata of protocol type
//! [`CONSUMER_PROTOCOL_TYPE`], one entry per assignor it supports, named by
//! [`PartitionAssignor::name`]); the coordinator picks an assignor every member supports and
//! hands all subscriptions to the group leader; the leader runs [`PartitionAssignor::assign`]
//! and sends every member its [`Assignment`] with its `SyncGroup`.
//!
//! Subscriptions and assignments travel as Kafka's `ConsumerProtocolSubscription` and
//! `ConsumerProtocolAssignment`, prefixed by their int16 version exactly as Kafka's
//! `ConsumerProtocol` writes them, so metadata from a Java or librdkafka consumer decodes here
//! and ours decodes there.
//!
//! The assignors are Kafka's, by their protocol names:
//! - [`RangeAssignor`] (`range`): per topic, contiguous ranges of partitions.
//! - [`RoundRobinAssignor`] (`roundrobin`): all partitions dealt out in turn.
//! - [`CooperativeStickyAssignor`] (`cooperative-sticky`): balanced, keeps partitions where
//!   they are, and never hands a partition to a new owner in the rebalance its old owner gives
//!   it up in (incremental cooperative rebalancing, KIP-429).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use fjord_log::TopicPartition;
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as WireAssignedTopic;
use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as WireOwnedTopic;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// The `ProtocolType` of consumer groups in `JoinGroup` (Kafka's `ConsumerProtocol.PROTOCOL_TYPE`).
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// The version [`Subscription::encode`] writes: 2, the first with the member's generation.
pub const SUBSCRIPTION_VERSION: i16 = 2;

/// The version [`Assignment::encode`] writes: 3, the highest, as Kafka's leader writes it (all
/// versions of `ConsumerProtocolAssignment` have the same fields).
pub const ASSIGNMENT_VERSION: i16 = 3;

/// The highest consumer protocol version known; newer versions are read as this one, as Kafka
/// does (later versions may only append fields).
const HIGHEST_VERSION: i16 = 3;

/// The generation of a member that has none (Kafka's `AbstractStickyAssignor.DEFAULT_GENERATION`).
pub const DEFAULT_GENERATION: i32 = -1;

const SUBSCRIPTION: &str = "subscription";
const ASSIGNMENT: &str = "assignment";

/// How a group rebalances (Kafka's `ConsumerPartitionAssignor.RebalanceProtocol`).
///
/// Eager: every member gives up all partitions before a rebalance; cooperative: only the ones
/// that move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RebalanceProtocol {
    /// Revoke everything, then rejoin (Kafka's `EAGER`).
    Eager,
    /// Keep what stays, revoke only what moves (Kafka's `COOPERATIVE`).
    Cooperative,
}

impl RebalanceProtocol {
    /// Kafka's id of the protocol (`EAGER` 0, `COOPERATIVE` 1).
    pub fn id(self) -> u8 {
        match self {
            RebalanceProtocol::Eager => 0,
            RebalanceProtocol::Cooperative => 1,
        }
    }
}

/// Malformed or unrepresentable consumer protocol metadata.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AssignorError {
    /// The metadata is too short to hold its int16 version.
    #[error("{kind} metadata is {len} bytes, too short for its int16 version")]
    MissingVersion {
        /// `subscription` or `assignment`.
        kind: &'static str,
        /// Bytes received.
        len: usize,
    },
    /// The version is negative.
    #[error("unsupported {kind} version {version}")]
    UnsupportedVersion {
        /// `subscription` or `assignment`.
        kind: &'static str,
        /// The version received.
        version: i16,
    },
    /// The body does not parse as its version says.
    #[error("malformed {kind} (version {version}): {reason}")]
    Malformed {
        /// `subscription` or `assignment`.
        kind: &'static str,
        /// The version received.
        version: i16,
        /// What is wrong, and where.
        reason: String,
    },
    /// A partition number below zero.
    #[error(
        "{kind} names partition {partition} of topic {topic:?}; partition numbers cannot be \
         negative"
    )]
    NegativePartition {
        /// `subscription` or `assignment`.
        kind: &'static str,
        /// The topic.
        topic: String,
        /// The partition number received.
        partition: i32,
    },
    /// Something the wire format cannot carry (a topic name over 32,767 bytes, a partition
    /// number over `i32::MAX`, user data over 2 GiB).
    #[error("cannot encode {kind}: {reason}")]
    Unencodable {
        /// `subscription` or `assignment`.
        kind: &'static str,
        /// What cannot be encoded.
        reason: String,
    },
}

/// A member's subscription: what it sends with `JoinGroup` (Kafka's
/// `ConsumerPartitionAssignor.Subscription`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The topics the member subscribes to.
    pub topics: Vec<String>,
    /// The assignor's user data ([`PartitionAssignor::subscription_user_data`]).
    pub user_data: Option<Bytes>,
    /// The partitions the member owns now (version 1+; cooperative rebalancing needs them).
    pub owned_partitions: Vec<TopicPartition>,
    /// The generation in which the member got `owned_partitions`, [`DEFAULT_GENERATION`] (-1)
    /// if none (version 2+).
    pub generation_id: i32,
}

impl Default for Subscription {
    fn default() -> Self {
        Subscription {
            topics: Vec::new(),
            user_data: None,
            owned_partitions: Vec::new(),
            generation_id: DEFAULT_GENERATION,
        }
    }
}

impl Subscription {
    /// A subscription to `topics` that owns nothing and has no generation.
    pub fn new(topics: Vec<String>) -> Self {
        Subscription { topics, ..Subscription::default() }
    }

    /// Kafka's `ConsumerProtocol.serializeSubscription` at version [`SUBSCRIPTION_VERSION`]:
    /// the int16 version, then `ConsumerProtocolSubscription` with the topics sorted and the
    /// owned partitions sorted and grouped by topic.
    ///
    /// Anything the wire format cannot carry (see [`AssignorError::Unencodable`]; no valid Kafka
    /// topic or partition is affected) is left out and logged; [`Subscription::try_encode`]
    /// refuses instead.
    pub fn encode(&self) -> Bytes {
        encode_leniently(SUBSCRIPTION, SUBSCRIPTION_VERSION, self.to_wire(false))
    }

    /// [`Subscription::encode`], refusing anything the wire format cannot carry.
    pub fn try_encode(&self) -> Result<Bytes, AssignorError> {
        write_prefixed(SUBSCRIPTION, SUBSCRIPTION_VERSION, &self.to_wire(true)?)
    }

    /// Kafka's `ConsumerProtocol.deserializeSubscription`: versions 0 to 3 (a version 3 rack
    /// id is ignored), and later versions read as version 3. Versions before 2 have no
    /// generation (-1), version 0 no owned partitions.
    pub fn decode(bytes: &[u8]) -> Result<Self, AssignorError> {
        let (version, mut body) = split_version(SUBSCRIPTION, bytes)?;
        check_subscription_layout(&body, version)?;
        let wire = ConsumerProtocolSubscription::decode(&mut body, version)
            .map_err(|e| malformed(SUBSCRIPTION, version, e.to_string()))?;
        let mut owned_partitions = Vec::new();
        for group in &wire.owned_partitions {
            let topic: Arc<str> = Arc::from(group.topic.0.as_str());
            for &p in &group.partitions {
                owned_partitions.push(TopicPartition::new(
                    topic.clone(),
                    partition_number(SUBSCRIPTION, &topic, p)?,
                ));
            }
        }
        Ok(Subscription {
            topics: wire.topics.iter().map(|t| t.as_str().to_owned()).collect(),
            user_data: wire.user_data,
            owned_partitions,
            generation_id: wire.generation_id,
        })
    }

    fn to_wire(&self, strict: bool) -> Result<ConsumerProtocolSubscription, AssignorError> {
        let mut topics = Vec::with_capacity(self.topics.len());
        for topic in &self.topics {
            if check_topic(SUBSCRIPTION, topic, strict)? {
                topics.push(topic.as_str());
            }
        }
        topics.sort_unstable();
        let mut owned = Vec::with_capacity(self.owned_partitions.len());
        for tp in &self.owned_partitions {
            if let Some(p) = wire_partition(SUBSCRIPTION, tp, strict)? {
                owned.push((&*tp.topic, p));
            }
        }
        owned.sort_unstable();
        let owned_partitions = group_by_topic(owned)
            .into_iter()
            .map(|(topic, partitions)| {
                WireOwnedTopic::default().with_topic(topic_name(topic)).with_partitions(partitions)
            })
            .collect();
        Ok(ConsumerProtocolSubscription::default()
            .with_topics(topics.into_iter().map(|t| StrBytes::from_string(t.to_owned())).collect())
            .with_user_data(check_user_data(SUBSCRIPTION, &self.user_data, strict)?)
            .with_owned_partitions(owned_partitions)
            .with_generation_id(self.generation_id))
    }
}

/// A member's assignment: what the leader sends it with `SyncGroup` (Kafka's
/// `ConsumerPartitionAssignor.Assignment`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assignment {
    /// The partitions assigned to the member.
    pub partitions: Vec<TopicPartition>,
    /// The assignor's user data for the member (none of Kafka's built-in assignors sends any).
    pub user_data: Option<Bytes>,
}

impl Assignment {
    /// Kafka's `ConsumerProtocol.serializeAssignment` at version [`ASSIGNMENT_VERSION`]: the
    /// int16 version, then `ConsumerProtocolAssignment` with the partitions grouped by topic
    /// (topics in order of first appearance, partitions in their order).
    ///
    /// Anything the wire format cannot carry is left out and logged; [`Assignment::try_encode`]
    /// refuses instead.
    pub fn encode(&self) -> Bytes {
        encode_leniently(ASSIGNMENT, ASSIGNMENT_VERSION, self.to_wire(false))
    }

    /// [`Assignment::encode`], refusing anything the wire format cannot carry.
    pub fn try_encode(&self) -> Result<Bytes, AssignorError> {
        write_prefixed(ASSIGNMENT, ASSIGNMENT_VERSION, &self.to_wire(true)?)
    }

    /// Kafka's `ConsumerProtocol.deserializeAssignment`: versions 0 to 3, and later versions
    /// read as version 3.
    pub fn decode(bytes: &[u8]) -> Result<Self, AssignorError> {
        let (version, mut body) = split_version(ASSIGNMENT, bytes)?;
        check_assignment_layout(&body, version)?;
        let wire = ConsumerProtocolAssignment::decode(&mut body, version)
            .map_err(|e| malformed(ASSIGNMENT, version, e.to_string()))?;
        let mut partitions = Vec::new();
        for group in &wire.assigned_partitions {
            let topic: Arc<str> = Arc::from(group.topic.0.as_str());
            for &p in &group.partitions {
                partitions.push(TopicPartition::new(
                    topic.clone(),
                    partition_number(ASSIGNMENT, &topic, p)?,
                ));
            }
        }
        Ok(Assignment { partitions, user_data: wire.user_data })
    }

    fn to_wire(&self, strict: bool) -> Result<ConsumerProtocolAssignment, AssignorError> {
        let mut partitions = Vec::with_capacity(self.partitions.len());
        for tp in &self.partitions {
            if check_topic(ASSIGNMENT, &tp.topic, strict)?
                && let Some(p) = wire_partition(ASSIGNMENT, tp, strict)?
            {
                partitions.push((&*tp.topic, p));
            }
        }
        let assigned_partitions = group_by_topic(partitions)
            .into_iter()
            .map(|(topic, partitions)| {
                WireAssignedTopic::default()
                    .with_topic(topic_name(topic))
                    .with_partitions(partitions)
            })
            .collect();
        Ok(ConsumerProtocolAssignment::default()
            .with_assigned_partitions(assigned_partitions)
            .with_user_data(check_user_data(ASSIGNMENT, &self.user_data, strict)?))
    }
}

// ---------------------------------------------------------------------------------------------
// Wire helpers

fn malformed(kind: &'static str, version: i16, reason: impl Into<String>) -> AssignorError {
    AssignorError::Malformed { kind, version, reason: reason.into() }
}

fn unencodable(kind: &'static str, reason: String, strict: bool) -> Result<(), AssignorError> {
    if strict {
        Err(AssignorError::Unencodable { kind, reason })
    } else {
        tracing::warn!(kind, %reason, "leaving out of the consumer protocol metadata");
        Ok(())
    }
}

/// Whether `topic` fits a Kafka string (int16 length); `Err` if not and `strict`.
fn check_topic(kind: &'static str, topic: &str, strict: bool) -> Result<bool, AssignorError> {
    if topic.len() <= i16::MAX as usize {
        return Ok(true);
    }
    unencodable(kind, format!("topic name of {} bytes is over 32,767", topic.len()), strict)?;
    Ok(false)
}

fn wire_partition(
    kind: &'static str,
    tp: &TopicPartition,
    strict: bool,
) -> Result<Option<i32>, AssignorError> {
    if !check_topic(kind, &tp.topic, strict)? {
        return Ok(None);
    }
    match i32::try_from(tp.partition) {
        Ok(p) => Ok(Some(p)),
        Err(_) => {
            unencodable(kind, format!("partition number of {tp} is over i32::MAX"), strict)?;
            Ok(None)
        }
    }
}

fn check_user_data(
    kind: &'static str,
    user_data: &Option<Bytes>,
    strict: bool,
) -> Result<Option<Bytes>, AssignorError> {
    match user_data {
        Some(data) if data.len() > i32::MAX as usize => {
            unencodable(kind, format!("user data of {} bytes is over 2 GiB", data.len()), strict)?;
            Ok(None)
        }
        other => Ok(other.clone()),
    }
}

fn partition_number(kind: &'static str, topic: &str, p: i32) -> Result<u32, AssignorError> {
    u32::try_from(p).map_err(|_| AssignorError::NegativePartition {
        kind,
        topic: topic.to_owned(),
        partition: p,
    })
}

fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_owned()))
}

/// Groups `(topic, partition)` pairs by topic: topics in order of first appearance, partitions
/// in their order (Kafka's `ConsumerProtocol` grouping).
fn group_by_topic(partitions: Vec<(&str, i32)>) -> Vec<(&str, Vec<i32>)> {
    let mut groups: Vec<(&str, Vec<i32>)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (topic, p) in partitions {
        let i = *index.entry(topic).or_insert_with(|| {
            groups.push((topic, Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(p);
    }
    groups
}

fn write_prefixed<M: Encodable>(
    kind: &'static str,
    version: i16,
    message: &M,
) -> Result<Bytes, AssignorError> {
    let size = message.compute_size(version).map_err(|e| cannot_encode(kind, e))?;
    let mut buf = BytesMut::with_capacity(2 + size);
    buf.put_i16(version);
    message.encode(&mut buf, version).map_err(|e| cannot_encode(kind, e))?;
    Ok(buf.freeze())
}

fn cannot_encode(kind: &'static str, error: impl std::fmt::Display) -> AssignorError {
    AssignorError::Unencodable { kind, reason: error.to_string() }
}

fn encode_leniently(
    kind: &'static str,
    version: i16,
    wire: Result<impl Encodable, AssignorError>,
) -> Bytes {
    match wire.and_then(|wire| write_prefixed(kind, version, &wire)) {
        Ok(bytes) => bytes,
        Err(error) => {
            // Unreachable: everything unrepresentable was left out above.
            tracing::error!(%error, "consumer protocol metadata could not be encoded");
            let mut buf = BytesMut::with_capacity(2);
            buf.put_i16(version);
            buf.freeze()
        }
    }
}

/// Splits off the int16 version; versions past the highest known are read as the highest.
fn split_version(kind: &'static str, bytes: &[u8]) -> Result<(i16, Bytes), AssignorError> {
    let [hi, lo, body @ ..] = bytes else {
        return Err(AssignorError::MissingVersion { kind, len: bytes.len() });
    };
    let version = i16::from_be_bytes([*hi, *lo]);
    if version < 0 {
        return Err(AssignorError::UnsupportedVersion { kind, version });
    }
    Ok((version.min(HIGHEST_VERSION), Bytes::copy_from_slice(body)))
}

/// Walks the layout of an encoded message without allocating, so that lengths read from the
/// wire are checked against the bytes actually there before `kafka-protocol` (which reserves
/// an array's capacity from its length) decodes it.
struct Layout<'a> {
    buf: &'a [u8],
    kind: &'static str,
    version: i16,
}

impl<'a> Layout<'a> {
    fn new(buf: &'a [u8], kind: &'static str, version: i16) -> Self {
        Layout { buf, kind, version }
    }

    fn fail(&self, reason: String) -> AssignorError {
        malformed(self.kind, self.version, reason)
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], AssignorError> {
        if self.buf.len() < n {
            return Err(
                self.fail(format!("truncated: {what} needs {n} bytes, {} remain", self.buf.len()))
            );
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn int16(&mut self, what: &str) -> Result<i16, AssignorError> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn int32(&mut self, what: &str) -> Result<i32, AssignorError> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self, what: &str, nullable: bool) -> Result<(), AssignorError> {
        match self.int16(what)? {
            -1 if nullable => Ok(()),
            n if n < 0 => Err(self.fail(format!("{what} has length {n}"))),
            n => self.take(n as usize, what).map(drop),
        }
    }

    fn bytes(&mut self, what: &str) -> Result<(), AssignorError> {
        match self.int32(what)? {
            -1 => Ok(()),
            n if n < 0 => Err(self.fail(format!("{what} has length {n}"))),
            n => self.take(n as usize, what).map(drop),
        }
    }

    /// An array's length, checked against the bytes left given each item's smallest size.
    fn array(&mut self, what: &str, min_item: usize) -> Result<usize, AssignorError> {
        let n = self.int32(what)?;
        let Ok(n) = usize::try_from(n) else {
            return Err(self.fail(format!("{what} has length {n}")));
        };
        if n.saturating_mul(min_item) > self.buf.len() {
            return Err(self.fail(format!(
                "truncated: {what} has {n} entries, {} bytes remain",
                self.buf.len()
            )));
        }
        Ok(n)
    }

    /// `[topic: string, partitions: [int32]]`
    fn topic_partitions(&mut self, what: &str) -> Result<(), AssignorError> {
        for _ in 0..self.array(what, 6)? {
            self.string("topic name", false)?;
            let n = self.array("partition numbers", 4)?;
            self.take(n * 4, "partition numbers")?;
        }
        Ok(())
    }
}

fn check_subscription_layout(body: &[u8], version: i16) -> Result<(), AssignorError> {
    let mut l = Layout::new(body, SUBSCRIPTION, version);
    for _ in 0..l.array("topics", 2)? {
        l.string("topic name", false)?;
    }
    l.bytes("user data")?;
    if version >= 1 {
        l.topic_partitions("owned partitions")?;
    }
    if version >= 2 {
        l.int32("generation id")?;
    }
    if version >= 3 {
        l.string("rack id", true)?;
    }
    Ok(())
}

fn check_assignment_layout(body: &[u8], version: i16) -> Result<(), AssignorError> {
    let mut l = Layout::new(body, ASSIGNMENT, version);
    l.topic_partitions("assigned partitions")?;
    l.bytes("user data")?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Assignors

/// A partition assignor the group leader runs (Kafka's `ConsumerPartitionAssignor`).
pub trait PartitionAssignor: Send + Sync + std::fmt::Debug {
    /// The protocol name members advertise in `JoinGroup` (`range`, `roundrobin`,
    /// `cooperative-sticky`).
    fn name(&self) -> &'static str;

    /// The rebalance protocols the assignor supports, preferred first.
    fn supported_protocols(&self) -> &'static [RebalanceProtocol];

    /// The user data a member puts in its subscription to `topics`.
    fn subscription_user_data(&self, topics: &[String]) -> Option<Bytes> {
        let _ = topics;
        None
    }

    /// Called on every member (the leader too) with the assignment it received, before the
    /// consumer applies it (Kafka's `ConsumerPartitionAssignor.onAssignment`): where an
    /// assignor that puts user data into assignments reads it back.
    fn on_assignment(&self, assignment: &Assignment, generation: i32) {
        let _ = (assignment, generation);
    }

    /// Assigns the partitions of the subscribed topics to the members.
    ///
    /// `partitions_per_topic` has the partition count of every subscribed topic (topics that do
    /// not exist are absent; topics no member subscribes to are ignored); `subscriptions` are by
    /// member id. Returns an assignment for every member, possibly empty, with its partitions
    /// sorted by topic and partition.
    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, u32>,
        subscriptions: &BTreeMap<String, Subscription>,
    ) -> BTreeMap<String, Assignment>;
}

/// The assignor with Kafka's protocol name `name`, if it is one of Fjord's.
pub fn assignor_by_name(name: &str) -> Option<Arc<dyn PartitionAssignor>> {
    match name {
        RangeAssignor::NAME => Some(Arc::new(RangeAssignor)),
        RoundRobinAssignor::NAME => Some(Arc::new(RoundRobinAssignor)),
        CooperativeStickyAssignor::NAME => Some(Arc::new(CooperativeStickyAssignor)),
        _ => None,
    }
}

const EAGER_ONLY: &[RebalanceProtocol] = &[RebalanceProtocol::Eager];

/// Turns per-member lists of partitions into sorted [`Assignment`]s.
fn into_assignments<'a>(
    per_member: impl IntoIterator<Item = (&'a str, Vec<TopicPartition>)>,
) -> BTreeMap<String, Assignment> {
    per_member
        .into_iter()
        .map(|(member, mut partitions)| {
            partitions.sort_unstable();
            (member.to_owned(), Assignment { partitions, user_data: None })
        })
        .collect()
}

/// Each member's subscribed topics, without duplicates.
fn topic_sets(subscriptions: &BTreeMap<String, Subscription>) -> BTreeMap<&str, BTreeSet<&str>> {
    subscriptions
        .iter()
        .map(|(member, s)| (member.as_str(), s.topics.iter().map(String::as_str).collect()))
        .collect()
}

/// Kafka's `RangeAssignor` (`range`).
///
/// Per topic, the members subscribed to it sorted by member id, and its partitions in
/// contiguous ranges: with `n` partitions and `m` members each gets `n / m`, and the first
/// `n % m` one more. Members subscribed to the same topics with the same partition counts get
/// the same partition numbers of each (co-partitioning, which joins rely on).
#[derive(Debug, Clone, Copy, Default)]
pub struct RangeAssignor;

impl RangeAssignor {
    /// The protocol name, `range`.
    pub const NAME: &'static str = "range";
}

impl PartitionAssignor for RangeAssignor {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn supported_protocols(&self) -> &'static [RebalanceProtocol] {
        EAGER_ONLY
    }

    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, u32>,
        subscriptions: &BTreeMap<String, Subscription>,
    ) -> BTreeMap<String, Assignment> {
        let topics = topic_sets(subscriptions);
        let mut members_per_topic: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (&member, subscribed) in &topics {
            for &topic in subscribed {
                members_per_topic.entry(topic).or_default().push(member);
            }
        }
        let mut assignment: BTreeMap<&str, Vec<TopicPartition>> =
            topics.keys().map(|&m| (m, Vec::new())).collect();
        for (topic, members) in members_per_topic {
            let Some(&count) = partitions_per_topic.get(topic) else { continue };
            // Members come from a BTreeMap: already sorted by member id.
            let topic: Arc<str> = Arc::from(topic);
            let n = members.len() as u64;
            let per_member = u64::from(count) / n;
            let with_extra = u64::from(count) % n;
            for (i, member) in members.into_iter().enumerate() {
                let i = i as u64;
                let start = per_member * i + i.min(with_extra);
                let len = per_member + u64::from(i < with_extra);
                if let Some(list) = assignment.get_mut(member) {
                    // `start + len <= count`, which is a u32.
                    list.extend(
                        (start..start + len).map(|p| TopicPartition::new(topic.clone(), p as u32)),
                    );
                }
            }
        }
        into_assignments(assignment)
    }
}

/// Kafka's `RoundRobinAssignor` (`roundrobin`).
///
/// All partitions of all subscribed topics sorted by topic and partition, dealt out in turn to
/// the members sorted by member id, skipping members not subscribed to the partition's topic.
/// With identical subscriptions partition counts differ by at most one.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundRobinAssignor;

impl RoundRobinAssignor {
    /// The protocol name, `roundrobin`.
    pub const NAME: &'static str = "roundrobin";
}

impl PartitionAssignor for RoundRobinAssignor {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn supported_protocols(&self) -> &'static [RebalanceProtocol] {
        EAGER_ONLY
    }

    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, u32>,
        subscriptions: &BTreeMap<String, Subscription>,
    ) -> BTreeMap<String, Assignment> {
        let topics = topic_sets(subscriptions);
        let members: Vec<(&str, &BTreeSet<&str>)> = topics.iter().map(|(m, t)| (*m, t)).collect();
        let mut assignment: Vec<Vec<TopicPartition>> = vec![Vec::new(); members.len()];
        let all_topics: BTreeSet<&str> = topics.values().flatten().copied().collect();
        let mut next = 0;
        for topic in all_topics {
            let Some(&count) = partitions_per_topic.get(topic) else { continue };
            let name: Arc<str> = Arc::from(topic);
            for p in 0..count {
                // Some member subscribes to `topic`: it came from a subscription.
                while !members[next].1.contains(topic) {
                    next = (next + 1) % members.len();
                }
                assignment[next].push(TopicPartition::new(name.clone(), p));
                next = (next + 1) % members.len();
            }
        }
        into_assignments(members.iter().map(|(m, _)| *m).zip(assignment))
    }
}

/// Kafka's `CooperativeStickyAssignor` (`cooperative-sticky`): the sticky assignment of
/// Kafka's `AbstractStickyAssignor` under the cooperative rebalance protocol.
///
/// - Balanced: members with the same subscriptions get partition counts that differ by at most
///   one, and no partition could move to a member subscribed to its topic that has two or more
///   fewer partitions than its owner.
/// - Sticky: as many partitions as possible stay with the member that owns them. A member's
///   claims ([`Subscription::owned_partitions`]) count with its generation
///   ([`Subscription::generation_id`]; for older clients' version 0 and 1 subscriptions, the
///   int32 generation Kafka's cooperative-sticky assignor puts in the user data): of several
///   members claiming a partition the one of the highest generation keeps the claim, and if
///   several share the highest generation none does. Fjord's members send their generation in
///   the version 2 field and no user data.
/// - Cooperative: a partition moving from one owner to another is left out of this round's
///   assignment altogether, so its old owner revokes it; the follow-up rebalance the old owner
///   then starts (with the partition no longer owned) assigns it to its new owner. A partition
///   claimed by several members of the same generation is held back the same way.
///
/// When every member subscribes to the same topics, Kafka's constrained algorithm is used
/// (quotas of `⌊P/M⌋` and `⌈P/M⌉`, owned partitions kept up to them, the rest dealt out in
/// member-id order); otherwise Kafka's general algorithm (keep what is valid, give each
/// unassigned partition to the least loaded member subscribed to its topic, then move
/// partitions from overloaded members until balanced, preferring a partition's previous owner).
#[derive(Debug, Clone, Copy, Default)]
pub struct CooperativeStickyAssignor;

impl CooperativeStickyAssignor {
    /// The protocol name, `cooperative-sticky`.
    pub const NAME: &'static str = "cooperative-sticky";
}

impl PartitionAssignor for CooperativeStickyAssignor {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn supported_protocols(&self) -> &'static [RebalanceProtocol] {
        &[RebalanceProtocol::Cooperative, RebalanceProtocol::Eager]
    }

    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, u32>,
        subscriptions: &BTreeMap<String, Subscription>,
    ) -> BTreeMap<String, Assignment> {
        let problem = Sticky::new(partitions_per_topic, subscriptions);
        let assignment = problem.assign_cooperatively();
        into_assignments(
            problem.members.iter().copied().zip(
                assignment
                    .into_iter()
                    .map(|pids| pids.into_iter().map(|p| problem.partition(p)).collect()),
            ),
        )
    }
}

/// The generation a cooperative-sticky member's claims count with (Kafka's
/// `CooperativeStickyAssignor.memberData`): the subscription's generation (version 2+), else
/// the int32 generation older clients put in the user data, else none.
fn member_generation(subscription: &Subscription) -> i32 {
    if subscription.generation_id >= 0 {
        return subscription.generation_id;
    }
    match subscription.user_data.as_deref() {
        Some([a, b, c, d, ..]) => i32::from_be_bytes([*a, *b, *c, *d]),
        _ => DEFAULT_GENERATION,
    }
}

/// A sticky assignment problem, with members, topics and partitions numbered: members in
/// member-id order, topics in name order, and partition ids (`pid`s) in (topic, partition)
/// order.
struct Sticky<'a> {
    members: Vec<&'a str>,
    subscriptions: Vec<&'a Subscription>,
    generations: Vec<i32>,
    /// Existing topics some member subscribes to, sorted.
    topics: Vec<Arc<str>>,
    /// The pid of each topic's partition 0, then the number of partitions.
    first: Vec<usize>,
    /// Each pid's topic.
    topic_of: Vec<usize>,
    /// The (existing) topics each member subscribes to, sorted.
    member_topics: Vec<Vec<usize>>,
    /// The members subscribed to each topic, sorted.
    topic_members: Vec<Vec<usize>>,
    /// The existing partitions each member claims, without duplicates, in its order.
    claimed: Vec<Vec<usize>>,
}

impl<'a> Sticky<'a> {
    fn new(
        partitions_per_topic: &BTreeMap<String, u32>,
        subscriptions: &'a BTreeMap<String, Subscription>,
    ) -> Self {
        let members: Vec<&str> = subscriptions.keys().map(String::as_str).collect();
        let subscriptions: Vec<&Subscription> = subscriptions.values().collect();
        let subscribed: BTreeSet<&str> =
            subscriptions.iter().flat_map(|s| s.topics.iter().map(String::as_str)).collect();
        let mut topics = Vec::new();
        let mut first = vec![0];
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (name, &count) in partitions_per_topic {
            if subscribed.contains(name.as_str()) {
                index.insert(name.as_str(), topics.len());
                topics.push(Arc::<str>::from(name.as_str()));
                first.push(first[first.len() - 1] + count as usize);
            }
        }
        let mut topic_of = Vec::with_capacity(first[first.len() - 1]);
        for (t, w) in first.windows(2).enumerate() {
            topic_of.resize(topic_of.len() + (w[1] - w[0]), t);
        }
        let member_topics: Vec<Vec<usize>> = subscriptions
            .iter()
            .map(|s| {
                let set: BTreeSet<usize> =
                    s.topics.iter().filter_map(|t| index.get(t.as_str()).copied()).collect();
                set.into_iter().collect()
            })
            .collect();
        let mut topic_members = vec![Vec::new(); topics.len()];
        for (m, ts) in member_topics.iter().enumerate() {
            for &t in ts {
                topic_members[t].push(m);
            }
        }
        let claimed = subscriptions
            .iter()
            .map(|s| {
                let mut seen = std::collections::HashSet::new();
                s.owned_partitions
                    .iter()
                    .filter_map(|tp| {
                        let t = *index.get(&*tp.topic)?;
                        let pid = first[t].checked_add(tp.partition as usize)?;
                        (pid < first[t + 1] && seen.insert(pid)).then_some(pid)
                    })
                    .collect()
            })
            .collect();
        let generations = subscriptions.iter().map(|s| member_generation(s)).collect();
        Sticky {
            members,
            subscriptions,
            generations,
            topics,
            first,
            topic_of,
            member_topics,
            topic_members,
            claimed,
        }
    }

    fn total(&self) -> usize {
        self.topic_of.len()
    }

    fn partition(&self, pid: usize) -> TopicPartition {
        let t = self.topic_of[pid];
        // pid - first[t] is below the topic's partition count, a u32.
        TopicPartition::new(self.topics[t].clone(), (pid - self.first[t]) as u32)
    }

    fn subscribes(&self, member: usize, topic: usize) -> bool {
        self.member_topics[member].binary_search(&topic).is_ok()
    }

    /// The assignment of `AbstractStickyAssignor`, less the partitions that change owner
    /// (`CooperativeStickyAssignor.assign`). Pids sorted per member.
    fn assign_cooperatively(&self) -> Vec<Vec<usize>> {
        if self.members.is_empty() {
            return Vec::new();
        }
        let claims = self.resolve_claims();
        let (mut assignment, transferring) = if self.all_subscriptions_equal() {
            self.constrained_assign(&claims)
        } else {
            let assignment = self.general_assign(&claims);
            let transferring = self.transferring_ownership(&claims, &assignment);
            (assignment, transferring)
        };
        let mut withheld = vec![false; self.total()];
        for (pid, member) in transferring {
            tracing::debug!(
                partition = %self.partition(pid),
                to = self.members[member],
                "held back until its owner revokes it"
            );
            withheld[pid] = true;
        }
        for pids in &mut assignment {
            pids.retain(|&p| !withheld[p]);
            pids.sort_unstable();
        }
        assignment
    }

    /// Whether every member subscribes to the same topics (existing or not).
    fn all_subscriptions_equal(&self) -> bool {
        let mut sets = self
            .subscriptions
            .iter()
            .map(|s| s.topics.iter().map(String::as_str).collect::<BTreeSet<_>>());
        let first = sets.next();
        sets.all(|s| Some(&s) == first.as_ref())
    }

    /// Each member's valid claims: a partition claimed by several members stays with the one
    /// of the highest generation; if several share it, with none of them, and it is contested.
    fn resolve_claims(&self) -> Claims {
        let mut best: Vec<Option<(i32, usize)>> = vec![None; self.total()];
        let mut contested = vec![false; self.total()];
        for (m, pids) in self.claimed.iter().enumerate() {
            let generation = self.generations[m];
            for &pid in pids {
                match best[pid] {
                    None => best[pid] = Some((generation, m)),
                    Some((other_generation, other)) => {
                        if generation > other_generation {
                            best[pid] = Some((generation, m));
                            contested[pid] = false;
                        } else if generation == other_generation {
                            tracing::warn!(
                                partition = %self.partition(pid),
                                generation,
                                members = ?(self.members[other], self.members[m]),
                                "members of the same generation claim the same partition; \
                                 neither keeps it"
                            );
                            contested[pid] = true;
                        }
                        if generation != other_generation {
                            tracing::debug!(
                                partition = %self.partition(pid),
                                members = ?(self.members[other], self.members[m]),
                                generations = ?(other_generation, generation),
                                "partition claimed in different generations; the higher one \
                                 keeps it"
                            );
                        }
                    }
                }
            }
        }
        let owned = self
            .claimed
            .iter()
            .enumerate()
            .map(|(m, pids)| {
                pids.iter()
                    .copied()
                    .filter(|&p| !contested[p] && best[p].is_some_and(|(_, o)| o == m))
                    .collect()
            })
            .collect();
        Claims { owned, contested }
    }

    /// Kafka's `ConstrainedAssignmentBuilder`, for members with identical subscriptions.
    /// Returns the assignment and the partitions changing owner (to whom).
    fn constrained_assign(&self, claims: &Claims) -> (Vec<Vec<usize>>, Vec<(usize, usize)>) {
        let total = self.total();
        let n = self.members.len();
        let min_quota = total / n;
        let max_quota = total.div_ceil(n);
        let expected_over_min = total % n;
        let mut current_over_min = 0;
        let mut assignment: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut assigned = vec![false; total];
        let mut revoked = vec![false; total];
        // Members that may get more: under the minimum quota, and exactly at it.
        let mut under_min: Vec<usize> = Vec::new();
        let mut at_min: std::collections::VecDeque<usize> = std::collections::VecDeque::new();

        // Keep owned partitions up to the quotas; the rest are revoked.
        for (m, slot) in assignment.iter_mut().enumerate() {
            let mut owned = claims.owned[m].clone();
            // By partition number, then topic.
            owned.sort_unstable_by_key(|&p| (p - self.first[self.topic_of[p]], self.topic_of[p]));
            let keep = if owned.len() < min_quota {
                under_min.push(m);
                owned.len()
            } else if owned.len() >= max_quota && current_over_min < expected_over_min {
                current_over_min += 1;
                if current_over_min == expected_over_min {
                    at_min.clear();
                }
                max_quota
            } else {
                if current_over_min < expected_over_min {
                    at_min.push_back(m);
                }
                min_quota
            };
            for &p in &owned[keep..] {
                revoked[p] = true;
            }
            for &p in &owned[..keep] {
                assigned[p] = true;
            }
            owned.truncate(keep);
            *slot = owned;
        }

        // Deal the rest out: members under the minimum quota in turn, then those at it.
        let mut transferring = Vec::new();
        let mut next = 0; // the position in `under_min` of the next member in turn
        for p in (0..total).filter(|&p| !assigned[p]) {
            let (m, from_under_min) = if next < under_min.len() {
                next += 1;
                (under_min[next - 1], true)
            } else if !under_min.is_empty() {
                next = 1;
                (under_min[0], true)
            } else if let Some(m) = at_min.pop_front() {
                (m, false)
            } else {
                // Cannot happen: the quotas add up to the partitions.
                tracing::error!(partition = %self.partition(p), "no member left to assign to");
                break;
            };
            assignment[m].push(p);
            if revoked[p] || claims.contested[p] {
                transferring.push((p, m));
            }
            if assignment[m].len() == min_quota && from_under_min {
                next -= 1;
                under_min.remove(next);
                at_min.push_back(m);
            }
        }
        (assignment, transferring)
    }

    /// Kafka's `GeneralAssignmentBuilder`, for members with different subscriptions.
    fn general_assign(&self, claims: &Claims) -> Vec<Vec<usize>> {
        let total = self.total();
        let n = self.members.len();
        let mut balancer = Balancer::new(self);

        // Keep each member's valid claims on topics it still subscribes to.
        let mut revocation_required = false;
        for (m, pids) in claims.owned.iter().enumerate() {
            for &p in pids {
                if self.subscribes(m, self.topic_of[p]) {
                    balancer.give(p, m);
                } else {
                    revocation_required = true;
                }
            }
        }

        // A partition's previous owner: its claimant of the highest generation below the
        // current one.
        let max_generation = self
            .generations
            .iter()
            .copied()
            .max()
            .unwrap_or(DEFAULT_GENERATION)
            .max(DEFAULT_GENERATION);
        for (m, pids) in self.claimed.iter().enumerate() {
            let generation = self.generations[m];
            if generation < max_generation {
                for &p in pids {
                    if balancer.previous[p].is_none_or(|(g, _)| generation > g) {
                        balancer.previous[p] = Some((generation, m));
                    }
                }
            }
        }

        // Topics with fewer potential members first, then by name.
        let mut topic_order: Vec<usize> = (0..self.topics.len()).collect();
        topic_order.sort_by_key(|&t| (self.topic_members[t].len(), t));
        let mut sorted_partitions: Vec<usize> =
            topic_order.iter().flat_map(|&t| self.first[t]..self.first[t + 1]).collect();
        let mut unassigned: Vec<usize> =
            sorted_partitions.iter().copied().filter(|&p| balancer.owner[p].is_none()).collect();

        let initializing = balancer.count.iter().all(|&c| c == 0);
        for &p in &unassigned {
            if let Some(m) = balancer.least_loaded(self.topic_of[p]) {
                balancer.give(p, m);
            }
        }

        // Only partitions of topics with two or more potential members can move, and only
        // members that could get more or own such partitions take part.
        let movable = |p: &usize| self.topic_members[self.topic_of[*p]].len() >= 2;
        sorted_partitions.retain(movable);
        unassigned.retain(movable);
        let mut owns_movable = vec![false; n];
        for p in 0..total {
            if let Some(m) = balancer.owner[p]
                && movable(&p)
            {
                owns_movable[m] = true;
            }
        }
        for (m, &owns) in owns_movable.iter().enumerate() {
            if balancer.count[m] >= balancer.max_size[m] && !owns {
                balancer.deactivate(m);
            }
        }

        let before = (balancer.owner.clone(), balancer.count.clone());
        if !revocation_required {
            balancer.perform_reassignments(&unassigned);
        }
        let reassigned = balancer.perform_reassignments(&sorted_partitions);
        if !initializing
            && reassigned
            && balancer.balance_score(&balancer.count) >= balancer.balance_score(&before.1)
        {
            // Nothing reads the load order after this.
            (balancer.owner, balancer.count) = before;
        }

        let mut assignment = vec![Vec::new(); n];
        for (p, owner) in balancer.owner.iter().enumerate() {
            if let Some(m) = owner {
                assignment[*m].push(p);
            }
        }
        assignment
    }

    /// Partitions assigned to a member that does not validly own them while another member
    /// gives them up (`CooperativeStickyAssignor.computePartitionsTransferringOwnership`).
    ///
    /// Kafka checks the new member's raw claims; checking its valid claims instead also holds
    /// back a partition from a member whose claim lost to a higher generation while the winner
    /// gives it up, so that it never has two owners (the constrained algorithm already does).
    fn transferring_ownership(
        &self,
        claims: &Claims,
        assignment: &[Vec<usize>],
    ) -> Vec<(usize, usize)> {
        let total = self.total();
        let mut assigned_to = vec![usize::MAX; total];
        for (m, pids) in assignment.iter().enumerate() {
            for &p in pids {
                assigned_to[p] = m;
            }
        }
        let mut revoked = vec![false; total];
        for (m, pids) in self.claimed.iter().enumerate() {
            for &p in pids {
                if assigned_to[p] != m {
                    revoked[p] = true;
                }
            }
        }
        let mut owned_by_member = vec![false; total];
        let mut transferring = Vec::new();
        for (m, pids) in assignment.iter().enumerate() {
            for &p in &claims.owned[m] {
                owned_by_member[p] = true;
            }
            transferring.extend(
                pids.iter().filter(|&&p| revoked[p] && !owned_by_member[p]).map(|&p| (p, m)),
            );
            for &p in &claims.owned[m] {
                owned_by_member[p] = false;
            }
        }
        transferring
    }
}

/// Members' valid claims after resolving conflicts.
struct Claims {
    /// Each member's valid claims.
    owned: Vec<Vec<usize>>,
    /// Partitions claimed by several members of the same (highest) generation.
    contested: Vec<bool>,
}

/// The state of Kafka's general sticky algorithm.
struct Balancer<'p, 'a> {
    problem: &'p Sticky<'a>,
    /// Each partition's current member.
    owner: Vec<Option<usize>>,
    /// Each member's partition count.
    count: Vec<usize>,
    /// Each member's most partitions: all partitions of its topics.
    max_size: Vec<usize>,
    /// Whether a member takes part in reassignment.
    active: Vec<bool>,
    /// The active members by (partition count, member): Kafka's `sortedCurrentSubscriptions`.
    by_load: BTreeSet<(usize, usize)>,
    /// Each partition's previous owner and its generation.
    previous: Vec<Option<(i32, usize)>>,
    movements: Movements,
    /// Whether the assignment is balanced, if known since the last change.
    balanced: Option<bool>,
}

impl<'p, 'a> Balancer<'p, 'a> {
    fn new(problem: &'p Sticky<'a>) -> Self {
        let n = problem.members.len();
        let max_size = problem
            .member_topics
            .iter()
            .map(|ts| ts.iter().map(|&t| problem.first[t + 1] - problem.first[t]).sum())
            .collect();
        Balancer {
            problem,
            owner: vec![None; problem.total()],
            count: vec![0; n],
            max_size,
            active: vec![true; n],
            by_load: (0..n).map(|m| (0, m)).collect(),
            previous: vec![None; problem.total()],
            movements: Movements::default(),
            balanced: None,
        }
    }

    /// The active member subscribed to `topic` with the fewest partitions (then the lowest id).
    fn least_loaded(&self, topic: usize) -> Option<usize> {
        let members = &self.problem.topic_members[topic];
        if members.len() <= 16 {
            members.iter().copied().filter(|&m| self.active[m]).min_by_key(|&m| (self.count[m], m))
        } else {
            // Most members subscribe to the topic: the first of them by load is near the front.
            self.by_load.iter().map(|&(_, m)| m).find(|&m| self.problem.subscribes(m, topic))
        }
    }

    /// Sets a member's partition count, keeping `by_load` in order.
    fn set_count(&mut self, m: usize, count: usize) {
        if self.by_load.remove(&(self.count[m], m)) {
            self.by_load.insert((count, m));
        }
        self.count[m] = count;
        self.balanced = None;
    }

    /// Takes a member out of reassignment.
    fn deactivate(&mut self, m: usize) {
        self.active[m] = false;
        self.by_load.remove(&(self.count[m], m));
        self.balanced = None;
    }

    fn give(&mut self, p: usize, m: usize) {
        self.owner[p] = Some(m);
        self.set_count(m, self.count[m] + 1);
    }

    /// Kafka's `isBalanced`: partition counts of active members differ by at most one, or no
    /// member could take a partition of its topics from a member with two or more more.
    fn is_balanced(&mut self) -> bool {
        if let Some(balanced) = self.balanced {
            return balanced;
        }
        let balanced = self.compute_balanced();
        self.balanced = Some(balanced);
        balanced
    }

    fn compute_balanced(&self) -> bool {
        let (Some(&(min, _)), Some(&(max, _))) = (self.by_load.first(), self.by_load.last()) else {
            return true;
        };
        if min + 1 >= max {
            return true;
        }
        let problem = self.problem;
        let mut topic_max = vec![0; problem.topics.len()];
        for (p, owner) in self.owner.iter().enumerate() {
            if let Some(o) = *owner
                && self.active[o]
            {
                let t = problem.topic_of[p];
                topic_max[t] = topic_max[t].max(self.count[o]);
            }
        }
        (0..self.count.len()).filter(|&m| self.active[m]).all(|m| {
            self.count[m] == self.max_size[m]
                || problem.member_topics[m].iter().all(|&t| topic_max[t] <= self.count[m] + 1)
        })
    }

    /// Kafka's `performReassignments`: moves partitions of `partitions` from members with two
    /// or more more partitions than another member of their topic, until balanced or nothing
    /// moves. Returns whether anything moved.
    fn perform_reassignments(&mut self, partitions: &[usize]) -> bool {
        let problem = self.problem;
        let mut performed = false;
        // Kafka loops until nothing moves; a bound keeps a pathological input from looping.
        let max_passes = 2 * (partitions.len() + self.count.len()) + 8;
        for _ in 0..max_passes {
            let mut modified = false;
            for &p in partitions {
                if self.is_balanced() {
                    break;
                }
                let t = problem.topic_of[p];
                let Some(owner) = self.owner[p] else { continue };
                if let Some((_, previous)) = self.previous[p]
                    && self.active[previous]
                    && problem.subscribes(previous, t)
                    && self.count[owner] > self.count[previous] + 1
                {
                    self.reassign(p, previous);
                    performed = true;
                    modified = true;
                    continue;
                }
                if let Some(target) = self.least_loaded(t)
                    && self.count[owner] > self.count[target] + 1
                {
                    self.reassign(p, target);
                    performed = true;
                    modified = true;
                }
            }
            if !modified {
                return performed;
            }
        }
        tracing::warn!(max_passes, "sticky assignment stopped balancing after too many passes");
        performed
    }

    /// Moves `p` (or, to keep moves sticky, the partition of its topic that earlier moved the
    /// other way) to `to`.
    fn reassign(&mut self, p: usize, to: usize) {
        let Some(from) = self.owner[p] else { return };
        let topic = self.problem.topic_of[p];
        let p = self.movements.partition_to_move(p, topic, from, to);
        let Some(from) = self.owner[p] else { return };
        self.movements.record(p, topic, from, to);
        self.owner[p] = Some(to);
        self.set_count(from, self.count[from] - 1);
        self.set_count(to, self.count[to] + 1);
    }

    /// Kafka's `getBalanceScore`: the sum over pairs of active members of the difference of
    /// their partition counts.
    fn balance_score(&self, count: &[usize]) -> i64 {
        let mut counts: Vec<i64> =
            (0..count.len()).filter(|&m| self.active[m]).map(|m| count[m] as i64).collect();
        counts.sort_unstable();
        let k = counts.len() as i64;
        counts.iter().enumerate().map(|(i, &c)| c * (2 * i as i64 + 1 - k)).sum()
    }
}

/// Partition moves made while balancing (Kafka's `PartitionMovements`), so that a partition
/// moving back along a path another partition of its topic took is swapped for that one.
#[derive(Default)]
struct Movements {
    /// Partition → (first member, current member).
    by_partition: HashMap<usize, (usize, usize)>,
    /// Topic → (from, to) → partitions.
    by_topic: HashMap<usize, BTreeMap<(usize, usize), BTreeSet<usize>>>,
}

impl Movements {
    fn remove(&mut self, p: usize, topic: usize) -> Option<(usize, usize)> {
        let pair = self.by_partition.remove(&p)?;
        if let Some(pairs) = self.by_topic.get_mut(&topic) {
            if let Some(set) = pairs.get_mut(&pair) {
                set.remove(&p);
                if set.is_empty() {
                    pairs.remove(&pair);
                }
            }
            if pairs.is_empty() {
                self.by_topic.remove(&topic);
            }
        }
        Some(pair)
    }

    fn add(&mut self, p: usize, topic: usize, pair: (usize, usize)) {
        self.by_partition.insert(p, pair);
        self.by_topic.entry(topic).or_default().entry(pair).or_default().insert(p);
    }

    fn record(&mut self, p: usize, topic: usize, from: usize, to: usize) {
        match self.remove(p, topic) {
            // Moving back to where it started cancels the movement.
            Some((first, _)) if first == to => {}
            Some((first, _)) => self.add(p, topic, (first, to)),
            None => self.add(p, topic, (from, to)),
        }
    }

    fn partition_to_move(&self, p: usize, topic: usize, from: usize, to: usize) -> usize {
        let Some(pairs) = self.by_topic.get(&topic) else { return p };
        let from = self.by_partition.get(&p).map_or(from, |&(first, _)| first);
        pairs.get(&(to, from)).and_then(|set| set.first().copied()).unwrap_or(p)
    }
}
