//! The record accumulator: one open batch per partition, a FIFO of closed batches for the
//! sender, the sticky partition of each topic, and the batches' completions.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use fjord_log::TopicPartition;
use fjord_log::partitioner::partition_for_key;
use fjord_log::record::{BatchOptions, RecordBatchBuilder};
use parking_lot::Mutex;

use super::{DeliveryFuture, ProducerRecord, Shared};
use crate::error::{BrokerError, Result};

/// What a batch's append ended with: `(base offset, log-append time or -1)`.
pub(crate) type BatchResult = std::result::Result<(i64, i64), Arc<BrokerError>>;

/// The outcome of one batch, shared by the delivery futures of its records.
#[derive(Debug, Default)]
pub(crate) struct Completion {
    state: Mutex<CompletionState>,
}

#[derive(Debug, Default)]
struct CompletionState {
    result: Option<BatchResult>,
    wakers: Vec<Option<Waker>>,
}

impl Completion {
    /// Records the outcome and wakes every waiting future.
    pub(crate) fn complete(&self, result: BatchResult) {
        let wakers = {
            let mut state = self.state.lock();
            state.result = Some(result);
            std::mem::take(&mut state.wakers)
        };
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
    }

    /// Polls for the outcome; `slot` remembers where this future's waker is registered so a
    /// re-poll replaces it instead of adding another.
    pub(crate) fn poll_result(
        &self,
        cx: &mut Context<'_>,
        slot: &mut Option<usize>,
    ) -> Poll<BatchResult> {
        let mut state = self.state.lock();
        if let Some(result) = &state.result {
            return Poll::Ready(result.clone());
        }
        let waker = Some(cx.waker().clone());
        match *slot {
            Some(i) if i < state.wakers.len() => state.wakers[i] = waker,
            _ => {
                *slot = Some(state.wakers.len());
                state.wakers.push(waker);
            }
        }
        Poll::Pending
    }
}

/// A closed batch waiting for the sender.
pub(crate) struct ReadyBatch {
    pub(crate) partition: TopicPartition,
    pub(crate) builder: RecordBatchBuilder,
    pub(crate) completion: Arc<Completion>,
    /// Buffer bytes to release once sent.
    pub(crate) reserved: usize,
    /// Number of the batch, in closing order.
    pub(crate) ticket: u64,
}

struct OpenBatch {
    builder: RecordBatchBuilder,
    completion: Arc<Completion>,
    reserved: usize,
    created: Instant,
}

struct PartitionState {
    tp: TopicPartition,
    open: Option<OpenBatch>,
}

struct TopicState {
    partitions: Vec<PartitionState>,
    refreshed: Instant,
    appends_since_check: u32,
    /// KIP-794's uniform sticky partitioner: records without key or partition go to one
    /// partition until about a batch's worth of bytes went there.
    sticky_partition: u32,
    sticky_bytes: usize,
}

/// Everything behind the accumulator's lock.
#[derive(Default)]
pub(crate) struct AccState {
    topics: FxHashMap<Arc<str>, TopicState>,
    pub(crate) ready: VecDeque<ReadyBatch>,
    pool: Vec<RecordBatchBuilder>,
    tickets: u64,
    /// Random state for the sticky partitioner (xorshift).
    rng: u64,
}

impl AccState {
    /// Closes every open batch (for a flush, or when the buffer is full).
    pub(crate) fn close_all_open(&mut self) {
        let mut closed = Vec::new();
        for topic in self.topics.values_mut() {
            for p in &mut topic.partitions {
                if let Some(open) = p.open.take() {
                    closed.push((p.tp.clone(), open));
                }
            }
        }
        for (tp, open) in closed {
            self.push_ready(tp, open);
        }
    }

    /// Closes the open batches that have waited `linger`; returns the earliest deadline of
    /// those still open.
    pub(crate) fn close_expired(
        &mut self,
        now: Instant,
        linger: std::time::Duration,
    ) -> Option<Instant> {
        let mut closed = Vec::new();
        let mut next: Option<Instant> = None;
        for topic in self.topics.values_mut() {
            for p in &mut topic.partitions {
                let Some(open) = &p.open else { continue };
                let deadline = open.created + linger;
                if deadline <= now {
                    if let Some(open) = p.open.take() {
                        closed.push((p.tp.clone(), open));
                    }
                } else {
                    next = Some(next.map_or(deadline, |n| n.min(deadline)));
                }
            }
        }
        for (tp, open) in closed {
            self.push_ready(tp, open);
        }
        next
    }

    /// Whether any batch is open.
    pub(crate) fn has_open(&self) -> bool {
        self.topics.values().any(|t| t.partitions.iter().any(|p| p.open.is_some()))
    }

    fn push_ready(&mut self, partition: TopicPartition, open: OpenBatch) {
        self.tickets += 1;
        self.ready.push_back(ReadyBatch {
            partition,
            builder: open.builder,
            completion: open.completion,
            reserved: open.reserved,
            ticket: self.tickets,
        });
    }

    /// The number of the last batch closed (or to be closed by a flush).
    pub(crate) fn last_ticket(&self) -> u64 {
        self.tickets
    }

    /// Returns a builder to the pool once its batch was encoded.
    pub(crate) fn recycle(&mut self, builder: RecordBatchBuilder) {
        if self.pool.len() < 64 {
            self.pool.push(builder);
        }
    }

    fn next_random(&mut self) -> u64 {
        if self.rng == 0 {
            self.rng = 0x9E37_79B9_7F4A_7C15 ^ (Instant::now().elapsed().as_nanos() as u64 | 1);
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

/// Adds a record to its partition's open batch (closing the batch first if the record does not
/// fit), and returns its delivery future.
pub(crate) fn append(
    shared: &Shared,
    record: &ProducerRecord<'_>,
    size: usize,
) -> Result<DeliveryFuture> {
    let config = &shared.config;
    let timestamp = record.timestamp.unwrap_or_else(now_ms);
    let mut guard = shared.state.lock();
    let state = &mut *guard;
    let random = state.next_random();
    // Partition counts are looked up again when a batch opens after `metadata.max.age`, not
    // per record: reading the clock for every record costs more than the rest of the append.
    let stale = match state.topics.get_mut(record.topic) {
        None => true,
        Some(t) => {
            t.appends_since_check += 1;
            t.appends_since_check >= 1024 && {
                t.appends_since_check = 0;
                t.refreshed.elapsed() >= config.metadata_max_age
            }
        }
    };
    if stale {
        let now = Instant::now();
        let count = shared.broker.partition_count(record.topic)?;
        let name: Arc<str> = Arc::from(record.topic);
        let entry = state.topics.entry(name.clone()).or_insert_with(|| TopicState {
            partitions: Vec::new(),
            refreshed: now,
            appends_since_check: 0,
            sticky_partition: 0,
            sticky_bytes: usize::MAX,
        });
        entry.refreshed = now;
        while entry.partitions.len() < count as usize {
            let p = entry.partitions.len() as u32;
            entry
                .partitions
                .push(PartitionState { tp: TopicPartition::new(name.clone(), p), open: None });
        }
    }
    let Some(topic) = state.topics.get_mut(record.topic) else {
        return Err(BrokerError::Log(fjord_log::LogError::UnknownTopic(record.topic.to_string())));
    };
    let count = topic.partitions.len() as u32;
    let partition = match (record.partition, record.key) {
        (Some(p), _) if p < count => p,
        (Some(p), _) => {
            return Err(BrokerError::Log(fjord_log::LogError::UnknownPartition {
                topic: record.topic.to_string(),
                partition: p,
                partitions: count,
            }));
        }
        (None, Some(key)) => partition_for_key(key, count),
        (None, None) => {
            if topic.sticky_bytes >= config.batch_size {
                topic.sticky_bytes = 0;
                topic.sticky_partition = (random % count as u64) as u32;
            }
            topic.sticky_bytes += size;
            topic.sticky_partition
        }
    };
    let p = &mut topic.partitions[partition as usize];
    // Close the open batch if this record would overflow it.
    let overflow = p.open.as_ref().is_some_and(|open| {
        !open.builder.is_empty()
            && open.builder.uncompressed_size_in_bytes() + size > config.batch_size
    });
    let mut closed = Vec::with_capacity(2);
    if overflow && let Some(open) = p.open.take() {
        closed.push((p.tp.clone(), open));
    }
    let tp = p.tp.clone();
    let open = match &mut p.open {
        Some(open) => open,
        slot @ None => {
            let builder = match state.pool.pop() {
                Some(mut builder) => {
                    builder.reset();
                    builder.set_options(batch_options(shared));
                    builder
                }
                None => RecordBatchBuilder::new(batch_options(shared)),
            };
            // Wake the sender so it waits for this batch's linger.
            shared.work.notify_one();
            slot.insert(OpenBatch {
                builder,
                completion: Arc::default(),
                reserved: 0,
                created: Instant::now(),
            })
        }
    };
    let offset_delta = open.builder.append(timestamp, record.key, record.value, record.headers);
    open.reserved += size;
    let future = DeliveryFuture {
        completion: open.completion.clone(),
        partition: tp.clone(),
        offset_delta,
        timestamp,
        waker_slot: None,
    };
    if open.builder.uncompressed_size_in_bytes() >= config.batch_size
        && let Some(full) = p.open.take()
    {
        closed.push((tp, full));
    }
    if !closed.is_empty() {
        for (tp, batch) in closed {
            state.push_ready(tp, batch);
        }
        shared.work.notify_one();
    }
    Ok(future)
}

fn batch_options(shared: &Shared) -> BatchOptions {
    BatchOptions { compression: shared.config.compression, ..BatchOptions::default() }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
