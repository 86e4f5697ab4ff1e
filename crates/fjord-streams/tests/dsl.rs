//! Every stateless operator through the `TopologyTestDriver`, topology validation and
//! description, error handlers and custom processors with punctuations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fjord_streams::{
    Consumed, DriverConfig, ErrorAction, Processor, ProcessorContext, Produced, PunctuationType,
    Record, Repartitioned, ScheduleId, Serdes, StreamsBuilder, StreamsError, TopologyTestDriver,
};

fn strings() -> Consumed<String, String> {
    Consumed::with(Serdes::string(), Serdes::string())
}

fn driver(builder: StreamsBuilder) -> TopologyTestDriver {
    TopologyTestDriver::new(builder.build().unwrap(), DriverConfig::default())
}

#[test]
fn filter_map_values_and_to() {
    let builder = StreamsBuilder::new();
    builder
        .stream("in", strings())
        .filter(|_, v| v.len() > 2)
        .filter_not(|k, _| k == "skip")
        .map_values(|v| v.to_uppercase())
        .to("out");
    let d = driver(builder);
    let mut input = d.input_topic("in", Serdes::string(), Serdes::string());
    let output = d.output_topic("out", Serdes::string(), Serdes::string());
    for (k, v) in [("a", "xy"), ("b", "hello"), ("skip", "world"), ("c", "abc")] {
        input.pipe_input(k.into(), v.into(), 10).unwrap();
    }
    assert_eq!(
        output.read_key_values().unwrap(),
        vec![("b".into(), "HELLO".into()), ("c".into(), "ABC".into())]
    );
}

#[test]
fn map_flat_map_select_key_and_peek() {
    let builder = StreamsBuilder::new();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    let words = builder
        .stream("lines", strings())
        .peek(move |_, _| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })
        .flat_map_values(|line: String| {
            line.split_whitespace().map(str::to_string).collect::<Vec<_>>()
        });
    words
        .select_key(|_, word| word.len() as i64)
        .to_with("by-length", Produced::with(Serdes::i64(), Serdes::string()));
    words
        .map(|k, w| (w.clone(), format!("{k}:{w}")))
        .flat_map(|k, v| vec![(k.clone(), v.clone()), (k, v)])
        .to_with("pairs", Produced::with(Serdes::string(), Serdes::string()));
    let d = driver(builder);
    let mut input = d.input_topic("lines", Serdes::string(), Serdes::string());
    input.pipe_input("l1".into(), "the quick fox".into(), 5).unwrap();
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
    let by_length = d.output_topic("by-length", Serdes::i64(), Serdes::string());
    assert_eq!(
        by_length.read_key_values().unwrap(),
        vec![(3, "the".into()), (5, "quick".into()), (3, "fox".into())]
    );
    let pairs = d.output_topic("pairs", Serdes::string(), Serdes::string());
    assert_eq!(pairs.queue_size(), 6);
    assert_eq!(pairs.read_key_value().unwrap(), Some(("the".into(), "l1:the".into())));
}

#[test]
fn split_sends_each_record_to_the_first_matching_branch() {
    let builder = StreamsBuilder::new();
    let branches = builder
        .stream("in", Consumed::with(Serdes::string(), Serdes::i64()))
        .split()
        .prefix("amount-")
        .branch("small", |_, v| *v < 10)
        .branch("medium", |_, v| *v < 100)
        .default_branch("large");
    assert_eq!(
        branches.keys().cloned().collect::<Vec<_>>(),
        ["amount-large", "amount-medium", "amount-small"]
    );
    for (name, stream) in &branches {
        stream.to(name);
    }
    let d = driver(builder);
    let mut input = d.input_topic("in", Serdes::string(), Serdes::i64());
    for v in [5, 50, 500, 9, 10] {
        input.pipe_input("k".into(), v, 0).unwrap();
    }
    let read = |t: &str| d.output_topic(t, Serdes::string(), Serdes::i64()).read_values().unwrap();
    assert_eq!(read("amount-small"), [5, 9]);
    assert_eq!(read("amount-medium"), [50, 10]);
    assert_eq!(read("amount-large"), [500]);
}

#[test]
fn merge_combines_streams_and_keeps_serdes() {
    let builder = StreamsBuilder::new();
    let a = builder.stream("a", strings());
    let b = builder.stream("b", strings());
    a.merge(&b)
        .map_values(|v| format!("<{v}>"))
        .to_with("out", Produced::with(Serdes::string(), Serdes::string()));
    let d = driver(builder);
    let mut ia = d.input_topic("a", Serdes::string(), Serdes::string());
    let mut ib = d.input_topic("b", Serdes::string(), Serdes::string());
    ia.pipe_input("1".into(), "x".into(), 0).unwrap();
    ib.pipe_input("2".into(), "y".into(), 0).unwrap();
    assert_eq!(
        d.output_topic("out", Serdes::string(), Serdes::string()).read_values().unwrap(),
        ["<x>", "<y>"]
    );
}

#[test]
fn repartition_routes_through_an_internal_topic_and_keeps_every_record() {
    let builder = StreamsBuilder::new();
    builder
        .stream("in", strings())
        .select_key(|_, v| v.clone())
        .repartition_with(Repartitioned::default().named("by-value"))
        .to("out");
    let topology = builder.build().unwrap();
    assert_eq!(topology.subtopologies().len(), 2);
    assert_eq!(topology.internal_topics()[0].name, "by-value-repartition");
    let d = TopologyTestDriver::new(
        topology,
        DriverConfig { application_id: "app".into(), ..DriverConfig::default() },
    );
    let mut input = d.input_topic("in", Serdes::string(), Serdes::string());
    for i in 0..100 {
        input.pipe_input(format!("k{i}"), format!("v{}", i % 7), i).unwrap();
    }
    let out = d.output_topic("out", Serdes::string(), Serdes::string()).read_key_values().unwrap();
    assert_eq!(out.len(), 100);
    assert!(out.iter().all(|(k, v)| k == v));
}

#[test]
fn build_reports_missing_serdes_name_clashes_and_loops() {
    let builder = StreamsBuilder::new();
    builder.stream("in", strings()).map_values(|v| v.len()).to("out");
    let err = builder.build().unwrap_err();
    assert!(
        matches!(&err, StreamsError::Topology(m) if m.contains("has no key or value serde")),
        "{err}"
    );

    let builder = StreamsBuilder::new();
    let s = builder.stream("in", strings());
    s.filter(|_, _| true).named("same").to("a");
    s.filter(|_, _| true).named("same").to("b");
    let err = builder.build().unwrap_err();
    assert!(err.to_string().contains("two nodes are named `same`"), "{err}");

    let builder = StreamsBuilder::new();
    builder.stream("loop", strings()).filter(|_, _| true).to("loop");
    let err = builder.build().unwrap_err();
    assert!(err.to_string().contains("both reads and writes topic `loop`"), "{err}");

    let builder = StreamsBuilder::new();
    builder.stream("in", strings()).to("x");
    builder.stream("in", strings()).to("y");
    let err = builder.build().unwrap_err();
    assert!(err.to_string().contains("read by two sources"), "{err}");
}

#[test]
fn describe_prints_kafka_style_text_and_dot() {
    let builder = StreamsBuilder::new();
    builder
        .stream("input", strings())
        .filter(|_, _| true)
        .select_key(|_, v| v.clone())
        .repartition()
        .to("output");
    let topology = builder.build().unwrap();
    let text = topology.describe();
    assert!(text.starts_with("Topologies:\n   Sub-topology: 0\n    Source: KSTREAM-SOURCE-0000000000 (topics: [input])\n      --> KSTREAM-FILTER-0000000001\n"), "{text}");
    assert!(text.contains("   Sub-topology: 1\n"), "{text}");
    assert!(text.contains("Sink: KSTREAM-SINK-0000000004 (topic: output)"), "{text}");
    let dot = topology.to_dot();
    assert!(dot.starts_with("digraph topology {"), "{dot}");
    assert!(dot.contains("subgraph cluster_1"), "{dot}");
    assert!(dot.contains("\"topic:input\" -> \"KSTREAM-SOURCE-0000000000\""), "{dot}");
}

#[test]
fn bad_records_fail_by_default_or_go_to_a_dead_letter_topic_with_headers() {
    let build = || {
        let builder = StreamsBuilder::new();
        builder
            .stream("in", Consumed::with(Serdes::string(), Serdes::json::<serde_json::Value>()))
            .try_map_values(|v: serde_json::Value| match v.get("amount").and_then(|a| a.as_i64()) {
                Some(a) if a >= 0 => Ok(a),
                _ => Err(format!("no valid amount in {v}")),
            })
            .to_with("out", Produced::with(Serdes::string(), Serdes::i64()));
        builder.build().unwrap()
    };
    // Fail (the default): the error names the node and the source record.
    let d = TopologyTestDriver::new(build(), DriverConfig::default());
    let mut input = d.input_topic("in", Serdes::string(), Serdes::bytes());
    let err = input.pipe_input("k".into(), b"{broken".to_vec(), 0).unwrap_err();
    assert!(
        err.to_string().contains("deserialization error") && err.to_string().contains("in-0@0"),
        "{err}"
    );

    // Dead letter: the original bytes, with the error in headers; good records go on.
    let dlq = ErrorAction::DeadLetter { topic: "dlq".into() };
    let d = TopologyTestDriver::new(
        build(),
        DriverConfig {
            deserialization_errors: dlq.clone(),
            processing_errors: dlq,
            ..DriverConfig::default()
        },
    );
    let mut input = d.input_topic("in", Serdes::string(), Serdes::bytes());
    input.pipe_input("a".into(), b"{broken".to_vec(), 1).unwrap();
    input.pipe_input("b".into(), br#"{"amount":-5}"#.to_vec(), 2).unwrap();
    input.pipe_input("c".into(), br#"{"amount":7}"#.to_vec(), 3).unwrap();
    let out = d.output_topic("out", Serdes::string(), Serdes::i64());
    assert_eq!(out.read_key_values().unwrap(), vec![("c".into(), 7)]);
    let dead = d.output_topic("dlq", Serdes::string(), Serdes::bytes());
    let first = dead.read_raw().unwrap();
    assert_eq!(first.value.as_deref(), Some(&b"{broken"[..]));
    let header = |r: &fjord_streams::OutputRecord, k: &str| {
        r.headers
            .last(k)
            .and_then(|h| h.value.clone())
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
    };
    assert_eq!(header(&first, "__streams.errors.exception").as_deref(), Some("deserialization"));
    assert_eq!(header(&first, "__streams.errors.topic").as_deref(), Some("in"));
    assert_eq!(header(&first, "__streams.errors.offset").as_deref(), Some("0"));
    let second = dead.read_raw().unwrap();
    assert_eq!(header(&second, "__streams.errors.exception").as_deref(), Some("processing"));
    assert!(header(&second, "__streams.errors.message").unwrap().contains("no valid amount"));

    // Log and continue: dropped and counted.
    let d = TopologyTestDriver::new(
        build(),
        DriverConfig {
            deserialization_errors: ErrorAction::LogAndContinue,
            ..DriverConfig::default()
        },
    );
    let mut input = d.input_topic("in", Serdes::string(), Serdes::bytes());
    input.pipe_input("a".into(), b"nope".to_vec(), 1).unwrap();
    assert_eq!(d.dropped_records(), 1);
}

/// Sums values per key and emits the sums on a wall-clock schedule; passes records with a
/// header on.
struct Summer {
    sums: std::collections::BTreeMap<String, i64>,
    schedule: Option<ScheduleId>,
}

impl Processor<String, i64, String, i64> for Summer {
    fn init(&mut self, ctx: &mut ProcessorContext<'_, String, i64>) {
        self.schedule = Some(ctx.schedule(Duration::from_secs(10), PunctuationType::WallClockTime));
        ctx.schedule(Duration::from_millis(100), PunctuationType::StreamTime);
    }

    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, String, i64>,
        record: Record<String, i64>,
    ) {
        *self.sums.entry(record.key.clone()).or_default() += record.value;
        let source = ctx.source().unwrap();
        let mut out = record.with_value(-1);
        out.headers.add("source-offset", Some(source.offset.to_string().into_bytes()));
        ctx.forward(out);
    }

    fn punctuate(
        &mut self,
        ctx: &mut ProcessorContext<'_, String, i64>,
        schedule: ScheduleId,
        timestamp: i64,
    ) {
        if Some(schedule) == self.schedule {
            for (k, v) in &self.sums {
                ctx.forward(Record::new(k.clone(), *v, timestamp));
            }
        } else {
            ctx.forward(Record::new("stream-time".into(), timestamp, timestamp));
        }
    }
}

#[test]
fn custom_processors_forward_read_context_and_punctuate() {
    let builder = StreamsBuilder::new();
    builder
        .stream("in", Consumed::with(Serdes::string(), Serdes::i64()))
        .process(|| Summer { sums: Default::default(), schedule: None })
        .to_with("out", Produced::with(Serdes::string(), Serdes::i64()));
    let d = driver(builder);
    let mut input = d.input_topic("in", Serdes::string(), Serdes::i64());
    let output = d.output_topic("out", Serdes::string(), Serdes::i64());
    input.pipe_input("a".into(), 1, 50).unwrap();
    input.pipe_input("a".into(), 2, 60).unwrap();
    let first = output.read_record().unwrap().unwrap();
    assert_eq!(first.value, -1);
    assert_eq!(first.headers.last("source-offset").unwrap().value.as_deref(), Some(&b"0"[..]));
    output.read_record().unwrap();
    assert!(output.is_empty());
    // Stream time passes 100: the stream-time punctuation fires once.
    input.pipe_input("b".into(), 5, 130).unwrap();
    assert_eq!(
        output.read_key_values().unwrap(),
        vec![("b".into(), -1), ("stream-time".into(), 130)]
    );
    // Wall clock: nothing until 10 s have passed.
    d.advance_wall_clock_time(Duration::from_secs(9)).unwrap();
    assert!(output.is_empty());
    d.advance_wall_clock_time(Duration::from_secs(1)).unwrap();
    assert_eq!(output.read_key_values().unwrap(), vec![("a".into(), 3), ("b".into(), 5)]);
}

#[test]
fn timestamp_extractors_set_record_time_and_negative_ones_drop_the_record() {
    let builder = StreamsBuilder::new();
    builder
        .stream(
            "in",
            Consumed::with(Serdes::string(), Serdes::i64())
                .with_timestamp_extractor(|_, v, _, _| *v),
        )
        .to("out");
    let d = driver(builder);
    let mut input = d.input_topic("in", Serdes::string(), Serdes::i64());
    input.pipe_input("a".into(), 12345, 1).unwrap();
    input.pipe_input("b".into(), -1, 2).unwrap();
    let output = d.output_topic("out", Serdes::string(), Serdes::i64());
    let r = output.read_record().unwrap().unwrap();
    assert_eq!(r.timestamp, 12345);
    assert!(output.is_empty());
    assert_eq!(d.dropped_records(), 1);
}

#[test]
fn stream_joins_with_a_global_table_on_a_mapped_key() {
    let builder = StreamsBuilder::new();
    let products = builder.global_table(
        "products",
        strings(),
        fjord_streams::Materialized::named("products").in_memory(),
    );
    let orders = builder.stream("orders", strings());
    orders
        .join_global(&products, |_, product| product.clone(), |p, name| format!("{p}={name}"))
        .to("inner");
    orders
        .left_join_global(
            &products,
            |_, product| product.clone(),
            |p, name| format!("{p}={}", name.map_or("?", String::as_str)),
        )
        .to("left");
    let topology = builder.build().unwrap();
    assert!(topology.describe().contains("Global store: products (topic: products)"));
    let d = TopologyTestDriver::new(topology, DriverConfig::default());
    let mut products = d.input_topic("products", Serdes::string(), Serdes::string());
    let mut orders = d.input_topic("orders", Serdes::string(), Serdes::string());
    let inner = d.output_topic("inner", Serdes::string(), Serdes::string());
    let left = d.output_topic("left", Serdes::string(), Serdes::string());
    products.pipe_input("p1".into(), "apple".into(), 0).unwrap();
    orders.pipe_input("o1".into(), "p1".into(), 1).unwrap();
    orders.pipe_input("o2".into(), "p2".into(), 2).unwrap();
    assert_eq!(inner.read_key_values().unwrap(), vec![("o1".into(), "p1=apple".into())]);
    assert_eq!(
        left.read_key_values().unwrap(),
        vec![("o1".into(), "p1=apple".into()), ("o2".into(), "p2=?".into())]
    );
}

#[test]
fn a_global_table_rejects_serdes_in_materialized_and_a_topic_read_twice() {
    let builder = StreamsBuilder::new();
    builder.global_table(
        "products",
        strings(),
        fjord_streams::Materialized::with(Serdes::string(), Serdes::string()),
    );
    let err = builder.build().unwrap_err().to_string();
    assert!(err.contains("uses the serdes of Consumed"), "{err}");
    let builder = StreamsBuilder::new();
    builder.global_table("products", strings(), fjord_streams::Materialized::named("p"));
    builder.stream("products", strings()).to("out");
    let err = builder.build().unwrap_err().to_string();
    assert!(err.contains("read by global table `p`"), "{err}");
}
