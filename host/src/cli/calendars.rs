//! `quartzite calendar ...`: exclusion calendars on the database (`--db`) or
//! through a server (`--server`), with the same JSON and exit codes.

use super::EXIT_USAGE;
use super::ops::{Conn, Target, cell, emit, finish, items, print_table};
use super::remote::{Body, CliError, encode};
use crate::schedule::calendar::{CalendarDef, CalendarInput, CalendarSet, Exclusion};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, Subcommand)]
pub enum CalendarCommand {
    /// Add or replace an exclusion calendar. Its kind follows from the rule
    /// flag given (--date, --day, --window, --cron or --rrule).
    Put(Box<PutArgs>),
    /// List calendars.
    List,
    /// Show a calendar and the triggers that use it.
    Show { name: String },
    /// Delete a calendar no trigger and no other calendar uses.
    Delete { name: String },
}

#[derive(Debug, Args)]
pub struct PutArgs {
    /// The calendar's name.
    pub name: String,
    /// holiday, weekly, daily, cron or rrule [default: from the rule flag].
    #[arg(long)]
    pub kind: Option<String>,
    /// The IANA zone dates and times of day are read in [default: UTC].
    #[arg(long)]
    pub tz: Option<String>,
    /// Another calendar whose exclusions this one adds to its own.
    #[arg(long)]
    pub base: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    /// holiday: a whole local day to exclude, YYYY-MM-DD (repeatable, or comma-separated).
    #[arg(long = "date", value_delimiter = ',')]
    pub dates: Vec<String>,
    /// weekly: a weekday to exclude, MON ... SUN (repeatable, or comma-separated).
    #[arg(long = "day", value_delimiter = ',')]
    pub days: Vec<String>,
    /// daily: a time-of-day window to exclude, e.g. 22:00-06:00 (end not excluded).
    #[arg(long)]
    pub window: Option<String>,
    /// daily: exclude every time outside the window instead.
    #[arg(long, requires = "window")]
    pub invert: bool,
    /// cron: the seconds this Quartz cron expression matches are excluded.
    #[arg(long)]
    pub cron: Option<String>,
    /// rrule: an RFC 5545 RRULE, e.g. FREQ=WEEKLY;BYDAY=MO.
    #[arg(long)]
    pub rrule: Option<String>,
    /// rrule: the first occurrence, local YYYY-MM-DDTHH:MM:SS [default: midnight today].
    #[arg(long, requires = "rrule")]
    pub dtstart: Option<String>,
    /// rrule: how long each occurrence excludes, e.g. 1h [default: 1s].
    #[arg(long, requires = "rrule")]
    pub duration: Option<String>,
}

impl PutArgs {
    /// The calendar as the API takes it.
    fn input(&self) -> Result<CalendarInput, CliError> {
        let given: Vec<&str> = [
            ("holiday", !self.dates.is_empty()),
            ("weekly", !self.days.is_empty()),
            ("daily", self.window.is_some()),
            ("cron", self.cron.is_some()),
            ("rrule", self.rrule.is_some()),
        ]
        .iter()
        .filter(|(_, g)| *g)
        .map(|(k, _)| *k)
        .collect();
        let kind = match (&self.kind, given.as_slice()) {
            (Some(k), _) => k.clone(),
            (None, [one]) => (*one).to_string(),
            (None, []) => {
                return Err(CliError::new(
                    EXIT_USAGE,
                    "give the rule: --date, --day, --window, --cron or --rrule",
                ));
            }
            (None, _) => {
                return Err(CliError::new(
                    EXIT_USAGE,
                    format!("a calendar has one rule; got {}", given.join(" and ")),
                ));
            }
        };
        Ok(CalendarInput {
            kind,
            tz: self.tz.clone(),
            base: self.base.clone(),
            description: self.description.clone(),
            dates: (!self.dates.is_empty()).then(|| self.dates.clone()),
            days: (!self.days.is_empty()).then(|| self.days.clone()),
            window: self.window.clone(),
            invert: self.invert.then_some(true),
            cron: self.cron.clone(),
            rrule: self.rrule.clone(),
            dtstart: self.dtstart.clone(),
            duration: self.duration.clone(),
        })
    }
}

/// The input as a JSON body (the fields given, nothing else).
fn body_of(input: &CalendarInput) -> Value {
    let mut v = json!({ "kind": input.kind });
    let fields: [(&str, Value); 11] = [
        ("tz", json!(input.tz)),
        ("base", json!(input.base)),
        ("description", json!(input.description)),
        ("dates", json!(input.dates)),
        ("days", json!(input.days)),
        ("window", json!(input.window)),
        ("invert", json!(input.invert)),
        ("cron", json!(input.cron)),
        ("rrule", json!(input.rrule)),
        ("dtstart", json!(input.dtstart)),
        ("duration", json!(input.duration)),
    ];
    for (key, value) in fields {
        if !value.is_null() {
            v[key] = value;
        }
    }
    v
}

/// A calendar's rule in a few words, for tables.
fn rule_text(v: &Value) -> String {
    let list = |key: &str| {
        v[key]
            .as_array()
            .map(|a| a.iter().map(cell).collect::<Vec<_>>().join(","))
            .unwrap_or_default()
    };
    match v["kind"].as_str().unwrap_or_default() {
        "holiday" => list("dates"),
        "weekly" => list("days"),
        "daily" => {
            let window = format!("{}-{}", cell(&v["start"]), cell(&v["end"]));
            if v["invert"].as_bool() == Some(true) {
                format!("outside {window}")
            } else {
                window
            }
        }
        "cron" => cell(&v["cron"]),
        "rrule" => format!(
            "{} from {} for {} ms",
            cell(&v["rrule"]),
            cell(&v["dtstart"]),
            cell(&v["duration_ms"])
        ),
        _ => String::new(),
    }
}

fn path_of(name: &str) -> String {
    format!("/api/v1/calendars/{}", encode(name))
}

/// Every stored calendar, as the target answers (for `trigger preview`).
///
/// # Errors
///
/// The store or server failing, or a definition this build cannot read.
pub(super) async fn calendar_set(target: &Target) -> Result<CalendarSet, CliError> {
    let list = match target {
        Target::Local { admin, .. } => admin.calendar_list().await?,
        Target::Remote(r) => r.get("/api/v1/calendars").await?["items"].take(),
    };
    let defs = items(&list)
        .iter()
        .map(|v| serde_json::from_value::<CalendarDef>(v.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::new(super::EXIT_FAILED, format!("unreadable calendar: {e}")))?;
    Ok(CalendarSet::new(defs))
}

/// The calendars `names` resolved against the target's.
///
/// # Errors
///
/// As [`calendar_set`], or a name or base that does not exist.
pub(super) async fn exclusion(conn: &Conn, names: &[String]) -> Result<Arc<Exclusion>, CliError> {
    let target = conn.open().await?;
    let set = calendar_set(&target).await?;
    set.exclusion(names)
        .map_err(|e| CliError::new(super::EXIT_FAILED, format!("--calendar: {}", e.message)))
}

pub async fn calendar(conn: &Conn, command: CalendarCommand, json: bool) -> ExitCode {
    let result = async {
        let target = conn.open().await?;
        match command {
            CalendarCommand::List => {
                let value = match &target {
                    Target::Local { admin, .. } => admin.calendar_list().await?,
                    Target::Remote(r) => r.get("/api/v1/calendars").await?["items"].take(),
                };
                Ok(emit(json, &value, |v| {
                    let rows: Vec<Vec<String>> = items(v)
                        .iter()
                        .map(|c| {
                            vec![
                                cell(&c["name"]),
                                cell(&c["kind"]),
                                cell(&c["tz"]),
                                c["base"].as_str().unwrap_or("-").to_string(),
                                rule_text(c),
                                cell(&c["source"]),
                            ]
                        })
                        .collect();
                    print_table(
                        &["CALENDAR", "KIND", "TZ", "BASE", "EXCLUDES", "SOURCE"],
                        &rows,
                    );
                }))
            }
            CalendarCommand::Show { name } => {
                let value = match &target {
                    Target::Local { admin, .. } => admin.calendar_show(&name).await?,
                    Target::Remote(r) => r.get(&path_of(&name)).await?,
                };
                Ok(emit(json, &value, |v| {
                    outln!(
                        "calendar {} ({}, {})",
                        cell(&v["name"]),
                        cell(&v["kind"]),
                        cell(&v["tz"])
                    );
                    outln!("  excludes: {}", rule_text(v));
                    if let Some(base) = v["base"].as_str() {
                        outln!("  base:     {base}");
                    }
                    let users: Vec<String> = items(&json!({ "items": v["used_by"] }))
                        .iter()
                        .map(cell)
                        .collect();
                    outln!(
                        "  used by:  {}",
                        if users.is_empty() {
                            "-".to_string()
                        } else {
                            users.join(", ")
                        }
                    );
                }))
            }
            CalendarCommand::Put(args) => {
                let input = args.input()?;
                let value = match &target {
                    Target::Local { admin, caller } => {
                        admin.calendar_put(caller, &args.name, &input).await?.body
                    }
                    Target::Remote(r) => {
                        r.call(
                            Method::PUT,
                            &path_of(&args.name),
                            Some(Body::Json(body_of(&input))),
                        )
                        .await?
                    }
                };
                Ok(emit(json, &value, |v| {
                    outln!("calendar {} saved", cell(&v["name"]));
                    let moved = items(&json!({ "items": v["recomputed"] })).len();
                    if moved > 0 {
                        outln!("{moved} trigger(s) had their next fire recomputed");
                    }
                }))
            }
            CalendarCommand::Delete { name } => {
                let value = match &target {
                    Target::Local { admin, caller } => {
                        admin.calendar_delete(caller, &name).await?.body
                    }
                    Target::Remote(r) => r.call(Method::DELETE, &path_of(&name), None).await?,
                };
                Ok(emit(json, &value, |v| {
                    outln!("calendar {} deleted", cell(&v["name"]))
                }))
            }
        }
    }
    .await;
    finish(result)
}
