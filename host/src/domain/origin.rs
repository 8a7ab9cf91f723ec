//! Where a fire came from, when an operator made it for another time than now:
//! a backfill (the times a job's triggers had in a past range) or a replay
//! (a failed fire run again). Every other fire, of a trigger's own schedule,
//! a run-now or an event, has the plain origin, stored as `''`.
//!
//! The origin travels with the fire (`fires.origin`, migration 0022): the
//! claim reads it in the row it reads anyway and decides a backfill's overlap
//! mode from it, the run gives a backfill's guest a wall clock starting at
//! the scheduled time, and history and metrics tell such fires apart.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How the fires of one backfill share the job with each other and with its
/// other runs (`job backfill --overlap`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackfillOverlap {
    /// Side by side, whatever the job's own overlap policy: as many at once as
    /// the node's budget and the job's share of it allow.
    Allow,
    /// One at a time, in scheduled order, each waiting while any run of the
    /// job (of the backfill or not) is running: the job's `forbid`.
    #[default]
    Buffer,
    /// A backfill time whose claim finds a run of the job running is not run
    /// and is recorded as skipped: the job's `skip`.
    Skip,
}

impl BackfillOverlap {
    pub const ALL: [BackfillOverlap; 3] = [
        BackfillOverlap::Allow,
        BackfillOverlap::Buffer,
        BackfillOverlap::Skip,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BackfillOverlap::Allow => "allow",
            BackfillOverlap::Buffer => "buffer",
            BackfillOverlap::Skip => "skip",
        }
    }

    /// The mode `text` spells, or the message saying what is expected.
    ///
    /// # Errors
    ///
    /// Anything but `allow`, `buffer` or `skip`.
    pub fn parse(text: &str) -> Result<Self, String> {
        BackfillOverlap::ALL
            .into_iter()
            .find(|o| o.as_str() == text)
            .ok_or_else(|| {
                format!("invalid overlap {text:?}: expected \"allow\", \"buffer\" or \"skip\"")
            })
    }

    /// The job overlap policy the claim applies to a fire of this backfill.
    pub fn policy(self) -> super::Overlap {
        match self {
            BackfillOverlap::Allow => super::Overlap::Allow,
            BackfillOverlap::Buffer => super::Overlap::Forbid,
            BackfillOverlap::Skip => super::Overlap::Skip,
        }
    }
}

/// Where a fire came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum FireOrigin {
    /// Its trigger's schedule, a run-now, an event or a start: stored as `''`.
    #[default]
    Plain,
    /// A backfill, with its overlap mode: stored as `backfill:MODE`.
    Backfill(BackfillOverlap),
    /// A replay of the failed fire `of` (the first fire, for a replay of a
    /// replay): stored as `replay:FIRE_ID`.
    Replay { of: String },
}

impl FireOrigin {
    /// The stored text: `''`, `backfill:MODE` or `replay:FIRE_ID`.
    pub fn to_stored(&self) -> String {
        match self {
            FireOrigin::Plain => String::new(),
            FireOrigin::Backfill(mode) => format!("backfill:{}", mode.as_str()),
            FireOrigin::Replay { of } => format!("replay:{of}"),
        }
    }

    /// The origin a stored text names. Text this build does not know reads
    /// as [`FireOrigin::Plain`]: a fire is never refused for its origin.
    pub fn from_stored(text: &str) -> Self {
        if text.is_empty() {
            return FireOrigin::Plain;
        }
        match text.split_once(':') {
            Some(("backfill", mode)) => BackfillOverlap::parse(mode)
                .map(FireOrigin::Backfill)
                .unwrap_or_default(),
            Some(("replay", of)) if !of.is_empty() => FireOrigin::Replay { of: of.to_string() },
            _ => FireOrigin::Plain,
        }
    }

    /// `""`, `"backfill"` or `"replay"`: the kind, as history details and
    /// the metrics' `origin` label name it.
    pub fn kind(&self) -> &'static str {
        match self {
            FireOrigin::Plain => "",
            FireOrigin::Backfill(_) => "backfill",
            FireOrigin::Replay { .. } => "replay",
        }
    }

    pub fn is_plain(&self) -> bool {
        *self == FireOrigin::Plain
    }

    /// The overlap policy the claim applies to this fire, given its job's:
    /// a backfill's own mode, the job's for every other fire.
    pub fn overlap(&self, job: super::Overlap) -> super::Overlap {
        match self {
            FireOrigin::Backfill(mode) => mode.policy(),
            _ => job,
        }
    }

    /// The overlap the claim applies to a fire whose stored origin is
    /// `stored`, given its job's policy. The plain origin (`''`) costs one
    /// length check: the claim asks this of every candidate.
    pub fn overlap_of_stored(stored: &str, job: super::Overlap) -> super::Overlap {
        if stored.is_empty() {
            return job;
        }
        FireOrigin::from_stored(stored).overlap(job)
    }
}

impl fmt::Display for FireOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_stored())
    }
}

/// Whether a job pattern of operator commands and alert rules (a job key,
/// `GROUP/*` or `*`; see [`super::events::check_job_pattern`]) covers `job_key`.
pub fn job_pattern_covers(pattern: &str, job_key: &str) -> bool {
    match pattern {
        "*" => true,
        p => match p.strip_suffix("/*") {
            Some(group) => job_key.split_once('/').is_some_and(|(g, _)| g == group),
            None => p == job_key,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Overlap;

    #[test]
    fn origins_read_back_as_stored_and_unknown_text_reads_as_plain() {
        for origin in [
            FireOrigin::Plain,
            FireOrigin::Backfill(BackfillOverlap::Allow),
            FireOrigin::Backfill(BackfillOverlap::Buffer),
            FireOrigin::Backfill(BackfillOverlap::Skip),
            FireOrigin::Replay {
                of: "0190-abc".into(),
            },
        ] {
            assert_eq!(FireOrigin::from_stored(&origin.to_stored()), origin);
        }
        for odd in ["backfill:sideways", "replay:", "later:x", "backfill"] {
            assert_eq!(FireOrigin::from_stored(odd), FireOrigin::Plain, "{odd}");
        }
    }

    #[test]
    fn a_backfill_overlap_mode_overrides_the_jobs_policy_and_nothing_else_does() {
        assert_eq!(
            FireOrigin::overlap_of_stored("backfill:buffer", Overlap::Allow),
            Overlap::Forbid
        );
        assert_eq!(
            FireOrigin::overlap_of_stored("backfill:allow", Overlap::Skip),
            Overlap::Allow
        );
        assert_eq!(
            FireOrigin::overlap_of_stored("backfill:skip", Overlap::Forbid),
            Overlap::Skip
        );
        assert_eq!(
            FireOrigin::overlap_of_stored("replay:f1", Overlap::BufferOne),
            Overlap::BufferOne
        );
        assert_eq!(
            FireOrigin::overlap_of_stored("", Overlap::Forbid),
            Overlap::Forbid
        );
    }

    #[test]
    fn a_bad_overlap_mode_says_what_is_expected() {
        let e = BackfillOverlap::parse("forbid").unwrap_err();
        assert!(e.contains("\"forbid\"") && e.contains("\"buffer\""), "{e}");
    }

    #[test]
    fn job_patterns_cover_a_key_a_group_or_everything() {
        assert!(job_pattern_covers("*", "g/a"));
        assert!(job_pattern_covers("g/*", "g/a"));
        assert!(!job_pattern_covers("g/*", "gg/a"));
        assert!(job_pattern_covers("g/a", "g/a"));
        assert!(!job_pattern_covers("g/a", "g/ab"));
    }
}
