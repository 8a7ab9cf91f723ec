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

fn parse_day_of_month(text: &str) -> Result<DayField<DayOfMonthRule>, TokenError> {
    if text == "?" {
        return Ok(DayField::NoSpec);
    }
    if !text.contains(['L', 'W']) {
        return parse_list(CronField::DayOfMonth, text)
            .map(|set| DayField::Rule(DayOfMonthRule::Days(set)));
    }
    if text.contains(',') {
        return Err(TokenError::new(
            text,
            "'L' and 'W' cannot be combined with other days in a list",
        ));
    }
    if let Some(rest) = text.strip_prefix('L') {
        let (rest, weekday) = match rest.strip_suffix('W') {
            Some(inner) => (inner, true),
            None => (rest, false),
        };
        let offset = match rest {
            "" => 0,
            _ => {
                let digits = rest
                    .strip_prefix('-')
                    .ok_or_else(|| TokenError::new(text, "expected 'L', 'L-n', 'LW' or 'L-nW'"))?;
                let offset = parse_number(text, digits)?;
                if offset > 30 {
                    return Err(TokenError::new(
                        text,
                        "the offset from the last day must be at most 30",
                    ));
                }
                offset
            }
        };
        if weekday && offset > 27 {
            // The target day would be 0 or less in February, where Quartz's
            // walk bounces between two months forever.
            return Err(TokenError::new(
                text,
                "with 'W' the offset from the last day must be at most 27",
            ));
        }
        return Ok(DayField::Rule(DayOfMonthRule::Last { offset, weekday }));
    }
    let digits = text
        .strip_suffix('W')
        .ok_or_else(|| TokenError::new(text, "'W' must follow a day number, as in '15W'"))?;
    let day = parse_number(text, digits)?;
    check_range(CronField::DayOfMonth, text, day)?;
    Ok(DayField::Rule(DayOfMonthRule::NearestWeekday(day)))
}

fn parse_day_of_week(text: &str) -> Result<DayField<DayOfWeekRule>, TokenError> {
    const FIELD: CronField = CronField::DayOfWeek;
    if text == "?" {
        return Ok(DayField::NoSpec);
    }
    if !text.contains(['L', '#']) {
        return parse_list(FIELD, text).map(|set| DayField::Rule(DayOfWeekRule::Days(set)));
    }
    if text.contains(',') {
        return Err(TokenError::new(
            text,
            "'L' and '#' cannot be combined with other days in a list",
        ));
    }
    if text == "L" {
        // Quartz reads a lone 'L' in day-of-week as 7, Saturday.
        let mut set = ValueSet::new(0);
        set.insert(7);
        return Ok(DayField::Rule(DayOfWeekRule::Days(set)));
    }
    if let Some(day) = text.strip_suffix('L') {
        let weekday = parse_value(FIELD, text, day)?.value;
        return Ok(DayField::Rule(DayOfWeekRule::Last(weekday)));
    }
    if let Some((day, nth)) = text.split_once('#') {
        let weekday = parse_value(FIELD, text, day)?.value;
        let nth = parse_number(text, nth)?;
        if !(1..=5).contains(&nth) {
            return Err(TokenError::new(text, "the number after '#' must be 1-5"));
        }
        return Ok(DayField::Rule(DayOfWeekRule::Nth { weekday, nth }));
    }
    Err(TokenError::new(text, "'L' must follow a day, as in '6L'"))
}

/// Parses a comma-separated list of `*`, values, ranges and steps.
fn parse_list(field: CronField, text: &str) -> Result<ValueSet, TokenError> {
    let mut set = ValueSet::new(if field == CronField::Year {
        field.min()
    } else {
        0
    });
    for item in text.split(',') {
        parse_item(field, item, &mut set)?;
    }
    if set.is_empty() {
        return Err(TokenError::new(text, "matches no value"));
    }
    Ok(set)
}

fn parse_item(field: CronField, item: &str, set: &mut ValueSet) -> Result<(), TokenError> {
    if item.is_empty() {
        return Err(TokenError::new(item, "empty list item"));
    }
    if item == "?" {
        let reason = match field {
            CronField::DayOfMonth | CronField::DayOfWeek => "'?' must be the whole field",
            _ => "'?' is only allowed in day-of-month or day-of-week",
        };
        return Err(TokenError::new(item, reason));
    }
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => (range, Some(parse_number(item, step)?)),
        None => (item, None),
    };
    if let Some(step) = step
        && !(1..=field.max_step()).contains(&step)
    {
        return Err(TokenError::new(
            item,
            format!("the step must be between 1 and {}", field.max_step()),
        ));
    }
    let (start, end, named) = if range == "*" {
        (field.min(), field.max(), false)
    } else if let Some((low, high)) = range.split_once('-') {
        let low = parse_value(field, item, low)?;
        let high = parse_value(field, item, high)?;
        (low.value, high.value, low.named || high.named)
    } else {
        let single = parse_value(field, item, range)?;
        // `a/n` runs from a to the top of the field; a bare value is just itself.
        let end = if step.is_some() {
            field.max()
        } else {
            single.value
        };
        (single.value, end, single.named)
    };
    if named && step.is_some() {
        // Quartz silently drops a step written after a name; refuse rather
        // than compute different fire times.
        return Err(TokenError::new(
            item,
            "a step cannot follow a day or month name",
        ));
    }
    let step = step.unwrap_or(1);
    if start <= end {
        let mut value = start;
        while value <= end {
            set.insert(value);
            value += step;
        }
    } else if field == CronField::Year {
        return Err(TokenError::new(
            item,
            "the start year is after the end year",
        ));
    } else {
        // Wrap-around range such as 22-2: continue past the top of the field
        // and fold back, the way Quartz does.
        let span = field.max() - field.min() + 1;
        let mut value = start;
        while value <= end + span {
            set.insert(field.min() + (value - field.min()) % span);
            value += step;
        }
    }
    Ok(())
}

struct FieldValue {
    value: i64,
    named: bool,
}

/// Parses a number or (for month and day-of-week) a three-letter name.
fn parse_value(field: CronField, token: &str, text: &str) -> Result<FieldValue, TokenError> {
    if let Some(index) = field.names().iter().position(|name| *name == text) {
        // Months count from 1 = JAN, weekdays from 1 = SUN.
        return Ok(FieldValue {
            value: index as i64 + 1,
            named: true,
        });
    }
    if !text.is_empty() && !text.bytes().all(|b| b.is_ascii_digit()) && !field.names().is_empty() {
        let kind = if field == CronField::Month {
            "a month"
        } else {
            "a day"
        };
        return Err(TokenError::new(
            token,
            format!("{text:?} is not {kind} number or name"),
        ));
    }
    let value = parse_number(token, text)?;
    check_range(field, token, value)?;
    Ok(FieldValue {
        value,
        named: false,
    })
}

fn check_range(field: CronField, token: &str, value: i64) -> Result<(), TokenError> {
    if (field.min()..=field.max()).contains(&value) {
        Ok(())
    } else {
        Err(TokenError::new(
            token,
            format!(
                "{value} is out of range; {} values must be between {} and {}",
                field.name(),
                field.min(),
                field.max()
            ),
        ))
    }
}

/// Parses an unsigned decimal number, refusing anything that is not one.
fn parse_number(token: &str, text: &str) -> Result<i64, TokenError> {
    if text.is_empty() {
        return Err(TokenError::new(token, "expected a number"));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::new(token, format!("{text:?} is not a number")));
    }
    let significant = text.trim_start_matches('0');
    if significant.len() > 9 {
        return Err(TokenError::new(token, format!("{text} is too large")));
    }
    Ok(significant.parse().unwrap_or(0))
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

// ---------------------------------------------------------------------------
// A model of java.util.GregorianCalendar (lenient) as Quartz uses it
// ---------------------------------------------------------------------------

/// The parts of a lenient `GregorianCalendar` that Quartz's walk touches.
///
/// Setting a field only records it (it may be out of range, e.g. minute 60 or
/// day 32); reading any field first normalises: the fields are read as a wall
/// time in the zone, turned into an instant by Java's rule (see
/// [`wall_to_instant`]), and all fields are recomputed from that instant. Every
/// set marks the calendar stale, even when the value is unchanged, because Java
/// re-resolves the wall time then too, which is what moves a time in the
/// autumn fold to its second occurrence.
#[derive(Debug, Clone)]
struct QuartzCalendar {
    tz: Tz,
    year: i64,
    /// 0-based like Java's `Calendar.MONTH`.
    month0: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    instant: i64,
    stale: bool,
}

impl QuartzCalendar {
    fn at_instant(tz: Tz, instant: i64) -> Self {
        let mut cal = QuartzCalendar {
            tz,
            year: 0,
            month0: 0,
            day: 1,
            hour: 0,
            minute: 0,
            second: 0,
            instant,
            stale: false,
        };
        cal.load(instant);
        cal
    }

    fn from_fields(
        tz: Tz,
        year: i64,
        month0: i64,
        day: i64,
        hour: i64,
        minute: i64,
        second: i64,
    ) -> Self {
        QuartzCalendar {
            tz,
            year,
            month0,
            day,
            hour,
            minute,
            second,
            instant: 0,
            stale: true,
        }
    }

    fn load(&mut self, instant: i64) {
        let wall = instant + offset_at(self.tz, instant);
        let (year, month, day) = civil_from_days(wall.div_euclid(SECONDS_PER_DAY));
        let time = wall.rem_euclid(SECONDS_PER_DAY);
        self.year = year;
        self.month0 = month - 1;
        self.day = day;
        self.hour = time / 3600;
        self.minute = time / 60 % 60;
        self.second = time % 60;
        self.instant = instant;
        self.stale = false;
    }

    fn wall_seconds(&self) -> i64 {
        let year = self.year + self.month0.div_euclid(12);
        let month = self.month0.rem_euclid(12) + 1;
        (days_from_civil(year, month, 1) + self.day - 1) * SECONDS_PER_DAY
            + self.hour * 3600
            + self.minute * 60
            + self.second
    }

    fn complete(&mut self) {
        if self.stale {
            let instant = wall_to_instant(self.tz, self.wall_seconds());
            self.load(instant);
        }
    }

    fn instant(&mut self) -> i64 {
        self.complete();
        self.instant
    }

    fn year(&mut self) -> i64 {
        self.complete();
        self.year
    }

    fn month0(&mut self) -> i64 {
        self.complete();
        self.month0
    }

    fn day(&mut self) -> i64 {
        self.complete();
        self.day
    }

    fn hour(&mut self) -> i64 {
        self.complete();
        self.hour
    }

    fn minute(&mut self) -> i64 {
        self.complete();
        self.minute
    }

    fn second(&mut self) -> i64 {
        self.complete();
        self.second
    }

    /// Java's `DAY_OF_WEEK`: 1 = Sunday ... 7 = Saturday.
    fn weekday(&mut self) -> i64 {
        self.complete();
        let days = days_from_civil(self.year, self.month0 + 1, self.day);
        // 1970-01-01 was a Thursday (5).
        (days + 4).rem_euclid(7) + 1
    }

    fn set_year(&mut self, v: i64) {
        self.year = v;
        self.stale = true;
    }

    fn set_month0(&mut self, v: i64) {
        self.month0 = v;
        self.stale = true;
    }

    fn set_day(&mut self, v: i64) {
        self.day = v;
        self.stale = true;
    }

    fn set_hour(&mut self, v: i64) {
        self.hour = v;
        self.stale = true;
    }

    fn set_minute(&mut self, v: i64) {
        self.minute = v;
        self.stale = true;
    }

    fn set_second(&mut self, v: i64) {
        self.second = v;
        self.stale = true;
    }

    fn reset_time_of_day(&mut self) {
        self.set_second(0);
        self.set_minute(0);
        self.set_hour(0);
    }

    /// Quartz's `setCalendarHour`: if the hour did not stick (it fell into a
    /// spring-forward gap), ask for the next hour instead.
    fn set_hour_quartz(&mut self, hour: i64) {
        self.set_hour(hour);
        if self.hour() != hour && hour != 24 {
            self.set_hour(hour + 1);
        }
    }

    /// Java's `add(YEAR, 1)`: normalise, bump the year, pin the day of month.
    fn add_year(&mut self, years: i64) {
        self.complete();
        self.year += years;
        self.day = self.day.min(last_day_of_month(self.year, self.month0 + 1));
        self.stale = true;
    }
}

// ---------------------------------------------------------------------------
// Calendar and zone arithmetic
// ---------------------------------------------------------------------------

/// Days since 1970-01-01 of a proleptic Gregorian date (month 1-12).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Count years from March so the leap day is the last day of the year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Inverse of [`days_from_civil`]: (year, month 1-12, day).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Length of month `month` (1-12; other values are normalised) of `year`.
fn last_day_of_month(year: i64, month: i64) -> i64 {
    let year = year + (month - 1).div_euclid(12);
    let month = (month - 1).rem_euclid(12) + 1;
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    days_from_civil(next_year, next_month, 1) - days_from_civil(year, month, 1)
}

fn naive_from_secs(secs: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp(secs, 0).map(|dt| dt.naive_utc())
}

/// UTC offset in seconds of `tz` at the instant `secs`.
fn offset_at(tz: Tz, secs: i64) -> i64 {
    naive_from_secs(secs).map_or(0, |utc| {
        i64::from(tz.offset_from_utc_datetime(&utc).fix().local_minus_utc())
    })
}

/// Turns a wall-clock reading into an instant the way Java's `ZoneInfo` does
/// for a lenient `GregorianCalendar`: the wall time takes the offset of the
/// latest transition whose new wall time it has reached. So a time in the
/// autumn fold is read with the later (standard) offset, and a time in a
/// spring-forward gap with the offset from before the gap, which pushes it
/// forward past the gap (02:30 becomes 03:30).
fn wall_to_instant(tz: Tz, wall: i64) -> i64 {
    let Some(naive) = naive_from_secs(wall) else {
        return wall;
    };
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(dt) => dt.timestamp(),
        LocalResult::Ambiguous(a, b) => a.timestamp().max(b.timestamp()),
        LocalResult::None => match gap_jump(tz, wall) {
            Some(jump) => wall - offset_at(tz, jump - 1),
            None => wall - offset_at(tz, wall),
        },
    }
}

/// If the wall time `wall` falls in a gap of `tz`, the instant at which the
/// clock jumped over it.
fn gap_jump(tz: Tz, wall: i64) -> Option<i64> {
    let naive = naive_from_secs(wall)?;
    if !matches!(tz.from_local_datetime(&naive), LocalResult::None) {
        return None;
    }
    // The instant u shows wall time u + offset(u). Offsets stay within
    // -12h..+14h, so 15 hours either side brackets the jump; find the first
    // instant whose wall time is past `wall`.
    const BRACKET: i64 = 15 * 3600;
    let shows = |u: i64| u + offset_at(tz, u);
    let (mut before, mut after) = (wall - BRACKET, wall + BRACKET);
    while after - before > 1 {
        let mid = before + (after - before) / 2;
        if shows(mid) > wall {
            after = mid;
        } else {
            before = mid;
        }
    }
    Some(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn local(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").unwrap()
    }

    fn fires(expr: &str, tz: &str, after: &str, n: usize) -> Vec<DateTime<Utc>> {
        let schedule = CronSchedule::parse(expr, tz).unwrap();
        let mut out = Vec::new();
        let mut cursor = utc(after);
        for _ in 0..n {
            match schedule.next_after(cursor) {
                Some(t) => {
                    out.push(t);
                    cursor = t;
                }
                None => break,
            }
        }
        out
    }

    #[test]
    fn spring_forward_gap_is_reported_then_next_day_fires() {
        let schedule = CronSchedule::parse("0 30 2 * * ?", "America/New_York").unwrap();
        let events: Vec<CronEvent> = schedule
            .events_after(utc("2027-03-13T12:00:00Z"))
            .take(2)
            .collect();
        assert_eq!(
            events,
            vec![
                CronEvent::DstGap {
                    local: local("2027-03-14T02:30:00"),
                    // 02:00 EST, when the clocks jumped to 03:00 EDT.
                    at: utc("2027-03-14T07:00:00Z"),
                },
                CronEvent::Fire(utc("2027-03-15T06:30:00Z")),
            ]
        );
        assert_eq!(
            schedule.next_event_after(utc("2027-03-13T12:00:00Z")),
            Some(events[0])
        );
        // next_after skips the gap silently, like Quartz.
        assert_eq!(
            schedule.next_after(utc("2027-03-13T12:00:00Z")),
            Some(utc("2027-03-15T06:30:00Z"))
        );
    }

    #[test]
    fn hourly_schedule_reports_the_missing_hour_and_keeps_the_fire_at_the_jump() {
        let schedule = CronSchedule::parse("0 0 * * * ?", "America/New_York").unwrap();
        let events: Vec<CronEvent> = schedule
            .events_after(utc("2027-03-14T05:30:00Z"))
            .take(3)
            .collect();
        assert_eq!(
            events,
            vec![
                CronEvent::Fire(utc("2027-03-14T06:00:00Z")), // 01:00 EST
                CronEvent::DstGap {
                    local: local("2027-03-14T02:00:00"),
                    at: utc("2027-03-14T07:00:00Z"),
                },
                CronEvent::Fire(utc("2027-03-14T07:00:00Z")), // 03:00 EDT
            ]
        );
    }

    #[test]
    fn every_gap_time_is_reported_in_wall_clock_order() {
        let schedule = CronSchedule::parse("0 */20 2 * * ?", "America/New_York").unwrap();
        let gaps: Vec<NaiveDateTime> = schedule
            .events_after(utc("2027-03-13T12:00:00Z"))
            .take_while(|e| matches!(e, CronEvent::DstGap { .. }))
            .map(|e| match e {
                CronEvent::DstGap { local, .. } => local,
                CronEvent::Fire(_) => unreachable!(),
            })
            .collect();
        assert_eq!(
            gaps,
            vec![
                local("2027-03-14T02:00:00"),
                local("2027-03-14T02:20:00"),
                local("2027-03-14T02:40:00"),
            ]
        );
    }

    #[test]
    fn autumn_fold_fires_once() {
        // Quartz reads 01:30 on the fall-back day with the standard-time
        // offset, i.e. the *second* 01:30 (06:30Z, EST), not 05:30Z (EDT);
        // the Europe/Berlin fold vector in the Quartz test data confirms this.
        assert_eq!(
            fires(
                "0 30 1 * * ?",
                "America/New_York",
                "2027-11-06T12:00:00Z",
                3
            ),
            vec![
                utc("2027-11-07T06:30:00Z"),
                utc("2027-11-08T06:30:00Z"),
                utc("2027-11-09T06:30:00Z"),
            ]
        );
        // An hourly schedule fires once for 01:00 too.
        assert_eq!(
            fires("0 0 * * * ?", "America/New_York", "2027-11-07T03:30:00Z", 3),
            vec![
                utc("2027-11-07T04:00:00Z"), // 00:00 EDT
                utc("2027-11-07T06:00:00Z"), // 01:00 EST
                utc("2027-11-07T07:00:00Z"), // 02:00 EST
            ]
        );
        // No gap events around a fold.
        let schedule = CronSchedule::parse("0 0 * * * ?", "America/New_York").unwrap();
        assert!(
            schedule
                .events_after(utc("2027-11-07T03:30:00Z"))
                .take(5)
                .all(|e| matches!(e, CronEvent::Fire(_)))
        );
    }

    #[test]
    fn expressions_that_never_fire_again_end() {
        let after = utc("2026-11-23T00:00:00Z");
        for expr in [
            "0 0 0 30 2 ?",
            "0 0 0 31 4 ?",
            "0 0 0 * * ? 2020",
            "0 0 0 ? 2 1#5 2027",
        ] {
            let schedule = CronSchedule::parse(expr, "Europe/Berlin").unwrap();
            assert_eq!(schedule.next_after(after), None, "{expr}");
            assert_eq!(schedule.events_after(after).next(), None, "{expr}");
        }
        let last = CronSchedule::parse("59 59 23 31 12 ? *", "UTC").unwrap();
        assert_eq!(
            last.next_after(utc("2099-06-01T00:00:00Z")),
            Some(utc("2099-12-31T23:59:59Z"))
        );
        assert_eq!(last.next_after(utc("2099-12-31T23:59:59Z")), None);
    }

    #[test]
    fn a_gap_with_no_later_fire_is_still_reported() {
        let schedule = CronSchedule::parse("0 30 2 14 3 ? 2027", "America/New_York").unwrap();
        let events: Vec<CronEvent> = schedule.events_after(utc("2027-01-01T00:00:00Z")).collect();
        assert_eq!(
            events,
            vec![CronEvent::DstGap {
                local: local("2027-03-14T02:30:00"),
                at: utc("2027-03-14T07:00:00Z"),
            }]
        );
    }

    #[test]
    fn wrap_around_ranges_and_quartz_weekday_numbers() {
        assert_eq!(
            fires("0 0 22-2 * * ?", "UTC", "2027-01-01T20:00:00Z", 6),
            vec![
                utc("2027-01-01T22:00:00Z"),
                utc("2027-01-01T23:00:00Z"),
                utc("2027-01-02T00:00:00Z"),
                utc("2027-01-02T01:00:00Z"),
                utc("2027-01-02T02:00:00Z"),
                utc("2027-01-02T22:00:00Z"),
            ]
        );
        // FRI-MON wraps over the weekend; 2027-01-01 is a Friday.
        assert_eq!(
            fires("0 0 12 ? * FRI-MON", "UTC", "2027-01-01T00:00:00Z", 5),
            vec![
                utc("2027-01-01T12:00:00Z"),
                utc("2027-01-02T12:00:00Z"),
                utc("2027-01-03T12:00:00Z"),
                utc("2027-01-04T12:00:00Z"),
                utc("2027-01-08T12:00:00Z"),
            ]
        );
        // Names are case-insensitive.
        assert_eq!(
            fires("0 0 12 ? jan,feb sun", "UTC", "2027-01-01T00:00:00Z", 1),
            vec![utc("2027-01-03T12:00:00Z")]
        );
        // 'L' alone in day-of-week is Saturday (7).
        assert_eq!(
            fires("0 0 12 ? * L", "UTC", "2027-01-01T00:00:00Z", 1),
            vec![utc("2027-01-02T12:00:00Z")]
        );
    }

    #[test]
    fn errors_quote_the_expression_and_name_the_field() {
        let err = CronSchedule::parse("0 0 * * * * *", "UTC").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid cron expression \"0 0 * * * * *\": day-of-month and day-of-week \
             are both set; one of them must be '?'"
        );
        let err = CronSchedule::parse("0 0 12 ? * 5#6", "UTC").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("invalid cron expression \"0 0 12 ? * 5#6\":"),
            "{msg}"
        );
        assert!(msg.contains("day-of-week"), "{msg}");
        assert!(msg.contains("\"5#6\""), "{msg}");
        let err = CronSchedule::parse("0 0 25 * * ?", "UTC").unwrap_err();
        assert!(matches!(
            err,
            CronError::InvalidField {
                field: CronField::Hours,
                ..
            }
        ));
        assert!(err.to_string().contains("\"0 0 25 * * ?\""));
        let err = CronSchedule::parse("* * * * *", "UTC").unwrap_err();
        assert!(err.to_string().contains("\"* * * * *\""), "{err}");
        assert!(err.to_string().contains("found 5"), "{err}");
        let err = CronSchedule::parse("0 0 12 * * ?", "Mars/Base").unwrap_err();
        assert_eq!(err.to_string(), "unknown time zone \"Mars/Base\"");
    }

    #[test]
    fn parser_never_panics_on_odd_input() {
        let odd = [
            "",
            " ",
            "\t\n",
            "99999999999999999999 * * * * ?",
            "0 0 99999999999999999999 * * ?",
            "0 0 0 ? * 99999999999999999999",
            "é ü ñ 字 🙂 ?",
            "0 0 0 ? * MÖN",
            "0/0 * * * * ?",
            "*/0 * * * * ?",
            "1- * * * * ?",
            "-1 * * * * ?",
            "1-2-3 * * * * ?",
            "1/2/3 * * * * ?",
            "# * * * * ?",
            "0 0 0 L-40 * ?",
            "0 0 0 L- * ?",
            "0 0 0 L-W * ?",
            "0 0 0 L-28W * ?",
            "0 0 0 LL * ?",
            "0 0 0 W * ?",
            "0 0 0 0W * ?",
            "0 0 0 32W * ?",
            "0 0 0 L,1 * ?",
            "0 0 0 ? * 5#6",
            "0 0 0 ? * 5#",
            "0 0 0 ? * #3",
            "0 0 0 ? * 8#1",
            "0 0 0 ? * 0L",
            "0 0 0 ? * L#2",
            "0 0 0 ? * 5L,6",
            "0 0 0 ? * 6#3,5",
            "0 0 0 ? * ?",
            "0 0 0 * * *",
            "0 0 0 ?,1 * ?",
            "0 0 0 1,,2 * ?",
            "0 0 0 1, * ?",
            "0 0 0 ? * MON-FRI/2",
            "0 0 0 ? * MONDAY",
            "0 0 0 ? JANUARY *",
            "0 0 0 ? * * 1969",
            "0 0 0 ? * * 2100",
            "0 0 0 ? * * 2030-2020",
            "0 0 0 ? * * 2020/0",
            "0 0 0 ? * * * extra",
            "*/60 * * * * ?",
            "0 0 0 ? 0 *",
            "0 0 0 ? * 0",
            "0 0 24 * * ?",
            "0 0 0 ? * /",
            "0 0 0 ? * -",
            "0 0 0 ? * ,",
            "0 0 0 ?? * *",
            "0 0 0 ? * ??",
        ];
        for expr in odd {
            assert!(
                CronSchedule::parse(expr, "UTC").is_err(),
                "expected {expr:?} to be rejected"
            );
        }
        // Accepted oddities must also compute without panicking.
        let fine = [
            "0 0 0 L-30 * ?",
            "0 0 0 L-27W * ?",
            "0 0 0 31W * ?",
            "0 0 0 1W * ?",
            "0 0 0 ? * 1#5",
            "0 0 0 ? * SUNL",
            "0 0 0 ? * FRI#3",
            "0 0 0 ? * 7-1/3",
            "0 0 0 31-1 * ?",
            "0 0 0 ? DEC-FEB *",
            "0 0 0 ? * * 2099",
            "0 0 0 1/31 * ?",
            "  0   0  0 ? * *  ",
            "0 0 0 ? * * 1970/129",
        ];
        for tz in [
            "UTC",
            "America/Santiago",
            "Pacific/Apia",
            "Australia/Lord_Howe",
        ] {
            for expr in fine {
                let schedule = CronSchedule::parse(expr, tz).unwrap();
                for after in [
                    "1900-01-01T00:00:00Z",
                    "2011-12-28T00:00:00Z",
                    "2099-12-31T00:00:00Z",
                    "9999-01-01T00:00:00Z",
                ] {
                    let mut events = schedule.events_after(utc(after));
                    for _ in 0..20 {
                        if events.next().is_none() {
                            break;
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn value_set_tail_lookup() {
        let mut set = ValueSet::new(1970);
        for y in [1970, 2033, 2099] {
            set.insert(y);
        }
        assert_eq!(set.first(), Some(1970));
        assert_eq!(set.first_at_or_after(1971), Some(2033));
        assert_eq!(set.first_at_or_after(2034), Some(2099));
        assert_eq!(set.first_at_or_after(2100), None);
        assert_eq!(set.first_at_or_after(0), Some(1970));
    }

    #[test]
    fn civil_day_arithmetic_round_trips() {
        for days in -800..80_000 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(last_day_of_month(2028, 2), 29);
        assert_eq!(last_day_of_month(2100, 2), 28);
        assert_eq!(last_day_of_month(2027, 13), 31);
    }
}
