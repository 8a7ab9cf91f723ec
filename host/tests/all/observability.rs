//! What ships for operators in `contrib/`: the Prometheus rules pass `promtool
//! check rules`, and every expression of the rules and of the Grafana dashboard
//! returns data from a real Prometheus scraping two real `quartzite serve`
//! processes on PostgreSQL, one of which is killed so that a node is dead.
//!
//! The jobs are chosen so that each expression has something to show: a job
//! that succeeds, one that always fails (and alerts to a webhook nobody
//! answers), one that succeeds on its retry, two runs of one job contending for
//! a cluster lock with the job at its share of the node, and a fire years
//! overdue (a high lag and a misfire).
//!
//! And a node told to trace fires sends each fire as one trace to a real
//! OTLP/HTTP receiver on loopback: the fire, its attempts, their steps, the
//! guest's store calls and its outbound request, which carries the trace to
//! the server it reaches, as the guest sees it in `TRACEPARENT`.

use crate::common::*;

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn contrib(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../contrib")
        .join(path)
}

/// A tool of the Debian package `prometheus`, which `./dev.sh test` installs.
fn tool(name: &str) -> Command {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        found.is_ok_and(|s| s.success()),
        "{name} is required (Debian package prometheus; ./dev.sh test installs it)"
    );
    Command::new(name)
}

#[test]
fn the_rules_pass_promtool() {
    let out = tool("promtool")
        .args(["check", "rules"])
        .arg(contrib("prometheus/rules.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every query of the dashboard's panels, with Grafana's variables replaced as
/// Grafana would for "All" and a one-minute rate interval.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(contrib("grafana/quartzite.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$job_key", ".*")
                .replace("$job_group", ".*");
            assert!(!expr.contains('$'), "a variable left in {expr}");
            queries.push((format!("panel {:?}", panel["title"]), expr));
        }
    }
    assert!(queries.len() >= 15, "{queries:?}");
    queries
}

/// `quartzite serve` as node `node_id` on `url`, listening on `port`.
fn serve(dir: &Path, url: &str, node_id: &str, port: u16) -> Killed {
    Command::new(env!("CARGO_BIN_EXE_quartzite"))
        .args(["serve", "--db", url, "--node-id", node_id])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--config")
        .arg(dir.join("quartzite.toml"))
        .arg("--manifest")
        .arg(dir.join("jobs.toml"))
        .env("QUARTZITE_CACHE_DIR", dir.join(format!("cache-{node_id}")))
        .env("QUARTZITE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Killed)
        .unwrap()
}

async fn scrape(http: &reqwest::Client, port: u16) -> Option<String> {
    let response = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.text().await.ok()
}

/// The samples an instant query returns (an error answer fails the test: the
/// expression does not parse or does not evaluate).
async fn query(http: &reqwest::Client, prometheus: &str, expr: &str) -> Vec<Value> {
    let answer: Value = http
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["status"], "success", "{expr}: {answer}");
    answer["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_and_dashboard_query_returns_data_from_real_nodes() {
    let _load = load_share(LOADED).await;
    let dir = tempfile::tempdir().unwrap();
    let (url, schema) = pg_schema("qz_obs").await;
    let webhook_port = free_port(); // nobody listens: every delivery fails
    std::fs::write(
        dir.path().join("quartzite.toml"),
        "[scheduler]\nworkers = 8\nmax_job_runs = 2\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("jobs.toml"),
        format!(
            r#"
[[module]]
name = "hello"
path = "{hello}"

[[module]]
name = "flaky"
path = "{flaky}"

[[module]]
name = "report"
path = "{report}"

[[job]]
key = "obs/hello"
module = "hello"
[[job.trigger]]
every = "1s"

[[job]]
key = "obs/broken"
module = "flaky"
data = {{ failures = 1000000 }}
[job.retry]
max_attempts = 1
[[job.trigger]]
every = "1s"

[[job]]
key = "obs/flaky"
module = "flaky"
data = {{ failures = 1 }}
[job.retry]
max_attempts = 2
backoff = "immediate"
[[job.trigger]]
every = "1s"

# Runs of 400 ms every 200 ms, two at a time: the second waits 50 ms for the
# lock the first holds, times out and retries; the third is deferred.
[[job]]
key = "ops/report"
module = "report"
overlap = "allow"
data = {{ steps = 2, step_ms = 200, lock_timeout_ms = 50 }}
[job.grants]
emit = ["report.done"]
[job.retry]
max_attempts = 2
backoff = "immediate"
[[job.trigger]]
every = "200ms"

[[alert]]
name = "broken"
on = "permanent-failure"
job = "obs/broken"
webhook = "http://127.0.0.1:{webhook_port}/hook"
"#,
            hello = wasm("hello").display(),
            flaky = wasm("flaky").display(),
            report = wasm("report").display(),
        ),
    )
    .unwrap();

    let http = reqwest::Client::new();
    let (port_a, port_b) = (free_port(), free_port());
    let _a = serve(dir.path(), &url, "obs-a", port_a);
    // The first node takes the alert lock and with it the cluster gauges.
    let reporting = |port: u16| {
        let http = http.clone();
        async move {
            scrape(&http, port)
                .await
                .is_some_and(|t| t.contains("quartzite_cluster_reporter 1"))
        }
    };
    wait_until(
        Duration::from_secs(60),
        "node a to report the cluster",
        || reporting(port_a),
    )
    .await;
    let mut b = serve(dir.path(), &url, "obs-b", port_b);
    wait_until(Duration::from_secs(60), "node b to serve", || {
        let http = http.clone();
        async move { scrape(&http, port_b).await.is_some() }
    })
    .await;
    let b_metrics = scrape(&http, port_b).await.unwrap();
    assert!(
        b_metrics.contains("quartzite_cluster_reporter 0")
            && !b_metrics.contains("quartzite_nodes{"),
        "a second node exports no cluster gauges:\n{b_metrics}"
    );

    let prometheus_port = free_port();
    let storage = dir.path().join("prometheus");
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: quartzite\n    static_configs:\n      - targets: ['127.0.0.1:{port_a}', '127.0.0.1:{port_b}']\n",
            rules = contrib("prometheus/rules.yml").display()
        ),
    )
    .unwrap();
    let _prometheus = Killed(
        tool("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!("--storage.tsdb.path={}", storage.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let prometheus = format!("http://127.0.0.1:{prometheus_port}");
    let start = Instant::now();
    while !http
        .get(format!("{prometheus}/-/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "prometheus not ready after 60 s:\n{}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Scraped both nodes a few times: rates need two samples.
    wait_until(
        Duration::from_secs(60),
        "prometheus to scrape both nodes",
        || {
            let (http, prometheus) = (http.clone(), prometheus.clone());
            async move {
                query(
                    &http,
                    &prometheus,
                    "count_over_time(up[1m]) >= 3 and up == 1",
                )
                .await
                .len()
                    == 2
            }
        },
    )
    .await;

    // A fire due years ago, added now that its lag lands in a window being
    // rated: it runs at once (misfire "fire-now"), late and misfired.
    let added = http
        .post(format!("http://127.0.0.1:{port_a}/api/v1/jobs"))
        .json(&json!({ "key": "obs/late", "module": "hello", "at": "2020-01-01T00:00:00Z" }))
        .send()
        .await
        .unwrap();
    assert!(
        added.status().is_success(),
        "{}",
        added.text().await.unwrap()
    );
    // Node b dies without a word; node a counts it dead.
    b.0.kill().unwrap();
    b.0.wait().unwrap();

    // Prometheus must hold the rules as written, alerts included.
    let loaded: Value = http
        .get(format!("{prometheus}/api/v1/rules"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut queries: Vec<(String, String)> = Vec::new();
    for group in loaded["data"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["name"].as_str().unwrap();
            queries.push((
                format!("rule {name}"),
                rule["query"].as_str().unwrap().to_string(),
            ));
        }
    }
    for alert in [
        "QuartziteJobFailing",
        "QuartziteJobNotSucceeded",
        "QuartziteFireLagHigh",
        "QuartziteNodeDead",
        "QuartziteAlertDeliveriesFailing",
    ] {
        assert!(
            queries
                .iter()
                .any(|(name, _)| name == &format!("rule {alert}")),
            "alert {alert} not loaded: {loaded}"
        );
    }
    queries.extend(dashboard_queries());

    // Every expression returns data within a minute (an alert's: fires).
    let start = Instant::now();
    let mut empty: BTreeMap<String, String> = queries.iter().cloned().collect();
    while !empty.is_empty() && start.elapsed() < Duration::from_secs(90) {
        let mut still = BTreeMap::new();
        for (name, expr) in empty {
            if query(&http, &prometheus, &expr).await.is_empty() {
                still.insert(name, expr);
            }
        }
        empty = still;
        if !empty.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let a_metrics = scrape(&http, port_a).await.unwrap_or_default();
    pg_drop(&schema).await;
    assert!(
        empty.is_empty(),
        "expressions without data after {:?}:\n{}\n--- node a ---\n{a_metrics}",
        start.elapsed(),
        empty
            .iter()
            .map(|(name, expr)| format!("{name}: {expr}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Every span of the OTLP/HTTP requests received so far.
fn spans_of(
    requests: &[opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest],
) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
    requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| s.spans.clone())
        .collect()
}

/// A span's string (or integer) attribute, as text.
fn attribute(span: &opentelemetry_proto::tonic::trace::v1::Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    let value = span
        .attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .as_ref()?;
    match value.value.as_ref()? {
        V::StringValue(s) => Some(s.clone()),
        V::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fire_is_one_trace_of_its_attempts_steps_host_calls_and_requests() {
    let _load = load_share(LOADED).await;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message as _;
    use std::sync::{Arc, Mutex};

    // The receiver: OTLP/HTTP with protobuf bodies, as a collector takes them.
    let received: Arc<Mutex<Vec<ExportTraceServiceRequest>>> = Arc::default();
    let types: Arc<Mutex<Vec<String>>> = Arc::default();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post({
            let (received, types) = (Arc::clone(&received), Arc::clone(&types));
            move |headers: axum::http::HeaderMap, body: bytes::Bytes| async move {
                let content_type = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                types.lock().unwrap().push(content_type);
                match ExportTraceServiceRequest::decode(body) {
                    Ok(request) => {
                        received.lock().unwrap().push(request);
                        (axum::http::StatusCode::OK, Vec::new())
                    }
                    Err(e) => (
                        axum::http::StatusCode::BAD_REQUEST,
                        e.to_string().into_bytes(),
                    ),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The server a job is granted: it keeps the traceparent of each request.
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let api = axum::Router::new().route(
        "/report",
        axum::routing::get({
            let seen = Arc::clone(&seen);
            move |headers: axum::http::HeaderMap| async move {
                let traceparent = headers
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                seen.lock().unwrap().push(traceparent);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, api).await });

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("q.db").display());
    std::fs::write(
        dir.path().join("quartzite.toml"),
        format!("[otel]\nendpoint = \"http://127.0.0.1:{receiver_port}/v1/traces\"\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("jobs.toml"),
        format!(
            r#"
[[module]]
name = "hello"
path = "{hello}"

[[module]]
name = "flaky"
path = "{flaky}"

[[module]]
name = "http"
path = "{http}"

[[job]]
key = "t/hello"
module = "hello"
[[job.trigger]]
every = "500ms"

[[job]]
key = "t/broken"
module = "flaky"
data = {{ failures = 1000000 }}
[job.retry]
max_attempts = 2
initial = "100ms"
[[job.trigger]]
every = "1s"

[[job]]
key = "t/http"
module = "http"
data = {{ requests = [{{ url = "http://127.0.0.1:{api_port}/report" }}], keep = true, trace = true }}
[job.grants]
http = ["http://127.0.0.1:{api_port}/*"]
[[job.trigger]]
every = "1s"
"#,
            hello = wasm("hello").display(),
            flaky = wasm("flaky").display(),
            http = wasm("guest_http").display(),
        ),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_quartzite"));
    command
        .args(["serve", "--db", &url, "--listen", "127.0.0.1:0"])
        .arg("--config")
        .arg(dir.path().join("quartzite.toml"))
        .arg("--manifest")
        .arg(dir.path().join("jobs.toml"))
        .env("QUARTZITE_CACHE_DIR", dir.path().join("cache"))
        .env("QUARTZITE_LOG", "warn")
        // Batches leave every 200 ms instead of every 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _node = Killed(command.spawn().unwrap());

    let child = |spans: &[Span], parent: &Span, name: &str| -> Option<Span> {
        spans
            .iter()
            .find(|s| {
                s.name == name
                    && s.trace_id == parent.trace_id
                    && s.parent_span_id == parent.span_id
                    && s.start_time_unix_nano >= parent.start_time_unix_nano
                    && s.end_time_unix_nano <= parent.end_time_unix_nano
            })
            .cloned()
    };
    let children = |spans: &[Span], parent: &Span, name: &str| -> Vec<Span> {
        spans
            .iter()
            .filter(|s| {
                s.name == name
                    && s.trace_id == parent.trace_id
                    && s.parent_span_id == parent.span_id
            })
            .cloned()
            .collect()
    };
    // An ended fire of `job` with `status`: its root span, and its attempts,
    // each with its steps below it.
    let fire_of = |job: &str, status: &str, attempts: usize| -> Option<(Span, Vec<Span>)> {
        let spans = spans_of(&received.lock().unwrap());
        spans.iter().find_map(|fire| {
            if fire.name != "fire"
                || !fire.parent_span_id.is_empty()
                || attribute(fire, "job_key").as_deref() != Some(job)
                || attribute(fire, "status").as_deref() != Some(status)
                || attribute(fire, "attempts") != Some(attempts.to_string())
                || attribute(fire, "fire_id").is_none()
            {
                return None;
            }
            let mut tried = children(&spans, fire, "attempt");
            tried.sort_by_key(|a| attribute(a, "attempt"));
            let whole = tried.len() == attempts
                && tried.iter().enumerate().all(|(i, a)| {
                    attribute(a, "attempt") == Some((i + 1).to_string())
                        && attribute(a, "fire_id") == attribute(fire, "fire_id")
                        && attribute(a, "node").is_some()
                        && attribute(a, "module_digest").is_some_and(|d| d.len() == 64)
                        && a.start_time_unix_nano >= fire.start_time_unix_nano
                        && a.end_time_unix_nano <= fire.end_time_unix_nano
                        && child(&spans, a, "run").is_some()
                        && ["wait_us", "resolve_us", "commit_us"]
                            .iter()
                            .all(|step| attribute(a, step).is_some())
                });
            whole.then(|| (fire.clone(), tried))
        })
    };
    let start = Instant::now();
    let (hello, broken, http) = loop {
        if let (Some(hello), Some(broken), Some(http)) = (
            fire_of("t/hello", "success", 1),
            fire_of("t/broken", "failed", 2),
            fire_of("t/http", "success", 1),
        ) {
            break (hello, broken, http);
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no complete fire traces after 60 s; spans received (name, trace, span, \
             parent, job, attempt(s), status):\n{}",
            spans_of(&received.lock().unwrap())
                .iter()
                .filter(|s| ["fire", "attempt", "run", "wait", "commit"].contains(&s.name.as_str()))
                .take(60)
                .map(|s| format!(
                    "{} {}..{} {} {} {} {:?} {:?} {:?} {:?}",
                    s.name,
                    s.start_time_unix_nano % 100_000_000_000,
                    s.end_time_unix_nano % 100_000_000_000,
                    attribute(s, "module_digest").unwrap_or_default(),
                    &hex(&s.trace_id)[..8],
                    hex(&s.span_id),
                    hex(&s.parent_span_id),
                    attribute(s, "job_key"),
                    attribute(s, "attempt").or_else(|| attribute(s, "attempts")),
                    attribute(s, "status").or_else(|| attribute(s, "outcome")),
                ))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let types = types.lock().unwrap().clone();
    assert!(
        types.iter().all(|t| t == "application/x-protobuf"),
        "{types:?}"
    );
    let spans = spans_of(&received.lock().unwrap());
    let run_of = |attempt: &Span| child(&spans, attempt, "run").unwrap();
    assert_eq!(
        attribute(&run_of(&hello.1[0]), "outcome").as_deref(),
        Some("success")
    );
    // The failed fire's two attempts are in its one trace, each run failing.
    for attempt in &broken.1 {
        assert_eq!(
            attribute(&run_of(attempt), "outcome").as_deref(),
            Some(if attribute(attempt, "attempt").as_deref() == Some("1") {
                "retried"
            } else {
                "failed"
            }),
        );
    }
    assert!(broken.1[0].end_time_unix_nano <= broken.1[1].start_time_unix_nano);
    // The guest's kv write and its request are spans below its run; the
    // request left with a traceparent naming its span.
    let run = run_of(&http.1[0]);
    let kv = child(&spans, &run, "kv-set").expect("a kv-set span below the run");
    assert!(attribute(&kv, "error").is_none());
    let request = child(&spans, &run, "http").expect("an http span below the run");
    assert_eq!(
        attribute(&request, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attribute(&request, "url.full"),
        Some(format!("http://127.0.0.1:{api_port}/report"))
    );
    let trace = hex(&http.0.trace_id);
    assert!(
        seen.lock()
            .unwrap()
            .contains(&Some(format!("00-{trace}-{}-01", hex(&request.span_id)))),
        "the request's traceparent; the server saw {:?}",
        seen.lock().unwrap()
    );
    // And the guest saw the run's traceparent.
    let history = Command::new(env!("CARGO_BIN_EXE_quartzite"))
        .args(["--db", &url, "--json", "history", "list", "--job", "t/http"])
        .output()
        .unwrap();
    let history = String::from_utf8_lossy(&history.stdout);
    let run_traceparent = format!("00-{trace}-{}-01", hex(&run.span_id));
    assert!(
        history.contains(&run_traceparent),
        "the guest reports {run_traceparent} in its details: {history}"
    );
    // One trace per fire: every fire span is the root of a trace of its own.
    let fires: Vec<_> = spans.iter().filter(|s| s.name == "fire").collect();
    let traces: std::collections::HashSet<_> = fires.iter().map(|s| s.trace_id.clone()).collect();
    assert_eq!(traces.len(), fires.len(), "a trace per fire");
    assert!(fires.iter().all(|f| f.parent_span_id.is_empty()));
}
