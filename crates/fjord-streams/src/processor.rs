//! Custom processors (Kafka's Processor API): full control over each record, forwarding,
//! headers and timestamps, and punctuations on stream time or wall-clock time.

use std::sync::Arc;
use std::time::Duration;

use crate::node::{Children, TaskContext};
use crate::record::Record;

/// What a punctuation is driven by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PunctuationType {
    /// The task's stream time: the largest record timestamp it has processed. It only moves
    /// when records arrive.
    StreamTime,
    /// The wall clock, whether or not records arrive.
    WallClockTime,
}

/// Identifies a scheduled punctuation of one processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScheduleId(pub u32);

/// Where the record being processed came from (Kafka's `RecordMetadata` of the context).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecordMetadata {
    /// The source topic.
    pub topic: Arc<str>,
    /// The source partition.
    pub partition: u32,
    /// The source offset.
    pub offset: i64,
}

/// A processor: receives records of `KIn`/`VIn` and may forward any number of
/// `KOut`/`VOut` records to its children.
pub trait Processor<KIn, VIn, KOut, VOut>: 'static {
    /// Called once when the task starts; schedule punctuations here.
    fn init(&mut self, ctx: &mut ProcessorContext<'_, KOut, VOut>) {
        let _ = ctx;
    }

    /// Processes one record.
    fn process(&mut self, ctx: &mut ProcessorContext<'_, KOut, VOut>, record: Record<KIn, VIn>);

    /// Called when a scheduled punctuation is due, with the stream or wall-clock time.
    fn punctuate(
        &mut self,
        ctx: &mut ProcessorContext<'_, KOut, VOut>,
        schedule: ScheduleId,
        timestamp: i64,
    ) {
        let _ = (ctx, schedule, timestamp);
    }

    /// Called when the task closes.
    fn close(&mut self) {}
}

/// What a processor sees of its task while it runs.
pub struct ProcessorContext<'a, K, V> {
    pub(crate) task: &'a mut TaskContext,
    pub(crate) children: &'a Children<K, V>,
    pub(crate) node: usize,
}

impl<K: Clone + 'static, V: Clone + 'static> ProcessorContext<'_, K, V> {
    /// Sends a record to every child processor.
    pub fn forward(&mut self, record: Record<K, V>) {
        self.children.forward(self.task, record);
    }

    /// Sends a record to the child with this name only.
    pub fn forward_to(&mut self, child: &str, record: Record<K, V>) {
        self.children.forward_to(self.task, child, record);
    }
}

impl<K, V> ProcessorContext<'_, K, V> {
    /// Schedules `punctuate` every `interval` of stream or wall-clock time.
    pub fn schedule(&mut self, interval: Duration, kind: PunctuationType) -> ScheduleId {
        self.task.schedule(self.node, interval, kind)
    }

    /// Cancels a punctuation.
    pub fn cancel(&mut self, schedule: ScheduleId) {
        self.task.cancel(self.node, schedule);
    }

    /// The task's stream time (-1 before the first record).
    pub fn stream_time(&self) -> i64 {
        self.task.stream_time
    }

    /// The wall-clock time the runtime (or the test driver) says it is.
    pub fn wall_clock_time(&self) -> i64 {
        self.task.wall_clock
    }

    /// Where the record being processed came from; `None` during a wall-clock punctuation.
    pub fn source(&self) -> Option<SourceRecordMetadata> {
        self.task.current.as_ref().map(|c| SourceRecordMetadata {
            topic: c.topic.clone(),
            partition: c.partition,
            offset: c.offset,
        })
    }

    /// The task id, `<sub-topology>_<partition>`.
    pub fn task_id(&self) -> crate::TaskId {
        self.task.task_id
    }

    /// The application id.
    pub fn application_id(&self) -> &str {
        &self.task.application_id
    }
}
