//! Rebuilding groups and committed offsets from `__consumer_offsets` (Kafka's
//! `GroupCoordinatorShard` replay on load).
//!
//! Every partition is read from its log start to its end and its records applied in offset
//! order: an offset commit sets the group's offset for a partition, a group metadata record its
//! generation and protocol type, a tombstone (null value) deletes the key. Offset commits of
//! transactional batches are held per producer with the rules of the live coordinator
//! (`txn_offsets.rs`): a commit marker in the same partition applies them (an offset only if
//! its record is newer than the offset already there, as Kafka does), an abort marker drops
//! them, a tombstone of the same key drops them, and those of a transaction still open at the
//! end of the log stay pending until the transaction coordinator ends it.

use std::collections::{BTreeMap, HashMap};

use fjord_log::record::{BatchIter, ControlRecordType, EndTxnMarker, RecordError};
use fjord_log::{FetchIsolation, LogError, PartitionLog, Topic, TopicPartition};

use super::OffsetAndMetadata;
use super::records::{self, DecodeError, RecordKey};
use super::txn_offsets::{self, Committed, Completed, PendingTxnOffsets};
use crate::error::Result;

/// Bytes asked for per read while loading.
const LOAD_READ_BYTES: usize = 1 << 20;

/// A group as the log remembers it.
#[derive(Debug, Default)]
pub(super) struct LoadedGroup {
    /// The last generation written (0 for a group that only ever committed offsets).
    pub(super) generation: i32,
    /// The protocol type of that generation.
    pub(super) protocol_type: String,
    /// Committed offsets, with the offsets of their records.
    pub(super) offsets: BTreeMap<TopicPartition, Committed>,
}

/// What the log holds: the groups, and the offset commits of transactions still open.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    /// The groups (including those that only have offsets pending in open transactions).
    pub(super) groups: HashMap<String, LoadedGroup>,
    /// Offset commits of transactions without a marker yet.
    pub(super) pending: PendingTxnOffsets,
}

/// One decoded record.
enum Op {
    Offset { group: String, tp: TopicPartition, value: Option<OffsetAndMetadata> },
    Metadata { group: String, value: Option<(i32, String)> },
}

#[derive(Default)]
struct Replay {
    /// Committed offsets with the log offset of their record.
    offsets: HashMap<String, BTreeMap<TopicPartition, Committed>>,
    /// Generation and protocol type by group.
    metadata: HashMap<String, (i32, String)>,
    /// Offset commits of open transactions.
    pending: PendingTxnOffsets,
    records: u64,
    skipped: u64,
}

/// Reads every partition of the topic and returns the groups it holds.
pub(super) fn load_groups(topic: &Topic) -> Result<Loaded> {
    let mut replay = Replay::default();
    for log in topic.partitions() {
        replay.partition(&log)?;
    }
    let Replay { offsets, metadata, pending, records, skipped } = replay;
    let mut groups: HashMap<String, LoadedGroup> = HashMap::new();
    for (group, (generation, protocol_type)) in metadata {
        groups.insert(group, LoadedGroup { generation, protocol_type, offsets: BTreeMap::new() });
    }
    for (group, offsets) in offsets {
        if offsets.is_empty() {
            continue;
        }
        groups.entry(group).or_default().offsets = offsets;
    }
    // As Kafka: a transactional commit makes its group exist (a group that only commits
    // offsets), so that it can be described, deleted, and its transaction completed.
    for group in pending.groups() {
        groups.entry(group.clone()).or_default();
    }
    tracing::info!(
        topic = topic.name(),
        groups = groups.len(),
        records,
        skipped,
        open_transactions = pending.producers(),
        "loaded consumer groups and committed offsets"
    );
    Ok(Loaded { groups, pending })
}

impl Replay {
    fn partition(&mut self, log: &PartitionLog) -> Result<()> {
        let tp = log.topic_partition().clone();
        let invalid = |source: RecordError| LogError::InvalidRecord { tp: tp.clone(), source };
        let end = log.high_watermark();
        let mut offset = log.log_start_offset();
        let mut scratch = Vec::new();
        while offset < end {
            let data = log.read(offset, LOAD_READ_BYTES, FetchIsolation::HighWatermark)?;
            let Some(next) = data.next_offset else {
                break;
            };
            for batch in BatchIter::new(&data.records) {
                let batch = batch.map_err(invalid)?;
                let header = *batch.header();
                if header.attributes.is_control() {
                    if header.last_offset() < offset {
                        continue;
                    }
                    for record in batch.records(&mut scratch).map_err(invalid)? {
                        let record = record.map_err(invalid)?;
                        match EndTxnMarker::from_record(&record) {
                            Ok(marker) => {
                                self.end_txn(tp.partition, header.producer_id, marker.kind);
                            }
                            Err(e) => tracing::warn!(
                                partition = %tp, offset = record.offset, error = %e,
                                "skipping an unreadable control record"
                            ),
                        }
                    }
                    continue;
                }
                let producer = header.attributes.is_transactional().then_some(header.producer_id);
                for record in batch.records(&mut scratch).map_err(invalid)? {
                    let record = record.map_err(invalid)?;
                    if record.offset < offset {
                        continue;
                    }
                    self.records += 1;
                    let Some(op) = decode(&tp, record.offset, record.key, record.value) else {
                        self.skipped += 1;
                        continue;
                    };
                    self.apply(op, record.offset, producer, tp.partition);
                }
            }
            if next <= offset {
                break;
            }
            offset = next;
        }
        Ok(())
    }

    /// A marker of `producer_id` in `log_partition`.
    fn end_txn(&mut self, log_partition: u32, producer_id: i64, kind: ControlRecordType) {
        let ended = self.pending.take(producer_id, Some(log_partition));
        if kind != ControlRecordType::Commit {
            return;
        }
        for Completed { group, tp, committed } in ended {
            txn_offsets::apply_txn_commit(self.offsets.entry(group).or_default(), tp, committed);
        }
    }

    /// Applies a record (of a transactional batch of `producer`, if given). As Kafka's replay,
    /// only offset commits wait for their transaction; tombstones and group metadata (which
    /// Kafka never writes transactionally) apply at once.
    fn apply(&mut self, op: Op, record_offset: i64, producer: Option<i64>, log_partition: u32) {
        match op {
            Op::Offset { group, tp, value: Some(value) } => {
                let committed = Committed { value, record_offset };
                match producer {
                    Some(producer_id) => {
                        self.pending.add(producer_id, &group, tp, committed, log_partition);
                    }
                    None => txn_offsets::apply_commit(
                        self.offsets.entry(group).or_default(),
                        tp,
                        committed,
                    ),
                }
            }
            Op::Offset { group, tp, value: None } => {
                if let Some(offsets) = self.offsets.get_mut(&group) {
                    offsets.remove(&tp);
                }
                self.pending.remove_partition(&group, &tp);
            }
            Op::Metadata { group, value: Some(value) } => {
                self.metadata.insert(group, value);
            }
            Op::Metadata { group, value: None } => {
                self.metadata.remove(&group);
            }
        }
    }
}

/// Decodes a record; `None` (after a warning) for one that cannot be used.
fn decode(
    tp: &TopicPartition,
    offset: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Option<Op> {
    let warn = |what: &str, e: &DecodeError| {
        tracing::warn!(partition = %tp, offset, error = %e, "skipping {what} in __consumer_offsets");
    };
    let Some(key) = key else {
        tracing::warn!(partition = %tp, offset, "skipping a record without a key in __consumer_offsets");
        return None;
    };
    let key = match records::decode_key(key) {
        Ok(key) => key,
        Err(e) => {
            warn("a record with an unknown or malformed key", &e);
            return None;
        }
    };
    match key {
        RecordKey::OffsetCommit { group, tp: committed } => {
            let value = match value.map(records::decode_offset_commit_value).transpose() {
                Ok(value) => value,
                Err(e) => {
                    warn("an offset commit with an unreadable value", &e);
                    return None;
                }
            };
            Some(Op::Offset { group, tp: committed, value })
        }
        RecordKey::GroupMetadata { group } => {
            let value = match value.map(records::decode_group_metadata_value).transpose() {
                Ok(value) => value,
                Err(e) => {
                    warn("group metadata with an unreadable value", &e);
                    return None;
                }
            };
            Some(Op::Metadata { group, value: value.map(|v| (v.generation, v.protocol_type)) })
        }
    }
}
