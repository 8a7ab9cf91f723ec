//! Grants on real components against a real HTTP server on loopback: what a
//! job may reach, what it may not, the per-run limits, secrets injected but
//! never stored, config, emit grants, a node without the secret key, and the
//! Python and JavaScript SDKs' `config` and `http` under the real host.
//!
//! The runtime tests use the in-memory grant source; the node tests run a
//! whole node (SQLite and PostgreSQL) through its admin API. The guests must be
//! built first (`./dev.sh guests`).

use crate::common::*;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use quartzite::grants::{Grants, HttpLimitsSpec, SecretGrant};
use quartzite::runtime::services::{KvStore, MemoryEvents, MemoryKv};
use quartzite::runtime::{
    EngineConfig, HostServices, MemoryGrants, RunOutcome, RunReport, RunRequest, Runtime,
    RuntimeConfig,
};
use quartzite::store::model::JobDef;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the local server saw: path and headers of every request.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, HeaderMap)>>>);

impl Seen {
    fn paths(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(p, _)| p.clone())
            .collect()
    }

    fn header(&self, path: &str, name: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|(p, _)| p == path)
            .and_then(|(_, h)| h.get(name).map(|v| v.to_str().unwrap().to_string()))
    }
}

impl Seen {
    fn header_last(&self, path: &str, name: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(p, _)| p == path)
            .and_then(|(_, h)| h.get(name).map(|v| v.to_str().unwrap().to_string()))
    }
}

struct Upstream {
    port: u16,
    seen: Seen,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// A small HTTP service on 127.0.0.1: `/ok`, `/echo/auth` (answers with the
/// Authorization header it got), `/echo/body` (with the body it got), `/redirect` (to an ungranted host), `/big`
/// (64 KiB), `/slow` (answers after 5 s), `/v1/items`.
async fn upstream() -> Upstream {
    async fn handle(
        State(seen): State<Seen>,
        uri: axum::http::Uri,
        headers: HeaderMap,
        request: axum::extract::Request,
    ) -> axum::response::Response {
        let auth = headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        seen.0
            .lock()
            .unwrap()
            .push((uri.path().to_string(), headers));
        match uri.path() {
            "/ok" => "hello".into_response(),
            "/echo/body" => match axum::body::to_bytes(request.into_body(), 1 << 20).await {
                Ok(body) => {
                    format!("you posted: {}", String::from_utf8_lossy(&body)).into_response()
                }
                Err(_) => StatusCode::BAD_REQUEST.into_response(),
            },
            "/v1/items" => axum::Json(json!([1, 2, 3])).into_response(),
            "/echo/auth" => format!("you sent: {auth}").into_response(),
            "/redirect" => (
                StatusCode::FOUND,
                [("location", "http://ungranted.invalid/landing")],
            )
                .into_response(),
            "/big" => "x".repeat(64 << 10).into_response(),
            "/slow" => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late".into_response()
            }
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    }
    let seen = Seen::default();
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Upstream { port, seen, task }
}

const SECRET: &str = "s3cr3t-token-4711";

struct Fixture {
    runtime: Runtime,
    grants: Arc<MemoryGrants>,
    kv: Arc<MemoryKv>,
    events: Arc<MemoryEvents>,
}

fn fixture() -> Fixture {
    fixture_in(None)
}

/// A fixture whose runtime keeps compiled modules in `cache`.
fn fixture_in(cache: Option<std::path::PathBuf>) -> Fixture {
    let grants = Arc::new(MemoryGrants::new());
    let kv = Arc::new(MemoryKv::new());
    let events = Arc::new(MemoryEvents::new(8));
    let services = HostServices {
        kv: kv.clone(),
        locks: Arc::new(quartzite::runtime::services::LocalLocks::new()),
        events: events.clone(),
        grants: grants.clone(),
    };
    let runtime = Runtime::new(
        RuntimeConfig {
            engine: EngineConfig::default(),
            cache_dir: cache,
            node_id: "grants-test".into(),
        },
        services,
    )
    .unwrap();
    Fixture {
        runtime,
        grants,
        kv,
        events,
    }
}

impl Fixture {
    async fn run(&self, data: Value) -> RunReport {
        self.run_guest("guest_http", data).await
    }

    /// Runs the built guest `guest` as the job `tests/http`.
    async fn run_guest(&self, guest: &str, data: Value) -> RunReport {
        let job = self.runtime.resolve_file(&wasm(guest));
        let request = RunRequest {
            data: data.to_string(),
            ..RunRequest::new("tests/http")
        };
        self.runtime.execute(&job, request).await
    }
}

fn details(report: &RunReport) -> Value {
    match &report.outcome {
        RunOutcome::Completed {
            details: Some(d), ..
        } => serde_json::from_str(d).unwrap(),
        other => panic!(
            "expected a completed run, got {other:?}; logs {:?}",
            report.logs
        ),
    }
}

fn results(report: &RunReport) -> Vec<Value> {
    details(report)["results"].as_array().unwrap().clone()
}

fn logs(report: &RunReport) -> String {
    report
        .logs
        .iter()
        .map(|l| l.message.clone())
        .collect::<Vec<_>>()
        .join("\n")
}

fn req(url: &str) -> Value {
    json!({ "url": url })
}

fn http_grants(patterns: &[String]) -> Grants {
    Grants {
        http: patterns.to_vec(),
        ..Grants::default()
    }
}

/// Config grants `channel = "#ops"` and `a = "1"`, with `http` grants.
fn config_grant(http: Vec<String>) -> Grants {
    Grants {
        http,
        config: [
            ("channel".to_string(), "#ops".to_string()),
            ("a".into(), "1".into()),
        ]
        .into_iter()
        .collect(),
        ..Grants::default()
    }
}

mod http {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_granted_request_succeeds_and_is_logged_without_its_query() {
        let up = upstream().await;
        let f = fixture();
        f.grants
            .put("tests/http", http_grants(&[up.url("/v1/*"), up.url("/ok")]));
        let report = f
            .run(json!({ "requests": [req(&up.url("/v1/items?token=abc")), req(&up.url("/ok"))] }))
            .await;
        let r = results(&report);
        assert_eq!(r[0]["status"], 200, "{r:?}");
        assert_eq!(r[0]["body"], "[1,2,3]");
        assert_eq!(r[1]["body"], "hello");
        assert_eq!(up.seen.paths(), ["/v1/items", "/ok"]);
        let logs = logs(&report);
        assert!(
            logs.contains(&format!(
                "http GET {} -> 200, 7 bytes in",
                up.url("/v1/items")
            )),
            "{logs}"
        );
        assert!(
            !logs.contains("token=abc"),
            "the query stays out of the log: {logs}"
        );
        let counted = f.grants.requests();
        assert_eq!(
            counted[0],
            ("tests/http".into(), "127.0.0.1".into(), "2xx".into())
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_without_grants_is_denied_and_told_which_grant_would_allow_it() {
        let up = upstream().await;
        let f = fixture();
        let report = f
            .run(json!({ "requests": [req(&up.url("/v1/items"))] }))
            .await;
        assert_eq!(results(&report)[0]["error"], "denied");
        let logs = logs(&report);
        assert!(
            logs.contains(&format!(
                "http GET {} denied: the job has no http grant; `http = [\"{}\"]`",
                up.url("/v1/items"),
                up.url("/v1/*")
            )),
            "{logs}"
        );
        assert!(up.seen.paths().is_empty(), "nothing reached the server");
        assert_eq!(f.grants.requests()[0].2, "denied");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_ungranted_url_is_denied_with_the_grants_named() {
        let up = upstream().await;
        let f = fixture();
        f.grants.put("tests/http", http_grants(&[up.url("/v1/*")]));
        let report = f
            .run(json!({ "requests": [req(&up.url("/ok")), req(&up.url("/v1/../ok"))] }))
            .await;
        let r = results(&report);
        assert_eq!(
            (r[0]["error"].as_str(), r[1]["error"].as_str()),
            (Some("denied"), Some("denied"))
        );
        let logs = logs(&report);
        assert!(
            logs.contains(&format!(
                "no http grant matches (granted: {})",
                up.url("/v1/*")
            )),
            "{logs}"
        );
        assert!(up.seen.paths().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_name_resolving_to_loopback_is_denied_unless_the_address_is_granted() {
        let up = upstream().await;
        let f = fixture();
        let by_name = format!("http://localhost:{}/ok", up.port);
        f.grants.put(
            "tests/http",
            http_grants(&[format!("http://localhost:{}/*", up.port)]),
        );
        let report = f.run(json!({ "requests": [req(&by_name)] })).await;
        assert_eq!(results(&report)[0]["error"], "denied");
        let logs = logs(&report);
        assert!(
            logs.contains("localhost is 127.0.0.1, a loopback address"),
            "{logs}"
        );
        assert!(up.seen.paths().is_empty());

        // The same server through a grant naming its address literally.
        f.grants.put("tests/http", http_grants(&[up.url("/*")]));
        let report = f.run(json!({ "requests": [req(&up.url("/ok"))] })).await;
        assert_eq!(results(&report)[0]["status"], 200);

        // Or through the name with allow_private.
        f.grants.put(
            "tests/http",
            Grants {
                allow_private: true,
                ..http_grants(&[format!("http://localhost:{}/*", up.port)])
            },
        );
        let report = f.run(json!({ "requests": [req(&by_name)] })).await;
        assert_eq!(results(&report)[0]["status"], 200, "{}", logs_of(&report));

        // Or through the name with a network holding the address, and no other.
        for (network, reached) in [("127.0.0.0/8", true), ("10.0.0.0/8", false)] {
            f.grants.put(
                "tests/http",
                Grants {
                    private_networks: vec![network.into()],
                    ..http_grants(&[format!("http://localhost:{}/*", up.port)])
                },
            );
            let report = f.run(json!({ "requests": [req(&by_name)] })).await;
            let r = &results(&report)[0];
            if reached {
                assert_eq!(r["status"], 200, "{network}: {}", logs_of(&report));
            } else {
                assert_eq!(r["error"], "denied", "{network}: {}", logs_of(&report));
            }
        }
        let bad = Grants {
            private_networks: vec!["10.0.0.0/33".into()],
            ..Grants::default()
        };
        assert_eq!(bad.compile().unwrap_err().field, "private_networks[1]");
    }

    fn logs_of(report: &RunReport) -> String {
        logs(report)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_metadata_address_is_denied_even_to_a_grant_of_every_host() {
        let f = fixture();
        f.grants
            .put("tests/http", http_grants(&["http://*/*".into()]));
        let report = f
            .run(json!({ "requests": [req("http://169.254.169.254/latest/meta-data/")] }))
            .await;
        assert_eq!(results(&report)[0]["error"], "denied");
        let logs = logs(&report);
        assert!(
            logs.contains("169.254.169.254 is 169.254.169.254, a link-local address"),
            "{logs}"
        );
        for private in [
            "http://10.0.0.1/",
            "http://[::1]/",
            "http://100.64.0.1/",
            "http://[fd00::1]/",
        ] {
            let report = f.run(json!({ "requests": [req(private)] })).await;
            assert_eq!(results(&report)[0]["error"], "denied", "{private}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_redirect_to_an_ungranted_host_is_denied() {
        let up = upstream().await;
        let f = fixture();
        f.grants.put("tests/http", http_grants(&[up.url("/*")]));
        let report = f
            .run(json!({ "requests": [req(&up.url("/redirect"))] }))
            .await;
        assert_eq!(results(&report)[0]["error"], "denied");
        let logs = logs(&report);
        assert!(
            logs.contains(&format!("http GET {} -> 302", up.url("/redirect"))),
            "{logs}"
        );
        assert!(
            logs.contains("http GET http://ungranted.invalid/landing denied"),
            "{logs}"
        );
        // Not following it gives the guest the 302 itself.
        let report = f
            .run(json!({ "requests": [{ "url": up.url("/redirect"), "max_redirects": 0 }] }))
            .await;
        assert_eq!(results(&report)[0]["status"], 302);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_limit_is_hit_with_its_documented_outcome() {
        let up = upstream().await;
        let f = fixture();
        let limited = |limits: HttpLimitsSpec| Grants {
            http_limits: limits,
            ..http_grants(&[up.url("/*")])
        };
        // Requests per run.
        f.grants.put(
            "tests/http",
            limited(HttpLimitsSpec {
                max_requests: Some(2),
                ..HttpLimitsSpec::default()
            }),
        );
        let ok = req(&up.url("/ok"));
        let report = f.run(json!({ "requests": [ok, ok, ok] })).await;
        let r = results(&report);
        assert_eq!(
            (r[0]["status"].clone(), r[1]["status"].clone()),
            (json!(200), json!(200))
        );
        assert_eq!(r[2]["error"], "limit", "{r:?}");
        assert!(logs(&report).contains("limit: a run may send at most 2 requests"));

        // Response bytes per run.
        f.grants.put(
            "tests/http",
            limited(HttpLimitsSpec {
                max_response_bytes: Some("1KiB".into()),
                ..HttpLimitsSpec::default()
            }),
        );
        let report = f.run(json!({ "requests": [req(&up.url("/big"))] })).await;
        assert_eq!(
            results(&report)[0]["error"],
            "limit",
            "{:?}",
            results(&report)
        );
        assert!(logs(&report).contains("the run's response bodies reached 1024 bytes"));

        // Request bytes per run.
        f.grants.put(
            "tests/http",
            limited(HttpLimitsSpec {
                max_request_bytes: Some("1KiB".into()),
                ..HttpLimitsSpec::default()
            }),
        );
        let report = f
            .run(json!({ "requests": [{ "url": up.url("/ok"), "method": "POST", "body": "y".repeat(4096) }] }))
            .await;
        assert_ne!(results(&report)[0]["status"], 200, "{:?}", results(&report));

        // Time per request.
        f.grants.put(
            "tests/http",
            limited(HttpLimitsSpec {
                request_timeout: Some("300ms".into()),
                ..HttpLimitsSpec::default()
            }),
        );
        let started = std::time::Instant::now();
        let report = f.run(json!({ "requests": [req(&up.url("/slow"))] })).await;
        assert_eq!(
            results(&report)[0]["error"],
            "network",
            "{:?}",
            results(&report)
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "the request was cut at its timeout"
        );
        assert!(logs(&report).contains("timed out"), "{}", logs(&report));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_still_waiting_at_the_run_timeout_ends_with_the_run() {
        let up = upstream().await;
        let f = fixture();
        f.grants.put("tests/http", http_grants(&[up.url("/*")]));
        let job = f.runtime.resolve_file(&wasm("guest_http"));
        let request = RunRequest {
            data: json!({ "requests": [req(&up.url("/slow"))] }).to_string(),
            limits: quartzite::runtime::Limits {
                timeout: Duration::from_millis(500),
                grace: Duration::from_millis(200),
                ..Default::default()
            },
            ..RunRequest::new("tests/http")
        };
        let started = std::time::Instant::now();
        let report = f.runtime.execute(&job, request).await;
        assert!(started.elapsed() < Duration::from_secs(3));
        // The request is cut at the run's deadline; the guest sees a network error.
        let r = results(&report);
        assert_eq!(r[0]["error"], "network", "{r:?}");
    }
}

mod secrets {
    use super::*;

    fn with_secret(up: &Upstream) -> Grants {
        Grants {
            http: vec![up.url("/*")],
            secret: vec![SecretGrant {
                name: "TOKEN".into(),
                url: up.url("/echo/*"),
                header: "Authorization".into(),
                format: "Bearer {}".into(),
            }],
            emit: vec!["report.*".into()],
            ..Grants::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_secret_goes_only_into_matching_requests_and_is_redacted_everywhere() {
        let up = upstream().await;
        let f = fixture();
        f.grants.put("tests/http", with_secret(&up));
        f.grants.secret_set("TOKEN", SECRET);
        let report = f
            .run(json!({
                "requests": [req(&up.url("/echo/auth")), req(&up.url("/ok"))],
                "log_bodies": true, "keep": true, "emit": ["report.done"],
            }))
            .await;
        assert_eq!(
            up.seen.header("/echo/auth", "authorization").as_deref(),
            Some(&*format!("Bearer {SECRET}"))
        );
        assert_eq!(
            up.seen.header("/ok", "authorization"),
            None,
            "only the matching URL"
        );
        // The server echoed the credential; the guest logged, kept and emitted it.
        let logs = logs(&report);
        assert!(logs.contains("you sent: Bearer [redacted]"), "{logs}");
        assert!(!logs.contains(SECRET));
        let RunOutcome::Completed { details, new_data } = &report.outcome else {
            panic!("{:?}", report.outcome);
        };
        assert!(!details.as_ref().unwrap().contains(SECRET));
        assert!(details.as_ref().unwrap().contains("[redacted]"));
        assert!(!new_data.as_ref().unwrap().contains(SECRET));
        let kept = f.kv.kv_get("tests/http", "bodies").await.unwrap().unwrap();
        assert!(!String::from_utf8_lossy(&kept).contains(SECRET));
        let emitted = f.events.emitted();
        assert_eq!(emitted.len(), 1);
        assert!(!emitted[0].payload.contains(SECRET));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_guest_cannot_set_the_header_a_secret_goes_into() {
        let up = upstream().await;
        let f = fixture();
        f.grants.put("tests/http", with_secret(&up));
        f.grants.secret_set("TOKEN", SECRET);
        let report = f
            .run(json!({ "requests": [{ "url": up.url("/ok"), "headers": [["Authorization", "Bearer mine"]] }] }))
            .await;
        let r = results(&report);
        assert_eq!(r[0]["error"], "denied", "{r:?}");
        assert!(up.seen.paths().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_missing_secret_fails_the_run_permanently_with_its_name() {
        let up = upstream().await;
        let f = fixture();
        f.grants.put("tests/http", with_secret(&up));
        let report = f.run(json!({ "requests": [req(&up.url("/ok"))] })).await;
        match &report.outcome {
            RunOutcome::Failed { retryable, message } => {
                assert!(!retryable);
                assert!(
                    message.contains("secret \"TOKEN\", which is not stored"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(up.seen.paths().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failure_message_is_redacted_too() {
        let up = upstream().await;
        let f = fixture();
        f.grants.put("tests/http", with_secret(&up));
        f.grants.secret_set("TOKEN", SECRET);
        let report = f
            .run(json!({ "requests": [req(&up.url("/echo/auth"))], "fail_with_body": true }))
            .await;
        match &report.outcome {
            RunOutcome::Failed { message, .. } => {
                assert!(
                    message.contains("[redacted]") && !message.contains(SECRET),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

mod config_and_emit {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn config_grants_reach_the_guest_through_wasi_config() {
        let f = fixture();
        f.grants.put("tests/http", config_grant(Vec::new()));
        let d = details(&f.run(json!({ "config": true })).await);
        assert_eq!(d["config"]["channel"], "#ops");
        assert_eq!(d["config"]["all"], json!([["a", "1"], ["channel", "#ops"]]));
        // Without grants: nothing.
        let f = fixture();
        let d = details(&f.run(json!({ "config": true })).await);
        assert_eq!(d["config"]["channel"], Value::Null);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_emit_needs_a_matching_grant() {
        let f = fixture();
        let report = f.run(json!({ "emit": ["billing.run"] })).await;
        let emitted = &details(&report)["emitted"][0];
        assert!(
            emitted["error"]
                .as_str()
                .unwrap()
                .contains("emitting \"billing.run\" is not granted"),
            "{emitted}"
        );
        assert!(
            logs(&report).contains("event \"billing.run\" not emitted: the job has no emit grant")
        );
        assert!(f.events.emitted().is_empty());

        f.grants.put(
            "tests/http",
            Grants {
                emit: vec!["report.*".into()],
                ..Grants::default()
            },
        );
        let report = f
            .run(json!({ "emit": ["report.done", "billing.run"] }))
            .await;
        let d = details(&report);
        assert!(d["emitted"][0]["id"].is_string(), "{d}");
        assert!(d["emitted"][1]["error"].is_string(), "{d}");
        assert_eq!(f.events.emitted().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn components_of_contract_1_0_and_1_1_run_unchanged() {
        let f = fixture();
        for guest in ["guest_contract_1_0", "hello"] {
            let job = f.runtime.resolve_file(&wasm(guest));
            let report = f
                .runtime
                .execute(
                    &job,
                    RunRequest {
                        data: json!({ "name": "Ada" }).to_string(),
                        ..RunRequest::new("tests/compat")
                    },
                )
                .await;
            assert!(
                matches!(report.outcome, RunOutcome::Completed { .. }),
                "{guest}: {:?}",
                report.outcome
            );
        }
    }
}

/// The Python and JavaScript SDKs' `config` and `http` under the real host:
/// the guests of tests/guests/http-py and http-js take the same data and give
/// the same details as the Rust guest_http.
mod sdks {
    use super::*;

    /// Compiled Python and JS components are kept across runs of these
    /// tests (and shared with the polyglot tests): they take tens of seconds
    /// to compile, and compiling is not what is tested here.
    fn cached_fixture() -> Fixture {
        fixture_in(Some(guest_dir().join("../../polyglot-test-cache")))
    }

    async fn granted_requests_config_and_denials(guest: &str) {
        let _load = load_share(LOADED).await;
        let up = upstream().await;
        let f = cached_fixture();
        f.grants.put(
            "tests/http",
            config_grant(vec![up.url("/v1/*"), up.url("/echo/body")]),
        );
        let report = f
            .run_guest(
                guest,
                json!({
                    "config": true,
                    "requests": [
                        req(&up.url("/v1/items?token=abc")),
                        { "url": up.url("/echo/body"), "method": "POST", "body": "hello",
                          "headers": [["x-trace", "t1"]] },
                        req(&up.url("/echo/auth")),
                    ],
                }),
            )
            .await;
        let d = details(&report);
        let r = d["results"].as_array().unwrap();
        // The granted requests reached the server and their responses the guest.
        assert_eq!(r[0]["status"], 200, "{guest}: {r:?}");
        assert_eq!(r[0]["body"], "[1,2,3]", "{guest}");
        assert_eq!(r[0]["content_type"], "application/json", "{guest}");
        assert_eq!(
            (&r[1]["status"], &r[1]["body"]),
            (&json!(200), &json!("you posted: hello")),
            "{guest}: {r:?}"
        );
        assert_eq!(
            up.seen.header("/echo/body", "x-trace").as_deref(),
            Some("t1")
        );
        assert_eq!(
            up.seen.header("/echo/body", "content-length").as_deref(),
            Some("5"),
            "{guest}: the body went with its length"
        );
        // The ungranted one is denied, in the SDK's words and in the host's log.
        assert_eq!(r[2]["error"], "denied", "{guest}: {r:?}");
        assert_eq!(
            r[2]["message"],
            "request denied by the host: the job's grants do not allow this request",
            "{guest}"
        );
        let log = logs(&report);
        assert!(
            log.contains(&format!(
                "http GET {} denied: no http grant matches (granted: {}, {})",
                up.url("/echo/auth"),
                up.url("/v1/*"),
                up.url("/echo/body")
            )),
            "{guest}: {log}"
        );
        assert_eq!(up.seen.paths(), ["/v1/items", "/echo/body"], "{guest}");
        // Config reads the granted values.
        assert_eq!(d["config"]["channel"], "#ops", "{guest}: {d}");
        assert_eq!(
            d["config"]["all"],
            json!([["a", "1"], ["channel", "#ops"]]),
            "{guest}"
        );

        // A redirect is followed only where the grants allow: the hop to an
        // ungranted host is denied by the host; not following gives the 302.
        f.grants.put("tests/http", config_grant(vec![up.url("/*")]));
        let report = f
            .run_guest(
                guest,
                json!({ "requests": [
                    req(&up.url("/redirect")),
                    { "url": up.url("/redirect"), "max_redirects": 0 },
                ] }),
            )
            .await;
        let r = results(&report);
        assert_eq!(r[0]["error"], "denied", "{guest}: {r:?}");
        assert_eq!(r[1]["status"], 302, "{guest}: {r:?}");
        assert!(
            logs(&report).contains("http GET http://ungranted.invalid/landing denied"),
            "{guest}: {}",
            logs(&report)
        );

        // Without any grant: config is empty and every request is denied.
        f.grants.put("tests/http", Grants::default());
        let report = f
            .run_guest(
                guest,
                json!({ "config": true, "requests": [req(&up.url("/ok"))] }),
            )
            .await;
        let d = details(&report);
        assert_eq!(d["results"][0]["error"], "denied", "{guest}: {d}");
        assert_eq!(
            d["config"],
            json!({ "all": [], "channel": null }),
            "{guest}"
        );
        assert!(
            logs(&report).contains("denied: the job has no http grant"),
            "{guest}: {}",
            logs(&report)
        );
        assert_eq!(
            up.seen.paths().len(),
            4,
            "{guest}: nothing more reached the server"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn python_config_and_http_under_the_real_host() {
        granted_requests_config_and_denials("guest_http_py").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn javascript_config_and_http_under_the_real_host() {
        granted_requests_config_and_denials("guest_http_js").await;
    }

    /// QuickJS components cannot import wasi:http (componentize-qjs): config
    /// works, and a request fails at once with why, reaching nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_quickjs_job_reads_config_and_is_told_it_cannot_make_requests() {
        let _load = load_share(LOADED).await;
        let up = upstream().await;
        let f = cached_fixture();
        f.grants.put("tests/http", config_grant(vec![up.url("/*")]));
        let d = details(
            &f.run_guest(
                "guest_http_js_qjs",
                json!({ "config": true, "requests": [req(&up.url("/ok"))] }),
            )
            .await,
        );
        assert_eq!(d["config"]["channel"], "#ops", "{d}");
        let r = &d["results"][0];
        assert_eq!(r["error"], "invalid", "{d}");
        assert!(
            r["message"]
                .as_str()
                .unwrap()
                .contains("the QuickJS backend cannot build a component importing wasi:http"),
            "{d}"
        );
        assert!(up.seen.paths().is_empty());
    }

    /// Jobs that use neither run where nothing is granted, in every language.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_without_config_or_http_run_without_grants() {
        let _load = load_share(LOADED).await;
        let f = cached_fixture();
        for guest in ["noop_py", "noop_js", "noop_js_qjs", "guest_noop"] {
            let report = f.run_guest(guest, json!({})).await;
            assert!(
                matches!(report.outcome, RunOutcome::Completed { .. }),
                "{guest}: {:?}; logs {:?}",
                report.outcome,
                report.logs
            );
        }
    }
}

/// A whole node per backend, through its admin API.
mod node {
    use super::*;
    use crate::common::server::{Backend, Server, start_server_with_keys};
    use quartzite::secrets::{SecretKey, SecretKeys};
    use quartzite::store::model::HistoryStatus;
    use reqwest::Method;

    const KEY: &str = "8f2b4c1d9e0a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c";

    fn keys() -> Arc<SecretKeys> {
        Arc::new(SecretKeys::new(
            Some(SecretKey::from_hex(KEY).unwrap()),
            None,
        ))
    }

    async fn call(
        server: &Server,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = server
            .http
            .request(method, format!("{}{path}", server.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn push(server: &Server, guest: &str) {
        let response = server
            .http
            .post(format!("{}/api/v1/modules", server.base))
            .header("content-type", "application/wasm")
            .body(std::fs::read(wasm(guest)).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
    }

    async fn ended(server: &Server, job: &str) -> quartzite::store::model::HistoryEntry {
        let store = Arc::clone(&server.store);
        let job_key = job.to_string();
        wait_until(Duration::from_secs(30), "the run to end", || {
            let (store, job_key) = (Arc::clone(&store), job_key.clone());
            async move { !history_of(store.as_ref(), &job_key).await.is_empty() }
        })
        .await;
        history_of(server.store.as_ref(), job).await.remove(0)
    }

    /// Everything the database holds, as text: every row of every table.
    async fn database_text(server: &Server) -> String {
        match &server.schema {
            None => {
                // The file and its WAL, byte for byte.
                let mut all = Vec::new();
                for entry in std::fs::read_dir(server.dir.path()).unwrap() {
                    let path = entry.unwrap().path();
                    if path
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("q.db")
                    {
                        all.extend(std::fs::read(&path).unwrap());
                    }
                }
                String::from_utf8_lossy(&all).into_owned()
            }
            Some(schema) => {
                let pool = sqlx::PgPool::connect(&pg_url()).await.unwrap();
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
                )
                .bind(schema)
                .fetch_all(&pool)
                .await
                .unwrap();
                let mut text = String::new();
                for t in tables {
                    let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                        "SELECT row_to_json(t)::text FROM {schema}.{t} t"
                    )))
                    .fetch_all(&pool)
                    .await
                    .unwrap();
                    text.push_str(&rows.join("\n"));
                }
                text
            }
        }
    }

    async fn a_secret_is_injected_but_never_stored_or_shown(backend: Backend) {
        let up = upstream().await;
        let server = start_server_with_keys(backend, "grants", keys()).await;
        let (status, set) = call(
            &server,
            Method::PUT,
            "/api/v1/secrets/TOKEN",
            Some(json!({ "value": SECRET })),
        )
        .await;
        assert_eq!(status, 200, "{set}");
        assert_eq!(set["version"], 1);
        let (_, list) = call(&server, Method::GET, "/api/v1/secrets", None).await;
        assert_eq!(list["items"][0]["name"], "TOKEN");
        assert!(!list.to_string().contains(SECRET));

        push(&server, "guest_http").await;
        let grants = json!({
            "http": [up.url("/*")],
            "secret": [{ "name": "TOKEN", "url": up.url("/echo/*"), "header": "Authorization", "format": "Bearer {}" }],
            "emit": ["report.*"],
        });
        let (status, job) = call(
            &server,
            Method::POST,
            "/api/v1/jobs",
            Some(json!({
                "key": "g/echo", "module": "guest-http", "at": chrono::Utc::now().to_rfc3339(),
                "grants": grants,
                "data": { "requests": [{ "url": up.url("/echo/auth") }], "log_bodies": true, "keep": true,
                          "emit": ["report.done"] },
            })),
        )
        .await;
        assert_eq!(status, 201, "{job}");
        assert_eq!(job["grants"]["secret"][0]["name"], "TOKEN");
        let run = ended(&server, "g/echo").await;
        assert_eq!(run.status, HistoryStatus::Success, "{}", run.details);
        assert_eq!(
            up.seen.header("/echo/auth", "authorization").as_deref(),
            Some(&*format!("Bearer {SECRET}"))
        );
        assert!(
            run.details.contains("you sent: Bearer [redacted]"),
            "{}",
            run.details
        );

        // Rotation: a new version is used from the next fire.
        let (_, set) = call(
            &server,
            Method::PUT,
            "/api/v1/secrets/TOKEN",
            Some(json!({ "value": "second-value-0815" })),
        )
        .await;
        assert_eq!(set["version"], 2);
        // (The first run replaced the job's data: give it its request again, firing now.)
        let (status, body) = call(
            &server,
            Method::PUT,
            "/api/v1/jobs/g/echo",
            Some(json!({
                "module": "guest-http", "at": chrono::Utc::now().to_rfc3339(), "grants": grants,
                "data": { "requests": [{ "url": up.url("/echo/auth") }] },
            })),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let store = Arc::clone(&server.store);
        wait_until(Duration::from_secs(30), "the second run", || {
            let store = Arc::clone(&store);
            async move { history_of(store.as_ref(), "g/echo").await.len() >= 2 }
        })
        .await;
        let history = history_of(server.store.as_ref(), "g/echo").await;
        let seen: Vec<String> = up
            .seen
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(p, h)| format!("{p} {:?}", h.get("authorization")))
            .collect();
        assert_eq!(
            up.seen
                .header_last("/echo/auth", "authorization")
                .as_deref(),
            Some("Bearer second-value-0815"),
            "{seen:?} {:?}",
            history
                .iter()
                .map(|h| (&h.status, &h.details))
                .collect::<Vec<_>>()
        );

        // Nowhere to be read: not the API's job, history or audit, not the database.
        for path in [
            "/api/v1/jobs/g/echo",
            "/api/v1/history?job=g/echo",
            "/api/v1/audit",
            "/api/v1/events",
        ] {
            let (_, v) = call(&server, Method::GET, path, None).await;
            let text = v.to_string();
            assert!(
                !text.contains(SECRET) && !text.contains("second-value-0815"),
                "{path}: {text}"
            );
        }
        let (_, audit) = call(&server, Method::GET, "/api/v1/audit", None).await;
        assert!(audit.to_string().contains("secret.set"), "{audit}");
        let db = database_text(&server).await;
        assert!(!db.contains(SECRET), "the secret is in the database");
        assert!(!db.contains("second-value-0815"));
        assert!(db.contains("[redacted]"));
        server.stop().await;
    }
    on_both!(a_secret_is_injected_but_never_stored_or_shown);

    async fn a_node_without_the_key_fails_secret_jobs_and_runs_the_others(backend: Backend) {
        let up = upstream().await;
        // Sealed by a node that has the key ...
        let server = start_server_with_keys(backend, "nokey", keys()).await;
        let (status, _) = call(
            &server,
            Method::PUT,
            "/api/v1/secrets/TOKEN",
            Some(json!({ "value": SECRET })),
        )
        .await;
        assert_eq!(status, 200);
        let Server {
            stop,
            task,
            dir: first_dir,
            db_url,
            schema,
            ..
        } = server;
        stop.send(true).unwrap();
        task.await.unwrap();
        // ... and used by one that has none.
        let server = crate::common::server::start_server_on(
            backend,
            "nokey2",
            Arc::new(SecretKeys::default()),
            db_url,
            schema,
        )
        .await;
        let (status, body) = call(
            &server,
            Method::PUT,
            "/api/v1/secrets/OTHER",
            Some(json!({ "value": "x" })),
        )
        .await;
        assert_eq!(status, 409, "{body}");
        assert!(body.to_string().contains("QUARTZITE_SECRET_KEY"), "{body}");
        push(&server, "guest_http").await;
        push(&server, "hello").await;
        let at = chrono::Utc::now().to_rfc3339();
        let (status, body) = call(&server, Method::POST, "/api/v1/jobs", Some(json!({
            "key": "g/needs-secret", "module": "guest-http", "at": at,
            "grants": { "http": [up.url("/*")], "secret": [{ "name": "TOKEN", "url": up.url("/*") }] },
            "data": { "requests": [{ "url": up.url("/ok") }] },
        }))).await;
        assert_eq!(status, 201, "{body}");
        let (status, _) = call(
            &server,
            Method::POST,
            "/api/v1/jobs",
            Some(json!({
                "key": "g/plain", "module": "hello", "at": at, "data": { "name": "x" },
            })),
        )
        .await;
        assert_eq!(status, 201);
        let failed = ended(&server, "g/needs-secret").await;
        assert_eq!(failed.status, HistoryStatus::Failed);
        assert!(
            failed.details.contains("this node has no secret key"),
            "{}",
            failed.details
        );
        assert!(up.seen.paths().is_empty());
        assert_eq!(
            ended(&server, "g/plain").await.status,
            HistoryStatus::Success
        );
        server.stop().await;
        drop(first_dir);
    }
    on_both!(a_node_without_the_key_fails_secret_jobs_and_runs_the_others);
}

/// The store's half on both databases: versions, listing, deleting.
mod store {
    use super::*;
    use crate::common::server::Backend;
    use quartzite::secrets::{SecretKey, SecretKeys};

    async fn secrets_and_grants_are_kept_per_name_and_job(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let (url, schema) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("s.db").display()),
                None,
            ),
            Backend::Postgres => {
                let (url, schema) = pg_schema("qz_secrets").await;
                (url, Some(schema))
            }
        };
        let store = quartzite::store::open(&url).await.unwrap();
        let keys = SecretKeys::new(Some(SecretKey::from_hex(&"ab".repeat(32)).unwrap()), None);
        let first = quartzite::secrets::secret_set(&*store, &keys, "API_KEY", "one\n")
            .await
            .unwrap();
        let second = quartzite::secrets::secret_set(&*store, &keys, "API_KEY", "two")
            .await
            .unwrap();
        assert_eq!((first.version, second.version), (1, 2));
        assert!(second.set_ms >= first.set_ms);
        let sealed = store.secret_get("API_KEY").await.unwrap().unwrap();
        assert_eq!(keys.open(&sealed).unwrap().as_str(), "two");
        let bad = quartzite::secrets::secret_set(&*store, &keys, "no spaces", "x").await;
        assert!(bad.unwrap_err().to_string().contains("no spaces"));
        let listed = store.secret_list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(store.secret_delete("API_KEY").await.unwrap());
        assert!(!store.secret_delete("API_KEY").await.unwrap());
        assert!(store.secret_get("API_KEY").await.unwrap().is_none());

        // A job's grants are part of its row: written and read with it (the
        // claim carrying them is tested in store.rs).
        let grants = Grants {
            http: vec!["https://a.example/*".into()],
            ..Grants::default()
        };
        let job = JobDef::new("g/a", "hello").with_grants(&grants);
        store.job_put(&job, &[]).await.unwrap();
        let stored = store.job_get("g/a").await.unwrap().unwrap();
        assert_eq!(stored.grants().unwrap(), grants);
        store
            .job_put(&JobDef::new("g/a", "hello"), &[])
            .await
            .unwrap();
        let stored = store.job_get("g/a").await.unwrap().unwrap();
        assert_eq!(stored.grants, None);
        assert!(stored.grants().unwrap().is_empty());
        if let Some(schema) = schema {
            pg_drop(&schema).await;
        }
    }
    on_both!(secrets_and_grants_are_kept_per_name_and_job);
}

/// An HTTPS server on loopback whose certificate (for 127.0.0.1) is signed
/// by an authority of its own, answering `secure` to every request: the
/// port and the authority's certificate, PEM.
async fn tls_upstream() -> (u16, String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "quartzite test authority");
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that does not trust the authority ends the handshake.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let (mut head, mut buf) = (Vec::new(), [0u8; 4096]);
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecure",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, ca.pem(), task)
}

/// HTTPS to a service with a private authority: refused by TLS with the
/// public roots alone, accepted once a CA grant names the authority for the
/// service's URLs, and only for those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_grant_trusts_a_private_authority_for_its_pattern_only() {
    use quartzite::grants::CaGrant;
    let (port, ca_pem, server) = tls_upstream().await;
    let f = fixture();
    let url = format!("https://127.0.0.1:{port}/hello");
    let pattern = format!("https://127.0.0.1:{port}/*");
    let with_ca = |ca_url: &str| Grants {
        http: vec![pattern.clone()],
        ca: vec![CaGrant {
            url: ca_url.to_string(),
            pem: ca_pem.clone(),
        }],
        ..Grants::default()
    };

    f.grants
        .put("tests/http", http_grants(std::slice::from_ref(&pattern)));
    let report = f.run(json!({ "requests": [req(&url)] })).await;
    assert!(results(&report)[0]["error"].is_string(), "{report:?}");
    assert!(logs(&report).contains("TLS failed"), "{}", logs(&report));

    f.grants.put("tests/http", with_ca(&pattern));
    let report = f.run(json!({ "requests": [req(&url)] })).await;
    let r = results(&report);
    assert_eq!(
        (r[0]["status"].clone(), r[0]["body"].clone()),
        (json!(200), json!("secure")),
        "{}",
        logs(&report)
    );

    // An authority granted for other URLs is not trusted for these.
    f.grants
        .put("tests/http", with_ca("https://internal.example/*"));
    let report = f.run(json!({ "requests": [req(&url)] })).await;
    assert!(results(&report)[0]["error"].is_string(), "{report:?}");

    // What is not an authority is refused where it is written.
    for (bad, field) in [
        (
            Grants {
                ca: vec![CaGrant {
                    url: pattern.clone(),
                    pem: "no certificate".into(),
                }],
                ..Grants::default()
            },
            "ca[1].pem",
        ),
        (
            Grants {
                ca: vec![CaGrant {
                    url: format!("http://127.0.0.1:{port}/*"),
                    pem: ca_pem.clone(),
                }],
                ..Grants::default()
            },
            "ca[1].url",
        ),
    ] {
        assert_eq!(bad.compile().unwrap_err().field, field);
    }
    server.abort();
}
