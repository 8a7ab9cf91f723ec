//! `notify`: posts a message to a webhook. The message comes from the job data
//! (`{"message": "..."}`) or from the event that started the fire (its
//! payload's `message`, else the whole payload). The webhook's URL is config
//! (`webhook_url`), its credential a secret grant the host injects: the job
//! never sees it.
//!
//! A 5xx or 429 answer is retried within the run, waiting the `Retry-After`
//! the server asks for (capped, and never past cancellation), then handed to
//! the job's retry policy; any other 4xx is fatal: sending it again would not
//! help. The fire id goes along as `Idempotency-Key`, so a receiver that
//! honours it shows a retried fire once.

use quartzite_sdk::http::{HttpError, Request};
use quartzite_sdk::{
    Context, Job, JobInfo, Outcome, Result, cancelled, config, event, fatal, info, retry, warn,
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Data {
    message: Option<String>,
    /// Attempts within one run before the fire's retry policy takes over.
    attempts: Option<u32>,
}

/// The longest `Retry-After` waited for within a run.
const MAX_WAIT: Duration = Duration::from_secs(10);

pub struct Notify;

fn message(data: &Data) -> Option<String> {
    if let Some(m) = &data.message {
        return Some(m.clone());
    }
    let e = event::current()?;
    let payload: Value = e.payload().unwrap_or(Value::Null);
    Some(match payload.get("message").and_then(Value::as_str) {
        Some(m) => m.to_string(),
        None => format!("{}: {payload}", e.name),
    })
}

impl Job for Notify {
    fn info() -> JobInfo {
        JobInfo::new("notify", env!("CARGO_PKG_VERSION"))
            .description("posts a message to a webhook; its credential is a secret grant")
    }

    fn run(ctx: &Context) -> Result<Outcome> {
        let data: Data = ctx.data::<Option<Data>>()?.unwrap_or_default();
        let url = config::get("webhook_url")?
            .ok_or_else(|| fatal("no webhook_url in the job's config grants"))?;
        let channel = config::get("channel")?.unwrap_or_else(|| "#general".into());
        let text = message(&data).ok_or_else(|| fatal("no message in the data or the event"))?;
        let body = json!({ "channel": channel, "text": text });
        let attempts = data.attempts.unwrap_or(3).max(1);
        for attempt in 1..=attempts {
            let response = Request::post(&url)
                .header("idempotency-key", ctx.fire_id.clone())
                .json(&body)?
                .send()?;
            match response.error_for_status() {
                Ok(r) => {
                    info!("posted to {channel}: {} (attempt {attempt})", r.status);
                    return Outcome::details(
                        &json!({ "status": r.status, "attempt": attempt, "channel": channel }),
                    );
                }
                Err(e @ HttpError::Status { .. }) if e.is_retryable() && attempt < attempts => {
                    let HttpError::Status {
                        status,
                        retry_after,
                        ..
                    } = &e
                    else {
                        unreachable!("matched above")
                    };
                    let wait = retry_after
                        .unwrap_or(Duration::from_millis(500))
                        .min(MAX_WAIT);
                    warn!("webhook answered {status}; trying again in {wait:?}");
                    if cancelled() {
                        return Err(retry(format!("cancelled after {status}")));
                    }
                    std::thread::sleep(wait);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(retry("the webhook kept failing"))
    }
}

quartzite_sdk::export_job!(Notify);

#[cfg(test)]
mod tests {
    use super::*;
    use quartzite_sdk::http::Response;
    use quartzite_sdk::testing::TestHost;

    const HOOK: &str = "https://hooks.example.com/notify";

    fn host() -> TestHost {
        TestHost::new()
            .config("webhook_url", HOOK)
            .config("channel", "#ops")
    }

    fn answer(status: u16, retry_after: Option<&str>) -> Response {
        Response {
            status,
            headers: retry_after
                .map(|r| vec![("retry-after".to_string(), r.to_string())])
                .unwrap_or_default(),
            body: Vec::new(),
        }
    }

    #[test]
    fn posts_the_data_message_with_the_fire_id() {
        let mut h = host()
            .data(r#"{"message":"deploy done"}"#)
            .stub_http(HOOK, 200, "{}");
        let out = h.run::<Notify>().unwrap();
        assert_eq!(out.details_json().unwrap()["attempt"], 1);
        let sent = &h.http_requests()[0];
        assert_eq!(sent.method, "POST");
        let body: Value = serde_json::from_slice(&sent.body).unwrap();
        assert_eq!(body, json!({ "channel": "#ops", "text": "deploy done" }));
        assert!(
            sent.headers
                .iter()
                .any(|(n, v)| n == "idempotency-key" && v == "test-fire-1")
        );
    }

    #[test]
    fn takes_the_message_from_the_event() {
        let mut h = host()
            .event("report.done", r#"{"message":"report ready"}"#)
            .stub_http(HOOK, 200, "{}");
        h.run::<Notify>().unwrap();
        let body: Value = serde_json::from_slice(&h.http_requests()[0].body).unwrap();
        assert_eq!(body["text"], "report ready");
    }

    #[test]
    fn retries_a_429_after_its_retry_after_then_succeeds() {
        let mut h = host()
            .data(r#"{"message":"m"}"#)
            .stub_http_response(HOOK, answer(429, Some("0")))
            .stub_http_response(HOOK, answer(503, None))
            .stub_http(HOOK, 200, "{}");
        let out = h.run::<Notify>().unwrap();
        assert_eq!(out.details_json().unwrap()["attempt"], 3);
        assert_eq!(h.http_requests().len(), 3);
    }

    #[test]
    fn a_4xx_is_fatal_and_not_retried() {
        let mut h = host()
            .data(r#"{"message":"m"}"#)
            .stub_http_response(HOOK, answer(400, None));
        let err = h.run::<Notify>().unwrap_err();
        assert!(matches!(err, quartzite_sdk::Error::Fatal(_)), "{err:?}");
        assert_eq!(h.http_requests().len(), 1);
    }

    #[test]
    fn a_denied_request_is_fatal() {
        let mut h = TestHost::new()
            .config("webhook_url", HOOK)
            .data(r#"{"message":"m"}"#);
        let err = h.run::<Notify>().unwrap_err();
        assert!(matches!(err, quartzite_sdk::Error::Fatal(_)), "{err:?}");
    }
}
