//! Flow control end to end (issue 19): keyed concurrency and rate limits on
//! real nodes and real stores. A limit is checked against what history
//! recorded of the runs (their start and end, and when the store admitted
//! each start), never against a timing.

use crate::common::*;
use crate::engine::{Backend, env, history, options, quick, run};
use quartzite::store::Store;
use quartzite::store::events::EventPut;
use quartzite::store::model::{HistoryEntry, HistoryStatus};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

fn details(h: &HistoryEntry) -> serde_json::Value {
    serde_json::from_str(&h.details).unwrap()
}

async fn emit(store: &Arc<dyn Store>, name: &str, payload: serde_json::Value) -> String {
    match store
        .event_emit(&EventPut::operator(name, &payload.to_string(), None))
        .await
        .unwrap()
    {
        quartzite::store::events::EmitOutcome::Accepted { event_id, .. } => event_id,
        other => panic!("emit {name}: {other:?}"),
    }
}

async fn successes(store: &Arc<dyn Store>, job: &str, n: usize) -> Vec<HistoryEntry> {
    wait_until(
        Duration::from_secs(90),
        &format!("{n} successful runs of {job}"),
        || {
            let store = Arc::clone(store);
            let job = job.to_string();
            async move {
                history(&store, &job)
                    .await
                    .iter()
                    .filter(|h| h.status == HistoryStatus::Success)
                    .count()
                    >= n
            }
        },
    )
    .await;
    history(store, job).await
}

/// Waits until the executions view says a fire waits for flow control, and
/// returns what it says.
async fn waiting_reason(store: &Arc<dyn Store>, says: &str) -> String {
    let seen = Arc::new(std::sync::Mutex::new(String::new()));
    wait_until(
        Duration::from_secs(30),
        &format!("a fire waiting for {says:?} in the executions view"),
        || {
            let store = Arc::clone(store);
            let seen = Arc::clone(&seen);
            let says = says.to_string();
            async move {
                let fires = store.fire_running().await.unwrap();
                let found = fires
                    .iter()
                    .filter_map(|f| f.waiting_for.clone())
                    .find(|w| w.contains(&says));
                let hit = found.is_some();
                if let Some(w) = found {
                    *seen.lock().unwrap() = w;
                }
                hit
            }
        },
    )
    .await;
    seen.lock().unwrap().clone()
}

/// Waits until a fire (`fire`, or any) is claimed: running, or about to.
async fn wait_claimed(store: &Arc<dyn Store>, fire: Option<&str>) {
    wait_for_fire(
        store.as_ref(),
        Duration::from_secs(30),
        "a fire to be claimed",
        |f| f.state == "acquired" && fire.is_none_or(|id| f.fire_id == id),
    )
    .await;
}

fn manifest(jobs: &str) -> String {
    format!(
        r#"
[[module]]
name = "hostile"
path = "{hostile}"
{jobs}"#,
        hostile = wasm("guest_hostile").display(),
    )
}

async fn keyed_concurrency_holds_each_key_to_its_limit(backend: Backend) {
    let _load = load_share(LOADED).await;
    let env = env(backend).await;
    let jobs = r#"
[[job]]
key = "flow/charge"
module = "hostile"
data = { op = "sleep", ms = 300 }
concurrency = { key = "acct:{{ event.payload.account }}", limit = 2 }
[[job.trigger]]
event = "order"
"#;
    let node = run(&options(&env, &manifest(jobs), quick())).await;
    let mut account_of: HashMap<String, &str> = HashMap::new();
    for account in ["a", "a", "a", "a", "a", "a", "b", "b", "b", "c"] {
        let id = emit(
            &node.store,
            "order",
            serde_json::json!({ "account": account }),
        )
        .await;
        account_of.insert(id, account);
    }
    // While acct:a's fires run two at a time, the rest of them wait, and the
    // executions view says why.
    let why = waiting_reason(&node.store, "concurrency").await;
    assert!(why.contains("has 2 of 2 running"), "{why}");
    let runs = successes(&node.store, "flow/charge", 10).await;
    node.stop().await;
    assert_eq!(runs.len(), 10, "every fire ran once: {runs:?}");
    let mut by_account: HashMap<&str, Vec<&HistoryEntry>> = HashMap::new();
    for h in &runs {
        let d = details(h);
        let account = account_of[d["event"]["id"].as_str().unwrap()];
        assert_eq!(d["flow"]["concurrency_key"], format!("acct:{account}"));
        by_account.entry(account).or_default().push(h);
    }
    for (account, runs) in &by_account {
        assert!(
            most_at_once(runs.iter().map(|h| (h.started_ms, h.ended_ms))) <= 2,
            "acct:{account} ran {} at once, its limit is 2",
            most_at_once(runs.iter().map(|h| (h.started_ms, h.ended_ms)))
        );
    }
    assert_eq!(by_account["a"].len(), 6);
}
on_both!(keyed_concurrency_holds_each_key_to_its_limit);

async fn a_constant_key_is_one_limit_across_jobs(backend: Backend) {
    let _load = load_share(LOADED).await;
    let env = env(backend).await;
    let jobs = r#"
[[job]]
key = "flow/report-a"
module = "hostile"
data = { op = "sleep", ms = 150 }
concurrency = { key = "warehouse", limit = 1 }
[[job.trigger]]
event = "tick"

[[job]]
key = "flow/report-b"
module = "hostile"
data = { op = "sleep", ms = 150 }
concurrency = { key = "warehouse", limit = 1 }
[[job.trigger]]
event = "tick"
"#;
    let node = run(&options(&env, &manifest(jobs), quick())).await;
    for _ in 0..3 {
        emit(&node.store, "tick", serde_json::json!({})).await;
    }
    let a = successes(&node.store, "flow/report-a", 3).await;
    let b = successes(&node.store, "flow/report-b", 3).await;
    node.stop().await;
    let all: Vec<&HistoryEntry> = a.iter().chain(&b).collect();
    assert_eq!(all.len(), 6);
    assert_eq!(
        most_at_once(all.iter().map(|h| (h.started_ms, h.ended_ms))),
        1,
        "two jobs sharing key 'warehouse' (limit 1) overlapped: {all:?}"
    );
}
on_both!(a_constant_key_is_one_limit_across_jobs);

async fn a_rate_limit_makes_fires_wait_for_their_window(backend: Backend) {
    let _load = load_share(LOADED).await;
    let env = env(backend).await;
    let jobs = r#"
[[job]]
key = "flow/call-api"
module = "hostile"
data = { op = "ok" }
rate = { key = "partner-api", limit = 5, per = "1s" }
[[job.trigger]]
event = "call"
"#;
    let node = run(&options(&env, &manifest(jobs), quick())).await;
    for _ in 0..20 {
        emit(&node.store, "call", serde_json::json!({})).await;
    }
    let why = waiting_reason(&node.store, "rate").await;
    assert!(
        why.contains("key \"partner-api\" started 5 of 5 in the last 1s"),
        "{why}"
    );
    assert!(why.contains("next start at"), "{why}");
    let runs = successes(&node.store, "flow/call-api", 20).await;
    node.stop().await;
    assert_eq!(runs.len(), 20, "every fire ran, none failed: {runs:?}");
    let mut admitted: Vec<i64> = runs
        .iter()
        .map(|h| details(h)["flow"]["admitted_ms"].as_i64().unwrap())
        .collect();
    let most = most_in_window(&mut admitted, 1000);
    assert!(
        most <= 5,
        "{most} starts admitted within one second; the limit is 5"
    );
    // 20 starts at 5 per second: the last waited at least three windows.
    assert!(
        admitted[19] - admitted[0] >= 3000,
        "20 starts spread over only {} ms",
        admitted[19] - admitted[0]
    );
}
on_both!(a_rate_limit_makes_fires_wait_for_their_window);

#[test]
fn the_window_counter_counts_what_a_second_holds() {
    assert_eq!(most_in_window(&mut [0, 999, 1000, 1999], 1000), 2);
    assert_eq!(most_in_window(&mut [0, 1, 2, 1001], 1000), 3);
    assert_eq!(most_in_window(&mut [], 1000), 0);
}

async fn a_debounced_burst_runs_once_after_its_last_event_with_its_payload(backend: Backend) {
    let _load = load_share(LOADED).await;
    let env = env(backend).await;
    let jobs = r#"
[[job]]
key = "flow/index-doc"
module = "hostile"
data = { op = "ok" }
debounce = { window = "1s", key = "{{ event.payload.doc }}" }
[[job.trigger]]
event = "doc.saved"
"#;
    let node = run(&options(&env, &manifest(jobs), quick())).await;
    let mut last: HashMap<&str, (String, i64)> = HashMap::new();
    for (doc, n) in [("d1", 1), ("d2", 1), ("d1", 2), ("d1", 3), ("d2", 2)] {
        let id = emit(
            &node.store,
            "doc.saved",
            serde_json::json!({ "doc": doc, "n": n }),
        )
        .await;
        let created = node.store.event_get(&id).await.unwrap().unwrap().created_ms;
        last.insert(doc, (id, created));
    }
    let runs = successes(&node.store, "flow/index-doc", 2).await;
    // Nothing more runs for the burst.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let runs_after = history(&node.store, "flow/index-doc").await;
    node.stop().await;
    assert_eq!(runs_after.len(), 2, "one run per doc: {runs_after:?}");
    for h in &runs {
        let d = details(h);
        let event = d["event"]["id"].as_str().unwrap();
        let (doc, (_, at)) = last
            .iter()
            .find(|(_, (id, _))| id == event)
            .unwrap_or_else(|| panic!("ran with {event}, not a doc's last event: {d}"));
        let events = if *doc == "d1" { 3 } else { 2 };
        assert_eq!(
            d["coalesced"],
            serde_json::json!({ "by": "debounce", "events": events })
        );
        assert!(
            h.started_ms >= at + 1000,
            "{doc} ran {} ms after its last event, before its 1 s window ended",
            h.started_ms - at
        );
    }
}
on_both!(a_debounced_burst_runs_once_after_its_last_event_with_its_payload);

async fn a_singleton_queues_one_fire_with_the_latest_event_while_one_runs(backend: Backend) {
    let _load = load_share(LOADED).await;
    let env = env(backend).await;
    let jobs = r#"
[[job]]
key = "flow/sync-account"
module = "hostile"
data = { op = "sleep", ms = 600 }
singleton = { key = "{{ event.payload.account }}" }
[[job.trigger]]
event = "account.changed"
"#;
    let node = run(&options(&env, &manifest(jobs), quick())).await;
    let first = emit(
        &node.store,
        "account.changed",
        serde_json::json!({ "account": "a", "n": 1 }),
    )
    .await;
    wait_claimed(&node.store, None).await;
    let mut latest = String::new();
    for n in 2..=4 {
        latest = emit(
            &node.store,
            "account.changed",
            serde_json::json!({ "account": "a", "n": n }),
        )
        .await;
    }
    successes(&node.store, "flow/sync-account", 2).await;
    // Nothing more runs: the three later events were one queued fire.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let runs = history(&node.store, "flow/sync-account").await;
    node.stop().await;
    assert_eq!(runs.len(), 2, "the running fire and one queued: {runs:?}");
    let ran: Vec<String> = runs
        .iter()
        .map(|h| details(h)["event"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ran,
        [first, latest.clone()],
        "the queued fire runs with the latest event"
    );
    assert_eq!(
        details(&runs[1])["coalesced"],
        serde_json::json!({ "by": "singleton", "events": 3 })
    );
    assert!(
        runs[1].started_ms >= runs[0].ended_ms,
        "one at a time: {runs:?}"
    );
}
on_both!(a_singleton_queues_one_fire_with_the_latest_event_while_one_runs);

async fn a_cancel_other_fire_stops_the_running_one_then_runs(backend: Backend) {
    let _load = load_share(LOADED).await;
    let env = env(backend).await;
    // The guest ignores `cancelled()`: the run asked to stop is stopped when
    // its grace (1 s) ends. The newest fire then runs until its timeout.
    let jobs = r#"
[[job]]
key = "flow/deploy"
module = "hostile"
data = { op = "loop" }
overlap = "cancel-other"
timeout = "2s"
[[job.trigger]]
event = "deploy"
"#;
    let node = run(&options(&env, &manifest(jobs), quick())).await;
    let first = emit_one(node.store.as_ref(), "deploy").await;
    wait_claimed(&node.store, Some(&first)).await;
    let second = emit_one(node.store.as_ref(), "deploy").await;
    let third = emit_one(node.store.as_ref(), "deploy").await;
    wait_until(Duration::from_secs(30), "three history rows", || {
        let store = Arc::clone(&node.store);
        async move { history(&store, "flow/deploy").await.len() >= 3 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows = history(&node.store, "flow/deploy").await;
    node.stop().await;
    assert_eq!(rows.len(), 3, "{rows:#?}");
    let of = |fire: &str| {
        rows.iter()
            .find(|h| h.fire_id.as_deref() == Some(fire))
            .unwrap_or_else(|| panic!("no history row of {fire}: {rows:#?}"))
    };
    let stopped = of(&first);
    assert_eq!(stopped.status, HistoryStatus::Cancelled, "{stopped:?}");
    let outcome = &details(stopped)["outcome"];
    assert_eq!(outcome["status"], "superseded", "{outcome}");
    let by = outcome["by"].as_str().unwrap();
    assert!(by == second || by == third, "superseded by {by}");
    // Of the two waiting, the older is skipped and the newest runs.
    let skipped = of(&second);
    assert_eq!(skipped.status, HistoryStatus::Skipped, "{skipped:?}");
    assert_eq!(details(skipped)["reason"], "overlap");
    let newest = of(&third);
    assert_eq!(newest.status, HistoryStatus::Timeout, "{newest:?}");
    assert!(
        newest.started_ms >= stopped.ended_ms,
        "the newest ran after the stopped one ended"
    );
}
on_both!(a_cancel_other_fire_stops_the_running_one_then_runs);
