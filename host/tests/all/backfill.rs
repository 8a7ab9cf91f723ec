//! Backfill, replay and bulk cancel on a running node with real guests, on
//! SQLite and PostgreSQL: the fires a backfill makes run at their scheduled
//! times as their guests see them (scheduled-at and the wall clock), are
//! marked in history and metrics, and follow the backfill's overlap mode; a
//! replay re-runs failed fires once; each operation is audited with its
//! filter and count.

use crate::common::*;

use quartzite::admin::bulk::{BackfillRequest, CancelRequest, ReplayRequest};
use quartzite::admin::{Admin, AdminError, Caller};
use quartzite::engine::scheduler::SchedulerConfig;
use quartzite::node::{self, ServeOptions};
use quartzite::runtime::{EngineConfig, RuntimeConfig};
use quartzite::store::Store;
use quartzite::store::model::{AuditFilter, HistoryEntry, HistoryStatus};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

struct Env {
    dir: tempfile::TempDir,
    url: String,
    schema: Option<String>,
}

async fn env(backend: Backend) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let (url, schema) = match backend {
        Backend::Sqlite => (
            format!("sqlite://{}", dir.path().join("quartzite.db").display()),
            None,
        ),
        Backend::Postgres => {
            let (url, schema) = pg_schema("qz_backfill").await;
            (url, Some(schema))
        }
    };
    Env { dir, url, schema }
}

/// A node running `manifest` (hostile guest as module `hostile`), and an
/// admin service on its store, as the CLI's `--db` mode has one.
struct Running {
    store: Arc<dyn Store>,
    metrics: Arc<quartzite::metrics::Metrics>,
    admin: Admin,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn run(env: &Env, jobs: &str) -> Running {
    let manifest = format!(
        "[[module]]\nname = \"hostile\"\npath = \"{}\"\n{jobs}",
        wasm("guest_hostile").display()
    );
    let path = env.dir.path().join("jobs.toml");
    std::fs::write(&path, manifest).unwrap();
    let options = ServeOptions {
        db_url: env.url.clone(),
        manifest: Some(path),
        node_id: format!("test-{}", quartzite::store::sched::new_id()),
        standby: false,
        scheduler: SchedulerConfig {
            poll_ms: 100,
            grace_ms: 300,
            ..SchedulerConfig::default()
        },
        runtime: RuntimeConfig {
            engine: EngineConfig::default(),
            cache_dir: Some(env.dir.path().join("cache")),
            node_id: "test".into(),
        },
    };
    let node = node::start(&options).await.unwrap();
    let store = Arc::clone(&node.store);
    let metrics = Arc::clone(node.scheduler.metrics());
    let admin = Admin::detached(
        Arc::clone(&store),
        RuntimeConfig {
            engine: EngineConfig::default(),
            cache_dir: Some(env.dir.path().join("cache")),
            node_id: "admin".into(),
        },
    );
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(node::run(node, false, rx));
    Running {
        store,
        metrics,
        admin,
        stop,
        task,
    }
}

impl Running {
    async fn stop(self, env: Env) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap();
        if let Some(schema) = env.schema {
            pg_drop(&schema).await;
        }
    }
}

fn operator() -> Caller {
    Caller::api("token:test".into(), None)
}

fn ms(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_millis()
}

/// The job's runs (not skipped or cancelled rows), in the order they started.
async fn runs(store: &Arc<dyn Store>, job: &str) -> Vec<HistoryEntry> {
    let mut rows: Vec<HistoryEntry> = history_of(store.as_ref(), job)
        .await
        .into_iter()
        .filter(|h| matches!(h.status, HistoryStatus::Success | HistoryStatus::Failed))
        .collect();
    rows.sort_by_key(|h| (h.started_ms, h.ended_ms));
    rows
}

fn details(h: &HistoryEntry) -> Value {
    serde_json::from_str(&h.details).unwrap()
}

/// The audit rows of `action`, newest first, with their summaries.
async fn audited(store: &Arc<dyn Store>, action: &str) -> Vec<(u16, Value)> {
    store
        .audit_list(&AuditFilter {
            action: Some(action.into()),
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.status, serde_json::from_str(&r.summary).unwrap()))
        .collect()
}

/// A cron job that fires by itself on three days of March only (no test
/// runs then, or its runs would be counted): the days of the DST change.
const CLOCK_JOB: &str = r#"
[[job]]
key = "bf/clock"
module = "hostile"
data = { op = "clock" }
[[job.trigger]]
cron = "0 30 1,2,3 7-9 3 ?"
tz = "America/New_York"
"#;

async fn a_backfill_runs_each_past_time_on_its_own_clock_one_at_a_time(backend: Backend) {
    let env = env(backend).await;
    let running = run(&env, CLOCK_JOB).await;
    let (store, admin) = (Arc::clone(&running.store), running.admin.clone());
    // 2026-03-08: New York skips 02:00-03:00 (EST to EDT at 07:00Z). The
    // times by hand: 01:30, 02:30, 03:30 local on the 7th (UTC-5), 01:30
    // (UTC-5) and 03:30 (UTC-4) on the 8th, all three on the 9th (UTC-4).
    let expected: Vec<i64> = [
        "2026-03-07T06:30:00Z",
        "2026-03-07T07:30:00Z",
        "2026-03-07T08:30:00Z",
        "2026-03-08T06:30:00Z",
        "2026-03-08T07:30:00Z",
        "2026-03-09T05:30:00Z",
        "2026-03-09T06:30:00Z",
        "2026-03-09T07:30:00Z",
    ]
    .map(ms)
    .into();
    let range = BackfillRequest {
        from: "2026-03-07T00:00:00Z".into(),
        to: "2026-03-10T00:00:00Z".into(),
        ..BackfillRequest::default()
    };
    // A dry run lists the times, changes nothing and is not audited.
    let dry = admin
        .job_backfill(
            &operator(),
            "bf/clock",
            &BackfillRequest {
                dry_run: true,
                ..range.clone()
            },
        )
        .await
        .unwrap();
    let listed: Vec<i64> = dry.body["times"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| ms(t["scheduled_at"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, expected);
    assert!(store.fire_list().await.unwrap().is_empty());
    assert!(audited(&store, "job.backfill").await.is_empty());

    // Too many times for --max: refused, saying how many there are.
    let err = admin
        .job_backfill(
            &operator(),
            "bf/clock",
            &BackfillRequest {
                max: Some(5),
                ..range.clone()
            },
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("holds 8 fire times") && err.to_string().contains("maximum of 5"),
        "{err}"
    );
    assert_eq!(err.http_status(), 422);
    // A range ending in the future, or empty, is refused with the field.
    let now = store.now_ms().await.unwrap();
    for (from, to, field, says) in [
        (
            "2026-03-07T00:00:00Z",
            "2099-01-01T00:00:00Z",
            "to",
            "in the future",
        ),
        (
            "2026-03-10T00:00:00Z",
            "2026-03-07T00:00:00Z",
            "to",
            "is not after from",
        ),
        (
            "yesterday",
            "2026-03-07T00:00:00Z",
            "from",
            "from \"yesterday\"",
        ),
    ] {
        let e = admin
            .job_backfill(
                &operator(),
                "bf/clock",
                &BackfillRequest {
                    from: from.into(),
                    to: to.into(),
                    ..BackfillRequest::default()
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&e, AdminError::Invalid { field: f, .. } if *f == field)
                && e.to_string().contains(says),
            "{from}..{to}: {e}"
        );
    }
    assert!(now > ms("2026-03-10T00:00:00Z"), "the test's range is past");

    let done = admin
        .job_backfill(&operator(), "bf/clock", &range)
        .await
        .unwrap();
    assert_eq!(
        (
            done.body["created"].as_u64(),
            done.body["existing"].as_u64()
        ),
        (Some(8), Some(0))
    );
    wait_until(Duration::from_secs(120), "8 backfill runs", || async {
        runs(&store, "bf/clock").await.len() == 8
    })
    .await;
    let ran = runs(&store, "bf/clock").await;
    // In scheduled order (buffer, the default; that a buffered fire waits
    // for the running one is the store suite's `backfill_times`).
    let order: Vec<i64> = ran.iter().filter_map(|h| h.scheduled_ms).collect();
    assert_eq!(order, expected);
    for h in &ran {
        assert_eq!(h.status, HistoryStatus::Success, "{h:?}");
        let d = details(h);
        assert_eq!(d["origin"], "backfill", "{d}");
        assert_eq!(d["backfill_overlap"], "buffer");
        let seen = &d["outcome"]["details"];
        let scheduled = h.scheduled_ms.unwrap();
        // scheduled-at is the backfilled time; the wall clock starts there
        // and moves on with the run (never the real date, months later).
        assert_eq!(seen["scheduled_ms"].as_i64(), Some(scheduled), "{seen}");
        let clock = seen["now_ms"].as_i64().unwrap();
        assert!(
            clock >= scheduled && clock - scheduled < 3_600_000,
            "the guest's clock read {clock} for a fire of {scheduled}"
        );
        assert_eq!(seen["day"].as_i64(), Some(scheduled / 86_400_000));
    }
    let metrics = running.metrics.encode();
    assert!(
        metrics.contains(
            r#"quartzite_fires_by_origin_total{job_group="bf",job_key="bf/clock",origin="backfill"} 8"#
        ),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("origin"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The audit row: the range, the mode and the counts.
    let rows = audited(&store, "job.backfill").await;
    // This one, after the four refused above (each audited with its status).
    assert_eq!(rows.len(), 5, "{rows:?}");
    let (status, summary) = &rows[0];
    assert_eq!(*status, 202);
    assert_eq!(summary["from"], "2026-03-07T00:00:00.000Z");
    assert_eq!(summary["to"], "2026-03-10T00:00:00.000Z");
    assert_eq!(summary["overlap"], "buffer");
    assert_eq!(
        (summary["count"].as_u64(), summary["created"].as_u64()),
        (Some(8), Some(8))
    );
    assert!(
        rows[1..].iter().all(|(status, _)| *status == 422),
        "{rows:?}"
    );
    running.stop(env).await;
}
on_both!(a_backfill_runs_each_past_time_on_its_own_clock_one_at_a_time);

async fn a_skipping_backfill_runs_one_time_while_its_job_runs_and_records_the_rest(
    backend: Backend,
) {
    let env = env(backend).await;
    let jobs = r#"
[[job]]
key = "bf/slow"
module = "hostile"
data = { op = "sleep", ms = 300 }
[[job.trigger]]
cron = "0 0 12 1 1 ?"
"#;
    let running = run(&env, jobs).await;
    let (store, admin) = (Arc::clone(&running.store), running.admin.clone());
    // Paused while the backfill is made, so that its three fires are due
    // together when the job resumes.
    admin
        .job_pause(&operator(), "bf/slow", true, &Default::default())
        .await
        .unwrap();
    let done = admin
        .job_backfill(
            &operator(),
            "bf/slow",
            &BackfillRequest {
                from: "2024-01-01T00:00:00Z".into(),
                to: "2026-01-02T00:00:00Z".into(),
                overlap: Some("skip".into()),
                ..BackfillRequest::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(done.body["created"].as_u64(), Some(3));
    admin
        .job_pause(&operator(), "bf/slow", false, &Default::default())
        .await
        .unwrap();
    wait_until(Duration::from_secs(60), "the backfill to end", || async {
        let h = history_of(store.as_ref(), "bf/slow").await;
        h.iter()
            .filter(|h| h.status == HistoryStatus::Success)
            .count()
            + h.iter()
                .filter(|h| h.status == HistoryStatus::Skipped)
                .count()
            == 3
    })
    .await;
    let history = history_of(store.as_ref(), "bf/slow").await;
    let ran: Vec<&HistoryEntry> = history
        .iter()
        .filter(|h| h.status == HistoryStatus::Success)
        .collect();
    assert_eq!(ran.len(), 1, "{history:?}");
    assert_eq!(ran[0].scheduled_ms, Some(ms("2024-01-01T12:00:00Z")));
    for h in history
        .iter()
        .filter(|h| h.status == HistoryStatus::Skipped)
    {
        assert_eq!(
            details(h)["detail"],
            "backfill --overlap skip: a run of this job is running"
        );
    }
    running.stop(env).await;
}
on_both!(a_skipping_backfill_runs_one_time_while_its_job_runs_and_records_the_rest);

async fn a_replay_reruns_failed_fires_once_however_often_it_is_asked(backend: Backend) {
    let env = env(backend).await;
    let jobs = r#"
[[job]]
key = "rp/fails"
module = "hostile"
data = { op = "fail", message = "broken input" }
[[job.trigger]]
cron = "0 0 12 1 1 ?"

[[job]]
key = "rp/fine"
module = "hostile"
data = { op = "ok" }
[[job.trigger]]
cron = "0 0 12 1 1 ?"
"#;
    let running = run(&env, jobs).await;
    let (store, admin) = (Arc::clone(&running.store), running.admin.clone());
    for key in ["rp/fails", "rp/fails", "rp/fine"] {
        admin.job_run_now(&operator(), key).await.unwrap();
    }
    wait_until(Duration::from_secs(60), "the first runs", || async {
        runs(&store, "rp/fails").await.len() == 2 && runs(&store, "rp/fine").await.len() == 1
    })
    .await;
    let originals = runs(&store, "rp/fails").await;
    let request = ReplayRequest {
        job: "rp/*".into(),
        since: "1h".into(),
        ..ReplayRequest::default()
    };
    let first = admin.history_replay(&operator(), &request).await.unwrap();
    assert_eq!(first.body["started"], 2, "{}", first.body);
    assert_eq!(first.body["already_replayed"], 0);
    wait_until(Duration::from_secs(60), "the replays", || async {
        runs(&store, "rp/fails").await.len() == 4
    })
    .await;
    let all = runs(&store, "rp/fails").await;
    let replays: Vec<&HistoryEntry> = all
        .iter()
        .filter(|h| details(h)["origin"] == "replay")
        .collect();
    assert_eq!(replays.len(), 2);
    let mut replayed: Vec<(String, Option<i64>)> = replays
        .iter()
        .map(|h| {
            (
                details(h)["replay_of"].as_str().unwrap().to_string(),
                h.scheduled_ms,
            )
        })
        .collect();
    let mut wanted: Vec<(String, Option<i64>)> = originals
        .iter()
        .map(|h| (h.fire_id.clone().unwrap(), h.scheduled_ms))
        .collect();
    replayed.sort();
    wanted.sort();
    assert_eq!(replayed, wanted, "each failed fire once, at its own time");
    // The replays failed too; asking again starts none of the four rows' fires.
    let second = admin.history_replay(&operator(), &request).await.unwrap();
    assert_eq!(second.body["started"], 0, "{}", second.body);
    assert_eq!(second.body["already_replayed"], 2);
    assert!(
        runs(&store, "rp/fine").await.len() == 1,
        "successes are not replayed"
    );
    let metrics = running.metrics.encode();
    assert!(
        metrics.contains(
            r#"quartzite_fires_by_origin_total{job_group="rp",job_key="rp/fails",origin="replay"} 2"#
        ),
        "{metrics}"
    );
    // Audited with the filter and the counts.
    let rows = audited(&store, "history.replay").await;
    let counts: Vec<(u64, u64)> = rows
        .iter()
        .map(|(_, s)| {
            (
                s["started"].as_u64().unwrap(),
                s["already_replayed"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counts, [(0, 2), (2, 0)]);
    assert_eq!(rows[0].1["filter"]["job"], "rp/*");
    assert_eq!(rows[0].1["filter"]["status"][0], "failed");
    // A bad filter names its field.
    let e = admin
        .history_replay(
            &operator(),
            &ReplayRequest {
                job: "rp".into(),
                since: "1h".into(),
                ..ReplayRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, AdminError::Invalid { field: "job", .. }), "{e}");
    running.stop(env).await;
}
on_both!(a_replay_reruns_failed_fires_once_however_often_it_is_asked);

async fn a_bulk_cancel_and_a_group_pause_are_audited_with_their_counts(backend: Backend) {
    let env = env(backend).await;
    let running = run(&env, CLOCK_JOB).await;
    let (store, admin) = (Arc::clone(&running.store), running.admin.clone());
    admin
        .group_pause(&operator(), "bf", true, &Default::default())
        .await
        .unwrap();
    let range = BackfillRequest {
        from: "2026-03-07T00:00:00Z".into(),
        to: "2026-03-08T00:00:00Z".into(),
        ..BackfillRequest::default()
    };
    admin
        .job_backfill(&operator(), "bf/clock", &range)
        .await
        .unwrap();
    admin.job_run_now(&operator(), "bf/clock").await.unwrap();
    let done = admin
        .fire_cancel(
            &operator(),
            &CancelRequest {
                job: "bf/*".into(),
                origin: Some("backfill".into()),
                reason: Some("wrong range".into()),
                ..CancelRequest::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(done.body["cancelled"], 3);
    let left = store.fire_list().await.unwrap();
    assert_eq!(left.len(), 1, "the run-now is left: {left:?}");
    let cancelled: Vec<HistoryEntry> = history_of(store.as_ref(), "bf/clock")
        .await
        .into_iter()
        .filter(|h| h.status == HistoryStatus::Cancelled)
        .collect();
    assert_eq!(cancelled.len(), 3);
    assert!(
        cancelled
            .iter()
            .all(|h| details(h)["note"] == "wrong range")
    );
    let rows = audited(&store, "fire.cancel").await;
    assert_eq!(rows[0].1["cancelled"], 3);
    assert_eq!(rows[0].1["filter"]["job"], "bf/*");
    assert_eq!(rows[0].1["filter"]["origin"], "backfill");
    let bad = admin
        .fire_cancel(
            &operator(),
            &CancelRequest {
                job: "bf/*".into(),
                origin: Some("manual".into()),
                ..CancelRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        bad.to_string()
            .contains("expected plain, backfill or replay"),
        "{bad}"
    );
    let paused = audited(&store, "group.pause").await;
    assert_eq!(paused[0].1["jobs"], 1);
    running.stop(env).await;
}
on_both!(a_bulk_cancel_and_a_group_pause_are_audited_with_their_counts);

/// A backfill honours the trigger's calendars: a time the calendar excludes
/// was no fire when the schedule ran, and is none now.
async fn a_backfill_leaves_out_the_times_its_triggers_calendars_exclude(backend: Backend) {
    let env = env(backend).await;
    let running = run(
        &env,
        r#"
[[calendar]]
name = "sundays"
kind = "weekly"
days = ["SUN"]

[[job]]
key = "bf/weekday"
module = "hostile"
data = { op = "ok" }
[[job.trigger]]
cron = "0 0 6 1-3 1 ?"
calendar = "sundays"
"#,
    )
    .await;
    // 2023-01-01 was a Sunday: of the three 06:00Z times, two remain.
    let dry = running
        .admin
        .job_backfill(
            &operator(),
            "bf/weekday",
            &BackfillRequest {
                from: "2023-01-01T00:00:00Z".into(),
                to: "2023-01-04T00:00:00Z".into(),
                dry_run: true,
                ..BackfillRequest::default()
            },
        )
        .await
        .unwrap();
    let listed: Vec<i64> = dry.body["times"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| ms(t["scheduled_at"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [ms("2023-01-02T06:00:00Z"), ms("2023-01-03T06:00:00Z")],
        "{}",
        dry.body
    );
    assert_eq!(dry.body["excluded_by_calendars"], 1);
    running.stop(env).await;
}
on_both!(a_backfill_leaves_out_the_times_its_triggers_calendars_exclude);
