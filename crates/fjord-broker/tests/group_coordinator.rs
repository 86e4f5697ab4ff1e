#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The group coordinator over a real log in a temporary directory: Kafka's classic group
//! protocol (joins, syncs, heartbeats, leaves, evictions, rebalance timeouts), offset commits
//! and their fencing, persistence across a restart, admin operations.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fjord_broker::group::{
    GroupConfig, GroupCoordinator, GroupListing, GroupState, JoinGroupRequest, JoinGroupResponse,
    OffsetAndMetadata, OffsetCommitRequest, SyncGroupRequest,
};
use fjord_broker::{BrokerError, TopicPartition};
use fjord_log::record::{BatchOptions, ControlRecordType, EndTxnMarker, RecordBatchBuilder};
use fjord_log::{LogManager, LogManagerConfig};
use futures::future::join_all;
use tokio::sync::mpsc;

const GROUP: &str = "g";
const OFFSETS_TOPIC: &str = "__consumer_offsets";

fn config() -> GroupConfig {
    GroupConfig {
        min_session_timeout: Duration::from_millis(10),
        max_session_timeout: Duration::from_secs(60),
        initial_rebalance_delay: Duration::ZERO,
        max_size: 100,
    }
}

fn open_logs(dir: &Path) -> LogManager {
    LogManager::open(dir, LogManagerConfig { background: false, ..Default::default() }).unwrap().0
}

fn offsets_topic(logs: &LogManager, partitions: u32) -> Arc<fjord_log::Topic> {
    match logs.topic(OFFSETS_TOPIC) {
        Ok(topic) => topic,
        Err(_) => logs
            .create_internal_topic(
                OFFSETS_TOPIC,
                partitions,
                BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]),
            )
            .unwrap(),
    }
}

fn coordinator(logs: &LogManager, config: GroupConfig) -> Arc<GroupCoordinator> {
    let coordinator = Arc::new(GroupCoordinator::load(offsets_topic(logs, 3), config).unwrap());
    coordinator.start();
    coordinator
}

/// A consumer's join. Clients whose name starts with `short` have a 100 ms session, the
/// others 10 s; every member has a 5 s rebalance timeout.
fn join_request(member_id: &str, client: &str) -> JoinGroupRequest {
    let session = if client.starts_with("short") { 100 } else { 10_000 };
    JoinGroupRequest {
        group_id: GROUP.into(),
        member_id: member_id.into(),
        client_id: client.into(),
        session_timeout: Duration::from_millis(session),
        rebalance_timeout: Duration::from_secs(5),
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from(format!("sub-{client}")))],
    }
}

fn assignment_for(member_id: &str) -> Bytes {
    Bytes::from(format!("assignment-of-{member_id}"))
}

fn sync_request(response: &JoinGroupResponse) -> SyncGroupRequest {
    let assignments = if response.leader == response.member_id {
        response
            .members
            .iter()
            .map(|m| (m.member_id.clone(), assignment_for(&m.member_id)))
            .collect()
    } else {
        Vec::new()
    };
    SyncGroupRequest {
        group_id: GROUP.into(),
        generation_id: response.generation_id,
        member_id: response.member_id.clone(),
        assignments,
    }
}

/// Syncs every member (followers first, so they wait for the leader) and checks that each
/// gets its own assignment.
async fn sync_all(c: &GroupCoordinator, responses: &[JoinGroupResponse]) {
    let mut ordered: Vec<&JoinGroupResponse> = responses.iter().collect();
    ordered.sort_by_key(|r| r.leader == r.member_id);
    let results = join_all(ordered.iter().map(|r| c.sync_group(sync_request(r)))).await;
    for (r, result) in ordered.iter().zip(results) {
        assert_eq!(result.unwrap(), assignment_for(&r.member_id));
    }
}

/// Rejoins the given members in one join phase (the futures are polled in order, so every
/// join is registered before the last one completes the phase).
async fn rejoin_all(c: &GroupCoordinator, members: &[(String, &str)]) -> Vec<JoinGroupResponse> {
    join_all(members.iter().map(|(id, client)| c.join_group(join_request(id, client))))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

struct Formed {
    generation: i32,
    leader: String,
    /// Member ids, in the order of `clients`.
    members: Vec<String>,
}

/// Forms a Stable group of `clients` deterministically: the first joins alone (generation 1),
/// then the others join and the first rejoins in one join phase.
async fn form_group(c: &GroupCoordinator, clients: &[&str]) -> Formed {
    let first = c.join_group(join_request("", clients[0])).await.unwrap();
    let mut futures = Vec::new();
    for client in &clients[1..] {
        futures.push(c.join_group(join_request("", client)));
    }
    futures.push(c.join_group(join_request(&first.member_id, clients[0])));
    let mut responses: Vec<JoinGroupResponse> =
        join_all(futures).await.into_iter().map(Result::unwrap).collect();
    responses.rotate_right(1);
    let generation = responses[0].generation_id;
    let leader = responses[0].leader.clone();
    assert_eq!(leader, first.member_id, "the old leader rejoined and stays leader");
    for r in &responses {
        assert_eq!((r.generation_id, r.leader.as_str()), (generation, leader.as_str()));
    }
    sync_all(c, &responses).await;
    let members = responses.iter().map(|r| r.member_id.clone()).collect();
    Formed { generation, leader, members }
}

fn tp(topic: &str, partition: u32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

fn offset(offset: i64) -> OffsetAndMetadata {
    OffsetAndMetadata {
        offset,
        leader_epoch: -1,
        metadata: format!("m{offset}"),
        commit_timestamp: 1_000 + offset,
    }
}

fn commit(
    member_id: &str,
    generation_id: i32,
    offsets: &[(TopicPartition, i64)],
) -> OffsetCommitRequest {
    OffsetCommitRequest {
        group_id: GROUP.into(),
        member_id: member_id.into(),
        generation_id,
        offsets: offsets.iter().map(|(tp, o)| (tp.clone(), offset(*o))).collect(),
    }
}

fn state_of(c: &GroupCoordinator) -> (GroupState, i32, usize) {
    let d = c.describe_group(GROUP).unwrap();
    (d.state, d.generation_id, d.members.len())
}

#[tokio::test(start_paused = true)]
async fn three_members_join_concurrently_in_one_generation() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(
        &logs,
        GroupConfig { initial_rebalance_delay: Duration::from_millis(50), ..config() },
    );
    let started = tokio::time::Instant::now();
    let clients = ["c1", "c2", "c3"];
    let responses: Vec<JoinGroupResponse> =
        join_all(clients.iter().map(|cl| c.join_group(join_request("", cl))))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    assert!(
        started.elapsed() >= Duration::from_millis(50),
        "the initial rebalance delay was waited"
    );

    let leader = responses[0].leader.clone();
    assert_eq!(leader, responses[0].member_id, "the first member to join leads");
    for (r, client) in responses.iter().zip(clients) {
        assert_eq!(r.generation_id, 1);
        assert_eq!(r.protocol_name, "range");
        assert_eq!(r.leader, leader);
        assert!(r.member_id.starts_with(&format!("{client}-")), "{}", r.member_id);
        assert_eq!(
            r.member_id.len(),
            client.len() + 1 + 36,
            "client id, dash, UUID: {}",
            r.member_id
        );
        if r.member_id == leader {
            let mut got: Vec<(String, Bytes)> =
                r.members.iter().map(|m| (m.member_id.clone(), m.metadata.clone())).collect();
            got.sort();
            let mut expected: Vec<(String, Bytes)> = responses
                .iter()
                .zip(clients)
                .map(|(r, cl)| (r.member_id.clone(), Bytes::from(format!("sub-{cl}"))))
                .collect();
            expected.sort();
            assert_eq!(got, expected, "the leader gets every member with its metadata");
        } else {
            assert!(r.members.is_empty(), "followers get no member list");
        }
    }
    let ids: std::collections::HashSet<&String> = responses.iter().map(|r| &r.member_id).collect();
    assert_eq!(ids.len(), 3, "member ids are unique");

    sync_all(&c, &responses).await;
    let description = c.describe_group(GROUP).unwrap();
    assert_eq!(description.state, GroupState::Stable);
    assert_eq!(description.generation_id, 1);
    assert_eq!(description.protocol, "range");
    assert_eq!(description.leader, leader);
    assert_eq!(description.members.len(), 3);
    for m in &description.members {
        assert_eq!(m.assignment, assignment_for(&m.member_id));
        assert!(m.metadata.starts_with(b"sub-c"));
    }
    // A sync after the group is stable answers at once.
    let late = c.sync_group(sync_request(&responses[1])).await.unwrap();
    assert_eq!(late, assignment_for(&responses[1].member_id));
    c.shutdown().await;
}

#[tokio::test]
async fn a_fourth_member_triggers_a_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(&logs, config());
    let formed = form_group(&c, &["c1", "c2", "c3"]).await;
    let mut signal = c.rebalance_signal(GROUP);
    signal.borrow_and_update();

    let fourth = tokio::spawn({
        let c = c.clone();
        async move { c.join_group(join_request("", "c4")).await }
    });
    signal.changed().await.unwrap();
    assert_eq!(state_of(&c).0, GroupState::PreparingRebalance);
    for m in &formed.members {
        let err = c.heartbeat(GROUP, m, formed.generation).unwrap_err();
        assert!(matches!(err, BrokerError::RebalanceInProgress(_)), "{err}");
    }
    // A sync of the old generation is refused while the group prepares.
    let err = c
        .sync_group(SyncGroupRequest {
            group_id: GROUP.into(),
            generation_id: formed.generation,
            member_id: formed.members[1].clone(),
            assignments: vec![],
        })
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::RebalanceInProgress(_)), "{err}");

    let rejoin: Vec<(String, &str)> =
        formed.members.iter().cloned().zip(["c1", "c2", "c3"]).collect();
    let mut responses = rejoin_all(&c, &rejoin).await;
    responses.push(fourth.await.unwrap().unwrap());
    let generation = formed.generation + 1;
    for r in &responses {
        assert_eq!(r.generation_id, generation);
        assert_eq!(r.leader, formed.leader, "the old leader rejoined and stays leader");
    }
    let leader_response = responses.iter().find(|r| r.member_id == formed.leader).unwrap();
    assert_eq!(leader_response.members.len(), 4);
    let err = c.heartbeat(GROUP, &formed.members[0], formed.generation).unwrap_err();
    assert!(
        matches!(err, BrokerError::IllegalGeneration { generation: g, current, .. } if g == formed.generation && current == generation)
    );
    // CompletingRebalance: heartbeats of the new generation are fine.
    c.heartbeat(GROUP, &formed.members[0], generation).unwrap();
    sync_all(&c, &responses).await;
    assert_eq!(state_of(&c), (GroupState::Stable, generation, 4));
    assert!(!signal.has_changed().unwrap(), "one rebalance, one signal");
    c.shutdown().await;
}

#[tokio::test]
async fn leaving_triggers_a_rebalance_and_completes_a_join_phase_waiting_on_the_leaver() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(&logs, config());
    let formed = form_group(&c, &["c1", "c2", "c3"]).await;
    let mut signal = c.rebalance_signal(GROUP);
    signal.borrow_and_update();

    c.leave_group(GROUP, &formed.members[2]).await.unwrap();
    assert!(signal.has_changed().unwrap());
    assert_eq!(state_of(&c), (GroupState::PreparingRebalance, formed.generation, 2));
    let err = c.leave_group(GROUP, &formed.members[2]).await.unwrap_err();
    assert!(matches!(err, BrokerError::UnknownMemberId { .. }), "{err}");
    let err = c.heartbeat(GROUP, &formed.members[2], formed.generation).unwrap_err();
    assert!(matches!(err, BrokerError::UnknownMemberId { .. }), "{err}");
    let responses =
        rejoin_all(&c, &[(formed.members[0].clone(), "c1"), (formed.members[1].clone(), "c2")])
            .await;
    let generation = formed.generation + 1;
    assert!(responses.iter().all(|r| r.generation_id == generation));
    sync_all(&c, &responses).await;
    assert_eq!(state_of(&c), (GroupState::Stable, generation, 2));

    // The last members leave: the group is Empty, at a new generation.
    for r in &responses {
        c.leave_group(GROUP, &r.member_id).await.unwrap();
    }
    let d = c.describe_group(GROUP).unwrap();
    assert_eq!(
        (d.state, d.generation_id, d.members.len(), d.leader.as_str(), d.protocol.as_str()),
        (GroupState::Empty, generation + 1, 0, "", "")
    );

    // Two members rejoin (a rebalance starts); the join phase waits for the third... which
    // leaves instead: the phase completes at once.
    let started = std::time::Instant::now();
    let formed = form_group(&c, &["d1", "d2", "d3"]).await;
    let mut j1 = Box::pin(c.join_group(join_request(&formed.members[0], "d1")));
    let mut j2 = Box::pin(c.join_group(join_request(&formed.members[1], "d2")));
    assert!(futures::poll!(&mut j1).is_pending());
    assert!(futures::poll!(&mut j2).is_pending());
    assert!(futures::poll!(&mut j1).is_pending(), "still waiting for d3");
    c.leave_group(GROUP, &formed.members[2]).await.unwrap();
    let (r1, r2) = (j1.await.unwrap(), j2.await.unwrap());
    assert_eq!(r1.generation_id, formed.generation + 1);
    assert_eq!(r2.generation_id, formed.generation + 1);
    assert_eq!(r1.leader, formed.members[0]);
    assert_eq!(r1.members.len(), 2);

    assert!(started.elapsed() < Duration::from_secs(1), "no timeout was waited for");
    c.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_member_is_evicted_after_its_session_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(&logs, config());
    let formed = form_group(&c, &["c1", "c2", "short-c3"]).await;
    let mut signal = c.rebalance_signal(GROUP);
    signal.borrow_and_update();
    let started = tokio::time::Instant::now();
    // Nobody heartbeats; the short session (100 ms) ends first and starts a rebalance.
    signal.changed().await.unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(100) && waited < Duration::from_secs(1), "{waited:?}");
    let err = c.heartbeat(GROUP, &formed.members[2], formed.generation).unwrap_err();
    assert!(matches!(err, BrokerError::UnknownMemberId { .. }), "{err}");
    let err = c.heartbeat(GROUP, &formed.members[0], formed.generation).unwrap_err();
    assert!(matches!(err, BrokerError::RebalanceInProgress(_)), "{err}");
    assert_eq!(state_of(&c), (GroupState::PreparingRebalance, formed.generation, 2));
    let responses =
        rejoin_all(&c, &[(formed.members[0].clone(), "c1"), (formed.members[1].clone(), "c2")])
            .await;
    assert!(
        responses
            .iter()
            .all(|r| r.generation_id == formed.generation + 1 && r.leader == formed.leader)
    );
    sync_all(&c, &responses).await;
    assert_eq!(state_of(&c), (GroupState::Stable, formed.generation + 1, 2));

    // Heartbeats keep a short session alive.
    let short = c.join_group(join_request("", "short-c4"));
    let members = [(formed.members[0].clone(), "c1"), (formed.members[1].clone(), "c2")];
    let rejoin = rejoin_all(&c, &members);
    let (short, mut responses) = tokio::join!(short, rejoin);
    let short = short.unwrap();
    responses.push(short.clone());
    sync_all(&c, &responses).await;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.heartbeat(GROUP, &short.member_id, short.generation_id).unwrap();
    }
    assert_eq!(state_of(&c), (GroupState::Stable, short.generation_id, 3));
    c.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn members_that_do_not_rejoin_or_sync_in_time_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(&logs, config());
    let formed = form_group(&c, &["c1", "c2", "c3"]).await;
    // c1 and c2 rejoin, c3 never does: the phase ends after the rebalance timeout (5 s).
    let started = tokio::time::Instant::now();
    let responses =
        rejoin_all(&c, &[(formed.members[0].clone(), "c1"), (formed.members[1].clone(), "c2")])
            .await;
    assert!(started.elapsed() >= Duration::from_secs(5));
    assert!(responses.iter().all(|r| r.generation_id == formed.generation + 1));
    let leader = responses.iter().find(|r| r.member_id == r.leader).unwrap();
    assert_eq!(leader.members.len(), 2);
    let err = c.heartbeat(GROUP, &formed.members[2], formed.generation).unwrap_err();
    assert!(matches!(err, BrokerError::UnknownMemberId { .. }), "{err}");

    // The follower syncs, the leader never does: after the rebalance timeout the leader is
    // removed, the follower's sync fails with RebalanceInProgress, and it rejoins alone.
    let follower = responses.iter().find(|r| r.member_id != r.leader).unwrap();
    let started = tokio::time::Instant::now();
    let err = c.sync_group(sync_request(follower)).await.unwrap_err();
    assert!(matches!(err, BrokerError::RebalanceInProgress(_)), "{err}");
    assert!(started.elapsed() >= Duration::from_secs(5));
    let err = c.heartbeat(GROUP, &leader.member_id, leader.generation_id).unwrap_err();
    assert!(matches!(err, BrokerError::UnknownMemberId { .. }), "{err}");
    let alone = c.join_group(join_request(&follower.member_id, "c2")).await.unwrap();
    assert_eq!(
        (alone.generation_id, alone.leader.as_str()),
        (follower.generation_id + 1, follower.member_id.as_str())
    );
    c.shutdown().await;
}

#[tokio::test]
async fn a_rebalance_fails_waiting_syncs_and_repeated_joins_get_the_current_generation() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(&logs, config());
    let first = c.join_group(join_request("", "c1")).await.unwrap();
    let (second, first_again) = tokio::join!(
        c.join_group(join_request("", "c2")),
        c.join_group(join_request(&first.member_id, "c1"))
    );
    let (second, first_again) = (second.unwrap(), first_again.unwrap());
    // A repeated join with the same metadata during CompletingRebalance: same answer, no rebalance.
    let repeated = c.join_group(join_request(&first_again.member_id, "c1")).await.unwrap();
    assert_eq!(repeated, first_again);
    assert_eq!(state_of(&c).0, GroupState::CompletingRebalance);
    // A follower waits for the leader's sync; a new member starts a rebalance instead.
    let mut follower_sync = Box::pin(c.sync_group(sync_request(&second)));
    assert!(futures::poll!(&mut follower_sync).is_pending());
    let mut third = Box::pin(c.join_group(join_request("", "c3")));
    assert!(futures::poll!(&mut third).is_pending());
    let err = follower_sync.await.unwrap_err();
    assert!(matches!(err, BrokerError::RebalanceInProgress(_)), "{err}");
    let err = c.sync_group(sync_request(&first_again)).await.unwrap_err();
    assert!(matches!(err, BrokerError::RebalanceInProgress(_)), "{err}");
    let rejoined =
        rejoin_all(&c, &[(second.member_id.clone(), "c2"), (first.member_id.clone(), "c1")]).await;
    let third = third.await.unwrap();
    assert_eq!(third.generation_id, first_again.generation_id + 1);
    let mut all = rejoined;
    all.push(third);
    sync_all(&c, &all).await;
    assert_eq!(state_of(&c), (GroupState::Stable, first_again.generation_id + 1, 3));
    c.shutdown().await;
}

#[tokio::test]
async fn an_abandoned_join_does_not_hold_up_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(&logs, config());
    let formed = form_group(&c, &["c1", "c2", "c3"]).await;
    // c3 rejoins, then its caller gives up (the future is dropped).
    let mut abandoned = Box::pin(c.join_group(join_request(&formed.members[2], "c3")));
    assert!(futures::poll!(&mut abandoned).is_pending());
    drop(abandoned);
    // The others rejoin: the phase completes at once, without c3.
    let members = [(formed.members[0].clone(), "c1"), (formed.members[1].clone(), "c2")];
    let responses = rejoin_all(&c, &members).await;
    let leader = responses.iter().find(|r| r.member_id == r.leader).unwrap();
    assert_eq!(leader.members.len(), 2);
    sync_all(&c, &responses).await;
    assert_eq!(state_of(&c), (GroupState::Stable, formed.generation + 1, 2));
    let err = c.heartbeat(GROUP, &formed.members[2], formed.generation).unwrap_err();
    assert!(matches!(err, BrokerError::UnknownMemberId { .. }), "{err}");
    c.shutdown().await;
}

#[tokio::test]
async fn join_validation() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(&logs, GroupConfig { max_size: 2, ..config() });

    let err = c
        .join_group(JoinGroupRequest { group_id: String::new(), ..join_request("", "c") })
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::InvalidGroupId(_)), "{err}");
    for session in [Duration::from_millis(5), Duration::from_secs(61)] {
        let err = c
            .join_group(JoinGroupRequest { session_timeout: session, ..join_request("", "c") })
            .await
            .unwrap_err();
        assert!(
            matches!(err, BrokerError::InvalidSessionTimeout { min_ms: 10, max_ms: 60_000, .. }),
            "{err}"
        );
    }
    let err = c.join_group(join_request("nobody", "c")).await.unwrap_err();
    assert!(matches!(err, BrokerError::UnknownMemberId { .. }), "{err}");
    let err = c
        .join_group(JoinGroupRequest { protocols: vec![], ..join_request("", "c") })
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::InconsistentGroupProtocol { .. }), "{err}");
    assert!(c.list_groups().is_empty(), "failed joins create no group");

    let formed = form_group(&c, &["c1", "c2"]).await;
    let err = c
        .join_group(JoinGroupRequest { protocol_type: "connect".into(), ..join_request("", "c3") })
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::InconsistentGroupProtocol { .. }), "{err}");
    let err = c
        .join_group(JoinGroupRequest {
            protocols: vec![("roundrobin".into(), Bytes::new())],
            ..join_request("", "c3")
        })
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::InconsistentGroupProtocol { .. }), "{err}");
    let err = c.join_group(join_request("", "c3")).await.unwrap_err();
    assert!(matches!(err, BrokerError::GroupMaxSizeReached { max: 2, .. }), "{err}");
    assert_eq!(
        state_of(&c),
        (GroupState::Stable, formed.generation, 2),
        "refused joins change nothing"
    );

    let err = c
        .sync_group(SyncGroupRequest {
            group_id: GROUP.into(),
            generation_id: formed.generation,
            member_id: "nobody".into(),
            assignments: vec![],
        })
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::UnknownMemberId { .. }), "{err}");
    let err = c
        .sync_group(SyncGroupRequest {
            group_id: GROUP.into(),
            generation_id: formed.generation - 1,
            member_id: formed.members[0].clone(),
            assignments: vec![],
        })
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::IllegalGeneration { .. }), "{err}");
    let err = c.heartbeat(GROUP, &formed.members[0], formed.generation + 1).unwrap_err();
    assert!(matches!(err, BrokerError::IllegalGeneration { .. }), "{err}");
    let err = c.heartbeat("other", &formed.members[0], formed.generation).unwrap_err();
    assert!(matches!(err, BrokerError::UnknownMemberId { .. }), "{err}");
    c.heartbeat(GROUP, &formed.members[1], formed.generation).unwrap();
    c.shutdown().await;
}

#[tokio::test]
async fn protocol_selection_follows_the_members_votes() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(&logs, config());
    let request = |member_id: &str, client: &str, protocols: &[&str]| JoinGroupRequest {
        protocols: protocols
            .iter()
            .map(|p| (p.to_string(), Bytes::from(format!("{client}-{p}"))))
            .collect(),
        ..join_request(member_id, client)
    };
    let a = c.join_group(request("", "a", &["roundrobin", "range"])).await.unwrap();
    assert_eq!(a.protocol_name, "roundrobin");
    let (b, cc, a) = tokio::join!(
        c.join_group(request("", "b", &["range", "roundrobin"])),
        c.join_group(request("", "c", &["range", "roundrobin", "sticky"])),
        c.join_group(request(&a.member_id, "a", &["roundrobin", "range"])),
    );
    let (b, cc, a) = (b.unwrap(), cc.unwrap(), a.unwrap());
    for r in [&a, &b, &cc] {
        assert_eq!(r.protocol_name, "range", "two votes for range, one for roundrobin");
    }
    let mut metadata: Vec<Bytes> = a.members.iter().map(|m| m.metadata.clone()).collect();
    metadata.sort();
    assert_eq!(
        metadata,
        ["a-range", "b-range", "c-range"].map(|s| Bytes::from_static(s.as_bytes())),
        "metadata of the chosen protocol"
    );
    // A member that supports only what not everyone supports is refused.
    let err = c.join_group(request("", "d", &["sticky"])).await.unwrap_err();
    assert!(matches!(err, BrokerError::InconsistentGroupProtocol { .. }), "{err}");
    c.shutdown().await;
}

#[tokio::test]
async fn offset_commits_are_fenced_by_member_and_generation() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(&logs, config());
    let formed = form_group(&c, &["c1", "c2"]).await;
    let (m1, m2, generation) =
        (formed.members[0].clone(), formed.members[1].clone(), formed.generation);

    c.commit_offsets(commit(&m1, generation, &[(tp("t", 0), 10), (tp("t", 1), 11)])).await.unwrap();
    let fetched = c.fetch_offsets(GROUP, None).unwrap();
    assert_eq!(fetched, BTreeMap::from([(tp("t", 0), offset(10)), (tp("t", 1), offset(11))]));
    let only = c.fetch_offsets(GROUP, Some(&[tp("t", 1), tp("t", 7)])).unwrap();
    assert_eq!(only, BTreeMap::from([(tp("t", 1), offset(11))]));
    assert!(c.fetch_offsets("unknown-group", None).unwrap().is_empty());

    let err = c.commit_offsets(commit(&m1, generation - 1, &[(tp("t", 0), 99)])).await.unwrap_err();
    assert!(matches!(err, BrokerError::IllegalGeneration { .. }), "{err}");
    let err =
        c.commit_offsets(commit("nobody", generation, &[(tp("t", 0), 99)])).await.unwrap_err();
    assert!(matches!(err, BrokerError::UnknownMemberId { .. }), "{err}");
    let err = c.commit_offsets(commit("", -1, &[(tp("t", 0), 99)])).await.unwrap_err();
    assert!(
        matches!(err, BrokerError::UnknownMemberId { .. }),
        "manual commits need a group without members: {err}"
    );
    assert_eq!(
        c.fetch_offsets(GROUP, None).unwrap()[&tp("t", 0)],
        offset(10),
        "refused commits change nothing"
    );

    // PreparingRebalance: members commit with the old generation from their revoke callback.
    let mut third = Box::pin(c.join_group(join_request("", "c3")));
    assert!(futures::poll!(&mut third).is_pending());
    assert_eq!(state_of(&c).0, GroupState::PreparingRebalance);
    c.commit_offsets(commit(&m2, generation, &[(tp("t", 0), 20)])).await.unwrap();
    assert_eq!(c.fetch_offsets(GROUP, None).unwrap()[&tp("t", 0)], offset(20));

    // CompletingRebalance: no commits until the assignment is in.
    let (r1, r2, r3) = tokio::join!(
        c.join_group(join_request(&m1, "c1")),
        c.join_group(join_request(&m2, "c2")),
        third,
    );
    let responses = [r1.unwrap(), r2.unwrap(), r3.unwrap()];
    assert_eq!(state_of(&c).0, GroupState::CompletingRebalance);
    for g in [generation, generation + 1] {
        let err = c.commit_offsets(commit(&m1, g, &[(tp("t", 0), 30)])).await.unwrap_err();
        assert!(matches!(err, BrokerError::RebalanceInProgress(_)), "{err}");
    }
    sync_all(&c, &responses).await;
    c.commit_offsets(commit(&m1, generation + 1, &[(tp("t", 0), 30)])).await.unwrap();
    let err = c.commit_offsets(commit(&m1, generation, &[(tp("t", 0), 31)])).await.unwrap_err();
    assert!(matches!(err, BrokerError::IllegalGeneration { .. }), "{err}");
    assert_eq!(c.fetch_offsets(GROUP, None).unwrap()[&tp("t", 0)], offset(30));

    // A consumer that assigns partitions by hand: generation -1, no member id, a group of its own.
    let manual =
        OffsetCommitRequest { group_id: "manual".into(), ..commit("", -1, &[(tp("t", 2), 5)]) };
    c.commit_offsets(manual).await.unwrap();
    assert_eq!(c.fetch_offsets("manual", None).unwrap(), BTreeMap::from([(tp("t", 2), offset(5))]));
    let listing = c.list_groups();
    assert!(listing.contains(&GroupListing {
        group_id: "manual".into(),
        protocol_type: String::new(),
        state: GroupState::Empty
    }));
    // A commit with a generation for a group that does not exist is stale.
    let err = c
        .commit_offsets(OffsetCommitRequest {
            group_id: "gone".into(),
            ..commit("m", 3, &[(tp("t", 0), 1)])
        })
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::IllegalGeneration { .. }), "{err}");
    c.shutdown().await;
}

#[tokio::test]
async fn committed_offsets_and_generations_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let generation;
    let emptied_generation;
    {
        let logs = open_logs(dir.path());
        let c = coordinator(&logs, config());
        let formed = form_group(&c, &["c1", "c2"]).await;
        generation = formed.generation;
        c.commit_offsets(commit(
            &formed.members[0],
            generation,
            &[(tp("t", 0), 10), (tp("u", 3), 33)],
        ))
        .await
        .unwrap();
        c.commit_offsets(commit(&formed.members[1], generation, &[(tp("t", 0), 12)]))
            .await
            .unwrap();
        let manual =
            OffsetCommitRequest { group_id: "manual".into(), ..commit("", -1, &[(tp("t", 1), 7)]) };
        c.commit_offsets(manual).await.unwrap();
        // A group whose members all left comes back Empty at its last generation.
        let other = JoinGroupRequest { group_id: "left".into(), ..join_request("", "x") };
        let joined = c.join_group(other).await.unwrap();
        c.leave_group("left", &joined.member_id).await.unwrap();
        emptied_generation = c.describe_group("left").unwrap().generation_id;
        assert_eq!(emptied_generation, 2);
        // A deleted group does not come back.
        let deleted = OffsetCommitRequest {
            group_id: "deleted".into(),
            ..commit("", -1, &[(tp("t", 1), 1)])
        };
        c.commit_offsets(deleted).await.unwrap();
        c.delete_group("deleted").await.unwrap();
        c.shutdown().await;
        drop(c);
        logs.close().unwrap();
    }
    let logs = open_logs(dir.path());
    let c = coordinator(&logs, config());
    assert_eq!(
        c.fetch_offsets(GROUP, None).unwrap(),
        BTreeMap::from([(tp("t", 0), offset(12)), (tp("u", 3), offset(33))])
    );
    assert_eq!(c.fetch_offsets("manual", None).unwrap(), BTreeMap::from([(tp("t", 1), offset(7))]));
    let d = c.describe_group(GROUP).unwrap();
    assert_eq!(
        (d.state, d.generation_id, d.protocol_type.as_str(), d.members.len()),
        (GroupState::Empty, generation, "consumer", 0)
    );
    assert_eq!(c.describe_group("left").unwrap().generation_id, emptied_generation);
    assert!(matches!(c.describe_group("deleted"), Err(BrokerError::GroupIdNotFound(_))));
    let names: Vec<String> = c.list_groups().into_iter().map(|l| l.group_id).collect();
    assert_eq!(names, ["g", "left", "manual"]);

    // Members of the old generation are gone; a new join gets a larger generation.
    let err =
        c.commit_offsets(commit("whoever", generation, &[(tp("t", 0), 1)])).await.unwrap_err();
    assert!(matches!(err, BrokerError::UnknownMemberId { .. }), "{err}");
    let joined = c.join_group(join_request("", "c9")).await.unwrap();
    assert!(joined.generation_id > generation, "{} > {generation}", joined.generation_id);
    c.shutdown().await;
}

#[tokio::test]
async fn delete_and_reset_are_refused_while_the_group_has_members() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(&logs, config());
    let formed = form_group(&c, &["c1"]).await;
    c.commit_offsets(commit(
        &formed.members[0],
        formed.generation,
        &[(tp("t", 0), 10), (tp("t", 1), 11)],
    ))
    .await
    .unwrap();

    let err = c.delete_group(GROUP).await.unwrap_err();
    assert!(matches!(err, BrokerError::NonEmptyGroup(_)), "{err}");
    let err = c.reset_offsets(GROUP, BTreeMap::from([(tp("t", 0), 0)])).await.unwrap_err();
    assert!(matches!(err, BrokerError::NonEmptyGroup(_)), "{err}");
    let err = c.delete_group("no-such-group").await.unwrap_err();
    assert!(matches!(err, BrokerError::GroupIdNotFound(_)), "{err}");

    c.leave_group(GROUP, &formed.members[0]).await.unwrap();
    assert_eq!(state_of(&c).0, GroupState::Empty);
    c.reset_offsets(GROUP, BTreeMap::from([(tp("t", 0), 3)])).await.unwrap();
    let fetched = c.fetch_offsets(GROUP, None).unwrap();
    let reset = &fetched[&tp("t", 0)];
    assert_eq!((reset.offset, reset.leader_epoch, reset.metadata.as_str()), (3, -1, ""));
    assert!(reset.commit_timestamp > 1_600_000_000_000, "the current time");
    assert_eq!(fetched[&tp("t", 1)], offset(11));
    // Reset on a group that does not exist creates it, as Kafka's admin client does.
    c.reset_offsets("fresh", BTreeMap::from([(tp("t", 0), 1)])).await.unwrap();
    assert_eq!(c.fetch_offsets("fresh", None).unwrap()[&tp("t", 0)].offset, 1);

    c.delete_group(GROUP).await.unwrap();
    assert!(matches!(c.describe_group(GROUP), Err(BrokerError::GroupIdNotFound(_))));
    assert!(c.fetch_offsets(GROUP, None).unwrap().is_empty());
    let err = c.delete_group(GROUP).await.unwrap_err();
    assert!(matches!(err, BrokerError::GroupIdNotFound(_)), "{err}");
    // The name can be used again, from generation 0.
    let joined = c.join_group(join_request("", "c1")).await.unwrap();
    assert_eq!(joined.generation_id, 1);
    c.shutdown().await;

    // After a restart: the deleted offsets stay deleted, the new group is there.
    drop(c);
    logs.close().unwrap();
    drop(logs);
    let logs = open_logs(dir.path());
    let c = coordinator(&logs, config());
    assert!(c.fetch_offsets(GROUP, None).unwrap().is_empty());
    assert_eq!(c.describe_group(GROUP).unwrap().generation_id, 1);
    assert_eq!(c.fetch_offsets("fresh", None).unwrap()[&tp("t", 0)].offset, 1);
    c.shutdown().await;
}

#[tokio::test]
async fn describe_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(&logs, config());
    assert!(c.list_groups().is_empty());
    assert!(matches!(c.describe_group(GROUP), Err(BrokerError::GroupIdNotFound(_))));
    let formed = form_group(&c, &["c1", "c2"]).await;
    let d = c.describe_group(GROUP).unwrap();
    assert_eq!(d.group_id, GROUP);
    assert_eq!(
        (d.state, d.protocol_type.as_str(), d.protocol.as_str()),
        (GroupState::Stable, "consumer", "range")
    );
    assert_eq!((d.generation_id, d.leader.as_str()), (formed.generation, formed.leader.as_str()));
    let mut clients: Vec<&str> = d.members.iter().map(|m| m.client_id.as_str()).collect();
    clients.sort();
    assert_eq!(clients, ["c1", "c2"]);
    for m in &d.members {
        assert_eq!(m.metadata, Bytes::from(format!("sub-{}", m.client_id)));
        assert_eq!(m.assignment, assignment_for(&m.member_id));
    }
    // While rebalancing, Kafka shows no protocol, metadata or assignments.
    c.leave_group(GROUP, &formed.members[1]).await.unwrap();
    let d = c.describe_group(GROUP).unwrap();
    assert_eq!(
        (d.state, d.protocol.as_str(), d.members.len()),
        (GroupState::PreparingRebalance, "", 1)
    );
    assert!(d.members[0].assignment.is_empty() && d.members[0].metadata.is_empty());

    let manual =
        OffsetCommitRequest { group_id: "a-manual".into(), ..commit("", -1, &[(tp("t", 0), 1)]) };
    c.commit_offsets(manual).await.unwrap();
    assert_eq!(
        c.list_groups(),
        [
            GroupListing {
                group_id: "a-manual".into(),
                protocol_type: String::new(),
                state: GroupState::Empty
            },
            GroupListing {
                group_id: GROUP.into(),
                protocol_type: "consumer".into(),
                state: GroupState::PreparingRebalance
            },
        ]
    );
    assert_eq!(GroupState::CompletingRebalance.name(), "CompletingRebalance");
    c.shutdown().await;
}

#[tokio::test]
async fn partition_for_is_kafkas() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let topic = offsets_topic(&logs, 50);
    let c = GroupCoordinator::load(topic, config()).unwrap();
    // Expected values from Java's String.hashCode by its definition (s[0]*31^(n-1) + ... over
    // UTF-16 code units, wrapping), then Utils.abs and % 50.
    let cases = [
        ("", 0),                   // hash 0
        ("a", 97 % 50),            // hash 97
        ("hello", 22),             // hash 99162322
        ("group-1", 49),           // hash 293427299
        ("é", 233 % 50),           // one UTF-16 unit, 0xE9
        ("日本", 47),              // 0x65E5 * 31 + 0x672C = 835047
        ("😀", 49),                // surrogate pair: 0xD83D * 31 + 0xDE00 = 1772899
        ("my-app", 0),             // hash -1061206400: abs, then % 50
        ("zzzzzzzzzz", 36),        // hash -1580979136
        ("polygenelubricants", 0), // hash Integer.MIN_VALUE: Utils.abs gives 0
    ];
    for (group, expected) in cases {
        assert_eq!(c.partition_for(group), expected, "{group:?}");
    }
    // Commits land in the group's partition.
    c.commit_offsets(OffsetCommitRequest {
        group_id: "hello".into(),
        ..commit("", -1, &[(tp("t", 0), 1)])
    })
    .await
    .unwrap();
    let topic = logs.topic(OFFSETS_TOPIC).unwrap();
    assert_eq!(topic.partition(22).unwrap().log_end_offset(), 1);
    assert_eq!(topic.partitions().iter().map(|p| p.log_end_offset()).sum::<i64>(), 1);
}

/// A member as an in-process consumer runs it: join, sync, then wait for the rebalance signal
/// and rejoin. Reports every generation it completes.
async fn member_loop(
    c: Arc<GroupCoordinator>,
    client: String,
    report: mpsc::UnboundedSender<(String, i32)>,
) {
    let mut signal = c.rebalance_signal(GROUP);
    let mut member_id = String::new();
    loop {
        let joined = match c.join_group(join_request(&member_id, &client)).await {
            Ok(joined) => joined,
            Err(BrokerError::RebalanceInProgress(_)) => continue,
            Err(BrokerError::UnknownMemberId { .. }) => {
                member_id.clear();
                continue;
            }
            Err(BrokerError::BrokerShutdown) => return,
            Err(e) => panic!("join failed: {e}"),
        };
        // Rebalances that start from now on wake us; an earlier one fails the sync.
        signal.borrow_and_update();
        member_id = joined.member_id.clone();
        match c.sync_group(sync_request(&joined)).await {
            Ok(assignment) => {
                assert_eq!(assignment, assignment_for(&member_id));
                let _ = report.send((member_id.clone(), joined.generation_id));
            }
            Err(BrokerError::RebalanceInProgress(_) | BrokerError::IllegalGeneration { .. }) => {
                continue;
            }
            Err(BrokerError::BrokerShutdown) => return,
            Err(e) => panic!("sync failed: {e}"),
        }
        if signal.changed().await.is_err() {
            return;
        }
    }
}

/// Waits until `n` members report the same generation and the group is Stable there.
async fn converge(
    c: &GroupCoordinator,
    reports: &mut mpsc::UnboundedReceiver<(String, i32)>,
    n: usize,
) -> i32 {
    let mut latest: HashMap<String, i32> = HashMap::new();
    loop {
        let (member, generation) = reports.recv().await.unwrap();
        latest.insert(member, generation);
        let (state, current, members) = state_of(c);
        let at_current = latest.values().filter(|g| **g == current).count();
        if state == GroupState::Stable && members == n && at_current == n {
            return current;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebalance_of_three_in_process_members_is_fast() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(&logs, config());
    let (tx, mut reports) = mpsc::unbounded_channel();

    let started = std::time::Instant::now();
    let mut tasks: Vec<_> = ["c1", "c2", "c3"]
        .iter()
        .map(|cl| tokio::spawn(member_loop(c.clone(), cl.to_string(), tx.clone())))
        .collect();
    let first = converge(&c, &mut reports, 3).await;
    let formation = started.elapsed();

    // One member stops (its consumer closes and leaves) and a new one starts. The loop is
    // stopped first (it may have started another join before it noticed), then every member
    // it had leaves.
    let stopping = tasks.pop().unwrap();
    stopping.abort();
    let _ = stopping.await;
    let started = std::time::Instant::now();
    for m in c.describe_group(GROUP).unwrap().members.into_iter().filter(|m| m.client_id == "c3") {
        c.leave_group(GROUP, &m.member_id).await.unwrap();
    }
    tasks.push(tokio::spawn(member_loop(c.clone(), "c4".into(), tx.clone())));
    let second = converge(&c, &mut reports, 3).await;
    let replacement = started.elapsed();
    println!(
        "3 in-process members: group formed in {formation:?} (generation {first}), member replaced in {replacement:?} (generation {second})"
    );
    assert!(formation < Duration::from_secs(1), "{formation:?}");
    assert!(replacement < Duration::from_secs(1), "{replacement:?}");
    assert!(second > first);

    c.shutdown().await;
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn shutdown_fails_waiting_members() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(&logs, config());
    let formed = form_group(&c, &["c1", "c2"]).await;
    let mut signal = c.rebalance_signal(GROUP);
    let mut rejoin = Box::pin(c.join_group(join_request(&formed.members[0], "c1")));
    assert!(futures::poll!(&mut rejoin).is_pending());
    signal.borrow_and_update();
    c.shutdown().await;
    assert!(matches!(rejoin.await, Err(BrokerError::BrokerShutdown)));
    assert!(signal.changed().await.is_err(), "rebalance signals close");
    assert!(c.rebalance_signal(GROUP).changed().await.is_err());
    assert!(matches!(c.join_group(join_request("", "c3")).await, Err(BrokerError::BrokerShutdown)));
    assert!(matches!(
        c.heartbeat(GROUP, &formed.members[1], formed.generation),
        Err(BrokerError::BrokerShutdown)
    ));
    let err = c
        .commit_offsets(commit(&formed.members[1], formed.generation, &[(tp("t", 0), 1)]))
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::BrokerShutdown), "{err}");
}

// Records written by hand, as Kafka lays them out, to check the loader independently of the
// coordinator's encoder.

fn kafka_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn offset_commit_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut key = 1i16.to_be_bytes().to_vec();
    kafka_string(&mut key, group);
    kafka_string(&mut key, topic);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

fn offset_commit_value(offset: i64) -> Vec<u8> {
    let mut value = 3i16.to_be_bytes().to_vec();
    value.extend_from_slice(&offset.to_be_bytes());
    value.extend_from_slice(&(-1i32).to_be_bytes());
    kafka_string(&mut value, "");
    value.extend_from_slice(&0i64.to_be_bytes());
    value
}

fn batch(options: BatchOptions, records: &[(Vec<u8>, Option<Vec<u8>>)]) -> Vec<u8> {
    let mut builder = RecordBatchBuilder::new(options);
    for (key, value) in records {
        builder.append(0, Some(key), value.as_deref(), &[]);
    }
    builder.build().unwrap()
}

fn transactional(producer_id: i64) -> BatchOptions {
    BatchOptions {
        producer_id,
        producer_epoch: 0,
        base_sequence: 0,
        transactional: true,
        ..BatchOptions::default()
    }
}

#[tokio::test]
async fn load_skips_unknown_records_and_applies_only_committed_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let topic = offsets_topic(&logs, 1);
    let log = topic.partition(0).unwrap();
    let plain = |records: &[(Vec<u8>, Option<Vec<u8>>)]| batch(BatchOptions::default(), records);
    log.append(&mut plain(&[(offset_commit_key("plain", "t", 0), Some(offset_commit_value(5)))]))
        .unwrap();
    // An unknown record type (another coordinator's, or a newer Kafka's) is skipped.
    log.append(&mut plain(&[(vec![0, 99, 1, 2, 3], Some(vec![4, 5]))])).unwrap();
    // A tombstone deletes.
    log.append(&mut plain(&[
        (offset_commit_key("plain", "t", 1), Some(offset_commit_value(6))),
        (offset_commit_key("plain", "t", 1), None),
    ]))
    .unwrap();
    // Transactional offset commits: committed, aborted, and still open.
    log.append(&mut batch(
        transactional(1000),
        &[(offset_commit_key("txn", "t", 0), Some(offset_commit_value(70)))],
    ))
    .unwrap();
    log.append(&mut batch(
        transactional(1001),
        &[(offset_commit_key("txn", "t", 1), Some(offset_commit_value(71)))],
    ))
    .unwrap();
    log.append(&mut batch(
        transactional(1002),
        &[(offset_commit_key("txn", "t", 2), Some(offset_commit_value(72)))],
    ))
    .unwrap();
    log.append_end_txn_marker(
        1000,
        0,
        EndTxnMarker { kind: ControlRecordType::Commit, coordinator_epoch: 0 },
    )
    .unwrap();
    log.append_end_txn_marker(
        1001,
        0,
        EndTxnMarker { kind: ControlRecordType::Abort, coordinator_epoch: 0 },
    )
    .unwrap();
    // Enough commits to need several 1 MiB reads.
    let long = "x".repeat(2_000);
    let mut records = Vec::new();
    for i in 0..1_500i64 {
        let mut value = 3i16.to_be_bytes().to_vec();
        value.extend_from_slice(&i.to_be_bytes());
        value.extend_from_slice(&(-1i32).to_be_bytes());
        kafka_string(&mut value, &long);
        value.extend_from_slice(&0i64.to_be_bytes());
        records.push((offset_commit_key("bulk", "t", (i % 10) as i32), Some(value)));
        if records.len() == 100 {
            log.append(&mut plain(&records)).unwrap();
            records.clear();
        }
    }

    let c = GroupCoordinator::load(topic, config()).unwrap();
    assert_eq!(
        c.fetch_offsets("plain", None)
            .unwrap()
            .into_iter()
            .map(|(tp, o)| (tp, o.offset))
            .collect::<Vec<_>>(),
        [(tp("t", 0), 5)]
    );
    assert_eq!(
        c.fetch_offsets("txn", None)
            .unwrap()
            .into_iter()
            .map(|(tp, o)| (tp, o.offset))
            .collect::<Vec<_>>(),
        [(tp("t", 0), 70)]
    );
    let bulk = c.fetch_offsets("bulk", None).unwrap();
    assert_eq!(bulk.len(), 10);
    assert_eq!(bulk[&tp("t", 9)].offset, 1_499);
    assert_eq!(bulk[&tp("t", 0)].metadata.len(), 2_000);
    let names: Vec<String> = c.list_groups().into_iter().map(|l| l.group_id).collect();
    assert_eq!(names, ["bulk", "plain", "txn"]);
}
