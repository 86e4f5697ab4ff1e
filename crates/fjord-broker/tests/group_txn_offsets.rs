#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Transactional offset commits (Kafka's `TxnOffsetCommit`, KIP-447) over a real log in a
//! temporary directory: pending offsets stay invisible until the transaction coordinator
//! completes them, `require_stable` fetches refuse pending partitions, zombie producers are
//! fenced by generation and by epoch, restarts keep open transactions pending, and markers
//! never overtake the transactional batch they end.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fjord_broker::group::{
    GroupConfig, GroupCoordinator, JoinGroupRequest, JoinGroupResponse, OffsetAndMetadata,
    OffsetCommitRequest, SyncGroupRequest, TxnOffsetCommitRequest,
};
use fjord_broker::{BrokerError, FetchIsolation, TopicPartition};
use fjord_log::record::{BatchIter, ControlRecordType, EndTxnMarker};
use fjord_log::{LogManager, LogManagerConfig, PartitionLog, Topic};
use futures::future::join_all;

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

fn offsets_topic(logs: &LogManager) -> Arc<Topic> {
    match logs.topic(OFFSETS_TOPIC) {
        Ok(topic) => topic,
        Err(_) => logs
            .create_internal_topic(
                OFFSETS_TOPIC,
                3,
                BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]),
            )
            .unwrap(),
    }
}

fn coordinator(logs: &LogManager) -> Arc<GroupCoordinator> {
    let coordinator = Arc::new(GroupCoordinator::load(offsets_topic(logs), config()).unwrap());
    coordinator.start();
    coordinator
}

/// The `__consumer_offsets` partition of a group.
fn group_log(logs: &LogManager, c: &GroupCoordinator, group: &str) -> Arc<PartitionLog> {
    offsets_topic(logs).partition(c.partition_for(group)).unwrap()
}

/// What the transaction coordinator does at the end of a transaction: the marker into the
/// group's partition, then `complete_txn_offsets`.
fn end_txn(
    logs: &LogManager,
    c: &GroupCoordinator,
    group: &str,
    producer_id: i64,
    epoch: i16,
    commit: bool,
) {
    write_marker(logs, c, group, producer_id, epoch, commit);
    c.complete_txn_offsets(producer_id, commit);
}

fn write_marker(
    logs: &LogManager,
    c: &GroupCoordinator,
    group: &str,
    producer_id: i64,
    epoch: i16,
    commit: bool,
) {
    let kind = if commit { ControlRecordType::Commit } else { ControlRecordType::Abort };
    group_log(logs, c, group)
        .append_end_txn_marker(producer_id, epoch, EndTxnMarker { kind, coordinator_epoch: 0 })
        .unwrap();
}

fn join_request(member_id: &str, client: &str) -> JoinGroupRequest {
    JoinGroupRequest {
        group_id: GROUP.into(),
        member_id: member_id.into(),
        client_id: client.into(),
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_secs(5),
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from(format!("sub-{client}")))],
    }
}

fn sync_request(response: &JoinGroupResponse) -> SyncGroupRequest {
    let assignments = if response.leader == response.member_id {
        response
            .members
            .iter()
            .map(|m| (m.member_id.clone(), Bytes::from(format!("assignment-of-{}", m.member_id))))
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

/// A Stable group of `clients`: the first joins alone (generation 1), then all join again in
/// one phase (generation 2). Returns the generation and the member ids in `clients` order.
async fn form_group(c: &GroupCoordinator, clients: &[&str]) -> (i32, Vec<String>) {
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
    let mut ordered: Vec<&JoinGroupResponse> = responses.iter().collect();
    ordered.sort_by_key(|r| r.leader == r.member_id);
    for result in join_all(ordered.iter().map(|r| c.sync_group(sync_request(r)))).await {
        result.unwrap();
    }
    (generation, responses.iter().map(|r| r.member_id.clone()).collect())
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

fn txn_commit(
    group: &str,
    producer_id: i64,
    producer_epoch: i16,
    member_id: &str,
    generation_id: i32,
    offsets: &[(TopicPartition, i64)],
) -> TxnOffsetCommitRequest {
    TxnOffsetCommitRequest {
        group_id: group.into(),
        producer_id,
        producer_epoch,
        member_id: member_id.into(),
        generation_id,
        offsets: offsets.iter().map(|(tp, o)| (tp.clone(), offset(*o))).collect(),
    }
}

/// A transactional commit of a producer not tied to a group member.
fn standalone(
    group: &str,
    producer_id: i64,
    offsets: &[(TopicPartition, i64)],
) -> TxnOffsetCommitRequest {
    txn_commit(group, producer_id, 0, "", -1, offsets)
}

fn plain_commit(group: &str, offsets: &[(TopicPartition, i64)]) -> OffsetCommitRequest {
    OffsetCommitRequest {
        group_id: group.into(),
        member_id: String::new(),
        generation_id: -1,
        offsets: offsets.iter().map(|(tp, o)| (tp.clone(), offset(*o))).collect(),
    }
}

fn committed(c: &GroupCoordinator, group: &str) -> BTreeMap<TopicPartition, i64> {
    c.fetch_offsets(group, None).unwrap().into_iter().map(|(tp, o)| (tp, o.offset)).collect()
}

fn assert_unstable(c: &GroupCoordinator, group: &str, partitions: &[TopicPartition]) {
    match c.fetch_offsets_stable(group, partitions) {
        Err(BrokerError::UnstableOffsetCommit(tp)) => assert!(partitions.contains(&tp), "{tp}"),
        other => panic!("expected UnstableOffsetCommit, got {other:?}"),
    }
}

/// Every batch header of a partition, from its start.
fn headers(log: &PartitionLog) -> Vec<fjord_log::record::BatchHeader> {
    let data = log.read(log.log_start_offset(), 1 << 20, FetchIsolation::HighWatermark).unwrap();
    BatchIter::new(&data.records).map(|b| *b.unwrap().header()).collect()
}

#[tokio::test]
async fn pending_offsets_are_invisible_until_the_transaction_commits() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(&logs);
    let (generation, members) = form_group(&c, &["c1"]).await;
    let log = group_log(&logs, &c, GROUP);
    let end_before = log.log_end_offset();

    c.commit_txn_offsets(txn_commit(
        GROUP,
        100,
        0,
        &members[0],
        generation,
        &[(tp("t", 0), 10), (tp("t", 1), 11)],
    ))
    .await
    .unwrap();
    // One transactional batch of the producer, without a sequence number.
    let header = *headers(&log).last().unwrap();
    assert_eq!(header.base_offset, end_before);
    assert_eq!(header.records_count, 2);
    assert!(header.attributes.is_transactional() && !header.attributes.is_control());
    assert_eq!((header.producer_id, header.producer_epoch, header.base_sequence), (100, 0, -1));
    assert_eq!(log.ongoing_transactions(), [(end_before, 100)]);

    // Pending: invisible, and unstable for require_stable fetches (only those partitions).
    assert!(committed(&c, GROUP).is_empty());
    assert_unstable(&c, GROUP, &[tp("t", 5), tp("t", 1)]);
    assert_eq!(c.fetch_offsets_stable(GROUP, &[tp("t", 5)]).unwrap(), BTreeMap::new());

    // The same producer commits again in the same transaction: the later offset replaces
    // the earlier one for that partition.
    c.commit_txn_offsets(txn_commit(GROUP, 100, 0, &members[0], generation, &[(tp("t", 0), 15)]))
        .await
        .unwrap();
    assert!(committed(&c, GROUP).is_empty());

    end_txn(&logs, &c, GROUP, 100, 0, true);
    let expected = BTreeMap::from([(tp("t", 0), 15), (tp("t", 1), 11)]);
    assert_eq!(committed(&c, GROUP), expected);
    assert_eq!(c.fetch_offsets(GROUP, None).unwrap()[&tp("t", 0)], offset(15));
    let stable = c.fetch_offsets_stable(GROUP, &[tp("t", 0), tp("t", 1), tp("t", 5)]).unwrap();
    assert_eq!(stable, BTreeMap::from([(tp("t", 0), offset(15)), (tp("t", 1), offset(11))]));
    assert!(log.ongoing_transactions().is_empty());

    // Completing again (nothing pending) changes nothing, and neither does an abort now.
    c.complete_txn_offsets(100, true);
    c.complete_txn_offsets(100, false);
    assert_eq!(committed(&c, GROUP), expected);
    c.shutdown().await;
}

#[tokio::test]
async fn an_aborted_transaction_leaves_the_committed_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(&logs);
    c.commit_offsets(plain_commit("solo", &[(tp("t", 0), 5)])).await.unwrap();
    c.commit_txn_offsets(standalone("solo", 7, &[(tp("t", 0), 9), (tp("t", 1), 4)])).await.unwrap();
    assert_eq!(committed(&c, "solo"), BTreeMap::from([(tp("t", 0), 5)]));
    assert_unstable(&c, "solo", &[tp("t", 0)]);

    end_txn(&logs, &c, "solo", 7, 0, false);
    assert_eq!(committed(&c, "solo"), BTreeMap::from([(tp("t", 0), 5)]));
    assert_eq!(
        c.fetch_offsets_stable("solo", &[tp("t", 0), tp("t", 1)]).unwrap(),
        BTreeMap::from([(tp("t", 0), offset(5))])
    );
    // A later commit of the aborted producer's offsets has nothing left to apply.
    c.complete_txn_offsets(7, true);
    assert_eq!(committed(&c, "solo"), BTreeMap::from([(tp("t", 0), 5)]));
    c.shutdown().await;
}

#[tokio::test]
async fn record_offsets_decide_between_plain_and_transactional_commits() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(&logs);
    // A plain commit appended after the transactional one wins, although the transaction
    // completes later.
    c.commit_txn_offsets(standalone("mix", 1, &[(tp("t", 0), 10), (tp("t", 1), 10)]))
        .await
        .unwrap();
    c.commit_offsets(plain_commit("mix", &[(tp("t", 0), 20)])).await.unwrap();
    end_txn(&logs, &c, "mix", 1, 0, true);
    assert_eq!(committed(&c, "mix"), BTreeMap::from([(tp("t", 0), 20), (tp("t", 1), 10)]));
    // A plain commit appended before the transactional one loses.
    c.commit_offsets(plain_commit("mix", &[(tp("t", 1), 30)])).await.unwrap();
    c.commit_txn_offsets(standalone("mix", 2, &[(tp("t", 1), 40)])).await.unwrap();
    end_txn(&logs, &c, "mix", 2, 0, true);
    let expected = BTreeMap::from([(tp("t", 0), 20), (tp("t", 1), 40)]);
    assert_eq!(committed(&c, "mix"), expected);
    c.shutdown().await;
    drop(c);

    // The replay of the log comes to the same result.
    let c = coordinator(&logs);
    assert_eq!(committed(&c, "mix"), expected);
    c.shutdown().await;
}

#[tokio::test]
async fn zombie_producers_are_fenced_by_member_and_generation() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(&logs);
    // Generation 1 had only c1; generation 2 has c1 and c2.
    let (generation, members) = form_group(&c, &["c1", "c2"]).await;
    assert_eq!(generation, 2);
    let log = group_log(&logs, &c, GROUP);
    let end_before = log.log_end_offset();
    let offsets = [(tp("t", 0), 10)];

    // c1's producer from before the rebalance.
    let err = c
        .commit_txn_offsets(txn_commit(GROUP, 1, 0, &members[0], generation - 1, &offsets))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BrokerError::IllegalGeneration { generation: 1, current: 2, .. }),
        "{err}"
    );
    // A member the group does not know (left, or evicted).
    let err = c
        .commit_txn_offsets(txn_commit(GROUP, 1, 0, "ghost", generation, &offsets))
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::UnknownMemberId { .. }), "{err}");
    // A member id without a generation is checked as well.
    let err =
        c.commit_txn_offsets(txn_commit(GROUP, 1, 0, "ghost", -1, &offsets)).await.unwrap_err();
    assert!(matches!(err, BrokerError::UnknownMemberId { .. }), "{err}");
    // A generation for a group that does not exist.
    let err = c.commit_txn_offsets(txn_commit("gone", 1, 0, "", 3, &offsets)).await.unwrap_err();
    assert!(matches!(err, BrokerError::IllegalGeneration { .. }), "{err}");
    assert!(matches!(c.describe_group("gone"), Err(BrokerError::GroupIdNotFound(_))));

    // Nothing was appended, nothing is pending.
    assert_eq!(log.log_end_offset(), end_before);
    assert_eq!(c.fetch_offsets_stable(GROUP, &[tp("t", 0)]).unwrap(), BTreeMap::new());
    c.complete_txn_offsets(1, true);
    assert!(committed(&c, GROUP).is_empty());

    // The current members commit; so does a producer not tied to a member, even while the
    // group has members.
    c.commit_txn_offsets(txn_commit(GROUP, 2, 0, &members[1], generation, &offsets)).await.unwrap();
    c.commit_txn_offsets(standalone(GROUP, 3, &[(tp("t", 1), 5)])).await.unwrap();
    end_txn(&logs, &c, GROUP, 2, 0, true);
    end_txn(&logs, &c, GROUP, 3, 0, true);
    assert_eq!(committed(&c, GROUP), BTreeMap::from([(tp("t", 0), 10), (tp("t", 1), 5)]));
    c.shutdown().await;
}

#[tokio::test]
async fn a_stale_producer_epoch_is_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open_logs(dir.path());
    let c = coordinator(&logs);
    let log = group_log(&logs, &c, "solo");
    // A newer instance of the producer (epoch 4) aborted a transaction on the partition.
    log.append_end_txn_marker(
        9,
        4,
        EndTxnMarker { kind: ControlRecordType::Abort, coordinator_epoch: 0 },
    )
    .unwrap();
    let end_before = log.log_end_offset();

    let err = c
        .commit_txn_offsets(txn_commit("solo", 9, 3, "", -1, &[(tp("t", 0), 10)]))
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::ProducerFenced(_)), "{err}");
    assert_eq!(log.log_end_offset(), end_before);
    assert_eq!(c.fetch_offsets_stable("solo", &[tp("t", 0)]).unwrap(), BTreeMap::new());
    c.complete_txn_offsets(9, true);
    assert!(committed(&c, "solo").is_empty());

    // The current epoch commits.
    c.commit_txn_offsets(txn_commit("solo", 9, 4, "", -1, &[(tp("t", 0), 11)])).await.unwrap();
    end_txn(&logs, &c, "solo", 9, 4, true);
    assert_eq!(committed(&c, "solo"), BTreeMap::from([(tp("t", 0), 11)]));
    c.shutdown().await;
}

#[tokio::test]
async fn open_transactions_stay_pending_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let logs = open_logs(dir.path());
        let c = coordinator(&logs);
        c.commit_offsets(plain_commit("open", &[(tp("t", 0), 3)])).await.unwrap();
        // Left open: one to commit and one to abort after the restart.
        c.commit_txn_offsets(standalone("open", 1, &[(tp("t", 0), 10)])).await.unwrap();
        c.commit_txn_offsets(standalone("open", 2, &[(tp("t", 1), 20)])).await.unwrap();
        // Committed: the marker is in the log, whether or not the coordinator heard of it.
        c.commit_txn_offsets(standalone("done", 3, &[(tp("t", 0), 30)])).await.unwrap();
        write_marker(&logs, &c, "done", 3, 0, true);
        c.commit_txn_offsets(standalone("done", 4, &[(tp("t", 1), 40)])).await.unwrap();
        end_txn(&logs, &c, "done", 4, 0, true);
        // Aborted before the restart.
        c.commit_txn_offsets(standalone("done", 5, &[(tp("t", 2), 50)])).await.unwrap();
        end_txn(&logs, &c, "done", 5, 0, false);
        // Only pending offsets: the group exists after the restart all the same.
        c.commit_txn_offsets(standalone("only-pending", 6, &[(tp("t", 0), 60)])).await.unwrap();
        c.shutdown().await;
        drop(c);
        logs.close().unwrap();
    }
    {
        let logs = open_logs(dir.path());
        let c = coordinator(&logs);
        assert_eq!(committed(&c, "open"), BTreeMap::from([(tp("t", 0), 3)]));
        assert_unstable(&c, "open", &[tp("t", 0)]);
        assert_unstable(&c, "open", &[tp("t", 1)]);
        assert_eq!(committed(&c, "done"), BTreeMap::from([(tp("t", 0), 30), (tp("t", 1), 40)]));
        assert_eq!(c.fetch_offsets_stable("done", &[tp("t", 0), tp("t", 2)]).unwrap().len(), 1);
        assert!(committed(&c, "only-pending").is_empty());
        assert_unstable(&c, "only-pending", &[tp("t", 0)]);
        assert!(c.describe_group("only-pending").is_ok());

        // The transaction coordinator's recovery ends them.
        end_txn(&logs, &c, "open", 1, 0, true);
        assert_unstable(&c, "open", &[tp("t", 1)]);
        end_txn(&logs, &c, "open", 2, 0, false);
        end_txn(&logs, &c, "only-pending", 6, 0, true);
        assert_eq!(
            c.fetch_offsets_stable("open", &[tp("t", 0), tp("t", 1)]).unwrap(),
            BTreeMap::from([(tp("t", 0), offset(10))])
        );
        assert_eq!(committed(&c, "only-pending"), BTreeMap::from([(tp("t", 0), 60)]));
        c.shutdown().await;
        drop(c);
        logs.close().unwrap();
    }
    let logs = open_logs(dir.path());
    let c = coordinator(&logs);
    assert_eq!(c.fetch_offsets_stable("open", &[tp("t", 0), tp("t", 1)]).unwrap().len(), 1);
    assert_eq!(committed(&c, "open"), BTreeMap::from([(tp("t", 0), 10)]));
    assert_eq!(committed(&c, "only-pending"), BTreeMap::from([(tp("t", 0), 60)]));
    c.shutdown().await;
}

#[tokio::test]
async fn deleting_a_group_drops_its_pending_offsets() {
    let dir = tempfile::tempdir().unwrap();
    {
        let logs = open_logs(dir.path());
        let c = coordinator(&logs);
        c.commit_offsets(plain_commit("del", &[(tp("t", 0), 1)])).await.unwrap();
        c.commit_txn_offsets(standalone("del", 1, &[(tp("t", 0), 10), (tp("t", 1), 11)]))
            .await
            .unwrap();
        c.delete_group("del").await.unwrap();
        assert_eq!(c.fetch_offsets_stable("del", &[tp("t", 1)]).unwrap(), BTreeMap::new());
        // The transaction commits after the deletion: its offsets do not come back, not even
        // into a new group of the same name.
        c.commit_offsets(plain_commit("del", &[(tp("t", 2), 2)])).await.unwrap();
        end_txn(&logs, &c, "del", 1, 0, true);
        assert_eq!(committed(&c, "del"), BTreeMap::from([(tp("t", 2), 2)]));
        c.shutdown().await;
        drop(c);
        logs.close().unwrap();
    }
    let logs = open_logs(dir.path());
    let c = coordinator(&logs);
    assert_eq!(committed(&c, "del"), BTreeMap::from([(tp("t", 2), 2)]));
    assert_eq!(c.fetch_offsets_stable("del", &[tp("t", 0), tp("t", 1)]).unwrap(), BTreeMap::new());
    c.shutdown().await;
}

/// Many transactions of several producers at once, each one commit_txn_offsets, then its
/// marker, then complete_txn_offsets, with plain commits of another group on the same
/// partitions in between: every marker follows its batch in the log, and the final offsets
/// are those of each producer's last committed transaction, live and after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn markers_never_overtake_transactional_commits() {
    const PRODUCERS: i64 = 4;
    const ROUNDS: i64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let logs = Arc::new(open_logs(dir.path()));
    let c = coordinator(&logs);
    let mut tasks = Vec::new();
    for producer in 0..PRODUCERS {
        let (logs, c) = (Arc::clone(&logs), Arc::clone(&c));
        tasks.push(tokio::spawn(async move {
            let group = format!("txn-{producer}");
            let producer_id = 1_000 + producer;
            let mut last_committed = None;
            for round in 0..ROUNDS {
                let value = producer * 10_000 + round;
                let offsets = [(tp("t", 0), value), (tp("t", 1), value + 1)];
                c.commit_txn_offsets(standalone(&group, producer_id, &offsets)).await.unwrap();
                assert_unstable(&c, &group, &[tp("t", 0)]);
                let commit = round % 3 != 1;
                let (logs, c2, group2) = (Arc::clone(&logs), Arc::clone(&c), group.clone());
                tokio::task::spawn_blocking(move || {
                    end_txn(&logs, &c2, &group2, producer_id, 0, commit);
                })
                .await
                .unwrap();
                if commit {
                    last_committed = Some(value);
                }
                let expected = last_committed
                    .map(|v| BTreeMap::from([(tp("t", 0), v), (tp("t", 1), v + 1)]))
                    .unwrap_or_default();
                assert_eq!(
                    c.fetch_offsets_stable(&group, &[tp("t", 0), tp("t", 1)])
                        .unwrap()
                        .into_iter()
                        .map(|(tp, o)| (tp, o.offset))
                        .collect::<BTreeMap<_, _>>(),
                    expected
                );
                // Plain commits of another group, queued on the same writers.
                c.commit_offsets(plain_commit(&format!("plain-{producer}"), &offsets))
                    .await
                    .unwrap();
            }
            (group, last_committed)
        }));
    }
    let mut expected = Vec::new();
    for task in tasks {
        let (group, last) = task.await.unwrap();
        let last = last.unwrap();
        expected.push((group, BTreeMap::from([(tp("t", 0), last), (tp("t", 1), last + 1)])));
    }
    for (group, offsets) in &expected {
        assert_eq!(&committed(&c, group), offsets, "{group}");
    }
    // Every transaction is closed in the log: no marker came before its batch.
    for log in offsets_topic(&logs).partitions() {
        assert!(log.ongoing_transactions().is_empty(), "{:?}", log.ongoing_transactions());
        assert_eq!(log.last_stable_offset(), log.high_watermark());
    }
    c.shutdown().await;
    drop(c);

    let c = coordinator(&logs);
    for (group, offsets) in &expected {
        assert_eq!(&committed(&c, group), offsets, "{group} after a restart");
        let stable = c.fetch_offsets_stable(group, &[tp("t", 0), tp("t", 1)]).unwrap();
        assert_eq!(stable.len(), 2);
    }
    c.shutdown().await;
}
