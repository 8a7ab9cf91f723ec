//! The cheapest possible job: does nothing. The runtime benchmark's subject.

use quartzite_sdk::{Context, Job, JobInfo, Outcome, Result};

struct Noop;

impl Job for Noop {
    fn info() -> JobInfo {
        JobInfo::new("noop", "0.1.0")
    }

    fn run(_ctx: &Context) -> Result<Outcome> {
        Ok(Outcome::none())
    }
}

quartzite_sdk::export_job!(Noop);
