//! The web dashboard end to end: a real `quartzite serve` process running real
//! wasm jobs on SQLite, and a real headless Chromium driven through
//! chromedriver's W3C WebDriver protocol, clicking what an operator clicks and
//! checking the result in the store through the API.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (`./dev.sh test`
//! installs them); the test fails, never skips, when they are missing.

use crate::common::*;

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "dashboard-admin-token-0123456789";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// WebDriver's key for an element reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn manifest(dir: &Path) -> std::path::PathBuf {
    let text = format!(
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

# Runs for ten seconds from the start, under the cluster lock `report`: a fire in flight.
[[job]]
key = "dash/report"
module = "report"
data = {{ steps = 40, step_ms = 250 }}
[job.grants]
emit = ["report.done"]
[[job.trigger]]
on = "start"

# Runs all the time: history and chart bars.
[[job]]
key = "dash/hello"
module = "hello"
data = {{ name = "dashboard" }}
[[job.trigger]]
every = "1s"

# Started by the event `dash.ping` the test emits.
[[job]]
key = "dash/on-ping"
module = "hello"
[[job.trigger]]
event = "dash.ping"

# The failure of dash/flaky, to a receiver that is not there: a delivery retrying.
[[alert]]
name = "dash-failures"
on = "permanent-failure"
job = "dash/*"
webhook = "http://127.0.0.1:9/hook"

# Fails once, for good: a failed run with an error to show.
[[job]]
key = "dash/flaky"
module = "flaky"
data = {{ failures = 5 }}
[job.retry]
max_attempts = 1
[[job.trigger]]
on = "start"

# Fires once a year: paused, resumed and run by hand from the page.
[[job]]
key = "dash/later"
module = "hello"
[[job.trigger]]
cron = "0 0 3 1 1 ?"
"#,
        hello = wasm("hello").display(),
        flaky = wasm("flaky").display(),
        report = wasm("report").display(),
    );
    let path = dir.join("jobs.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A `quartzite serve` process on a free loopback port.
struct Server {
    base: String,
    http: reqwest::Client,
    _child: Killed,
}

async fn start_server(dir: &Path) -> Server {
    start_server_with(dir, Some(TOKEN)).await
}

/// [`start_server`] with the given admin token, or none (the default setup).
async fn start_server_with(dir: &Path, token: Option<&str>) -> Server {
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_quartzite"));
    command.env_remove("QUARTZITE_ADMIN_TOKEN");
    if let Some(token) = token {
        command.env("QUARTZITE_ADMIN_TOKEN", token);
    }
    let child = command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--db"])
        .arg(format!("sqlite://{}", dir.join("q.db").display()))
        .arg("--manifest")
        .arg(manifest(dir))
        .env("QUARTZITE_CACHE_DIR", dir.join("cache"))
        .env("QUARTZITE_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let server = Server {
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
        _child: Killed(child),
    };
    wait_until(Duration::from_secs(30), "/readyz of the server", || {
        let (http, url) = (server.http.clone(), server.url("/readyz"));
        async move {
            http.get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
        }
    })
    .await;
    server
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A read through the API, as a script would do it.
    async fn get(&self, path: &str) -> Value {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        r.json().await.unwrap()
    }
}

/// A WebDriver session on a headless Chromium, through chromedriver.
struct Browser {
    http: reqwest::Client,
    session: String,
    _driver: Killed,
}

async fn start_browser() -> Browser {
    for binary in [CHROMEDRIVER, CHROMIUM] {
        assert!(
            Path::new(binary).is_file(),
            "{binary} is missing: install the Debian packages chromium and chromium-driver (./dev.sh test does)"
        );
    }
    let port = free_port();
    let driver = Killed(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_until(Duration::from_secs(20), "chromedriver to be ready", || {
        let (http, url) = (http.clone(), format!("{base}/status"));
        async move {
            match http.get(&url).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == json!(true)),
                Err(_) => false,
            }
        }
    })
    .await;
    let caps = json!({ "capabilities": { "alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"],
        },
    } } });
    let r = http
        .post(format!("{base}/session"))
        .json(&caps)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let session = v["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("chromedriver created no session: {v}"))
        .to_string();
    Browser {
        http,
        session: format!("{base}/session/{session}"),
        _driver: driver,
    }
}

impl Browser {
    /// One WebDriver command; `Err` carries WebDriver's error (e.g. a stale element).
    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Result<Value, Value> {
        let url = format!("{}{path}", self.session);
        let mut request = self.http.request(method.clone(), &url);
        if method != reqwest::Method::GET && method != reqwest::Method::DELETE {
            request = request.json(&body);
        }
        let r = request.send().await.unwrap();
        let ok = r.status().is_success();
        let v: Value = r.json().await.unwrap();
        if ok {
            Ok(v["value"].clone())
        } else {
            Err(v["value"].clone())
        }
    }

    async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await
            .unwrap();
    }

    async fn current_url(&self) -> String {
        let v = self
            .command(reqwest::Method::GET, "/url", Value::Null)
            .await
            .unwrap();
        v.as_str().unwrap().to_string()
    }

    /// Runs `script` in the page; its `arguments` are `args`.
    async fn script(&self, script: &str, args: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": args }),
        )
        .await
        .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    async fn find(&self, css: &str) -> Result<String, Value> {
        let v = self
            .command(
                reqwest::Method::POST,
                "/element",
                json!({ "using": "css selector", "value": css }),
            )
            .await?;
        v[ELEMENT]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| json!({ "unexpected answer": v }))
    }

    /// Clicks the element `css` selects, finding it again when the page's
    /// refresh replaced it between finding and clicking.
    async fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let attempt = match self.find(css).await {
                Ok(id) => {
                    self.command(
                        reqwest::Method::POST,
                        &format!("/element/{id}/click"),
                        json!({}),
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            match attempt {
                Ok(_) => return,
                Err(e) => assert!(Instant::now() < deadline, "cannot click {css}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await.unwrap();
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        )
        .await
        .unwrap();
    }

    /// The visible text of every element `css` selects.
    async fn texts(&self, css: &str) -> Vec<String> {
        let v = self
            .script(
                "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText);",
                json!([css]),
            )
            .await;
        serde_json::from_value(v).unwrap()
    }

    /// How many elements `css` selects.
    async fn count(&self, css: &str) -> usize {
        let v = self
            .script(
                "return document.querySelectorAll(arguments[0]).length;",
                json!([css]),
            )
            .await;
        usize::try_from(v.as_u64().unwrap()).unwrap()
    }

    /// Polls `script` until it returns something other than null or false.
    async fn wait_for(&self, what: &str, script: &str, args: Value) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.script(script, args.clone()).await;
            if !(v.is_null() || v == json!(false)) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn quit(self) {
        let _ = self.command(reqwest::Method::DELETE, "", Value::Null).await;
    }
}

/// The text of a job's row's cell `cell` (a class), or null while the row is absent.
const JOB_CELL: &str = "const row = document.querySelector(`#jobs-table tr[data-job=\"${arguments[0]}\"]`); \
     if (!row) return null; const c = row.querySelector(arguments[1]); return c ? c.innerText : null;";

/// Clicks the row's Resume button and waits for the store to say so.
async fn resume_from_the_page(browser: &Browser, server: &Server, key: &str) {
    browser
        .click(&format!("#jobs-table tr[data-job=\"{key}\"] button.resume"))
        .await;
    wait_until(
        Duration::from_secs(10),
        &format!("{key} to be resumed"),
        || async { job_state(server, key).await == "active" },
    )
    .await;
}

async fn job_state(server: &Server, key: &str) -> String {
    let v = server.get(&format!("/api/v1/jobs/{key}")).await;
    v["state"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_scheduler_and_acts_on_it_in_a_real_browser() {
    let _load = load_share(LOADED).await;
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path()).await;
    let browser = start_browser().await;

    // `/` leads to the dashboard.
    browser.goto(&server.url("/")).await;
    assert_eq!(browser.current_url().await, server.url("/ui/"));

    // Jobs: every job of the manifest, with the next fire the store computed.
    for key in ["dash/hello", "dash/flaky", "dash/later", "dash/report"] {
        browser
            .wait_for(&format!("the row of {key}"), JOB_CELL, json!([key, ".key"]))
            .await;
    }
    // What each job may reach: its grants, or none.
    let grants = |key: &'static str| {
        let browser = &browser;
        async move {
            browser
                .wait_for(
                    &format!("{key}'s grants"),
                    JOB_CELL,
                    json!([key, ".grants"]),
                )
                .await
        }
    };
    assert_eq!(grants("dash/report").await, json!("emit report.done"));
    assert_eq!(grants("dash/hello").await, json!("none"));
    let later = server.get("/api/v1/jobs/dash/later").await;
    let next_ms = later["next_fire_ms"].as_i64().unwrap();
    let shown = browser
        .script(
            "return Number(document.querySelector('#jobs-table tr[data-job=\"dash/later\"] .next-fire time').dataset.ms);",
            json!([]),
        )
        .await;
    assert_eq!(shown.as_i64(), Some(next_ms), "next fire of dash/later");
    let state = browser
        .wait_for(
            "dash/later's state",
            JOB_CELL,
            json!(["dash/later", ".state"]),
        )
        .await;
    assert_eq!(state, json!("active"));

    // Executions in flight: dash/report's fire, claimed by this node, and its lock.
    let fire = loop_until(&server, "/api/v1/executions", |page| {
        page["items"]
            .as_array()?
            .iter()
            .find(|f| f["job_key"] == json!("dash/report") && f["state"] == json!("acquired"))
            .cloned()
    })
    .await;
    let fire_row = format!(
        "#executions-table tr[data-fire=\"{}\"]",
        fire["fire_id"].as_str().unwrap()
    );
    let text = browser
        .wait_for(
            "dash/report in the executions table",
            "const r = document.querySelector(arguments[0]); return r && r.innerText.includes('acquired') && r.innerText;",
            json!([fire_row]),
        )
        .await;
    let node = fire["node_id"].as_str().unwrap();
    let text = text.as_str().unwrap();
    assert!(
        text.contains("dash/report") && text.contains("acquired") && text.contains(node),
        "{text}"
    );
    let locks = browser
        .wait_for(
            "the report lock",
            "const t = document.querySelector('#locks-table tbody').innerText; return t.includes('report') && t;",
            json!([]),
        )
        .await;
    assert!(locks.as_str().unwrap().contains(node), "{locks}");

    // Cluster: this node, alive, with its version and WIT versions.
    let nodes = server.get("/api/v1/cluster/nodes").await;
    let me = &nodes["items"][0];
    let text = browser
        .wait_for(
            "this node in the nodes table",
            "const r = document.querySelector(`#nodes-table tr[data-node=\"${arguments[0]}\"]`); return r && r.innerText;",
            json!([node]),
        )
        .await;
    let text = text.as_str().unwrap();
    assert_eq!(me["node_id"], json!(node));
    for part in [
        "alive",
        me["version"].as_str().unwrap(),
        me["wit_versions"].as_str().unwrap(),
    ] {
        assert!(text.contains(part), "{part} in {text}");
    }

    // Events: one emitted through the API shows with its fire count and payload.
    let emitted: Value = server
        .http
        .post(server.url("/api/v1/events/dash.ping?key=dash-1"))
        .bearer_auth(TOKEN)
        .json(&json!({ "from": "the dashboard test" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let event_id = emitted["event_id"].as_str().unwrap().to_string();
    let text = browser
        .wait_for(
            "the event in the events table",
            "const r = document.querySelector(`#events-table tr[data-event=\"${arguments[0]}\"]`); return r && r.innerText;",
            json!([event_id]),
        )
        .await;
    let text = text.as_str().unwrap();
    for part in ["dash.ping", "dash-1", "operator", "the dashboard test"] {
        assert!(text.contains(part), "{part} in {text}");
    }
    assert_eq!(
        browser
            .script(
                "return document.querySelector(`#events-table tr[data-event=\"${arguments[0]}\"] .fires`).innerText;",
                json!([event_id]),
            )
            .await,
        json!("1")
    );

    // Alerts: the manifest's rule, and the delivery for dash/flaky's failure,
    // retrying since nothing listens at its webhook.
    let text = browser
        .wait_for(
            "the alert rule",
            "const r = document.querySelector('#alert-rules-table tr[data-rule=\"dash-failures\"]'); return r && r.innerText;",
            json!([]),
        )
        .await;
    let text = text.as_str().unwrap();
    assert!(
        text.contains("permanent-failure") && text.contains("dash/*") && text.contains("manifest"),
        "{text}"
    );
    let text = browser
        .wait_for(
            "a delivery retrying",
            "const r = [...document.querySelectorAll('#deliveries-table tbody tr')].find((r) => r.innerText.includes('dash/flaky') && r.innerText.includes('cannot reach')); return r && r.innerText;",
            json!([]),
        )
        .await;
    let text = text.as_str().unwrap();
    assert!(
        text.contains("dash-failures") && text.contains("pending"),
        "{text}"
    );

    // Modules: every stored module with its version, digest and WIT version.
    let modules = server.get("/api/v1/modules").await;
    let modules = modules["items"].as_array().unwrap();
    assert_eq!(modules.len(), 3, "{modules:?}");
    for m in modules {
        let key = format!(
            "{}@{}",
            m["name"].as_str().unwrap(),
            m["version"].as_str().unwrap()
        );
        let text = browser
            .wait_for(
                &format!("{key} in the modules table"),
                "const r = document.querySelector(`#modules-table tr[data-module=\"${arguments[0]}\"]`); return r && r.innerText;",
                json!([key]),
            )
            .await;
        let text = text.as_str().unwrap();
        assert!(
            text.contains(&m["digest"].as_str().unwrap()[..16]),
            "{text}"
        );
        assert!(text.contains(m["wit_version"].as_str().unwrap()), "{text}");
    }

    // History: the failed run of dash/flaky, whose details show the guest's error.
    let failed = loop_until(
        &server,
        "/api/v1/history?job=dash/flaky&status=failed",
        |page| page["items"].as_array()?.first().cloned(),
    )
    .await;
    let message = failed["details"]["outcome"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("planned failure 1 of 5"), "{failed}");
    let row = format!(
        "#history-table tr.run[data-id=\"{}\"]",
        failed["id"].as_str().unwrap()
    );
    browser
        .wait_for(
            "the failed run in the history table",
            "return !!document.querySelector(arguments[0]);",
            json!([row]),
        )
        .await;
    assert!(browser.texts(&row).await[0].contains("failed"));
    browser.click(&row).await;
    let details = format!(
        "#history-table tr.details[data-for=\"{}\"]",
        failed["id"].as_str().unwrap()
    );
    let text = browser
        .wait_for(
            "the failed run's details",
            "const d = document.querySelector(arguments[0]); return d && !d.hidden && d.innerText;",
            json!([details]),
        )
        .await;
    assert!(
        text.as_str().unwrap().contains(&message),
        "details shown: {text}"
    );

    // Without the token, an action is refused and the page says why, in the API's words.
    browser
        .click("#jobs-table tr[data-job=\"dash/later\"] button.pause")
        .await;
    let refusal = browser
        .wait_for(
            "the refusal",
            "const m = document.querySelector('#message'); return !m.hidden && m.innerText;",
            json!([]),
        )
        .await;
    let refusal = refusal.as_str().unwrap();
    assert!(
        refusal.contains("401")
            && refusal.contains("unauthorized")
            && refusal.contains("needs the admin token"),
        "{refusal}"
    );
    assert_eq!(job_state(&server, "dash/later").await, "active");

    // With the token: Pause pauses the job in the store, Resume resumes it.
    browser.type_into("#token", TOKEN).await;
    browser.click("#token-save").await;
    browser
        .click("#jobs-table tr[data-job=\"dash/later\"] button.pause")
        .await;
    wait_until(
        Duration::from_secs(10),
        "dash/later to be paused",
        || async { job_state(&server, "dash/later").await == "paused" },
    )
    .await;
    browser
        .wait_for(
            "the row to show paused",
            &format!("return (() => {{ {JOB_CELL} }})() === 'paused';"),
            json!(["dash/later", ".state"]),
        )
        .await;
    resume_from_the_page(&browser, &server, "dash/later").await;

    // A pause with a note and an end, made through the API: the row shows both.
    let paused = server
        .http
        .post(format!("{}/api/v1/jobs/dash/later/pause", server.base))
        .bearer_auth(TOKEN)
        .json(&json!({ "note": "waiting for the new bucket", "until": "3h" }))
        .send()
        .await
        .unwrap();
    assert!(
        paused.status().is_success(),
        "{}",
        paused.text().await.unwrap()
    );
    browser
        .wait_for(
            "the row to show the pause note",
            &format!("return (() => {{ {JOB_CELL} }})() === 'waiting for the new bucket';"),
            json!(["dash/later", ".pause-note"]),
        )
        .await;
    resume_from_the_page(&browser, &server, "dash/later").await;

    // Run now: a real run of dash/later, in the store and on the page.
    let before = server.get("/api/v1/history?job=dash/later").await;
    assert_eq!(
        before["total"],
        json!(0),
        "dash/later has not fired on its own: {before}"
    );
    browser
        .click("#jobs-table tr[data-job=\"dash/later\"] button.run-now")
        .await;
    wait_until(Duration::from_secs(15), "the run of dash/later", || async {
        server
            .get("/api/v1/history?job=dash/later&status=success")
            .await["total"]
            .as_u64()
            == Some(1)
    })
    .await;
    browser.type_into("#history-job", "dash/later").await;
    browser.click("#history-apply").await;
    browser
        .wait_for(
            "the history filtered to dash/later's run",
            "const rows = [...document.querySelectorAll('#history-table tr.run')]; \
             return rows.length === 1 && rows[0].innerText.includes('dash/later') && rows[0].innerText.includes('success');",
            json!([]),
        )
        .await;

    // Filtered by status: only dash/flaky's failure.
    browser.click("#history-job").await;
    browser
        .script(
            "document.querySelector('#history-job').value = '';",
            json!([]),
        )
        .await;
    browser
        .click("#history-status option[value=\"failed\"]")
        .await;
    browser.click("#history-apply").await;
    browser
        .wait_for(
            "the history filtered to failures",
            "const rows = [...document.querySelectorAll('#history-table tr.run')]; \
             return rows.length === 1 && rows[0].innerText.includes('dash/flaky') && rows[0].innerText.includes('failed');",
            json!([]),
        )
        .await;

    // "Replay failed" on the history view: dash/flaky's failure runs again,
    // once, however often it is clicked.
    browser.type_into("#history-job", "dash/flaky").await;
    for (click, says) in [
        (
            1,
            "replayed 1 failed fire(s) of dash/flaky; 0 replayed before",
        ),
        (
            2,
            "replayed 0 failed fire(s) of dash/flaky; 1 replayed before",
        ),
    ] {
        browser.click("#history-replay").await;
        browser
            .wait_for(
                &format!("the answer to replay click {click}"),
                "const m = document.querySelector('#message'); return !m.hidden && m.innerText.includes(arguments[0]);",
                json!([says]),
            )
            .await;
    }
    let replayed = loop_until(&server, "/api/v1/history?job=dash/flaky", |page| {
        page["items"]
            .as_array()?
            .iter()
            .find(|h| h["details"]["origin"] == "replay")
            .cloned()
    })
    .await;
    assert_eq!(
        replayed["details"]["replay_of"], failed["fire_id"],
        "{replayed}"
    );

    // Charts: the bars add up to the executions the API counts, failures included,
    // and the lag chart has points.
    let total = |stats: &Value| -> i64 {
        stats["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["total"].as_i64().unwrap())
            .sum()
    };
    let t1 = total(
        &server
            .get("/api/v1/stats/executions?minutes=60&bucket=60")
            .await,
    );
    assert!(t1 > 2, "executions counted: {t1}");
    let drawn = browser
        .wait_for(
            "the chart to catch up with the API",
            "const s = [...document.querySelectorAll('#chart-executions svg rect.bar')] \
               .reduce((n, r) => n + Number(r.dataset.count), 0); return s >= arguments[0] && s;",
            json!([t1]),
        )
        .await;
    let t2 = total(
        &server
            .get("/api/v1/stats/executions?minutes=60&bucket=60")
            .await,
    );
    assert!(
        drawn.as_i64().unwrap() <= t2,
        "drawn {drawn}, counted {t1}..{t2}"
    );
    let fail_bars = browser.count("#chart-executions svg rect.bar.fail").await;
    assert!(fail_bars >= 1, "the failed run is drawn as a failure");
    let points = browser.count("#chart-lag svg circle.point.p50").await;
    assert!(points >= 1, "fire lag points");
    // The lag chart says which attempts it covers, as the API answers.
    browser
        .wait_for(
            "the lag chart to say which attempts it covers",
            "const c = document.querySelector('#chart-lag').closest('figure').querySelector('figcaption'); \
             return c.innerText.includes('started − scheduled, first attempts') && c.innerText;",
            json!([]),
        )
        .await;

    // Every view loaded and rendered without error.
    let status = browser
        .wait_for(
            "a refresh without errors",
            "const s = document.querySelector('#status'); return !s.classList.contains('error') && s.innerText;",
            json!([]),
        )
        .await;
    assert!(status.as_str().unwrap().starts_with("Updated"), "{status}");

    // Nothing was fetched from anywhere but this server.
    let resources = browser
        .script(
            "return performance.getEntriesByType('resource').map(e => e.name).concat([location.href]);",
            json!([]),
        )
        .await;
    let resources: Vec<String> = serde_json::from_value(resources).unwrap();
    assert!(
        resources.iter().any(|u| u.ends_with("/ui/app.js")),
        "{resources:?}"
    );
    assert!(
        resources.iter().any(|u| u.contains("/api/v1/")),
        "{resources:?}"
    );
    for url in &resources {
        assert!(
            url.starts_with(&format!("{}/", server.base)),
            "request outside the server: {url}"
        );
    }

    browser.quit().await;
}

/// Polls the API's `path` until `found` picks something out of its answer.
async fn loop_until(server: &Server, path: &str, found: impl Fn(&Value) -> Option<Value>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = server.get(path).await;
        if let Some(v) = found(&page) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out polling {path}: {page}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Bad chart parameters are JSON errors naming the parameter; the page's
/// assets are served without a token, with a policy that keeps them on this server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_refuse_bad_windows_and_assets_stay_on_this_origin() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path()).await;
    for (query, status, code, field) in [
        ("minutes=0", 422, "invalid_field", Some("minutes")),
        ("minutes=10081", 422, "invalid_field", Some("minutes")),
        ("bucket=0", 422, "invalid_field", Some("bucket")),
        (
            "minutes=10080&bucket=1",
            422,
            "invalid_field",
            Some("bucket"),
        ),
        ("minutes=abc", 400, "bad_request", None),
        ("window=5", 400, "bad_request", None),
    ] {
        let r = server
            .http
            .get(server.url(&format!("/api/v1/stats/executions?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{query}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], json!(code), "{query}: {body}");
        assert_eq!(body["error"]["field"].as_str(), field, "{query}: {body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    let stats = server
        .get("/api/v1/stats/executions?minutes=5&bucket=30")
        .await;
    let buckets = stats["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 10, "every bucket of the window is listed");
    for pair in buckets.windows(2) {
        assert_eq!(
            pair[1]["start_ms"].as_i64().unwrap() - pair[0]["start_ms"].as_i64().unwrap(),
            30_000
        );
    }
    for (path, content_type) in [
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let r = server.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert!(header("content-type").starts_with(content_type), "{path}");
        assert!(
            header("content-security-policy").contains("connect-src 'self'"),
            "{path}"
        );
    }
}

/// Inserts history rows `(status, attempt, scheduled_ms, started_ms)` straight into `task_history`.
async fn insert_history(url: &str, rows: &[(&str, i64, Option<i64>, i64)]) {
    const SQL: &str = "INSERT INTO task_history (id, job_key, status, attempt, scheduled_ms, started_ms, ended_ms, duration_ms, details) \
                       VALUES ($1, 'g/stats', $2, $3, $4, $5, $5, 0, '{}')";
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        for (i, (status, attempt, scheduled, started)) in rows.iter().enumerate() {
            sqlx::query(SQL)
                .bind(format!("row-{i}"))
                .bind(*status)
                .bind(*attempt)
                .bind(*scheduled)
                .bind(*started)
                .execute(&pool)
                .await
                .unwrap();
        }
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        for (i, (status, attempt, scheduled, started)) in rows.iter().enumerate() {
            sqlx::query(SQL)
                .bind(format!("row-{i}"))
                .bind(*status)
                .bind(*attempt)
                .bind(*scheduled)
                .bind(*started)
                .execute(&pool)
                .await
                .unwrap();
        }
    }
}

/// The store's stats on one backend: counts per bucket and status, and
/// nearest-rank lag percentiles over first attempts that ran.
async fn stats_count_and_rank(url: &str) {
    use quartzite::store::model::HistoryStatsParams;
    let store = quartzite::store::open(url).await.unwrap();
    let (from, width) = (1_000_000_i64, 10_000_i64);
    let mut rows = Vec::new();
    // Bucket 0: ten runs late by 1..=10 ms, and a misfire that is no run.
    for lag in 1..=10 {
        let started = from + lag * 100;
        rows.push(("success", 1, Some(started - lag), started));
    }
    rows.push(("misfired", 1, Some(from + 5_000 - 90_000), from + 5_000));
    // Bucket 2: failures late by 7, 3 and 50 ms, and a second attempt whose
    // delay is its backoff, not lag.
    for (status, lag) in [("failed", 7), ("failed", 3), ("timeout", 50)] {
        let started = from + 2 * width + lag;
        rows.push((status, 1, Some(started - lag), started));
    }
    rows.push((
        "success",
        2,
        Some(from + 2 * width - 5_000),
        from + 2 * width + 9,
    ));
    // Bucket 3: a skip without a scheduled time. Outside the window: two rows.
    rows.push(("skipped", 1, None, from + 3 * width));
    rows.push(("success", 1, Some(from - 2), from - 1));
    rows.push(("success", 1, Some(from + 4 * width), from + 4 * width));
    insert_history(url, &rows).await;

    let got = store
        .history_stats(&HistoryStatsParams {
            from_ms: from,
            to_ms: from + 4 * width,
            bucket_ms: width,
        })
        .await
        .unwrap();
    let summary: Vec<Value> = got
        .iter()
        .map(|b| {
            json!([
                b.index,
                b.counts,
                b.lag_samples,
                b.lag_p50_ms,
                b.lag_p99_ms,
                b.lag_max_ms
            ])
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            json!([0, { "success": 10, "misfired": 1 }, 10, 5, 10, 10]),
            json!([2, { "failed": 2, "success": 1, "timeout": 1 }, 3, 7, 50, 50]),
            json!([3, { "skipped": 1 }, 0, null, null, null]),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_and_rank_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    stats_count_and_rank(&format!("sqlite://{}", dir.path().join("q.db").display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_and_rank_on_postgres() {
    let (url, schema) = pg_schema("qz_dash").await;
    stats_count_and_rank(&url).await;
    pg_drop(&schema).await;
}

/// Serves `page` as HTML to every request on a free loopback port (another
/// origin than the server's), until the test ends.
fn serve_page(page: String) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 8192];
            let _ = stream.read(&mut buf);
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_another_origin_changes_nothing_on_a_server_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server_with(dir.path(), None).await;
    let api = server.base.clone();
    // The attacker's page: no-cors fetches without a JSON content type, then a
    // text/plain form whose body is JSON (the classic trick), all at the API.
    let page = format!(
        r#"<!doctype html><html><head><title>loading</title></head><body>
<form id="f" method="POST" action="{api}/api/v1/jobs" enctype="text/plain">
<input name='{{"key":"evil/form","module":"hello","every":"1s","x":"' value='"}}'>
</form>
<script>
const shots = [
  fetch("{api}/api/v1/jobs/dash/later/pause", {{ method: "POST", mode: "no-cors" }}),
  fetch("{api}/api/v1/jobs/dash/hello/run-now", {{ method: "POST", mode: "no-cors", body: "x" }}),
  fetch("{api}/api/v1/jobs", {{ method: "POST", mode: "no-cors",
    body: JSON.stringify({{ key: "evil/fetch", module: "hello", every: "1s" }}) }}),
  fetch("{api}/api/v1/jobs/dash/later/pause", {{ method: "POST", mode: "no-cors",
    headers: {{ "Content-Type": "text/plain" }}, body: "{{}}" }}),
];
Promise.allSettled(shots).then(() => {{ document.title = "fired"; }});
</script></body></html>"#
    );
    let attacker = serve_page(page);
    let browser = start_browser().await;
    browser.goto(&format!("{attacker}/")).await;
    browser
        .wait_for(
            "the page's fetches to settle",
            "return document.title === 'fired';",
            json!([]),
        )
        .await;
    browser
        .script(
            "document.getElementById('f').submit(); return true;",
            json!([]),
        )
        .await;
    browser
        .wait_for(
            "the form post to land on the API",
            "return location.href.includes('/api/v1/jobs');",
            json!([]),
        )
        .await;
    // The server saw every attempt and refused each one; nothing changed.
    let audit = server.get("/api/v1/audit?actor=denied").await;
    let refused: Vec<&Value> = audit["items"].as_array().unwrap().iter().collect();
    assert_eq!(refused.len(), 5, "{audit}");
    for row in &refused {
        assert!(
            row["status"] == json!(403) || row["status"] == json!(415),
            "{row}"
        );
    }
    assert_eq!(job_state(&server, "dash/later").await, "active");
    let jobs = server.get("/api/v1/jobs").await;
    let keys: Vec<&str> = jobs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_key"].as_str().unwrap())
        .collect();
    assert!(!keys.iter().any(|k| k.starts_with("evil/")), "{keys:?}");
    // A page reached through a rebound DNS name sends its own Host: refused.
    let r = server
        .http
        .get(server.url("/api/v1/jobs"))
        .header("host", "attacker.example:80")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
    // The server's own dashboard still acts, with no token on this server.
    browser.goto(&format!("{}/ui/", server.base)).await;
    browser
        .click("#jobs-table tr[data-job=\"dash/later\"] button.pause")
        .await;
    let store_state = || job_state(&server, "dash/later");
    let deadline = Instant::now() + Duration::from_secs(20);
    while store_state().await != "paused" {
        assert!(
            Instant::now() < deadline,
            "the dashboard's pause did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.quit().await;
}
