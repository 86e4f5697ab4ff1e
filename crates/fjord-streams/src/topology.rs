//! A built topology: the graph split into sub-topologies, validated, and describable as text
//! (Kafka's `TopologyDescription` format) and as Graphviz DOT.
//!
//! A sub-topology is a connected part of the graph. Repartition topics cut the graph: the sink
//! that writes one and the source that reads it belong to different sub-topologies, so that
//! records re-keyed in one meet their new partition's task in the next.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use crate::TaskId;
use crate::error::StreamsError;
use crate::graph::{Graph, InternalTopic, NodeId, NodeKind};
use crate::node::{CollectorRef, ErrorPolicy, Instantiator, NodeMetrics, SourceRef, TaskContext};
use crate::task::Task;

/// One sub-topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subtopology {
    /// Its number.
    pub id: u32,
    pub(crate) nodes: Vec<NodeId>,
    pub(crate) sources: Vec<NodeId>,
    /// Topics its sources read (internal topics without the application id prefix).
    pub source_topics: Vec<String>,
    /// Topics its sinks write (dynamic sinks are not listed).
    pub sink_topics: Vec<String>,
    /// The state stores its processors use.
    pub stores: Vec<String>,
    /// Whether it joins: then every topic it reads must have the same partition count.
    pub copartitioned: bool,
}

/// A validated topology, shared by every stream thread.
#[derive(Clone)]
pub struct Topology {
    pub(crate) graph: Arc<Graph>,
    pub(crate) subtopologies: Vec<Subtopology>,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.describe())
    }
}

impl Topology {
    pub(crate) fn new(graph: Graph) -> Result<Topology, StreamsError> {
        let mut errors = Vec::new();
        // Names are unique.
        let mut names = HashSet::new();
        for node in &graph.nodes {
            if !names.insert(node.name.as_str()) {
                errors.push(format!("two nodes are named `{}`: names must be unique", node.name));
            }
        }
        // Each topic is read by one source.
        let mut read_by: BTreeMap<&str, &str> = BTreeMap::new();
        for node in &graph.nodes {
            if let NodeKind::Source { topics } = &node.kind {
                for topic in topics {
                    if let Some(other) = read_by.insert(topic, &node.name) {
                        errors.push(format!(
                            "topic `{topic}` is read by two sources, `{other}` and `{}`: read it once and reuse the stream",
                            node.name
                        ));
                    }
                }
            }
        }
        // A global table's topic is read by nothing else.
        for spec in &graph.stores {
            if let Some(topic) = &spec.global_topic
                && let Some(other) = read_by.insert(topic, &spec.name)
            {
                errors.push(format!(
                    "topic `{topic}` is read by global table `{}` and by `{other}`: read it once (join with the global table instead)",
                    spec.name
                ));
            }
        }
        if graph.nodes.is_empty() {
            errors.push("the topology is empty: add at least one stream".into());
        }
        // Connected components.
        let n = graph.nodes.len();
        let mut component: Vec<usize> = (0..n).collect();
        fn find(c: &mut [usize], x: usize) -> usize {
            let mut root = x;
            while c[root] != root {
                root = c[root];
            }
            let mut y = x;
            while c[y] != root {
                let next = c[y];
                c[y] = root;
                y = next;
            }
            root
        }
        for (id, node) in graph.nodes.iter().enumerate() {
            for &child in &node.children {
                let (a, b) = (find(&mut component, id), find(&mut component, child));
                if a != b {
                    component[a.max(b)] = a.min(b);
                }
            }
        }
        // Nodes that share a store belong to one sub-topology (a stream-table join and its
        // table): the store lives in one task.
        let mut store_user: BTreeMap<&str, usize> = BTreeMap::new();
        for (id, node) in graph.nodes.iter().enumerate() {
            for store in &node.stores {
                if let Some(&other) = store_user.get(store.as_str()) {
                    let (a, b) = (find(&mut component, id), find(&mut component, other));
                    if a != b {
                        component[a.max(b)] = a.min(b);
                    }
                } else {
                    store_user.insert(store, id);
                }
            }
        }
        let mut groups: BTreeMap<usize, Vec<NodeId>> = BTreeMap::new();
        for id in 0..n {
            let root = find(&mut component, id);
            groups.entry(root).or_default().push(id);
        }
        let mut subtopologies = Vec::new();
        for (i, nodes) in groups.into_values().enumerate() {
            let sources: Vec<NodeId> = nodes
                .iter()
                .copied()
                .filter(|&id| matches!(graph.nodes[id].kind, NodeKind::Source { .. }))
                .collect();
            let source_topics: Vec<String> = sources
                .iter()
                .flat_map(|&id| match &graph.nodes[id].kind {
                    NodeKind::Source { topics } => topics.clone(),
                    _ => Vec::new(),
                })
                .collect();
            let sink_topics: Vec<String> = nodes
                .iter()
                .filter_map(|&id| match &graph.nodes[id].kind {
                    NodeKind::Sink { topic: Some(t) } => Some(t.clone()),
                    _ => None,
                })
                .collect();
            let mut stores: Vec<String> = Vec::new();
            for &id in &nodes {
                for store in &graph.nodes[id].stores {
                    if graph.store(store).is_none() {
                        errors.push(format!(
                            "processor `{}` uses state store `{store}`, which was not added to the builder",
                            graph.nodes[id].name
                        ));
                    }
                    if !stores.contains(store) {
                        stores.push(store.clone());
                    }
                }
            }
            if sources.is_empty() {
                errors.push(format!(
                    "nodes {:?} are not connected to any source",
                    nodes.iter().map(|&id| &graph.nodes[id].name).collect::<Vec<_>>()
                ));
            }
            for topic in &sink_topics {
                if source_topics.contains(topic) {
                    errors.push(format!(
                        "sub-topology {i} both reads and writes topic `{topic}`: a loop needs a repartition() (or another topic) in between"
                    ));
                }
            }
            let copartitioned = nodes.iter().any(|id| graph.copartitioned.contains(id));
            subtopologies.push(Subtopology {
                id: i as u32,
                copartitioned,
                nodes,
                sources,
                source_topics,
                sink_topics,
                stores,
            });
        }
        if !errors.is_empty() {
            return Err(StreamsError::Topology(errors.join("; ")));
        }
        Ok(Topology { graph: Arc::new(graph), subtopologies })
    }

    /// The sub-topologies.
    pub fn subtopologies(&self) -> &[Subtopology] {
        &self.subtopologies
    }

    /// The topics the application creates (without the `<application.id>-` prefix).
    pub fn internal_topics(&self) -> &[InternalTopic] {
        &self.graph.internal_topics
    }

    /// Every topic the topology reads that it does not create: these must exist.
    pub fn external_source_topics(&self) -> Vec<String> {
        let mut out: BTreeSet<String> = BTreeSet::new();
        for s in &self.subtopologies {
            for t in &s.source_topics {
                if !self.graph.is_internal(t) {
                    out.insert(t.clone());
                }
            }
        }
        out.into_iter().collect()
    }

    /// The sub-topology that writes an internal topic: a repartition topic's sink, or a
    /// changelog's store.
    pub fn writer_of(&self, topic: &str) -> Option<&Subtopology> {
        self.subtopologies.iter().find(|s| {
            s.sink_topics.iter().any(|t| t == topic)
                || s.stores.iter().any(|store| format!("{store}-changelog") == topic)
        })
    }

    /// The state stores of the topology.
    pub fn stores(&self) -> &[Arc<crate::state::StoreSpec>] {
        &self.graph.stores
    }

    /// The global stores (the `GlobalKTable`s) of the topology.
    pub fn global_stores(&self) -> impl Iterator<Item = &Arc<crate::state::StoreSpec>> {
        self.graph.stores.iter().filter(|s| s.global_topic.is_some())
    }

    /// The global store that mirrors `topic`, if any.
    pub fn global_store_of(&self, topic: &str) -> Option<&Arc<crate::state::StoreSpec>> {
        self.global_stores().find(|s| s.global_topic.as_deref() == Some(topic))
    }

    /// The real name of a topic for an application (internal ones are prefixed).
    pub fn resolve_topic(&self, application_id: &str, name: &str) -> String {
        self.graph.resolve_topic(application_id, name)
    }

    /// The sub-topology that reads `topic` (a real, resolved name).
    pub fn subtopology_of(&self, application_id: &str, topic: &str) -> Option<u32> {
        self.subtopologies
            .iter()
            .find(|s| {
                s.source_topics.iter().any(|t| self.graph.resolve_topic(application_id, t) == topic)
            })
            .map(|s| s.id)
    }

    /// Builds the processors of one task.
    pub(crate) fn build_task(
        &self,
        id: TaskId,
        application_id: &Arc<str>,
        collector: CollectorRef,
        errors: ErrorPolicy,
        opener: crate::node::EngineOpener<'_>,
        cache_bytes: usize,
    ) -> Result<Task, StreamsError> {
        let sub = self
            .subtopologies
            .get(id.subtopology as usize)
            .ok_or_else(|| StreamsError::Topology(format!("no sub-topology {}", id.subtopology)))?;
        let mut inst = Instantiator::new(&self.graph, application_id, id, opener, cache_bytes);
        let mut sources: Vec<(Arc<str>, SourceRef, NodeId)> = Vec::new();
        for &node in &sub.sources {
            let source = inst.source(node)?;
            if let NodeKind::Source { topics } = &self.graph.node(node)?.kind {
                for topic in topics {
                    sources.push((inst.topic(topic), source.clone(), node));
                }
            }
        }
        let lifecycles = std::mem::take(&mut inst.lifecycles);
        let stores = std::mem::take(&mut inst.stores);
        let mut ctx = TaskContext::new(id, application_id.clone(), collector, errors);
        ctx.node_metrics = (0..self.graph.nodes.len())
            .map(|node| match sub.nodes.contains(&node) {
                true => NodeMetrics::new(application_id, id, &self.graph.nodes[node].name),
                false => NodeMetrics::none(),
            })
            .collect();
        Ok(Task::new(id, sources, lifecycles, stores, ctx))
    }

    /// The topology in Kafka's `TopologyDescription` text form.
    pub fn describe(&self) -> String {
        let mut out = String::from("Topologies:\n");
        for spec in self.global_stores() {
            let topic = spec.global_topic.as_deref().unwrap_or_default();
            let _ = writeln!(out, "   Global store: {} (topic: {topic})", spec.name);
        }
        for sub in &self.subtopologies {
            let _ = writeln!(out, "   Sub-topology: {}", sub.id);
            for &id in &sub.nodes {
                let node = &self.graph.nodes[id];
                match &node.kind {
                    NodeKind::Source { topics } => {
                        let _ = writeln!(
                            out,
                            "    Source: {} (topics: [{}])",
                            node.name,
                            topics.join(", ")
                        );
                    }
                    NodeKind::Processor => {
                        let _ = writeln!(
                            out,
                            "    Processor: {} (stores: [{}])",
                            node.name,
                            node.stores.join(", ")
                        );
                    }
                    NodeKind::Sink { topic } => {
                        let topic = topic.as_deref().unwrap_or("<chosen per record>");
                        let _ = writeln!(out, "    Sink: {} (topic: {topic})", node.name);
                    }
                }
                let names = |ids: &[NodeId]| {
                    ids.iter()
                        .map(|&i| self.graph.nodes[i].name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let _ = writeln!(
                    out,
                    "      --> {}",
                    if node.children.is_empty() { "none".into() } else { names(&node.children) }
                );
                if !node.parents.is_empty() {
                    let _ = writeln!(out, "      <-- {}", names(&node.parents));
                }
            }
        }
        out
    }

    /// The topology as a Graphviz DOT digraph: a cluster per sub-topology, topics as ellipses.
    pub fn to_dot(&self) -> String {
        let mut out = String::from(
            "digraph topology {\n  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];\n",
        );
        let quote = |s: &str| format!("\"{}\"", s.replace('"', "\\\""));
        let mut topics = BTreeSet::new();
        for sub in &self.subtopologies {
            let _ = writeln!(
                out,
                "  subgraph cluster_{} {{\n    label={};",
                sub.id,
                quote(&format!("Sub-topology {}", sub.id))
            );
            for &id in &sub.nodes {
                let node = &self.graph.nodes[id];
                let _ = writeln!(out, "    {};", quote(&node.name));
            }
            out.push_str("  }\n");
            for &id in &sub.nodes {
                let node = &self.graph.nodes[id];
                for &child in &node.children {
                    let _ = writeln!(
                        out,
                        "  {} -> {};",
                        quote(&node.name),
                        quote(&self.graph.nodes[child].name)
                    );
                }
                match &node.kind {
                    NodeKind::Source { topics: ts } => {
                        for t in ts {
                            topics.insert(t.clone());
                            let _ = writeln!(
                                out,
                                "  {} -> {};",
                                quote(&format!("topic:{t}")),
                                quote(&node.name)
                            );
                        }
                    }
                    NodeKind::Sink { topic: Some(t) } => {
                        topics.insert(t.clone());
                        let _ = writeln!(
                            out,
                            "  {} -> {};",
                            quote(&node.name),
                            quote(&format!("topic:{t}"))
                        );
                    }
                    _ => {}
                }
            }
        }
        for t in topics {
            let _ = writeln!(
                out,
                "  {} [shape=ellipse, label={}];",
                quote(&format!("topic:{t}")),
                quote(&t)
            );
        }
        out.push_str("}\n");
        out
    }
}
