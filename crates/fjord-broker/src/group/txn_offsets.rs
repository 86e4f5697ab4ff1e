//! Committed offsets with the log offset of their record, and transactional offset commits
//! waiting for their transaction to end (Kafka's `OffsetMetadataManager`: `offsets`,
//! `pendingTransactionalOffsets` and `openTransactionsByGroup`).
//!
//! The same rules serve the live coordinator and the replay of `__consumer_offsets` on load,
//! so that a restart rebuilds exactly what the live coordinator held:
//! - a non-transactional commit replaces the committed offset of its partition;
//! - a transactional commit is held, per producer, group and partition (a later one of the
//!   same producer for the same partition replaces the earlier one), invisible to fetches;
//! - a commit marker (or `complete_txn_offsets(.., true)`) makes the producer's held offsets
//!   committed, each only if its record is newer than the record of the offset committed
//!   there, so a plain commit appended after the transactional one wins whichever was applied
//!   first; an abort drops them;
//! - a tombstone (deleting the offset or the group) drops the held offsets of that partition
//!   too, so a transaction that commits later cannot bring a deleted offset back.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use fjord_log::TopicPartition;

use super::OffsetAndMetadata;

/// A committed offset and the offset of the `__consumer_offsets` record that committed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Committed {
    /// The offset as the committer sent it.
    pub(super) value: OffsetAndMetadata,
    /// Where its record is in `__consumer_offsets` (decides between a transactional and a
    /// plain commit of the same partition).
    pub(super) record_offset: i64,
}

/// Applies a plain (non-transactional) commit: it always replaces what is there.
pub(super) fn apply_commit(
    offsets: &mut BTreeMap<TopicPartition, Committed>,
    tp: TopicPartition,
    committed: Committed,
) {
    offsets.insert(tp, committed);
}

/// Applies a transactional commit whose transaction committed: only if its record is newer
/// than the record of the offset already committed (Kafka compares record offsets).
pub(super) fn apply_txn_commit(
    offsets: &mut BTreeMap<TopicPartition, Committed>,
    tp: TopicPartition,
    committed: Committed,
) {
    let newer =
        offsets.get(&tp).is_none_or(|existing| committed.record_offset > existing.record_offset);
    if newer {
        offsets.insert(tp, committed);
    }
}

/// A held transactional commit.
#[derive(Debug, Clone)]
struct Held {
    committed: Committed,
    /// The `__consumer_offsets` partition its record is in: a marker there ends it.
    log_partition: u32,
}

/// One transactional commit handed back when its transaction ends.
#[derive(Debug)]
pub(super) struct Completed {
    /// The group.
    pub(super) group: String,
    /// The committed partition.
    pub(super) tp: TopicPartition,
    /// The offset and its record offset.
    pub(super) committed: Committed,
}

/// Transactional offset commits whose transaction is still open.
#[derive(Debug, Default)]
pub(super) struct PendingTxnOffsets {
    /// By producer id, then group, then partition.
    by_producer: HashMap<i64, BTreeMap<String, BTreeMap<TopicPartition, Held>>>,
    /// The producers holding offsets, by group and partition (`require_stable` and tombstones).
    by_group: HashMap<String, BTreeMap<TopicPartition, BTreeSet<i64>>>,
}

impl PendingTxnOffsets {
    /// Holds a transactional commit of `producer_id` until its transaction ends; replaces an
    /// earlier one of the same producer for the same group and partition.
    pub(super) fn add(
        &mut self,
        producer_id: i64,
        group: &str,
        tp: TopicPartition,
        committed: Committed,
        log_partition: u32,
    ) {
        self.by_group
            .entry(group.to_string())
            .or_default()
            .entry(tp.clone())
            .or_default()
            .insert(producer_id);
        self.by_producer
            .entry(producer_id)
            .or_default()
            .entry(group.to_string())
            .or_default()
            .insert(tp, Held { committed, log_partition });
    }

    /// Whether an open transaction holds an offset of the group for `tp`.
    pub(super) fn is_pending(&self, group: &str, tp: &TopicPartition) -> bool {
        self.by_group.get(group).is_some_and(|tps| tps.contains_key(tp))
    }

    /// The partitions of the group with held offsets.
    pub(super) fn partitions_of(&self, group: &str) -> impl Iterator<Item = &TopicPartition> {
        self.by_group.get(group).into_iter().flat_map(BTreeMap::keys)
    }

    /// The number of producers holding offsets.
    pub(super) fn producers(&self) -> usize {
        self.by_producer.len()
    }

    /// The groups with held offsets.
    pub(super) fn groups(&self) -> impl Iterator<Item = &String> {
        self.by_group.keys()
    }

    /// A tombstone for the group's offset of `tp`: drops every held offset for it.
    pub(super) fn remove_partition(&mut self, group: &str, tp: &TopicPartition) {
        let Some(tps) = self.by_group.get_mut(group) else {
            return;
        };
        let Some(producers) = tps.remove(tp) else {
            return;
        };
        if tps.is_empty() {
            self.by_group.remove(group);
        }
        for producer_id in producers {
            self.forget(producer_id, group, Some(tp));
        }
    }

    /// The group is deleted: drops every held offset of it.
    pub(super) fn remove_group(&mut self, group: &str) {
        let Some(tps) = self.by_group.remove(group) else {
            return;
        };
        let producers: BTreeSet<i64> = tps.into_values().flatten().collect();
        for producer_id in producers {
            self.forget(producer_id, group, None);
        }
    }

    /// The producer's transaction ended: takes its held offsets (only those in `log_partition`
    /// when given: a marker ends the transaction in its own partition only).
    pub(super) fn take(&mut self, producer_id: i64, log_partition: Option<u32>) -> Vec<Completed> {
        let Some(groups) = self.by_producer.get_mut(&producer_id) else {
            return Vec::new();
        };
        let mut taken = Vec::new();
        for (group, tps) in groups.iter_mut() {
            let ended: Vec<TopicPartition> = tps
                .iter()
                .filter(|(_, held)| log_partition.is_none_or(|p| held.log_partition == p))
                .map(|(tp, _)| tp.clone())
                .collect();
            for tp in ended {
                if let Some(held) = tps.remove(&tp) {
                    taken.push(Completed { group: group.clone(), tp, committed: held.committed });
                }
            }
        }
        groups.retain(|_, tps| !tps.is_empty());
        if groups.is_empty() {
            self.by_producer.remove(&producer_id);
        }
        for c in &taken {
            self.unindex(producer_id, &c.group, &c.tp);
        }
        taken
    }

    /// Drops the producer's held offsets of the group (of `tp` only, when given), without
    /// touching the `by_group` index (the caller has already removed those entries).
    fn forget(&mut self, producer_id: i64, group: &str, tp: Option<&TopicPartition>) {
        let Some(groups) = self.by_producer.get_mut(&producer_id) else {
            return;
        };
        match tp {
            Some(tp) => {
                if let Some(tps) = groups.get_mut(group) {
                    tps.remove(tp);
                    if tps.is_empty() {
                        groups.remove(group);
                    }
                }
            }
            None => {
                groups.remove(group);
            }
        }
        if groups.is_empty() {
            self.by_producer.remove(&producer_id);
        }
    }

    fn unindex(&mut self, producer_id: i64, group: &str, tp: &TopicPartition) {
        let Some(tps) = self.by_group.get_mut(group) else {
            return;
        };
        if let Some(producers) = tps.get_mut(tp) {
            producers.remove(&producer_id);
            if producers.is_empty() {
                tps.remove(tp);
            }
        }
        if tps.is_empty() {
            self.by_group.remove(group);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn committed(offset: i64, record_offset: i64) -> Committed {
        Committed {
            value: OffsetAndMetadata {
                offset,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp: 0,
            },
            record_offset,
        }
    }

    fn tp(p: u32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    #[test]
    fn later_commit_of_a_producer_replaces_and_take_empties_the_index() {
        let mut pending = PendingTxnOffsets::default();
        pending.add(1, "g", tp(0), committed(5, 10), 0);
        pending.add(1, "g", tp(0), committed(6, 11), 0);
        pending.add(2, "g", tp(0), committed(7, 12), 0);
        assert!(pending.is_pending("g", &tp(0)));
        let taken = pending.take(1, None);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].committed, committed(6, 11));
        assert!(pending.is_pending("g", &tp(0)));
        assert_eq!(pending.take(2, None).len(), 1);
        assert!(!pending.is_pending("g", &tp(0)));
        assert!(pending.by_producer.is_empty());
        assert!(pending.by_group.is_empty());
        assert!(pending.take(2, None).is_empty());
    }

    #[test]
    fn a_marker_ends_the_transaction_in_its_partition_only() {
        let mut pending = PendingTxnOffsets::default();
        pending.add(1, "a", tp(0), committed(5, 10), 0);
        pending.add(1, "b", tp(0), committed(6, 3), 1);
        let taken = pending.take(1, Some(1));
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].group, "b");
        assert!(pending.is_pending("a", &tp(0)));
        assert!(!pending.is_pending("b", &tp(0)));
    }

    #[test]
    fn tombstones_drop_held_offsets() {
        let mut pending = PendingTxnOffsets::default();
        pending.add(1, "g", tp(0), committed(5, 10), 0);
        pending.add(1, "g", tp(1), committed(5, 10), 0);
        pending.add(2, "g", tp(1), committed(5, 11), 0);
        pending.add(2, "h", tp(1), committed(5, 12), 0);
        pending.remove_partition("g", &tp(1));
        assert_eq!(pending.partitions_of("g").collect::<Vec<_>>(), [&tp(0)]);
        pending.remove_group("g");
        assert_eq!(pending.partitions_of("g").count(), 0);
        assert!(pending.take(1, None).is_empty());
        let taken = pending.take(2, None);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].group, "h");
        assert!(pending.by_producer.is_empty());
    }

    #[test]
    fn a_newer_plain_commit_wins_over_an_older_transactional_one() {
        let mut offsets = BTreeMap::new();
        apply_commit(&mut offsets, tp(0), committed(9, 20));
        apply_txn_commit(&mut offsets, tp(0), committed(5, 10));
        assert_eq!(offsets[&tp(0)], committed(9, 20));
        apply_txn_commit(&mut offsets, tp(0), committed(11, 30));
        assert_eq!(offsets[&tp(0)], committed(11, 30));
        apply_txn_commit(&mut offsets, tp(1), committed(1, 2));
        assert_eq!(offsets[&tp(1)], committed(1, 2));
    }
}
