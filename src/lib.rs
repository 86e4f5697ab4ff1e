#![doc = include_str!("../README.md")]
//!
//! This facade re-exports the crates of the workspace; see `docs/ARCHITECTURE.md` for the map.

/// The built-in partitioned log (the `fjord-log` crate).
pub use fjord_log as log;

/// Broker semantics and the in-process clients (the `fjord-broker` crate).
pub use fjord_broker as broker;

/// The stream processing DSL and runtime (the `fjord-streams` crate).
pub use fjord_streams as streams;

/// The code blocks of `docs/streams-state.md` run as doc tests, so the page cannot drift from
/// the API.
#[cfg(doctest)]
#[doc = include_str!("../docs/streams-state.md")]
pub struct StreamsStateDoc;

/// The code blocks of `docs/exactly-once.md`, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../docs/exactly-once.md")]
pub struct ExactlyOnceDoc;

/// The code blocks of `docs/metrics.md`, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../docs/metrics.md")]
pub struct MetricsDoc;

/// The code blocks of `docs/guide.md`, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../docs/guide.md")]
pub struct GuideDoc;
