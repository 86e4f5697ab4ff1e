//! `fjord`: the command line of Fjord's embedded Kafka-compatible log.
//!
//! There is no server: every command opens the data directory with the embedded broker
//! (`fjord_broker::Broker::open`), does its work with the broker's admin, producer and consumer
//! clients, and shuts the broker down, which flushes the log. The data directory is locked while
//! a command runs, so a command fails clearly instead of racing a running application.
//!
//! Each command group lives in its own module with its clap arguments and a `run` function;
//! adding a command group is a new module, one variant in [`Command`] and one
//! arm in [`run`].

mod app;
mod config;
mod consume;
mod demo;
mod error;
mod groups;
mod inspect;
mod output;
mod produce;
mod progress;
mod topics;
mod transactions;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Settings;
use crate::error::{CliError, Result};

/// Fjord's command line: topics, producing, consuming, consumer groups, transactions, streams
/// applications and log inspection on an embedded data directory.
#[derive(Debug, Parser)]
#[command(name = "fjord", version, about, propagate_version = true)]
struct Cli {
    /// The data directory [default: ./fjord-data, or `data_dir` of the config file].
    #[arg(long, global = true, env = "FJORD_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A TOML file with `data_dir`, `[broker]` settings and `[topic_defaults]`. Give it before
    /// the command (`fjord --config fjord.toml topics list`): after `topics create|alter`,
    /// `--config` sets a topic config, as in Kafka's tools.
    #[arg(long, env = "FJORD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topics(topics::TopicsCommand),
    /// Produce lines from stdin or a file as records.
    Produce(produce::ProduceArgs),
    /// Consume records and print them.
    Consume(consume::ConsumeArgs),
    /// Consumer groups: list, describe, lag, reset offsets, delete.
    #[command(subcommand)]
    Groups(groups::GroupsCommand),
    /// Transactional ids known to the transaction coordinator.
    #[command(subcommand)]
    Transactions(transactions::TransactionsCommand),
    /// The quickstart's job: an exactly-once streams application on generated orders, with
    /// live progress and a checked summary (in a temporary directory unless --data-dir).
    Demo(demo::DemoArgs),
    /// Streams applications: reset one to reprocess its input, describe one.
    #[command(subcommand)]
    App(app::AppCommand),
    /// Look at the files of the log directly, without opening the broker.
    #[command(subcommand)]
    Log(inspect::LogCommand),
}

fn run(cli: Cli) -> Result<()> {
    // `log inspect` reads files only; it needs no broker and no lock, so it works on a copy of
    // a partition directory, or next to a running application.
    if let Command::Log(command) = &cli.command {
        return inspect::run(command);
    }
    if let Command::Demo(args) = cli.command {
        return demo::run(cli.data_dir.as_deref(), args);
    }
    let settings = Settings::resolve(cli.data_dir, cli.config.as_deref())?;
    match cli.command {
        Command::Topics(command) => topics::run(&settings, command),
        Command::Produce(args) => produce::run(&settings, args),
        Command::Consume(args) => consume::run(&settings, args),
        Command::Groups(command) => groups::run(&settings, command),
        Command::Transactions(command) => transactions::run(&settings, command),
        Command::App(command) => app::run(&settings, command),
        Command::Log(_) | Command::Demo(_) => Ok(()),
    }
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`fjord consume t | head`): not an error.
        Err(CliError::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Warnings of the log (a partition repaired on open, say) go to stderr; `FJORD_LOG` takes
/// a tracing filter (`FJORD_LOG=debug`) for more.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FJORD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
