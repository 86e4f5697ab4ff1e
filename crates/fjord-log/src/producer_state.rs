//! Per-partition producer state: what makes idempotent and transactional appends work (Kafka's
//! `ProducerStateManager`).
//!
//! For every producer id the partition remembers its epoch, the metadata of its last five
//! batches (so a retried batch is recognised and answered with its original offsets instead of
//! being written twice), and the first offset of its open transaction. The open transactions
//! give the last stable offset: the first offset of the earliest open transaction.
//!
//! The state is rebuilt on open from the newest snapshot (`<offset>.snapshot`, written at each
//! segment roll and at close) plus a replay of the batches after it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};

use crate::record::batch::{BatchHeader, NO_SEQUENCE};
use crate::record::{ControlRecordType, EndTxnMarker};

/// How many recent batches per producer are kept for duplicate detection, as in Kafka.
pub const NUM_BATCHES_TO_RETAIN: usize = 5;

/// Suffix of producer state snapshot files.
pub const SNAPSHOT_SUFFIX: &str = ".snapshot";

/// What the partition remembers of one appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    /// First sequence number.
    pub first_seq: i32,
    /// Last sequence number.
    pub last_seq: i32,
    /// Offset of the first record.
    pub first_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// Largest timestamp of the batch.
    pub timestamp: i64,
}

/// The state of one producer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerStateEntry {
    /// The producer id.
    pub producer_id: i64,
    /// The latest epoch seen.
    pub producer_epoch: i16,
    /// The last few batches, oldest first.
    pub batches: VecDeque<BatchMetadata>,
    /// Epoch of the coordinator that wrote the producer's last marker.
    pub coordinator_epoch: i32,
    /// First offset of the producer's open transaction here, if one is open.
    pub current_txn_first_offset: Option<i64>,
    /// Timestamp of the producer's last write, for expiration.
    pub last_timestamp: i64,
}

impl ProducerStateEntry {
    fn new(producer_id: i64, producer_epoch: i16) -> Self {
        ProducerStateEntry {
            producer_id,
            producer_epoch,
            batches: VecDeque::new(),
            coordinator_epoch: -1,
            current_txn_first_offset: None,
            last_timestamp: -1,
        }
    }

    /// Sequence number of the last batch, if any.
    pub fn last_seq(&self) -> Option<i32> {
        self.batches.back().map(|b| b.last_seq)
    }

    fn find_duplicate(&self, header: &BatchHeader) -> Option<BatchMetadata> {
        self.batches
            .iter()
            .find(|b| b.first_seq == header.base_sequence && b.last_seq == header.last_sequence())
            .copied()
    }
}

/// A transaction that ended in this partition with an abort marker: the records from
/// `first_offset` to `last_offset` (the marker) of `producer_id` are to be dropped by
/// `read_committed` readers. This is the entry of the aborted-transaction index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    /// The producer.
    pub producer_id: i64,
    /// First offset of the transaction in this partition.
    pub first_offset: i64,
    /// Offset of the abort marker.
    pub last_offset: i64,
    /// The last stable offset once this transaction ended.
    pub last_stable_offset: i64,
}

/// What [`ProducerStateManager::check`] decided for a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it.
    Append,
    /// A retry of a batch already in the log: answer with these offsets, write nothing.
    Duplicate(BatchMetadata),
}

/// Why a batch does not fit the producer state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProducerStateError {
    /// Older epoch than the partition knows.
    Fenced {
        /// The epoch the partition knows.
        current_epoch: i16,
    },
    /// A gap or a step back in sequence numbers.
    OutOfOrder {
        /// The sequence that should have come.
        expected: i32,
    },
    /// Unknown producer with a sequence other than 0.
    UnknownProducer,
    /// A transactional write that does not fit.
    InvalidTxnState(&'static str),
}

/// Producer state of one partition.
#[derive(Debug, Default)]
pub struct ProducerStateManager {
    producers: HashMap<i64, ProducerStateEntry>,
    /// Open transactions by first offset.
    ongoing: BTreeMap<i64, i64>,
    /// The state reflects every batch below this offset.
    map_end_offset: i64,
}

fn next_sequence(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

impl ProducerStateManager {
    /// Empty state reflecting the log up to `offset`.
    pub fn new(offset: i64) -> Self {
        ProducerStateManager { map_end_offset: offset, ..Self::default() }
    }

    /// Checks a client batch against the producer's state, without changing it.
    pub fn check(&self, header: &BatchHeader) -> Result<SequenceCheck, ProducerStateError> {
        let Some(entry) = self.producers.get(&header.producer_id) else {
            if header.base_sequence != 0 && header.base_sequence != NO_SEQUENCE {
                return Err(ProducerStateError::UnknownProducer);
            }
            return Ok(SequenceCheck::Append);
        };
        if header.producer_epoch < entry.producer_epoch {
            return Err(ProducerStateError::Fenced { current_epoch: entry.producer_epoch });
        }
        let transactional = header.attributes.is_transactional();
        if !transactional && entry.current_txn_first_offset.is_some() {
            return Err(ProducerStateError::InvalidTxnState(
                "a non-transactional batch while the producer's transaction is open",
            ));
        }
        if header.base_sequence == NO_SEQUENCE {
            return Ok(SequenceCheck::Append);
        }
        if header.producer_epoch > entry.producer_epoch {
            // A new epoch starts a new sequence.
            if header.base_sequence != 0 {
                return Err(ProducerStateError::OutOfOrder { expected: 0 });
            }
            return Ok(SequenceCheck::Append);
        }
        if let Some(duplicate) = entry.find_duplicate(header) {
            return Ok(SequenceCheck::Duplicate(duplicate));
        }
        match entry.last_seq() {
            Some(last) if header.base_sequence != next_sequence(last) => {
                Err(ProducerStateError::OutOfOrder { expected: next_sequence(last) })
            }
            None if header.base_sequence != 0 => {
                Err(ProducerStateError::OutOfOrder { expected: 0 })
            }
            _ => Ok(SequenceCheck::Append),
        }
    }

    /// Checks an end-transaction marker from the coordinator.
    pub fn check_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
    ) -> Result<(), ProducerStateError> {
        if let Some(entry) = self.producers.get(&producer_id) {
            if producer_epoch < entry.producer_epoch {
                return Err(ProducerStateError::Fenced { current_epoch: entry.producer_epoch });
            }
            if coordinator_epoch < entry.coordinator_epoch {
                return Err(ProducerStateError::InvalidTxnState(
                    "marker from an older transaction coordinator",
                ));
            }
        }
        Ok(())
    }

    /// Records an appended batch (with its final offsets). For a control batch, `marker` is its
    /// decoded marker; an abort returns the aborted transaction for the index, with the last
    /// stable offset computed against `high_watermark`.
    pub fn update(
        &mut self,
        header: &BatchHeader,
        marker: Option<EndTxnMarker>,
        high_watermark: i64,
    ) -> Option<AbortedTxn> {
        self.map_end_offset = self.map_end_offset.max(header.next_offset());
        if !header.has_producer_id() {
            return None;
        }
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert_with(|| ProducerStateEntry::new(header.producer_id, header.producer_epoch));
        if header.producer_epoch > entry.producer_epoch {
            entry.producer_epoch = header.producer_epoch;
            entry.batches.clear();
        }
        entry.last_timestamp = entry.last_timestamp.max(header.max_timestamp);
        if let Some(marker) = marker {
            entry.coordinator_epoch = marker.coordinator_epoch;
            let first_offset = entry.current_txn_first_offset.take()?;
            self.ongoing.remove(&first_offset);
            return match marker.kind {
                ControlRecordType::Commit => None,
                ControlRecordType::Abort => Some(AbortedTxn {
                    producer_id: header.producer_id,
                    first_offset,
                    last_offset: header.last_offset(),
                    last_stable_offset: self
                        .first_unstable_offset()
                        .unwrap_or(high_watermark.max(header.next_offset())),
                }),
            };
        }
        if header.base_sequence != NO_SEQUENCE {
            if entry.batches.len() == NUM_BATCHES_TO_RETAIN {
                entry.batches.pop_front();
            }
            entry.batches.push_back(BatchMetadata {
                first_seq: header.base_sequence,
                last_seq: header.last_sequence(),
                first_offset: header.base_offset,
                last_offset: header.last_offset(),
                timestamp: header.max_timestamp,
            });
        }
        if header.attributes.is_transactional() && entry.current_txn_first_offset.is_none() {
            entry.current_txn_first_offset = Some(header.base_offset);
            self.ongoing.insert(header.base_offset, header.producer_id);
        }
        None
    }

    /// First offset of the earliest open transaction: the last stable offset when there is one.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.keys().next().copied()
    }

    /// The open transactions as `(first offset, producer id)`, earliest first.
    pub fn ongoing_transactions(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.ongoing.iter().map(|(&o, &p)| (o, p))
    }

    /// The state of a producer.
    pub fn producer(&self, producer_id: i64) -> Option<&ProducerStateEntry> {
        self.producers.get(&producer_id)
    }

    /// Every producer's state.
    pub fn producers(&self) -> impl Iterator<Item = &ProducerStateEntry> {
        self.producers.values()
    }

    /// The offset up to which the state reflects the log.
    pub fn map_end_offset(&self) -> i64 {
        self.map_end_offset
    }

    /// Forgets producers idle since before `cutoff_ms` that have no open transaction
    /// (`producer.id.expiration.ms`).
    pub fn expire(&mut self, cutoff_ms: i64) {
        self.producers
            .retain(|_, e| e.current_txn_first_offset.is_some() || e.last_timestamp >= cutoff_ms);
    }

    /// Drops everything at or after `offset` (after a truncation); the caller then replays the
    /// log from the newest snapshot below it.
    pub fn reset(&mut self, offset: i64) {
        *self = ProducerStateManager::new(offset);
    }

    /// Writes a snapshot of the state as `<map_end_offset>.snapshot` in `dir`, durably.
    pub fn write_snapshot(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let mut body = Vec::new();
        body.extend_from_slice(&self.map_end_offset.to_be_bytes());
        body.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        let mut entries: Vec<_> = self.producers.values().collect();
        entries.sort_by_key(|e| e.producer_id);
        for e in entries {
            body.extend_from_slice(&e.producer_id.to_be_bytes());
            body.extend_from_slice(&e.producer_epoch.to_be_bytes());
            body.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
            body.extend_from_slice(&e.current_txn_first_offset.unwrap_or(-1).to_be_bytes());
            body.extend_from_slice(&e.last_timestamp.to_be_bytes());
            body.push(e.batches.len() as u8);
            for b in &e.batches {
                body.extend_from_slice(&b.first_seq.to_be_bytes());
                body.extend_from_slice(&b.last_seq.to_be_bytes());
                body.extend_from_slice(&b.first_offset.to_be_bytes());
                body.extend_from_slice(&b.last_offset.to_be_bytes());
                body.extend_from_slice(&b.timestamp.to_be_bytes());
            }
        }
        let mut file = Vec::with_capacity(body.len() + 6);
        file.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        file.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        file.extend_from_slice(&body);
        let path = dir.join(crate::segment::file_name(self.map_end_offset, SNAPSHOT_SUFFIX));
        crate::checkpoint::write_atomically(&path, &file)?;
        Ok(path)
    }

    /// Reads a snapshot file. `None` if it is corrupt (the caller falls back to an older one or
    /// to a replay from the start).
    pub fn read_snapshot(path: &Path) -> Option<ProducerStateManager> {
        let bytes = std::fs::read(path).ok()?;
        let mut r = SnapshotReader { buf: &bytes, pos: 0 };
        if r.i16()? != SNAPSHOT_VERSION {
            return None;
        }
        let crc = r.i32()? as u32;
        if crc32c::crc32c(&bytes[r.pos..]) != crc {
            return None;
        }
        let map_end_offset = r.i64()?;
        let count = r.i32()? as u32;
        let mut state = ProducerStateManager::new(map_end_offset);
        for _ in 0..count {
            let producer_id = r.i64()?;
            let mut entry = ProducerStateEntry::new(producer_id, r.i16()?);
            entry.coordinator_epoch = r.i32()?;
            let txn = r.i64()?;
            entry.current_txn_first_offset = (txn >= 0).then_some(txn);
            entry.last_timestamp = r.i64()?;
            let batches = r.u8()?;
            for _ in 0..batches {
                entry.batches.push_back(BatchMetadata {
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    first_offset: r.i64()?,
                    last_offset: r.i64()?,
                    timestamp: r.i64()?,
                });
            }
            if let Some(first) = entry.current_txn_first_offset {
                state.ongoing.insert(first, producer_id);
            }
            state.producers.insert(producer_id, entry);
        }
        (r.pos == bytes.len()).then_some(state)
    }
}

const SNAPSHOT_VERSION: i16 = 1;

struct SnapshotReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl SnapshotReader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let bytes = self.buf.get(self.pos..self.pos + N)?;
        self.pos += N;
        bytes.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take::<1>()?[0])
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take()?))
    }
}

/// Snapshot files in `dir`, by offset, oldest first.
pub fn list_snapshots(dir: &Path) -> std::io::Result<Vec<(i64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(offset) = entry
            .file_name()
            .to_str()
            .and_then(|n| crate::segment::parse_file_name(n, SNAPSHOT_SUFFIX))
        {
            out.push((offset, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::batch::Attributes;
    use crate::record::{Compression, TimestampType};

    fn header(pid: i64, epoch: i16, seq: i32, base: i64, count: i32, txn: bool) -> BatchHeader {
        BatchHeader {
            base_offset: base,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: Attributes::new(Compression::None, TimestampType::CreateTime, txn, false),
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 10,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: count,
        }
    }

    #[test]
    fn retried_batches_are_duplicates_and_gaps_are_out_of_order() {
        let mut state = ProducerStateManager::new(0);
        let first = header(7, 0, 0, 0, 5, false);
        assert_eq!(state.check(&first), Ok(SequenceCheck::Append));
        state.update(&first, None, 5);
        assert!(
            matches!(state.check(&first), Ok(SequenceCheck::Duplicate(b)) if b.first_offset == 0)
        );
        assert_eq!(
            state.check(&header(7, 0, 6, 5, 1, false)),
            Err(ProducerStateError::OutOfOrder { expected: 5 })
        );
        assert_eq!(state.check(&header(7, 0, 5, 5, 1, false)), Ok(SequenceCheck::Append));
        assert_eq!(
            state.check(&header(8, 0, 3, 5, 1, false)),
            Err(ProducerStateError::UnknownProducer)
        );
    }

    #[test]
    fn older_epochs_are_fenced_and_new_epochs_restart_sequences() {
        let mut state = ProducerStateManager::new(0);
        state.update(&header(7, 3, 0, 0, 1, false), None, 1);
        assert_eq!(
            state.check(&header(7, 2, 1, 1, 1, false)),
            Err(ProducerStateError::Fenced { current_epoch: 3 })
        );
        assert_eq!(state.check(&header(7, 4, 0, 1, 1, false)), Ok(SequenceCheck::Append));
        assert!(state.check(&header(7, 4, 1, 1, 1, false)).is_err());
    }

    #[test]
    fn transactions_hold_back_the_last_stable_offset_until_their_marker() {
        let mut state = ProducerStateManager::new(0);
        state.update(&header(1, 0, 0, 10, 2, true), None, 12);
        state.update(&header(2, 0, 0, 12, 2, true), None, 14);
        assert_eq!(state.first_unstable_offset(), Some(10));
        let commit = EndTxnMarker { kind: ControlRecordType::Commit, coordinator_epoch: 0 };
        assert_eq!(state.update(&header(1, 0, -1, 14, 1, true), Some(commit), 15), None);
        assert_eq!(state.first_unstable_offset(), Some(12));
        let abort = EndTxnMarker { kind: ControlRecordType::Abort, coordinator_epoch: 0 };
        let aborted = state.update(&header(2, 0, -1, 15, 1, true), Some(abort), 16).unwrap();
        assert_eq!(
            aborted,
            AbortedTxn {
                producer_id: 2,
                first_offset: 12,
                last_offset: 15,
                last_stable_offset: 16
            }
        );
        assert_eq!(state.first_unstable_offset(), None);
    }

    #[test]
    fn snapshots_round_trip_and_corruption_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = ProducerStateManager::new(0);
        for i in 0..7 {
            state.update(&header(1, 0, i, i as i64, 1, false), None, i as i64 + 1);
        }
        state.update(&header(2, 1, 0, 7, 3, true), None, 10);
        let path = state.write_snapshot(dir.path()).unwrap();
        let back = ProducerStateManager::read_snapshot(&path).unwrap();
        assert_eq!(back.map_end_offset(), 10);
        assert_eq!(back.producer(1), state.producer(1));
        assert_eq!(back.producer(1).unwrap().batches.len(), NUM_BATCHES_TO_RETAIN);
        assert_eq!(back.first_unstable_offset(), Some(7));
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(ProducerStateManager::read_snapshot(&path).is_none());
    }
}
