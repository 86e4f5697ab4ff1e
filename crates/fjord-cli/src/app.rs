//! `fjord app`: streams applications as the log sees them. `reset` is what Kafka's
//! `kafka-streams-application-reset` does (plus the local state Kafka leaves to
//! `KafkaStreams.cleanUp()`); `describe` puts together what an application leaves behind: its
//! consumer group, its internal topics, and the topology and task directories in its state
//! directory.
//!
//! An application's footprint follows Kafka Streams' naming, which Fjord keeps: the consumer
//! group is the `application.id`, internal topics are `<application.id>-<name>-repartition`
//! and `<application.id>-<store>-changelog`, and the state directory holds one directory per
//! task (`<sub-topology>_<partition>`) and `topology.txt`, the topology's description, which
//! the application writes when it starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use fjord_broker::{Admin, Broker, BrokerError, OffsetSpec, TopicPartition};

use crate::config::{Settings, with_broker};
use crate::error::{CliError, Result};
use crate::output::Out;
use crate::row;

/// The file in the state directory that keeps the application's topology description.
const TOPOLOGY_FILE: &str = "topology.txt";
/// The file in the state directory that keeps the instance's id; a reset keeps it, so that
/// the next run still fences transactions its predecessor left open.
const PROCESS_ID_FILE: &str = "process-id";

/// `fjord app ...`
#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Reprocess from the start: reset the input offsets to the earliest, delete the internal
    /// topics and the local state; refused while the application runs.
    Reset(ResetArgs),
    /// The application's topology, tasks with their lag, and stores.
    Describe(DescribeArgs),
}

/// `fjord app reset`.
#[derive(Debug, Args)]
pub struct ResetArgs {
    /// The application id (its consumer group).
    application_id: String,
    /// Input topics to reset (default: the non-internal topics the group has committed
    /// offsets for); repeatable.
    #[arg(long = "input-topic", short)]
    input_topics: Vec<String>,
    /// The application's state directory (`state.dir`): its task directories are deleted.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Print what would be reset and deleted without changing anything.
    #[arg(long)]
    dry_run: bool,
}

/// `fjord app describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// The application id (its consumer group).
    application_id: String,
    /// The application's state directory (`state.dir`), for its topology and local tasks.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

/// Runs an `app` command.
pub fn run(settings: &Settings, command: AppCommand) -> Result<()> {
    with_broker(settings, |broker| async move {
        let mut out = Out::stdout();
        match command {
            AppCommand::Reset(args) => reset(&broker, args, &mut out).await?,
            AppCommand::Describe(args) => describe(&broker, args, &mut out)?,
        }
        out.flush()
    })
}

/// The error for an application id that left nothing in the data directory.
fn no_application(app: &str) -> CliError {
    CliError::arg(
        "application-id",
        app,
        format!(
            "no application `{app}` in this data directory: no consumer group and no internal \
             topics named `{app}-...` (check the id with `fjord groups list`)"
        ),
    )
}

/// Whether `topic` is one of the application's internal topics.
fn is_internal(app: &str, topic: &str) -> bool {
    topic
        .strip_prefix(app)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|name| name.ends_with("-repartition") || name.ends_with("-changelog"))
}

fn internal_topics(admin: &Admin, app: &str) -> Vec<String> {
    admin.list_topics(false).into_iter().filter(|t| is_internal(app, t)).collect()
}

/// The application's group, `None` if the coordinator does not know it.
fn group(admin: &Admin, app: &str) -> Result<Option<fjord_broker::group::GroupDescription>> {
    match admin.describe_group(app) {
        Ok(d) => Ok(Some(d)),
        Err(BrokerError::GroupIdNotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn reset(broker: &Broker, args: ResetArgs, out: &mut Out) -> Result<()> {
    let admin = Admin::new(broker);
    let app = args.application_id.as_str();
    let group = group(&admin, app)?;
    if let Some(g) = &group
        && !g.members.is_empty()
    {
        return Err(CliError::arg(
            "application-id",
            app,
            format!(
                "the application is running ({} member(s) in group `{app}`): stop every \
                 instance, then reset",
                g.members.len()
            ),
        ));
    }
    let internal = internal_topics(&admin, app);
    let mut inputs = args.input_topics.clone();
    if inputs.is_empty() && group.is_some() {
        inputs = admin
            .list_group_offsets(app)?
            .keys()
            .map(|tp| tp.topic.to_string())
            .filter(|t| !is_internal(app, t))
            .collect();
        inputs.dedup();
    }
    if group.is_none() && internal.is_empty() && inputs.is_empty() {
        return Err(no_application(app));
    }
    let mut plan = BTreeMap::new();
    for topic in &inputs {
        for p in 0..broker.partition_count(topic)? {
            let tp = TopicPartition::new(topic.as_str(), p);
            plan.insert(tp.clone(), broker.list_offset(&tp, OffsetSpec::Earliest)?.offset);
        }
    }
    let local = match &args.state_dir {
        Some(dir) => local_state(dir)?,
        None => Vec::new(),
    };

    let mut rows = vec![row!["INPUT-TOPIC", "PARTITION", "NEW-OFFSET"]];
    for (tp, offset) in &plan {
        rows.push(row![tp.topic, tp.partition, offset]);
    }
    out.table(&rows)?;
    let list =
        |items: &[String]| if items.is_empty() { "none".to_string() } else { items.join(", ") };
    out.line(format_args!("Internal topics to delete: {}", list(&internal)))?;
    match &args.state_dir {
        Some(dir) => {
            let names: Vec<String> = local.iter().map(|p| p.display().to_string()).collect();
            out.line(format_args!("Local state to delete in {}: {}", dir.display(), list(&names)))?;
        }
        None => out.line(
            "Local state: not touched (give --state-dir to delete the application's stores)",
        )?,
    }
    if args.dry_run {
        return out.line("Dry run: nothing was changed.");
    }

    // Deleting the group drops every committed offset, internal topics' included; then the
    // inputs start again from their earliest offsets.
    if group.is_some() {
        admin.delete_group(app).await?;
    }
    if !plan.is_empty() {
        broker.group_coordinator().reset_offsets(app, plan).await?;
    }
    let names: Vec<&str> = internal.iter().map(String::as_str).collect();
    for (topic, result) in admin.delete_topics(&names).await {
        result.map_err(|e| {
            CliError::Broker(BrokerError::IllegalState(format!(
                "cannot delete internal topic `{topic}`: {e}"
            )))
        })?;
    }
    for path in &local {
        let removed =
            if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
        removed.map_err(|e| CliError::io("delete", path, e))?;
    }
    out.line(format_args!(
        "Reset application {app}: it reprocesses its input from the start when it next runs."
    ))
}

/// What a reset deletes in a state directory: everything but the instance's id.
fn local_state(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CliError::io("read", dir, e)),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CliError::io("read", dir, e))?;
        if entry.file_name() != PROCESS_ID_FILE {
            paths.push(entry.path());
        }
    }
    paths.sort();
    Ok(paths)
}

/// The source topics of each sub-topology, read from a topology description
/// (`Topology::describe`).
fn parse_sources(description: &str) -> BTreeMap<String, u32> {
    let mut sources = BTreeMap::new();
    let mut current = None;
    for line in description.lines().map(str::trim) {
        if let Some(id) = line.strip_prefix("Sub-topology: ") {
            current = id.trim().parse().ok();
        } else if let (Some(sub), Some(rest)) = (current, line.strip_prefix("Source: ")) {
            let topics = rest.split_once("(topics: [").and_then(|(_, t)| t.strip_suffix("])"));
            for topic in topics.into_iter().flat_map(|t| t.split(", ")) {
                sources.insert(topic.to_string(), sub);
            }
        }
    }
    sources
}

fn describe(broker: &Broker, args: DescribeArgs, out: &mut Out) -> Result<()> {
    let admin = Admin::new(broker);
    let app = args.application_id.as_str();
    let group = group(&admin, app)?;
    let internal = internal_topics(&admin, app);
    if group.is_none() && internal.is_empty() {
        return Err(no_application(app));
    }
    let topology = match &args.state_dir {
        Some(dir) => {
            let path = dir.join(TOPOLOGY_FILE);
            match std::fs::read_to_string(&path) {
                Ok(text) => Some(text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(CliError::io("read", path, e)),
            }
        }
        None => None,
    };

    match &group {
        Some(g) => out.line(format_args!(
            "Application: {app}\tGroup state: {}\tGeneration: {}\tMembers: {}",
            g.state.name(),
            g.generation_id,
            g.members.len()
        ))?,
        None => out.line(format_args!("Application: {app}\tGroup: none (no offsets committed)"))?,
    }
    match &topology {
        Some(text) => {
            out.line("")?;
            out.line(text.trim_end())?;
        }
        None => out.line(
            "Topology: unknown (give --state-dir; the application writes topology.txt there when it starts)",
        )?,
    }

    // Tasks: a sub-topology and a partition of its source topics, with the group's lag.
    let sources: BTreeMap<String, u32> = topology
        .as_deref()
        .map(parse_sources)
        .unwrap_or_default()
        .into_iter()
        .map(|(topic, sub)| {
            let internal_name = format!("{app}-{topic}");
            let real = if internal.contains(&internal_name) { internal_name } else { topic };
            (real, sub)
        })
        .collect();
    let lags = if group.is_some() { admin.group_lag(app, None)? } else { Vec::new() };
    out.line("")?;
    let mut rows = vec![row!["TASK", "TOPIC", "PARTITION", "COMMITTED", "LOG-END-OFFSET", "LAG"]];
    for l in &lags {
        let task = sources
            .get(&*l.partition.topic)
            .map_or_else(|| "-".to_string(), |sub| format!("{sub}_{}", l.partition.partition));
        let committed = l.committed.map_or_else(|| "-".to_string(), |c| c.to_string());
        rows.push(row![
            task,
            l.partition.topic,
            l.partition.partition,
            committed,
            l.log_end_offset,
            l.lag
        ]);
    }
    out.table(&rows)?;
    out.line(format_args!("Total lag: {}", lags.iter().map(|l| l.lag).sum::<i64>()))?;

    // Stores: their changelogs in the log, and their local copies.
    out.line("")?;
    let mut rows = vec![row!["STORE", "CHANGELOG", "PARTITIONS", "RECORDS"]];
    for topic in internal.iter().filter(|t| t.ends_with("-changelog")) {
        let store = topic
            .strip_prefix(&format!("{app}-"))
            .and_then(|s| s.strip_suffix("-changelog"))
            .unwrap_or(topic);
        let partitions = broker.partition_count(topic)?;
        let mut records = 0;
        for p in 0..partitions {
            let tp = TopicPartition::new(topic.as_str(), p);
            let end = broker.list_offset(&tp, OffsetSpec::Latest)?.offset;
            let start = broker.list_offset(&tp, OffsetSpec::Earliest)?.offset;
            records += end - start;
        }
        rows.push(row![store, topic, partitions, records]);
    }
    out.table(&rows)?;
    if let Some(dir) = &args.state_dir {
        let tasks = local_tasks(dir)?;
        out.line("")?;
        if tasks.is_empty() {
            out.line(format_args!("Local tasks in {}: none", dir.display()))?;
        } else {
            let mut rows = vec![row!["LOCAL-TASK", "STORES", "BYTES"]];
            for (task, stores, bytes) in tasks {
                rows.push(row![task, stores.join(","), bytes]);
            }
            out.table(&rows)?;
        }
    }
    Ok(())
}

/// The task directories (`<sub-topology>_<partition>`) in a state directory, with their
/// stores and size on disk.
fn local_tasks(dir: &Path) -> Result<Vec<(String, Vec<String>, u64)>> {
    let mut tasks = Vec::new();
    for path in local_state(dir)? {
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        let is_task = name
            .split_once('_')
            .is_some_and(|(s, p)| s.parse::<u32>().is_ok() && p.parse::<u32>().is_ok());
        if !is_task || !path.is_dir() {
            continue;
        }
        let mut stores = Vec::new();
        for entry in std::fs::read_dir(&path).map_err(|e| CliError::io("read", &path, e))? {
            let entry = entry.map_err(|e| CliError::io("read", &path, e))?;
            if entry.path().is_dir() {
                stores.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        stores.sort();
        tasks.push((name, stores, disk_usage(&path)?));
    }
    Ok(tasks)
}

fn disk_usage(path: &Path) -> Result<u64> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| CliError::io("read", path, e))?;
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    let mut total = 0;
    for entry in std::fs::read_dir(path).map_err(|e| CliError::io("read", path, e))? {
        let entry = entry.map_err(|e| CliError::io("read", path, e))?;
        total += disk_usage(&entry.path())?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_topics_are_the_applications_repartition_and_changelog_topics() {
        assert!(is_internal("wc", "wc-counts-changelog"));
        assert!(is_internal("wc", "wc-KSTREAM-AGGREGATE-0000000002-repartition"));
        assert!(!is_internal("wc", "wc-output"));
        assert!(!is_internal("wc", "wcx-counts-changelog"));
        assert!(!is_internal("wc", "other-counts-changelog"));
    }

    #[test]
    fn sources_are_read_per_sub_topology() {
        let description = "Topologies:\n   Sub-topology: 0\n    Source: s (topics: [lines])\n      --> m\n   Sub-topology: 1\n    Source: r (topics: [a-repartition, b])\n";
        let sources = parse_sources(description);
        assert_eq!(sources["lines"], 0);
        assert_eq!(sources["a-repartition"], 1);
        assert_eq!(sources["b"], 1);
    }
}
