//! A job's policies and a trigger's kinds: overlap, retry (and its delay
//! math), misfire, and when a trigger fires. The manifest, the admin service,
//! the store and the runtime all use these types; each spelling (`fire-now`,
//! `forbid` ...) is parsed here and nowhere else.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A string that is not a valid value of one of these types; the message
/// quotes it and says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseValueError(pub String);

/// What happens when a job fires while one of its runs is still going. A
/// module may suggest one in `describe()`; the job's own setting wins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// Start another run alongside.
    #[default]
    Allow,
    /// Keep the fire waiting until the running one ends.
    Forbid,
    /// Drop the fire (recorded as skipped).
    Skip,
    /// Keep one fire waiting until the running one ends, as `forbid` does,
    /// and drop (record as skipped) any further fire while one waits: a
    /// backlog never grows past one catch-up run.
    #[serde(rename = "buffer-one")]
    BufferOne,
    /// A new fire asks the running one to stop (its `cancelled()` turns
    /// true; past the grace it is stopped), waits for it to end, then runs;
    /// of several fires waiting, the newest runs and the older are skipped.
    /// The run stopped is recorded as `cancelled`.
    #[serde(rename = "cancel-other")]
    CancelOther,
}

impl Overlap {
    /// Every policy, in the order the help lists them.
    pub const ALL: [Overlap; 5] = [
        Overlap::Allow,
        Overlap::Forbid,
        Overlap::Skip,
        Overlap::BufferOne,
        Overlap::CancelOther,
    ];

    /// The spelling in manifests, the API and the store: `allow`, `forbid`,
    /// `skip`, `buffer-one`.
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Allow => "allow",
            Overlap::Forbid => "forbid",
            Overlap::Skip => "skip",
            Overlap::BufferOne => "buffer-one",
            Overlap::CancelOther => "cancel-other",
        }
    }

    /// The policy `text` spells, if any.
    pub fn parse(text: &str) -> Option<Self> {
        Overlap::ALL.into_iter().find(|o| o.as_str() == text)
    }
}

impl FromStr for Overlap {
    type Err = ParseValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Overlap::parse(s).ok_or_else(|| {
            ParseValueError(format!(
                "invalid overlap policy {s:?}: expected \"allow\", \"forbid\", \"skip\" or \"buffer-one\""
            ))
        })
    }
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the retry delay grows from attempt to attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    /// Retry at once.
    Immediate,
    /// Double the delay after each failed attempt, up to the maximum.
    #[default]
    Exponential,
}

impl Backoff {
    /// `immediate` or `exponential`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backoff::Immediate => "immediate",
            Backoff::Exponential => "exponential",
        }
    }

    /// The shape `text` spells, if any.
    pub fn parse(text: &str) -> Option<Self> {
        [Backoff::Immediate, Backoff::Exponential]
            .into_iter()
            .find(|b| b.as_str() == text)
    }
}

impl FromStr for Backoff {
    type Err = ParseValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Backoff::parse(s).ok_or_else(|| {
            ParseValueError(format!(
                "invalid backoff {s:?}: expected \"immediate\" or \"exponential\""
            ))
        })
    }
}

/// How a failed run is retried: the runs of a fire in all, and the delay
/// between them. Durations are whole milliseconds, as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryPolicy {
    /// Runs of a fire in all, at least 1 (1 means no retry).
    pub max_attempts: u32,
    /// How the delay grows.
    pub backoff: Backoff,
    /// Delay after the first failed attempt (before jitter).
    pub initial_ms: u64,
    /// Cap on the delay (before jitter); at least `initial_ms`.
    pub max_ms: u64,
    /// Relative spread of each delay, 0.0..=1.0: the delay is multiplied by a
    /// random factor in `[1 - jitter, 1 + jitter)` (0.1: +/-10 %).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// One run (no retry), exponential from 1 s up to 5 min, 10 % jitter.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            backoff: Backoff::Exponential,
            initial_ms: 1_000,
            max_ms: 300_000,
            jitter: 0.1,
        }
    }
}

impl RetryPolicy {
    /// The delay in milliseconds before the run after run `attempt` (1-based;
    /// 0 is read as 1) failed.
    ///
    /// [`Backoff::Immediate`] gives zero. [`Backoff::Exponential`] gives
    /// `min(initial * 2^(attempt-1), max)` multiplied by
    /// `1 + jitter * (2 * random - 1)`, rounded, where `random` is a uniform
    /// sample from `[0, 1)` supplied by the caller (values outside are
    /// clamped; a non-finite one means no jitter, as does a non-finite
    /// `jitter`). Never overflows or panics: the arithmetic saturates at
    /// `max_ms` and at `u64::MAX`.
    pub fn delay_ms(&self, attempt: u32, random: f64) -> u64 {
        if self.backoff == Backoff::Immediate {
            return 0;
        }
        let doublings = attempt.saturating_sub(1);
        let base = 1u64
            .checked_shl(doublings)
            .and_then(|factor| self.initial_ms.checked_mul(factor))
            .map_or(self.max_ms, |d| d.min(self.max_ms));
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let random = if random.is_finite() {
            random.clamp(0.0, 1.0)
        } else {
            0.5
        };
        let factor = 1.0 + jitter * (2.0 * random - 1.0);
        if base == 0 || factor == 1.0 {
            return base;
        }
        let jittered = (base as f64 * factor).round();
        if jittered >= u64::MAX as f64 {
            u64::MAX
        } else {
            // Non-negative: the factor is at least 0.
            jittered.max(0.0) as u64
        }
    }

    /// [`RetryPolicy::delay_ms`] as a [`Duration`].
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        Duration::from_millis(self.delay_ms(attempt, random))
    }
}

/// What to do with fires missed by more than the misfire threshold (no node
/// could run them in time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MisfirePolicy {
    /// Run the most recent missed fires, up to the catch-up limit; older ones
    /// are recorded as misfired.
    #[default]
    FireNow,
    /// Run none of them; record them as misfired and go on with the next fire.
    Skip,
    /// Run one fire for all of them; record the others as misfired.
    FireOnce,
}

impl MisfirePolicy {
    /// `fire-now`, `skip` or `fire-once`.
    pub fn as_str(self) -> &'static str {
        match self {
            MisfirePolicy::FireNow => "fire-now",
            MisfirePolicy::Skip => "skip",
            MisfirePolicy::FireOnce => "fire-once",
        }
    }

    /// The policy `text` spells, if any.
    pub fn parse(text: &str) -> Option<Self> {
        [
            MisfirePolicy::FireNow,
            MisfirePolicy::Skip,
            MisfirePolicy::FireOnce,
        ]
        .into_iter()
        .find(|m| m.as_str() == text)
    }
}

impl FromStr for MisfirePolicy {
    type Err = ParseValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MisfirePolicy::parse(s).ok_or_else(|| {
            ParseValueError(format!(
                "invalid misfire policy {s:?}: expected \"fire-now\", \"skip\" or \"fire-once\""
            ))
        })
    }
}

impl fmt::Display for MisfirePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a trigger fires. Instants and periods are milliseconds, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TriggerKind {
    /// A Quartz cron expression in an IANA time zone.
    Cron { expr: String, tz: String },
    /// Every `period_ms` from the trigger's start, `repeat` more times after
    /// the first (forever if `None`).
    Every { period_ms: i64, repeat: Option<u64> },
    /// Once, at an instant.
    At(i64),
    /// Once each time a node starts.
    OnStart,
    /// Once per store for each module version of the job.
    Once,
    /// Once for every accepted event of this name: never due by the clock.
    Event { name: String },
}

impl TriggerKind {
    /// The kind's name: `cron`, `every`, `at`, `on-start`, `once` or `event`
    /// (the store's `kind` column, and the suffix of a job's one trigger).
    pub fn as_str(&self) -> &'static str {
        match self {
            TriggerKind::Cron { .. } => "cron",
            TriggerKind::Every { .. } => "every",
            TriggerKind::At(_) => "at",
            TriggerKind::OnStart => "on-start",
            TriggerKind::Once => "once",
            TriggerKind::Event { .. } => "event",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_parses_back_and_others_are_refused() {
        for o in [Overlap::Allow, Overlap::Forbid, Overlap::Skip] {
            assert_eq!(o.as_str().parse::<Overlap>(), Ok(o));
        }
        for m in [
            MisfirePolicy::FireNow,
            MisfirePolicy::Skip,
            MisfirePolicy::FireOnce,
        ] {
            assert_eq!(MisfirePolicy::parse(m.as_str()), Some(m));
        }
        for b in [Backoff::Immediate, Backoff::Exponential] {
            assert_eq!(b.as_str().parse::<Backoff>(), Ok(b));
        }
        assert!("fire_now".parse::<MisfirePolicy>().is_err());
        assert!(
            "never"
                .parse::<Overlap>()
                .is_err_and(|e| e.0.contains("\"never\""))
        );
        assert_eq!(Overlap::default(), Overlap::Allow);
        assert_eq!(MisfirePolicy::default(), MisfirePolicy::FireNow);
    }

    #[test]
    fn exponential_backoff_doubles_up_to_the_cap_with_jitter_around_it() {
        let p = RetryPolicy {
            max_attempts: 5,
            initial_ms: 1_000,
            max_ms: 5_000,
            ..RetryPolicy::default()
        };
        assert_eq!(p.delay_ms(0, 0.5), 1_000);
        assert_eq!(p.delay_ms(1, 0.5), 1_000);
        assert_eq!(p.delay_ms(2, 0.5), 2_000);
        assert_eq!(p.delay_ms(3, 0.5), 4_000);
        assert_eq!(p.delay_ms(4, 0.5), 5_000);
        assert_eq!(p.delay_ms(u32::MAX, 0.5), 5_000);
        assert_eq!(p.delay_ms(1, 0.0), 900);
        assert_eq!(p.delay_ms(1, 0.999_999), 1_100);
        assert_eq!(p.delay(2, 0.5), Duration::from_secs(2));
        let immediate = RetryPolicy {
            backoff: Backoff::Immediate,
            ..p.clone()
        };
        assert_eq!(immediate.delay_ms(3, 0.7), 0);
    }

    #[test]
    fn the_delay_never_overflows_and_ignores_non_finite_inputs() {
        let wide = RetryPolicy {
            initial_ms: u64::MAX / 2,
            max_ms: u64::MAX,
            jitter: 1.0,
            ..RetryPolicy::default()
        };
        assert_eq!(wide.delay_ms(64, 0.5), u64::MAX);
        assert_eq!(wide.delay_ms(3, 0.999), u64::MAX);
        let zero = RetryPolicy {
            initial_ms: 0,
            ..RetryPolicy::default()
        };
        assert_eq!(zero.delay_ms(10, 0.9), 0);
        let odd = RetryPolicy {
            jitter: f64::NAN,
            ..RetryPolicy::default()
        };
        assert_eq!(odd.delay_ms(1, 0.0), 1_000);
        assert_eq!(RetryPolicy::default().delay_ms(1, f64::INFINITY), 1_000);
        assert_eq!(RetryPolicy::default().delay_ms(1, -3.0), 900);
    }
}
