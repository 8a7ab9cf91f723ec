//! A job whose `describe()` name is 16 MiB: a push must refuse it, not store it.

use quartzite_sdk::{Context, Job, JobInfo, Outcome, Result};

struct Huge;

impl Job for Huge {
    fn info() -> JobInfo {
        JobInfo::new("h".repeat(16 << 20), "1.0.0")
    }

    fn run(_ctx: &Context) -> Result<Outcome> {
        Ok(Outcome::none())
    }
}

quartzite_sdk::export_job!(Huge);
