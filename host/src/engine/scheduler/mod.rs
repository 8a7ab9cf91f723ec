//! The acquire -> run -> complete loop of one node.
//!
//! The loop claims due fires from the store (which decides due-ness and
//! ownership), runs each on a bounded pool of workers through the runtime, and
//! hands the ends of runs to a completer that commits them in batches. It sleeps
//! until the next known due time, a wake-up (a job added or changed through this
//! node, a run ended) or a short poll, whichever comes first, so changes made by
//! other processes are seen within the poll interval.
//!
//! Beside the loop, an upkeep task checks in (with the contract versions the
//! node runs and the modules it has compiled), renews leases, recovers the
//! fires of dead nodes and skips the fires no live node can run; a second task
//! follows module pushes made through other processes.
//!
//! Guarantees: a fire is started at most once per claim; a run whose claim was
//! taken over cannot complete (fencing); a node stopped with SIGTERM lets running
//! fires finish within the grace period, then cancels and releases them.
//!
//! Why one long file: the claim, start, run, completion and upkeep loops
//! share the scheduler's state (held fires, shares, the wake signal) and the
//! guarantees above, which are only checkable with all of them in view; the
//! parts that stand alone are submodules (`config`, `executor`) and a tenth
//! of the file is tests.

mod config;
mod executor;

use super::alerts::Alerter;
use super::modules::ModuleResolver;
use super::shares::JobShares;
use crate::domain::FireOrigin;
use crate::domain::trace::AttemptTrace;
use crate::metrics::{JobMetrics, Metrics};
use crate::runtime::StopRequest;
use crate::runtime::{
    GrantsFrom, JobImpl, Limits, ModuleRejection, RunOutcome, RunReport, RunRequest, Runtime,
    SkipCode, TriggerEvent, WIT_VERSION, WitVersion,
};
use crate::schedule::trigger::MisfireLimits;
use crate::store::ModuleEvent;
use crate::store::events::{FAILURE_STATUSES, failure_streak};
use crate::store::model::Overlap;
use crate::store::model::{
    AcquireParams, Completion, FireClaim, FireNext, HistoryEntry, HistoryStatus, NodeCheckIn,
    WitRange,
};
use crate::store::{Dialect, Store};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{Notify, Semaphore, mpsc, watch};

pub use config::SchedulerConfig;
use executor::{GuestExecutor, StartMarks};

/// One node's scheduler.
pub struct Scheduler {
    store: Arc<dyn Store>,
    runtime: Arc<Runtime>,
    resolver: ModuleResolver,
    node_id: String,
    config: SchedulerConfig,
    /// The contract version this node advertises and runs (see `max_wit`).
    wit: WitVersion,
    /// Fires handed to a worker and not yet completed, with the fencing of
    /// their claims: the leases to renew. A fire handed back and claimed again
    /// by this node is held by its newest claim only.
    held: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    /// Runs of `cancel-other` jobs on this node, by fire id: where a request
    /// to stop one is sent.
    stops: std::sync::Mutex<std::collections::HashMap<String, watch::Sender<Option<StopRequest>>>>,
    wake: Arc<Notify>,
    /// Moving average of run time in microseconds (0: nothing ran yet).
    avg_run_us: std::sync::atomic::AtomicU64,
    metrics: Arc<Metrics>,
    /// Whether the acquire loop runs: what the API's `/readyz` reports.
    running: Arc<AtomicBool>,
    alerter: Arc<Alerter>,
    /// Where guests run (see [`GuestExecutor`]).
    guests: GuestExecutor,
    /// Marks fires started before they run (see [`StartMarks`]).
    marks: StartMarks,
    /// Each job's share of the node's workers and claims.
    shares: JobShares,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// Resolves once `stop` turns true; never while it stays false (also when its
/// sender is gone: a dropped sender is no stop).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A fire handed back by its worker: what the completer commits, and what it
/// records in the metrics once the commit is accepted.
struct Ended {
    completion: Completion,
    /// How long the guest ran, at the clock's resolution (the history row
    /// keeps whole milliseconds).
    took: Duration,
    job: Arc<JobMetrics>,
    /// The attempt's trace, if it is traced: sent once committed.
    trace: Option<AttemptTrace>,
    /// The job's `pause_on_failure`, checked when the fire fails.
    pause_on_failure: Option<u32>,
}

/// A step of a traced attempt (waiting, marking, resolving), timed from
/// `start` to `end` and kept as the attempt's `<step>_us`: a span per step
/// cost more than the steps are worth to a reader.
struct Step(Option<Instant>);

impl Step {
    fn start(trace: &Option<AttemptTrace>) -> Step {
        Step(trace.as_ref().map(|_| Instant::now()))
    }

    fn end(
        self,
        trace: &mut Option<AttemptTrace>,
        step: fn(&mut AttemptTrace) -> &mut Option<u64>,
    ) {
        if let (Some(started), Some(t)) = (self.0, trace.as_mut()) {
            *step(t) = Some(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        }
    }
}

/// Runs shorter than this on average (µs) are marked started when claimed.
const MARK_AHEAD_BELOW_US: u64 = 2_000;

/// At most this many fires are claimed per worker, counting the one it runs.
const CLAIM_AHEAD_MAX: usize = 16;

fn local_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The wall clock in microseconds, for lags finer than the milliseconds of
/// the store's times.
fn local_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn to_system_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

impl Scheduler {
    pub fn new(
        store: Arc<dyn Store>,
        runtime: Arc<Runtime>,
        node_id: String,
        config: SchedulerConfig,
    ) -> Arc<Self> {
        let metrics = Arc::new(Metrics::with_options(&config.metrics_options()));
        Self::with_metrics(store, runtime, node_id, config, metrics)
    }

    /// [`Scheduler::new`] recording into the node's `metrics`.
    pub fn with_metrics(
        store: Arc<dyn Store>,
        runtime: Arc<Runtime>,
        node_id: String,
        config: SchedulerConfig,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let resolver = ModuleResolver::with_metrics(
            Arc::clone(&store),
            Arc::clone(&runtime),
            Arc::clone(&metrics),
        );
        // Start-up validates `max_wit`; an invalid one here can only come from a
        // caller that skipped it, and must not widen what the node claims.
        let wit = config.wit().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring max_wit");
            WIT_VERSION
        });
        metrics.set_build_info(&format!("{}.{}", wit.major, wit.minor));
        let alerter = Alerter::new(
            Arc::clone(&store),
            Arc::clone(&metrics),
            node_id.clone(),
            config.public_url.as_deref(),
        );
        let guests = GuestExecutor::start(config.guest_threads);
        let marks = StartMarks::start(Arc::clone(&store), node_id.clone());
        let shares = JobShares::new(config.workers, config.max_job_runs, CLAIM_AHEAD_MAX);
        Arc::new(Scheduler {
            store,
            runtime,
            resolver,
            node_id,
            config,
            wit,
            held: std::sync::Mutex::default(),
            stops: std::sync::Mutex::default(),
            wake: Arc::new(Notify::new()),
            avg_run_us: std::sync::atomic::AtomicU64::new(0),
            alerter,
            metrics,
            running: Arc::new(AtomicBool::new(false)),
            guests,
            marks,
            shares,
        })
    }

    /// Wakes the loop at once: call after adding or changing jobs or triggers.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// What [`Scheduler::wake`] notifies, for services that add fires (events).
    pub fn wake_handle(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Connects `link` to this scheduler: the layers above the engine wake it
    /// and ask whether it runs through the link alone.
    pub fn connect(&self, link: &super::wake::SchedulerLink) {
        link.connect(Arc::clone(&self.wake), Arc::clone(&self.running));
    }

    /// The node's alert scanner and sender.
    pub fn alerter(&self) -> &Arc<Alerter> {
        &self.alerter
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether the acquire loop is running (started and not stopping).
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    fn stops_update(
        &self,
        change: impl FnOnce(&mut std::collections::HashMap<String, watch::Sender<Option<StopRequest>>>),
    ) {
        change(
            &mut self
                .stops
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
    }

    /// Stops the runs of this node that a newer `cancel-other` fire claimed
    /// elsewhere supersedes (read only while such runs go on).
    async fn read_stop_requests(&self) {
        let watching = !self
            .stops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty();
        if !watching {
            return;
        }
        match self.store.fire_cancel_requests(&self.node_id).await {
            Ok(requests) => {
                for (fire_id, by) in requests {
                    self.stop_run(&fire_id, &by);
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading requests to stop runs failed"),
        }
    }

    /// Asks this node's run of `fire_id`, if it has one, to stop: `by`
    /// superseded it (overlap `cancel-other`). A second request changes nothing.
    fn stop_run(&self, fire_id: &str, by: &str) {
        self.stops_update(|stops| {
            if let Some(tx) = stops.get(fire_id) {
                tx.send_if_modified(|s| {
                    let first = s.is_none();
                    if first {
                        tracing::info!(
                            fire = fire_id,
                            by,
                            "asking a run to stop: a newer fire supersedes it"
                        );
                        *s = Some(StopRequest {
                            by: by.to_string(),
                            at: std::time::Instant::now(),
                        });
                    }
                    first
                });
            }
        });
    }

    fn held_update(&self, change: impl FnOnce(&mut std::collections::HashMap<String, i64>)) {
        change(
            &mut self
                .held
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
    }

    /// The contract versions this node runs, as the store compares them.
    fn runs(&self) -> WitRange {
        WitRange::up_to(self.wit.major, self.wit.minor)
    }

    /// Runs until `stop` turns true, then drains: running fires get the grace
    /// period, then are cancelled and released for the next start.
    pub async fn run(self: Arc<Self>, stop: watch::Receiver<bool>) {
        let workers = Arc::new(Semaphore::new(self.config.workers.max(1)));
        let claim_limit = self.config.workers.max(1) * CLAIM_AHEAD_MAX;
        let claims = Arc::new(Semaphore::new(claim_limit));
        let (done_tx, done_rx) = mpsc::channel::<Ended>(4096);
        let completer = tokio::spawn(Arc::clone(&self).complete_loop(done_rx));
        let upkeep = tokio::spawn(Arc::clone(&self).upkeep_loop(stop.clone()));
        let module_watch = tokio::spawn(Arc::clone(&self).module_watch_loop());
        let alerts =
            tokio::spawn(Arc::clone(&self.alerter).run(Duration::from_millis(500), stop.clone()));
        let acquirers = self.acquirers();
        tracing::info!(
            node = %self.node_id,
            workers = self.config.workers,
            runs_per_job = self.shares.per_job(),
            acquirers,
            "scheduler started"
        );
        self.running.store(true, Ordering::Relaxed);
        let loops: Vec<_> = (0..acquirers)
            .map(|_| {
                tokio::spawn(Arc::clone(&self).acquire_loop(
                    Arc::clone(&claims),
                    claim_limit,
                    Arc::clone(&workers),
                    done_tx.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        for acquirer in loops {
            let _ = acquirer.await;
        }
        self.running.store(false, Ordering::Relaxed);
        // Running guests learn of the stop at once (`cancelled()` turns true), so
        // they can checkpoint and return within the grace period.
        self.runtime.drain();
        tracing::info!(node = %self.node_id, "scheduler stopping: waiting for running fires");
        let all = u32::try_from(claim_limit).unwrap_or(u32::MAX);
        let grace = Duration::from_millis(self.config.grace_ms);
        if tokio::time::timeout(grace, claims.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!("grace period over: cancelling running fires");
            self.runtime.abort();
            let _ = claims.acquire_many(all).await;
        }
        drop(done_tx);
        let _ = completer.await;
        upkeep.abort();
        module_watch.abort();
        alerts.abort();
        tracing::info!(node = %self.node_id, "scheduler stopped");
    }

    /// One acquirer: claims due fires as run slots free up and hands them to
    /// the workers. On PostgreSQL a node runs several (see [`Self::acquirers`]).
    async fn acquire_loop(
        self: Arc<Self>,
        claims: Arc<Semaphore>,
        claim_limit: usize,
        workers: Arc<Semaphore>,
        done: mpsc::Sender<Ended>,
        mut stop: watch::Receiver<bool>,
    ) {
        // The metric handles of the job claimed last: claims come in runs of
        // one job often enough that most fires skip the lookup.
        let mut last_job: Option<Arc<JobMetrics>> = None;
        let mut last_key = String::new();
        let mut backoff = Duration::from_millis(100);
        while !*stop.borrow() {
            let in_flight = claim_limit - claims.available_permits();
            let free = self.claim_target().saturating_sub(in_flight);
            // The claims this round may make are reserved first, so that several
            // acquirers never claim more together than the node may hold.
            let reserved = u32::try_from(free)
                .ok()
                .filter(|&n| n > 0)
                .and_then(|n| Arc::clone(&claims).try_acquire_many_owned(n).ok());
            let Some(mut reserved) = reserved else {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(self.config.poll_ms)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            };
            let params = AcquireParams {
                node_id: self.node_id.clone(),
                lookahead_ms: self.config.lookahead_ms,
                max: free,
                lease_ms: self.config.lease_ms,
                misfire: MisfireLimits {
                    threshold_ms: self.config.misfire_threshold_ms,
                    catch_up: self.config.catch_up,
                },
                runs: self.runs(),
                started: self.mark_ahead(),
                room: self.room(),
            };
            let acquired = match self.store.fire_acquire(&params).await {
                Ok(a) => {
                    backoff = Duration::from_millis(100);
                    self.metrics.fires_not_run(a.misfired, a.skipped);
                    self.metrics.fires_deferred(&a.deferred);
                    a
                }
                Err(e) => {
                    tracing::warn!(error = %e, "acquiring fires failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            // Runs a newer `cancel-other` fire supersedes: stopped at once here
            // (other nodes read theirs when the claim's notice reaches them,
            // or at their next upkeep).
            for (fire_id, by) in &acquired.superseded {
                self.stop_run(fire_id, by);
            }
            // The store's clock decides; this node only converts to its own.
            let offset = acquired.now_ms - local_ms();
            let claimed = acquired.fires.len();
            for fire in acquired.fires {
                let Some(claim) = reserved.split(1) else {
                    break;
                };
                self.held_update(|held| {
                    held.insert(fire.fire_id.clone(), fire.fencing);
                });
                let slots = self.shares.claimed(&fire.job_key);
                let job_metrics = match &last_job {
                    Some(m) if last_key == fire.job_key => Arc::clone(m),
                    _ => {
                        let m = self.metrics.job(&fire.job_key);
                        last_key.clone_from(&fire.job_key);
                        last_job = Some(Arc::clone(&m));
                        m
                    }
                };
                let me = Arc::clone(&self);
                let done = done.clone();
                let workers = Arc::clone(&workers);
                let stop = stop.clone();
                let marked = params.started;
                let mut trace = AttemptTrace::start(
                    &fire.fire_id,
                    &fire.job_key,
                    &fire.trigger_key,
                    fire.attempt,
                );
                let pause_on_failure = fire.job.pause_on_failure;
                tokio::spawn(async move {
                    let job_key = fire.job_key.clone();
                    let (completion, took) = me
                        .start_fire(
                            fire,
                            offset,
                            marked,
                            (slots, workers),
                            stop,
                            (&job_metrics, &mut trace),
                        )
                        .await;
                    let ran = !matches!(completion.next, FireNext::Unclaim | FireNext::Release);
                    me.shares.ended(&job_key, ran.then_some(took));
                    let _ = done
                        .send(Ended {
                            completion,
                            took,
                            job: job_metrics,
                            trace,
                            pause_on_failure,
                        })
                        .await;
                    drop(claim);
                });
            }
            drop(reserved);
            if claimed >= free {
                continue;
            }
            let poll = Duration::from_millis(self.config.poll_ms);
            let sleep = acquired
                .next_due_ms
                .map(|due| {
                    Duration::from_millis(
                        u64::try_from(due - acquired.now_ms - self.config.lookahead_ms)
                            .unwrap_or(0),
                    )
                })
                .map_or(poll, |d| d.min(poll));
            // A fire waiting for its rate key may start at a known time.
            let rate_wait = acquired
                .rate_wait_until
                .map(|at| Duration::from_millis(u64::try_from(at - acquired.now_ms).unwrap_or(0)));
            if sleep.is_zero() && claimed == 0 {
                // Something is due but could not be claimed (a blocked `forbid`
                // fire, a key at its limit): wait for a run to end or a rate
                // slot to open rather than spin.
                let wait = rate_wait.map_or(poll, |d| d.min(poll));
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            let sleep = rate_wait.map_or(sleep, |d| d.min(sleep));
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.wake.notified() => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// How many acquirers this node runs: `scheduler.acquirers`, or by store.
    /// PostgreSQL claims concurrently (each claim skips the rows another has
    /// locked) and spends most of a claim in the server, so a second acquirer
    /// claims while the first waits on its statements. SQLite has one writer:
    /// a second acquirer would only queue behind the first.
    fn acquirers(&self) -> usize {
        match (self.config.acquirers, self.store.dialect()) {
            (0, Dialect::Postgres) => 2,
            (0, Dialect::Sqlite) => 1,
            (n, _) => n,
        }
    }

    /// How many fires this node should hold claimed: what its workers can start
    /// within the look-ahead window at the recent run time. Short runs are then
    /// claimed and committed in large batches, while long runs are claimed about
    /// one per worker and stay free for other nodes to take.
    fn claim_target(&self) -> usize {
        let workers = self.config.workers.max(1);
        let avg_us = self.avg_run_us.load(std::sync::atomic::Ordering::Relaxed);
        let window_us = u64::try_from(self.config.lookahead_ms.max(1)).unwrap_or(1) * 1000;
        // Before the first run ends, a middle guess.
        let per_worker = window_us
            .checked_div(avg_us)
            .map_or(4, |n| usize::try_from(n + 1).unwrap_or(CLAIM_AHEAD_MAX));
        workers * per_worker.clamp(1, CLAIM_AHEAD_MAX)
    }

    fn record_run_time(&self, took: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let avg = self.avg_run_us.load(Relaxed);
        let next = if avg == 0 { us } else { avg - avg / 8 + us / 8 };
        self.avg_run_us.store(next.max(1), Relaxed);
    }

    /// A claimed fire the node will not start (it is stopping): back to the
    /// queue as if never claimed, with no history row (nothing ran).
    fn release_unstarted(&self, fire: &FireClaim, offset_ms: i64) -> Completion {
        let now = local_ms() + offset_ms;
        self.completion(
            fire,
            HistoryStatus::Cancelled,
            FireNext::Unclaim,
            None,
            now,
            now,
            serde_json::Value::Null,
        )
    }

    /// Takes a claimed fire from the claim to its run: waits for one of its
    /// job's run slots (see [`JobShares`]), then for a worker and its due time,
    /// marks it started in the store unless the claim already did (batched
    /// with the other fires starting then, see [`StartMarks`]), then runs it.
    /// A stop before the run begins hands it back unstarted. Returns the
    /// completion and how long the guest ran (zero when it did not).
    async fn start_fire(
        &self,
        fire: FireClaim,
        offset_ms: i64,
        marked: bool,
        (slots, workers): (Arc<Semaphore>, Arc<Semaphore>),
        mut stop: watch::Receiver<bool>,
        // What the attempt is recorded into: its job's metrics, its trace.
        (job_metrics, trace): (&JobMetrics, &mut Option<AttemptTrace>),
    ) -> (Completion, Duration) {
        let unstarted = |c: Completion| (c, Duration::ZERO);
        let waiting = Step::start(trace);
        // A run of a job at its share waits here, not in the workers' queue,
        // where it would hold back the fires of every other job.
        let slot = tokio::select! {
            slot = slots.acquire_owned() => slot.ok(),
            _ = stopped(&mut stop) => None,
        };
        let Some(_slot) = slot else {
            return unstarted(self.release_unstarted(&fire, offset_ms));
        };
        let worker = tokio::select! {
            worker = workers.acquire_owned() => worker.ok(),
            _ = stopped(&mut stop) => None,
        };
        let Some(_worker) = worker else {
            return unstarted(self.release_unstarted(&fire, offset_ms));
        };
        let wait = fire.due_ms - offset_ms - local_ms();
        if wait > 0 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(0))) => {}
                _ = stopped(&mut stop) => {}
            }
        }
        waiting.end(trace, |t| &mut t.wait_us);
        if *stop.borrow() {
            return unstarted(self.release_unstarted(&fire, offset_ms));
        }
        let mark = Step::start(if marked { &None } else { trace });
        if !marked {
            match self.marks.mark(&fire).await {
                Ok(true) => {}
                Ok(false) => {
                    // Handed back (this node was taken for lost) and maybe
                    // claimed by another node: not this node's to run. The
                    // hand-back below is refused by the claim's fencing.
                    tracing::warn!(
                        fire = %fire.fire_id,
                        job = %fire.job_key,
                        "the fire's claim was taken back before its run began; not running it"
                    );
                    return unstarted(self.release_unstarted(&fire, offset_ms));
                }
                Err(e) => {
                    return unstarted(self.release_unreadable(
                        &fire,
                        "claim",
                        &e,
                        local_ms() + offset_ms,
                    ));
                }
            }
        }
        mark.end(trace, |t| &mut t.mark_us);
        self.run_fire(fire, offset_ms, job_metrics, trace).await
    }

    /// Whether claims are marked started as they are made rather than each as
    /// its run begins: when recent runs took less than [`MARK_AHEAD_BELOW_US`],
    /// a store write per run would bound the node's throughput. The price: if
    /// the node dies, the fires it claimed ahead (at most [`CLAIM_AHEAD_MAX`]
    /// per worker) count as interrupted. Longer runs, and all runs while the
    /// run time is unknown, are marked exactly as they begin.
    fn mark_ahead(&self) -> bool {
        let avg_us = self.avg_run_us.load(Ordering::Relaxed);
        avg_us > 0 && avg_us < MARK_AHEAD_BELOW_US
    }

    /// A fire whose module or event cannot be read (the store is down): back
    /// to the queue, recorded as cancelled with the reason.
    fn release_unreadable(
        &self,
        fire: &FireClaim,
        what: &str,
        e: &crate::store::StoreError,
        at_ms: i64,
    ) -> Completion {
        tracing::warn!(fire = %fire.fire_id, error = %e, "cannot read the fire's {what} from the store; releasing the fire");
        let details = json!({ "reason": "store-unavailable", "error": e.to_string() });
        self.completion(
            fire,
            HistoryStatus::Cancelled,
            FireNext::Release,
            None,
            at_ms,
            at_ms,
            details,
        )
    }

    async fn run_fire(
        &self,
        fire: FireClaim,
        offset_ms: i64,
        job_metrics: &JobMetrics,
        trace: &mut Option<AttemptTrace>,
    ) -> (Completion, Duration) {
        let started_us = local_us() + offset_ms * 1000;
        let started_ms = started_us.div_euclid(1000);
        // Early (claimed ahead, clocks apart): counted as on time.
        let lag_us = u64::try_from(started_us - fire.due_ms * 1000).unwrap_or(0);
        // A run-now's trigger is `JOB:manual` (the store's `fire_now`).
        let clock = fire.event_id.is_none() && !fire.trigger_key.ends_with(":manual");
        if fire.origin.is_plain() {
            self.metrics.fire_started(
                job_metrics,
                clock.then_some(fire.scheduled_ms),
                Duration::from_micros(lag_us),
                fire.attempt,
            );
        } else {
            // A backfill's or replay's fires wait for each other by design and
            // their times are old ones: counted apart, out of the lag and
            // interval of the job's own fires.
            self.metrics.fire_of_origin(job_metrics, fire.origin.kind());
        }
        let resolve = Step::start(trace);
        let job = match self.resolver.resolve(&fire.job.module).await {
            // Claimed as runnable, but the reference moved to a module for a
            // contract this node does not run (pushed after the claim).
            Ok(JobImpl::Wasm(m)) if !m.wit_version.runs_on(self.wit) => {
                JobImpl::NoOp(ModuleRejection {
                    code: SkipCode::ModuleIncompatible,
                    detail: format!(
                        "the module is built for quartzite:job {} and this node runs {}.{}",
                        m.wit_version, self.wit.major, self.wit.minor
                    ),
                })
            }
            Ok(job) => job,
            Err(e) => {
                return (
                    self.release_unreadable(&fire, "module", &e, started_ms),
                    Duration::ZERO,
                );
            }
        };
        let event = match &fire.event_id {
            None => None,
            Some(id) => match self.store.event_get(id).await {
                Ok(event) => event.map(|e| TriggerEvent {
                    id: e.event_id,
                    name: e.name,
                    payload: e.payload,
                    key: e.key,
                    depth: e.depth,
                    emitted_at: to_system_time(e.created_ms),
                    source_job: e.source_job,
                }),
                Err(e) => {
                    return (
                        self.release_unreadable(&fire, "event", &e, started_ms),
                        Duration::ZERO,
                    );
                }
            },
        };
        let mut request = RunRequest {
            job_key: fire.job_key.clone(),
            trigger_key: fire.trigger_key.clone(),
            fire_id: fire.fire_id.clone(),
            scheduled_at: to_system_time(fire.scheduled_ms),
            attempt: fire.attempt,
            recovering: fire.recovering,
            data: fire.job.data.clone(),
            event,
            depth: fire.depth,
            limits: Limits {
                timeout: Duration::from_millis(fire.job.timeout_ms.max(1)),
                max_memory: fire.job.max_memory,
                max_kv_keys: fire
                    .job
                    .kv_max_keys
                    .unwrap_or(Limits::default().max_kv_keys),
                max_kv_bytes: fire
                    .job
                    .kv_max_bytes
                    .unwrap_or(Limits::default().max_kv_bytes),
                ..Limits::default()
            },
            grants: GrantsFrom::Stored(fire.job.grants.clone()),
            trace: None,
            stop: None,
            // A backfill's guest lives on its scheduled day (see `FireOrigin`).
            wall_clock_from: matches!(fire.origin, FireOrigin::Backfill(_))
                .then(|| to_system_time(fire.scheduled_ms)),
        };
        // A run of a `cancel-other` job can be asked to stop by a newer fire.
        let _stop_slot = (fire.job.overlap == Overlap::CancelOther).then(|| {
            let (tx, rx) = watch::channel(None);
            request.stop = Some(rx);
            self.stops_update(|s| {
                s.insert(fire.fire_id.clone(), tx);
            });
            StopSlot {
                scheduler: self,
                fire_id: fire.fire_id.clone(),
            }
        });
        resolve.end(trace, |t| &mut t.resolve_us);
        if let Some(t) = trace.as_mut() {
            if let JobImpl::Wasm(m) = &job {
                t.module_digest = Some(m.digest.clone());
            }
            t.run_began = Some(SystemTime::now());
            request.trace = Some(t.run_context());
        }
        let report = self.guests.execute(&self.runtime, &job, request).await;
        self.record_run_time(report.duration);
        let ended_ms = started_ms + i64::try_from(report.duration.as_millis()).unwrap_or(0);
        let (status, next, new_data) = self.decide(&fire, &report, ended_ms);
        if let Some(t) = trace.as_mut() {
            t.run_ended = Some(SystemTime::now());
            t.outcome = Some(status.as_str());
        }
        let details = history_details(&fire, &report, &job, &self.node_id, &next);
        let completion =
            self.completion(&fire, status, next, new_data, started_ms, ended_ms, details);
        (completion, report.duration)
    }

    fn decide(
        &self,
        fire: &FireClaim,
        report: &RunReport,
        now_ms: i64,
    ) -> (HistoryStatus, FireNext, Option<String>) {
        let retry = &fire.job.retry;
        match &report.outcome {
            RunOutcome::Completed { new_data, .. } => {
                (HistoryStatus::Success, FireNext::Done, new_data.clone())
            }
            RunOutcome::Skipped { .. } => (HistoryStatus::Skipped, FireNext::Done, None),
            RunOutcome::Cancelled => (HistoryStatus::Cancelled, FireNext::Release, None),
            RunOutcome::Superseded { .. } => (HistoryStatus::Cancelled, FireNext::Done, None),
            outcome if outcome.is_retryable() && fire.attempt < retry.max_attempts => {
                let delay =
                    retry.delay_ms(fire.attempt, jitter_sample(&fire.fire_id, fire.attempt));
                let due_ms = now_ms + i64::try_from(delay).unwrap_or(i64::MAX / 2);
                (HistoryStatus::Retried, FireNext::Retry { due_ms }, None)
            }
            RunOutcome::TimedOut { .. } => (HistoryStatus::Timeout, FireNext::Done, None),
            _ => (HistoryStatus::Failed, FireNext::Done, None),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn completion(
        &self,
        fire: &FireClaim,
        status: HistoryStatus,
        next: FireNext,
        new_data: Option<String>,
        started_ms: i64,
        ended_ms: i64,
        details: serde_json::Value,
    ) -> Completion {
        Completion {
            fire_id: fire.fire_id.clone(),
            node_id: self.node_id.clone(),
            fencing: fire.fencing,
            held: fire.held,
            next,
            new_data,
            history: HistoryEntry {
                id: crate::store::sched::new_id(),
                fire_id: Some(fire.fire_id.clone()),
                job_key: fire.job_key.clone(),
                trigger_key: Some(fire.trigger_key.clone()),
                status,
                attempt: fire.attempt,
                node_id: Some(self.node_id.clone()),
                scheduled_ms: Some(fire.scheduled_ms),
                started_ms,
                ended_ms,
                duration_ms: ended_ms - started_ms,
                details: details.to_string(),
            },
        }
    }

    /// Commits completions in batches: whatever has queued up while the previous
    /// commit ran goes into the next transaction.
    async fn complete_loop(self: Arc<Self>, mut done: mpsc::Receiver<Ended>) {
        let mut ended = Vec::new();
        let mut batch = Vec::new();
        let mut observed = Vec::new();
        while done.recv_many(&mut ended, 512).await > 0 {
            for e in ended.drain(..) {
                batch.push(e.completion);
                observed.push((e.job, e.took, e.trace, e.pause_on_failure));
            }
            // The commit of the whole batch, as a step of each traced fire in it.
            let committing = crate::domain::trace::fires_traced().then(Instant::now);
            let mut backoff = Duration::from_millis(100);
            loop {
                match self.store.fire_complete(&batch).await {
                    Ok(accepted) => {
                        self.held_update(|held| {
                            for c in &batch {
                                // A stale claim's end leaves a newer claim held.
                                if held.get(&c.fire_id) == Some(&c.fencing) {
                                    held.remove(&c.fire_id);
                                }
                            }
                        });
                        let commit_us = committing.map(|t| t.elapsed().as_micros());
                        for ((c, (job, took, trace, pause_on_failure)), ok) in
                            batch.iter().zip(observed.drain(..)).zip(accepted)
                        {
                            if let (Some(us), Some(t)) = (commit_us, trace) {
                                let status = if ok {
                                    c.history.status.as_str()
                                } else {
                                    "refused"
                                };
                                let fire_start = (ok && matches!(c.next, FireNext::Done))
                                    .then(|| self.fire_start(c, t.began));
                                let us = u64::try_from(us).unwrap_or(u64::MAX);
                                t.end(&self.node_id, status, us, fire_start);
                            }
                            if ok {
                                self.metrics.task_ended(
                                    &job,
                                    c.history.status,
                                    took,
                                    matches!(c.next, FireNext::Retry { .. }),
                                    c.history.ended_ms,
                                );
                                if let Some(n) = pause_on_failure
                                    && FAILURE_STATUSES.contains(&c.history.status)
                                {
                                    self.pause_if_failing(c.history.clone(), n);
                                }
                            } else {
                                tracing::warn!(fire = %c.fire_id, "completion refused: the fire was taken over by another node");
                            }
                        }
                        break;
                    }
                    Err(e) => {
                        // Keep trying: a lost completion would make the fire run again.
                        tracing::warn!(error = %e, fires = batch.len(), "committing completions failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            batch.clear();
            self.wake.notify_one();
        }
    }

    /// Pauses the job of the failed run `row` if it ends a streak of `n`
    /// failed runs (its `pause_on_failure`), counted as the
    /// `consecutive-failures` alert counts them; off the completion loop, and
    /// only a failed run pays for the check.
    fn pause_if_failing(self: &Arc<Self>, row: HistoryEntry, n: u32) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let job = row.job_key.as_str();
            let paused = async {
                let runs = me
                    .store
                    .history_runs_before(job, &row, i64::from(n))
                    .await?;
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if runs.first().is_none_or(|(id, _)| *id != row.id) || failure_streak(&runs) < n {
                    return Ok(false);
                }
                let note = format!("paused after {n} failed runs in a row (pause_on_failure)");
                me.store.job_pause_if_active(job, &note).await
            };
            match paused.await {
                Ok(true) => {
                    tracing::warn!(
                        job,
                        failures = n,
                        "paused after failed runs in a row (pause_on_failure)"
                    );
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(job, error = %e, "checking pause_on_failure failed"),
            }
        });
    }

    /// When the root span of the trace of the ended fire `c` starts: its due
    /// time, or `began` (its last attempt's claim) if that came earlier.
    fn fire_start(&self, c: &Completion, began: SystemTime) -> SystemTime {
        let h = &c.history;
        let due = to_system_time(h.scheduled_ms.unwrap_or(h.started_ms));
        // An earlier attempt may have been claimed ahead of the due time, at
        // most the look-ahead window before it.
        let earliest = if h.attempt <= 1 {
            due
        } else {
            due - Duration::from_millis(u64::try_from(self.config.lookahead_ms).unwrap_or(0))
        };
        earliest.min(began)
    }

    /// Compiles a module pushed through another process in the background,
    /// leaving the fires of the jobs that use it to other nodes until it is
    /// loaded here (see `ModuleResolver::hold_for_compile`): a node that
    /// has it (the one it was pushed through, or the first to finish) runs
    /// them meanwhile, and no fire waits on a compile.
    async fn compile_ahead(self: &Arc<Self>, digest: String) {
        let ahead = match self.resolver.hold_for_compile(&digest, self.wit).await {
            Ok(Some(ahead)) => ahead,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(%digest, error = %e, "cannot read a pushed module");
                return;
            }
        };
        let me = Arc::clone(self);
        tokio::spawn(async move {
            match ahead.compile().await {
                Ok(true) => tracing::info!(%digest, "pushed module compiled"),
                Ok(false) => {}
                Err(e) => tracing::warn!(%digest, error = %e, "cannot read a pushed module"),
            }
            // The hold ends (compiled or not); the fires left meanwhile are claimable here.
            drop(ahead);
            me.wake.notify_one();
        });
    }

    /// Each job's room in a claim: its share of the node, none for the jobs
    /// whose module is being compiled ahead here.
    fn room(&self) -> crate::store::model::JobRoom {
        let mut room = self.shares.room(Duration::from_millis(
            u64::try_from(self.config.lookahead_ms.max(1)).unwrap_or(1),
        ));
        for job in self.resolver.held_jobs() {
            room.jobs.insert(job, 0);
        }
        room
    }

    /// Follows modules pushed through any process: the resolver forgets what
    /// references meant, and a module this node can run is compiled before its
    /// first fire here (`compile_ahead`). Without a feed (SQLite) the
    /// resolver's short cache does it.
    async fn module_watch_loop(self: Arc<Self>) {
        let mut retry = Duration::from_millis(500);
        loop {
            match self.store.module_watch().await {
                Ok(None) => return,
                Ok(Some(mut watch)) => {
                    retry = Duration::from_millis(500);
                    // Pushes made before the feed started are not announced.
                    self.resolver.forget();
                    loop {
                        match watch.next().await {
                            Ok(ModuleEvent::Pushed(digest)) => {
                                self.resolver.forget();
                                self.compile_ahead(digest).await;
                            }
                            // An event's fires, added by another process.
                            Ok(ModuleEvent::FiresAdded) => self.wake.notify_one(),
                            // A claim on another node asked runs to stop.
                            Ok(ModuleEvent::StopsAsked) => self.read_stop_requests().await,
                            Ok(ModuleEvent::Missed) => self.resolver.forget(),
                            Err(e) => {
                                tracing::warn!(error = %e, "module feed lost; reconnecting");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot follow module pushes; retrying"),
            }
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(Duration::from_secs(5));
        }
    }

    /// Check-ins, lease renewal, recovery of dead nodes' fires, history cleanup.
    async fn upkeep_loop(self: Arc<Self>, stop: watch::Receiver<bool>) {
        let every = Duration::from_millis(
            u64::try_from(self.config.lease_ms / 3)
                .unwrap_or(1000)
                .clamp(100, 2_000),
        );
        // Check-ins must be well inside `dead_after_ms`, so a live node is never
        // taken for dead, and recovery passes frequent, so failover is quick.
        let mut tick = tokio::time::interval(
            every.min(Duration::from_millis(
                u64::try_from(self.config.dead_after_ms / 6)
                    .unwrap_or(250)
                    .max(50),
            )),
        );
        let mut last_cleanup = None::<tokio::time::Instant>;
        // Since when this node's check-ins have succeeded without a break. After
        // an outage of the database every node looks dead; recovering before the
        // others had a dead-after interval to check in again would take their
        // running fires from them.
        let mut checked_in_since = None::<tokio::time::Instant>;
        let settle = Duration::from_millis(u64::try_from(self.config.dead_after_ms).unwrap_or(0));
        loop {
            tick.tick().await;
            if *stop.borrow() {
                return;
            }
            let check_in = NodeCheckIn {
                node_id: self.node_id.clone(),
                version: env!("CARGO_PKG_VERSION").into(),
                wit_versions: match self.wit.minor {
                    0 => format!("{}.0", self.wit.major),
                    minor => format!("{}.0-{}.{minor}", self.wit.major, self.wit.major),
                },
                runs: self.runs(),
                modules: self.runtime.loaded_digests(),
            };
            match self.store.node_heartbeat(&check_in).await {
                Ok(()) => {
                    checked_in_since.get_or_insert_with(tokio::time::Instant::now);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "check-in failed");
                    checked_in_since = None;
                }
            }
            let held: Vec<String> = self
                .held
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .keys()
                .cloned()
                .collect();
            if let Err(e) = self
                .store
                .lease_renew(&self.node_id, &held, self.config.lease_ms)
                .await
            {
                tracing::warn!(error = %e, "renewing leases failed");
            }
            // Where no feed announces requests to stop runs (or one was
            // missed), they are read here.
            self.read_stop_requests().await;
            // Pauses given an end (`job pause --until`) end here, on any node.
            match self.store.jobs_resume_due().await {
                Ok(resumed) if !resumed.is_empty() => {
                    tracing::info!(jobs = ?resumed, "resumed jobs whose pause ran out");
                    self.wake.notify_one();
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "resuming jobs whose pause ran out failed"),
            }
            if checked_in_since.is_none_or(|t| t.elapsed() < settle) {
                continue;
            }
            match self
                .store
                .fire_recover(self.config.dead_after_ms, Some(&self.node_id))
                .await
            {
                Ok(0) => {}
                Ok(n) => {
                    tracing::warn!(fires = n, "recovered fires of a node that stopped");
                    self.wake.notify_one();
                }
                Err(e) => tracing::warn!(error = %e, "recovery pass failed"),
            }
            match self
                .store
                .fire_skip_unrunnable(self.config.dead_after_ms, self.runs())
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::warn!(fires = n, "skipped fires no live node can run"),
                Err(e) => tracing::warn!(error = %e, "skipping unrunnable fires failed"),
            }
            if last_cleanup.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
                match self
                    .store
                    .history_cleanup(self.config.history_max_age_ms, self.config.history_max_rows)
                    .await
                {
                    Ok(n) if n > 0 => tracing::info!(rows = n, "history cleanup"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "history cleanup failed"),
                }
                // Events and finished alert deliveries live as long as history.
                if let Ok(now) = self.store.now_ms().await {
                    let before = now - self.config.history_max_age_ms;
                    if let Err(e) = self.store.event_cleanup(before).await {
                        tracing::warn!(error = %e, "event cleanup failed");
                    }
                    if let Err(e) = self.store.alert_cleanup(before).await {
                        tracing::warn!(error = %e, "alert delivery cleanup failed");
                    }
                }
                // The audit log is kept as history is: same age, same row cap.
                match self
                    .store
                    .audit_cleanup(self.config.history_max_age_ms, self.config.history_max_rows)
                    .await
                {
                    Ok(n) if n > 0 => tracing::info!(rows = n, "audit log cleanup"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "audit log cleanup failed"),
                }
                last_cleanup = Some(tokio::time::Instant::now());
            }
        }
    }
}

/// A deterministic jitter sample per fire and attempt, so a recovered fire
/// computes the same delay.
fn jitter_sample(fire_id: &str, attempt: u32) -> f64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    fire_id.hash(&mut h);
    attempt.hash(&mut h);
    (h.finish() % 1_000_000) as f64 / 1_000_000.0
}

fn history_details(
    fire: &FireClaim,
    report: &RunReport,
    job: &JobImpl,
    node: &str,
    next: &FireNext,
) -> serde_json::Value {
    let mut outcome = serde_json::to_value(&report.outcome).unwrap_or(serde_json::Value::Null);
    if let Some(obj) = outcome.as_object_mut() {
        for key in ["details", "new_data"] {
            if let Some(text) = obj.get(key).and_then(|v| v.as_str()).map(str::to_string)
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            {
                obj.insert(key.into(), v);
            }
        }
    }
    let logs: Vec<&crate::runtime::LogLine> = report
        .logs
        .iter()
        .rev()
        .take(20)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let mut details = json!({
        "outcome": outcome,
        "attempt": fire.attempt,
        "recovering": fire.recovering,
        "node": node,
        "logs": logs,
        "logs_dropped": report.logs_dropped,
    });
    if let JobImpl::Wasm(m) = job {
        details["module"] = json!({ "digest": m.digest, "wit_version": m.wit_version.to_string() });
    }
    if let FireNext::Retry { due_ms } = next {
        details["retry_at_ms"] = json!(due_ms);
    }
    if let Some(event) = &fire.event_id {
        details["event"] = json!({ "id": event, "depth": fire.depth });
    }
    if let Some(flow) = &fire.flow {
        details["flow"] = json!({
            "concurrency_key": flow.concurrency_key,
            "rate_key": flow.rate_key,
            "admitted_ms": flow.admitted_ms,
        });
        if let Some(c) = &fire.job.flow.coalesce
            && fire.event_id.is_some()
        {
            // One run for this many events (the one it ran with is the last).
            details["coalesced"] = json!({ "by": c.mode(), "events": flow.coalesced + 1 });
        }
    }
    match &fire.origin {
        FireOrigin::Plain => {}
        FireOrigin::Backfill(mode) => {
            details["origin"] = json!("backfill");
            details["backfill_overlap"] = json!(mode.as_str());
        }
        FireOrigin::Replay { of } => {
            details["origin"] = json!("replay");
            details["replay_of"] = json!(of);
        }
    }
    details
}

/// A run's place in [`Scheduler::stops`], given up when the run ends.
struct StopSlot<'a> {
    scheduler: &'a Scheduler,
    fire_id: String,
}

impl Drop for StopSlot<'_> {
    fn drop(&mut self) {
        self.scheduler.stops_update(|s| {
            s.remove(&self.fire_id);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_wit_only_narrows_what_the_node_runs() {
        let with = |v: &str| SchedulerConfig {
            max_wit: Some(v.into()),
            ..SchedulerConfig::default()
        };
        assert_eq!(SchedulerConfig::default().wit(), Ok(WIT_VERSION));
        assert_eq!(with("0.9").wit().map(|v| (v.major, v.minor)), Ok((0, 9)));
        assert_eq!(with(" 1.0 ").wit().map(|v| (v.major, v.minor)), Ok((1, 0)));
        assert_eq!(with("1.1").wit(), Ok(WIT_VERSION));
        assert!(
            with("1.2")
                .wit()
                .unwrap_err()
                .contains("cannot advertise more")
        );
        assert!(
            with("2.0")
                .wit()
                .unwrap_err()
                .contains("cannot advertise more")
        );
        assert!(with("1.0.0").wit().unwrap_err().contains("MAJOR.MINOR"));
        assert!(with("one").wit().unwrap_err().contains("MAJOR.MINOR"));
    }
}
