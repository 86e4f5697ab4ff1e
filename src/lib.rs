//! Fjord: Kafka Streams-class stream processing in Rust, on an embedded Kafka-compatible log.
//!
//! This facade re-exports the crates of the workspace; see `docs/ARCHITECTURE.md` for the map.

pub use fjord_log as log;
