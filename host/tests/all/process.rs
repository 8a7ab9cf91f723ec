//! Real `quartzite serve` processes: killed with SIGKILL mid-run and restarted,
//! stopped with SIGTERM. Nothing is lost and nothing runs twice except the
//! flagged recovery re-run.

use crate::common::*;

use quartzite::store::model::{HistoryFilter, HistoryStatus, Overlap};
use quartzite::store::{Scheduling, SqliteStore, Store};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A server process that is killed when dropped, so a failing test leaves no
/// server behind (one spinning guests would hold the machine's cores).
struct Server(Child);

impl std::ops::Deref for Server {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `quartzite serve` on `dir`'s manifest and its own module cache, listening on
/// `listen`, output discarded; callers add what their test needs.
fn serve_command(dir: &Path, url: &str, listen: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quartzite"));
    command
        .args(["serve", "--listen", listen, "--db", url, "--manifest"])
        .arg(dir.join("jobs.toml"))
        .env("QUARTZITE_CACHE_DIR", dir.join("cache"))
        .env("QUARTZITE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

fn spawn(command: &mut Command) -> Server {
    command.spawn().map(Server).unwrap()
}

fn serve(dir: &Path, url: &str) -> Server {
    spawn(&mut serve_command(dir, url, "127.0.0.1:0"))
}

/// [`serve`] with `config` as its config file.
fn serve_with_config(dir: &Path, url: &str, config: &str) -> Server {
    let path = dir.join("quartzite.toml");
    std::fs::write(&path, config).unwrap();
    spawn(
        serve_command(dir, url, "127.0.0.1:0")
            .arg("--config")
            .arg(path),
    )
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
[job.grants]
emit = ["report.done"]
[[job.trigger]]
at = "2020-01-01T00:00:00Z"

[[job]]
key = "p/counter"
module = "counter"
# Its runs read, add and write one count: two at once would lose an update.
overlap = "forbid"
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

    let second = serve(dir.path(), &url);
    wait_for_success(&store, "p/report", Duration::from_secs(60)).await;
    stop(second);

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
    let server = serve(dir.path(), &url);

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

    stop(server);
}

/// Stops a server as a deploy does (SIGTERM) and waits for it to exit.
fn stop(mut server: Server) {
    let pid = server.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = server.wait().unwrap();
    assert!(status.success(), "SIGTERM is a clean stop: {status:?}");
}

/// Waits until a node started after `after_ms` has checked in: its start-up,
/// which declares the manifest, is over.
async fn wait_started(store: &SqliteStore, after_ms: i64) -> i64 {
    let latest = |store: SqliteStore| async move {
        let nodes = store.node_list(1_500).await.unwrap_or_default();
        nodes.iter().map(|n| n.started_ms).max().unwrap_or(0)
    };
    wait_until(Duration::from_secs(60), "the server to start", || {
        let store = store.clone();
        async move { latest(store).await > after_ms }
    })
    .await;
    latest(store.clone()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_keep_interval_triggers_on_their_schedule_and_missed_fires_follow_the_misfire_policy()
 {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("quartzite.db").display());
    std::fs::write(
        dir.path().join("jobs.toml"),
        format!(
            r#"
[[module]]
name = "hello"
path = "{hello}"

[[job]]
key = "r/hourly"
module = "hello"
[[job.trigger]]
every = "1h"

[[job]]
key = "r/second"
module = "hello"
[[job.trigger]]
every = "1s"
"#,
            hello = wasm("hello").display()
        ),
    )
    .unwrap();
    let store = SqliteStore::connect(&url).await.unwrap();
    let hourly_next = |store: SqliteStore| async move {
        store.trigger_list(Some("r/hourly")).await.unwrap()[0].next_fire_ms
    };

    let server = serve(dir.path(), &url);
    let mut started = wait_started(&store, 0).await;
    // A new interval fires when it is declared, then once an hour.
    wait_for_success(&store, "r/hourly", Duration::from_secs(60)).await;
    let next = hourly_next(store.clone()).await;
    assert!(next.is_some());
    let mut server = Some(server);
    for _ in 0..3 {
        stop(server.take().unwrap());
        server = Some(serve(dir.path(), &url));
        started = wait_started(&store, started).await;
    }
    wait_until(
        Duration::from_secs(10),
        "r/second to fire after the restarts",
        || {
            let store = store.clone();
            async move { history_of(&store, "r/second").await.len() >= 3 }
        },
    )
    .await;
    assert_eq!(
        history_of(&store, "r/hourly").await.len(),
        1,
        "three restarts do not fire an hourly job"
    );
    assert_eq!(
        hourly_next(store.clone()).await,
        next,
        "nor move its next fire"
    );

    // Down for 5 s: the 1 s job's missed fires are run (misfire fire-now, at
    // most 10), so its scheduled times have no hole and never moved.
    stop(server.take().unwrap());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let server = serve(dir.path(), &url);
    wait_started(&store, started).await;
    let down_from = history_of(&store, "r/second")
        .await
        .iter()
        .filter_map(|h| h.scheduled_ms)
        .max()
        .unwrap();
    wait_until(
        Duration::from_secs(30),
        "the missed fires to be made up",
        || {
            let store = store.clone();
            async move {
                history_of(&store, "r/second")
                    .await
                    .iter()
                    .filter_map(|h| h.scheduled_ms)
                    .max()
                    .is_some_and(|m| m >= down_from + 8_000)
            }
        },
    )
    .await;
    stop(server);
    let mut times: Vec<i64> = history_of(&store, "r/second")
        .await
        .iter()
        .filter_map(|h| h.scheduled_ms)
        .collect();
    times.sort();
    times.dedup();
    let holes: Vec<(i64, i64)> = times
        .windows(2)
        .filter(|w| w[1] - w[0] != 1_000)
        .map(|w| (w[0], w[1]))
        .collect();
    assert!(
        holes.is_empty(),
        "every scheduled second was fired or recorded, on the original anchor: {holes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_tells_running_guests_at_once_and_they_checkpoint_and_stop_early() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("quartzite.db").display());
    std::fs::write(
        dir.path().join("jobs.toml"),
        format!(
            r#"
[[module]]
name = "report"
path = "{report}"

[[job]]
key = "s/report"
module = "report"
data = {{ steps = 100, step_ms = 100 }}
[job.grants]
emit = ["report.done"]
[[job.trigger]]
at = "2020-01-01T00:00:00Z"
"#,
            report = wasm("report").display()
        ),
    )
    .unwrap();
    // A grace far longer than the whole run: the guest can only stop early if
    // it was told.
    let server = serve_with_config(dir.path(), &url, "[scheduler]\ngrace_ms = 60000\n");
    let store = SqliteStore::connect(&url).await.unwrap();
    wait_until(
        Duration::from_secs(60),
        "the report to have started",
        || {
            let store = store.clone();
            async move {
                !store
                    .state_keys("s/report")
                    .await
                    .unwrap_or_default()
                    .is_empty()
            }
        },
    )
    .await;
    stop(server);
    let report = history_of(&store, "s/report").await;
    assert_eq!(report.len(), 1, "{report:?}");
    assert_eq!(report[0].status, HistoryStatus::Cancelled, "{report:?}");
    assert!(
        report[0].details.contains("cancelled after"),
        "the guest saw cancelled() and stopped by itself: {}",
        report[0].details
    );
    let keys = store.state_keys("s/report").await.unwrap();
    assert_eq!(keys.len(), 1, "its checkpoint is kept for the next start");
    let done: u32 = String::from_utf8(
        store
            .state_get("s/report", &keys[0])
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap()
    .parse()
    .unwrap();
    assert!(done < 100, "stopped early, at step {done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_saturated_by_spinning_guests_stays_alive_and_keeps_its_runs() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("quartzite.db").display());
    std::fs::write(
        dir.path().join("jobs.toml"),
        format!(
            r#"
[[module]]
name = "hostile"
path = "{hostile}"

[[module]]
name = "hello"
path = "{hello}"

{spinners}

[[job]]
key = "b/hello"
module = "hello"
[[job.trigger]]
every = "1s"
"#,
            hostile = wasm("guest_hostile").display(),
            hello = wasm("hello").display(),
            // Four spinning jobs: at a share of 4 each, all 16 workers spin.
            spinners = ["b/spin", "b/spin2", "b/spin3", "b/spin4"]
                .map(|key| format!(
                    "[[job]]\nkey = \"{key}\"\nmodule = \"hostile\"\ndata = {{ op = \"loop\" }}\n\
                     timeout = \"3s\"\n[[job.trigger]]\nevery = \"100ms\"\n"
                ))
                .join("\n"),
        ),
    )
    .unwrap();
    let log = dir.path().join("serve.log");
    // The default: guests share the node's threads (each yields every epoch
    // tick), and four spinning jobs at their share take all 16 workers.
    let config = dir.path().join("quartzite.toml");
    std::fs::write(&config, "[scheduler]\nguest_threads = 0\n").unwrap();
    let server = spawn(
        serve_command(dir.path(), &url, "127.0.0.1:0")
            .arg("--config")
            .arg(&config)
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    let store = SqliteStore::connect(&url).await.unwrap();
    wait_started(&store, 0).await;
    // Every worker spins until its timeout: both cores are the guests'.
    wait_until(
        Duration::from_secs(60),
        "three rounds of spinning fires to time out",
        || {
            let store = store.clone();
            async move { history_of(&store, "b/spin").await.len() >= 40 }
        },
    )
    .await;
    stop(server);
    let spin = history_of(&store, "b/spin").await;
    let lost: Vec<_> = spin
        .iter()
        .filter(|h| h.details.contains("node-lost"))
        .collect();
    assert!(
        lost.is_empty(),
        "the busy node took itself for dead: {lost:?}"
    );
    assert!(
        spin.iter().all(|h| h.status != HistoryStatus::Success),
        "a spinning run never succeeds"
    );
    let stderr = std::fs::read_to_string(&log).unwrap();
    for sign in ["recovered fires", "taken over"] {
        assert!(
            !stderr.contains(sign),
            "the node recovered or lost its own runs ({sign}):\n{stderr}"
        );
    }
    assert!(
        !history_of(&store, "b/hello").await.is_empty(),
        "the other job ran"
    );
}

/// libfaketime, preloaded, moves a process's wall clock (not its monotonic one).
fn faketime_at(start: &str) -> Vec<(&'static str, String)> {
    let lib = std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path().join("faketime/libfaketimeMT.so.1")))
        .find(|p| p.is_file())
        .expect("libfaketime is required for this test: `apt-get install faketime` (./dev.sh test installs it)");
    vec![
        ("LD_PRELOAD", lib.display().to_string()),
        ("FAKETIME", format!("@{start}")),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_running_through_a_dst_gap_records_it_as_preview_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("quartzite.db").display());
    std::fs::write(
        dir.path().join("jobs.toml"),
        format!(
            r#"
[[module]]
name = "hello"
path = "{hello}"

[[job]]
key = "d/night"
module = "hello"
[[job.trigger]]
cron = "0 30 2 * * ?"
tz = "America/New_York"
"#,
            hello = wasm("hello").display()
        ),
    )
    .unwrap();
    // What the operator is shown before the night.
    let preview = Command::new(env!("CARGO_BIN_EXE_quartzite"))
        .args([
            "trigger",
            "preview",
            "--cron",
            "0 30 2 * * ?",
            "--tz",
            "America/New_York",
            "--after",
            "2027-03-14T06:59:50Z",
            "--count",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(preview.status.success());
    let preview = String::from_utf8_lossy(&preview.stdout);
    assert!(preview.contains("dst-gap"), "{preview}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Ten seconds before the clocks jump from 02:00 EST to 03:00 EDT.
    let server = spawn(
        serve_command(dir.path(), &url, &format!("127.0.0.1:{port}"))
            .envs(faketime_at("2027-03-14 06:59:50"))
            .env("TZ", "UTC"),
    );
    let store = SqliteStore::connect(&url).await.unwrap();
    wait_started(&store, 0).await;
    wait_until(Duration::from_secs(60), "the gap to be recorded", || {
        let store = store.clone();
        async move { !history_of(&store, "d/night").await.is_empty() }
    })
    .await;
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    stop(server);
    let night = history_of(&store, "d/night").await;
    assert_eq!(night.len(), 1, "{night:?}");
    assert_eq!(night[0].status, HistoryStatus::Skipped);
    assert!(night[0].details.contains("dst-gap"), "{}", night[0].details);
    assert_eq!(
        night[0].scheduled_ms,
        Some(1_805_007_600_000),
        "recorded at the jump, 2027-03-14T07:00:00Z"
    );
    assert!(
        metrics.contains("quartzite_fires_skipped_total 1"),
        "{metrics}"
    );
    let next = store.trigger_list(Some("d/night")).await.unwrap()[0].next_fire_ms;
    assert_eq!(next, Some(1_805_092_200_000), "then Monday 02:30 EDT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fires_claimed_ahead_and_never_started_go_back_untouched_at_a_stop_or_a_kill() {
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
name = "hostile"
path = "{hostile}"

[[job]]
key = "a/long"
module = "report"
data = {{ steps = 600, step_ms = 100 }}
[job.grants]
emit = ["report.done"]
[[job.trigger]]
every = "1h"

[[job]]
key = "a/waiting"
module = "hostile"
data = {{ op = "sleep", ms = 20 }}
[[job.trigger]]
every = "200ms"
"#,
            report = wasm("report").display(),
            hostile = wasm("guest_hostile").display()
        ),
    )
    .unwrap();
    // One worker, taken by the long run: the other job's fires are claimed
    // and wait for it. Its runs take 20 ms, so fires are marked started
    // exactly as they start (shorter runs are marked up to one worker's worth
    // ahead, see `Scheduler::start_fire`).
    let config = "[scheduler]\nworkers = 1\ngrace_ms = 200\n";
    let store = SqliteStore::connect(&url).await.unwrap();
    let claimed_and_waiting = |store: SqliteStore| async move {
        wait_until(
            Duration::from_secs(60),
            "a claim waiting behind the long run",
            || {
                let store = store.clone();
                async move {
                    let fires = store.fire_list().await.unwrap_or_default();
                    fires.iter().any(|f| f.job_key == "a/long")
                        && fires.iter().any(|f| f.job_key == "a/waiting")
                }
            },
        )
        .await;
    };

    let step = |store: SqliteStore| async move {
        let keys = store.state_keys("a/long").await.unwrap_or_default();
        match keys.first() {
            Some(k) => store
                .state_get("a/long", k)
                .await
                .ok()
                .flatten()
                .and_then(|v| String::from_utf8(v).ok()?.parse::<u32>().ok())
                .unwrap_or(0),
            None => 0,
        }
    };
    let server = serve_with_config(dir.path(), &url, config);
    wait_started(&store, 0).await;
    wait_until(Duration::from_secs(60), "the long run to begin", || {
        let store = store.clone();
        async move { step(store).await > 0 }
    })
    .await;
    claimed_and_waiting(store.clone()).await;
    stop(server);
    let waiting = history_of(&store, "a/waiting").await;
    assert!(
        waiting.iter().all(|h| h.status == HistoryStatus::Success),
        "a deploy writes nothing for fires that never ran: {waiting:?}"
    );
    let long = history_of(&store, "a/long").await;
    assert_eq!(
        long.len(),
        1,
        "the run that had begun is recorded: {long:?}"
    );
    assert_eq!(long[0].status, HistoryStatus::Cancelled);

    let stopped_at = step(store.clone()).await;
    let mut server = serve_with_config(dir.path(), &url, config);
    let started = wait_started(&store, 0).await;
    wait_until(Duration::from_secs(60), "the long run to go on", || {
        let store = store.clone();
        async move { step(store).await > stopped_at }
    })
    .await;
    claimed_and_waiting(store.clone()).await;
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();
    let server = serve_with_config(dir.path(), &url, config);
    wait_started(&store, started).await;
    wait_until(
        Duration::from_secs(60),
        "the killed run to be recovered",
        || {
            let store = store.clone();
            async move {
                history_of(&store, "a/long")
                    .await
                    .iter()
                    .any(|h| h.details.contains("node-lost"))
            }
        },
    )
    .await;
    stop(server);
    let lost: Vec<_> = history_of(&store, "a/waiting")
        .await
        .into_iter()
        .filter(|h| h.details.contains("node-lost") || h.details.contains("\"recovering\":true"))
        .collect();
    assert!(
        lost.is_empty(),
        "fires that never ran are not lost runs: {lost:?}"
    );
    let long = history_of(&store, "a/long").await;
    assert_eq!(
        long.iter()
            .filter(|h| h.details.contains("node-lost"))
            .count(),
        1,
        "the run that had begun is the one lost: {long:?}"
    );
}
