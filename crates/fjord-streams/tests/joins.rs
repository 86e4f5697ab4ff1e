//! Stream-stream windowed joins and table-table joins through the `TopologyTestDriver`:
//! pairs inside and outside the window in both arrival orders, duplicates of a key and
//! timestamp, grace and late records, left and outer results that wait for their window to
//! close, and table updates and tombstones. A property test checks the stream-stream joins
//! against a nested loop over the input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fjord_streams::{
    Consumed, DriverConfig, JoinWindows, KStream, Materialized, Produced, Serdes, StreamJoined,
    StreamsBuilder, TestOutputTopic, TopologyTestDriver,
};
use proptest::prelude::*;

fn strings() -> Consumed<String, String> {
    Consumed::with(Serdes::string(), Serdes::string())
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Inner,
    Left,
    Outer,
}

/// `left` and `right` joined into topic `out` as `"l+r"`, a missing side written `-`.
fn join_topology(kind: Kind, windows: JoinWindows) -> TopologyTestDriver {
    let builder = StreamsBuilder::new();
    let left: KStream<String, String> = builder.stream("left", strings());
    let right: KStream<String, String> = builder.stream("right", strings());
    let joined = StreamJoined::default().with_store_name("j");
    let out = match kind {
        Kind::Inner => left.join_stream(&right, |l, r| format!("{l}+{r}"), windows, joined),
        Kind::Left => left.left_join_stream(
            &right,
            |l, r| format!("{l}+{}", r.map_or("-", String::as_str)),
            windows,
            joined,
        ),
        Kind::Outer => left.outer_join_stream(
            &right,
            |l, r| {
                let side = |v: Option<&String>| v.map_or("-".to_string(), Clone::clone);
                format!("{}+{}", side(l), side(r))
            },
            windows,
            joined,
        ),
    };
    out.to_with("out", Produced::with(Serdes::string(), Serdes::string()));
    let topology = builder.build().unwrap();
    // Both inputs and the join are one sub-topology: the buffers live in one task.
    assert_eq!(topology.subtopologies().len(), 1);
    assert!(topology.subtopologies()[0].copartitioned);
    TopologyTestDriver::new(topology, DriverConfig::default())
}

type Out = (String, String, i64);

fn drain(out: &TestOutputTopic<String, String>) -> Vec<Out> {
    let mut all = Vec::new();
    while let Some(r) = out.read_record().unwrap() {
        all.push((r.key, r.value, r.timestamp));
    }
    all
}

fn o(k: &str, v: &str, t: i64) -> Out {
    (k.to_string(), v.to_string(), t)
}

struct Join {
    driver: TopologyTestDriver,
    left: fjord_streams::TestInputTopic<String, String>,
    right: fjord_streams::TestInputTopic<String, String>,
    out: TestOutputTopic<String, String>,
}

impl Join {
    fn new(kind: Kind, windows: JoinWindows) -> Self {
        let driver = join_topology(kind, windows);
        let left = driver.input_topic("left", Serdes::string(), Serdes::string());
        let right = driver.input_topic("right", Serdes::string(), Serdes::string());
        let out = driver.output_topic("out", Serdes::string(), Serdes::string());
        Join { driver, left, right, out }
    }

    fn left(&mut self, k: &str, v: &str, t: i64) -> Vec<Out> {
        self.left.pipe_input(k.into(), v.into(), t).unwrap();
        drain(&self.out)
    }

    fn right(&mut self, k: &str, v: &str, t: i64) -> Vec<Out> {
        self.right.pipe_input(k.into(), v.into(), t).unwrap();
        drain(&self.out)
    }
}

#[test]
fn inner_join_pairs_records_within_the_window_in_either_order() {
    let mut j = Join::new(Kind::Inner, JoinWindows::of_time_difference_with_no_grace(ms(10)));
    assert_eq!(j.left("k", "a", 100), vec![]);
    // Right after left, within 10 ms: the result has the later timestamp.
    assert_eq!(j.right("k", "x", 105), vec![o("k", "a+x", 105)]);
    // Other keys never join.
    assert_eq!(j.right("other", "y", 105), vec![]);
    // Left after right, both directions of the difference, and the window's edges.
    assert_eq!(j.left("k", "b", 110), vec![o("k", "b+x", 110)]);
    assert_eq!(j.right("k", "z", 120), vec![o("k", "b+z", 120)]);
    assert_eq!(j.left("k", "c", 131), vec![]);
    assert_eq!(j.right("k", "w", 141), vec![o("k", "c+w", 141)]);
    assert_eq!(j.right("k", "far", 200), vec![]);
    assert_eq!(j.driver.dropped_records(), 0);
}

#[test]
fn before_and_after_bound_each_direction_separately() {
    // A right record may be up to 5 ms before a left one, and up to 20 ms after.
    let windows = JoinWindows::of_time_difference_with_no_grace(ms(0)).before(ms(5)).after(ms(20));
    assert_eq!((windows.before_ms(), windows.after_ms(), windows.size_ms()), (5, 20, 25));
    let mut j = Join::new(Kind::Inner, windows);
    j.left("k", "a", 100);
    assert_eq!(j.right("k", "late-ok", 120), vec![o("k", "a+late-ok", 120)]);
    assert_eq!(j.right("k", "too-late", 121), vec![]);
    // Seen from a new left record: right records up to 5 ms earlier join.
    assert_eq!(j.left("k", "b", 125), vec![o("k", "b+late-ok", 125), o("k", "b+too-late", 125)]);
    assert_eq!(j.left("k", "c", 126), vec![o("k", "c+too-late", 126)]);
}

#[test]
fn duplicates_of_a_key_and_timestamp_all_join() {
    let mut j = Join::new(Kind::Inner, JoinWindows::of_time_difference_with_no_grace(ms(10)));
    j.left("k", "a1", 50);
    j.left("k", "a2", 50);
    assert_eq!(j.right("k", "x", 50), vec![o("k", "a1+x", 50), o("k", "a2+x", 50)]);
    assert_eq!(j.right("k", "y", 50), vec![o("k", "a1+y", 50), o("k", "a2+y", 50)]);
    assert_eq!(
        j.left("k", "a3", 50),
        vec![o("k", "a3+x", 50), o("k", "a3+y", 50)],
        "both buffered right duplicates, in arrival order"
    );
}

#[test]
fn records_beyond_the_grace_period_are_dropped_and_counted() {
    let windows = JoinWindows::of_time_difference_and_grace(ms(10), ms(5));
    assert_eq!(windows.grace_ms(), 5);
    let mut j = Join::new(Kind::Inner, windows);
    j.left("k", "a", 100);
    j.right("clock", "c", 120);
    // Out of order, but its window (up to 115) closes only after 115 + 5: still joins.
    assert_eq!(j.right("k", "x", 105), vec![o("k", "a+x", 105)]);
    j.right("clock", "c", 130);
    // Its window (up to 120) closed at 125: dropped.
    assert_eq!(j.right("k", "y", 110), vec![]);
    assert_eq!(j.driver.dropped_records(), 1);
    // A late record is not buffered either: a later left record does not find it.
    assert_eq!(j.left("k", "b", 120), vec![]);
}

#[test]
fn left_join_emits_unmatched_records_only_when_their_window_closes() {
    let mut j = Join::new(Kind::Left, JoinWindows::of_time_difference_and_grace(ms(10), ms(5)));
    assert_eq!(j.left("k", "a", 100), vec![], "not eagerly: a partner may still come");
    assert_eq!(j.left("m", "b", 100), vec![]);
    // Stream time 115 = 100 + 10 + 5: the windows are still open.
    assert_eq!(j.right("other", "x", 115), vec![]);
    assert_eq!(j.right("m", "y", 108), vec![o("m", "b+y", 108)]);
    // Stream time 116: `k` closes with no partner; `m` joined, so it gives nothing more.
    assert_eq!(j.right("other", "x", 116), vec![o("k", "a+-", 100)]);
    // Right records never give a result of their own in a left join.
    assert_eq!(j.left("z", "c", 300), vec![]);
    assert_eq!(j.left("z", "d", 400), vec![o("z", "c+-", 300)]);
}

#[test]
fn outer_join_emits_both_sides_unmatched_records_after_their_windows_close() {
    let mut j = Join::new(Kind::Outer, JoinWindows::of_time_difference_with_no_grace(ms(10)));
    assert_eq!(j.left("a", "l1", 10), vec![]);
    assert_eq!(j.right("b", "r1", 12), vec![]);
    assert_eq!(j.right("a", "r2", 15), vec![o("a", "l1+r2", 15)]);
    // Stream time 22: the right record `b` at 12 (window to 22) is still open, and `a@15`
    // joined.
    assert_eq!(j.left("c", "l2", 22), vec![]);
    assert_eq!(j.left("c", "l3", 23), vec![o("b", "-+r1", 12)]);
    assert_eq!(j.right("d", "r3", 40), vec![o("c", "l2+-", 22), o("c", "l3+-", 23)]);
    // Duplicates of an unmatched key and timestamp all come out, in arrival order.
    assert_eq!(j.right("d", "r4", 40), vec![]);
    assert_eq!(j.left("e", "l4", 60), vec![o("d", "-+r3", 40), o("d", "-+r4", 40)]);
}

/// One input record of the property test.
#[derive(Debug, Clone)]
struct Event {
    left: bool,
    key: u8,
    timestamp: i64,
}

fn event() -> impl Strategy<Value = Event> {
    (any::<bool>(), 0u8..3, 0i64..60).prop_map(|(left, key, timestamp)| Event {
        left,
        key,
        timestamp,
    })
}

/// The join's rules as a nested loop over the input so far, with no stores: stream time is
/// the largest timestamp seen; a record is late when its window end plus grace is before it;
/// a record joins every earlier non-late record of the other side within the window; a left
/// or outer record without a partner is emitted once stream time passes its window end plus
/// grace, unless a partner came first.
fn reference(kind: Kind, windows: JoinWindows, events: &[Event]) -> Vec<Out> {
    let (before, after, grace) = (windows.before_ms(), windows.after_ms(), windows.grace_ms());
    let ahead = |left: bool| if left { after } else { before };
    let keeps = |left: bool| kind == Kind::Outer || (kind == Kind::Left && left);
    let value = |i: usize, e: &Event| format!("{}{i}", if e.left { "l" } else { "r" });
    let mut out = Vec::new();
    let mut stream_time = -1;
    let mut accepted: Vec<usize> = Vec::new();
    let mut unmatched: Vec<usize> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        stream_time = stream_time.max(e.timestamp);
        if e.timestamp + ahead(e.left) + grace < stream_time {
            continue;
        }
        if e.timestamp == stream_time {
            let (closed, open): (Vec<usize>, Vec<usize>) = unmatched
                .iter()
                .partition(|&&u| events[u].timestamp + ahead(events[u].left) + grace < stream_time);
            for u in closed {
                let eu = &events[u];
                let v = if eu.left {
                    format!("{}+-", value(u, eu))
                } else {
                    format!("-+{}", value(u, eu))
                };
                out.push((eu.key.to_string(), v, eu.timestamp));
            }
            unmatched = open;
        }
        let (lo, hi) = if e.left {
            (e.timestamp - before, e.timestamp + after)
        } else {
            (e.timestamp - after, e.timestamp + before)
        };
        let partners: Vec<usize> = accepted
            .iter()
            .copied()
            .filter(|&p| {
                let ep = &events[p];
                ep.left != e.left && ep.key == e.key && (lo..=hi).contains(&ep.timestamp)
            })
            .collect();
        for &p in &partners {
            let ep = &events[p];
            let v = if e.left {
                format!("{}+{}", value(i, e), value(p, ep))
            } else {
                format!("{}+{}", value(p, ep), value(i, e))
            };
            out.push((e.key.to_string(), v, e.timestamp.max(ep.timestamp)));
            unmatched.retain(|&u| {
                !(events[u].left == ep.left
                    && events[u].key == ep.key
                    && events[u].timestamp == ep.timestamp)
            });
        }
        if partners.is_empty() && keeps(e.left) {
            unmatched.push(i);
        }
        accepted.push(i);
    }
    out
}

fn run(kind: Kind, windows: JoinWindows, events: &[Event]) -> Vec<Out> {
    let mut j = Join::new(kind, windows);
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let (k, v) = (e.key.to_string(), format!("{}{i}", if e.left { "l" } else { "r" }));
        out.extend(if e.left { j.left(&k, &v, e.timestamp) } else { j.right(&k, &v, e.timestamp) });
    }
    out
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Inner), Just(Kind::Left), Just(Kind::Outer)]
}

fn windows() -> impl Strategy<Value = JoinWindows> {
    (0u64..8, 0u64..8, 0u64..6).prop_map(|(before, after, grace)| {
        JoinWindows::of_time_difference_and_grace(ms(0), ms(grace))
            .before(ms(before))
            .after(ms(after))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn stream_stream_joins_match_a_nested_loop_over_the_input(
        kind in kind(),
        windows in windows(),
        events in proptest::collection::vec(event(), 1..40),
    ) {
        let mut got = run(kind, windows, &events);
        let mut want = reference(kind, windows, &events);
        // Results of one input record come out in the store's order; compare as multisets.
        got.sort();
        want.sort();
        prop_assert_eq!(got, want);
    }
}

/// `left` and `right` tables joined, the result as a stream of `Option<"l+r">` on `out`.
fn table_join(kind: Kind) -> (TopologyTestDriver, &'static str) {
    let builder = StreamsBuilder::new();
    let left = builder.table("left", strings(), Materialized::named("left"));
    let right = builder.table("right", strings(), Materialized::named("right"));
    let side = |v: Option<&String>| v.map_or("-".to_string(), Clone::clone);
    let joined = match kind {
        Kind::Inner => left.join(
            &right,
            |l, r| format!("{l}+{r}"),
            Materialized::named("joined").with_value_serde(Serdes::string()),
        ),
        Kind::Left => left.left_join(
            &right,
            move |l, r| format!("{l}+{}", side(r)),
            Materialized::named("joined").with_value_serde(Serdes::string()),
        ),
        Kind::Outer => left.outer_join(
            &right,
            move |l, r| format!("{}+{}", side(l), side(r)),
            Materialized::named("joined").with_value_serde(Serdes::string()),
        ),
    };
    assert_eq!(joined.queryable_store_name(), Some("joined"));
    joined.to_stream().to("out");
    // The result is a table like any other: filter it and write that too.
    joined.filter(|_, v| !v.starts_with('-')).to_stream().to("with-left");
    let topology = builder.build().unwrap();
    assert_eq!(topology.subtopologies().len(), 1);
    (TopologyTestDriver::new(topology, DriverConfig::default()), "out")
}

type Row = (String, Option<String>);

fn row(k: &str, v: Option<&str>) -> Row {
    (k.to_string(), v.map(str::to_string))
}

struct Tables {
    _driver: TopologyTestDriver,
    left: fjord_streams::TestInputTopic<String, Option<String>>,
    right: fjord_streams::TestInputTopic<String, Option<String>>,
    out: TestOutputTopic<String, Option<String>>,
    with_left: TestOutputTopic<String, Option<String>>,
}

impl Tables {
    fn new(kind: Kind) -> Self {
        let (driver, out) = table_join(kind);
        let opt = || Serdes::option(Serdes::string());
        Tables {
            left: driver.input_topic("left", Serdes::string(), opt()),
            right: driver.input_topic("right", Serdes::string(), opt()),
            out: driver.output_topic(out, Serdes::string(), opt()),
            with_left: driver.output_topic("with-left", Serdes::string(), opt()),
            _driver: driver,
        }
    }

    fn left(&mut self, k: &str, v: Option<&str>) -> Vec<Row> {
        self.left.pipe_input(k.into(), v.map(str::to_string), 1).unwrap();
        self.out.read_key_values().unwrap()
    }

    fn right(&mut self, k: &str, v: Option<&str>) -> Vec<Row> {
        self.right.pipe_input(k.into(), v.map(str::to_string), 1).unwrap();
        self.out.read_key_values().unwrap()
    }
}

#[test]
fn table_inner_join_has_a_row_only_where_both_sides_do() {
    let mut t = Tables::new(Kind::Inner);
    assert_eq!(t.left("k", Some("a")), vec![]);
    assert_eq!(t.right("k", Some("x")), vec![row("k", Some("a+x"))]);
    assert_eq!(t.left("k", Some("b")), vec![row("k", Some("b+x"))]);
    assert_eq!(t.right("k", Some("y")), vec![row("k", Some("b+y"))]);
    // Either side deleted: the row is deleted, once.
    assert_eq!(t.right("k", None), vec![row("k", None)]);
    assert_eq!(t.left("k", None), vec![], "nothing to delete any more");
    assert_eq!(t.right("k", Some("z")), vec![]);
    assert_eq!(t.left("j", None), vec![], "a tombstone for an unknown key gives nothing");
}

#[test]
fn table_left_join_has_a_row_wherever_the_left_side_does() {
    let mut t = Tables::new(Kind::Left);
    assert_eq!(t.right("k", Some("x")), vec![]);
    assert_eq!(t.left("k", Some("a")), vec![row("k", Some("a+x"))]);
    assert_eq!(t.right("k", None), vec![row("k", Some("a+-"))]);
    assert_eq!(t.left("k", None), vec![row("k", None)]);
    assert_eq!(t.right("k", Some("y")), vec![]);
}

#[test]
fn table_outer_join_has_a_row_wherever_either_side_does() {
    let mut t = Tables::new(Kind::Outer);
    assert_eq!(t.right("k", Some("x")), vec![row("k", Some("-+x"))]);
    assert_eq!(t.left("k", Some("a")), vec![row("k", Some("a+x"))]);
    assert_eq!(t.right("k", None), vec![row("k", Some("a+-"))]);
    assert_eq!(t.left("k", None), vec![row("k", None)]);
    assert_eq!(t.left("k", None), vec![]);
    // The filtered table downstream saw the row appear, pass the filter, and go.
    assert_eq!(
        t.with_left.read_key_values().unwrap(),
        vec![row("k", Some("a+x")), row("k", Some("a+-")), row("k", None)]
    );
}

#[test]
fn a_table_join_needs_materialized_tables() {
    let builder = StreamsBuilder::new();
    let left = builder.table("left", strings(), Materialized::named("left"));
    let right = builder.table("right", strings(), Materialized::named("right"));
    let unmaterialized = right.map_values(|v| v.len());
    left.join(&unmaterialized, |l, n| format!("{l}{n}"), Materialized::named("j"));
    let err = builder.build().unwrap_err().to_string();
    assert!(err.contains("materialized"), "{err}");
}

#[test]
fn a_stream_join_store_name_names_the_buffers_and_their_changelogs() {
    let builder = StreamsBuilder::new();
    let left = builder.stream("left", strings());
    let right = builder.stream("right", strings());
    left.outer_join_stream(
        &right,
        |_, _| 1i64,
        JoinWindows::of_time_difference_with_no_grace(ms(10)),
        StreamJoined::with(Serdes::string(), Serdes::string(), Serdes::string())
            .with_store_name("clicks"),
    )
    .to_with("out", Produced::with(Serdes::string(), Serdes::i64()));
    let topology = builder.build().unwrap();
    let names: Vec<String> = topology.internal_topics().iter().map(|t| t.name.clone()).collect();
    assert_eq!(
        names,
        vec![
            "clicks-this-join-store-changelog",
            "clicks-other-join-store-changelog",
            "clicks-outer-shared-join-store-changelog",
        ]
    );
    let description = topology.describe();
    assert!(
        description.contains("clicks-this-join-store, clicks-other-join-store"),
        "{description}"
    );
}
