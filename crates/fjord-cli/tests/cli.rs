//! End-to-end tests of the `fjord` binary on temporary data directories: each test runs the
//! built binary as a user would and checks its output and exit code. Commands run one after
//! another (each opens and closes the data directory), so no test needs to wait for anything.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

struct Fjord {
    dir: tempfile::TempDir,
}

struct Run {
    stdout: String,
    stderr: String,
    ok: bool,
}

impl Fjord {
    fn new() -> Fjord {
        Fjord { dir: tempfile::tempdir().unwrap() }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, "")
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Run {
        let data_dir = self.data_dir();
        run_fjord(&["--data-dir".as_ref(), data_dir.as_os_str()], args, stdin)
    }

    /// Runs a command that must succeed and returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        self.ok_with_stdin(args, "")
    }

    fn ok_with_stdin(&self, args: &[&str], stdin: &str) -> String {
        let run = self.run_with_stdin(args, stdin);
        assert!(run.ok, "fjord {args:?} failed:\n{}", run.stderr);
        run.stdout
    }

    /// Runs a command that must fail and returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        self.fails_with_stdin(args, "")
    }

    fn fails_with_stdin(&self, args: &[&str], stdin: &str) -> String {
        let run = self.run_with_stdin(args, stdin);
        assert!(!run.ok, "fjord {args:?} succeeded:\n{}", run.stdout);
        assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
        run.stderr
    }
}

/// Runs the binary with `global` flags before `args`, feeding it `stdin`.
fn run_fjord(global: &[&std::ffi::OsStr], args: &[&str], stdin: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fjord"))
        .args(global)
        .args(args)
        .env_remove("FJORD_DATA_DIR")
        .env_remove("FJORD_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let output: Output = child.wait_with_output().unwrap();
    let run = Run {
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
        ok: output.status.success(),
    };
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    run
}

/// The table rows of `groups lag`/`describe` as whitespace-split cells.
fn rows(stdout: &str) -> Vec<Vec<String>> {
    stdout.lines().map(|l| l.split_whitespace().map(str::to_string).collect()).collect()
}

#[test]
fn topics_create_list_describe_alter_delete() {
    let f = Fjord::new();
    assert_eq!(
        f.ok(&["topics", "create", "orders", "--partitions", "2", "--config", "retention.ms=1000"]),
        "Created topic orders.\n"
    );
    f.ok(&["topics", "create", "payments"]);
    assert_eq!(f.ok(&["topics", "list"]), "orders\npayments\n");
    assert!(f.ok(&["topics", "list", "--internal"]).contains("__consumer_offsets"));

    let described = f.ok(&["topics", "describe", "orders"]);
    assert!(described.starts_with("Topic: orders\tTopicId: "), "{described}");
    assert!(described.contains("PartitionCount: 2\t"), "{described}");
    assert!(described.contains("Configs: retention.ms=1000\n"), "{described}");
    assert_eq!(described.lines().count(), 4, "{described}");

    f.ok(&["topics", "alter", "orders", "--partitions", "3", "--config", "cleanup.policy=compact"]);
    f.ok(&["topics", "alter", "orders", "--delete-config", "retention.ms"]);
    let described = f.ok(&["topics", "describe", "orders", "--all-configs"]);
    assert!(described.contains("PartitionCount: 3\t"), "{described}");
    assert!(described.contains("Configs: cleanup.policy=compact\n"), "{described}");
    assert!(rows(&described).contains(&vec![
        "retention.ms".to_string(),
        "604800000".to_string(),
        "default".to_string()
    ]));

    assert_eq!(f.ok(&["topics", "delete", "orders"]), "Deleted topic orders.\n");
    assert_eq!(f.ok(&["topics", "list"]), "payments\n");
    f.ok(&["topics", "delete", "orders", "--if-exists"]);
    f.ok(&["topics", "create", "payments", "--if-not-exists"]);
    assert!(f.fails(&["topics", "create", "payments"]).contains("`payments` already exists"));
}

#[test]
fn produce_from_stdin_and_file_then_consume_text_and_json() {
    let f = Fjord::new();
    f.ok(&["topics", "create", "orders"]);
    let out = f.ok_with_stdin(
        &["produce", "orders", "--key-separator", ":", "--header", "src=cli", "-H", "v=1"],
        "alice:{\"n\":1}\nbob:{\"n\":2}\n",
    );
    assert_eq!(out, "Produced 2 records to orders (partition 0: 2 (offsets 0-1)).\n");

    let file = f.dir.path().join("more.txt");
    std::fs::write(&file, "carol|three\r\ndave|four=4\n").unwrap();
    let out = f.ok(&[
        "produce",
        "orders",
        "--file",
        file.to_str().unwrap(),
        "--key-separator",
        "|",
        "--partition",
        "0",
    ]);
    assert_eq!(out, "Produced 2 records to orders (partition 0: 2 (offsets 2-3)).\n");
    f.ok_with_stdin(&["produce", "orders"], "no key\n");

    assert_eq!(
        f.ok(&["consume", "orders", "--from-beginning"]),
        "{\"n\":1}\n{\"n\":2}\nthree\nfour=4\nno key\n"
    );
    assert_eq!(
        f.ok(&["consume", "orders", "--from-beginning", "--print-key", "--max-messages", "3"]),
        "alice\t{\"n\":1}\nbob\t{\"n\":2}\ncarol\tthree\n"
    );
    // Without --from-beginning the consumer starts at the end and stops there.
    assert_eq!(f.ok(&["consume", "orders"]), "");

    let json = f.ok(&["consume", "orders", "--from-beginning", "--format", "json"]);
    let records: Vec<Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 5);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["topic"], "orders");
        assert_eq!(r["partition"], 0);
        assert_eq!(r["offset"], i as u64);
        assert!(r["timestamp"].as_i64().unwrap() > 0);
    }
    assert_eq!(records[0]["key"], "alice");
    assert_eq!(records[0]["value"], "{\"n\":1}");
    assert_eq!(
        records[0]["headers"],
        serde_json::json!([{"key": "src", "value": "cli"}, {"key": "v", "value": "1"}])
    );
    assert_eq!(records[2]["key"], "carol");
    assert_eq!(records[2]["headers"], serde_json::json!([]));
    assert_eq!(records[4]["key"], Value::Null);
    assert_eq!(records[4]["value"], "no key");
    // The exact line, fields in their documented order.
    let ts = records[2]["timestamp"].as_i64().unwrap();
    assert_eq!(
        json.lines().nth(2).unwrap(),
        format!(
            "{{\"topic\":\"orders\",\"partition\":0,\"offset\":2,\"timestamp\":{ts},\"key\":\"carol\",\"value\":\"three\",\"headers\":[]}}"
        )
    );
}

#[test]
fn produce_json_validates_every_line() {
    let f = Fjord::new();
    f.ok(&["topics", "create", "events"]);
    let err = f.fails_with_stdin(&["produce", "events", "--json"], "{\"a\":1}\nnot json\n[]\n");
    assert!(err.contains("line 2 is not valid JSON"), "{err}");
    assert!(err.contains("the 1 records before it were produced"), "{err}");
    assert_eq!(f.ok(&["consume", "events", "--from-beginning"]), "{\"a\":1}\n");
    let err = f.fails_with_stdin(&["produce", "events", "--key-separator", ":"], "k:v\nnokey\n");
    assert!(err.contains("line 2 has no separator"), "{err}");
}

#[test]
fn group_offsets_lag_and_reset() {
    let f = Fjord::new();
    f.ok(&["topics", "create", "orders"]);
    f.ok_with_stdin(&["produce", "orders"], "1\n2\n3\n4\n5\n");

    // A group that stops after two records commits exactly those two.
    assert_eq!(
        f.ok(&["consume", "orders", "--group", "billing", "-n", "2", "--from-beginning"]),
        "1\n2\n"
    );
    let lag = f.ok(&["groups", "lag", "billing"]);
    assert_eq!(rows(&lag)[1], ["orders", "0", "2", "5", "3"]);
    assert!(lag.ends_with("Total lag: 3\n"), "{lag}");

    // The next run of the group goes on from the committed offset to the end.
    assert_eq!(f.ok(&["consume", "orders", "--group", "billing"]), "3\n4\n5\n");
    let described = f.ok(&["groups", "describe", "billing"]);
    assert!(described.starts_with("Group: billing\tState: Empty\t"), "{described}");
    assert!(rows(&described).contains(&vec![
        "orders".into(),
        "0".into(),
        "5".into(),
        "5".into(),
        "0".into()
    ]));
    assert!(f.ok(&["groups", "lag", "billing"]).ends_with("Total lag: 0\n"));
    assert!(f.ok(&["groups", "list"]).contains("billing"));

    let dry = f.ok(&["groups", "reset-offsets", "billing", "--to-earliest", "--dry-run"]);
    assert!(dry.contains("Dry run"), "{dry}");
    assert!(f.ok(&["groups", "lag", "billing"]).ends_with("Total lag: 0\n"));

    let reset = f.ok(&["groups", "reset-offsets", "billing", "--to-earliest"]);
    assert_eq!(rows(&reset)[1], ["orders", "0", "0"]);
    assert!(f.ok(&["groups", "lag", "billing"]).ends_with("Total lag: 5\n"));

    f.ok(&["groups", "reset-offsets", "billing", "--topic", "orders", "--to-offset", "3"]);
    assert_eq!(f.ok(&["consume", "orders", "--group", "billing"]), "4\n5\n");
    f.ok(&["groups", "reset-offsets", "billing", "--to-datetime", "1970-01-01T00:00:00Z"]);
    assert!(f.ok(&["groups", "lag", "billing"]).ends_with("Total lag: 5\n"));
    f.ok(&["groups", "reset-offsets", "billing", "--to-latest"]);
    assert!(f.ok(&["groups", "lag", "billing"]).ends_with("Total lag: 0\n"));

    assert_eq!(f.ok(&["groups", "delete", "billing"]), "Deleted group billing.\n");
    assert!(f.fails(&["groups", "describe", "billing"]).contains("`billing`"));
}

#[test]
fn transactions_list_on_an_empty_broker() {
    let f = Fjord::new();
    assert_eq!(
        f.ok(&["transactions", "list"]),
        "TRANSACTIONAL-ID  PRODUCER-ID  EPOCH  STATE  PARTITIONS\n"
    );
    let err = f.fails(&["transactions", "describe", "payments-tx"]);
    assert!(err.contains("`payments-tx`"), "{err}");
}

fn segment(dir: &Path) -> PathBuf {
    dir.join("orders-0").join("00000000000000000000.log")
}

#[test]
fn log_inspect_reports_batches_and_corruption() {
    let f = Fjord::new();
    f.ok(&["topics", "create", "orders"]);
    f.ok_with_stdin(&["produce", "orders", "--key-separator", ":"], "k1:v1\nk2:v2\n");
    f.ok_with_stdin(&["produce", "orders"], "v3\n");

    let partition = f.data_dir().join("orders-0");
    let out = f.ok(&["log", "inspect", partition.to_str().unwrap(), "--records"]);
    let batches: Vec<&str> = out.lines().filter(|l| l.starts_with("baseOffset:")).collect();
    assert_eq!(batches.len(), 2, "{out}");
    assert!(batches[0].starts_with("baseOffset: 0 lastOffset: 1 count: 2 position: 0 "), "{out}");
    assert!(batches[1].starts_with("baseOffset: 2 lastOffset: 2 count: 1 "), "{out}");
    assert!(batches.iter().all(|b| b.ends_with("CRC ok")), "{out}");
    assert!(batches[0].contains("producerId: 0 producerEpoch: 0"), "{out}");
    assert!(batches[0].contains("isTransactional: false isControl: false"), "{out}");
    assert!(batches[0].contains("compression: none"), "{out}");
    assert!(out.contains("| offset: 1 "), "{out}");
    assert!(out.contains("key: k2 value: v2 headers: []"), "{out}");
    assert!(out.contains("2 batches, "), "{out}");
    assert!(out.contains(".timeindex"), "{out}");

    // One file works too.
    let log = segment(&f.data_dir());
    assert!(f.ok(&["log", "inspect", log.to_str().unwrap()]).contains("CRC ok"));

    // Flip a byte inside the first batch's records: its CRC no longer matches.
    let mut bytes = std::fs::read(&log).unwrap();
    bytes[70] ^= 0xff;
    std::fs::write(&log, &bytes).unwrap();
    let run = f.run(&["log", "inspect", partition.to_str().unwrap()]);
    assert!(!run.ok);
    let first = run.stdout.lines().find(|l| l.starts_with("baseOffset: 0")).unwrap();
    assert!(first.contains("CORRUPT: CRC mismatch"), "{}", run.stdout);
    // The scan goes on past the bad batch.
    assert!(run.stdout.lines().any(|l| l.starts_with("baseOffset: 2") && l.ends_with("CRC ok")));
    assert!(run.stderr.contains("1 corrupt"), "{}", run.stderr);

    // A torn tail (a batch cut short) is reported as well.
    std::fs::write(&log, &bytes[..bytes.len() - 5]).unwrap();
    let run = f.run(&["log", "inspect", log.to_str().unwrap()]);
    assert!(!run.ok);
    assert!(run.stdout.contains("CORRUPT at position"), "{}", run.stdout);
    assert!(run.stdout.contains("truncated"), "{}", run.stdout);
}

#[test]
fn errors_name_the_thing_and_exit_non_zero() {
    let f = Fjord::new();
    let err = f.fails_with_stdin(&["produce", "nope"], "x\n");
    assert!(err.contains("unknown topic `nope`"), "{err}");
    assert!(err.contains("fjord topics create nope"), "{err}");
    let err = f.fails(&["consume", "nope"]);
    assert!(err.contains("unknown topic `nope`"), "{err}");

    let err = f.fails(&["topics", "create", "t", "--config", "retention.ms=abc"]);
    assert!(err.contains("`retention.ms`") && err.contains("`abc`"), "{err}");
    assert!(err.contains("at least 0"), "{err}");
    let err = f.fails(&["topics", "create", "t", "--config", "cleanup.policy=bogus"]);
    assert!(err.contains("`cleanup.policy`") && err.contains("`bogus`"), "{err}");
    assert!(err.contains("compact"), "{err}");
    let err = f.fails(&["topics", "create", "t", "--config", "retention.mss=1"]);
    assert!(err.contains("did you mean `retention.ms`"), "{err}");
    assert_eq!(f.ok(&["topics", "list"]), "", "a refused topic must not exist");

    f.ok(&["topics", "create", "t"]);
    let missing = f.dir.path().join("missing.txt");
    let err = f.fails(&["produce", "t", "--file", missing.to_str().unwrap()]);
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
    assert!(err.contains("No such file"), "{err}");
    let err = f.fails(&["log", "inspect", missing.to_str().unwrap()]);
    assert!(err.contains(missing.to_str().unwrap()), "{err}");

    let err = f.fails_with_stdin(&["produce", "t", "--partition", "4"], "x\n");
    assert!(err.contains("no partition 4"), "{err}");
    let err = f.fails(&["groups", "reset-offsets", "g", "--topic", "t", "--to-datetime", "soon"]);
    assert!(err.contains("`soon`") && err.contains("--to-datetime"), "{err}");
}

#[test]
fn a_locked_data_directory_is_reported_clearly() {
    let f = Fjord::new();
    f.ok(&["topics", "list"]);
    let lock = std::fs::OpenOptions::new().write(true).open(f.data_dir().join(".lock")).unwrap();
    lock.try_lock().unwrap();
    let err = f.fails(&["topics", "list"]);
    assert!(err.contains("is locked by another process"), "{err}");
    assert!(err.contains(f.data_dir().to_str().unwrap()), "{err}");
    drop(lock);
    f.ok(&["topics", "list"]);
}

#[test]
fn config_file_sets_data_dir_and_broker_defaults() {
    let f = Fjord::new();
    let data = f.dir.path().join("from-file");
    let config = f.dir.path().join("fjord.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[broker]\nauto_create_topics = true\ndefault_partitions = 3\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let run = |args: &[&str], stdin: &str| {
        run_fjord(&["--config".as_ref(), config.as_os_str()], args, stdin)
    };
    let out = run(&["produce", "auto"], "x\n");
    assert!(out.ok, "{}", out.stderr);
    assert!(data.join("auto-2").is_dir(), "auto-created with 3 partitions in the file's data_dir");
    let out = run(&["topics", "describe", "auto"], "");
    assert!(out.stdout.contains("PartitionCount: 3"), "{}", out.stdout);

    std::fs::write(&config, "[broker]\nauto_create = true\n").unwrap();
    let out = run(&["topics", "list"], "");
    assert!(!out.ok);
    let err = out.stderr;
    assert!(err.contains(config.to_str().unwrap()) && err.contains("auto_create"), "{err}");
}

#[test]
fn demo_runs_to_its_checked_summary() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("demo");
    let run = run_fjord(
        &["--data-dir".as_ref(), data_dir.as_os_str()],
        &["demo", "--orders", "3000", "--rate", "0", "--minutes", "4"],
        "",
    );
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("Every total checked."), "{}", run.stdout);
    // 4 minutes of orders over 20 customers: the first 3 minutes' windows closed.
    assert!(run.stdout.contains("exactly once with the right sum"), "{}", run.stdout);
    assert!(run.stdout.contains("Top customers"), "{}", run.stdout);
    // Given a data directory, the demo keeps it: its topics are there for `fjord consume`.
    let topics = run_fjord(&["--data-dir".as_ref(), data_dir.as_os_str()], &["topics", "list"], "");
    assert!(topics.stdout.contains("demo-revenue"), "{}", topics.stdout);

    let bad = run_fjord(&[], &["demo", "--orders", "0"], "");
    assert!(!bad.ok && bad.stderr.contains("at least one order"), "{}", bad.stderr);
}
