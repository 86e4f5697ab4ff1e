//! Appends, reads, offsets, segment rolls, indexes and timestamps of one partition, on real
//! files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use fjord_log::clock::ManualClock;
use fjord_log::config::{CleanupPolicy, TopicCompression, TopicConfig};
use fjord_log::record::{BatchHeader, BatchIter, Compression, TimestampType};
use fjord_log::{FetchIsolation, LogError};

#[test]
fn appends_assign_consecutive_offsets_and_reads_return_them() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000);
    let (log, _) = open_partition(dir.path(), Arc::new(TopicConfig::default()), clock);
    for i in 0..10 {
        let info = log.append(&mut batch(i * 5, 5, 100, Compression::None)).unwrap();
        assert_eq!((info.first_offset, info.last_offset), (i as i64 * 5, i as i64 * 5 + 4));
        assert_eq!(info.record_count, 5);
    }
    assert_eq!(log.log_end_offset(), 50);
    assert_eq!(log.high_watermark(), 50);
    let all = read_all(&log, 0);
    assert_eq!(all.len(), 50);
    for (i, (offset, key, value)) in all.iter().enumerate() {
        assert_eq!(*offset, i as i64);
        assert_eq!(key.as_deref(), Some(format!("k{i}").as_bytes()));
        assert_eq!(value.as_deref(), Some(format!("v{i}").as_bytes()));
    }
}

#[test]
fn a_read_from_inside_a_batch_returns_that_whole_batch_and_respects_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) =
        open_partition(dir.path(), Arc::new(TopicConfig::default()), ManualClock::new(0));
    for i in 0..4 {
        log.append(&mut batch(i * 10, 10, 0, Compression::None)).unwrap();
    }
    let data = log.read(13, 1, FetchIsolation::HighWatermark).unwrap();
    let headers: Vec<BatchHeader> =
        BatchIter::new(&data.records).map(|b| *b.unwrap().header()).collect();
    // max_bytes of 1 still returns one whole batch (KIP-74), the one holding offset 13.
    assert_eq!(headers.len(), 1);
    assert_eq!(headers[0].base_offset, 10);
    assert_eq!(data.next_offset, Some(20));
    let data = log.read(13, 1 << 20, FetchIsolation::HighWatermark).unwrap();
    assert_eq!(BatchIter::new(&data.records).count(), 3);
    // At the end: nothing, no error. Past the end: out of range.
    assert!(log.read(40, 100, FetchIsolation::HighWatermark).unwrap().records.is_empty());
    assert!(matches!(
        log.read(41, 100, FetchIsolation::HighWatermark),
        Err(LogError::OffsetOutOfRange { offset: 41, log_end_offset: 40, .. })
    ));
}

#[test]
fn stored_bytes_are_served_byte_for_byte_except_the_base_offset_and_leader_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) =
        open_partition(dir.path(), Arc::new(TopicConfig::default()), ManualClock::new(0));
    log.append(&mut batch(0, 3, 0, Compression::None)).unwrap();
    let original = batch(3, 7, 50, Compression::Zstd);
    let mut produced = original.clone();
    log.append(&mut produced).unwrap();
    let data = log.read(3, 1 << 20, FetchIsolation::HighWatermark).unwrap();
    assert_eq!(data.records.len(), original.len());
    // Bytes 0..8 are the base offset, 12..16 the leader epoch; everything else is untouched.
    assert_eq!(&data.records[8..12], &original[8..12]);
    assert_eq!(&data.records[16..], &original[16..]);
    assert_eq!(i64::from_be_bytes(data.records[..8].try_into().unwrap()), 3);
}

#[test]
fn every_codec_is_stored_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) =
        open_partition(dir.path(), Arc::new(TopicConfig::default()), ManualClock::new(0));
    let mut next = 0;
    for codec in Compression::ALL {
        log.append(&mut batch(next, 20, 0, codec)).unwrap();
        next += 20;
    }
    let all = read_all(&log, 0);
    assert_eq!(all.len(), 100);
    assert!(all.iter().enumerate().all(|(i, r)| r.0 == i as i64));
}

#[test]
fn topic_compression_type_recompresses_and_log_append_time_stamps() {
    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(TopicConfig {
        compression_type: TopicCompression::Codec(Compression::Lz4),
        message_timestamp_type: TimestampType::LogAppendTime,
        ..TopicConfig::default()
    });
    let (log, _) = open_partition(dir.path(), config, ManualClock::new(777));
    let info = log.append(&mut batch(0, 10, 5, Compression::Gzip)).unwrap();
    assert_eq!(info.log_append_time, 777);
    let data = log.read(0, 1 << 20, FetchIsolation::HighWatermark).unwrap();
    let batch = BatchIter::new(&data.records).next().unwrap().unwrap();
    batch.validate_crc().unwrap();
    assert_eq!(batch.compression().unwrap(), Compression::Lz4);
    assert_eq!(batch.header().attributes.timestamp_type(), TimestampType::LogAppendTime);
    let mut scratch = Vec::new();
    let timestamps: Vec<i64> =
        batch.records(&mut scratch).unwrap().map(|r| r.unwrap().timestamp).collect();
    assert_eq!(timestamps, vec![777; 10]);
}

#[test]
fn bad_batches_are_rejected_with_typed_errors_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(TopicConfig {
        max_message_bytes: 200,
        cleanup_policy: CleanupPolicy::COMPACT,
        ..TopicConfig::default()
    });
    let (log, _) = open_partition(dir.path(), config, ManualClock::new(0));
    // Too large.
    assert!(matches!(
        log.append(&mut batch(0, 50, 0, Compression::None)),
        Err(LogError::RecordBatchTooLarge { max: 200, .. })
    ));
    // Corrupt CRC.
    let mut corrupt = batch(0, 2, 0, Compression::None);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert!(matches!(log.append(&mut corrupt), Err(LogError::InvalidRecord { .. })));
    // Truncated.
    let mut short = batch(0, 2, 0, Compression::None);
    short.truncate(short.len() - 3);
    assert!(matches!(log.append(&mut short), Err(LogError::InvalidRecord { .. })));
    // Null key on a compacted topic.
    let mut b = fjord_log::record::RecordBatchBuilder::new(Default::default());
    b.append(0, None, Some(b"v"), &[]);
    assert!(matches!(log.append(&mut b.build().unwrap()), Err(LogError::RecordRejected { .. })));
    // A control batch from a client.
    let marker = fjord_log::record::EndTxnMarker {
        kind: fjord_log::record::ControlRecordType::Commit,
        coordinator_epoch: 0,
    };
    assert!(matches!(
        log.append(&mut marker.to_batch(1, 0, 0).unwrap()),
        Err(LogError::RecordRejected { .. })
    ));
    // Nothing was written.
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.size_in_bytes(), 0);
}

#[test]
fn segments_roll_by_size_and_by_time_and_reads_cross_them() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let config = Arc::new(TopicConfig {
        segment_bytes: 2048,
        segment_ms: 60_000,
        index_interval_bytes: 100,
        ..TopicConfig::default()
    });
    let (log, _) = open_partition(dir.path(), config, clock.clone());
    for i in 0..80 {
        log.append(&mut batch(i * 5, 5, -1, Compression::None)).unwrap();
    }
    let by_size = log.segment_count();
    assert!(by_size >= 4, "2 KiB segments hold a few batches each; got {by_size}");
    // Time: records without timestamps use the wall clock since the segment was created.
    clock.advance(60_001);
    log.append(&mut batch(400, 1, -1, Compression::None)).unwrap();
    assert_eq!(log.segment_count(), by_size + 1);
    assert_eq!(*log.segment_base_offsets().last().unwrap(), 400);
    assert_eq!(read_all(&log, 0).len(), 401);
    // Reads starting in every segment.
    for base in log.segment_base_offsets() {
        assert_eq!(read_all(&log, base).first().unwrap().0, base);
    }
}

#[test]
fn offsets_are_found_by_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open_partition(dir.path(), small_segments(1024), ManualClock::new(0));
    // Timestamps 1000, 1010, ... one per record, ten records per batch.
    for i in 0..50 {
        let mut b = fjord_log::record::RecordBatchBuilder::new(Default::default());
        for j in 0..10 {
            let n = i * 10 + j;
            b.append(1000 + n * 10, Some(b"k"), Some(b"v"), &[]);
        }
        log.append(&mut b.build().unwrap()).unwrap();
    }
    assert!(log.segment_count() > 3);
    for (target, expected) in [(0, 0), (1000, 0), (1001, 1), (1555, 56), (5990, 499)] {
        let found = log.offset_for_timestamp(target).unwrap().unwrap();
        assert_eq!(found.offset, expected, "timestamp {target}");
        assert!(found.timestamp >= target);
    }
    assert_eq!(log.offset_for_timestamp(5991).unwrap(), None);
    let max = log.max_timestamp_offset().unwrap();
    assert_eq!(max.timestamp, 5990);
    assert_eq!(max.offset, 490, "the base offset of the batch holding the largest timestamp");
}

#[test]
fn reopening_keeps_everything_and_rebuilds_missing_or_corrupt_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let config = small_segments(4096);
    {
        let (log, _) = open_partition(dir.path(), config.clone(), clock.clone());
        for i in 0..100 {
            log.append(&mut batch(i * 3, 3, i as i64, Compression::Snappy)).unwrap();
        }
        log.close().unwrap();
    }
    let mut index_files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "index"))
        .collect();
    index_files.sort();
    assert!(index_files.len() >= 3);
    std::fs::remove_file(&index_files[0]).unwrap();
    std::fs::write(&index_files[1], [0xffu8; 13]).unwrap();
    let (log, report) = open_partition(dir.path(), config, clock);
    assert_eq!(report.indexes_rebuilt.len(), 2, "{report:?}");
    assert!(report.truncations.is_empty());
    assert_eq!(log.log_end_offset(), 300);
    let all = read_all(&log, 0);
    assert_eq!(all.len(), 300);
    for start in [0, 1, 77, 150, 299] {
        assert_eq!(read_all(&log, start).first().unwrap().0, start);
    }
}

#[test]
fn flush_moves_the_recovery_point_and_flush_messages_one_flushes_every_append() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) =
        open_partition(dir.path(), Arc::new(TopicConfig::default()), ManualClock::new(0));
    log.append(&mut batch(0, 5, 0, Compression::None)).unwrap();
    assert_eq!(log.recovery_point(), 0, "left to the OS");
    log.flush().unwrap();
    assert_eq!(log.recovery_point(), 5);

    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(TopicConfig { flush_messages: Some(1), ..TopicConfig::default() });
    let (log, _) = open_partition(dir.path(), config, ManualClock::new(0));
    for i in 0..3 {
        log.append(&mut batch(i * 5, 5, 0, Compression::None)).unwrap();
        assert_eq!(log.recovery_point(), (i as i64 + 1) * 5, "on disk before the append returns");
    }
}

#[test]
fn flush_ms_flushes_when_due() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let config = Arc::new(TopicConfig { flush_ms: Some(100), ..TopicConfig::default() });
    let (log, _) = open_partition(dir.path(), config, clock.clone());
    log.append(&mut batch(0, 5, 0, Compression::None)).unwrap();
    log.flush_if_due().unwrap();
    assert_eq!(log.recovery_point(), 0);
    clock.advance(100);
    log.flush_if_due().unwrap();
    assert_eq!(log.recovery_point(), 5);
}
