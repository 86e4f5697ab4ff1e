//! Transactions in the log survive reopening: open transactions and the aborted-transaction
//! index are rebuilt from the log, whether it was closed cleanly or not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use fjord_log::clock::ManualClock;
use fjord_log::config::TopicConfig;
use fjord_log::record::{BatchOptions, ControlRecordType, EndTxnMarker, RecordBatchBuilder};
use fjord_log::{FetchIsolation, PartitionLog};

fn txn_batch(pid: i64, epoch: i16, seq: i32, value: &str) -> Vec<u8> {
    let mut b = RecordBatchBuilder::new(BatchOptions {
        producer_id: pid,
        producer_epoch: epoch,
        base_sequence: seq,
        transactional: true,
        ..BatchOptions::default()
    });
    b.append(0, Some(b"k"), Some(value.as_bytes()), &[]);
    b.build().unwrap()
}

fn committed_values(log: &PartitionLog) -> Vec<String> {
    let data = log.read(0, 1 << 20, FetchIsolation::TxnCommitted).unwrap();
    let aborted = data.aborted_transactions.clone();
    records(&data.records, 0)
        .into_iter()
        .filter(|(offset, _, _)| {
            !aborted.iter().any(|t| t.first_offset <= *offset && *offset < t.last_offset)
        })
        .map(|(_, _, v)| String::from_utf8(v.unwrap()).unwrap())
        .collect()
}

fn abort() -> EndTxnMarker {
    EndTxnMarker { kind: ControlRecordType::Abort, coordinator_epoch: 0 }
}

fn scenario(log: &PartitionLog) {
    log.append(&mut txn_batch(1, 0, 0, "aborted")).unwrap();
    log.append_end_txn_marker(1, 0, abort()).unwrap();
    log.append(&mut txn_batch(1, 0, 1, "kept")).unwrap();
    log.append_end_txn_marker(
        1,
        0,
        EndTxnMarker { kind: ControlRecordType::Commit, coordinator_epoch: 0 },
    )
    .unwrap();
    log.append(&mut txn_batch(2, 0, 0, "open")).unwrap();
}

#[test]
fn the_aborted_index_and_open_transactions_survive_reopens_with_and_without_close() {
    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(TopicConfig::default());
    {
        let (log, _) = open_partition(dir.path(), config.clone(), ManualClock::new(0));
        log.close().unwrap();
    }
    {
        let (log, _) = open_partition(dir.path(), config.clone(), ManualClock::new(0));
        scenario(&log);
        assert_eq!(committed_values(&log), ["kept"]);
        // Dropped without close: as a killed process leaves it.
    }
    let (log, _) = open_partition(dir.path(), config.clone(), ManualClock::new(0));
    assert_eq!(log.last_stable_offset(), 4, "the open transaction still holds the LSO back");
    log.append_end_txn_marker(2, 0, abort()).unwrap();
    assert_eq!(committed_values(&log), ["kept"]);
    log.close().unwrap();
    drop(log);
    let (log, _) = open_partition(dir.path(), config, ManualClock::new(0));
    assert_eq!(committed_values(&log), ["kept"]);
    assert_eq!(log.last_stable_offset(), log.log_end_offset());
}
