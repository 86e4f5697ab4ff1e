//! Exporting Fjord's metrics to Prometheus.
//!
//! Every crate emits its metrics through the `metrics` facade, which records nothing until a
//! recorder is installed in the process. [`install_prometheus_exporter`] installs one from
//! `metrics-exporter-prometheus` and serves its text format over HTTP, so that an application
//! enables metrics with one line:
//!
//! ```no_run
//! # fn main() -> Result<(), fjord_broker::metrics::MetricsError> {
//! let exporter = fjord_broker::metrics::install_prometheus_exporter("0.0.0.0:9464".parse().unwrap())?;
//! println!("scrape http://{}/metrics", exporter.local_addr());
//! # Ok(())
//! # }
//! ```
//!
//! The exporter runs on a thread of its own with a one-thread tokio runtime, not on the
//! caller's runtime: it then needs no runtime from the caller, keeps answering scrapes while
//! stream threads keep theirs busy, and outlives whichever runtime installed it (the recorder
//! is process-wide, so the endpoint should be too).
//!
//! Histograms whose name ends in `_seconds` are exported as Prometheus histograms with the
//! buckets of [`LATENCY_BUCKETS_SECONDS`] (so `histogram_quantile` works across instances);
//! any other histogram would be a summary.
//!
//! Handles that the log and the consumers cache are registered again with the new recorder
//! (see `fjord_log::metrics`), so installing after a broker is open loses nothing but the
//! counts from before. `docs/metrics.md` lists every metric.

use std::net::SocketAddr;
use std::sync::mpsc;

use metrics::Unit;
use metrics_exporter_prometheus::{
    BuildError, ExporterFuture, Matcher, PrometheusBuilder, PrometheusHandle,
};

/// Upper bounds, in seconds, of the histogram buckets of every `_seconds` metric: from 100 µs
/// (an in-process append or commit) to a minute (a rebalance or a store restoration).
pub const LATENCY_BUCKETS_SECONDS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// Why the Prometheus exporter did not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Port 0 was asked for.
    #[error(
        "the Prometheus exporter cannot listen on {addr}: with port 0 the system picks a port that the exporter cannot report, so nothing could scrape it; give a fixed port"
    )]
    EphemeralPort {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The address could not be bound.
    #[error(
        "the Prometheus exporter cannot listen on {addr}: {reason}; if the port is in use (by another process, or another exporter in this one), pick another address"
    )]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// What the system answered.
        reason: String,
    },
    /// The process already has a metrics recorder (this exporter, or another one).
    #[error(
        "the Prometheus exporter on {addr} was not started: this process already has a metrics recorder; install the exporter once per process, before any other recorder"
    )]
    RecorderAlreadyInstalled {
        /// The address asked for (now free again).
        addr: SocketAddr,
    },
    /// The exporter's thread or runtime could not be started.
    #[error("the Prometheus exporter on {addr} could not start: {reason}")]
    Startup {
        /// The address asked for.
        addr: SocketAddr,
        /// What failed.
        reason: String,
    },
}

/// The running exporter. Dropping it does not stop the endpoint: the recorder and its HTTP
/// listener live as long as the process.
#[derive(Clone)]
pub struct PrometheusExporter {
    addr: SocketAddr,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for PrometheusExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusExporter").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl PrometheusExporter {
    /// The address the endpoint listens on. Any path answers with the metrics (`/metrics` by
    /// convention), except `/health`.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page a scrape would get now, in Prometheus's text format (for logs, a CLI, tests).
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

/// Installs the process-wide metrics recorder and serves it for Prometheus on `addr` (HTTP
/// GET, any path). Call it once, early; it needs no tokio runtime and may be called from one
/// (it blocks for the milliseconds it takes to bind the address and start the exporter's
/// thread).
///
/// The port must be fixed: the exporter cannot report the port the system would pick for
/// port 0 ([`MetricsError::EphemeralPort`]). Nothing is installed when it fails: a port in
/// use is [`MetricsError::Listen`], a recorder already installed is
/// [`MetricsError::RecorderAlreadyInstalled`] (and the port is released).
pub fn install_prometheus_exporter(addr: SocketAddr) -> Result<PrometheusExporter, MetricsError> {
    if addr.port() == 0 {
        return Err(MetricsError::EphemeralPort { addr });
    }
    let builder = PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS_SECONDS)
        .map_err(|e| MetricsError::Startup { addr, reason: e.to_string() })?;
    let (started_tx, started_rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("fjord-prometheus".into())
        .spawn(move || run_exporter(addr, builder, started_tx))
        .map_err(|e| MetricsError::Startup {
            addr,
            reason: format!("cannot spawn its thread: {e}"),
        })?;
    let handle = started_rx.recv().map_err(|_| MetricsError::Startup {
        addr,
        reason: "its thread stopped before reporting".into(),
    })??;
    fjord_log::metrics::recorder_installed();
    fjord_log::metrics::describe();
    describe();
    tracing::info!(%addr, "Prometheus metrics exporter listening");
    Ok(PrometheusExporter { addr, handle })
}

/// The exporter's thread: starts the exporter, reports, then serves until the process ends.
fn run_exporter(
    addr: SocketAddr,
    builder: PrometheusBuilder,
    started: mpsc::SyncSender<Result<PrometheusHandle, MetricsError>>,
) {
    let (runtime, exporter, handle) = match start_exporter(addr, builder) {
        Ok(running) => running,
        Err(e) => {
            // Everything `start_exporter` made is dropped by now, on this thread outside any
            // runtime: the port is free again when the caller hears of the failure.
            let _ = started.send(Err(e));
            return;
        }
    };
    if started.send(Ok(handle)).is_err() {
        // The caller is gone (its thread panicked); the recorder stays installed, so keep
        // serving it.
        tracing::warn!(%addr, "Prometheus exporter started without a caller waiting for it");
    }
    if let Err(e) = runtime.block_on(exporter) {
        tracing::error!(%addr, error = ?e, "Prometheus metrics exporter stopped");
    }
}

/// Binds the listener and installs the recorder. On failure the listener is dropped before
/// the runtime (locals drop in reverse order), and the runtime takes the upkeep task with it.
fn start_exporter(
    addr: SocketAddr,
    builder: PrometheusBuilder,
) -> Result<(tokio::runtime::Runtime, ExporterFuture, PrometheusHandle), MetricsError> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
            MetricsError::Startup { addr, reason: format!("cannot build its tokio runtime: {e}") }
        })?;
    // `build` binds the listener and spawns the upkeep task: it needs the runtime's context.
    let built = {
        let _context = runtime.enter();
        builder.build()
    };
    let (recorder, exporter) = built.map_err(|e| match e {
        BuildError::FailedToCreateHTTPListener(reason) => MetricsError::Listen { addr, reason },
        e => MetricsError::Startup { addr, reason: e.to_string() },
    })?;
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        return Err(MetricsError::RecorderAlreadyInstalled { addr });
    }
    Ok((runtime, exporter, handle))
}

/// Registers the descriptions (Prometheus `# HELP` and units) of the broker's and its clients'
/// metrics with the installed recorder.
pub fn describe() {
    metrics::describe_counter!(
        "fjord_producer_records_total",
        Unit::Count,
        "Records a producer's sender appended successfully"
    );
    metrics::describe_counter!(
        "fjord_producer_bytes_total",
        Unit::Bytes,
        "Bytes of the record batches a producer's sender appended successfully"
    );
    metrics::describe_counter!(
        "fjord_producer_record_errors_total",
        Unit::Count,
        "Records in batches whose append failed"
    );
    metrics::describe_histogram!(
        "fjord_producer_request_latency_seconds",
        Unit::Seconds,
        "Time a producer's sender took to append one batch (including the fsync under flush.messages=1)"
    );
    metrics::describe_histogram!(
        "fjord_producer_transaction_commit_seconds",
        Unit::Seconds,
        "Time a transactional producer's commit_transaction or abort_transaction took to end the transaction"
    );
    metrics::describe_gauge!(
        "fjord_consumer_lag",
        Unit::Count,
        "Records of the partition the group's consumer has not fetched yet: high watermark (last stable offset under read_committed) minus the offset after its last fetch"
    );
    metrics::describe_counter!(
        "fjord_consumer_records_total",
        Unit::Count,
        "Records poll returned to the application"
    );
    metrics::describe_histogram!(
        "fjord_consumer_commit_latency_seconds",
        Unit::Seconds,
        "Time a consumer's offset commit took, until the offsets were in __consumer_offsets"
    );
    metrics::describe_counter!(
        "fjord_group_rebalances_total",
        Unit::Count,
        "Rebalances the group coordinator started for the group"
    );
    metrics::describe_histogram!(
        "fjord_group_rebalance_seconds",
        Unit::Seconds,
        "Time from the start of a rebalance until the group is stable again (or empty)"
    );
    metrics::describe_counter!(
        "fjord_group_offset_commits_total",
        Unit::Count,
        "Partition offsets committed for the group (transactional ones when their transaction commits)"
    );
    metrics::describe_counter!(
        "fjord_transactions_total",
        Unit::Count,
        "Transactions the transaction coordinator completed, by result (commit or abort; aborts include timed-out and fenced transactions)"
    );
}
