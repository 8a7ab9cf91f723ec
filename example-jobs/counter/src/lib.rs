//! `counter`: keeps a count in the job's durable kv state, so it survives
//! across runs, restarts and nodes.

use quartzite_sdk::{Context, Job, JobInfo, Outcome, Overlap, Result, info, kv};
use serde_json::json;

pub struct Counter;

impl Job for Counter {
    fn info() -> JobInfo {
        JobInfo::new("counter", env!("CARGO_PKG_VERSION"))
            .description("counts its runs in durable kv state")
            // Two runs at once would both read the same count and one update
            // would be lost: fires of a counter must not overlap.
            .overlap(Overlap::Forbid)
    }

    fn run(ctx: &Context) -> Result<Outcome> {
        let count = kv::get_json::<u64>("count")?.unwrap_or(0) + 1;
        kv::set_json("count", &count)?;
        // Remember the last fire so a recovery re-run can tell it already counted.
        kv::set("last-fire", ctx.fire_id.as_bytes())?;
        info!("run number {count}");
        Outcome::details(&json!({ "count": count }))
    }
}

quartzite_sdk::export_job!(Counter);

#[cfg(test)]
mod tests {
    use super::*;
    use quartzite_sdk::testing::TestHost;

    #[test]
    fn count_survives_across_runs() {
        let mut host = TestHost::new();
        for expected in 1..=3u64 {
            let out = host.run::<Counter>().unwrap();
            assert_eq!(out.details_json().unwrap()["count"], expected);
        }
        assert_eq!(host.kv("count"), Some(&b"3"[..]));
    }
}
