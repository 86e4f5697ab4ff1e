//! Helpers shared by the log's integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use fjord_log::clock::ManualClock;
use fjord_log::config::TopicConfig;
use fjord_log::record::{BatchIter, BatchOptions, Compression, RecordBatchBuilder};
use fjord_log::{LogManager, LogManagerConfig, PartitionLog, TopicPartition};

/// A batch of `n` records with keys `k{i}` and values `v{first+i}` and timestamps `ts + i`.
pub fn batch(first: u64, n: u64, ts: i64, compression: Compression) -> Vec<u8> {
    let mut b = RecordBatchBuilder::new(BatchOptions { compression, ..BatchOptions::default() });
    for i in 0..n {
        let key = format!("k{}", first + i);
        let value = format!("v{}", first + i);
        b.append(ts + i as i64, Some(key.as_bytes()), Some(value.as_bytes()), &[]);
    }
    b.build().unwrap()
}

/// A batch with explicit key/value pairs (value `None` is a tombstone).
pub fn keyed_batch(records: &[(&str, Option<&str>)], ts: i64) -> Vec<u8> {
    let mut b = RecordBatchBuilder::new(BatchOptions::default());
    for (i, (k, v)) in records.iter().enumerate() {
        b.append(ts + i as i64, Some(k.as_bytes()), v.map(str::as_bytes), &[]);
    }
    b.build().unwrap()
}

/// A record as (offset, key, value).
pub type Rec = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

/// Every record in a buffer of batches as (offset, key, value), skipping control batches and
/// records below `from`.
pub fn records(bytes: &[u8], from: i64) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    for batch in BatchIter::new(bytes) {
        let batch = batch.unwrap();
        batch.validate_crc().unwrap();
        if batch.header().attributes.is_control() {
            continue;
        }
        for r in batch.records(&mut scratch).unwrap() {
            let r = r.unwrap();
            if r.offset >= from {
                out.push((r.offset, r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec)));
            }
        }
    }
    out
}

/// Reads every record of a partition from `from` to its high watermark.
pub fn read_all(log: &PartitionLog, from: i64) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let data = log.read(offset, 64 * 1024, fjord_log::FetchIsolation::HighWatermark).unwrap();
        let Some(next) = data.next_offset else { break };
        out.extend(records(&data.records, offset));
        offset = next;
    }
    out
}

/// A topic config with small segments for tests.
pub fn small_segments(segment_bytes: u32) -> Arc<TopicConfig> {
    Arc::new(TopicConfig { segment_bytes, index_interval_bytes: 256, ..TopicConfig::default() })
}

/// Opens a partition in `dir` with a manual clock.
pub fn open_partition(
    dir: &std::path::Path,
    config: Arc<TopicConfig>,
    clock: Arc<ManualClock>,
) -> (PartitionLog, fjord_log::RecoveryReport) {
    PartitionLog::open(dir, TopicPartition::new("t", 0), config, clock).unwrap()
}

/// A log manager without a background thread, on a manual clock.
pub fn manager(dir: &std::path::Path, clock: Arc<ManualClock>) -> LogManager {
    let config = LogManagerConfig { background: false, clock, ..LogManagerConfig::default() };
    LogManager::open(dir, config).unwrap().0
}

/// Config overrides from pairs.
pub fn overrides(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}
