//! Quartz-compatible cron schedules with IANA time zones.
//!
//! This module owns two things for the scheduler:
//!
//! * **Parsing** cron expressions in the syntax of Quartz 2.3.2's
//!   `org.quartz.CronExpression` (seconds, minutes, hours, day-of-month, month,
//!   day-of-week, optional year; `?`, `L`, `L-n`, `LW`, `nW`, `dL`, `d#n`,
//!   names, ranges, wrap-around ranges, steps and lists). Days of the week are
//!   numbered the Quartz way, 1 = SUN ... 7 = SAT.
//! * **Computing fire times** exactly as Quartz does, so that users who bring
//!   expressions from Quartz or Metabase see the same instants.
//!
//! Why not the `cron` or `croner` crates: neither gives Quartz's answers (both
//! fire twice in the autumn repeated hour, `cron` rejects `L`, `W` and `#`,
//! `croner` numbers weekdays from 0 = SUN).
//!
//! Quartz walks the fields of a lenient `java.util.GregorianCalendar` set to the
//! trigger's zone, and its daylight-saving behaviour falls out of how that
//! calendar turns a wall-clock reading into an instant. To give the same fire
//! times this module replays the same field-by-field walk on a small model of
//! that calendar. Two consequences worth knowing:
//!
//! * In the autumn repeated hour a wall time is read as the *later* (standard
//!   time) occurrence, so each local time fires once, at its second occurrence.
//! * A wall time inside the spring-forward gap does not exist and does not fire.
//!   Quartz loses it silently; this module reports it as a
//!   [`CronEvent::DstGap`] so the scheduler can record a skipped run.
//!
//! Where Quartz silently ignores garbage (trailing characters after a value,
//! more than seven fields, a step after a day or month name, `0/0`, empty list
//! items, `?` inside a list, `L`/`W`/`#` mixed into a list), this module rejects
//! the expression instead, so a typo is reported rather than reinterpreted.
//! Years are limited to 1970-2099 and the search for the next fire time stops
//! at the end of 2099.

use std::collections::VecDeque;
use std::fmt;

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use thiserror::Error;

/// First year a cron expression can name.
pub const MIN_YEAR: i32 = 1970;
/// Last year a cron expression can name; fire-time searches end with it.
pub const MAX_YEAR: i32 = 2099;

const SECONDS_PER_DAY: i64 = 86_400;
/// Upper bound on steps of one Quartz walk. A real walk needs at most a few
/// thousand (a few per month until 2099); the cap only guarantees termination
/// where Quartz itself would spin forever, e.g. `31W` around the day that
/// Pacific/Apia skipped in 2011.
const MAX_WALK_STEPS: usize = 50_000;
/// Upper bound on wall-clock candidates examined while looking for gap times
/// between two fires. A 24-hour gap of an every-second schedule needs 86,400.
const MAX_GAP_CANDIDATES: usize = 200_000;
/// Searches start no earlier than this (1969-12-01T00:00:00Z): nothing can fire
/// before local 1970-01-01, and it keeps all arithmetic in a small range.
const EARLIEST_START: i64 = -2_678_400;
/// After this instant (2100-01-02T00:00:00Z) nothing can fire any more.
const LATEST_START: i64 = 4_102_531_200;

/// One of the seven fields of a cron expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CronField {
    /// Seconds, 0-59.
    Seconds,
    /// Minutes, 0-59.
    Minutes,
    /// Hours, 0-23.
    Hours,
    /// Day of the month, 1-31, or `?`, `L`, `L-n`, `LW`, `nW`.
    DayOfMonth,
    /// Month, 1-12 or JAN-DEC.
    Month,
    /// Day of the week, 1-7 (1 = SUN) or SUN-SAT, or `?`, `L`, `dL`, `d#n`.
    DayOfWeek,
    /// Optional year, 1970-2099.
    Year,
}

impl CronField {
    const ALL: [CronField; 7] = [
        CronField::Seconds,
        CronField::Minutes,
        CronField::Hours,
        CronField::DayOfMonth,
        CronField::Month,
        CronField::DayOfWeek,
        CronField::Year,
    ];

    /// The name used in error messages, e.g. `day-of-week`.
    pub fn name(self) -> &'static str {
        match self {
            CronField::Seconds => "seconds",
            CronField::Minutes => "minutes",
            CronField::Hours => "hours",
            CronField::DayOfMonth => "day-of-month",
            CronField::Month => "month",
            CronField::DayOfWeek => "day-of-week",
            CronField::Year => "year",
        }
    }

    fn min(self) -> i64 {
        match self {
            CronField::Seconds | CronField::Minutes | CronField::Hours => 0,
            CronField::DayOfMonth | CronField::Month | CronField::DayOfWeek => 1,
            CronField::Year => i64::from(MIN_YEAR),
        }
    }

    fn max(self) -> i64 {
        match self {
            CronField::Seconds | CronField::Minutes => 59,
            CronField::Hours => 23,
            CronField::DayOfMonth => 31,
            CronField::Month => 12,
            CronField::DayOfWeek => 7,
            CronField::Year => i64::from(MAX_YEAR),
        }
    }

    /// Largest step Quartz accepts after `/` (it rejects e.g. `*/60` in seconds).
    fn max_step(self) -> i64 {
        match self {
            CronField::Year => self.max() - self.min(),
            _ => self.max(),
        }
    }

    fn names(self) -> &'static [&'static str] {
        const MONTHS: [&str; 12] = [
            "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
        ];
        const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
        match self {
            CronField::Month => &MONTHS,
            CronField::DayOfWeek => &DAYS,
            _ => &[],
        }
    }
}

impl fmt::Display for CronField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a cron expression or time zone was refused.
///
/// Every message about an expression quotes the whole expression; messages
/// about one field also name the field and quote the offending token.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CronError {
    /// The expression does not have 6 or 7 whitespace-separated fields.
    #[error(
        "invalid cron expression {expression:?}: expected 6 or 7 fields \
         (seconds minutes hours day-of-month month day-of-week [year]), found {found}"
    )]
    FieldCount {
        /// The expression as given.
        expression: String,
        /// How many fields it has.
        found: usize,
    },
    /// One token of one field is malformed or out of range.
    #[error("invalid cron expression {expression:?}: {field} field, token {token:?}: {reason}")]
    InvalidField {
        /// The expression as given.
        expression: String,
        /// The field holding the bad token.
        field: CronField,
        /// The bad token (one list item, or the whole field).
        token: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Day-of-month and day-of-week are not exactly one `?` and one restriction.
    #[error("invalid cron expression {expression:?}: {reason}")]
    DayFieldConflict {
        /// The expression as given.
        expression: String,
        /// What is wrong with the pair.
        reason: &'static str,
    },
    /// The time zone is not a known IANA name.
    #[error("unknown time zone {name:?}")]
    UnknownTimeZone {
        /// The name as given.
        name: String,
    },
}

/// Something that happens on a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CronEvent {
    /// The schedule fires at this instant.
    Fire(DateTime<Utc>),
    /// The expression names `local`, a wall-clock time that does not exist in
    /// the schedule's zone because the clock jumped forward over it (spring
    /// forward). Quartz does not fire for it; the scheduler should record a
    /// skipped run.
    DstGap {
        /// The local wall-clock time that was skipped.
        local: NaiveDateTime,
        /// The instant at which the wall clock jumped over `local`.
        at: DateTime<Utc>,
    },
}

impl CronEvent {
    /// The instant of the event: the fire time, or the instant of the jump.
    pub fn at(&self) -> DateTime<Utc> {
        match *self {
            CronEvent::Fire(at) | CronEvent::DstGap { at, .. } => at,
        }
    }
}

/// A parsed Quartz cron expression bound to an IANA time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    expression: String,
    tz: Tz,
    spec: Spec,
}

impl CronSchedule {
    /// Parses a Quartz cron expression and an IANA time-zone name.
    ///
    /// Fields are separated by ASCII whitespace; names and letters are
    /// case-insensitive.
    ///
    /// # Errors
    ///
    /// [`CronError::UnknownTimeZone`] if `tz` is not an IANA zone name;
    /// [`CronError::FieldCount`], [`CronError::InvalidField`] or
    /// [`CronError::DayFieldConflict`] if Quartz would reject the expression
    /// (or, see the module docs, would silently reinterpret it).
    pub fn parse(expr: &str, tz: &str) -> Result<Self, CronError> {
        let zone: Tz = tz.parse().map_err(|_| CronError::UnknownTimeZone {
            name: tz.to_owned(),
        })?;
        let spec = Spec::parse(expr)?;
        Ok(CronSchedule {
            expression: expr.to_owned(),
            tz: zone,
            spec,
        })
    }

    /// The expression as it was given to [`CronSchedule::parse`].
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone fire times are computed in.
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The first fire time strictly after `after`, or `None` if the schedule
    /// never fires again (before the end of 2099).
    ///
    /// Sub-second parts of `after` are ignored. Wall times inside a
    /// spring-forward gap are skipped; use [`CronSchedule::events_after`] to
    /// see them.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = clamp_start(after.timestamp())?;
        self.spec
            .next_fire(self.tz, start)
            .and_then(|secs| DateTime::from_timestamp(secs, 0))
    }

    /// The first event strictly after `after`: a fire, or a wall time skipped
    /// by a spring-forward gap before the next fire.
    ///
    /// Several events can share an instant (all times of one gap share the
    /// jump instant, and a fire can fall exactly on it), so to walk successive
    /// events use [`CronSchedule::events_after`] rather than feeding a
    /// [`CronEvent::DstGap`]'s instant back into this method.
    pub fn next_event_after(&self, after: DateTime<Utc>) -> Option<CronEvent> {
        self.events_after(after).next()
    }

    /// All events strictly after `after`, in order: for each fire, first the
    /// gap times skipped since the previous fire (in wall-clock order), then
    /// the fire itself. Ends when the schedule never fires again.
    pub fn events_after(&self, after: DateTime<Utc>) -> CronEvents<'_> {
        CronEvents {
            schedule: self,
            cursor: clamp_start(after.timestamp()),
            pending: VecDeque::new(),
        }
    }

    /// Gap events for wall times after `from` (an instant) and before the wall
    /// time of `until` (an instant, or the end of the search range).
    fn gap_events_between(&self, from: i64, until: Option<i64>, out: &mut VecDeque<CronEvent>) {
        let from_wall = from + offset_at(self.tz, from);
        let until_wall = until.map(|u| u + offset_at(self.tz, u));
        // Wall times are found by replaying the Quartz walk in UTC, where no
        // wall time is missing; any hit the zone cannot represent is a gap time.
        let mut candidate = self.spec.next_fire(Tz::UTC, from_wall);
        for _ in 0..MAX_GAP_CANDIDATES {
            let Some(wall) = candidate else { return };
            if until_wall.is_some_and(|limit| wall >= limit) {
                return;
            }
            if let Some(jump) = gap_jump(self.tz, wall)
                && let (Some(local), Some(at)) =
                    (naive_from_secs(wall), DateTime::from_timestamp(jump, 0))
            {
                out.push_back(CronEvent::DstGap { local, at });
            }
            candidate = self.spec.next_fire(Tz::UTC, wall);
        }
    }
}

/// Iterator over the events of a schedule; see [`CronSchedule::events_after`].
#[derive(Debug, Clone)]
pub struct CronEvents<'a> {
    schedule: &'a CronSchedule,
    /// Instant after which the next fire is searched; `None` once exhausted.
    cursor: Option<i64>,
    pending: VecDeque<CronEvent>,
}

impl Iterator for CronEvents<'_> {
    type Item = CronEvent;

    fn next(&mut self) -> Option<CronEvent> {
        if let Some(event) = self.pending.pop_front() {
            return Some(event);
        }
        let from = self.cursor?;
        let fire = self.schedule.spec.next_fire(self.schedule.tz, from);
        self.schedule
            .gap_events_between(from, fire, &mut self.pending);
        let fire_at = fire.and_then(|secs| DateTime::from_timestamp(secs, 0));
        match fire_at {
            Some(at) => {
                self.pending.push_back(CronEvent::Fire(at));
                self.cursor = Some(at.timestamp());
            }
            None => self.cursor = None,
        }
        self.pending.pop_front()
    }
}

/// Clamps a search start into the range where fires are possible, or `None`
/// if nothing can fire after it.
fn clamp_start(secs: i64) -> Option<i64> {
    (secs <= LATEST_START).then_some(secs.max(EARLIEST_START))
}

// ---------------------------------------------------------------------------
// Parsed representation
// ---------------------------------------------------------------------------

/// A set of small integers (field values; years stored relative to `base`).
#[derive(Clone, Copy, PartialEq, Eq)]
struct ValueSet {
    base: i64,
    bits: [u64; 4],
}

impl ValueSet {
    const CAPACITY: i64 = 256;

    fn new(base: i64) -> Self {
        ValueSet { base, bits: [0; 4] }
    }

    fn insert(&mut self, value: i64) {
        let index = value - self.base;
        if (0..Self::CAPACITY).contains(&index) {
            self.bits[(index / 64) as usize] |= 1 << (index % 64);
        }
    }

    /// Smallest member `>= value` (Java's `tailSet(value).first()`).
    fn first_at_or_after(&self, value: i64) -> Option<i64> {
        let mut index = (value - self.base).max(0);
        while index < Self::CAPACITY {
            let word = (index / 64) as usize;
            let masked = self.bits[word] >> (index % 64);
            if masked != 0 {
                return Some(self.base + index + i64::from(masked.trailing_zeros()));
            }
            index = (index / 64 + 1) * 64;
        }
        None
    }

    fn first(&self) -> Option<i64> {
        self.first_at_or_after(self.base)
    }

    fn is_empty(&self) -> bool {
        self.bits.iter().all(|w| *w == 0)
    }

    fn values(&self) -> impl Iterator<Item = i64> + '_ {
        let mut next = self.first();
        std::iter::from_fn(move || {
            let current = next?;
            next = self.first_at_or_after(current + 1);
            Some(current)
        })
    }
}

impl fmt::Debug for ValueSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.values()).finish()
    }
}

/// How the day of the month is chosen when day-of-week is `?`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DayOfMonthRule {
    /// Plain days, e.g. `1,15` or `1/5`.
    Days(ValueSet),
    /// `L` / `L-n` (offset days before the last day), with `W` for the
    /// nearest weekday to that day.
    Last { offset: i64, weekday: bool },
    /// `nW`: the weekday nearest to day `n`, not leaving the month.
    NearestWeekday(i64),
}

/// How the day of the month is chosen when day-of-month is `?`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DayOfWeekRule {
    /// Plain weekdays, 1 = SUN ... 7 = SAT.
    Days(ValueSet),
    /// `dL`: the last weekday `d` of the month.
    Last(i64),
    /// `d#n`: the `n`-th weekday `d` of the month.
    Nth { weekday: i64, nth: i64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DayRule {
    Month(DayOfMonthRule),
    Week(DayOfWeekRule),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Spec {
    seconds: ValueSet,
    minutes: ValueSet,
    hours: ValueSet,
    months: ValueSet,
    years: ValueSet,
    days: DayRule,
}

/// A problem with one token, before it is attached to the expression.
struct TokenError {
    token: String,
    reason: String,
}

impl TokenError {
    fn new(token: &str, reason: impl Into<String>) -> Self {
        TokenError {
            token: token.to_owned(),
            reason: reason.into(),
        }
    }
}

/// What a day field holds before the two day fields are reconciled.
enum DayField<R> {
    NoSpec,
    Rule(R),
}

impl Spec {
    fn parse(expr: &str) -> Result<Spec, CronError> {
        let tokens: Vec<&str> = expr.split_ascii_whitespace().collect();
        if !(6..=7).contains(&tokens.len()) {
            return Err(CronError::FieldCount {
                expression: expr.to_owned(),
                found: tokens.len(),
            });
        }
        let in_field = |field: CronField| {
            move |e: TokenError| CronError::InvalidField {
                expression: expr.to_owned(),
                field,
                token: e.token,
                reason: e.reason,
            }
        };
        // Quartz upper-cases the whole expression before parsing.
        let upper: Vec<String> = tokens.iter().map(|t| t.to_ascii_uppercase()).collect();
        let field_text = |field: CronField| {
            let index = CronField::ALL.iter().position(|f| *f == field).unwrap_or(0);
            upper.get(index).map_or("*", String::as_str)
        };

        let plain =
            |field: CronField| parse_list(field, field_text(field)).map_err(in_field(field));
        let seconds = plain(CronField::Seconds)?;
        let minutes = plain(CronField::Minutes)?;
        let hours = plain(CronField::Hours)?;
        let dom = parse_day_of_month(field_text(CronField::DayOfMonth))
            .map_err(in_field(CronField::DayOfMonth))?;
        let months = plain(CronField::Month)?;
        let dow = parse_day_of_week(field_text(CronField::DayOfWeek))
            .map_err(in_field(CronField::DayOfWeek))?;
        let years = plain(CronField::Year)?;

        let conflict = |reason| CronError::DayFieldConflict {
            expression: expr.to_owned(),
            reason,
        };
        let days = match (dom, dow) {
            (DayField::Rule(rule), DayField::NoSpec) => DayRule::Month(rule),
            (DayField::NoSpec, DayField::Rule(rule)) => DayRule::Week(rule),
            (DayField::Rule(_), DayField::Rule(_)) => {
                return Err(conflict(
                    "day-of-month and day-of-week are both set; one of them must be '?'",
                ));
            }
            (DayField::NoSpec, DayField::NoSpec) => {
                return Err(conflict(
                    "day-of-month and day-of-week are both '?'; only one of them may be '?'",
                ));
            }
        };
        Ok(Spec {
            seconds,
            minutes,
            hours,
            months,
            years,
            days,
        })
    }
}

// ---------------------------------------------------------------------------
// The Quartz walk
// ---------------------------------------------------------------------------

impl Spec {
    /// Replays Quartz 2.3.2's `CronExpression.getTimeAfter` in zone `tz`:
    /// returns the first fire instant (Unix seconds) strictly after `after`.
    ///
    /// The structure deliberately mirrors Quartz's loop (including its
    /// `t = -1` sentinels and the places where it re-reads fields from the
    /// calendar), because its daylight-saving behaviour and its handling of
    /// `W`, `L` and `#` depend on exactly when the calendar is normalised.
    fn next_fire(&self, tz: Tz, after: i64) -> Option<i64> {
        let after_time = after + 1;
        let mut cl = QuartzCalendar::at_instant(tz, after_time);

        for _ in 0..MAX_WALK_STEPS {
            if cl.year() > i64::from(MAX_YEAR) {
                return None;
            }

            // Second.
            let mut sec = cl.second();
            let mut min = cl.minute();
            match self.seconds.first_at_or_after(sec) {
                Some(s) => sec = s,
                None => {
                    sec = self.seconds.first()?;
                    min += 1;
                    cl.set_minute(min);
                }
            }
            cl.set_second(sec);

            // Minute.
            let mut min = cl.minute();
            let mut hr = cl.hour();
            let mut t = -1;
            match self.minutes.first_at_or_after(min) {
                Some(m) => {
                    t = min;
                    min = m;
                }
                None => {
                    min = self.minutes.first()?;
                    hr += 1;
                }
            }
            if min != t {
                cl.set_second(0);
                cl.set_minute(min);
                cl.set_hour_quartz(hr);
                continue;
            }
            cl.set_minute(min);

            // Hour.
            let mut hr = cl.hour();
            let mut day = cl.day();
            let mut t = -1;
            match self.hours.first_at_or_after(hr) {
                Some(h) => {
                    t = hr;
                    hr = h;
                }
                None => {
                    hr = self.hours.first()?;
                    day += 1;
                }
            }
            if hr != t {
                cl.set_second(0);
                cl.set_minute(0);
                cl.set_day(day);
                cl.set_hour_quartz(hr);
                continue;
            }
            cl.set_hour(hr);

            // Day.
            let mut day = cl.day();
            let mon = cl.month0() + 1;
            let step = match self.days {
                DayRule::Month(rule) => {
                    day_of_month_step(rule, &mut cl, after_time, (sec, min, hr), day, mon)?
                }
                DayRule::Week(rule) => day_of_week_step(rule, &mut cl, day, mon)?,
            };
            match step {
                DayStep::Restart => continue,
                DayStep::Keep(d) => day = d,
            }
            cl.set_day(day);

            // Month.
            let mut mon = cl.month0() + 1;
            let mut year = cl.year();
            let mut t = -1;
            if year > i64::from(MAX_YEAR) {
                return None;
            }
            match self.months.first_at_or_after(mon) {
                Some(m) => {
                    t = mon;
                    mon = m;
                }
                None => {
                    mon = self.months.first()?;
                    year += 1;
                }
            }
            if mon != t {
                cl.reset_time_of_day();
                cl.set_day(1);
                cl.set_month0(mon - 1);
                cl.set_year(year);
                continue;
            }
            cl.set_month0(mon - 1);

            // Year.
            let year = cl.year();
            let found = self.years.first_at_or_after(year)?;
            if found != year {
                cl.reset_time_of_day();
                cl.set_day(1);
                cl.set_month0(0);
                cl.set_year(found);
                continue;
            }
            cl.set_year(year);

            return Some(cl.instant());
        }
        None
    }
}

/// Quartz's stand-in for "no month": never equal to a real month number.
const MONTH_SENTINEL: i64 = 3333;

/// Outcome of the day part of one walk step.
enum DayStep {
    /// The calendar was moved; start the step over.
    Restart,
    /// The day stands; carry on with the month.
    Keep(i64),
}

/// The day-of-month branch of Quartz's walk. `time` is the (second, minute,
/// hour) chosen so far; `day` and `mon` (1-based) were read from `cl`.
fn day_of_month_step(
    rule: DayOfMonthRule,
    cl: &mut QuartzCalendar,
    after_time: i64,
    time: (i64, i64, i64),
    mut day: i64,
    mut mon: i64,
) -> Option<DayStep> {
    let mut tmon = mon;
    let t;
    match rule {
        DayOfMonthRule::Last {
            offset,
            weekday: false,
        } => {
            t = day;
            day = last_day_of_month(cl.year(), mon) - offset;
            if t > day {
                mon += 1;
                if mon > 12 {
                    mon = 1;
                    // Quartz forces the "moved" test below to succeed here.
                    tmon = MONTH_SENTINEL;
                    cl.add_year(1);
                }
                day = 1;
            }
        }
        DayOfMonthRule::Last {
            offset,
            weekday: true,
        } => {
            t = day;
            let year = cl.year();
            let target = last_day_of_month(year, mon) - offset;
            day = nearest_weekday_probe(cl.tz, year, mon, target);
            if probe_is_before(cl.tz, year, mon, day, time, after_time) {
                day = 1;
                mon += 1;
            }
        }
        DayOfMonthRule::NearestWeekday(target) => {
            t = day;
            let year = cl.year();
            day = nearest_weekday_probe(cl.tz, year, mon, target);
            if probe_is_before(cl.tz, year, mon, day, time, after_time) {
                day = target;
                mon += 1;
            }
        }
        DayOfMonthRule::Days(set) => match set.first_at_or_after(day) {
            Some(found) => {
                t = day;
                day = found;
                // Do not over-run a short month such as February.
                if day > last_day_of_month(cl.year(), mon) {
                    day = set.first()?;
                    mon += 1;
                }
            }
            None => {
                t = -1;
                day = set.first()?;
                mon += 1;
            }
        },
    }
    if day != t || mon != tmon {
        cl.reset_time_of_day();
        cl.set_day(day);
        cl.set_month0(mon - 1);
        return Some(DayStep::Restart);
    }
    Some(DayStep::Keep(day))
}

/// Quartz's `W` adjustment: the weekday nearest to day `target` of the month,
/// judged by a fresh calendar at local midnight of that day.
fn nearest_weekday_probe(tz: Tz, year: i64, mon: i64, target: i64) -> i64 {
    let mut probe = QuartzCalendar::from_fields(tz, year, mon - 1, target, 0, 0, 0);
    let last = last_day_of_month(year, mon);
    let dow = probe.weekday();
    const SUNDAY: i64 = 1;
    const SATURDAY: i64 = 7;
    match dow {
        SATURDAY if target == 1 => target + 2,
        SATURDAY => target - 1,
        SUNDAY if target == last => target - 2,
        SUNDAY => target + 1,
        _ => target,
    }
}

/// Whether the candidate `day` at the chosen time of day lies before
/// `after_time`, computed the way Quartz does with its probe calendar.
fn probe_is_before(
    tz: Tz,
    year: i64,
    mon: i64,
    day: i64,
    (sec, min, hr): (i64, i64, i64),
    after_time: i64,
) -> bool {
    let mut probe = QuartzCalendar::from_fields(tz, year, mon - 1, day, hr, min, sec);
    probe.instant() < after_time
}

/// The day-of-week branch of Quartz's walk; `day` and `mon` (1-based) were
/// read from `cl`.
fn day_of_week_step(
    rule: DayOfWeekRule,
    cl: &mut QuartzCalendar,
    mut day: i64,
    mon: i64,
) -> Option<DayStep> {
    let days_until = |from: i64, to: i64| {
        if from < to {
            to - from
        } else if from > to {
            to + 7 - from
        } else {
            0
        }
    };
    match rule {
        DayOfWeekRule::Last(dow) => {
            let mut add = days_until(cl.weekday(), dow);
            let last = last_day_of_month(cl.year(), mon);
            if day + add > last {
                // Already past the last one this month.
                cl.reset_time_of_day();
                cl.set_day(1);
                cl.set_month0(mon);
                return Some(DayStep::Restart);
            }
            while day + add + 7 <= last {
                add += 7;
            }
            day += add;
            if add > 0 {
                cl.reset_time_of_day();
                cl.set_day(day);
                cl.set_month0(mon - 1);
                return Some(DayStep::Restart);
            }
        }
        DayOfWeekRule::Nth { weekday, nth } => {
            let add = days_until(cl.weekday(), weekday);
            let shifted = add > 0;
            day += add;
            let mut week_of_month = day / 7;
            if day % 7 > 0 {
                week_of_month += 1;
            }
            let add = (nth - week_of_month) * 7;
            day += add;
            if add < 0 || day > last_day_of_month(cl.year(), mon) {
                cl.reset_time_of_day();
                cl.set_day(1);
                cl.set_month0(mon);
                return Some(DayStep::Restart);
            } else if add > 0 || shifted {
                cl.reset_time_of_day();
                cl.set_day(day);
                cl.set_month0(mon - 1);
                return Some(DayStep::Restart);
            }
        }
        DayOfWeekRule::Days(set) => {
            let current = cl.weekday();
            let dow = set.first_at_or_after(current).or_else(|| set.first())?;
            let add = days_until(current, dow);
            let last = last_day_of_month(cl.year(), mon);
            if day + add > last {
                cl.reset_time_of_day();
                cl.set_day(1);
                cl.set_month0(mon);
                return Some(DayStep::Restart);
            } else if add > 0 {
                cl.reset_time_of_day();
                cl.set_day(day + add);
                cl.set_month0(mon - 1);
                return Some(DayStep::Restart);
            }
        }
    }
    Some(DayStep::Keep(day))
}

mod calendar;
mod parse;

use calendar::*;
use parse::*;

#[cfg(test)]
mod tests;
