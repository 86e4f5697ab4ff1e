//! `fjord consume`: records out as lines, as `kafka-console-consumer`.
//!
//! Without `--group` the consumer assigns itself every partition of the topic (Kafka's manual
//! `assign`), commits nothing and leaves no trace in the broker. With `--group` it subscribes
//! as a member of that consumer group, starts at the group's committed offsets (or at the
//! beginning/end when there are none) and commits what it printed when it stops, so
//! `fjord groups lag` shows its progress.
//!
//! Without `--follow` the command stops at the end offsets it saw when it started (the last
//! stable offset under `read_committed`), which makes its output a deterministic snapshot; with
//! `--follow` it keeps long-polling (the broker wakes it when records arrive) until
//! `--max-messages` or Ctrl-C.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Args, ValueEnum};
use fjord_broker::{
    Broker, Consumer, ConsumerConfig, ConsumerRecord, IsolationLevel, OffsetReset, OffsetSpec,
    TopicPartition,
};
use serde::Serialize;

use crate::config::{Settings, with_broker};
use crate::error::Result;
use crate::output::Out;
use crate::progress;

/// How long one poll waits for records before the end condition is checked again.
const POLL_TIMEOUT: Duration = Duration::from_millis(500);

/// `fjord consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// The topic.
    topic: String,
    /// Start at the log start offset when there is no committed offset (default: the end).
    #[arg(long)]
    from_beginning: bool,
    /// Consume as a member of this consumer group and commit offsets.
    #[arg(long, short)]
    group: Option<String>,
    /// Keep waiting for new records instead of stopping at the end offsets seen at start.
    #[arg(long, short)]
    follow: bool,
    /// Which records to read.
    #[arg(long, value_enum, default_value_t = Isolation::ReadUncommitted)]
    isolation: Isolation,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Stop after this many records.
    #[arg(long, short = 'n', value_name = "N")]
    max_messages: Option<u64>,
    /// In text format, print the key and a tab before the value.
    #[arg(long)]
    print_key: bool,
}

/// `--isolation`: Kafka's `isolation.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Isolation {
    /// Every record up to the high watermark, including open and aborted transactions'.
    #[value(name = "read_uncommitted")]
    ReadUncommitted,
    /// Only committed records, up to the last stable offset.
    #[value(name = "read_committed")]
    ReadCommitted,
}

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The value (UTF-8, invalid bytes replaced); `null` for a tombstone.
    Text,
    /// One JSON object per record: topic, partition, offset, timestamp, key, value, headers.
    Json,
}

/// A record in `--format json`. Keys, values and header values are strings (invalid UTF-8
/// replaced with U+FFFD) or null.
#[derive(Debug, Serialize)]
struct JsonRecord<'a> {
    topic: &'a str,
    partition: u32,
    offset: i64,
    timestamp: i64,
    key: Option<String>,
    value: Option<String>,
    headers: Vec<JsonHeader<'a>>,
}

#[derive(Debug, Serialize)]
struct JsonHeader<'a> {
    key: &'a str,
    value: Option<String>,
}

fn text(bytes: Option<&[u8]>) -> Option<String> {
    bytes.map(|b| String::from_utf8_lossy(b).into_owned())
}

fn render(record: &ConsumerRecord, format: Format, print_key: bool) -> Result<String> {
    Ok(match format {
        Format::Text => {
            let value = text(record.value.as_deref()).unwrap_or_else(|| "null".into());
            if print_key {
                let key = text(record.key.as_deref()).unwrap_or_else(|| "null".into());
                format!("{key}\t{value}")
            } else {
                value
            }
        }
        Format::Json => {
            let headers = record
                .headers()
                .iter()
                .map(|h| JsonHeader { key: h.key, value: text(h.value) })
                .collect();
            let json = JsonRecord {
                topic: &record.topic,
                partition: record.partition,
                offset: record.offset,
                timestamp: record.timestamp,
                key: text(record.key.as_deref()),
                value: text(record.value.as_deref()),
                headers,
            };
            // Serialising strings, numbers and nulls cannot fail.
            serde_json::to_string(&json).unwrap_or_default()
        }
    })
}

/// Runs `fjord consume`.
pub fn run(settings: &Settings, args: ConsumeArgs) -> Result<()> {
    with_broker(settings, |broker| async move { consume(&broker, &args).await })
}

async fn consume(broker: &Broker, args: &ConsumeArgs) -> Result<()> {
    let partitions = broker.partition_count(&args.topic)?;
    let all: Vec<TopicPartition> =
        (0..partitions).map(|p| TopicPartition::new(args.topic.as_str(), p)).collect();
    let end_spec = match args.isolation {
        Isolation::ReadUncommitted => OffsetSpec::Latest,
        Isolation::ReadCommitted => OffsetSpec::LatestCommitted,
    };
    let mut ends = BTreeMap::new();
    for tp in &all {
        ends.insert(tp.clone(), broker.list_offset(tp, end_spec)?.offset);
    }
    let max_poll_records = args.max_messages.map_or(500, |n| n.clamp(1, 500) as usize);
    let config = ConsumerConfig {
        client_id: "fjord-cli-consumer".into(),
        group_id: args.group.clone(),
        auto_offset_reset: if args.from_beginning {
            OffsetReset::Earliest
        } else {
            OffsetReset::Latest
        },
        enable_auto_commit: false,
        isolation_level: match args.isolation {
            Isolation::ReadUncommitted => IsolationLevel::ReadUncommitted,
            Isolation::ReadCommitted => IsolationLevel::ReadCommitted,
        },
        max_poll_records,
        ..ConsumerConfig::default()
    };
    let consumer = Consumer::new(broker, config)?;
    if args.group.is_some() {
        consumer.subscribe(&[args.topic.as_str()])?;
    } else {
        consumer.assign(&all)?;
        if args.from_beginning {
            consumer.seek_to_beginning(&all)?;
        } else {
            consumer.seek_to_end(&all)?;
        }
    }
    let result = read_loop(&consumer, args, &ends).await;
    let closed = consumer.close().await;
    result?;
    closed?;
    Ok(())
}

async fn read_loop(
    consumer: &Consumer,
    args: &ConsumeArgs,
    ends: &BTreeMap<TopicPartition, i64>,
) -> Result<()> {
    let mut out = Out::stdout();
    let bar = args.max_messages.map(|n| progress::bar(n, false));
    let mut printed = 0u64;
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        if args.max_messages.is_some_and(|max| printed >= max)
            || (!args.follow && reached_end(consumer, ends))
        {
            break;
        }
        let records = tokio::select! {
            records = consumer.poll(POLL_TIMEOUT) => records?,
            _ = &mut interrupted => break,
        };
        if records.is_empty() {
            continue;
        }
        // Where each partition's committed offset goes: past what was printed, and no further.
        let mut commit = consumer.positions();
        for record in &records {
            if args.max_messages.is_some_and(|max| printed >= max) {
                let tp = record.topic_partition();
                let next = commit.entry(tp).or_insert(record.offset);
                *next = (*next).min(record.offset);
                continue;
            }
            out.line(render(record, args.format, args.print_key)?)?;
            printed += 1;
            if let Some(bar) = &bar {
                bar.inc(1);
            }
        }
        out.flush()?;
        if args.group.is_some() {
            let offsets: Vec<(TopicPartition, i64)> = commit.into_iter().collect();
            consumer.commit_offsets(&offsets).await?;
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    out.flush()?;
    // A group member that read nothing still records where it stands, so `groups describe`
    // and `groups lag` show the group.
    if args.group.is_some() && printed == 0 {
        let offsets: Vec<(TopicPartition, i64)> = consumer.positions().into_iter().collect();
        if !offsets.is_empty() {
            consumer.commit_offsets(&offsets).await?;
        }
    }
    Ok(())
}

/// Whether every assigned partition's position is at or past its end offset from the start.
/// A group member that joined and got no partitions (others have them all) is done too.
fn reached_end(consumer: &Consumer, ends: &BTreeMap<TopicPartition, i64>) -> bool {
    let assignment = consumer.assignment();
    if assignment.is_empty() {
        return consumer.group_generation().is_some() && !consumer.rebalance_pending();
    }
    if consumer.rebalance_pending() {
        return false;
    }
    let positions = consumer.positions();
    assignment.iter().all(|tp| {
        let end = ends.get(tp).copied().unwrap_or(0);
        positions.get(tp).is_some_and(|&p| p >= end)
    })
}
