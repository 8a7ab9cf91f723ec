//! Events and alerts on a real node (SQLite and PostgreSQL), driven through
//! its admin API with real guests: subscribers fire once per event with the
//! payload, keys de-duplicate per source, chains stop at the depth limit and at
//! their budget while other jobs keep firing, a module built
//! for contract 1.0 runs on this 1.1 host, and alerts reach a real local HTTP
//! receiver once per triggering condition, again after it answered 500.

use crate::common::server::{Backend, Server, start_server, start_server_with};
use crate::common::*;
use quartzite::store::model::HistoryStatus;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn call(
    server: &Server,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = server
        .http
        .request(method, format!("{}{path}", server.base));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, value)
}

async fn push(server: &Server, guest: &str) -> Value {
    let response = server
        .http
        .post(format!("{}/api/v1/modules", server.base))
        .header("content-type", "application/wasm")
        .body(std::fs::read(wasm(guest)).unwrap())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn create_job(server: &Server, spec: Value) {
    let (status, body) = call(server, Method::POST, "/api/v1/jobs", Some(spec)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

async fn scrape(server: &Server) -> String {
    let url = format!("{}/metrics", server.base);
    server
        .http
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn details(h: &quartzite::store::model::HistoryEntry) -> Value {
    serde_json::from_str(&h.details).unwrap()
}

async fn successes(server: &Server, job: &str) -> Vec<Value> {
    history_of(server.store.as_ref(), job)
        .await
        .iter()
        .filter(|h| h.status == HistoryStatus::Success)
        .map(details)
        .collect()
}

async fn an_event_fires_each_subscriber_once_with_its_payload(backend: Backend) {
    let server = start_server(backend, None, "ev").await;
    push(&server, "guest_relay").await;
    for job in ["ev/a", "ev/b", "ev/c"] {
        create_job(
            &server,
            json!({ "key": job, "module": "relay", "event": "order.created" }),
        )
        .await;
    }
    create_job(
        &server,
        json!({ "key": "ev/other", "module": "relay", "event": "order.paid" }),
    )
    .await;

    let emit = |key: &'static str| {
        let (http, url) = (
            server.http.clone(),
            format!("{}/api/v1/events/order.created", server.base),
        );
        async move {
            let response = http
                .post(url)
                .header("idempotency-key", key)
                .json(&json!({ "order": 7 }))
                .send()
                .await
                .unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    let (status, first) = emit("order-7").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["fires"].as_array().unwrap().len(), 3, "{first}");
    let (status, again) = emit("order-7").await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["event_id"], first["event_id"]);
    assert_eq!(
        (again["fires"].clone(), again["fire_count"].clone()),
        (json!([]), json!(3))
    );

    for job in ["ev/a", "ev/b", "ev/c"] {
        wait_for_success(server.store.as_ref(), job, Duration::from_secs(30)).await;
    }
    // Time for a second fire to show up, if there were one.
    tokio::time::sleep(Duration::from_millis(800)).await;
    for job in ["ev/a", "ev/b", "ev/c"] {
        let runs = successes(&server, job).await;
        assert_eq!(runs.len(), 1, "{job}: {runs:?}");
        let event = &runs[0]["outcome"]["details"]["event"];
        assert_eq!(event["name"], "order.created");
        assert_eq!(event["payload"], json!({ "order": 7 }));
        assert_eq!(event["key"], "order-7");
        assert_eq!(event["depth"], 0);
        assert_eq!(event["id"], first["event_id"]);
        assert_eq!(
            runs[0]["event"]["id"], first["event_id"],
            "history names the event"
        );
    }
    assert!(
        history_of(server.store.as_ref(), "ev/other")
            .await
            .is_empty()
    );

    // Two events without a key in a row are two events, each firing everyone.
    for _ in 0..2 {
        let (status, body) =
            call(&server, Method::POST, "/api/v1/events/order.created", None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    wait_until(
        Duration::from_secs(30),
        "three runs of each subscriber",
        || async {
            let mut all = true;
            for job in ["ev/a", "ev/b", "ev/c"] {
                all &= successes(&server, job).await.len() == 3;
            }
            all
        },
    )
    .await;
    let (_, events) = call(
        &server,
        Method::GET,
        "/api/v1/events?name=order.created",
        None,
    )
    .await;
    assert_eq!(events["items"].as_array().unwrap().len(), 3, "{events}");

    // Bad input is refused with the field at fault, and stores nothing.
    let (status, body) = call(&server, Method::POST, "/api/v1/events/bad%20name", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "name");
    server.stop().await;
}
on_both!(an_event_fires_each_subscriber_once_with_its_payload);

async fn a_chain_stops_at_the_depth_limit_with_a_history_entry(backend: Backend) {
    let server = start_server(backend, None, "chain").await;
    push(&server, "guest_relay").await;
    // Every run of this job emits the event that starts it again.
    create_job(
        &server,
        json!({ "key": "chain/ping", "module": "relay", "event": "ping", "data": { "emit": "ping" }, "grants": { "emit": ["ping"] } }),
    )
    .await;
    let (status, body) = call(&server, Method::POST, "/api/v1/events/ping", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let limit = quartzite::store::events::DEFAULT_MAX_DEPTH;
    wait_until(
        Duration::from_secs(60),
        "the chain to hit the limit",
        || async {
            history_of(server.store.as_ref(), "chain/ping")
                .await
                .iter()
                .any(|h| h.status == HistoryStatus::Skipped)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let history = history_of(server.store.as_ref(), "chain/ping").await;
    let stopped: Vec<Value> = history
        .iter()
        .filter(|h| h.status == HistoryStatus::Skipped)
        .map(details)
        .collect();
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    assert_eq!(stopped[0]["reason"], "event-depth-limit");
    assert_eq!(stopped[0]["event"], "ping");
    assert_eq!(stopped[0]["limit"], limit);
    assert_eq!(stopped[0]["depth"], limit + 1);
    // Fires at depths 0..=limit ran; the last one's emit was refused, which
    // the job reports as a failure.
    let ran = history
        .iter()
        .filter(|h| h.status != HistoryStatus::Skipped)
        .count();
    assert_eq!(ran, usize::try_from(limit).unwrap() + 1);
    let mut depths: Vec<u64> = history
        .iter()
        .filter(|h| h.status == HistoryStatus::Success)
        .map(|h| details(h)["event"]["depth"].as_u64().unwrap())
        .collect();
    depths.sort_unstable();
    assert_eq!(depths, (0..u64::from(limit)).collect::<Vec<_>>());
    let metrics = scrape(&server).await;
    assert!(
        metrics.contains("quartzite_events_total{result=\"depth-exceeded\"} 1"),
        "{metrics}"
    );
    // One emitted by the operator, one by each run below the limit.
    assert!(
        metrics.contains(&format!(
            "quartzite_events_total{{result=\"accepted\"}} {}",
            limit + 1
        )),
        "{metrics}"
    );
    server.stop().await;
}
on_both!(a_chain_stops_at_the_depth_limit_with_a_history_entry);

async fn a_module_built_for_contract_1_0_runs_unchanged(backend: Backend) {
    let server = start_server(backend, None, "c10").await;
    let module = push(&server, "guest_contract_1_0").await;
    assert_eq!(module["module"]["wit_version"], "1.0.0", "{module}");
    create_job(
        &server,
        json!({ "key": "old/job", "module": "contract-1-0", "every": "200ms", "repeat": 1 }),
    )
    .await;
    wait_until(
        Duration::from_secs(30),
        "two runs of the 1.0 job",
        || async { successes(&server, "old/job").await.len() == 2 },
    )
    .await;
    let runs = successes(&server, "old/job").await;
    let mut counts: Vec<u64> = runs
        .iter()
        .map(|d| {
            assert_eq!(d["outcome"]["details"]["contract"], "1.0.0");
            assert_eq!(d["module"]["wit_version"], "1.0.0");
            d["outcome"]["details"]["runs"].as_u64().unwrap()
        })
        .collect();
    counts.sort_unstable();
    assert_eq!(
        counts,
        vec![1, 2],
        "its kv state works through the 1.0 imports"
    );
    server.stop().await;
}
on_both!(a_module_built_for_contract_1_0_runs_unchanged);

/// A webhook receiver on a free loopback port: records every request and
/// answers 500 to the first one, 200 after.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<(u16, Value)>>>,
}

async fn receiver() -> Receiver {
    use axum::routing::post;
    let got: Arc<Mutex<Vec<(u16, Value)>>> = Arc::default();
    let state = Arc::clone(&got);
    let app = axum::Router::new().route(
        "/hook",
        post(move |axum::Json(body): axum::Json<Value>| {
            let state = Arc::clone(&state);
            async move {
                let mut got = state.lock().unwrap();
                let status = if got.is_empty() { 500 } else { 200 };
                got.push((status, body));
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver {
        url: format!("http://{addr}/hook"),
        got,
    }
}

impl Receiver {
    fn got(&self) -> Vec<(u16, Value)> {
        self.got.lock().unwrap().clone()
    }
}

async fn alerts_reach_the_receiver_once_per_condition_and_again_after_a_500(backend: Backend) {
    let hook = receiver().await;
    let server = start_server(backend, None, "alert").await;
    push(&server, "flaky").await;
    for (name, rule) in [
        (
            "gave-up",
            json!({ "on": "permanent-failure", "job": "al/*", "webhook": hook.url }),
        ),
        (
            "streak",
            json!({ "on": "consecutive-failures", "after": 3, "job": "al/flaky", "webhook": hook.url }),
        ),
        ("noop", json!({ "on": "noop-skip", "webhook": hook.url })),
        (
            "late",
            json!({ "on": "misfire", "job": "al/late", "webhook": hook.url }),
        ),
    ] {
        let (status, body) = call(
            &server,
            Method::PUT,
            &format!("/api/v1/alerts/{name}"),
            Some(rule),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = call(
        &server,
        Method::PUT,
        "/api/v1/alerts/bad",
        Some(json!({ "on": "sometimes", "webhook": hook.url })),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "on");

    // Fails 3 times in a row and gives up: one permanent failure, one streak of 3.
    create_job(&server, json!({ "key": "al/flaky", "module": "flaky", "data": { "failures": 5 }, "max_attempts": 3, "every": "1h" })).await;
    // Its module does not exist: the NoOp job runs instead.
    create_job(
        &server,
        json!({ "key": "al/missing", "module": "nope", "every": "1h" }),
    )
    .await;
    // Due five minutes ago, past the misfire threshold, with policy skip.
    let long_ago = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    create_job(
        &server,
        json!({ "key": "al/late", "module": "flaky", "at": long_ago, "misfire": "skip" }),
    )
    .await;

    wait_until(Duration::from_secs(60), "four alerts delivered", || async {
        let mut rules: Vec<String> = hook
            .got()
            .iter()
            .filter(|(status, _)| *status == 200)
            .map(|(_, b)| b["rule"].as_str().unwrap_or_default().to_string())
            .collect();
        rules.sort();
        rules.len() >= 4
    })
    .await;
    // Time for a duplicate to arrive, if there were one (scans run every 500 ms).
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let got = hook.got();
    let delivered: Vec<&Value> = got
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, b)| b)
        .collect();
    let mut by_rule: HashMap<&str, Vec<&Value>> = HashMap::new();
    for body in &delivered {
        by_rule
            .entry(body["rule"].as_str().unwrap())
            .or_default()
            .push(body);
    }
    for rule in ["gave-up", "streak", "noop", "late"] {
        assert_eq!(by_rule.get(rule).map_or(0, Vec::len), 1, "{rule}: {got:?}");
    }
    assert_eq!(delivered.len(), 4, "{got:?}");
    // The one answered 500 came again, with the same id.
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(got[0].0, 500);
    assert!(delivered.iter().any(|b| b["id"] == got[0].1["id"]));

    let gave_up = by_rule["gave-up"][0];
    assert_eq!(gave_up["condition"], "permanent-failure");
    assert_eq!(gave_up["job"], "al/flaky");
    assert_eq!(gave_up["status"], "failed");
    assert_eq!(gave_up["attempt"], 3);
    assert_eq!(gave_up["error"], "planned failure 3 of 5");
    assert!(
        gave_up["fire"].is_string() && gave_up["node"].is_string(),
        "{gave_up}"
    );
    assert_eq!(by_rule["streak"][0]["consecutive_failures"], 3);
    assert_eq!(by_rule["noop"][0]["job"], "al/missing");
    assert_eq!(by_rule["late"][0]["status"], "misfired");
    // The link leads to the history entry.
    let link = gave_up["link"].as_str().unwrap();
    assert!(link.starts_with(&server.base), "{link}");
    let entry: Value = server
        .http
        .get(link)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(entry["id"], gave_up["history_id"]);
    assert_eq!(entry["status"], "failed");

    // Every delivery is recorded with its result, and counted.
    let (_, deliveries) = call(&server, Method::GET, "/api/v1/alerts/deliveries", None).await;
    let rows = deliveries["items"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{deliveries}");
    assert!(rows.iter().all(|d| d["state"] == "sent"), "{deliveries}");
    assert_eq!(
        rows.iter().filter(|d| d["attempts"] == 2).count(),
        1,
        "{deliveries}"
    );
    let metrics = scrape(&server).await;
    let retried_rule = got[0].1["rule"].as_str().unwrap();
    assert!(
        metrics.contains(&format!(
            "quartzite_alerts_total{{result=\"retry\",rule=\"{retried_rule}\"}} 1"
        )),
        "{metrics}"
    );
    for rule in ["gave-up", "streak", "noop", "late"] {
        assert!(
            metrics.contains(&format!(
                "quartzite_alerts_total{{result=\"sent\",rule=\"{rule}\"}} 1"
            )),
            "{rule}: {metrics}"
        );
    }

    // `alert test` sends a sample now, recorded like any delivery.
    let (status, test) = call(&server, Method::POST, "/api/v1/alerts/gave-up/test", None).await;
    assert_eq!(status, StatusCode::OK, "{test}");
    assert_eq!(test["state"], "sent", "{test}");
    let last = hook.got().last().cloned().unwrap();
    assert_eq!(last.1["test"], true);
    assert_eq!(last.1["rule"], "gave-up");
    let (status, _) = call(&server, Method::POST, "/api/v1/alerts/nobody/test", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}
on_both!(alerts_reach_the_receiver_once_per_condition_and_again_after_a_500);

async fn a_guest_flooding_events_is_stopped_with_a_clear_error(backend: Backend) {
    let server = start_server(backend, None, "flood").await;
    push(&server, "guest_relay").await;
    let limit = 1_000;
    create_job(
        &server,
        json!({ "key": "flood/many", "module": "relay", "at": chrono::Utc::now().to_rfc3339(),
                "data": { "emit": "flood", "times": limit + 5 }, "grants": { "emit": ["flood"] } }),
    )
    .await;
    create_job(
        &server,
        json!({ "key": "flood/big", "module": "relay", "at": chrono::Utc::now().to_rfc3339(),
                "data": { "emit": "flood", "pad": 70_000 }, "grants": { "emit": ["flood"] } }),
    )
    .await;
    for job in ["flood/many", "flood/big"] {
        wait_until(Duration::from_secs(60), "the run to end", || async {
            !history_of(server.store.as_ref(), job).await.is_empty()
        })
        .await;
    }
    let many = history_of(server.store.as_ref(), "flood/many").await;
    assert_eq!(many[0].status, HistoryStatus::Failed, "{:?}", many[0]);
    assert!(
        many[0]
            .details
            .contains("a run may emit at most 1000 events"),
        "{}",
        many[0].details
    );
    let big = history_of(server.store.as_ref(), "flood/big").await;
    assert_eq!(big[0].status, HistoryStatus::Failed, "{:?}", big[0]);
    assert!(
        big[0].details.contains("the limit is 65536"),
        "{}",
        big[0].details
    );
    // What was emitted before the limit stands; nothing after it.
    let events = server.store.event_list(Some("flood"), 5_000).await.unwrap();
    assert_eq!(events.len(), limit);
    server.stop().await;
}
on_both!(a_guest_flooding_events_is_stopped_with_a_clear_error);

/// The value of `quartzite_events_total{result="..."}`, 0 when not yet counted.
fn events_counted(metrics: &str, result: &str) -> u64 {
    let series = format!("quartzite_events_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| v.trim().parse().unwrap())
}

async fn a_fanning_out_chain_stops_at_its_budget_while_other_jobs_keep_firing(backend: Backend) {
    let budget = 40;
    let server = start_server_with(
        backend,
        None,
        "fan",
        quartzite::engine::scheduler::SchedulerConfig {
            max_chain_events: budget,
            ..Default::default()
        },
    )
    .await;
    push(&server, "guest_relay").await;
    // Beside it, a job on an interval whose every fire must run.
    create_job(
        &server,
        json!({ "key": "fan/tick", "module": "relay", "every": "200ms" }),
    )
    .await;
    wait_for_success(server.store.as_ref(), "fan/tick", Duration::from_secs(30)).await;
    // Every run emits ten of the event that starts it: 10, 100, 1000 ... fires
    // a level, were the chain not bounded.
    create_job(
        &server,
        json!({ "key": "fan/out", "module": "relay", "event": "fan.out",
                "data": { "emit": "fan.out", "times": 10 }, "grants": { "emit": ["fan.*"] } }),
    )
    .await;
    let (status, body) = call(&server, Method::POST, "/api/v1/events/fan.out", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    let root = body["event_id"].as_str().unwrap().to_string();
    let total = usize::try_from(budget).unwrap() + 1;
    wait_until(
        Duration::from_secs(120),
        "the chain to use its budget and its fires to end",
        || async {
            let events = server
                .store
                .event_list(Some("fan.out"), 10_000)
                .await
                .unwrap();
            let fires = server.store.fire_list().await.unwrap();
            events.len() >= total && !fires.iter().any(|f| f.job_key == "fan/out")
        },
    )
    .await;
    // The root and exactly its budget below it, every one of them run once.
    let events = server
        .store
        .event_list(Some("fan.out"), 10_000)
        .await
        .unwrap();
    assert_eq!(events.len(), total);
    assert!(
        events
            .iter()
            .filter(|e| e.event_id != root)
            .all(|e| e.source_job.as_deref() == Some("fan/out"))
    );
    let history = history_of(server.store.as_ref(), "fan/out").await;
    let refused: Vec<Value> = history
        .iter()
        .filter(|h| h.status == HistoryStatus::Skipped)
        .map(details)
        .collect();
    assert!(!refused.is_empty());
    for r in &refused {
        assert_eq!(r["reason"], "event-chain-budget", "{r}");
        assert_eq!(r["root"], root.as_str(), "{r}");
        assert_eq!(r["limit"], budget, "{r}");
    }
    let runs: std::collections::HashSet<&str> = history
        .iter()
        .filter(|h| h.status != HistoryStatus::Skipped)
        .filter_map(|h| h.fire_id.as_deref())
        .collect();
    assert_eq!(runs.len(), total, "one fire per event");
    // The guest was told: its run failed with the bound's error.
    assert!(
        history.iter().any(|h| h.status == HistoryStatus::Failed
            && h.details
                .contains("event chain budget of 40 events reached")),
        "{history:?}"
    );
    let metrics = scrape(&server).await;
    assert_eq!(
        events_counted(&metrics, "chain-budget-exceeded"),
        u64::try_from(refused.len()).unwrap(),
        "{metrics}"
    );
    assert_eq!(
        events_counted(&metrics, "accepted"),
        u64::from(budget) + 1,
        "{metrics}"
    );

    // The interval job missed nothing meanwhile: two more runs, then every
    // fire from its first to its last ran and succeeded, none skipped.
    let before = history_of(server.store.as_ref(), "fan/tick").await.len();
    wait_until(Duration::from_secs(30), "two more ticks", || async {
        history_of(server.store.as_ref(), "fan/tick").await.len() >= before + 2
    })
    .await;
    let ticks = history_of(server.store.as_ref(), "fan/tick").await;
    assert!(
        ticks.iter().all(|h| h.status == HistoryStatus::Success),
        "{ticks:?}"
    );
    let mut scheduled: Vec<i64> = ticks.iter().filter_map(|h| h.scheduled_ms).collect();
    scheduled.sort_unstable();
    scheduled.dedup();
    assert_eq!(scheduled.len(), ticks.len(), "each fire ran once");
    let (first, last) = (scheduled[0], scheduled[scheduled.len() - 1]);
    assert_eq!(
        usize::try_from((last - first) / 200).unwrap() + 1,
        scheduled.len(),
        "no fire of the interval job was left out: {scheduled:?}"
    );
    server.stop().await;
}
on_both!(a_fanning_out_chain_stops_at_its_budget_while_other_jobs_keep_firing);

async fn a_guests_key_does_not_take_the_operators(backend: Backend) {
    let server = start_server(backend, None, "squat").await;
    push(&server, "guest_relay").await;
    create_job(
        &server,
        json!({ "key": "squat/billing", "module": "relay", "event": "billing.run" }),
    )
    .await;
    // A job emits billing.run with the key the operator will use.
    create_job(
        &server,
        json!({ "key": "squat/guest", "module": "relay", "at": chrono::Utc::now().to_rfc3339(),
                "data": { "emit": "billing.run", "key": "invoice-42" },
                "grants": { "emit": ["billing.run"] } }),
    )
    .await;
    wait_for_success(
        server.store.as_ref(),
        "squat/billing",
        Duration::from_secs(30),
    )
    .await;
    let (status, body) = call(
        &server,
        Method::POST,
        "/api/v1/events/billing.run?key=invoice-42",
        Some(json!({ "from": "operator" })),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["duplicate"], false, "{body}");
    wait_until(
        Duration::from_secs(30),
        "the operator's event to run",
        || async { successes(&server, "squat/billing").await.len() == 2 },
    )
    .await;
    let payloads: Vec<Value> = successes(&server, "squat/billing")
        .await
        .iter()
        .map(|d| d["outcome"]["details"]["event"]["payload"].clone())
        .collect();
    assert!(
        payloads.contains(&json!({ "from": "operator" })),
        "{payloads:?}"
    );
    // The operator's key still de-duplicates the operator's events.
    let (status, again) = call(
        &server,
        Method::POST,
        "/api/v1/events/billing.run?key=invoice-42",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["event_id"], body["event_id"]);
    server.stop().await;
}
on_both!(a_guests_key_does_not_take_the_operators);

async fn a_guest_ignoring_refusals_is_refused_for_the_rest_of_its_run(backend: Backend) {
    let budget = 30;
    let server = start_server_with(
        backend,
        None,
        "storm",
        quartzite::engine::scheduler::SchedulerConfig {
            max_chain_events: budget,
            ..Default::default()
        },
    )
    .await;
    push(&server, "guest_hostile").await;
    // Every run emits fifty of the event that starts it and ignores refusals.
    create_job(
        &server,
        json!({ "key": "storm/flood", "module": "hostile", "event": "storm",
                "data": { "op": "emit-flood", "name": "storm", "times": 50 },
                "grants": { "emit": ["storm"] } }),
    )
    .await;
    let (status, body) = call(&server, Method::POST, "/api/v1/events/storm", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let runs = usize::try_from(budget).unwrap() + 1;
    wait_until(
        Duration::from_secs(120),
        "every event's fire to end",
        || async {
            let events = server
                .store
                .event_list(Some("storm"), 10_000)
                .await
                .unwrap();
            let fires = server.store.fire_list().await.unwrap();
            events.len() >= runs && !fires.iter().any(|f| f.job_key == "storm/flood")
        },
    )
    .await;
    assert_eq!(
        server
            .store
            .event_list(Some("storm"), 10_000)
            .await
            .unwrap()
            .len(),
        runs
    );
    let history = history_of(server.store.as_ref(), "storm/flood").await;
    let ran: Vec<Value> = history
        .iter()
        .filter(|h| h.status == HistoryStatus::Success)
        .map(|h| details(h)["outcome"]["details"].clone())
        .collect();
    assert_eq!(ran.len(), runs, "{history:?}");
    let (mut accepted, mut refused) = (0, 0);
    for run in &ran {
        accepted += run["accepted"].as_u64().unwrap();
        refused += run["refused"].as_u64().unwrap();
        assert!(
            run["first_error"]
                .as_str()
                .unwrap()
                .contains("event chain budget of 30 events reached"),
            "{run}"
        );
    }
    let attempted = u64::try_from(runs).unwrap() * 50;
    assert_eq!(
        (accepted, refused),
        (u64::from(budget), attempted - u64::from(budget))
    );
    // One history row per run that hit the budget, every refusal counted.
    let skipped: Vec<Value> = history
        .iter()
        .filter(|h| h.status == HistoryStatus::Skipped)
        .map(details)
        .collect();
    assert_eq!(
        skipped.len(),
        runs,
        "one history row per run, first: {:?}",
        skipped.first()
    );
    assert!(skipped.iter().all(|d| d["reason"] == "event-chain-budget"));
    let metrics = scrape(&server).await;
    assert_eq!(
        events_counted(&metrics, "chain-budget-exceeded"),
        refused,
        "{metrics}"
    );
    server.stop().await;
}
on_both!(a_guest_ignoring_refusals_is_refused_for_the_rest_of_its_run);

async fn a_job_whose_events_have_too_many_fires_waiting_is_refused(backend: Backend) {
    let limit = 5;
    // One worker: while the emitting run holds it, its events' fires all wait.
    let server = start_server_with(
        backend,
        None,
        "backlog",
        quartzite::engine::scheduler::SchedulerConfig {
            workers: 1,
            max_job_event_fires: limit,
            ..Default::default()
        },
    )
    .await;
    push(&server, "guest_hostile").await;
    push(&server, "guest_relay").await;
    create_job(
        &server,
        json!({ "key": "backlog/sink", "module": "relay", "event": "work" }),
    )
    .await;
    create_job(
        &server,
        json!({ "key": "backlog/src", "module": "hostile", "at": chrono::Utc::now().to_rfc3339(),
                "data": { "op": "emit-flood", "name": "work", "times": 20 },
                "grants": { "emit": ["work"] } }),
    )
    .await;
    wait_until(
        Duration::from_secs(60),
        "the emitting run to end",
        || async {
            history_of(server.store.as_ref(), "backlog/src")
                .await
                .iter()
                .any(|h| h.status == HistoryStatus::Success)
        },
    )
    .await;
    let history = history_of(server.store.as_ref(), "backlog/src").await;
    let run = history
        .iter()
        .find(|h| h.status == HistoryStatus::Success)
        .map(|h| details(h)["outcome"]["details"].clone())
        .unwrap();
    assert_eq!(
        (run["accepted"].as_u64(), run["refused"].as_u64()),
        (Some(5), Some(15)),
        "{run}"
    );
    assert!(
        run["first_error"]
            .as_str()
            .unwrap()
            .contains("this job's events have 5 fires waiting (limit 5)"),
        "{run}"
    );
    let skipped: Vec<Value> = history
        .iter()
        .filter(|h| h.status == HistoryStatus::Skipped)
        .map(details)
        .collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0]["reason"], "event-job-fires-limit");
    assert_eq!(
        (skipped[0]["waiting"].as_u64(), skipped[0]["limit"].as_u64()),
        (Some(5), Some(5))
    );
    // The accepted events' fires all run, once each.
    wait_until(Duration::from_secs(60), "the sink's five runs", || async {
        successes(&server, "backlog/sink").await.len() == 5
    })
    .await;
    let metrics = scrape(&server).await;
    assert_eq!(
        events_counted(&metrics, "job-fires-exceeded"),
        15,
        "{metrics}"
    );
    server.stop().await;
}
on_both!(a_job_whose_events_have_too_many_fires_waiting_is_refused);
