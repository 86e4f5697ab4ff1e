//! Log compaction for `cleanup.policy=compact` (Kafka's `LogCleaner`): keep the newest record
//! of every key, drop tombstones once `delete.retention.ms` has passed since the cleaner first
//! kept them, and never change an offset.
//!
//! One pass:
//! 1. Under the partition lock, pick the cleanable range: from the log start to the first
//!    segment that is active, newer than `min.compaction.lag.ms`, or holds an open transaction.
//!    The dirty section is the part of it after the cleaner checkpoint.
//! 2. Without the lock, build a map from key hash (128-bit xxh3) to the newest offset of that
//!    key in the dirty section. The map holds at most `max_keys` entries; a dirty section with
//!    more keys is cleaned in several passes, as Kafka does.
//! 3. Without the lock, rewrite every segment of the cleanable range into `<name>.log.cleaned`,
//!    keeping a record only if it is the newest of its key (or its key is not in the map),
//!    dropping records of aborted transactions, and dropping tombstones past their delete
//!    horizon (KIP-534: the horizon is stamped in the batch the first time a tombstone is kept).
//!    Batches keep their base offset, last offset delta and producer fields.
//! 4. Under the lock, swap each cleaned file in: delete the old indexes, rename the cleaned file
//!    over the old log file (atomic), fsync the directory, and reopen the segment, rebuilding
//!    its indexes. A crash at any point leaves either the old or the new segment: a leftover
//!    `.cleaned` file is deleted on open and a missing index is rebuilt.
//!
//! Cleaned segments are not merged, so a heavily compacted log keeps one small segment per
//! original segment.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;

use xxhash_rust::xxh3::xxh3_128;

use super::{LogError, PartitionLog, Result};
use crate::producer_state::AbortedTxn;
use crate::record::{BatchIter, BatchOptions, RecordBatch, RecordBatchBuilder, RecordError};
use crate::segment::{LogSegment, SegmentSlice};

/// Settings of the log cleaner.
#[derive(Debug, Clone, Copy)]
pub struct CleanerConfig {
    /// Most distinct keys one pass maps (Kafka sizes this by `log.cleaner.dedupe.buffer.size`;
    /// an entry here costs about 40 bytes).
    pub max_keys: usize,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        CleanerConfig { max_keys: 4 * 1024 * 1024 }
    }
}

/// What one compaction pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanResult {
    /// Segments rewritten.
    pub segments_cleaned: usize,
    /// Their bytes before.
    pub bytes_before: u64,
    /// Their bytes after.
    pub bytes_after: u64,
    /// Records dropped because a newer record has the same key.
    pub records_superseded: u64,
    /// Tombstones dropped past their delete horizon.
    pub tombstones_removed: u64,
    /// Records of aborted transactions dropped.
    pub aborted_records_removed: u64,
    /// The new cleaner checkpoint: where the next pass's dirty section starts.
    pub cleaned_up_to: i64,
}

struct CleanPlan {
    segments: Vec<(i64, SegmentSlice)>,
    first_dirty: i64,
    end: i64,
    aborted: Vec<AbortedTxn>,
}

impl PartitionLog {
    /// The share of the cleanable bytes that lie after the cleaner checkpoint (Kafka's dirty
    /// ratio); compaction runs when it reaches `min.cleanable.dirty.ratio`.
    pub fn dirty_ratio(&self) -> f64 {
        let state = self.state.lock();
        let active = state.active_base();
        let (mut clean, mut dirty) = (0u64, 0u64);
        for segment in state.segments.values().filter(|s| s.base_offset() < active) {
            if segment.base_offset() >= state.cleaner_offset {
                dirty += segment.size() as u64;
            } else {
                clean += segment.size() as u64;
            }
        }
        if clean + dirty == 0 { 0.0 } else { dirty as f64 / (clean + dirty) as f64 }
    }

    /// Whether the log cleaner should compact this partition now: compaction is on and the
    /// dirty ratio reached `min.cleanable.dirty.ratio`, or dirty data is older than
    /// `max.compaction.lag.ms`.
    pub fn needs_compaction(&self) -> bool {
        let config = self.config();
        if !config.cleanup_policy.compacts() {
            return false;
        }
        if self.dirty_ratio() >= config.min_cleanable_dirty_ratio && self.dirty_ratio() > 0.0 {
            return true;
        }
        let now = self.clock.now_ms();
        let state = self.state.lock();
        let active = state.active_base();
        state.segments.values().any(|s| {
            s.base_offset() >= state.cleaner_offset
                && s.base_offset() < active
                && s.max_timestamp() >= 0
                && now.saturating_sub(s.max_timestamp()) > config.max_compaction_lag_ms
        })
    }

    fn plan_clean(&self, now: i64) -> Option<CleanPlan> {
        let config = self.config();
        let state = self.state.lock();
        let active = state.active_base();
        let lso = state.last_stable_offset();
        let mut end = state.log_start_offset;
        let mut segments = Vec::new();
        for segment in state.segments.values() {
            let too_new = config.min_compaction_lag_ms > 0
                && (segment.max_timestamp() < 0
                    || now.saturating_sub(segment.max_timestamp()) < config.min_compaction_lag_ms);
            if segment.base_offset() >= active || segment.next_offset() > lso || too_new {
                break;
            }
            segments.push((segment.base_offset(), segment.slice_all()));
            end = segment.next_offset();
        }
        let first_dirty = state.cleaner_offset.max(state.log_start_offset);
        if segments.is_empty() || first_dirty >= end {
            return None;
        }
        drop(state);
        let aborted = self.collect_aborted_txns(i64::MIN, end);
        Some(CleanPlan { segments, first_dirty, end, aborted })
    }

    /// Runs one compaction pass (see the module docs). Returns `None` when there is nothing
    /// cleanable.
    pub fn compact(&self, cleaner: &CleanerConfig) -> Result<Option<CleanResult>> {
        let _maintenance = self.maintenance_lock.lock();
        let config = self.config();
        let now = self.clock.now_ms();
        let Some(mut plan) = self.plan_clean(now) else { return Ok(None) };
        let corrupt = |e: RecordError, slice: &SegmentSlice| LogError::Corrupt {
            tp: self.tp.clone(),
            path: slice.path().to_path_buf(),
            position: 0,
            source: e,
        };

        // 2. The offset map of the dirty section.
        let mut map: HashMap<u128, i64> = HashMap::new();
        let mut scratch = Vec::new();
        let mut map_end = plan.end;
        'segments: for (_, slice) in &plan.segments {
            let bytes = self.read_slice(slice)?;
            let mut segment_end = None;
            for batch in BatchIter::new(&bytes) {
                let batch = batch.map_err(|e| corrupt(e, slice))?;
                let h = *batch.header();
                segment_end = Some(h.next_offset());
                if h.last_offset() < plan.first_dirty || h.attributes.is_control() {
                    continue;
                }
                for record in batch.records(&mut scratch).map_err(|e| corrupt(e, slice))? {
                    let record = record.map_err(|e| corrupt(e, slice))?;
                    if record.offset < plan.first_dirty
                        || is_aborted(&plan.aborted, h.producer_id, record.offset)
                    {
                        continue;
                    }
                    if let Some(key) = record.key {
                        map.insert(xxh3_128(key), record.offset);
                    }
                }
            }
            if map.len() >= cleaner.max_keys {
                // Stop at this segment's end; the next pass continues from there.
                map_end = segment_end.unwrap_or(plan.end);
                break 'segments;
            }
        }
        plan.end = map_end;
        plan.segments.retain(|(base, _)| *base < map_end);

        // 3. Rewrite, 4. swap.
        let delete_horizon = now.saturating_add(config.delete_retention_ms);
        let mut result = CleanResult { cleaned_up_to: plan.end, ..CleanResult::default() };
        for (base, slice) in &plan.segments {
            let bytes = self.read_slice(slice)?;
            let mut out = Vec::with_capacity(bytes.len() / 2);
            let mut builder = RecordBatchBuilder::new(BatchOptions::default());
            for batch in BatchIter::new(&bytes) {
                let batch = batch.map_err(|e| corrupt(e, slice))?;
                clean_batch(
                    &batch,
                    &map,
                    &plan.aborted,
                    now,
                    delete_horizon,
                    &mut builder,
                    &mut scratch,
                    &mut out,
                    &mut result,
                )
                .map_err(|e| corrupt(e, slice))?;
            }
            result.segments_cleaned += 1;
            result.bytes_before += bytes.len() as u64;
            result.bytes_after += out.len() as u64;
            self.swap_in_cleaned(*base, slice, &out)?;
        }
        let mut state = self.state.lock();
        state.cleaner_offset = state.cleaner_offset.max(plan.end);
        self.metrics.publish(&state.offsets(state.size_in_bytes()));
        drop(state);
        self.write_checkpoint_if_changed()?;
        tracing::info!(partition = %self.tp, ?result, "compacted");
        Ok(Some(result))
    }

    fn read_slice(&self, slice: &SegmentSlice) -> Result<Vec<u8>> {
        slice.read_all().map_err(|e| self.slice_error(e))
    }

    /// Writes the cleaned bytes beside the segment and swaps them in.
    fn swap_in_cleaned(&self, base: i64, slice: &SegmentSlice, bytes: &[u8]) -> Result<()> {
        let log_path = slice.path().to_path_buf();
        let cleaned_path = log_path.with_extension("log.cleaned");
        {
            let mut file = File::create(&cleaned_path)
                .map_err(|e| LogError::io("create", &cleaned_path, e))?;
            file.write_all(bytes).map_err(|e| LogError::io("write", &cleaned_path, e))?;
            file.sync_all().map_err(|e| LogError::io("fsync", &cleaned_path, e))?;
        }
        let interval = self.config().index_interval_bytes;
        let now = self.clock.now_ms();
        let mut state = self.state.lock();
        let Some(old) = state.segments.get(&base) else {
            // Deleted meanwhile (retention runs under the same maintenance lock, so only a
            // close can get here): drop the cleaned file.
            std::fs::remove_file(&cleaned_path)
                .map_err(|e| LogError::io("remove", &cleaned_path, e))?;
            return Ok(());
        };
        // Old indexes first: a crash after the rename must not leave them pointing into the
        // new file. A missing index is rebuilt on open.
        for path in [old.index_path(), old.time_index_path()] {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(LogError::io("remove index", path, e));
                }
                _ => {}
            }
        }
        std::fs::rename(&cleaned_path, &log_path)
            .map_err(|e| LogError::io("rename", &cleaned_path, e))?;
        crate::checkpoint::sync_dir(&self.dir)
            .map_err(|e| LogError::io("fsync directory", &self.dir, e))?;
        let (mut segment, invalid) = LogSegment::open_and_recover(
            &self.dir, base, interval, now, false, false,
        )
        .map_err(|e| {
            LogError::io("reopen cleaned segment", &log_path, std::io::Error::other(e.to_string()))
        })?;
        if let Some(invalid) = invalid {
            return Err(LogError::Corrupt {
                tp: self.tp.clone(),
                path: log_path,
                position: invalid.position,
                source: RecordError::MalformedRecord("cleaned segment failed validation"),
            });
        }
        segment.load_txn_index().map_err(|e| {
            LogError::io(
                "load transaction index",
                segment.txn_index_path(),
                std::io::Error::other(e.to_string()),
            )
        })?;
        state.segments.insert(base, segment);
        Ok(())
    }
}

fn is_aborted(aborted: &[AbortedTxn], producer_id: i64, offset: i64) -> bool {
    producer_id >= 0
        && aborted.iter().any(|t| {
            t.producer_id == producer_id && t.first_offset <= offset && offset < t.last_offset
        })
}

/// Appends the retained part of one batch to `out`: the batch as it is if everything stays
/// and no tombstone needs a delete horizon, a rebuilt batch if some records go, nothing if all
/// do.
#[allow(clippy::too_many_arguments)]
fn clean_batch(
    batch: &RecordBatch<'_>,
    map: &HashMap<u128, i64>,
    aborted: &[AbortedTxn],
    now: i64,
    delete_horizon: i64,
    builder: &mut RecordBatchBuilder,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
    result: &mut CleanResult,
) -> std::result::Result<(), RecordError> {
    let h = *batch.header();
    if h.attributes.is_control() {
        // Markers stay: they delimit transactions for read_committed readers.
        out.extend_from_slice(batch.as_bytes());
        return Ok(());
    }
    let existing_horizon = h.attributes.has_delete_horizon().then_some(h.base_timestamp);
    let keep = |offset: i64, key: Option<&[u8]>, value: Option<&[u8]>| -> Keep {
        if is_aborted(aborted, h.producer_id, offset) {
            return Keep::Aborted;
        }
        if let Some(key) = key
            && map.get(&xxh3_128(key)).is_some_and(|&newest| newest > offset)
        {
            return Keep::Superseded;
        }
        if value.is_none() && existing_horizon.is_some_and(|horizon| now > horizon) {
            return Keep::ExpiredTombstone;
        }
        Keep::Yes
    };
    let mut all_kept = true;
    let mut has_tombstone = false;
    let mut keeps_tombstone = false;
    for record in batch.records(scratch)? {
        let r = record?;
        let kept = keep(r.offset, r.key, r.value) == Keep::Yes;
        all_kept &= kept;
        has_tombstone |= r.value.is_none();
        keeps_tombstone |= kept && r.value.is_none();
    }
    if all_kept && (!has_tombstone || existing_horizon.is_some()) {
        out.extend_from_slice(batch.as_bytes());
        return Ok(());
    }
    builder.reset();
    builder.set_options(BatchOptions {
        compression: batch.compression()?,
        timestamp_type: h.attributes.timestamp_type(),
        base_offset: h.base_offset,
        producer_id: h.producer_id,
        producer_epoch: h.producer_epoch,
        base_sequence: h.base_sequence,
        transactional: h.attributes.is_transactional(),
        control: false,
        partition_leader_epoch: h.partition_leader_epoch,
        // The first pass that keeps a tombstone stamps when it may go (KIP-534).
        delete_horizon_ms: keeps_tombstone.then(|| existing_horizon.unwrap_or(delete_horizon)),
    });
    for record in batch.records(scratch)? {
        let r = record?;
        match keep(r.offset, r.key, r.value) {
            Keep::Yes => builder.append_with_offset_delta(
                (r.offset - h.base_offset) as i32,
                r.timestamp,
                r.key,
                r.value,
                r.headers,
            )?,
            Keep::Superseded => result.records_superseded += 1,
            Keep::ExpiredTombstone => result.tombstones_removed += 1,
            Keep::Aborted => result.aborted_records_removed += 1,
        }
    }
    if builder.is_empty() {
        return Ok(());
    }
    builder.set_last_offset_delta(h.last_offset_delta);
    builder.build_into(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    Yes,
    Superseded,
    ExpiredTombstone,
    Aborted,
}
