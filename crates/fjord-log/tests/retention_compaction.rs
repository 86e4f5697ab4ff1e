//! Retention by time, size and log start offset; compaction keeping exactly the newest value
//! per key without changing offsets; tombstones going after `delete.retention.ms`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use fjord_log::clock::ManualClock;
use fjord_log::config::{CleanupPolicy, TopicConfig};
use fjord_log::record::{Compression, RecordBatchBuilder};
use fjord_log::{CleanerConfig, FetchIsolation, LogError, PartitionLog};
use proptest::prelude::*;

fn fill(log: &PartitionLog, batches: u64, ts: impl Fn(u64) -> i64) {
    for i in 0..batches {
        log.append(&mut batch(i * 10, 10, ts(i), Compression::None)).unwrap();
    }
}

#[test]
fn retention_ms_deletes_whole_expired_segments_and_moves_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let config =
        Arc::new(TopicConfig { retention_ms: Some(60_000), ..(*small_segments(1024)).clone() });
    let (log, _) = open_partition(dir.path(), config, clock.clone());
    // Old records first, then recent ones.
    fill(&log, 20, |i| if i < 10 { 1_000 } else { 1_000_000 });
    let segments_before = log.segment_count();
    let result = log.enforce_retention().unwrap();
    assert!(result.segments_deleted > 0);
    assert_eq!(log.segment_count(), segments_before - result.segments_deleted);
    let start = log.log_start_offset();
    assert_eq!(start, result.log_start_offset);
    assert!(start > 0 && start <= 100, "only segments of old records go: start {start}");
    assert!(matches!(
        log.read(0, 100, FetchIsolation::HighWatermark),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&log, start).len() as i64, 200 - start);
    // When everything expires, the active segment is rolled and goes too; offsets continue.
    clock.advance(10_000_000);
    log.enforce_retention().unwrap();
    assert_eq!(log.log_start_offset(), 200);
    assert_eq!(log.log_end_offset(), 200);
    assert_eq!(log.append(&mut batch(0, 1, 0, Compression::None)).unwrap().first_offset, 200);
}

#[test]
fn retention_bytes_keeps_the_newest_segments_within_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(TopicConfig {
        retention_bytes: Some(3000),
        retention_ms: None,
        ..(*small_segments(1024)).clone()
    });
    let (log, _) = open_partition(dir.path(), config, ManualClock::new(0));
    fill(&log, 60, |_| 0);
    let before = log.size_in_bytes();
    let result = log.enforce_retention().unwrap();
    assert!(result.segments_deleted > 0);
    assert!(log.size_in_bytes() <= 3000 + 1024, "{} bytes left", log.size_in_bytes());
    assert_eq!(before - result.bytes_deleted, log.size_in_bytes());
    assert_eq!(log.log_end_offset(), 600);
}

#[test]
fn delete_records_moves_the_log_start_and_retention_drops_segments_below_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(TopicConfig { retention_ms: None, ..(*small_segments(1024)).clone() });
    let (log, _) = open_partition(dir.path(), config.clone(), ManualClock::new(0));
    fill(&log, 40, |_| 0);
    assert_eq!(log.delete_records_before(250).unwrap(), 250);
    assert!(matches!(
        log.read(249, 100, FetchIsolation::HighWatermark),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&log, 250).first().unwrap().0, 250);
    log.enforce_retention().unwrap();
    assert!(log.segment_base_offsets()[0] <= 250);
    assert!(log.segment_base_offsets()[0] > 0);
    // The log start survives a restart.
    log.close().unwrap();
    drop(log);
    let (log, _) = open_partition(dir.path(), config, ManualClock::new(0));
    assert_eq!(log.log_start_offset(), 250);
}

fn compacted_config(delete_retention_ms: i64) -> Arc<TopicConfig> {
    Arc::new(TopicConfig {
        cleanup_policy: CleanupPolicy::COMPACT,
        delete_retention_ms,
        min_cleanable_dirty_ratio: 0.0,
        ..(*small_segments(1024)).clone()
    })
}

/// Everything readable as key -> (offset, value).
fn readable(log: &PartitionLog) -> Vec<(i64, Vec<u8>, Option<Vec<u8>>)> {
    read_all(log, log.log_start_offset()).into_iter().map(|(o, k, v)| (o, k.unwrap(), v)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// After compaction, exactly the newest record of each key remains in the cleaned range, at
    /// its original offset, and the active segment is untouched.
    #[test]
    fn compaction_keeps_exactly_the_newest_value_per_key(
        ops in prop::collection::vec((0u8..30, prop::option::weighted(0.85, 0u32..1000)), 50..600),
        codec in prop::sample::select(Compression::ALL.to_vec()),
        max_keys in prop::sample::select(vec![8usize, 1_000_000]),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(0);
        let (log, _) = open_partition(dir.path(), compacted_config(1_000_000), clock.clone());
        let mut written = Vec::new();
        for chunk in ops.chunks(7) {
            let mut b = RecordBatchBuilder::new(fjord_log::record::BatchOptions { compression: codec, ..Default::default() });
            for (key, value) in chunk {
                let k = format!("key-{key}");
                let v = value.map(|v| format!("value-{v}"));
                b.append(0, Some(k.as_bytes()), v.as_deref().map(str::as_bytes), &[]);
                written.push((k.into_bytes(), v.map(String::into_bytes)));
            }
            log.append(&mut b.build().unwrap()).unwrap();
        }
        // Clean until nothing is left to do (several passes when the map is small).
        let cleaner = CleanerConfig { max_keys };
        for _ in 0..100 {
            if log.compact(&cleaner).unwrap().is_none() { break; }
        }
        // The active segment is never cleaned, so "newest" is judged within the cleaned range.
        let active = *log.segment_base_offsets().last().unwrap();
        let mut newest: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
        let mut newest_cleaned: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
        for (offset, (key, _)) in written.iter().enumerate() {
            newest.insert(key.clone(), offset as i64);
            if (offset as i64) < active {
                newest_cleaned.insert(key.clone(), offset as i64);
            }
        }
        let survivors = readable(&log);
        for (offset, key, value) in &survivors {
            // Offsets never change: the record at an offset is the one written there.
            prop_assert_eq!(&written[*offset as usize].0, key);
            prop_assert_eq!(&written[*offset as usize].1, value);
            if *offset < active {
                prop_assert_eq!(newest_cleaned[key], *offset, "superseded record survived at {}", offset);
            }
        }
        // Every key's newest record survives (tombstones too, until their horizon).
        let surviving: std::collections::HashSet<i64> = survivors.iter().map(|s| s.0).collect();
        for (key, offset) in &newest {
            prop_assert!(surviving.contains(offset), "newest record of {:?} at {} is gone", key, offset);
        }
        // Offsets still increase and reading from any offset works.
        prop_assert!(survivors.windows(2).all(|w| w[0].0 < w[1].0));
        prop_assert_eq!(log.log_end_offset(), written.len() as i64);
    }
}

#[test]
fn tombstones_are_removed_after_delete_retention_ms_but_not_before() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let (log, _) = open_partition(dir.path(), compacted_config(60_000), clock.clone());
    log.append(&mut keyed_batch(&[("a", Some("1")), ("b", Some("1"))], 0)).unwrap();
    log.append(&mut keyed_batch(&[("a", None)], 0)).unwrap();
    log.roll().unwrap();
    log.append(&mut keyed_batch(&[("c", Some("1"))], 0)).unwrap();
    let cleaner = CleanerConfig::default();
    let first = log.compact(&cleaner).unwrap().unwrap();
    assert_eq!(first.records_superseded, 1);
    let keys: Vec<_> = readable(&log).into_iter().map(|(o, k, v)| (o, k, v.is_some())).collect();
    assert_eq!(
        keys,
        vec![(1, b"b".to_vec(), true), (2, b"a".to_vec(), false), (3, b"c".to_vec(), true)],
        "the tombstone stays until its horizon"
    );
    // Not yet past the horizon: a new pass keeps it.
    log.roll().unwrap();
    clock.advance(59_000);
    log.append(&mut keyed_batch(&[("d", Some("1"))], 0)).unwrap();
    log.roll().unwrap();
    log.compact(&cleaner).unwrap();
    assert!(readable(&log).iter().any(|(_, k, v)| k == b"a" && v.is_none()));
    // Past the horizon: it goes.
    clock.advance(2_000);
    log.append(&mut keyed_batch(&[("e", Some("1"))], 0)).unwrap();
    log.roll().unwrap();
    let result = log.compact(&cleaner).unwrap().unwrap();
    assert_eq!(result.tombstones_removed, 1);
    assert!(!readable(&log).iter().any(|(_, k, _)| k == b"a"));
}

#[test]
fn compaction_survives_a_restart_and_leftover_cleaned_files_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let config = compacted_config(1_000_000);
    {
        let (log, _) = open_partition(dir.path(), config.clone(), clock.clone());
        for round in 0..20 {
            let value = format!("{round}");
            log.append(&mut keyed_batch(&[("x", Some(&value)), ("y", Some(&value))], 0)).unwrap();
        }
        log.roll().unwrap();
        log.compact(&CleanerConfig::default()).unwrap().unwrap();
        log.close().unwrap();
    }
    std::fs::write(dir.path().join(format!("{:020}.log.cleaned", 0)), b"partial").unwrap();
    let (log, report) = open_partition(dir.path(), config, clock);
    assert!(report.truncations.is_empty(), "{report:?}");
    assert!(!dir.path().join(format!("{:020}.log.cleaned", 0)).exists());
    assert_eq!(
        readable(&log).into_iter().map(|(o, _, v)| (o, v.unwrap())).collect::<Vec<_>>(),
        vec![(38, b"19".to_vec()), (39, b"19".to_vec())]
    );
    assert!(log.dirty_ratio() == 0.0);
}
