//! Fjord's stream processing: the DSL that builds topologies, the runtime that runs them on a
//! backend (the embedded broker, or Kafka), serdes, and a test driver.
//!
//! ```text
//! StreamsBuilder ──build()──▶ Topology ──▶ Streams::new(topology, config).start()
//!   stream/filter/map/...       sub-topologies      stream threads → tasks → processors
//! ```
//! See `docs/ARCHITECTURE.md` for the map and `docs/guide.md` for the tour.

pub mod backend;
pub mod driver;
mod dsl;
mod error;
mod global_table;
mod global_thread;
mod graph;
mod join;
mod metrics;
mod node;
pub mod processor;
mod query;
mod query_server;
mod record;
mod runtime;
pub mod serdes;
mod session_window;
mod sliding_window;
mod state;
mod table;
mod task;
mod topology;
mod window;

pub use backend::{Backend, EmbeddedBackend};
pub use driver::{DriverConfig, OutputRecord, TestInputTopic, TestOutputTopic, TopologyTestDriver};
pub use dsl::{
    BranchedKStream, Consumed, KStream, Partitioner, Predicate, Produced, Repartitioned,
    StreamsBuilder, TimestampExtractor,
};
pub use error::{ErrorAction, StreamsError};
pub use fjord_state::{MemoryConfig, MemoryUsage};
pub use global_table::GlobalKTable;
pub use graph::{InternalTopic, InternalTopicKind};
pub use join::{JoinWindows, StreamJoined};
pub use node::{Emitter, RawRecord, RecordCollector};
pub use processor::{Processor, ProcessorContext, PunctuationType, ScheduleId};
pub use query::{HostInfo, KeyQueryMetadata, StreamsMetadata};
pub use query_server::{QueryServer, QueryServerHandle};
pub use record::{Header, Headers, Record};
pub use runtime::{ProcessingGuarantee, Streams, StreamsConfig, StreamsState};
pub use serdes::{Serde, SerdeError, SerdeRef, Serdes};
pub use state::{
    CachedStore, Change, KeyValueStore, ReadOnlyKeyValueStore, ReadOnlySessionStore,
    ReadOnlyWindowStore, StoreKind, StoreSpec,
};
pub use table::{Grouped, KGroupedStream, KGroupedTable, KTable, Materialized};
pub use topology::{Subtopology, Topology};
pub use window::{
    SessionWindowedKStream, SessionWindows, SlidingWindows, TimeWindowedKStream, TimeWindows,
    Window, Windowed, WindowedBy,
};

/// A task: a sub-topology and a partition, `<sub-topology>_<partition>` as Kafka names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId {
    /// The sub-topology.
    pub subtopology: u32,
    /// The partition of its input topics.
    pub partition: u32,
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}_{}", self.subtopology, self.partition)
    }
}
