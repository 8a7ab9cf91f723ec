//! A node's `[scheduler]` settings, their defaults, and what they derive.

use super::*;

/// Scheduler settings of a node.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Runs at the same time on this node. Default 16.
    pub workers: usize,
    /// Fires due within this many ms are claimed early and started on time. Default 100.
    pub lookahead_ms: i64,
    /// How long a claim holds without renewal; leases are renewed every third of it. Default 6000.
    pub lease_ms: i64,
    /// A node silent for this long is dead and its fires are recovered. Default 1500.
    pub dead_after_ms: i64,
    /// Longest sleep when nothing is due: bounds how late a change made by another
    /// process is seen. Default 500.
    pub poll_ms: u64,
    /// A fire later than this is misfired. Default 60000 (Quartz's).
    pub misfire_threshold_ms: i64,
    /// With `fire-now`, missed fires still run after an outage, at most. Default 10.
    pub catch_up: usize,
    /// On shutdown, how long running fires may finish before being cancelled. Default 10000.
    pub grace_ms: u64,
    /// History older than this is deleted by the cleanup job. Default 30 days.
    pub history_max_age_ms: i64,
    /// At most this many history rows are kept. Default 1,000,000.
    pub history_max_rows: i64,
    /// The newest contract version this node advertises and runs, `MAJOR.MINOR`
    /// (default: the host's own). Lowering it keeps modules built for newer
    /// minors on other nodes, as a host of an older release would.
    pub max_wit: Option<String>,
    /// How deep a chain of events emitted by jobs may go. Default 8.
    pub max_event_depth: u32,
    /// How many events jobs may emit below one root event (an operator's event,
    /// or one a job emitted from a clock fire), at any depth. Default 10,000.
    pub max_chain_events: u32,
    /// An emit is refused while the fires started by the emitting job's events
    /// and not yet ended number this many. Default 1,000.
    pub max_job_event_fires: u32,
    /// The base of links in alerts (e.g. `https://quartzite.example`); the
    /// admin API's address when unset.
    pub public_url: Option<String>,
    /// Acquirers claiming fires at the same time on this node; 0 (default):
    /// 2 on PostgreSQL, 1 on SQLite.
    pub acquirers: usize,
    /// Threads of an executor that runs every guest apart from the node's own
    /// async threads (claims, completions, check-ins, the API), from the start
    /// of each run: bounds guests to that many cores, at a cost of 17-30 % of
    /// the end-to-end throughput of very short runs (BENCHMARKS.md). 0
    /// (default): a run begins on the node's threads and moves to guest
    /// threads of its own (one per core) once it has run for 20 ms, so short
    /// runs pay nothing and long ones cannot delay the node or other jobs.
    pub guest_threads: usize,
    /// Runs of one job at the same time on this node, so that no job takes
    /// every worker (see `engine::shares`); 0 (default): a quarter of
    /// `workers`, at least one.
    pub max_job_runs: usize,
    /// Per-job duration and lag histograms in `/metrics` (default true): 38
    /// series per job. A node running many thousands of jobs turns them off
    /// and keeps the per-job counters, last-success times and intervals.
    pub job_histograms: bool,
    /// Jobs with series of their own in `/metrics` (default 10,000): a node
    /// keeps a job's series for its life, so jobs past this many are counted
    /// together under `job_key="(other)"`.
    pub max_job_series: usize,
}

impl SchedulerConfig {
    /// What this node's metrics export per job.
    pub fn metrics_options(&self) -> crate::metrics::MetricsOptions {
        crate::metrics::MetricsOptions {
            job_histograms: self.job_histograms,
            max_job_series: self.max_job_series,
        }
    }

    /// The bounds on the events this node's jobs emit.
    pub fn emit_bounds(&self) -> crate::store::events::EmitBounds {
        crate::store::events::EmitBounds {
            max_depth: self.max_event_depth,
            max_chain_events: self.max_chain_events,
            max_job_fires: self.max_job_event_fires,
        }
    }

    /// The contract version this node runs: the host's own, or `max_wit`.
    ///
    /// # Errors
    ///
    /// When `max_wit` is not `MAJOR.MINOR` or is newer than what this host implements.
    pub fn wit(&self) -> Result<WitVersion, String> {
        let Some(text) = &self.max_wit else {
            return Ok(WIT_VERSION);
        };
        let wanted = WitVersion::parse(&format!("{}.0", text.trim()))
            .ok_or_else(|| format!("max_wit {text:?}: expected MAJOR.MINOR, e.g. 1.0"))?;
        if wanted > WIT_VERSION {
            return Err(format!(
                "max_wit {text:?}: this host implements quartzite:job {}.{} and cannot advertise more",
                WIT_VERSION.major, WIT_VERSION.minor
            ));
        }
        Ok(wanted)
    }
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            workers: 16,
            lookahead_ms: 100,
            lease_ms: 6_000,
            dead_after_ms: 1_500,
            poll_ms: 500,
            misfire_threshold_ms: 60_000,
            catch_up: 10,
            grace_ms: 10_000,
            history_max_age_ms: 30 * 24 * 3_600_000,
            history_max_rows: 1_000_000,
            max_wit: None,
            max_event_depth: crate::store::events::DEFAULT_MAX_DEPTH,
            max_chain_events: crate::store::events::DEFAULT_MAX_CHAIN_EVENTS,
            max_job_event_fires: crate::store::events::DEFAULT_MAX_JOB_FIRES,
            public_url: None,
            acquirers: 0,
            guest_threads: 0,
            max_job_runs: 0,
            job_histograms: true,
            max_job_series: crate::metrics::DEFAULT_MAX_JOB_SERIES,
        }
    }
}
