//! A node's Prometheus metrics: one registry per node, owned by its scheduler
//! and read by the admin API's `/metrics`.
//!
//! Names follow DESIGN.md and the reference's task metrics
//! (`quartz-tasks-executed`, `quartz-tasks-states`). Counters and histograms are
//! recorded where the event happens (the scheduler's completion point, lock
//! acquisition, module loads) with no store access; the gauges that describe
//! the whole cluster (triggers by state, nodes) are refreshed from the store when
//! scraped, so a fire never costs a count query.

use crate::store::Store;
use crate::store::model::{HistoryStatus, TriggerCounts};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
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

/// The metrics of one node.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    tasks_executed: IntCounterVec,
    task_duration: HistogramVec,
    fire_lag: Histogram,
    misfires: IntCounter,
    skipped: IntCounter,
    deferred: IntCounterVec,
    retries: IntCounter,
    lock_acquisitions: IntCounterVec,
    alerts: IntCounterVec,
    events: IntCounterVec,
    http_requests: IntCounterVec,
    module_compile: Histogram,
    triggers: IntGaugeVec,
    nodes: IntGaugeVec,
}

/// Buckets in seconds from 1 ms to 10 min: runs and lags of interest span both.
const SECONDS_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 600.0,
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
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
        let buckets = SECONDS_BUCKETS.to_vec();
        let m = Metrics {
            tasks_executed: register!(counter_vec(
                "quartzite_tasks_executed_total",
                "Runs and recorded fires ended, by job key and history status.",
                &["job", "status"],
            )),
            task_duration: register!(histogram_vec(
                HistogramOpts::new(
                    "quartzite_task_duration_seconds",
                    "Wall-clock time of runs, by history status.",
                )
                .buckets(buckets.clone()),
                &["status"],
            )),
            fire_lag: register!(histogram(
                HistogramOpts::new(
                    "quartzite_fire_lag_seconds",
                    "How late a run started after its fire was due.",
                )
                .buckets(buckets.clone()),
            )),
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
                "Due fires this node left queued because their job had its share of the node (scheduler.max_job_runs), by job key.",
                &["job"],
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
            triggers: register!(gauge_vec(
                "quartzite_triggers",
                "Triggers by state; EXECUTING counts fires claimed by a node.",
                &["state"],
            )),
            nodes: register!(gauge_vec(
                "quartzite_nodes",
                "Cluster nodes that checked in, by state (alive, dead).",
                &["state"],
            )),
            registry,
        };
        for state in TRIGGER_STATES {
            m.triggers.with_label_values(&[state]).set(0);
        }
        for state in ["alive", "dead"] {
            m.nodes.with_label_values(&[state]).set(0);
        }
        for result in ["acquired", "timeout", "error"] {
            m.lock_acquisitions.with_label_values(&[result]);
        }
        m
    }

    /// A run (or a fire recorded without one) ended and was committed.
    pub fn task_ended(&self, job: &str, status: HistoryStatus, duration: Duration, retry: bool) {
        self.tasks_executed
            .with_label_values(&[job, status.as_str()])
            .inc();
        self.task_duration
            .with_label_values(&[status.as_str()])
            .observe(duration.as_secs_f64());
        if retry {
            self.retries.inc();
        }
    }

    /// How many runs have ended and been committed since this node started:
    /// every status's count of the task duration histogram.
    pub fn tasks_ended(&self) -> u64 {
        use prometheus::core::Collector;
        self.task_duration
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .map(|m| m.get_histogram().get_sample_count())
            .sum()
    }

    /// A run started `lag_ms` after its fire was due (negative: early, counted as 0).
    pub fn fire_started(&self, lag_ms: i64) {
        self.fire_lag.observe(lag_ms.max(0) as f64 / 1000.0);
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
            self.deferred.with_label_values(&[job.as_str()]).inc_by(*n);
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

    /// Refreshes the store-wide gauges and renders every metric in the Prometheus
    /// text format.
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

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("constant metric definition")
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
        m.task_ended(
            "g/j",
            HistoryStatus::Success,
            Duration::from_millis(3),
            false,
        );
        let text = m.encode();
        for name in [
            "quartzite_tasks_executed_total{job=\"g/j\",status=\"success\"} 1",
            "quartzite_triggers{state=\"WAITING\"} 0",
            "quartzite_task_duration_seconds_bucket",
            "quartzite_fire_lag_seconds_bucket",
            "quartzite_misfires_total 0",
            "quartzite_fires_skipped_total 0",
            "quartzite_retries_total 0",
            "quartzite_lock_acquisitions_total{result=\"acquired\"} 0",
            "quartzite_nodes{state=\"alive\"} 0",
            "quartzite_module_compile_seconds_bucket",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }

    #[test]
    fn runs_ended_are_counted_across_jobs_and_statuses() {
        let m = Metrics::new();
        assert_eq!(m.tasks_ended(), 0);
        m.task_ended("g/a", HistoryStatus::Success, Duration::ZERO, false);
        m.task_ended(
            "g/b",
            HistoryStatus::Retried,
            Duration::from_millis(5),
            true,
        );
        m.task_ended("g/a", HistoryStatus::Failed, Duration::from_secs(2), false);
        assert_eq!(m.tasks_ended(), 3);
    }
}
