//! The HTTP admin API, `/metrics` and the health endpoints of a real node on
//! SQLite and PostgreSQL, called with a real HTTP client; and real `quartzite
//! serve` processes for what only a process shows (refusing to start).

use crate::common::server::{Backend, Server, start_server};
use crate::common::*;

use quartzite::api::ApiOptions;
use quartzite::engine::scheduler::SchedulerConfig;
use quartzite::node::{self, ServeOptions};
use quartzite::runtime::{EngineConfig, RuntimeConfig};
use quartzite::store::model::{HistoryFilter, HistoryStatus};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const TOKEN: &str = "test-admin-token-0123456789";

async fn start(backend: Backend, token: Option<&str>) -> Server {
    start_server(backend, token, "api").await
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with the admin token, when the server has one.
    fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, self.url(path));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }
}

async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("response is not JSON ({e}): {text}"));
    (status, value)
}

/// Asserts an error response's status, code, and that its message says `says`.
async fn assert_error(response: reqwest::Response, status: StatusCode, code: &str, says: &str) {
    let (got, body) = json_of(response).await;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(says),
        "message {message:?} does not say {says:?}"
    );
}

async fn push_hello(server: &Server) -> Value {
    let bytes = std::fs::read(wasm("hello")).unwrap();
    let response = server
        .admin(reqwest::Method::POST, "/api/v1/modules")
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn a_job_created_through_the_api_fires_and_is_counted_in_metrics(backend: Backend) {
    let server = start(backend, Some(TOKEN)).await;
    let pushed = push_hello(&server).await;
    let module = format!(
        "{}@{}",
        pushed["module"]["name"].as_str().unwrap(),
        pushed["module"]["version"].as_str().unwrap()
    );
    let response = server
        .admin(reqwest::Method::POST, "/api/v1/jobs")
        .json(&json!({ "key": "api/hello", "module": module, "every": "200ms", "data": { "name": "api" } }))
        .send()
        .await
        .unwrap();
    let (status, job) = json_of(response).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    assert_eq!(job["job_key"], "api/hello");
    assert_eq!(job["data"], json!({ "name": "api" }));
    assert_eq!(job["triggers"][0]["trigger_key"], "api/hello:every");

    wait_for_success(server.store.as_ref(), "api/hello", Duration::from_secs(60)).await;
    // Stop the job and let what is in flight finish, so the counts hold still.
    let paused = server
        .admin(reqwest::Method::POST, "/api/v1/jobs/api/hello/pause")
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), StatusCode::OK);
    wait_for_no_executions(&server).await;
    let successes = history_of(server.store.as_ref(), "api/hello")
        .await
        .iter()
        .filter(|h| h.status == HistoryStatus::Success)
        .count();
    assert_eq!(
        successes,
        history_of(server.store.as_ref(), "api/hello").await.len()
    );

    let scrape = || async {
        let response = server
            .admin(reqwest::Method::GET, "/metrics")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        response.text().await.unwrap()
    };
    let value = |text: &str, series: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    };
    // A run is counted right after its completion commits: wait for the last one.
    let executed = "quartzite_tasks_executed_total{job_group=\"api\",job_key=\"api/hello\",status=\"success\"}";
    let mut text = scrape().await;
    for _ in 0..100 {
        if value(&text, executed) == Some(successes as u64) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        text = scrape().await;
    }
    assert_eq!(value(&text, executed), Some(successes as u64), "{text}");
    assert_eq!(
        value(
            &text,
            "quartzite_task_duration_seconds_count{status=\"success\"}"
        ),
        Some(successes as u64),
        "{text}"
    );
    // Every run of the job was a first attempt.
    assert_eq!(
        value(&text, "quartzite_fire_lag_seconds_count{attempt=\"first\"}"),
        Some(successes as u64),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "quartzite_job_duration_seconds_count{job_group=\"api\",job_key=\"api/hello\"}"
        ),
        Some(successes as u64),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "quartzite_job_fire_lag_seconds_count{job_group=\"api\",job_key=\"api/hello\"}"
        ),
        Some(successes as u64),
        "{text}"
    );
    // The last success is the newest history row's end, in seconds.
    let newest = history_of(server.store.as_ref(), "api/hello")
        .await
        .iter()
        .map(|h| h.ended_ms)
        .max()
        .unwrap();
    let last_success: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "quartzite_job_last_success_timestamp_seconds{job_group=\"api\",job_key=\"api/hello\"} ",
            )
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no last success in:\n{text}"));
    assert!(
        (last_success - newest as f64 / 1000.0).abs() < 0.0015,
        "{last_success} vs {newest} ms"
    );
    // Runs of a guest that returns at once take well under a millisecond; a
    // sum of whole milliseconds would be 0.
    let sum: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("quartzite_task_duration_seconds_sum{status=\"success\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    assert!(sum > 0.0, "{text}");
    assert_eq!(
        value(&text, "quartzite_triggers{state=\"PAUSED\"}"),
        Some(1),
        "{text}"
    );
    assert_eq!(
        value(&text, "quartzite_triggers{state=\"WAITING\"}"),
        Some(0),
        "{text}"
    );
    assert_eq!(
        value(&text, "quartzite_nodes{state=\"alive\"}"),
        Some(1),
        "{text}"
    );
    // The only node holds the alert lock, so it is the one reporting the
    // cluster's gauges.
    assert_eq!(
        value(&text, "quartzite_cluster_reporter"),
        Some(1),
        "{text}"
    );
    assert!(text.contains("quartzite_build_info{version=\""), "{text}");
    assert!(text.contains("process_resident_memory_bytes "), "{text}");
    // Compiled once, when pushed; runs reuse the compiled module.
    assert_eq!(
        value(&text, "quartzite_module_compile_seconds_count"),
        Some(1),
        "{text}"
    );
    promtool_check(&text);

    // The stats say which attempts their lag covers, and cover the ones the
    // metric's `attempt="first"` series counts: here every run.
    let (status, stats) = json_of(
        server
            .admin(reqwest::Method::GET, "/api/v1/stats/runs?minutes=60")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(stats["lag_attempts"], "first", "{stats}");
    assert_eq!(
        stats["lag_statuses"],
        json!(["success", "failed", "retried", "timeout"]),
        "{stats}"
    );
    let samples: i64 = stats["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["lag_samples"].as_i64().unwrap())
        .sum();
    assert_eq!(
        Some(u64::try_from(samples).unwrap()),
        value(&text, "quartzite_fire_lag_seconds_count{attempt=\"first\"}"),
        "{stats}"
    );

    let (status, history) = json_of(
        server
            .admin(
                reqwest::Method::GET,
                "/api/v1/history?job=api/hello&status=success&limit=1",
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{history}");
    assert_eq!(history["items"].as_array().unwrap().len(), 1);
    assert_eq!(history["items"][0]["job_key"], "api/hello");
    assert_eq!(history["items"][0]["status"], "success");
    assert_eq!(history["total"].as_u64(), Some(successes as u64));
    server.stop().await;
}

async fn wait_for_no_executions(server: &Server) {
    let http = server.http.clone();
    let executions = server.url("/api/v1/executions");
    wait_until(Duration::from_secs(30), "no fire in flight", || {
        let (http, executions) = (http.clone(), executions.clone());
        async move {
            let body: Value = http
                .get(&executions)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body["items"].as_array().is_some_and(Vec::is_empty)
        }
    })
    .await;
}
on_both!(a_job_created_through_the_api_fires_and_is_counted_in_metrics);

/// Runs the real `promtool check metrics` on a scrape.
fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "promtool is required (Debian package prometheus; ./dev.sh test installs it): {e}"
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- scrape ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn malformed_requests_get_json_errors_that_say_what_is_wrong(backend: Backend) {
    let server = start(backend, None).await;
    let post = |body: &'static str| {
        server
            .http
            .post(server.url("/api/v1/jobs"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_error(
        post("{not json").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "bad_request",
        "line 1 column 2",
    )
    .await;
    assert_error(
        post(r#"{"key": "g/a", "module": "hello", "every": "1s", "colour": "red"}"#)
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "bad_request",
        "unknown field `colour`",
    )
    .await;
    let (status, body) = json_of(
        post(r#"{"key": "g/a", "module": "hello", "every": "soon"}"#)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_field");
    assert_eq!(body["error"]["field"], "every");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid duration \"soon\""),
        "{body}"
    );
    assert_error(
        post(r#"{"key": "g/a", "module": "hello", "cron": "0 0 25 * * ?"}"#)
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        "invalid cron expression",
    )
    .await;
    assert_error(
        post(r#"{"key": "nogroup", "module": "hello", "every": "1s"}"#)
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        "expected GROUP/NAME",
    )
    .await;
    assert_error(
        server
            .http
            .post(server.url("/api/v1/jobs"))
            .header("content-type", "text/plain")
            .body("x")
            .send()
            .await
            .unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "must be JSON",
    )
    .await;
    let get = |path: &str| server.http.get(server.url(path)).send();
    assert_error(
        get("/api/v1/history?limit=0").await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        "limit 0",
    )
    .await;
    assert_error(
        get("/api/v1/history?status=done").await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        "status \"done\"",
    )
    .await;
    assert_error(
        get("/api/v1/history?cursor=xyz").await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        "cursor \"xyz\"",
    )
    .await;
    assert_error(
        get("/api/v1/history?limit=many").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "bad_request",
        "limit",
    )
    .await;
    assert_error(
        get("/api/v1/history?colour=red").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "bad_request",
        "colour",
    )
    .await;
    assert_error(
        get("/api/v1/jobs/g/missing").await.unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
        "no job \"g/missing\"",
    )
    .await;
    assert_error(
        get("/api/v1/nothing-here").await.unwrap(),
        StatusCode::NOT_FOUND,
        "no_route",
        "/api/v1/nothing-here",
    )
    .await;
    assert_error(
        server
            .http
            .delete(server.url("/api/v1/jobs"))
            .send()
            .await
            .unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "DELETE",
    )
    .await;
    assert_error(
        server
            .http
            .post(server.url("/api/v1/jobs/g/missing/pause"))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
        "no job \"g/missing\"",
    )
    .await;
    // Module bytes are checked exactly as `quartzite module push` checks them.
    assert_error(
        server
            .http
            .post(server.url("/api/v1/modules"))
            .body("not wasm at all")
            .send()
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "module_rejected",
        "module-invalid",
    )
    .await;
    let core = wat::parse_str("(module)").unwrap();
    assert_error(
        server
            .http
            .post(server.url("/api/v1/modules"))
            .body(core)
            .send()
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "module_rejected",
        "not a component",
    )
    .await;
    assert!(server.store.module_list(None).await.unwrap().is_empty());
    // A job that exists cannot be created twice; PUT replaces it.
    let body = r#"{"key": "g/a", "module": "hello", "every": "1h"}"#;
    assert_eq!(post(body).await.unwrap().status(), StatusCode::CREATED);
    assert_error(
        post(body).await.unwrap(),
        StatusCode::CONFLICT,
        "conflict",
        "exists",
    )
    .await;
    let put = server
        .http
        .put(server.url("/api/v1/jobs/g/a"))
        .json(&json!({ "module": "hello", "cron": "0 0 * * * ?", "overlap": "forbid" }))
        .send()
        .await
        .unwrap();
    let (status, job) = json_of(put).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["overlap"], "forbid");
    assert_eq!(job["triggers"][0]["trigger_key"], "g/a:cron");
    assert_error(
        server
            .http
            .put(server.url("/api/v1/jobs/g/a"))
            .json(&json!({ "key": "g/b", "module": "hello", "every": "1s" }))
            .send()
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        "cannot be renamed",
    )
    .await;
    server.stop().await;
}
on_both!(malformed_requests_get_json_errors_that_say_what_is_wrong);

async fn mutations_need_the_token_and_every_one_is_audited(backend: Backend) {
    let server = start(backend, Some(TOKEN)).await;
    let job = json!({ "key": "a/job", "module": "hello", "every": "1h" });
    // Reads are open on loopback; writes are not.
    assert_eq!(
        server
            .http
            .get(server.url("/api/v1/jobs"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_error(
        server
            .http
            .post(server.url("/api/v1/jobs"))
            .json(&job)
            .send()
            .await
            .unwrap(),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Bearer",
    )
    .await;
    assert_error(
        server
            .http
            .post(server.url("/api/v1/jobs"))
            .bearer_auth("wrong")
            .json(&job)
            .send()
            .await
            .unwrap(),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "not valid",
    )
    .await;
    assert!(server.store.job_get("a/job").await.unwrap().is_none());
    let created = server
        .admin(reqwest::Method::POST, "/api/v1/jobs")
        .json(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    for (path, status) in [
        ("/api/v1/jobs/a/job/pause", StatusCode::OK),
        ("/api/v1/jobs/a/job/resume", StatusCode::OK),
        ("/api/v1/triggers/a/job:every/pause", StatusCode::OK),
        ("/api/v1/groups/a/resume", StatusCode::OK),
        ("/api/v1/jobs/a/job/run-now", StatusCode::ACCEPTED),
    ] {
        let r = server
            .admin(reqwest::Method::POST, path)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path}: {}", r.text().await.unwrap());
    }
    let triggers = server.store.trigger_list(Some("a/job")).await.unwrap();
    assert_eq!(triggers[0].state.as_str(), "PAUSED");
    let deleted = server
        .admin(reqwest::Method::DELETE, "/api/v1/jobs/a/job")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    assert!(server.store.job_get("a/job").await.unwrap().is_none());

    let (status, audit) = json_of(
        server
            .http
            .get(server.url("/api/v1/audit?limit=100"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let rows: Vec<(String, String, String, u64)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|r| {
            (
                r["actor"].as_str().unwrap().to_string(),
                r["action"].as_str().unwrap().to_string(),
                r["target"].as_str().unwrap().to_string(),
                r["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let me = rows[2].0.clone();
    assert!(me.starts_with("token:") && !me.contains(TOKEN), "{rows:?}");
    let expected: Vec<(String, String, String, u64)> = [
        ("denied", "POST /api/v1/jobs", "/api/v1/jobs", 401),
        ("denied", "POST /api/v1/jobs", "/api/v1/jobs", 401),
        (me.as_str(), "job.create", "a/job", 201),
        (me.as_str(), "job.pause", "a/job", 200),
        (me.as_str(), "job.resume", "a/job", 200),
        (me.as_str(), "trigger.pause", "a/job:every", 200),
        (me.as_str(), "group.resume", "a", 200),
        (me.as_str(), "job.run_now", "a/job", 202),
        (me.as_str(), "job.delete", "a/job", 200),
    ]
    .iter()
    .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), *d))
    .collect();
    assert_eq!(rows, expected);
    let create = &audit["items"].as_array().unwrap()[6];
    assert_eq!(create["summary"]["every"], "1h", "{create}");
    assert!(create["at_ms"].as_i64().unwrap() > 0);
    server.stop().await;
}
on_both!(mutations_need_the_token_and_every_one_is_audited);

async fn history_pages_return_every_row_exactly_once(backend: Backend) {
    let server = start(backend, None).await;
    push_hello(&server).await;
    let created = server
        .http
        .post(server.url("/api/v1/jobs"))
        .json(&json!({ "key": "p/hello", "module": "hello", "every": "20ms" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let store = Arc::clone(&server.store);
    wait_until(Duration::from_secs(60), "11 history rows", || {
        let store = Arc::clone(&store);
        async move { history_of(store.as_ref(), "p/hello").await.len() >= 11 }
    })
    .await;
    let paused = server
        .http
        .post(server.url("/api/v1/jobs/p/hello/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), StatusCode::OK);
    wait_for_no_executions(&server).await;
    let all: Vec<String> = server
        .store
        .history_list(&HistoryFilter {
            job_key: Some("p/hello".into()),
            limit: 100_000,
            ..HistoryFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.id)
        .collect();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/api/v1/history?job=p/hello&limit=3".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) =
            json_of(server.http.get(server.url(&path)).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["total"].as_u64().unwrap(), all.len() as u64);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|h| h["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(
        seen, all,
        "pages, concatenated, are the history newest first"
    );
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len());
    server.stop().await;
}
on_both!(history_pages_return_every_row_exactly_once);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_is_served_and_health_is_open() {
    let server = start(Backend::Sqlite, Some(TOKEN)).await;
    let (status, doc) = json_of(
        server
            .http
            .get(server.url("/api/v1/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 15, "{paths:?}");
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let concrete = path.replace("{group}", "g").replace("{name}", "n");
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = server
                .admin(method.clone(), &concrete)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let text = response.text().await.unwrap();
            assert!(
                !text.contains("\"no_route\"") && !text.contains("\"method_not_allowed\""),
                "{method} {path} is documented but not served: {status} {text}"
            );
        }
    }
    assert_eq!(
        server
            .http
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    server.stop().await;
}

#[test]
fn a_server_beyond_loopback_refuses_to_start_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quartzite"))
        .args(["serve", "--listen", "0.0.0.0:0", "--db"])
        .arg(format!("sqlite://{}", dir.path().join("q.db").display()))
        .env_remove("QUARTZITE_ADMIN_TOKEN")
        .env("QUARTZITE_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("0.0.0.0:0") && err.contains("without an admin token"),
        "{err}"
    );
    assert!(
        !dir.path().join("q.db").exists(),
        "nothing was written before refusing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_every_call_but_health_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_quartzite"))
        .args(["serve", "--listen", &format!("0.0.0.0:{port}"), "--db"])
        .arg(format!("sqlite://{}", dir.path().join("q.db").display()))
        .env("QUARTZITE_ADMIN_TOKEN", TOKEN)
        .env("QUARTZITE_CACHE_DIR", dir.path().join("cache"))
        .env("QUARTZITE_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_until(Duration::from_secs(60), "/readyz of the process", || {
        let (http, url) = (http.clone(), format!("{base}/readyz"));
        async move {
            http.get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
        }
    })
    .await;
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    for path in ["/api/v1/jobs", "/metrics", "/api/v1/audit"] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        let r = http
            .get(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    let pid = i32::try_from(child.id()).unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// Runs the CLI with `args` and the environment cleared of settings.
fn cli(server: &Server, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_quartzite"))
        .args(args)
        .env_remove("QUARTZITE_SERVER")
        .env_remove("QUARTZITE_ADMIN_TOKEN")
        .env_remove("QUARTZITE_DB")
        .env("QUARTZITE_CACHE_DIR", server.dir.path().join("cli-cache"))
        .output()
        .unwrap()
}

/// The CLI's JSON output of `args`, once through the server and once on the
/// database; both must succeed.
fn both_ways(server: &Server, args: &[&str]) -> (Value, Value) {
    let mut remote = vec!["--server", server.base.as_str(), "--token", TOKEN, "--json"];
    remote.extend_from_slice(args);
    let mut local = vec!["--db", server.db_url.as_str(), "--json"];
    local.extend_from_slice(args);
    let parse = |out: std::process::Output, how: &str| -> Value {
        assert!(
            out.status.success(),
            "{how} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{how} {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    };
    (
        parse(cli(server, &remote), "remote"),
        parse(cli(server, &local), "local"),
    )
}

/// Asserts a CLI run failed with `code` and said `says` on stderr, nothing on stdout.
fn assert_fails(out: &std::process::Output, code: i32, says: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(err.contains(says), "stderr {err:?} does not say {says:?}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_gives_the_same_answers_through_a_server_as_on_the_database() {
    let server = start(Backend::Sqlite, Some(TOKEN)).await;
    let base = server.base.clone();
    let remote = |args: &[&str]| {
        let mut all = vec!["--server", base.as_str(), "--token", TOKEN];
        all.extend_from_slice(args);
        cli(&server, &all)
    };
    let hello = wasm("hello");
    let pushed = remote(&["--json", "module", "push", hello.to_str().unwrap()]);
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let pushed: Value = serde_json::from_slice(&pushed.stdout).unwrap();
    assert_eq!(pushed["module"]["name"], "hello");
    let added = remote(&[
        "job",
        "add",
        "r/hello",
        "--module",
        "hello",
        "--every",
        "100ms",
        "--data",
        r#"{"name":"remote"}"#,
    ]);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    assert!(String::from_utf8_lossy(&added.stdout).contains("added job r/hello"));
    wait_for_success(server.store.as_ref(), "r/hello", Duration::from_secs(60)).await;
    let bad = remote(&["job", "pause", "r/hello", "--until", "yesterday"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("until"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let paused = remote(&[
        "job",
        "pause",
        "r/hello",
        "--note",
        "moving the reports database",
        "--until",
        "2h",
    ]);
    assert!(
        paused.status.success(),
        "{}",
        String::from_utf8_lossy(&paused.stderr)
    );
    assert!(
        String::from_utf8_lossy(&paused.stdout).starts_with("paused r/hello until "),
        "{}",
        String::from_utf8_lossy(&paused.stdout)
    );
    wait_for_no_executions(&server).await;

    for args in [
        &["module", "list"][..],
        &["trigger", "list", "--job", "r/hello"],
        &["history", "list", "--job", "r/hello", "--limit", "5"],
        &["cluster", "locks"],
    ] {
        let (mut through_server, mut on_db) = both_ways(&server, args);
        // A held lock's lease is renewed while it is held (the alert scanner's
        // every 500 ms): the two reads may see different expiries.
        if args[0] == "cluster" {
            for lock in [&mut through_server, &mut on_db]
                .into_iter()
                .filter_map(|locks| locks.as_array_mut())
                .flatten()
                .filter_map(|lock| lock.as_object_mut())
            {
                lock.remove("lease_until_ms");
            }
        }
        assert_eq!(through_server, on_db, "{args:?}");
    }
    let (through_server, on_db) = both_ways(&server, &["job", "show", "r/hello"]);
    assert_eq!(through_server, on_db);
    assert_eq!(through_server["data"], json!({ "name": "remote" }));
    assert_eq!(through_server["state"], "paused");
    assert_eq!(through_server["pause_note"], "moving the reports database");
    let until = through_server["paused_until_ms"].as_i64().unwrap();
    let in_two_hours = chrono::Utc::now().timestamp_millis() + 2 * 3_600_000;
    assert!((until - in_two_hours).abs() < 60_000, "{until}");
    assert_eq!(
        through_server["next_fire"],
        Value::Null,
        "a paused job fires nothing"
    );
    let (through_server, on_db) = both_ways(&server, &["job", "list"]);
    assert_eq!(through_server, on_db);
    let (nodes, _) = both_ways(&server, &["cluster", "nodes"]);
    assert_eq!(nodes[0]["alive"], true, "{nodes}");
    let history = remote(&["history", "list", "--job", "r/hello"]);
    assert!(String::from_utf8_lossy(&history.stdout).contains("success"));

    // Mistakes give the exit codes and messages they give on the database.
    let bad_cron = [
        "job",
        "add",
        "r/bad",
        "--module",
        "hello",
        "--cron",
        "0 0 25 * * ?",
    ];
    assert_fails(&remote(&bad_cron), 2, "--cron invalid cron expression");
    assert_fails(
        &remote(&["job", "pause", "r/missing"]),
        1,
        "no job \"r/missing\"",
    );
    let local_missing = cli(
        &server,
        &["--db", &server.db_url, "job", "pause", "r/missing"],
    );
    assert_fails(&local_missing, 1, "no job \"r/missing\"");
    let future = wasm("guest_future_major");
    assert_fails(
        &remote(&["module", "push", future.to_str().unwrap()]),
        3,
        "module-incompatible",
    );
    assert_fails(
        &cli(
            &server,
            &[
                "--server", &base, "--token", "wrong", "job", "pause", "r/hello",
            ],
        ),
        1,
        "the bearer token is not valid",
    );
    assert_fails(
        &remote(&["history", "list", "--status", "great"]),
        2,
        "--status \"great\"",
    );
    assert_fails(&remote(&["db", "migrate"]), 2, "not through --server");
    assert_fails(
        &cli(&server, &["--server", "http://127.0.0.1:1", "job", "list"]),
        1,
        "cannot reach the server",
    );
    assert_fails(
        &cli(&server, &["--server", "ftp://x", "job", "list"]),
        2,
        "expected http://HOST:PORT",
    );

    let run = remote(&["--json", "job", "run-now", "r/hello"]);
    let run: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(run["job_key"], "r/hello");
    assert!(run["fire_id"].as_str().is_some_and(|id| !id.is_empty()));
    let deleted = remote(&["job", "delete", "r/hello"]);
    assert!(deleted.status.success());
    assert!(server.store.job_get("r/hello").await.unwrap().is_none());
    let audit: Vec<String> = server
        .store
        .audit_list(&quartzite::store::model::AuditFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.action)
        .collect();
    for action in [
        "module.push",
        "job.update",
        "job.pause",
        "job.run_now",
        "job.delete",
    ] {
        assert!(
            audit.iter().any(|a| a == action),
            "{action} not audited: {audit:?}"
        );
    }
    server.stop().await;
}

#[test]
fn completions_are_generated_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_quartzite"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        for word in ["run-now", "--server", "history"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_ready_when_the_scheduler_runs_and_healthz_answers_before() {
    for standby in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let options = ServeOptions {
            db_url: format!("sqlite://{}", dir.path().join("q.db").display()),
            manifest: None,
            node_id: format!("ready-{}", quartzite::store::sched::new_id()),
            standby,
            scheduler: SchedulerConfig::default(),
            runtime: RuntimeConfig {
                engine: EngineConfig::default(),
                cache_dir: Some(dir.path().join("cache")),
                node_id: "ready-test".into(),
            },
        };
        let api = ApiOptions::parse("127.0.0.1:0", None, None).unwrap();
        let node = node::start_with_api(&options, Some(api)).await.unwrap();
        let base = format!("http://{}", node.api.as_ref().unwrap().local_addr);
        let http = reqwest::Client::new();
        // Bootstrapped, but the scheduler has not been started yet.
        assert_error(
            http.get(format!("{base}/readyz")).send().await.unwrap(),
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "scheduler",
        )
        .await;
        let health = http.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(node::run(node, standby, rx));
        wait_until(Duration::from_secs(30), "/readyz to answer 200", || {
            let (http, url) = (http.clone(), format!("{base}/readyz"));
            async move {
                http.get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == StatusCode::OK)
            }
        })
        .await;
        stop.send(true).unwrap();
        task.await.unwrap();
        assert!(
            http.get(format!("{base}/healthz")).send().await.is_err(),
            "the API stops with the node"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_over_the_size_limit_is_refused_with_413() {
    let server = start(Backend::Sqlite, None).await;
    let too_big = vec![0u8; quartzite::runtime::module::MAX_MODULE_BYTES + 1];
    assert_error(
        server
            .http
            .post(server.url("/api/v1/modules"))
            .body(too_big)
            .send()
            .await
            .unwrap(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "request body",
    )
    .await;
    server.stop().await;
}

#[test]
fn a_short_admin_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quartzite"))
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(format!("sqlite://{}", dir.path().join("q.db").display()))
        .env("QUARTZITE_ADMIN_TOKEN", "short")
        .env("QUARTZITE_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the admin token is too short"), "{err}");
}

// ---------------------------------------------------------------------------
// Issue 15: names, inputs, origins, audit, pipes and describe() hints.
// ---------------------------------------------------------------------------

/// A push's JSON answer through the API with the given query.
async fn push_as(server: &Server, guest: &str, query: &str) -> (StatusCode, Value) {
    let bytes = std::fs::read(wasm(guest)).unwrap();
    json_of(
        server
            .admin(reqwest::Method::POST, &format!("/api/v1/modules{query}"))
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_cannot_take_over_an_existing_name_through_describe() {
    let server = start(Backend::Sqlite, None).await;
    // `hello` exists (another build pushed under that name explicitly).
    let (status, body) = push_as(&server, "counter", "?name=hello&version=0.0.1").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // A module whose describe() claims `hello` does not become its current version.
    let (status, body) = push_as(&server, "hello", "").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "module_rejected", "{body}");
    let says = body["error"]["message"].as_str().unwrap();
    assert!(says.contains("name=hello"), "{says}");
    let current: Vec<Value> = server
        .store
        .module_list(Some("hello"))
        .await
        .unwrap()
        .into_iter()
        .map(|m| json!([m.version, m.current]))
        .collect();
    assert_eq!(current, vec![json!(["0.0.1", true])]);
    // Given explicitly, the version is added, and the answer says what was written.
    let (status, body) = push_as(&server, "hello", "?name=hello").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["module"]["name"], "hello");
    // The CLI on the database: refused with exit 3, then accepted with --name.
    let db = server.db_url.clone();
    let counter = wasm("counter");
    let report = wasm("report");
    let out = cli(
        &server,
        &[
            "--db",
            &db,
            "module",
            "push",
            counter.to_str().unwrap(),
            "--name",
            "report",
            "--version",
            "0.0.1",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(
        &server,
        &["--db", &db, "module", "push", report.to_str().unwrap()],
    );
    assert_fails(&out, 3, "--name report");
    let out = cli(
        &server,
        &[
            "--db",
            &db,
            "module",
            "push",
            report.to_str().unwrap(),
            "--name",
            "report",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("pushed report@"), "{said}");
    // A new name may still come from describe().
    let flaky = wasm("flaky");
    let out = cli(
        &server,
        &[
            "--db",
            &db,
            "--json",
            "module",
            "push",
            flaky.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_hosts_cross_origin_changes_and_form_bodies_are_refused_and_audited() {
    let server = start(Backend::Sqlite, None).await;
    let port = server.base.rsplit(':').next().unwrap().to_string();
    let plain = reqwest::Client::new();
    // DNS rebinding: the page's own name arrives as the Host header.
    let r = plain
        .get(server.url("/api/v1/jobs"))
        .header("host", format!("evil.example:{port}"))
        .send()
        .await
        .unwrap();
    assert_error(
        r,
        StatusCode::MISDIRECTED_REQUEST,
        "host_not_allowed",
        "evil.example",
    )
    .await;
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let r = plain
            .get(server.url("/api/v1/jobs"))
            .header("host", host.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{host}");
    }
    let job = r#"{"key": "x/y", "module": "hello", "every": "1h"}"#;
    // A form post and a no-cors fetch without a content type change nothing.
    let r = plain
        .post(server.url("/api/v1/jobs"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(job)
        .send()
        .await
        .unwrap();
    assert_error(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "application/json",
    )
    .await;
    let r = plain
        .post(server.url("/api/v1/jobs/x/y/run-now"))
        .send()
        .await
        .unwrap();
    assert_error(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "none",
    )
    .await;
    // JSON from another origin is refused too.
    for (name, value) in [
        ("origin", "http://127.0.0.1:1"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let r = plain
            .post(server.url("/api/v1/jobs"))
            .header("content-type", "application/json")
            .header(name, value)
            .body(job)
            .send()
            .await
            .unwrap();
        assert_error(r, StatusCode::FORBIDDEN, "forbidden_origin", value).await;
    }
    assert!(server.store.job_list().await.unwrap().is_empty());
    // The server's own page may.
    let r = plain
        .post(server.url("/api/v1/jobs"))
        .header("content-type", "application/json")
        .header("origin", server.base.clone())
        .header("sec-fetch-site", "same-origin")
        .body(job)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // Each refusal is audited as denied with the client's address.
    let audit = server
        .store
        .audit_list(&quartzite::store::model::AuditFilter {
            actor: Some("denied".into()),
            action: None,
            limit: 100,
            before: None,
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 4, "{audit:?}");
    for row in &audit {
        assert!(
            row.client
                .as_deref()
                .is_some_and(|c| c.starts_with("127.0.0.1:")),
            "{row:?}"
        );
    }
    let (_, listed) = json_of(plain.get(server.url("/api/v1/audit")).send().await.unwrap()).await;
    assert!(listed["items"][0]["client"].is_string(), "{listed}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_calls_are_rate_limited_before_they_are_written_and_the_audit_log_is_kept_like_history()
 {
    let server = start(Backend::Sqlite, Some(TOKEN)).await;
    let mut limited = 0;
    let tries = 200;
    for _ in 0..tries {
        let r = server
            .http
            .post(server.url("/api/v1/jobs/a/b/pause"))
            .bearer_auth("wrong-token-wrong-token")
            .send()
            .await
            .unwrap();
        match r.status() {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            other => panic!("{other}"),
        }
    }
    assert!(limited > 0, "no call was limited");
    let denied = server
        .store
        .audit_list(&quartzite::store::model::AuditFilter {
            actor: Some("denied".into()),
            action: None,
            limit: 1000,
            before: None,
        })
        .await
        .unwrap();
    assert_eq!(denied.len(), tries - limited, "a limited call was written");
    // Retention: rows older than the age go, and beyond the row cap.
    let last = denied[0].at_ms;
    let store = Arc::clone(&server.store);
    wait_until(
        Duration::from_secs(10),
        "the database clock to move",
        || {
            let store = Arc::clone(&store);
            async move { store.now_ms().await.unwrap() > last }
        },
    )
    .await;
    let removed = server.store.audit_cleanup(0, 1_000_000).await.unwrap();
    assert_eq!(removed, u64::try_from(denied.len()).unwrap());
    for _ in 0..3 {
        let before = server.store.now_ms().await.unwrap();
        let r = server
            .admin(reqwest::Method::POST, "/api/v1/groups/g/pause")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let store = Arc::clone(&store);
        wait_until(
            Duration::from_secs(10),
            "the database clock to move",
            || {
                let store = Arc::clone(&store);
                async move { store.now_ms().await.unwrap() > before + 1 }
            },
        )
        .await;
    }
    assert_eq!(
        server.store.audit_cleanup(i64::MAX / 4, 2).await.unwrap(),
        1
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_inputs_are_checked_the_same_through_the_api_and_the_cli() {
    let server = start(Backend::Sqlite, Some(TOKEN)).await;
    let big = "x".repeat(2 << 20);
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"key": "g/..", "module": "hello", "every": "1s"}),
            "key",
            "g/..",
        ),
        (
            json!({"key": "../etc", "module": "hello", "every": "1s"}),
            "key",
            "../etc",
        ),
        (
            json!({"key": "g/a", "module": "hello@<script>", "every": "1s"}),
            "module",
            "<script>",
        ),
        (
            json!({"key": "g/a", "module": "hello", "every": "1s", "data": big}),
            "data",
            "bytes",
        ),
        (
            json!({"key": "g/a", "module": "hello", "every": "1s", "max_attempts": 0}),
            "max_attempts",
            "0",
        ),
        (
            json!({"key": "g/a", "module": "hello", "every": "100000d"}),
            "every",
            "100000d",
        ),
        (
            json!({"key": "g/a", "module": "hello", "every": "1s", "timeout": "30d"}),
            "timeout",
            "30d",
        ),
        (
            json!({"key": "g/a", "module": "hello", "cron": "0 0 0 31 2 ?"}),
            "cron",
            "never fire",
        ),
        (
            json!({"key": "g/a", "module": "hello", "cron": "0 0 * * * ?", "tz": "Mars/Olympus"}),
            "tz",
            "Mars/Olympus",
        ),
    ];
    for (body, field, says) in &cases {
        let r = server
            .admin(reqwest::Method::POST, "/api/v1/jobs")
            .json(body)
            .send()
            .await
            .unwrap();
        let (status, answer) = json_of(r).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        assert_eq!(answer["error"]["field"], *field, "{answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(says),
            "{answer}"
        );
    }
    let (status, body) = push_as(&server, "hello", "?version=%3Cscript%3E").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "version", "{body}");
    assert!(server.store.module_list(None).await.unwrap().is_empty());
    // The CLI, on the database and through the server: exit 2 quoting what was typed.
    let hello = wasm("hello");
    let flags: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["job", "add", "g/..", "--module", "hello", "--every", "1s"],
            "g/..",
        ),
        (
            vec![
                "job",
                "add",
                "g/a",
                "--module",
                "hello",
                "--every",
                "1s",
                "--max-attempts",
                "0",
            ],
            "--max-attempts 0",
        ),
        (
            vec![
                "job", "add", "g/a", "--module", "hello", "--every", "100000d",
            ],
            "100000d",
        ),
        (
            vec![
                "job",
                "add",
                "g/a",
                "--module",
                "hello",
                "--cron",
                "0 0 0 31 2 ?",
            ],
            "never fire",
        ),
        (
            vec![
                "job",
                "add",
                "g/a",
                "--module",
                "hello",
                "--cron",
                "0 0 * * * ?",
                "--tz",
                "Mars/Olympus",
            ],
            "--tz",
        ),
        (
            vec![
                "module",
                "push",
                hello.to_str().unwrap(),
                "--version",
                "<script>",
            ],
            "<script>",
        ),
    ];
    for (args, says) in &flags {
        for how in [
            vec!["--db", server.db_url.as_str()],
            vec!["--server", server.base.as_str(), "--token", TOKEN],
        ] {
            let mut all = how.clone();
            all.extend_from_slice(args);
            assert_fails(&cli(&server, &all), 2, says);
        }
    }
    assert!(server.store.job_list().await.unwrap().is_empty());
    assert!(server.store.module_list(None).await.unwrap().is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_behaves_in_pipes_pages_history_and_exits_2_on_a_rejected_manifest() {
    let server = start(Backend::Sqlite, None).await;
    push_hello(&server).await;
    let db = server.db_url.clone();
    let out = cli(
        &server,
        &[
            "--db", &db, "job", "add", "p/fast", "--module", "hello", "--every", "20ms",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = Arc::clone(&server.store);
    wait_until(Duration::from_secs(60), "5 history rows", || {
        let store = Arc::clone(&store);
        async move { history_of(store.as_ref(), "p/fast").await.len() >= 5 }
    })
    .await;
    let out = cli(&server, &["--db", &db, "job", "pause", "p/fast"]);
    assert!(out.status.success());
    wait_for_no_executions(&server).await;
    // A reader that is gone: every command ends quietly.
    for args in [
        vec!["job", "list"],
        vec!["history", "list"],
        vec!["module", "list"],
        vec!["trigger", "list"],
        vec!["cluster", "nodes"],
        vec!["--json", "job", "list"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_quartzite"))
            .args(["--db", &db])
            .args(&args)
            .env("QUARTZITE_CACHE_DIR", server.dir.path().join("cli-cache"))
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
    // History pages on with the cursor it names when it truncates.
    let total = history_of(server.store.as_ref(), "p/fast").await.len();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut args = vec![
            "--db",
            db.as_str(),
            "--json",
            "history",
            "list",
            "--job",
            "p/fast",
            "--limit",
            "2",
        ];
        if let Some(c) = &cursor {
            args.extend(["--cursor", c.as_str()]);
        }
        let out = cli(&server, &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let page: Value = serde_json::from_slice(&out.stdout).unwrap();
        seen.extend(page.as_array().unwrap().iter().map(|h| h["id"].clone()));
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        cursor = err.split("--cursor ").nth(1).map(|c| c.trim().to_string());
        if cursor.is_none() {
            assert!(err.is_empty(), "{err}");
            break;
        }
    }
    assert_eq!(seen.len(), total);
    seen.sort_by_key(ToString::to_string);
    seen.dedup();
    assert_eq!(seen.len(), total, "a row came twice");
    assert_fails(
        &cli(
            &server,
            &["--db", &db, "history", "list", "--limit", "50000"],
        ),
        2,
        "--limit 50000",
    );
    // A rejected manifest: exit 2, the missing module file named with the rest.
    let manifest = server.dir.path().join("bad.toml");
    std::fs::write(
        &manifest,
        "[[module]]\nname = \"m\"\npath = \"gone.wasm\"\n[[job]]\nkey = \"a/..\"\nmodule = \"m\"\n",
    )
    .unwrap();
    let out = cli(
        &server,
        &[
            "serve",
            "--no-api",
            "--db",
            &db,
            "--manifest",
            manifest.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("gone.wasm") && err.contains("a/.."), "{err}");
    // A rejected push exits 3, on the database and through the server.
    let junk = server.dir.path().join("junk.wasm");
    std::fs::write(&junk, "not wasm").unwrap();
    assert_fails(
        &cli(
            &server,
            &["--db", &db, "module", "push", junk.to_str().unwrap()],
        ),
        3,
        "module-invalid",
    );
    let base = server.base.clone();
    assert_fails(
        &cli(
            &server,
            &["--server", &base, "module", "push", junk.to_str().unwrap()],
        ),
        3,
        "module-invalid",
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_hints_fill_what_job_add_and_the_api_leave_out() {
    let server = start(Backend::Sqlite, None).await;
    push_hello(&server).await;
    let (status, body) = push_as(&server, "report", "").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // report says overlap = forbid; hello has a default schedule.
    let (status, job) = json_of(
        server
            .admin(reqwest::Method::POST, "/api/v1/jobs")
            .json(&json!({"key": "h/report", "module": "report", "every": "1h"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    assert_eq!(job["overlap"], "forbid", "{job}");
    let (status, job) = json_of(
        server
            .admin(reqwest::Method::POST, "/api/v1/jobs")
            .json(&json!({"key": "h/hello", "module": "hello", "paused": true}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    assert_eq!(job["triggers"][0]["trigger_key"], "h/hello:cron", "{job}");
    // The operator's choice wins.
    let (_, job) = json_of(
        server
            .admin(reqwest::Method::PUT, "/api/v1/jobs/h/report")
            .json(&json!({"module": "report", "every": "1h", "overlap": "allow"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(job["overlap"], "allow", "{job}");
    // job add, on the database and through the server.
    let (remote, local) = both_ways_open(
        &server,
        &[
            "job", "add", "c/report", "--module", "report", "--every", "1h",
        ],
    );
    assert_eq!(remote["overlap"], "forbid", "{remote}");
    assert_eq!(local["overlap"], "forbid", "{local}");
    let (remote, local) = both_ways_open(&server, &["job", "add", "c/hello", "--module", "hello"]);
    assert_eq!(
        remote["triggers"][0]["trigger_key"], "c/hello:cron",
        "{remote}"
    );
    assert_eq!(
        local["triggers"][0]["trigger_key"], "c/hello:cron",
        "{local}"
    );
    let out = cli(
        &server,
        &[
            "--db",
            &server.db_url,
            "job",
            "add",
            "c/x",
            "--module",
            "report",
        ],
    );
    assert_fails(&out, 2, "--cron, --every");
    server.stop().await;
}

/// [`both_ways`] for a server without a token.
fn both_ways_open(server: &Server, args: &[&str]) -> (Value, Value) {
    let run = |how: Vec<&str>| -> Value {
        let mut all = how;
        all.push("--json");
        all.extend_from_slice(args);
        let out = cli(server, &all);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    (
        run(vec!["--server", server.base.as_str()]),
        run(vec!["--db", server.db_url.as_str()]),
    )
}

async fn backfill_replay_and_cancel_answer_through_the_api_and_the_cli_with_a_server(
    backend: Backend,
) {
    let server = start(backend, Some(TOKEN)).await;
    push_hello(&server).await;
    let job = json!({ "key": "bf/api", "module": "hello", "cron": "0 0 6 1 1 ?" });
    let created = server
        .admin(reqwest::Method::POST, "/api/v1/jobs")
        .json(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let range =
        json!({ "from": "2023-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "overlap": "allow" });
    // A change: the token is needed.
    assert_error(
        server
            .http
            .post(server.url("/api/v1/jobs/bf/api/backfill"))
            .json(&range)
            .send()
            .await
            .unwrap(),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Bearer",
    )
    .await;
    // An unknown field is named.
    assert_error(
        server
            .admin(reqwest::Method::POST, "/api/v1/jobs/bf/api/backfill")
            .json(&json!({ "from": "2023-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "ovrlap": "skip" }))
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "bad_request",
        "ovrlap",
    )
    .await;
    let mut dry = range.clone();
    dry["dry_run"] = json!(true);
    let (status, body) = json_of(
        server
            .admin(reqwest::Method::POST, "/api/v1/jobs/bf/api/backfill")
            .json(&dry)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let times: Vec<&str> = body["times"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["scheduled_at"].as_str().unwrap())
        .collect();
    assert_eq!(
        times,
        [
            "2023-01-01T06:00:00.000Z",
            "2024-01-01T06:00:00.000Z",
            "2025-01-01T06:00:00.000Z",
            "2026-01-01T06:00:00.000Z"
        ]
    );
    let (status, body) = json_of(
        server
            .admin(reqwest::Method::POST, "/api/v1/jobs/bf/api/backfill")
            .json(&range)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["created"], 4);
    // The node runs them.
    wait_until(
        Duration::from_secs(60),
        "the four backfill runs",
        || async {
            server
                .store
                .history_list(&HistoryFilter {
                    job_key: Some("bf/api".into()),
                    status: Some(HistoryStatus::Success),
                    limit: 100,
                    ..HistoryFilter::default()
                })
                .await
                .unwrap()
                .len()
                == 4
        },
    )
    .await;
    // Through the CLI and this server: the same operations, the same JSON.
    let remote = |args: &[&str]| {
        let mut all = vec!["--server", server.base.as_str(), "--token", TOKEN, "--json"];
        all.extend_from_slice(args);
        cli(&server, &all)
    };
    let replay = remote(&[
        "history", "replay", "--job", "bf/*", "--since", "1h", "--status", "success",
    ]);
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let replay: Value = serde_json::from_slice(&replay.stdout).unwrap();
    assert_eq!(replay["started"], 4, "{replay}");
    let again = remote(&[
        "history", "replay", "--job", "bf/*", "--since", "1h", "--status", "success",
    ]);
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(
        (again["started"].clone(), again["already_replayed"].clone()),
        (json!(0), json!(4))
    );
    let cancel = remote(&["fire", "cancel", "--job", "nothing/*"]);
    assert!(
        cancel.status.success(),
        "{}",
        String::from_utf8_lossy(&cancel.stderr)
    );
    let cancel: Value = serde_json::from_slice(&cancel.stdout).unwrap();
    assert_eq!(cancel["cancelled"], 0);
    let far = remote(&[
        "job",
        "backfill",
        "bf/api",
        "--from",
        "2020-01-01T00:00:00Z",
        "--to",
        "2099-01-01T00:00:00Z",
    ]);
    assert_eq!(far.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&far.stderr).contains("in the future"));
    server.stop().await;
}
on_both!(backfill_replay_and_cancel_answer_through_the_api_and_the_cli_with_a_server);

async fn calendars_are_put_listed_shown_and_deleted_and_bad_input_is_named(backend: Backend) {
    let server = start(backend, Some(TOKEN)).await;
    let put = |name: &str, body: Value| {
        server
            .admin(reqwest::Method::PUT, &format!("/api/v1/calendars/{name}"))
            .json(&body)
            .send()
    };
    let (status, nights) = json_of(
        put(
            "nights",
            json!({ "kind": "daily", "window": "22:00-06:00", "tz": "Europe/Berlin" }),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{nights}");
    assert_eq!(nights["name"], "nights");
    assert_eq!(nights["kind"], "daily");
    assert_eq!(nights["start"], "22:00:00");
    assert_eq!(nights["source"], "api");

    // Bad input: each refusal names the field.
    for (body, field, says) in [
        (json!({ "kind": "monthly" }), "kind", "expected holiday"),
        (
            json!({ "kind": "holiday", "dates": ["2030-13-01"] }),
            "dates",
            "not a date",
        ),
        (
            json!({ "kind": "daily", "window": "22:00" }),
            "window",
            "not a window",
        ),
        (
            json!({ "kind": "weekly", "days": ["MON"], "tz": "Nowhere/City" }),
            "tz",
            "IANA",
        ),
        (
            json!({ "kind": "rrule", "rrule": "FREQ=NEVER" }),
            "rrule",
            "",
        ),
    ] {
        let (status, error) = json_of(put("bad", body.clone()).await.unwrap()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {error}");
        assert_eq!(error["error"]["field"], field, "{body}: {error}");
        assert!(
            error["error"]["message"].as_str().unwrap().contains(says),
            "{error}"
        );
    }
    assert_error(
        put("bad", json!({ "kind": "weekly", "dayz": ["MON"] }))
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "bad_request",
        "dayz",
    )
    .await;
    assert_error(
        put(
            "other",
            json!({ "kind": "weekly", "days": ["MON"], "base": "missing" }),
        )
        .await
        .unwrap(),
        StatusCode::CONFLICT,
        "conflict",
        "base \"missing\"",
    )
    .await;

    // A job naming a calendar that is not stored is refused, naming it.
    push_hello(&server).await;
    assert_error(
        server
            .admin(reqwest::Method::POST, "/api/v1/jobs")
            .json(&json!({ "key": "cal/job", "module": "hello", "cron": "0 0 * * * ?", "calendar": "holidays" }))
            .send()
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        "no calendar \"holidays\"",
    )
    .await;
    let (status, job) = json_of(
        server
            .admin(reqwest::Method::POST, "/api/v1/jobs")
            .json(&json!({ "key": "cal/job", "module": "hello", "cron": "0 0 * * * ?", "calendar": ["nights"] }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    assert_eq!(job["triggers"][0]["calendars"], json!(["nights"]));

    let (_, list) = json_of(
        server
            .admin(reqwest::Method::GET, "/api/v1/calendars")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    let (_, shown) = json_of(
        server
            .admin(reqwest::Method::GET, "/api/v1/calendars/nights")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(shown["used_by"], json!(["cal/job:cron"]), "{shown}");
    assert_error(
        server
            .admin(reqwest::Method::GET, "/api/v1/calendars/none")
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
        "no calendar \"none\"",
    )
    .await;
    // In use: refused, naming the trigger.
    assert_error(
        server
            .admin(reqwest::Method::DELETE, "/api/v1/calendars/nights")
            .send()
            .await
            .unwrap(),
        StatusCode::CONFLICT,
        "conflict",
        "cal/job:cron",
    )
    .await;
    let deleted = server
        .admin(reqwest::Method::DELETE, "/api/v1/jobs/cal/job")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    let (status, gone) = json_of(
        server
            .admin(reqwest::Method::DELETE, "/api/v1/calendars/nights")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{gone}");
    assert_eq!(gone["deleted"], true);
    // Changes need the token.
    let anonymous = server
        .http
        .put(server.url("/api/v1/calendars/x"))
        .json(&json!({ "kind": "weekly", "days": ["MON"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}
on_both!(calendars_are_put_listed_shown_and_deleted_and_bad_input_is_named);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_calendars_both_ways_and_preview_marks_excluded_times() {
    let server = start(Backend::Sqlite, Some(TOKEN)).await;
    let (remote, local) = both_ways(
        &server,
        &[
            "calendar",
            "put",
            "weekend",
            "--day",
            "SAT,SUN",
            "--description",
            "no runs",
        ],
    );
    assert_eq!(remote["name"], "weekend");
    assert_eq!(remote["days"], json!(["SAT", "SUN"]));
    assert_eq!(local["days"], remote["days"]);
    let (remote, local) = both_ways(
        &server,
        &[
            "calendar",
            "put",
            "xmas",
            "--date",
            "2030-12-25",
            "--base",
            "weekend",
        ],
    );
    assert_eq!(remote["base"], "weekend");
    assert_eq!(local["kind"], "holiday");
    let (remote, local) = both_ways(&server, &["calendar", "list"]);
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&remote), ["weekend", "xmas"]);
    assert_eq!(names(&local), names(&remote));

    // The table names the rule.
    let text = cli(
        &server,
        &["--db", server.db_url.as_str(), "calendar", "list"],
    );
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("SAT,SUN") && text.contains("2030-12-25"),
        "{text}"
    );

    // Bad input fails with usage (2) on both ways, saying what is wrong.
    for how in [
        vec!["--server", server.base.as_str(), "--token", TOKEN],
        vec!["--db", server.db_url.as_str()],
    ] {
        let mut args = how.clone();
        args.extend(["calendar", "put", "bad", "--window", "25:00-01:00"]);
        assert_fails(&cli(&server, &args), 2, "not a time of day");
        let mut args = how.clone();
        args.extend([
            "calendar",
            "put",
            "bad",
            "--day",
            "MON",
            "--cron",
            "* * * * * ?",
        ]);
        assert_fails(&cli(&server, &args), 2, "one rule");
    }

    // Preview: times the calendars exclude are listed with the one excluding
    // them. 2030-12-25 is a Wednesday, 12-28 and 12-29 the weekend.
    let preview = |json: bool| {
        let mut args = vec!["--db", server.db_url.as_str()];
        if json {
            args.push("--json");
        }
        args.extend([
            "trigger",
            "preview",
            "--cron",
            "0 0 9 * * ?",
            "--after",
            "2030-12-24T10:00:00Z",
            "--count",
            "3",
            "--calendar",
            "xmas",
        ]);
        cli(&server, &args)
    };
    let out = preview(true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let items: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        items,
        json!([
            { "excluded_at": "2030-12-25T09:00:00.000Z", "calendar": "xmas" },
            { "fire_at": "2030-12-26T09:00:00.000Z" },
            { "fire_at": "2030-12-27T09:00:00.000Z" },
            { "excluded_at": "2030-12-28T09:00:00.000Z", "calendar": "weekend" },
            { "excluded_at": "2030-12-29T09:00:00.000Z", "calendar": "weekend" },
            { "fire_at": "2030-12-30T09:00:00.000Z" },
        ])
    );
    let text = String::from_utf8_lossy(&preview(false).stdout).to_string();
    assert!(
        text.contains("# excluded: 2030-12-25T09:00:00.000Z by calendar xmas"),
        "{text}"
    );
    let unknown = cli(
        &server,
        &[
            "--db",
            server.db_url.as_str(),
            "trigger",
            "preview",
            "--every",
            "1h",
            "--calendar",
            "nope",
        ],
    );
    assert_fails(&unknown, 1, "no calendar \"nope\"");

    // A job added with a calendar shows it; deleting it is refused meanwhile.
    let hello = wasm("hello");
    let remote_args = ["--server", server.base.as_str(), "--token", TOKEN];
    let mut push = remote_args.to_vec();
    push.extend(["module", "push", hello.to_str().unwrap()]);
    assert!(cli(&server, &push).status.success());
    let mut add = remote_args.to_vec();
    add.extend([
        "job",
        "add",
        "c/daily",
        "--module",
        "hello",
        "--cron",
        "0 0 9 * * ?",
        "--calendar",
        "xmas",
    ]);
    let added = cli(&server, &add);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let (remote, _) = both_ways(&server, &["trigger", "list", "--job", "c/daily"]);
    assert_eq!(remote[0]["calendars"], json!(["xmas"]), "{remote}");
    let listed = cli(
        &server,
        &["--db", server.db_url.as_str(), "trigger", "list"],
    );
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("calendar xmas"),
        "{}",
        String::from_utf8_lossy(&listed.stdout)
    );
    let (shown, _) = both_ways(&server, &["calendar", "show", "xmas"]);
    assert_eq!(shown["used_by"], json!(["c/daily:cron"]));
    let mut delete = remote_args.to_vec();
    delete.extend(["calendar", "delete", "xmas"]);
    assert_fails(&cli(&server, &delete), 1, "c/daily:cron");
    let mut job_delete = remote_args.to_vec();
    job_delete.extend(["job", "delete", "c/daily"]);
    assert!(cli(&server, &job_delete).status.success());
    let (deleted, _) = {
        let out = cli(
            &server,
            &[&remote_args[..], &["--json", "calendar", "delete", "xmas"]].concat(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (serde_json::from_slice::<Value>(&out.stdout).unwrap(), ())
    };
    assert_eq!(deleted["deleted"], true);
    let gone = cli(
        &server,
        &["--db", server.db_url.as_str(), "calendar", "show", "xmas"],
    );
    assert_fails(&gone, 1, "no calendar \"xmas\"");
    server.stop().await;
}
