//! Append bandwidth with `flush.ms=100` (fsync on an interval by the background thread) for
//! 1 KiB records, next to the disk's sequential write bandwidth measured with
//! `dd ... conv=fdatasync` in the same directory. Target: at least 80% of the disk.
//!
//! `cargo bench --bench log_durability [-- <MiB to write, default 2048>]`; set `FJORD_BENCH_DIR`
//! to measure another disk than the temporary directory's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Instant;

use fjord::log::record::{BatchOptions, RecordBatchBuilder};
use fjord::log::{LogManager, LogManagerConfig, TopicPartition};

fn main() {
    let mib: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2048);
    let base = std::env::var_os("FJORD_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(&base).unwrap();

    // The disk, as dd sees it.
    let dd_file = dir.path().join("dd.bin");
    let started = Instant::now();
    let status = std::process::Command::new("dd")
        .args(["if=/dev/zero", &format!("of={}", dd_file.display()), "bs=1M"])
        .arg(format!("count={mib}"))
        .arg("conv=fdatasync")
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let dd_mib_s = mib as f64 / started.elapsed().as_secs_f64();
    std::fs::remove_file(&dd_file).unwrap();

    // The log, flush.ms=100.
    let (logs, _) = LogManager::open(dir.path().join("data"), LogManagerConfig::default()).unwrap();
    let configs = BTreeMap::from([
        ("flush.ms".to_string(), "100".to_string()),
        ("retention.ms".to_string(), "-1".to_string()),
    ]);
    logs.create_topic("durable", 1, configs).unwrap();
    let log = logs.partition(&TopicPartition::new("durable", 0)).unwrap();
    let mut builder = RecordBatchBuilder::new(BatchOptions::default());
    let value = vec![b'x'; 1024];
    for i in 0..256 {
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
    // Count the time until the last byte is on disk.
    log.flush().unwrap();
    let log_mib_s = written as f64 / (1024.0 * 1024.0) / started.elapsed().as_secs_f64();
    let records = written / batch.len() as u64 * 256;
    println!("| workload | MiB/s | records/s |");
    println!("|---|---|---|");
    println!("| dd bs=1M conv=fdatasync, {mib} MiB | {dd_mib_s:.0} | |");
    println!(
        "| log append 1 KiB records, flush.ms=100, {mib} MiB | {log_mib_s:.0} ({:.0}% of dd) | {:.0} |",
        100.0 * log_mib_s / dd_mib_s,
        records as f64 / started.elapsed().as_secs_f64()
    );
    logs.close().unwrap();
}
