//! The stateful DSL through the `TopologyTestDriver`: grouping and aggregations, tables and
//! their updates, re-grouping with subtraction, stream-table joins, windows with grace and
//! suppression. The driver commits after every input record, as Kafka's does, so a record's
//! cached updates come out before the next record goes in.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fjord_streams::{
    Consumed, DriverConfig, Grouped, Materialized, Produced, Serdes, StreamsBuilder, TimeWindows,
    TopologyTestDriver, Window, Windowed,
};

fn strings() -> Consumed<String, String> {
    Consumed::with(Serdes::string(), Serdes::string())
}

fn driver(builder: StreamsBuilder) -> TopologyTestDriver {
    TopologyTestDriver::new(builder.build().unwrap(), DriverConfig::default())
}

fn kv(k: &str, v: i64) -> (String, Option<i64>) {
    (k.to_string(), Some(v))
}

#[test]
fn word_count_counts_each_word_and_emits_one_update_per_key_and_commit() {
    let builder = StreamsBuilder::new();
    builder
        .stream("lines", strings())
        .flat_map_values(|line: String| {
            line.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>()
        })
        .group_by(|_, word| word.clone(), Grouped::with(Serdes::string(), Serdes::string()))
        .count(Materialized::named("counts"))
        .to_stream()
        .to("word-counts");
    let topology = builder.build().unwrap();
    // Grouping by a new key goes through a repartition topic: two sub-topologies.
    assert_eq!(topology.subtopologies().len(), 2);
    let d = TopologyTestDriver::new(topology, DriverConfig::default());
    let mut lines = d.input_topic("lines", Serdes::string(), Serdes::string());
    let counts = d.output_topic("word-counts", Serdes::string(), Serdes::option(Serdes::i64()));
    lines.pipe_input("l1".into(), "the cat and the hat".into(), 1).unwrap();
    // One update per word for the whole line: the cache merged the two updates of `the`.
    assert_eq!(
        counts.read_key_values().unwrap(),
        vec![kv("and", 1), kv("cat", 1), kv("hat", 1), kv("the", 2)]
    );
    lines.pipe_input("l2".into(), "The end".into(), 2).unwrap();
    assert_eq!(counts.read_key_values().unwrap(), vec![kv("end", 1), kv("the", 3)]);
    // The store's changelog got the same rows.
    let changelog = d.output_topic(
        "test-driver-counts-changelog",
        Serdes::string(),
        Serdes::option(Serdes::i64()),
    );
    assert_eq!(changelog.queue_size(), 6);
}

#[test]
fn caching_disabled_emits_every_update() {
    let builder = StreamsBuilder::new();
    builder
        .stream("in", strings())
        .group_by_key()
        .count(Materialized::named("c").with_caching_disabled())
        .to_stream()
        .to("out");
    let d = driver(builder);
    let mut input = d.input_topic("in", Serdes::string(), Serdes::string());
    let out = d.output_topic("out", Serdes::string(), Serdes::option(Serdes::i64()));
    for v in ["x", "y", "z"] {
        input.pipe_input("k".into(), v.into(), 1).unwrap();
    }
    assert_eq!(out.read_key_values().unwrap(), vec![kv("k", 1), kv("k", 2), kv("k", 3)]);
}

#[test]
fn reduce_and_aggregate_fold_values_per_key() {
    let builder = StreamsBuilder::new();
    let grouped =
        builder.stream("amounts", Consumed::with(Serdes::string(), Serdes::i64())).group_by_key();
    grouped.reduce(|a, b| a.max(b), Materialized::named("max")).to_stream().to("max");
    grouped
        .aggregate(
            || (0i64, 0i64),
            |_, amount, (n, sum)| (n + 1, sum + amount),
            Materialized::named("avg").with_value_serde(Serdes::json()),
        )
        .map_values(|(n, sum)| sum as f64 / n as f64)
        .to_stream()
        .to_with("avg", Produced::with(Serdes::string(), Serdes::option(Serdes::f64())));
    let d = driver(builder);
    let mut input = d.input_topic("amounts", Serdes::string(), Serdes::i64());
    let max = d.output_topic("max", Serdes::string(), Serdes::option(Serdes::i64()));
    let avg = d.output_topic("avg", Serdes::string(), Serdes::option(Serdes::f64()));
    for (k, v) in [("a", 4), ("b", 10), ("a", 8), ("a", 3)] {
        input.pipe_input(k.into(), v, 1).unwrap();
    }
    assert_eq!(
        max.read_key_values().unwrap(),
        vec![kv("a", 4), kv("b", 10), kv("a", 8), kv("a", 8)]
    );
    let avgs: Vec<(String, Option<f64>)> = avg.read_key_values().unwrap();
    assert_eq!(avgs.last().unwrap(), &("a".to_string(), Some(5.0)));
}

#[test]
fn an_aggregation_without_a_value_serde_is_a_build_error() {
    let builder = StreamsBuilder::new();
    builder.stream("in", strings()).group_by_key().aggregate(
        Vec::<String>::new,
        |_, v, mut all| {
            all.push(v);
            all
        },
        Materialized::named("lists"),
    );
    let err = builder.build().unwrap_err().to_string();
    assert!(err.contains("`lists`") && err.contains("serde"), "{err}");
}

#[test]
fn a_table_keeps_the_latest_value_and_tombstones_delete() {
    let builder = StreamsBuilder::new();
    let users = builder.table("users", strings(), Materialized::named("users"));
    users.to_stream().to("user-updates");
    users.filter(|_, region| region != "hidden").to_stream().to("visible");
    let d = driver(builder);
    let mut input = d.input_topic("users", Serdes::string(), Serdes::option(Serdes::string()));
    let updates =
        d.output_topic("user-updates", Serdes::string(), Serdes::option(Serdes::string()));
    let visible = d.output_topic("visible", Serdes::string(), Serdes::option(Serdes::string()));
    input.pipe_input("ann".into(), Some("eu".into()), 1).unwrap();
    input.pipe_input("bob".into(), Some("us".into()), 2).unwrap();
    input.pipe_input("ann".into(), Some("hidden".into()), 3).unwrap();
    input.pipe_input("bob".into(), None, 4).unwrap();
    let s = |k: &str, v: Option<&str>| (k.to_string(), v.map(str::to_string));
    assert_eq!(
        updates.read_key_values().unwrap(),
        vec![s("ann", Some("eu")), s("bob", Some("us")), s("ann", Some("hidden")), s("bob", None)]
    );
    // A row that stops matching the filter is deleted downstream.
    assert_eq!(
        visible.read_key_values().unwrap(),
        vec![s("ann", Some("eu")), s("bob", Some("us")), s("ann", None), s("bob", None)]
    );
}

#[test]
fn a_regrouped_table_subtracts_rows_that_move_between_groups() {
    let builder = StreamsBuilder::new();
    builder
        .table("users", strings(), Materialized::named("users"))
        .group_by(
            |_, region| (region.clone(), 1i64),
            Grouped::with(Serdes::string(), Serdes::i64()),
        )
        .count(Materialized::named("per-region"))
        .to_stream()
        .to("per-region");
    let d = driver(builder);
    let mut input = d.input_topic("users", Serdes::string(), Serdes::option(Serdes::string()));
    let out = d.output_topic("per-region", Serdes::string(), Serdes::option(Serdes::i64()));
    input.pipe_input("ann".into(), Some("eu".into()), 1).unwrap();
    input.pipe_input("bob".into(), Some("eu".into()), 2).unwrap();
    assert_eq!(out.read_key_values().unwrap(), vec![kv("eu", 1), kv("eu", 2)]);
    // Ann moves: `eu` loses her, `us` gains her.
    input.pipe_input("ann".into(), Some("us".into()), 3).unwrap();
    assert_eq!(out.read_key_values().unwrap(), vec![kv("eu", 1), kv("us", 1)]);
    // Bob leaves.
    input.pipe_input("bob".into(), None, 4).unwrap();
    assert_eq!(out.read_key_values().unwrap(), vec![kv("eu", 0)]);
}

#[test]
fn a_stream_joins_the_current_row_of_a_table() {
    let builder = StreamsBuilder::new();
    let customers = builder.table("customers", strings(), Materialized::named("customers"));
    let orders = builder.stream("orders", Consumed::with(Serdes::string(), Serdes::i64()));
    orders
        .join(&customers, |amount, name| format!("{name} paid {amount}"))
        .to_with("enriched", Produced::with(Serdes::string(), Serdes::string()));
    orders
        .left_join(&customers, |amount, name| {
            format!("{} paid {amount}", name.map_or("someone", String::as_str))
        })
        .to_with("enriched-left", Produced::with(Serdes::string(), Serdes::string()));
    let topology = builder.build().unwrap();
    // The join and the table share a store: one sub-topology, co-partitioned.
    assert_eq!(topology.subtopologies().len(), 1);
    assert!(topology.subtopologies()[0].copartitioned);
    let d = TopologyTestDriver::new(topology, DriverConfig::default());
    let mut customers = d.input_topic("customers", Serdes::string(), Serdes::string());
    let mut orders = d.input_topic("orders", Serdes::string(), Serdes::i64());
    let inner = d.output_topic("enriched", Serdes::string(), Serdes::string());
    let left = d.output_topic("enriched-left", Serdes::string(), Serdes::string());
    orders.pipe_input("c1".into(), 5, 1).unwrap();
    customers.pipe_input("c1".into(), "Ada".into(), 2).unwrap();
    orders.pipe_input("c1".into(), 7, 3).unwrap();
    customers.pipe_input("c1".into(), "Ada L.".into(), 4).unwrap();
    orders.pipe_input("c1".into(), 9, 5).unwrap();
    assert_eq!(inner.read_values().unwrap(), vec!["Ada paid 7", "Ada L. paid 9"]);
    assert_eq!(left.read_values().unwrap(), vec!["someone paid 5", "Ada paid 7", "Ada L. paid 9"]);
}

#[test]
fn joining_a_table_that_is_not_materialized_is_a_build_error() {
    let builder = StreamsBuilder::new();
    let table = builder.table("t", strings(), Materialized::named("t")).map_values(|v| v.len());
    builder.stream("s", strings()).join(&table, |a, b| format!("{a}{b}")).to("out");
    let err = builder.build().unwrap_err().to_string();
    assert!(err.contains("materialized"), "{err}");
}

fn windowed(k: &str, start: i64, end: i64) -> Windowed<String> {
    Windowed { key: k.to_string(), window: Window { start, end } }
}

#[test]
fn tumbling_windows_count_per_window_and_drop_records_after_the_grace_period() {
    let builder = StreamsBuilder::new();
    builder
        .stream("clicks", strings())
        .group_by_key()
        .windowed_by(TimeWindows::of_size_and_grace(
            Duration::from_millis(100),
            Duration::from_millis(50),
        ))
        .count(Materialized::named("clicks-per-window"))
        .to_stream()
        .to("out");
    let d = driver(builder);
    let mut input = d.input_topic("clicks", Serdes::string(), Serdes::string());
    let out = d.output_topic(
        "out",
        Serdes::windowed(Serdes::string(), 100),
        Serdes::option(Serdes::i64()),
    );
    input.pipe_input("u".into(), "a".into(), 10).unwrap();
    input.pipe_input("u".into(), "b".into(), 120).unwrap();
    // Out of order, within grace: window [0, 100) closes at stream time 150.
    input.pipe_input("u".into(), "c".into(), 90).unwrap();
    input.pipe_input("u".into(), "d".into(), 160).unwrap();
    // Too late: [0, 100) closed.
    input.pipe_input("u".into(), "e".into(), 50).unwrap();
    assert_eq!(
        out.read_key_values().unwrap(),
        vec![
            (windowed("u", 0, 100), Some(1)),
            (windowed("u", 100, 200), Some(1)),
            (windowed("u", 0, 100), Some(2)),
            (windowed("u", 100, 200), Some(2)),
        ]
    );
    assert_eq!(d.dropped_records(), 1);
}

#[test]
fn hopping_windows_put_a_record_in_every_window_that_contains_it() {
    let builder = StreamsBuilder::new();
    builder
        .stream("in", strings())
        .group_by_key()
        .windowed_by(
            TimeWindows::of_size_with_no_grace(Duration::from_millis(100))
                .advance_by(Duration::from_millis(50)),
        )
        .count(Materialized::named("hops"))
        .to_stream()
        .to("out");
    let d = driver(builder);
    let mut input = d.input_topic("in", Serdes::string(), Serdes::string());
    let out = d.output_topic(
        "out",
        Serdes::windowed(Serdes::string(), 100),
        Serdes::option(Serdes::i64()),
    );
    input.pipe_input("k".into(), "v".into(), 120).unwrap();
    let windows: Vec<Window> =
        out.read_key_values().unwrap().into_iter().map(|(k, _)| k.window).collect();
    assert_eq!(windows, vec![Window { start: 50, end: 150 }, Window { start: 100, end: 200 }]);
}

#[test]
fn suppression_emits_one_final_result_per_window_when_it_closes() {
    let builder = StreamsBuilder::new();
    builder
        .stream("orders", Consumed::with(Serdes::string(), Serdes::i64()))
        .group_by_key()
        .windowed_by(TimeWindows::of_size_and_grace(
            Duration::from_millis(60_000),
            Duration::from_millis(10_000),
        ))
        .reduce(|a, b| a + b, Materialized::named("revenue"))
        .suppress_until_window_closes()
        .to_stream()
        .to("revenue");
    let d = driver(builder);
    let mut input = d.input_topic("orders", Serdes::string(), Serdes::i64());
    let out = d.output_topic(
        "revenue",
        Serdes::windowed(Serdes::string(), 60_000),
        Serdes::option(Serdes::i64()),
    );
    input.pipe_input("alice".into(), 10, 1_000).unwrap();
    input.pipe_input("bob".into(), 5, 2_000).unwrap();
    input.pipe_input("alice".into(), 20, 59_000).unwrap();
    // The first minute has ended but is still within its grace period.
    input.pipe_input("alice".into(), 1, 65_000).unwrap();
    assert!(out.is_empty(), "nothing before the window closes");
    // Stream time reaches 70 s: [0, 60 s) closes, with its final sums.
    input.pipe_input("carol".into(), 7, 70_000).unwrap();
    assert_eq!(
        out.read_key_values().unwrap(),
        vec![(windowed("alice", 0, 60_000), Some(30)), (windowed("bob", 0, 60_000), Some(5))]
    );
    input.pipe_input("carol".into(), 1, 200_000).unwrap();
    assert_eq!(
        out.read_key_values().unwrap(),
        vec![
            (windowed("alice", 60_000, 120_000), Some(1)),
            (windowed("carol", 60_000, 120_000), Some(7)),
        ]
    );
}
