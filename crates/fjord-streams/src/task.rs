//! A task: one partition's worth of a sub-topology, with its processors, its input queues and
//! the offsets it has consumed.
//!
//! Records from several input partitions are processed in timestamp order: the task always
//! takes the queue whose first record is oldest (Kafka's `PartitionGroup`). Stream time is
//! the largest timestamp processed so far; stream-time punctuations fire as it passes them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use fjord_log::TopicPartition;

use crate::TaskId;
use crate::error::StreamsError;
use crate::graph::NodeId;
use crate::node::{LifeRef, RawRecord, SourceRef, TaskContext};
use crate::processor::PunctuationType;

/// One task.
pub(crate) struct Task {
    pub(crate) id: TaskId,
    sources: Vec<(Arc<str>, SourceRef)>,
    lifecycles: Vec<(NodeId, LifeRef)>,
    pub(crate) ctx: TaskContext,
    queues: Vec<(TopicPartition, VecDeque<RawRecord>)>,
    /// Next offset to commit per input partition.
    pub(crate) consumed: BTreeMap<TopicPartition, i64>,
    /// Whether anything was processed since the last commit.
    pub(crate) dirty: bool,
    initialized: bool,
    pub(crate) processed: u64,
}

impl Task {
    pub(crate) fn new(
        id: TaskId,
        sources: Vec<(Arc<str>, SourceRef)>,
        lifecycles: Vec<(NodeId, LifeRef)>,
        ctx: TaskContext,
    ) -> Self {
        Task {
            id,
            sources,
            lifecycles,
            ctx,
            queues: Vec::new(),
            consumed: BTreeMap::new(),
            dirty: false,
            initialized: false,
            processed: 0,
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
        let queue = match self.queues.iter_mut().position(|(q, _)| q == tp) {
            Some(i) => &mut self.queues[i].1,
            None => {
                self.queues.push((tp.clone(), VecDeque::new()));
                let last = self.queues.len() - 1;
                &mut self.queues[last].1
            }
        };
        queue.extend(records);
    }

    /// Records queued and not processed.
    pub(crate) fn buffered(&self) -> usize {
        self.queues.iter().map(|(_, q)| q.len()).sum()
    }

    /// Processes up to `max` queued records in timestamp order. Returns how many.
    pub(crate) fn process(&mut self, max: usize) -> Result<usize, StreamsError> {
        let mut done = 0;
        while done < max {
            let Some(index) = self
                .queues
                .iter()
                .enumerate()
                .filter_map(|(i, (_, q))| q.front().map(|r| (i, r.timestamp)))
                .min_by_key(|&(_, ts)| ts)
                .map(|(i, _)| i)
            else {
                break;
            };
            let (tp, queue) = &mut self.queues[index];
            let Some(record) = queue.pop_front() else { break };
            let tp = tp.clone();
            self.process_record(&tp, record)?;
            done += 1;
        }
        Ok(done)
    }

    fn process_record(
        &mut self,
        tp: &TopicPartition,
        record: RawRecord,
    ) -> Result<(), StreamsError> {
        let source = self
            .sources
            .iter()
            .find(|(topic, _)| **topic == *record.topic)
            .map(|(_, s)| s.clone())
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
        {
            let current = self.ctx.current.take();
            if let Some(current) = &current {
                self.ctx.current = Some(current.clone());
                source.borrow_mut().process_raw(&mut self.ctx, current);
            }
        }
        self.consumed.insert(tp.clone(), offset + 1);
        self.dirty = true;
        self.processed += 1;
        self.take_failure()?;
        self.punctuate(PunctuationType::StreamTime, self.ctx.stream_time)?;
        self.ctx.current = None;
        Ok(())
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
        self.consumed.iter().map(|(tp, o)| (tp.clone(), *o)).collect()
    }

    /// Closes the processors.
    pub(crate) fn close(&mut self) {
        for (_, node) in &self.lifecycles {
            node.borrow_mut().close();
        }
    }
}
