//! The embedded log on its own: writes a stream of keyed order
//! events into a three-partition topic of the embedded log, reads every partition back, and
//! shows where the keys landed and what is on disk.
//!
//! Run it with `cargo run --example log_demo -- [data dir] [records]`.

use std::collections::BTreeMap;
use std::time::Instant;

use fjord::log::partitioner::partition_for_key;
use fjord::log::record::{BatchIter, BatchOptions, Compression, Header, RecordBatchBuilder};
use fjord::log::{FetchIsolation, LogManager, LogManagerConfig, TopicPartition};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let mut args = std::env::args().skip(1);
    let dir = args.next().map_or_else(|| std::env::temp_dir().join("fjord-demo"), Into::into);
    let count: u64 = args.next().map_or(Ok(200_000), |n| n.parse())?;
    // A fresh run each time: the demo owns this directory.
    let _ = std::fs::remove_dir_all(&dir);
    let (logs, _) = LogManager::open(&dir, LogManagerConfig::default())?;
    let partitions = 3;
    let configs = BTreeMap::from([("compression.type".to_string(), "producer".to_string())]);
    logs.create_topic("orders", partitions, configs)?;
    println!("created topic `orders` with {partitions} partitions in {}", dir.display());

    // Produce: keyed by customer, so each customer's orders stay in order on one partition.
    let started = Instant::now();
    let mut builders: Vec<RecordBatchBuilder> = (0..partitions)
        .map(|_| {
            RecordBatchBuilder::new(BatchOptions {
                compression: Compression::Lz4,
                ..BatchOptions::default()
            })
        })
        .collect();
    let now = 1_700_000_000_000i64;
    let mut value = String::new();
    for i in 0..count {
        let customer = format!("customer-{}", i % 1000);
        value.clear();
        use std::fmt::Write;
        write!(value, r#"{{"order":{i},"customer":"{customer}","amount":{}}}"#, (i * 37) % 500)?;
        let p = partition_for_key(customer.as_bytes(), partitions);
        let builder = &mut builders[p as usize];
        let headers = [Header { key: "content-type", value: Some(b"application/json") }];
        builder.append(now + i as i64, Some(customer.as_bytes()), Some(value.as_bytes()), &headers);
        if builder.record_count() == 1000 {
            let mut batch = builder.build()?;
            logs.partition(&TopicPartition::new("orders", p))?.append(&mut batch)?;
        }
    }
    for (p, builder) in builders.iter_mut().enumerate() {
        if !builder.is_empty() {
            let mut batch = builder.build()?;
            logs.partition(&TopicPartition::new("orders", p as u32))?.append(&mut batch)?;
        }
    }
    let produced = started.elapsed();
    println!(
        "produced {count} records in {:.0} ms ({:.0} records/s)",
        produced.as_secs_f64() * 1000.0,
        count as f64 / produced.as_secs_f64()
    );

    // Consume every partition from the beginning and check per-key order.
    let started = Instant::now();
    let mut read = 0u64;
    let mut scratch = Vec::new();
    let mut last_order: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    for p in 0..partitions {
        let log = logs.partition(&TopicPartition::new("orders", p))?;
        let mut offset = log.log_start_offset();
        loop {
            let fetch = log.read(offset, 1 << 20, FetchIsolation::HighWatermark)?;
            let Some(next) = fetch.next_offset else { break };
            for batch in BatchIter::new(&fetch.records) {
                for record in batch?.records(&mut scratch)? {
                    let record = record?;
                    let key = record.key.unwrap_or_default().to_vec();
                    let previous = last_order.insert(key, record.offset);
                    assert!(previous.is_none_or(|o| o < record.offset), "per-key order");
                    read += 1;
                }
            }
            offset = next;
        }
        println!(
            "  partition {p}: offsets {}..{}, {} segment(s), {} bytes on disk",
            log.log_start_offset(),
            log.log_end_offset(),
            log.segment_count(),
            log.size_in_bytes()
        );
    }
    let consumed = started.elapsed();
    println!(
        "consumed {read} records in {:.0} ms ({:.0} records/s), {} customers, each in order",
        consumed.as_secs_f64() * 1000.0,
        read as f64 / consumed.as_secs_f64(),
        last_order.len()
    );
    assert_eq!(read, count);
    logs.close()?;
    Ok(())
}
