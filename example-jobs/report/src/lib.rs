//! `report`: a long job. Takes the cluster lock `report` so only one runs at a
//! time anywhere, works in steps, checkpoints its progress per fire in kv, and
//! stops early when the host cancels the run (timeout or shutdown). A retry of
//! the same fire resumes from the checkpoint. When done it emits `report.done`,
//! which starts every job subscribed to it.

use quartzite_sdk::{
    Context, Job, JobInfo, Outcome, Overlap, Result, cancelled, event, info, kv, lock, retry,
};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

#[derive(Deserialize)]
#[serde(default)]
struct Data {
    steps: u32,
    step_ms: u64,
    lock_timeout_ms: u64,
}

impl Default for Data {
    fn default() -> Self {
        Data {
            steps: 5,
            step_ms: 100,
            lock_timeout_ms: 2_000,
        }
    }
}

pub struct Report;

impl Job for Report {
    fn info() -> JobInfo {
        JobInfo::new("report", env!("CARGO_PKG_VERSION"))
            .description("builds a report in steps under a cluster lock; stops when cancelled")
            .overlap(Overlap::Forbid)
    }

    fn run(ctx: &Context) -> Result<Outcome> {
        let data: Data = ctx.data::<Option<Data>>()?.unwrap_or_default();
        let guard = lock("report", Duration::from_millis(data.lock_timeout_ms))?;
        let checkpoint = format!("checkpoint/{}", ctx.fire_id);
        let mut done = kv::get_json::<u32>(&checkpoint)?.unwrap_or(0);
        if done > 0 {
            info!("resuming fire {} at step {done}", ctx.fire_id);
        }
        while done < data.steps {
            if cancelled() {
                info!("cancelled after {done} of {} steps", data.steps);
                return Err(retry(format!(
                    "cancelled after {done} of {} steps",
                    data.steps
                )));
            }
            std::thread::sleep(Duration::from_millis(data.step_ms));
            done += 1;
            kv::set_json(&checkpoint, &done)?;
            info!("step {done} of {} done", data.steps);
        }
        kv::delete(&checkpoint)?;
        let token = guard.fencing_token();
        drop(guard);
        // Jobs subscribed to `report.done` fire once for this report.
        event::emit(
            "report.done",
            &json!({ "steps": done, "fire": ctx.fire_id }),
        )?;
        Outcome::details(&json!({ "steps": done, "fencing_token": token }))
    }
}

quartzite_sdk::export_job!(Report);

#[cfg(test)]
mod tests {
    use super::*;
    use quartzite_sdk::testing::TestHost;

    #[test]
    fn runs_every_step_and_releases_the_lock() {
        let mut host = TestHost::new().data(r#"{"steps":3,"step_ms":0}"#);
        let out = host.run::<Report>().unwrap();
        assert_eq!(out.details_json().unwrap()["steps"], 3);
        assert!(!host.lock_held("report"));
        assert_eq!(host.emitted().len(), 1);
        assert_eq!(host.emitted()[0].name, "report.done");
        assert_eq!(host.emitted()[0].payload_json()["steps"], 3);
    }

    #[test]
    fn stops_when_cancelled_and_resumes_from_the_checkpoint() {
        let mut host = TestHost::new()
            .fire_id("fire-1")
            .data(r#"{"steps":5,"step_ms":0}"#)
            .cancel_after_checks(2);
        let err = host.run::<Report>().unwrap_err();
        assert_eq!(err.message(), "cancelled after 2 of 5 steps");
        assert!(!host.lock_held("report"));
        assert_eq!(host.kv("checkpoint/fire-1"), Some(&b"2"[..]));

        let mut host = host.cancel_after_checks(100).attempt(2);
        let out = host.run::<Report>().unwrap();
        assert_eq!(out.details_json().unwrap()["steps"], 5);
        assert!(
            host.logs()
                .iter()
                .any(|l| l.message == "resuming fire fire-1 at step 2")
        );
        assert_eq!(host.kv("checkpoint/fire-1"), None);
    }

    #[test]
    fn waits_for_a_lock_held_elsewhere_then_asks_for_a_retry() {
        let mut host = TestHost::new().data(r#"{"lock_timeout_ms":50}"#);
        host.hold_lock_elsewhere("report");
        let err = host.run::<Report>().unwrap_err();
        assert!(err.is_retryable());
        assert!(err.message().contains("not acquired"));
    }
}
