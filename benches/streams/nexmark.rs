//! The Nexmark queries the DSL expresses, log to log on the embedded broker: q0 pass-through,
//! q1 currency conversion, q2 selection, q5 hot items (hopping windows), q7 highest bid
//! (tumbling windows), q8 new users (a windowed stream-stream join).
//!
//! # The events
//!
//! The generator follows Apache Beam's Nexmark generator
//! (`sdks/java/testing/nexmark/src/main/java/org/apache/beam/sdk/nexmark/sources/generator/`:
//! `Generator.java`, `GeneratorConfig.java`, `model/{Person,Auction,Bid,Price,Strings,Long}Generator.java`)
//! with Beam's default `NexmarkConfiguration`, and the event time of the Flink Nexmark suite
//! (github.com/nexmark/nexmark, `nexmark-flink/.../generator/GeneratorConfig.java`):
//!
//! - Event `n` (from 0) is a person, an auction or a bid by `n % 50`: 0 a person, 1 to 3 an
//!   auction, 4 to 49 a bid (proportions 1:3:46). Its fields come from a `java.util.Random`
//!   seeded with `n` (ported below, so the values are Beam's, up to the last bit of `pow`).
//! - Ids come from the event number: person `n / 50 + 1000`, auction `3 * (n / 50) + (n % 50 - 1)
//!   + 1000` (first ids 1000).
//! - An auction's seller is, with probability 3/4 (`hotSellersRatio` 4), the first person of
//!   the current block of 100 people, else one of the last 1,000 people (`numActivePeople`)
//!   plus 10 not yet created. A bid's auction is, with probability 1/2 (`hotAuctionRatio` 2),
//!   the first auction of the current block of 100, else one of the last 100 auctions
//!   (`numInFlightAuctions`) plus 10 ahead; its bidder is, with probability 3/4, the second
//!   person of the current block of 100, else an active person as for sellers.
//! - Prices are `round(10^(6u) * 100)` cents for uniform `u`; reserves are the initial bid plus
//!   another price; names, descriptions, e-mail addresses, cities, states and credit cards are
//!   Beam's; `extra` pads events to Beam's average sizes (person 200, auction 500, bid 100
//!   bytes); an auction expires after a uniformly random time of up to twice the event time
//!   that 100 more auctions take.
//! - Event time: event `n` happens at `2015-07-15T00:00:00Z` (Beam's base time) plus
//!   `n * (10^6 / rate)` µs, rounded down to the millisecond, with the rate 10,000,000 events
//!   per second (the Flink suite's `tps`; `FJORD_NEXMARK_RATE` changes it; Beam's own default
//!   is 10,000 per second over 100 generators). Events are in time order (Beam's
//!   `outOfOrderGroupSize` 1).
//!
//! One generator (Beam's `numEventGenerators` 1). Events are written to one topic of one
//! partition, encoded with the compact binary serde, the record timestamp being the event
//! time, keyed by person id, auction id, and for bids the auction id.
//!
//! # The queries
//!
//! As the Flink suite's SQL (`nexmark-flink/src/main/resources/queries/q*.sql`) and Beam's
//! `queries/Query*.java`; differences are in `docs/benchmarks.md`:
//!
//! - q0: every event, read and written again (Beam's Query0; Flink's q0 keeps the bids).
//! - q1: bids with their price times 0.908, in integer cents (Flink's factor, Beam's integer
//!   arithmetic).
//! - q2: `(auction, price)` of the bids with `auction % 123 == 0`.
//! - q5: bids counted per auction in hopping windows (10 s, every 2 s), then per window the
//!   largest count and the auctions that have it: a second aggregation keyed by window start,
//!   through a repartition topic; it emits the window's row each time it changes.
//! - q7: per 10-second tumbling window the bids with the highest price: all bids to one key,
//!   through a repartition topic, and a windowed aggregation keeping the highest bids.
//! - q8: `(person id, name, reserve)` for each person and each auction that person sells in
//!   the same 10-second tumbling window: auctions re-keyed by seller through a repartition
//!   topic (people through one too: the DSL refuses a sub-topology that writes and reads the
//!   same topic), a stream-stream join of people and auctions within 10 s, and a joiner that
//!   keeps the pairs in the same tumbling window (Beam's Query8).
//!
//! # The measurement
//!
//! The input is written once, before any clock starts; each query is an application of its
//! own (at-least-once, one stream thread, 100 ms commits) that reads it from the start. The
//! clock runs from `start()` until every input record was processed, every record of the
//! query's repartition topics too (for queries that have them, after a commit that covers the
//! whole input, so caches were flushed into them), and `close()` returned (every output in
//! the log).
//!
//! With at most 2,000,000 events (or `FJORD_NEXMARK_CHECK=1`; `=0` never), each query's output
//! is read back and compared with the same query computed here directly on the generated
//! events: every output record of q0, q1 and q2 (count and digest), each window's final row of
//! q5 and q7, and the multiset of q8's pairs.
//!
//! A module of the `streams` bench, which prints these queries' rows in its one table:
//! `cargo bench --profile dev --bench streams -- [<events>] [q0 q1 q2 q5 q7 q8]`.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hasher};
use std::path::Path;
use std::time::Duration;

use fjord::broker::{Broker, OffsetSpec, ProducerRecord, TopicPartition};
use fjord::streams::{
    Consumed, Grouped, InternalTopicKind, JoinWindows, KStream, Materialized, ProcessingGuarantee,
    Produced, Repartitioned, SerdeRef, Serdes, StreamJoined, StreamsBuilder, TimeWindows, Topology,
};
use serde::{Deserialize, Serialize};

use crate::support;

// ---------------------------------------------------------------------------------------------
// The events (Beam's `model/Person.java`, `Auction.java`, `Bid.java`; times in ms since the
// epoch).

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Person {
    id: i64,
    name: String,
    email_address: String,
    credit_card: String,
    city: String,
    state: String,
    date_time: i64,
    extra: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Auction {
    id: i64,
    item_name: String,
    description: String,
    initial_bid: i64,
    reserve: i64,
    date_time: i64,
    expires: i64,
    seller: i64,
    category: i64,
    extra: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Bid {
    auction: i64,
    bidder: i64,
    price: i64,
    date_time: i64,
    extra: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Event {
    Person(Person),
    Auction(Auction),
    Bid(Bid),
}

/// q2's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct AuctionPrice {
    auction: i64,
    price: i64,
}

/// q5's first aggregation, re-keyed by window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct AuctionCount {
    auction: i64,
    count: i64,
}

/// q5's output: the largest count of bids of an auction in a window, and the auctions that
/// have it (Beam's `TopCombineFn.Accum`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct HotItems {
    count: i64,
    auctions: Vec<i64>,
}

impl HotItems {
    /// Adds an auction's count. Counts of an auction in a window only grow, and its updates
    /// come in order, so the final row has exactly the auctions whose final count is the
    /// largest: an auction leaves only for a larger count, which no stale count can be.
    fn add(mut self, update: AuctionCount) -> Self {
        if update.count > self.count {
            self.count = update.count;
            self.auctions.clear();
            self.auctions.push(update.auction);
        } else if update.count == self.count && !self.auctions.contains(&update.auction) {
            self.auctions.push(update.auction);
        }
        self
    }
}

/// q7's aggregation: keeps the bids with the highest price.
fn highest(mut top: Vec<Bid>, bid: Bid) -> Vec<Bid> {
    match top.first().map(|b| b.price) {
        Some(price) if bid.price < price => {}
        Some(price) if bid.price == price => top.push(bid),
        _ => top = vec![bid],
    }
    top
}

/// q8's output (Beam's `IdNameReserve`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct IdNameReserve {
    id: i64,
    name: String,
    reserve: i64,
}

// ---------------------------------------------------------------------------------------------
// The generator.

/// `java.util.Random`: Beam seeds one with each event's id, so the port gives Beam's events.
struct JavaRandom {
    seed: u64,
}

impl JavaRandom {
    const MULTIPLIER: u64 = 0x5_DEEC_E66D;
    const MASK: u64 = (1 << 48) - 1;

    fn new(seed: u64) -> Self {
        JavaRandom { seed: (seed ^ Self::MULTIPLIER) & Self::MASK }
    }

    fn next(&mut self, bits: u32) -> i32 {
        self.seed = self.seed.wrapping_mul(Self::MULTIPLIER).wrapping_add(0xB) & Self::MASK;
        (self.seed >> (48 - bits)) as u32 as i32
    }

    /// `nextInt()`.
    fn next_i32(&mut self) -> i32 {
        self.next(32)
    }

    /// `nextInt(bound)`.
    fn next_int(&mut self, bound: i32) -> i32 {
        let m = bound - 1;
        if bound & m == 0 {
            return ((i64::from(bound) * i64::from(self.next(31))) >> 31) as i32;
        }
        let mut u = self.next(31);
        loop {
            let r = u % bound;
            if u.wrapping_sub(r).wrapping_add(m) >= 0 {
                return r;
            }
            u = self.next(31);
        }
    }

    /// `nextLong()`.
    fn next_i64(&mut self) -> i64 {
        let high = i64::from(self.next(32)) << 32;
        high.wrapping_add(i64::from(self.next(32)))
    }

    /// `nextDouble()`.
    fn next_f64(&mut self) -> f64 {
        let high = i64::from(self.next(26)) << 27;
        (high + i64::from(self.next(27))) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Beam's `LongGenerator.nextLong(random, n)`: in `[0, n)`.
    fn next_long(&mut self, n: i64) -> i64 {
        if n < i64::from(i32::MAX) {
            i64::from(self.next_int(n as i32))
        } else {
            (self.next_i64() % n).abs()
        }
    }

    fn index<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.next_int(items.len() as i32) as usize]
    }
}

/// Java's `Math.round`.
fn java_round(x: f64) -> i64 {
    (x + 0.5).floor() as i64
}

const FIRST_PERSON_ID: i64 = 1000;
const FIRST_AUCTION_ID: i64 = 1000;
const FIRST_CATEGORY_ID: i64 = 10;
const PERSON_PROPORTION: i64 = 1;
const AUCTION_PROPORTION: i64 = 3;
const PROPORTION_DENOMINATOR: i64 = 50;
/// `NexmarkConfiguration` defaults.
const HOT_AUCTION_RATIO: i32 = 2;
const HOT_SELLERS_RATIO: i32 = 4;
const HOT_BIDDERS_RATIO: i32 = 4;
const NUM_ACTIVE_PEOPLE: i64 = 1000;
const NUM_IN_FLIGHT_AUCTIONS: i64 = 100;
const AVG_PERSON_BYTE_SIZE: i32 = 200;
const AVG_AUCTION_BYTE_SIZE: i32 = 500;
const AVG_BID_BYTE_SIZE: i32 = 100;
/// The size of the blocks whose first (second) member is the hot one.
const HOT_BLOCK: i64 = 100;
const PERSON_ID_LEAD: i64 = 10;
const AUCTION_ID_LEAD: i64 = 10;
const NUM_CATEGORIES: i32 = 5;
/// Beam's `NexmarkUtils.BASE_TIME`, 2015-07-15T00:00:00Z.
const BASE_TIME: i64 = 1_436_918_400_000;

const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] =
    ["Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris"];

/// The last person id (base 0) at event `event_id`: the person it creates, if it does.
fn last_base0_person_id(event_id: i64) -> i64 {
    let epoch = event_id / PROPORTION_DENOMINATOR;
    let offset = (event_id % PROPORTION_DENOMINATOR).min(PERSON_PROPORTION - 1);
    epoch * PERSON_PROPORTION + offset
}

/// The last auction id (base 0) at event `event_id`: the auction it creates, if it does.
fn last_base0_auction_id(event_id: i64) -> i64 {
    let mut epoch = event_id / PROPORTION_DENOMINATOR;
    let mut offset = event_id % PROPORTION_DENOMINATOR;
    if offset < PERSON_PROPORTION {
        epoch -= 1;
        offset = AUCTION_PROPORTION - 1;
    } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
        offset = AUCTION_PROPORTION - 1;
    } else {
        offset -= PERSON_PROPORTION;
    }
    epoch * AUCTION_PROPORTION + offset
}

/// One of the active people, or one of the next few.
fn next_base0_person_id(event_id: i64, random: &mut JavaRandom) -> i64 {
    let people = last_base0_person_id(event_id) + 1;
    let active = people.min(NUM_ACTIVE_PEOPLE);
    people - active + random.next_long(active + PERSON_ID_LEAD)
}

/// One of the auctions likely still open, or one of the next few.
fn next_base0_auction_id(event_id: i64, random: &mut JavaRandom) -> i64 {
    let max = last_base0_auction_id(event_id);
    let min = (max - NUM_IN_FLIGHT_AUCTIONS).max(0);
    min + random.next_long(max - min + 1 + AUCTION_ID_LEAD)
}

fn next_price(random: &mut JavaRandom) -> i64 {
    java_round(10f64.powf(random.next_f64() * 6.0) * 100.0)
}

/// A string of 3 to `max_len - 1` letters and spaces, trimmed.
fn next_string(random: &mut JavaRandom, max_len: i32) -> String {
    let len = 3 + random.next_int(max_len - 3);
    let mut s = String::with_capacity(len as usize);
    for _ in 0..len {
        if random.next_int(13) == 0 {
            s.push(' ');
        } else {
            s.push(char::from(b'a' + random.next_int(26) as u8));
        }
    }
    s.trim().to_string()
}

/// `length` characters (Java's `%` of a negative number included).
fn next_exact_string(random: &mut JavaRandom, length: i32) -> String {
    let mut s = String::with_capacity(length.max(0) as usize);
    let (mut rnd, mut left) = (0i32, 0);
    for _ in 0..length {
        if left == 0 {
            rnd = random.next_i32();
            left = 6;
        }
        s.push(char::from((97 + rnd % 26) as u8));
        rnd /= 26;
        left -= 1;
    }
    s
}

/// Padding that brings an event of `current` bytes to `average` bytes on average.
fn next_extra(random: &mut JavaRandom, current: usize, average: i32) -> String {
    let current = current as i32;
    if current > average {
        return String::new();
    }
    let wanted = average - current;
    let delta = java_round(f64::from(wanted) * 0.2) as i32;
    let size = wanted - delta + if delta == 0 { 0 } else { random.next_int(2 * delta) };
    next_exact_string(random, size)
}

/// Beam's generator for one timeline.
struct Generator {
    /// Microseconds of event time between events.
    inter_event_delay_us: f64,
}

impl Generator {
    fn new(events_per_second: f64) -> Self {
        Generator { inter_event_delay_us: 1_000_000.0 / events_per_second }
    }

    /// The event time of event `n` (Flink's `GeneratorConfig.timestampForEvent`).
    fn timestamp(&self, n: i64) -> i64 {
        BASE_TIME + (n as f64 * self.inter_event_delay_us) as i64 / 1000
    }

    /// Event `n` and its key.
    fn event(&self, n: i64) -> (i64, Event) {
        let timestamp = self.timestamp(n);
        let mut random = JavaRandom::new(n as u64);
        let kind = n % PROPORTION_DENOMINATOR;
        if kind < PERSON_PROPORTION {
            let p = self.person(n, &mut random, timestamp);
            (p.id, Event::Person(p))
        } else if kind < PERSON_PROPORTION + AUCTION_PROPORTION {
            let a = self.auction(n, &mut random, timestamp);
            (a.id, Event::Auction(a))
        } else {
            let b = self.bid(n, &mut random, timestamp);
            (b.auction, Event::Bid(b))
        }
    }

    fn person(&self, n: i64, random: &mut JavaRandom, date_time: i64) -> Person {
        let id = last_base0_person_id(n) + FIRST_PERSON_ID;
        let first = random.index(&FIRST_NAMES);
        let last = random.index(&LAST_NAMES);
        let name = format!("{first} {last}");
        let user = next_string(random, 7);
        let domain = next_string(random, 5);
        let email_address = format!("{user}@{domain}.com");
        let credit_card =
            (0..4).map(|_| format!("{:04}", random.next_int(10_000))).collect::<Vec<_>>().join(" ");
        let city = random.index(&US_CITIES).to_string();
        let state = random.index(&US_STATES).to_string();
        let size =
            8 + name.len() + email_address.len() + credit_card.len() + city.len() + state.len();
        let extra = next_extra(random, size, AVG_PERSON_BYTE_SIZE);
        Person { id, name, email_address, credit_card, city, state, date_time, extra }
    }

    fn auction(&self, n: i64, random: &mut JavaRandom, date_time: i64) -> Auction {
        let id = last_base0_auction_id(n) + FIRST_AUCTION_ID;
        let seller = if random.next_int(HOT_SELLERS_RATIO) > 0 {
            (last_base0_person_id(n) / HOT_BLOCK) * HOT_BLOCK
        } else {
            next_base0_person_id(n, random)
        } + FIRST_PERSON_ID;
        let category = FIRST_CATEGORY_ID + i64::from(random.next_int(NUM_CATEGORIES));
        let initial_bid = next_price(random);
        // About twice the time until `NUM_IN_FLIGHT_AUCTIONS` more auctions were created.
        let ahead = NUM_IN_FLIGHT_AUCTIONS * PROPORTION_DENOMINATOR / AUCTION_PROPORTION;
        let horizon = self.timestamp(n + ahead) - date_time;
        let expires = date_time + 1 + random.next_long((horizon * 2).max(1));
        let item_name = next_string(random, 20);
        let description = next_string(random, 100);
        let reserve = initial_bid + next_price(random);
        let size = 8 + item_name.len() + description.len() + 8 + 8 + 8 + 8 + 8;
        let extra = next_extra(random, size, AVG_AUCTION_BYTE_SIZE);
        Auction {
            id,
            item_name,
            description,
            initial_bid,
            reserve,
            date_time,
            expires,
            seller,
            category,
            extra,
        }
    }

    fn bid(&self, n: i64, random: &mut JavaRandom, date_time: i64) -> Bid {
        let auction = if random.next_int(HOT_AUCTION_RATIO) > 0 {
            (last_base0_auction_id(n) / HOT_BLOCK) * HOT_BLOCK
        } else {
            next_base0_auction_id(n, random)
        } + FIRST_AUCTION_ID;
        let bidder = if random.next_int(HOT_BIDDERS_RATIO) > 0 {
            (last_base0_person_id(n) / HOT_BLOCK) * HOT_BLOCK + 1
        } else {
            next_base0_person_id(n, random)
        } + FIRST_PERSON_ID;
        let price = next_price(random);
        let extra = next_extra(random, 8 + 8 + 8 + 8, AVG_BID_BYTE_SIZE);
        Bid { auction, bidder, price, date_time, extra }
    }
}

// ---------------------------------------------------------------------------------------------
// The queries.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Query {
    Q0,
    Q1,
    Q2,
    Q5,
    Q7,
    Q8,
}

const QUERIES: [Query; 6] = [Query::Q0, Query::Q1, Query::Q2, Query::Q5, Query::Q7, Query::Q8];

/// q5's windows.
const Q5_SIZE_MS: i64 = 10_000;
const Q5_ADVANCE_MS: i64 = 2_000;
/// q7's and q8's tumbling windows.
const WINDOW_MS: i64 = 10_000;
/// q2 keeps the bids of every 123rd auction.
const AUCTION_SKIP: i64 = 123;

impl Query {
    fn name(self) -> &'static str {
        match self {
            Query::Q0 => "q0",
            Query::Q1 => "q1",
            Query::Q2 => "q2",
            Query::Q5 => "q5",
            Query::Q7 => "q7",
            Query::Q8 => "q8",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Query::Q0 => "q0 pass-through",
            Query::Q1 => "q1 currency conversion",
            Query::Q2 => "q2 selection",
            Query::Q5 => "q5 hot items (hopping 10 s / 2 s)",
            Query::Q7 => "q7 highest bid (tumbling 10 s)",
            Query::Q8 => "q8 new users (windowed join, 10 s)",
        }
    }

    /// The query as a topology from `input` to `output`.
    fn topology(self, input: &str, output: &str) -> Topology {
        let builder = StreamsBuilder::new();
        let events =
            builder.stream(input, Consumed::with(Serdes::i64(), Serdes::binary::<Event>()));
        match self {
            Query::Q0 => events.to(output),
            Query::Q1 => bids(&events)
                .map_values(|mut bid| {
                    bid.price = bid.price * 908 / 1000;
                    bid
                })
                .to_with(output, Produced::with(Serdes::i64(), Serdes::binary())),
            Query::Q2 => bids(&events)
                .filter(|_, bid| bid.auction % AUCTION_SKIP == 0)
                .map_values(|bid| AuctionPrice { auction: bid.auction, price: bid.price })
                .to_with(output, Produced::with(Serdes::i64(), Serdes::binary())),
            Query::Q5 => bids(&events)
                .group_by_key()
                .windowed_by(
                    TimeWindows::of_size_with_no_grace(Duration::from_millis(Q5_SIZE_MS as u64))
                        .advance_by(Duration::from_millis(Q5_ADVANCE_MS as u64)),
                )
                .count(Materialized::named("q5-bids-per-auction"))
                .to_stream()
                .flat_map(|key, count| {
                    count.map(|count| (key.window.start, AuctionCount { auction: key.key, count }))
                })
                .group_by_key_with(
                    Grouped::with(Serdes::i64(), Serdes::binary()).named("q5-counts-by-window"),
                )
                .aggregate(
                    HotItems::default,
                    |_, update, hot: HotItems| hot.add(update),
                    Materialized::named("q5-hot-items").with_value_serde(Serdes::binary()),
                )
                .to_stream()
                .to_with(
                    output,
                    Produced::with(Serdes::i64(), Serdes::option(Serdes::binary::<HotItems>())),
                ),
            Query::Q7 => bids(&events)
                .select_key(|_, _| 0i64)
                .group_by_key_with(Grouped::with(Serdes::i64(), Serdes::binary()).named("q7-bids"))
                .windowed_by(TimeWindows::of_size_with_no_grace(Duration::from_millis(
                    WINDOW_MS as u64,
                )))
                .aggregate(
                    Vec::new,
                    |_, bid, top: Vec<Bid>| highest(top, bid),
                    Materialized::named("q7-highest-bids").with_value_serde(Serdes::binary()),
                )
                .to_stream()
                .flat_map(|key, top| top.map(|top| (key.window.start, top)))
                .to_with(output, Produced::with(Serdes::i64(), Serdes::binary::<Vec<Bid>>())),
            Query::Q8 => {
                // People go through a repartition topic of their own (their key does not
                // change): the DSL refuses a sub-topology that writes a topic it reads, which
                // joining the source's people with the source's re-keyed auctions would be.
                let people: KStream<i64, Person> = events
                    .flat_map_values(|event| match event {
                        Event::Person(person) => Some(person),
                        _ => None,
                    })
                    .repartition_with(
                        Repartitioned::with(Serdes::i64(), Serdes::binary()).named("q8-people"),
                    );
                let auctions: KStream<i64, Auction> = events
                    .flat_map_values(|event| match event {
                        Event::Auction(auction) => Some(auction),
                        _ => None,
                    })
                    .select_key(|_, auction| auction.seller)
                    .repartition_with(
                        Repartitioned::with(Serdes::i64(), Serdes::binary())
                            .named("q8-auctions-by-seller"),
                    );
                people
                    .join_stream(
                        &auctions,
                        |person: &Person, auction: &Auction| {
                            (window_of(person.date_time) == window_of(auction.date_time)).then(
                                || IdNameReserve {
                                    id: person.id,
                                    name: person.name.clone(),
                                    reserve: auction.reserve,
                                },
                            )
                        },
                        JoinWindows::of_time_difference_with_no_grace(Duration::from_millis(
                            WINDOW_MS as u64,
                        )),
                        StreamJoined::with(Serdes::i64(), Serdes::binary(), Serdes::binary())
                            .with_store_name("q8-people-auctions"),
                    )
                    .flat_map_values(|joined| joined)
                    .to_with(output, Produced::with(Serdes::i64(), Serdes::binary()))
            }
        }
        builder.build().unwrap()
    }
}

/// The bids of the event stream, keyed by auction (Flink's `bid` view).
fn bids(events: &KStream<i64, Event>) -> KStream<i64, Bid> {
    events.flat_map_values(|event| match event {
        Event::Bid(bid) => Some(bid),
        _ => None,
    })
}

/// The start of the 10-second tumbling window of `timestamp`.
fn window_of(timestamp: i64) -> i64 {
    timestamp - timestamp.rem_euclid(WINDOW_MS)
}

// ---------------------------------------------------------------------------------------------
// The same queries computed directly, for the check.

/// An order-sensitive digest of records.
#[derive(Default)]
struct Digest {
    records: u64,
    hasher: DefaultHasher,
}

impl Digest {
    fn add(&mut self, key: &[u8], value: &[u8]) {
        self.records += 1;
        self.hasher.write_usize(key.len());
        self.hasher.write(key);
        self.hasher.write_usize(value.len());
        self.hasher.write(value);
    }

    fn summary(&self) -> (u64, u64) {
        (self.records, self.hasher.finish())
    }
}

/// What each query should write, computed from the generated events.
#[derive(Default)]
struct Expected {
    q0: Digest,
    q1: Digest,
    q2: Digest,
    /// Window start → auction → bids.
    q5: BTreeMap<i64, HashMap<i64, i64>>,
    /// Window start → the highest price and the bids with it.
    q7: BTreeMap<i64, (i64, Vec<Bid>)>,
    /// (Person id, window) → name.
    q8_people: HashMap<(i64, i64), String>,
    /// (Seller, window, reserve) of every auction.
    q8_auctions: Vec<(i64, i64, i64)>,
}

impl Expected {
    fn add(&mut self, key: i64, event: &Event, value_bytes: &[u8]) {
        let mut buf = Vec::new();
        self.q0.add(&key.to_be_bytes(), value_bytes);
        match event {
            Event::Person(p) => {
                self.q8_people.insert((p.id, window_of(p.date_time)), p.name.clone());
            }
            Event::Auction(a) => {
                self.q8_auctions.push((a.seller, window_of(a.date_time), a.reserve));
            }
            Event::Bid(b) => {
                let euro = Bid { price: b.price * 908 / 1000, ..b.clone() };
                Serdes::binary::<Bid>().serialize(&euro, &mut buf).unwrap();
                self.q1.add(&key.to_be_bytes(), &buf);
                if b.auction % AUCTION_SKIP == 0 {
                    buf.clear();
                    let selected = AuctionPrice { auction: b.auction, price: b.price };
                    Serdes::binary::<AuctionPrice>().serialize(&selected, &mut buf).unwrap();
                    self.q2.add(&key.to_be_bytes(), &buf);
                }
                // The hopping windows that contain the bid: starts at multiples of the
                // advance in (t - size, t].
                let last = b.date_time - b.date_time.rem_euclid(Q5_ADVANCE_MS);
                let mut start = last;
                while start > b.date_time - Q5_SIZE_MS {
                    *self.q5.entry(start).or_default().entry(b.auction).or_default() += 1;
                    start -= Q5_ADVANCE_MS;
                }
                let (price, top) =
                    self.q7.entry(window_of(b.date_time)).or_insert((i64::MIN, Vec::new()));
                if b.price > *price {
                    *price = b.price;
                    top.clear();
                }
                if b.price == *price {
                    top.push(b.clone());
                }
            }
        }
    }

    fn q5_rows(&self) -> BTreeMap<i64, HotItems> {
        self.q5
            .iter()
            .map(|(window, counts)| {
                let count = counts.values().copied().max().unwrap_or(0);
                let mut auctions: Vec<i64> =
                    counts.iter().filter(|(_, c)| **c == count).map(|(a, _)| *a).collect();
                auctions.sort_unstable();
                (*window, HotItems { count, auctions })
            })
            .collect()
    }

    fn q8_pairs(&self) -> Vec<IdNameReserve> {
        let mut pairs: Vec<IdNameReserve> = self
            .q8_auctions
            .iter()
            .filter_map(|(seller, window, reserve)| {
                self.q8_people.get(&(*seller, *window)).map(|name| IdNameReserve {
                    id: *seller,
                    name: name.clone(),
                    reserve: *reserve,
                })
            })
            .collect();
        pairs.sort();
        pairs
    }
}

/// Every record of a one-partition topic, as (key, value) bytes.
async fn read_all(broker: &Broker, topic: &str) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let tp = TopicPartition::new(topic, 0);
    let end = broker.list_offset(&tp, OffsetSpec::Latest).unwrap().offset;
    let consumer = support::reader(broker, topic);
    let mut out = Vec::new();
    let mut next = 0;
    while next < end {
        for r in consumer.poll(Duration::from_millis(100)).await.unwrap() {
            next = r.offset + 1;
            out.push((r.key.map(|k| k.to_vec()).unwrap_or_default(), r.value.map(|v| v.to_vec())));
        }
    }
    out
}

fn read_i64(bytes: &[u8]) -> i64 {
    i64::from_be_bytes(bytes.try_into().expect("an 8-byte key"))
}

/// The last value of each key (a table's final rows).
fn last_values<V: 'static>(
    records: &[(Vec<u8>, Option<Vec<u8>>)],
    serde: SerdeRef<V>,
) -> BTreeMap<i64, V> {
    let mut rows = BTreeMap::new();
    for (key, value) in records {
        let value = value.as_ref().expect("no tombstones");
        rows.insert(read_i64(key), serde.deserialize(value).unwrap());
    }
    rows
}

/// Compares a query's output with the direct computation; panics on a difference.
async fn verify(broker: &Broker, query: Query, output: &str, expected: &Expected) {
    let records = read_all(broker, output).await;
    let digest = || {
        let mut d = Digest::default();
        for (key, value) in &records {
            d.add(key, value.as_deref().expect("no tombstones"));
        }
        d.summary()
    };
    let name = query.name();
    match query {
        Query::Q0 => assert_eq!(digest(), expected.q0.summary(), "{name}: records or digest"),
        Query::Q1 => assert_eq!(digest(), expected.q1.summary(), "{name}: records or digest"),
        Query::Q2 => assert_eq!(digest(), expected.q2.summary(), "{name}: records or digest"),
        Query::Q5 => {
            let mut rows = last_values(&records, Serdes::binary::<HotItems>());
            for row in rows.values_mut() {
                row.auctions.sort_unstable();
            }
            assert_eq!(rows, expected.q5_rows(), "{name}: final rows per window");
        }
        Query::Q7 => {
            let mut rows = last_values(&records, Serdes::binary::<Vec<Bid>>());
            let mut want: BTreeMap<i64, Vec<Bid>> =
                expected.q7.iter().map(|(w, (_, bids))| (*w, bids.clone())).collect();
            for bids in rows.values_mut().chain(want.values_mut()) {
                bids.sort();
            }
            assert_eq!(rows, want, "{name}: final rows per window");
        }
        Query::Q8 => {
            let serde = Serdes::binary::<IdNameReserve>();
            let mut pairs: Vec<IdNameReserve> = records
                .iter()
                .map(|(_, v)| serde.deserialize(v.as_deref().expect("no tombstones")).unwrap())
                .collect();
            pairs.sort();
            assert_eq!(pairs, expected.q8_pairs(), "{name}: the joined pairs");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The run.

/// Writes `events` generated events to `topic`; returns what the queries should write, if
/// `check`.
async fn write_input(
    broker: &Broker,
    topic: &str,
    generator: &Generator,
    events: u64,
    check: bool,
) -> Expected {
    let producer = support::input_producer(broker);
    let serde = Serdes::binary::<Event>();
    let mut expected = Expected::default();
    let mut buf = Vec::new();
    for n in 0..events as i64 {
        let (key, event) = generator.event(n);
        buf.clear();
        serde.serialize(&event, &mut buf).unwrap();
        let timestamp = generator.timestamp(n);
        producer
            .send(ProducerRecord::new(topic, &buf).key(&key.to_be_bytes()).timestamp(timestamp))
            .await
            .unwrap();
        if check {
            expected.add(key, &event, &buf);
        }
    }
    producer.close().await.unwrap();
    expected
}

/// Runs one query over the `events` records of `input`; returns the seconds it took.
async fn run(
    broker: &Broker,
    state_dir: &std::path::Path,
    query: Query,
    input: &str,
    output: &str,
    events: u64,
) -> f64 {
    let app = format!("nexmark-{}", query.name());
    let topology = query.topology(input, output);
    // The repartition topics the query writes and reads back itself.
    let mut repartitions = Vec::new();
    for topic in topology.internal_topics() {
        if topic.kind == InternalTopicKind::Repartition {
            repartitions.push(TopicPartition::new(topology.resolve_topic(&app, &topic.name), 0));
        }
    }
    let input_tp = TopicPartition::new(input, 0);
    let admin = fjord::broker::Admin::new(broker);
    let config = support::streams_config(
        state_dir,
        &app,
        (ProcessingGuarantee::AtLeastOnce, Some(Duration::from_millis(100))),
    );
    let done = |streams: &fjord::streams::Streams| {
        let processed = streams.records_processed();
        if repartitions.is_empty() {
            return processed >= events;
        }
        // A commit covering the whole input flushed the caches (and the producer) into the
        // repartition topics; then all they hold must have been processed too.
        let committed = admin
            .list_group_offsets(&app)
            .ok()
            .and_then(|offsets| offsets.get(&input_tp).map(|o| o.offset))
            .unwrap_or(0);
        if committed < events as i64 {
            return false;
        }
        let written: i64 = repartitions
            .iter()
            .map(|tp| broker.list_offset(tp, OffsetSpec::Latest).unwrap().offset)
            .sum();
        processed >= events + written as u64
    };
    support::run_until(broker, topology, config, done).await.unwrap().as_secs_f64()
}

/// Runs the queries `wanted` over `events` generated events, printing a row of the `streams`
/// bench's table for each.
pub async fn run_queries(broker: &Broker, dir: &Path, events: u64, wanted: impl Fn(&str) -> bool) {
    let queries: Vec<Query> = QUERIES.into_iter().filter(|q| wanted(q.name())).collect();
    if queries.is_empty() {
        return;
    }
    // The port of java.util.Random, against values OpenJDK 17 printed for `new Random(1234567)`.
    let mut r = JavaRandom::new(1_234_567);
    assert_eq!(
        (r.next_int(100), r.next_int(13), r.next_int(1 << 20), r.next_i32(), r.next_i64()),
        (46, 3, 788_548, 1_922_548_996, 8_025_209_512_674_943_304)
    );
    assert_eq!((r.next_f64(), r.next_int(1_000_000_007)), (0.674_103_616_848_309_4, 711_765_944));
    assert_eq!(next_price(&mut JavaRandom::new(77)), 2_210_142);

    let rate: f64 = std::env::var("FJORD_NEXMARK_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000.0);
    let check = match std::env::var("FJORD_NEXMARK_CHECK").as_deref() {
        Ok("0") => false,
        Ok("1") => true,
        _ => events <= 2_000_000,
    };
    let generator = Generator::new(rate);
    let input = "nexmark-events";
    let outputs: Vec<String> =
        queries.iter().map(|q| format!("nexmark-{}-out", q.name())).collect();
    let mut topics = vec![input];
    topics.extend(outputs.iter().map(String::as_str));
    support::create_topics(broker, &topics).await;
    let expected = write_input(broker, input, &generator, events, check).await;
    let span_ms = generator.timestamp(events as i64 - 1) - BASE_TIME;
    let state_dir = dir.join("nexmark-state");
    for (query, output) in queries.iter().zip(&outputs) {
        let seconds = run(broker, &state_dir, *query, input, output, events).await;
        let written = broker
            .list_offset(&TopicPartition::new(output.as_str(), 0), OffsetSpec::Latest)
            .unwrap()
            .offset;
        if check {
            verify(broker, *query, output, &expected).await;
        }
        println!(
            "| Nexmark {}, {events} events over {:.3} s of event time ({written} outputs{}) | {:.0} | - |",
            query.description(),
            span_ms as f64 / 1000.0,
            if check { ", checked" } else { "" },
            events as f64 / seconds,
        );
    }
}
