//! A task: one partition's worth of a sub-topology, with its processors, its input queues and
//! the offsets it has consumed.
//!
//! Records from several input partitions are processed in timestamp order: the task always
//! takes the queue whose first record is oldest (Kafka's `PartitionGroup`). Stream time is
//! the largest timestamp processed so far; stream-time punctuations fire as it passes them.

use std::collections::VecDeque;
use std::sync::Arc;

use fjord_log::TopicPartition;

use crate::TaskId;
use crate::error::StreamsError;
use crate::graph::NodeId;
use crate::node::{LATENCY_SAMPLE, LifeRef, RawRecord, SourceRef, TaskContext, timed_if};
use crate::processor::PunctuationType;
use crate::state::StoreRef;

/// Queued records of one input partition and the offset to commit for it.
struct InputQueue {
    partition: TopicPartition,
    records: VecDeque<RawRecord>,
    /// Next offset to commit, once a record was processed.
    next_offset: Option<i64>,
}

/// One task.
pub(crate) struct Task {
    pub(crate) id: TaskId,
    sources: Vec<(Arc<str>, SourceRef, NodeId)>,
    lifecycles: Vec<(NodeId, LifeRef)>,
    /// The task's state stores.
    pub(crate) stores: Vec<StoreRef>,
    pub(crate) ctx: TaskContext,
    queues: Vec<InputQueue>,
    /// Whether anything was processed since the last commit.
    pub(crate) dirty: bool,
    initialized: bool,
    pub(crate) processed: u64,
    /// Changelog records replayed into the stores when the task started.
    pub(crate) restored_records: u64,
    metrics: TaskMetrics,
}

/// A task's metrics (Kafka Streams' task-level `process-total`/`process-latency` and the state
/// stores' record cache hits): counted in the task, handed to the registry at each commit.
struct TaskMetrics {
    processed_total: metrics::Counter,
    processed_exported: u64,
    latency: metrics::Histogram,
    /// Per store: cache hits and misses, their exported counts, and the store's entries.
    stores: Vec<(metrics::Counter, metrics::Counter, (u64, u64), metrics::Gauge)>,
}

impl Task {
    pub(crate) fn new(
        id: TaskId,
        sources: Vec<(Arc<str>, SourceRef, NodeId)>,
        lifecycles: Vec<(NodeId, LifeRef)>,
        stores: Vec<StoreRef>,
        ctx: TaskContext,
    ) -> Self {
        let task = [("application", ctx.application_id.to_string()), ("task", id.to_string())];
        let metrics = TaskMetrics {
            processed_total: metrics::counter!("fjord_streams_task_records_total", &task),
            processed_exported: 0,
            latency: metrics::histogram!("fjord_streams_task_latency_seconds", &task),
            stores: stores
                .iter()
                .map(|store| {
                    let mut labels = task.to_vec();
                    labels.push(("store", store.borrow().spec().name.clone()));
                    (
                        metrics::counter!("fjord_streams_store_cache_hits_total", &labels),
                        metrics::counter!("fjord_streams_store_cache_misses_total", &labels),
                        (0, 0),
                        metrics::gauge!("fjord_streams_store_entries", &labels),
                    )
                })
                .collect(),
        };
        Task {
            id,
            sources,
            lifecycles,
            stores,
            ctx,
            queues: Vec::new(),
            dirty: false,
            initialized: false,
            processed: 0,
            restored_records: 0,
            metrics,
        }
    }

    /// Runs every processor's `init` once.
    pub(crate) fn initialize(&mut self) -> Result<(), StreamsError> {
        if self.initialized {
            return Ok(());
        }
        self.initialized = true;
        for (_, node) in &self.lifecycles {
            node.borrow_mut().init(&mut self.ctx);
        }
        self.take_failure()
    }

    /// Queues fetched records of one input partition.
    pub(crate) fn add_records(
        &mut self,
        tp: &TopicPartition,
        records: impl IntoIterator<Item = RawRecord>,
    ) {
        let index = match self.queues.iter().position(|q| q.partition == *tp) {
            Some(i) => i,
            None => {
                self.queues.push(InputQueue {
                    partition: tp.clone(),
                    records: VecDeque::new(),
                    next_offset: None,
                });
                self.queues.len() - 1
            }
        };
        self.queues[index].records.extend(records);
    }

    /// Records queued and not processed.
    pub(crate) fn buffered(&self) -> usize {
        self.queues.iter().map(|q| q.records.len()).sum()
    }

    /// Processes up to `max` queued records in timestamp order. Returns how many.
    pub(crate) fn process(&mut self, max: usize) -> Result<usize, StreamsError> {
        let mut done = 0;
        while done < max {
            let index = if self.queues.len() == 1 {
                0
            } else {
                let Some(index) = self
                    .queues
                    .iter()
                    .enumerate()
                    .filter_map(|(i, q)| q.records.front().map(|r| (i, r.timestamp)))
                    .min_by_key(|&(_, ts)| ts)
                    .map(|(i, _)| i)
                else {
                    break;
                };
                index
            };
            let Some(record) = self.queues.get_mut(index).and_then(|q| q.records.pop_front())
            else {
                break;
            };
            self.process_record(index, record)?;
            done += 1;
        }
        Ok(done)
    }

    fn process_record(&mut self, index: usize, record: RawRecord) -> Result<(), StreamsError> {
        // Most tasks read one topic: compare the shared name's pointer before its bytes.
        let (source, node) = self
            .sources
            .iter()
            .find(|(topic, _, _)| Arc::ptr_eq(topic, &record.topic) || **topic == *record.topic)
            .map(|(_, s, node)| (s.clone(), *node))
            .ok_or_else(|| {
                StreamsError::IllegalState(format!(
                    "task {} has no source for topic {}",
                    self.id, record.topic
                ))
            })?;
        let offset = record.offset;
        if record.timestamp > self.ctx.stream_time {
            self.ctx.stream_time = record.timestamp;
        }
        self.ctx.current = Some(record);
        if let Some(m) = self.ctx.node_metrics.get_mut(node) {
            m.processed += 1;
        }
        let sampled = self.processed.is_multiple_of(LATENCY_SAMPLE);
        let ctx = &mut self.ctx;
        if let Some(seconds) = timed_if(sampled, || source.borrow_mut().process_current(ctx)) {
            self.metrics.latency.record(seconds);
        }
        self.queues[index].next_offset = Some(offset + 1);
        self.dirty = true;
        self.processed += 1;
        self.ctx.current = None;
        self.take_failure()?;
        if !self.ctx.schedules.is_empty() {
            self.punctuate(PunctuationType::StreamTime, self.ctx.stream_time)?;
        }
        Ok(())
    }

    /// Hands what was counted since the last call to the metrics registry: records per task
    /// and per processor, cache hits and misses per store, and each store's estimated
    /// entries. Called after each commit.
    ///
    /// The task's record count goes last: a scrape is not a snapshot, but one that starts
    /// after it saw the task's count sees everything exported with it.
    pub(crate) fn export_metrics(&mut self) {
        for node in &mut self.ctx.node_metrics {
            node.export();
        }
        let m = &mut self.metrics;
        for (store, (hits, misses, exported, entries)) in self.stores.iter().zip(&mut m.stores) {
            let store = store.borrow();
            let (h, s) = store.cache_stats();
            hits.increment(h - exported.0);
            misses.increment(s - exported.1);
            *exported = (h, s);
            // An estimate that RocksDB keeps in memory: cheap to read at every commit.
            if let Ok(n) = store.engine().approximate_num_entries() {
                entries.set(n as f64);
            }
        }
        m.processed_total.increment(self.processed - m.processed_exported);
        m.processed_exported = self.processed;
    }

    /// Fires the wall-clock punctuations due at `now`.
    pub(crate) fn punctuate_wall_clock(&mut self, now: i64) -> Result<(), StreamsError> {
        self.ctx.wall_clock = now;
        self.ctx.current = None;
        self.punctuate(PunctuationType::WallClockTime, now)
    }

    fn punctuate(&mut self, kind: PunctuationType, now: i64) -> Result<(), StreamsError> {
        if now < 0 {
            return Ok(());
        }
        let mut due = Vec::new();
        for schedule in self.ctx.schedules.iter_mut().filter(|s| s.kind == kind) {
            if schedule.next <= now {
                due.push((schedule.node, schedule.id, now));
                // The next punctuation is the first interval boundary after `now`.
                let missed = (now - schedule.next) / schedule.interval + 1;
                schedule.next += missed * schedule.interval;
            }
        }
        for (node, id, timestamp) in due {
            if let Some((_, life)) = self.lifecycles.iter().find(|(n, _)| *n == node) {
                life.borrow_mut().punctuate(&mut self.ctx, id, timestamp);
            }
            self.take_failure()?;
        }
        Ok(())
    }

    fn take_failure(&mut self) -> Result<(), StreamsError> {
        match self.ctx.failure.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The offsets to commit: the next offset of every input partition processed.
    pub(crate) fn committable_offsets(&self) -> Vec<(TopicPartition, i64)> {
        self.queues.iter().filter_map(|q| q.next_offset.map(|o| (q.partition.clone(), o))).collect()
    }

    /// Flushes the store caches: operators forward what their caches held back, upstream
    /// operators first so that what they forward reaches the caches below before those flush;
    /// then every store sends its remaining dirty entries to its changelog. Writes are staged
    /// until [`Self::apply_staged`].
    pub(crate) fn flush_state(&mut self) -> Result<(), StreamsError> {
        if self.stores.is_empty() {
            return Ok(());
        }
        // Lifecycles are listed children first (the instantiator builds depth first).
        for (_, node) in self.lifecycles.iter().rev() {
            node.borrow_mut().flush(&mut self.ctx);
            if let Some(e) = self.ctx.failure.take() {
                return Err(e);
            }
        }
        for store in &self.stores {
            store.borrow_mut().flush(&mut self.ctx);
        }
        self.take_failure()
    }

    /// The changelog partitions of stores with staged writes.
    pub(crate) fn staged_changelogs(&self) -> Vec<TopicPartition> {
        self.stores
            .iter()
            .filter_map(|s| {
                let s = s.borrow();
                if !s.has_staged() {
                    return None;
                }
                s.changelog().map(|(t, p)| TopicPartition::new(t.clone(), *p))
            })
            .collect()
    }

    /// Applies staged store writes to the engines, each with its changelog's end offset (once
    /// the flushed changelog records are durable).
    pub(crate) fn apply_staged(
        &mut self,
        end_offsets: &[(TopicPartition, i64)],
    ) -> Result<(), StreamsError> {
        for store in &self.stores {
            let mut store = store.borrow_mut();
            let offset = store.changelog().and_then(|(t, p)| {
                end_offsets
                    .iter()
                    .find(|(tp, _)| tp.partition == *p && *tp.topic == **t)
                    .map(|(_, o)| *o)
            });
            store.apply(offset)?;
        }
        Ok(())
    }

    /// Closes the processors.
    pub(crate) fn close(&mut self) {
        for (_, node) in &self.lifecycles {
            node.borrow_mut().close();
        }
    }
}
