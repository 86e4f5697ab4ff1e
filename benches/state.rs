//! State store read-modify-write per record over 10,000 keys: RocksDB with one write per
//! record, RocksDB with writes batched by 1,000, and the in-memory store. The code lives with
//! the crate (`crates/fjord-state/benches/support/`); the same loops run without criterion as
//! `cargo run -p fjord-state --example rmw_timing`.
//!
//! `cargo bench --bench state -- --warm-up-time 1 --measurement-time 3`; numbers in
//! `docs/benchmarks.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

include!("../crates/fjord-state/benches/support/rmw.rs");
