//! The global stream thread (Kafka's `GlobalStreamThread`): keeps the global stores (the
//! `GlobalKTable`s) of this instance up to date with every partition of their topics.
//!
//! It is an OS thread with its own single-threaded tokio runtime, like the stream threads,
//! and reads with a consumer outside the application's group. `Streams::start` waits for it
//! to bootstrap (read every partition up to the end offsets it found when it started) before
//! it starts the stream threads, so the first records they join see the whole table; after
//! that it keeps polling and applying what arrives until the application stops.
//!
//! A global store has no changelog: its topic is its changelog. Each poll's records are
//! written in one atomic batch with the offsets they bring each partition up to
//! (`KeyValueBytesStore::write_with_partition_offsets`), so a restart with the local state kept
//! reads only what was appended since.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fjord_log::TopicPartition;
use fjord_state::{KeyValueBytesStore, WriteBatch};
use tokio::sync::oneshot;

use crate::backend::RestoreConsumer;
use crate::error::StreamsError;
use crate::node::RawRecord;
use crate::runtime::{ProcessingGuarantee, Shared};

/// One global store and the partitions of its topic.
struct GlobalStore {
    name: String,
    topic: String,
    engine: Arc<dyn KeyValueBytesStore>,
    partitions: u32,
}

impl GlobalStore {
    fn error(&self, message: impl std::fmt::Display) -> StreamsError {
        StreamsError::State { store: self.name.clone(), message: message.to_string() }
    }

    fn partitions(&self) -> impl Iterator<Item = TopicPartition> + '_ {
        (0..self.partitions).map(|p| TopicPartition::new(self.topic.as_str(), p))
    }
}

/// Starts the global stream thread if the topology has global tables, and waits until it has
/// bootstrapped every global store. Returns its handle, for `Streams::close` to join.
pub(crate) async fn start(
    shared: &Arc<Shared>,
) -> Result<Option<std::thread::JoinHandle<()>>, StreamsError> {
    let mut topics = Vec::new();
    for spec in shared.topology.global_stores() {
        let topic = spec.global_topic.clone().unwrap_or_default();
        let Some(partitions) = shared.backend.partition_count(&topic).await? else {
            return Err(StreamsError::Topology(format!(
                "topic `{topic}` of global table `{}` does not exist: create it before starting the application",
                spec.name
            )));
        };
        topics.push((spec.clone(), partitions));
    }
    if topics.is_empty() {
        return Ok(None);
    }
    let (bootstrapped, done) = oneshot::channel();
    let name = format!("{}-GlobalStreamThread", shared.config.application_id);
    let thread_shared = shared.clone();
    let thread_name = name.clone();
    let handle = std::thread::Builder::new()
        .name(name)
        .spawn(move || run(thread_shared, thread_name, topics, bootstrapped))
        .map_err(|e| {
            StreamsError::IllegalState(format!("cannot start the global stream thread: {e}"))
        })?;
    match done.await {
        Ok(Ok(())) => Ok(Some(handle)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(StreamsError::IllegalState(
            "the global stream thread stopped before it bootstrapped the global stores".into(),
        )),
    }
}

type Bootstrapped = oneshot::Sender<Result<(), StreamsError>>;

fn run(
    shared: Arc<Shared>,
    name: String,
    topics: Vec<(Arc<crate::state::StoreSpec>, u32)>,
    bootstrapped: Bootstrapped,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let error = StreamsError::IllegalState(format!(
                "cannot start the global stream thread's runtime: {e}"
            ));
            let _ = bootstrapped.send(Err(error));
            return;
        }
    };
    // The global stores stay open when this thread stops: stream threads still stopping may
    // open a task that reads them. `Streams::close` closes them after every thread stopped.
    let result = runtime.block_on(GlobalStreamThread::run(&shared, &name, topics, bootstrapped));
    if let Err(e) = result {
        crate::runtime::fail(&shared, &name, e);
    }
}

struct GlobalStreamThread {
    stores: Vec<GlobalStore>,
    consumer: Box<dyn RestoreConsumer>,
}

impl GlobalStreamThread {
    /// Bootstraps, reports the outcome on `bootstrapped`, then keeps the stores up to date.
    /// An error after the bootstrap is returned (and stops the application).
    async fn run(
        shared: &Arc<Shared>,
        name: &str,
        topics: Vec<(Arc<crate::state::StoreSpec>, u32)>,
        bootstrapped: Bootstrapped,
    ) -> Result<(), StreamsError> {
        let mut thread = match GlobalStreamThread::bootstrap(shared, name, topics).await {
            Ok(thread) => thread,
            Err(e) => {
                let _ = bootstrapped.send(Err(e));
                return Ok(());
            }
        };
        let _ = bootstrapped.send(Ok(()));
        while !shared.shutdown.load(Ordering::Acquire) {
            thread.poll(shared.config.poll_timeout).await?;
        }
        tracing::info!(thread = name, "global stream thread stopped");
        Ok(())
    }

    /// Opens the stores and reads every partition from the offset its store recorded up to
    /// the end offsets of now.
    async fn bootstrap(
        shared: &Arc<Shared>,
        name: &str,
        topics: Vec<(Arc<crate::state::StoreSpec>, u32)>,
    ) -> Result<GlobalStreamThread, StreamsError> {
        let read_committed = shared.config.processing_guarantee == ProcessingGuarantee::ExactlyOnce;
        let consumer = shared
            .backend
            .restore_consumer(format!("{name}-global-consumer"), read_committed)
            .await?;
        shared.add_waker(consumer.waker());
        let mut stores = Vec::new();
        for (spec, partitions) in topics {
            stores.push(GlobalStore {
                engine: shared.stores.open_global(&spec)?,
                name: spec.name.clone(),
                topic: spec.global_topic.clone().unwrap_or_default(),
                partitions,
            });
        }
        let mut assigned = Vec::new();
        for store in &stores {
            let recorded = store.engine.partition_offsets().map_err(|e| store.error(e))?;
            for tp in store.partitions() {
                let from = recorded.get(&tp.partition).copied().unwrap_or(0);
                assigned.push((tp, from));
            }
        }
        let mut thread = GlobalStreamThread { stores, consumer };
        thread.consumer.assign(&assigned)?;
        let tps: Vec<TopicPartition> = assigned.into_iter().map(|(tp, _)| tp).collect();
        let ends = shared.backend.end_offsets(&tps, read_committed).await?;
        let started = std::time::Instant::now();
        let mut read = 0;
        loop {
            let mut behind = false;
            for (tp, end) in tps.iter().zip(&ends) {
                behind |= thread.consumer.position(tp)? < *end;
            }
            if !behind {
                break;
            }
            if shared.shutdown.load(Ordering::Acquire) {
                return Err(StreamsError::IllegalState(
                    "shut down while bootstrapping the global stores".into(),
                ));
            }
            read += thread.poll(Duration::from_millis(100)).await?;
        }
        shared.restored.fetch_add(read, Ordering::Relaxed);
        tracing::info!(
            thread = name,
            records = read,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "global stores bootstrapped"
        );
        Ok(thread)
    }

    /// Polls once and writes what arrived to the stores, each store's records in one batch
    /// with the offsets they bring its partitions up to. Returns the records applied.
    async fn poll(&mut self, timeout: Duration) -> Result<u64, StreamsError> {
        let records = self.consumer.poll(timeout).await?;
        if records.is_empty() {
            return Ok(0);
        }
        let count = records.len() as u64;
        let mut batches: BTreeMap<usize, (WriteBatch, BTreeSet<u32>)> = BTreeMap::new();
        for RawRecord { topic, partition, key, value, .. } in records {
            let Some(i) = self.stores.iter().position(|s| *s.topic == *topic) else { continue };
            let (batch, partitions) = batches.entry(i).or_default();
            batch.put_or_delete(
                key.map(|k| k.to_vec()).unwrap_or_default(),
                value.map(|v| v.to_vec()),
            );
            partitions.insert(partition);
        }
        for (i, (batch, partitions)) in batches {
            let store = &self.stores[i];
            let mut offsets = Vec::with_capacity(partitions.len());
            for partition in partitions {
                let tp = TopicPartition::new(store.topic.as_str(), partition);
                offsets.push((partition, self.consumer.position(&tp)?));
            }
            store
                .engine
                .write_with_partition_offsets(&batch, &offsets)
                .map_err(|e| store.error(e))?;
        }
        metrics::counter!("fjord_streams_global_records_total").increment(count);
        Ok(count)
    }
}
