//! A node's Prometheus metrics: one registry per node, owned by its scheduler
//! and read by the admin API's `/metrics`.
//!
//! Names and labels follow Prometheus's conventions: base units (seconds,
//! observed with sub-millisecond resolution), `_total` counters, and no label
//! that a scrape sets itself (`job`, `instance`): a job is `job_key` and
//! `job_group`. The task metrics keep their first names, which dashboards key
//! on. Counters and histograms are recorded where the event happens (the
//! scheduler's completion point, lock acquisition, module loads) with no store
//! access.
//!
//! Per-job series are reached through a [`JobMetrics`] handle that the
//! scheduler takes once per claimed fire: recording then touches atomics only,
//! never the label map. A job's series are at most 47 samples per scrape
//! with its histograms, 9 without (statuses it never had and the interval of
//! a job with one clock fire are not made); `scheduler.job_histograms = false` leaves the
//! per-job histograms out for nodes running very many jobs.
//!
//! The gauges that describe the whole cluster (triggers by state, nodes) are
//! read from the store when scraped, and only by the node that holds the alert
//! lock (one node at a time, see [`Metrics::set_cluster_reporter`]), so that
//! summing them over instances counts each trigger once; a fire never costs a
//! count query.

use crate::store::Store;
use crate::store::model::{HistoryStatus, TriggerCounts};
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

/// Every trigger state the gauge reports, so each series exists from the first
/// scrape and drops to 0 instead of vanishing. `ACQUIRED` and `BLOCKED` are the
/// reference's names for fires claimed but not started and `forbid` fires held
/// back; Quartzite keeps those as fires, so they are reported from the fires
/// table (`EXECUTING`) or as 0.
pub const TRIGGER_STATES: [&str; 7] = [
    "WAITING",
    "ACQUIRED",
    "EXECUTING",
    "PAUSED",
    "BLOCKED",
    "ERROR",
    "COMPLETE",
];

/// Every history status, in the order of [`status_index`]: each job's counter
/// of each status exists from its first fire, so `increase()` sees its first
/// failure (a series born at 1 has no increase).
const STATUSES: [HistoryStatus; 7] = [
    HistoryStatus::Success,
    HistoryStatus::Failed,
    HistoryStatus::Retried,
    HistoryStatus::Timeout,
    HistoryStatus::Skipped,
    HistoryStatus::Cancelled,
    HistoryStatus::Misfired,
];

fn status_index(status: HistoryStatus) -> usize {
    match status {
        HistoryStatus::Success => 0,
        HistoryStatus::Failed => 1,
        HistoryStatus::Retried => 2,
        HistoryStatus::Timeout => 3,
        HistoryStatus::Skipped => 4,
        HistoryStatus::Cancelled => 5,
        HistoryStatus::Misfired => 6,
    }
}

/// Whether a run with this status ran its guest, so that its duration says
/// how long the job takes (a skipped or cancelled fire did not run it).
fn ran_guest(status: HistoryStatus) -> bool {
    matches!(
        status,
        HistoryStatus::Success
            | HistoryStatus::Failed
            | HistoryStatus::Retried
            | HistoryStatus::Timeout
    )
}

/// What a node's metrics export beyond the fixed set.
#[derive(Clone, Debug)]
pub struct MetricsOptions {
    /// Per-job duration and lag histograms (`scheduler.job_histograms`).
    pub job_histograms: bool,
    /// Jobs with series of their own (`scheduler.max_job_series`); the fires
    /// of jobs past it are counted under `job_key="(other)"`.
    pub max_job_series: usize,
}

/// The default of [`MetricsOptions::max_job_series`].
pub const DEFAULT_MAX_JOB_SERIES: usize = 10_000;

/// The `job_key` (and `job_group`) of the series that count the fires of
/// jobs past [`MetricsOptions::max_job_series`]: no job key has this form.
pub const OTHER_JOBS: &str = "(other)";

impl Default for MetricsOptions {
    fn default() -> Self {
        MetricsOptions {
            job_histograms: true,
            max_job_series: DEFAULT_MAX_JOB_SERIES,
        }
    }
}

/// The metrics of one node.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    tasks_executed: IntCounterVec,
    /// `quartzite_task_duration_seconds` by status, in [`STATUSES`] order.
    task_duration: Vec<Histogram>,
    /// `quartzite_fire_lag_seconds` of first attempts and of retries.
    fire_lag_first: Histogram,
    fire_lag_retry: Histogram,
    job_duration: Option<HistogramVec>,
    job_lag: Option<HistogramVec>,
    job_last_success: GaugeVec,
    job_interval: GaugeVec,
    /// Each job's handles, made at its first fire on this node, for at most
    /// `max_job_series` jobs; the others share `other_jobs`.
    jobs: RwLock<HashMap<String, Arc<JobMetrics>>>,
    max_job_series: usize,
    other_jobs: std::sync::OnceLock<Arc<JobMetrics>>,
    misfires: IntCounter,
    skipped: IntCounter,
    deferred: IntCounterVec,
    /// Started fires an operator made for other times: backfills, replays.
    fires_by_origin: IntCounterVec,
    retries: IntCounter,
    lock_acquisitions: IntCounterVec,
    alerts: IntCounterVec,
    events: IntCounterVec,
    http_requests: IntCounterVec,
    module_compile: Histogram,
    build_info: IntGaugeVec,
    reports_cluster: AtomicBool,
    cluster_reporter: IntGauge,
    triggers: IntGaugeVec,
    nodes: IntGaugeVec,
}

/// The series of one job, taken once per claimed fire with [`Metrics::job`]:
/// recording through it costs atomic adds, no label lookup.
#[derive(Debug)]
pub struct JobMetrics {
    /// `quartzite_tasks_executed_total` by status. Success, failed and
    /// timeout exist from the job's first fire (at 0, so that `increase()`
    /// sees a job's first failure); the others are made at their first use:
    /// each series costs allocations and a label hash when it is made.
    executed: [std::sync::OnceLock<IntCounter>; STATUSES.len()],
    labels: [String; 2],
    last_success: Gauge,
    /// Made at the job's second clock fire, when there is an interval: a
    /// one-shot job has none.
    interval: std::sync::OnceLock<Gauge>,
    /// The newest scheduled time (Unix ms) of a first attempt seen, 0: none.
    last_scheduled_ms: AtomicI64,
    duration: Option<Histogram>,
    lag: Option<Histogram>,
    /// The series of the jobs past the bound, together: no interval.
    shared: bool,
}

/// Buckets in seconds from 1 ms to 10 min: runs and lags of interest span
/// both; below 1 ms the sum still tells the mean, as values are observed in
/// nanoseconds.
const SECONDS_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 600.0,
];

/// `job_group` of a job key `GROUP/NAME`: what comes before the first `/`.
fn job_group(job_key: &str) -> &str {
    job_key.split_once('/').map_or(job_key, |(group, _)| group)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered, per-job histograms included.
    pub fn new() -> Self {
        Self::with_options(&MetricsOptions::default())
    }

    /// A fresh registry with every metric registered, per-job series as `options` say.
    pub fn with_options(options: &MetricsOptions) -> Self {
        let registry = Registry::new();
        // Registration only fails on a duplicate or malformed name: the names
        // below are constants and each is registered once, in a fresh registry.
        macro_rules! register {
            ($metric:expr) => {{
                let m = $metric;
                if let Err(e) = registry.register(Box::new(m.clone())) {
                    tracing::error!(error = %e, "metric not registered");
                }
                m
            }};
        }
        // process_cpu_seconds_total, process_resident_memory_bytes, open fds,
        // start time: read from /proc at each scrape (Linux only).
        #[cfg(target_os = "linux")]
        if let Err(e) = registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )) {
            tracing::error!(error = %e, "process metrics not registered");
        }
        let buckets = SECONDS_BUCKETS.to_vec();
        let task_duration = register!(histogram_vec(
            HistogramOpts::new(
                "quartzite_task_duration_seconds",
                "Wall-clock time of runs ended on this node, by history status.",
            )
            .buckets(buckets.clone()),
            &["status"],
        ));
        let fire_lag = register!(histogram_vec(
            HistogramOpts::new(
                "quartzite_fire_lag_seconds",
                "How late a run started after it was due, by attempt: first (start minus scheduled time, what the API's lag statistics count) or retry (start minus the time the retry policy set).",
            )
            .buckets(buckets.clone()),
            &["attempt"],
        ));
        let job_labels = &["job_key", "job_group"];
        let m = Metrics {
            tasks_executed: register!(counter_vec(
                "quartzite_tasks_executed_total",
                "Runs and recorded fires ended on this node, by job and history status.",
                &["job_key", "job_group", "status"],
            )),
            task_duration: STATUSES
                .iter()
                .map(|s| task_duration.with_label_values(&[s.as_str()]))
                .collect(),
            fire_lag_first: fire_lag.with_label_values(&["first"]),
            fire_lag_retry: fire_lag.with_label_values(&["retry"]),
            job_duration: options.job_histograms.then(|| {
                register!(histogram_vec(
                    HistogramOpts::new(
                        "quartzite_job_duration_seconds",
                        "Wall-clock time of the job's runs that ran its guest (success, failed, retried, timeout) on this node.",
                    )
                    .buckets(buckets.clone()),
                    job_labels,
                ))
            }),
            job_lag: options.job_histograms.then(|| {
                register!(histogram_vec(
                    HistogramOpts::new(
                        "quartzite_job_fire_lag_seconds",
                        "How late the job's first attempts started on this node after their scheduled time (retries are left out: they wait on purpose).",
                    )
                    .buckets(buckets.clone()),
                    job_labels,
                ))
            }),
            job_last_success: register!(gauge_vec(
                "quartzite_job_last_success_timestamp_seconds",
                "When the job's latest successful run on this node ended, Unix time; 0 until one does.",
                job_labels,
            )),
            job_interval: register!(gauge_vec(
                "quartzite_job_fire_interval_seconds",
                "Seconds between the scheduled times of the job's latest two clock fires this node ran (first attempts of its cron, every or at triggers; event fires and run-now are left out); 0 until two. With several nodes, the minimum over nodes is the job's interval.",
                job_labels,
            )),
            jobs: RwLock::default(),
            max_job_series: options.max_job_series,
            other_jobs: std::sync::OnceLock::new(),
            misfires: register!(counter(
                "quartzite_misfires_total",
                "Fires that missed their time by more than the misfire threshold (after an outage), as this node's acquisitions found them.",
            )),
            skipped: register!(counter(
                "quartzite_fires_skipped_total",
                "Due fires not run and recorded as skipped by this node's acquisitions: by the overlap policy or in a DST gap.",
            )),
            deferred: register!(counter_vec(
                "quartzite_fires_deferred_total",
                "Due fires this node left queued because their job had its share of the node (scheduler.max_job_runs), by job.",
                job_labels,
            )),
            fires_by_origin: register!(counter_vec(
                "quartzite_fires_by_origin_total",
                "Runs started on this node of fires an operator made for other times, by job and origin (backfill, replay). They are not in quartzite_fire_lag_seconds, whose fires run when due.",
                &["job_key", "job_group", "origin"],
            )),
            retries: register!(counter(
                "quartzite_retries_total",
                "Failed runs scheduled to run again under their job's retry policy.",
            )),
            lock_acquisitions: register!(counter_vec(
                "quartzite_lock_acquisitions_total",
                "Attempts to take a cluster lock, by result (acquired, timeout, error).",
                &["result"],
            )),
            alerts: register!(counter_vec(
                "quartzite_alerts_total",
                "Alert delivery attempts by this node, by rule and result (sent, retry, failed).",
                &["rule", "result"],
            )),
            events: register!(counter_vec(
                "quartzite_events_total",
                "Events emitted through this node, by result (accepted, duplicate, depth-exceeded, chain-budget-exceeded, job-fires-exceeded).",
                &["result"],
            )),
            http_requests: register!(counter_vec(
                "quartzite_http_requests_total",
                "Outbound HTTP requests of guests, by job, host and result (denied, limit, error, 2xx ... 5xx)",
                &["job_key", "host", "result"]
            )),
            module_compile: register!(histogram(
                HistogramOpts::new(
                    "quartzite_module_compile_seconds",
                    "Time to compile a module (or load its compiled code from the disk cache).",
                )
                .buckets(buckets),
            )),
            build_info: register!(int_gauge_vec(
                "quartzite_build_info",
                "Always 1: the node's release (version) and the quartzite:job contract version it runs (wit, MAJOR.MINOR; scheduler.max_wit can lower it).",
                &["version", "wit"],
            )),
            reports_cluster: AtomicBool::new(false),
            cluster_reporter: register!(int_gauge(
                "quartzite_cluster_reporter",
                "1 on the node that exports the cluster-wide gauges (quartzite_triggers, quartzite_nodes): the holder of the alert lock; 0 elsewhere.",
            )),
            triggers: register!(int_gauge_vec(
                "quartzite_triggers",
                "Triggers of the cluster by state; EXECUTING counts fires claimed by a node. Exported by the cluster reporter only.",
                &["state"],
            )),
            nodes: register!(int_gauge_vec(
                "quartzite_nodes",
                "Cluster nodes that checked in, by state (alive, dead). Exported by the cluster reporter only.",
                &["state"],
            )),
            registry,
        };
        for result in ["acquired", "timeout", "error"] {
            m.lock_acquisitions.with_label_values(&[result]);
        }
        m
    }

    /// The series of `job_key`, made at its first call: take it once per fire
    /// (or per batch of fires of one job) and record through it.
    pub fn job(&self, job_key: &str) -> Arc<JobMetrics> {
        {
            let jobs = self.jobs.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(found) = jobs.get(job_key) {
                return Arc::clone(found);
            }
            // Series are kept for the life of the node: a node that runs
            // unboundedly many jobs (one-shot jobs made per request) would
            // keep unboundedly many. Past the bound, jobs are counted together.
            if jobs.len() >= self.max_job_series {
                return self.other_jobs();
            }
        }
        let mut jobs = self.jobs.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = jobs.get(job_key) {
            return Arc::clone(found);
        }
        if jobs.len() >= self.max_job_series {
            return self.other_jobs();
        }
        let made = Arc::new(self.job_series(job_key, job_group(job_key)));
        jobs.insert(job_key.to_owned(), Arc::clone(&made));
        made
    }

    fn other_jobs(&self) -> Arc<JobMetrics> {
        Arc::clone(self.other_jobs.get_or_init(|| {
            let mut shared = self.job_series(OTHER_JOBS, OTHER_JOBS);
            shared.shared = true;
            Arc::new(shared)
        }))
    }

    fn job_series(&self, job_key: &str, job_group: &str) -> JobMetrics {
        let labels = [job_key, job_group];
        let executed = std::array::from_fn(|i| {
            let cell = std::sync::OnceLock::new();
            if matches!(
                STATUSES[i],
                HistoryStatus::Success | HistoryStatus::Failed | HistoryStatus::Timeout
            ) {
                let _ = cell.set(self.tasks_executed.with_label_values(&[
                    labels[0],
                    labels[1],
                    STATUSES[i].as_str(),
                ]));
            }
            cell
        });
        JobMetrics {
            executed,
            labels: [labels[0].to_owned(), labels[1].to_owned()],
            last_success: self.job_last_success.with_label_values(&labels),
            interval: std::sync::OnceLock::new(),
            last_scheduled_ms: AtomicI64::new(0),
            duration: self
                .job_duration
                .as_ref()
                .map(|h| h.with_label_values(&labels)),
            lag: self.job_lag.as_ref().map(|h| h.with_label_values(&labels)),
            shared: false,
        }
    }

    /// Records the release and the contract version this node runs in
    /// `quartzite_build_info`.
    pub fn set_build_info(&self, wit: &str) {
        self.build_info.reset();
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), wit])
            .set(1);
    }

    /// Whether this node exports the cluster-wide gauges: set by the holder of
    /// the alert lock as it takes or loses it, so one node at a time does.
    pub fn set_cluster_reporter(&self, reports: bool) {
        self.reports_cluster.store(reports, Ordering::Relaxed);
        self.cluster_reporter.set(i64::from(reports));
    }

    /// A run (or a fire recorded without one) of `job` ended with `status`
    /// after `duration` and was committed at `ended_ms` (Unix ms).
    pub fn task_ended(
        &self,
        job: &JobMetrics,
        status: HistoryStatus,
        duration: Duration,
        retry: bool,
        ended_ms: i64,
    ) {
        let i = status_index(status);
        job.executed[i]
            .get_or_init(|| {
                self.tasks_executed.with_label_values(&[
                    job.labels[0].as_str(),
                    job.labels[1].as_str(),
                    STATUSES[i].as_str(),
                ])
            })
            .inc();
        let seconds = duration.as_secs_f64();
        self.task_duration[i].observe(seconds);
        if ran_guest(status)
            && let Some(h) = &job.duration
        {
            h.observe(seconds);
        }
        if status == HistoryStatus::Success {
            // Two completions of one job can commit out of order on a node.
            let at = ended_ms as f64 / 1000.0;
            if at > job.last_success.get() {
                job.last_success.set(at);
            }
        }
        if retry {
            self.retries.inc();
        }
    }

    /// How many runs have ended and been committed since this node started:
    /// every status's count of the task duration histogram.
    pub fn tasks_ended(&self) -> u64 {
        self.task_duration
            .iter()
            .map(Histogram::get_sample_count)
            .sum()
    }

    /// A run of `job` started `lag` after it was due; `attempt` 1 is the
    /// fire's first (its lag counts in the job's histogram), later ones
    /// retries. `clock_ms`: the scheduled time (Unix ms) of a fire of the
    /// job's schedule, which sets the job's interval; `None` for the fires of
    /// events and run-now, which come when they come.
    pub fn fire_started(
        &self,
        job: &JobMetrics,
        clock_ms: Option<i64>,
        lag: Duration,
        attempt: u32,
    ) {
        let seconds = lag.as_secs_f64();
        if attempt > 1 {
            self.fire_lag_retry.observe(seconds);
            return;
        }
        self.fire_lag_first.observe(seconds);
        if let Some(h) = &job.lag {
            h.observe(seconds);
        }
        if let Some(scheduled_ms) = clock_ms.filter(|_| !job.shared) {
            // Fires of one job can start out of order: only a newer one counts.
            let previous = job
                .last_scheduled_ms
                .fetch_max(scheduled_ms, Ordering::Relaxed);
            if previous > 0 && scheduled_ms > previous {
                job.interval
                    .get_or_init(|| {
                        self.job_interval
                            .with_label_values(&[job.labels[0].as_str(), job.labels[1].as_str()])
                    })
                    .set((scheduled_ms - previous) as f64 / 1000.0);
            }
        }
    }

    /// A run of `job` started for a fire of `origin` (`backfill`, `replay`):
    /// one label lookup, only for such fires. The jobs past the series bound
    /// count together, as everywhere.
    pub fn fire_of_origin(&self, job: &JobMetrics, origin: &str) {
        self.fires_by_origin
            .with_label_values(&[job.labels[0].as_str(), job.labels[1].as_str(), origin])
            .inc();
    }

    /// An acquisition found `misfired` fires and skipped `skipped` others.
    pub fn fires_not_run(&self, misfired: u64, skipped: u64) {
        self.misfires.inc_by(misfired);
        self.skipped.inc_by(skipped);
    }

    /// An acquisition left due fires of these jobs queued: each had its
    /// share of the node.
    pub fn fires_deferred(&self, by_job: &[(String, u64)]) {
        for (job, n) in by_job {
            self.deferred
                .with_label_values(&[job.as_str(), job_group(job)])
                .inc_by(*n);
        }
    }

    /// One attempt to take a cluster lock ended: `acquired`, `timeout` or `error`.
    pub fn lock_acquisition(&self, result: &str) {
        self.lock_acquisitions.with_label_values(&[result]).inc();
    }

    /// A module was compiled (or loaded from the disk cache) in `took`.
    pub fn module_compiled(&self, took: Duration) {
        self.module_compile.observe(took.as_secs_f64());
    }

    fn set_triggers(&self, counts: &TriggerCounts) {
        for state in TRIGGER_STATES {
            let n = match state {
                "EXECUTING" => counts.executing,
                _ => counts
                    .by_state
                    .iter()
                    .filter(|(s, _)| s == state)
                    .map(|(_, n)| *n)
                    .sum(),
            };
            self.triggers.with_label_values(&[state]).set(n);
        }
    }

    /// Refreshes the cluster-wide gauges (on the cluster reporter; other nodes
    /// export none) and renders every metric in the Prometheus text format.
    ///
    /// # Errors
    ///
    /// When the store cannot be read: a scrape that would show stale gauges as
    /// current fails instead.
    pub async fn render(
        &self,
        store: &dyn Store,
        dead_after_ms: i64,
    ) -> Result<String, crate::store::StoreError> {
        if !self.reports_cluster.load(Ordering::Relaxed) {
            // A family without series is left out of the scrape.
            self.triggers.reset();
            self.nodes.reset();
            return Ok(self.encode());
        }
        let counts = store.trigger_counts().await?;
        self.set_triggers(&counts);
        let nodes = store.node_list(dead_after_ms).await?;
        let alive = nodes.iter().filter(|n| n.alive).count();
        self.nodes
            .with_label_values(&["alive"])
            .set(i64::try_from(alive).unwrap_or(i64::MAX));
        self.nodes
            .with_label_values(&["dead"])
            .set(i64::try_from(nodes.len() - alive).unwrap_or(i64::MAX));
        Ok(self.encode())
    }

    /// Every metric in the Prometheus text format, as last recorded.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

// The constructors below fail only on a malformed name or label, and every one
// used in this file is a constant exercised by the unit test: not input.

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::with_opts(Opts::new(name, help)).expect("constant metric definition")
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("constant metric definition")
}

fn int_gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::with_opts(Opts::new(name, help)).expect("constant metric definition")
}

fn int_gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("constant metric definition")
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), labels).expect("constant metric definition")
}

fn histogram(opts: HistogramOpts) -> Histogram {
    Histogram::with_opts(opts).expect("constant metric definition")
}

fn histogram_vec(opts: HistogramOpts, labels: &[&str]) -> HistogramVec {
    HistogramVec::new(opts, labels).expect("constant metric definition")
}

impl Metrics {
    /// One alert delivery attempt: `result` is `sent`, `retry` or `failed`.
    pub fn alert_attempt(&self, rule: &str, result: &str) {
        self.alerts.with_label_values(&[rule, result]).inc();
    }

    /// One event emitted through this node, by [`EmitOutcome::result`]
    /// (`accepted`, `duplicate`, or the bound that refused it).
    ///
    /// [`EmitOutcome::result`]: crate::store::events::EmitOutcome::result
    pub fn event_emitted(&self, outcome: &crate::store::events::EmitOutcome) {
        self.event_counted(outcome.result());
    }

    /// One outbound request of a guest, ended with `result`.
    pub fn http_request(&self, job_key: &str, host: &str, result: &str) {
        self.http_requests
            .with_label_values(&[job_key, host, result])
            .inc();
    }

    /// One event emitted through this node and answered with `result`.
    pub fn event_counted(&self, result: &str) {
        self.events.with_label_values(&[result]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_of_the_design_is_exported_once() {
        let m = Metrics::new();
        m.set_build_info("1.1");
        let job = m.job("g/j");
        m.fire_started(&job, Some(1_700_000_000_000), Duration::from_micros(300), 1);
        // A run-now between two clock fires is no interval.
        m.fire_started(&job, None, Duration::ZERO, 1);
        m.fire_started(&job, Some(1_700_000_030_000), Duration::ZERO, 1);
        m.task_ended(
            &job,
            HistoryStatus::Success,
            Duration::from_micros(250),
            false,
            1_700_000_000_500,
        );
        let text = m.encode();
        for name in [
            "quartzite_tasks_executed_total{job_group=\"g\",job_key=\"g/j\",status=\"success\"} 1",
            // Failures exist from the job's first fire, at 0.
            "quartzite_tasks_executed_total{job_group=\"g\",job_key=\"g/j\",status=\"failed\"} 0",
            "quartzite_task_duration_seconds_bucket",
            "quartzite_fire_lag_seconds_bucket{attempt=\"first\"",
            "quartzite_job_duration_seconds_sum{job_group=\"g\",job_key=\"g/j\"} 0.00025",
            "quartzite_job_fire_lag_seconds_sum{job_group=\"g\",job_key=\"g/j\"} 0.0003",
            "quartzite_job_fire_interval_seconds{job_group=\"g\",job_key=\"g/j\"} 30",
            "quartzite_job_last_success_timestamp_seconds{job_group=\"g\",job_key=\"g/j\"} 1700000000.5",
            "quartzite_misfires_total 0",
            "quartzite_fires_skipped_total 0",
            "quartzite_retries_total 0",
            "quartzite_lock_acquisitions_total{result=\"acquired\"} 0",
            "quartzite_module_compile_seconds_bucket",
            "quartzite_cluster_reporter 0",
            "quartzite_build_info{version=\"",
            "wit=\"1.1\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
        // No label a scrape would overwrite.
        assert!(!text.contains("{job="), "{text}");
        assert!(!text.contains(",job="), "{text}");
    }

    #[test]
    fn sub_millisecond_runs_add_to_the_sum_and_the_lowest_bucket() {
        let m = Metrics::new();
        let job = m.job("g/fast");
        for _ in 0..4 {
            m.task_ended(
                &job,
                HistoryStatus::Success,
                Duration::from_micros(200),
                false,
                0,
            );
        }
        let text = m.encode();
        let sum = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("quartzite_task_duration_seconds_sum{status=\"success\"} ")
            })
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_default();
        assert!((sum - 0.0008).abs() < 1e-9, "{text}");
    }

    #[test]
    fn per_job_histograms_can_be_left_out() {
        let m = Metrics::with_options(&MetricsOptions {
            job_histograms: false,
            ..MetricsOptions::default()
        });
        let job = m.job("g/j");
        m.fire_started(&job, None, Duration::from_millis(1), 1);
        m.task_ended(
            &job,
            HistoryStatus::Failed,
            Duration::from_millis(1),
            false,
            0,
        );
        let text = m.encode();
        assert!(!text.contains("quartzite_job_duration_seconds"), "{text}");
        assert!(!text.contains("quartzite_job_fire_lag_seconds"), "{text}");
        assert!(
            text.contains("quartzite_fire_lag_seconds_count{attempt=\"first\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "quartzite_job_last_success_timestamp_seconds{job_group=\"g\",job_key=\"g/j\"} 0"
            ),
            "{text}"
        );
    }

    #[test]
    fn jobs_past_the_bound_are_counted_together() {
        let m = Metrics::with_options(&MetricsOptions {
            max_job_series: 2,
            ..MetricsOptions::default()
        });
        for key in ["g/a", "g/b", "g/c", "h/d", "g/a"] {
            let job = m.job(key);
            m.task_ended(&job, HistoryStatus::Success, Duration::ZERO, false, 0);
        }
        let text = m.encode();
        for line in [
            "quartzite_tasks_executed_total{job_group=\"g\",job_key=\"g/a\",status=\"success\"} 2",
            "quartzite_tasks_executed_total{job_group=\"g\",job_key=\"g/b\",status=\"success\"} 1",
            "quartzite_tasks_executed_total{job_group=\"(other)\",job_key=\"(other)\",status=\"success\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains("g/c"), "{text}");
    }

    #[test]
    fn retries_lag_apart_from_first_attempts() {
        let m = Metrics::new();
        let job = m.job("g/j");
        m.fire_started(&job, None, Duration::from_secs(2), 2);
        let text = m.encode();
        assert!(
            text.contains("quartzite_fire_lag_seconds_count{attempt=\"retry\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("quartzite_fire_lag_seconds_count{attempt=\"first\"} 0"),
            "{text}"
        );
        assert!(
            text.contains(
                "quartzite_job_fire_lag_seconds_count{job_group=\"g\",job_key=\"g/j\"} 0"
            ),
            "{text}"
        );
    }

    #[test]
    fn runs_ended_are_counted_across_jobs_and_statuses() {
        let m = Metrics::new();
        assert_eq!(m.tasks_ended(), 0);
        let (a, b) = (m.job("g/a"), m.job("g/b"));
        m.task_ended(&a, HistoryStatus::Success, Duration::ZERO, false, 0);
        m.task_ended(
            &b,
            HistoryStatus::Retried,
            Duration::from_millis(5),
            true,
            0,
        );
        m.task_ended(&a, HistoryStatus::Failed, Duration::from_secs(2), false, 0);
        assert_eq!(m.tasks_ended(), 3);
        assert!(Arc::ptr_eq(&a, &m.job("g/a")), "one handle per job");
    }

    #[tokio::test]
    async fn only_the_cluster_reporter_exports_the_cluster_gauges() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("q.db").display());
        let store = crate::store::open(&url).await.expect("store");
        let m = Metrics::new();
        let text = m.render(store.as_ref(), 1_500).await.expect("render");
        assert!(!text.contains("quartzite_triggers{"), "{text}");
        assert!(!text.contains("quartzite_nodes{"), "{text}");
        m.set_cluster_reporter(true);
        let text = m.render(store.as_ref(), 1_500).await.expect("render");
        assert!(
            text.contains("quartzite_triggers{state=\"WAITING\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("quartzite_nodes{state=\"alive\"} 0"),
            "{text}"
        );
        assert!(text.contains("quartzite_cluster_reporter 1"), "{text}");
        m.set_cluster_reporter(false);
        let text = m.render(store.as_ref(), 1_500).await.expect("render");
        assert!(!text.contains("quartzite_nodes{"), "{text}");
    }
}
