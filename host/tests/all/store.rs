//! The store conformance suite: every test runs against a real SQLite file and
//! the real PostgreSQL on this machine (each PostgreSQL test in its own schema).
//!
//! PostgreSQL comes from `QUARTZITE_TEST_PG` (default
//! `postgres://postgres@127.0.0.1:5432/test`); it must be up: these tests fail,
//! never skip, without it.

use quartzite::engine::services::{StoreEvents, StoreKv};
use quartzite::runtime::services::LocalLocks;
use quartzite::runtime::{
    EngineConfig, HostServices, RunOutcome, RunRequest, Runtime, RuntimeConfig,
};
use quartzite::store::{ModulePut, ModuleRef, PgStore, SqliteStore, Store, StoreError};
use sqlx::postgres::PgConnectOptions;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

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
        // Connected with explicit options, the way a caller of the library would.
        let (url, schema) = crate::common::pg_schema("qz_test").await;
        let options = PgConnectOptions::from_str(&crate::common::pg_url())
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
            crate::common::pg_drop(&schema).await;
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

async fn state_writes_stay_within_the_jobs_quota(store: Arc<dyn Store>) {
    // Three keys and 10 bytes of values at most.
    let set = |key: &'static str, value: &'static [u8]| {
        let store = store.clone();
        async move {
            store
                .state_set_within("g/q", key, value, 3, 10)
                .await
                .unwrap()
        }
    };
    assert!(set("a", b"1234").await);
    assert!(set("b", b"1234").await);
    assert!(!set("c", b"123").await, "11 bytes is over the byte quota");
    assert!(set("c", b"12").await);
    assert!(!set("d", b"").await, "a fourth key is over the key quota");
    // Overwriting a key replaces its bytes: growing within the quota, shrinking always.
    assert!(!set("a", b"12345").await);
    assert!(set("a", b"1").await);
    assert!(!set("d", b"").await);
    assert_eq!(
        store.state_get("g/q", "a").await.unwrap(),
        Some(b"1".to_vec())
    );
    assert_eq!(store.state_keys("g/q").await.unwrap(), ["a", "b", "c"]);
    // Deleting frees room; other jobs have their own quota.
    assert!(store.state_delete("g/q", "b").await.unwrap());
    assert!(set("d", b"12345").await);
    assert!(
        store
            .state_set_within("g/other", "a", b"1234567890", 1, 10)
            .await
            .unwrap()
    );
    // Now a=1, c=12, d=12345: 3 keys, 8 bytes. Writes outside the quota path
    // (the host's own) count too, and a deleted key's bytes are freed.
    store.state_set("g/q", "c", b"1234").await.unwrap();
    assert!(
        !set("a", b"12").await,
        "c grew to 4 bytes: 11 would be over"
    );
    assert!(store.state_delete("g/q", "d").await.unwrap());
    assert!(
        set("e", b"12345").await,
        "d's five bytes and its key are free again"
    );
    assert!(!set("f", b"").await);
}
conformance!(
    state_writes_stay_within_the_jobs_quota,
    state_writes_stay_within_the_jobs_quota
);

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
        restore: true,
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

/// What a name resolves to now, and the `module_list` state of each version.
async fn name_state(store: &Arc<dyn Store>, name: &str) -> (String, Vec<String>) {
    let latest = store
        .module_get(&ModuleRef::Latest(name.into()))
        .await
        .unwrap()
        .unwrap()
        .version;
    let list = store
        .module_list(Some(name))
        .await
        .unwrap()
        .iter()
        .map(|m| {
            let state = match (m.current, m.withdrawn) {
                (true, _) => "current",
                (_, true) => "withdrawn",
                _ => "kept",
            };
            format!("{}:{state}", m.version)
        })
        .collect();
    (latest, list)
}

async fn rollback_withdraws_newer_versions_until_pushed_again(store: Arc<dyn Store>) {
    use quartzite::store::ModuleRollback;
    for (v, bytes) in [("1", b"one"), ("2", b"two"), ("3", b"thr")] {
        store.module_put(&module("m", v, bytes)).await.unwrap();
    }
    let back = |to: Option<&str>| ModuleRollback {
        name: "m".into(),
        to: to.map(str::to_string),
    };
    let now = store.module_rollback(&back(None)).await.unwrap().unwrap();
    assert_eq!((now.version.as_str(), now.current), ("2", true));
    assert_eq!(
        name_state(&store, "m").await,
        (
            "2".into(),
            vec!["3:withdrawn".into(), "2:current".into(), "1:kept".into()]
        )
    );
    // Pinned references still find a withdrawn version.
    let pinned = ModuleRef::Version {
        name: "m".into(),
        version: "3".into(),
    };
    assert!(store.module_get(&pinned).await.unwrap().is_some());

    store.module_rollback(&back(None)).await.unwrap().unwrap();
    assert_eq!(name_state(&store, "m").await.0, "1");
    match store.module_rollback(&back(None)).await {
        Err(StoreError::Conflict(msg)) => assert!(msg.contains("no version older than 1"), "{msg}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.module_rollback(&back(Some("9"))).await.unwrap(), None);
    let nobody = ModuleRollback {
        name: "nobody".into(),
        to: None,
    };
    assert_eq!(store.module_rollback(&nobody).await.unwrap(), None);

    // A start-up re-push keeps the rollback; an operator's push restores.
    let quiet = ModulePut {
        restore: false,
        ..module("m", "3", b"thr")
    };
    store.module_put(&quiet).await.unwrap();
    assert_eq!(name_state(&store, "m").await.0, "1");
    store.module_put(&module("m", "3", b"thr")).await.unwrap();
    assert_eq!(
        name_state(&store, "m").await,
        (
            "3".into(),
            vec!["3:current".into(), "2:withdrawn".into(), "1:kept".into()]
        )
    );
    // Rolling forward to a withdrawn version works too.
    store
        .module_rollback(&back(Some("2")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        name_state(&store, "m").await,
        (
            "2".into(),
            vec!["3:withdrawn".into(), "2:current".into(), "1:kept".into()]
        )
    );
}
conformance!(
    module_rollback,
    rollback_withdraws_newer_versions_until_pushed_again
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
        events: StoreEvents::new(Arc::clone(store), 8),
        grants: quartzite::secrets::StoreGrants::new(Arc::clone(store), Arc::default(), None),
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

// ---- scheduling -----------------------------------------------------------

use quartzite::schedule::trigger::{MisfireLimits, MisfirePolicy, TriggerKind, TriggerSpec};
use quartzite::store::model::{
    AcquireParams, ClaimRef, Completion, FireClaim, FireNext, HistoryEntry, HistoryFilter,
    HistoryStatus, JobDef, JobRoom, NodeCheckIn, Overlap, PauseNote, TriggerPut, TriggerState,
    WitRange,
};

fn at_job(store_key: &str, at_ms: i64, misfire: MisfirePolicy) -> (JobDef, Vec<TriggerPut>) {
    let job = JobDef::new(store_key, "hello");
    let trigger = TriggerPut {
        trigger_key: format!("{store_key}:at"),
        job_key: store_key.into(),
        spec: TriggerSpec {
            kind: TriggerKind::At(at_ms),
            start_ms: None,
            end_ms: None,
            misfire,
            jitter_ms: 0,
            calendars: Vec::new(),
        },
        priority: 5,
    };
    (job, vec![trigger])
}

fn params(node: &str) -> AcquireParams {
    AcquireParams {
        node_id: node.into(),
        lookahead_ms: 0,
        max: 10,
        lease_ms: 60_000,
        misfire: MisfireLimits::default(),
        runs: WitRange::up_to(1, 0),
        started: false,
        room: JobRoom::unbounded(),
    }
}

fn done(fire: &FireClaim, node: &str, status: HistoryStatus, next: FireNext) -> Completion {
    Completion {
        fire_id: fire.fire_id.clone(),
        node_id: node.into(),
        fencing: fire.fencing,
        held: fire.held,
        next,
        new_data: None,
        history: HistoryEntry {
            id: quartzite::store::sched::new_id(),
            fire_id: Some(fire.fire_id.clone()),
            job_key: fire.job_key.clone(),
            trigger_key: Some(fire.trigger_key.clone()),
            status,
            attempt: fire.attempt,
            node_id: Some(node.into()),
            scheduled_ms: Some(fire.scheduled_ms),
            started_ms: fire.scheduled_ms,
            ended_ms: fire.scheduled_ms,
            duration_ms: 0,
            details: "{}".into(),
        },
    }
}

/// Claims what is due as `p` says and returns the first fire.
async fn claim_first(store: &Arc<dyn Store>, p: &AcquireParams) -> FireClaim {
    store.fire_acquire(p).await.unwrap().fires.remove(0)
}

async fn history_of(store: &Arc<dyn Store>, job: &str) -> Vec<HistoryEntry> {
    store
        .history_list(&HistoryFilter {
            job_key: Some(job.into()),
            limit: 1000,
            ..HistoryFilter::default()
        })
        .await
        .unwrap()
}

async fn a_due_fire_is_claimed_once_and_completed_once(store: Arc<dyn Store>) {
    let now = store.now_ms().await.unwrap();
    let (job, triggers) = at_job("g/once", now, MisfirePolicy::FireNow);
    store.job_put(&job, &triggers).await.unwrap();
    let first = store.fire_acquire(&params("a")).await.unwrap();
    assert_eq!(first.fires.len(), 1);
    let fire = &first.fires[0];
    assert_eq!(
        (fire.scheduled_ms, fire.attempt, fire.recovering),
        (now, 1, false)
    );
    assert!(
        store
            .fire_acquire(&params("b"))
            .await
            .unwrap()
            .fires
            .is_empty(),
        "a claimed fire is not claimed again"
    );
    let triggers = store.trigger_list(Some("g/once")).await.unwrap();
    assert_eq!(triggers[0].state.as_str(), "COMPLETE");
    assert_eq!(
        store
            .fire_complete(&[done(fire, "a", HistoryStatus::Success, FireNext::Done)])
            .await
            .unwrap(),
        [true]
    );
    assert_eq!(
        store
            .fire_complete(&[done(fire, "a", HistoryStatus::Success, FireNext::Done)])
            .await
            .unwrap(),
        [false]
    );
    let history = history_of(&store, "g/once").await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].status, HistoryStatus::Success);
    assert!(store.fire_list().await.unwrap().is_empty());
}
conformance!(claim_once, a_due_fire_is_claimed_once_and_completed_once);

/// A run reads nothing for its grants: the claim brings them with the job,
/// as they are now (a grant changed since the last fire holds at the next).
async fn a_claim_carries_the_grants_of_its_job(store: Arc<dyn Store>) {
    let now = store.now_ms().await.unwrap();
    let grants = |pattern: &str| quartzite::grants::Grants {
        http: vec![pattern.to_string()],
        ..Default::default()
    };
    let (job, triggers) = at_job("g/granted", now, MisfirePolicy::FireNow);
    let job = job.with_grants(&grants("https://a.example/*"));
    store.job_put(&job, &triggers).await.unwrap();
    store
        .job_put(
            &job.clone().with_grants(&grants("https://b.example/*")),
            &triggers,
        )
        .await
        .unwrap();
    let claimed = store.fire_acquire(&params("a")).await.unwrap();
    assert_eq!(claimed.fires.len(), 1);
    assert_eq!(
        claimed.fires[0].job.grants().unwrap(),
        grants("https://b.example/*")
    );
    let id = store.fire_now("g/granted").await.unwrap();
    store
        .job_put(
            &job.with_grants(&quartzite::grants::Grants::default()),
            &triggers,
        )
        .await
        .unwrap();
    let claimed = store.fire_acquire(&params("a")).await.unwrap();
    let fire = claimed.fires.iter().find(|f| f.fire_id == id).unwrap();
    assert_eq!(fire.job.grants, None, "withdrawn grants are gone");
}
conformance!(claim_grants, a_claim_carries_the_grants_of_its_job);

/// A job with no room left in the node's share (issue 15, item 8): its due
/// fires are queued, not claimed, and counted; another job's are claimed.
async fn a_job_without_room_is_left_queued_and_the_others_claimed(store: Arc<dyn Store>) {
    let now = store.now_ms().await.unwrap();
    let (job, mut triggers) = at_job("g/full", now - 3, MisfirePolicy::FireNow);
    for (i, ago) in [(2, 2), (3, 1)] {
        let mut more = triggers[0].clone();
        more.trigger_key = format!("g/full:at{i}");
        more.spec.kind = TriggerKind::At(now - ago);
        triggers.push(more);
    }
    store.job_put(&job, &triggers).await.unwrap();
    let (other, other_triggers) = at_job("g/other", now, MisfirePolicy::FireNow);
    store.job_put(&other, &other_triggers).await.unwrap();
    let room = |full: usize| JobRoom {
        default: 10,
        jobs: [("g/full".to_owned(), full)].into(),
    };
    let first = store
        .fire_acquire(&AcquireParams {
            room: room(1),
            ..params("a")
        })
        .await
        .unwrap();
    let mut claimed: Vec<&str> = first.fires.iter().map(|f| f.job_key.as_str()).collect();
    claimed.sort_unstable();
    assert_eq!(claimed, ["g/full", "g/other"]);
    assert_eq!(first.deferred, [("g/full".to_owned(), 2)]);
    let none = store
        .fire_acquire(&AcquireParams {
            room: room(0),
            ..params("a")
        })
        .await
        .unwrap();
    assert!(none.fires.is_empty(), "{:?}", none.fires);
    let waiting = store.fire_running().await.unwrap();
    assert_eq!(
        waiting
            .iter()
            .filter(|f| f.job_key == "g/full" && f.state == "scheduled")
            .count(),
        2,
        "{waiting:?}"
    );
    let rest = store.fire_acquire(&params("a")).await.unwrap();
    assert_eq!(
        rest.fires.len(),
        2,
        "with room again, the queued fires are claimed"
    );
    assert!(rest.fires.iter().all(|f| f.job_key == "g/full"));
    assert!(
        history_of(&store, "g/full").await.is_empty(),
        "deferring records no history"
    );
}
conformance!(
    job_room,
    a_job_without_room_is_left_queued_and_the_others_claimed
);

async fn a_dead_nodes_fire_is_recovered_once_and_its_late_completion_refused(
    store: Arc<dyn Store>,
) {
    let now = store.now_ms().await.unwrap();
    let (mut job, triggers) = at_job("g/recover", now, MisfirePolicy::FireNow);
    job.requests_recovery = true;
    store.job_put(&job, &triggers).await.unwrap();
    let lost = store
        .fire_acquire(&AcquireParams {
            lease_ms: -1,
            ..params("dead")
        })
        .await
        .unwrap()
        .fires
        .remove(0);
    mark_started(&store, "dead", &lost).await;
    let lock_of_lost_run = format!("dead/{}", lost.fire_id);
    store
        .lock_try("shared", &lock_of_lost_run, 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.fire_recover(60_000, None).await.unwrap(), 1);
    assert!(
        store.lock_list().await.unwrap().is_empty(),
        "the lost run's locks are released with it"
    );
    assert_eq!(
        store.fire_recover(60_000, None).await.unwrap(),
        0,
        "recovered exactly once"
    );
    let again = claim_first(&store, &params("alive")).await;
    assert_eq!(again.fire_id, lost.fire_id);
    assert!(again.recovering);
    assert!(again.fencing > lost.fencing);
    let late = done(&lost, "dead", HistoryStatus::Success, FireNext::Done);
    assert_eq!(
        store
            .fire_complete(std::slice::from_ref(&late))
            .await
            .unwrap(),
        [false],
        "the dead node's late completion is refused"
    );
    // In one batch with a completion that holds its claim, only the late one
    // is refused, and it records nothing.
    let on_time = done(&again, "alive", HistoryStatus::Success, FireNext::Done);
    assert_eq!(
        store.fire_complete(&[late, on_time]).await.unwrap(),
        [false, true]
    );
    assert_eq!(history_of(&store, "g/recover").await.len(), 1);
}
conformance!(
    recover,
    a_dead_nodes_fire_is_recovered_once_and_its_late_completion_refused
);

async fn a_live_node_late_to_check_in_never_recovers_its_own_runs(store: Arc<dyn Store>) {
    let now = store.now_ms().await.unwrap();
    let (mut job, triggers) = at_job("g/busy", now, MisfirePolicy::FireNow);
    job.requests_recovery = true;
    store.job_put(&job, &triggers).await.unwrap();
    store
        .node_heartbeat(&check_in("busy", WitRange::up_to(1, 0)))
        .await
        .unwrap();
    let running = claim_first(&store, &params("busy")).await;
    mark_started(&store, "busy", &running).await;
    // Its last check-in is long past (a node saturated by its guests).
    store.node_restart("busy").await.unwrap();
    assert_eq!(
        store.fire_recover(1_500, Some("busy")).await.unwrap(),
        0,
        "the node itself does not take its own running fire for lost"
    );
    assert_eq!(store.fire_list().await.unwrap().len(), 1);
    assert_eq!(
        store.fire_recover(1_500, Some("other")).await.unwrap(),
        1,
        "another node does"
    );
    let again = claim_first(&store, &params("other")).await;
    assert_eq!(again.fire_id, running.fire_id);
}
conformance!(
    live_node,
    a_live_node_late_to_check_in_never_recovers_its_own_runs
);

async fn mark(store: &Arc<dyn Store>, node: &str, fire: &FireClaim) -> Vec<String> {
    store
        .fire_mark_started(node, &[ClaimRef::from(fire)])
        .await
        .unwrap()
}

async fn mark_started(store: &Arc<dyn Store>, node: &str, fire: &FireClaim) {
    assert_eq!(
        mark(store, node, fire).await,
        std::slice::from_ref(&fire.fire_id)
    );
}

/// A job of one `at` trigger at `now` whose jitter (`jitter_ms`) delays it by
/// a time within `delays`: keys are tried until one's delay falls there.
fn jittered_at_job(
    prefix: &str,
    now: i64,
    jitter_ms: u64,
    delays: std::ops::Range<i64>,
) -> (JobDef, Vec<TriggerPut>, i64) {
    let (job, mut triggers) = (0..)
        .map(|i| at_job(&format!("{prefix}{i}"), now, MisfirePolicy::FireNow))
        .find(|(_, t)| {
            let spec = TriggerSpec {
                jitter_ms,
                ..t[0].spec.clone()
            };
            delays.contains(&spec.jitter_delay(&t[0].trigger_key, now, None))
        })
        .unwrap();
    triggers[0].spec.jitter_ms = jitter_ms;
    let delay = triggers[0]
        .spec
        .jitter_delay(&triggers[0].trigger_key, now, None);
    (job, triggers, delay)
}

/// The database went away for longer than a lease: the node's claim ran out
/// and was handed back, and the node claimed the fire again. The task of the
/// first claim, still waiting for a worker, must not start the fire too: the
/// second claim runs it, once.
async fn a_claim_handed_back_and_made_again_by_its_node_runs_once(store: Arc<dyn Store>) {
    let now = store.now_ms().await.unwrap();
    // A `forbid` job's fire is a `fires` row; an `allow` job's a held claim.
    for (key, overlap) in [
        ("g/again-forbid", Overlap::Forbid),
        ("g/again-allow", Overlap::Allow),
    ] {
        let (mut job, triggers) = at_job(key, now, MisfirePolicy::FireNow);
        job.overlap = overlap;
        store.job_put(&job, &triggers).await.unwrap();
    }
    let first = store
        .fire_acquire(&AcquireParams {
            lease_ms: -1,
            ..params("a")
        })
        .await
        .unwrap()
        .fires;
    assert_eq!(first.len(), 2);
    assert_eq!(
        store.fire_recover(60_000, Some("a")).await.unwrap(),
        2,
        "both leases ran out"
    );
    let second = store.fire_acquire(&params("a")).await.unwrap().fires;
    assert_eq!(second.len(), 2, "the same node claims both again");
    for old in &first {
        let new = second.iter().find(|f| f.fire_id == old.fire_id).unwrap();
        assert_ne!(new.fencing, old.fencing, "{}: a new claim", old.job_key);
        assert!(
            mark(&store, "a", old).await.is_empty(),
            "{}: the first claim's run must not begin",
            old.job_key
        );
        mark_started(&store, "a", new).await;
        let stale = done(old, "a", HistoryStatus::Success, FireNext::Done);
        let current = done(new, "a", HistoryStatus::Success, FireNext::Done);
        assert_eq!(
            store.fire_complete(&[stale, current]).await.unwrap(),
            [false, true],
            "{}: only the second claim ends the fire",
            old.job_key
        );
        assert_eq!(history_of(&store, &old.job_key).await.len(), 1);
    }
    assert!(store.fire_list().await.unwrap().is_empty());
}
conformance!(
    claimed_again,
    a_claim_handed_back_and_made_again_by_its_node_runs_once
);

async fn a_lost_claim_whose_run_never_began_waits_again_untouched(store: Arc<dyn Store>) {
    let now = store.now_ms().await.unwrap();
    for (key, recovery) in [("g/ahead", false), ("g/ahead-flagged", true)] {
        let (mut job, triggers) = at_job(key, now, MisfirePolicy::FireNow);
        job.requests_recovery = recovery;
        store.job_put(&job, &triggers).await.unwrap();
    }
    let claimed = store
        .fire_acquire(&AcquireParams {
            lease_ms: -1,
            ..params("dead")
        })
        .await
        .unwrap()
        .fires;
    assert_eq!(claimed.len(), 2);
    assert_eq!(store.fire_recover(60_000, None).await.unwrap(), 2);
    for key in ["g/ahead", "g/ahead-flagged"] {
        assert!(
            history_of(&store, key).await.is_empty(),
            "no node-lost row for a fire that never ran"
        );
    }
    let again = store.fire_acquire(&params("alive")).await.unwrap().fires;
    assert_eq!(again.len(), 2, "both wait again");
    for fire in &again {
        let before = claimed.iter().find(|c| c.fire_id == fire.fire_id).unwrap();
        assert!(!fire.recovering, "not flagged: it never ran");
        assert_eq!(fire.attempt, before.attempt);
    }
    // Released by its node at a stop, it leaves no row either.
    let unclaim = done(
        &again[0],
        "alive",
        HistoryStatus::Cancelled,
        FireNext::Unclaim,
    );
    assert_eq!(store.fire_complete(&[unclaim]).await.unwrap(), [true]);
    assert!(history_of(&store, &again[0].job_key).await.is_empty());
    let third = claim_first(&store, &params("other")).await;
    assert_eq!(third.fire_id, again[0].fire_id);
    // Claimed already marked (a node of very short runs): lost, it was started.
    let (job, triggers) = at_job("g/marked", now, MisfirePolicy::FireNow);
    store.job_put(&job, &triggers).await.unwrap();
    let marked = store
        .fire_acquire(&AcquireParams {
            lease_ms: -1,
            started: true,
            ..params("dead")
        })
        .await
        .unwrap()
        .fires;
    assert!(marked.iter().any(|f| f.job_key == "g/marked"));
    store.fire_recover(60_000, None).await.unwrap();
    let lost = history_of(&store, "g/marked").await;
    assert_eq!(lost.len(), 1);
    assert!(lost[0].details.contains("node-lost"), "{}", lost[0].details);
    // The same for a fire created in the claim already claimed (an `allow`
    // job's jittered fire, due within the look-ahead): it was marked too.
    let now = store.now_ms().await.unwrap();
    let (job, triggers, _) = jittered_at_job("g/marked-jitter", now, 3_000, 300..2_000);
    store.job_put(&job, &triggers).await.unwrap();
    let marked = store
        .fire_acquire(&AcquireParams {
            lease_ms: -1,
            lookahead_ms: 5_000,
            started: true,
            ..params("dead")
        })
        .await
        .unwrap()
        .fires;
    let fire = marked.iter().find(|f| f.job_key == job.job_key).unwrap();
    assert!(!fire.held, "claimed as a `fires` row");
    store.fire_recover(60_000, None).await.unwrap();
    let lost = history_of(&store, &job.job_key).await;
    assert_eq!(lost.len(), 1, "lost, it was started, not handed back unrun");
    assert!(lost[0].details.contains("node-lost"), "{}", lost[0].details);
}
conformance!(
    ahead,
    a_lost_claim_whose_run_never_began_waits_again_untouched
);

async fn without_recovery_a_lost_fire_is_recorded_as_failed(store: Arc<dyn Store>) {
    let now = store.now_ms().await.unwrap();
    let (job, triggers) = at_job("g/lost", now, MisfirePolicy::FireNow);
    store.job_put(&job, &triggers).await.unwrap();
    let lost = store
        .fire_acquire(&AcquireParams {
            lease_ms: -1,
            ..params("dead")
        })
        .await
        .unwrap()
        .fires
        .remove(0);
    mark_started(&store, "dead", &lost).await;
    assert_eq!(store.fire_recover(60_000, None).await.unwrap(), 1);
    let history = history_of(&store, "g/lost").await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].status, HistoryStatus::Failed);
    assert!(
        history[0].details.contains("node-lost"),
        "{}",
        history[0].details
    );
    assert!(store.fire_list().await.unwrap().is_empty());
}
conformance!(lost, without_recovery_a_lost_fire_is_recorded_as_failed);

async fn overlap_forbid_waits_and_skip_records(store: Arc<dyn Store>) {
    for (key, overlap) in [("g/forbid", Overlap::Forbid), ("g/skip", Overlap::Skip)] {
        let mut job = JobDef::new(key, "hello");
        job.overlap = overlap;
        store.job_put(&job, &[]).await.unwrap();
        store.fire_now(key).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        store.fire_now(key).await.unwrap();
    }
    let claimed = store.fire_acquire(&params("a")).await.unwrap();
    let keys: Vec<&str> = claimed.fires.iter().map(|f| f.job_key.as_str()).collect();
    assert_eq!(
        keys.iter().filter(|k| **k == "g/forbid").count(),
        1,
        "{keys:?}"
    );
    assert_eq!(
        keys.iter().filter(|k| **k == "g/skip").count(),
        1,
        "{keys:?}"
    );
    let skipped = history_of(&store, "g/skip").await;
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].status, HistoryStatus::Skipped);
    assert!(skipped[0].details.contains("overlap"));
    assert!(
        store
            .fire_acquire(&params("a"))
            .await
            .unwrap()
            .fires
            .is_empty(),
        "the second forbid fire is blocked"
    );
    let first = claimed
        .fires
        .iter()
        .find(|f| f.job_key == "g/forbid")
        .unwrap();
    store
        .fire_complete(&[done(first, "a", HistoryStatus::Success, FireNext::Done)])
        .await
        .unwrap();
    let second = store.fire_acquire(&params("a")).await.unwrap();
    assert_eq!(second.fires.len(), 1);
    assert_eq!(second.fires[0].job_key, "g/forbid");
}
conformance!(overlap, overlap_forbid_waits_and_skip_records);

async fn overlap_cancel_other_marks_the_running_fire_for_its_node(store: Arc<dyn Store>) {
    let mut job = JobDef::new("g/latest", "hello");
    job.overlap = Overlap::CancelOther;
    store.job_put(&job, &[]).await.unwrap();
    store.fire_now("g/latest").await.unwrap();
    let running = claim_first(&store, &params("a")).await;
    assert!(store.fire_cancel_requests("a").await.unwrap().is_empty());
    // A newer fire, claimed by another node: it waits, and marks the running one.
    let newer = store.fire_now("g/latest").await.unwrap();
    let claim = store.fire_acquire(&params("b")).await.unwrap();
    assert!(
        claim.fires.is_empty(),
        "the newer fire waits for the running one to end"
    );
    assert_eq!(claim.superseded, [(running.fire_id.clone(), newer.clone())]);
    // Node a finds the request (its upkeep asks for it); node b has none.
    assert_eq!(
        store.fire_cancel_requests("a").await.unwrap(),
        [(running.fire_id.clone(), newer.clone())]
    );
    assert!(store.fire_cancel_requests("b").await.unwrap().is_empty());
    // Asking again changes nothing; once the stopped run ends, the newer runs.
    assert!(
        store
            .fire_acquire(&params("b"))
            .await
            .unwrap()
            .superseded
            .is_empty()
    );
    store
        .fire_complete(&[done(
            &running,
            "a",
            HistoryStatus::Cancelled,
            FireNext::Done,
        )])
        .await
        .unwrap();
    let next = claim_first(&store, &params("b")).await;
    assert_eq!(next.fire_id, newer);
    assert!(store.fire_cancel_requests("a").await.unwrap().is_empty());
}
conformance!(
    overlap_cancel_other,
    overlap_cancel_other_marks_the_running_fire_for_its_node
);

/// Issue 19 item 4: a backlog of one job does not hold back another job's
/// fire that has just come due, neither as a due trigger nor as a waiting fire.
async fn a_backlog_of_one_job_leaves_room_for_the_fire_just_due(store: Arc<dyn Store>) {
    let now = store.now_ms().await.unwrap();
    // 300 one-shot triggers of one job, all an hour late.
    let flood = JobDef::new("g/flood", "hello");
    let triggers: Vec<TriggerPut> = (0..300)
        .map(|i| TriggerPut {
            trigger_key: format!("g/flood:t{i}"),
            ..at_job("g/flood", now - 3_600_000 + i, MisfirePolicy::FireNow)
                .1
                .remove(0)
        })
        .collect();
    let (tick, tick_triggers) = at_job("g/tick", now, MisfirePolicy::FireNow);
    store
        .jobs_put(&[(flood, triggers), (tick, tick_triggers)])
        .await
        .unwrap();
    let claimed = store.fire_acquire(&params("a")).await.unwrap();
    let jobs: Vec<&str> = claimed.fires.iter().map(|f| f.job_key.as_str()).collect();
    assert_eq!(jobs.len(), 10, "{jobs:?}");
    assert!(
        jobs.contains(&"g/tick"),
        "the fire just due waits behind the backlog: {jobs:?}"
    );

    // The same with waiting fires: 300 of one job, then one of another.
    let mut waiting = JobDef::new("g/queue", "hello");
    waiting.overlap = Overlap::Allow;
    store.job_put(&waiting, &[]).await.unwrap();
    store
        .job_put(&JobDef::new("g/late", "hello"), &[])
        .await
        .unwrap();
    for _ in 0..300 {
        // Manual fires are unique per job and millisecond.
        store.fire_now("g/queue").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store.fire_now("g/late").await.unwrap();
    let p = AcquireParams {
        max: 10,
        room: JobRoom {
            default: usize::MAX,
            // The earlier backlog of g/flood is not what this part asks about.
            jobs: [("g/flood".to_string(), 0)].into(),
        },
        ..params("a")
    };
    let claimed = store.fire_acquire(&p).await.unwrap();
    let jobs: Vec<&str> = claimed.fires.iter().map(|f| f.job_key.as_str()).collect();
    assert!(
        jobs.contains(&"g/late"),
        "the waiting fire just due waits behind the backlog: {jobs:?}"
    );
}
conformance!(
    fairness,
    a_backlog_of_one_job_leaves_room_for_the_fire_just_due
);

async fn overlap_buffer_one_keeps_one_fire_waiting(store: Arc<dyn Store>) {
    let mut job = JobDef::new("g/buffer", "hello");
    job.overlap = Overlap::BufferOne;
    store.job_put(&job, &[]).await.unwrap();
    assert_eq!(
        store.job_get("g/buffer").await.unwrap().unwrap().overlap,
        Overlap::BufferOne,
        "the policy is stored as it was put"
    );
    for _ in 0..4 {
        store.fire_now("g/buffer").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // The first runs, the second waits, the third and fourth are skipped.
    let claimed = store.fire_acquire(&params("a")).await.unwrap().fires;
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    let skipped = history_of(&store, "g/buffer").await;
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(
        skipped
            .iter()
            .all(|h| h.status == HistoryStatus::Skipped && h.details.contains("buffer-one"))
    );
    assert!(
        store
            .fire_acquire(&params("a"))
            .await
            .unwrap()
            .fires
            .is_empty()
    );
    // A fire made while one waits is skipped too, not queued behind it.
    store.fire_now("g/buffer").await.unwrap();
    assert!(
        store
            .fire_acquire(&params("a"))
            .await
            .unwrap()
            .fires
            .is_empty()
    );
    assert_eq!(history_of(&store, "g/buffer").await.len(), 3);
    store
        .fire_complete(&[done(
            &claimed[0],
            "a",
            HistoryStatus::Success,
            FireNext::Done,
        )])
        .await
        .unwrap();
    // The waiting one runs after the first, and nothing is left after it.
    let next = store.fire_acquire(&params("a")).await.unwrap().fires;
    assert_eq!(next.len(), 1);
    assert!(next[0].scheduled_ms > claimed[0].scheduled_ms);
    assert_eq!(
        store.fire_list().await.unwrap().len(),
        1,
        "only the running fire"
    );
}
conformance!(buffer_one, overlap_buffer_one_keeps_one_fire_waiting);

async fn a_jittered_fire_is_due_after_its_time_and_recorded_at_it(store: Arc<dyn Store>) {
    let now = store.now_ms().await.unwrap();
    // A key whose delay for this time is clearly ahead (the delay is derived
    // from the trigger and the time, and can be anything up to the jitter).
    let (job, triggers, delay) = jittered_at_job("g/jitter", now, 3_000, 300..2_000);
    store.job_put(&job, &triggers).await.unwrap();
    assert_eq!(
        store.trigger_list(Some(&job.job_key)).await.unwrap()[0]
            .spec
            .jitter_ms,
        3_000,
        "the jitter is stored"
    );
    assert!(
        store
            .fire_acquire(&params("a"))
            .await
            .unwrap()
            .fires
            .is_empty(),
        "not claimed before its due time"
    );
    let waiting = store.fire_list().await.unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].scheduled_ms, now);
    assert_eq!(waiting[0].due_ms, now + delay);
    let mut claimed = Vec::new();
    while claimed.is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        claimed = store.fire_acquire(&params("a")).await.unwrap().fires;
    }
    assert!(store.now_ms().await.unwrap() >= now + delay);
    assert_eq!(claimed[0].scheduled_ms, now, "it keeps its scheduled time");
}
conformance!(
    jitter,
    a_jittered_fire_is_due_after_its_time_and_recorded_at_it
);

async fn a_pause_keeps_its_note_and_ends_by_itself_at_its_time(store: Arc<dyn Store>) {
    let now = store.now_ms().await.unwrap();
    let (job, triggers) = at_job("g/noted", now + 60_000, MisfirePolicy::FireNow);
    store.job_put(&job, &triggers).await.unwrap();
    let (other, triggers) = at_job("g/forever", now + 60_000, MisfirePolicy::FireNow);
    store.job_put(&other, &triggers).await.unwrap();
    let note = PauseNote {
        note: Some("upstream maintenance, ticket OPS-12".into()),
        until_ms: Some(now + 400),
    };
    assert!(store.job_pause("g/noted", true, &note).await.unwrap());
    let forever = PauseNote {
        note: Some("until further notice".into()),
        until_ms: None,
    };
    assert!(store.job_pause("g/forever", true, &forever).await.unwrap());
    let stored = store.job_get("g/noted").await.unwrap().unwrap();
    assert!(stored.paused);
    assert_eq!(stored.pause, note);
    assert!(store.jobs_resume_due().await.unwrap().is_empty(), "not yet");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(store.jobs_resume_due().await.unwrap(), ["g/noted"]);
    let resumed = store.job_get("g/noted").await.unwrap().unwrap();
    assert!(!resumed.paused);
    assert_eq!(
        resumed.pause,
        PauseNote::default(),
        "the note goes with the pause"
    );
    let still = store.job_get("g/forever").await.unwrap().unwrap();
    assert!(
        still.paused && still.pause == forever,
        "a pause without an end stays"
    );
    // Resuming by hand clears the note too.
    assert!(store.job_pause("g/forever", false, &forever).await.unwrap());
    assert_eq!(
        store.job_get("g/forever").await.unwrap().unwrap().pause,
        PauseNote::default()
    );
}
conformance!(
    pause_note,
    a_pause_keeps_its_note_and_ends_by_itself_at_its_time
);

async fn retries_come_back_as_the_next_attempt(store: Arc<dyn Store>) {
    let now = store.now_ms().await.unwrap();
    let (job, triggers) = at_job("g/retry", now, MisfirePolicy::FireNow);
    store.job_put(&job, &triggers).await.unwrap();
    let fire = claim_first(&store, &params("a")).await;
    let retry = done(
        &fire,
        "a",
        HistoryStatus::Retried,
        FireNext::Retry { due_ms: now + 200 },
    );
    store.fire_complete(&[retry]).await.unwrap();
    assert!(
        store
            .fire_acquire(&params("a"))
            .await
            .unwrap()
            .fires
            .is_empty(),
        "not before its due time"
    );
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    let second = claim_first(&store, &params("a")).await;
    assert_eq!(
        (second.fire_id.as_str(), second.attempt),
        (fire.fire_id.as_str(), 2)
    );
}
conformance!(retry, retries_come_back_as_the_next_attempt);

/// A fire of an `allow` job claimed as it becomes due is a `held_claims` row,
/// not a `fires` row: it must be seen, counted, unique and completable exactly
/// as the other kind.
async fn a_held_claim_is_listed_unique_and_outlives_its_job(store: Arc<dyn Store>) {
    let now = store.now_ms().await.unwrap();
    let ahead = AcquireParams {
        lookahead_ms: 60_000,
        ..params("a")
    };
    let at = now + 30_000;
    let (job, triggers) = at_job("g/held", at, MisfirePolicy::FireNow);
    store.job_put(&job, &triggers).await.unwrap();
    let fire = claim_first(&store, &ahead).await;
    assert!(
        fire.held,
        "an allow job's fire is claimed as it becomes due"
    );
    store
        .node_heartbeat(&check_in("a", WitRange::up_to(1, 0)))
        .await
        .unwrap();

    // Seen by every view of the fires in flight.
    let listed = store.fire_list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].fire_id.as_str(), listed[0].held),
        (fire.fire_id.as_str(), true)
    );
    let running = store.fire_running().await.unwrap();
    assert_eq!(
        (
            running[0].fire_id.as_str(),
            running[0].state.as_str(),
            running[0].node_id.as_deref()
        ),
        (fire.fire_id.as_str(), "acquired", Some("a"))
    );
    assert_eq!(store.trigger_counts().await.unwrap().executing, 1);
    let nodes = store.node_list(60_000).await.unwrap();
    assert_eq!(
        nodes.iter().find(|n| n.node_id == "a").map(|n| n.running),
        Some(1)
    );
    assert_eq!(
        store
            .lease_renew("a", std::slice::from_ref(&fire.fire_id), 600_000)
            .await
            .unwrap(),
        1
    );

    // Declaring the trigger anew (another misfire policy) plans the same time
    // again: the store does not make a second fire of it, held or not.
    let (_, mut changed) = at_job("g/held", at, MisfirePolicy::Skip);
    changed[0].priority = 7;
    store.job_put(&job, &changed).await.unwrap();
    assert!(
        store.fire_acquire(&ahead).await.unwrap().fires.is_empty(),
        "no second fire of a held time"
    );
    assert_eq!(store.fire_list().await.unwrap().len(), 1);

    // Released, it becomes a `fires` row with the same id; a trigger planning
    // that time again finds it taken there.
    let release = done(&fire, "a", HistoryStatus::Cancelled, FireNext::Release);
    assert_eq!(store.fire_complete(&[release]).await.unwrap(), [true]);
    let queued = store.fire_list().await.unwrap();
    assert_eq!(
        (queued[0].fire_id.as_str(), queued[0].held),
        (fire.fire_id.as_str(), false)
    );
    store.job_put(&job, &triggers).await.unwrap();
    let again = store.fire_acquire(&ahead).await.unwrap().fires;
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(
        (again[0].fire_id.as_str(), again[0].held),
        (fire.fire_id.as_str(), false)
    );
    assert_eq!(
        store
            .fire_complete(&[done(&again[0], "a", HistoryStatus::Success, FireNext::Done)])
            .await
            .unwrap(),
        [true]
    );
    assert!(store.fire_list().await.unwrap().is_empty());

    // A job deleted while its held fire runs: the run still ends and is recorded.
    let (job, triggers) = at_job("g/held-gone", now, MisfirePolicy::FireNow);
    store.job_put(&job, &triggers).await.unwrap();
    let fire = claim_first(&store, &params("a")).await;
    assert!(fire.held);
    assert!(store.job_delete("g/held-gone").await.unwrap());
    assert_eq!(
        store
            .fire_complete(&[done(&fire, "a", HistoryStatus::Success, FireNext::Done)])
            .await
            .unwrap(),
        [true]
    );
    assert_eq!(history_of(&store, "g/held-gone").await.len(), 1);
    assert!(store.fire_list().await.unwrap().is_empty());
    assert_eq!(store.trigger_counts().await.unwrap().executing, 0);
}
conformance!(held, a_held_claim_is_listed_unique_and_outlives_its_job);

async fn a_fire_missed_past_the_threshold_follows_the_misfire_policy(store: Arc<dyn Store>) {
    let now = store.now_ms().await.unwrap();
    let long_ago = now - 3_600_000;
    let (job, triggers) = at_job("g/skipped", long_ago, MisfirePolicy::Skip);
    store.job_put(&job, &triggers).await.unwrap();
    let (job, triggers) = at_job("g/caught-up", long_ago, MisfirePolicy::FireNow);
    store.job_put(&job, &triggers).await.unwrap();
    let claimed = store.fire_acquire(&params("a")).await.unwrap();
    let keys: Vec<&str> = claimed.fires.iter().map(|f| f.job_key.as_str()).collect();
    assert_eq!(keys, ["g/caught-up"]);
    let skipped = history_of(&store, "g/skipped").await;
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].status, HistoryStatus::Misfired);
    assert_eq!(skipped[0].scheduled_ms, Some(long_ago));
    assert_eq!(
        store.trigger_list(Some("g/skipped")).await.unwrap()[0]
            .state
            .as_str(),
        "COMPLETE"
    );
}
conformance!(
    misfire,
    a_fire_missed_past_the_threshold_follows_the_misfire_policy
);

async fn paused_jobs_and_triggers_do_not_fire_until_resumed(store: Arc<dyn Store>) {
    let now = store.now_ms().await.unwrap();
    let (job, triggers) = at_job("g/paused", now, MisfirePolicy::FireNow);
    store.job_put(&job, &triggers).await.unwrap();
    assert!(
        store
            .job_pause("g/paused", true, &PauseNote::default())
            .await
            .unwrap()
    );
    assert!(
        store
            .fire_acquire(&params("a"))
            .await
            .unwrap()
            .fires
            .is_empty()
    );
    assert!(
        store
            .job_pause("g/paused", false, &PauseNote::default())
            .await
            .unwrap()
    );
    assert!(store.trigger_pause("g/paused:at", true).await.unwrap());
    assert!(
        store
            .fire_acquire(&params("a"))
            .await
            .unwrap()
            .fires
            .is_empty()
    );
    assert!(store.trigger_pause("g/paused:at", false).await.unwrap());
    assert_eq!(
        store.fire_acquire(&params("a")).await.unwrap().fires.len(),
        1
    );
    assert_eq!(
        store
            .group_pause("g", true, &PauseNote::default())
            .await
            .unwrap(),
        1
    );
    assert!(
        !store
            .job_pause("g/none", true, &PauseNote::default())
            .await
            .unwrap()
    );
}
conformance!(pause, paused_jobs_and_triggers_do_not_fire_until_resumed);

async fn reconciling_a_job_keeps_unchanged_triggers_and_drops_removed_ones(store: Arc<dyn Store>) {
    let cron = |expr: &str, name: &str| TriggerPut {
        trigger_key: format!("g/r:{name}"),
        job_key: "g/r".into(),
        spec: TriggerSpec {
            kind: TriggerKind::Cron {
                expr: expr.into(),
                tz: "Europe/Berlin".into(),
            },
            start_ms: None,
            end_ms: None,
            misfire: MisfirePolicy::Skip,
            jitter_ms: 0,
            calendars: Vec::new(),
        },
        priority: 5,
    };
    let job = JobDef::new("g/r", "hello");
    store
        .job_put(
            &job,
            &[
                cron("0 0 12 * * ?", "noon"),
                cron("0 0 0 * * ?", "midnight"),
            ],
        )
        .await
        .unwrap();
    store.trigger_pause("g/r:noon", true).await.unwrap();
    store
        .job_put(&job, &[cron("0 0 12 * * ?", "noon")])
        .await
        .unwrap();
    let triggers = store.trigger_list(Some("g/r")).await.unwrap();
    assert_eq!(triggers.len(), 1);
    assert_eq!(
        triggers[0].state.as_str(),
        "PAUSED",
        "an unchanged trigger keeps its state"
    );
    let next = triggers[0].next_fire_ms.unwrap();
    let noon = chrono::DateTime::from_timestamp_millis(next)
        .unwrap()
        .with_timezone(&chrono_tz::Europe::Berlin);
    assert_eq!(noon.format("%H:%M:%S").to_string(), "12:00:00");
    assert!(store.job_delete("g/r").await.unwrap());
    assert!(store.trigger_list(Some("g/r")).await.unwrap().is_empty());
}
conformance!(
    reconcile,
    reconciling_a_job_keeps_unchanged_triggers_and_drops_removed_ones
);

async fn history_filters_and_retention(store: Arc<dyn Store>) {
    for i in 0..5 {
        store
            .job_put(&JobDef::new(format!("g/h{i}"), "hello"), &[])
            .await
            .unwrap();
        store.fire_now(&format!("g/h{i}")).await.unwrap();
    }
    let fires = store.fire_acquire(&params("a")).await.unwrap().fires;
    let batch: Vec<Completion> = fires
        .iter()
        .enumerate()
        .map(|(i, f)| {
            done(
                f,
                "a",
                if i % 2 == 0 {
                    HistoryStatus::Success
                } else {
                    HistoryStatus::Failed
                },
                FireNext::Done,
            )
        })
        .collect();
    assert_eq!(store.fire_complete(&batch).await.unwrap(), [true; 5]);
    let failed = store
        .history_list(&HistoryFilter {
            status: Some(HistoryStatus::Failed),
            limit: 100,
            ..HistoryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 2);
    assert_eq!(history_of(&store, "g/h0").await.len(), 1);
    assert_eq!(store.history_cleanup(i64::MAX / 2, 3).await.unwrap(), 2);
    assert_eq!(
        store
            .history_list(&HistoryFilter {
                limit: 100,
                ..HistoryFilter::default()
            })
            .await
            .unwrap()
            .len(),
        3
    );
}
conformance!(history, history_filters_and_retention);

async fn on_start_fires_each_start_and_once_fires_once_per_module_version(store: Arc<dyn Store>) {
    let startup = |key: &str, kind: TriggerKind| TriggerPut {
        trigger_key: format!("{key}:{}", kind.as_str()),
        job_key: key.into(),
        spec: TriggerSpec {
            kind,
            start_ms: None,
            end_ms: None,
            misfire: MisfirePolicy::FireNow,
            jitter_ms: 0,
            calendars: Vec::new(),
        },
        priority: 5,
    };
    store
        .job_put(
            &JobDef::new("g/boot", "hello@1"),
            &[startup("g/boot", TriggerKind::OnStart)],
        )
        .await
        .unwrap();
    store
        .job_put(
            &JobDef::new("g/migrate", "hello@1"),
            &[startup("g/migrate", TriggerKind::Once)],
        )
        .await
        .unwrap();
    let run_all = |store: Arc<dyn Store>| async move {
        let fires = store.fire_acquire(&params("a")).await.unwrap().fires;
        let batch: Vec<Completion> = fires
            .iter()
            .map(|f| done(f, "a", HistoryStatus::Success, FireNext::Done))
            .collect();
        store.fire_complete(&batch).await.unwrap();
        fires.iter().map(|f| f.job_key.clone()).collect::<Vec<_>>()
    };
    assert_eq!(store.fire_startup().await.unwrap(), 2);
    let mut first = run_all(Arc::clone(&store)).await;
    first.sort();
    assert_eq!(first, ["g/boot", "g/migrate"]);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(
        store.fire_startup().await.unwrap(),
        1,
        "a second start: on-start again, once not"
    );
    assert_eq!(run_all(Arc::clone(&store)).await, ["g/boot"]);
    store
        .job_put(
            &JobDef::new("g/migrate", "hello@2"),
            &[startup("g/migrate", TriggerKind::Once)],
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(
        store.fire_startup().await.unwrap(),
        2,
        "a new module version runs `once` again"
    );
}
conformance!(
    startup,
    on_start_fires_each_start_and_once_fires_once_per_module_version
);

async fn cluster_locks_exclude_expire_fence_and_release(store: Arc<dyn Store>) {
    let a = store
        .lock_try("report", "node-a/fire-1", 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .lock_try("report", "node-b/fire-2", 60_000)
            .await
            .unwrap(),
        None,
        "held: fails like a unique key"
    );
    let held = store.lock_list().await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].holder.as_deref(), Some("node-a/fire-1"));
    assert!(store.lock_renew("report", a, 60_000).await.unwrap());
    assert!(store.lock_release("report", a).await.unwrap());
    assert!(
        !store.lock_release("report", a).await.unwrap(),
        "a second release does nothing"
    );
    let b = store
        .lock_try("report", "node-b/fire-2", 1)
        .await
        .unwrap()
        .unwrap();
    assert!(b > a, "the fencing token grows");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let c = store
        .lock_try("report", "node-c/fire-3", 60_000)
        .await
        .unwrap()
        .unwrap();
    assert!(c > b, "an expired lease is taken over");
    assert!(
        !store.lock_renew("report", b, 60_000).await.unwrap(),
        "the old holder lost its lease"
    );
    assert!(
        !store.lock_release("report", b).await.unwrap(),
        "and cannot release the new holder's lock"
    );
    assert_eq!(
        store.lock_list().await.unwrap()[0].holder.as_deref(),
        Some("node-c/fire-3")
    );
}
conformance!(locks, cluster_locks_exclude_expire_fence_and_release);

async fn guests_share_locks_through_the_store(store: Arc<dyn Store>) {
    use quartzite::engine::locks::StoreLocks;
    use quartzite::runtime::services::{LockAcquire, LockService};
    let locks = StoreLocks::new(Arc::clone(&store), 60_000);
    // The guest's `lock("report")` in group `jobs`, held by another run.
    let other = locks
        .lock_acquire(&LockAcquire {
            name: "guest:jobs:report".into(),
            holder: "elsewhere".into(),
            timeout: std::time::Duration::ZERO,
        })
        .await
        .unwrap();
    let services = HostServices {
        kv: Arc::new(StoreKv::new(Arc::clone(&store))),
        locks: locks.clone(),
        events: StoreEvents::new(Arc::clone(&store), 8),
        grants: quartzite::secrets::StoreGrants::new(Arc::clone(&store), Arc::default(), None),
    };
    let engine = EngineConfig {
        max_concurrent_runs: 4,
        ..EngineConfig::default()
    };
    let runtime = Runtime::new(
        RuntimeConfig {
            engine,
            cache_dir: None,
            node_id: "store-test".into(),
        },
        services,
    )
    .unwrap();
    let module = runtime.load_file(&crate::common::wasm("report")).unwrap();
    // The report emits `report.done` when done, as its manifest grants it.
    let job = JobDef::new("jobs/report", "report").with_grants(&quartzite::grants::Grants {
        emit: vec!["report.done".into()],
        ..Default::default()
    });
    store.job_put(&job, &[]).await.unwrap();
    let blocked = runtime
        .run(
            &module,
            RunRequest {
                data: r#"{"lock_timeout_ms":200}"#.into(),
                ..RunRequest::new("jobs/report")
            },
        )
        .await;
    assert!(
        matches!(&blocked.outcome, RunOutcome::Failed { retryable: true, message } if message.contains("not acquired")),
        "{:?}",
        blocked.outcome
    );
    locks.lock_release(&other);
    crate::common::wait_until(
        std::time::Duration::from_secs(10),
        "the release to reach the store",
        || {
            let store = Arc::clone(&store);
            async move { store.lock_list().await.unwrap().is_empty() }
        },
    )
    .await;
    let ran = runtime
        .run(
            &module,
            RunRequest {
                data: r#"{"steps":1,"step_ms":0}"#.into(),
                ..RunRequest::new("jobs/report")
            },
        )
        .await;
    assert!(ran.outcome.is_success(), "{:?}", ran.outcome);
    crate::common::wait_until(
        std::time::Duration::from_secs(10),
        "the guest's guard to be released",
        || {
            let store = Arc::clone(&store);
            async move { store.lock_list().await.unwrap().is_empty() }
        },
    )
    .await;
}
conformance!(guest_locks, guests_share_locks_through_the_store);

fn check_in(node: &str, runs: WitRange) -> NodeCheckIn {
    NodeCheckIn {
        node_id: node.into(),
        version: "test".into(),
        wit_versions: String::new(),
        runs,
        modules: Vec::new(),
    }
}

async fn fires_go_only_to_nodes_that_run_their_module_and_are_skipped_when_none_does(
    store: Arc<dyn Store>,
) {
    // The store keeps bytes, not wasm: the records are what a newer node pushed.
    for (name, wit) in [
        ("current", "1.0.0"),
        ("next-minor", "1.3.0"),
        ("next-major", "2.0.0"),
    ] {
        store
            .module_put(&ModulePut {
                name: name.into(),
                version: "1".into(),
                digest: format!("{:0>64}", name.len()),
                wit_version: wit.into(),
                bytes: name.as_bytes().to_vec(),
                restore: true,
            })
            .await
            .unwrap();
    }
    let now = store.now_ms().await.unwrap();
    for (key, module) in [
        ("g/current", "current"),
        ("g/next-minor", "next-minor@1"),
        ("g/next-major", "next-major"),
        ("g/missing", "no-such-module"),
    ] {
        let (mut job, triggers) = at_job(key, now, MisfirePolicy::FireNow);
        job.module = module.into();
        store.job_put(&job, &triggers).await.unwrap();
    }
    let old = AcquireParams {
        runs: WitRange::up_to(1, 0),
        ..params("old")
    };
    store
        .node_heartbeat(&check_in("old", old.runs))
        .await
        .unwrap();
    let mut claimed: Vec<String> = store
        .fire_acquire(&old)
        .await
        .unwrap()
        .fires
        .into_iter()
        .map(|f| f.job_key)
        .collect();
    claimed.sort();
    assert_eq!(
        claimed,
        ["g/current", "g/missing"],
        "a 1.0 node leaves 1.3 and 2.0 modules to others (a missing module is anyone's NoOp)"
    );
    // A live 1.3 node exists: its fire waits for it; only the 2.0 one has no taker.
    let new = AcquireParams {
        runs: WitRange::up_to(1, 3),
        ..params("new")
    };
    store
        .node_heartbeat(&check_in("new", new.runs))
        .await
        .unwrap();
    // Whatever the others, what the caller runs is never skipped.
    assert_eq!(
        store
            .fire_skip_unrunnable(60_000, WitRange::up_to(2, 0))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store.fire_skip_unrunnable(60_000, old.runs).await.unwrap(),
        1
    );
    let skipped = history_of(&store, "g/next-major").await;
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].status, HistoryStatus::Skipped);
    let details: serde_json::Value = serde_json::from_str(&skipped[0].details).unwrap();
    assert_eq!(details["reason"], "no-capable-node");
    assert_eq!(details["needs_wit"], "2.0");
    let trigger = store.trigger_list(Some("g/next-major")).await.unwrap();
    assert_eq!(
        trigger[0].state,
        TriggerState::Complete,
        "the trigger moved on"
    );
    let claimed = store.fire_acquire(&new).await.unwrap().fires;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].job_key, "g/next-minor");
    assert!(
        store
            .fire_list()
            .await
            .unwrap()
            .iter()
            .all(|f| f.job_key != "g/next-major")
    );
    // Pushing a newer "latest" moves what a job needs: now the 1.0 node may not take it.
    store
        .module_put(&ModulePut {
            name: "current".into(),
            version: "2".into(),
            digest: format!("{:0>64}", "ab"),
            wit_version: "1.3.0".into(),
            bytes: b"newer".to_vec(),
            restore: true,
        })
        .await
        .unwrap();
    store.fire_now("g/current").await.unwrap();
    assert!(store.fire_acquire(&old).await.unwrap().fires.is_empty());
    assert_eq!(store.fire_acquire(&new).await.unwrap().fires.len(), 1);
    let nodes = store.node_list(60_000).await.unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0].runs, Some(WitRange::up_to(1, 3)));
}
conformance!(
    capability,
    fires_go_only_to_nodes_that_run_their_module_and_are_skipped_when_none_does
);

use quartzite::store::events::{
    AlertCondition, AlertRule, DeliveryAttempt, DeliveryFilter, DeliveryPut, DeliveryState,
    EmitOutcome, EventPut,
};

fn subscriber(key: &str, event: &str) -> (JobDef, Vec<TriggerPut>) {
    let job = JobDef::new(key, "relay");
    let trigger = TriggerPut {
        trigger_key: format!("{key}:event"),
        job_key: key.into(),
        spec: TriggerSpec {
            kind: TriggerKind::Event { name: event.into() },
            start_ms: None,
            end_ms: None,
            misfire: MisfirePolicy::FireNow,
            jitter_ms: 0,
            calendars: Vec::new(),
        },
        priority: 5,
    };
    (job, vec![trigger])
}

fn operator_event(name: &str, key: Option<&str>, payload: &str) -> EventPut {
    EventPut {
        max_depth: 8,
        max_chain_events: 10_000,
        max_job_fires: 1_000,
        ..EventPut::operator(name, payload, key)
    }
}

async fn an_event_is_stored_with_one_fire_per_subscriber_once_per_key(store: Arc<dyn Store>) {
    store
        .jobs_put(&[
            subscriber("e/a", "order.created"),
            subscriber("e/b", "order.created"),
            subscriber("e/paused", "order.created"),
            subscriber("e/other", "order.paid"),
        ])
        .await
        .unwrap();
    assert!(
        store
            .job_pause("e/paused", true, &PauseNote::default())
            .await
            .unwrap()
    );
    let triggers = store.trigger_list(Some("e/a")).await.unwrap();
    assert_eq!(triggers[0].next_fire_ms, None, "never due by the clock");
    assert_eq!(triggers[0].describe(), "event \"order.created\"");

    let first = store
        .event_emit(&operator_event(
            "order.created",
            Some("k1"),
            r#"{"order":1}"#,
        ))
        .await
        .unwrap();
    let EmitOutcome::Accepted {
        event_id,
        fires,
        paused,
    } = first
    else {
        panic!("{first:?}");
    };
    let mut jobs: Vec<&str> = fires.iter().map(|f| f.job_key.as_str()).collect();
    jobs.sort_unstable();
    assert_eq!(jobs, ["e/a", "e/b"]);
    assert_eq!(paused, ["e/paused"]);
    let skipped = history_of(&store, "e/paused").await;
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].status, HistoryStatus::Skipped);
    assert!(
        skipped[0].details.contains("\"reason\":\"paused\""),
        "{}",
        skipped[0].details
    );

    // The same key again starts nothing and names the first event.
    let again = store
        .event_emit(&operator_event("order.created", Some("k1"), "null"))
        .await
        .unwrap();
    assert_eq!(
        again,
        EmitOutcome::Duplicate {
            event_id: event_id.clone(),
            fires: 2
        }
    );
    // The key is per name.
    assert!(matches!(
        store.event_emit(&operator_event("order.paid", Some("k1"), "null")).await.unwrap(),
        EmitOutcome::Accepted { ref fires, .. } if fires.len() == 1
    ));
    // Events without a key, back to back (likely in one millisecond), each fire everyone.
    for _ in 0..3 {
        assert!(matches!(
            store.event_emit(&operator_event("order.created", None, "null")).await.unwrap(),
            EmitOutcome::Accepted { ref fires, .. } if fires.len() == 2
        ));
    }
    let in_flight = store.fire_list().await.unwrap();
    assert_eq!(in_flight.iter().filter(|f| f.job_key == "e/a").count(), 4);

    // Claimed fires carry their event, whose payload the store returns.
    let claimed = store
        .fire_acquire(&AcquireParams {
            max: 100,
            ..params("n")
        })
        .await
        .unwrap();
    assert_eq!(claimed.fires.len(), 9);
    let fire = claimed
        .fires
        .iter()
        .find(|f| f.event_id.as_deref() == Some(event_id.as_str()) && f.job_key == "e/a")
        .unwrap();
    assert_eq!(fire.depth, 0);
    let event = store.event_get(&event_id).await.unwrap().unwrap();
    assert_eq!(
        (event.name.as_str(), event.payload.as_str()),
        ("order.created", r#"{"order":1}"#)
    );
    assert_eq!((event.key.as_deref(), event.fires), (Some("k1"), 2));
    assert_eq!(
        store
            .event_list(Some("order.created"), 100)
            .await
            .unwrap()
            .len(),
        4
    );
    assert_eq!(store.event_cleanup(event.created_ms).await.unwrap(), 0);
    assert_eq!(store.event_cleanup(i64::MAX).await.unwrap(), 5);
}
conformance!(
    events,
    an_event_is_stored_with_one_fire_per_subscriber_once_per_key
);

async fn an_event_past_the_depth_limit_is_refused_and_recorded(store: Arc<dyn Store>) {
    store.jobs_put(&[subscriber("e/a", "ping")]).await.unwrap();
    let deep = EventPut {
        depth: 9,
        source_job: Some("e/a".into()),
        source_fire: Some("fire-1".into()),
        ..operator_event("ping", Some("x"), "null")
    };
    assert_eq!(
        store.event_emit(&deep).await.unwrap(),
        EmitOutcome::DepthExceeded { depth: 9, limit: 8 }
    );
    assert!(store.event_list(None, 10).await.unwrap().is_empty());
    assert!(store.fire_list().await.unwrap().is_empty());
    let history = history_of(&store, "e/a").await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].status, HistoryStatus::Skipped);
    assert_eq!(history[0].fire_id.as_deref(), Some("fire-1"));
    let details: serde_json::Value = serde_json::from_str(&history[0].details).unwrap();
    assert_eq!(details["reason"], "event-depth-limit");
    assert_eq!(
        (details["depth"].as_u64(), details["limit"].as_u64()),
        (Some(9), Some(8))
    );
}
conformance!(
    event_depth,
    an_event_past_the_depth_limit_is_refused_and_recorded
);

fn guest_event(name: &str, key: &str, job: &str) -> EventPut {
    EventPut {
        depth: 1,
        source_job: Some(job.into()),
        source_fire: Some(format!("{job}-fire")),
        ..operator_event(name, Some(key), r#"{"from":"guest"}"#)
    }
}

async fn event_keys_are_scoped_to_their_source(store: Arc<dyn Store>) {
    store
        .jobs_put(&[subscriber("e/billing", "billing.run")])
        .await
        .unwrap();
    // A guest takes the key first: the operator's event with it is still new.
    let guest = store
        .event_emit(&guest_event("billing.run", "invoice-42", "e/squatter"))
        .await
        .unwrap();
    let EmitOutcome::Accepted {
        event_id: guest_id, ..
    } = guest
    else {
        panic!("{guest:?}");
    };
    let operator = store
        .event_emit(&operator_event(
            "billing.run",
            Some("invoice-42"),
            r#"{"from":"operator"}"#,
        ))
        .await
        .unwrap();
    let EmitOutcome::Accepted {
        event_id: operator_id,
        fires,
        ..
    } = operator
    else {
        panic!("the operator's event was taken for a duplicate: {operator:?}");
    };
    assert_eq!(fires.len(), 1);
    let stored = store.event_get(&operator_id).await.unwrap().unwrap();
    assert_eq!(stored.payload, r#"{"from":"operator"}"#);
    // Another job's key is its own too; within one source the key still de-duplicates.
    assert!(matches!(
        store
            .event_emit(&guest_event("billing.run", "invoice-42", "e/other"))
            .await
            .unwrap(),
        EmitOutcome::Accepted { .. }
    ));
    assert_eq!(
        store
            .event_emit(&guest_event("billing.run", "invoice-42", "e/squatter"))
            .await
            .unwrap(),
        EmitOutcome::Duplicate {
            event_id: guest_id,
            fires: 1
        }
    );
    assert!(matches!(
        store.event_emit(&operator_event("billing.run", Some("invoice-42"), "null")).await.unwrap(),
        EmitOutcome::Duplicate { ref event_id, .. } if *event_id == operator_id
    ));
}
conformance!(event_keys, event_keys_are_scoped_to_their_source);

fn chained(name: &str, key: &str, job: &str, parent: &str, budget: u32) -> EventPut {
    EventPut {
        parent_event: Some(parent.into()),
        max_chain_events: budget,
        ..guest_event(name, key, job)
    }
}

fn accepted_id(outcome: &EmitOutcome) -> String {
    match outcome {
        EmitOutcome::Accepted { event_id, .. } => event_id.clone(),
        other => panic!("not accepted: {other:?}"),
    }
}

async fn a_chain_stops_at_its_budget_with_a_history_entry(store: Arc<dyn Store>) {
    store
        .jobs_put(&[subscriber("e/loop", "loop")])
        .await
        .unwrap();
    let root = accepted_id(
        &store
            .event_emit(&operator_event("loop", Some("root"), "null"))
            .await
            .unwrap(),
    );
    // Three events below the root, at two depths: each joins the root's chain.
    let child = accepted_id(
        &store
            .event_emit(&chained("loop", "c1", "e/loop", &root, 3))
            .await
            .unwrap(),
    );
    for key in ["c2", "c3"] {
        accepted_id(
            &store
                .event_emit(&chained("loop", key, "e/loop", &child, 3))
                .await
                .unwrap(),
        );
    }
    for (key, parent) in [("c4", &root), ("c5", &child)] {
        assert_eq!(
            store
                .event_emit(&chained("loop", key, "e/loop", parent, 3))
                .await
                .unwrap(),
            EmitOutcome::ChainBudgetExceeded {
                root: root.clone(),
                limit: 3
            }
        );
    }
    // A retried run's emit that was accepted is still answered as a duplicate.
    assert!(matches!(
        store
            .event_emit(&chained("loop", "c2", "e/loop", &child, 3))
            .await
            .unwrap(),
        EmitOutcome::Duplicate { .. }
    ));
    assert_eq!(store.event_list(Some("loop"), 100).await.unwrap().len(), 4);
    let refused: Vec<serde_json::Value> = history_of(&store, "e/loop")
        .await
        .iter()
        .filter(|h| h.status == HistoryStatus::Skipped)
        .map(|h| serde_json::from_str(&h.details).unwrap())
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    for details in &refused {
        assert_eq!(details["reason"], "event-chain-budget");
        assert_eq!(details["root"], root.as_str());
        assert_eq!(details["limit"], 3);
    }
    // Another root has a budget of its own.
    let other = accepted_id(
        &store
            .event_emit(&operator_event("loop", Some("root-2"), "null"))
            .await
            .unwrap(),
    );
    accepted_id(
        &store
            .event_emit(&chained("loop", "d1", "e/loop", &other, 3))
            .await
            .unwrap(),
    );
}
conformance!(
    event_chain_budget,
    a_chain_stops_at_its_budget_with_a_history_entry
);

async fn a_job_with_too_many_fires_waiting_cannot_emit(store: Arc<dyn Store>) {
    store
        .jobs_put(&[subscriber("e/sink", "work")])
        .await
        .unwrap();
    let bounded = |key: &str, job: &str| EventPut {
        max_job_fires: 2,
        ..guest_event("work", key, job)
    };
    for key in ["w1", "w2"] {
        accepted_id(&store.event_emit(&bounded(key, "e/src")).await.unwrap());
    }
    assert_eq!(
        store.event_emit(&bounded("w3", "e/src")).await.unwrap(),
        EmitOutcome::JobFiresExceeded {
            waiting: 2,
            limit: 2
        }
    );
    let history = history_of(&store, "e/src").await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].status, HistoryStatus::Skipped);
    assert_eq!(history[0].fire_id.as_deref(), Some("e/src-fire"));
    let details: serde_json::Value = serde_json::from_str(&history[0].details).unwrap();
    assert_eq!(details["reason"], "event-job-fires-limit");
    assert_eq!(
        (details["waiting"].as_u64(), details["limit"].as_u64()),
        (Some(2), Some(2))
    );
    // Other jobs, and the operator, are not held back by this job's fires.
    accepted_id(&store.event_emit(&bounded("w3", "e/other")).await.unwrap());
    accepted_id(
        &store
            .event_emit(&operator_event("work", Some("w3"), "null"))
            .await
            .unwrap(),
    );
    // Once its fires are gone, the job may emit again.
    assert!(store.job_delete("e/sink").await.unwrap());
    accepted_id(&store.event_emit(&bounded("w3", "e/src")).await.unwrap());
}
conformance!(
    event_job_fires,
    a_job_with_too_many_fires_waiting_cannot_emit
);

fn rule(name: &str, condition: AlertCondition, source: &str) -> AlertRule {
    AlertRule {
        name: name.into(),
        condition,
        job_pattern: Some("g/*".into()),
        threshold: 1,
        webhook: "http://127.0.0.1:1/hook".into(),
        source: source.into(),
    }
}

async fn alert_rules_and_deliveries_are_kept_once_per_condition(store: Arc<dyn Store>) {
    store
        .alert_rules_sync(
            "manifest",
            &[
                rule("a", AlertCondition::Misfire, "manifest"),
                rule("b", AlertCondition::NoopSkip, "manifest"),
            ],
        )
        .await
        .unwrap();
    store
        .alert_rule_put(&rule("c", AlertCondition::PermanentFailure, "cli"))
        .await
        .unwrap();
    // A manifest without `b` drops it, and leaves the CLI's rule alone.
    store
        .alert_rules_sync(
            "manifest",
            &[rule("a", AlertCondition::Misfire, "manifest")],
        )
        .await
        .unwrap();
    let names: Vec<String> = store
        .alert_rule_list()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["a", "c"]);
    assert!(store.alert_rule_delete("c").await.unwrap());
    assert!(!store.alert_rule_delete("c").await.unwrap());

    let put = |id: &str, dedup: &str| DeliveryPut {
        delivery_id: id.into(),
        rule: "a".into(),
        dedup_key: dedup.into(),
        job_key: Some("g/j".into()),
        history_id: None,
        payload: "{}".into(),
    };
    assert_eq!(
        store
            .alert_enqueue(&[put("d1", "a|h1"), put("d2", "a|h1")])
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.alert_enqueue(&[put("d3", "a|h1")]).await.unwrap(), 0);
    let due = store.alert_due(10).await.unwrap();
    assert_eq!(due.len(), 1);
    let now = store.now_ms().await.unwrap();
    store
        .alert_attempt(&DeliveryAttempt {
            delivery_id: due[0].delivery_id.clone(),
            state: DeliveryState::Pending,
            attempts: 1,
            next_at_ms: now + 60_000,
            status: Some(500),
            error: Some("the receiver answered 500".into()),
        })
        .await
        .unwrap();
    assert!(
        store.alert_due(10).await.unwrap().is_empty(),
        "not due before its backoff"
    );
    store
        .alert_attempt(&DeliveryAttempt {
            delivery_id: due[0].delivery_id.clone(),
            state: DeliveryState::Sent,
            attempts: 2,
            next_at_ms: now,
            status: Some(200),
            error: None,
        })
        .await
        .unwrap();
    let listed = store
        .alert_delivery_list(&DeliveryFilter {
            state: Some(DeliveryState::Sent),
            ..DeliveryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].attempts, listed[0].last_status), (2, Some(200)));

    // The scan reads failures, skips and misfires, never successes.
    let (job, triggers) = at_job("g/j", now, MisfirePolicy::FireNow);
    store.job_put(&job, &triggers).await.unwrap();
    let claimed = store.fire_acquire(&params("n")).await.unwrap();
    store
        .fire_complete(&[done(
            &claimed.fires[0],
            "n",
            HistoryStatus::Success,
            FireNext::Done,
        )])
        .await
        .unwrap();
    assert!(store.history_alertable(0, 100).await.unwrap().is_empty());
    store.fire_now("g/j").await.unwrap();
    let claimed = store.fire_acquire(&params("n")).await.unwrap();
    let mut failed = done(
        &claimed.fires[0],
        "n",
        HistoryStatus::Failed,
        FireNext::Done,
    );
    failed.history.ended_ms = now + 1;
    failed.history.started_ms = now + 1;
    store.fire_complete(&[failed.clone()]).await.unwrap();
    let alertable = store.history_alertable(0, 100).await.unwrap();
    assert_eq!(alertable.len(), 1);
    assert_eq!(alertable[0].id, failed.history.id);
    assert!(
        store
            .history_alertable(now + 1, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let runs = store
        .history_runs_before("g/j", &alertable[0], 10)
        .await
        .unwrap();
    assert_eq!(
        runs.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
        [HistoryStatus::Failed, HistoryStatus::Success]
    );
    assert_eq!(
        store
            .history_get(&failed.history.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        HistoryStatus::Failed
    );
    assert_eq!(store.alert_cursor("history").await.unwrap(), None);
    store.alert_cursor_set("history", 5).await.unwrap();
    store.alert_cursor_set("history", 7).await.unwrap();
    assert_eq!(store.alert_cursor("history").await.unwrap(), Some(7));
}
conformance!(
    alerts,
    alert_rules_and_deliveries_are_kept_once_per_condition
);

/// Takes and releases 500 lock names and one name again and again: no released
/// lock keeps a row, and a name taken again gets a larger fencing token.
async fn released_locks_leave_no_rows_and_tokens_still_grow(
    store: Arc<dyn Store>,
    rows: impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = i64> + Send>>,
) {
    let before = rows().await;
    let mut last = 0;
    for round in 0..3 {
        let token = store.lock_try("again", "h", 10_000).await.unwrap().unwrap();
        assert!(token > last, "round {round}: token {token} after {last}");
        last = token;
        assert!(store.lock_release("again", token).await.unwrap());
        assert!(
            !store.lock_release("again", token).await.unwrap(),
            "released once"
        );
    }
    for i in 0..500 {
        let name = format!("many-{i}");
        let token = store.lock_try(&name, "h", 10_000).await.unwrap().unwrap();
        assert!(store.lock_release(&name, token).await.unwrap());
    }
    let held = store.lock_try("held", "h", 10_000).await.unwrap().unwrap();
    assert!(rows().await <= before + 2, "{} rows", rows().await);
    assert!(
        store
            .lock_try("held", "other", 10_000)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.lock_list().await.unwrap().len(), 1);
    let again = store.lock_try("again", "h", 10_000).await.unwrap().unwrap();
    assert!(again > last);
    assert!(store.lock_release("held", held).await.unwrap());
}

mod released_locks_leave_no_rows {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("quartzite.db").display());
        let store = SqliteStore::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let rows = move || {
            let pool = pool.clone();
            Box::pin(async move {
                sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM cluster_locks")
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }) as std::pin::Pin<Box<dyn std::future::Future<Output = i64> + Send>>
        };
        released_locks_leave_no_rows_and_tokens_still_grow(Arc::new(store), rows).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let t = TestStore::postgres().await;
        let schema = t.schema.clone().unwrap();
        let options = PgConnectOptions::from_str(&crate::common::pg_url())
            .unwrap()
            .options([("search_path", schema.as_str())]);
        let pool = sqlx::PgPool::connect_with(options).await.unwrap();
        let rows = move || {
            let pool = pool.clone();
            Box::pin(async move {
                sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM cluster_locks")
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }) as std::pin::Pin<Box<dyn std::future::Future<Output = i64> + Send>>
        };
        released_locks_leave_no_rows_and_tokens_still_grow(t.store.clone(), rows).await;
        t.finish().await;
    }
}

/// A job's kv quota is stored with it, and read back by every kind of job read.
async fn a_jobs_kv_quota_is_stored_with_it(store: Arc<dyn Store>) {
    let mut job = quartzite::store::model::JobDef::new("q/small", "hello");
    job.kv_max_keys = Some(5);
    job.kv_max_bytes = Some(1 << 10);
    let default = quartzite::store::model::JobDef::new("q/default", "hello");
    store
        .jobs_put(&[(job.clone(), Vec::new()), (default.clone(), Vec::new())])
        .await
        .unwrap();
    assert_eq!(store.job_get("q/small").await.unwrap(), Some(job));
    let listed = store.job_list().await.unwrap();
    assert!(
        listed
            .iter()
            .any(|j| j.job_key == "q/small" && j.kv_max_keys == Some(5))
    );
    assert_eq!(store.job_get("q/default").await.unwrap(), Some(default));
}
conformance!(job_kv_quota, a_jobs_kv_quota_is_stored_with_it);

// ---- error kinds ----------------------------------------------------------

/// A row this build cannot read is reported as corrupt, naming the row; what
/// is not stored is not found; a contradiction is a conflict. The admin API
/// answers each with its own status (500, 404, 409).
async fn errors_say_what_went_wrong(store: Arc<dyn Store>, corrupt: impl std::future::Future) {
    match store.fire_now("g/nobody").await {
        Err(StoreError::NotFound(msg)) => assert!(msg.contains("g/nobody"), "{msg}"),
        other => panic!("a fire of no job is not found: {other:?}"),
    }
    store
        .module_put(&module("m", "1.0.0", b"one"))
        .await
        .unwrap();
    match store.module_put(&module("m", "1.0.0", b"two")).await {
        Err(StoreError::Conflict(msg)) => assert!(msg.contains("m@1.0.0"), "{msg}"),
        other => panic!("other bytes under a pushed version conflict: {other:?}"),
    }
    let (job, triggers) = at_job("g/odd", 4_102_444_800_000, MisfirePolicy::FireNow);
    store.job_put(&job, &triggers).await.unwrap();
    corrupt.await;
    match store.trigger_list(Some("g/odd")).await {
        Err(e @ StoreError::Corrupt(_)) => {
            assert!(!e.is_unavailable());
            let msg = e.to_string();
            assert!(msg.contains("g/odd:at") && msg.contains("cron"), "{msg}");
        }
        other => panic!("an unknown schedule kind is corrupt data: {other:?}"),
    }
}

/// A cron trigger without its expression: columns that do not make a schedule.
const CORRUPT_TRIGGER: &str =
    "UPDATE triggers SET kind = 'cron', cron = NULL WHERE trigger_key = 'g/odd:at'";

mod error_kinds {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let t = super::TestStore::sqlite().await;
        let file = t._dir.as_ref().unwrap().path().join("quartzite.db");
        let corrupt = async move {
            let url = format!("sqlite://{}", file.display());
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            sqlx::query(super::CORRUPT_TRIGGER)
                .execute(&pool)
                .await
                .unwrap();
        };
        super::errors_say_what_went_wrong(t.store.clone(), corrupt).await;
        t.finish().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let t = super::TestStore::postgres().await;
        let schema = t.schema.clone().unwrap();
        let corrupt = async move {
            use std::str::FromStr;
            let options = sqlx::postgres::PgConnectOptions::from_str(&crate::common::pg_url())
                .unwrap()
                .options([("search_path", schema.as_str())]);
            let pool = sqlx::PgPool::connect_with(options).await.unwrap();
            sqlx::query(super::CORRUPT_TRIGGER)
                .execute(&pool)
                .await
                .unwrap();
        };
        super::errors_say_what_went_wrong(t.store.clone(), corrupt).await;
        t.finish().await;
    }
}

/// A database last migrated by an older release keeps its jobs' policies
/// through migration 0016, which rebuilds `jobs.overlap` on SQLite.
mod overlap_column_upgrade {
    use super::*;

    /// Applies the migrations of `dialect` up to `last` to `pool`.
    async fn migrate_to<DB: sqlx::Database>(pool: &sqlx::Pool<DB>, dialect: &str, last: i64)
    where
        DB::Connection: sqlx::migrate::Migrate,
    {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../migrations")
            .join(dialect);
        let mut migrator = sqlx::migrate::Migrator::new(dir).await.unwrap();
        migrator.migrations = std::borrow::Cow::Owned(
            migrator
                .migrations
                .iter()
                .filter(|m| m.version <= last)
                .cloned()
                .collect(),
        );
        migrator.run(pool).await.unwrap();
    }

    const JOBS: &[(&str, &str)] = &[
        ("g/allow", "allow"),
        ("g/forbid", "forbid"),
        ("g/skip", "skip"),
    ];

    fn insert(key: &str, overlap: &str) -> String {
        format!(
            "INSERT INTO jobs (job_key, module, data, overlap, max_attempts, backoff, \
             backoff_initial_ms, backoff_max_ms, jitter, timeout_ms, max_memory, \
             requests_recovery, priority, paused, source, created_at, updated_at) \
             VALUES ('{key}', 'hello', 'null', '{overlap}', 1, 'immediate', 0, 0, 0, 1000, \
             1048576, 0, 5, 0, 'cli', 0, 0)"
        )
    }

    async fn check(store: Arc<dyn Store>) {
        for (key, overlap) in JOBS {
            let job = store.job_get(key).await.unwrap().unwrap();
            assert_eq!(job.overlap.as_str(), *overlap, "{key}");
        }
        // And the widened column takes the new policy.
        let mut job = JobDef::new("g/buffer", "hello");
        job.overlap = Overlap::BufferOne;
        store.job_put(&job, &[]).await.unwrap();
        assert_eq!(
            store.job_get("g/buffer").await.unwrap().unwrap().overlap,
            Overlap::BufferOne
        );
    }

    #[tokio::test]
    async fn sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        migrate_to(&pool, "sqlite", 15).await;
        for (key, overlap) in JOBS {
            sqlx::query(sqlx::AssertSqlSafe(insert(key, overlap)))
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
        check(quartzite::store::open(&url).await.unwrap()).await;
    }

    #[tokio::test]
    async fn postgres() {
        let (url, schema) = crate::common::pg_schema("qz_upgrade").await;
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        migrate_to(&pool, "postgres", 15).await;
        for (key, overlap) in JOBS {
            sqlx::query(sqlx::AssertSqlSafe(insert(key, overlap)))
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
        check(quartzite::store::open(&url).await.unwrap()).await;
        crate::common::pg_drop(&schema).await;
    }
}

// ---- backfill, replay, bulk cancel ------------------------------------------

use quartzite::store::bulk::{BackfillPut, FireCancel, HistorySelect, ReplayPut, Replayed};
use quartzite::store::model::{BackfillOverlap, FireOrigin};
use std::collections::HashSet;

/// [`params`] claiming fires due within a second: a backfill's fires are due
/// one millisecond apart from when it is made.
fn ahead(node: &str) -> AcquireParams {
    AcquireParams {
        lookahead_ms: 1_000,
        ..params(node)
    }
}

/// A job whose one trigger fires far in the future: only the operator's
/// fires run in these tests.
async fn idle_job(store: &Arc<dyn Store>, key: &str) {
    let (job, triggers) = at_job(key, 4_000_000_000_000, MisfirePolicy::FireNow);
    store.job_put(&job, &triggers).await.unwrap();
}

fn backfill(key: &str, times: &[i64], mode: BackfillOverlap) -> BackfillPut {
    BackfillPut {
        job_key: key.into(),
        times: times.iter().map(|t| (format!("{key}:at"), *t)).collect(),
        origin: FireOrigin::Backfill(mode),
    }
}

async fn a_backfill_makes_each_time_once_and_buffers_its_fires_in_order(store: Arc<dyn Store>) {
    idle_job(&store, "g/b").await;
    let put = backfill("g/b", &[3_000, 1_000, 2_000], BackfillOverlap::Buffer);
    let made = store.fire_backfill(&put).await.unwrap();
    assert_eq!((made.created, made.existing), (3, 0));
    // Again: every time has its fire already.
    let made = store.fire_backfill(&put).await.unwrap();
    assert_eq!((made.created, made.existing), (0, 3));
    let missing = store
        .fire_backfill(&backfill("g/none", &[1_000], BackfillOverlap::Allow))
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::NotFound(_)), "{missing}");

    let mut fires = store.fire_list().await.unwrap();
    fires.retain(|f| f.job_key == "g/b");
    assert_eq!(fires.len(), 3);
    // Due in the order given, one after the other.
    let order: Vec<i64> = fires.iter().map(|f| f.scheduled_ms).collect();
    assert_eq!(order, [3_000, 1_000, 2_000]);
    assert!(fires.windows(2).all(|w| w[0].due_ms < w[1].due_ms));
    assert!(
        fires
            .iter()
            .all(|f| f.origin == FireOrigin::Backfill(BackfillOverlap::Buffer))
    );

    // The job allows overlap, the backfill buffers: one claimed, the first.
    let claimed = store.fire_acquire(&ahead("a")).await.unwrap().fires;
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert_eq!(claimed[0].scheduled_ms, 3_000);
    assert_eq!(
        claimed[0].origin,
        FireOrigin::Backfill(BackfillOverlap::Buffer)
    );
    // While it runs, the next waits.
    assert!(
        store
            .fire_acquire(&ahead("a"))
            .await
            .unwrap()
            .fires
            .is_empty()
    );
    store
        .fire_complete(&[done(
            &claimed[0],
            "a",
            HistoryStatus::Success,
            FireNext::Done,
        )])
        .await
        .unwrap();
    let next = store.fire_acquire(&ahead("a")).await.unwrap().fires;
    assert_eq!(
        next.iter().map(|f| f.scheduled_ms).collect::<Vec<_>>(),
        [1_000]
    );
}
conformance!(
    backfill_times,
    a_backfill_makes_each_time_once_and_buffers_its_fires_in_order
);

async fn a_skipping_backfill_records_the_times_it_cannot_run(store: Arc<dyn Store>) {
    idle_job(&store, "g/s").await;
    store
        .fire_backfill(&backfill(
            "g/s",
            &[1_000, 2_000, 3_000],
            BackfillOverlap::Skip,
        ))
        .await
        .unwrap();
    let claimed = store.fire_acquire(&ahead("a")).await.unwrap();
    assert_eq!(claimed.fires.len(), 1);
    assert_eq!(claimed.fires[0].scheduled_ms, 1_000);
    assert_eq!(claimed.skipped, 2);
    let skipped: Vec<HistoryEntry> = history_of(&store, "g/s")
        .await
        .into_iter()
        .filter(|h| h.status == HistoryStatus::Skipped)
        .collect();
    let mut times: Vec<i64> = skipped.iter().filter_map(|h| h.scheduled_ms).collect();
    times.sort_unstable();
    assert_eq!(times, [2_000, 3_000]);
    let details: serde_json::Value = serde_json::from_str(&skipped[0].details).unwrap();
    assert_eq!(
        details["detail"],
        "backfill --overlap skip: a run of this job is running"
    );
    let left: Vec<FireClaim> = store.fire_list().await.unwrap();
    assert_eq!(left.len(), 1, "only the running fire is left");
}
conformance!(
    backfill_skip,
    a_skipping_backfill_records_the_times_it_cannot_run
);

async fn a_bulk_cancel_deletes_only_the_waiting_fires_it_matches(store: Arc<dyn Store>) {
    idle_job(&store, "g/c").await;
    idle_job(&store, "h/x").await;
    store
        .fire_backfill(&backfill(
            "g/c",
            &[1_000, 2_000, 3_000],
            BackfillOverlap::Allow,
        ))
        .await
        .unwrap();
    // One of them is claimed: a cancel never touches it.
    let one = AcquireParams {
        max: 1,
        ..ahead("a")
    };
    let claimed = store.fire_acquire(&one).await.unwrap().fires;
    assert_eq!(claimed.len(), 1);
    let running: HashSet<String> = claimed.iter().map(|f| f.fire_id.clone()).collect();
    store
        .fire_backfill(&backfill("h/x", &[1_000, 5_000], BackfillOverlap::Buffer))
        .await
        .unwrap();
    store.fire_now("h/x").await.unwrap();

    let cancel = |job: &str| FireCancel {
        job_pattern: job.into(),
        reason: "wrong data".into(),
        ..FireCancel::default()
    };
    // By time: the fire of h/x scheduled before 2000.
    let n = store
        .fire_cancel(&FireCancel {
            before_ms: Some(2_000),
            ..cancel("h/x")
        })
        .await
        .unwrap();
    assert_eq!(n, 1);
    // By origin: the run-now of h/x, not its backfill.
    let n = store
        .fire_cancel(&FireCancel {
            origin: Some(String::new()),
            ..cancel("h/*")
        })
        .await
        .unwrap();
    assert_eq!(n, 1);
    // By trigger: the backfill time left.
    let n = store
        .fire_cancel(&FireCancel {
            trigger_key: Some("h/x:at".into()),
            ..cancel("h/x")
        })
        .await
        .unwrap();
    assert_eq!(n, 1);
    // g/*: what of g/c is still waiting.
    let waiting_g = 3 - claimed.len() as u64;
    let n = store
        .fire_cancel(&FireCancel {
            origin: Some("backfill".into()),
            ..cancel("g/*")
        })
        .await
        .unwrap();
    assert_eq!(n, waiting_g);
    let left: HashSet<String> = store
        .fire_list()
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.fire_id)
        .collect();
    assert_eq!(left, running, "the claimed fires are left, nothing else");
    let history = history_of(&store, "g/c").await;
    assert_eq!(history.len() as u64, waiting_g);
    for h in &history {
        assert_eq!(h.status, HistoryStatus::Cancelled);
        let details: serde_json::Value = serde_json::from_str(&h.details).unwrap();
        assert_eq!(details["reason"], "cancelled");
        assert_eq!(details["note"], "wrong data");
        assert_eq!(details["origin"], "backfill");
    }
    assert_eq!(history_of(&store, "h/x").await.len(), 3);
    assert_eq!(store.fire_cancel(&cancel("*")).await.unwrap(), 0);
}
conformance!(
    bulk_cancel,
    a_bulk_cancel_deletes_only_the_waiting_fires_it_matches
);

async fn a_replay_starts_a_failed_fire_once(store: Arc<dyn Store>) {
    idle_job(&store, "g/r").await;
    store
        .fire_backfill(&backfill("g/r", &[1_000], BackfillOverlap::Allow))
        .await
        .unwrap();
    let fire = claim_first(&store, &ahead("a")).await;
    store
        .fire_complete(&[done(&fire, "a", HistoryStatus::Failed, FireNext::Done)])
        .await
        .unwrap();
    let rows = store
        .history_select(&HistorySelect {
            job_pattern: "g/*".into(),
            statuses: vec![HistoryStatus::Failed],
            since_ms: 0,
            until_ms: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let none = store
        .history_select(&HistorySelect {
            job_pattern: "g/r".into(),
            statuses: vec![HistoryStatus::Success],
            since_ms: 0,
            until_ms: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert!(none.is_empty());
    let put = ReplayPut {
        source_fire_id: fire.fire_id.clone(),
        job_key: "g/r".into(),
        trigger_key: "g/r:at".into(),
        scheduled_ms: 1_000,
        event_id: String::new(),
    };
    let first = store.fire_replay(std::slice::from_ref(&put)).await.unwrap();
    let Replayed::Started(replay_id) = &first[0] else {
        panic!("{first:?}");
    };
    assert_eq!(
        store.fire_replay(std::slice::from_ref(&put)).await.unwrap(),
        [Replayed::Already]
    );
    let fires = store.fire_list().await.unwrap();
    assert_eq!(fires.len(), 1);
    assert_eq!(&fires[0].fire_id, replay_id);
    assert_eq!(
        (fires[0].scheduled_ms, fires[0].trigger_key.as_str()),
        (1_000, "g/r:at")
    );
    assert_eq!(
        fires[0].origin,
        FireOrigin::Replay {
            of: fire.fire_id.clone()
        }
    );
    // Once the replay ran, the fire is still replayed: nothing new.
    let replay = claim_first(&store, &ahead("a")).await;
    store
        .fire_complete(&[done(&replay, "a", HistoryStatus::Failed, FireNext::Done)])
        .await
        .unwrap();
    assert_eq!(
        store.fire_replay(&[put]).await.unwrap(),
        [Replayed::Already]
    );
    // A job that is gone starts nothing and records nothing.
    let gone = ReplayPut {
        source_fire_id: "f-gone".into(),
        job_key: "g/gone".into(),
        trigger_key: "g/gone:at".into(),
        scheduled_ms: 1_000,
        event_id: String::new(),
    };
    assert!(matches!(
        store
            .fire_replay(std::slice::from_ref(&gone))
            .await
            .unwrap()[0],
        Replayed::NotStarted(_)
    ));
    idle_job(&store, "g/gone").await;
    assert!(matches!(
        store.fire_replay(&[gone]).await.unwrap()[0],
        Replayed::Started(_)
    ));
}
conformance!(replay_once, a_replay_starts_a_failed_fire_once);

// ---- calendars ------------------------------------------------------------

use quartzite::schedule::calendar::{CalendarDef, CalendarInput};

fn calendar(name: &str, input: CalendarInput) -> CalendarDef {
    input.into_def(name, 0).unwrap()
}

fn weekly(days: &[&str], base: Option<&str>) -> CalendarInput {
    CalendarInput {
        kind: "weekly".into(),
        days: Some(days.iter().map(|d| d.to_string()).collect()),
        base: base.map(str::to_string),
        ..CalendarInput::default()
    }
}

fn holiday(dates: &[&str]) -> CalendarInput {
    CalendarInput {
        kind: "holiday".into(),
        dates: Some(dates.iter().map(|d| d.to_string()).collect()),
        ..CalendarInput::default()
    }
}

fn ms_of(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_millis()
}

/// A job whose one trigger fires at noon UTC daily from 2040-01-01 (a Sunday).
fn noon_job(key: &str, calendars: &[&str]) -> (JobDef, Vec<TriggerPut>) {
    let job = JobDef::new(key, "hello");
    let trigger = TriggerPut {
        trigger_key: format!("{key}:noon"),
        job_key: key.into(),
        spec: TriggerSpec {
            kind: TriggerKind::Cron {
                expr: "0 0 12 * * ?".into(),
                tz: "UTC".into(),
            },
            start_ms: Some(ms_of("2040-01-01T00:00:00Z")),
            end_ms: None,
            misfire: MisfirePolicy::FireNow,
            jitter_ms: 0,
            calendars: calendars.iter().map(|c| c.to_string()).collect(),
        },
        priority: 5,
    };
    (job, vec![trigger])
}

async fn next_fire(store: &Arc<dyn Store>, job: &str) -> Option<i64> {
    store.trigger_list(Some(job)).await.unwrap()[0].next_fire_ms
}

async fn calendars_are_checked_used_and_recomputed(store: Arc<dyn Store>) {
    // A trigger naming a calendar that is not stored is refused with the job.
    let (job, triggers) = noon_job("g/noon", &["sundays"]);
    let err = store.job_put(&job, &triggers).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert!(
        err.to_string().contains("g/noon:noon") && err.to_string().contains("\"sundays\""),
        "{err}"
    );
    assert!(store.job_get("g/noon").await.unwrap().is_none());

    // A missing base and a cycle of bases are refused.
    let err = store
        .calendar_put(&calendar("sundays", weekly(&["SUN"], Some("extra"))), "cli")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("base \"extra\""), "{err}");
    store
        .calendar_put(&calendar("extra", holiday(&["2040-01-02"])), "cli")
        .await
        .unwrap();
    store
        .calendar_put(&calendar("sundays", weekly(&["SUN"], Some("extra"))), "cli")
        .await
        .unwrap();
    let cyclic = CalendarInput {
        base: Some("sundays".into()),
        ..holiday(&["2040-01-02"])
    };
    let err = store
        .calendar_put(&calendar("extra", cyclic), "cli")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("cycle: extra -> sundays -> extra"),
        "{err}"
    );

    // Sunday the 1st (the calendar) and Monday the 2nd (its base) are skipped.
    store.job_put(&job, &triggers).await.unwrap();
    assert_eq!(
        next_fire(&store, "g/noon").await,
        Some(ms_of("2040-01-03T12:00:00Z"))
    );
    let listed = store.trigger_list(Some("g/noon")).await.unwrap();
    assert_eq!(listed[0].spec.calendars, ["sundays"]);
    assert!(listed[0].describe().contains("calendar sundays"));

    // Changing the base moves the trigger at once.
    let moved = store
        .calendar_put(
            &calendar("extra", holiday(&["2040-01-02", "2040-01-03"])),
            "cli",
        )
        .await
        .unwrap();
    assert_eq!(moved, ["g/noon:noon"]);
    assert_eq!(
        next_fire(&store, "g/noon").await,
        Some(ms_of("2040-01-04T12:00:00Z"))
    );
    // The same definition again moves nothing.
    let again = store
        .calendar_put(
            &calendar("extra", holiday(&["2040-01-02", "2040-01-03"])),
            "manifest",
        )
        .await
        .unwrap();
    assert!(again.is_empty());

    // A calendar excluding every day puts its triggers in ERROR, saying why.
    store
        .calendar_put(
            &calendar(
                "sundays",
                weekly(&["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"], None),
            ),
            "cli",
        )
        .await
        .unwrap();
    let t = &store.trigger_list(Some("g/noon")).await.unwrap()[0];
    assert_eq!(t.state, TriggerState::Error);
    assert!(
        t.error
            .as_deref()
            .unwrap_or("")
            .contains("exclude every fire time"),
        "{t:?}"
    );
    // Made sane again, the trigger waits again.
    store
        .calendar_put(&calendar("sundays", weekly(&["SUN"], Some("extra"))), "cli")
        .await
        .unwrap();
    let t = &store.trigger_list(Some("g/noon")).await.unwrap()[0];
    assert_eq!(t.state, TriggerState::Waiting);
    assert_eq!(t.next_fire_ms, Some(ms_of("2040-01-04T12:00:00Z")));

    // In use, neither calendar can be deleted; the refusal names the users.
    let err = store.calendar_delete("sundays").await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)));
    assert!(err.to_string().contains("g/noon:noon"), "{err}");
    let err = store.calendar_delete("extra").await.unwrap_err();
    assert!(
        err.to_string().contains("base of calendar(s) sundays"),
        "{err}"
    );
    let names: Vec<String> = store
        .calendar_list()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.def.name)
        .collect();
    assert_eq!(names, ["extra", "sundays"]);
    let row = store.calendar_get("extra").await.unwrap().unwrap();
    assert_eq!(row.source, "manifest");

    // Unused, they go.
    store.job_delete("g/noon").await.unwrap();
    assert!(store.calendar_delete("sundays").await.unwrap());
    assert!(store.calendar_delete("extra").await.unwrap());
    assert!(!store.calendar_delete("extra").await.unwrap());
    assert!(store.calendar_list().await.unwrap().is_empty());
}
conformance!(calendars, calendars_are_checked_used_and_recomputed);

async fn the_claim_creates_fires_only_at_included_times(store: Arc<dyn Store>) {
    let even = CalendarInput {
        kind: "cron".into(),
        cron: Some("0/2 * * * * ?".into()),
        ..CalendarInput::default()
    };
    store
        .calendar_put(&calendar("even", even), "cli")
        .await
        .unwrap();
    // Every second from a whole second just ahead, within the lookahead.
    let now = store.now_ms().await.unwrap();
    let start = (now / 1000 + 2) * 1000;
    let job = JobDef::new("g/tick", "hello");
    let tick = TriggerPut {
        trigger_key: "g/tick:every".into(),
        job_key: "g/tick".into(),
        spec: TriggerSpec {
            kind: TriggerKind::Every {
                period_ms: 1000,
                repeat: None,
            },
            start_ms: Some(start),
            end_ms: None,
            misfire: MisfirePolicy::FireNow,
            jitter_ms: 0,
            calendars: vec!["even".into()],
        },
        priority: 5,
    };
    store.job_put(&job, &[tick]).await.unwrap();
    let first = next_fire(&store, "g/tick").await.unwrap();
    assert_eq!(first / 1000 % 2, 1, "the first included second");
    // A job without a calendar beside it is claimed as ever.
    let (plain, plain_triggers) = at_job("g/plain", now, MisfirePolicy::FireNow);
    store.job_put(&plain, &plain_triggers).await.unwrap();

    let p = AcquireParams {
        lookahead_ms: start - now + 8_000,
        max: 100,
        ..params("a")
    };
    let acquired = store.fire_acquire(&p).await.unwrap();
    let mut ticks: Vec<i64> = acquired
        .fires
        .iter()
        .filter(|f| f.job_key == "g/tick")
        .map(|f| f.scheduled_ms)
        .chain(
            store
                .fire_list()
                .await
                .unwrap()
                .iter()
                .filter(|f| f.job_key == "g/tick")
                .map(|f| f.scheduled_ms),
        )
        .collect();
    ticks.sort();
    ticks.dedup();
    assert!(ticks.len() >= 3, "{ticks:?}");
    assert!(
        ticks
            .iter()
            .all(|t| (t - start) % 1000 == 0 && t / 1000 % 2 == 1),
        "only odd seconds: {ticks:?}"
    );
    assert!(acquired.fires.iter().any(|f| f.job_key == "g/plain"));
    assert_eq!(acquired.misfired, 0);
    assert!(
        history_of(&store, "g/tick").await.is_empty(),
        "nothing recorded"
    );
    let next = next_fire(&store, "g/tick").await.unwrap();
    assert_eq!(
        next / 1000 % 2,
        1,
        "the trigger waits on an included second"
    );
}
conformance!(
    calendar_claim,
    the_claim_creates_fires_only_at_included_times
);

/// Ages every `flow_keys` row past the longest rate window.
const AGE_FLOW_KEYS: &str = "UPDATE flow_keys SET updated_ms = 0";
const COUNT_FLOW_KEYS: &str = "SELECT CAST(COUNT(*) AS BIGINT) FROM flow_keys";

/// A rate key's row outlives its fires by the longest rate window, then upkeep
/// (`history_cleanup`) deletes it; the row of a key a waiting fire names is
/// kept however old. `age` ages every row; `rows` counts them.
async fn idle_flow_keys_are_deleted_and_named_ones_kept<A, AF, C, CF>(
    store: Arc<dyn Store>,
    age: A,
    rows: C,
) where
    A: Fn() -> AF,
    AF: std::future::Future<Output = ()>,
    C: Fn() -> CF,
    CF: std::future::Future<Output = i64>,
{
    use quartzite::domain::flow::{Flow, KeyTemplate, Rate};
    // A rate key: its row holds the key's admitted starts, touched by each
    // claim that admits one.
    let mut job = JobDef::new("g/keyed", "hello");
    job.flow = Flow {
        rate: Some(Rate {
            key: KeyTemplate::parse("k-{{ job }}").unwrap(),
            limit: 5,
            per_ms: 1000,
        }),
        ..Flow::default()
    };
    store.job_put(&job, &[]).await.unwrap();
    store.fire_now("g/keyed").await.unwrap();
    let ran = claim_first(&store, &params("a")).await;
    store
        .fire_complete(&[done(&ran, "a", HistoryStatus::Success, FireNext::Done)])
        .await
        .unwrap();
    assert_eq!(rows().await, 1, "the claim made the key's row");
    // A fire waits with the key: its row stays, however old.
    store.fire_now("g/keyed").await.unwrap();
    age().await;
    store
        .history_cleanup(i64::MAX / 2, i64::MAX / 2)
        .await
        .unwrap();
    assert_eq!(rows().await, 1, "a key a waiting fire names is kept");
    let next = claim_first(&store, &params("a")).await;
    store
        .fire_complete(&[done(&next, "a", HistoryStatus::Success, FireNext::Done)])
        .await
        .unwrap();
    // Claimed just now: recent, kept; aged with no fire naming it: deleted.
    store
        .history_cleanup(i64::MAX / 2, i64::MAX / 2)
        .await
        .unwrap();
    assert_eq!(rows().await, 1, "a key claimed lately is kept");
    age().await;
    store
        .history_cleanup(i64::MAX / 2, i64::MAX / 2)
        .await
        .unwrap();
    assert_eq!(rows().await, 0, "an idle key's row is deleted");
}

mod flow_keys_cleanup {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let t = super::TestStore::sqlite().await;
        let file = t._dir.as_ref().unwrap().path().join("quartzite.db");
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", file.display()))
            .await
            .unwrap();
        super::idle_flow_keys_are_deleted_and_named_ones_kept(
            t.store.clone(),
            || async {
                sqlx::query(super::AGE_FLOW_KEYS)
                    .execute(&pool)
                    .await
                    .unwrap();
            },
            || async {
                sqlx::query_scalar(super::COUNT_FLOW_KEYS)
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            },
        )
        .await;
        t.finish().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        use std::str::FromStr;
        let t = super::TestStore::postgres().await;
        let options = sqlx::postgres::PgConnectOptions::from_str(&crate::common::pg_url())
            .unwrap()
            .options([("search_path", t.schema.clone().unwrap().as_str())]);
        let pool = sqlx::PgPool::connect_with(options).await.unwrap();
        super::idle_flow_keys_are_deleted_and_named_ones_kept(
            t.store.clone(),
            || async {
                sqlx::query(super::AGE_FLOW_KEYS)
                    .execute(&pool)
                    .await
                    .unwrap();
            },
            || async {
                sqlx::query_scalar(super::COUNT_FLOW_KEYS)
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            },
        )
        .await;
        t.finish().await;
    }
}
