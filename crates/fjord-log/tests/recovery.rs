//! Crash recovery: torn and corrupt tails, corruption in flushed data, and a process killed with
//! SIGKILL while appending with `flush.messages=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::*;
use fjord_log::clock::ManualClock;
use fjord_log::config::TopicConfig;
use fjord_log::record::Compression;
use fjord_log::{FetchIsolation, LogError};
use proptest::prelude::*;

/// Writes `batches` batches of 4 records (values `v{offset}`) and closes the log. Returns the
/// byte position where each batch ends in the (single) segment file.
fn write_log(dir: &Path, batches: u64, codec: Compression) -> Vec<u64> {
    let (log, _) = open_partition(dir, Arc::new(TopicConfig::default()), ManualClock::new(0));
    let mut ends = Vec::new();
    for i in 0..batches {
        log.append(&mut batch(i * 4, 4, i as i64, codec)).unwrap();
        ends.push(log.size_in_bytes());
    }
    log.close().unwrap();
    ends
}

fn segment_file(dir: &Path) -> PathBuf {
    dir.join(format!("{:020}.log", 0))
}

/// The records a reopened log serves must be exactly a prefix of what was written.
fn assert_intact_prefix(dir: &Path, expected_batches: u64) {
    let (log, _) = open_partition(dir, Arc::new(TopicConfig::default()), ManualClock::new(0));
    assert_eq!(log.log_end_offset(), expected_batches as i64 * 4);
    let all = read_all(&log, 0);
    assert_eq!(all.len() as u64, expected_batches * 4);
    for (offset, key, value) in all {
        assert_eq!(key.unwrap(), format!("k{offset}").into_bytes());
        assert_eq!(value.unwrap(), format!("v{offset}").into_bytes());
    }
    // The log accepts appends again at the recovered end.
    let info = log.append(&mut batch(expected_batches * 4, 4, 0, Compression::None)).unwrap();
    assert_eq!(info.first_offset, expected_batches as i64 * 4);
}

#[test]
fn a_torn_write_at_the_tail_is_cut_off_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 10, Compression::None);
    // Half of an eleventh batch, as a crash in the middle of a write leaves it.
    let torn = batch(40, 4, 0, Compression::None);
    let mut file = std::fs::OpenOptions::new().append(true).open(segment_file(dir.path())).unwrap();
    file.write_all(&torn[..torn.len() / 2]).unwrap();
    drop(file);
    let (log, report) =
        open_partition(dir.path(), Arc::new(TopicConfig::default()), ManualClock::new(0));
    assert_eq!(report.truncations.len(), 1, "{report:?}");
    assert_eq!(report.truncations[0].bytes_removed, (torn.len() / 2) as u64);
    assert_eq!(log.log_end_offset(), 40);
    drop(log);
    assert_intact_prefix(dir.path(), 10);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Cutting the segment file anywhere keeps exactly the batches that end before the cut.
    #[test]
    fn truncation_anywhere_keeps_every_whole_batch_before_it(
        cut_fraction in 0.0f64..1.0,
        codec in prop::sample::select(Compression::ALL.to_vec()),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let ends = write_log(dir.path(), 20, codec);
        let total = *ends.last().unwrap();
        let cut = (total as f64 * cut_fraction) as u64;
        std::fs::OpenOptions::new().write(true).open(segment_file(dir.path())).unwrap().set_len(cut).unwrap();
        let whole = ends.iter().filter(|&&end| end <= cut).count() as u64;
        assert_intact_prefix(dir.path(), whole);
    }

    /// Flipping any byte of the tail: the batch holding it and everything after is cut off, and
    /// every record still served is exactly what was written.
    #[test]
    fn a_corrupt_byte_anywhere_is_never_served(
        at_fraction in 0.0f64..1.0,
        flip in 1u8..=255,
        codec in prop::sample::select(Compression::ALL.to_vec()),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let ends = write_log(dir.path(), 20, codec);
        let total = *ends.last().unwrap();
        let at = ((total as f64 * at_fraction) as u64).min(total - 1);
        let path = segment_file(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at as usize] ^= flip;
        std::fs::write(&path, &bytes).unwrap();
        let batch_index = ends.iter().position(|&end| end > at).unwrap();
        let batch_start = if batch_index == 0 { 0 } else { ends[batch_index - 1] };
        let (log, report) = open_partition(dir.path(), Arc::new(TopicConfig::default()), ManualClock::new(0));
        // The partition leader epoch (bytes 12..16 of a batch) is outside the CRC and not
        // needed to read records: a flip there changes nothing that is served.
        let in_leader_epoch = (12..16).contains(&(at - batch_start));
        if in_leader_epoch {
            prop_assert_eq!(log.log_end_offset(), 80);
        } else {
            prop_assert_eq!(report.truncations.len(), 1);
            prop_assert_eq!(log.log_end_offset(), batch_index as i64 * 4);
        }
        for (offset, key, value) in read_all(&log, 0) {
            prop_assert_eq!(key.unwrap(), format!("k{offset}").into_bytes());
            prop_assert_eq!(value.unwrap(), format!("v{offset}").into_bytes());
        }
    }
}

#[test]
fn corruption_in_flushed_data_is_kept_and_reported_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments(1024);
    {
        let (log, _) = open_partition(dir.path(), config.clone(), ManualClock::new(0));
        for i in 0..60 {
            log.append(&mut batch(i * 4, 4, 0, Compression::None)).unwrap();
        }
        log.close().unwrap();
    }
    // Corrupt a record byte of the first segment, far below the recovery point.
    let path = segment_file(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    bytes[len / 2] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    let (log, report) = open_partition(dir.path(), config.clone(), ManualClock::new(0));
    assert!(report.truncations.is_empty(), "flushed data is never cut off: {report:?}");
    assert_eq!(log.log_end_offset(), 240);
    // Reading from the start reaches the corrupt batch and fails; nothing is skipped.
    let mut offset = 0;
    let error = loop {
        match log.read(offset, 64, FetchIsolation::HighWatermark) {
            Ok(data) => {
                for (o, _, value) in records(&data.records, offset) {
                    assert_eq!(value.unwrap(), format!("v{o}").into_bytes());
                }
                offset = data.next_offset.expect("the read stops at the corruption, not the end");
            }
            Err(e) => break e,
        }
    };
    assert!(matches!(error, LogError::Corrupt { .. }), "{error}");
    // Later segments read fine.
    let second_segment = log.segment_base_offsets()[1];
    assert_eq!(read_all(&log, second_segment).len() as i64, 240 - second_segment);
    // A rebuild of the index (deleted here) reports the corruption at open too.
    drop(log);
    std::fs::remove_file(dir.path().join(format!("{:020}.index", 0))).unwrap();
    let (_, report) = open_partition(dir.path(), config, ManualClock::new(0));
    assert_eq!(report.corruptions.len(), 1, "{report:?}");
}

/// Run by `acknowledged_appends_survive_sigkill` in a child process: appends with
/// `flush.messages=1` forever, printing each acknowledged batch's offsets.
#[test]
#[ignore = "child process of acknowledged_appends_survive_sigkill"]
fn child_appender() {
    let Some(dir) = std::env::var_os("FJORD_CHILD_LOG_DIR") else { return };
    let config = Arc::new(TopicConfig { flush_messages: Some(1), ..TopicConfig::default() });
    let (log, _) = open_partition(Path::new(&dir), config, ManualClock::new(0));
    let mut out = std::io::stdout().lock();
    loop {
        let next = log.log_end_offset() as u64;
        let info = log.append(&mut batch(next, 3, 0, Compression::Lz4)).unwrap();
        writeln!(out, "ACK {} {}", info.first_offset, info.last_offset).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged = 0i64;
    let mut seed = 0x2545F4914F6CDD1Du64;
    for round in 0..8 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_appender", "--ignored", "--nocapture", "--test-threads=1"])
            .env("FJORD_CHILD_LOG_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill after a pseudo-random number of acknowledgements.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let acks_before_kill = 1 + seed % 300;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        while seen < acks_before_kill {
            let line = lines.next().expect("child exited early").unwrap();
            // libtest prints its own words on stdout too, sometimes on the same line.
            let Some(at) = line.find("ACK ") else { continue };
            let Some((_, last)) = line[at + 4..].split_once(' ') else { continue };
            acknowledged = acknowledged.max(last.parse::<i64>().unwrap() + 1);
            seen += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let (log, _) =
            open_partition(dir.path(), Arc::new(TopicConfig::default()), ManualClock::new(0));
        assert!(
            log.log_end_offset() >= acknowledged,
            "round {round}: acknowledged up to {acknowledged}, recovered {}",
            log.log_end_offset()
        );
        let all = read_all(&log, 0);
        assert_eq!(all.len() as i64, log.log_end_offset());
        for (offset, _, value) in all {
            assert_eq!(value.unwrap(), format!("v{offset}").into_bytes());
        }
    }
}
