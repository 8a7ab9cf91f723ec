//! The rows the scheduler keeps, as domain types, and the parameter structs of
//! the store's scheduler methods.

use super::StoreError;
use crate::grants::Grants;
use crate::schedule::trigger::{MisfirePolicy, TriggerKind, TriggerSpec};
use serde::Serialize;

pub use crate::domain::flow::Flow;
pub use crate::domain::{BackfillOverlap, Backoff, FireOrigin, Overlap, RetryPolicy};

/// A job as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobDef {
    /// `group/name`.
    pub job_key: String,
    /// `NAME`, `NAME@VERSION` or `sha256:DIGEST`.
    pub module: String,
    /// JSON text.
    pub data: String,
    pub overlap: Overlap,
    pub retry: RetryPolicy,
    pub timeout_ms: u64,
    pub max_memory: u64,
    pub requests_recovery: bool,
    /// 1..=10, higher first.
    pub priority: i64,
    pub paused: bool,
    /// Who declared it: `manifest` jobs are reconciled at start; `cli`/`api` ones are left alone.
    pub source: String,
    /// Keys the job's kv state may hold; `None` for the default (10,000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_max_keys: Option<u64>,
    /// Bytes of values the job's kv state may hold; `None` for the default (16 MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_max_bytes: Option<u64>,
    /// What the job may reach ([`Grants`], JSON text); `None`: nothing. Read
    /// with the job by every claim, so a run needs no read of its own and a
    /// changed grant holds from the next fire on. Views show it parsed.
    #[serde(skip)]
    pub grants: Option<String>,
    /// Why the job is paused and until when, as the operator said.
    #[serde(flatten)]
    pub pause: PauseNote,
    /// Pause the job after this many failed runs in a row, counted as the
    /// `consecutive-failures` alert counts them (each failed, retried or
    /// timed-out attempt); `None`: never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause_on_failure: Option<u32>,
    /// Concurrency and rate limits per key (see [`Flow`]).
    #[serde(flatten)]
    pub flow: Flow,
}

/// What an operator says of a pause: why, and when it ends by itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PauseNote {
    #[serde(rename = "pause_note", skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Milliseconds since the epoch; the job resumes then (at the next upkeep
    /// pass of any node, within seconds).
    #[serde(rename = "paused_until_ms", skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<i64>,
}

impl JobDef {
    /// A job with default policies.
    pub fn new(job_key: impl Into<String>, module: impl Into<String>) -> Self {
        JobDef {
            job_key: job_key.into(),
            module: module.into(),
            data: "null".into(),
            overlap: Overlap::Allow,
            retry: RetryPolicy::default(),
            timeout_ms: 60_000,
            max_memory: 128 << 20,
            requests_recovery: false,
            priority: 5,
            paused: false,
            source: "cli".into(),
            kv_max_keys: None,
            kv_max_bytes: None,
            grants: None,
            pause: PauseNote::default(),
            pause_on_failure: None,
            flow: Flow::default(),
        }
    }

    /// Sets the job's grants (empty grants: nothing granted).
    pub fn with_grants(mut self, grants: &Grants) -> Self {
        self.grants = grants.to_stored();
        self
    }

    /// The concurrency and rate keys of a fire of this job by `trigger_key`
    /// (caused by `event`, if one did): `(None, None)` for a job without
    /// flow control.
    pub fn flow_keys(
        &self,
        trigger_key: &str,
        event: Option<crate::domain::flow::EventInput<'_>>,
    ) -> (Option<String>, Option<String>) {
        if self.flow.is_empty() {
            return (None, None);
        }
        self.flow.keys(&crate::domain::flow::KeyInput {
            job_key: &self.job_key,
            trigger_key,
            data: &self.data,
            event,
        })
    }

    /// The job's grants, parsed.
    ///
    /// # Errors
    ///
    /// When the stored text is not grants (written by hand into the database).
    pub fn grants(&self) -> Result<Grants, StoreError> {
        Grants::from_stored(&self.job_key, self.grants.as_deref()).map_err(StoreError::Corrupt)
    }
}

/// State of a trigger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TriggerState {
    #[serde(rename = "WAITING")]
    Waiting,
    #[serde(rename = "PAUSED")]
    Paused,
    #[serde(rename = "ERROR")]
    Error,
    #[serde(rename = "COMPLETE")]
    Complete,
}

impl TriggerState {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerState::Waiting => "WAITING",
            TriggerState::Paused => "PAUSED",
            TriggerState::Error => "ERROR",
            TriggerState::Complete => "COMPLETE",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "WAITING" => Some(TriggerState::Waiting),
            "PAUSED" => Some(TriggerState::Paused),
            "ERROR" => Some(TriggerState::Error),
            "COMPLETE" => Some(TriggerState::Complete),
            _ => None,
        }
    }
}

/// A trigger to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TriggerPut {
    /// `job_key:name`.
    pub trigger_key: String,
    pub job_key: String,
    pub spec: TriggerSpec,
    pub priority: i64,
}

/// A trigger as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TriggerRow {
    pub trigger_key: String,
    pub job_key: String,
    pub spec: TriggerSpec,
    pub priority: i64,
    pub state: TriggerState,
    pub next_fire_ms: Option<i64>,
    pub error: Option<String>,
}

impl TriggerRow {
    /// A short description of the schedule, for tables.
    pub fn describe(&self) -> String {
        let schedule = self.describe_kind();
        let schedule = match self.spec.jitter_ms {
            0 => schedule,
            j => format!("{schedule}, jitter {j} ms"),
        };
        match self.spec.calendars.as_slice() {
            [] => schedule,
            names => format!("{schedule}, calendar {}", names.join(", ")),
        }
    }

    fn describe_kind(&self) -> String {
        match &self.spec.kind {
            TriggerKind::Cron { expr, tz } => format!("cron \"{expr}\" {tz}"),
            TriggerKind::Every { period_ms, repeat } => match repeat {
                Some(r) => format!("every {period_ms} ms, {r} repeats"),
                None => format!("every {period_ms} ms"),
            },
            TriggerKind::At(ms) => format!("at {ms}"),
            TriggerKind::OnStart => "on start".into(),
            TriggerKind::Once => "once".into(),
            TriggerKind::Event { name } => format!("event {name:?}"),
        }
    }
}

/// A fire claimed by a node, with what it needs to run it.
#[derive(Clone, Debug, PartialEq)]
pub struct FireClaim {
    pub fire_id: String,
    pub trigger_key: String,
    pub job_key: String,
    pub scheduled_ms: i64,
    pub due_ms: i64,
    pub attempt: u32,
    pub recovering: bool,
    /// Must accompany the completion; a fire taken over since carries another.
    pub fencing: i64,
    pub job: JobDef,
    /// The event that caused the fire (`None` for clock, start and manual fires).
    pub event_id: Option<String>,
    /// The depth of that event (0 otherwise): the fire's own emits are one deeper.
    pub depth: u32,
    /// The claim is a `held_claims` row, not a `fires` row (see migration
    /// 0008); the completion says so back to the store.
    pub held: bool,
    /// What flow control admitted the fire by, if its job has any.
    pub flow: Option<Box<ClaimFlow>>,
    /// Where the fire came from (`fires.origin`): a backfill or a replay,
    /// else [`FireOrigin::Plain`].
    pub origin: FireOrigin,
}

/// One claim as the store knows it: which fire, where its row lives, and the
/// fencing that tells this claim from a later one of the same fire (the fire
/// handed back and claimed again, perhaps by the same node).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimRef {
    pub fire_id: String,
    pub trigger_key: String,
    pub held: bool,
    pub fencing: i64,
}

impl From<&FireClaim> for ClaimRef {
    fn from(f: &FireClaim) -> Self {
        ClaimRef {
            fire_id: f.fire_id.clone(),
            trigger_key: f.trigger_key.clone(),
            held: f.held,
            fencing: f.fencing,
        }
    }
}

/// The flow keys a claim admitted a fire by, and when (the database clock):
/// history records them, so an operator can check a limit against the runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimFlow {
    pub concurrency_key: Option<String>,
    pub rate_key: Option<String>,
    pub admitted_ms: i64,
    /// Events folded into the fire past its first (see
    /// `domain::flow::Coalesce`): it ran with the last.
    pub coalesced: u32,
}

impl FireClaim {
    /// The first attempt of a clock fire, claimed in the transaction that
    /// found its trigger due (as a `held_claims` row when `held`).
    pub(crate) fn first(
        fire_id: String,
        trigger_key: &str,
        job: &JobDef,
        scheduled_ms: i64,
        held: bool,
    ) -> Self {
        FireClaim {
            fire_id,
            trigger_key: trigger_key.to_string(),
            job_key: job.job_key.clone(),
            scheduled_ms,
            due_ms: scheduled_ms,
            attempt: 1,
            recovering: false,
            fencing: 1,
            job: job.clone(),
            event_id: None,
            depth: 0,
            held,
            flow: None,
            origin: FireOrigin::Plain,
        }
    }
}

/// What `fire_acquire` asks for.
#[derive(Clone, Debug)]
pub struct AcquireParams {
    pub node_id: String,
    /// Fires due up to this far ahead are claimed (and waited for by the node).
    pub lookahead_ms: i64,
    /// Most fires to claim.
    pub max: usize,
    /// How long a claim holds without renewal.
    pub lease_ms: i64,
    pub misfire: crate::schedule::trigger::MisfireLimits,
    /// The contract versions this node runs: fires of jobs whose module needs
    /// another one are left to nodes that can run them.
    pub runs: WitRange,
    /// Mark the claims started as they are made (see `Store::fire_mark_started`):
    /// the node's runs are too short for a store write of their own.
    pub started: bool,
    /// How many more fires of each job this claim may take (each job's share
    /// of the node): fires of a job without room stay queued for later or for
    /// another node.
    pub room: JobRoom,
}

/// How many more fires of each job a claim may take: `jobs` names those the
/// node holds fires of, any other job has `default` room.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobRoom {
    pub default: usize,
    pub jobs: std::collections::HashMap<String, usize>,
}

impl JobRoom {
    /// Room enough for any claim: no job's share is bounded.
    pub fn unbounded() -> JobRoom {
        JobRoom {
            default: usize::MAX,
            jobs: std::collections::HashMap::new(),
        }
    }

    /// Takes one fire of `job_key` from its room; false when it has none left.
    pub fn take(&mut self, job_key: &str) -> bool {
        let room = match self.jobs.get_mut(job_key) {
            Some(room) => room,
            None => self.jobs.entry(job_key.to_owned()).or_insert(self.default),
        };
        if *room == 0 {
            return false;
        }
        *room -= 1;
        true
    }

    /// The jobs with no room left, whose fires the claim need not read.
    pub fn full(&self) -> Vec<String> {
        let mut full: Vec<String> = self
            .jobs
            .iter()
            .filter(|(_, room)| **room == 0)
            .map(|(key, _)| key.clone())
            .collect();
        full.sort();
        full
    }
}

/// Contract versions as ranks (`MAJOR * 1000000 + MINOR`), so "can this node run
/// that module" is one range check in SQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct WitRange {
    pub lo: i64,
    pub hi: i64,
}

impl WitRange {
    /// What a host implementing `major.minor` runs: every minor of its major up to its own.
    pub fn up_to(major: u64, minor: u64) -> WitRange {
        let major = i64::try_from(major).unwrap_or(i64::MAX / WIT_RANK_MAJOR - 1);
        let minor = i64::try_from(minor).unwrap_or(0).min(WIT_RANK_MAJOR - 1);
        WitRange {
            lo: major * WIT_RANK_MAJOR,
            hi: major * WIT_RANK_MAJOR + minor,
        }
    }

    pub fn contains(&self, rank: i64) -> bool {
        (self.lo..=self.hi).contains(&rank)
    }
}

const WIT_RANK_MAJOR: i64 = 1_000_000;

/// The rank of a stored contract version (`1.2.3` -> 1000002); `None` when it is
/// not `MAJOR.MINOR.PATCH`.
pub fn wit_rank(version: &str) -> Option<i64> {
    let mut parts = version.split('.');
    let major: i64 = parts.next()?.parse().ok()?;
    let minor: i64 = parts.next()?.parse().ok()?;
    parts.next()?.parse::<u64>().ok()?;
    (minor < WIT_RANK_MAJOR && parts.next().is_none())
        .then(|| major.checked_mul(WIT_RANK_MAJOR)?.checked_add(minor))
        .flatten()
}

/// What a node reports when it checks in.
#[derive(Clone, Debug)]
pub struct NodeCheckIn {
    pub node_id: String,
    /// The quartzite version.
    pub version: String,
    /// The contract versions it runs, for people (`1.0`).
    pub wit_versions: String,
    /// The same, for claiming.
    pub runs: WitRange,
    /// Digests of the modules it has compiled.
    pub modules: Vec<String>,
}

/// What `fire_acquire` returns.
#[derive(Clone, Debug, Default)]
pub struct Acquired {
    pub fires: Vec<FireClaim>,
    /// The database clock when acquiring.
    pub now_ms: i64,
    /// The earliest time anything else becomes due (trigger or waiting fire), if any.
    pub next_due_ms: Option<i64>,
    /// History rows written for fires not run (misfired, DST gaps, overlap skips).
    pub recorded: u64,
    /// Misfired fires, each counted even where one summary row stands for many.
    pub misfired: u64,
    /// Fires skipped: by the overlap policy or in a DST gap.
    pub skipped: u64,
    /// Due fires of jobs without room left (see [`JobRoom`]), by job: queued
    /// instead of claimed.
    pub deferred: Vec<(String, u64)>,
    /// The earliest time a fire waiting for its rate key (see
    /// `domain::flow::Rate`) may start, if one waits: the node looks again then.
    pub rate_wait_until: Option<i64>,
    /// Running fires this claim asked to stop (overlap `cancel-other`), with
    /// the fire superseding each: the node running one stops it.
    pub superseded: Vec<(String, String)>,
}

/// History status of a run or of a fire not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HistoryStatus {
    Success,
    Failed,
    Retried,
    Timeout,
    Skipped,
    Cancelled,
    Misfired,
}

impl HistoryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryStatus::Success => "success",
            HistoryStatus::Failed => "failed",
            HistoryStatus::Retried => "retried",
            HistoryStatus::Timeout => "timeout",
            HistoryStatus::Skipped => "skipped",
            HistoryStatus::Cancelled => "cancelled",
            HistoryStatus::Misfired => "misfired",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            HistoryStatus::Success,
            HistoryStatus::Failed,
            HistoryStatus::Retried,
            HistoryStatus::Timeout,
            HistoryStatus::Skipped,
            HistoryStatus::Cancelled,
            HistoryStatus::Misfired,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// One task history row (the reference's task history).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// UUID.
    pub id: String,
    pub fire_id: Option<String>,
    /// The task name: the job key.
    pub job_key: String,
    pub trigger_key: Option<String>,
    pub status: HistoryStatus,
    pub attempt: u32,
    pub node_id: Option<String>,
    pub scheduled_ms: Option<i64>,
    pub started_ms: i64,
    pub ended_ms: i64,
    pub duration_ms: i64,
    /// JSON: the outcome, the error, the skip reason, ...
    pub details: String,
}

/// What happens to a fire when its run ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FireNext {
    /// The fire is finished.
    Done,
    /// Run it again at `due_ms`, as the next attempt.
    Retry { due_ms: i64 },
    /// Put it back, same attempt, for any node (a run stopped by shutdown).
    Release,
    /// Put it back as if never claimed: its run never began (the node is
    /// stopping). No history row is written.
    Unclaim,
}

/// The end of one run, as committed by `fire_complete`.
#[derive(Clone, Debug)]
pub struct Completion {
    pub fire_id: String,
    pub node_id: String,
    pub fencing: i64,
    /// As in the [`FireClaim`]: where the store looks for the claim first.
    pub held: bool,
    pub next: FireNext,
    /// Replaces the job's data when present (JSON text).
    pub new_data: Option<String>,
    pub history: HistoryEntry,
}

/// Filters of `history_list`.
#[derive(Clone, Debug, Default)]
pub struct HistoryFilter {
    pub job_key: Option<String>,
    pub status: Option<HistoryStatus>,
    pub limit: i64,
    /// Only rows started before this instant (pagination).
    pub before_ms: Option<i64>,
}

/// The window and bucket width of `history_stats`: rows started in
/// `[from_ms, to_ms)`, counted per `bucket_ms` from `from_ms`.
#[derive(Clone, Copy, Debug)]
pub struct HistoryStatsParams {
    pub from_ms: i64,
    pub to_ms: i64,
    pub bucket_ms: i64,
}

/// One bucket of `history_stats`: rows per status, and the fire lag (start
/// minus scheduled time) of the runs started in it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HistoryBucket {
    /// Index of the bucket from the window's start.
    pub index: i64,
    /// Rows per status (`success`, `failed`, ...); absent statuses are absent.
    pub counts: std::collections::BTreeMap<String, i64>,
    /// First attempts that ran (success, failed, retried, timeout) with a
    /// scheduled time: the lag sample.
    pub lag_samples: i64,
    /// Nearest-rank percentiles and maximum of the lag, milliseconds.
    pub lag_p50_ms: Option<i64>,
    pub lag_p99_ms: Option<i64>,
    pub lag_max_ms: Option<i64>,
}

/// A named cluster lock as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LockRow {
    pub name: String,
    /// `None` when released.
    pub holder: Option<String>,
    pub token: i64,
    pub acquired_ms: Option<i64>,
    pub lease_until_ms: Option<i64>,
}

/// A node as it last checked in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeRow {
    pub node_id: String,
    pub started_ms: i64,
    pub heartbeat_ms: i64,
    pub version: String,
    pub wit_versions: String,
    /// The contract versions it runs as ranks; `None` for a node that did not say.
    pub runs: Option<WitRange>,
    /// Digests of the modules it has compiled.
    pub modules: Vec<String>,
    /// Fires this node holds now.
    pub running: i64,
    /// Whether it checked in within the dead-after interval.
    pub alive: bool,
}

/// A fire claimed or waiting, as the operator sees it (`fire_running`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FireRow {
    pub fire_id: String,
    pub trigger_key: String,
    pub job_key: String,
    pub scheduled_ms: i64,
    pub due_ms: i64,
    pub attempt: u32,
    /// `scheduled` (due, not claimed yet) or `acquired` (claimed by `node_id`).
    pub state: String,
    pub node_id: Option<String>,
    pub lease_until_ms: Option<i64>,
    pub recovering: bool,
    /// The fire's flow keys (see `domain::flow`), if its job has flow control.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_key: Option<String>,
    /// Why a due fire is still waiting, when flow control holds it: its
    /// concurrency key at its limit, or its rate key out of starts (with
    /// when the next may start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

/// How many triggers are in each state, and how many fires are being run:
/// what the `quartzite_triggers{state}` gauge shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TriggerCounts {
    /// Trigger states as stored (`WAITING`, `PAUSED`, `ERROR`, `COMPLETE`) and their counts.
    pub by_state: Vec<(String, i64)>,
    /// Fires claimed by a node (running or about to start).
    pub executing: i64,
}

/// One admin action to record in the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditPut {
    /// Who: a token id (`token:` and the start of its hash) or `anonymous-loopback`.
    pub actor: String,
    /// What, e.g. `job.create`.
    pub action: String,
    /// The object acted on, e.g. a job key; the request path when there is none.
    pub target: String,
    /// The HTTP status the request ended with.
    pub status: u16,
    /// A short JSON summary of the request.
    pub summary: String,
    /// The caller's address (`IP:PORT`), when known.
    pub client: Option<String>,
}

/// An audit log row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub id: String,
    /// When, UTC ms from the database clock.
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub status: u16,
    /// JSON text.
    pub summary: String,
    /// The caller's address (`IP:PORT`), when it was recorded.
    pub client: Option<String>,
}

/// Filters of `audit_list`: newest first, rows strictly older than the
/// `(before_ms, before_id)` cursor when one is given.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub limit: i64,
    pub before: Option<(i64, String)>,
}

/// A trigger schedule as its table columns, in both directions.
#[derive(Debug, Default)]
pub(crate) struct ScheduleColumns {
    pub kind: String,
    pub cron: Option<String>,
    pub tz: Option<String>,
    pub period_ms: Option<i64>,
    pub repeat: Option<i64>,
    pub at_ms: Option<i64>,
    pub misfire: String,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub event: Option<String>,
    /// NULL (read as 0) for no jitter.
    pub jitter_ms: Option<i64>,
    /// The calendar names as a JSON array; NULL for none.
    pub calendars: Option<String>,
}

impl ScheduleColumns {
    pub(crate) fn from_spec(spec: &TriggerSpec) -> Self {
        let mut c = ScheduleColumns {
            kind: spec.kind.as_str().into(),
            misfire: spec.misfire.as_str().into(),
            start_ms: spec.start_ms,
            end_ms: spec.end_ms,
            jitter_ms: (spec.jitter_ms > 0)
                .then(|| i64::try_from(spec.jitter_ms).unwrap_or(i64::MAX)),
            calendars: (!spec.calendars.is_empty())
                .then(|| serde_json::Value::from(spec.calendars.clone()).to_string()),
            ..ScheduleColumns::default()
        };
        match &spec.kind {
            TriggerKind::Cron { expr, tz } => {
                c.cron = Some(expr.clone());
                c.tz = Some(tz.clone());
            }
            TriggerKind::Every { period_ms, repeat } => {
                c.period_ms = Some(*period_ms);
                c.repeat = repeat.and_then(|r| i64::try_from(r).ok());
            }
            TriggerKind::At(ms) => c.at_ms = Some(*ms),
            TriggerKind::OnStart | TriggerKind::Once => {}
            TriggerKind::Event { name } => c.event = Some(name.clone()),
        }
        c
    }

    /// `None` when the columns do not describe a schedule this build knows.
    pub(crate) fn into_spec(self) -> Option<TriggerSpec> {
        let kind = match self.kind.as_str() {
            "cron" => TriggerKind::Cron {
                expr: self.cron?,
                tz: self.tz.unwrap_or_else(|| "UTC".into()),
            },
            "every" => TriggerKind::Every {
                period_ms: self.period_ms?,
                repeat: self.repeat.and_then(|r| u64::try_from(r).ok()),
            },
            "at" => TriggerKind::At(self.at_ms?),
            "on-start" => TriggerKind::OnStart,
            "once" => TriggerKind::Once,
            "event" => TriggerKind::Event { name: self.event? },
            _ => return None,
        };
        Some(TriggerSpec {
            kind,
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            misfire: MisfirePolicy::parse(&self.misfire)?,
            jitter_ms: self
                .jitter_ms
                .and_then(|j| u64::try_from(j).ok())
                .unwrap_or(0),
            calendars: match self.calendars {
                None => Vec::new(),
                Some(text) => serde_json::from_str(&text).ok()?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_runs_the_minors_of_its_major_up_to_its_own() {
        let runs = WitRange::up_to(1, 2);
        let rank = |v| wit_rank(v).unwrap();
        assert!(runs.contains(rank("1.0.0")));
        assert!(runs.contains(rank("1.2.9")));
        assert!(!runs.contains(rank("1.3.0")));
        assert!(!runs.contains(rank("0.9.0")));
        assert!(!runs.contains(rank("2.0.0")));
        assert_eq!(wit_rank("1.0"), None);
        assert_eq!(wit_rank("1.x.0"), None);
        assert_eq!(wit_rank("1.0.0.0"), None);
        assert_eq!(wit_rank("1.1000000.0"), None);
    }
}
