//! Per-partition metrics of the log, through the `metrics` facade (Kafka's `kafka.log:type=Log`
//! gauges and the `BrokerTopicMetrics` byte rates, per topic-partition).
//!
//! Appends and reads are the hot path, and looking a metric up by name and labels hashes and
//! allocates. So each partition registers its handles once, with its label values shared, and
//! touches them once per append or read, never per record.
//!
//! A handle is bound to the recorder that was installed when it was registered: the `metrics`
//! facade hands out no-op handles while none is, and applications usually open their broker
//! before they install an exporter. [`recorder_installed`] bumps a process-wide generation; a
//! partition whose handles are older registers them again at its next append or read, or at
//! the `LogManager`'s next background pass when it is idle, and its gauges start from the
//! values it last published. Counters start from zero in the new recorder, as after a restart.
//!
//! Every name is listed, with its meaning, in `docs/metrics.md`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use metrics::{Counter, Gauge, Label, SharedString, Unit};
use parking_lot::RwLock;

use crate::TopicPartition;

/// Records appended to a partition by `PartitionLog::append` (transaction markers excluded).
pub const APPEND_RECORDS: &str = "fjord_log_append_records_total";
/// Bytes of the batches appended by `PartitionLog::append`, as stored.
pub const APPEND_BYTES: &str = "fjord_log_append_bytes_total";
/// Records at or after the requested offset in the batches a read returned (control batches
/// excluded).
pub const FETCH_RECORDS: &str = "fjord_log_fetch_records_total";
/// Bytes of the batches a read returned.
pub const FETCH_BYTES: &str = "fjord_log_fetch_bytes_total";
/// The log start offset.
pub const LOG_START_OFFSET: &str = "fjord_log_start_offset";
/// The log end offset.
pub const LOG_END_OFFSET: &str = "fjord_log_end_offset";
/// The high watermark.
pub const HIGH_WATERMARK: &str = "fjord_log_high_watermark";
/// The last stable offset.
pub const LAST_STABLE_OFFSET: &str = "fjord_log_last_stable_offset";
/// Bytes of the partition's segment files.
pub const SIZE_BYTES: &str = "fjord_log_size_bytes";
/// Number of segments.
pub const SEGMENTS: &str = "fjord_log_segments";

static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Tells the log that a metrics recorder was installed: every open partition registers its
/// handles again with it (at its next append or read, or within one background pass of the
/// `LogManager`). `fjord_broker::metrics::install_prometheus_exporter` calls it; call it after
/// installing a recorder of your own if any broker or log was opened before.
pub fn recorder_installed() {
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

/// The current recorder generation: a handle registered under another generation may be bound
/// to no recorder (or an old one) and should be registered again. For crates that cache
/// handles the way the log does.
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// Registers the descriptions (Prometheus `# HELP` and units) of the log's metrics with the
/// installed recorder.
pub fn describe() {
    metrics::describe_counter!(
        APPEND_RECORDS,
        Unit::Count,
        "Records appended to the partition by producers and coordinators (transaction markers excluded)"
    );
    metrics::describe_counter!(
        APPEND_BYTES,
        Unit::Bytes,
        "Bytes of record batches appended to the partition, as stored"
    );
    metrics::describe_counter!(
        FETCH_RECORDS,
        Unit::Count,
        "Records at or after the fetch offset in the batches reads of the partition returned"
    );
    metrics::describe_counter!(
        FETCH_BYTES,
        Unit::Bytes,
        "Bytes of record batches reads of the partition returned"
    );
    metrics::describe_gauge!(LOG_START_OFFSET, "The partition's log start offset");
    metrics::describe_gauge!(
        LOG_END_OFFSET,
        "The partition's log end offset (next offset to assign)"
    );
    metrics::describe_gauge!(
        HIGH_WATERMARK,
        "The partition's high watermark (the log end offset on a single node)"
    );
    metrics::describe_gauge!(
        LAST_STABLE_OFFSET,
        "The partition's last stable offset: the first offset of its earliest open transaction, else the high watermark"
    );
    metrics::describe_gauge!(SIZE_BYTES, Unit::Bytes, "Bytes of the partition's segment files");
    metrics::describe_gauge!(SEGMENTS, Unit::Count, "Number of segments of the partition");
}

/// The values of a partition's gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LogOffsets {
    pub(crate) log_start_offset: i64,
    pub(crate) log_end_offset: i64,
    pub(crate) last_stable_offset: i64,
    pub(crate) size_bytes: u64,
    pub(crate) segments: u64,
}

/// What the gauges last showed, so that handles registered with a later recorder start there.
#[derive(Default)]
struct Published {
    log_start_offset: AtomicI64,
    log_end_offset: AtomicI64,
    last_stable_offset: AtomicI64,
    size_bytes: AtomicU64,
    segments: AtomicU64,
}

impl Published {
    fn store(&self, o: &LogOffsets) {
        self.log_start_offset.store(o.log_start_offset, Ordering::Relaxed);
        self.log_end_offset.store(o.log_end_offset, Ordering::Relaxed);
        self.last_stable_offset.store(o.last_stable_offset, Ordering::Relaxed);
        self.size_bytes.store(o.size_bytes, Ordering::Relaxed);
        self.segments.store(o.segments, Ordering::Relaxed);
    }

    fn load(&self) -> LogOffsets {
        LogOffsets {
            log_start_offset: self.log_start_offset.load(Ordering::Relaxed),
            log_end_offset: self.log_end_offset.load(Ordering::Relaxed),
            last_stable_offset: self.last_stable_offset.load(Ordering::Relaxed),
            size_bytes: self.size_bytes.load(Ordering::Relaxed),
            segments: self.segments.load(Ordering::Relaxed),
        }
    }
}

struct Handles {
    generation: u64,
    append_records: Counter,
    append_bytes: Counter,
    fetch_records: Counter,
    fetch_bytes: Counter,
    log_start_offset: Gauge,
    log_end_offset: Gauge,
    high_watermark: Gauge,
    last_stable_offset: Gauge,
    size_bytes: Gauge,
    segments: Gauge,
}

impl Handles {
    fn register(labels: &[Label; 2], generation: u64, offsets: &LogOffsets) -> Handles {
        let handles = Handles {
            generation,
            append_records: metrics::counter!(APPEND_RECORDS, labels.iter()),
            append_bytes: metrics::counter!(APPEND_BYTES, labels.iter()),
            fetch_records: metrics::counter!(FETCH_RECORDS, labels.iter()),
            fetch_bytes: metrics::counter!(FETCH_BYTES, labels.iter()),
            log_start_offset: metrics::gauge!(LOG_START_OFFSET, labels.iter()),
            log_end_offset: metrics::gauge!(LOG_END_OFFSET, labels.iter()),
            high_watermark: metrics::gauge!(HIGH_WATERMARK, labels.iter()),
            last_stable_offset: metrics::gauge!(LAST_STABLE_OFFSET, labels.iter()),
            size_bytes: metrics::gauge!(SIZE_BYTES, labels.iter()),
            segments: metrics::gauge!(SEGMENTS, labels.iter()),
        };
        handles.set_gauges(offsets);
        handles
    }

    fn set_gauges(&self, o: &LogOffsets) {
        // Offsets stay below 2^53 in any real log, so f64 holds them exactly.
        self.log_start_offset.set(o.log_start_offset as f64);
        self.log_end_offset.set(o.log_end_offset as f64);
        // One node: the high watermark is the log end offset (design notes, section 2).
        self.high_watermark.set(o.log_end_offset as f64);
        self.last_stable_offset.set(o.last_stable_offset as f64);
        self.size_bytes.set(o.size_bytes as f64);
        self.segments.set(o.segments as f64);
    }
}

/// One partition's metric handles (labels `topic` and `partition`).
pub(crate) struct PartitionMetrics {
    labels: [Label; 2],
    published: Published,
    handles: RwLock<Handles>,
}

impl PartitionMetrics {
    pub(crate) fn new(tp: &TopicPartition, offsets: &LogOffsets) -> PartitionMetrics {
        let labels = [
            Label::new("topic", SharedString::from(tp.topic.clone())),
            Label::new("partition", tp.partition.to_string()),
        ];
        let published = Published::default();
        published.store(offsets);
        let handles = RwLock::new(Handles::register(&labels, generation(), offsets));
        PartitionMetrics { labels, published, handles }
    }

    /// Runs `f` with handles bound to the current recorder, registering them again first if a
    /// recorder was installed since.
    fn with_handles(&self, f: impl FnOnce(&Handles)) {
        let generation = generation();
        {
            let handles = self.handles.read();
            if handles.generation == generation {
                f(&handles);
                return;
            }
        }
        let mut handles = self.handles.write();
        if handles.generation != generation {
            *handles = Handles::register(&self.labels, generation, &self.published.load());
        }
        f(&handles);
    }

    /// Registers the handles again if a recorder was installed since (idle partitions).
    pub(crate) fn refresh(&self) {
        self.with_handles(|_| {});
    }

    /// The segment bytes last published: appends add to it instead of summing the segments.
    pub(crate) fn size_bytes(&self) -> u64 {
        self.published.size_bytes.load(Ordering::Relaxed)
    }

    /// Publishes new gauge values. Callers hold the partition lock, so values are published in
    /// the order they were reached.
    pub(crate) fn publish(&self, offsets: &LogOffsets) {
        self.published.store(offsets);
        self.with_handles(|h| h.set_gauges(offsets));
    }

    /// Counts an append and publishes the offsets it reached.
    pub(crate) fn appended(&self, records: u64, bytes: u64, offsets: &LogOffsets) {
        self.published.store(offsets);
        self.with_handles(|h| {
            h.append_records.increment(records);
            h.append_bytes.increment(bytes);
            h.set_gauges(offsets);
        });
    }

    /// Counts a read that returned data.
    pub(crate) fn fetched(&self, records: u64, bytes: u64) {
        self.with_handles(|h| {
            h.fetch_records.increment(records);
            h.fetch_bytes.increment(bytes);
        });
    }
}
