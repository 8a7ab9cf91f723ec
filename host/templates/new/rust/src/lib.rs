//! `{{name}}`: greets whoever the job data names and counts its runs in the
//! job's durable kv state.

use quartzite_sdk::{Context, Job, JobInfo, Outcome, Result, info, kv};
use serde::Deserialize;
use serde_json::json;

/// The job data, e.g. `data = { name = "world" }` in a manifest.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Data {
    name: Option<String>,
}

pub struct {{type_name}};

impl Job for {{type_name}} {
    fn info() -> JobInfo {
        JobInfo::new("{{name}}", env!("CARGO_PKG_VERSION"))
            .description("greets and counts its runs")
    }

    fn run(ctx: &Context) -> Result<Outcome> {
        let data: Data = ctx.data::<Option<Data>>()?.unwrap_or_default();
        let name = data.name.unwrap_or_else(|| "world".into());
        let count = kv::get_json::<u64>("count")?.unwrap_or(0) + 1;
        kv::set_json("count", &count)?;
        info!("hello, {name} (run {count}, fire {})", ctx.fire_id);
        Outcome::details(&json!({ "greeting": format!("hello, {name}"), "count": count }))
    }
}

quartzite_sdk::export_job!({{type_name}});

#[cfg(test)]
mod tests {
    use super::*;
    use quartzite_sdk::testing::TestHost;

    #[test]
    fn greets_and_counts_across_runs() {
        let mut host = TestHost::new().data(r#"{"name":"test"}"#);
        host.run::<{{type_name}}>().unwrap();
        let out = host.run::<{{type_name}}>().unwrap();
        assert_eq!(out.details_json().unwrap()["count"], 2);
        assert_eq!(host.kv("count"), Some(&b"2"[..]));
        assert!(host.logs()[1].message.starts_with("hello, test (run 2"));
    }
}
