//! Jobs written in Python and JavaScript under a real `quartzite serve`, on
//! SQLite and on PostgreSQL: their history, kv state that survives runs, a
//! retry, a timeout that stops a guest ignoring cancellation, and a NoOp skip
//! whose reason names the import the host does not grant.
//!
//! The components are the examples `./dev.sh guests` builds from
//! example-jobs/python and example-jobs/js with the languages' SDKs.

use crate::common::*;

use quartzite::store::Store;
use quartzite::store::model::{HistoryEntry, HistoryStatus};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A server process that is killed when dropped, so a failing test leaves no
/// server behind.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Server {
    /// Stops the server as a deploy does (SIGTERM) and checks it exits cleanly.
    fn stop(mut self) {
        let pid = self.0.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = self.0.wait().unwrap();
        assert!(status.success(), "SIGTERM is a clean stop: {status:?}");
    }
}

fn shared_cache() -> PathBuf {
    guest_dir().join("../../polyglot-test-cache")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The JS counter as the SDK builds it by default, with wasi:http in (so
/// `fetch` works): the host links wasi:http for every component, behind
/// grants, so it runs.
fn js_counter_with_http(dir: &Path) -> PathBuf {
    let out = dir.join("counter-http.wasm");
    let status = Command::new("node")
        .arg(repo().join("guest-sdk-js/bin/quartzite-build-js.js"))
        .arg(repo().join("example-jobs/js/counter.js"))
        .arg("-o")
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .expect("node is needed to build the JS guest: ./dev.sh guests installs it");
    assert!(status.success(), "building the JS counter with wasi:http");
    out
}

fn manifest() -> String {
    let module = |name: &str, path: &Path| {
        format!(
            "[[module]]\nname = \"{name}\"\npath = \"{}\"\n",
            path.display()
        )
    };
    let mut text = String::new();
    text += &module("counter-py", &wasm("counter_py"));
    text += &module("report-py", &wasm("report_py"));
    text += &module("counter-js", &wasm("counter_js"));
    text += &module("report-js", &wasm("report_js"));
    for lang in ["py", "js"] {
        text += &format!(
            r#"
# Every fire fails its first attempt and succeeds on the retry.
[[job]]
key = "{lang}/counter"
module = "counter-{lang}"
data = {{ fail_attempts = 1 }}
[job.retry]
max_attempts = 2
backoff = "immediate"
[[job.trigger]]
every = "300ms"

# Never looks at cancelled(): the host stops it after the timeout and grace.
[[job]]
key = "{lang}/stuck"
module = "report-{lang}"
data = {{ steps = 100000, step_ms = 50, ignore_cancel = true }}
timeout = "1s"
[job.retry]
max_attempts = 1
[[job.trigger]]
at = "2020-01-01T00:00:00Z"

# Works a few steps under its lock and reports. The lock is the one the
# stuck job of its group holds until the host stops it: wait that out.
[[job]]
key = "{lang}/report"
module = "report-{lang}"
data = {{ steps = 3, step_ms = 10, lock_timeout_ms = 30000 }}
[job.grants]
emit = ["report.done"]
[[job.trigger]]
at = "2020-01-01T00:00:00Z"
"#
        );
    }
    // Pushed into the store beforehand, as an operator would.
    text += r#"
[[job]]
key = "js/needs-http"
module = "counter-http"
[[job.trigger]]
at = "2020-01-01T00:00:00Z"
"#;
    text
}

async fn history(store: &Arc<dyn Store>, job: &str) -> Vec<HistoryEntry> {
    history_of(store.as_ref(), job).await
}

async fn count_of(store: &Arc<dyn Store>, job: &str) -> u64 {
    store
        .state_get(job, "count")
        .await
        .unwrap()
        .and_then(|v| serde_json::from_slice(&v).ok())
        .unwrap_or(0)
}

async fn python_and_js_jobs_run_under_serve(backend: Backend) {
    let _load = load_share(LOADED).await;
    let dir = tempfile::tempdir().unwrap();
    let (url, schema) = match backend {
        Backend::Sqlite => (
            format!("sqlite://{}", dir.path().join("quartzite.db").display()),
            None,
        ),
        Backend::Postgres => {
            let (url, schema) = pg_schema("qz_polyglot").await;
            (url, Some(schema))
        }
    };
    std::fs::write(dir.path().join("jobs.toml"), manifest()).unwrap();
    let store = quartzite::store::open(&url).await.unwrap();
    let bytes = std::fs::read(js_counter_with_http(dir.path())).unwrap();
    store
        .module_put(&quartzite::store::ModulePut {
            name: "counter-http".into(),
            version: "1.0.0".into(),
            digest: {
                use sha2::Digest;
                hex::encode(sha2::Sha256::digest(&bytes))
            },
            wit_version: "1.1.0".into(),
            bytes,
            restore: false,
        })
        .await
        .unwrap();
    let server = Server(
        Command::new(env!("CARGO_BIN_EXE_quartzite"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--db",
                &url,
                "--manifest",
            ])
            .arg(dir.path().join("jobs.toml"))
            // Compiled modules are kept across this test's runs and backends:
            // the Python and JS components take tens of seconds to compile on
            // a loaded machine, and compiling is not what this test is about.
            .env("QUARTZITE_CACHE_DIR", shared_cache())
            .env("QUARTZITE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Large components compile for seconds on first use: a generous limit.
    for lang in ["py", "js"] {
        let job = format!("{lang}/counter");
        wait_until(
            Duration::from_secs(600),
            &format!("{job} to count 3"),
            || {
                let store = Arc::clone(&store);
                let job = job.clone();
                async move { count_of(&store, &job).await >= 3 }
            },
        )
        .await;
        for name in ["stuck", "report"] {
            let job = format!("{lang}/{name}");
            wait_until(Duration::from_secs(600), &format!("{job} to end"), || {
                let store = Arc::clone(&store);
                let job = job.clone();
                async move {
                    history(&store, &job)
                        .await
                        .iter()
                        .any(|h| h.status != HistoryStatus::Retried)
                }
            })
            .await;
        }
    }
    wait_until(Duration::from_secs(600), "the http guest's run", || {
        let store = Arc::clone(&store);
        async move { !history(&store, "js/needs-http").await.is_empty() }
    })
    .await;
    server.stop();

    for lang in ["py", "js"] {
        // kv survives runs: each success read the count the one before wrote.
        let job = format!("{lang}/counter");
        let rows = history(&store, &job).await;
        let mut counts: Vec<u64> = rows
            .iter()
            .filter(|h| h.status == HistoryStatus::Success)
            .map(|h| {
                let d: serde_json::Value = serde_json::from_str(&h.details).unwrap();
                d["outcome"]["details"]["count"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{job}: {}", h.details))
            })
            .collect();
        counts.sort_unstable();
        assert!(counts.len() >= 3, "{job}: {rows:?}");
        assert_eq!(
            counts,
            (1..=counts.len() as u64).collect::<Vec<_>>(),
            "{job}"
        );
        assert_eq!(count_of(&store, &job).await, counts.len() as u64, "{job}");
        // A retry: every fire's first attempt failed, its second succeeded.
        let retried: Vec<_> = rows
            .iter()
            .filter(|h| h.status == HistoryStatus::Retried)
            .collect();
        assert!(!retried.is_empty(), "{job}: {rows:?}");
        assert!(
            retried
                .iter()
                .all(|h| h.attempt == 1 && h.details.contains("attempt 1 fails on purpose")),
            "{job}: {retried:?}"
        );
        assert!(
            rows.iter()
                .filter(|h| h.status == HistoryStatus::Success)
                .all(|h| h.attempt == 2),
            "{job}: {rows:?}"
        );

        // The timeout stopped the guest: about timeout + grace, not its 5000 s of steps.
        let job = format!("{lang}/stuck");
        let rows = history(&store, &job).await;
        assert_eq!(rows.len(), 1, "{job}: {rows:?}");
        assert_eq!(rows[0].status, HistoryStatus::Timeout, "{job}: {rows:?}");
        assert!(rows[0].duration_ms < 20_000, "{job}: {rows:?}");

        let job = format!("{lang}/report");
        let rows = history(&store, &job).await;
        assert_eq!(rows.len(), 1, "{job}: {rows:?}");
        assert_eq!(rows[0].status, HistoryStatus::Success, "{job}: {rows:?}");
        assert!(rows[0].details.contains("\"steps\":3"), "{job}: {rows:?}");
    }

    // A component importing wasi:http runs: the host links it (requests are
    // denied unless granted; this job makes none). A module importing what
    // the host does not link is skipped with the import named: the
    // `unknown-import` guest in tests/runtime.rs.
    let rows = history(&store, "js/needs-http").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].status, HistoryStatus::Success, "{rows:?}");

    drop(store);
    if let Some(schema) = schema {
        pg_drop(&schema).await;
    }
}

on_both!(python_and_js_jobs_run_under_serve);
