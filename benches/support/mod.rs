//! Shared by the benchmarks.
#![allow(dead_code)]

/// Touches `FJORD_BENCH_PREFAULT_GIB` GiB of memory (default 16) once and frees it.
///
/// The VMs this project is measured on back guest memory lazily: the first touch of a page
/// costs about 9 µs (3 GiB took 7.1 s; touching them again took 0.25 s). A benchmark that writes
/// gigabytes into fresh page cache would measure that instead of the code, so the benchmarks
/// touch memory once first. `FJORD_BENCH_PREFAULT_GIB=0` skips it, to see the difference.
pub fn prefault_memory() {
    let gib: usize =
        std::env::var("FJORD_BENCH_PREFAULT_GIB").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
    let mut chunk: Vec<Vec<u8>> = Vec::new();
    for _ in 0..gib {
        let mut block = vec![0u8; 1 << 30];
        for i in (0..block.len()).step_by(4096) {
            block[i] = 1;
        }
        chunk.push(block);
    }
    std::hint::black_box(&chunk);
}

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord::broker::{
    Admin, Broker, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer, ProducerConfig,
    TopicPartition,
};
use fjord::streams::{
    EmbeddedBackend, ProcessingGuarantee, Streams, StreamsConfig, StreamsError, Topology,
};

/// The command line of a hand-timed benchmark: `[count] [names...]`.
pub struct Args {
    /// The first numeric argument, else the benchmark's default.
    pub count: u64,
    /// The other arguments, minus flags (cargo bench passes `--bench`, which is not a name).
    pub names: Vec<String>,
}

impl Args {
    /// Reads the process's arguments.
    pub fn parse(default_count: u64) -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let count = args.iter().find_map(|a| a.parse().ok()).unwrap_or(default_count);
        let names =
            args.into_iter().filter(|a| a.parse::<u64>().is_err() && !a.starts_with('-')).collect();
        Args { count, names }
    }

    /// Whether `name` was asked for (every name is when none was given).
    pub fn wanted(&self, name: &str) -> bool {
        self.names.is_empty() || self.names.iter().any(|n| n == name)
    }
}

/// The tokio runtime the benchmarks run on: multi-threaded, two workers (the machine's cores).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Creates one-partition topics that keep everything (`retention.ms=-1`).
pub async fn create_topics(broker: &Broker, names: &[&str]) {
    let admin = Admin::new(broker);
    for name in names {
        admin
            .create_topic(NewTopic::new(*name, 1).config("retention.ms", "-1"))
            .await
            .expect("create topic");
    }
}

/// A consumer outside any group that reads a one-partition topic from its start, 10,000
/// records per poll.
pub fn reader(broker: &Broker, topic: &str) -> Consumer {
    let config = ConsumerConfig {
        auto_offset_reset: OffsetReset::Earliest,
        max_poll_records: 10_000,
        ..ConsumerConfig::default()
    };
    let consumer = Consumer::new(broker, config).expect("consumer");
    consumer.assign(&[TopicPartition::new(topic, 0)]).expect("assign");
    consumer
}

/// The producer that writes a benchmark's input before the clock starts: 256 KiB batches.
pub fn input_producer(broker: &Broker) -> Producer {
    Producer::new(broker, ProducerConfig { batch_size: 256 * 1024, ..ProducerConfig::default() })
        .expect("producer")
}

/// A processing guarantee and its commit interval (`None`: the guarantee's default).
pub type Commits = (ProcessingGuarantee, Option<Duration>);

/// The configuration of a measured application: one stream thread, polls of up to 10,000
/// records, its state in `state_dir/<name>`.
pub fn streams_config(state_dir: &Path, name: &str, commits: Commits) -> StreamsConfig {
    StreamsConfig {
        max_poll_records: 10_000,
        state_dir: state_dir.join(name),
        processing_guarantee: commits.0,
        commit_interval: commits.1,
        ..StreamsConfig::new(name)
    }
}

/// Runs `topology` on the embedded broker until `done` holds (asked every 5 ms), then closes
/// it, which commits: caches flushed, every output in the log. Returns the time from
/// `start()` to the end of `close()`.
pub async fn run_until(
    broker: &Broker,
    topology: Topology,
    config: StreamsConfig,
    mut done: impl FnMut(&Streams) -> bool,
) -> Result<Duration, StreamsError> {
    let mut streams = Streams::new(topology, Arc::new(EmbeddedBackend::new(broker)), config)?;
    let started = Instant::now();
    streams.start().await?;
    while !done(&streams) {
        if let Some(error) = streams.error() {
            return Err(StreamsError::IllegalState(error));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    streams.close().await?;
    Ok(started.elapsed())
}
