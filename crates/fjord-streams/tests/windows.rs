//! Session (and sliding) windows through the `TopologyTestDriver`: merges, out-of-order and
//! late records, tombstones for merged sessions, suppression, and random inputs against an
//! independent computation. The driver commits after every input record, so each record's
//! updates come out before the next record goes in.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use fjord_streams::{
    Consumed, DriverConfig, Materialized, Serdes, SessionWindows, SlidingWindows, StreamsBuilder,
    TestOutputTopic, TopologyTestDriver, Window, Windowed,
};
use proptest::prelude::*;

fn session(k: &str, start: i64, end: i64) -> Windowed<String> {
    Windowed { key: k.to_string(), window: Window { start, end } }
}

/// A session-windowed count of topic `in` written to `out`, with the test driver.
fn session_count(
    windows: SessionWindows,
    materialized: Materialized<String, i64>,
) -> (TopologyTestDriver, TestOutputTopic<Windowed<String>, Option<i64>>) {
    let builder = StreamsBuilder::new();
    builder
        .stream("in", Consumed::with(Serdes::string(), Serdes::string()))
        .group_by_key()
        .windowed_by(windows)
        .count(materialized)
        .to_stream()
        .to("out");
    let driver = TopologyTestDriver::new(builder.build().unwrap(), DriverConfig::default());
    let out = driver.output_topic(
        "out",
        Serdes::session_windowed(Serdes::string()),
        Serdes::option(Serdes::i64()),
    );
    (driver, out)
}

fn gap(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

#[test]
fn a_record_that_bridges_two_sessions_merges_them_and_deletes_both() {
    let windows = SessionWindows::of_inactivity_gap_and_grace(gap(100), gap(1_000));
    let (d, out) = session_count(windows, Materialized::named("sessions").with_caching_disabled());
    let mut input = d.input_topic("in", Serdes::string(), Serdes::string());
    input.pipe_input("u".into(), "a".into(), 0).unwrap();
    input.pipe_input("u".into(), "b".into(), 150).unwrap();
    input.pipe_input("v".into(), "c".into(), 160).unwrap();
    assert_eq!(
        out.read_key_values().unwrap(),
        vec![
            (session("u", 0, 0), Some(1)),
            (session("u", 150, 150), Some(1)),
            (session("v", 160, 160), Some(1))
        ]
    );
    // 80 is within the gap of both sessions of `u`: one session [0, 150] replaces them, with
    // a tombstone for each old windowed key first, as Kafka Streams forwards them.
    input.pipe_input("u".into(), "d".into(), 80).unwrap();
    assert_eq!(
        out.read_key_values().unwrap(),
        vec![
            (session("u", 0, 0), None),
            (session("u", 150, 150), None),
            (session("u", 0, 150), Some(3))
        ]
    );
    // A record past the gap starts a new session.
    input.pipe_input("u".into(), "e".into(), 251).unwrap();
    assert_eq!(out.read_key_values().unwrap(), vec![(session("u", 251, 251), Some(1))]);
    assert_eq!(d.dropped_records(), 0);
}

#[test]
fn with_caching_a_merge_reaches_downstream_as_one_update_per_windowed_key() {
    let windows = SessionWindows::of_inactivity_gap_and_grace(gap(100), gap(1_000));
    let (d, out) = session_count(windows, Materialized::named("sessions"));
    let mut input = d.input_topic("in", Serdes::string(), Serdes::string());
    input.pipe_input("u".into(), "a".into(), 1_000).unwrap();
    input.pipe_input("u".into(), "b".into(), 1_050).unwrap();
    // Growing a session replaces its windowed key: the old key's delete and the new key's
    // value come out at the commit, in store order (by end, then start).
    assert_eq!(
        out.read_key_values().unwrap(),
        vec![
            (session("u", 1_000, 1_000), Some(1)),
            (session("u", 1_000, 1_000), None),
            (session("u", 1_000, 1_050), Some(2))
        ]
    );
    // Out of order, inside the session: same window, one update.
    input.pipe_input("u".into(), "c".into(), 1_020).unwrap();
    assert_eq!(out.read_key_values().unwrap(), vec![(session("u", 1_000, 1_050), Some(3))]);
    // Out of order, extending the start.
    input.pipe_input("u".into(), "d".into(), 950).unwrap();
    assert_eq!(
        out.read_key_values().unwrap(),
        vec![(session("u", 950, 1_050), Some(4)), (session("u", 1_000, 1_050), None)]
    );
}

#[test]
fn records_that_only_reach_closed_sessions_are_dropped_as_late() {
    // A session closes when stream time passes its end + gap + grace = end + 150.
    let windows = SessionWindows::of_inactivity_gap_and_grace(gap(100), gap(50));
    let (d, out) = session_count(windows, Materialized::named("sessions"));
    let mut input = d.input_topic("in", Serdes::string(), Serdes::string());
    input.pipe_input("u".into(), "a".into(), 0).unwrap();
    input.pipe_input("v".into(), "b".into(), 1_000).unwrap();
    out.read_key_values().unwrap();
    // Stream time 1000: sessions ending before 850 are closed.
    input.pipe_input("u".into(), "late".into(), 200).unwrap();
    input.pipe_input("u".into(), "late, merging a closed session".into(), 50).unwrap();
    assert!(out.is_empty());
    assert_eq!(d.dropped_records(), 2);
    // Just in time, and then a record before the close time that joins an open session.
    input.pipe_input("u".into(), "c".into(), 860).unwrap();
    input.pipe_input("u".into(), "d".into(), 800).unwrap();
    assert_eq!(
        out.read_key_values().unwrap(),
        vec![
            (session("u", 860, 860), Some(1)),
            (session("u", 800, 860), Some(2)),
            (session("u", 860, 860), None)
        ]
    );
    assert_eq!(d.dropped_records(), 2);
}

#[test]
fn session_reduce_and_aggregate_merge_with_the_merger() {
    let builder = StreamsBuilder::new();
    let grouped =
        builder.stream("in", Consumed::with(Serdes::string(), Serdes::i64())).group_by_key();
    let windows = SessionWindows::of_inactivity_gap_and_grace(gap(10), gap(100));
    grouped
        .windowed_by(windows)
        .reduce(|a, b| a.max(b), Materialized::named("max"))
        .to_stream()
        .to("max");
    grouped
        .windowed_by(windows)
        .aggregate(
            Vec::<i64>::new,
            |_, v, mut all| {
                all.push(v);
                all
            },
            |_, mut a, b| {
                a.extend(b);
                a
            },
            Materialized::named("all").with_value_serde(Serdes::json()),
        )
        .to_stream()
        .to_with(
            "all",
            fjord_streams::Produced::with(
                Serdes::session_windowed(Serdes::string()),
                Serdes::option(Serdes::json()),
            ),
        );
    let d = TopologyTestDriver::new(builder.build().unwrap(), DriverConfig::default());
    let mut input = d.input_topic("in", Serdes::string(), Serdes::i64());
    let max = d.output_topic(
        "max",
        Serdes::session_windowed(Serdes::string()),
        Serdes::option(Serdes::i64()),
    );
    let all = d.output_topic(
        "all",
        Serdes::session_windowed(Serdes::string()),
        Serdes::option(Serdes::json::<Vec<i64>>()),
    );
    for (v, ts) in [(5, 100), (9, 120), (7, 110)] {
        input.pipe_input("k".into(), v, ts).unwrap();
    }
    let max = final_table(max.read_key_values().unwrap());
    assert_eq!(max, BTreeMap::from([(session("k", 100, 120), 9)]));
    // 110 bridges [100, 100] and [120, 120]: the merger concatenates in session order, then
    // the aggregator adds 7.
    let all = final_table(all.read_key_values().unwrap());
    assert_eq!(all, BTreeMap::from([(session("k", 100, 120), vec![5, 9, 7])]));
}

#[test]
fn suppression_emits_a_session_once_it_can_no_longer_grow() {
    let builder = StreamsBuilder::new();
    builder
        .stream("in", Consumed::with(Serdes::string(), Serdes::string()))
        .group_by_key()
        .windowed_by(SessionWindows::of_inactivity_gap_and_grace(gap(100), gap(20)))
        .count(Materialized::named("sessions"))
        .suppress_until_window_closes()
        .to_stream()
        .to("final");
    let d = TopologyTestDriver::new(builder.build().unwrap(), DriverConfig::default());
    let mut input = d.input_topic("in", Serdes::string(), Serdes::string());
    let out = d.output_topic(
        "final",
        Serdes::session_windowed(Serdes::string()),
        Serdes::option(Serdes::i64()),
    );
    input.pipe_input("u".into(), "a".into(), 0).unwrap();
    input.pipe_input("u".into(), "b".into(), 50).unwrap();
    // [0, 50] closes when stream time reaches 50 + gap + grace = 170.
    input.pipe_input("v".into(), "c".into(), 169).unwrap();
    assert!(out.is_empty());
    input.pipe_input("v".into(), "d".into(), 170).unwrap();
    assert_eq!(out.read_key_values().unwrap(), vec![(session("u", 0, 50), Some(2))]);
}

/// Sessions of sorted timestamps: runs whose neighbours are at most `gap` apart.
fn sessionize(mut timestamps: Vec<i64>, gap: i64) -> Vec<(i64, i64, i64)> {
    timestamps.sort_unstable();
    let mut out: Vec<(i64, i64, i64)> = Vec::new();
    for ts in timestamps {
        match out.last_mut() {
            Some((_, end, n)) if ts - *end <= gap => {
                *end = ts;
                *n += 1;
            }
            _ => out.push((ts, ts, 1)),
        }
    }
    out
}

/// The table a stream of updates leaves: the latest value per key, deletes removed.
fn final_table<V>(updates: Vec<(Windowed<String>, Option<V>)>) -> BTreeMap<Windowed<String>, V> {
    let mut table = BTreeMap::new();
    for (key, value) in updates {
        match value {
            Some(v) => table.insert(key, v),
            None => table.remove(&key),
        };
    }
    table
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn session_counts_of_out_of_order_records_match_a_sessionization(
        records in prop::collection::vec((0..3usize, 0i64..2_000), 1..60),
        caching in any::<bool>(),
    ) {
        let windows = SessionWindows::of_inactivity_gap_and_grace(gap(50), gap(10_000));
        let materialized = Materialized::named("sessions");
        let materialized = if caching { materialized } else { materialized.with_caching_disabled() };
        let (d, out) = session_count(windows, materialized);
        let mut input = d.input_topic("in", Serdes::string(), Serdes::string());
        let keys = ["a", "b", "c"];
        for (k, ts) in &records {
            input.pipe_input(keys[*k].to_string(), String::new(), *ts).unwrap();
        }
        let mut expected = BTreeMap::new();
        for (i, k) in keys.iter().enumerate() {
            let timestamps = records.iter().filter(|(key, _)| *key == i).map(|(_, ts)| *ts).collect();
            for (start, end, n) in sessionize(timestamps, 50) {
                expected.insert(session(k, start, end), n);
            }
        }
        prop_assert_eq!(final_table(out.read_key_values().unwrap()), expected);
    }
}

/// A sliding-window count of topic `in` (one key) written to `out`.
fn sliding_count(
    difference: i64,
    grace: i64,
    materialized: Materialized<String, i64>,
) -> (TopologyTestDriver, TestOutputTopic<Windowed<String>, Option<i64>>) {
    let builder = StreamsBuilder::new();
    builder
        .stream("in", Consumed::with(Serdes::string(), Serdes::string()))
        .group_by_key()
        .windowed_by(SlidingWindows::of_time_difference_and_grace(
            gap(difference as u64),
            gap(grace as u64),
        ))
        .count(materialized)
        .to_stream()
        .to("out");
    let driver = TopologyTestDriver::new(builder.build().unwrap(), DriverConfig::default());
    let out = driver.output_topic(
        "out",
        Serdes::windowed(Serdes::string(), difference),
        Serdes::option(Serdes::i64()),
    );
    (driver, out)
}

#[test]
fn sliding_windows_are_placed_by_the_records_with_inclusive_bounds() {
    let (d, out) = sliding_count(10, 100, Materialized::named("sliding"));
    let mut input = d.input_topic("in", Serdes::string(), Serdes::string());
    for ts in [20, 25, 31] {
        input.pipe_input("k".into(), String::new(), ts).unwrap();
    }
    // Left windows [10, 20], [15, 25], [21, 31]; right windows [21, 31] of 20 (the same as
    // 31's left window) and [26, 36] of 25.
    assert_eq!(
        final_table(out.read_key_values().unwrap()),
        BTreeMap::from([
            (session("k", 10, 20), 1),
            (session("k", 15, 25), 2),
            (session("k", 21, 31), 2),
            (session("k", 26, 36), 1),
        ])
    );
    assert_eq!(d.dropped_records(), 0);
}

#[test]
fn sliding_windows_drop_records_whose_windows_all_closed() {
    let (d, out) = sliding_count(10, 5, Materialized::named("sliding"));
    let mut input = d.input_topic("in", Serdes::string(), Serdes::string());
    input.pipe_input("k".into(), String::new(), 100).unwrap();
    out.read_key_values().unwrap();
    // Close time 95: a record at 80 has windows up to [81, 91]: all closed.
    input.pipe_input("k".into(), String::new(), 80).unwrap();
    assert!(out.is_empty());
    assert_eq!(d.dropped_records(), 1);
    // A record at 88 only has its left window [78, 88], closed: dropped from it.
    input.pipe_input("k".into(), String::new(), 88).unwrap();
    assert!(out.is_empty());
    assert_eq!(d.dropped_records(), 2);
    // A record at 95: its left window [85, 95] is closed, but it joins the open [90, 100]
    // and gets a right window [96, 106] with the record at 100.
    input.pipe_input("k".into(), String::new(), 95).unwrap();
    assert_eq!(
        out.read_key_values().unwrap(),
        vec![(session("k", 90, 100), Some(2)), (session("k", 96, 106), Some(1))]
    );
    assert_eq!(d.dropped_records(), 3);
}

/// The windows Kafka Streams' sliding algorithm keeps for records at `timestamps` (all in
/// time), with the count of the records in each: every record's left window (`[0, d]` for
/// records before `d`), and its right window when a record falls within `d` after it.
fn sliding_windows(timestamps: &[i64], d: i64) -> BTreeMap<(i64, i64), i64> {
    let mut windows = BTreeMap::new();
    let count = |start: i64, end: i64| {
        timestamps.iter().filter(|t| (start..=end).contains(*t)).count() as i64
    };
    for &t in timestamps {
        let start = (t - d).max(0);
        windows.insert((start, start + d), count(start, start + d));
        if timestamps.iter().any(|&u| u > t && u <= t + 1 + d) {
            windows.insert((t + 1, t + 1 + d), count(t + 1, t + 1 + d));
        }
    }
    windows
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn sliding_counts_of_out_of_order_records_match_a_brute_force_count(
        timestamps in prop::collection::vec(0i64..300, 1..40),
        caching in any::<bool>(),
    ) {
        let materialized = Materialized::named("sliding");
        let materialized = if caching { materialized } else { materialized.with_caching_disabled() };
        let (d, out) = sliding_count(20, 1_000, materialized);
        let mut input = d.input_topic("in", Serdes::string(), Serdes::string());
        for ts in &timestamps {
            input.pipe_input("k".into(), String::new(), *ts).unwrap();
        }
        let expected: BTreeMap<Windowed<String>, i64> = sliding_windows(&timestamps, 20)
            .into_iter()
            .map(|((start, end), n)| (session("k", start, end), n))
            .collect();
        prop_assert_eq!(final_table(out.read_key_values().unwrap()), expected);
        prop_assert_eq!(d.dropped_records(), 0);
    }
}
