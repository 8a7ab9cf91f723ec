//! Fixed-interval schedules: every `period` from a start, optionally a fixed
//! number of times.

use chrono::{DateTime, TimeDelta, Utc};
use std::time::Duration;

/// Fires at `start`, `start + period`, ... (`repeat` more times after the first,
/// or forever).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntervalSchedule {
    pub start: DateTime<Utc>,
    pub period: Duration,
    /// How many times to fire after the first; `None` is forever.
    pub repeat: Option<u64>,
}

/// Why an interval is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IntervalError {
    #[error("invalid interval {0:?}: the period must be at least 1 ms")]
    TooShort(String),
    #[error("invalid interval {0:?}: the period is too long")]
    TooLong(String),
}

impl IntervalSchedule {
    /// # Errors
    ///
    /// When `period` is under 1 ms or does not fit a timestamp.
    pub fn new(
        start: DateTime<Utc>,
        period: Duration,
        repeat: Option<u64>,
    ) -> Result<Self, IntervalError> {
        if period < Duration::from_millis(1) {
            return Err(IntervalError::TooShort(
                humantime::format_duration(period).to_string(),
            ));
        }
        if TimeDelta::from_std(period).is_err() {
            return Err(IntervalError::TooLong(
                humantime::format_duration(period).to_string(),
            ));
        }
        Ok(IntervalSchedule {
            start,
            period,
            repeat,
        })
    }

    /// The first fire strictly after `after`, if the schedule has one left.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let period_ms = i64::try_from(self.period.as_millis()).ok()?.max(1);
        let index = if after < self.start {
            0
        } else {
            let elapsed = (after - self.start).num_milliseconds();
            u64::try_from(elapsed / period_ms + 1).ok()?
        };
        if self.repeat.is_some_and(|r| index > r) {
            return None;
        }
        let offset = i64::try_from(index).ok()?.checked_mul(period_ms)?;
        self.start
            .checked_add_signed(TimeDelta::milliseconds(offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn fires_on_the_grid_from_start_and_stops_after_the_repeat_count() {
        let s = IntervalSchedule::new(t("2030-01-01T00:00:00Z"), Duration::from_secs(90), Some(2))
            .unwrap();
        assert_eq!(
            s.next_after(t("2029-12-31T00:00:00Z")),
            Some(t("2030-01-01T00:00:00Z"))
        );
        assert_eq!(
            s.next_after(t("2030-01-01T00:00:00Z")),
            Some(t("2030-01-01T00:01:30Z"))
        );
        assert_eq!(
            s.next_after(t("2030-01-01T00:02:00Z")),
            Some(t("2030-01-01T00:03:00Z"))
        );
        assert_eq!(s.next_after(t("2030-01-01T00:03:00Z")), None);
    }

    #[test]
    fn a_zero_period_is_rejected() {
        assert!(IntervalSchedule::new(t("2030-01-01T00:00:00Z"), Duration::ZERO, None).is_err());
    }
}
