//! A test guest that makes the outbound requests its data asks for, so host
//! tests can check grants, address checks, limits and secret handling with a
//! real component:
//!
//! ```json
//! {"requests": [{"url": "http://127.0.0.1:8080/a", "method": "GET",
//!                "headers": [["x-a", "1"]], "body": "..."}],
//!  "log_bodies": true, "keep": true, "emit": ["report.done"], "config": true,
//!  "trace": true}
//! ```
//!
//! Each request's result goes into the details: `{"status", "body"}` or
//! `{"error": "denied" | "limit" | "network" | "invalid", "message"}`. With
//! `log_bodies` every body is also logged, with `keep` written to kv and
//! returned as new data, and emitted as an event payload when `emit` is given:
//! the paths a secret echoed back by a server could take into storage. With
//! `trace` the details also hold the run's `traceparent`.

use quartzite_sdk::event::emit;
use quartzite_sdk::http::{HttpError, Request};
use quartzite_sdk::{Context, Job, JobInfo, Outcome, Result, config, info, kv};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize, Default)]
#[serde(default)]
struct Data {
    requests: Vec<Req>,
    log_bodies: bool,
    keep: bool,
    emit: Vec<String>,
    config: bool,
    fail_with_body: bool,
    trace: bool,
}

#[derive(Deserialize)]
struct Req {
    url: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    max_redirects: Option<u32>,
}

struct HttpGuest;

fn kind(e: &HttpError) -> &'static str {
    match e {
        HttpError::Denied(_) => "denied",
        HttpError::Limit(_) => "limit",
        HttpError::Network(_) => "network",
        HttpError::Status { .. } => "status",
        HttpError::Invalid(_) => "invalid",
    }
}

impl Job for HttpGuest {
    fn info() -> JobInfo {
        JobInfo::new("guest-http", "0.1.0").description("makes the HTTP requests its data names")
    }

    fn run(ctx: &Context) -> Result<Outcome> {
        let data: Data = ctx.data()?;
        let mut results = Vec::new();
        let mut bodies = Vec::new();
        for r in &data.requests {
            let mut req = Request::new(r.method.as_deref().unwrap_or("GET"), r.url.clone());
            for (k, v) in &r.headers {
                req = req.header(k.clone(), v.clone());
            }
            if let Some(b) = &r.body {
                req = req.body(b.clone().into_bytes());
            }
            if let Some(n) = r.max_redirects {
                req = req.max_redirects(n);
            }
            match req.send() {
                Ok(resp) => {
                    let body = resp.text();
                    if data.log_bodies {
                        info!("body of {}: {body}", r.url);
                    }
                    bodies.push(body.clone());
                    results.push(json!({ "status": resp.status, "body": body }));
                }
                Err(e) => results.push(json!({ "error": kind(&e), "message": e.to_string() })),
            }
        }
        let joined = bodies.join("\n");
        if data.keep {
            kv::set("bodies", joined.as_bytes())?;
        }
        let mut emitted = Vec::new();
        for name in &data.emit {
            match emit(name, &json!({ "bodies": joined })) {
                Ok(id) => emitted.push(json!({ "name": name, "id": id })),
                Err(e) => emitted.push(json!({ "name": name, "error": e.to_string() })),
            }
        }
        if data.fail_with_body {
            return Err(quartzite_sdk::fatal(format!("failing with {joined}")));
        }
        let config: Value = if data.config {
            let mut all = config::get_all()?;
            all.sort();
            json!({ "all": all, "channel": config::get("channel")? })
        } else {
            Value::Null
        };
        let mut details = json!({ "results": results, "emitted": emitted, "config": config });
        if data.trace {
            details["traceparent"] = json!(ctx.traceparent());
        }
        let outcome = Outcome::details(&details)?;
        if data.keep {
            Ok(outcome.with_new_data(&json!({ "last": joined }))?)
        } else {
            Ok(outcome)
        }
    }
}

quartzite_sdk::export_job!(HttpGuest);
