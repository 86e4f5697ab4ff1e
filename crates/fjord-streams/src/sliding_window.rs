//! Sliding windows (Kafka's `SlidingWindows`, KIP-450): windows of a fixed size whose
//! positions come from the records, so that every distinct set of records within the time
//! difference of each other has one window, and no window is empty.
//!
//! Each record at `t` has a *left* window `[t - d, t]` (ending with it) and, when a later
//! record falls within `d` after it, a *right* window `[t + 1, t + 1 + d]` (starting just
//! after it); both bounds are inclusive. A record updates the existing windows that contain
//! it and creates its own left and right windows, and the right window of the record before
//! it, when they are missing. The aggregates of new windows come from existing ones, so no
//! record is read again: the store holds, with each window's aggregate, the largest
//! timestamp of its records, which tells the algorithm where the previous record was. This
//! is Kafka Streams' algorithm (`KStreamSlidingWindowAggregate`, the forward-iterating
//! variant) step by step, so the two give the same windows and values; records earlier than
//! `d` share the window `[0, d]`, as in Kafka, because windows cannot start before 0.
//!
//! The windows live in the same window store layout as time windows (keyed by start), read
//! through the record cache by start range (`[t - 2d, t + 1]`: every window the record can
//! touch or needs). Windows are kept for `2d + grace`, so that the windows a record needs to
//! build its own are still there while it can arrive.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use fjord_state::KeyValueBytesStore;

use crate::error::StreamsError;
use crate::node::TaskContext;
use crate::record::Record;
use crate::serdes::{SerdeRef, Serdes};
use crate::state::StoreKind;
use crate::window::{
    StoredWindow, Window, WindowAggregation, Windowed, WindowedLayout, WindowedStore, millis,
};

/// Sliding windows of a maximum time difference between records, with a grace period
/// (Kafka's `SlidingWindows`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingWindows {
    difference_ms: i64,
    grace_ms: i64,
}

impl SlidingWindows {
    /// Windows of records at most `difference` apart, closed as soon as stream time passes
    /// their end.
    pub fn of_time_difference_with_no_grace(difference: Duration) -> Self {
        Self::of_time_difference_and_grace(difference, Duration::ZERO)
    }

    /// Windows of records at most `difference` apart that accept out-of-order records for
    /// `grace` after their end.
    pub fn of_time_difference_and_grace(difference: Duration, grace: Duration) -> Self {
        SlidingWindows { difference_ms: millis(difference).max(1), grace_ms: millis(grace) }
    }

    /// The time difference (the window size) in milliseconds.
    pub fn time_difference_ms(&self) -> i64 {
        self.difference_ms
    }

    /// The grace period in milliseconds.
    pub fn grace_ms(&self) -> i64 {
        self.grace_ms
    }

    /// Windows a record may need are up to `2d` older than it.
    fn retention_ms(&self) -> i64 {
        self.difference_ms.saturating_mul(2).saturating_add(self.grace_ms)
    }
}

/// The sliding-window algorithm; `aggregator` takes `None` for the initializer's aggregate.
pub(crate) struct SlidingAggregation<F> {
    pub(crate) windows: SlidingWindows,
    pub(crate) aggregator: F,
}

/// The record being aggregated with its key's windows, and the stream time's close time.
struct Current<'a, K, V, A, F> {
    aggregation: &'a SlidingAggregation<F>,
    key: &'a K,
    value: &'a V,
    timestamp: i64,
    close_time: i64,
    _aggregate: PhantomData<fn() -> A>,
}

impl<K, V, A, F> Current<'_, K, V, A, F>
where
    K: Clone + 'static,
    V: Clone,
    A: Clone + 'static,
    F: Fn(&K, V, Option<A>) -> A,
{
    fn window(&self, start: i64) -> Window {
        Window { start, end: start.saturating_add(self.aggregation.windows.difference_ms) }
    }

    /// Adds the record to a window whose aggregate was `old` (`None`: the initializer's),
    /// with records up to `old_timestamp`, unless the window has closed.
    fn update(
        &self,
        store: &mut WindowedStore<K, A>,
        ctx: &mut TaskContext,
        window: Window,
        old: Option<A>,
        old_timestamp: i64,
    ) -> Result<(), StreamsError> {
        if window.end <= self.close_time {
            ctx.skip_record(&store.name, "late");
            return Ok(());
        }
        let new = (self.aggregation.aggregator)(self.key, self.value.clone(), old);
        store.put(ctx, window, Some(&new), old_timestamp.max(self.timestamp))
    }

    /// A record at or after the time difference (its left window starts at 0 or later).
    fn process_in_order(
        &self,
        store: &mut WindowedStore<K, A>,
        ctx: &mut TaskContext,
    ) -> Result<(), StreamsError> {
        let (ts, d) = (self.timestamp, self.aggregation.windows.difference_ms);
        let windows = store.fetch(ts.saturating_sub(2 * d).max(0), ts.saturating_add(1))?;
        // The aggregate for the record's left window, and the one for its right window.
        let mut left_aggregate: Option<&A> = None;
        let mut right_aggregate: Option<&StoredWindow<A>> = None;
        let (mut left_exists, mut right_exists) = (false, false);
        let mut previous_timestamp = None;
        for w in &windows {
            let Window { start, end } = w.window;
            if end < ts {
                left_aggregate = Some(&w.aggregate);
                previous_timestamp = Some(w.timestamp);
            } else if end == ts {
                left_exists = true;
                if w.timestamp < ts {
                    previous_timestamp = Some(w.timestamp);
                }
                self.update(store, ctx, w.window, Some(w.aggregate.clone()), w.timestamp)?;
            } else if start <= ts {
                right_aggregate = Some(w);
                self.update(store, ctx, w.window, Some(w.aggregate.clone()), w.timestamp)?;
            } else if start == ts + 1 {
                right_exists = true;
            } else {
                return Err(unexpected_window(start, ts));
            }
        }
        if let Some(previous) = previous_timestamp {
            let start = previous + 1;
            if start.saturating_add(d) >= ts && !windows.iter().any(|w| w.window.start == start) {
                self.update(store, ctx, self.window(start), None, ts)?;
            }
        }
        if !left_exists {
            let old = match (previous_timestamp, left_aggregate) {
                (Some(previous), Some(aggregate)) if ts - d <= previous => Some(aggregate.clone()),
                _ => None,
            };
            self.update(store, ctx, self.window(ts - d), old, ts)?;
        }
        if !right_exists {
            create_right_window(store, ctx, ts, self.window(ts + 1), right_aggregate)?;
        }
        Ok(())
    }

    /// A record earlier than the time difference: its left window would start before 0, so
    /// it goes into `[0, d]` with the other early records (Kafka's `processEarly`).
    fn process_early(
        &self,
        store: &mut WindowedStore<K, A>,
        ctx: &mut TaskContext,
    ) -> Result<(), StreamsError> {
        let ts = self.timestamp;
        let windows = store.fetch(0, ts + 1)?;
        let mut combined: Option<&StoredWindow<A>> = None;
        let mut right_aggregate: Option<&StoredWindow<A>> = None;
        let mut right_exists = false;
        let mut previous_timestamp = None;
        for w in &windows {
            let start = w.window.start;
            if start == 0 {
                combined = Some(w);
                if w.timestamp < ts {
                    previous_timestamp = Some(w.timestamp);
                }
            } else if start <= ts {
                right_aggregate = Some(w);
                self.update(store, ctx, w.window, Some(w.aggregate.clone()), w.timestamp)?;
            } else if start == ts + 1 {
                right_exists = true;
            } else {
                return Err(unexpected_window(start, ts));
            }
        }
        // Without a window that started after an earlier record, the records after this one
        // are all in the combined window.
        if right_aggregate.is_none() && combined.is_some_and(|c| c.timestamp > ts) {
            right_aggregate = combined;
        }
        if !right_exists {
            create_right_window(store, ctx, ts, self.window(ts + 1), right_aggregate)?;
        }
        if let Some(previous) = previous_timestamp {
            let start = previous + 1;
            if !windows.iter().any(|w| w.window.start == start) {
                self.update(store, ctx, self.window(start), None, ts)?;
            }
        }
        match combined {
            Some(c) => self.update(store, ctx, c.window, Some(c.aggregate.clone()), c.timestamp),
            None => self.update(store, ctx, self.window(0), None, ts),
        }
    }
}

/// Creates the record's right window with the aggregate of the records after it, if there
/// are any (`source` holds them, and the largest timestamp tells).
fn create_right_window<K: Clone + 'static, A: Clone + 'static>(
    store: &mut WindowedStore<K, A>,
    ctx: &mut TaskContext,
    ts: i64,
    window: Window,
    source: Option<&StoredWindow<A>>,
) -> Result<(), StreamsError> {
    match source {
        Some(source) if source.timestamp > ts => {
            store.put(ctx, window, Some(&source.aggregate), source.timestamp)
        }
        _ => Ok(()),
    }
}

fn unexpected_window(start: i64, ts: i64) -> StreamsError {
    StreamsError::IllegalState(format!(
        "sliding windows: unexpected window starting at {start} for a record at {ts}"
    ))
}

impl<K, V, A, F> WindowAggregation<K, V, A> for SlidingAggregation<F>
where
    K: Clone + 'static,
    V: Clone + 'static,
    A: Clone + 'static,
    F: Fn(&K, V, Option<A>) -> A + Send + Sync + 'static,
{
    fn store_kind(&self) -> StoreKind {
        StoreKind::Window { retention_ms: self.windows.retention_ms() }
    }

    fn layout(&self, engine: Arc<dyn KeyValueBytesStore>) -> WindowedLayout {
        WindowedLayout::fixed(engine, self.windows.retention_ms(), self.windows.difference_ms)
    }

    fn close_after_ms(&self) -> i64 {
        self.windows.grace_ms
    }

    fn windowed_serde(&self, key_serde: SerdeRef<K>) -> SerdeRef<Windowed<K>> {
        Serdes::windowed(key_serde, self.windows.difference_ms)
    }

    fn process(
        &self,
        store: &mut WindowedStore<K, A>,
        ctx: &mut TaskContext,
        record: Record<K, V>,
    ) -> Result<(), StreamsError> {
        let d = self.windows.difference_ms;
        let current = Current {
            aggregation: self,
            key: &record.key,
            value: &record.value,
            timestamp: record.timestamp,
            close_time: ctx.stream_time.saturating_sub(self.windows.grace_ms),
            _aggregate: PhantomData,
        };
        // Every window the record could be in has closed.
        if current.timestamp.saturating_add(1).saturating_add(d) <= current.close_time {
            ctx.skip_record(&store.name, "late");
            return Ok(());
        }
        if current.timestamp < d {
            current.process_early(store, ctx)
        } else {
            current.process_in_order(store, ctx)
        }
    }
}
