//! `quartzite trigger preview`: the next fire times of a schedule, computed
//! without a database, as UTC instants.

use crate::schedule::cron::{CronEvent, CronSchedule};
use crate::schedule::interval::IntervalSchedule;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Args;
use serde_json::json;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("schedule").required(true).args(["cron", "every"])))]
pub struct PreviewArgs {
    /// A Quartz cron expression (seconds first; day-of-week 1 = SUN), e.g. `0 0/15 9-17 ? * MON-FRI`.
    #[arg(long)]
    pub cron: Option<String>,
    /// The IANA time zone the cron expression is read in.
    #[arg(long, default_value = "UTC", requires = "cron")]
    pub tz: String,
    /// A fixed interval, e.g. `90s`, `15m`, `1h 30m`.
    #[arg(long, value_parser = super::parse_duration)]
    pub every: Option<Duration>,
    /// Compute from this instant (RFC 3339, e.g. `2030-03-10T00:00:00Z`) [default: now].
    #[arg(long, value_parser = parse_instant)]
    pub after: Option<DateTime<Utc>>,
    /// How many fire times to print.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub count: u32,
    /// Print JSON instead of one instant per line (set from the global `--json`).
    #[arg(skip)]
    pub json: bool,
}

fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!("invalid instant {text:?}: {e} (use RFC 3339, e.g. 2030-03-10T00:00:00Z)")
        })
}

fn utc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One line of the preview: a fire, or a wall time the zone skipped.
enum Entry {
    Fire(DateTime<Utc>),
    Gap { local: String, at: DateTime<Utc> },
}

pub fn run(args: PreviewArgs) -> ExitCode {
    let after = args.after.unwrap_or_else(Utc::now);
    let count = args.count as usize;
    let entries: Vec<Entry> = if let Some(expr) = &args.cron {
        let schedule = match CronSchedule::parse(expr, &args.tz) {
            Ok(s) => s,
            Err(e) => return super::fail(super::EXIT_USAGE, &format!("--cron/--tz: {e}")),
        };
        let mut out = Vec::new();
        let mut fires = 0;
        for event in schedule.events_after(after) {
            match event {
                CronEvent::Fire(t) => {
                    out.push(Entry::Fire(t));
                    fires += 1;
                }
                CronEvent::DstGap { local, at } => out.push(Entry::Gap {
                    local: local.to_string(),
                    at,
                }),
            }
            if fires == count {
                break;
            }
        }
        out
    } else if let Some(every) = args.every {
        let schedule = match IntervalSchedule::new(after, every, None) {
            Ok(s) => s,
            Err(e) => return super::fail(super::EXIT_USAGE, &format!("--every: {e}")),
        };
        // An interval starting now fires now, then every period.
        std::iter::successors(Some(after), |t| schedule.next_after(*t))
            .take(count)
            .map(Entry::Fire)
            .collect()
    } else {
        return super::fail(super::EXIT_USAGE, "give --cron or --every");
    };

    if args.json {
        let items: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| match e {
                Entry::Fire(t) => json!({ "fire_at": utc(*t) }),
                Entry::Gap { local, at } => {
                    json!({ "skipped_at": utc(*at), "reason": "dst-gap", "local_time": local })
                }
            })
            .collect();
        outln!("{}", serde_json::Value::Array(items));
    } else {
        for e in &entries {
            match e {
                Entry::Fire(t) => outln!("{}", utc(*t)),
                Entry::Gap { local, at } => {
                    outln!(
                        "# skipped: {local} does not exist in {} (dst-gap at {})",
                        args.tz,
                        utc(*at)
                    );
                }
            }
        }
    }
    if entries
        .iter()
        .filter(|e| matches!(e, Entry::Fire(_)))
        .count()
        < count
    {
        eprintln!("quartzite: the schedule has no further fire times (the search ends in 2099)");
    }
    ExitCode::SUCCESS
}
