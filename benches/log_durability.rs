//! Append bandwidth with `flush.ms=100` (fsync on an interval by the background thread) for
//! 1 KiB records, next to the disk's sequential write bandwidth measured with
//! `dd ... conv=fdatasync` in the same directory. Target: at least 80% of the disk.
//!
//! `cargo bench --bench log_durability [-- <MiB per run, default 2048>]`; set `FJORD_BENCH_DIR`
//! to measure another disk than the temporary directory's. The virtual disks this project is
//! measured on vary a lot from run to run (the host caches them), so dd and the log alternate,
//! three runs each, and the medians are compared.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use fjord::log::record::{BatchOptions, RecordBatchBuilder};
use fjord::log::{LogManager, LogManagerConfig, TopicPartition};

fn dd(dir: &Path, mib: u64) -> f64 {
    let file = dir.join("dd.bin");
    let started = Instant::now();
    let status = std::process::Command::new("dd")
        .args(["if=/dev/zero", &format!("of={}", file.display()), "bs=1M"])
        .arg(format!("count={mib}"))
        .arg("conv=fdatasync")
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let mib_s = mib as f64 / started.elapsed().as_secs_f64();
    std::fs::remove_file(&file).unwrap();
    mib_s
}

/// MiB/s and records/s of appending `mib` MiB of 1 KiB records with flush.ms=100, counting
/// until the last byte is on disk.
fn log_run(dir: &Path, mib: u64) -> (f64, f64) {
    let data = dir.join("data");
    let (logs, _) = LogManager::open(&data, LogManagerConfig::default()).unwrap();
    let configs = BTreeMap::from([
        ("flush.ms".to_string(), "100".to_string()),
        ("retention.ms".to_string(), "-1".to_string()),
    ]);
    logs.create_topic("durable", 1, configs).unwrap();
    let log = logs.partition(&TopicPartition::new("durable", 0)).unwrap();
    let mut builder = RecordBatchBuilder::new(BatchOptions::default());
    let value = vec![b'x'; 1024];
    let per_batch = 256;
    for i in 0..per_batch {
        builder.append(i, Some(&(i as u64).to_be_bytes()), Some(&value), &[]);
    }
    let mut batch = builder.build().unwrap();
    let total_bytes = mib * 1024 * 1024;
    let started = Instant::now();
    let mut written = 0u64;
    while written < total_bytes {
        log.append(&mut batch).unwrap();
        written += batch.len() as u64;
    }
    log.flush().unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let records = (written / batch.len() as u64) * per_batch as u64;
    logs.close().unwrap();
    drop(logs);
    std::fs::remove_dir_all(&data).unwrap();
    (written as f64 / (1024.0 * 1024.0) / seconds, records as f64 / seconds)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    support::prefault_memory();
    let mib: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(2048);
    let base = std::env::var_os("FJORD_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(&base).unwrap();
    let (mut dds, mut logs, mut rates) = (Vec::new(), Vec::new(), Vec::new());
    println!("| run | dd MiB/s | log MiB/s | log records/s |");
    println!("|---|---|---|---|");
    for run in 1..=3 {
        let d = dd(dir.path(), mib);
        let (l, r) = log_run(dir.path(), mib);
        println!("| {run} | {d:.0} | {l:.0} | {r:.0} |");
        dds.push(d);
        logs.push(l);
        rates.push(r);
    }
    let (d, l) = (median(dds), median(logs));
    println!("| median | {d:.0} | {l:.0} ({:.0}% of dd) | {:.0} |", 100.0 * l / d, median(rates));
}
