//! `fjord produce`: lines in, records out, as `kafka-console-producer`.
//!
//! Each line (without its `\n` or `\r\n`) is one record. With `--key-separator` the line is
//! split at the first separator into key and value, and a line without it is refused (as
//! Kafka's `parse.key=true` does); without it the record has no key and goes to a sticky
//! partition (or to `--partition`). Lines are bytes: nothing requires UTF-8 unless `--json`
//! asks for each value to be a JSON document.
//!
//! Records go through the broker's batching, idempotent [`Producer`], the same path an
//! application uses. Reading runs on a blocking thread (stdin and files are blocking), and the
//! delivery futures are awaited in windows, so memory stays flat however long the input is,
//! and the summary can say which partitions and offsets the records got.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use fjord_broker::{
    Broker, DeliveryFuture, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
    TopicPartition,
};
use fjord_log::record::Header;

use crate::config::{Settings, parse_key_value, with_broker};
use crate::error::{CliError, Result};
use crate::output::Out;
use crate::progress;

/// Delivery futures awaited together; bounds the memory of a long input.
const WINDOW: usize = 4096;

/// `fjord produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// The topic.
    topic: String,
    /// Read lines from this file instead of stdin.
    #[arg(long, short)]
    file: Option<PathBuf>,
    /// Split each line at the first SEP into key and value.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Require every value to be a JSON document.
    #[arg(long)]
    json: bool,
    /// A header added to every record, `--header source=cli`; repeatable, keys may repeat.
    #[arg(long = "header", short = 'H', value_name = "KEY=VALUE")]
    headers: Vec<String>,
    /// Write every record to this partition instead of letting the partitioner choose.
    #[arg(long, short)]
    partition: Option<u32>,
}

/// What was produced, per partition: record count, first and last offset.
#[derive(Debug, Default)]
struct Summary {
    partitions: BTreeMap<u32, (u64, i64, i64)>,
}

impl Summary {
    fn add(&mut self, meta: &RecordMetadata) {
        let entry = self.partitions.entry(meta.partition.partition).or_insert((
            0,
            meta.offset,
            meta.offset,
        ));
        entry.0 += 1;
        entry.1 = entry.1.min(meta.offset);
        entry.2 = entry.2.max(meta.offset);
    }

    fn total(&self) -> u64 {
        self.partitions.values().map(|p| p.0).sum()
    }
}

/// Runs `fjord produce`.
pub fn run(settings: &Settings, args: ProduceArgs) -> Result<()> {
    let headers: Vec<(String, String)> =
        args.headers.iter().map(|h| parse_key_value("--header", h)).collect::<Result<_>>()?;
    if args.key_separator.as_deref() == Some("") {
        return Err(CliError::arg("--key-separator", "", "use a non-empty separator"));
    }
    // Open the input before the broker, so a missing file is reported without touching the
    // data directory.
    let (input, size): (Box<dyn Read + Send>, Option<u64>) = match &args.file {
        Some(path) => {
            let file = std::fs::File::open(path).map_err(|e| CliError::io("read", path, e))?;
            let size = file.metadata().map(|m| m.len()).ok();
            (Box::new(file), size)
        }
        None => (Box::new(std::io::stdin()), None),
    };
    let summary = with_broker(settings, |broker| async move {
        check_target(&broker, &args.topic, args.partition)?;
        let producer = Arc::new(Producer::new(
            &broker,
            ProducerConfig { client_id: "fjord-cli-producer".into(), ..ProducerConfig::default() },
        )?);
        let handle = tokio::runtime::Handle::current();
        let sending = producer.clone();
        let topic = args.topic.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            produce_lines(&handle, &sending, &args, &headers, input, size)
        })
        .await
        .map_err(|e| CliError::Broker(fjord_broker::BrokerError::IllegalState(e.to_string())))?;
        // Whatever happened, what was sent is delivered before the broker shuts down.
        let closed = producer.close().await;
        let summary = outcome?;
        closed?;
        if let Some(e) = producer.take_send_error() {
            return Err(fjord_broker::BrokerError::Delivery(e).into());
        }
        Ok((summary, topic))
    })?;
    let (summary, topic) = summary;
    let mut out = Out::stdout();
    let parts: Vec<String> = summary
        .partitions
        .iter()
        .map(|(p, (n, first, last))| format!("partition {p}: {n} (offsets {first}-{last})"))
        .collect();
    if parts.is_empty() {
        out.line(format_args!("Produced 0 records to {topic}."))?;
    } else {
        out.line(format_args!(
            "Produced {} records to {topic} ({}).",
            summary.total(),
            parts.join(", ")
        ))?;
    }
    out.flush()
}

/// Fails early, with the broker's message, on an unknown topic or partition (creating the
/// topic if the broker auto-creates topics).
fn check_target(broker: &Broker, topic: &str, partition: Option<u32>) -> Result<()> {
    broker.partition_count(topic)?;
    if let Some(p) = partition {
        broker.partition(&TopicPartition::new(topic, p))?;
    }
    Ok(())
}

fn produce_lines(
    handle: &tokio::runtime::Handle,
    producer: &Producer,
    args: &ProduceArgs,
    headers: &[(String, String)],
    input: Box<dyn Read + Send>,
    size: Option<u64>,
) -> Result<Summary> {
    let headers: Vec<Header<'_>> =
        headers.iter().map(|(k, v)| Header { key: k, value: Some(v.as_bytes()) }).collect();
    let source = args.file.clone().unwrap_or_else(|| PathBuf::from("stdin"));
    let bar = size.map(|s| progress::bar(s, true));
    let mut reader = BufReader::with_capacity(1 << 16, input);
    let mut line = Vec::new();
    let mut line_no = 0u64;
    let mut window: Vec<DeliveryFuture> = Vec::with_capacity(WINDOW);
    let mut summary = Summary::default();
    loop {
        line.clear();
        let read =
            reader.read_until(b'\n', &mut line).map_err(|e| CliError::io("read", &source, e))?;
        if read == 0 {
            break;
        }
        line_no += 1;
        if let Some(bar) = &bar {
            bar.inc(read as u64);
        }
        let text = strip_newline(&line);
        let (key, value) = match &args.key_separator {
            Some(sep) => match split_once(text, sep.as_bytes()) {
                Some((k, v)) => (Some(k), v),
                None => {
                    drain(handle, &mut window, &mut summary)?;
                    return Err(CliError::arg(
                        "--key-separator",
                        sep.clone(),
                        format!(
                            "line {line_no} has no separator, so it has no key; {} records before it were produced",
                            summary.total()
                        ),
                    ));
                }
            },
            None => (None, text),
        };
        if args.json
            && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(value)
        {
            drain(handle, &mut window, &mut summary)?;
            return Err(CliError::InvalidJson {
                line: line_no,
                reason: e.to_string(),
                produced: summary.total(),
            });
        }
        let record = ProducerRecord {
            topic: &args.topic,
            partition: args.partition,
            key,
            value: Some(value),
            headers: &headers,
            timestamp: None,
        };
        window.push(producer.send_blocking(record)?);
        if window.len() >= WINDOW {
            drain(handle, &mut window, &mut summary)?;
        }
    }
    drain(handle, &mut window, &mut summary)?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(summary)
}

/// Waits for the deliveries of the window, in order, and counts them.
fn drain(
    handle: &tokio::runtime::Handle,
    window: &mut Vec<DeliveryFuture>,
    summary: &mut Summary,
) -> Result<()> {
    let futures = std::mem::take(window);
    handle.block_on(async {
        for future in futures {
            summary.add(&future.await?);
        }
        Ok(())
    })
}

fn strip_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn split_once<'a>(line: &'a [u8], sep: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    let at = line.windows(sep.len()).position(|w| w == sep)?;
    Some((&line[..at], &line[at + sep.len()..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_unix_and_windows_line_ends() {
        assert_eq!(strip_newline(b"a\n"), b"a");
        assert_eq!(strip_newline(b"a\r\n"), b"a");
        assert_eq!(strip_newline(b"a"), b"a");
    }

    #[test]
    fn splits_at_the_first_separator() {
        assert_eq!(split_once(b"k::v::w", b"::"), Some((&b"k"[..], &b"v::w"[..])));
        assert_eq!(split_once(b":v", b":"), Some((&b""[..], &b"v"[..])));
        assert_eq!(split_once(b"kv", b":"), None);
    }
}
