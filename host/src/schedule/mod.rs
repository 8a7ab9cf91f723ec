//! When fires happen: cron in Quartz's syntax with IANA time zones, fixed
//! intervals, one-shots. Pure computation: no clock reads, no I/O; callers pass
//! the instant to compute from, so the store's database clock stays the only clock.

pub mod calendar;
pub mod cron;
pub mod interval;
pub mod trigger;

use cron::{CronError, CronSchedule};

/// What is wrong with a cron trigger, and in which field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CronCheckError {
    /// The time zone is not an IANA zone (reported under `tz`).
    #[error("{0}")]
    Tz(String),
    /// The expression does not parse, or can never fire (reported under `cron`).
    #[error("{0}")]
    Cron(String),
}

/// Checks a cron expression in a time zone: the zone is an IANA name, the
/// expression parses, and it fires at least once after `now` (as Quartz refuses
/// a trigger that will never fire, e.g. `0 0 0 31 2 ?`).
///
/// # Errors
///
/// The first problem, tagged with the field it belongs to.
pub fn check_cron(
    expr: &str,
    tz: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<CronSchedule, CronCheckError> {
    if tz.parse::<chrono_tz::Tz>().is_err() {
        return Err(CronCheckError::Tz(
            CronError::UnknownTimeZone {
                name: tz.to_owned(),
            }
            .to_string(),
        ));
    }
    let schedule = CronSchedule::parse(expr, tz).map_err(|e| match e {
        e @ CronError::UnknownTimeZone { .. } => CronCheckError::Tz(e.to_string()),
        e => CronCheckError::Cron(e.to_string()),
    })?;
    if schedule.next_after(now).is_none() {
        return Err(CronCheckError::Cron(format!(
            "{expr:?} can never fire: no time matches it"
        )));
    }
    Ok(schedule)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cron_that_never_fires_and_a_bad_zone_are_told_apart() {
        let now = chrono::Utc::now();
        assert!(matches!(
            check_cron("0 0 0 31 2 ?", "UTC", now),
            Err(CronCheckError::Cron(m)) if m.contains("never fire")
        ));
        assert!(matches!(
            check_cron("0 0 * * * ?", "Mars/Olympus", now),
            Err(CronCheckError::Tz(_))
        ));
        assert!(check_cron("0 0 * * * ?", "Europe/Berlin", now).is_ok());
    }
}
