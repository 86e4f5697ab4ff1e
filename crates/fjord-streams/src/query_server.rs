//! Interactive queries over HTTP: a small JSON API (axum) over the stores of a running
//! application, so that dashboards and services outside the process can read its state.
//!
//! Kafka Streams leaves this layer to every application; Fjord ships one, because the part
//! that is easy to get wrong is the same everywhere: a key is held by one instance, and a
//! request that reaches another one must say where to go instead of answering "not found".
//!
//! | Request | Answer |
//! |---|---|
//! | `GET /stores/{store}/keys/{key}` | key-value: the value; window store: the key's windows (`?from=&to=`, ms, window starts); session store: the key's sessions |
//! | `GET /stores/{store}` | key-value stores: every entry held by this instance |
//! | `GET /metadata` | every instance with its endpoint, partitions and stores |
//!
//! Status codes: `200`; `404` for an unknown store, or a key this instance owns but does not
//! have; `421 Misdirected Request` when another instance owns the key, with that instance's
//! endpoint in `owner` and the URL to ask in `location`; `503` while no instance owns the key
//! (a rebalance is moving it), to be retried; `400` for a key or parameter that does not parse.
//! Every error body is JSON with an `error` message that says what to do.
//!
//! Reads go to RocksDB, which blocks, so handlers read on tokio's blocking pool.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::StreamsError;
use crate::runtime::{Shared, Streams};
use crate::serdes::SerdeRef;
use crate::state::{ReadOnlyKeyValueStore, ReadOnlySessionStore, ReadOnlyWindowStore};

/// The HTTP interactive query server of one instance: register the stores to serve, then
/// [`serve`](QueryServer::serve) on a listener whose address is the instance's
/// `application.server`.
///
/// ```no_run
/// # async fn run(streams: &fjord_streams::Streams) -> Result<(), Box<dyn std::error::Error>> {
/// use fjord_streams::{QueryServer, Serdes};
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:7070").await?;
/// let server = QueryServer::new(streams)
///     .key_value_store("counts", Serdes::string(), Serdes::i64())?
///     .serve(listener)?;
/// // curl localhost:7070/stores/counts/keys/alice
/// # server.shutdown().await; Ok(()) }
/// ```
pub struct QueryServer {
    shared: Arc<Shared>,
    stores: BTreeMap<String, Arc<dyn QueryableStore>>,
}

impl std::fmt::Debug for QueryServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryServer").field("stores", &self.stores.keys()).finish()
    }
}

impl QueryServer {
    /// A server for `streams`, serving no store yet.
    pub fn new(streams: &Streams) -> Self {
        QueryServer { shared: streams.shared().clone(), stores: BTreeMap::new() }
    }

    /// Serves a key-value store. Keys in URLs are read as JSON, or else as a JSON string (so
    /// `/keys/alice` and `/keys/42` both work); keys and values are answered as JSON.
    pub fn key_value_store<K, V>(
        mut self,
        name: &str,
        key_serde: SerdeRef<K>,
        value_serde: SerdeRef<V>,
    ) -> Result<Self, StreamsError>
    where
        K: Serialize + DeserializeOwned + Send + Sync + 'static,
        V: Serialize + Send + Sync + 'static,
    {
        let store = self.shared.key_value_store(name, key_serde.clone(), value_serde)?;
        self.stores.insert(name.to_string(), Arc::new(KeyValue { store, key_serde }));
        Ok(self)
    }

    /// Serves a window store (`?from=&to=` select window starts, in ms, both inclusive).
    pub fn window_store<K, V>(
        mut self,
        name: &str,
        key_serde: SerdeRef<K>,
        value_serde: SerdeRef<V>,
    ) -> Result<Self, StreamsError>
    where
        K: Serialize + DeserializeOwned + Send + Sync + 'static,
        V: Serialize + Send + Sync + 'static,
    {
        let store = self.shared.window_store(name, key_serde.clone(), value_serde)?;
        self.stores.insert(name.to_string(), Arc::new(Windowed { store, key_serde }));
        Ok(self)
    }

    /// Serves a session store.
    pub fn session_store<K, V>(
        mut self,
        name: &str,
        key_serde: SerdeRef<K>,
        value_serde: SerdeRef<V>,
    ) -> Result<Self, StreamsError>
    where
        K: Serialize + DeserializeOwned + Send + Sync + 'static,
        V: Serialize + Send + Sync + 'static,
    {
        let store = self.shared.session_store(name, key_serde.clone(), value_serde)?;
        self.stores.insert(name.to_string(), Arc::new(Sessions { store, key_serde }));
        Ok(self)
    }

    /// Serves on `listener`, on the current tokio runtime, until
    /// [`QueryServerHandle::shutdown`].
    pub fn serve(
        self,
        listener: tokio::net::TcpListener,
    ) -> Result<QueryServerHandle, StreamsError> {
        let local_addr = listener.local_addr().map_err(|e| {
            StreamsError::IllegalState(format!("the query server's listener has no address: {e}"))
        })?;
        let app = Router::new()
            .route("/metadata", get(metadata))
            .route("/stores/{store}", get(all))
            .route("/stores/{store}/keys/{key}", get(key))
            .with_state(Arc::new(self));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "the interactive query server stopped");
            }
        });
        Ok(QueryServerHandle { local_addr, stop, task })
    }
}

/// A running [`QueryServer`].
#[derive(Debug)]
pub struct QueryServerHandle {
    local_addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl QueryServerHandle {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting requests and waits for those in flight.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// An answer that is not a 200.
struct Failure {
    status: StatusCode,
    body: Value,
}

impl Failure {
    fn new(status: StatusCode, error: impl std::fmt::Display) -> Self {
        Failure { status, body: json!({ "error": error.to_string() }) }
    }
}

impl From<StreamsError> for Failure {
    fn from(e: StreamsError) -> Self {
        Failure::new(StatusCode::INTERNAL_SERVER_ERROR, e)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

type Answer = Result<Json<Value>, Failure>;

/// A store served over HTTP, with its types erased to JSON.
trait QueryableStore: Send + Sync {
    /// The serialized form of a key given in a URL.
    fn key_bytes(&self, key: &Value) -> Result<Vec<u8>, Failure>;
    /// What a request for `key` answers, `None` when it is not held here.
    fn get(&self, key: &Value, window: &WindowRange) -> Result<Option<Value>, Failure>;
    /// Every entry held here, if the store can list them.
    fn all(&self) -> Result<Value, Failure>;
}

/// `?from=&to=` of window fetches.
#[derive(Debug, Default, serde::Deserialize)]
struct WindowRange {
    from: Option<i64>,
    to: Option<i64>,
}

fn typed_key<K: DeserializeOwned>(key: &Value) -> Result<K, Failure> {
    serde_json::from_value(key.clone()).map_err(|e| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            format!("the key {key} does not fit the store's key type: {e}"),
        )
    })
}

fn serialize_key<K>(key: &Value, serde: &SerdeRef<K>) -> Result<Vec<u8>, Failure>
where
    K: DeserializeOwned + 'static,
{
    let typed: K = typed_key(key)?;
    let mut bytes = Vec::new();
    serde.serialize(&typed, &mut bytes).map_err(|e| {
        Failure::new(StatusCode::BAD_REQUEST, format!("cannot serialize the key {key}: {e}"))
    })?;
    Ok(bytes)
}

fn to_json(value: &impl Serialize) -> Result<Value, Failure> {
    serde_json::to_value(value).map_err(|e| {
        Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot write the answer as JSON: {e}"),
        )
    })
}

struct KeyValue<K, V> {
    store: ReadOnlyKeyValueStore<K, V>,
    key_serde: SerdeRef<K>,
}

impl<K, V> QueryableStore for KeyValue<K, V>
where
    K: Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Serialize + Send + Sync + 'static,
{
    fn key_bytes(&self, key: &Value) -> Result<Vec<u8>, Failure> {
        serialize_key(key, &self.key_serde)
    }

    fn get(&self, key: &Value, _: &WindowRange) -> Result<Option<Value>, Failure> {
        let typed: K = typed_key(key)?;
        self.store.get(&typed)?.map(|v| to_json(&v)).transpose()
    }

    fn all(&self) -> Result<Value, Failure> {
        let entries = self
            .store
            .all()?
            .into_iter()
            .map(|(k, v)| Ok(json!({ "key": to_json(&k)?, "value": to_json(&v)? })))
            .collect::<Result<Vec<_>, Failure>>()?;
        Ok(Value::Array(entries))
    }
}

struct Windowed<K, V> {
    store: ReadOnlyWindowStore<K, V>,
    key_serde: SerdeRef<K>,
}

impl<K, V> QueryableStore for Windowed<K, V>
where
    K: Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Serialize + Send + Sync + 'static,
{
    fn key_bytes(&self, key: &Value) -> Result<Vec<u8>, Failure> {
        serialize_key(key, &self.key_serde)
    }

    fn get(&self, key: &Value, window: &WindowRange) -> Result<Option<Value>, Failure> {
        let typed: K = typed_key(key)?;
        let from = window.from.unwrap_or(i64::MIN);
        let to = window.to.unwrap_or(i64::MAX);
        let rows = self.store.fetch(&typed, from, to)?;
        let windows = rows
            .into_iter()
            .map(|(start, v)| Ok(json!({ "start": start, "value": to_json(&v)? })))
            .collect::<Result<Vec<_>, Failure>>()?;
        Ok(Some(Value::Array(windows)))
    }

    fn all(&self) -> Result<Value, Failure> {
        Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "a window store is read by key: GET /stores/{store}/keys/{key}?from=&to=",
        ))
    }
}

struct Sessions<K, V> {
    store: ReadOnlySessionStore<K, V>,
    key_serde: SerdeRef<K>,
}

impl<K, V> QueryableStore for Sessions<K, V>
where
    K: Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Serialize + Send + Sync + 'static,
{
    fn key_bytes(&self, key: &Value) -> Result<Vec<u8>, Failure> {
        serialize_key(key, &self.key_serde)
    }

    fn get(&self, key: &Value, _: &WindowRange) -> Result<Option<Value>, Failure> {
        let typed: K = typed_key(key)?;
        let sessions = self
            .store
            .fetch(&typed)?
            .into_iter()
            .map(|(w, v)| Ok(json!({ "start": w.start, "end": w.end, "value": to_json(&v)? })))
            .collect::<Result<Vec<_>, Failure>>()?;
        Ok(Some(Value::Array(sessions)))
    }

    fn all(&self) -> Result<Value, Failure> {
        Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "a session store is read by key: GET /stores/{store}/keys/{key}",
        ))
    }
}

impl QueryServer {
    fn store(&self, name: &str) -> Result<Arc<dyn QueryableStore>, Failure> {
        self.stores.get(name).cloned().ok_or_else(|| {
            let served: Vec<&str> = self.stores.keys().map(String::as_str).collect();
            Failure::new(
                StatusCode::NOT_FOUND,
                format!("no store `{name}` is served here; served: {served:?}"),
            )
        })
    }
}

/// A key from a URL: JSON if it parses as JSON, else the text as a JSON string.
fn url_key(raw: String) -> Value {
    serde_json::from_str(&raw).unwrap_or(Value::String(raw))
}

/// Runs a blocking store read off the async runtime.
async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(read).await.map_err(|e| {
        Failure::new(StatusCode::INTERNAL_SERVER_ERROR, format!("the read failed: {e}"))
    })?
}

async fn key(
    State(server): State<Arc<QueryServer>>,
    Path((name, raw_key)): Path<(String, String)>,
    Query(window): Query<WindowRange>,
) -> Answer {
    let store = server.store(&name)?;
    let key = url_key(raw_key);
    let bytes = store.key_bytes(&key)?;
    let where_ = crate::runtime::key_metadata(&server.shared, &name, &bytes)?;
    if !where_.local {
        let partition = where_.partition.map_or(-1, i64::from);
        let own = server.shared.config.application_server.as_ref();
        return Err(match &where_.active_host {
            Some(owner) if Some(owner) != own => Failure {
                status: StatusCode::MISDIRECTED_REQUEST,
                body: json!({
                    "error": format!(
                        "key {key} of store `{name}` is in partition {partition}, which instance \
                         {owner} holds: ask it there"
                    ),
                    "owner": owner.to_string(),
                    "partition": partition,
                    "location": format!("http://{owner}/stores/{name}/keys/{}", url_segment(&key)),
                }),
            },
            _ => Failure {
                status: StatusCode::SERVICE_UNAVAILABLE,
                body: json!({
                    "error": format!(
                        "no instance serves partition {partition} of store `{name}` right now \
                         (the group is rebalancing or the task is restoring): retry shortly"
                    ),
                    "partition": partition,
                }),
            },
        });
    }
    let answer = {
        let key = key.clone();
        blocking(move || store.get(&key, &window)).await?
    };
    match answer {
        Some(value) => Ok(Json(json!({ "store": name, "key": key, "value": value }))),
        None => Err(Failure::new(
            StatusCode::NOT_FOUND,
            format!("key {key} is not in store `{name}` (this instance holds its partition)"),
        )),
    }
}

/// The key as it goes back into a URL path segment.
fn url_segment(key: &Value) -> String {
    let text = match key {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn all(State(server): State<Arc<QueryServer>>, Path(name): Path<String>) -> Answer {
    let store = server.store(&name)?;
    let entries = blocking(move || store.all()).await?;
    Ok(Json(json!({ "store": name, "entries": entries })))
}

async fn metadata(State(server): State<Arc<QueryServer>>) -> Answer {
    let instances: Vec<Value> = crate::runtime::all_metadata(&server.shared)
        .into_iter()
        .map(|m| {
            json!({
                "host": m.host_info.to_string(),
                "partitions": m.topic_partitions.iter().map(|tp| format!("{}-{}", tp.topic, tp.partition)).collect::<Vec<_>>(),
                "stores": m.state_stores,
            })
        })
        .collect();
    Ok(Json(json!({ "instances": instances })))
}
