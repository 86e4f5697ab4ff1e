//! The help text of the streams runtime's metrics, for the Prometheus exporter
//! (`docs/metrics.md` lists them all with their labels).
//!
//! The metrics themselves are emitted where they happen: the stream threads (commits,
//! records, restoration), the tasks and processor nodes (records and sampled latency,
//! exported at each commit), the record caches and store engines (hits, misses, entries), and
//! the error handlers (dropped and dead-letter records).

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Registers the help text of every `fjord_streams_*` metric with the installed recorder.
pub(crate) fn describe() {
    let counters = [
        ("fjord_streams_records_processed_total", "Records a stream thread processed"),
        ("fjord_streams_task_records_total", "Records a task processed"),
        ("fjord_streams_processor_records_total", "Records a processor node of a task processed"),
        (
            "fjord_streams_failed_commits_total",
            "Commits that failed and were rolled back to the last committed state",
        ),
        ("fjord_streams_restored_records_total", "Changelog records replayed into a store"),
        ("fjord_streams_global_records_total", "Records read into global stores"),
        (
            "fjord_streams_dropped_records_total",
            "Records dropped: late, invalid timestamp, null key, or by a LogAndContinue handler",
        ),
        (
            "fjord_streams_dead_letter_records_total",
            "Records sent to the dead-letter topic by a handler",
        ),
        ("fjord_streams_store_cache_hits_total", "Reads a store's record cache answered"),
        (
            "fjord_streams_store_cache_misses_total",
            "Reads a store's record cache passed to the engine",
        ),
    ];
    for (name, help) in counters {
        describe_counter!(name, Unit::Count, help);
    }
    let histograms = [
        ("fjord_streams_commit_latency_seconds", "Time a stream thread's commit took"),
        (
            "fjord_streams_task_latency_seconds",
            "Time a task took to process one record (one record in 64 is timed)",
        ),
        (
            "fjord_streams_processor_latency_seconds",
            "Time a processor node took for one record, the nodes it forwards to included (one in 64 timed)",
        ),
        ("fjord_streams_restore_seconds", "Time a store's restoration from its changelog took"),
    ];
    for (name, help) in histograms {
        describe_histogram!(name, Unit::Seconds, help);
    }
    describe_gauge!(
        "fjord_streams_restore_remaining_records",
        Unit::Count,
        "Changelog records a restoring store has still to replay"
    );
    describe_gauge!(
        "fjord_streams_store_entries",
        Unit::Count,
        "Entries in a task's store (RocksDB's estimate), as of the last commit"
    );
}
