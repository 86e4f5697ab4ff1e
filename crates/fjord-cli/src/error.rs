//! The CLI's errors: one typed enum, so every failure reaches `main` as a message that says
//! what went wrong and what to do, and leaves with a non-zero exit code instead of a panic.
//!
//! Broker and log errors already name the topic, partition, file or setting involved; the few
//! that a command-line user meets most (an unknown topic, a locked data directory) get a hint
//! phrased as a `fjord` command.

use std::path::PathBuf;

use fjord_broker::BrokerError;
use fjord_log::LogError;
use fjord_log::config::ConfigError;

/// Everything a `fjord` command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The topic does not exist (and auto-creation is off).
    #[error(
        "unknown topic `{0}`: create it with `fjord topics create {0}` (or run `fjord topics list` to check the name)"
    )]
    UnknownTopic(String),
    /// Another process holds the data directory's lock.
    #[error(
        "data directory {dir} is locked by another process: a running Fjord application or another `fjord` command has it open (lock file {dir}/.lock); stop it, or point --data-dir at another directory"
    )]
    DirectoryLocked {
        /// The data directory.
        dir: PathBuf,
    },
    /// A topic config name or value is not accepted.
    #[error("{0}")]
    TopicConfig(#[from] ConfigError),
    /// Any other broker or log error; their messages name what is involved.
    #[error("{0}")]
    Broker(BrokerError),
    /// A file could not be read or written.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done (`read`, `open`, ...).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The `--config` file is not valid TOML or has unknown or ill-typed keys.
    #[error("config file {path}: {reason}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said.
        reason: String,
    },
    /// An argument has a value the command cannot use.
    #[error("invalid value `{value}` for {arg}: {reason}")]
    InvalidArgument {
        /// The argument, e.g. `--config`.
        arg: &'static str,
        /// The value given.
        value: String,
        /// What is accepted.
        reason: String,
    },
    /// `produce --json` got a line that is not JSON.
    #[error(
        "line {line} is not valid JSON ({reason}); the {produced} records before it were produced, nothing after"
    )]
    InvalidJson {
        /// The 1-based line number.
        line: u64,
        /// What the JSON parser said.
        reason: String,
        /// Lines produced before it.
        produced: u64,
    },
    /// `log inspect` found batches that fail their checks.
    #[error("{count} corrupt batch(es) or index file(s) found: see the report above")]
    Corruption {
        /// How many problems were found.
        count: usize,
    },
    /// The async runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

impl From<BrokerError> for CliError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::Log(log) => log.into(),
            BrokerError::Delivery(inner) => match inner.as_ref() {
                BrokerError::Log(LogError::UnknownTopic(t)) => CliError::UnknownTopic(t.clone()),
                _ => CliError::Broker(BrokerError::Delivery(inner)),
            },
            other => CliError::Broker(other),
        }
    }
}

impl From<LogError> for CliError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::UnknownTopic(topic) => CliError::UnknownTopic(topic),
            LogError::DirectoryLocked { dir } => CliError::DirectoryLocked { dir },
            LogError::Config(config) => CliError::TopicConfig(config),
            other => CliError::Broker(BrokerError::Log(other)),
        }
    }
}

impl CliError {
    /// An I/O error on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CliError::Io { op, path: path.into(), source }
    }

    /// A bad argument value.
    pub fn arg(arg: &'static str, value: impl Into<String>, reason: impl Into<String>) -> Self {
        CliError::InvalidArgument { arg, value: value.into(), reason: reason.into() }
    }
}

/// Shorthand for the CLI's results.
pub type Result<T, E = CliError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_topic_suggests_the_create_command() {
        let e = CliError::from(BrokerError::Log(LogError::UnknownTopic("orders".into())));
        let msg = e.to_string();
        assert!(msg.contains("`orders`"), "{msg}");
        assert!(msg.contains("fjord topics create orders"), "{msg}");
    }

    #[test]
    fn locked_directory_names_the_directory_and_the_likely_holder() {
        let e = CliError::from(LogError::DirectoryLocked { dir: "/data".into() });
        let msg = e.to_string();
        assert!(msg.contains("/data"), "{msg}");
        assert!(msg.contains("running Fjord application"), "{msg}");
    }
}
