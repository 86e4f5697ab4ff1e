//! The logical graph a `StreamsBuilder` produces: named nodes with their parents, children and
//! the factory each task uses to build them.

use std::any::Any;

use std::sync::Arc;

use crate::error::StreamsError;
use crate::state::StoreSpec;

/// Index of a node in the graph.
pub(crate) type NodeId = usize;

/// What a node is, for descriptions and for splitting the graph into sub-topologies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NodeKind {
    /// Reads topics.
    Source { topics: Vec<String> },
    /// Transforms records.
    Processor,
    /// Writes a topic (`None`: chosen per record).
    Sink { topic: Option<String> },
}

/// A node of the graph.
pub(crate) struct GraphNode {
    pub(crate) name: String,
    pub(crate) kind: NodeKind,
    pub(crate) parents: Vec<NodeId>,
    pub(crate) children: Vec<NodeId>,
    pub(crate) stores: Vec<String>,
    /// A `NodeFactory<K, V>` or, for sources, a `SourceFactory`.
    pub(crate) factory: Box<dyn Any + Send + Sync>,
}

/// Why the runtime creates a topic of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InternalTopicKind {
    /// Carries records to the sub-topology that groups or joins them by their new key.
    Repartition,
    /// The changelog of a state store.
    Changelog,
}

/// A topic the application creates and owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalTopic {
    /// The name without the `<application.id>-` prefix.
    pub name: String,
    /// Repartition or changelog.
    pub kind: InternalTopicKind,
    /// A fixed partition count, else derived from the source topics upstream.
    pub partitions: Option<u32>,
}

/// The graph.
#[derive(Default)]
pub(crate) struct Graph {
    pub(crate) nodes: Vec<GraphNode>,
    pub(crate) internal_topics: Vec<InternalTopic>,
    pub(crate) stores: Vec<Arc<StoreSpec>>,
    /// Join nodes: the topics their sub-topology reads must be co-partitioned.
    pub(crate) copartitioned: Vec<NodeId>,
}

impl Graph {
    pub(crate) fn node(&self, id: NodeId) -> Result<&GraphNode, StreamsError> {
        self.nodes.get(id).ok_or_else(|| StreamsError::Topology(format!("no node {id}")))
    }

    /// The store named `name`.
    pub(crate) fn store(&self, name: &str) -> Option<&Arc<StoreSpec>> {
        self.stores.iter().find(|s| s.name == name)
    }

    /// Whether `name` is one of the application's own topics.
    pub(crate) fn is_internal(&self, name: &str) -> bool {
        self.internal_topics.iter().any(|t| t.name == name)
    }

    /// The real topic name: internal topics are prefixed with the application id, as Kafka
    /// Streams does (`<application.id>-<name>`).
    pub(crate) fn resolve_topic(&self, application_id: &str, name: &str) -> String {
        if self.is_internal(name) { format!("{application_id}-{name}") } else { name.to_string() }
    }
}
