//! A partition's metrics against what the partition itself reports: counts of appends and
//! reads (a read from inside a batch counts only what the reader gets), and gauges that
//! follow rolls, retention, delete-records and compaction; handles registered again when a
//! recorder is installed after the partition opened.
//!
//! The recorders here are thread-local (`metrics::with_local_recorder`), so nothing is
//! process-wide but the generation that `recorder_installed` bumps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use fjord_log::clock::ManualClock;
use fjord_log::config::{CleanupPolicy, TopicConfig};
use fjord_log::record::Compression;
use fjord_log::{CleanerConfig, FetchIsolation, PartitionLog};
use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    with_local_recorder,
};
use parking_lot::Mutex;

/// A recorder that keeps the current value of every counter and gauge.
#[derive(Default)]
struct TestRecorder {
    values: Mutex<HashMap<Key, (bool, Arc<AtomicU64>)>>,
}

impl TestRecorder {
    fn handle(&self, key: &Key, gauge: bool) -> Arc<AtomicU64> {
        self.values.lock().entry(key.clone()).or_insert_with(|| (gauge, Arc::default())).1.clone()
    }

    /// Values of the partition `t-0`, by metric name.
    fn partition_values(&self) -> BTreeMap<String, f64> {
        self.values
            .lock()
            .iter()
            .filter(|(key, _)| {
                let labels: Vec<_> = key.labels().map(|l| (l.key(), l.value())).collect();
                labels == [("topic", "t"), ("partition", "0")]
            })
            .map(|(key, (gauge, value))| {
                let raw = value.load(Ordering::Acquire);
                (key.name().to_string(), if *gauge { f64::from_bits(raw) } else { raw as f64 })
            })
            .collect()
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.handle(key, false))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.handle(key, true))
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// Checks every gauge against the partition's own accessors.
fn assert_gauges_match(recorder: &TestRecorder, log: &PartitionLog) {
    let v = recorder.partition_values();
    assert_eq!(v["fjord_log_start_offset"], log.log_start_offset() as f64);
    assert_eq!(v["fjord_log_end_offset"], log.log_end_offset() as f64);
    assert_eq!(v["fjord_log_high_watermark"], log.high_watermark() as f64);
    assert_eq!(v["fjord_log_last_stable_offset"], log.last_stable_offset() as f64);
    assert_eq!(v["fjord_log_size_bytes"], log.size_in_bytes() as f64);
    assert_eq!(v["fjord_log_segments"], log.segment_count() as f64);
}

#[test]
fn appends_and_reads_are_counted_once_per_batch_and_gauges_follow_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = TestRecorder::default();
    let config = Arc::new(TopicConfig { retention_ms: None, ..(*small_segments(1024)).clone() });
    with_local_recorder(&recorder, || {
        let (log, _) = open_partition(dir.path(), config, ManualClock::new(0));
        assert_gauges_match(&recorder, &log);

        let mut first = batch(0, 5, 0, Compression::None);
        let mut second = batch(5, 5, 0, Compression::Gzip);
        let bytes = (first.len() + second.len()) as f64;
        log.append(&mut first).unwrap();
        log.append(&mut second).unwrap();
        let v = recorder.partition_values();
        assert_eq!(v["fjord_log_append_records_total"], 10.0);
        assert_eq!(v["fjord_log_append_bytes_total"], bytes);
        assert_gauges_match(&recorder, &log);

        // From inside the first batch: both batches come back, 2 + 5 records are new.
        let data = log.read(3, 1 << 20, FetchIsolation::HighWatermark).unwrap();
        let v = recorder.partition_values();
        assert_eq!(v["fjord_log_fetch_records_total"], 7.0);
        assert_eq!(v["fjord_log_fetch_bytes_total"], data.records.len() as f64);
        // A read at the end returns nothing and counts nothing.
        log.read(10, 1 << 20, FetchIsolation::HighWatermark).unwrap();
        assert_eq!(recorder.partition_values()["fjord_log_fetch_records_total"], 7.0);

        // Rolls (by size), delete-records and retention move the gauges.
        for i in 0..20 {
            log.append(&mut batch(10 + i * 10, 10, 0, Compression::None)).unwrap();
        }
        assert!(log.segment_count() > 2);
        assert_eq!(recorder.partition_values()["fjord_log_append_records_total"], 210.0);
        assert_gauges_match(&recorder, &log);
        log.delete_records_before(150).unwrap();
        assert_gauges_match(&recorder, &log);
        let retention = log.enforce_retention().unwrap();
        assert!(retention.segments_deleted > 0);
        assert_gauges_match(&recorder, &log);
        log.roll().unwrap();
        assert_gauges_match(&recorder, &log);
    });
}

#[test]
fn compaction_publishes_the_smaller_size() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = TestRecorder::default();
    let config = Arc::new(TopicConfig {
        cleanup_policy: CleanupPolicy::COMPACT,
        min_cleanable_dirty_ratio: 0.0,
        ..(*small_segments(1024)).clone()
    });
    with_local_recorder(&recorder, || {
        let (log, _) = open_partition(dir.path(), config, ManualClock::new(0));
        for value in ["1", "2", "3", "4"] {
            log.append(&mut keyed_batch(&[("a", Some(value)), ("b", Some(value))], 0)).unwrap();
        }
        log.roll().unwrap();
        log.append(&mut keyed_batch(&[("c", Some("1"))], 0)).unwrap();
        let before = log.size_in_bytes();
        log.compact(&CleanerConfig::default()).unwrap().unwrap();
        assert!(log.size_in_bytes() < before);
        assert_gauges_match(&recorder, &log);
    });
}

#[test]
fn a_recorder_installed_after_the_partition_opened_gets_its_current_values() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments(1024);
    let (log, _) = open_partition(dir.path(), config, ManualClock::new(0));
    log.append(&mut batch(0, 5, 0, Compression::None)).unwrap();
    let recorder = TestRecorder::default();
    with_local_recorder(&recorder, || {
        // Registered under no recorder: nothing reaches this one yet.
        log.append(&mut batch(5, 5, 0, Compression::None)).unwrap();
        assert!(recorder.partition_values().is_empty());
        fjord_log::metrics::recorder_installed();
        // An idle partition: the log manager's background pass does this.
        log.refresh_metrics();
        let v = recorder.partition_values();
        assert_eq!(v["fjord_log_append_records_total"], 0.0, "counters start at installation");
        assert_gauges_match(&recorder, &log);
        log.append(&mut batch(10, 5, 0, Compression::None)).unwrap();
        assert_eq!(recorder.partition_values()["fjord_log_append_records_total"], 5.0);
        assert_gauges_match(&recorder, &log);
    });
}
