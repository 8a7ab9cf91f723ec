//! Several real `quartzite serve` processes on one PostgreSQL: every fire runs
//! exactly once across the cluster, and a killed node's recoverable fire is
//! re-run elsewhere.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::*;
use quartzite::schedule::trigger::{MisfirePolicy, TriggerKind, TriggerSpec};
use quartzite::store::model::{HistoryEntry, HistoryFilter, HistoryStatus, JobDef, TriggerPut};
use quartzite::store::{ModulePut, PgStore, Scheduling, Store};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn node(dir: &Path, url: &str, id: &str) -> Child {
    node_with(dir, url, id, &[], &[])
}

/// A `quartzite serve` process with the manifest `dir/jobs.toml` (when there
/// is one), extra arguments and environment. Its warnings go to `dir/ID.log`.
fn node_with(dir: &Path, url: &str, id: &str, extra: &[&str], envs: &[(&str, &str)]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quartzite"));
    command
        .args(["serve", "--db", url, "--node-id", id])
        .args(extra)
        .envs(envs.iter().copied());
    let manifest = dir.join("jobs.toml");
    if manifest.is_file() {
        command.arg("--manifest").arg(manifest);
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{id}.log")))
        .unwrap();
    command
        .current_dir(dir)
        .env("QUARTZITE_CACHE_DIR", dir.join(format!("cache-{id}")))
        .env_remove("QUARTZITE_DB")
        .env("QUARTZITE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Waits until `node` has checked in and is alive.
async fn wait_alive(store: &PgStore, node: &str) {
    wait_until(
        Duration::from_secs(60),
        &format!("{node} to check in"),
        || {
            let store = store.clone();
            let node = node.to_string();
            async move {
                store
                    .node_list(1_500)
                    .await
                    .unwrap_or_default()
                    .iter()
                    .any(|n| n.node_id == node && n.alive)
            }
        },
    )
    .await;
}

fn signal(child: &Child, signal: &str) {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success()
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn details(entry: &HistoryEntry) -> serde_json::Value {
    serde_json::from_str(&entry.details).unwrap()
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

fn write_manifest(dir: &Path, text: &str) {
    std::fs::write(dir.join("jobs.toml"), text).unwrap();
}

fn module_decl(name: &str, guest: &str) -> String {
    format!(
        "[[module]]\nname = \"{name}\"\npath = \"{}\"\n",
        wasm(guest).display()
    )
}

/// A job on `module` firing every `period`.
fn every_job(key: &str, module: &str, period_ms: i64) -> (JobDef, Vec<TriggerPut>) {
    let job = JobDef::new(key, module);
    let trigger = TriggerPut {
        trigger_key: format!("{key}:every"),
        job_key: key.into(),
        spec: TriggerSpec {
            kind: TriggerKind::Every {
                period_ms,
                repeat: None,
            },
            start_ms: None,
            end_ms: None,
            misfire: MisfirePolicy::FireNow,
        },
        priority: 5,
    };
    (job, vec![trigger])
}

fn count(history: &[HistoryEntry], status: HistoryStatus, node: Option<&str>) -> usize {
    history
        .iter()
        .filter(|h| h.status == status && (node.is_none() || h.node_id.as_deref() == node))
        .count()
}

async fn wait_for_count(store: &PgStore, job: &str, status: HistoryStatus, at_least: usize) {
    wait_until(
        Duration::from_secs(60),
        &format!("{at_least} {status:?} fires of {job}"),
        || async move { count(&history_of(store, job).await, status, None) >= at_least },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_cluster_claims_by_capability_and_skips_only_what_no_live_node_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (url, schema) = pg_schema("qz_mixed").await;
    write_manifest(dir.path(), &module_decl("counter", "counter"));
    let store = PgStore::connect(&url).await.unwrap();
    let mut current = node(dir.path(), &url, "current");
    wait_alive(&store, "current").await;
    // `old` runs only contracts before 1.0, like a node of an older release.
    let old = node_with(dir.path(), &url, "old", &["--max-wit", "0.9"], &[]);
    wait_alive(&store, "old").await;
    // A module for the next major version, as a newer node would have pushed it.
    let future = std::fs::read(wasm("guest_future_major")).unwrap();
    store
        .module_put(&ModulePut {
            name: "future".into(),
            version: "2.0.0".into(),
            digest: sha256_hex(&future),
            wit_version: "2.0.0".into(),
            bytes: future,
        })
        .await
        .unwrap();
    store
        .jobs_put(&[
            every_job("m/counter", "counter", 500),
            every_job("m/future", "future", 500),
        ])
        .await
        .unwrap();

    // Both nodes live: `current` runs every counter fire, `old` none, and the
    // 2.0 module, which no node runs, is skipped and its trigger goes on.
    wait_for_count(&store, "m/counter", HistoryStatus::Success, 4).await;
    wait_for_count(&store, "m/future", HistoryStatus::Skipped, 3).await;
    let counter = history_of(&store, "m/counter").await;
    assert_eq!(
        count(&counter, HistoryStatus::Success, Some("current")),
        counter.len(),
        "only the node that runs 1.0 ran the 1.0 module, and never skipped it: {counter:?}"
    );
    let future = history_of(&store, "m/future").await;
    assert!(future.iter().all(|h| h.status == HistoryStatus::Skipped
        && details(h)["reason"] == "no-capable-node"
        && details(h)["needs_wit"] == "2.0"));
    let nodes = store.node_list(1_500).await.unwrap();
    let current_row = nodes.iter().find(|n| n.node_id == "current").unwrap();
    assert_eq!(current_row.wit_versions, "1.0");
    assert_eq!(
        nodes
            .iter()
            .find(|n| n.node_id == "old")
            .unwrap()
            .wit_versions,
        "0.0-0.9"
    );

    // The only 1.0 node leaves: now no live node can run the counter, so its
    // fires are skipped (recorded, trigger advanced), never stuck ...
    stop(current);
    wait_until(
        Duration::from_secs(60),
        "counter fires to be skipped",
        || {
            let store = store.clone();
            async move {
                history_of(&store, "m/counter")
                    .await
                    .iter()
                    .any(|h| h.status == HistoryStatus::Skipped)
            }
        },
    )
    .await;
    let skipped = history_of(&store, "m/counter").await;
    assert!(skipped.iter().all(|h| h.node_id.as_deref() != Some("old")));
    assert!(
        skipped
            .iter()
            .filter(|h| h.status == HistoryStatus::Skipped)
            .all(|h| details(h)["reason"] == "no-capable-node")
    );
    // ... and once a 1.0 node is back, they run again.
    let before = count(&skipped, HistoryStatus::Success, None);
    current = node(dir.path(), &url, "current");
    wait_for_count(&store, "m/counter", HistoryStatus::Success, before + 2).await;
    stop(current);
    stop(old);
    let all = history_of(&store, "m/counter").await;
    assert_eq!(count(&all, HistoryStatus::Success, Some("old")), 0);
    pg_drop(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_pushed_through_one_process_is_compiled_on_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let (url, schema) = pg_schema("qz_propagate").await;
    let store = PgStore::connect(&url).await.unwrap();
    let nodes = [
        node(dir.path(), &url, "node-1"),
        node(dir.path(), &url, "node-2"),
        node(dir.path(), &url, "node-3"),
    ];
    for id in ["node-1", "node-2", "node-3"] {
        wait_alive(&store, id).await;
    }
    let bytes = std::fs::read(wasm("hello")).unwrap();
    let digest = sha256_hex(&bytes);
    let pushed = Command::new(env!("CARGO_BIN_EXE_quartzite"))
        .args(["module", "push", "--db", &url])
        .arg(wasm("hello"))
        .env("QUARTZITE_CACHE_DIR", dir.path().join("cache-cli"))
        .output()
        .unwrap();
    assert!(pushed.status.success(), "{pushed:?}");
    let since_push = Instant::now();
    // Every node says it has compiled it (`cluster nodes --json` shows the same).
    wait_until(
        Duration::from_secs(30),
        "every node to compile the module",
        || {
            let (store, digest) = (store.clone(), digest.clone());
            async move {
                let nodes = store.node_list(1_500).await.unwrap_or_default();
                nodes.len() == 3 && nodes.iter().all(|n| n.modules.contains(&digest))
            }
        },
    )
    .await;
    eprintln!(
        "module propagation: compiled and advertised by all 3 nodes {} ms after `module push` returned",
        since_push.elapsed().as_millis()
    );
    let listed = Command::new(env!("CARGO_BIN_EXE_quartzite"))
        .args(["cluster", "nodes", "--json", "--db", &url])
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    for n in listed.as_array().unwrap() {
        assert!(
            n["modules"]
                .as_array()
                .unwrap()
                .contains(&digest.clone().into())
        );
        assert_eq!(n["wit_versions"], "1.0");
    }
    // A job added now on any node runs the pushed module.
    store
        .jobs_put(&[every_job("p/hello", "hello", 60_000)])
        .await
        .unwrap();
    wait_for_success(&store, "p/hello", Duration::from_secs(30)).await;
    for n in nodes {
        stop(n);
    }
    pg_drop(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_past_its_lease_cannot_complete_the_fire_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let (url, schema) = pg_schema("qz_sigstop").await;
    write_manifest(
        dir.path(),
        &format!(
            "{}\n[[job]]\nkey = \"s/report\"\nmodule = \"report\"\ndata = {{ steps = 30, step_ms = 100 }}\nrequests_recovery = true\n[[job.trigger]]\nat = \"2020-01-01T00:00:00Z\"\n",
            module_decl("report", "report")
        ),
    );
    let store = PgStore::connect(&url).await.unwrap();
    // node-a alone picks the fire up; node-b joins once it runs.
    let a = node(dir.path(), &url, "node-a");
    wait_until(
        Duration::from_secs(60),
        "node-a to start the report",
        || {
            let store = store.clone();
            async move {
                store
                    .fire_list()
                    .await
                    .unwrap_or_default()
                    .iter()
                    .any(|f| f.attempt == 1 && !f.recovering)
                    && !store
                        .state_keys("s/report")
                        .await
                        .unwrap_or_default()
                        .is_empty()
            }
        },
    )
    .await;
    let b = node(dir.path(), &url, "node-b");
    wait_alive(&store, "node-b").await;
    signal(&a, "-STOP");
    wait_until(
        Duration::from_secs(60),
        "node-b to take the fire over",
        || {
            let store = store.clone();
            async move {
                store
                    .fire_list()
                    .await
                    .unwrap_or_default()
                    .iter()
                    .any(|f| f.recovering)
            }
        },
    )
    .await;
    signal(&a, "-CONT");
    // node-a's run goes on where it was and ends; its completion is refused.
    let log_a = dir.path().join("node-a.log");
    wait_until(Duration::from_secs(60), "node-a's late completion", || {
        let log_a = log_a.clone();
        async move {
            std::fs::read_to_string(&log_a)
                .unwrap_or_default()
                .contains("completion refused")
        }
    })
    .await;
    wait_for_success(&store, "s/report", Duration::from_secs(60)).await;
    wait_alive(&store, "node-a").await;
    stop(a);
    stop(b);
    let history = history_of(&store, "s/report").await;
    assert_eq!(history.len(), 1, "one fire, one end: {history:?}");
    assert_eq!(history[0].node_id.as_deref(), Some("node-b"));
    assert_eq!(details(&history[0])["recovering"], true);
    pg_drop(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_clocks_minutes_off_fire_neither_early_nor_late() {
    // libfaketime, preloaded, moves the process's wall clock (not its monotonic one).
    let lib = std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path().join("faketime/libfaketimeMT.so.1")))
        .find(|p| p.is_file())
        .expect("libfaketime is required for this test: `apt-get install faketime` (./dev.sh test installs it)");
    let lib = lib.to_str().unwrap();
    let skewed = |offset: &'static str| {
        [
            ("LD_PRELOAD", lib),
            ("FAKETIME", offset),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ]
    };

    let dir = tempfile::tempdir().unwrap();
    let (url, schema) = pg_schema("qz_skew").await;
    write_manifest(dir.path(), &module_decl("counter", "counter"));
    let store = PgStore::connect(&url).await.unwrap();
    let json_log = ["--log", "info", "--log-format", "json"];
    let ahead = node_with(dir.path(), &url, "ahead", &json_log, &skewed("+5m"));
    let behind = node_with(dir.path(), &url, "behind", &json_log, &skewed("-5m"));
    wait_alive(&store, "ahead").await;
    wait_alive(&store, "behind").await;
    // The nodes' own clocks are off (their log lines are stamped by them).
    for (id, skew_s) in [("ahead", 300), ("behind", -300)] {
        let log = std::fs::read_to_string(dir.path().join(format!("{id}.log"))).unwrap();
        let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
        let stamped = chrono::DateTime::parse_from_rfc3339(first["timestamp"].as_str().unwrap())
            .unwrap()
            .timestamp();
        let real = chrono::Utc::now().timestamp();
        assert!(
            (stamped - real - skew_s).abs() < 60,
            "{id} logs at {stamped}, real time {real}"
        );
    }
    // One-shots due over the next seconds by the database's clock.
    let now = store.now_ms().await.unwrap();
    let jobs: Vec<_> = (0..20)
        .map(|i| {
            let key = format!("k/at-{i}");
            let at = now + 3_000 + i * 150;
            let mut job = JobDef::new(key.clone(), "counter");
            job.priority = 5;
            let trigger = TriggerPut {
                trigger_key: format!("{key}:at"),
                job_key: key,
                spec: TriggerSpec {
                    kind: TriggerKind::At(at),
                    start_ms: None,
                    end_ms: None,
                    misfire: MisfirePolicy::FireNow,
                },
                priority: 5,
            };
            (job, vec![trigger])
        })
        .collect();
    store.jobs_put(&jobs).await.unwrap();
    let filter = HistoryFilter {
        status: Some(HistoryStatus::Success),
        ..HistoryFilter::default()
    };
    wait_until(Duration::from_secs(60), "the one-shots to run", || {
        let (store, filter) = (store.clone(), filter.clone());
        async move { store.history_count(&filter).await.unwrap() >= 20 }
    })
    .await;
    stop(ahead);
    stop(behind);
    // When the guest ran, by the database clock: its kv write's timestamp.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    for (i, (job, triggers)) in jobs.iter().enumerate() {
        let TriggerKind::At(at) = triggers[0].spec.kind else {
            unreachable!()
        };
        let history = history_of(&store, &job.job_key).await;
        assert_eq!(history.len(), 1, "{history:?}");
        let (value, written): (Vec<u8>, i64) = sqlx::query_as(
            "SELECT value, updated_at FROM job_state WHERE job_key = $1 AND key = 'count'",
        )
        .bind(&job.job_key)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(value, b"1", "one run of {}", job.job_key);
        assert!(written >= at, "fire {i} ran {} ms early", at - written);
        // Minutes late would be the skew; a fire is started well within a second.
        assert!(
            written - at < 2_000,
            "fire {i} ran {} ms late",
            written - at
        );
    }
    pg_drop(&schema).await;
}
