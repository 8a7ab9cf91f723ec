//! Exclusion calendars: named sets of instants at which a trigger attached to
//! them does not fire.
//!
//! A calendar has one rule, read in its own time zone:
//!
//! * `holiday`: whole local days, listed by date;
//! * `weekly`: whole local days, by weekday;
//! * `daily`: a time-of-day window `[start, end)` (it may cross midnight), or
//!   with `invert` everything outside it;
//! * `cron`: the seconds a Quartz cron expression matches (an instant is
//!   excluded when the expression matches the whole second it falls in);
//! * `rrule`: the occurrences of an RFC 5545 recurrence rule from its
//!   DTSTART, each excluding `[occurrence, occurrence + duration)`.
//!
//! A calendar may name a `base`: an instant is excluded when the calendar or
//! any calendar down its chain of bases excludes it. Chains are resolved once,
//! into an [`Exclusion`], when a trigger's plan is computed; a cycle or a base
//! that does not exist is an error there as it is when a calendar is stored.
//!
//! Pure: no clock, no I/O. Every function takes the instant it is asked about.
//! Besides "is this instant excluded", each rule answers "where does the
//! excluded stretch around it end", so a trigger can jump over a holiday in one
//! step instead of walking each of its fire times.

use chrono::{
    DateTime, Datelike, Duration as ChronoDuration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone,
    Timelike, Utc, Weekday,
};
use chrono_tz::Tz;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use super::cron::CronSchedule;

/// A calendar as stored and as operators give it: its name, zone, base and
/// rule. The stored form is this struct as JSON.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CalendarDef {
    pub name: String,
    /// An IANA zone; the rule's dates and times of day are read in it.
    pub tz: String,
    /// Another calendar whose exclusions this one adds to its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(flatten)]
    pub rule: CalendarRule,
}

/// What a calendar excludes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum CalendarRule {
    /// Whole local days.
    Holiday { dates: Vec<NaiveDate> },
    /// Whole local days of these weekdays.
    Weekly {
        #[serde(with = "weekday_names")]
        days: Vec<Weekday>,
    },
    /// `[start, end)` each local day (crossing midnight when `end <= start`);
    /// with `invert`, every time outside it.
    Daily {
        start: NaiveTime,
        end: NaiveTime,
        #[serde(default)]
        invert: bool,
    },
    /// The seconds this Quartz cron expression matches.
    Cron { cron: String },
    /// The occurrences of an RFC 5545 RRULE (the value of its `RRULE:` line)
    /// from `dtstart` (local), each lasting `duration_ms`.
    Rrule {
        rrule: String,
        dtstart: NaiveDateTime,
        duration_ms: i64,
    },
}

impl CalendarRule {
    /// The rule's kind, as operators write it.
    pub fn kind(&self) -> &'static str {
        match self {
            CalendarRule::Holiday { .. } => "holiday",
            CalendarRule::Weekly { .. } => "weekly",
            CalendarRule::Daily { .. } => "daily",
            CalendarRule::Cron { .. } => "cron",
            CalendarRule::Rrule { .. } => "rrule",
        }
    }
}

mod weekday_names {
    use chrono::Weekday;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(days: &[Weekday], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(days.iter().map(|d| super::weekday_name(*d)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Weekday>, D::Error> {
        let names: Vec<String> = Vec::deserialize(d)?;
        names
            .iter()
            .map(|n| super::parse_weekday(n).map_err(serde::de::Error::custom))
            .collect()
    }
}

fn weekday_name(d: Weekday) -> &'static str {
    match d {
        Weekday::Mon => "MON",
        Weekday::Tue => "TUE",
        Weekday::Wed => "WED",
        Weekday::Thu => "THU",
        Weekday::Fri => "FRI",
        Weekday::Sat => "SAT",
        Weekday::Sun => "SUN",
    }
}

/// A weekday by its English name or three-letter abbreviation, any case.
fn parse_weekday(text: &str) -> Result<Weekday, String> {
    text.trim()
        .parse::<Weekday>()
        .map_err(|_| format!("{text:?} is not a weekday (MON ... SUN)"))
}

/// What is wrong with a calendar, and in which of its fields.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct CalendarError {
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> CalendarError {
    CalendarError {
        field,
        message: message.into(),
    }
}

/// A calendar as operators give it (manifest table, API body, CLI flags): the
/// kind and the fields that kind takes, as text, checked by
/// [`CalendarInput::into_def`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarInput {
    pub kind: String,
    pub tz: Option<String>,
    pub base: Option<String>,
    pub description: Option<String>,
    /// `holiday`: dates, `YYYY-MM-DD`.
    pub dates: Option<Vec<String>>,
    /// `weekly`: weekdays, `MON` ... `SUN`.
    pub days: Option<Vec<String>>,
    /// `daily`: `HH:MM[:SS]-HH:MM[:SS]`.
    pub window: Option<String>,
    /// `daily`: exclude every time outside the window instead.
    pub invert: Option<bool>,
    /// `cron`: a Quartz cron expression.
    pub cron: Option<String>,
    /// `rrule`: an RRULE value, e.g. `FREQ=WEEKLY;BYDAY=MO`.
    pub rrule: Option<String>,
    /// `rrule`: the first occurrence, local `YYYY-MM-DDTHH:MM:SS` [default:
    /// the local midnight starting the day the calendar is stored].
    pub dtstart: Option<String>,
    /// `rrule`: how long each occurrence lasts, e.g. `1h` [default: 1s].
    pub duration: Option<String>,
}

/// The fields each kind takes, for the error naming a field given to the
/// wrong kind.
fn fields_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "holiday" => &["dates"],
        "weekly" => &["days"],
        "daily" => &["window", "invert"],
        "cron" => &["cron"],
        "rrule" => &["rrule", "dtstart", "duration"],
        _ => &[],
    }
}

/// Checks a calendar name: what a job key's part may be, so it reads the same
/// in paths, manifests and tables.
///
/// # Errors
///
/// Why the name is not acceptable.
pub fn check_name(name: &str) -> Result<(), CalendarError> {
    crate::domain::check_part(name)
        .map_err(|reason| bad("name", format!("invalid calendar name {name:?}: {reason}")))
}

/// Checks the calendar names a trigger attaches: each a valid calendar name,
/// none twice. Whether they exist is for the store (or the manifest) to say.
///
/// # Errors
///
/// The first name that is not acceptable.
pub fn check_names(names: &[String]) -> Result<(), String> {
    for (i, name) in names.iter().enumerate() {
        check_name(name).map_err(|e| e.message)?;
        if names[..i].contains(name) {
            return Err(format!("calendar {name:?} is named twice"));
        }
    }
    Ok(())
}

impl CalendarInput {
    /// The checked calendar `name`; `now_ms` fills an `rrule`'s missing DTSTART.
    ///
    /// # Errors
    ///
    /// The first field that is missing, misspelt, or not acceptable.
    pub fn into_def(self, name: &str, now_ms: i64) -> Result<CalendarDef, CalendarError> {
        check_name(name)?;
        let tz_name = self.tz.clone().unwrap_or_else(|| "UTC".into());
        let tz: Tz = tz_name
            .parse()
            .map_err(|_| bad("tz", format!("{tz_name:?} is not an IANA time zone")))?;
        if let Some(base) = &self.base {
            check_name(base).map_err(|e| bad("base", e.message))?;
            if base == name {
                return Err(bad(
                    "base",
                    format!("calendar {name:?} cannot be its own base"),
                ));
            }
        }
        let given: [(&str, bool); 8] = [
            ("dates", self.dates.is_some()),
            ("days", self.days.is_some()),
            ("window", self.window.is_some()),
            ("invert", self.invert.is_some()),
            ("cron", self.cron.is_some()),
            ("rrule", self.rrule.is_some()),
            ("dtstart", self.dtstart.is_some()),
            ("duration", self.duration.is_some()),
        ];
        let allowed = fields_of(&self.kind);
        if allowed.is_empty() {
            return Err(bad(
                "kind",
                format!(
                    "{:?}: expected holiday, weekly, daily, cron or rrule",
                    self.kind
                ),
            ));
        }
        if let Some((field, _)) = given.iter().find(|(f, g)| *g && !allowed.contains(f)) {
            return Err(bad(
                "kind",
                format!(
                    "a {} calendar does not take {field:?} (it takes {})",
                    self.kind,
                    allowed.join(", ")
                ),
            ));
        }
        let rule = match self.kind.as_str() {
            "holiday" => {
                let texts = self.dates.unwrap_or_default();
                if texts.is_empty() {
                    return Err(bad("dates", "a holiday calendar needs at least one date"));
                }
                let mut dates = BTreeSet::new();
                for t in &texts {
                    let d = NaiveDate::parse_from_str(t.trim(), "%Y-%m-%d")
                        .map_err(|_| bad("dates", format!("{t:?} is not a date (YYYY-MM-DD)")))?;
                    dates.insert(d);
                }
                CalendarRule::Holiday {
                    dates: dates.into_iter().collect(),
                }
            }
            "weekly" => {
                let texts = self.days.unwrap_or_default();
                if texts.is_empty() {
                    return Err(bad("days", "a weekly calendar needs at least one weekday"));
                }
                let mut days: Vec<Weekday> = Vec::new();
                for t in &texts {
                    let d = parse_weekday(t).map_err(|m| bad("days", m))?;
                    if !days.contains(&d) {
                        days.push(d);
                    }
                }
                days.sort_by_key(Weekday::num_days_from_monday);
                CalendarRule::Weekly { days }
            }
            "daily" => {
                let window = self.window.ok_or_else(|| {
                    bad(
                        "window",
                        "a daily calendar needs a window, e.g. 22:00-06:00",
                    )
                })?;
                let (start, end) = parse_window(&window).map_err(|m| bad("window", m))?;
                CalendarRule::Daily {
                    start,
                    end,
                    invert: self.invert.unwrap_or(false),
                }
            }
            "cron" => {
                let expr = self
                    .cron
                    .ok_or_else(|| bad("cron", "a cron calendar needs a cron expression"))?;
                CronSchedule::parse(&expr, &tz_name).map_err(|e| bad("cron", e.to_string()))?;
                CalendarRule::Cron { cron: expr }
            }
            _ => {
                let rule = self.rrule.ok_or_else(|| {
                    bad(
                        "rrule",
                        "an rrule calendar needs a rule, e.g. FREQ=WEEKLY;BYDAY=MO",
                    )
                })?;
                let rule = rule.trim();
                let rule = rule.strip_prefix("RRULE:").unwrap_or(rule).to_string();
                let dtstart = match &self.dtstart {
                    Some(t) => parse_local(t).map_err(|m| bad("dtstart", m))?,
                    None => {
                        let now = instant(now_ms).with_timezone(&tz);
                        now.date_naive().and_time(NaiveTime::MIN)
                    }
                };
                let duration_ms = match &self.duration {
                    None => 1000,
                    Some(t) => {
                        let d = humantime::parse_duration(t.trim()).map_err(|e| {
                            bad("duration", format!("{t:?}: {e} (e.g. 30m, 1h, 1d)"))
                        })?;
                        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
                        if !(1..=MAX_OCCURRENCE_MS).contains(&ms) {
                            return Err(bad(
                                "duration",
                                format!("{t:?}: expected more than 0 and at most 366 days"),
                            ));
                        }
                        ms
                    }
                };
                RrulePlan::compile(&rule, dtstart, tz, duration_ms).map_err(|m| bad("rrule", m))?;
                CalendarRule::Rrule {
                    rrule: rule,
                    dtstart,
                    duration_ms,
                }
            }
        };
        Ok(CalendarDef {
            name: name.to_string(),
            tz: tz_name,
            base: self.base,
            description: self.description,
            rule,
        })
    }
}

/// The longest occurrence of an `rrule` calendar.
const MAX_OCCURRENCE_MS: i64 = 366 * 86_400_000;

fn parse_time(text: &str) -> Result<NaiveTime, String> {
    let t = text.trim();
    NaiveTime::parse_from_str(t, "%H:%M:%S")
        .or_else(|_| NaiveTime::parse_from_str(t, "%H:%M"))
        .map_err(|_| format!("{text:?} is not a time of day (HH:MM or HH:MM:SS)"))
}

/// `HH:MM[:SS]-HH:MM[:SS]`; the two ends differ.
fn parse_window(text: &str) -> Result<(NaiveTime, NaiveTime), String> {
    let (a, b) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?} is not a window (e.g. 22:00-06:00)"))?;
    let (start, end) = (parse_time(a)?, parse_time(b)?);
    if start == end {
        return Err(format!("{text:?} is empty: its start and end are the same"));
    }
    Ok((start, end))
}

fn parse_local(text: &str) -> Result<NaiveDateTime, String> {
    let t = text.trim();
    NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M"))
        .or_else(|_| NaiveDate::parse_from_str(t, "%Y-%m-%d").map(|d| d.and_time(NaiveTime::MIN)))
        .map_err(|_| format!("{text:?} is not a local date-time (YYYY-MM-DDTHH:MM:SS)"))
}

fn instant(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// The instant a local wall time names: the earlier of two in a repeated
/// hour; for a time inside a spring-forward gap, the first instant after the
/// gap (gaps start and end on whole minutes).
fn local_ms(tz: Tz, local: NaiveDateTime) -> i64 {
    if let Some(at) = tz.from_local_datetime(&local).earliest() {
        return at.timestamp_millis();
    }
    let mut t = local
        .with_second(0)
        .unwrap_or(local)
        .with_nanosecond(0)
        .unwrap_or(local);
    // A gap is at most a few hours: a minute at a time finds its end.
    for _ in 0..(26 * 60) {
        t += ChronoDuration::minutes(1);
        if let Some(at) = tz.from_local_datetime(&t).earliest() {
            return at.timestamp_millis();
        }
    }
    Utc.from_utc_datetime(&local).timestamp_millis()
}

/// The first instant of the local day after the one `ms` falls on.
fn next_local_midnight(tz: Tz, ms: i64) -> i64 {
    let date = instant(ms).with_timezone(&tz).date_naive();
    let next = date.succ_opt().unwrap_or(date);
    local_ms(tz, next.and_time(NaiveTime::MIN))
}

/// Most occurrences of a rule walked to answer one question: a rule is walked
/// from its DTSTART, so a rule far more frequent than daily with an old
/// DTSTART stops excluding once it has this many occurrences behind it.
const MAX_RRULE_WALK: usize = 1_000_000;

/// The UTC offset of `tz` at `ms`, in seconds.
fn offset_at(tz: Tz, ms: i64) -> i32 {
    use chrono::Offset;
    instant(ms)
        .with_timezone(&tz)
        .offset()
        .fix()
        .local_minus_utc()
}

/// `end`, or the instant the zone's offset changes if that comes first:
/// across a change the wall clock jumps (back into a day or a window already
/// left, or forward past one), so a stretch computed on the wall clock holds
/// only up to it.
fn within_offset(tz: Tz, ms: i64, end: i64) -> i64 {
    let before = offset_at(tz, ms);
    if end <= ms || offset_at(tz, end) == before {
        return end;
    }
    // The first millisecond with another offset: one change at most, as a
    // stretch lasts about a day and changes are months apart.
    let (mut lo, mut hi) = (ms, end);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if offset_at(tz, mid) == before {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// A recurrence rule ready to be asked about.
struct RrulePlan {
    set: rrule::RRuleSet,
    duration_ms: i64,
}

impl RrulePlan {
    fn compile(
        rule: &str,
        dtstart: NaiveDateTime,
        tz: Tz,
        duration_ms: i64,
    ) -> Result<RrulePlan, String> {
        let zone = rrule::Tz::Tz(tz);
        let start = zone
            .from_local_datetime(&dtstart)
            .earliest()
            .ok_or_else(|| format!("DTSTART {dtstart} does not exist in {}", tz.name()))?;
        let parsed: rrule::RRule<rrule::Unvalidated> =
            rule.parse().map_err(|e: rrule::RRuleError| e.to_string())?;
        let set = parsed.build(start).map_err(|e| e.to_string())?;
        Ok(RrulePlan { set, duration_ms })
    }

    /// The end of the latest occurrence covering `ms`, if one does.
    fn covering_end(&self, ms: i64) -> Option<i64> {
        let mut end = None;
        for (walked, occurrence) in (&self.set).into_iter().enumerate() {
            let start = occurrence.timestamp_millis();
            if start > ms || walked >= MAX_RRULE_WALK {
                break;
            }
            let stop = start.saturating_add(self.duration_ms);
            if stop > ms {
                end = Some(end.map_or(stop, |e: i64| e.max(stop)));
            }
        }
        end
    }
}

/// A calendar rule compiled for its zone.
enum Compiled {
    Holiday(HashSet<NaiveDate>),
    Weekly(Vec<Weekday>),
    Daily {
        start: NaiveTime,
        end: NaiveTime,
        invert: bool,
    },
    Cron(Box<CronSchedule>),
    Rrule(Box<RrulePlan>),
}

/// One calendar, compiled.
struct Rule {
    name: String,
    tz: Tz,
    compiled: Compiled,
}

/// Most seconds a `cron` calendar's excluded stretch is walked in one go: past
/// that the trigger asks again, within its own budget (see [`Exclusion`]).
const CRON_STRETCH_SECONDS: i64 = 600;

impl Rule {
    fn compile(def: &CalendarDef) -> Result<Rule, CalendarError> {
        let tz: Tz = def
            .tz
            .parse()
            .map_err(|_| bad("tz", format!("{:?} is not an IANA time zone", def.tz)))?;
        let compiled = match &def.rule {
            CalendarRule::Holiday { dates } => Compiled::Holiday(dates.iter().copied().collect()),
            CalendarRule::Weekly { days } => Compiled::Weekly(days.clone()),
            CalendarRule::Daily { start, end, invert } => Compiled::Daily {
                start: *start,
                end: *end,
                invert: *invert,
            },
            CalendarRule::Cron { cron } => Compiled::Cron(Box::new(
                CronSchedule::parse(cron, &def.tz).map_err(|e| bad("cron", e.to_string()))?,
            )),
            CalendarRule::Rrule {
                rrule,
                dtstart,
                duration_ms,
            } => Compiled::Rrule(Box::new(
                RrulePlan::compile(rrule, *dtstart, tz, *duration_ms)
                    .map_err(|m| bad("rrule", m))?,
            )),
        };
        Ok(Rule {
            name: def.name.clone(),
            tz,
            compiled,
        })
    }

    /// Whether `ms` is excluded, and if so the first instant after it that
    /// this rule may include (everything before it is excluded).
    fn stretch(&self, ms: i64) -> Option<i64> {
        let local = instant(ms).with_timezone(&self.tz);
        let wall = |end: i64| within_offset(self.tz, ms, end);
        match &self.compiled {
            Compiled::Holiday(dates) => dates
                .contains(&local.date_naive())
                .then(|| wall(next_local_midnight(self.tz, ms))),
            Compiled::Weekly(days) => days
                .contains(&local.weekday())
                .then(|| wall(next_local_midnight(self.tz, ms))),
            Compiled::Daily { start, end, invert } => {
                let tod = local.time();
                let date = local.date_naive();
                let at = |d: NaiveDate, t: NaiveTime| local_ms(self.tz, d.and_time(t));
                let tomorrow = date.succ_opt().unwrap_or(date);
                let in_window = if start < end {
                    *start <= tod && tod < *end
                } else {
                    tod >= *start || tod < *end
                };
                let end_at = match (in_window, *invert) {
                    (true, false) if start < end || tod < *end => at(date, *end),
                    (true, false) => at(tomorrow, *end),
                    (false, true) if tod < *start => at(date, *start),
                    (false, true) => at(tomorrow, *start),
                    _ => return None,
                };
                Some(wall(end_at))
            }
            Compiled::Cron(c) => {
                let second = ms.div_euclid(1000) * 1000;
                let matches = |s: i64| {
                    c.next_after(instant(s - 1000))
                        .is_some_and(|t| t.timestamp_millis() == s)
                };
                if !matches(second) {
                    return None;
                }
                let mut end = second + 1000;
                while end - second < CRON_STRETCH_SECONDS * 1000 && matches(end) {
                    end += 1000;
                }
                Some(end)
            }
            Compiled::Rrule(r) => r.covering_end(ms),
        }
    }
}

/// The calendars a trigger names, each with its chain of bases, compiled: what
/// the trigger's plan asks about each fire time.
pub struct Exclusion {
    rules: Vec<Rule>,
}

impl std::fmt::Debug for Exclusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.rules.iter().map(|r| &r.name))
            .finish()
    }
}

impl Exclusion {
    /// The calendar that excludes `ms` (the attached one or one of its bases,
    /// whichever says so first), or `None` when `ms` is included.
    pub fn excluded_by(&self, ms: i64) -> Option<&str> {
        self.rules
            .iter()
            .find(|r| r.stretch(ms).is_some())
            .map(|r| r.name.as_str())
    }

    /// When `ms` is excluded, the first instant after it that may be included:
    /// the end of the longest excluded stretch around `ms` of the calendars
    /// excluding it. `None` when `ms` is included.
    pub fn skip_to(&self, ms: i64) -> Option<i64> {
        self.rules.iter().filter_map(|r| r.stretch(ms)).max()
    }

    /// The names of the calendars consulted, bases included.
    pub fn names(&self) -> Vec<&str> {
        self.rules.iter().map(|r| r.name.as_str()).collect()
    }
}

/// Every stored calendar by name: where triggers' calendar names are resolved.
#[derive(Clone, Debug, Default)]
pub struct CalendarSet {
    defs: BTreeMap<String, CalendarDef>,
}

impl CalendarSet {
    pub fn new(defs: impl IntoIterator<Item = CalendarDef>) -> CalendarSet {
        CalendarSet {
            defs: defs.into_iter().map(|d| (d.name.clone(), d)).collect(),
        }
    }

    /// The definitions, by name.
    pub fn into_defs(self) -> impl Iterator<Item = CalendarDef> {
        self.defs.into_values()
    }

    pub fn get(&self, name: &str) -> Option<&CalendarDef> {
        self.defs.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    /// `name` and its bases, in order.
    ///
    /// # Errors
    ///
    /// A calendar in the chain that does not exist, or a cycle.
    pub fn chain(&self, name: &str) -> Result<Vec<&CalendarDef>, CalendarError> {
        let mut out: Vec<&CalendarDef> = Vec::new();
        let mut next = Some(name);
        while let Some(n) = next {
            if out.iter().any(|d| d.name == n) {
                let path: Vec<&str> = out.iter().map(|d| d.name.as_str()).chain([n]).collect();
                return Err(bad(
                    "base",
                    format!("calendar bases form a cycle: {}", path.join(" -> ")),
                ));
            }
            let def = self.defs.get(n).ok_or_else(|| match out.last() {
                Some(child) => bad(
                    "base",
                    format!(
                        "calendar {:?} names base {n:?}, which does not exist",
                        child.name
                    ),
                ),
                None => bad("calendar", format!("no calendar {n:?}")),
            })?;
            out.push(def);
            next = def.base.as_deref();
        }
        Ok(out)
    }

    /// The compiled calendars `names` (and their bases) for one trigger.
    ///
    /// # Errors
    ///
    /// A name or base that does not exist, a cycle, or a stored rule that no
    /// longer compiles.
    pub fn exclusion(&self, names: &[String]) -> Result<Arc<Exclusion>, CalendarError> {
        let mut rules: Vec<Rule> = Vec::new();
        for name in names {
            for def in self.chain(name)? {
                if !rules.iter().any(|r| r.name == def.name) {
                    rules.push(Rule::compile(def)?);
                }
            }
        }
        Ok(Arc::new(Exclusion { rules }))
    }

    /// The calendars whose chain includes `name` (itself included): those a
    /// change of `name` changes.
    pub fn dependents(&self, name: &str) -> BTreeSet<String> {
        self.defs
            .keys()
            .filter(|n| {
                self.chain(n)
                    .is_ok_and(|chain| chain.iter().any(|d| d.name == name))
            })
            .cloned()
            .chain([name.to_string()])
            .collect()
    }

    /// The calendars naming `name` as their base.
    pub fn based_on(&self, name: &str) -> Vec<String> {
        self.defs
            .values()
            .filter(|d| d.base.as_deref() == Some(name))
            .map(|d| d.name.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests;
