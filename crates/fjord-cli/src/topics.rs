//! `fjord topics`: what `kafka-topics` and `kafka-configs --entity-type topics` do, through the
//! broker's [`Admin`] so that the checks (names, partition counts, config names and values with
//! their bounds) are the broker's own, and the messages with them.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use fjord_broker::{Admin, AlterConfigOp, Broker, NewTopic, OffsetSpec, TopicPartition};

use crate::config::{Settings, parse_key_value, with_broker};
use crate::error::{CliError, Result};
use crate::output::Out;
use crate::row;

/// `fjord topics ...`
#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// List topic names.
    List {
        /// Include internal topics (`__consumer_offsets`, `__transaction_state`).
        #[arg(long)]
        internal: bool,
    },
    /// Describe topics: id, partitions with their offsets, and configs.
    Describe {
        /// Topics to describe (all non-internal topics when none are named).
        topics: Vec<String>,
        /// List every config with its effective value, not only the topic's overrides.
        #[arg(long)]
        all_configs: bool,
    },
    /// Delete topics and their data.
    Delete {
        /// Topics to delete.
        #[arg(required = true)]
        topics: Vec<String>,
        /// Succeed when a topic does not exist.
        #[arg(long)]
        if_exists: bool,
    },
    /// Add partitions to a topic, or change its configs.
    Alter(AlterArgs),
}

/// `fjord topics create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The topic name.
    topic: String,
    /// Number of partitions [default: the broker's `default_partitions`, 1].
    #[arg(long, short)]
    partitions: Option<u32>,
    /// Replication factor: 1 (a single node has one replica).
    #[arg(long, default_value_t = 1)]
    replication_factor: i16,
    /// A topic config with Kafka's name, e.g. `--config retention.ms=86400000`; repeatable.
    #[arg(long = "config", short = 'c', value_name = "NAME=VALUE")]
    configs: Vec<String>,
    /// Succeed when the topic already exists.
    #[arg(long)]
    if_not_exists: bool,
}

/// `fjord topics alter`.
#[derive(Debug, Args)]
pub struct AlterArgs {
    /// The topic name.
    topic: String,
    /// The new (larger) partition count.
    #[arg(long, short)]
    partitions: Option<u32>,
    /// Set a config, e.g. `--config cleanup.policy=compact`; repeatable.
    #[arg(long = "config", short = 'c', value_name = "NAME=VALUE")]
    configs: Vec<String>,
    /// Remove a config override, going back to the default; repeatable.
    #[arg(long = "delete-config", value_name = "NAME")]
    delete_configs: Vec<String>,
}

/// Runs a `topics` command.
pub fn run(settings: &Settings, command: TopicsCommand) -> Result<()> {
    with_broker(settings, |broker| async move {
        let admin = Admin::new(&broker);
        let mut out = Out::stdout();
        match command {
            TopicsCommand::Create(args) => create(&admin, args, &mut out).await?,
            TopicsCommand::List { internal } => {
                for name in admin.list_topics(internal) {
                    out.line(name)?;
                }
            }
            TopicsCommand::Describe { topics, all_configs } => {
                let names = if topics.is_empty() { admin.list_topics(false) } else { topics };
                for name in names {
                    describe(&broker, &admin, &name, all_configs, &mut out)?;
                }
            }
            TopicsCommand::Delete { topics, if_exists } => {
                let names: Vec<&str> = topics.iter().map(String::as_str).collect();
                for (name, result) in admin.delete_topics(&names).await {
                    match result.map_err(CliError::from) {
                        Ok(()) => out.line(format_args!("Deleted topic {name}."))?,
                        Err(CliError::UnknownTopic(_)) if if_exists => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            TopicsCommand::Alter(args) => alter(&admin, args, &mut out).await?,
        }
        out.flush()
    })
}

fn parse_configs(configs: &[String]) -> Result<BTreeMap<String, String>> {
    configs.iter().map(|c| parse_key_value("--config", c)).collect()
}

async fn create(admin: &Admin, args: CreateArgs, out: &mut Out) -> Result<()> {
    let configs = parse_configs(&args.configs)?;
    let partitions = match args.partitions {
        Some(0) => return Err(CliError::arg("--partitions", "0", "use at least 1 partition")),
        Some(n) => i32::try_from(n)
            .map_err(|_| CliError::arg("--partitions", n.to_string(), "at most 2147483647"))?,
        None => -1,
    };
    let topic = NewTopic {
        name: args.topic.clone(),
        num_partitions: partitions,
        replication_factor: args.replication_factor,
        configs,
    };
    match admin.create_topic(topic).await {
        Ok(()) => out.line(format_args!("Created topic {}.", args.topic)),
        Err(fjord_broker::BrokerError::Log(fjord_log::LogError::TopicExists(_)))
            if args.if_not_exists =>
        {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

async fn alter(admin: &Admin, args: AlterArgs, out: &mut Out) -> Result<()> {
    if args.partitions.is_none() && args.configs.is_empty() && args.delete_configs.is_empty() {
        return Err(CliError::arg(
            "fjord topics alter",
            &args.topic,
            "give --partitions, --config or --delete-config",
        ));
    }
    let mut ops: Vec<AlterConfigOp> = parse_configs(&args.configs)?
        .into_iter()
        .map(|(name, value)| AlterConfigOp::Set(name, value))
        .collect();
    ops.extend(args.delete_configs.into_iter().map(AlterConfigOp::Delete));
    // Configs first: they are validated as a whole, so a bad value changes nothing at all.
    if !ops.is_empty() {
        admin.incremental_alter_configs(&args.topic, ops).await?;
        out.line(format_args!("Updated configs of topic {}.", args.topic))?;
    }
    if let Some(total) = args.partitions {
        admin.create_partitions(&args.topic, total).await?;
        out.line(format_args!("Topic {} now has {total} partitions.", args.topic))?;
    }
    Ok(())
}

fn describe(
    broker: &Broker,
    admin: &Admin,
    name: &str,
    all_configs: bool,
    out: &mut Out,
) -> Result<()> {
    let Some(description) = admin.describe_topics(&[name])?.pop() else {
        return Err(CliError::UnknownTopic(name.to_string()));
    };
    let configs = admin.describe_configs(name)?;
    let overrides: Vec<String> = configs
        .iter()
        .filter(|c| c.overridden)
        .map(|c| format!("{}={}", c.entry.name, c.entry.value))
        .collect();
    out.line(format_args!(
        "Topic: {}\tTopicId: {}\tPartitionCount: {}\tReplicationFactor: 1\tConfigs: {}",
        description.name,
        description.topic_id,
        description.partitions.len(),
        overrides.join(",")
    ))?;
    let mut rows = vec![row!["PARTITION", "LEADER", "REPLICAS", "ISR", "LOG-START", "LOG-END"]];
    for p in &description.partitions {
        let tp = TopicPartition::new(name, p.partition);
        let start = broker.list_offset(&tp, OffsetSpec::Earliest)?.offset;
        let end = broker.list_offset(&tp, OffsetSpec::Latest)?.offset;
        rows.push(row![p.partition, p.leader, join(&p.replicas), join(&p.isr), start, end]);
    }
    out.table(&rows)?;
    if all_configs {
        let mut rows = vec![row!["CONFIG", "VALUE", "SOURCE"]];
        for c in &configs {
            let source = if c.overridden { "topic" } else { "default" };
            rows.push(row![c.entry.name, c.entry.value, source]);
        }
        out.table(&rows)?;
    }
    Ok(())
}

fn join(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}
