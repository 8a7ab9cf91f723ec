//! A job whose `describe()` strings carry terminal control sequences (clear the
//! screen, set the window title, colours) and a long description: what the
//! host prints of them must be inert text.

use quartzite_sdk::{Context, Job, JobInfo, Outcome, Result};

struct Loud;

impl Job for Loud {
    fn info() -> JobInfo {
        let mut description = String::from("\u{1b}]0;owned\u{7}\u{1b}[31mred\u{1b}[0m\r\u{9b}2J");
        description.push_str(&"d".repeat(8000));
        JobInfo::new("loud\u{1b}[2J", "1.0.0\u{1b}[0m").description(description)
    }

    fn run(_ctx: &Context) -> Result<Outcome> {
        Ok(Outcome::none())
    }
}

quartzite_sdk::export_job!(Loud);
