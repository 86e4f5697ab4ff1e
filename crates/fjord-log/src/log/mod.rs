//! One partition's log (Kafka's `UnifiedLog`): its segments, offsets, producer state, appends,
//! reads, flushes, recovery and retention.
//!
//! # Concurrency
//! One mutex guards the partition's state. Appends validate batches (CRC, framing, compression)
//! before taking it and hold it only to check producer state, assign offsets and write to the
//! page cache. Reads take it only to find where to start and then read the file without it.
//! fsyncs run without it too, behind a separate flush lock, so a slow disk never blocks readers
//! or appenders, and concurrent appenders under `flush.messages=1` share one fsync (group
//! commit).
//!
//! # Durability
//! An append returns once the batch is in the page cache. It is on disk when
//! [`PartitionLog::recovery_point`] has passed it: immediately under `flush.messages=1` (the
//! append does not return before the fsync), within `flush.ms` under an interval policy (the
//! `LogManager`'s background thread flushes), and at segment roll or close otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::checkpoint::PartitionCheckpoint;
use crate::clock::SharedClock;
use crate::config::{TopicCompression, TopicConfig};
use crate::error::{LogError, Result};
use crate::metrics::{LogOffsets, PartitionMetrics};
use crate::producer_state::{
    AbortedTxn, ProducerStateError, ProducerStateManager, SNAPSHOT_SUFFIX, SequenceCheck,
    list_snapshots,
};
use crate::record::batch::{
    BatchHeader, set_base_offset, set_log_append_time, set_partition_leader_epoch,
};
use crate::record::{
    BatchIter, BatchOptions, EndTxnMarker, RecordBatch, RecordBatchBuilder, RecordError,
    TimestampType,
};
use crate::segment::{
    InvalidTail, LOG_SUFFIX, LogSegment, RollCheck, SegmentOpenError, SliceReadError, file_name,
    parse_file_name,
};
use crate::{TopicPartition, checkpoint};

mod cleaner;
pub use cleaner::{CleanResult, CleanerConfig};

/// The leader epoch stamped on every batch. A single node is always the leader of epoch 0.
pub const LEADER_EPOCH: i32 = 0;

/// Which offsets a read may return (Kafka's `FetchIsolation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchIsolation {
    /// Up to the high watermark: `read_uncommitted` consumers.
    HighWatermark,
    /// Up to the last stable offset: `read_committed` consumers.
    TxnCommitted,
}

/// The outcome of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record appended.
    pub first_offset: i64,
    /// Offset of the last record appended.
    pub last_offset: i64,
    /// Largest record timestamp in the appended batches.
    pub max_timestamp: i64,
    /// The broker time stamped on the batches under `LogAppendTime`, else -1.
    pub log_append_time: i64,
    /// The partition's log start offset after the append.
    pub log_start_offset: i64,
    /// Number of records appended.
    pub record_count: u32,
    /// The batch was a retry of one already stored; the offsets are the stored ones.
    pub duplicate: bool,
}

/// The result of a read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchData {
    /// Whole batches, exactly as stored. May start before the requested offset (the batch that
    /// contains it), as in Kafka; readers skip records below the offset they asked for.
    pub records: Vec<u8>,
    /// Offset after the last returned batch (where the next read continues), if any was
    /// returned.
    pub next_offset: Option<i64>,
    /// The high watermark (the log end offset on a single node).
    pub high_watermark: i64,
    /// The last stable offset: the first offset of the earliest open transaction, else the high
    /// watermark.
    pub last_stable_offset: i64,
    /// The first readable offset.
    pub log_start_offset: i64,
    /// For `TxnCommitted` reads: the aborted transactions overlapping the returned range, so the
    /// reader can drop their records (Kafka's `FetchResponse.AbortedTransactions`).
    pub aborted_transactions: Vec<AbortedTxn>,
}

/// An offset found by timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampAndOffset {
    /// The record's timestamp.
    pub timestamp: i64,
    /// The record's offset.
    pub offset: i64,
}

/// What opening a partition found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The partition.
    pub tp: Option<TopicPartition>,
    /// Segments loaded.
    pub segments: usize,
    /// Segments whose every batch was validated by CRC.
    pub segments_validated: usize,
    /// Torn or corrupt tails cut off.
    pub truncations: Vec<Truncation>,
    /// Index files rebuilt, with why.
    pub indexes_rebuilt: Vec<(PathBuf, String)>,
    /// Corrupt batches found in flushed data. They are kept and reads that reach them fail.
    pub corruptions: Vec<InvalidTail>,
    /// Offset from which producer state was replayed.
    pub producer_state_replayed_from: i64,
    /// The log end offset after recovery.
    pub log_end_offset: i64,
}

/// A cut-off tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// The segment file cut.
    pub path: PathBuf,
    /// Where the invalid data began.
    pub position: u32,
    /// Bytes removed from that file, plus every later segment's bytes.
    pub bytes_removed: u64,
    /// Why the data was invalid.
    pub reason: String,
}

/// Counts of a retention pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionResult {
    /// Segments deleted.
    pub segments_deleted: usize,
    /// Bytes deleted.
    pub bytes_deleted: u64,
    /// The log start offset afterwards.
    pub log_start_offset: i64,
}

struct LogState {
    segments: BTreeMap<i64, LogSegment>,
    log_start_offset: i64,
    log_end_offset: i64,
    recovery_point: i64,
    cleaner_offset: i64,
    producers: ProducerStateManager,
    unflushed_messages: u64,
    last_flush_ms: i64,
    checkpointed: PartitionCheckpoint,
    closed: bool,
}

impl LogState {
    #[allow(clippy::expect_used)]
    fn active(&mut self) -> &mut LogSegment {
        // Invariant: open() creates a segment when there is none, and roll/retention only ever
        // add the new active segment before removing old ones.
        self.segments.values_mut().next_back().expect("a partition always has an active segment")
    }

    fn active_base(&self) -> i64 {
        self.segments.keys().next_back().copied().unwrap_or(self.log_end_offset)
    }

    fn last_stable_offset(&self) -> i64 {
        self.producers.first_unstable_offset().unwrap_or(self.log_end_offset)
    }

    fn size_in_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size() as u64).sum()
    }

    /// The values of the partition's gauges; `size_bytes` from the caller, so that appends
    /// need not sum the segments.
    fn offsets(&self, size_bytes: u64) -> LogOffsets {
        LogOffsets {
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset,
            last_stable_offset: self.last_stable_offset(),
            size_bytes,
            segments: self.segments.len() as u64,
        }
    }

    fn checkpoint(&self) -> PartitionCheckpoint {
        PartitionCheckpoint {
            recovery_point: self.recovery_point,
            log_start_offset: self.log_start_offset,
            cleaner_offset: self.cleaner_offset,
        }
    }
}

/// One partition's log. Cheap to share: wrap it in an `Arc`.
pub struct PartitionLog {
    tp: TopicPartition,
    dir: PathBuf,
    config: RwLock<Arc<TopicConfig>>,
    clock: SharedClock,
    state: Mutex<LogState>,
    flush_lock: Mutex<()>,
    /// Serialises retention and compaction, which both replace segments.
    maintenance_lock: Mutex<()>,
    /// Counters and gauges, updated under `state`'s lock (gauges) or after a read (fetches).
    metrics: PartitionMetrics,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog").field("tp", &self.tp).field("dir", &self.dir).finish()
    }
}

fn map_producer_error(
    tp: &TopicPartition,
    header: &BatchHeader,
    e: ProducerStateError,
) -> LogError {
    let producer_id = header.producer_id;
    match e {
        ProducerStateError::Fenced { current_epoch } => LogError::InvalidProducerEpoch {
            tp: tp.clone(),
            producer_id,
            epoch: header.producer_epoch,
            current_epoch,
        },
        ProducerStateError::OutOfOrder { expected } => LogError::OutOfOrderSequence {
            tp: tp.clone(),
            producer_id,
            expected,
            found: header.base_sequence,
        },
        ProducerStateError::UnknownProducer => LogError::UnknownProducerId {
            tp: tp.clone(),
            producer_id,
            sequence: header.base_sequence,
        },
        ProducerStateError::InvalidTxnState(reason) => {
            LogError::InvalidTxnState { tp: tp.clone(), producer_id, reason }
        }
    }
}

impl PartitionLog {
    /// Creates the directory of a new, empty partition and opens it.
    pub fn create(
        dir: &Path,
        tp: TopicPartition,
        config: Arc<TopicConfig>,
        clock: SharedClock,
    ) -> Result<PartitionLog> {
        std::fs::create_dir_all(dir).map_err(|e| LogError::io("create directory", dir, e))?;
        if let Some(parent) = dir.parent() {
            checkpoint::sync_dir(parent).map_err(|e| LogError::io("fsync directory", parent, e))?;
        }
        let (log, _) = Self::open(dir, tp, config, clock)?;
        Ok(log)
    }

    /// Opens a partition directory, recovering it: validates by CRC every segment that may hold
    /// unflushed data (at least the active one), cuts off a torn or corrupt tail, rebuilds
    /// missing or bad indexes, and rebuilds producer state. What it did is in the report and
    /// in the log output.
    pub fn open(
        dir: &Path,
        tp: TopicPartition,
        config: Arc<TopicConfig>,
        clock: SharedClock,
    ) -> Result<(PartitionLog, RecoveryReport)> {
        let now = clock.now_ms();
        let mut report = RecoveryReport { tp: Some(tp.clone()), ..RecoveryReport::default() };
        let checkpoint = PartitionCheckpoint::read(dir);
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| LogError::io("list", dir, e))? {
            let entry = entry.map_err(|e| LogError::io("list", dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".cleaned") || name.ends_with(".deleted") || name.ends_with(".tmp") {
                // Leftovers of an interrupted compaction or checkpoint write.
                std::fs::remove_file(entry.path())
                    .map_err(|e| LogError::io("remove leftover", entry.path(), e))?;
            } else if let Some(base) = parse_file_name(name, LOG_SUFFIX) {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let interval = config.index_interval_bytes;
        let recovery_point = checkpoint.map_or(0, |c| c.recovery_point);
        // Validate from the segment holding the recovery point onwards.
        let first_to_validate =
            bases.iter().rev().find(|&&b| b <= recovery_point).copied().unwrap_or(i64::MIN);
        let mut segments = BTreeMap::new();
        let mut txn_index_bad = false;
        let mut iter = bases.iter().copied().peekable();
        while let Some(base) = iter.next() {
            let seg_err = |e: SegmentOpenError| match e {
                SegmentOpenError::Io { path, source } => LogError::io("open segment", path, source),
                SegmentOpenError::TooLarge { path, len } => LogError::Io {
                    op: "open segment",
                    path,
                    source: std::io::Error::other(format!("{len} bytes is over 4 GiB")),
                },
            };
            let is_last = iter.peek().is_none();
            let mut segment = if base >= first_to_validate || is_last {
                // Segments at or past the cleaner checkpoint were never compacted, so their
                // offsets have no gaps; the last one is always such a segment.
                let contiguous = is_last || checkpoint.is_some_and(|c| base >= c.cleaner_offset);
                let (segment, tail) =
                    LogSegment::open_and_recover(dir, base, interval, now, true, contiguous)
                        .map_err(seg_err)?;
                report.segments_validated += 1;
                if let Some(tail) = tail {
                    // Everything after a torn tail is unreachable: drop later segments too.
                    let mut removed = tail.file_size - tail.position as u64;
                    for later in iter.by_ref() {
                        let (s, _) =
                            LogSegment::open(dir, later, interval, now).map_err(seg_err)?;
                        removed += s.size() as u64;
                        s.delete_files().map_err(|e| LogError::io("delete", s.log_path(), e))?;
                    }
                    tracing::warn!(
                        partition = %tp,
                        file = %segment.log_path().display(),
                        position = tail.position,
                        bytes_removed = removed,
                        reason = %tail.reason,
                        "recovery truncated an invalid tail"
                    );
                    report.truncations.push(Truncation {
                        path: segment.log_path(),
                        position: tail.position,
                        bytes_removed: removed,
                        reason: tail.reason,
                    });
                }
                segment
            } else {
                let (mut segment, index_error) =
                    LogSegment::open(dir, base, interval, now).map_err(seg_err)?;
                if let Some(e) = index_error {
                    tracing::warn!(partition = %tp, file = %segment.index_path().display(), reason = %e, "rebuilding index");
                    report.indexes_rebuilt.push((segment.index_path(), e.to_string()));
                    if let Some(bad) = segment.recover(false, false).map_err(seg_err)? {
                        tracing::error!(
                            partition = %tp,
                            file = %segment.log_path().display(),
                            position = bad.position,
                            reason = %bad.reason,
                            "corrupt batch in flushed data: kept, reads reaching it will fail"
                        );
                        report.corruptions.push(bad);
                    }
                }
                segment
            };
            if let Err(e) = segment.load_txn_index() {
                tracing::warn!(partition = %tp, file = %segment.txn_index_path().display(), reason = %e, "transaction index unreadable: replaying producer state from the log start");
                report.indexes_rebuilt.push((segment.txn_index_path(), e.to_string()));
                txn_index_bad = true;
            }
            segments.insert(base, segment);
        }
        let checkpoint_start = checkpoint.map_or(0, |c| c.log_start_offset);
        if segments.is_empty() {
            let segment = LogSegment::create(dir, checkpoint_start, interval, now)
                .map_err(|e| LogError::io("create segment", dir, e))?;
            segments.insert(checkpoint_start, segment);
        }
        let first_base = segments.keys().next().copied().unwrap_or(0);
        let log_end_offset = segments.values().next_back().map_or(0, |s| s.next_offset());
        let log_start_offset = checkpoint_start.max(first_base).min(log_end_offset);
        report.segments = segments.len();

        let producers = Self::rebuild_producer_state(
            dir,
            &tp,
            &mut segments,
            log_start_offset,
            log_end_offset,
            txn_index_bad,
            &mut report,
        )?;
        report.log_end_offset = log_end_offset;
        let recovery_point = if report.truncations.is_empty() {
            recovery_point.min(log_end_offset)
        } else {
            // Validated up to the end just now.
            log_end_offset
        };
        let state = LogState {
            segments,
            log_start_offset,
            log_end_offset,
            recovery_point,
            cleaner_offset: checkpoint.map_or(log_start_offset, |c| c.cleaner_offset),
            producers,
            unflushed_messages: 0,
            last_flush_ms: now,
            checkpointed: checkpoint.unwrap_or_default(),
            closed: false,
        };
        let metrics = PartitionMetrics::new(&tp, &state.offsets(state.size_in_bytes()));
        let log = PartitionLog {
            tp,
            dir: dir.to_path_buf(),
            config: RwLock::new(config),
            clock,
            state: Mutex::new(state),
            flush_lock: Mutex::new(()),
            maintenance_lock: Mutex::new(()),
            metrics,
        };
        log.write_checkpoint_if_changed()?;
        if !report.truncations.is_empty() || !report.corruptions.is_empty() {
            tracing::warn!(partition = %log.tp, ?report, "partition recovered with repairs");
        } else {
            tracing::debug!(partition = %log.tp, log_end_offset, segments = report.segments, "partition opened");
        }
        Ok((log, report))
    }

    /// Loads the newest usable producer state snapshot and replays the log after it,
    /// regenerating the aborted-transaction index entries of the replayed range.
    fn rebuild_producer_state(
        dir: &Path,
        tp: &TopicPartition,
        segments: &mut BTreeMap<i64, LogSegment>,
        log_start_offset: i64,
        log_end_offset: i64,
        from_start: bool,
        report: &mut RecoveryReport,
    ) -> Result<ProducerStateManager> {
        let snapshots = list_snapshots(dir).map_err(|e| LogError::io("list snapshots", dir, e))?;
        let mut state = None;
        for (offset, path) in snapshots.iter().rev() {
            if *offset > log_end_offset {
                // Written before a truncation: it describes offsets that no longer exist.
                std::fs::remove_file(path).map_err(|e| LogError::io("remove snapshot", path, e))?;
                continue;
            }
            if from_start || state.is_some() || *offset < log_start_offset {
                continue;
            }
            match ProducerStateManager::read_snapshot(path) {
                Some(s) => state = Some(s),
                None => {
                    tracing::warn!(partition = %tp, file = %path.display(), "ignoring unreadable producer state snapshot")
                }
            }
        }
        let mut state = state.unwrap_or_else(|| ProducerStateManager::new(log_start_offset));
        let start = state.map_end_offset();
        report.producer_state_replayed_from = start;
        for segment in segments.values_mut() {
            if segment.next_offset() <= start {
                continue;
            }
            segment.truncate_txn_index(start);
            let mut aborted = Vec::new();
            let mut marker_error = None;
            let result = segment.scan(|scanned, bytes| {
                let h = &scanned.header;
                if h.base_offset < start {
                    return;
                }
                let marker = if h.attributes.is_control() {
                    match decode_marker(bytes) {
                        Ok(m) => m,
                        Err(e) => {
                            marker_error.get_or_insert((scanned.position, e));
                            None
                        }
                    }
                } else {
                    None
                };
                if let Some(txn) = state.update(h, marker, log_end_offset) {
                    aborted.push(txn);
                }
            });
            if let Err(e) = result {
                // Corruption below the recovery point: reported at open, and reads fail on it.
                tracing::error!(partition = %tp, file = %segment.log_path().display(), reason = %e, "producer state replay stopped at invalid data");
            }
            if let Some((position, e)) = marker_error {
                tracing::error!(partition = %tp, file = %segment.log_path().display(), position, reason = %e, "unreadable transaction marker");
            }
            for txn in aborted {
                segment.append_aborted_txn(txn);
            }
            segment
                .persist_indexes()
                .map_err(|e| LogError::io("write index", segment.txn_index_path(), e))?;
        }
        Ok(state)
    }

    /// The partition.
    pub fn topic_partition(&self) -> &TopicPartition {
        &self.tp
    }

    /// The partition's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The topic config in force.
    pub fn config(&self) -> Arc<TopicConfig> {
        self.config.read().clone()
    }

    /// Replaces the topic config (after an alter-configs).
    pub fn set_config(&self, config: Arc<TopicConfig>) {
        *self.config.write() = config;
    }

    /// Next offset to be assigned.
    pub fn log_end_offset(&self) -> i64 {
        self.state.lock().log_end_offset
    }

    /// First readable offset.
    pub fn log_start_offset(&self) -> i64 {
        self.state.lock().log_start_offset
    }

    /// The high watermark: the log end offset on a single node.
    pub fn high_watermark(&self) -> i64 {
        self.state.lock().log_end_offset
    }

    /// The last stable offset: the first offset of the earliest open transaction, else the
    /// high watermark.
    pub fn last_stable_offset(&self) -> i64 {
        self.state.lock().last_stable_offset()
    }

    /// Every batch below this offset is on disk.
    pub fn recovery_point(&self) -> i64 {
        self.state.lock().recovery_point
    }

    /// Total bytes of the partition's segments.
    pub fn size_in_bytes(&self) -> u64 {
        self.state.lock().size_in_bytes()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.state.lock().segments.len()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.state.lock().segments.keys().copied().collect()
    }

    /// The open transactions as `(first offset, producer id)`.
    pub fn ongoing_transactions(&self) -> Vec<(i64, i64)> {
        self.state.lock().producers.ongoing_transactions().collect()
    }

    /// The epoch and last sequence of a producer, if the partition knows it.
    pub fn producer_state(&self, producer_id: i64) -> Option<(i16, Option<i32>)> {
        let state = self.state.lock();
        state.producers.producer(producer_id).map(|e| (e.producer_epoch, e.last_seq()))
    }

    /// Validates client batches outside the lock: size, CRC, framing, topic rules, and
    /// conversions (recompression to the topic codec, log-append time). Returns their headers.
    fn prepare_client_batches(
        &self,
        batches: &mut Vec<u8>,
        config: &TopicConfig,
        now: i64,
    ) -> Result<Vec<BatchHeader>> {
        let tp = &self.tp;
        let invalid = |source| LogError::InvalidRecord { tp: tp.clone(), source };
        let mut scratch = Vec::new();
        let mut headers = Vec::new();
        let mut needs_recompression = false;
        for batch in BatchIter::new(batches) {
            let batch = batch.map_err(invalid)?;
            let header = *batch.header();
            if header.size_in_bytes() > config.max_message_bytes as usize {
                return Err(LogError::RecordBatchTooLarge {
                    tp: tp.clone(),
                    size: header.size_in_bytes(),
                    max: config.max_message_bytes,
                });
            }
            batch.validate_crc().map_err(invalid)?;
            if header.attributes.is_control() {
                return Err(LogError::RecordRejected {
                    tp: tp.clone(),
                    reason: "clients cannot write control batches; only the transaction coordinator writes markers".into(),
                });
            }
            batch.validate_records(&mut scratch).map_err(invalid)?;
            self.check_record_rules(&batch, &header, config, now, &mut scratch)?;
            if let TopicCompression::Codec(codec) = config.compression_type
                && batch.compression().map_err(invalid)? != codec
            {
                needs_recompression = true;
            }
            headers.push(header);
        }
        if headers.is_empty() {
            return Err(invalid(RecordError::EmptyBatch));
        }
        if headers.len() > 1 && headers.iter().any(|h| h.has_producer_id()) {
            return Err(LogError::RecordRejected {
                tp: tp.clone(),
                reason: "an idempotent or transactional produce must carry exactly one batch per partition".into(),
            });
        }
        if needs_recompression && let TopicCompression::Codec(codec) = config.compression_type {
            let mut converted = Vec::with_capacity(batches.len());
            for batch in BatchIter::new(batches) {
                let batch = batch.map_err(invalid)?;
                recompress(&batch, codec, &mut converted, &mut scratch).map_err(invalid)?;
            }
            *batches = converted;
            headers = BatchIter::new(batches)
                .map(|b| b.map(|b| *b.header()))
                .collect::<std::result::Result<_, _>>()
                .map_err(invalid)?;
        }
        if config.message_timestamp_type == TimestampType::LogAppendTime {
            let mut pos = 0;
            for header in &mut headers {
                let size = header.size_in_bytes();
                set_log_append_time(&mut batches[pos..pos + size], now);
                header.max_timestamp = now;
                header.attributes =
                    header.attributes.with_timestamp_type(TimestampType::LogAppendTime);
                pos += size;
            }
        }
        Ok(headers)
    }

    /// Topic rules on individual records: keys on compacted topics, timestamp windows.
    fn check_record_rules(
        &self,
        batch: &RecordBatch<'_>,
        header: &BatchHeader,
        config: &TopicConfig,
        now: i64,
        scratch: &mut Vec<u8>,
    ) -> Result<()> {
        let compacted = config.cleanup_policy.compacts();
        let check_time = config.message_timestamp_type == TimestampType::CreateTime
            && (config.message_timestamp_before_max_ms < i64::MAX
                || config.message_timestamp_after_max_ms < i64::MAX);
        if !compacted && !check_time {
            return Ok(());
        }
        let reject = |reason: String| LogError::RecordRejected { tp: self.tp.clone(), reason };
        if check_time {
            // The batch header bounds every record's timestamp from above; the records are
            // checked one by one only when the header alone cannot decide.
            let too_new =
                header.max_timestamp.saturating_sub(now) > config.message_timestamp_after_max_ms;
            if too_new {
                return Err(reject(format!(
                    "timestamp {} is more than message.timestamp.after.max.ms ({}) ahead of the broker's clock",
                    header.max_timestamp, config.message_timestamp_after_max_ms
                )));
            }
        }
        let records = batch
            .records(scratch)
            .map_err(|source| LogError::InvalidRecord { tp: self.tp.clone(), source })?;
        for record in records {
            let record =
                record.map_err(|source| LogError::InvalidRecord { tp: self.tp.clone(), source })?;
            if compacted && record.key.is_none() {
                return Err(reject(format!(
                    "record at offset delta {} has no key, and compacted topics (cleanup.policy=compact) need one",
                    record.offset - header.base_offset
                )));
            }
            if check_time
                && now.saturating_sub(record.timestamp) > config.message_timestamp_before_max_ms
            {
                return Err(reject(format!(
                    "timestamp {} is more than message.timestamp.before.max.ms ({}) behind the broker's clock",
                    record.timestamp, config.message_timestamp_before_max_ms
                )));
            }
        }
        Ok(())
    }

    /// Appends client batches (a produce request's records for this partition). `batches` is
    /// rewritten in place with the assigned offsets (or replaced when the topic's
    /// `compression.type` asks for another codec). Returns once the batches are in the page
    /// cache, or on disk under `flush.messages=1`.
    pub fn append(&self, batches: &mut Vec<u8>) -> Result<AppendInfo> {
        let config = self.config();
        let now = self.clock.now_ms();
        let mut headers = self.prepare_client_batches(batches, &config, now)?;
        let mut state = self.state.lock();
        if state.closed {
            return Err(LogError::Closed);
        }
        if let Some(h) = headers.first().filter(|h| h.has_producer_id()) {
            match state.producers.check(h).map_err(|e| map_producer_error(&self.tp, h, e))? {
                SequenceCheck::Append => {}
                SequenceCheck::Duplicate(meta) => {
                    return Ok(AppendInfo {
                        first_offset: meta.first_offset,
                        last_offset: meta.last_offset,
                        max_timestamp: meta.timestamp,
                        log_append_time: -1,
                        log_start_offset: state.log_start_offset,
                        record_count: (meta.last_offset - meta.first_offset + 1) as u32,
                        duplicate: true,
                    });
                }
            }
        }
        let first_offset = state.log_end_offset;
        let mut offset = first_offset;
        let mut pos = 0;
        let mut max_timestamp = -1;
        let mut record_count = 0u32;
        for header in &mut headers {
            let size = header.size_in_bytes();
            let bytes = &mut batches[pos..pos + size];
            set_base_offset(bytes, offset);
            set_partition_leader_epoch(bytes, LEADER_EPOCH);
            header.base_offset = offset;
            header.partition_leader_epoch = LEADER_EPOCH;
            offset = header.next_offset();
            max_timestamp = max_timestamp.max(header.max_timestamp);
            record_count += header.records_count as u32;
            pos += size;
        }
        let last_offset = offset - 1;
        self.write_locked(&mut state, &config, batches, &headers, now)?;
        for header in &headers {
            state.producers.update(header, None, offset);
        }
        let bytes = batches.len() as u64;
        self.metrics.appended(
            u64::from(record_count),
            bytes,
            &state.offsets(self.metrics.size_bytes() + bytes),
        );
        let flush = config.flush_messages.is_some_and(|n| state.unflushed_messages >= n);
        let info = AppendInfo {
            first_offset,
            last_offset,
            max_timestamp,
            log_append_time: if config.message_timestamp_type == TimestampType::LogAppendTime {
                now
            } else {
                -1
            },
            log_start_offset: state.log_start_offset,
            record_count,
            duplicate: false,
        };
        drop(state);
        if flush {
            self.flush_to(offset)?;
        }
        Ok(info)
    }

    /// Appends a transaction marker for `producer_id` (the transaction coordinator's
    /// `WriteTxnMarkers`). Returns the marker's offset and, for an abort, the aborted
    /// transaction recorded in the index.
    pub fn append_end_txn_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        marker: EndTxnMarker,
    ) -> Result<(i64, Option<AbortedTxn>)> {
        let config = self.config();
        let now = self.clock.now_ms();
        let mut batch = marker
            .to_batch(producer_id, producer_epoch, now)
            .map_err(|source| LogError::InvalidRecord { tp: self.tp.clone(), source })?;
        let mut header = BatchHeader::parse(&batch)
            .map_err(|source| LogError::InvalidRecord { tp: self.tp.clone(), source })?;
        let mut state = self.state.lock();
        if state.closed {
            return Err(LogError::Closed);
        }
        state
            .producers
            .check_marker(producer_id, producer_epoch, marker.coordinator_epoch)
            .map_err(|e| map_producer_error(&self.tp, &header, e))?;
        let offset = state.log_end_offset;
        set_base_offset(&mut batch, offset);
        set_partition_leader_epoch(&mut batch, LEADER_EPOCH);
        header.base_offset = offset;
        header.partition_leader_epoch = LEADER_EPOCH;
        self.write_locked(&mut state, &config, &batch, std::slice::from_ref(&header), now)?;
        let aborted = state.producers.update(&header, Some(marker), offset + 1);
        if let Some(txn) = aborted {
            state.active().append_aborted_txn(txn);
        }
        self.metrics.publish(&state.offsets(self.metrics.size_bytes() + batch.len() as u64));
        let flush = config.flush_messages.is_some_and(|n| state.unflushed_messages >= n);
        drop(state);
        if flush {
            self.flush_to(offset + 1)?;
        }
        Ok((offset, aborted))
    }

    /// Writes batches with assigned offsets to the active segment, rolling first if needed.
    fn write_locked(
        &self,
        state: &mut LogState,
        config: &TopicConfig,
        batches: &[u8],
        headers: &[BatchHeader],
        now: i64,
    ) -> Result<()> {
        let (Some(first), Some(last)) = (headers.first(), headers.last()) else {
            return Ok(());
        };
        let roll = RollCheck {
            incoming_bytes: batches.len(),
            last_offset: last.last_offset(),
            max_timestamp: headers.iter().map(|h| h.max_timestamp).max().unwrap_or(-1),
            now_ms: now,
            segment_bytes: config.segment_bytes,
            segment_ms: config.segment_ms,
            segment_index_bytes: config.segment_index_bytes,
        };
        if state.active().should_roll(&roll) {
            self.roll_locked(state, now)?;
        }
        let active = state.active();
        let size_before = active.size();
        if let Err(e) = active.append(batches, headers) {
            // A partial write must not stay as a torn tail in a live log.
            let path = active.log_path();
            let _ = active.truncate_to(first.base_offset);
            debug_assert_eq!(active.size(), size_before);
            return Err(LogError::io("append to", path, e));
        }
        state.log_end_offset = last.next_offset();
        state.unflushed_messages += headers.iter().map(|h| h.records_count as u64).sum::<u64>();
        Ok(())
    }

    /// Closes the active segment and starts a new one at the log end offset, snapshotting
    /// producer state there.
    fn roll_locked(&self, state: &mut LogState, now: i64) -> Result<()> {
        let base = state.log_end_offset;
        let interval = self.config.read().index_interval_bytes;
        let active = state.active();
        active
            .persist_indexes()
            .map_err(|e| LogError::io("write index", active.index_path(), e))?;
        state
            .producers
            .write_snapshot(&self.dir)
            .map_err(|e| LogError::io("write producer snapshot", &self.dir, e))?;
        let segment = LogSegment::create(&self.dir, base, interval, now)
            .map_err(|e| LogError::io("create segment", &self.dir, e))?;
        state.segments.insert(base, segment);
        tracing::debug!(partition = %self.tp, base_offset = base, "rolled segment");
        Ok(())
    }

    /// Starts a new segment now if the active one is not empty (for tests and tools).
    pub fn roll(&self) -> Result<()> {
        let now = self.clock.now_ms();
        let mut state = self.state.lock();
        if state.active().size() > 0 {
            self.roll_locked(&mut state, now)?;
            self.metrics.publish(&state.offsets(state.size_in_bytes()));
        }
        Ok(())
    }

    /// Fsyncs everything up to the log end offset.
    pub fn flush(&self) -> Result<()> {
        let end = self.log_end_offset();
        self.flush_to(end)
    }

    /// Fsyncs until the recovery point reaches at least `offset`. Concurrent callers share an
    /// fsync: whoever holds the flush lock flushes everything appended so far.
    fn flush_to(&self, offset: i64) -> Result<()> {
        let _flushing = self.flush_lock.lock();
        let (files, end) = {
            let mut state = self.state.lock();
            if state.recovery_point >= offset {
                return Ok(());
            }
            let recovery_point = state.recovery_point;
            let mut files = Vec::new();
            for segment in state.segments.values_mut() {
                if segment.next_offset() > recovery_point || segment.size() == 0 {
                    segment
                        .persist_indexes()
                        .map_err(|e| LogError::io("write index", segment.index_path(), e))?;
                    files.push((
                        segment.file_handle(),
                        segment.log_path(),
                        segment.txn_index_path(),
                    ));
                }
            }
            state.unflushed_messages = 0;
            (files, state.log_end_offset)
        };
        for (file, path, txn_path) in files {
            file.sync_data().map_err(|e| LogError::io("fsync", &path, e))?;
            crate::segment::sync_if_exists(&txn_path)
                .map_err(|e| LogError::io("fsync", txn_path, e))?;
        }
        let mut state = self.state.lock();
        state.recovery_point = state.recovery_point.max(end);
        state.last_flush_ms = self.clock.now_ms();
        Ok(())
    }

    /// Flushes if `flush.ms` has passed since the last flush and there is unflushed data, and
    /// always flushes segments that were rolled but not flushed yet. Called by the
    /// `LogManager`'s background thread.
    pub fn flush_if_due(&self) -> Result<()> {
        let config = self.config();
        let now = self.clock.now_ms();
        let (due, rolled_unflushed, end) = {
            let state = self.state.lock();
            let due = config.flush_ms.is_some_and(|ms| {
                state.recovery_point < state.log_end_offset
                    && now - state.last_flush_ms >= ms as i64
            });
            (due, state.recovery_point < state.active_base(), state.log_end_offset)
        };
        if due {
            self.flush_to(end)
        } else if rolled_unflushed {
            let base = self.state.lock().active_base();
            self.flush_to(base)
        } else {
            Ok(())
        }
    }

    /// Writes the partition checkpoint if its offsets changed since the last write.
    pub fn write_checkpoint_if_changed(&self) -> Result<()> {
        let checkpoint = {
            let state = self.state.lock();
            let c = state.checkpoint();
            if c == state.checkpointed {
                return Ok(());
            }
            c
        };
        checkpoint.write(&self.dir).map_err(|e| LogError::io("write checkpoint", &self.dir, e))?;
        let mut state = self.state.lock();
        state.checkpointed = checkpoint;
        Ok(())
    }

    /// Reads whole batches starting with the one that contains `offset`, up to `max_bytes`
    /// (at least one batch), stopping at the high watermark or, for `TxnCommitted`, at the last
    /// stable offset. Every batch returned passed its CRC check; corrupt data is an error.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        isolation: FetchIsolation,
    ) -> Result<FetchData> {
        let mut offset = offset;
        loop {
            let (slice, upper, mut data, next_base) = {
                let state = self.state.lock();
                if offset < state.log_start_offset || offset > state.log_end_offset {
                    return Err(LogError::OffsetOutOfRange {
                        tp: self.tp.clone(),
                        offset,
                        log_start_offset: state.log_start_offset,
                        log_end_offset: state.log_end_offset,
                    });
                }
                let lso = state.last_stable_offset();
                let data = FetchData {
                    high_watermark: state.log_end_offset,
                    last_stable_offset: lso,
                    log_start_offset: state.log_start_offset,
                    ..FetchData::default()
                };
                let upper = match isolation {
                    FetchIsolation::HighWatermark => state.log_end_offset,
                    FetchIsolation::TxnCommitted => lso,
                };
                if offset >= upper {
                    return Ok(data);
                }
                let start_base =
                    state.segments.range(..=offset).next_back().map_or(i64::MIN, |(b, _)| *b);
                let Some(segment) = state
                    .segments
                    .range(start_base..)
                    .map(|(_, s)| s)
                    .find(|s| s.next_offset() > offset)
                else {
                    return Ok(data);
                };
                let next_base =
                    state.segments.range(segment.base_offset() + 1..).next().map(|(b, _)| *b);
                (segment.slice_from(offset), upper, data, next_base)
            };
            let read = slice.read(offset, max_bytes, upper).map_err(|e| self.slice_error(e))?;
            if read.bytes.is_empty() {
                // Compaction may leave a segment without batches at or after `offset`.
                match next_base {
                    Some(base) if base < upper => {
                        offset = base;
                        continue;
                    }
                    _ => return Ok(data),
                }
            }
            data.next_offset = read.next_offset;
            if isolation == FetchIsolation::TxnCommitted {
                let end = read.next_offset.unwrap_or(offset);
                data.aborted_transactions = self.collect_aborted_txns(offset, end);
            }
            data.records = read.bytes;
            self.metrics.fetched(fetched_records(offset, &data.records), data.records.len() as u64);
            return Ok(data);
        }
    }

    /// Registers the partition's metric handles again if a recorder was installed since they
    /// were registered (see [`crate::metrics`]). The `LogManager`'s background thread calls
    /// it, so that idle partitions show up too.
    pub fn refresh_metrics(&self) {
        self.metrics.refresh();
    }

    /// Aborted transactions that overlap `[start, end)`: those whose first offset is below
    /// `end` and whose marker is at or after `start`.
    pub fn collect_aborted_txns(&self, start: i64, end: i64) -> Vec<AbortedTxn> {
        let state = self.state.lock();
        let mut out = Vec::new();
        let first = state.segments.range(..=start).next_back().map_or(i64::MIN, |(b, _)| *b);
        for segment in state.segments.range(first..).map(|(_, s)| s) {
            for txn in segment.aborted_txns() {
                if txn.last_offset >= start && txn.first_offset < end {
                    out.push(*txn);
                }
            }
        }
        out
    }

    fn slice_error(&self, e: SliceReadError) -> LogError {
        match e {
            SliceReadError::Io { path, source } => LogError::io("read", path, source),
            SliceReadError::Corrupt { path, position, source } => {
                LogError::Corrupt { tp: self.tp.clone(), path, position, source }
            }
        }
    }

    /// The first record whose timestamp is at or after `timestamp`, as Kafka's `ListOffsets`
    /// answers; `None` if there is none.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<TimestampAndOffset>> {
        let (slice, start_offset, upper) = {
            let state = self.state.lock();
            let Some(segment) = state.segments.values().find(|s| s.max_timestamp() >= timestamp)
            else {
                return Ok(None);
            };
            let start = segment.time_lookup_start(timestamp).max(state.log_start_offset);
            (segment.slice_from(start), start, state.log_end_offset)
        };
        let mut offset = start_offset;
        let mut scratch = Vec::new();
        loop {
            let read = slice.read(offset, 1 << 20, upper).map_err(|e| self.slice_error(e))?;
            let Some(next) = read.next_offset else { return Ok(None) };
            for batch in BatchIter::new(&read.bytes) {
                let batch = batch
                    .map_err(|source| LogError::InvalidRecord { tp: self.tp.clone(), source })?;
                let h = batch.header();
                if h.attributes.is_control() || h.max_timestamp < timestamp {
                    continue;
                }
                for record in batch
                    .records(&mut scratch)
                    .map_err(|source| LogError::InvalidRecord { tp: self.tp.clone(), source })?
                {
                    let record = record.map_err(|source| LogError::InvalidRecord {
                        tp: self.tp.clone(),
                        source,
                    })?;
                    if record.timestamp >= timestamp && record.offset >= start_offset {
                        return Ok(Some(TimestampAndOffset {
                            timestamp: record.timestamp,
                            offset: record.offset,
                        }));
                    }
                }
            }
            offset = next;
        }
    }

    /// The record with the largest timestamp (Kafka's `MAX_TIMESTAMP` list-offsets spec,
    /// KIP-734): its offset is the base offset of the batch holding it.
    pub fn max_timestamp_offset(&self) -> Option<TimestampAndOffset> {
        let state = self.state.lock();
        state
            .segments
            .values()
            .filter(|s| s.max_timestamp() >= 0)
            .max_by_key(|s| s.max_timestamp())
            .map(|s| TimestampAndOffset {
                timestamp: s.max_timestamp(),
                offset: s.offset_of_max_timestamp(),
            })
    }

    /// Moves the log start offset forward (Kafka's `DeleteRecords`): offsets below it become
    /// unreadable, and segments entirely below it are deleted by the next retention pass.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64> {
        let mut state = self.state.lock();
        if offset > state.log_end_offset {
            return Err(LogError::OffsetOutOfRange {
                tp: self.tp.clone(),
                offset,
                log_start_offset: state.log_start_offset,
                log_end_offset: state.log_end_offset,
            });
        }
        state.log_start_offset = state.log_start_offset.max(offset);
        self.metrics.publish(&state.offsets(state.size_in_bytes()));
        Ok(state.log_start_offset)
    }

    /// Deletes closed segments that retention (`retention.ms`, `retention.bytes`) or the log
    /// start offset no longer needs, oldest first, as Kafka does: whole segments only.
    pub fn enforce_retention(&self) -> Result<RetentionResult> {
        let _maintenance = self.maintenance_lock.lock();
        let config = self.config();
        let now = self.clock.now_ms();
        let deletes = config.cleanup_policy.deletes();
        let mut deleted = Vec::new();
        let result = {
            let mut state = self.state.lock();
            if state.closed {
                return Err(LogError::Closed);
            }
            let expired = |s: &LogSegment| {
                deletes
                    && config
                        .retention_ms
                        .is_some_and(|r| s.max_timestamp() >= 0 && now - s.max_timestamp() > r)
            };
            // An expired active segment is rolled so that it can go too (Kafka does the same).
            if state.segments.values().all(expired) && state.active().size() > 0 {
                self.roll_locked(&mut state, now)?;
            }
            let mut excess = match config.retention_bytes {
                Some(limit) if deletes => state.size_in_bytes() as i64 - limit as i64,
                _ => 0,
            };
            let active_base = state.active_base();
            let log_start = state.log_start_offset;
            let mut to_delete = Vec::new();
            for segment in state.segments.values() {
                if segment.base_offset() == active_base {
                    break;
                }
                let by_size = excess - segment.size() as i64 >= 0;
                if expired(segment) || by_size || segment.next_offset() <= log_start {
                    excess -= segment.size() as i64;
                    to_delete.push(segment.base_offset());
                } else {
                    break;
                }
            }
            for base in to_delete {
                if let Some(segment) = state.segments.remove(&base) {
                    deleted.push(segment);
                }
            }
            let first = state.segments.keys().next().copied().unwrap_or(state.log_end_offset);
            state.log_start_offset = state.log_start_offset.max(first);
            state.cleaner_offset = state.cleaner_offset.max(state.log_start_offset);
            self.metrics.publish(&state.offsets(state.size_in_bytes()));
            RetentionResult {
                segments_deleted: deleted.len(),
                bytes_deleted: deleted.iter().map(|s| s.size() as u64).sum(),
                log_start_offset: state.log_start_offset,
            }
        };
        for segment in &deleted {
            segment
                .delete_files()
                .map_err(|e| LogError::io("delete segment", segment.log_path(), e))?;
        }
        if !deleted.is_empty() {
            self.delete_old_snapshots(result.log_start_offset)?;
            self.write_checkpoint_if_changed()?;
            tracing::info!(partition = %self.tp, segments = result.segments_deleted, bytes = result.bytes_deleted, log_start_offset = result.log_start_offset, "retention deleted segments");
        }
        Ok(result)
    }

    /// Deletes producer snapshots below the log start offset, keeping the newest of them.
    fn delete_old_snapshots(&self, log_start_offset: i64) -> Result<()> {
        let snapshots =
            list_snapshots(&self.dir).map_err(|e| LogError::io("list snapshots", &self.dir, e))?;
        let below: Vec<_> = snapshots.iter().filter(|(o, _)| *o < log_start_offset).collect();
        for (_, path) in below.iter().rev().skip(1) {
            std::fs::remove_file(path).map_err(|e| LogError::io("remove snapshot", path, e))?;
        }
        Ok(())
    }

    /// Forgets idle producers (`producer.id.expiration.ms`).
    pub fn expire_producers(&self, expiration_ms: i64) {
        let cutoff = self.clock.now_ms() - expiration_ms;
        self.state.lock().producers.expire(cutoff);
    }

    /// Flushes everything, writes indexes, a producer snapshot and the checkpoint, and refuses
    /// further appends. Returns the log end offset.
    pub fn close(&self) -> Result<i64> {
        self.flush()?;
        let end = {
            let mut state = self.state.lock();
            if state.closed {
                return Ok(state.log_end_offset);
            }
            state.closed = true;
            for segment in state.segments.values_mut() {
                segment
                    .persist_indexes()
                    .map_err(|e| LogError::io("write index", segment.index_path(), e))?;
            }
            let snapshot_exists =
                self.dir.join(file_name(state.log_end_offset, SNAPSHOT_SUFFIX)).exists();
            if !snapshot_exists {
                state
                    .producers
                    .write_snapshot(&self.dir)
                    .map_err(|e| LogError::io("write producer snapshot", &self.dir, e))?;
            }
            state.log_end_offset
        };
        self.write_checkpoint_if_changed()?;
        Ok(end)
    }

    /// Deletes the partition's directory. The log must be closed first.
    pub fn delete_dir(&self) -> Result<()> {
        std::fs::remove_dir_all(&self.dir)
            .map_err(|e| LogError::io("delete directory", &self.dir, e))
    }
}

/// Records at or after `offset` in the data batches of a read: what the reader gets, not the
/// head of a first batch it skips. Under compaction a batch has gaps, so for a batch that
/// starts below `offset` this is an upper bound.
fn fetched_records(offset: i64, batches: &[u8]) -> u64 {
    let mut records = 0;
    // Every batch of a read passed its CRC check: the headers parse.
    for batch in BatchIter::new(batches).map_while(|b| b.ok()) {
        let h = batch.header();
        if h.attributes.is_control() {
            continue;
        }
        let count = i64::from(h.records_count);
        records += if h.base_offset >= offset {
            count
        } else {
            (h.last_offset() - offset + 1).clamp(0, count)
        } as u64;
    }
    records
}

/// Decodes the marker of a control batch.
fn decode_marker(bytes: &[u8]) -> std::result::Result<Option<EndTxnMarker>, RecordError> {
    let batch = RecordBatch::parse(bytes)?;
    let mut scratch = Vec::new();
    let mut records = batch.records(&mut scratch)?;
    match records.next() {
        Some(record) => Ok(Some(EndTxnMarker::from_record(&record?)?)),
        None => Ok(None),
    }
}

/// Re-encodes a batch with another codec, keeping every header field and record.
fn recompress(
    batch: &RecordBatch<'_>,
    codec: crate::record::Compression,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> std::result::Result<(), RecordError> {
    let h = batch.header();
    let mut builder = RecordBatchBuilder::new(BatchOptions {
        compression: codec,
        timestamp_type: h.attributes.timestamp_type(),
        base_offset: h.base_offset,
        producer_id: h.producer_id,
        producer_epoch: h.producer_epoch,
        base_sequence: h.base_sequence,
        transactional: h.attributes.is_transactional(),
        control: h.attributes.is_control(),
        partition_leader_epoch: h.partition_leader_epoch,
        delete_horizon_ms: h.attributes.has_delete_horizon().then_some(h.base_timestamp),
    });
    for record in batch.records(scratch)? {
        let r = record?;
        builder.append_with_offset_delta(
            (r.offset - h.base_offset) as i32,
            r.timestamp,
            r.key,
            r.value,
            r.headers,
        )?;
    }
    builder.set_last_offset_delta(h.last_offset_delta);
    builder.build_into(out)
}
