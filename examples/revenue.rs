//! Revenue per customer per minute, final results only, with orders joined to a customers
//! table, on the embedded log.
//!
//! ```text
//! customers ──▶ table (store "customers")
//!                  │ join by customer id
//! orders ──────────▶ enrich ──▶ group by customer ──▶ 1-minute windows, 10 s grace ──▶ sum
//!                                                      ──▶ suppress until window closes ──▶ revenue
//! ```
//!
//! Orders carry their event time. A window accepts late orders for its grace period after its
//! end, then closes; only then does its one final sum go to `revenue` (Kafka Streams'
//! `suppress(untilWindowCloses)`). Orders later than that are dropped and counted. Windows
//! close as each partition's stream time moves on, so the example computes which windows must
//! have closed from what it produced, reads `revenue` until exactly those arrived, and checks
//! every sum against its own.
//!
//! `cargo run --example revenue [-- --minutes N]`; `cargo test --example revenue` runs it as a
//! test.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord::broker::{
    Admin, Broker, BrokerConfig, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, TopicPartition,
};
use fjord::log::partitioner::partition_for_key;
use fjord::streams::{
    Consumed, EmbeddedBackend, Materialized, Produced, Serdes, Streams, StreamsBuilder,
    StreamsConfig, StreamsState, TimeWindows, Topology, Windowed,
};
use serde::{Deserialize, Serialize};

type BoxError = Box<dyn Error + Send + Sync>;

const PARTITIONS: u32 = 2;
const WINDOW: Duration = Duration::from_secs(60);
const GRACE: Duration = Duration::from_secs(10);
const CUSTOMERS: usize = 5;

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

/// One closed window of one customer, as written to `revenue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Revenue {
    customer: String,
    window_start: i64,
    revenue_cents: i64,
}

fn topology() -> Result<Topology, BoxError> {
    let builder = StreamsBuilder::new();
    let customers = builder.table(
        "customers",
        Consumed::with(Serdes::string(), Serdes::json::<Customer>()),
        Materialized::named("customers"),
    );
    builder
        .stream("orders", Consumed::with(Serdes::string(), Serdes::json::<Order>()))
        // Gold customers get 10% off; orders of unknown customers are dropped.
        .join(&customers, |order: &Order, customer: &Customer| {
            if customer.tier == "gold" { order.amount_cents * 9 / 10 } else { order.amount_cents }
        })
        .group_by_key()
        .windowed_by(TimeWindows::of_size_and_grace(WINDOW, GRACE))
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
        .to_with("revenue", Produced::with(Serdes::string(), Serdes::json::<Revenue>()));
    Ok(builder.build()?)
}

fn customer(i: usize) -> (String, Customer) {
    let tier = if i.is_multiple_of(2) { "gold" } else { "standard" };
    (format!("c{i}"), Customer { name: format!("Customer {i}"), tier: tier.into() })
}

/// Orders over `minutes` minutes of event time, a few seconds apart, some out of order, some
/// too late for their window. Returns `(customer, timestamp, order)`.
fn orders(minutes: i64) -> Vec<(String, i64, Order)> {
    let mut out = Vec::new();
    let mut t = 0i64;
    let mut id = 0u64;
    while t < minutes * 60_000 {
        id += 1;
        let amount_cents = ((id * 7919) % 10_000) as i64 + 100;
        let (who, _) = customer(id as usize % (CUSTOMERS + 1));
        // Every 7th order is 5 s behind (within grace); every 50th is 2 minutes behind (late).
        let ts = match id {
            n if n.is_multiple_of(50) => (t - 120_000).max(0),
            n if n.is_multiple_of(7) => (t - 5_000).max(0),
            _ => t,
        };
        out.push((who, ts, Order { order_id: id, amount_cents }));
        t += 3_000;
    }
    out
}

/// What `revenue` must hold: the windows that closed in each partition (stream time is per
/// partition), with sums of the orders that were not late when they arrived.
fn expected(orders: &[(String, i64, Order)]) -> BTreeMap<(String, i64), i64> {
    let (window, grace) = (WINDOW.as_millis() as i64, GRACE.as_millis() as i64);
    let mut stream_time = BTreeMap::new();
    let mut sums: BTreeMap<(String, i64), i64> = BTreeMap::new();
    let mut partition_of = BTreeMap::new();
    for (who, ts, order) in orders {
        let partition = partition_for_key(who.as_bytes(), PARTITIONS);
        let time = stream_time.entry(partition).or_insert(i64::MIN);
        *time = (*time).max(*ts);
        let start = ts - ts % window;
        let Some(index) = who[1..].parse::<usize>().ok().filter(|i| *i < CUSTOMERS) else {
            continue; // not in the customers table: the inner join drops it
        };
        if start + window + grace <= *time {
            continue; // late
        }
        let (_, c) = customer(index);
        let cents = if c.tier == "gold" { order.amount_cents * 9 / 10 } else { order.amount_cents };
        *sums.entry((who.clone(), start)).or_default() += cents;
        partition_of.insert(who.clone(), partition);
    }
    sums.into_iter()
        .filter(|((who, start), _)| start + window + grace <= stream_time[&partition_of[who]])
        .collect()
}

async fn run(dir: &Path, minutes: i64) -> Result<(), BoxError> {
    let broker = Broker::open(BrokerConfig::new(dir.join("log"))).await?;
    let admin = Admin::new(&broker);
    for topic in ["customers", "orders", "revenue"] {
        admin.create_topic(NewTopic::new(topic, PARTITIONS as i32)).await?;
    }
    let producer = Producer::new(&broker, ProducerConfig::default())?;
    for i in 0..CUSTOMERS {
        let (id, c) = customer(i);
        let value = serde_json::to_vec(&c)?;
        producer
            .send(ProducerRecord::new("customers", &value).key(id.as_bytes()).timestamp(0))
            .await?;
    }
    let config = StreamsConfig {
        state_dir: dir.join("state"),
        commit_interval: Some(Duration::from_millis(100)),
        ..StreamsConfig::new("revenue")
    };
    let mut streams = Streams::new(topology()?, Arc::new(EmbeddedBackend::new(&broker)), config)?;
    streams.start().await?;
    streams.wait_for_state(StreamsState::Running, Duration::from_secs(30)).await?;
    // Orders only join customers the table already holds: wait until it has them all (an
    // interactive query on its store), so that the result does not depend on fetch timing.
    let table =
        streams.key_value_store("customers", Serdes::string(), Serdes::json::<Customer>())?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while table.all()?.len() < CUSTOMERS {
        if Instant::now() > deadline {
            return Err("the customers table did not load".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let orders = orders(minutes);
    for (who, ts, order) in &orders {
        let value = serde_json::to_vec(order)?;
        producer
            .send(ProducerRecord::new("orders", &value).key(who.as_bytes()).timestamp(*ts))
            .await?;
    }
    producer.close().await?;
    let expected = expected(&orders);

    let consumer = Consumer::new(
        &broker,
        ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() },
    )?;
    consumer
        .assign(&(0..PARTITIONS).map(|p| TopicPartition::new("revenue", p)).collect::<Vec<_>>())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got: BTreeMap<(String, i64), i64> = BTreeMap::new();
    let mut emitted = 0;
    while got.len() < expected.len() {
        if Instant::now() > deadline {
            return Err(format!("{} of {} windows arrived", got.len(), expected.len()).into());
        }
        for r in consumer.poll(Duration::from_millis(200)).await? {
            let revenue: Revenue = serde_json::from_slice(r.value.as_deref().unwrap_or_default())?;
            emitted += 1;
            got.insert((revenue.customer, revenue.window_start), revenue.revenue_cents);
        }
    }
    streams.close().await?;
    broker.shutdown().await?;

    println!("{:<8} {:>12} {:>10}", "customer", "minute", "revenue");
    for ((who, start), cents) in &got {
        println!("{who:<8} {:>12} {:>7}.{:02}", start / 60_000, cents / 100, cents % 100);
    }
    println!("{} orders, {} final window results", orders.len(), got.len());
    if emitted != got.len() {
        return Err(format!(
            "{emitted} results for {} windows: suppression let updates through",
            got.len()
        )
        .into());
    }
    if got != expected {
        return Err(format!("sums differ: expected {expected:?}, got {got:?}").into());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let minutes = match (args.next().as_deref(), args.next()) {
        (Some("--minutes"), Some(n)) => n.parse().map_err(|e| format!("--minutes {n}: {e}"))?,
        (None, _) => 10,
        _ => return Err("usage: cargo run --example revenue [-- --minutes N]".into()),
    };
    let dir = tempfile::tempdir()?;
    run(dir.path(), minutes).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn final_results_match_an_independent_computation() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(super::run(dir.path(), 6)).unwrap();
    }
}
