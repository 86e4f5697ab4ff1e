//! `fjord demo`: the quickstart's main job. A stateful exactly-once streams application on the
//! embedded log, with no setup: it creates its topics, produces orders of customers at a
//! chosen rate, processes them, shows progress and the top customers live, and ends with a
//! summary whose every number it checked against its own computation.
//!
//! ```text
//! customers ──▶ table (store "customers")
//!                  │ join: orders of unknown customers are dropped, gold customers get 10% off
//! orders ──────────▶ amount ─┬─▶ group by customer ─▶ sum (store "revenue-totals") ─▶ top customers, live
//!                           └─▶ 1-minute windows, 10 s grace ─▶ sum ─▶ suppress until closed ─▶ demo-revenue
//! ```
//!
//! Orders carry event times spread over `--minutes` of event time, some a few seconds out of
//! order (within the grace period). Exactly-once: the final window results in `demo-revenue`
//! are read with `read_committed`, and each closed window must appear once with the right sum.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use fjord_broker::{
    Admin, Broker, BrokerConfig, Consumer, ConsumerConfig, IsolationLevel, NewTopic, OffsetReset,
    Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use fjord_log::partitioner::partition_for_key;
use fjord_streams::{
    Consumed, EmbeddedBackend, Materialized, ProcessingGuarantee, Produced, Serdes, Streams,
    StreamsBuilder, StreamsConfig, StreamsState, TimeWindows, Topology, Windowed,
};
use serde::{Deserialize, Serialize};

use crate::error::{CliError, Result};
use crate::output::Out;
use crate::row;

const PARTITIONS: u32 = 4;
const WINDOW_MS: i64 = 60_000;
const GRACE_MS: i64 = 10_000;
/// Every this many orders, one comes from a customer the table does not know.
const GUEST_EVERY: u64 = 50;

/// `fjord demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many orders to produce.
    #[arg(long, default_value_t = 50_000)]
    orders: u64,
    /// Orders per second to produce at; 0 produces as fast as possible.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// How many customers place them.
    #[arg(long, default_value_t = 20)]
    customers: u64,
    /// The event time the orders span, in minutes (one-minute windows).
    #[arg(long, default_value_t = 10)]
    minutes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Customer {
    name: String,
    tier: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    order_id: u64,
    amount_cents: i64,
}

/// One closed window of one customer, as written to `demo-revenue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Revenue {
    customer: String,
    window_start: i64,
    revenue_cents: i64,
}

fn customer(i: u64) -> (String, Customer) {
    let tier = if i.is_multiple_of(3) { "gold" } else { "standard" };
    (format!("c{i:03}"), Customer { name: format!("Customer {i}"), tier: tier.into() })
}

/// What a gold customer pays.
fn discounted(cents: i64, tier: &str) -> i64 {
    if tier == "gold" { cents * 9 / 10 } else { cents }
}

/// Order `i` of `n`: its customer, event time and amount. Event time advances evenly over the
/// span; every 7th order is 5 s behind (out of order, within grace).
fn order(i: u64, args: &DemoArgs) -> (String, i64, Order) {
    let span = args.minutes as i64 * WINDOW_MS;
    let t = (i as i128 * span as i128 / args.orders.max(1) as i128) as i64;
    let ts = if i.is_multiple_of(7) { (t - 5_000).max(0) } else { t };
    let who = if i % GUEST_EVERY == GUEST_EVERY - 1 {
        "guest".to_string()
    } else {
        // A few customers place most orders: the index is skewed towards 0.
        let u = ((i * 2_654_435_761) % 10_007) as f64 / 10_007.0;
        customer(((u * u * args.customers as f64) as u64).min(args.customers - 1)).0
    };
    let amount_cents = ((i * 104_729) % 20_000) as i64 + 100;
    (who, ts, Order { order_id: i, amount_cents })
}

fn topology() -> Result<Topology> {
    let builder = StreamsBuilder::new();
    let customers = builder.table(
        "demo-customers",
        Consumed::with(Serdes::string(), Serdes::json::<Customer>()),
        Materialized::named("customers"),
    );
    let amounts = builder
        .stream("demo-orders", Consumed::with(Serdes::string(), Serdes::json::<Order>()))
        .join(&customers, |order: &Order, c: &Customer| discounted(order.amount_cents, &c.tier));
    let per_customer = amounts.group_by_key();
    per_customer.reduce(
        |a, b| a + b,
        Materialized::named("revenue-totals").with_value_serde(Serdes::i64()),
    );
    per_customer
        .windowed_by(TimeWindows::of_size_and_grace(
            Duration::from_millis(WINDOW_MS as u64),
            Duration::from_millis(GRACE_MS as u64),
        ))
        .reduce(
            |a, b| a + b,
            Materialized::named("revenue-per-minute").with_value_serde(Serdes::i64()),
        )
        .suppress_until_window_closes()
        .to_stream()
        .map(|windowed: Windowed<String>, cents: Option<i64>| {
            let revenue = Revenue {
                customer: windowed.key.clone(),
                window_start: windowed.window.start,
                revenue_cents: cents.unwrap_or(0),
            };
            (windowed.key, revenue)
        })
        .to_with("demo-revenue", Produced::with(Serdes::string(), Serdes::json::<Revenue>()));
    builder.build().map_err(demo_error)
}

fn demo_error(e: impl std::fmt::Display) -> CliError {
    CliError::Broker(fjord_broker::BrokerError::IllegalState(format!("demo: {e}")))
}

/// What the application must produce: totals per customer, and the final sums of the
/// windows that close (a window closes when its partition's stream time passes its end plus
/// grace).
struct Expected {
    totals: BTreeMap<String, i64>,
    closed_windows: BTreeMap<(String, i64), i64>,
    open_windows: usize,
    dropped: u64,
}

fn expected(args: &DemoArgs) -> Expected {
    let tiers: BTreeMap<String, String> =
        (0..args.customers).map(customer).map(|(id, c)| (id, c.tier)).collect();
    let mut stream_time: BTreeMap<u32, i64> = BTreeMap::new();
    let mut totals = BTreeMap::new();
    let mut windows: BTreeMap<(String, i64), i64> = BTreeMap::new();
    let mut dropped = 0;
    for i in 0..args.orders {
        let (who, ts, order) = order(i, args);
        let partition = partition_for_key(who.as_bytes(), PARTITIONS);
        let time = stream_time.entry(partition).or_insert(i64::MIN);
        *time = (*time).max(ts);
        let Some(tier) = tiers.get(&who) else {
            dropped += 1;
            continue;
        };
        let cents = discounted(order.amount_cents, tier);
        *totals.entry(who.clone()).or_default() += cents;
        *windows.entry((who, ts - ts % WINDOW_MS)).or_default() += cents;
    }
    let (closed_windows, open): (BTreeMap<_, _>, BTreeMap<_, _>) =
        windows.into_iter().partition(|((who, start), _)| {
            let partition = partition_for_key(who.as_bytes(), PARTITIONS);
            start + WINDOW_MS + GRACE_MS <= stream_time[&partition]
        });
    Expected { totals, closed_windows, open_windows: open.len(), dropped }
}

/// Runs the demo in `data_dir` (a temporary directory unless the user gave one).
pub fn run(data_dir: Option<&Path>, args: DemoArgs) -> Result<()> {
    if args.orders == 0 || args.customers == 0 || args.minutes == 0 {
        return Err(CliError::arg(
            "--orders/--customers/--minutes",
            "0",
            "the demo needs at least one order, one customer and one minute",
        ));
    }
    let temp;
    let dir = match data_dir {
        Some(dir) => dir.to_path_buf(),
        None => {
            temp = tempfile::tempdir()
                .map_err(|e| CliError::io("create", "a temporary directory", e))?;
            temp.path().to_path_buf()
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    runtime.block_on(demo(&dir, args, data_dir.is_some()))
}

async fn demo(dir: &Path, args: DemoArgs, keep: bool) -> Result<()> {
    let mut out = Out::stdout();
    out.line(format_args!(
        "Fjord demo: {} orders of {} customers at {}, exactly-once, in {}{}",
        args.orders,
        args.customers,
        if args.rate == 0 { "full speed".to_string() } else { format!("{}/s", args.rate) },
        dir.display(),
        if keep { "" } else { " (deleted at the end)" },
    ))?;
    out.flush()?;
    // The log in the data directory itself (so that `fjord --data-dir` commands see the
    // demo's topics), the application's state beside it in `state/`.
    let broker = Broker::open(BrokerConfig::new(dir)).await?;
    let result = process(&broker, dir, &args, &mut out).await;
    broker.shutdown().await?;
    result?;
    out.flush()
}

async fn process(broker: &Broker, dir: &Path, args: &DemoArgs, out: &mut Out) -> Result<()> {
    let admin = Admin::new(broker);
    for topic in ["demo-customers", "demo-orders", "demo-revenue"] {
        if broker.logs().topic(topic).is_err() {
            admin.create_topic(NewTopic::new(topic, PARTITIONS as i32)).await?;
        }
    }
    let producer = Producer::new(broker, ProducerConfig::default())?;
    for i in 0..args.customers {
        let (id, c) = customer(i);
        let value = serde_json::to_vec(&c).map_err(demo_error)?;
        producer
            .send(ProducerRecord::new("demo-customers", &value).key(id.as_bytes()).timestamp(0))
            .await?;
    }
    producer.flush().await?;

    let config = StreamsConfig {
        state_dir: dir.join("state"),
        processing_guarantee: ProcessingGuarantee::ExactlyOnce,
        ..StreamsConfig::new("fjord-demo")
    };
    let mut streams = Streams::new(topology()?, Arc::new(EmbeddedBackend::new(broker)), config)
        .map_err(demo_error)?;
    let started = Instant::now();
    streams.start().await.map_err(demo_error)?;
    let outcome = run_job(broker, &streams, &producer, args, started, out).await;
    let commits = streams.commits();
    let failed = streams.failed_commits();
    // Stopped whatever happened, so that the broker outlives the application.
    let closed = streams.close().await.map_err(demo_error);
    let Job { produced_in, processed_in, totals, windows, expected } = outcome?;
    closed?;

    out.line("")?;
    out.line("Top customers (interactive query on store `revenue-totals`):")?;
    let tiers: BTreeMap<String, Customer> = (0..args.customers).map(customer).collect();
    let mut rows = vec![row!["CUSTOMER", "NAME", "TIER", "REVENUE"]];
    for (id, cents) in top(&totals, 5) {
        let c = &tiers[id];
        rows.push(row![id, c.name, c.tier, dollars(cents)]);
    }
    out.table(&rows)?;
    out.line("")?;
    out.line(format_args!(
        "{} orders produced in {:.1} s and processed in {:.1} s ({:.0} orders/s), {} dropped by the join (unknown customer).",
        args.orders,
        produced_in.as_secs_f64(),
        processed_in.as_secs_f64(),
        args.orders as f64 / processed_in.as_secs_f64(),
        expected.dropped,
    ))?;
    out.line(format_args!(
        "{windows} final per-minute results in `demo-revenue`, each exactly once with the right sum; {} windows still open (not final until later orders close them).",
        expected.open_windows
    ))?;
    out.line(format_args!(
        "{commits} exactly-once commits, {failed} rolled back. Every total checked."
    ))
}

/// What the job left to report.
struct Job {
    produced_in: Duration,
    processed_in: Duration,
    /// The totals per customer, as the application's store holds them at the end.
    totals: BTreeMap<String, i64>,
    /// Final window results read back.
    windows: usize,
    expected: Expected,
}

/// Produces the orders while the application processes them, then checks what it made.
async fn run_job(
    broker: &Broker,
    streams: &Streams,
    producer: &Producer,
    args: &DemoArgs,
    started: Instant,
    out: &mut Out,
) -> Result<Job> {
    streams
        .wait_for_state(StreamsState::Running, Duration::from_secs(30))
        .await
        .map_err(demo_error)?;
    // Orders join the customers the table holds when they arrive: wait for all of them (an
    // interactive query), so that the results do not depend on which topic is fetched first.
    let customers = streams
        .key_value_store("customers", Serdes::string(), Serdes::json::<Customer>())
        .map_err(demo_error)?;
    let totals = streams
        .key_value_store("revenue-totals", Serdes::string(), Serdes::i64())
        .map_err(demo_error)?;
    await_until(streams, Duration::from_secs(30), "the customers table to load", || {
        Ok(customers.all()?.len() as u64 == args.customers)
    })
    .await?;

    // Live progress: a bar on a terminal, else a line a second.
    let bar = crate::progress::bar(args.orders, false);
    let on_terminal = std::io::stdout().is_terminal();
    let mut last_shown = Instant::now();
    for i in 0..args.orders {
        let (who, ts, order) = order(i, args);
        let value = serde_json::to_vec(&order).map_err(demo_error)?;
        producer
            .send(ProducerRecord::new("demo-orders", &value).key(who.as_bytes()).timestamp(ts))
            .await?;
        if i % 1_000 != 999 {
            continue;
        }
        bar.set_position(i + 1);
        if args.rate > 0 {
            // Hold the rate: wait until this many orders are due.
            let due = Duration::from_secs_f64((i + 1) as f64 / args.rate as f64);
            if let Some(ahead) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(ahead).await;
            }
        }
        let every = if on_terminal { Duration::from_millis(250) } else { Duration::from_secs(1) };
        if last_shown.elapsed() >= every {
            last_shown = Instant::now();
            let now = totals.all().map_err(demo_error)?;
            let leaders: Vec<String> = top(now.iter().map(|(id, c)| (id, c)), 3)
                .into_iter()
                .map(|(id, cents)| format!("{id} {}", dollars(cents)))
                .collect();
            let status = format!(
                "produced {}, processed {}; top: {}",
                i + 1,
                streams.records_processed(),
                leaders.join(", ")
            );
            if on_terminal {
                bar.set_message(status);
            } else {
                out.line(status)?;
                out.flush()?;
            }
        }
    }
    producer.close().await?;
    bar.finish_and_clear();
    let produced_in = started.elapsed();

    let expected = expected(args);
    await_until(streams, Duration::from_secs(120), "the totals to reach every order", || {
        let now: BTreeMap<String, i64> = totals.all()?.into_iter().collect();
        Ok(now == expected.totals)
    })
    .await?;
    let processed_in = started.elapsed();
    let windows = read_final_windows(broker, &expected).await?;
    let totals = totals.all().map_err(demo_error)?.into_iter().collect();
    Ok(Job { produced_in, processed_in, totals, windows, expected })
}

/// The `n` customers with the most revenue, most first (ties by id).
fn top<'a>(
    totals: impl IntoIterator<Item = (&'a String, &'a i64)>,
    n: usize,
) -> Vec<(&'a String, i64)> {
    let mut ranked: Vec<(&String, i64)> = totals.into_iter().map(|(id, c)| (id, *c)).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    ranked.truncate(n);
    ranked
}

fn dollars(cents: i64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

/// Polls `done` until it holds, failing after `timeout` or when the application failed.
async fn await_until(
    streams: &Streams,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut() -> std::result::Result<bool, fjord_streams::StreamsError>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if done().map_err(demo_error)? {
            return Ok(());
        }
        if let Some(e) = streams.error() {
            return Err(demo_error(format!("the application failed: {e}")));
        }
        if Instant::now() > deadline {
            return Err(demo_error(format!("gave up waiting for {what} after {timeout:?}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads `demo-revenue` (committed only) until every window that must have closed arrived;
/// checks each arrived once with its sum. Returns how many arrived.
async fn read_final_windows(broker: &Broker, expected: &Expected) -> Result<usize> {
    let consumer = Consumer::new(
        broker,
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            isolation_level: IsolationLevel::ReadCommitted,
            ..ConsumerConfig::default()
        },
    )?;
    let partitions: Vec<TopicPartition> =
        (0..PARTITIONS).map(|p| TopicPartition::new("demo-revenue", p)).collect();
    consumer.assign(&partitions)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got: BTreeMap<(String, i64), i64> = BTreeMap::new();
    while got.len() < expected.closed_windows.len() {
        if Instant::now() > deadline {
            return Err(demo_error(format!(
                "{} of {} final window results arrived",
                got.len(),
                expected.closed_windows.len()
            )));
        }
        for r in consumer.poll(Duration::from_millis(200)).await? {
            let revenue: Revenue = serde_json::from_slice(r.value.as_deref().unwrap_or_default())
                .map_err(demo_error)?;
            let key = (revenue.customer, revenue.window_start);
            if let Some(before) = got.insert(key.clone(), revenue.revenue_cents) {
                return Err(demo_error(format!(
                    "window {key:?} was emitted twice ({before}, then {} at {}-{} offset {})",
                    revenue.revenue_cents, r.topic, r.partition, r.offset
                )));
            }
        }
    }
    if got != expected.closed_windows {
        return Err(demo_error("the final window sums differ from the demo's own computation"));
    }
    Ok(got.len())
}
