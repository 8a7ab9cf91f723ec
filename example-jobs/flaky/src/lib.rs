//! `flaky`: fails with a retryable error on its first `failures` attempts
//! (from its data), then succeeds. Shows the retry policy at work.

use quartzite_sdk::{Context, Job, JobInfo, Outcome, Result, retry, warn};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Data {
    #[serde(default = "default_failures")]
    failures: u32,
}

fn default_failures() -> u32 {
    2
}

pub struct Flaky;

impl Job for Flaky {
    fn info() -> JobInfo {
        JobInfo::new("flaky", env!("CARGO_PKG_VERSION"))
            .description("fails `failures` times with a retryable error, then succeeds")
    }

    fn run(ctx: &Context) -> Result<Outcome> {
        let data: Option<Data> = ctx.data()?;
        let failures = data.map_or_else(default_failures, |d| d.failures);
        if ctx.attempt <= failures {
            warn!(
                "attempt {} of fire {} fails on purpose",
                ctx.attempt, ctx.fire_id
            );
            return Err(retry(format!(
                "planned failure {} of {failures}",
                ctx.attempt
            )));
        }
        Outcome::details(&json!({ "succeeded_on_attempt": ctx.attempt }))
    }
}

quartzite_sdk::export_job!(Flaky);

#[cfg(test)]
mod tests {
    use super::*;
    use quartzite_sdk::testing::TestHost;

    #[test]
    fn fails_then_succeeds() {
        for attempt in 1..=2 {
            let err = TestHost::new()
                .data(r#"{"failures":2}"#)
                .attempt(attempt)
                .run::<Flaky>();
            assert!(err.unwrap_err().is_retryable());
        }
        let out = TestHost::new()
            .data(r#"{"failures":2}"#)
            .attempt(3)
            .run::<Flaky>()
            .unwrap();
        assert_eq!(out.details_json().unwrap()["succeeded_on_attempt"], 3);
    }
}
