//! Ordered appends to `__consumer_offsets`.
//!
//! The coordinator decides what to write under its state lock and queues the batch there, so
//! the order of the queue is the order of the decisions. One drainer per partition (on tokio's
//! blocking pool: an append is file I/O) appends the queued batches in that order and runs
//! each batch's completion (apply committed offsets, answer waiting members) right after its
//! append, without holding any lock of the queue. Completions therefore also run in log order,
//! and they run even if the request that queued the batch was cancelled.

use std::collections::VecDeque;
use std::sync::Arc;

use fjord_log::PartitionLog;
use parking_lot::Mutex;

use super::state::Shared;
use crate::error::{BrokerError, Result};

/// What to do once a batch is appended (or failed to be): gets the offset of the batch's
/// first record (record `i` of the batch is at that offset plus `i`), or the error.
pub(super) type WriteDone = Box<dyn FnOnce(&Shared, Result<i64>) + Send>;

/// A batch the coordinator decided to write, with its completion.
pub(super) struct PendingWrite {
    /// The `__consumer_offsets` partition (the group's).
    pub(super) partition: u32,
    /// The encoded batch, or why it could not be encoded (then the completion gets the error,
    /// in order).
    pub(super) batch: Result<Vec<u8>>,
    /// Runs after the append.
    pub(super) done: WriteDone,
}

/// The queue of one partition of `__consumer_offsets`.
pub(super) struct WriteQueue {
    log: Arc<PartitionLog>,
    inner: Mutex<QueueInner>,
}

struct QueueInner {
    pending: VecDeque<(Result<Vec<u8>>, WriteDone)>,
    /// A drainer is running (or about to): whoever queues behind it leaves the work to it.
    draining: bool,
}

impl WriteQueue {
    pub(super) fn new(log: Arc<PartitionLog>) -> Self {
        WriteQueue {
            log,
            inner: Mutex::new(QueueInner { pending: VecDeque::new(), draining: false }),
        }
    }
}

impl Shared {
    /// Queues a write; starts a drainer for its partition if none is running. Called under the
    /// state lock, which orders the queue; the drainer takes the state lock only in
    /// completions, after releasing the queue's lock.
    pub(super) fn enqueue(self: &Arc<Self>, write: PendingWrite) {
        let index = write.partition as usize % self.writers.len().max(1);
        let Some(queue) = self.writers.get(index) else {
            // No partitions: `load` refuses such a topic, so this cannot happen.
            tracing::error!("__consumer_offsets has no partitions; dropping a write");
            return;
        };
        self.in_flight.send_modify(|n| *n += 1);
        let start = {
            let mut inner = queue.inner.lock();
            inner.pending.push_back((write.batch, write.done));
            !std::mem::replace(&mut inner.draining, true)
        };
        if start {
            let shared = Arc::clone(self);
            match self
                .runtime
                .get()
                .cloned()
                .ok_or(())
                .or_else(|()| tokio::runtime::Handle::try_current())
            {
                Ok(runtime) => {
                    runtime.spawn_blocking(move || shared.drain(index));
                }
                Err(_) => {
                    // Outside a runtime (a caller driving the coordinator from plain threads):
                    // a thread of our own, never inline, because the caller holds the state
                    // lock that completions take.
                    std::thread::spawn(move || shared.drain(index));
                }
            }
        }
    }

    fn drain(&self, index: usize) {
        let Some(queue) = self.writers.get(index) else {
            return;
        };
        loop {
            let next = {
                let mut inner = queue.inner.lock();
                match inner.pending.pop_front() {
                    Some(item) => item,
                    None => {
                        inner.draining = false;
                        return;
                    }
                }
            };
            let (batch, done) = next;
            let result = batch.and_then(|mut batch| {
                queue
                    .log
                    .append(&mut batch)
                    .map(|info| info.first_offset)
                    .map_err(BrokerError::from)
            });
            done(self, result);
            self.in_flight.send_modify(|n| *n = n.saturating_sub(1));
        }
    }
}
