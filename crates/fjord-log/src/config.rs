//! Topic-level configs, with Kafka's names, string forms, defaults and bounds.
//!
//! A topic's effective config is the broker's defaults ([`TopicConfig::default`] unless the
//! broker changes them) with the topic's overrides applied, as Kafka's `LogConfig.fromProps`
//! does. Overrides arrive as the strings `CreateTopics`, `IncrementalAlterConfigs` and
//! `kafka-configs --alter --add-config` carry, so they are parsed and validated here with
//! Kafka's rules (`LogConfig`'s `ConfigDef` in Kafka 4.x), and [`TopicConfig::entries`] gives
//! them back in the same string form for `DescribeConfigs`.
//!
//! Differences from Kafka's `ConfigDef` parsing, all in the direction of rejecting more:
//! `min.cleanable.dirty.ratio` must be a finite number (Java's `between(0, 1)` lets `NaN`
//! through), and an unknown name's error suggests the closest known name.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::record::{Compression, TimestampType};

/// The smallest `segment.bytes` a topic may set: 1 MiB since Kafka 4.0 (KIP-1030). Kafka 3.x
/// allowed 14 bytes (`LegacyRecord.RECORD_OVERHEAD_V0`); Kafka 4 keeps smaller segments to the
/// internal, test-only `internal.segment.bytes`. Code that needs tiny segments (tests) sets
/// [`TopicConfig::segment_bytes`] directly.
pub const MIN_SEGMENT_BYTES: u32 = 1024 * 1024;

/// `cleanup.policy`: what happens to old segments. Kafka's value is a list of `delete` and
/// `compact`; both may be set (`compact,delete`), and an empty list sets neither, so the log is
/// kept forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CleanupPolicy {
    delete: bool,
    compact: bool,
}

impl CleanupPolicy {
    /// `delete`: segments past `retention.ms` or `retention.bytes` are deleted (the default).
    pub const DELETE: CleanupPolicy = CleanupPolicy { delete: true, compact: false };
    /// `compact`: the cleaner keeps only the latest record of each key.
    pub const COMPACT: CleanupPolicy = CleanupPolicy { delete: false, compact: true };
    /// `compact,delete`: compacted, and old segments are also deleted by retention.
    pub const COMPACT_DELETE: CleanupPolicy = CleanupPolicy { delete: true, compact: true };
    /// The empty list: neither deleted nor compacted.
    pub const NONE: CleanupPolicy = CleanupPolicy { delete: false, compact: false };

    /// The policy with retention deletion and compaction switched on as given.
    pub const fn new(delete: bool, compact: bool) -> Self {
        CleanupPolicy { delete, compact }
    }

    /// Whether retention (`retention.ms`, `retention.bytes`) deletes old segments.
    pub fn deletes(self) -> bool {
        self.delete
    }

    /// Whether the log cleaner compacts the log by key.
    pub fn compacts(self) -> bool {
        self.compact
    }

    /// Kafka's string form: `delete`, `compact`, `compact,delete`, or the empty string.
    pub fn name(self) -> &'static str {
        match (self.delete, self.compact) {
            (true, false) => "delete",
            (false, true) => "compact",
            (true, true) => "compact,delete",
            (false, false) => "",
        }
    }

    /// Parses Kafka's list form, giving the reason on failure.
    fn parse(value: &str) -> Result<Self, String> {
        const ALLOWED: &str = concat!(
            "a comma-separated list of `delete` and `compact` ",
            "(`delete`, `compact`, `compact,delete`)"
        );
        let trimmed = value.trim();
        let mut policy = CleanupPolicy::NONE;
        if trimmed.is_empty() {
            return Ok(policy);
        }
        // ConfigDef splits a LIST on commas with any whitespace around them.
        for item in trimmed.split(',').map(str::trim) {
            let flag = match item {
                "delete" => &mut policy.delete,
                "compact" => &mut policy.compact,
                "" => return Err(format!("has an empty entry; must be {ALLOWED}")),
                other => {
                    return Err(format!("`{other}` is not a cleanup policy; must be {ALLOWED}"));
                }
            };
            if *flag {
                return Err(format!("lists `{item}` twice; must be {ALLOWED}"));
            }
            *flag = true;
        }
        Ok(policy)
    }
}

impl Default for CleanupPolicy {
    fn default() -> Self {
        CleanupPolicy::DELETE
    }
}

impl fmt::Display for CleanupPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CleanupPolicy {
    type Err = ConfigError;

    /// Parses a `cleanup.policy` value as Kafka does (case-sensitive, whitespace around commas
    /// allowed, no duplicates).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CleanupPolicy::parse(s).map_err(|reason| ConfigError::InvalidValue {
            name: CLEANUP_POLICY,
            value: s.to_string(),
            reason,
        })
    }
}

/// `compression.type` at topic level: keep whatever codec the producer used, or recompress every
/// appended batch with one codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TopicCompression {
    /// `producer`: batches are stored with the producer's codec (the default).
    #[default]
    Producer,
    /// A fixed codec; `uncompressed` is `Codec(Compression::None)`.
    Codec(Compression),
}

impl TopicCompression {
    /// Kafka's string form: `producer`, `uncompressed`, `gzip`, `snappy`, `lz4` or `zstd`.
    pub fn name(self) -> &'static str {
        match self {
            TopicCompression::Producer => "producer",
            TopicCompression::Codec(Compression::None) => "uncompressed",
            TopicCompression::Codec(codec) => codec.name(),
        }
    }

    /// The codec a batch is stored with, given the codec the producer sent it with.
    pub fn resolve(self, producer_codec: Compression) -> Compression {
        match self {
            TopicCompression::Producer => producer_codec,
            TopicCompression::Codec(codec) => codec,
        }
    }

    /// Parses Kafka's names, giving the reason on failure.
    fn parse(value: &str) -> Result<Self, String> {
        Ok(match value.trim() {
            "producer" => TopicCompression::Producer,
            "uncompressed" => TopicCompression::Codec(Compression::None),
            "gzip" => TopicCompression::Codec(Compression::Gzip),
            "snappy" => TopicCompression::Codec(Compression::Snappy),
            "lz4" => TopicCompression::Codec(Compression::Lz4),
            "zstd" => TopicCompression::Codec(Compression::Zstd),
            other => {
                let hint = if other == "none" {
                    " (the topic-level name for no compression is `uncompressed`)"
                } else {
                    ""
                };
                return Err(format!(
                    "must be one of `producer`, `uncompressed`, `gzip`, `snappy`, `lz4`, \
                     `zstd`{hint}"
                ));
            }
        })
    }
}

impl fmt::Display for TopicCompression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TopicCompression {
    type Err = ConfigError;

    /// Parses a topic-level `compression.type` (case-sensitive, as Kafka).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TopicCompression::parse(s).map_err(|reason| ConfigError::InvalidValue {
            name: COMPRESSION_TYPE,
            value: s.to_string(),
            reason,
        })
    }
}

/// When the log fsyncs appended data: the durability modes `always`, `interval` and `os`,
/// derived from Kafka's `flush.messages` and `flush.ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlushPolicy {
    /// fsync after every append (`flush.messages=1`).
    Always,
    /// fsync when this long has passed since the last flush (`flush.ms`).
    Interval(Duration),
    /// Leave writing back to the operating system (Kafka's default; durability comes from
    /// replication in Kafka, and from the OS page cache surviving a process crash here).
    Os,
}

/// A topic's effective configuration. Field names follow Kafka's config names; each field's
/// doc gives the name, Kafka's default and the bound [`TopicConfig::from_overrides`] enforces.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    /// `cleanup.policy`: default `delete`.
    pub cleanup_policy: CleanupPolicy,
    /// `compression.type`: default `producer`.
    pub compression_type: TopicCompression,
    /// `retention.ms`: default 604800000 (7 days); `None` is Kafka's -1, no time limit. At
    /// least -1.
    pub retention_ms: Option<i64>,
    /// `retention.bytes`: the size limit per partition; default -1, `None`, no size limit.
    /// Kafka treats any negative value as no limit.
    pub retention_bytes: Option<u64>,
    /// `segment.bytes`: default 1073741824 (1 GiB); at least [`MIN_SEGMENT_BYTES`].
    pub segment_bytes: u32,
    /// `segment.ms`: default 604800000 (7 days); at least 1.
    pub segment_ms: i64,
    /// `segment.index.bytes`: default 10485760 (10 MiB); at least 4.
    pub segment_index_bytes: u32,
    /// `index.interval.bytes`: default 4096; at least 0.
    pub index_interval_bytes: u32,
    /// `max.message.bytes`: the largest batch accepted; default 1048588 (1 MiB plus the
    /// 12-byte log overhead); at least 0.
    pub max_message_bytes: u32,
    /// `message.timestamp.type`: default `CreateTime`.
    pub message_timestamp_type: TimestampType,
    /// `message.timestamp.before.max.ms`: default `i64::MAX`; at least 0.
    pub message_timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: default `i64::MAX`; at least 0.
    pub message_timestamp_after_max_ms: i64,
    /// `flush.messages`: default `Long.MAX_VALUE`, `None`, flushing left to the OS; at least
    /// 1. `Some(1)` fsyncs every append.
    pub flush_messages: Option<u64>,
    /// `flush.ms`: default `Long.MAX_VALUE`, `None`; at least 0.
    pub flush_ms: Option<u64>,
    /// `delete.retention.ms`: how long tombstones survive compaction; default 86400000 (1
    /// day); at least 0.
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms`: default 0; at least 0, and not above `max.compaction.lag.ms`.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: default `i64::MAX`; at least 1.
    pub max_compaction_lag_ms: i64,
    /// `min.cleanable.dirty.ratio`: default 0.5; between 0 and 1.
    pub min_cleanable_dirty_ratio: f64,
}

impl Default for TopicConfig {
    /// Kafka's defaults (`LogConfig` and `ServerLogConfigs`).
    fn default() -> Self {
        TopicConfig {
            cleanup_policy: CleanupPolicy::DELETE,
            compression_type: TopicCompression::Producer,
            retention_ms: Some(7 * 24 * 60 * 60 * 1000),
            retention_bytes: None,
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            segment_index_bytes: 10 * 1024 * 1024,
            index_interval_bytes: 4096,
            max_message_bytes: 1024 * 1024 + 12,
            message_timestamp_type: TimestampType::CreateTime,
            message_timestamp_before_max_ms: i64::MAX,
            message_timestamp_after_max_ms: i64::MAX,
            flush_messages: None,
            flush_ms: None,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            min_cleanable_dirty_ratio: 0.5,
        }
    }
}

/// One config as `DescribeConfigs` (`kafka-configs --describe --all`) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Kafka's config name, e.g. `retention.ms`.
    pub name: &'static str,
    /// The effective value in Kafka's string form, e.g. `604800000` or `-1`.
    pub value: String,
    /// Whether the value equals Kafka's default ([`TopicConfig::default`]).
    pub is_default: bool,
    /// What the config does.
    pub doc: &'static str,
}

/// A topic config override that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No topic config has this name.
    #[error("unknown topic config `{name}`{}", did_you_mean(.suggestion))]
    Unknown {
        /// The name given.
        name: String,
        /// The closest known name, when one is close.
        suggestion: Option<&'static str>,
    },
    /// The value does not parse or is out of the config's bounds.
    #[error("invalid value `{value}` for `{name}`: {reason}")]
    InvalidValue {
        /// The config.
        name: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        reason: String,
    },
}

fn did_you_mean(suggestion: &Option<&'static str>) -> String {
    match suggestion {
        Some(name) => format!(" (did you mean `{name}`?)"),
        None => String::new(),
    }
}

const CLEANUP_POLICY: &str = "cleanup.policy";
const COMPRESSION_TYPE: &str = "compression.type";
const MIN_COMPACTION_LAG_MS: &str = "min.compaction.lag.ms";
const MAX_COMPACTION_LAG_MS: &str = "max.compaction.lag.ms";

/// Every topic config Fjord supports, sorted.
pub const TOPIC_CONFIG_NAMES: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "delete.retention.ms",
    "flush.messages",
    "flush.ms",
    "index.interval.bytes",
    "max.compaction.lag.ms",
    "max.message.bytes",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.type",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.index.bytes",
    "segment.ms",
];

/// How one config is parsed into and rendered from a [`TopicConfig`].
struct ConfigDef {
    name: &'static str,
    doc: &'static str,
    /// Parses the value and stores it, or gives the reason it is not allowed.
    apply: fn(&mut TopicConfig, &str) -> Result<(), String>,
    /// The effective value in Kafka's string form.
    render: fn(&TopicConfig) -> String,
}

/// Kafka's `Long.MAX_VALUE`, the "never" of `flush.messages` and `flush.ms`.
const LONG_MAX: i64 = i64::MAX;

/// The definitions, in [`TOPIC_CONFIG_NAMES`] order.
const DEFS: &[ConfigDef] = &[
    ConfigDef {
        name: CLEANUP_POLICY,
        doc: "What happens to old segments: `delete` removes them once past retention.ms or \
              retention.bytes, `compact` keeps only the latest record of each key; \
              `compact,delete` does both.",
        apply: |c, v| {
            c.cleanup_policy = CleanupPolicy::parse(v)?;
            Ok(())
        },
        render: |c| c.cleanup_policy.name().to_string(),
    },
    ConfigDef {
        name: COMPRESSION_TYPE,
        doc: "The codec batches are stored with: `producer` keeps the producer's codec; \
              `uncompressed`, `gzip`, `snappy`, `lz4` or `zstd` recompress every appended batch.",
        apply: |c, v| {
            c.compression_type = TopicCompression::parse(v)?;
            Ok(())
        },
        render: |c| c.compression_type.name().to_string(),
    },
    ConfigDef {
        name: "delete.retention.ms",
        doc: "How long tombstones (null-value records) are kept in a compacted topic once the \
              cleaner reaches them, so that a consumer reading from the start still sees deletes.",
        apply: |c, v| {
            c.delete_retention_ms = long_at_least(v, 0, "at least 0")?;
            Ok(())
        },
        render: |c| c.delete_retention_ms.to_string(),
    },
    ConfigDef {
        name: "flush.messages",
        doc: "fsync the log after this many appended messages; 1 fsyncs every append. The \
              default leaves flushing to the operating system.",
        apply: |c, v| {
            let n = long_at_least(
                v,
                1,
                "at least 1 (1 fsyncs every append; 9223372036854775807 leaves flushing to the OS)",
            )?;
            c.flush_messages = (n != LONG_MAX).then_some(n.unsigned_abs());
            Ok(())
        },
        render: |c| render_optional_long(c.flush_messages, LONG_MAX),
    },
    ConfigDef {
        name: "flush.ms",
        doc: "fsync the log when this many milliseconds have passed since the last flush. The \
              default leaves flushing to the operating system.",
        apply: |c, v| {
            let n =
                long_at_least(v, 0, "at least 0 (9223372036854775807 leaves flushing to the OS)")?;
            c.flush_ms = (n != LONG_MAX).then_some(n.unsigned_abs());
            Ok(())
        },
        render: |c| render_optional_long(c.flush_ms, LONG_MAX),
    },
    ConfigDef {
        name: "index.interval.bytes",
        doc: "How many bytes of batches are appended between two offset index entries; smaller \
              means a denser index and shorter scans on fetch.",
        apply: |c, v| {
            c.index_interval_bytes = int_at_least(v, 0, "at least 0")?;
            Ok(())
        },
        render: |c| c.index_interval_bytes.to_string(),
    },
    ConfigDef {
        name: MAX_COMPACTION_LAG_MS,
        doc: "The longest a record may stay uncompacted in a compacted topic; past it the \
              cleaner compacts the segment whatever the dirty ratio.",
        apply: |c, v| {
            c.max_compaction_lag_ms = long_at_least(v, 1, "at least 1")?;
            Ok(())
        },
        render: |c| c.max_compaction_lag_ms.to_string(),
    },
    ConfigDef {
        name: "max.message.bytes",
        doc: "The largest record batch the topic accepts, measured after compression.",
        apply: |c, v| {
            c.max_message_bytes = int_at_least(v, 0, "at least 0")?;
            Ok(())
        },
        render: |c| c.max_message_bytes.to_string(),
    },
    ConfigDef {
        name: "message.timestamp.after.max.ms",
        doc: "How far a CreateTime timestamp may be ahead of the broker's clock before the batch \
              is rejected; ignored with LogAppendTime.",
        apply: |c, v| {
            c.message_timestamp_after_max_ms = long_at_least(v, 0, "at least 0")?;
            Ok(())
        },
        render: |c| c.message_timestamp_after_max_ms.to_string(),
    },
    ConfigDef {
        name: "message.timestamp.before.max.ms",
        doc: "How far a CreateTime timestamp may be behind the broker's clock before the batch is \
              rejected; ignored with LogAppendTime.",
        apply: |c, v| {
            c.message_timestamp_before_max_ms = long_at_least(v, 0, "at least 0")?;
            Ok(())
        },
        render: |c| c.message_timestamp_before_max_ms.to_string(),
    },
    ConfigDef {
        name: "message.timestamp.type",
        doc: "`CreateTime` keeps the producer's timestamps; `LogAppendTime` stamps each batch \
              with the broker's clock when it is appended.",
        apply: |c, v| {
            c.message_timestamp_type = match v.trim() {
                "CreateTime" => TimestampType::CreateTime,
                "LogAppendTime" => TimestampType::LogAppendTime,
                _ => return Err("must be `CreateTime` or `LogAppendTime`".to_string()),
            };
            Ok(())
        },
        render: |c| c.message_timestamp_type.name().to_string(),
    },
    ConfigDef {
        name: "min.cleanable.dirty.ratio",
        doc: "The share of a compacted log that must be dirty (not yet compacted) before the \
              cleaner compacts it.",
        apply: |c, v| {
            const ALLOWED: &str = "must be a number between 0 and 1";
            let ratio: f64 = v.trim().parse().map_err(|_| ALLOWED.to_string())?;
            if !(0.0..=1.0).contains(&ratio) {
                return Err(ALLOWED.to_string());
            }
            c.min_cleanable_dirty_ratio = ratio;
            Ok(())
        },
        render: |c| java_double(c.min_cleanable_dirty_ratio),
    },
    ConfigDef {
        name: MIN_COMPACTION_LAG_MS,
        doc: "The shortest time a record stays uncompacted in a compacted topic.",
        apply: |c, v| {
            c.min_compaction_lag_ms = long_at_least(v, 0, "at least 0")?;
            Ok(())
        },
        render: |c| c.min_compaction_lag_ms.to_string(),
    },
    ConfigDef {
        name: "retention.bytes",
        doc: "The size a partition may grow to before its oldest segments are deleted (with the \
              `delete` policy); -1 means no size limit.",
        apply: |c, v| {
            let n = parse_long(v, "-1 (unlimited) or a size in bytes")?;
            c.retention_bytes = u64::try_from(n).ok();
            Ok(())
        },
        render: |c| c.retention_bytes.map_or_else(|| "-1".to_string(), |n| n.to_string()),
    },
    ConfigDef {
        name: "retention.ms",
        doc: "How long a segment is kept before it is deleted (with the `delete` policy); -1 \
              means no time limit.",
        apply: |c, v| {
            let n = long_at_least(v, -1, "-1 (unlimited) or at least 0")?;
            c.retention_ms = (n != -1).then_some(n);
            Ok(())
        },
        render: |c| c.retention_ms.unwrap_or(-1).to_string(),
    },
    ConfigDef {
        name: "segment.bytes",
        doc: "The size at which the active segment is closed and a new one started; retention \
              and compaction work a whole segment at a time.",
        apply: |c, v| {
            c.segment_bytes =
                int_at_least(v, MIN_SEGMENT_BYTES as i32, "at least 1048576 (1 MiB)")?;
            Ok(())
        },
        render: |c| c.segment_bytes.to_string(),
    },
    ConfigDef {
        name: "segment.index.bytes",
        doc: "The size a segment's offset and time indexes are preallocated to; a segment is \
              rolled when its index is full.",
        apply: |c, v| {
            c.segment_index_bytes = int_at_least(v, 4, "at least 4")?;
            Ok(())
        },
        render: |c| c.segment_index_bytes.to_string(),
    },
    ConfigDef {
        name: "segment.ms",
        doc: "The age at which the active segment is rolled even if it is not full, so that \
              retention and compaction can reach its records.",
        apply: |c, v| {
            c.segment_ms = long_at_least(v, 1, "at least 1")?;
            Ok(())
        },
        render: |c| c.segment_ms.to_string(),
    },
];

/// Parses a Kafka LONG (a Java `long`, surrounding whitespace ignored).
fn parse_long(value: &str, allowed: &str) -> Result<i64, String> {
    value.trim().parse::<i64>().map_err(|_| format!("not a 64-bit integer; must be {allowed}"))
}

/// Parses a Kafka LONG with `atLeast(min)`.
fn long_at_least(value: &str, min: i64, allowed: &str) -> Result<i64, String> {
    let n = parse_long(value, allowed)?;
    if n < min {
        return Err(format!("must be {allowed}"));
    }
    Ok(n)
}

/// Parses a Kafka INT (a Java `int`) with `atLeast(min)`, `min` not negative.
fn int_at_least(value: &str, min: i32, allowed: &str) -> Result<u32, String> {
    let n = value
        .trim()
        .parse::<i32>()
        .map_err(|_| format!("not a 32-bit integer; must be {allowed}"))?;
    if n < min {
        return Err(format!("must be {allowed}"));
    }
    Ok(n.unsigned_abs())
}

/// `None` renders as Kafka's sentinel.
fn render_optional_long(value: Option<u64>, none: i64) -> String {
    value.map_or_else(|| none.to_string(), |n| n.to_string())
}

/// A double as Java's `Double.toString` writes ordinary values (`0.5`, `1.0`).
fn java_double(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e7 {
        format!("{value:.1}")
    } else {
        format!("{value}")
    }
}

/// Broker-level names (`log.*` and friends) that people pass as topic configs, with the topic
/// config each one is the broker default for (Kafka's `ServerTopicConfigSynonyms`).
const SYNONYMS: &[(&str, &str)] = &[
    ("log.cleanup.policy", "cleanup.policy"),
    ("log.cleaner.delete.retention.ms", "delete.retention.ms"),
    ("log.flush.interval.messages", "flush.messages"),
    ("log.flush.interval.ms", "flush.ms"),
    ("log.flush.scheduler.interval.ms", "flush.ms"),
    ("log.index.interval.bytes", "index.interval.bytes"),
    ("log.cleaner.max.compaction.lag.ms", "max.compaction.lag.ms"),
    ("message.max.bytes", "max.message.bytes"),
    ("log.message.timestamp.after.max.ms", "message.timestamp.after.max.ms"),
    ("log.message.timestamp.before.max.ms", "message.timestamp.before.max.ms"),
    ("log.message.timestamp.type", "message.timestamp.type"),
    ("log.cleaner.min.cleanable.ratio", "min.cleanable.dirty.ratio"),
    ("log.cleaner.min.compaction.lag.ms", "min.compaction.lag.ms"),
    ("log.retention.bytes", "retention.bytes"),
    ("log.retention.ms", "retention.ms"),
    ("log.retention.minutes", "retention.ms"),
    ("log.retention.hours", "retention.ms"),
    ("log.segment.bytes", "segment.bytes"),
    ("log.index.size.max.bytes", "segment.index.bytes"),
    ("log.roll.ms", "segment.ms"),
    ("log.roll.hours", "segment.ms"),
];

/// The known name closest to an unknown one, if any is close: the same name in other case or
/// with `_`/`-` for `.`, the topic config a broker-level name sets, or a name within a small
/// edit distance.
fn suggest(name: &str) -> Option<&'static str> {
    let normalized: String = name
        .trim()
        .chars()
        .map(|c| if c == '_' || c == '-' { '.' } else { c.to_ascii_lowercase() })
        .collect();
    if let Some(&known) = TOPIC_CONFIG_NAMES.iter().find(|&&known| known == normalized) {
        return Some(known);
    }
    if let Some(&(_, known)) = SYNONYMS.iter().find(|&&(broker, _)| broker == normalized) {
        return Some(known);
    }
    let (distance, known) = TOPIC_CONFIG_NAMES
        .iter()
        .map(|&known| (edit_distance(&normalized, known), known))
        .min_by_key(|&(distance, _)| distance)?;
    (distance <= 3 && distance * 2 < normalized.len()).then_some(known)
}

/// Levenshtein distance over bytes.
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, &x) in a.as_bytes().iter().enumerate() {
        current[0] = i + 1;
        for (j, &y) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(x != y);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

fn find_def(name: &str) -> Option<&'static ConfigDef> {
    DEFS.iter().find(|def| def.name == name)
}

impl TopicConfig {
    /// The config of a topic whose broker defaults are `base` and whose overrides are
    /// `overrides` (Kafka's `LogConfig.fromProps`).
    ///
    /// Names are checked first, then each value in name order; the first problem is returned.
    /// Also rejects `min.compaction.lag.ms` above `max.compaction.lag.ms`, as Kafka's
    /// `LogConfig.validateValues` does.
    pub fn from_overrides(
        base: &TopicConfig,
        overrides: &BTreeMap<String, String>,
    ) -> Result<TopicConfig, ConfigError> {
        let mut defs = Vec::with_capacity(overrides.len());
        for (name, value) in overrides {
            let def = find_def(name).ok_or_else(|| ConfigError::Unknown {
                name: name.clone(),
                suggestion: suggest(name),
            })?;
            defs.push((def, value));
        }

        let mut config = base.clone();
        for (def, value) in defs {
            (def.apply)(&mut config, value).map_err(|reason| ConfigError::InvalidValue {
                name: def.name,
                value: value.clone(),
                reason,
            })?;
        }

        if config.min_compaction_lag_ms > config.max_compaction_lag_ms {
            if let Some(value) = overrides.get(MIN_COMPACTION_LAG_MS) {
                return Err(ConfigError::InvalidValue {
                    name: MIN_COMPACTION_LAG_MS,
                    value: value.clone(),
                    reason: format!(
                        "must not be greater than `{MAX_COMPACTION_LAG_MS}` ({})",
                        config.max_compaction_lag_ms
                    ),
                });
            }
            if let Some(value) = overrides.get(MAX_COMPACTION_LAG_MS) {
                return Err(ConfigError::InvalidValue {
                    name: MAX_COMPACTION_LAG_MS,
                    value: value.clone(),
                    reason: format!(
                        "must not be less than `{MIN_COMPACTION_LAG_MS}` ({})",
                        config.min_compaction_lag_ms
                    ),
                });
            }
        }
        Ok(config)
    }

    /// Every config with its effective value in Kafka's string form, sorted by name, as
    /// `kafka-configs --describe --all` lists a topic. Feeding the values back through
    /// [`TopicConfig::from_overrides`] gives this config again.
    pub fn entries(&self) -> Vec<ConfigEntry> {
        let default = TopicConfig::default();
        DEFS.iter()
            .map(|def| {
                let value = (def.render)(self);
                ConfigEntry {
                    name: def.name,
                    is_default: value == (def.render)(&default),
                    value,
                    doc: def.doc,
                }
            })
            .collect()
    }

    /// When the log fsyncs: [`FlushPolicy::Always`] for `flush.messages=1` (which wins over
    /// `flush.ms`), [`FlushPolicy::Interval`] when `flush.ms` is set, [`FlushPolicy::Os`]
    /// otherwise. A `flush.messages` above 1 has no mode of its own and does not change the
    /// result.
    pub fn flush_policy(&self) -> FlushPolicy {
        if self.flush_messages == Some(1) {
            FlushPolicy::Always
        } else if let Some(ms) = self.flush_ms {
            FlushPolicy::Interval(Duration::from_millis(ms))
        } else {
            FlushPolicy::Os
        }
    }
}

/// Checks topic config overrides (names, values, and the compaction lag pair) against Kafka's
/// defaults, as `CreateTopics` with `validateOnly` would.
pub fn validate_overrides(overrides: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    TopicConfig::from_overrides(&TopicConfig::default(), overrides).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|&(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn apply(pairs: &[(&str, &str)]) -> Result<TopicConfig, ConfigError> {
        TopicConfig::from_overrides(&TopicConfig::default(), &overrides(pairs))
    }

    fn value_of(config: &TopicConfig, name: &str) -> String {
        config.entries().into_iter().find(|e| e.name == name).map(|e| e.value).unwrap()
    }

    #[test]
    fn names_are_sorted_and_match_the_definitions() {
        assert!(TOPIC_CONFIG_NAMES.windows(2).all(|w| w[0] < w[1]));
        let defs: Vec<&str> = DEFS.iter().map(|d| d.name).collect();
        assert_eq!(defs, TOPIC_CONFIG_NAMES);
    }

    #[test]
    fn defaults_are_kafkas() {
        let entries: BTreeMap<&str, String> =
            TopicConfig::default().entries().into_iter().map(|e| (e.name, e.value)).collect();
        let expected = [
            ("cleanup.policy", "delete"),
            ("compression.type", "producer"),
            ("delete.retention.ms", "86400000"),
            ("flush.messages", "9223372036854775807"),
            ("flush.ms", "9223372036854775807"),
            ("index.interval.bytes", "4096"),
            ("max.compaction.lag.ms", "9223372036854775807"),
            ("max.message.bytes", "1048588"),
            ("message.timestamp.after.max.ms", "9223372036854775807"),
            ("message.timestamp.before.max.ms", "9223372036854775807"),
            ("message.timestamp.type", "CreateTime"),
            ("min.cleanable.dirty.ratio", "0.5"),
            ("min.compaction.lag.ms", "0"),
            ("retention.bytes", "-1"),
            ("retention.ms", "604800000"),
            ("segment.bytes", "1073741824"),
            ("segment.index.bytes", "10485760"),
            ("segment.ms", "604800000"),
        ];
        assert_eq!(entries.len(), expected.len());
        for (name, value) in expected {
            assert_eq!(entries[name], value, "{name}");
        }
        let d = TopicConfig::default();
        assert_eq!(d.retention_ms, Some(604_800_000));
        assert_eq!(d.retention_bytes, None);
        assert_eq!(d.flush_messages, None);
        assert_eq!(d.flush_ms, None);
        assert_eq!(d.flush_policy(), FlushPolicy::Os);
        assert!(d.cleanup_policy.deletes() && !d.cleanup_policy.compacts());
    }

    #[test]
    fn every_default_string_parses_back_to_the_default() {
        let default = TopicConfig::default();
        for entry in default.entries() {
            assert!(entry.is_default, "{}", entry.name);
            assert!(!entry.doc.is_empty(), "{}", entry.name);
            let parsed = apply(&[(entry.name, &entry.value)]).unwrap();
            assert_eq!(parsed, default, "{} = {}", entry.name, entry.value);
        }
        // All at once too.
        let all: BTreeMap<String, String> =
            default.entries().into_iter().map(|e| (e.name.to_string(), e.value)).collect();
        assert_eq!(TopicConfig::from_overrides(&default, &all).unwrap(), default);
    }

    fn changed_config() -> TopicConfig {
        TopicConfig {
            cleanup_policy: CleanupPolicy::COMPACT_DELETE,
            compression_type: TopicCompression::Codec(Compression::Zstd),
            retention_ms: None,
            retention_bytes: Some(1 << 30),
            segment_bytes: MIN_SEGMENT_BYTES,
            segment_ms: 1,
            segment_index_bytes: 4,
            index_interval_bytes: 0,
            max_message_bytes: 0,
            message_timestamp_type: TimestampType::LogAppendTime,
            message_timestamp_before_max_ms: 0,
            message_timestamp_after_max_ms: 3_600_000,
            flush_messages: Some(1),
            flush_ms: Some(1000),
            delete_retention_ms: 0,
            min_compaction_lag_ms: 5,
            max_compaction_lag_ms: 5,
            min_cleanable_dirty_ratio: 1.0,
        }
    }

    #[test]
    fn entries_round_trip_through_from_overrides() {
        let config = changed_config();
        let entries = config.entries();
        assert!(entries.iter().all(|e| !e.is_default), "{entries:#?}");
        let map: BTreeMap<String, String> =
            entries.into_iter().map(|e| (e.name.to_string(), e.value)).collect();
        assert_eq!(map["min.cleanable.dirty.ratio"], "1.0");
        assert_eq!(map["retention.ms"], "-1");
        assert_eq!(map["cleanup.policy"], "compact,delete");
        assert_eq!(TopicConfig::from_overrides(&TopicConfig::default(), &map).unwrap(), config);

        // A partial change: only the changed entries are not default.
        let config =
            apply(&[("retention.ms", "1000"), ("compression.type", "uncompressed")]).unwrap();
        let not_default: Vec<&str> =
            config.entries().iter().filter(|e| !e.is_default).map(|e| e.name).collect();
        assert_eq!(not_default, ["compression.type", "retention.ms"]);
    }

    #[test]
    fn overrides_apply_on_top_of_the_base() {
        let base = changed_config();
        assert_eq!(TopicConfig::from_overrides(&base, &BTreeMap::new()).unwrap(), base);
        let config =
            TopicConfig::from_overrides(&base, &overrides(&[("segment.ms", "42")])).unwrap();
        assert_eq!(config, TopicConfig { segment_ms: 42, ..base.clone() });
    }

    #[track_caller]
    fn assert_invalid(name: &str, value: &str, reason_contains: &str) {
        match apply(&[(name, value)]) {
            Err(ConfigError::InvalidValue { name: n, value: v, reason }) => {
                assert_eq!(n, name);
                assert_eq!(v, value);
                assert!(reason.contains(reason_contains), "{name}={value}: {reason}");
            }
            other => panic!("{name}={value}: expected InvalidValue, got {other:?}"),
        }
    }

    #[test]
    fn bounds_are_enforced() {
        assert_invalid("retention.ms", "-2", "-1 (unlimited) or at least 0");
        assert_invalid("retention.ms", "1.5", "not a 64-bit integer");
        assert_invalid("segment.bytes", "1048575", "at least 1048576");
        assert_invalid("segment.bytes", "14", "at least 1048576");
        assert_invalid("segment.bytes", "2147483648", "not a 32-bit integer");
        assert_invalid("segment.ms", "0", "at least 1");
        assert_invalid("segment.index.bytes", "3", "at least 4");
        assert_invalid("index.interval.bytes", "-1", "at least 0");
        assert_invalid("max.message.bytes", "-1", "at least 0");
        assert_invalid("max.message.bytes", "lots", "not a 32-bit integer");
        assert_invalid("message.timestamp.before.max.ms", "-1", "at least 0");
        assert_invalid("message.timestamp.after.max.ms", "-1", "at least 0");
        assert_invalid("flush.messages", "0", "at least 1");
        assert_invalid("flush.messages", "9223372036854775808", "not a 64-bit integer");
        assert_invalid("flush.ms", "-1", "at least 0");
        assert_invalid("delete.retention.ms", "-1", "at least 0");
        assert_invalid("min.compaction.lag.ms", "-1", "at least 0");
        assert_invalid("max.compaction.lag.ms", "0", "at least 1");
        assert_invalid("min.cleanable.dirty.ratio", "1.01", "between 0 and 1");
        assert_invalid("min.cleanable.dirty.ratio", "-0.1", "between 0 and 1");
        assert_invalid("min.cleanable.dirty.ratio", "NaN", "between 0 and 1");
        assert_invalid("min.cleanable.dirty.ratio", "half", "between 0 and 1");
        assert_invalid("message.timestamp.type", "createtime", "`CreateTime` or `LogAppendTime`");
        assert_invalid("compression.type", "brotli", "`producer`, `uncompressed`");
        assert_invalid("compression.type", "none", "`uncompressed`");
        assert_invalid("compression.type", "GZIP", "`gzip`");
        assert_invalid("cleanup.policy", "Delete", "`Delete` is not a cleanup policy");
        assert_invalid("cleanup.policy", "compact,compact", "lists `compact` twice");
        assert_invalid("cleanup.policy", "compact,", "empty entry");
    }

    #[test]
    fn bounds_are_inclusive() {
        let c = apply(&[
            ("segment.bytes", "1048576"),
            ("segment.ms", "1"),
            ("segment.index.bytes", "4"),
            ("index.interval.bytes", "0"),
            ("max.message.bytes", "0"),
            ("flush.messages", "1"),
            ("flush.ms", "0"),
            ("delete.retention.ms", "0"),
            ("max.compaction.lag.ms", "1"),
            ("min.cleanable.dirty.ratio", "0"),
            ("retention.ms", "0"),
            ("retention.bytes", "0"),
        ])
        .unwrap();
        assert_eq!(c.segment_bytes, 1_048_576);
        assert_eq!(c.segment_index_bytes, 4);
        assert_eq!(c.flush_messages, Some(1));
        assert_eq!(c.flush_ms, Some(0));
        assert_eq!(c.retention_ms, Some(0));
        assert_eq!(c.retention_bytes, Some(0));
        assert_eq!(c.min_cleanable_dirty_ratio, 0.0);
        let c = apply(&[("min.cleanable.dirty.ratio", "1"), ("max.message.bytes", "2147483647")])
            .unwrap();
        assert_eq!(c.min_cleanable_dirty_ratio, 1.0);
        assert_eq!(c.max_message_bytes, 2_147_483_647);
    }

    #[test]
    fn invalid_value_message_names_config_value_and_rule() {
        let err = apply(&[("retention.ms", "-5")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value `-5` for `retention.ms`: must be -1 (unlimited) or at least 0"
        );
    }

    #[test]
    fn sentinels_map_to_none() {
        let c = apply(&[("retention.ms", "-1"), ("retention.bytes", "-1")]).unwrap();
        assert_eq!((c.retention_ms, c.retention_bytes), (None, None));
        // Kafka's retention.bytes has no lower bound: any negative value means no limit.
        let c = apply(&[("retention.bytes", "-5")]).unwrap();
        assert_eq!(c.retention_bytes, None);
        assert_eq!(value_of(&c, "retention.bytes"), "-1");
        let c = apply(&[
            ("flush.messages", "9223372036854775807"),
            ("flush.ms", "9223372036854775807"),
        ])
        .unwrap();
        assert_eq!((c.flush_messages, c.flush_ms), (None, None));
        let c = apply(&[("flush.messages", "10000"), ("flush.ms", "250")]).unwrap();
        assert_eq!((c.flush_messages, c.flush_ms), (Some(10_000), Some(250)));
    }

    #[test]
    fn values_are_trimmed_as_kafka_does() {
        let c =
            apply(&[("retention.ms", " 1000 "), ("cleanup.policy", " compact , delete ")]).unwrap();
        assert_eq!(c.retention_ms, Some(1000));
        assert_eq!(c.cleanup_policy, CleanupPolicy::COMPACT_DELETE);
    }

    #[test]
    fn cleanup_policies() {
        for (value, delete, compact) in [
            ("delete", true, false),
            ("compact", false, true),
            ("compact,delete", true, true),
            ("delete,compact", true, true),
            ("", false, false),
        ] {
            let policy: CleanupPolicy = value.parse().unwrap();
            assert_eq!((policy.deletes(), policy.compacts()), (delete, compact), "{value:?}");
            assert_eq!(policy, CleanupPolicy::new(delete, compact));
        }
        assert_eq!(CleanupPolicy::default(), CleanupPolicy::DELETE);
        assert_eq!(CleanupPolicy::COMPACT_DELETE.to_string(), "compact,delete");
        assert_eq!(CleanupPolicy::NONE.to_string(), "");
        assert!(matches!(
            "nope".parse::<CleanupPolicy>(),
            Err(ConfigError::InvalidValue { name: "cleanup.policy", .. })
        ));
    }

    #[test]
    fn compression_types() {
        for (value, expected) in [
            ("producer", TopicCompression::Producer),
            ("uncompressed", TopicCompression::Codec(Compression::None)),
            ("gzip", TopicCompression::Codec(Compression::Gzip)),
            ("snappy", TopicCompression::Codec(Compression::Snappy)),
            ("lz4", TopicCompression::Codec(Compression::Lz4)),
            ("zstd", TopicCompression::Codec(Compression::Zstd)),
        ] {
            assert_eq!(value.parse::<TopicCompression>().unwrap(), expected);
            assert_eq!(expected.to_string(), value);
            assert_eq!(apply(&[("compression.type", value)]).unwrap().compression_type, expected);
        }
        assert_eq!(TopicCompression::Producer.resolve(Compression::Lz4), Compression::Lz4);
        assert_eq!(
            TopicCompression::Codec(Compression::None).resolve(Compression::Lz4),
            Compression::None
        );
    }

    #[test]
    fn timestamp_types() {
        let c = apply(&[("message.timestamp.type", "LogAppendTime")]).unwrap();
        assert_eq!(c.message_timestamp_type, TimestampType::LogAppendTime);
        let c = apply(&[("message.timestamp.type", "CreateTime")]).unwrap();
        assert_eq!(c.message_timestamp_type, TimestampType::CreateTime);
    }

    #[test]
    fn compaction_lags_must_be_ordered() {
        let err =
            apply(&[("min.compaction.lag.ms", "10"), ("max.compaction.lag.ms", "5")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value `10` for `min.compaction.lag.ms`: must not be greater than \
             `max.compaction.lag.ms` (5)"
        );
        let base = TopicConfig { min_compaction_lag_ms: 100, ..TopicConfig::default() };
        let err =
            TopicConfig::from_overrides(&base, &overrides(&[("max.compaction.lag.ms", "50")]))
                .unwrap_err();
        assert!(
            matches!(err, ConfigError::InvalidValue { name: "max.compaction.lag.ms", .. }),
            "{err}"
        );
        assert!(apply(&[("min.compaction.lag.ms", "5"), ("max.compaction.lag.ms", "5")]).is_ok());
    }

    #[test]
    fn unknown_configs_suggest_the_closest_name() {
        for (name, suggestion) in [
            ("retention.mss", Some("retention.ms")),
            ("retension.ms", Some("retention.ms")),
            ("retention_ms", Some("retention.ms")),
            ("RETENTION.MS", Some("retention.ms")),
            ("segment-bytes", Some("segment.bytes")),
            ("cleanup.polcy", Some("cleanup.policy")),
            ("message.max.bytes", Some("max.message.bytes")),
            ("log.retention.hours", Some("retention.ms")),
            ("log.segment.bytes", Some("segment.bytes")),
            ("log.roll.ms", Some("segment.ms")),
            ("zzz", None),
            ("preallocate", None),
            ("", None),
        ] {
            assert_eq!(
                apply(&[(name, "1")]).unwrap_err(),
                ConfigError::Unknown { name: name.to_string(), suggestion },
                "{name:?}"
            );
        }
        let err = apply(&[("retention.mss", "1")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown topic config `retention.mss` (did you mean `retention.ms`?)"
        );
        let err = apply(&[("zzz", "1")]).unwrap_err();
        assert_eq!(err.to_string(), "unknown topic config `zzz`");
    }

    #[test]
    fn unknown_names_are_reported_before_bad_values() {
        // "cleanup.policy" sorts before "segment.bytez" but the unknown name wins, as in Kafka.
        let err = apply(&[("cleanup.policy", "bad"), ("segment.bytez", "1")]).unwrap_err();
        assert!(matches!(err, ConfigError::Unknown { .. }), "{err}");
    }

    #[test]
    fn validate_overrides_checks_against_kafka_defaults() {
        assert_eq!(validate_overrides(&BTreeMap::new()), Ok(()));
        assert_eq!(validate_overrides(&overrides(&[("cleanup.policy", "compact")])), Ok(()));
        assert!(validate_overrides(&overrides(&[("segment.ms", "0")])).is_err());
        assert!(validate_overrides(&overrides(&[("nope", "0")])).is_err());
    }

    #[test]
    fn flush_policies() {
        let policy = |pairs: &[(&str, &str)]| apply(pairs).unwrap().flush_policy();
        assert_eq!(policy(&[]), FlushPolicy::Os);
        assert_eq!(policy(&[("flush.messages", "1")]), FlushPolicy::Always);
        assert_eq!(
            policy(&[("flush.ms", "1000")]),
            FlushPolicy::Interval(Duration::from_millis(1000))
        );
        assert_eq!(policy(&[("flush.messages", "1"), ("flush.ms", "1000")]), FlushPolicy::Always);
        assert_eq!(policy(&[("flush.messages", "5")]), FlushPolicy::Os);
        assert_eq!(
            policy(&[("flush.messages", "5"), ("flush.ms", "0")]),
            FlushPolicy::Interval(Duration::ZERO)
        );
    }

    #[test]
    fn doubles_render_as_java_does() {
        assert_eq!(java_double(0.5), "0.5");
        assert_eq!(java_double(1.0), "1.0");
        assert_eq!(java_double(0.0), "0.0");
        assert_eq!(java_double(0.25), "0.25");
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("retention.mss", "retention.ms"), 1);
    }
}
