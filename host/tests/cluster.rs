//! Several real `quartzite serve` processes on one PostgreSQL: every fire runs
//! exactly once across the cluster, and a killed node's recoverable fire is
//! re-run elsewhere.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::*;
use quartzite::store::model::{HistoryFilter, HistoryStatus};
use quartzite::store::{PgStore, Scheduling, Store};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn node(dir: &Path, url: &str, id: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_quartzite"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            url,
            "--node-id",
            id,
            "--manifest",
        ])
        .arg(dir.join("jobs.toml"))
        .env("QUARTZITE_CACHE_DIR", dir.join(format!("cache-{id}")))
        .env("QUARTZITE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn stop(mut child: Child) {
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_run_every_fire_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (url, schema) = pg_schema("qz_cluster").await;
    let jobs = 1_500;
    let mut manifest = format!(
        "[[module]]\nname = \"counter\"\npath = \"{}\"\n",
        wasm("counter").display()
    );
    for i in 0..jobs {
        manifest.push_str(&format!(
            "\n[[job]]\nkey = \"c/job-{i}\"\nmodule = \"counter\"\n[[job.trigger]]\nat = \"2020-01-01T00:00:00Z\"\n"
        ));
    }
    std::fs::write(dir.path().join("jobs.toml"), manifest).unwrap();
    // One node applies the manifest first, so the three start on the same jobs.
    let first = node(dir.path(), &url, "node-1");
    let store = PgStore::connect(&url).await.unwrap();
    wait_until(
        Duration::from_secs(60),
        "the first node to load the manifest",
        || {
            let store = store.clone();
            async move {
                store
                    .job_list()
                    .await
                    .map(|j| j.len() == jobs)
                    .unwrap_or(false)
            }
        },
    )
    .await;
    let others = [
        node(dir.path(), &url, "node-2"),
        node(dir.path(), &url, "node-3"),
    ];
    let filter = HistoryFilter {
        status: Some(HistoryStatus::Success),
        ..HistoryFilter::default()
    };
    wait_until(Duration::from_secs(120), "every fire to run", || {
        let (store, filter) = (store.clone(), filter.clone());
        async move { store.history_count(&filter).await.unwrap() >= jobs as u64 }
    })
    .await;
    stop(first);
    for n in others {
        stop(n);
    }

    let history = store
        .history_list(&HistoryFilter {
            limit: 100_000,
            ..HistoryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        history.len(),
        jobs,
        "one history row per fire, nothing else"
    );
    let mut keys: Vec<&str> = history.iter().map(|h| h.job_key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), jobs, "every job fired once");
    assert!(history.iter().all(|h| h.status == HistoryStatus::Success));
    for i in (0..jobs).step_by(97) {
        let count = store
            .state_get(&format!("c/job-{i}"), "count")
            .await
            .unwrap();
        assert_eq!(
            count.as_deref(),
            Some(&b"1"[..]),
            "the guest ran once for c/job-{i}"
        );
    }
    let mut nodes: Vec<&str> = history
        .iter()
        .filter_map(|h| h.node_id.as_deref())
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    eprintln!("fires were run by {nodes:?}");
    pg_drop(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_recoverable_fire_is_rerun_on_another_node() {
    let dir = tempfile::tempdir().unwrap();
    let (url, schema) = pg_schema("qz_failover").await;
    std::fs::write(
        dir.path().join("jobs.toml"),
        format!(
            "[[module]]\nname = \"report\"\npath = \"{}\"\n\n[[job]]\nkey = \"f/report\"\nmodule = \"report\"\ndata = {{ steps = 40, step_ms = 100 }}\nrequests_recovery = true\n[[job.trigger]]\nat = \"2020-01-01T00:00:00Z\"\n",
            wasm("report").display()
        ),
    )
    .unwrap();
    let store = PgStore::connect(&url).await.unwrap();
    let mut a = node(dir.path(), &url, "node-a");
    wait_until(
        Duration::from_secs(60),
        "node-a to start the report",
        || {
            let store = store.clone();
            async move {
                !store
                    .state_keys("f/report")
                    .await
                    .unwrap_or_default()
                    .is_empty()
            }
        },
    )
    .await;
    let b = node(dir.path(), &url, "node-b");
    // Let node-b check in, then kill node-a mid-run.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    a.kill().unwrap();
    a.wait().unwrap();
    let killed = Instant::now();
    let killed_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    wait_until(
        Duration::from_secs(60),
        "node-b to take the fire over",
        || {
            let store = store.clone();
            async move {
                store
                    .fire_list()
                    .await
                    .unwrap()
                    .iter()
                    .any(|f| f.recovering)
            }
        },
    )
    .await;
    eprintln!(
        "failover: the fire was re-queued {} ms after kill -9",
        killed.elapsed().as_millis()
    );
    wait_for_success(&store, "f/report", Duration::from_secs(60)).await;
    stop(b);
    let history = history_of(&store, "f/report").await;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].node_id.as_deref(), Some("node-b"));
    let details: serde_json::Value = serde_json::from_str(&history[0].details).unwrap();
    assert_eq!(details["recovering"], true);
    eprintln!(
        "failover: the re-run started {} ms after kill -9",
        history[0].started_ms - killed_ms
    );
    pg_drop(&schema).await;
}
