//! The plan for a trigger that has come due: which fires to
//! create, which were missed (misfire policy), which wall times did not exist
//! (DST gaps), and the next fire time. Pure: every instant comes in as an argument.

use super::calendar::Exclusion;
use super::cron::{CronEvent, CronSchedule};
use super::interval::IntervalSchedule;
use chrono::{DateTime, Utc};
use std::time::Duration;

pub use crate::domain::{MisfirePolicy, TriggerKind};

/// A trigger's schedule, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TriggerSpec {
    pub kind: TriggerKind,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub misfire: MisfirePolicy,
    /// Up to this many milliseconds of delay per fire (0: none), so that
    /// many jobs on one schedule do not all start at once; see
    /// [`TriggerSpec::jitter_delay`].
    pub jitter_ms: u64,
    /// The exclusion calendars the trigger honours (see `schedule::calendar`):
    /// a scheduled time one of them excludes does not fire, and the trigger
    /// moves to its next included time. Empty: none.
    pub calendars: Vec<String>,
}

/// A trigger whose stored schedule can no longer be computed (e.g. a zone removed
/// from the time zone database): the trigger goes to ERROR with this message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

/// One event of a schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Fire(i64),
    /// A wall time that did not exist (spring forward); `at_ms` is when the clock jumped.
    Gap {
        at_ms: i64,
        local: String,
    },
}

enum Compiled {
    Cron(Box<CronSchedule>),
    Every(IntervalSchedule),
    At(i64),
    Never,
}

fn instant(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl TriggerSpec {
    /// Whether this stored schedule is what `declared` asks for, so that
    /// declaring it again (every `serve` start, every node of a cluster) keeps
    /// its anchor, state and next fire. An interval declared without a start
    /// is anchored when first stored: any anchor it got then still matches.
    pub fn is_declared_by(&self, declared: &TriggerSpec) -> bool {
        if matches!(declared.kind, TriggerKind::Every { .. }) && declared.start_ms.is_none() {
            return self.kind == declared.kind
                && self.end_ms == declared.end_ms
                && self.misfire == declared.misfire
                && self.jitter_ms == declared.jitter_ms
                && self.calendars == declared.calendars;
        }
        self == declared
    }

    /// How long after its scheduled time the fire of `trigger_key` at
    /// `scheduled` is due: a value in `0..=jitter_ms` derived from the two,
    /// so every node, and a recovery or a re-planned claim, gets the same;
    /// and less than the time to `next` (the trigger's fire after it), so a
    /// jittered fire never passes the next one.
    pub fn jitter_delay(&self, trigger_key: &str, scheduled: i64, next: Option<i64>) -> i64 {
        if self.jitter_ms == 0 {
            return 0;
        }
        let mut bound = i64::try_from(self.jitter_ms).unwrap_or(i64::MAX);
        if let Some(next) = next {
            bound = bound.min(next.saturating_sub(scheduled).saturating_sub(1));
        }
        if bound <= 0 {
            return 0;
        }
        // FNV-1a over the key and the time: stable across builds and nodes.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in trigger_key.bytes().chain(scheduled.to_le_bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        i64::try_from(hash % (u64::try_from(bound).unwrap_or(0) + 1)).unwrap_or(0)
    }

    fn compile(&self) -> Result<Compiled, SpecError> {
        Ok(match &self.kind {
            TriggerKind::Cron { expr, tz } => Compiled::Cron(Box::new(
                CronSchedule::parse(expr, tz).map_err(|e| SpecError(e.to_string()))?,
            )),
            TriggerKind::Every { period_ms, repeat } => {
                let start = instant(self.start_ms.unwrap_or(0));
                let period = Duration::from_millis(u64::try_from(*period_ms).unwrap_or(0));
                Compiled::Every(
                    IntervalSchedule::new(start, period, *repeat)
                        .map_err(|e| SpecError(e.to_string()))?,
                )
            }
            TriggerKind::At(ms) => Compiled::At(*ms),
            TriggerKind::OnStart | TriggerKind::Once | TriggerKind::Event { .. } => Compiled::Never,
        })
    }

    /// Events strictly after `after_ms`, in order, within the trigger's bounds.
    fn events_after(&self, compiled: &Compiled, after_ms: i64, mut f: impl FnMut(Event) -> bool) {
        let after_ms = match self.start_ms {
            Some(start) if after_ms < start => start - 1,
            _ => after_ms,
        };
        let in_bounds = |ms: i64| self.end_ms.is_none_or(|end| ms <= end);
        match compiled {
            Compiled::Cron(c) => {
                for event in c.events_after(instant(after_ms)) {
                    let e = match event {
                        CronEvent::Fire(t) => Event::Fire(t.timestamp_millis()),
                        CronEvent::DstGap { local, at } => Event::Gap {
                            at_ms: at.timestamp_millis(),
                            local: local.to_string(),
                        },
                    };
                    let ms = match &e {
                        Event::Fire(ms) | Event::Gap { at_ms: ms, .. } => *ms,
                    };
                    if !in_bounds(ms) || !f(e) {
                        return;
                    }
                }
            }
            Compiled::Every(s) => {
                let mut t = after_ms;
                while let Some(next) = s.next_after(instant(t)) {
                    let ms = next.timestamp_millis();
                    if !in_bounds(ms) || !f(Event::Fire(ms)) {
                        return;
                    }
                    t = ms;
                }
            }
            Compiled::At(at) => {
                if *at > after_ms && in_bounds(*at) {
                    f(Event::Fire(*at));
                }
            }
            Compiled::Never => {}
        }
    }

    /// [`TriggerSpec::events_after`] without the fire times `exclusion`
    /// excludes (and the DST gaps it excludes): each excluded fire makes the
    /// walk jump past the excluded stretch around it, at most
    /// [`MAX_EXCLUDED_JUMPS`] times, so a calendar excluding everything
    /// cannot hold the claim.
    fn included_after(
        &self,
        compiled: &Compiled,
        after_ms: i64,
        exclusion: Option<&Exclusion>,
        mut f: impl FnMut(Event) -> bool,
    ) -> Result<(), SpecError> {
        let Some(exclusion) = exclusion else {
            self.events_after(compiled, after_ms, f);
            return Ok(());
        };
        let mut after = after_ms;
        for _ in 0..MAX_EXCLUDED_JUMPS {
            let mut jump = None;
            self.events_after(compiled, after, |e| match e {
                Event::Fire(ms) => match exclusion.skip_to(ms) {
                    Some(to) => {
                        jump = Some(to.max(ms + 1));
                        false
                    }
                    None => f(Event::Fire(ms)),
                },
                Event::Gap { at_ms, .. } if exclusion.skip_to(at_ms).is_some() => true,
                gap => f(gap),
            });
            match jump {
                Some(to) => after = to - 1,
                None => return Ok(()),
            }
        }
        Err(SpecError(format!(
            "its calendars ({}) exclude every fire time tried: gave up after skipping \
             {MAX_EXCLUDED_JUMPS} excluded stretches from {}",
            exclusion.names().join(", "),
            instant(after_ms.saturating_add(1)).to_rfc3339()
        )))
    }

    /// The trigger's first event at or after `from_ms`: its first fire time, or
    /// the DST gap before it (recorded as skipped when it comes due, see
    /// [`TriggerSpec::plan`]); `None` if the trigger never fires.
    ///
    /// # Errors
    ///
    /// When the stored schedule cannot be computed.
    pub fn first_due(&self, from_ms: i64) -> Result<Option<i64>, SpecError> {
        self.first_due_excluding(from_ms, None)
    }

    /// [`TriggerSpec::first_due`], skipping what `exclusion` (the trigger's
    /// calendars, resolved) excludes.
    ///
    /// # Errors
    ///
    /// When the stored schedule cannot be computed, or its calendars exclude
    /// every time tried.
    pub fn first_due_excluding(
        &self,
        from_ms: i64,
        exclusion: Option<&Exclusion>,
    ) -> Result<Option<i64>, SpecError> {
        if let TriggerKind::At(at) = self.kind {
            // A one-shot in the past is still its one fire: the misfire policy
            // decides whether it runs late or is recorded as missed. One its
            // calendar excludes never fires.
            let excluded = exclusion.is_some_and(|x| x.excluded_by(at).is_some());
            return Ok(self
                .end_ms
                .is_none_or(|end| at <= end)
                .then_some(at)
                .filter(|_| !excluded));
        }
        let compiled = self.compile()?;
        let mut first = None;
        self.included_after(&compiled, from_ms - 1, exclusion, |e| {
            first = Some(match e {
                Event::Fire(ms) | Event::Gap { at_ms: ms, .. } => ms,
            });
            false
        })?;
        Ok(first)
    }

    /// Plans a due trigger whose stored next fire is `next_fire_ms` (<= horizon).
    ///
    /// # Errors
    ///
    /// When the stored schedule cannot be computed.
    pub fn plan(
        &self,
        next_fire_ms: i64,
        now_ms: i64,
        horizon_ms: i64,
        limits: &MisfireLimits,
    ) -> Result<Plan, SpecError> {
        self.plan_excluding(next_fire_ms, now_ms, horizon_ms, limits, None)
    }

    /// [`TriggerSpec::plan`], where the times `exclusion` (the trigger's
    /// calendars, resolved) excludes are neither run nor misfired: they are
    /// not fire times at all, as in Quartz.
    ///
    /// # Errors
    ///
    /// When the stored schedule cannot be computed, or its calendars exclude
    /// every time tried.
    pub fn plan_excluding(
        &self,
        next_fire_ms: i64,
        now_ms: i64,
        horizon_ms: i64,
        limits: &MisfireLimits,
        exclusion: Option<&Exclusion>,
    ) -> Result<Plan, SpecError> {
        let compiled = self.compile()?;
        let mut due = Vec::new();
        let mut gaps = Vec::new();
        let mut next = None;
        let mut truncated = false;
        // Walk the events from the stored next one up to the horizon, keeping at
        // most MAX_WALK of them; a long outage of a frequent trigger jumps to
        // "now" instead of walking it all. The stored next event is a fire or a
        // DST gap (see below), so the walk starts just before it.
        self.included_after(
            &compiled,
            next_fire_ms.saturating_sub(1),
            exclusion,
            |e| match e {
                Event::Fire(ms) if ms > horizon_ms => {
                    next = Some(ms);
                    false
                }
                Event::Fire(ms) => {
                    if due.len() >= MAX_WALK {
                        truncated = true;
                        return false;
                    }
                    due.push(ms);
                    true
                }
                Event::Gap { at_ms, local } => {
                    if at_ms > horizon_ms {
                        // A gap before the next fire is the trigger's next event:
                        // it comes due when the clock jumps and is recorded then,
                        // as a node running through it must (not only an outage
                        // spanning it, which walks past it here).
                        next = Some(at_ms);
                        return false;
                    }
                    if gaps.len() < MAX_RECORDED {
                        gaps.push((at_ms, local));
                    }
                    true
                }
            },
        )?;
        let mut uncounted = false;
        if truncated {
            // Resume from the horizon; what lies between is missed and only counted.
            let resume = horizon_ms.max(due.last().copied().unwrap_or(horizon_ms));
            self.included_after(&compiled, resume, exclusion, |e| match e {
                Event::Fire(ms) => {
                    next = Some(ms);
                    false
                }
                Event::Gap { .. } => true,
            })?;
            uncounted = true;
        }
        let threshold = now_ms - limits.threshold_ms;
        let split = due.partition_point(|&ms| ms < threshold);
        let (late, on_time) = due.split_at(split);
        let mut run: Vec<i64> = Vec::new();
        let mut missed: Vec<i64> = Vec::new();
        match (late.is_empty(), self.misfire) {
            (true, _) => {}
            (false, MisfirePolicy::Skip) => missed.extend_from_slice(late),
            (false, MisfirePolicy::FireOnce) => {
                let (last, rest) = late
                    .split_last()
                    .map_or((None, &late[..0]), |(l, r)| (Some(*l), r));
                missed.extend_from_slice(rest);
                run.extend(last);
            }
            (false, MisfirePolicy::FireNow) => {
                let keep = late.len().saturating_sub(limits.catch_up);
                missed.extend_from_slice(&late[..keep]);
                run.extend_from_slice(&late[keep..]);
            }
        }
        run.extend_from_slice(on_time);
        let missed_count = missed.len() as u64;
        missed.truncate(MAX_RECORDED);
        Ok(Plan {
            run,
            misfired: missed,
            misfired_total: missed_count,
            misfired_uncounted: uncounted,
            gaps,
            next,
        })
    }
}

/// The fire times of a trigger in a range, for a backfill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backfill {
    /// The times, oldest first, at most the `max` asked for.
    pub times: Vec<i64>,
    /// How many times the range holds in all, counted up to [`MAX_BACKFILL_COUNT`].
    pub total: u64,
    /// The range holds more than [`MAX_BACKFILL_COUNT`] times: `total` is that bound.
    pub more: bool,
}

/// Most fire times a backfill counts before it stops counting.
pub const MAX_BACKFILL_COUNT: u64 = 1_000_000;

impl TriggerSpec {
    /// The times this trigger would have fired at in `[from_ms, to_ms)`, by
    /// the same rules as its plan: cron in its time zone (a wall time that
    /// did not exist is no fire; a repeated one fires as the schedule says),
    /// an interval from its anchor, a one-shot, all within the trigger's
    /// start and end. At most `max` are kept; the rest are counted.
    /// Triggers without a clock (`on-start`, `once`, `event`) have none.
    ///
    /// # Errors
    ///
    /// When the stored schedule cannot be computed.
    pub fn times_in(&self, from_ms: i64, to_ms: i64, max: usize) -> Result<Backfill, SpecError> {
        let compiled = self.compile()?;
        let mut out = Backfill {
            times: Vec::new(),
            total: 0,
            more: false,
        };
        self.events_after(&compiled, from_ms.saturating_sub(1), |e| match e {
            Event::Fire(ms) if ms >= to_ms => false,
            Event::Fire(ms) => {
                if out.total >= MAX_BACKFILL_COUNT {
                    out.more = true;
                    return false;
                }
                out.total += 1;
                if out.times.len() < max {
                    out.times.push(ms);
                }
                true
            }
            Event::Gap { at_ms, .. } => at_ms < to_ms,
        });
        Ok(out)
    }
}

/// Most excluded stretches a trigger's walk jumps over in one step: then the
/// trigger goes to ERROR instead of holding the claim.
pub const MAX_EXCLUDED_JUMPS: usize = 1_000;
/// Most events walked in one plan.
const MAX_WALK: usize = 10_000;
/// Most misfired fires and DST gaps recorded one by one in one plan; the rest are counted.
const MAX_RECORDED: usize = 100;

/// The misfire settings of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MisfireLimits {
    /// A fire later than this is misfired (Quartz's default: 60 s).
    pub threshold_ms: i64,
    /// With `fire-now`, how many missed fires may still run (the catch-up window).
    pub catch_up: usize,
}

impl Default for MisfireLimits {
    fn default() -> Self {
        MisfireLimits {
            threshold_ms: 60_000,
            catch_up: 10,
        }
    }
}

/// What to do with a due trigger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Scheduled times to create fires for.
    pub run: Vec<i64>,
    /// Missed scheduled times to record as misfired (at most 100).
    pub misfired: Vec<i64>,
    /// How many were missed in all (beyond those listed).
    pub misfired_total: u64,
    /// True when an outage was too long to count every missed fire.
    pub misfired_uncounted: bool,
    /// Wall times that did not exist, to record as skipped (`dst-gap`).
    pub gaps: Vec<(i64, String)>,
    /// The trigger's next fire time after this plan; `None`: it is complete.
    pub next: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    fn cron(expr: &str, misfire: MisfirePolicy) -> TriggerSpec {
        TriggerSpec {
            kind: TriggerKind::Cron {
                expr: expr.into(),
                tz: "UTC".into(),
            },
            start_ms: None,
            end_ms: None,
            misfire,
            jitter_ms: 0,
            calendars: Vec::new(),
        }
    }

    #[test]
    fn jitter_is_the_same_for_a_fire_everywhere_and_never_reaches_the_next_fire() {
        let spec = TriggerSpec {
            kind: TriggerKind::Every {
                period_ms: 10_000,
                repeat: None,
            },
            start_ms: Some(0),
            end_ms: None,
            misfire: MisfirePolicy::FireNow,
            jitter_ms: 30_000,
            calendars: Vec::new(),
        };
        let delays: Vec<i64> = (0..200)
            .map(|i| spec.jitter_delay("g/j:every", i * 10_000, Some((i + 1) * 10_000)))
            .collect();
        assert_eq!(
            delays,
            (0..200)
                .map(|i| spec.jitter_delay("g/j:every", i * 10_000, Some((i + 1) * 10_000)))
                .collect::<Vec<_>>(),
            "derived from the trigger and the time only"
        );
        assert!(delays.iter().all(|d| (0..10_000).contains(d)), "{delays:?}");
        assert!(delays.iter().any(|d| *d > 5_000) && delays.iter().any(|d| *d < 5_000));
        // Without a next fire the jitter bounds it; without jitter, no delay.
        assert!((0..=30_000).contains(&spec.jitter_delay("g/j:every", 7, None)));
        let none = TriggerSpec {
            jitter_ms: 0,
            calendars: Vec::new(),
            ..spec.clone()
        };
        assert_eq!(none.jitter_delay("g/j:every", 7, None), 0);
        // Another trigger on the same schedule gets other delays.
        let other: Vec<i64> = (0..200)
            .map(|i| spec.jitter_delay("g/k:every", i * 10_000, Some((i + 1) * 10_000)))
            .collect();
        assert_ne!(delays, other);
    }

    #[test]
    fn an_interval_declared_again_without_a_start_keeps_its_anchor() {
        let declared = TriggerSpec {
            kind: TriggerKind::Every {
                period_ms: 3_600_000,
                repeat: None,
            },
            start_ms: None,
            end_ms: None,
            misfire: MisfirePolicy::FireNow,
            jitter_ms: 0,
            calendars: Vec::new(),
        };
        let stored = TriggerSpec {
            start_ms: Some(ms("2030-01-01T10:00:00Z")),
            ..declared.clone()
        };
        assert!(stored.is_declared_by(&declared));
        // Any change of what was declared is a new declaration.
        let faster = TriggerSpec {
            kind: TriggerKind::Every {
                period_ms: 60_000,
                repeat: None,
            },
            ..declared.clone()
        };
        assert!(!stored.is_declared_by(&faster));
        let anchored = TriggerSpec {
            start_ms: Some(ms("2030-01-02T00:00:00Z")),
            ..declared.clone()
        };
        assert!(!stored.is_declared_by(&anchored));
        assert!(stored.is_declared_by(&stored));
    }

    #[test]
    fn an_on_time_trigger_runs_its_due_fire_and_moves_to_the_next() {
        let spec = cron("0 * * * * ?", MisfirePolicy::FireNow);
        let now = ms("2030-01-01T10:00:00.010Z");
        let plan = spec
            .plan(
                ms("2030-01-01T10:00:00Z"),
                now,
                now + 50,
                &MisfireLimits::default(),
            )
            .unwrap();
        assert_eq!(plan.run, [ms("2030-01-01T10:00:00Z")]);
        assert!(plan.misfired.is_empty());
        assert_eq!(plan.next, Some(ms("2030-01-01T10:01:00Z")));
    }

    #[test]
    fn after_downtime_each_policy_bounds_what_runs_and_records_the_rest() {
        let now = ms("2030-01-01T12:00:30Z");
        let next = ms("2030-01-01T10:00:00Z"); // two hours of minutely fires missed
        let limits = MisfireLimits::default();
        // 12:00:00 is 30 s late, within the threshold: it runs under every policy.
        let skip = cron("0 * * * * ?", MisfirePolicy::Skip)
            .plan(next, now, now, &limits)
            .unwrap();
        assert_eq!(skip.run, [ms("2030-01-01T12:00:00Z")]);
        assert_eq!(skip.misfired_total, 120);
        assert_eq!(skip.misfired.len(), 100);
        assert_eq!(skip.next, Some(ms("2030-01-01T12:01:00Z")));

        let once = cron("0 * * * * ?", MisfirePolicy::FireOnce)
            .plan(next, now, now, &limits)
            .unwrap();
        assert_eq!(
            once.run,
            [ms("2030-01-01T11:59:00Z"), ms("2030-01-01T12:00:00Z")]
        );
        assert_eq!(once.misfired_total, 119);

        let now_policy = cron("0 * * * * ?", MisfirePolicy::FireNow)
            .plan(next, now, now, &limits)
            .unwrap();
        assert_eq!(
            now_policy.run.len(),
            11,
            "10 late fires of the catch-up window plus the on-time one"
        );
        assert_eq!(now_policy.misfired_total, 110);
    }

    #[test]
    fn an_every_second_trigger_after_a_long_outage_does_not_walk_every_second() {
        let spec = TriggerSpec {
            kind: TriggerKind::Every {
                period_ms: 1000,
                repeat: None,
            },
            start_ms: Some(0),
            end_ms: None,
            misfire: MisfirePolicy::Skip,
            jitter_ms: 0,
            calendars: Vec::new(),
        };
        let now = ms("2030-01-01T00:00:00Z");
        let plan = spec
            .plan(1000, now, now, &MisfireLimits::default())
            .unwrap();
        assert!(plan.misfired_uncounted);
        assert_eq!(plan.next, Some(now + 1000));
        assert!(plan.run.is_empty());
    }

    #[test]
    fn dst_gaps_are_reported_and_one_shots_complete() {
        let spec = TriggerSpec {
            kind: TriggerKind::Cron {
                expr: "0 30 2 * * ?".into(),
                tz: "America/New_York".into(),
            },
            start_ms: None,
            end_ms: None,
            misfire: MisfirePolicy::FireNow,
            jitter_ms: 0,
            calendars: Vec::new(),
        };
        let next = ms("2027-03-13T07:30:00Z");
        let now = ms("2027-03-15T07:00:00Z");
        let plan = spec
            .plan(
                next,
                now,
                now,
                &MisfireLimits {
                    threshold_ms: i64::MAX / 4,
                    catch_up: 10,
                },
            )
            .unwrap();
        assert_eq!(plan.run, [next, ms("2027-03-15T06:30:00Z")]);
        assert_eq!(
            plan.gaps,
            [(
                ms("2027-03-14T07:00:00Z"),
                "2027-03-14 02:30:00".to_string()
            )]
        );

        let at = TriggerSpec {
            kind: TriggerKind::At(5_000),
            start_ms: None,
            end_ms: None,
            misfire: MisfirePolicy::FireNow,
            jitter_ms: 0,
            calendars: Vec::new(),
        };
        assert_eq!(at.first_due(0).unwrap(), Some(5_000));
        let plan = at
            .plan(5_000, 5_000, 5_000, &MisfireLimits::default())
            .unwrap();
        assert_eq!((plan.run, plan.next), (vec![5_000], None));
    }

    #[test]
    fn a_node_running_through_a_dst_gap_comes_due_at_the_gap_and_records_it() {
        // 02:30 does not exist in New York on 2027-03-14: the clock jumps from
        // 02:00 EST (07:00Z) to 03:00 EDT.
        let spec = TriggerSpec {
            kind: TriggerKind::Cron {
                expr: "0 30 2 * * ?".into(),
                tz: "America/New_York".into(),
            },
            start_ms: None,
            end_ms: None,
            misfire: MisfirePolicy::FireNow,
            jitter_ms: 0,
            calendars: Vec::new(),
        };
        let limits = MisfireLimits::default();
        let saturday = ms("2027-03-13T07:30:00Z");
        let plan = spec.plan(saturday, saturday, saturday, &limits).unwrap();
        assert_eq!(plan.run, [saturday]);
        let jump = ms("2027-03-14T07:00:00Z");
        assert_eq!(plan.next, Some(jump), "the gap is the next event");
        // On time, at the jump: nothing runs, the gap is recorded, then Monday.
        let plan = spec.plan(jump, jump + 5, jump + 5, &limits).unwrap();
        assert!(plan.run.is_empty());
        assert_eq!(plan.gaps.len(), 1);
        assert_eq!(plan.gaps[0].0, jump);
        assert!(plan.gaps[0].1.contains("02:30"), "{:?}", plan.gaps);
        assert_eq!(plan.next, Some(ms("2027-03-15T06:30:00Z")));
        // Declared just before the gap, its first event is the gap.
        assert_eq!(spec.first_due(jump - 10_000).unwrap(), Some(jump));
    }

    #[test]
    fn a_backfill_range_has_the_schedules_times_across_both_dst_changes() {
        let ny = |expr: &str| TriggerSpec {
            kind: TriggerKind::Cron {
                expr: expr.into(),
                tz: "America/New_York".into(),
            },
            start_ms: None,
            end_ms: None,
            misfire: MisfirePolicy::FireNow,
            jitter_ms: 0,
            calendars: Vec::new(),
        };
        // Spring: 02:30 does not exist on 2026-03-08 (EST to EDT at 07:00Z).
        let spring = ny("0 30 1,2,3 * * ?")
            .times_in(ms("2026-03-07T00:00:00Z"), ms("2026-03-10T00:00:00Z"), 100)
            .unwrap();
        let expected: Vec<i64> = [
            "2026-03-07T06:30:00Z",
            "2026-03-07T07:30:00Z",
            "2026-03-07T08:30:00Z",
            "2026-03-08T06:30:00Z",
            "2026-03-08T07:30:00Z",
            "2026-03-09T05:30:00Z",
            "2026-03-09T06:30:00Z",
            "2026-03-09T07:30:00Z",
        ]
        .map(ms)
        .into();
        assert_eq!(spring.times, expected);
        assert_eq!((spring.total, spring.more), (8, false));
        // Autumn: 01:30 happens twice on 2025-11-02 and fires once, at the
        // second (standard time) one.
        let autumn = ny("0 30 1 * * ?")
            .times_in(ms("2025-11-01T00:00:00Z"), ms("2025-11-04T00:00:00Z"), 100)
            .unwrap();
        let expected: Vec<i64> = [
            "2025-11-01T05:30:00Z",
            "2025-11-02T06:30:00Z",
            "2025-11-03T06:30:00Z",
        ]
        .map(ms)
        .into();
        assert_eq!(autumn.times, expected);
        // [from, to): a time at `to` is not in the range, one at `from` is.
        let edge = ny("0 30 1 * * ?")
            .times_in(ms("2025-11-01T05:30:00Z"), ms("2025-11-02T06:30:00Z"), 100)
            .unwrap();
        assert_eq!(edge.times, [ms("2025-11-01T05:30:00Z")]);
    }

    #[test]
    fn a_backfill_keeps_at_most_max_times_and_counts_the_rest() {
        let every = TriggerSpec {
            kind: TriggerKind::Every {
                period_ms: 60_000,
                repeat: None,
            },
            start_ms: Some(ms("2030-01-01T00:00:00Z")),
            end_ms: None,
            misfire: MisfirePolicy::FireNow,
            jitter_ms: 0,
            calendars: Vec::new(),
        };
        let day = every
            .times_in(ms("2030-01-01T00:00:00Z"), ms("2030-01-02T00:00:00Z"), 10)
            .unwrap();
        assert_eq!(day.times.len(), 10);
        assert_eq!(day.total, 1440);
        assert_eq!(day.times[1], ms("2030-01-01T00:01:00Z"));
        // A one-shot: its one time if in range; none before the anchor.
        let at = TriggerSpec {
            kind: TriggerKind::At(5_000),
            start_ms: None,
            ..every.clone()
        };
        assert_eq!(at.times_in(0, 10_000, 10).unwrap().times, [5_000]);
        assert!(at.times_in(6_000, 10_000, 10).unwrap().times.is_empty());
        assert!(
            every
                .times_in(0, ms("2029-12-31T00:00:00Z"), 10)
                .unwrap()
                .times
                .is_empty()
        );
    }

    #[test]
    fn bounds_limit_the_fires() {
        let spec = TriggerSpec {
            kind: TriggerKind::Every {
                period_ms: 60_000,
                repeat: None,
            },
            start_ms: Some(ms("2030-01-01T00:00:00Z")),
            end_ms: Some(ms("2030-01-01T00:02:00Z")),
            misfire: MisfirePolicy::FireNow,
            jitter_ms: 0,
            calendars: Vec::new(),
        };
        assert_eq!(spec.first_due(0).unwrap(), Some(ms("2030-01-01T00:00:00Z")));
        let t = ms("2030-01-01T00:02:00Z");
        let plan = spec.plan(t, t, t, &MisfireLimits::default()).unwrap();
        assert_eq!(plan.next, None);
    }
}
