//! A 1.0 job that imports `acme:thing/telemetry`: a host must refuse it as
//! incompatible, naming the import, instead of failing at run time.

wit_bindgen::generate!({ path: "wit", world: "test:unknown-import/job", generate_all });

use exports::quartzite::job::runner::Guest;
use quartzite::job::types::{Context, Failure, JobInfo, Outcome};

struct NeedsTelemetry;

impl Guest for NeedsTelemetry {
    fn describe() -> JobInfo {
        JobInfo {
            name: "unknown-import".into(),
            version: "0.1.0".into(),
            description: None,
            default_schedule: None,
            overlap: None,
        }
    }

    fn run(_ctx: Context) -> Result<Outcome, Failure> {
        let pings = acme::thing::telemetry::ping();
        Ok(Outcome {
            details: Some(pings.to_string()),
            new_data: None,
        })
    }
}

// Only a component has somewhere to export to.
#[cfg(target_arch = "wasm32")]
export!(NeedsTelemetry);
