//! `fjord app describe` and `fjord app reset` on the footprint of a real streams application:
//! a word count runs on the data directory in this process, stops, and the binary then
//! describes and resets it; the application run again reprocesses its input from the start.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord_broker::{
    Admin, Broker, BrokerConfig, NewTopic, Producer, ProducerConfig, ProducerRecord,
};
use fjord_streams::{
    Consumed, EmbeddedBackend, Materialized, Serdes, Streams, StreamsBuilder, StreamsConfig,
    StreamsState,
};

/// Runs `fjord --data-dir <data> <args>`: (success, stdout, stderr).
fn fjord(data: &Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_fjord"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("FJORD_DATA_DIR")
        .env_remove("FJORD_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (output.status.success(), String::from_utf8(output.stdout).unwrap(), stderr)
}

/// Runs the word count on the data directory until every word's count reached `expected`,
/// stops it, and closes the broker (releasing the directory). Returns the records the run
/// processed and the changelog records it restored.
async fn run_word_count(
    data: &Path,
    state: &Path,
    expected: i64,
    while_running: impl FnOnce(),
) -> (u64, u64) {
    let broker = Broker::open(BrokerConfig::new(data)).await.unwrap();
    let builder = StreamsBuilder::new();
    builder
        .stream("words", Consumed::with(Serdes::string(), Serdes::string()))
        .group_by_key()
        .count(Materialized::named("counts"));
    let config = StreamsConfig {
        commit_interval: Some(Duration::from_millis(50)),
        state_dir: state.to_path_buf(),
        ..StreamsConfig::new("wc")
    };
    let mut streams =
        Streams::new(builder.build().unwrap(), Arc::new(EmbeddedBackend::new(&broker)), config)
            .unwrap();
    streams.start().await.unwrap();
    streams.wait_for_state(StreamsState::Running, Duration::from_secs(20)).await.unwrap();
    let store = streams.key_value_store("counts", Serdes::string(), Serdes::i64()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = store.all().unwrap();
        if all.len() == 5 && all.iter().all(|(_, n)| *n == expected) {
            break;
        }
        assert!(Instant::now() < deadline, "counts {all:?}, want 5 words at {expected}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while_running();
    let counts = (streams.records_processed(), streams.records_restored());
    streams.close().await.unwrap();
    broker.shutdown().await.unwrap();
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_is_described_and_reset_to_reprocess_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let state = dir.path().join("state");
    {
        let broker = Broker::open(BrokerConfig::new(&data)).await.unwrap();
        Admin::new(&broker).create_topic(NewTopic::new("words", 2)).await.unwrap();
        let producer = Producer::new(&broker, ProducerConfig::default()).unwrap();
        for i in 0..50 {
            let word = format!("w{}", i % 5);
            producer.send(ProducerRecord::new("words", b"x").key(word.as_bytes())).await.unwrap();
        }
        producer.close().await.unwrap();
        broker.shutdown().await.unwrap();
    }
    // While the application runs, it holds the data directory: a reset is refused.
    run_word_count(&data, &state, 10, || {
        let (ok, _, stderr) = fjord(&data, &["app", "reset", "wc"]);
        assert!(!ok && stderr.contains("locked"), "{stderr}");
    })
    .await;

    let (ok, out, err) =
        fjord(&data, &["app", "describe", "wc", "--state-dir", state.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("Sub-topology: 0"), "the topology is shown:\n{out}");
    for task in ["0_0", "0_1"] {
        let row = out.lines().find(|l| l.starts_with(task) && l.contains("words")).unwrap();
        assert!(row.trim_end().ends_with(" 0"), "{task} has no lag: {row}");
    }
    let store = out.lines().find(|l| l.starts_with("counts ")).unwrap();
    assert!(store.contains("wc-counts-changelog"), "{store}");
    assert!(out.contains("LOCAL-TASK"), "{out}");

    // A dry run lists what a reset does and changes nothing.
    let state_arg = state.to_str().unwrap();
    let (ok, out, err) =
        fjord(&data, &["app", "reset", "wc", "--state-dir", state_arg, "--dry-run"]);
    assert!(ok, "{err}");
    assert!(out.contains("wc-counts-changelog") && out.contains("Dry run"), "{out}");
    let (_, topics, _) = fjord(&data, &["topics", "list"]);
    assert!(topics.contains("wc-counts-changelog"));

    let (ok, out, err) = fjord(&data, &["app", "reset", "wc", "--state-dir", state_arg]);
    assert!(ok, "{err}");
    let inputs: Vec<&str> = out.lines().filter(|l| l.starts_with("words ")).collect();
    assert_eq!(inputs.len(), 2, "both input partitions go back to the start: {out}");
    assert!(inputs.iter().all(|l| l.trim_end().ends_with(" 0")), "{out}");
    let (_, topics, _) = fjord(&data, &["topics", "list"]);
    assert!(!topics.contains("wc-counts-changelog"), "{topics}");
    let left: Vec<_> = std::fs::read_dir(&state).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec!["process-id"], "only the instance id is kept");

    // Run again: all 50 records are processed again, into empty stores (10 each, not 20),
    // with nothing to restore.
    let (processed, restored) = run_word_count(&data, &state, 10, || {}).await;
    assert_eq!((processed, restored), (50, 0));

    // Bad input gets a clear error.
    let (ok, _, stderr) = fjord(&data, &["app", "reset", "nope"]);
    assert!(!ok && stderr.contains("no application `nope`"), "{stderr}");
    let (ok, _, stderr) = fjord(&data, &["app", "describe", "nope"]);
    assert!(!ok && stderr.contains("fjord groups list"), "{stderr}");
}
