//! Session windows: one window per key and burst of activity (Kafka's `SessionWindows`).
//!
//! A record at `t` starts a session `[t, t]`, or joins every session of its key that ends at
//! or after `t - gap` and starts at or before `t + gap`: those are merged into one with the
//! record (`merger` combines their aggregates), and removed, so downstream sees a tombstone
//! for each merged session's windowed key and then the new session. Out-of-order records can
//! therefore bridge two sessions into one.
//!
//! The sessions live in a session store (the `fjord-state` layout keyed by end, then start),
//! so that the candidates of a record are one range read per segment, through the record
//! cache. A session closes once stream time passes its end plus the gap plus the grace
//! period (a later record could still have extended it until then); records that only reach
//! closed sessions are dropped and counted as late. Sessions are kept for gap plus grace
//! after their end, then expire with their segment.

use std::sync::Arc;
use std::time::Duration;

use fjord_state::KeyValueBytesStore;

use crate::error::StreamsError;
use crate::node::TaskContext;
use crate::record::Record;
use crate::serdes::{SerdeRef, Serdes};
use crate::state::StoreKind;
use crate::table::{KGroupedStream, KTable, Materialized, materialized_with};
use crate::window::{
    Window, WindowAggregation, Windowed, WindowedBy, WindowedLayout, WindowedStore, millis,
    session_layout, windowed_aggregation,
};

/// Session windows with an inactivity gap and a grace period (Kafka's `SessionWindows`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionWindows {
    gap_ms: i64,
    grace_ms: i64,
}

impl SessionWindows {
    /// Sessions that end after `gap` without records and close as soon as stream time passes
    /// their end plus the gap.
    pub fn of_inactivity_gap_with_no_grace(gap: Duration) -> Self {
        Self::of_inactivity_gap_and_grace(gap, Duration::ZERO)
    }

    /// Sessions that end after `gap` without records and accept out-of-order records for
    /// `grace` after that.
    pub fn of_inactivity_gap_and_grace(gap: Duration, grace: Duration) -> Self {
        SessionWindows { gap_ms: millis(gap).max(1), grace_ms: millis(grace) }
    }

    /// The inactivity gap in milliseconds.
    pub fn inactivity_gap_ms(&self) -> i64 {
        self.gap_ms
    }

    /// The grace period in milliseconds.
    pub fn grace_ms(&self) -> i64 {
        self.grace_ms
    }

    /// How long a session is kept after its end: until it closes.
    fn retention_ms(&self) -> i64 {
        self.gap_ms.saturating_add(self.grace_ms)
    }
}

/// A grouped stream with session windows, ready to aggregate (Kafka's
/// `SessionWindowedKStream`).
pub struct SessionWindowedKStream<K, V> {
    grouped: KGroupedStream<K, V>,
    windows: SessionWindows,
}

impl<K: Clone + 'static, V: Clone + 'static> WindowedBy<K, V> for SessionWindows {
    type Stream = SessionWindowedKStream<K, V>;
    fn windowed(self, grouped: KGroupedStream<K, V>) -> SessionWindowedKStream<K, V> {
        SessionWindowedKStream { grouped, windows: self }
    }
}

impl<K: Clone + 'static, V: Clone + 'static> SessionWindowedKStream<K, V> {
    /// Counts the records per key and session.
    pub fn count(&self, materialized: Materialized<K, i64>) -> KTable<Windowed<K>, i64> {
        self.aggregate(
            || 0,
            |_, _, n| n + 1,
            |_, a, b| a + b,
            materialized_with(materialized, Some(Serdes::i64())),
        )
    }

    /// Combines the values per key and session; merged sessions combine with `reducer` too.
    pub fn reduce(
        &self,
        reducer: impl Fn(V, V) -> V + Send + Sync + 'static,
        materialized: Materialized<K, V>,
    ) -> KTable<Windowed<K>, V> {
        let materialized = materialized_with(materialized, self.grouped.stream.value_serde.clone());
        let reducer = Arc::new(reducer);
        let merge = reducer.clone();
        self.add(
            materialized,
            move |_: &K, value: V, acc: Option<V>| match acc {
                Some(acc) => reducer(acc, value),
                None => value,
            },
            move |_: &K, acc: Option<V>, session: V| match acc {
                Some(acc) => merge(acc, session),
                None => session,
            },
        )
    }

    /// Folds the values per key and session into an aggregate that starts at
    /// `initializer()`; `merger` combines the aggregates of sessions that a record merges.
    pub fn aggregate<A: Clone + 'static>(
        &self,
        initializer: impl Fn() -> A + Send + Sync + 'static,
        aggregator: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
        merger: impl Fn(&K, A, A) -> A + Send + Sync + 'static,
        materialized: Materialized<K, A>,
    ) -> KTable<Windowed<K>, A> {
        let initializer = Arc::new(initializer);
        let merge_initializer = initializer.clone();
        self.add(
            materialized,
            move |key: &K, value: V, acc: Option<A>| {
                aggregator(key, value, acc.unwrap_or_else(|| initializer()))
            },
            move |key: &K, acc: Option<A>, session: A| {
                merger(key, acc.unwrap_or_else(|| merge_initializer()), session)
            },
        )
    }

    fn add<A: Clone + 'static>(
        &self,
        materialized: Materialized<K, A>,
        aggregator: impl Fn(&K, V, Option<A>) -> A + Send + Sync + 'static,
        merger: impl Fn(&K, Option<A>, A) -> A + Send + Sync + 'static,
    ) -> KTable<Windowed<K>, A> {
        let aggregation = SessionAggregation { windows: self.windows, aggregator, merger };
        windowed_aggregation(&self.grouped, materialized, aggregation)
    }
}

/// The session algorithm. `aggregator` and `merger` take the aggregate so far, `None` for
/// the initializer's (so that `reduce` needs none).
struct SessionAggregation<F, M> {
    windows: SessionWindows,
    aggregator: F,
    merger: M,
}

impl<K, V, A, F, M> WindowAggregation<K, V, A> for SessionAggregation<F, M>
where
    K: Clone + 'static,
    V: 'static,
    A: Clone + 'static,
    F: Fn(&K, V, Option<A>) -> A + Send + Sync + 'static,
    M: Fn(&K, Option<A>, A) -> A + Send + Sync + 'static,
{
    fn store_kind(&self) -> StoreKind {
        StoreKind::Session { retention_ms: self.windows.retention_ms() }
    }

    fn layout(&self, engine: Arc<dyn KeyValueBytesStore>) -> WindowedLayout {
        WindowedLayout::Session(session_layout(engine, self.windows.retention_ms()))
    }

    fn close_after_ms(&self) -> i64 {
        self.windows.retention_ms()
    }

    fn windowed_serde(&self, key_serde: SerdeRef<K>) -> SerdeRef<Windowed<K>> {
        Serdes::session_windowed(key_serde)
    }

    fn process(
        &self,
        store: &mut WindowedStore<K, A>,
        ctx: &mut TaskContext,
        record: Record<K, V>,
    ) -> Result<(), StreamsError> {
        let (ts, gap) = (record.timestamp, self.windows.gap_ms);
        let close_time = ctx.stream_time.saturating_sub(self.windows.grace_ms).saturating_sub(gap);
        let latest_end = store.latest_end()?.max(ctx.stream_time).max(ts);
        let mut sessions = store.fetch(ts.saturating_sub(gap), latest_end)?;
        let latest_start = ts.saturating_add(gap);
        sessions.retain(|s| s.window.start <= latest_start);
        let new_session = Window { start: ts, end: ts };
        let merged = sessions.iter().fold(new_session, |w, s| Window {
            start: w.start.min(s.window.start),
            end: w.end.max(s.window.end),
        });
        if merged.end < close_time {
            ctx.skip_record(&store.name, "late");
            return Ok(());
        }
        let mut aggregate = None;
        for session in sessions {
            if merged != new_session {
                store.put(ctx, session.window, None, session.window.end)?;
            }
            aggregate = Some((self.merger)(&record.key, aggregate, session.aggregate));
        }
        let aggregate = (self.aggregator)(&record.key, record.value, aggregate);
        store.put(ctx, merged, Some(&aggregate), merged.end)
    }
}
