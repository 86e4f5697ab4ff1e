//! An ETL pipeline on the embedded log: JSON orders in, validated and enriched orders out,
//! everything that cannot be processed in a dead-letter topic.
//!
//! ```text
//! orders-raw ──▶ parse JSON ──▶ validate ──▶ enrich ──▶ select_key(customer) ──▶ orders-enriched
//!   (key: order id)   │            │                                    (key: customer id)
//!                     └────────────┴──────────▶ orders-dlq (source record + __streams.errors.* headers)
//! ```
//!
//! It opens an embedded broker in a temporary directory (or `--data-dir DIR`), creates the
//! three topics, starts the streams application, and produces a stream of orders of which some
//! are broken on purpose: bad JSON and missing fields fail deserialization, negative amounts
//! fail validation. Both error handlers send the failing record to `orders-dlq` as it was
//! read, with the error, the node and the source topic, partition and offset in headers
//! (KIP-1034), so that nothing is lost and the application keeps going.
//!
//! The example knows how many orders of each kind it produced, and reads the two output
//! topics until they all arrived (no fixed sleep). Then it closes the application (which
//! commits what it processed), checks that the output topics hold exactly what was expected,
//! and prints a summary. Ctrl-C closes the application and the broker gracefully at any time.
//!
//! Run it with `cargo run --example etl [-- --orders N] [--data-dir DIR]`; `cargo test
//! --example etl` runs the same pipeline as a test.

use std::collections::BTreeMap;
use std::error::Error;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord::broker::{
    Admin, Broker, BrokerConfig, Consumer, ConsumerConfig, ConsumerRecord, NewTopic, OffsetReset,
    OffsetSpec, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use fjord::log::record::Header;
use fjord::streams::{
    Consumed, EmbeddedBackend, ErrorAction, Produced, Serdes, Streams, StreamsBuilder,
    StreamsConfig, StreamsError, StreamsState, Topology,
};
use serde::{Deserialize, Serialize};

type BoxError = Box<dyn Error + Send + Sync>;

/// The input topic: orders as JSON, keyed by order id.
const RAW: &str = "orders-raw";
/// The output topic: enriched orders as JSON, keyed by customer id.
const ENRICHED: &str = "orders-enriched";
/// The dead-letter topic: input records that could not be processed, bytes as they were.
const DLQ: &str = "orders-dlq";
/// `application.id`: the consumer group and the prefix of the application's own topics.
const APPLICATION_ID: &str = "orders-etl";
/// How long to wait for the outputs before giving up (the pipeline normally needs well under
/// a second for the default thousand orders).
const OUTPUT_TIMEOUT: Duration = Duration::from_secs(60);

/// An order as the upstream system writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    order_id: String,
    customer_id: String,
    /// Net amount in cents: integer money, no rounding surprises.
    amount_cents: i64,
    currency: String,
}

/// An order ready for downstream consumers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct EnrichedOrder {
    order_id: String,
    customer_id: String,
    /// The sales region, derived from the customer id.
    region: String,
    amount_cents: i64,
    /// The region's tax rate in basis points (1/100 of a percent).
    tax_rate_bp: i64,
    /// The tax-inclusive amount in cents, rounded half up.
    total_cents: i64,
    currency: String,
}

/// Checks what JSON parsing cannot: an order with a negative amount or without a customer is
/// a processing error, which the processing error handler sends to the dead-letter topic.
fn validate(order: Order) -> Result<Order, String> {
    if order.amount_cents < 0 {
        return Err(format!(
            "order {}: amount_cents must not be negative, got {}",
            order.order_id, order.amount_cents
        ));
    }
    if order.customer_id.trim().is_empty() {
        return Err(format!("order {}: customer_id is empty", order.order_id));
    }
    Ok(order)
}

/// The region of a customer and its tax rate in basis points. Customer ids look like
/// `customer-<n>`; the region is `n mod 4` (a stand-in for a lookup table or a join with a
/// customers table, which needs the state stores that are still being built).
fn region_of(customer_id: &str) -> (&'static str, i64) {
    const REGIONS: [(&str, i64); 4] =
        [("eu-west", 2000), ("eu-north", 2500), ("us-east", 800), ("ap-south", 1800)];
    let n = customer_id
        .rsplit('-')
        .next()
        .and_then(|digits| digits.parse::<u64>().ok())
        // Not of the usual shape: any stable choice will do.
        .unwrap_or_else(|| customer_id.bytes().map(u64::from).sum());
    REGIONS[(n % REGIONS.len() as u64) as usize]
}

/// Adds the region and the tax-inclusive amount.
fn enrich(order: Order) -> EnrichedOrder {
    let (region, tax_rate_bp) = region_of(&order.customer_id);
    let tax_cents = (order.amount_cents * tax_rate_bp + 5_000) / 10_000;
    EnrichedOrder {
        total_cents: order.amount_cents + tax_cents,
        tax_rate_bp,
        region: region.to_string(),
        order_id: order.order_id,
        customer_id: order.customer_id,
        amount_cents: order.amount_cents,
        currency: order.currency,
    }
}

/// The topology: one sub-topology, no state. `select_key` re-keys by customer; the sink then
/// partitions `orders-enriched` by murmur2 of the customer id, so each customer's orders stay
/// in order on one partition for whoever reads them next.
fn build_topology() -> Result<Topology, StreamsError> {
    let builder = StreamsBuilder::new();
    builder
        // A value that is not JSON, or JSON without a required field, fails here: the
        // deserialization error handler takes it.
        .stream(RAW, Consumed::with(Serdes::string(), Serdes::json::<Order>()).named("read-orders"))
        // An error returned here goes to the processing error handler.
        .try_map_values(validate)
        .named("validate")
        .map_values(enrich)
        .named("enrich")
        .select_key(|_order_id, order: &EnrichedOrder| order.customer_id.clone())
        .named("key-by-customer")
        .to_with(
            ENRICHED,
            Produced::with(Serdes::string(), Serdes::json::<EnrichedOrder>())
                .named("write-enriched"),
        );
    builder.build()
}

/// The application's settings: both error handlers dead-letter to `orders-dlq`.
fn streams_config(dir: &std::path::Path) -> StreamsConfig {
    let dead_letter = ErrorAction::DeadLetter { topic: DLQ.to_string() };
    StreamsConfig {
        state_dir: dir.join("state"),
        // At-least-once commits every 30 s by default; commit often so that a restart on the
        // same `--data-dir` repeats little.
        commit_interval: Some(Duration::from_millis(200)),
        deserialization_errors: dead_letter.clone(),
        processing_errors: dead_letter,
        ..StreamsConfig::new(APPLICATION_ID)
    }
}

/// What an input record is, so the example knows what to expect downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Enriched,
    /// Dead-lettered with this `__streams.errors.exception`.
    DeadLetter(&'static str),
}

/// The input: `count` orders of 50 customers; every 12th is broken in one of three ways.
fn sample_orders(count: usize) -> Vec<(String, String, Expect)> {
    (0..count)
        .map(|i| {
            let order_id = format!("order-{i:06}");
            let customer = format!("customer-{}", i % 50);
            let amount = ((i * 7919) % 50_000) as i64 + 100;
            let (value, expect) = match (i % 12 == 11).then_some((i / 12) % 3) {
                Some(0) => (
                    format!(r#"{{"order_id":"{order_id}","customer_id":"{customer}","amount_ce"#),
                    Expect::DeadLetter("deserialization"),
                ),
                Some(1) => (
                    format!(r#"{{"order_id":"{order_id}","amount_cents":{amount},"currency":"EUR"}}"#),
                    Expect::DeadLetter("deserialization"),
                ),
                Some(_) => (
                    format!(
                        r#"{{"order_id":"{order_id}","customer_id":"{customer}","amount_cents":-{amount},"currency":"EUR"}}"#
                    ),
                    Expect::DeadLetter("processing"),
                ),
                None => (
                    format!(
                        r#"{{"order_id":"{order_id}","customer_id":"{customer}","amount_cents":{amount},"currency":"EUR"}}"#
                    ),
                    Expect::Enriched,
                ),
            };
            (order_id, value, expect)
        })
        .collect()
}

/// How the example runs.
#[derive(Debug, Clone)]
struct Options {
    /// Where the broker keeps its data; a temporary directory if `None`.
    data_dir: Option<PathBuf>,
    /// How many orders to produce.
    orders: usize,
}

impl Options {
    fn from_args() -> Result<Options, BoxError> {
        let mut options = Options { data_dir: None, orders: 1000 };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--data-dir" => {
                    let dir = args.next().ok_or("--data-dir needs a directory")?;
                    options.data_dir = Some(dir.into());
                }
                "--orders" => {
                    let n = args.next().ok_or("--orders needs a number")?;
                    options.orders = n.parse().map_err(|e| format!("--orders {n}: {e}"))?;
                }
                "-h" | "--help" => {
                    println!("usage: cargo run --example etl -- [--orders N] [--data-dir DIR]");
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument `{other}`; try --help").into()),
            }
        }
        Ok(options)
    }
}

/// What a run did.
#[derive(Debug, Default)]
struct Summary {
    data_dir: PathBuf,
    produced: usize,
    expected_enriched: usize,
    expected_dead_letters: BTreeMap<&'static str, usize>,
    /// Input records the stream threads processed.
    processed: u64,
    enriched: Vec<ConsumerRecord>,
    dead_letters: Vec<ConsumerRecord>,
    /// Records in the output topics after the application closed.
    enriched_in_log: i64,
    dead_letters_in_log: i64,
    /// Ctrl-C stopped the run before every output arrived.
    interrupted: bool,
}

impl Summary {
    fn expected_dead_lettered(&self) -> usize {
        self.expected_dead_letters.values().sum()
    }

    /// Checks the outputs: every valid order enriched once, keyed by its customer on the
    /// customer's partition, every broken one dead-lettered once with its reason.
    fn verify(&self) -> Result<(), BoxError> {
        if self.enriched.len() != self.expected_enriched
            || self.enriched_in_log != self.expected_enriched as i64
        {
            return Err(format!(
                "expected {} enriched orders, read {} ({} in the log)",
                self.expected_enriched,
                self.enriched.len(),
                self.enriched_in_log
            )
            .into());
        }
        if self.dead_letters.len() != self.expected_dead_lettered()
            || self.dead_letters_in_log != self.expected_dead_lettered() as i64
        {
            return Err(format!(
                "expected {} dead letters, read {} ({} in the log)",
                self.expected_dead_lettered(),
                self.dead_letters.len(),
                self.dead_letters_in_log
            )
            .into());
        }
        for record in &self.enriched {
            let value = record.value.as_deref().ok_or("an enriched order without a value")?;
            let order: EnrichedOrder = serde_json::from_slice(value)?;
            if record.key.as_deref() != Some(order.customer_id.as_bytes()) {
                return Err(format!("order {} is not keyed by its customer", order.order_id).into());
            }
            let expected_partition =
                fjord::log::partitioner::partition_for_key(order.customer_id.as_bytes(), 3);
            if record.partition != expected_partition {
                return Err(
                    format!("order {} is not on its customer's partition", order.order_id).into()
                );
            }
            if order.total_cents < order.amount_cents {
                return Err(format!("order {}: total below the net amount", order.order_id).into());
            }
        }
        let mut reasons: BTreeMap<&'static str, usize> = BTreeMap::new();
        for record in &self.dead_letters {
            let exception = header(record, "__streams.errors.exception").unwrap_or_default();
            let reason = match exception.as_str() {
                "deserialization" => "deserialization",
                "processing" => "processing",
                other => return Err(format!("unexpected dead-letter reason `{other}`").into()),
            };
            *reasons.entry(reason).or_default() += 1;
        }
        if reasons != self.expected_dead_letters {
            return Err(format!(
                "dead letters by reason: expected {:?}, got {reasons:?}",
                self.expected_dead_letters
            )
            .into());
        }
        Ok(())
    }

    fn print(&self) {
        println!();
        println!("summary ({})", self.data_dir.display());
        if self.interrupted {
            println!("  interrupted by Ctrl-C before every output arrived");
        }
        println!("  produced        {:>6} orders to {RAW}", self.produced);
        println!("  processed       {:>6} input records", self.processed);
        println!(
            "  enriched        {:>6} orders to {ENRICHED} (expected {}, {} in the topic)",
            self.enriched.len(),
            self.expected_enriched,
            self.enriched_in_log
        );
        println!(
            "  dead-lettered   {:>6} records to {DLQ} (expected {}: {:?}, {} in the topic)",
            self.dead_letters.len(),
            self.expected_dead_lettered(),
            self.expected_dead_letters,
            self.dead_letters_in_log
        );
        if let Some(record) = self.enriched.first() {
            println!(
                "  sample enriched record: {}-{}@{} key={} value={}",
                record.topic,
                record.partition,
                record.offset,
                text(record.key.as_deref()),
                text(record.value.as_deref())
            );
        }
        if let Some(record) = self.dead_letters.first() {
            println!(
                "  sample dead letter: {}-{}@{} key={} value={}",
                record.topic,
                record.partition,
                record.offset,
                text(record.key.as_deref()),
                text(record.value.as_deref())
            );
            for h in record.headers().iter() {
                println!("    {} = {}", h.key, text(h.value));
            }
        }
    }
}

fn text(bytes: Option<&[u8]>) -> String {
    bytes.map_or_else(|| "null".to_string(), |b| String::from_utf8_lossy(b).into_owned())
}

fn header(record: &ConsumerRecord, key: &str) -> Option<String> {
    record
        .headers()
        .iter()
        .filter(|h| h.key == key)
        .last()
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Opens the broker, runs the pipeline until every output arrived (or `shutdown` resolves),
/// and closes everything.
async fn run(options: Options, shutdown: impl Future<Output = ()>) -> Result<Summary, BoxError> {
    let temp;
    let dir = match &options.data_dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::Builder::new().prefix("fjord-etl-").tempdir()?;
            temp.path().to_path_buf()
        }
    };
    // One process, one node: small internal topics open faster than Kafka's default of 50
    // partitions each.
    let mut broker_config = BrokerConfig::new(&dir);
    broker_config.offsets_topic_num_partitions = 4;
    broker_config.transaction_state_log_num_partitions = 2;
    let broker = Broker::open(broker_config).await?;
    let result = run_on(&broker, &dir, &options, shutdown).await;
    // Close the log (flushing every partition) whatever happened.
    let closed = broker.shutdown().await;
    let summary = result?;
    closed?;
    Ok(summary)
}

async fn run_on(
    broker: &Broker,
    dir: &std::path::Path,
    options: &Options,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, BoxError> {
    let admin = Admin::new(broker);
    if admin.list_topics(false).iter().any(|t| t == RAW) {
        return Err(format!(
            "{} already holds an ETL run: pass a new or empty --data-dir (the example counts \
             what it expects from a fresh start)",
            dir.display()
        )
        .into());
    }
    for (name, partitions) in [(RAW, 3), (ENRICHED, 3), (DLQ, 1)] {
        admin.create_topic(NewTopic::new(name, partitions)).await?;
    }
    println!("created topics {RAW}, {ENRICHED} and {DLQ} in {}", dir.display());

    let topology = build_topology()?;
    print!("{}", topology.describe());
    let backend = Arc::new(EmbeddedBackend::new(broker));
    let mut streams = Streams::new(topology, backend, streams_config(dir))?;
    streams.start().await?;

    let mut summary = Summary { data_dir: dir.to_path_buf(), ..Summary::default() };
    let outcome = async {
        streams.wait_for_state(StreamsState::Running, Duration::from_secs(30)).await?;
        produce_orders(broker, options.orders, &mut summary).await?;
        read_outputs(broker, &streams, &mut summary).await
    };
    let outcome: Option<Result<(), BoxError>> = tokio::select! {
        outcome = outcome => Some(outcome),
        () = shutdown => None,
    };
    let outcome = outcome.unwrap_or_else(|| {
        println!("Ctrl-C: closing the application");
        summary.interrupted = true;
        Ok(())
    });
    summary.processed = streams.records_processed();
    // A clean close commits what the threads processed and leaves the group.
    let closed = streams.close().await;
    outcome?;
    closed?;
    summary.enriched_in_log = records_in(broker, ENRICHED)?;
    summary.dead_letters_in_log = records_in(broker, DLQ)?;
    Ok(summary)
}

/// Produces the sample orders, keyed by order id, and waits until the log has them all.
async fn produce_orders(
    broker: &Broker,
    count: usize,
    summary: &mut Summary,
) -> Result<(), BoxError> {
    let producer = Producer::new(broker, ProducerConfig::default())?;
    let headers = [Header { key: "content-type", value: Some(b"application/json") }];
    let started = Instant::now();
    for (order_id, value, expect) in sample_orders(count) {
        let record =
            ProducerRecord::new(RAW, value.as_bytes()).key(order_id.as_bytes()).headers(&headers);
        // The delivery future is not awaited per record: `flush` below waits for all of them
        // and `take_send_error` reports the first failure.
        producer.send(record).await?;
        summary.produced += 1;
        match expect {
            Expect::Enriched => summary.expected_enriched += 1,
            Expect::DeadLetter(reason) => {
                *summary.expected_dead_letters.entry(reason).or_default() += 1;
            }
        }
    }
    producer.flush().await?;
    if let Some(e) = producer.take_send_error() {
        return Err(format!("producing orders failed: {e}").into());
    }
    producer.close().await?;
    println!(
        "produced {} orders to {RAW} in {:.0} ms ({} valid, {} broken on purpose)",
        summary.produced,
        started.elapsed().as_secs_f64() * 1000.0,
        summary.expected_enriched,
        summary.expected_dead_lettered()
    );
    Ok(())
}

/// Reads `orders-enriched` and `orders-dlq` from the beginning until every expected record
/// arrived. The consumer long-polls: it wakes when the application appends, it does not sleep.
async fn read_outputs(
    broker: &Broker,
    streams: &Streams,
    summary: &mut Summary,
) -> Result<(), BoxError> {
    let consumer = Consumer::new(
        broker,
        ConsumerConfig {
            client_id: "etl-verifier".into(),
            auto_offset_reset: OffsetReset::Earliest,
            ..ConsumerConfig::default()
        },
    )?;
    let mut partitions = Vec::new();
    for topic in [ENRICHED, DLQ] {
        let count = broker.partition_count(topic)?;
        partitions.extend((0..count).map(|p| TopicPartition::new(topic, p)));
    }
    consumer.assign(&partitions)?;
    let deadline = Instant::now() + OUTPUT_TIMEOUT;
    while summary.enriched.len() < summary.expected_enriched
        || summary.dead_letters.len() < summary.expected_dead_lettered()
    {
        if let Some(error) = streams.error() {
            return Err(format!("the streams application failed: {error}").into());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "after {OUTPUT_TIMEOUT:?}: {} of {} enriched orders and {} of {} dead letters arrived",
                summary.enriched.len(),
                summary.expected_enriched,
                summary.dead_letters.len(),
                summary.expected_dead_lettered()
            )
            .into());
        }
        for record in consumer.poll(Duration::from_millis(500)).await? {
            if &*record.topic == ENRICHED {
                summary.enriched.push(record);
            } else {
                summary.dead_letters.push(record);
            }
        }
    }
    consumer.close().await?;
    println!(
        "read {} enriched orders and {} dead letters",
        summary.enriched.len(),
        summary.dead_letters.len()
    );
    Ok(())
}

/// Records in a topic: the sum of its partitions' log end offsets (no transactions write it).
fn records_in(broker: &Broker, topic: &str) -> Result<i64, BoxError> {
    let mut total = 0;
    for p in 0..broker.partition_count(topic)? {
        total += broker.list_offset(&TopicPartition::new(topic, p), OffsetSpec::Latest)?.offset;
    }
    Ok(total)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let options = Options::from_args()?;
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // No signal handler: run until done.
            std::future::pending::<()>().await;
        }
    };
    let summary = run(options, ctrl_c).await?;
    summary.print();
    if summary.interrupted {
        return Ok(());
    }
    summary.verify()?;
    println!("ok: every valid order enriched once, every broken one dead-lettered once");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn enrichment_adds_region_and_tax() {
        let order = Order {
            order_id: "o".into(),
            customer_id: "customer-2".into(),
            amount_cents: 1_000,
            currency: "EUR".into(),
        };
        let enriched = enrich(order);
        assert_eq!(enriched.region, "us-east");
        assert_eq!(enriched.tax_rate_bp, 800);
        assert_eq!(enriched.total_cents, 1_080);
        let order = |customer: &str, amount_cents| Order {
            order_id: "o".into(),
            customer_id: customer.into(),
            amount_cents,
            currency: "EUR".into(),
        };
        assert!(validate(order("customer-1", 0)).is_ok());
        assert!(validate(order("customer-1", -1)).is_err());
        assert!(validate(order(" ", 1)).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pipeline_enriches_valid_orders_and_dead_letters_broken_ones() {
        let options = Options { data_dir: None, orders: 240 };
        let summary = run(options, std::future::pending()).await.unwrap();
        assert_eq!(summary.produced, 240);
        assert_eq!(summary.expected_enriched, 220);
        assert_eq!(
            summary.expected_dead_letters,
            BTreeMap::from([("deserialization", 14), ("processing", 6)])
        );
        summary.verify().unwrap();
        // The dead letter carries its source coordinates.
        let dead = &summary.dead_letters[0];
        assert_eq!(header(dead, "__streams.errors.topic").as_deref(), Some(RAW));
        assert!(header(dead, "__streams.errors.offset").is_some());
        assert!(header(dead, "__streams.errors.message").is_some());
        assert_eq!(header(dead, "content-type").as_deref(), Some("application/json"));
    }
}
