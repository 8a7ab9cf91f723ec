//! `quartzite trigger preview`: the next fire times of a schedule, computed
//! without a database, as UTC instants. With `--calendar`, the calendars are
//! read from the database or server, and each time they exclude is listed,
//! marked with the calendar that excludes it.

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
    /// An exclusion calendar to honour, by name (repeatable): each time it
    /// excludes is listed with the calendar's name instead of as a fire.
    #[arg(long = "calendar", value_name = "NAME")]
    pub calendars: Vec<String>,
    /// How many fire times to print (excluded times are listed besides).
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

/// One line of the preview: a fire, a wall time the zone skipped, a time a
/// calendar excludes, or a long excluded stretch passed over.
enum Entry {
    Fire(DateTime<Utc>),
    Gap {
        local: String,
        at: DateTime<Utc>,
    },
    Excluded {
        at: DateTime<Utc>,
        calendar: String,
    },
    Stretch {
        from: DateTime<Utc>,
        until: DateTime<Utc>,
        calendar: String,
    },
}

/// Excluded times listed one by one in a row before the rest of their stretch
/// is passed over in one line.
const LISTED_IN_A_ROW: usize = 20;

/// The schedule's events after `after` up to and including its next fire:
/// gaps first, then the fire; empty when it never fires again.
fn next_events(
    cron: Option<&CronSchedule>,
    every: Option<&IntervalSchedule>,
    after: DateTime<Utc>,
) -> Vec<Entry> {
    let mut out = Vec::new();
    if let Some(schedule) = cron {
        for event in schedule.events_after(after) {
            match event {
                CronEvent::Fire(t) => {
                    out.push(Entry::Fire(t));
                    break;
                }
                CronEvent::DstGap { local, at } => out.push(Entry::Gap {
                    local: local.to_string(),
                    at,
                }),
            }
        }
    } else if let Some(t) = every.and_then(|s| s.next_after(after)) {
        out.push(Entry::Fire(t));
    }
    out
}

pub async fn run(conn: &super::ops::Conn, args: PreviewArgs) -> ExitCode {
    let after = args.after.unwrap_or_else(Utc::now);
    let count = args.count as usize;
    let exclusion = if args.calendars.is_empty() {
        None
    } else {
        match super::calendars::exclusion(conn, &args.calendars).await {
            Ok(x) => Some(x),
            Err(e) => return super::ops::finish(Err(e)),
        }
    };
    let (cron, every) = if let Some(expr) = &args.cron {
        match CronSchedule::parse(expr, &args.tz) {
            Ok(s) => (Some(s), None),
            Err(e) => return super::fail(super::EXIT_USAGE, &format!("--cron/--tz: {e}")),
        }
    } else if let Some(period) = args.every {
        match IntervalSchedule::new(after, period, None) {
            Ok(s) => (None, Some(s)),
            Err(e) => return super::fail(super::EXIT_USAGE, &format!("--every: {e}")),
        }
    } else {
        return super::fail(super::EXIT_USAGE, "give --cron or --every");
    };
    let mut entries: Vec<Entry> = Vec::new();
    let mut fires = 0;
    let mut in_a_row = 0;
    // An interval starting now fires now, then every period.
    let mut pending: Vec<Entry> = if every.is_some() {
        vec![Entry::Fire(after)]
    } else {
        next_events(cron.as_ref(), None, after)
    };
    // Every step passes at least one fire time; a calendar excluding all of
    // them ends the preview after this many steps.
    let mut steps = 0;
    while fires < count && !pending.is_empty() && steps < 100_000 {
        steps += 1;
        let mut cursor = None;
        for e in pending.drain(..) {
            let Entry::Fire(t) = e else {
                entries.push(e);
                continue;
            };
            cursor = Some(t);
            let ms = t.timestamp_millis();
            let excluded = exclusion
                .as_ref()
                .and_then(|x| x.excluded_by(ms).map(|c| (c.to_string(), x.skip_to(ms))));
            match excluded {
                None => {
                    entries.push(Entry::Fire(t));
                    fires += 1;
                    in_a_row = 0;
                }
                Some((calendar, until)) if in_a_row >= LISTED_IN_A_ROW => {
                    let until = until.and_then(DateTime::from_timestamp_millis).unwrap_or(t);
                    entries.push(Entry::Stretch {
                        from: t,
                        until,
                        calendar,
                    });
                    in_a_row = 0;
                    // The next event after the stretch (at or after `until`).
                    cursor = Some(until - chrono::Duration::milliseconds(1));
                }
                Some((calendar, _)) => {
                    entries.push(Entry::Excluded { at: t, calendar });
                    in_a_row += 1;
                }
            }
        }
        // Gaps with no fire after them: the schedule has ended.
        let Some(cursor) = cursor else { break };
        pending = next_events(cron.as_ref(), every.as_ref(), cursor);
    }

    let zone = &args.tz;
    if args.json {
        let items: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| match e {
                Entry::Fire(t) => json!({ "fire_at": utc(*t) }),
                Entry::Gap { local, at } => {
                    json!({ "skipped_at": utc(*at), "reason": "dst-gap", "local_time": local })
                }
                Entry::Excluded { at, calendar } => {
                    json!({ "excluded_at": utc(*at), "calendar": calendar })
                }
                Entry::Stretch {
                    from,
                    until,
                    calendar,
                } => json!({ "excluded_from": utc(*from), "excluded_until": utc(*until), "calendar": calendar }),
            })
            .collect();
        outln!("{}", serde_json::Value::Array(items));
    } else {
        for e in &entries {
            match e {
                Entry::Fire(t) => outln!("{}", utc(*t)),
                Entry::Gap { local, at } => {
                    outln!(
                        "# skipped: {local} does not exist in {zone} (dst-gap at {})",
                        utc(*at)
                    );
                }
                Entry::Excluded { at, calendar } => {
                    outln!("# excluded: {} by calendar {calendar}", utc(*at));
                }
                Entry::Stretch {
                    from,
                    until,
                    calendar,
                } => outln!(
                    "# excluded: every time from {} until {} by calendar {calendar}",
                    utc(*from),
                    utc(*until)
                ),
            }
        }
    }
    if fires < count {
        if steps >= 100_000 {
            eprintln!("quartzite: the calendars exclude every time tried; stopped");
        } else {
            eprintln!(
                "quartzite: the schedule has no further fire times (the search ends in 2099)"
            );
        }
    }
    ExitCode::SUCCESS
}
