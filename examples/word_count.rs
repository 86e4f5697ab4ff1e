//! Word count, the "hello world" of stream processing, on the embedded log.
//!
//! ```text
//! text-lines ──▶ split into words ──▶ group by word ──▶ count ──▶ word-counts
//!                                      (repartition)     (RocksDB store "counts" + changelog)
//! ```
//!
//! It opens an embedded broker in a temporary directory (or `--data-dir DIR`), writes a few
//! lines, runs the application until every word's count is in `word-counts` (read back, no
//! fixed sleep), asks the store itself for the counts (an interactive query), and closes.
//! Run it again with the same `--data-dir` and new lines are counted on top of the old ones:
//! the counts live in RocksDB under the data directory and in the store's changelog topic.
//!
//! `cargo run --example word_count [-- --data-dir DIR]`; `cargo test --example word_count`
//! runs it as a test.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord::broker::{
    Admin, Broker, BrokerConfig, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, TopicPartition,
};
use fjord::streams::{
    Consumed, EmbeddedBackend, Grouped, Materialized, Serdes, Streams, StreamsBuilder,
    StreamsConfig, StreamsState, Topology,
};

type BoxError = Box<dyn Error + Send + Sync>;

const LINES: &[&str] = &[
    "all streams flow to the sea",
    "yet the sea is not full",
    "to the place the streams come from",
    "there they return again",
];

fn topology() -> Result<Topology, BoxError> {
    let builder = StreamsBuilder::new();
    builder
        // Lines have no key: a nullable key serde reads them as `None`.
        .stream("text-lines", Consumed::with(Serdes::option(Serdes::string()), Serdes::string()))
        .flat_map_values(|line: String| {
            line.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>()
        })
        .group_by(|_, word| word.clone(), Grouped::with(Serdes::string(), Serdes::string()))
        .count(Materialized::named("counts"))
        .to_stream()
        .to("word-counts");
    Ok(builder.build()?)
}

/// Counts the words of [`LINES`] on the broker in `dir`; returns the counts as the store has
/// them at the end.
async fn run(dir: &Path) -> Result<BTreeMap<String, i64>, BoxError> {
    let broker = Broker::open(BrokerConfig::new(dir.join("log"))).await?;
    let admin = Admin::new(&broker);
    for topic in ["text-lines", "word-counts"] {
        if broker.logs().topic(topic).is_err() {
            admin.create_topic(NewTopic::new(topic, 2)).await?;
        }
    }
    let producer = Producer::new(&broker, ProducerConfig::default())?;
    for line in LINES {
        producer.send(ProducerRecord::new("text-lines", line.as_bytes())).await?;
    }
    producer.close().await?;

    // What the counts must become: what earlier runs counted plus this run's words.
    let mut expected: BTreeMap<String, i64> =
        read_counts(&broker, Duration::ZERO, |_| true).await?;
    for word in LINES.iter().flat_map(|l| l.split_whitespace()) {
        *expected.entry(word.to_string()).or_default() += 1;
    }

    let config = StreamsConfig {
        state_dir: dir.join("state"),
        commit_interval: Some(Duration::from_millis(100)),
        ..StreamsConfig::new("word-count")
    };
    let topology = topology()?;
    println!("{}", topology.describe());
    let mut streams = Streams::new(topology, Arc::new(EmbeddedBackend::new(&broker)), config)?;
    streams.start().await?;
    streams.wait_for_state(StreamsState::Running, Duration::from_secs(30)).await?;
    read_counts(&broker, Duration::from_secs(30), |latest| latest == &expected).await?;

    let store = streams.key_value_store("counts", Serdes::string(), Serdes::i64())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let counts = loop {
        // The store shows the last commit: wait for the one that holds every count.
        let counts: BTreeMap<String, i64> = store.all()?.into_iter().collect();
        if counts == expected || Instant::now() > deadline {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    streams.close().await?;
    broker.shutdown().await?;
    Ok(counts)
}

/// Reads `word-counts` from the start and keeps the latest count per word, until `done` says
/// so (or `timeout` passes: with a zero timeout, one pass over what is there).
async fn read_counts(
    broker: &Broker,
    timeout: Duration,
    done: impl Fn(&BTreeMap<String, i64>) -> bool,
) -> Result<BTreeMap<String, i64>, BoxError> {
    let consumer = Consumer::new(
        broker,
        ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() },
    )?;
    consumer
        .assign(&[TopicPartition::new("word-counts", 0), TopicPartition::new("word-counts", 1)])?;
    let deadline = Instant::now() + timeout;
    let mut latest = BTreeMap::new();
    loop {
        let records = consumer.poll(Duration::from_millis(100)).await?;
        let empty = records.is_empty();
        for r in records {
            let (Some(k), Some(v)) = (r.key, r.value) else { continue };
            let count = i64::from_be_bytes(v.as_ref().try_into()?);
            latest.insert(String::from_utf8(k.to_vec())?, count);
        }
        if done(&latest) && (timeout > Duration::ZERO || empty) {
            return Ok(latest);
        }
        if Instant::now() > deadline {
            if timeout == Duration::ZERO {
                return Ok(latest);
            }
            return Err(format!("word-counts did not reach the expected counts: {latest:?}").into());
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let temp;
    let dir = match (args.next().as_deref(), args.next()) {
        (Some("--data-dir"), Some(dir)) => std::path::PathBuf::from(dir),
        (None, _) => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
        _ => return Err("usage: cargo run --example word_count [-- --data-dir DIR]".into()),
    };
    let counts = run(&dir).await?;
    println!("word counts ({}):", dir.display());
    for (word, count) in counts {
        println!("  {word:<8} {count}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_accumulate_over_runs() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let first = runtime.block_on(super::run(dir.path())).unwrap();
        assert_eq!(first["the"], 4);
        assert_eq!(first["streams"], 2);
        let second = runtime.block_on(super::run(dir.path())).unwrap();
        assert_eq!(second["the"], 8, "the second run counts on top of the first");
    }
}
