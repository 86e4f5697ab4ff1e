//! Where the data directory is and how the embedded broker is set up, from the global flags
//! and the optional TOML file of `--config`.
//!
//! Every command opens the data directory itself: the broker is embedded, so there is no server
//! to connect to. Precedence is the usual one for command-line tools: `--data-dir` (or
//! `FJORD_DATA_DIR`) over the file's `data_dir` over `./fjord-data`.
//!
//! ```toml
//! data_dir = "/var/lib/fjord"
//!
//! [broker]
//! auto_create_topics = true     # auto.create.topics.enable
//! default_partitions = 3        # num.partitions
//!
//! [topic_defaults]              # defaults for every topic, Kafka's names
//! "retention.ms" = "86400000"
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};

use fjord_broker::{Broker, BrokerConfig};
use fjord_log::config::TopicConfig;
use serde::Deserialize;

use crate::error::{CliError, Result};

/// The data directory when neither a flag, the environment nor the config file names one.
pub const DEFAULT_DATA_DIR: &str = "./fjord-data";

/// The `--config` file.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The data directory (`log.dirs`).
    pub data_dir: Option<PathBuf>,
    /// Broker settings.
    #[serde(default)]
    pub broker: BrokerSection,
    /// Defaults of topic configs, with Kafka's names; a topic's own overrides win.
    #[serde(default)]
    pub topic_defaults: BTreeMap<String, TomlScalar>,
}

/// The `[broker]` table.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BrokerSection {
    /// `auto.create.topics.enable`: create a topic on first produce to it.
    pub auto_create_topics: Option<bool>,
    /// `num.partitions`: partitions of a topic created without `--partitions`.
    pub default_partitions: Option<u32>,
}

/// A topic default written as a TOML string, integer, float or boolean: Kafka's configs are
/// strings, but `"retention.ms" = 86400000` should work as well as the quoted form.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum TomlScalar {
    /// A string.
    String(String),
    /// An integer.
    Integer(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

impl TomlScalar {
    fn render(&self) -> String {
        match self {
            TomlScalar::String(s) => s.clone(),
            TomlScalar::Integer(i) => i.to_string(),
            TomlScalar::Float(f) => f.to_string(),
            TomlScalar::Bool(b) => b.to_string(),
        }
    }
}

impl FileConfig {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| CliError::io("read", path, e))?;
        Self::parse(&text)
            .map_err(|reason| CliError::ConfigFile { path: path.to_path_buf(), reason })
    }

    fn parse(text: &str) -> std::result::Result<FileConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }
}

/// The resolved settings of one invocation.
#[derive(Debug)]
pub struct Settings {
    /// The broker's configuration.
    pub broker: BrokerConfig,
}

impl Settings {
    /// Resolves the flags and the optional config file.
    pub fn resolve(data_dir: Option<PathBuf>, config_file: Option<&Path>) -> Result<Settings> {
        let file = match config_file {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let dir = data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let mut broker = BrokerConfig::new(dir);
        if let Some(auto) = file.broker.auto_create_topics {
            broker.auto_create_topics_enable = auto;
        }
        if let Some(n) = file.broker.default_partitions {
            if n == 0 {
                return Err(CliError::arg(
                    "broker.default_partitions",
                    "0",
                    "use at least 1 partition",
                ));
            }
            broker.num_partitions = n;
        }
        if !file.topic_defaults.is_empty() {
            let overrides: BTreeMap<String, String> =
                file.topic_defaults.iter().map(|(k, v)| (k.clone(), v.render())).collect();
            broker.log.topic_defaults =
                TopicConfig::from_overrides(&broker.log.topic_defaults, &overrides)?;
        }
        Ok(Settings { broker })
    }
}

/// Runs `f` on the broker of the data directory, inside a fresh tokio runtime, and shuts the
/// broker down afterwards (flushing every partition) whether `f` succeeded or not.
pub fn with_broker<T, F, Fut>(settings: &Settings, f: F) -> Result<T>
where
    F: FnOnce(Broker) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    runtime.block_on(async {
        let broker = Broker::open(settings.broker.clone()).await?;
        let result = f(broker.clone()).await;
        let closed = broker.shutdown().await;
        let value = result?;
        closed?;
        Ok(value)
    })
}

/// Parses `key=value` (the value may contain `=`; the key may not be empty).
pub fn parse_key_value(arg: &'static str, s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(CliError::arg(arg, s, "expected key=value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_file() {
        let file = FileConfig::parse(
            r#"
            data_dir = "/tmp/x"
            [broker]
            auto_create_topics = true
            default_partitions = 3
            [topic_defaults]
            "retention.ms" = 1000
            "cleanup.policy" = "compact"
            "#,
        )
        .unwrap();
        assert_eq!(file.data_dir, Some(PathBuf::from("/tmp/x")));
        assert_eq!(file.broker.auto_create_topics, Some(true));
        assert_eq!(file.broker.default_partitions, Some(3));
        assert_eq!(file.topic_defaults["retention.ms"], TomlScalar::Integer(1000));
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = FileConfig::parse("[broker]\nauto_create = true\n").unwrap_err();
        assert!(err.contains("auto_create"), "{err}");
    }

    #[test]
    fn flag_wins_over_file_and_default() {
        let s = Settings::resolve(Some("/flag".into()), None).unwrap();
        assert_eq!(s.broker.data_dir, Path::new("/flag"));
        let s = Settings::resolve(None, None).unwrap();
        assert_eq!(s.broker.data_dir, Path::new(DEFAULT_DATA_DIR));
    }

    #[test]
    fn bad_topic_default_names_key_and_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fjord.toml");
        std::fs::write(&path, "[topic_defaults]\n\"retention.ms\" = \"abc\"\n").unwrap();
        let msg = Settings::resolve(None, Some(&path)).unwrap_err().to_string();
        assert!(msg.contains("retention.ms") && msg.contains("abc"), "{msg}");
    }

    #[test]
    fn key_value_splits_at_the_first_equals() {
        assert_eq!(
            parse_key_value("--header", "a=b=c").unwrap(),
            ("a".to_string(), "b=c".to_string())
        );
        assert!(parse_key_value("--header", "=x").is_err());
        assert!(parse_key_value("--header", "novalue").is_err());
    }
}
