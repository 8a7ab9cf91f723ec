//! Cluster benchmark with real `quartzite serve` processes on PostgreSQL:
//! throughput of no-op fires with 1, 2 and 3 nodes (the ratio to one node is
//! the figure: the machine is shared and noisy), and how long a module pushed
//! through the CLI takes to be compiled and advertised by every node.
//!
//! Run (after `./dev.sh guests`):
//!   cargo bench -p quartzite --bench cluster -- [FIRES]      (default 20,000)
//! PostgreSQL comes from QUARTZITE_TEST_PG (default postgres://postgres@127.0.0.1:5432/test);
//! each measurement works in a schema of its own and drops it.

/// As the `quartzite` binary: the bench measures what a node runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/all/common/mod.rs"]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;

use common::{pg_drop, pg_schema, wasm};
use quartzite::schedule::trigger::{MisfirePolicy, TriggerKind, TriggerSpec};
use quartzite::store::model::{HistoryFilter, JobDef, TriggerPut};
use quartzite::store::{PgStore, Scheduling, Store};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn serve(dir: &Path, url: &str, id: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_quartzite"))
        .args([
            "serve",
            "--db",
            url,
            "--node-id",
            id,
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--manifest")
        .arg(dir.join("jobs.toml"))
        .current_dir(dir)
        .env("QUARTZITE_CACHE_DIR", dir.join(format!("cache-{id}")))
        .env("QUARTZITE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start quartzite serve")
}

fn stop(nodes: Vec<Child>) {
    for n in &nodes {
        let _ = Command::new("kill")
            .args(["-TERM", &n.id().to_string()])
            .status();
    }
    for mut n in nodes {
        let _ = n.wait();
    }
}

async fn wait_alive(store: &PgStore, count: usize) {
    let start = Instant::now();
    while store
        .node_list(1_500)
        .await
        .map(|n| n.iter().filter(|n| n.alive).count())
        .unwrap_or(0)
        < count
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "nodes did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Exec/s of `fires` no-op one-shots due now, run by `nodes` processes.
async fn throughput(nodes: usize, fires: usize) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let (url, schema) = pg_schema("qz_bench_cluster").await;
    std::fs::write(
        dir.path().join("jobs.toml"),
        format!(
            "[[module]]\nname = \"noop\"\npath = \"{}\"\n",
            wasm("guest_noop").display()
        ),
    )
    .expect("manifest");
    let store = PgStore::connect(&url).await.expect("postgres");
    let children: Vec<Child> = (1..=nodes)
        .map(|i| serve(dir.path(), &url, &format!("node-{i}")))
        .collect();
    wait_alive(&store, nodes).await;
    let now = store.now_ms().await.expect("clock");
    // Due a moment from now, so every node is polling when they are.
    let due = now + 1_000;
    let jobs: Vec<_> = (0..fires)
        .map(|i| {
            let key = format!("b/noop-{i}");
            let trigger = TriggerPut {
                trigger_key: format!("{key}:at"),
                job_key: key.clone(),
                spec: TriggerSpec {
                    kind: TriggerKind::At(due),
                    start_ms: None,
                    end_ms: None,
                    misfire: MisfirePolicy::FireNow,
                    jitter_ms: 0,
                    calendars: Vec::new(),
                },
                priority: 5,
            };
            (JobDef::new(key, "noop"), vec![trigger])
        })
        .collect();
    store.jobs_put(&jobs).await.expect("jobs");
    let wait = Duration::from_millis(
        u64::try_from(due - store.now_ms().await.expect("clock")).unwrap_or(0),
    );
    tokio::time::sleep(wait).await;
    let started = Instant::now();
    let all = HistoryFilter::default();
    while store.history_count(&all).await.expect("history") < fires as u64 {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "fires did not finish"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rate = fires as f64 / started.elapsed().as_secs_f64();
    stop(children);
    pg_drop(&schema).await;
    rate
}

/// Milliseconds from `module push` returning to every node advertising the
/// module as compiled.
async fn propagation(nodes: usize) -> u128 {
    let dir = tempfile::tempdir().expect("temp dir");
    let (url, schema) = pg_schema("qz_bench_propagation").await;
    std::fs::write(dir.path().join("jobs.toml"), "").expect("manifest");
    let store = PgStore::connect(&url).await.expect("postgres");
    let children: Vec<Child> = (1..=nodes)
        .map(|i| serve(dir.path(), &url, &format!("node-{i}")))
        .collect();
    wait_alive(&store, nodes).await;
    let pushed = Command::new(env!("CARGO_BIN_EXE_quartzite"))
        .args(["module", "push", "--db", &url])
        .arg(wasm("report"))
        .env("QUARTZITE_CACHE_DIR", dir.path().join("cache-cli"))
        .output()
        .expect("module push");
    let since = Instant::now();
    assert!(pushed.status.success(), "{pushed:?}");
    let digest = store
        .module_list(Some("report"))
        .await
        .expect("modules")
        .first()
        .expect("pushed")
        .digest
        .clone();
    while !store
        .node_list(1_500)
        .await
        .expect("nodes")
        .iter()
        .all(|n| n.modules.contains(&digest))
    {
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "module did not propagate"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ms = since.elapsed().as_millis();
    stop(children);
    pg_drop(&schema).await;
    ms
}

#[tokio::main]
async fn main() {
    let fires: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    println!("cluster throughput, {fires} no-op one-shot fires due at once, real serve processes");
    let mut one = 0.0;
    for nodes in 1..=3 {
        let rate = throughput(nodes, fires).await;
        if nodes == 1 {
            one = rate;
        }
        println!(
            "  {nodes} node(s): {rate:>8.0} exec/s   ({:.2} of one node)",
            rate / one
        );
    }
    let mut ms = Vec::new();
    for _ in 0..3 {
        ms.push(propagation(3).await);
    }
    ms.sort_unstable();
    println!(
        "module propagation to 3 nodes (push returned -> compiled and advertised by all): {:?} ms, median {} ms",
        ms, ms[1]
    );
}
