//! The store conformance suite: every test runs against a real SQLite file and
//! the real PostgreSQL on this machine (each PostgreSQL test in its own schema).
//!
//! PostgreSQL comes from `QUARTZITE_TEST_PG` (default
//! `postgres://postgres@127.0.0.1:5432/test`); it must be up: these tests fail,
//! never skip, without it.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use quartzite::engine::services::StoreKv;
use quartzite::runtime::services::LocalLocks;
use quartzite::runtime::{
    EngineConfig, HostServices, RunOutcome, RunRequest, Runtime, RuntimeConfig,
};
use quartzite::store::{ModulePut, ModuleRef, PgStore, SqliteStore, Store, StoreError};
use sqlx::postgres::PgConnectOptions;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

fn pg_url() -> String {
    std::env::var("QUARTZITE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A migrated store and what keeps it alive; dropping the PostgreSQL variant's
/// schema is best effort at the end of each test.
struct TestStore {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

impl TestStore {
    async fn sqlite() -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("quartzite.db").display());
        let store = SqliteStore::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        TestStore {
            store: Arc::new(store),
            _dir: Some(dir),
            schema: None,
        }
    }

    async fn postgres() -> TestStore {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let schema = format!(
            "qz_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let url = pg_url();
        let admin = sqlx::PgPool::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {url} is required for the store tests: {e}"));
        for sql in [
            format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
            format!("CREATE SCHEMA {schema}"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&admin)
                .await
                .unwrap();
        }
        let options = PgConnectOptions::from_str(&url)
            .unwrap()
            .options([("search_path", schema.as_str())]);
        let store = PgStore::connect_with(options, &url).await.unwrap();
        store.migrate().await.unwrap();
        TestStore {
            store: Arc::new(store),
            _dir: None,
            schema: Some(schema),
        }
    }

    async fn finish(self) {
        if let Some(schema) = self.schema {
            let admin = sqlx::PgPool::connect(&pg_url()).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&admin)
                .await
                .unwrap();
        }
    }
}

/// Defines `mod $name { sqlite, postgres }`, running `$body(store)` on each backend.
macro_rules! conformance {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let t = super::TestStore::sqlite().await;
                super::$body(t.store.clone()).await;
                t.finish().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let t = super::TestStore::postgres().await;
                super::$body(t.store.clone()).await;
                t.finish().await;
            }
        }
    };
}

async fn state_round_trips_and_is_per_job(store: Arc<dyn Store>) {
    assert_eq!(store.state_get("g/a", "k").await.unwrap(), None);
    store.state_set("g/a", "k", b"one").await.unwrap();
    store.state_set("g/a", "k", b"two").await.unwrap();
    store.state_set("g/a", "b", &[0, 255, 0xfe]).await.unwrap();
    store.state_set("g/a", "empty", b"").await.unwrap();
    assert_eq!(
        store.state_get("g/a", "k").await.unwrap(),
        Some(b"two".to_vec())
    );
    assert_eq!(
        store.state_get("g/a", "b").await.unwrap(),
        Some(vec![0, 255, 0xfe])
    );
    assert_eq!(
        store.state_get("g/a", "empty").await.unwrap(),
        Some(Vec::new())
    );
    assert_eq!(store.state_get("g/other", "k").await.unwrap(), None);
    assert_eq!(store.state_keys("g/a").await.unwrap(), ["b", "empty", "k"]);
    assert!(store.state_delete("g/a", "k").await.unwrap());
    assert!(!store.state_delete("g/a", "k").await.unwrap());
    assert_eq!(store.state_get("g/a", "k").await.unwrap(), None);
}
conformance!(state, state_round_trips_and_is_per_job);

fn module(name: &str, version: &str, bytes: &[u8]) -> ModulePut {
    ModulePut {
        name: name.into(),
        version: version.into(),
        digest: quartzite::runtime::module::digest(bytes),
        wit_version: "1.0.0".into(),
        bytes: bytes.to_vec(),
    }
}

async fn modules_are_versioned_immutable_and_found_by_name_version_or_digest(
    store: Arc<dyn Store>,
) {
    let v1 = store
        .module_put(&module("report", "1.0.0", b"first"))
        .await
        .unwrap();
    let again = store
        .module_put(&module("report", "1.0.0", b"first"))
        .await
        .unwrap();
    assert_eq!(v1, again, "pushing the same bytes again is a no-op");
    match store
        .module_put(&module("report", "1.0.0", b"changed"))
        .await
    {
        Err(StoreError::Conflict(msg)) => {
            assert!(msg.contains("report@1.0.0 already exists"), "{msg}")
        }
        other => panic!("{other:?}"),
    }
    let v2 = store
        .module_put(&module("report", "1.1.0", b"second"))
        .await
        .unwrap();
    store
        .module_put(&module("hello", "1.0.0", b"hello"))
        .await
        .unwrap();

    let latest = store
        .module_get(&ModuleRef::Latest("report".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.version, "1.1.0");
    let pinned = ModuleRef::Version {
        name: "report".into(),
        version: "1.0.0".into(),
    };
    assert_eq!(
        store.module_get(&pinned).await.unwrap().unwrap().digest,
        v1.digest
    );
    assert_eq!(
        store
            .module_get(&ModuleRef::Digest(v2.digest.clone()))
            .await
            .unwrap()
            .unwrap()
            .version,
        "1.1.0"
    );
    assert_eq!(
        store.module_bytes(&v1.digest).await.unwrap(),
        Some(b"first".to_vec())
    );
    assert_eq!(
        store
            .module_get(&ModuleRef::Latest("nope".into()))
            .await
            .unwrap(),
        None
    );
    assert_eq!(v1.size, 5);

    let all = store.module_list(None).await.unwrap();
    let names: Vec<String> = all
        .iter()
        .map(|m| format!("{}@{}", m.name, m.version))
        .collect();
    assert_eq!(names, ["hello@1.0.0", "report@1.1.0", "report@1.0.0"]);
    assert_eq!(store.module_list(Some("report")).await.unwrap().len(), 2);
}
conformance!(
    modules,
    modules_are_versioned_immutable_and_found_by_name_version_or_digest
);

async fn migrating_twice_changes_nothing(store: Arc<dyn Store>) {
    store.state_set("g/a", "k", b"v").await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(
        store.state_get("g/a", "k").await.unwrap(),
        Some(b"v".to_vec())
    );
}
conformance!(migrate, migrating_twice_changes_nothing);

fn counter_wasm() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("wasm32-wasip2/release/counter.wasm");
    assert!(
        path.is_file(),
        "{} is missing: run `./dev.sh guests`",
        path.display()
    );
    path
}

fn runtime_on(store: &Arc<dyn Store>) -> Runtime {
    let services = HostServices {
        kv: Arc::new(StoreKv::new(Arc::clone(store))),
        locks: Arc::new(LocalLocks::new()),
    };
    let engine = EngineConfig {
        max_concurrent_runs: 4,
        ..EngineConfig::default()
    };
    Runtime::new(
        RuntimeConfig {
            engine,
            cache_dir: None,
            node_id: "store-test".into(),
        },
        services,
    )
    .unwrap()
}

async fn guest_state_survives_a_restart(store: Arc<dyn Store>) {
    let count = |report: quartzite::runtime::RunReport| match report.outcome {
        RunOutcome::Completed {
            details: Some(d), ..
        } => serde_json::from_str::<serde_json::Value>(&d).unwrap()["count"].clone(),
        other => panic!("{other:?}"),
    };
    {
        let runtime = runtime_on(&store);
        let module = runtime.load_file(&counter_wasm()).unwrap();
        for _ in 0..2 {
            runtime.run(&module, RunRequest::new("jobs/counter")).await;
        }
    }
    // A new runtime, as after a restart of the node: the count goes on.
    let runtime = runtime_on(&store);
    let module = runtime.load_file(&counter_wasm()).unwrap();
    assert_eq!(
        count(runtime.run(&module, RunRequest::new("jobs/counter")).await),
        3
    );
    assert_eq!(
        store.state_get("jobs/counter", "count").await.unwrap(),
        Some(b"3".to_vec())
    );
}
conformance!(guest_state, guest_state_survives_a_restart);

#[tokio::test]
async fn an_unknown_database_url_is_a_clear_error() {
    let err = quartzite::store::open("mysql://u:secret@h/db")
        .await
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("expected sqlite://PATH or postgres://"),
        "{msg}"
    );
    assert!(!msg.contains("secret"), "{msg}");
}
