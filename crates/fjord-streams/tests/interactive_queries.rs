//! Interactive queries across instances, over real TCP: two instances of one application on
//! the embedded broker, each serving its stores over HTTP, each naming the other as the owner
//! of the keys it does not hold.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fjord_broker::{
    Admin, Broker, BrokerConfig, NewTopic, Producer, ProducerConfig, ProducerRecord,
};
use fjord_streams::{
    Consumed, EmbeddedBackend, HostInfo, Materialized, QueryServer, QueryServerHandle, Serdes,
    Streams, StreamsBuilder, StreamsConfig, StreamsState, TimeWindows,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn broker(dir: &std::path::Path) -> Broker {
    let mut config = BrokerConfig::new(dir);
    config.offsets_topic_num_partitions = 2;
    config.transaction_state_log_num_partitions = 1;
    config.group.min_session_timeout = Duration::from_millis(100);
    Broker::open(config).await.unwrap()
}

/// Counts per word, and per word and minute.
fn topology() -> fjord_streams::Topology {
    let builder = StreamsBuilder::new();
    let grouped =
        builder.stream("words", Consumed::with(Serdes::string(), Serdes::string())).group_by_key();
    grouped.count(Materialized::named("counts"));
    grouped
        .windowed_by(TimeWindows::of_size_and_grace(Duration::from_secs(60), Duration::ZERO))
        .count(Materialized::named("per-minute"));
    builder.build().unwrap()
}

/// The states an instance went through, in order.
type States = Arc<Mutex<Vec<StreamsState>>>;

/// An instance whose `application.server` is the address of its query server.
async fn start(broker: &Broker, dir: &std::path::Path) -> (Streams, QueryServerHandle, States) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = StreamsConfig {
        commit_interval: Some(Duration::from_millis(50)),
        state_dir: dir.to_path_buf(),
        application_server: Some(HostInfo::new("127.0.0.1", port)),
        ..StreamsConfig::new("words-app")
    };
    let mut streams =
        Streams::new(topology(), Arc::new(EmbeddedBackend::new(broker)), config).unwrap();
    let states = States::default();
    let seen = states.clone();
    streams.set_state_listener(move |new, _old| seen.lock().unwrap().push(new)).unwrap();
    streams.start().await.unwrap();
    let again = streams.set_state_listener(|_, _| {}).unwrap_err().to_string();
    assert!(again.contains("before start()"), "{again}");
    let server = QueryServer::new(&streams)
        .key_value_store("counts", Serdes::string(), Serdes::i64())
        .unwrap()
        .window_store("per-minute", Serdes::string(), Serdes::i64())
        .unwrap()
        .serve(listener)
        .unwrap();
    (streams, server, states)
}

/// `GET` over a fresh TCP connection: the status and the JSON body.
async fn get(addr: &str, path: &str) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_is_answered_by_its_owner_and_the_other_instance_names_the_owner() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    Admin::new(&broker).create_topic(NewTopic::new("words", 4)).await.unwrap();
    // 20 words, 10 times each, all in the minute starting at 60 s.
    let producer = Producer::new(&broker, ProducerConfig::default()).unwrap();
    for i in 0..200 {
        let word = format!("w{}", i % 20);
        let record = ProducerRecord::new("words", b"x").key(word.as_bytes()).timestamp(60_000 + i);
        producer.send(record).await.unwrap();
    }
    producer.close().await.unwrap();

    // A runs alone first; then B joins.
    let (a, server_a, states_a) = start(&broker, &dir.path().join("a")).await;
    a.wait_for_state(StreamsState::Running, Duration::from_secs(20)).await.unwrap();
    let (b, server_b, states_b) = start(&broker, &dir.path().join("b")).await;
    b.wait_for_state(StreamsState::Running, Duration::from_secs(20)).await.unwrap();
    let addr_a = server_a.local_addr().to_string();
    let addr_b = server_b.local_addr().to_string();

    // Ask A for every word. A answers for its own keys; for the others it names B, and B
    // answers. Until the rebalance settled and the last commit came, answers may lag: retry.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..20 {
        let word = format!("w{i}");
        loop {
            assert!(Instant::now() < deadline, "{word}: no settled answer");
            let (status, body) = get(&addr_a, &format!("/stores/counts/keys/{word}")).await;
            let (owner, value) = match status {
                200 => (addr_a.clone(), body["value"].clone()),
                421 => {
                    let owner = body["owner"].as_str().unwrap().to_string();
                    assert!(body["error"].as_str().unwrap().contains(&owner), "{body}");
                    let location = body["location"].as_str().unwrap();
                    assert_eq!(location, format!("http://{owner}/stores/counts/keys/{word}"));
                    let (status, answer) =
                        get(&owner, &format!("/stores/counts/keys/{word}")).await;
                    if status != 200 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    (owner, answer["value"].clone())
                }
                _ => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            if value == 10 {
                owners.insert(word, owner);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The keys are split between the two instances, and each key has one owner: the other
    // instance refuses it with 421 and names the owner.
    assert!(owners.values().any(|o| *o == addr_a) && owners.values().any(|o| *o == addr_b));
    // B's joining made A rebalance (and give up half its partitions).
    use StreamsState::{Rebalancing, Running};
    let a_states = states_a.lock().unwrap().clone();
    assert_eq!(a_states[..2], [Rebalancing, Running], "{a_states:?}");
    assert!(a_states[2..].windows(2).any(|w| w == [Rebalancing, Running]), "{a_states:?}");
    assert_eq!(states_b.lock().unwrap()[..2], [Rebalancing, Running]);
    for (word, owner) in &owners {
        let other = if *owner == addr_a { &addr_b } else { &addr_a };
        let (status, body) = get(other, &format!("/stores/counts/keys/{word}")).await;
        assert_eq!(status, 421, "{word} on {other}: {body}");
        assert_eq!(body["owner"], Value::from(owner.as_str()));
        // The API agrees with the HTTP answers.
        let holder = if *owner == addr_a { &a } else { &b };
        let meta = holder.query_metadata_for_key("counts", word, &Serdes::string()).unwrap();
        assert!(meta.local);
        assert_eq!(meta.active_host.unwrap().to_string(), *owner);
        assert_eq!(body["partition"], Value::from(meta.partition.unwrap()));
    }

    // Window fetches go to the owner too; `from`/`to` select window starts.
    let (word, owner) = owners.iter().next().unwrap();
    let (status, body) =
        get(owner, &format!("/stores/per-minute/keys/{word}?from=0&to=100000")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"], serde_json::json!([{ "start": 60_000, "value": 10 }]));
    let (_, body) = get(owner, &format!("/stores/per-minute/keys/{word}?from=61000")).await;
    assert_eq!(body["value"], serde_json::json!([]));

    // `all` lists what the instance holds; together the two hold every word.
    let mut all = BTreeMap::new();
    for addr in [&addr_a, &addr_b] {
        let (status, body) = get(addr, "/stores/counts").await;
        assert_eq!(status, 200);
        for entry in body["entries"].as_array().unwrap() {
            all.insert(entry["key"].as_str().unwrap().to_string(), entry["value"].clone());
        }
    }
    assert_eq!(all.len(), 20);
    assert!(all.values().all(|v| *v == 10));

    // Every instance is listed with its partitions (two of four each) and stores.
    let (status, body) = get(&addr_b, "/metadata").await;
    assert_eq!(status, 200);
    let instances = body["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2, "{body}");
    for instance in instances {
        assert_eq!(instance["partitions"].as_array().unwrap().len(), 2, "{body}");
        assert_eq!(instance["stores"], serde_json::json!(["counts", "per-minute"]));
    }
    assert_eq!(a.metadata_for_all_clients().len(), 2);

    // Errors say what is wrong: an unknown store, a store read in a way it cannot be, a key
    // that is nowhere (its owner says so; the other instance sends the caller there).
    let (status, body) = get(&addr_a, "/stores/nope/keys/w1").await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("nope"), "{body}");
    let (status, body) = get(&addr_a, "/stores/per-minute").await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("read by key"), "{body}");
    let missing = b.query_metadata_for_key("counts", &"unknown".to_string(), &Serdes::string());
    let owner = missing.unwrap().active_host.unwrap().to_string();
    let (status, body) = get(&owner, "/stores/counts/keys/unknown").await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("not in store"), "{body}");

    server_a.shutdown().await;
    server_b.shutdown().await;
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_application_server_an_instance_knows_only_its_own_keys() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    Admin::new(&broker).create_topic(NewTopic::new("words", 2)).await.unwrap();
    let config =
        StreamsConfig { state_dir: dir.path().join("state"), ..StreamsConfig::new("solo") };
    let mut streams =
        Streams::new(topology(), Arc::new(EmbeddedBackend::new(&broker)), config).unwrap();
    let early = streams.query_metadata_for_key("counts", &"w".to_string(), &Serdes::string());
    assert!(early.unwrap_err().to_string().contains("before the application started"));
    streams.start().await.unwrap();
    streams.wait_for_state(StreamsState::Running, Duration::from_secs(20)).await.unwrap();
    for word in ["a", "b", "c", "d"] {
        let meta =
            streams.query_metadata_for_key("counts", &word.to_string(), &Serdes::string()).unwrap();
        assert!(meta.local, "the only instance holds every partition");
        assert_eq!(meta.active_host, None, "no endpoint is advertised");
        assert!(meta.partition.unwrap() < 2);
    }
    assert!(streams.metadata_for_all_clients().is_empty());
    let unknown = streams.query_metadata_for_key("nope", &"a".to_string(), &Serdes::string());
    assert!(unknown.unwrap_err().to_string().contains("no state store named `nope`"));
    streams.close().await.unwrap();
}
