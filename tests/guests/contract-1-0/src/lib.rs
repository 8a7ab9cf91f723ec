//! A job built for `quartzite:job@1.0.0`: counts its runs in kv state, logs,
//! and reports the count and its data back, using only 1.0 host functions.

wit_bindgen::generate!({
    path: "wit",
    world: "quartzite:job/job",
});

use exports::quartzite::job::runner::Guest;
use quartzite::job::host;
use quartzite::job::types::{Context, Failure, JobInfo, LogLevel, Outcome};

struct Contract10;

impl Guest for Contract10 {
    fn describe() -> JobInfo {
        JobInfo {
            name: "contract-1-0".into(),
            version: "1.0.0".into(),
            description: Some("built for quartzite:job@1.0.0".into()),
            default_schedule: None,
            overlap: None,
        }
    }

    fn run(ctx: Context) -> Result<Outcome, Failure> {
        let runs = host::kv_get("runs")
            .map_err(|e| Failure::Retry(format!("{e:?}")))?
            .and_then(|v| v.try_into().ok())
            .map_or(0, u64::from_le_bytes)
            + 1;
        host::kv_set("runs", &runs.to_le_bytes()).map_err(|e| Failure::Retry(format!("{e:?}")))?;
        host::log(LogLevel::Info, &format!("1.0 job run {runs}"));
        Ok(Outcome {
            details: Some(format!(
                r#"{{"contract":"1.0.0","runs":{runs},"data_bytes":{}}}"#,
                ctx.data.len()
            )),
            new_data: None,
        })
    }
}

export!(Contract10);
