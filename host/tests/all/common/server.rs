//! A node with its admin API on a free loopback port, in process, over a fresh
//! SQLite file or PostgreSQL schema: what the API-driven test binaries start.

use super::{pg_drop, pg_schema, wait_until};
use quartzite::api::ApiOptions;
use quartzite::engine::scheduler::SchedulerConfig;
use quartzite::node::{self, Node, ServeOptions};
use quartzite::runtime::{EngineConfig, RuntimeConfig};
use quartzite::store::Store;
use reqwest::StatusCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A running node with its API on a free loopback port.
pub struct Server {
    pub base: String,
    pub store: Arc<dyn Store>,
    pub http: reqwest::Client,
    pub stop: watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<()>,
    pub schema: Option<String>,
    pub token: Option<String>,
    pub db_url: String,
    pub dir: tempfile::TempDir,
}

/// An HTTP client as scripts use the API: every request says its body is JSON
/// (the server takes changes only so) unless it sets another type.
pub fn json_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::CONTENT_TYPE,
        reqwest::header::HeaderValue::from_static("application/json"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("HTTP client")
}

/// Starts a node (ids and schema named after `tag`) and waits for `/readyz`.
pub async fn start_server(backend: Backend, token: Option<&str>, tag: &str) -> Server {
    start_server_with(backend, token, tag, SchedulerConfig::default()).await
}

/// [`start_server`] with these secret keys in place of the environment's.
pub async fn start_server_with_keys(
    backend: Backend,
    tag: &str,
    keys: Arc<quartzite::secrets::SecretKeys>,
) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let (url, schema) = fresh_database(backend, tag, &dir).await;
    start(
        dir,
        url,
        schema,
        None,
        tag,
        SchedulerConfig::default(),
        keys,
    )
    .await
}

/// A node on the database another, stopped, node used (`db_url`, `schema`),
/// with these secret keys (the caller keeps the stopped node's directory).
pub async fn start_server_on(
    _backend: Backend,
    tag: &str,
    keys: Arc<quartzite::secrets::SecretKeys>,
    db_url: String,
    schema: Option<String>,
) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    start(
        dir,
        db_url,
        schema,
        None,
        tag,
        SchedulerConfig::default(),
        keys,
    )
    .await
}

async fn fresh_database(
    backend: Backend,
    tag: &str,
    dir: &tempfile::TempDir,
) -> (String, Option<String>) {
    match backend {
        Backend::Sqlite => (
            format!("sqlite://{}", dir.path().join("q.db").display()),
            None,
        ),
        Backend::Postgres => {
            let (url, schema) = pg_schema(&format!("qz_{tag}")).await;
            (url, Some(schema))
        }
    }
}

/// [`start_server`] with these scheduler settings (its poll interval made short).
pub async fn start_server_with(
    backend: Backend,
    token: Option<&str>,
    tag: &str,
    scheduler: SchedulerConfig,
) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let (url, schema) = fresh_database(backend, tag, &dir).await;
    start(dir, url, schema, token, tag, scheduler, Arc::default()).await
}

async fn start(
    dir: tempfile::TempDir,
    url: String,
    schema: Option<String>,
    token: Option<&str>,
    tag: &str,
    scheduler: SchedulerConfig,
    keys: Arc<quartzite::secrets::SecretKeys>,
) -> Server {
    let options = ServeOptions {
        db_url: url.clone(),
        manifest: None,
        node_id: format!("{tag}-{}", quartzite::store::sched::new_id()),
        standby: false,
        scheduler: SchedulerConfig {
            poll_ms: 50,
            ..scheduler
        },
        runtime: RuntimeConfig {
            engine: EngineConfig::default(),
            cache_dir: Some(dir.path().join("cache")),
            node_id: format!("{tag}-test"),
        },
    };
    let api = ApiOptions::parse("127.0.0.1:0", token, None).expect("API options");
    let node: Node = node::start_with_keys(&options, Some(api), keys)
        .await
        .expect("node starts");
    let addr = node.api.as_ref().expect("API running").local_addr;
    let store = Arc::clone(&node.store);
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(node::run(node, false, rx));
    let server = Server {
        base: format!("http://{addr}"),
        store,
        http: json_client(),
        stop,
        task,
        schema,
        token: token.map(str::to_string),
        db_url: url,
        dir,
    };
    let (http, ready) = (server.http.clone(), format!("{}/readyz", server.base));
    wait_until(Duration::from_secs(30), "/readyz to answer 200", || {
        let (http, ready) = (http.clone(), ready.clone());
        async move {
            http.get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
        }
    })
    .await;
    server
}

impl Server {
    /// Stops the node and drops its PostgreSQL schema.
    pub async fn stop(self) {
        self.stop.send(true).expect("node running");
        self.task.await.expect("node stops");
        if let Some(schema) = &self.schema {
            pg_drop(schema).await;
        }
    }
}
