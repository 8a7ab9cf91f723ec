//! Real `quartzite serve` processes: killed with SIGKILL mid-run and restarted,
//! stopped with SIGTERM. Nothing is lost and nothing runs twice except the
//! flagged recovery re-run.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::*;

use quartzite::store::model::{HistoryFilter, HistoryStatus, Overlap};
use quartzite::store::{Scheduling, SqliteStore, Store};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn serve(dir: &Path, url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_quartzite"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            url,
            "--manifest",
        ])
        .arg(dir.join("jobs.toml"))
        .env("QUARTZITE_CACHE_DIR", dir.join("cache"))
        .env("QUARTZITE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_and_a_restart_nothing_is_lost_and_only_the_recovery_reruns() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("quartzite.db").display());
    std::fs::write(
        dir.path().join("jobs.toml"),
        format!(
            r#"
[[module]]
name = "report"
path = "{report}"

[[module]]
name = "counter"
path = "{counter}"

[[job]]
key = "p/report"
module = "report"
data = {{ steps = 20, step_ms = 100 }}
requests_recovery = true
[[job.trigger]]
at = "2020-01-01T00:00:00Z"

[[job]]
key = "p/counter"
module = "counter"
[[job.trigger]]
every = "100ms"
"#,
            report = wasm("report").display(),
            counter = wasm("counter").display()
        ),
    )
    .unwrap();

    let mut first = serve(dir.path(), &url);
    let store = SqliteStore::connect(&url).await.unwrap();
    wait_until(Duration::from_secs(60), "the report to be half way", || {
        let store = store.clone();
        async move {
            let keys = store.state_keys("p/report").await.unwrap_or_default();
            match keys.first() {
                Some(k) => store
                    .state_get("p/report", k)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|v| v.as_slice() >= &b"5"[..]),
                None => false,
            }
        }
    })
    .await;
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    // The manifest writes no overlap for the counter: its describe() says
    // forbid, so two of its fires never run at once and lose an update.
    let counter_job = store.job_get("p/counter").await.unwrap().unwrap();
    assert_eq!(counter_job.overlap, Overlap::Forbid);

    let mut second = serve(dir.path(), &url);
    wait_for_success(&store, "p/report", Duration::from_secs(60)).await;
    let pid = second.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = second.wait().unwrap();
    assert!(status.success(), "SIGTERM is a clean stop: {status:?}");

    let report = history_of(&store, "p/report").await;
    assert_eq!(report.len(), 1, "one fire, run to the end once: {report:?}");
    let details: serde_json::Value = serde_json::from_str(&report[0].details).unwrap();
    assert_eq!(
        details["recovering"], true,
        "the re-run is flagged as a recovery"
    );
    assert_eq!(details["outcome"]["details"]["steps"], 20);
    assert!(
        report[0].details.contains("resuming fire"),
        "the recovery re-run resumed from the checkpoint of the killed run: {}",
        report[0].details
    );

    let counter = store
        .history_list(&HistoryFilter {
            job_key: Some("p/counter".into()),
            limit: 100_000,
            ..HistoryFilter::default()
        })
        .await
        .unwrap();
    let mut fires: Vec<_> = counter
        .iter()
        .filter(|h| h.status != HistoryStatus::Misfired)
        .map(|h| h.fire_id.clone())
        .collect();
    let recorded = fires.len();
    fires.sort();
    fires.dedup();
    assert_eq!(fires.len(), recorded, "no counter fire was recorded twice");
    let successes = counter
        .iter()
        .filter(|h| h.status == HistoryStatus::Success)
        .count() as u64;
    let lost = counter
        .iter()
        .filter(|h| h.details.contains("node-lost"))
        .count() as u64;
    // Fires the killed node had claimed are recorded (node-lost), never silent;
    // it claims at most a few fires ahead.
    assert!(lost <= 8, "only fires claimed at the kill are lost: {lost}");
    let count: u64 = String::from_utf8(
        store
            .state_get("p/counter", "count")
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap()
    .parse()
    .unwrap();
    assert!(
        count >= successes && count <= successes + lost,
        "guest-side count {count} matches {successes} recorded runs (+{lost} lost at the kill)"
    );
    assert!(
        store
            .fire_list()
            .await
            .unwrap()
            .iter()
            .all(|f| f.job_key == "p/counter"),
        "no report fire left behind"
    );
}

fn cli(dir: &Path, url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_quartzite"))
        .args(args)
        .args(["--db", url])
        .env("QUARTZITE_CACHE_DIR", dir.join("cache"))
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_added_by_the_cli_fires_on_a_running_server_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("quartzite.db").display());
    std::fs::write(dir.path().join("jobs.toml"), "").unwrap();
    let mut server = serve(dir.path(), &url);

    let bad = cli(
        dir.path(),
        &url,
        &[
            "job",
            "add",
            "t/hello",
            "--module",
            "hello",
            "--cron",
            "0 0 * * * *",
        ],
    );
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("--cron invalid cron expression \"0 0 * * * *\""),
        "{err}"
    );

    let hello = wasm("hello");
    let added = cli(
        dir.path(),
        &url,
        &[
            "job",
            "add",
            "t/hello",
            "--module",
            hello.to_str().unwrap(),
            "--every",
            "300ms",
            "--data",
            r#"{"name":"cli"}"#,
        ],
    );
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let out = String::from_utf8_lossy(&added.stdout);
    assert!(out.contains("pushed module hello@1.0.0"), "{out}");
    assert!(out.contains("added job t/hello"), "{out}");

    let store = SqliteStore::connect(&url).await.unwrap();
    wait_until(
        Duration::from_secs(60),
        "the CLI-added job to fire twice",
        || {
            let store = store.clone();
            async move {
                let h = store
                    .history_list(&HistoryFilter {
                        job_key: Some("t/hello".into()),
                        limit: 10,
                        ..HistoryFilter::default()
                    })
                    .await
                    .unwrap();
                h.iter()
                    .filter(|h| h.status == HistoryStatus::Success)
                    .count()
                    >= 2
            }
        },
    )
    .await;

    let listed = cli(dir.path(), &url, &["job", "list", "--json"]);
    let jobs: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(jobs[0]["job_key"], "t/hello");
    assert_eq!(jobs[0]["module"], "hello@1.0.0");
    let history = cli(
        dir.path(),
        &url,
        &[
            "history", "list", "--job", "t/hello", "--status", "success", "--json",
        ],
    );
    let rows: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    assert_eq!(
        rows[0]["details"]["outcome"]["details"]["greeting"],
        "hello, cli"
    );
    let triggers = cli(
        dir.path(),
        &url,
        &["trigger", "list", "--job", "t/hello", "--json"],
    );
    let triggers: serde_json::Value = serde_json::from_slice(&triggers.stdout).unwrap();
    assert_eq!(triggers[0]["trigger_key"], "t/hello:every");
    assert_eq!(triggers[0]["state"], "WAITING");
    assert!(
        cli(dir.path(), &url, &["trigger", "pause", "t/hello:every"])
            .status
            .success()
    );
    let listed = String::from_utf8(cli(dir.path(), &url, &["trigger", "list"]).stdout).unwrap();
    assert!(listed.contains("PAUSED"), "{listed}");
    assert_eq!(
        cli(dir.path(), &url, &["trigger", "pause", "t/nope:x"])
            .status
            .code(),
        Some(1)
    );
    let rejected = cli(
        dir.path(),
        &url,
        &[
            "module",
            "push",
            wasm("guest_future_major").to_str().unwrap(),
        ],
    );
    assert_eq!(rejected.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&rejected.stderr).contains("module-incompatible"));
    let pushed = cli(
        dir.path(),
        &url,
        &[
            "module",
            "push",
            wasm("counter").to_str().unwrap(),
            // `counter` exists: a version is added to it only by name.
            "--name",
            "counter",
            "--version",
            "7",
        ],
    );
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let modules = cli(dir.path(), &url, &["module", "list", "--json"]);
    let modules: serde_json::Value = serde_json::from_slice(&modules.stdout).unwrap();
    let names: Vec<String> = modules
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}@{}",
                m["name"].as_str().unwrap(),
                m["version"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(names, ["counter@7", "hello@1.0.0"]);
    let nodes = cli(dir.path(), &url, &["cluster", "nodes", "--json"]);
    let nodes: serde_json::Value = serde_json::from_slice(&nodes.stdout).unwrap();
    assert_eq!(nodes.as_array().unwrap().len(), 1, "{nodes}");
    assert_eq!(nodes[0]["alive"], true);
    assert_eq!(nodes[0]["wit_versions"], "1.0-1.1");
    let paused = cli(dir.path(), &url, &["job", "pause", "t/hello"]);
    assert!(paused.status.success());
    let bad_status = cli(dir.path(), &url, &["history", "list", "--status", "great"]);
    assert_eq!(bad_status.status.code(), Some(2));

    let pid = server.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(server.wait().unwrap().success());
}
