//! A model of `java.util.GregorianCalendar` (lenient) as Quartz uses it, and
//! the calendar and zone arithmetic the walk needs.

use super::*;

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
pub(super) struct QuartzCalendar {
    pub(super) tz: Tz,
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
    pub(super) fn at_instant(tz: Tz, instant: i64) -> Self {
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

    pub(super) fn from_fields(
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

    pub(super) fn load(&mut self, instant: i64) {
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

    pub(super) fn wall_seconds(&self) -> i64 {
        let year = self.year + self.month0.div_euclid(12);
        let month = self.month0.rem_euclid(12) + 1;
        (days_from_civil(year, month, 1) + self.day - 1) * SECONDS_PER_DAY
            + self.hour * 3600
            + self.minute * 60
            + self.second
    }

    pub(super) fn complete(&mut self) {
        if self.stale {
            let instant = wall_to_instant(self.tz, self.wall_seconds());
            self.load(instant);
        }
    }

    pub(super) fn instant(&mut self) -> i64 {
        self.complete();
        self.instant
    }

    pub(super) fn year(&mut self) -> i64 {
        self.complete();
        self.year
    }

    pub(super) fn month0(&mut self) -> i64 {
        self.complete();
        self.month0
    }

    pub(super) fn day(&mut self) -> i64 {
        self.complete();
        self.day
    }

    pub(super) fn hour(&mut self) -> i64 {
        self.complete();
        self.hour
    }

    pub(super) fn minute(&mut self) -> i64 {
        self.complete();
        self.minute
    }

    pub(super) fn second(&mut self) -> i64 {
        self.complete();
        self.second
    }

    /// Java's `DAY_OF_WEEK`: 1 = Sunday ... 7 = Saturday.
    pub(super) fn weekday(&mut self) -> i64 {
        self.complete();
        let days = days_from_civil(self.year, self.month0 + 1, self.day);
        // 1970-01-01 was a Thursday (5).
        (days + 4).rem_euclid(7) + 1
    }

    pub(super) fn set_year(&mut self, v: i64) {
        self.year = v;
        self.stale = true;
    }

    pub(super) fn set_month0(&mut self, v: i64) {
        self.month0 = v;
        self.stale = true;
    }

    pub(super) fn set_day(&mut self, v: i64) {
        self.day = v;
        self.stale = true;
    }

    pub(super) fn set_hour(&mut self, v: i64) {
        self.hour = v;
        self.stale = true;
    }

    pub(super) fn set_minute(&mut self, v: i64) {
        self.minute = v;
        self.stale = true;
    }

    pub(super) fn set_second(&mut self, v: i64) {
        self.second = v;
        self.stale = true;
    }

    pub(super) fn reset_time_of_day(&mut self) {
        self.set_second(0);
        self.set_minute(0);
        self.set_hour(0);
    }

    /// Quartz's `setCalendarHour`: if the hour did not stick (it fell into a
    /// spring-forward gap), ask for the next hour instead.
    pub(super) fn set_hour_quartz(&mut self, hour: i64) {
        self.set_hour(hour);
        if self.hour() != hour && hour != 24 {
            self.set_hour(hour + 1);
        }
    }

    /// Java's `add(YEAR, 1)`: normalise, bump the year, pin the day of month.
    pub(super) fn add_year(&mut self, years: i64) {
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
pub(super) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
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
pub(super) fn civil_from_days(days: i64) -> (i64, i64, i64) {
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
pub(super) fn last_day_of_month(year: i64, month: i64) -> i64 {
    let year = year + (month - 1).div_euclid(12);
    let month = (month - 1).rem_euclid(12) + 1;
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    days_from_civil(next_year, next_month, 1) - days_from_civil(year, month, 1)
}

pub(super) fn naive_from_secs(secs: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp(secs, 0).map(|dt| dt.naive_utc())
}

/// UTC offset in seconds of `tz` at the instant `secs`.
pub(super) fn offset_at(tz: Tz, secs: i64) -> i64 {
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
pub(super) fn wall_to_instant(tz: Tz, wall: i64) -> i64 {
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
pub(super) fn gap_jump(tz: Tz, wall: i64) -> Option<i64> {
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
