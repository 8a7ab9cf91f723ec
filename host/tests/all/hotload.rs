//! Updating a module under running jobs, on a real node over SQLite and
//! PostgreSQL, driven through the `quartzite` binary and the admin API: a bad
//! push changes nothing, a good one is used from the next fire, a run in flight
//! finishes on its version, rollback returns to the previous one, pinned jobs
//! never move.

use crate::common::server::{Backend, Server, start_server};
use crate::common::*;

use quartzite::store::Store;
use quartzite::store::model::HistoryStatus;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "test-admin-token-0123456789";
const LIMIT: Duration = Duration::from_secs(60);

async fn start(backend: Backend) -> Server {
    start_server(backend, Some(TOKEN), "hot").await
}

impl Server {
    async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    /// The CLI through this server's API (`remote`) or on its database.
    fn cli(&self, remote: bool, args: &[&str]) -> std::process::Output {
        let mut all: Vec<&str> = if remote {
            vec!["--server", &self.base, "--token", TOKEN, "--json"]
        } else {
            vec!["--db", &self.db_url, "--json"]
        };
        all.extend_from_slice(args);
        std::process::Command::new(env!("CARGO_BIN_EXE_quartzite"))
            .args(&all)
            .env_remove("QUARTZITE_SERVER")
            .env_remove("QUARTZITE_ADMIN_TOKEN")
            .env_remove("QUARTZITE_DB")
            .env("QUARTZITE_CACHE_DIR", self.dir.path().join("cli-cache"))
            .output()
            .unwrap()
    }

    /// The JSON a successful CLI call printed.
    fn cli_ok(&self, remote: bool, args: &[&str]) -> Value {
        let out = self.cli(remote, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The module digests of a job's successful runs, oldest first.
    async fn digests(&self, job: &str) -> Vec<String> {
        let mut runs: Vec<String> = history_of(self.store.as_ref(), job)
            .await
            .iter()
            .filter(|h| h.status == HistoryStatus::Success)
            .map(|h| {
                let details: Value = serde_json::from_str(&h.details).unwrap();
                details["module"]["digest"].as_str().unwrap().to_string()
            })
            .collect();
        runs.reverse();
        runs
    }

    /// Waits until `job` has `n` more successful runs than `after`, all on
    /// `digest` once the first on it is seen (the switch happens at a fire).
    async fn wait_runs_on(&self, job: &str, digest: &str, n: usize) {
        let before = self.digests(job).await.len();
        wait_until(LIMIT, &format!("{n} runs of {job} on {digest}"), || async {
            let runs = self.digests(job).await;
            let fresh = &runs[before.min(runs.len())..];
            match fresh.iter().position(|d| d == digest) {
                Some(first) => fresh.len() - first >= n,
                None => false,
            }
        })
        .await;
        let runs = self.digests(job).await;
        let fresh = &runs[before..];
        let first = fresh.iter().position(|d| d == digest).unwrap();
        assert!(
            fresh[first..].iter().all(|d| d == digest),
            "{job} went back to another module after {digest}: {fresh:?}"
        );
    }

    /// `module list` rows of one name as (version, state).
    fn versions(&self, remote: bool, name: &str) -> Vec<(String, &'static str)> {
        let list = self.cli_ok(remote, &["module", "list"]);
        list.as_array()
            .unwrap()
            .iter()
            .filter(|m| m["name"] == name)
            .map(|m| {
                let state = if m["current"] == true {
                    "current"
                } else if m["withdrawn"] == true {
                    "withdrawn"
                } else {
                    ""
                };
                (m["version"].as_str().unwrap().to_string(), state)
            })
            .collect()
    }
}

fn path(guest: &str) -> String {
    wasm(guest).to_str().unwrap().to_string()
}

on_both!(push_and_rollback_move_following_jobs_and_never_pinned_ones);
async fn push_and_rollback_move_following_jobs_and_never_pinned_ones(backend: Backend) {
    let server = start(backend).await;
    let v1 = server.cli_ok(
        true,
        &[
            "module",
            "push",
            &path("hello"),
            "--name",
            "greet",
            "--version",
            "1",
        ],
    );
    let d1 = v1["module"]["digest"].as_str().unwrap().to_string();
    for (key, module) in [
        ("hot/follow", "greet".to_string()),
        ("hot/pinned", "greet@1".to_string()),
        ("hot/digest", format!("sha256:{d1}")),
    ] {
        server
            .post(
                "/api/v1/jobs",
                json!({ "key": key, "module": module, "every": "200ms", "data": { "name": "hot" } }),
            )
            .await;
    }
    server.wait_runs_on("hot/follow", &d1, 1).await;

    // A corrupt module is refused with the reason, and nothing changes.
    let corrupt = server.dir.path().join("corrupt.wasm");
    std::fs::write(&corrupt, b"\0asm\x0d\0\x01\0 not a component").unwrap();
    let out = server.cli(
        true,
        &[
            "module",
            "push",
            corrupt.to_str().unwrap(),
            "--name",
            "greet",
            "--version",
            "2",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("rejected"), "{err}");
    assert!(err.contains("module-invalid"), "{err}");
    assert_eq!(server.versions(true, "greet"), [("1".into(), "current")]);
    server.wait_runs_on("hot/follow", &d1, 3).await;

    // A good version is used from the next fire by jobs following the name.
    let v2 = server.cli_ok(
        true,
        &[
            "module",
            "push",
            &path("counter"),
            "--name",
            "greet",
            "--version",
            "2",
        ],
    );
    let d2 = v2["module"]["digest"].as_str().unwrap().to_string();
    assert_ne!(d1, d2);
    server.wait_runs_on("hot/follow", &d2, 3).await;
    assert_eq!(
        server.versions(true, "greet"),
        [("2".into(), "current"), ("1".into(), "")]
    );

    // One command rolls back, through the server here.
    let back = server.cli_ok(true, &["module", "rollback", "greet"]);
    assert_eq!(back["version"], "1");
    assert_eq!(back["digest"], d1.as_str());
    assert_eq!(
        server.versions(true, "greet"),
        [("2".into(), "withdrawn"), ("1".into(), "current")]
    );
    server.wait_runs_on("hot/follow", &d1, 3).await;

    // Nothing older than version 1 to roll back to; no such name or version.
    let out = server.cli(true, &["module", "rollback", "greet"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no version older than 1"));
    let out = server.cli(false, &["module", "rollback", "nosuch"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no module nosuch"));
    let out = server.cli(true, &["module", "rollback", "greet", "--to", "9"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no module greet@9"));

    // Pushing the withdrawn version again restores it; rolling back to a given
    // version works on the database too.
    server.cli_ok(
        true,
        &[
            "module",
            "push",
            &path("counter"),
            "--name",
            "greet",
            "--version",
            "2",
        ],
    );
    assert_eq!(server.versions(false, "greet")[0], ("2".into(), "current"));
    server.wait_runs_on("hot/follow", &d2, 2).await;
    let back = server.cli_ok(false, &["module", "rollback", "greet", "--to", "1"]);
    assert_eq!(back["digest"], d1.as_str());
    server.wait_runs_on("hot/follow", &d1, 2).await;

    // Pinned jobs ran version 1 throughout, and are still running.
    server.wait_runs_on("hot/pinned", &d1, 1).await;
    server.wait_runs_on("hot/digest", &d1, 1).await;
    for job in ["hot/pinned", "hot/digest"] {
        let runs = server.digests(job).await;
        assert!(runs.iter().all(|d| *d == d1), "{job}: {runs:?}");
    }

    // Through the API, bad requests say what is wrong.
    for (path, status, says) in [
        (
            "/api/v1/modules/greet@1/rollback",
            StatusCode::BAD_REQUEST,
            "not a module name",
        ),
        (
            "/api/v1/modules/nosuch/rollback",
            StatusCode::NOT_FOUND,
            "no module nosuch",
        ),
        (
            "/api/v1/modules/greet/rollback?to=9",
            StatusCode::NOT_FOUND,
            "no module greet@9",
        ),
        (
            "/api/v1/modules/greet/rollback?version=1",
            StatusCode::BAD_REQUEST,
            "version",
        ),
        (
            "/api/v1/modules/greet/rollback",
            StatusCode::CONFLICT,
            "no version older than 1",
        ),
    ] {
        let response = server
            .http
            .post(format!("{}{path}", server.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
        let body: Value = response.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{path}: {message}");
    }

    // Rollback is audited like every other change, through the API and on the
    // database alike, refused ones too (with the status the API answers).
    let response = server
        .http
        .get(format!(
            "{}/api/v1/audit?action=module.rollback",
            server.base
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let audit: Value = response.json().await.unwrap();
    let rows: Vec<(&str, &str, u64)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let actor = e["actor"].as_str().unwrap();
            let kind = actor.split(':').next().unwrap();
            (
                kind,
                e["target"].as_str().unwrap(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let done: Vec<(&str, &str)> = rows
        .iter()
        .filter(|r| r.2 == 200)
        .map(|r| (r.0, r.1))
        .collect();
    assert_eq!(done, [("os", "greet@1"), ("token", "greet@1")], "{audit}");
    assert!(rows.contains(&("os", "nosuch", 404)), "{audit}");
    assert!(rows.contains(&("token", "nosuch", 404)), "{audit}");
    server.stop().await;
}

on_both!(a_run_in_flight_finishes_on_the_version_it_started_with);
async fn a_run_in_flight_finishes_on_the_version_it_started_with(backend: Backend) {
    let server = start(backend).await;
    let old = server.cli_ok(
        true,
        &[
            "module",
            "push",
            &path("report"),
            "--name",
            "slow",
            "--version",
            "1",
        ],
    );
    let old = old["module"]["digest"].as_str().unwrap().to_string();
    server
        .post(
            "/api/v1/jobs",
            json!({ "key": "hot/slow", "module": "slow", "every": "1h", "data": { "steps": 20, "step_ms": 200 },
                "grants": { "emit": ["report.*"] } }),
        )
        .await;
    server
        .post("/api/v1/jobs/hot/slow/run-now", json!({}))
        .await;
    // The report guest checkpoints each step: a checkpoint means it is running.
    wait_until(LIMIT, "the slow run to checkpoint a step", || async {
        !server
            .store
            .state_keys("hot/slow")
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    let new = server.cli_ok(
        true,
        &[
            "module",
            "push",
            &path("hello"),
            "--name",
            "slow",
            "--version",
            "2",
        ],
    );
    let new = new["module"]["digest"].as_str().unwrap().to_string();
    assert!(
        !server
            .store
            .state_keys("hot/slow")
            .await
            .unwrap()
            .is_empty(),
        "the run finished before the push: make it longer"
    );
    wait_until(LIMIT, "the slow run to finish", || async {
        !server.digests("hot/slow").await.is_empty()
    })
    .await;
    // A second fire may have overlapped it (and waited for the report lock):
    // the first success is the run that was in flight.
    assert_eq!(server.digests("hot/slow").await[0], old);
    let history = history_of(server.store.as_ref(), "hot/slow").await;
    let first = history
        .iter()
        .rev()
        .find(|h| h.status == HistoryStatus::Success)
        .unwrap();
    let details: Value = serde_json::from_str(&first.details).unwrap();
    assert_eq!(details["outcome"]["details"]["steps"], 20, "{details}");

    server
        .post("/api/v1/jobs/hot/slow/run-now", json!({}))
        .await;
    wait_until(LIMIT, "a run on the new version", || async {
        server.digests("hot/slow").await.contains(&new)
    })
    .await;
    let runs = server.digests("hot/slow").await;
    assert!(runs[1..].iter().all(|d| *d == new), "{runs:?}");
    server.stop().await;
}

/// The digests of a job's successful runs in `store`, oldest first.
async fn digests_in(store: &dyn Store, job: &str) -> Vec<String> {
    let mut runs: Vec<String> = history_of(store, job)
        .await
        .iter()
        .filter(|h| h.status == HistoryStatus::Success)
        .map(|h| {
            let details: Value = serde_json::from_str(&h.details).unwrap();
            details["module"]["digest"].as_str().unwrap().to_string()
        })
        .collect();
    runs.reverse();
    runs
}

/// Waits until `job` has `n` successful runs on `digest` after its first `after` runs.
async fn wait_fresh_runs(store: &dyn Store, job: &str, after: usize, digest: &str, n: usize) {
    wait_until(LIMIT, &format!("{n} runs of {job} on {digest}"), || async {
        let runs = digests_in(store, job).await;
        runs.get(after..)
            .is_some_and(|fresh| fresh.iter().filter(|d| *d == digest).count() >= n)
    })
    .await;
}

/// Kills the serve process when the test ends, passed or not.
struct Serving(std::process::Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_modules_directory_pushes_good_files_and_logs_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let modules = dir.path().join("modules");
    std::fs::create_dir(&modules).unwrap();
    std::fs::copy(wasm("guest_noop"), modules.join("greet.wasm")).unwrap();
    let url = format!("sqlite://{}", dir.path().join("q.db").display());
    let log = dir.path().join("serve.log");
    let _serving = Serving(
        std::process::Command::new(env!("CARGO_BIN_EXE_quartzite"))
            .args(["serve", "--no-api", "--db", &url, "--modules-dir"])
            .arg(&modules)
            .env("QUARTZITE_CACHE_DIR", dir.path().join("cache"))
            .env("QUARTZITE_LOG", "info")
            .env("QUARTZITE_LOG_FORMAT", "text")
            .env_remove("QUARTZITE_CONFIG")
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let store = quartzite::store::open(&url).await.unwrap();
    let current = |store: Arc<dyn Store>| async move {
        store
            .module_list(Some("greet"))
            .await
            .unwrap()
            .into_iter()
            .find(|m| m.current)
    };
    wait_until(LIMIT, "greet.wasm to be pushed at start", || async {
        current(Arc::clone(&store)).await.is_some()
    })
    .await;
    let noop = current(Arc::clone(&store)).await.unwrap();
    assert_eq!(noop.version, "0.1.0");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quartzite"))
        .args([
            "--db",
            &url,
            "job",
            "add",
            "hot/watched",
            "--module",
            "greet",
            "--every",
            "200ms",
        ])
        .env("QUARTZITE_CACHE_DIR", dir.path().join("cli-cache"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_fresh_runs(store.as_ref(), "hot/watched", 0, &noop.digest, 1).await;

    // A corrupt new file and a corrupt replacement: both logged with the reason,
    // nothing stored, the job keeps running what it ran.
    std::fs::write(modules.join("broken.wasm"), b"not a component at all").unwrap();
    std::fs::write(modules.join("greet.wasm"), b"\0asm\x0d\0\x01\0 truncated").unwrap();
    wait_until(LIMIT, "both bad files to be logged", || async {
        let text = std::fs::read_to_string(&log).unwrap();
        ["broken.wasm", "greet.wasm"].iter().all(|f| {
            text.lines()
                .any(|l| l.contains(f) && l.contains("rejected") && l.contains("module-invalid"))
        })
    })
    .await;
    let stored: Vec<String> = store
        .module_list(None)
        .await
        .unwrap()
        .iter()
        .map(|m| format!("{}@{}", m.name, m.version))
        .collect();
    assert_eq!(stored, ["greet@0.1.0"]);
    let after = digests_in(store.as_ref(), "hot/watched").await.len();
    wait_fresh_runs(store.as_ref(), "hot/watched", after, &noop.digest, 2).await;

    // A good replacement is used from the next fire.
    let hello = std::fs::read(wasm("hello")).unwrap();
    std::fs::write(modules.join("greet.wasm"), &hello).unwrap();
    wait_until(LIMIT, "the new greet.wasm to be pushed", || async {
        current(Arc::clone(&store))
            .await
            .is_some_and(|m| m.version == "1.0.0")
    })
    .await;
    let new = current(Arc::clone(&store)).await.unwrap();
    assert_ne!(new.digest, noop.digest);
    let after = digests_in(store.as_ref(), "hot/watched").await.len();
    wait_fresh_runs(store.as_ref(), "hot/watched", after, &new.digest, 2).await;
}
