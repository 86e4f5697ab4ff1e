//! State store read-modify-write; the code lives with the crate
//! (`crates/fjord-state/benches/support/rmw.rs`), also runnable as
//! `cargo bench -p fjord-state --bench state`.
//!
//! `cargo bench --bench state -- --warm-up-time 1 --measurement-time 3`; numbers in
//! `docs/benchmarks.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

include!("../crates/fjord-state/benches/support/rmw.rs");
