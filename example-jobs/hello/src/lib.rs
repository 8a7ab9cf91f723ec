//! `hello`: the smallest useful job. Logs a greeting and reports what it saw.

use quartzite_sdk::{Context, Job, JobInfo, Outcome, Result, info};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Data {
    name: Option<String>,
}

pub struct Hello;

impl Job for Hello {
    fn info() -> JobInfo {
        JobInfo::new("hello", env!("CARGO_PKG_VERSION"))
            .description("logs a greeting and reports the fire it ran")
            .default_schedule("0/10 * * * * ?")
    }

    fn run(ctx: &Context) -> Result<Outcome> {
        let data: Option<Data> = ctx.data()?;
        let name = data
            .and_then(|d| d.name)
            .unwrap_or_else(|| "world".to_string());
        let greeting = format!("hello, {name}");
        let event = ctx.event();
        match &event {
            Some(e) => info!(
                "{greeting} (event {} {}, fire {})",
                e.name,
                e.payload_text(),
                ctx.fire_id
            ),
            None => info!("{greeting} (fire {}, attempt {})", ctx.fire_id, ctx.attempt),
        }
        Outcome::details(&json!({
            "greeting": greeting,
            "fire_id": ctx.fire_id,
            "attempt": ctx.attempt,
            "scheduled_at_ms": ctx.scheduled_at_ms,
            "event": event.map(|e| json!({ "name": e.name, "payload": e.payload::<serde_json::Value>().ok() })),
        }))
    }
}

quartzite_sdk::export_job!(Hello);

#[cfg(test)]
mod tests {
    use super::*;
    use quartzite_sdk::testing::TestHost;

    #[test]
    fn greets_the_name_in_the_data() {
        let mut host = TestHost::new().data(r#"{"name":"Ada"}"#);
        let out = host.run::<Hello>().unwrap();
        assert_eq!(out.details_json().unwrap()["greeting"], "hello, Ada");
        assert!(host.logs()[0].message.starts_with("hello, Ada (fire "));
    }

    #[test]
    fn says_which_event_started_it() {
        let mut host = TestHost::new().event("report.done", r#"{"steps":4}"#);
        let out = host.run::<Hello>().unwrap();
        let details = out.details_json().unwrap();
        assert_eq!(details["event"]["name"], "report.done");
        assert_eq!(details["event"]["payload"]["steps"], 4);
        assert!(
            host.logs()[0]
                .message
                .contains("event report.done {\"steps\":4}")
        );
    }

    #[test]
    fn greets_the_world_without_data() {
        let out = TestHost::new().run::<Hello>().unwrap();
        assert_eq!(out.details_json().unwrap()["greeting"], "hello, world");
    }
}
