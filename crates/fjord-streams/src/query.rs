//! Where a key lives: the metadata behind interactive queries across instances (Kafka's
//! `KafkaStreams.queryMetadataForKey` and `metadataForAllStreamsClients`).
//!
//! A key's state is held by the one task that owns the key's partition, so an instance can
//! answer for the keys of its own tasks only. To send a query for any other key to the right
//! instance, every instance must know which instance runs which task. Kafka Streams carries
//! that in the consumer group protocol, and so does Fjord: each stream thread's consumer uses
//! the [`StreamsAssignor`] (protocol `stream`), which
//! - puts the instance's `application.server` endpoint ([`HostInfo`]) into the member's
//!   subscription user data,
//! - lets the group leader assign partitions as the range assignor does (partition `p` of
//!   co-partitioned topics to one member) and attach to every member's assignment the map
//!   from endpoint to the partitions assigned there,
//! - and on each member, on every rebalance, stores that map in the instance's
//!   [`ClusterMetadata`].
//!
//! The map is as fresh as the last rebalance: during one, a query may reach an instance that
//! just gave the key up, which then answers that it does not hold it.
//!
//! An instance answers for a key only while its own consumers hold the key's partition and its
//! task is open. A revocation (Kafka's `onPartitionsRevoked`, which runs inside `poll` before
//! the member rejoins) ends that at once, even though the task closes only after the `poll`
//! returns: so two instances never both answer for a key, the old owner and the new one, in
//! the moments a partition moves between them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use fjord_broker::consumer::assignor::{
    Assignment, PartitionAssignor, RangeAssignor, RebalanceProtocol, Subscription,
};
use fjord_log::TopicPartition;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::StreamsError;

/// The endpoint of an instance's interactive query server (`application.server`,
/// `host:port`), as other instances reach it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HostInfo {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl HostInfo {
    /// `host:port`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        HostInfo { host: host.into(), port }
    }
}

impl std::fmt::Display for HostInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl std::str::FromStr for HostInfo {
    type Err = StreamsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| StreamsError::Config {
            name: "application.server",
            reason: format!("`{s}` {reason}; write it as host:port, e.g. `localhost:7070`"),
        };
        let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("has no port"))?;
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        let port = port.parse().map_err(|_| bad("has no valid port"))?;
        Ok(HostInfo { host: host.to_string(), port })
    }
}

/// Where the state of one key lives (Kafka's `KeyQueryMetadata`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyQueryMetadata {
    /// The partition of the store's input topics that holds the key; `None` for a global
    /// store, which every instance holds in full.
    pub partition: Option<u32>,
    /// The instance whose task owns the partition, as of the last rebalance; `None` while no
    /// instance with an `application.server` owns it (the group is rebalancing, or the owner
    /// has no endpoint).
    pub active_host: Option<HostInfo>,
    /// Whether a task of this instance holds the key's store now, so that a local read
    /// answers for the key.
    pub local: bool,
}

/// One instance of the application as the last rebalance left it (Kafka's `StreamsMetadata`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamsMetadata {
    /// The instance's `application.server`.
    pub host_info: HostInfo,
    /// The input partitions assigned to it.
    pub topic_partitions: BTreeSet<TopicPartition>,
    /// The stores it holds: those of the sub-topologies it has tasks of, and every global
    /// store.
    pub state_stores: BTreeSet<String>,
}

/// Which instance runs which partitions: what the last rebalance told this instance.
#[derive(Debug, Default)]
pub(crate) struct ClusterMetadata {
    generation: i32,
    hosts: BTreeMap<HostInfo, BTreeSet<TopicPartition>>,
    /// What each stream thread's consumer holds now: assigned at a rebalance's end, and
    /// dropped when revoked or lost, before the member rejoins.
    held: BTreeMap<usize, BTreeSet<TopicPartition>>,
}

impl ClusterMetadata {
    /// Whether a consumer of this instance holds `partition` now.
    pub(crate) fn holds(&self, partition: &TopicPartition) -> bool {
        self.held.values().any(|tps| tps.contains(partition))
    }

    /// The instance assigned `partition`, if one with an endpoint is.
    pub(crate) fn owner(&self, partition: &TopicPartition) -> Option<&HostInfo> {
        self.hosts.iter().find(|(_, tps)| tps.contains(partition)).map(|(h, _)| h)
    }

    /// Every instance with an endpoint and its partitions.
    pub(crate) fn hosts(&self) -> &BTreeMap<HostInfo, BTreeSet<TopicPartition>> {
        &self.hosts
    }
}

/// The version byte in front of the user data this assignor writes; a member that reads
/// another version ignores the data (it then knows no endpoints) rather than failing.
const USER_DATA_VERSION: u8 = 1;

#[derive(Serialize, Deserialize)]
struct SubscriptionInfo {
    endpoint: Option<HostInfo>,
}

#[derive(Serialize, Deserialize)]
struct AssignmentInfo {
    hosts: Vec<(HostInfo, Vec<(String, u32)>)>,
}

fn encode<T: Serialize>(info: &T) -> Option<Bytes> {
    match postcard::to_extend(info, vec![USER_DATA_VERSION]) {
        Ok(bytes) => Some(Bytes::from(bytes)),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the streams assignor's user data");
            None
        }
    }
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: Option<&Bytes>, what: &str) -> Option<T> {
    match bytes.map(|b| b.split_first()) {
        Some(Some((&USER_DATA_VERSION, body))) => match postcard::from_bytes(body) {
            Ok(info) => Some(info),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring malformed streams {what} user data");
                None
            }
        },
        Some(Some((version, _))) => {
            tracing::warn!(version, "ignoring streams {what} user data of an unknown version");
            None
        }
        _ => None,
    }
}

/// The partition assignor of stream threads (Kafka Streams' `StreamsPartitionAssignor`,
/// protocol `stream`): range assignment, plus each instance's endpoint in both directions.
#[derive(Debug)]
pub(crate) struct StreamsAssignor {
    endpoint: Option<HostInfo>,
    /// Shared by the stream threads of the instance.
    cluster: Arc<Mutex<ClusterMetadata>>,
    /// The index of the stream thread whose consumer this assignor serves.
    thread: usize,
}

impl StreamsAssignor {
    pub(crate) fn new(
        endpoint: Option<HostInfo>,
        cluster: Arc<Mutex<ClusterMetadata>>,
        thread: usize,
    ) -> Self {
        StreamsAssignor { endpoint, cluster, thread }
    }
}

impl crate::backend::RevocationListener for StreamsAssignor {
    fn on_partitions_revoked(&self, partitions: &[TopicPartition]) {
        if let Some(held) = self.cluster.lock().held.get_mut(&self.thread) {
            for tp in partitions {
                held.remove(tp);
            }
        }
    }
}

impl PartitionAssignor for StreamsAssignor {
    fn name(&self) -> &'static str {
        "stream"
    }

    fn supported_protocols(&self) -> &'static [RebalanceProtocol] {
        &[RebalanceProtocol::Eager]
    }

    fn subscription_user_data(&self, _topics: &[String]) -> Option<Bytes> {
        encode(&SubscriptionInfo { endpoint: self.endpoint.clone() })
    }

    fn on_assignment(&self, assignment: &Assignment, generation: i32) {
        let hosts = decode::<AssignmentInfo>(assignment.user_data.as_ref(), "assignment")
            .map(|info| {
                info.hosts
                    .into_iter()
                    .map(|(host, tps)| {
                        (host, tps.into_iter().map(|(t, p)| TopicPartition::new(t, p)).collect())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut cluster = self.cluster.lock();
        cluster.held.insert(self.thread, assignment.partitions.iter().cloned().collect());
        // The threads of one instance are members of the same generation; a thread that
        // lags behind must not overwrite a newer map.
        if generation >= cluster.generation {
            cluster.generation = generation;
            cluster.hosts = hosts;
        }
    }

    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, u32>,
        subscriptions: &BTreeMap<String, Subscription>,
    ) -> BTreeMap<String, Assignment> {
        let mut assignments = RangeAssignor.assign(partitions_per_topic, subscriptions);
        let mut hosts: BTreeMap<HostInfo, Vec<(String, u32)>> = BTreeMap::new();
        for (member, assignment) in &assignments {
            let endpoint = subscriptions
                .get(member)
                .and_then(|s| decode::<SubscriptionInfo>(s.user_data.as_ref(), "subscription"))
                .and_then(|info| info.endpoint);
            if let Some(endpoint) = endpoint {
                hosts.entry(endpoint).or_default().extend(
                    assignment.partitions.iter().map(|tp| (tp.topic.to_string(), tp.partition)),
                );
            }
        }
        let user_data = encode(&AssignmentInfo { hosts: hosts.into_iter().collect() });
        for assignment in assignments.values_mut() {
            assignment.user_data = user_data.clone();
        }
        assignments
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(endpoint: Option<HostInfo>, topics: &[&str]) -> Subscription {
        let assignor = StreamsAssignor::new(endpoint, Arc::default(), 0);
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        Subscription {
            user_data: assignor.subscription_user_data(&topics),
            ..Subscription::new(topics)
        }
    }

    #[test]
    fn every_member_learns_which_endpoint_owns_which_partition() {
        let a = HostInfo::new("a", 1);
        let b = HostInfo::new("b", 2);
        let subscriptions = BTreeMap::from([
            ("m1".to_string(), member(Some(a.clone()), &["in"])),
            ("m2".to_string(), member(Some(b.clone()), &["in"])),
            ("m3".to_string(), member(None, &["in"])),
        ]);
        let partitions = BTreeMap::from([("in".to_string(), 6)]);
        let leader = StreamsAssignor::new(Some(a.clone()), Arc::default(), 0);
        let assignments = leader.assign(&partitions, &subscriptions);
        // The partitions are the range assignor's.
        let range = RangeAssignor.assign(&partitions, &subscriptions);
        for (m, assignment) in &assignments {
            assert_eq!(assignment.partitions, range[m].partitions);
        }
        // Every member reads the same map back, through the wire encoding.
        for assignment in assignments.values() {
            let wire = Assignment::decode(&assignment.encode()).unwrap();
            let follower = StreamsAssignor::new(None, Arc::default(), 0);
            follower.on_assignment(&wire, 3);
            let cluster = follower.cluster.lock();
            assert_eq!(cluster.hosts().len(), 2, "the member without an endpoint is not listed");
            for (m, host) in [("m1", &a), ("m2", &b)] {
                for tp in &assignments[m].partitions {
                    assert_eq!(cluster.owner(tp), Some(host));
                }
            }
            for tp in &assignments["m3"].partitions {
                assert_eq!(cluster.owner(tp), None);
            }
        }
    }

    #[test]
    fn an_older_generation_does_not_replace_a_newer_map() {
        let cluster = Arc::new(Mutex::new(ClusterMetadata::default()));
        let assignor = StreamsAssignor::new(None, cluster.clone(), 0);
        let tp = TopicPartition::new("in", 0);
        let with = |host: &str| Assignment {
            partitions: vec![tp.clone()],
            user_data: encode(&AssignmentInfo {
                hosts: vec![(HostInfo::new(host, 1), vec![("in".into(), 0)])],
            }),
        };
        assignor.on_assignment(&with("new"), 5);
        assignor.on_assignment(&with("old"), 4);
        assert_eq!(cluster.lock().owner(&tp), Some(&HostInfo::new("new", 1)));
    }

    #[test]
    fn a_partition_is_held_from_its_assignment_until_its_revocation() {
        use crate::backend::RevocationListener;
        let cluster = Arc::new(Mutex::new(ClusterMetadata::default()));
        let threads = [0, 1].map(|t| StreamsAssignor::new(None, cluster.clone(), t));
        let tp = |p| TopicPartition::new("in", p);
        let assignment = |ps: &[u32]| Assignment {
            partitions: ps.iter().map(|&p| tp(p)).collect(),
            user_data: None,
        };
        threads[0].on_assignment(&assignment(&[0, 1]), 1);
        threads[1].on_assignment(&assignment(&[2]), 1);
        assert!([0, 1, 2].iter().all(|&p| cluster.lock().holds(&tp(p))));
        // Partition 1 moves from thread 0 to thread 1: thread 1 may be assigned it before
        // thread 0's revocation runs, and holds it after.
        threads[1].on_assignment(&assignment(&[1, 2]), 2);
        threads[0].on_partitions_revoked(&[tp(0), tp(1)]);
        assert!(!cluster.lock().holds(&tp(0)));
        assert!(cluster.lock().holds(&tp(1)) && cluster.lock().holds(&tp(2)));
        threads[1].on_partitions_revoked(&[tp(1), tp(2)]);
        assert!(![0, 1, 2].iter().any(|&p| cluster.lock().holds(&tp(p))));
    }

    #[test]
    fn malformed_or_foreign_user_data_means_no_endpoints() {
        let assignor = StreamsAssignor::new(None, Arc::default(), 0);
        for data in [vec![USER_DATA_VERSION, 0xff, 0xff], vec![9, 0], vec![]] {
            let assignment = Assignment { partitions: vec![], user_data: Some(data.into()) };
            assignor.on_assignment(&assignment, 1);
            assert!(assignor.cluster.lock().hosts().is_empty());
        }
    }

    #[test]
    fn host_info_parses_host_and_port_and_names_what_is_wrong() {
        assert_eq!("localhost:7070".parse::<HostInfo>().unwrap(), HostInfo::new("localhost", 7070));
        assert_eq!("[::1]:80".parse::<HostInfo>().unwrap(), HostInfo::new("[::1]", 80));
        for bad in ["localhost", ":80", "host:port", "host:70000"] {
            let e = bad.parse::<HostInfo>().unwrap_err().to_string();
            assert!(e.contains("application.server") && e.contains(bad), "{e}");
        }
    }
}
