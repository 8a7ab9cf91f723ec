//! The claim's decisions, apart from the SQL that reads and writes them.
//!
//! `fire_acquire` reads what is due in one transaction, asks [`plan_due`] what
//! becomes of each due trigger (which fires are created, which of them this
//! node claims, what is recorded as misfired or fell in a DST gap, where each
//! trigger moves next) and [`pick_waiting`] which waiting fires it claims (the
//! overlap policy, the budget), then writes the answers in that transaction.
//!
//! Everything here is a function of the rows read and the database clock: no
//! I/O, no clock of its own, so every policy is tested without a database. It
//! must never decide on something the SQL did not read in the same
//! transaction: a decision is only as good as the locks the reads took.
//!
//! Each job's share of the claiming node comes in as a [`JobRoom`] (the node
//! knows what it holds of each job): the three places a fire is claimed take
//! from it, `holdable` and the claimed-or-queued split in [`plan_due`] (a fire
//! of a job without room is queued and counted as deferred), and the loop of
//! [`pick_waiting`] (it stays waiting).

use super::model::{
    AcquireParams, ClaimFlow, FireClaim, HistoryEntry, HistoryStatus, JobDef, JobRoom, Overlap,
    TriggerRow,
};
use super::sched::{history_row, new_id};
use crate::domain::FireOrigin;
use std::collections::{BTreeMap, HashMap, HashSet};

/// A due trigger as the claim reads it.
#[derive(Clone, Debug)]
pub(crate) struct DueTrigger {
    pub trigger: TriggerRow,
    /// The contract rank its job's module needs; `None`: unknown, any node runs it.
    pub wit_need: Option<i64>,
    /// The scheduled time of the fire it holds as a `held_claims` row, if any.
    pub held_ms: Option<i64>,
    /// Whether a `fires` row already has the trigger's next time.
    pub taken: bool,
    /// The trigger's calendars, resolved (`None`: it names none).
    pub exclusion: Option<std::sync::Arc<crate::schedule::calendar::Exclusion>>,
}

/// A `fires` row to create for a due trigger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NewFire {
    pub trigger_key: String,
    pub job_key: String,
    pub scheduled_ms: i64,
    /// The scheduled time plus the trigger's jitter for it.
    pub due_ms: i64,
    pub priority: i64,
    /// The fire's rendered keys, if its job has flow control.
    pub concurrency_key: Option<String>,
    pub rate_key: Option<String>,
}

/// What becomes of the due triggers.
#[derive(Debug, Default)]
pub(crate) struct DuePlan {
    /// Triggers whose schedule can no longer be computed: to `ERROR`, with the message.
    pub errors: Vec<(String, String)>,
    /// Triggers that move on: their next fire time.
    pub moved: Vec<(String, i64)>,
    /// Triggers with no fire left: `COMPLETE`.
    pub completed: Vec<String>,
    /// Next fires of `allow` jobs claimed as `held_claims` rows, with their priority.
    pub held: Vec<(FireClaim, i64)>,
    /// Fires created claimed by this node (`allow` jobs it runs, within the budget).
    pub claimed: Vec<NewFire>,
    /// Fires created waiting: jobs whose overlap policy decides at claim time,
    /// jobs this node cannot run, fires beyond the budget.
    pub queued: Vec<NewFire>,
    /// History rows of fires not run: misfired, DST gaps.
    pub history: Vec<HistoryEntry>,
    /// Misfired fires, each counted even where one summary row stands for many.
    pub misfired: u64,
    /// Fires queued because their job had no room left, by job.
    pub deferred: BTreeMap<String, u64>,
}

/// Decides what becomes of `due` (oldest first), whose jobs are in `jobs`, at
/// the database time `now`. At most `p.max` fires are claimed, each taken
/// from its job's `room`.
pub(crate) fn plan_due(
    due: Vec<DueTrigger>,
    jobs: &HashMap<String, JobDef>,
    p: &AcquireParams,
    room: &mut JobRoom,
    now: i64,
) -> DuePlan {
    let horizon = now + p.lookahead_ms;
    let mut out = DuePlan::default();
    let mut budget = p.max;
    // Jobs whose module this node cannot run: their fires are created for the
    // nodes that can.
    let mut unrunnable: HashSet<String> = HashSet::new();
    let mut created: Vec<NewFire> = Vec::new();
    for d in due {
        let t = d.trigger;
        let runnable = d.wit_need.is_none_or(|need| p.runs.contains(need));
        if !runnable {
            unrunnable.insert(t.job_key.clone());
        }
        let Some(next_fire) = t.next_fire_ms else {
            continue;
        };
        let exclusion = d.exclusion.as_deref();
        let plan = match t
            .spec
            .plan_excluding(next_fire, now, horizon, &p.misfire, exclusion)
        {
            Ok(plan) => plan,
            Err(e) => {
                out.errors.push((t.trigger_key.clone(), e.to_string()));
                continue;
            }
        };
        // The trigger's next fire, if its job is `allow` and runnable here, is
        // claimed as a `held_claims` row (see migration 0008) when the trigger
        // holds none and no `fires` row has that time. A time the trigger
        // holds is never made a `fires` row as well.
        let job = jobs.get(&t.job_key);
        // A job with flow control decides at claim time, as `forbid` does:
        // its fires wait until `pick_waiting` has counted their keys.
        let allow = job.filter(|j| j.overlap == Overlap::Allow && j.flow.is_empty() && runnable);
        for (i, &scheduled) in plan.run.iter().enumerate() {
            if d.held_ms == Some(scheduled) {
                continue;
            }
            let after = plan.run.get(i + 1).copied().or(plan.next);
            let delay = t.spec.jitter_delay(&t.trigger_key, scheduled, after);
            // A jittered fire waits for its due time as a `fires` row.
            let holdable = delay == 0
                && d.held_ms.is_none()
                && !d.taken
                && scheduled == next_fire
                && budget > 0;
            if let Some(job) = allow.filter(|_| holdable && room.take(&t.job_key)) {
                budget -= 1;
                let claim = FireClaim::first(new_id(), &t.trigger_key, job, scheduled, true);
                out.held.push((claim, t.priority));
                continue;
            }
            let (concurrency_key, rate_key) =
                job.map_or((None, None), |j| j.flow_keys(&t.trigger_key, None));
            created.push(NewFire {
                trigger_key: t.trigger_key.clone(),
                job_key: t.job_key.clone(),
                scheduled_ms: scheduled,
                due_ms: scheduled + delay,
                priority: t.priority,
                concurrency_key,
                rate_key,
            });
        }
        let policy = t.spec.misfire.as_str();
        for missed in &plan.misfired {
            out.history.push(history_row(
                None,
                &t.job_key,
                Some(&t.trigger_key),
                HistoryStatus::Misfired,
                Some(*missed),
                now,
                serde_json::json!({ "reason": "misfire", "policy": policy }),
            ));
        }
        out.misfired += plan.misfired_total;
        let unlisted = plan
            .misfired_total
            .saturating_sub(plan.misfired.len() as u64);
        if unlisted > 0 || plan.misfired_uncounted {
            out.history.push(history_row(
                None,
                &t.job_key,
                Some(&t.trigger_key),
                HistoryStatus::Misfired,
                None,
                now,
                serde_json::json!({ "reason": "misfire", "policy": policy,
                    "more_not_listed": unlisted, "outage_too_long_to_count": plan.misfired_uncounted }),
            ));
        }
        for (at, local) in &plan.gaps {
            out.history.push(history_row(
                None,
                &t.job_key,
                Some(&t.trigger_key),
                HistoryStatus::Skipped,
                Some(*at),
                now,
                serde_json::json!({ "reason": "dst-gap", "local_time": local }),
            ));
        }
        match plan.next {
            Some(next) => out.moved.push((t.trigger_key, next)),
            None => out.completed.push(t.trigger_key),
        }
    }
    // Fires of `allow` jobs are claimed as they are created (one statement
    // instead of insert, select and update); the others wait as `scheduled`.
    for fire in created {
        let allow = jobs
            .get(&fire.job_key)
            .is_some_and(|j| j.overlap == Overlap::Allow && j.flow.is_empty())
            && !unrunnable.contains(&fire.job_key)
            && fire.due_ms <= horizon;
        if !allow || budget == 0 {
            out.queued.push(fire);
        } else if room.take(&fire.job_key) {
            budget -= 1;
            out.claimed.push(fire);
        } else {
            *out.deferred.entry(fire.job_key.clone()).or_default() += 1;
            out.queued.push(fire);
        }
    }
    out
}

/// The group a due row is interleaved by: its job, and its concurrency key.
pub(crate) fn group_of(job_key: &str, key: Option<&str>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    job_key.hash(&mut h);
    key.hash(&mut h);
    h.finish()
}

/// Orders `items` (read oldest first, from both of the claim's windows) so
/// that each group's first comes before any group's second, its second before
/// any third, and so on, keeping the order within a group and among groups:
/// one job's (or key's) backlog then takes one place in each round of the
/// claim's budget rather than all of it. A list of one group, or of groups of
/// one, is returned as it is.
pub(crate) fn interleave_jobs<T>(items: Vec<T>, group: impl Fn(&T) -> u64) -> Vec<T> {
    if items.len() < 2 {
        return items;
    }
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let ranks: Vec<usize> = items
        .iter()
        .map(|item| {
            let n = seen.entry(group(item)).or_default();
            *n += 1;
            *n - 1
        })
        .collect();
    if ranks.windows(2).all(|w| w[0] <= w[1]) {
        return items;
    }
    let mut order: Vec<(usize, usize, T)> = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| (ranks[i], i, item))
        .collect();
    order.sort_by_key(|(rank, i, _)| (*rank, *i));
    order.into_iter().map(|(_, _, item)| item).collect()
}

/// A waiting fire (`fires` row, `scheduled`) read as a candidate to claim.
#[derive(Clone, Debug, sqlx::FromRow)]
pub(crate) struct Waiting {
    pub fire_id: String,
    pub trigger_key: String,
    pub job_key: String,
    pub scheduled_ms: i64,
    pub due_ms: i64,
    pub attempt: i64,
    pub recovering: i64,
    pub fencing: i64,
    /// `''` for clock, start and manual fires.
    pub event_id: String,
    pub depth: i64,
    /// The fire's flow keys (see `domain::flow`), if its job had flow
    /// control when the fire was created.
    pub concurrency_key: Option<String>,
    pub rate_key: Option<String>,
    /// Events folded into this fire past its first (debounce, singleton).
    pub coalesced: i64,
    /// `fires.origin` as stored: `''` for all but backfills and replays.
    pub origin: String,
}

/// The distinct flow keys among `candidates` (concurrency and rate keys in
/// one list, sorted): the rows the claim locks before [`pick_waiting`].
pub(crate) fn flow_keys(candidates: &[Waiting]) -> Vec<String> {
    let mut keys: Vec<String> = candidates
        .iter()
        .flat_map(|c| [&c.concurrency_key, &c.rate_key])
        .flatten()
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// What the claim read, under locks, of what its candidates' policies decide
/// on.
#[derive(Debug, Default)]
pub(crate) struct Guards {
    /// For each guarded job (see [`guarded_jobs`]) whose row the claim
    /// locked, whether a fire of it is running; a guarded job missing from it
    /// is being claimed by another node right now and is left for the next
    /// round.
    pub running: HashMap<String, bool>,
    /// The flow keys whose rows the claim locked; a key missing is being
    /// claimed by another node (its fires are left for the next round).
    pub locked: HashSet<String>,
    /// Running fires per concurrency key (claimed, anywhere in the cluster).
    pub key_running: HashMap<String, u32>,
    /// Admitted start times per rate key, oldest first, as stored.
    pub starts: HashMap<String, Vec<i64>>,
    /// The guarded jobs and flow keys already read (locked or not), so a
    /// second read of candidates locks only what is new.
    pub seen_jobs: HashSet<String>,
    pub seen_keys: HashSet<String>,
}

/// The jobs among `candidates` whose overlap policy decides on whether they
/// are running (`forbid`, `skip`), each once, in the order met: the claim locks
/// their rows and reads which are running before [`pick_waiting`].
pub(crate) fn guarded_jobs(candidates: &[Waiting], jobs: &HashMap<String, JobDef>) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for c in candidates {
        if jobs
            .get(&c.job_key)
            .is_some_and(|j| FireOrigin::overlap_of_stored(&c.origin, j.overlap) != Overlap::Allow)
            && !keys.contains(&c.job_key)
        {
            keys.push(c.job_key.clone());
        }
    }
    keys
}

/// Which waiting fires the claim takes.
#[derive(Debug, Default)]
pub(crate) struct Picked {
    /// Claimed: the SQL marks them `acquired` (the fencing given is the new one).
    pub claims: Vec<FireClaim>,
    /// Fires of `skip` jobs already running: deleted, recorded in `history`.
    pub skipped: Vec<String>,
    pub history: Vec<HistoryEntry>,
    /// Flow keys with fires left waiting because the key is at its limit:
    /// a second read of candidates leaves their fires out.
    pub blocked: HashSet<String>,
    /// Rate keys that admitted starts, with the starts to store (those
    /// still within the window, oldest first).
    pub starts: Vec<(String, Vec<i64>)>,
    /// The earliest time a fire waiting for its rate key may start.
    pub rate_wait_until: Option<i64>,
    /// `cancel-other` jobs found running, with the waiting fire that
    /// supersedes their running fires: the SQL marks those to stop.
    pub supersede: Vec<(String, String)>,
}

impl Picked {
    /// Adds a later pick's answers to this one's.
    pub(crate) fn absorb(&mut self, more: Picked) {
        self.claims.extend(more.claims);
        self.skipped.extend(more.skipped);
        self.history.extend(more.history);
        self.blocked.extend(more.blocked);
        for (key, starts) in more.starts {
            match self.starts.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = starts,
                None => self.starts.push((key, starts)),
            }
        }
        self.supersede.extend(more.supersede);
        self.rate_wait_until = match (self.rate_wait_until, more.rate_wait_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// Picks among `candidates` (oldest due first) up to `max` claims in all,
/// counting `claimed` (the fires this acquire claimed already), by what
/// `guards` read; takes what it admits from `guards` (a second pick over more
/// candidates goes on from there).
pub(crate) fn pick_waiting(
    candidates: Vec<Waiting>,
    jobs: &HashMap<String, JobDef>,
    guards: &mut Guards,
    claimed: &[FireClaim],
    room: &mut JobRoom,
    max: usize,
    now: i64,
) -> Picked {
    let mut out = Picked::default();
    // Rate keys that admitted a start, with the longest window they count.
    let mut admitted_rates: HashMap<String, i64> = HashMap::new();
    let mut busy: HashSet<String> = claimed.iter().map(|f| f.job_key.clone()).collect();
    // `buffer-one` jobs with a fire left waiting in this pick: their later
    // candidates are skipped (candidates come oldest first).
    let mut buffered: HashSet<String> = HashSet::new();
    // The newest candidate of each `cancel-other` job: the older are skipped.
    // (Only a job's own policy is ever `cancel-other`: none, no map.)
    let any_cancel_other = jobs.values().any(|j| j.overlap == Overlap::CancelOther);
    let newest: HashMap<String, String> = candidates
        .iter()
        .filter(|_| any_cancel_other)
        .filter(|c| {
            jobs.get(&c.job_key).is_some_and(|j| {
                FireOrigin::overlap_of_stored(&c.origin, j.overlap) == Overlap::CancelOther
            })
        })
        .map(|c| (c.job_key.clone(), c.fire_id.clone()))
        .collect();
    for c in candidates {
        if claimed.len() + out.claims.len() >= max {
            break;
        }
        let Some(job) = jobs.get(&c.job_key) else {
            continue;
        };
        // A backfill's fires follow its own overlap mode (see `FireOrigin::overlap`).
        let overlap = FireOrigin::overlap_of_stored(&c.origin, job.overlap);
        let active = match guards.running.get(&c.job_key) {
            _ if overlap == Overlap::Allow => false,
            None => continue, // another node is claiming this job's fires
            Some(running) => *running || busy.contains(&c.job_key),
        };
        if active && overlap == Overlap::Forbid {
            continue; // stays scheduled: blocked until the running fire ends
        }
        if overlap == Overlap::CancelOther {
            let newest = newest.get(&c.job_key).map(String::as_str);
            if newest != Some(c.fire_id.as_str()) {
                out.history.push(history_row(
                    Some(&c.fire_id),
                    &c.job_key,
                    Some(&c.trigger_key),
                    HistoryStatus::Skipped,
                    Some(c.scheduled_ms),
                    now,
                    serde_json::json!({ "reason": "overlap",
                        "detail": "a newer fire of this job waits (cancel-other runs the newest)" }),
                ));
                out.skipped.push(c.fire_id);
                continue;
            }
            if active {
                // Stays scheduled until the running fire, asked to stop, ends.
                if !busy.contains(&c.job_key) {
                    out.supersede.push((c.job_key.clone(), c.fire_id.clone()));
                }
                continue;
            }
        }
        if active && overlap == Overlap::BufferOne && buffered.insert(c.job_key.clone()) {
            continue; // the one fire that waits for the running one
        }
        if active && matches!(overlap, Overlap::Skip | Overlap::BufferOne) {
            let backfill = c.origin.starts_with("backfill:");
            let detail = if backfill {
                "backfill --overlap skip: a run of this job is running"
            } else if overlap == Overlap::Skip {
                "the previous fire of this job is still running"
            } else {
                "a fire of this job is running and another is waiting (buffer-one keeps one)"
            };
            out.history.push(history_row(
                Some(&c.fire_id),
                &c.job_key,
                Some(&c.trigger_key),
                HistoryStatus::Skipped,
                Some(c.scheduled_ms),
                now,
                if backfill {
                    serde_json::json!({ "reason": "overlap", "detail": detail, "origin": "backfill" })
                } else {
                    serde_json::json!({ "reason": "overlap", "detail": detail })
                },
            ));
            out.skipped.push(c.fire_id);
            continue;
        }
        if !flow_admits(&c, job, guards, &mut out, now) {
            continue; // its key is at its limit, or another node holds it
        }
        if !room.take(&c.job_key) {
            continue; // its job has its share of the node: stays waiting
        }
        if let Some(key) = &c.concurrency_key {
            *guards.key_running.entry(key.clone()).or_default() += 1;
        }
        if let (Some(key), Some(rate)) = (&c.rate_key, job.flow.rate.as_ref()) {
            guards.starts.entry(key.clone()).or_default().push(now);
            let per = admitted_rates.entry(key.clone()).or_default();
            *per = (*per).max(rate.per_ms);
        }
        busy.insert(c.job_key.clone());
        out.claims.push(FireClaim {
            fire_id: c.fire_id,
            trigger_key: c.trigger_key,
            job_key: c.job_key,
            scheduled_ms: c.scheduled_ms,
            due_ms: c.due_ms,
            attempt: u32::try_from(c.attempt).unwrap_or(1),
            recovering: c.recovering != 0,
            // The claim's UPDATE increments it in the same transaction.
            fencing: c.fencing + 1,
            job: job.clone(),
            event_id: Some(c.event_id).filter(|e| !e.is_empty()),
            depth: u32::try_from(c.depth).unwrap_or(0),
            held: false,
            flow: (c.concurrency_key.is_some() || c.rate_key.is_some() || c.coalesced > 0).then(
                || {
                    Box::new(ClaimFlow {
                        concurrency_key: c.concurrency_key,
                        rate_key: c.rate_key,
                        admitted_ms: now,
                        coalesced: u32::try_from(c.coalesced).unwrap_or(u32::MAX),
                    })
                },
            ),
            origin: FireOrigin::from_stored(&c.origin),
        });
    }
    let mut admitted: Vec<(String, i64)> = admitted_rates.into_iter().collect();
    admitted.sort();
    for (key, per) in admitted {
        let mut kept: Vec<i64> = guards.starts.get(&key).cloned().unwrap_or_default();
        kept.retain(|t| *t > now - per);
        out.starts.push((key, kept));
    }
    out
}

/// Whether `c`'s flow keys let it start now: its concurrency key has a
/// running fire fewer than its job's limit, and its rate key fewer admitted
/// starts within the job's window than its limit. A key another node holds
/// (not in `guards.locked`) admits nothing this round. A fire whose job no
/// longer declares the limit its key was rendered for is not held by it.
fn flow_admits(c: &Waiting, job: &JobDef, guards: &Guards, out: &mut Picked, now: i64) -> bool {
    if let (Some(key), Some(limit)) = (&c.concurrency_key, job.flow.concurrency.as_ref()) {
        if !guards.locked.contains(key) {
            return false;
        }
        if guards.key_running.get(key).copied().unwrap_or(0) >= limit.limit {
            out.blocked.insert(key.clone());
            return false;
        }
    }
    if let (Some(key), Some(rate)) = (&c.rate_key, job.flow.rate.as_ref()) {
        if !guards.locked.contains(key) {
            return false;
        }
        let since = now - rate.per_ms;
        let within: Vec<i64> = guards
            .starts
            .get(key)
            .map(|s| s.iter().copied().filter(|t| *t > since).collect())
            .unwrap_or_default();
        let limit = rate.limit as usize;
        if within.len() >= limit {
            // A slot frees when the start `limit` places back leaves the window.
            let mut sorted = within;
            sorted.sort_unstable();
            let free_at = sorted[sorted.len() - limit] + rate.per_ms;
            out.rate_wait_until = Some(out.rate_wait_until.map_or(free_at, |t| t.min(free_at)));
            out.blocked.insert(key.clone());
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::trigger::{MisfireLimits, MisfirePolicy, TriggerKind, TriggerSpec};
    use crate::store::model::{TriggerState, WitRange};

    const MINUTE: i64 = 60_000;
    /// 2030-01-01T10:00:00Z.
    const T0: i64 = 1_893_492_000_000;

    fn params(max: usize) -> AcquireParams {
        AcquireParams {
            node_id: "n1".into(),
            lookahead_ms: 0,
            max,
            lease_ms: 30_000,
            misfire: MisfireLimits::default(),
            runs: WitRange::up_to(1, 0),
            started: false,
            room: JobRoom::unbounded(),
        }
    }

    fn job(key: &str, overlap: Overlap) -> JobDef {
        JobDef {
            overlap,
            ..JobDef::new(key, "hello")
        }
    }

    fn jobs(list: &[JobDef]) -> HashMap<String, JobDef> {
        list.iter()
            .map(|j| (j.job_key.clone(), j.clone()))
            .collect()
    }

    fn cron(job_key: &str, expr: &str, tz: &str, misfire: MisfirePolicy, next: i64) -> DueTrigger {
        DueTrigger {
            trigger: TriggerRow {
                trigger_key: format!("{job_key}:t"),
                job_key: job_key.into(),
                spec: TriggerSpec {
                    kind: TriggerKind::Cron {
                        expr: expr.into(),
                        tz: tz.into(),
                    },
                    start_ms: None,
                    end_ms: None,
                    misfire,
                    jitter_ms: 0,
                    calendars: Vec::new(),
                },
                priority: 5,
                state: TriggerState::Waiting,
                next_fire_ms: Some(next),
                error: None,
            },
            wit_need: None,
            held_ms: None,
            taken: false,
            exclusion: None,
        }
    }

    fn minutely(job_key: &str, next: i64) -> DueTrigger {
        cron(job_key, "0 * * * * ?", "UTC", MisfirePolicy::FireNow, next)
    }

    fn reasons(history: &[HistoryEntry]) -> Vec<(HistoryStatus, String)> {
        history
            .iter()
            .map(|h| {
                let details: serde_json::Value = serde_json::from_str(&h.details).unwrap();
                (h.status, details["reason"].as_str().unwrap().to_string())
            })
            .collect()
    }

    #[test]
    fn a_jittered_fire_waits_for_its_own_due_time_and_keeps_its_scheduled_time() {
        let mut due = minutely("g/j", T0);
        due.trigger.spec.jitter_ms = 50_000;
        let delay = due
            .trigger
            .spec
            .jitter_delay(&due.trigger.trigger_key, T0, Some(T0 + MINUTE));
        assert!(delay > 0, "this trigger and time draw a delay ({delay})");
        let plan = plan_due(
            vec![due.clone()],
            &jobs(&[job("g/j", Overlap::Allow)]),
            &params(10),
            &mut JobRoom::unbounded(),
            T0 + 5,
        );
        // Not held nor claimed now: a waiting fire, due later.
        assert!(plan.held.is_empty() && plan.claimed.is_empty());
        assert_eq!(plan.queued.len(), 1);
        assert_eq!(plan.queued[0].scheduled_ms, T0);
        assert_eq!(plan.queued[0].due_ms, T0 + delay);
        assert_eq!(plan.moved, [("g/j:t".to_string(), T0 + MINUTE)]);
        // Planned again (another node, a retried claim): the same due time.
        let again = plan_due(
            vec![due],
            &jobs(&[job("g/j", Overlap::Allow)]),
            &params(10),
            &mut JobRoom::unbounded(),
            T0 + 7,
        );
        assert_eq!(again.queued, plan.queued);
    }

    #[test]
    fn an_on_time_fire_of_an_allow_job_is_held_and_its_trigger_moves_on() {
        let plan = plan_due(
            vec![minutely("g/a", T0)],
            &jobs(&[job("g/a", Overlap::Allow)]),
            &params(10),
            &mut JobRoom::unbounded(),
            T0 + 5,
        );
        assert_eq!(plan.held.len(), 1);
        let (claim, priority) = &plan.held[0];
        assert!(claim.held);
        assert_eq!(
            (claim.scheduled_ms, claim.attempt, claim.fencing),
            (T0, 1, 1)
        );
        assert_eq!(*priority, 5);
        assert!(plan.claimed.is_empty() && plan.queued.is_empty());
        assert_eq!(plan.moved, [("g/a:t".to_string(), T0 + MINUTE)]);
        assert!(plan.history.is_empty());
    }

    #[test]
    fn a_fire_of_a_forbid_or_skip_job_waits_to_be_claimed() {
        for overlap in [Overlap::Forbid, Overlap::Skip] {
            let plan = plan_due(
                vec![minutely("g/a", T0)],
                &jobs(&[job("g/a", overlap)]),
                &params(10),
                &mut JobRoom::unbounded(),
                T0,
            );
            assert!(
                plan.held.is_empty() && plan.claimed.is_empty(),
                "{overlap:?}"
            );
            assert_eq!(plan.queued.len(), 1);
            assert_eq!(plan.queued[0].scheduled_ms, T0);
        }
    }

    #[test]
    fn a_fire_of_a_module_this_node_cannot_run_waits_for_a_node_that_can() {
        let mut due = minutely("g/a", T0);
        due.wit_need = Some(2_000_000); // quartzite:job 2.0, this node runs 1.0
        let plan = plan_due(
            vec![due],
            &jobs(&[job("g/a", Overlap::Allow)]),
            &params(10),
            &mut JobRoom::unbounded(),
            T0,
        );
        assert!(plan.held.is_empty() && plan.claimed.is_empty());
        assert_eq!(plan.queued.len(), 1);
    }

    #[test]
    fn a_time_already_held_or_taken_is_not_claimed_twice() {
        let allow = jobs(&[job("g/a", Overlap::Allow)]);
        let mut held = minutely("g/a", T0);
        held.held_ms = Some(T0);
        let plan = plan_due(
            vec![held],
            &allow,
            &params(10),
            &mut JobRoom::unbounded(),
            T0,
        );
        assert!(plan.held.is_empty() && plan.claimed.is_empty() && plan.queued.is_empty());
        assert_eq!(plan.moved, [("g/a:t".to_string(), T0 + MINUTE)]);

        // A `fires` row has the time: the insert's ON CONFLICT keeps the one there.
        let mut taken = minutely("g/a", T0);
        taken.taken = true;
        let plan = plan_due(
            vec![taken],
            &allow,
            &params(10),
            &mut JobRoom::unbounded(),
            T0,
        );
        assert!(plan.held.is_empty());
        assert_eq!(plan.claimed.len(), 1);
    }

    #[test]
    fn the_budget_caps_the_claims_and_the_rest_wait() {
        let due = vec![
            minutely("g/a", T0),
            minutely("g/b", T0),
            minutely("g/c", T0),
        ];
        let all = jobs(&[
            job("g/a", Overlap::Allow),
            job("g/b", Overlap::Allow),
            job("g/c", Overlap::Allow),
        ]);
        let plan = plan_due(due, &all, &params(2), &mut JobRoom::unbounded(), T0);
        let held: Vec<&str> = plan.held.iter().map(|(c, _)| c.job_key.as_str()).collect();
        assert_eq!(held, ["g/a", "g/b"]);
        assert!(plan.claimed.is_empty());
        assert_eq!(plan.queued.len(), 1);
        assert_eq!(plan.queued[0].job_key, "g/c");
        assert_eq!(
            plan.moved.len(),
            3,
            "every due trigger moves on, claimed or not"
        );
    }

    #[test]
    fn after_an_outage_each_misfire_policy_runs_what_it_says_and_records_the_rest() {
        // Two hours of minutely fires missed.
        let now = T0 + 120 * MINUTE + 30_000;
        let allow = jobs(&[job("g/a", Overlap::Allow)]);
        let run = |policy| {
            let due = cron("g/a", "0 * * * * ?", "UTC", policy, T0);
            let plan = plan_due(
                vec![due],
                &allow,
                &params(100),
                &mut JobRoom::unbounded(),
                now,
            );
            let runs = plan.held.len() + plan.claimed.len() + plan.queued.len();
            (plan, runs)
        };

        // 12:00:00 is 30 s late, within the threshold: it runs under every policy.
        let (skip, runs) = run(MisfirePolicy::Skip);
        assert_eq!(runs, 1);
        assert_eq!(skip.misfired, 120);
        assert!(
            reasons(&skip.history)
                .iter()
                .all(|r| r == &(HistoryStatus::Misfired, "misfire".into()))
        );
        // One row per missed fire up to the listing limit, and one row for the rest.
        let listed = skip
            .history
            .iter()
            .filter(|h| h.scheduled_ms.is_some())
            .count();
        assert_eq!(listed, 100);
        let summary = skip
            .history
            .iter()
            .find(|h| h.scheduled_ms.is_none())
            .unwrap();
        let details: serde_json::Value = serde_json::from_str(&summary.details).unwrap();
        assert_eq!(details["more_not_listed"], 20);
        assert_eq!(details["policy"], "skip");
        assert_eq!(skip.moved, [("g/a:t".to_string(), T0 + 121 * MINUTE)]);

        let (once, runs) = run(MisfirePolicy::FireOnce);
        assert_eq!(runs, 2, "one for all the missed fires, and the on-time one");
        assert_eq!(once.misfired, 119);

        let (now_policy, runs) = run(MisfirePolicy::FireNow);
        assert_eq!(
            runs, 11,
            "10 late fires of the catch-up window and the on-time one"
        );
        assert_eq!(now_policy.misfired, 110);
        // None of them is the trigger's stored next fire: created claimed, not held.
        assert!(now_policy.held.is_empty());
        assert_eq!(now_policy.claimed.len(), 11);
    }

    #[test]
    fn a_wall_time_skipped_by_a_dst_change_is_recorded_and_nothing_runs() {
        // 02:30 does not exist in New York on 2027-03-14: the clock jumps at 07:00Z.
        let jump = 1_805_007_600_000; // 2027-03-14T07:00:00Z
        let due = cron(
            "g/a",
            "0 30 2 * * ?",
            "America/New_York",
            MisfirePolicy::FireNow,
            jump,
        );
        let plan = plan_due(
            vec![due],
            &jobs(&[job("g/a", Overlap::Allow)]),
            &params(10),
            &mut JobRoom::unbounded(),
            jump + 5,
        );
        assert!(plan.held.is_empty() && plan.claimed.is_empty() && plan.queued.is_empty());
        assert_eq!(
            reasons(&plan.history),
            [(HistoryStatus::Skipped, "dst-gap".to_string())]
        );
        assert_eq!(plan.history[0].scheduled_ms, Some(jump));
        let details: serde_json::Value = serde_json::from_str(&plan.history[0].details).unwrap();
        assert!(
            details["local_time"].as_str().unwrap().contains("02:30"),
            "{details}"
        );
        // Monday 02:30 EDT.
        assert_eq!(plan.moved, [("g/a:t".to_string(), 1_805_092_200_000)]);
    }

    #[test]
    fn a_schedule_that_cannot_be_computed_puts_its_trigger_in_error() {
        let due = cron(
            "g/a",
            "0 * * * * ?",
            "Mars/Olympus_Mons",
            MisfirePolicy::FireNow,
            T0,
        );
        let plan = plan_due(
            vec![due],
            &jobs(&[job("g/a", Overlap::Allow)]),
            &params(10),
            &mut JobRoom::unbounded(),
            T0,
        );
        assert_eq!(plan.errors.len(), 1);
        assert_eq!(plan.errors[0].0, "g/a:t");
        assert!(plan.moved.is_empty() && plan.completed.is_empty() && plan.held.is_empty());
    }

    #[test]
    fn a_one_shot_that_ran_completes_its_trigger() {
        let mut due = minutely("g/a", T0);
        due.trigger.spec.kind = TriggerKind::At(T0);
        let plan = plan_due(
            vec![due],
            &jobs(&[job("g/a", Overlap::Allow)]),
            &params(10),
            &mut JobRoom::unbounded(),
            T0,
        );
        assert_eq!(plan.held.len(), 1);
        assert_eq!(plan.completed, ["g/a:t"]);
        assert!(plan.moved.is_empty());
    }

    fn waiting(fire_id: &str, job_key: &str) -> Waiting {
        Waiting {
            fire_id: fire_id.into(),
            trigger_key: format!("{job_key}:t"),
            job_key: job_key.into(),
            scheduled_ms: T0,
            due_ms: T0,
            attempt: 2,
            recovering: 1,
            fencing: 3,
            event_id: String::new(),
            depth: 0,
            concurrency_key: None,
            rate_key: None,
            coalesced: 0,
            origin: String::new(),
        }
    }

    fn guards(running: &[(&str, bool)]) -> Guards {
        Guards {
            running: running.iter().map(|(k, r)| (k.to_string(), *r)).collect(),
            ..Guards::default()
        }
    }

    fn backfill(fire_id: &str, job_key: &str, mode: &str) -> Waiting {
        Waiting {
            origin: format!("backfill:{mode}"),
            ..waiting(fire_id, job_key)
        }
    }

    #[test]
    fn a_backfills_fires_follow_its_overlap_mode_not_the_jobs_policy() {
        // An `allow` job: its own fires are not guarded, a buffered backfill's are.
        let all = jobs(&[
            job("g/buffer", Overlap::Allow),
            job("g/skip", Overlap::Allow),
            job("g/allow", Overlap::Forbid),
        ]);
        let candidates = vec![
            backfill("b1", "g/buffer", "buffer"),
            backfill("b2", "g/buffer", "buffer"),
            backfill("s1", "g/skip", "skip"),
            backfill("s2", "g/skip", "skip"),
            backfill("a1", "g/allow", "allow"),
            backfill("a2", "g/allow", "allow"),
        ];
        assert_eq!(guarded_jobs(&candidates, &all), ["g/buffer", "g/skip"]);
        // Nothing of the three runs yet.
        let mut running = guards(&[("g/buffer", false), ("g/skip", false)]);
        let picked = pick_waiting(
            candidates,
            &all,
            &mut running,
            &[],
            &mut JobRoom::unbounded(),
            10,
            T0,
        );
        let ids: Vec<&str> = picked.claims.iter().map(|c| c.fire_id.as_str()).collect();
        // buffer: the oldest, the next waits; skip: the oldest, the next is
        // skipped; allow: both, though the job forbids overlap.
        assert_eq!(ids, ["b1", "s1", "a1", "a2"]);
        assert_eq!(picked.skipped, ["s2"]);
        let details: serde_json::Value = serde_json::from_str(&picked.history[0].details).unwrap();
        assert_eq!(
            details["detail"],
            "backfill --overlap skip: a run of this job is running"
        );
        assert_eq!(
            picked.claims[0].origin,
            FireOrigin::Backfill(crate::domain::BackfillOverlap::Buffer)
        );

        // A run of the job (any run) holds a buffered backfill back.
        let mut running = guards(&[("g/buffer", true)]);
        let picked = pick_waiting(
            vec![backfill("b1", "g/buffer", "buffer")],
            &all,
            &mut running,
            &[],
            &mut JobRoom::unbounded(),
            10,
            T0,
        );
        assert!(picked.claims.is_empty() && picked.skipped.is_empty());
    }

    #[test]
    fn waiting_fires_are_claimed_by_overlap_policy() {
        let all = jobs(&[
            job("g/allow", Overlap::Allow),
            job("g/forbid", Overlap::Forbid),
            job("g/skip", Overlap::Skip),
            job("g/idle", Overlap::Forbid),
        ]);
        let candidates = vec![
            waiting("f1", "g/allow"),
            waiting("f2", "g/allow"),
            waiting("f3", "g/forbid"),
            waiting("f4", "g/skip"),
            waiting("f5", "g/idle"),
            waiting("f6", "g/idle"),
        ];
        assert_eq!(
            guarded_jobs(&candidates, &all),
            ["g/forbid", "g/skip", "g/idle"]
        );
        let mut running = guards(&[("g/forbid", true), ("g/skip", true), ("g/idle", false)]);
        let picked = pick_waiting(
            candidates,
            &all,
            &mut running,
            &[],
            &mut JobRoom::unbounded(),
            10,
            T0,
        );
        let ids: Vec<&str> = picked.claims.iter().map(|c| c.fire_id.as_str()).collect();
        // Both `allow` fires; one of the idle `forbid` job (the second waits for it).
        assert_eq!(ids, ["f1", "f2", "f5"]);
        assert_eq!(picked.skipped, ["f4"]);
        assert_eq!(
            reasons(&picked.history),
            [(HistoryStatus::Skipped, "overlap".to_string())]
        );
        let c = &picked.claims[0];
        assert_eq!(
            (c.attempt, c.recovering, c.fencing, c.held),
            (2, true, 4, false)
        );
        assert_eq!(c.event_id, None);
    }

    #[test]
    fn a_buffer_one_job_keeps_one_fire_waiting_and_skips_the_rest() {
        let all = jobs(&[
            job("g/busy", Overlap::BufferOne),
            job("g/idle", Overlap::BufferOne),
        ]);
        let candidates = vec![
            waiting("b1", "g/busy"),
            waiting("b2", "g/busy"),
            waiting("b3", "g/busy"),
            waiting("i1", "g/idle"),
            waiting("i2", "g/idle"),
            waiting("i3", "g/idle"),
        ];
        assert_eq!(guarded_jobs(&candidates, &all), ["g/busy", "g/idle"]);
        let mut running = guards(&[("g/busy", true), ("g/idle", false)]);
        let picked = pick_waiting(
            candidates,
            &all,
            &mut running,
            &[],
            &mut JobRoom::unbounded(),
            10,
            T0,
        );
        let ids: Vec<&str> = picked.claims.iter().map(|c| c.fire_id.as_str()).collect();
        // The idle job runs its oldest; each job keeps its next one waiting.
        assert_eq!(ids, ["i1"]);
        assert_eq!(picked.skipped, ["b2", "b3", "i3"]);
        assert_eq!(
            reasons(&picked.history),
            vec![(HistoryStatus::Skipped, "overlap".to_string()); 3]
        );
    }

    #[test]
    fn a_guarded_job_another_node_is_claiming_is_left_for_the_next_round() {
        let all = jobs(&[job("g/forbid", Overlap::Forbid)]);
        let picked = pick_waiting(
            vec![waiting("f1", "g/forbid")],
            &all,
            &mut Guards::default(),
            &[],
            &mut JobRoom::unbounded(),
            10,
            T0,
        );
        assert!(picked.claims.is_empty() && picked.skipped.is_empty());
    }

    #[test]
    fn waiting_fires_fill_only_what_the_claims_so_far_left_of_the_budget() {
        let all = jobs(&[job("g/a", Overlap::Allow), job("g/f", Overlap::Forbid)]);
        let held = FireClaim::first("h1".into(), "g/f:t", &all["g/f"], T0, true);
        let mut running = guards(&[("g/f", false)]);
        let candidates = vec![
            waiting("f1", "g/f"),
            waiting("f2", "g/a"),
            waiting("f3", "g/a"),
        ];
        let picked = pick_waiting(
            candidates,
            &all,
            &mut running,
            std::slice::from_ref(&held),
            &mut JobRoom::unbounded(),
            2,
            T0,
        );
        // g/f is busy with the claim made this round; one slot was left.
        let ids: Vec<&str> = picked.claims.iter().map(|c| c.fire_id.as_str()).collect();
        assert_eq!(ids, ["f2"]);
    }

    #[test]
    fn a_job_without_room_is_queued_and_counted_and_the_others_claimed() {
        let all = jobs(&[
            job("g/full", Overlap::Allow),
            job("g/other", Overlap::Allow),
        ]);
        let due = vec![minutely("g/full", T0), minutely("g/other", T0)];
        let mut room = JobRoom {
            default: 10,
            jobs: [("g/full".to_owned(), 0)].into(),
        };
        let plan = plan_due(due, &all, &params(10), &mut room, T0 + 5);
        let claimed: Vec<&str> = plan
            .held
            .iter()
            .map(|(f, _)| f.job_key.as_str())
            .chain(plan.claimed.iter().map(|f| f.job_key.as_str()))
            .collect();
        assert_eq!(claimed, ["g/other"], "{plan:?}");
        let queued: Vec<&str> = plan.queued.iter().map(|f| f.job_key.as_str()).collect();
        assert_eq!(queued, ["g/full"], "{plan:?}");
        assert_eq!(plan.deferred.get("g/full"), Some(&1));
    }

    #[test]
    fn waiting_fires_of_a_job_take_its_room_and_no_more() {
        let all = jobs(&[job("g/a", Overlap::Allow), job("g/b", Overlap::Allow)]);
        let candidates = vec![
            waiting("f1", "g/a"),
            waiting("f2", "g/a"),
            waiting("f3", "g/a"),
            waiting("f4", "g/b"),
        ];
        let mut room = JobRoom {
            default: 10,
            jobs: [("g/a".to_owned(), 2)].into(),
        };
        let picked = pick_waiting(
            candidates,
            &all,
            &mut Guards::default(),
            &[],
            &mut room,
            10,
            T0,
        );
        let ids: Vec<&str> = picked.claims.iter().map(|c| c.fire_id.as_str()).collect();
        assert_eq!(ids, ["f1", "f2", "f4"]);
        assert!(picked.history.is_empty(), "a fire past the room is no skip");
    }

    fn keyed(
        fire_id: &str,
        job_key: &str,
        concurrency: Option<&str>,
        rate: Option<&str>,
    ) -> Waiting {
        Waiting {
            concurrency_key: concurrency.map(str::to_string),
            rate_key: rate.map(str::to_string),
            ..waiting(fire_id, job_key)
        }
    }

    fn flow_job(key: &str, concurrency: Option<u32>, rate: Option<(u32, i64)>) -> JobDef {
        use crate::domain::flow::{Concurrency, Flow, KeyTemplate, Rate};
        let template = KeyTemplate::parse("{{ data.account }}").unwrap();
        JobDef {
            flow: Flow {
                concurrency: concurrency.map(|limit| Concurrency {
                    key: template.clone(),
                    limit,
                }),
                rate: rate.map(|(limit, per_ms)| Rate {
                    key: template.clone(),
                    limit,
                    per_ms,
                }),
                coalesce: None,
            },
            data: r#"{"account": "acct-1"}"#.into(),
            ..job(key, Overlap::Allow)
        }
    }

    #[test]
    fn a_fire_of_a_job_with_flow_control_waits_with_its_rendered_keys() {
        let all = jobs(&[flow_job("g/k", Some(2), Some((5, 1000)))]);
        let plan = plan_due(
            vec![minutely("g/k", T0)],
            &all,
            &params(10),
            &mut JobRoom::unbounded(),
            T0 + 5,
        );
        // Not held nor claimed in the plan: the pick counts its keys first.
        assert!(plan.held.is_empty() && plan.claimed.is_empty());
        assert_eq!(plan.queued.len(), 1);
        assert_eq!(plan.queued[0].concurrency_key.as_deref(), Some("acct-1"));
        assert_eq!(plan.queued[0].rate_key.as_deref(), Some("acct-1"));
    }

    #[test]
    fn a_concurrency_key_admits_up_to_its_limit_across_what_runs_already() {
        let all = jobs(&[
            flow_job("g/k", Some(2), None),
            job("g/plain", Overlap::Allow),
        ]);
        let candidates = vec![
            keyed("a1", "g/k", Some("acct-a"), None),
            keyed("a2", "g/k", Some("acct-a"), None),
            keyed("b1", "g/k", Some("acct-b"), None),
            keyed("b2", "g/k", Some("acct-b"), None),
            keyed("b3", "g/k", Some("acct-b"), None),
            keyed("c1", "g/k", Some("acct-c"), None),
            waiting("p1", "g/plain"),
        ];
        assert_eq!(flow_keys(&candidates), ["acct-a", "acct-b", "acct-c"]);
        let mut g = Guards {
            // acct-c is being claimed by another node.
            locked: ["acct-a", "acct-b"].map(String::from).into(),
            // One fire of acct-a runs somewhere in the cluster.
            key_running: [("acct-a".to_string(), 1)].into(),
            ..Guards::default()
        };
        let picked = pick_waiting(
            candidates,
            &all,
            &mut g,
            &[],
            &mut JobRoom::unbounded(),
            10,
            T0,
        );
        let ids: Vec<&str> = picked.claims.iter().map(|c| c.fire_id.as_str()).collect();
        assert_eq!(ids, ["a1", "b1", "b2", "p1"]);
        assert_eq!(
            picked.blocked,
            ["acct-a", "acct-b"].map(String::from).into()
        );
        assert!(
            picked.skipped.is_empty() && picked.history.is_empty(),
            "waiting is no skip"
        );
        assert_eq!(
            g.key_running["acct-b"], 2,
            "a second pick goes on from these counts"
        );
    }

    #[test]
    fn a_rate_key_admits_what_its_window_has_left_and_says_when_the_next_may_start() {
        let all = jobs(&[flow_job("g/r", None, Some((3, 1000)))]);
        let candidates = vec![
            keyed("r1", "g/r", None, Some("acct-a")),
            keyed("r2", "g/r", None, Some("acct-a")),
            keyed("r3", "g/r", None, Some("acct-a")),
        ];
        let mut g = Guards {
            locked: ["acct-a".to_string()].into(),
            // One start has left the window; two are within it.
            starts: [("acct-a".to_string(), vec![T0 - 1500, T0 - 900, T0 - 100])].into(),
            ..Guards::default()
        };
        let picked = pick_waiting(
            candidates,
            &all,
            &mut g,
            &[],
            &mut JobRoom::unbounded(),
            10,
            T0,
        );
        let ids: Vec<&str> = picked.claims.iter().map(|c| c.fire_id.as_str()).collect();
        assert_eq!(ids, ["r1"]);
        // What is stored: the starts within the window, this one last.
        assert_eq!(
            picked.starts,
            [("acct-a".to_string(), vec![T0 - 900, T0 - 100, T0])]
        );
        // The start at T0 - 900 leaves the window at T0 + 100.
        assert_eq!(picked.rate_wait_until, Some(T0 + 100));
        let why = crate::domain::flow::why_waiting(
            &all["g/r"].flow,
            None,
            Some("acct-a"),
            |_| 0,
            |_| picked.starts[0].1.clone(),
            T0,
        )
        .unwrap();
        assert!(why.contains("started 3 of 3 in the last 1s"), "{why}");
        assert!(
            why.contains("next start at 2030-01-01T10:00:00.100Z"),
            "{why}"
        );
    }

    #[test]
    fn a_flow_key_another_node_holds_admits_nothing_this_round() {
        let all = jobs(&[flow_job("g/r", Some(5), Some((5, 1000)))]);
        let picked = pick_waiting(
            vec![keyed("r1", "g/r", Some("acct-a"), Some("acct-a"))],
            &all,
            &mut Guards::default(),
            &[],
            &mut JobRoom::unbounded(),
            10,
            T0,
        );
        assert!(picked.claims.is_empty() && picked.blocked.is_empty());
        assert_eq!(picked.rate_wait_until, None);
    }

    #[test]
    fn a_backlog_of_one_job_takes_one_place_per_round_of_the_claim() {
        let rows = ["f1", "f2", "f3", "t1", "f4", "u1", "t2"];
        let job = |id: &&str| group_of(&id[..1], None);
        let order = interleave_jobs(rows.to_vec(), job);
        assert_eq!(order, ["f1", "t1", "u1", "f2", "t2", "f3", "f4"]);
        // One job alone, or one row per job: as read.
        assert_eq!(
            interleave_jobs(vec!["f1", "f2", "f3"], job),
            ["f1", "f2", "f3"]
        );
        assert_eq!(
            interleave_jobs(vec!["f1", "t1", "u1"], job),
            ["f1", "t1", "u1"]
        );
        // Keys of one job are groups of their own.
        let keyed = vec![("j", "a"), ("j", "a"), ("j", "b")];
        let order = interleave_jobs(keyed, |(j, k)| group_of(j, Some(k)));
        assert_eq!(order, [("j", "a"), ("j", "b"), ("j", "a")]);
    }
}
