//! Each job's share of a node, so that one job cannot starve the others.
//!
//! A node runs at most `max_job_runs` fires of one job at a time (a quarter of
//! its workers unless configured). Runs of a job past its share wait on the
//! job's own slots, not in the workers' queue, so a fire of another job is
//! never queued behind them.
//!
//! Claims leave room for the other jobs as well. A job may hold as many
//! claimed fires as its own runs would need on all the workers over the
//! look-ahead window, less one per worker it may not use: for runs as long as
//! the window or longer (or of a job not run here yet) that is its share and
//! no more, and the rest of its due fires stay queued in the store, counted as
//! deferred, for this node later or for another node; for short runs the limit
//! hardly binds, and a job alone on a node still gets nearly all its claims.
//!
//! The share bounds workers, not CPU: every run is time-sliced (a guest yields
//! to the executor every epoch tick, see `runtime::engine::TICK`), so runs of a
//! job at its share get at most that share of the CPU when other runs want it.

use crate::store::model::JobRoom;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Jobs whose average run time a node remembers; past it, it forgets them all
/// (a job it forgot is claimed as one not run yet: its share, until a run ends).
const REMEMBERED_JOBS: usize = 50_000;

/// The fires of each job a node holds, and the run slots of each job.
#[derive(Debug)]
pub(crate) struct JobShares {
    /// Runs of one job at the same time on this node.
    per_job: usize,
    /// The node's workers.
    workers: usize,
    /// Fires claimed ahead per worker, at most (see the scheduler's claim target).
    ahead_max: usize,
    jobs: Mutex<Jobs>,
}

#[derive(Debug, Default)]
struct Jobs {
    held: HashMap<String, Held>,
    /// Moving average of each job's run time, in microseconds.
    run_us: HashMap<String, u64>,
}

#[derive(Debug)]
struct Held {
    /// Fires of the job claimed by this node and not yet ended.
    fires: usize,
    /// Run slots of the job: `per_job` permits.
    slots: Arc<Semaphore>,
}

impl JobShares {
    /// Shares of `workers` workers, `per_job` runs each (0: a quarter of the
    /// workers, at least one), claiming at most `ahead_max` fires per worker.
    pub(crate) fn new(workers: usize, per_job: usize, ahead_max: usize) -> JobShares {
        let workers = workers.max(1);
        let per_job = match per_job {
            0 => (workers / 4).max(1),
            n => n.min(workers),
        };
        JobShares {
            per_job,
            workers,
            ahead_max: ahead_max.max(1),
            jobs: Mutex::default(),
        }
    }

    /// Runs of one job at the same time.
    pub(crate) fn per_job(&self) -> usize {
        self.per_job
    }

    /// Room each job has in a claim with a look-ahead window of `window`.
    pub(crate) fn room(&self, window: Duration) -> JobRoom {
        let jobs = self.lock();
        let window_us = u64::try_from(window.as_micros()).unwrap_or(u64::MAX).max(1);
        let cap = |job_key: &str| -> usize {
            // Fires one worker runs within the window at the job's run time.
            let ahead = jobs.run_us.get(job_key).map_or(1, |&us| {
                usize::try_from(window_us / us.max(1) + 1).unwrap_or(self.ahead_max)
            });
            (self.workers * ahead.clamp(1, self.ahead_max))
                .saturating_sub(self.workers - self.per_job)
                .max(self.per_job)
        };
        JobRoom {
            default: self.per_job,
            jobs: jobs
                .held
                .iter()
                .map(|(key, held)| (key.clone(), cap(key).saturating_sub(held.fires)))
                .collect(),
        }
    }

    /// A fire of `job_key` was claimed: its job's run slots, to take before
    /// a worker.
    pub(crate) fn claimed(&self, job_key: &str) -> Arc<Semaphore> {
        let mut jobs = self.lock();
        let held = jobs.held.entry(job_key.to_owned()).or_insert_with(|| Held {
            fires: 0,
            slots: Arc::new(Semaphore::new(self.per_job)),
        });
        held.fires += 1;
        Arc::clone(&held.slots)
    }

    /// A claimed fire of `job_key` ended, after a run of `took` (`None`: it
    /// was handed back without running).
    pub(crate) fn ended(&self, job_key: &str, took: Option<Duration>) {
        let mut jobs = self.lock();
        if let Some(held) = jobs.held.get_mut(job_key) {
            held.fires = held.fires.saturating_sub(1);
            if held.fires == 0 {
                jobs.held.remove(job_key);
            }
        }
        let Some(took) = took else { return };
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        if jobs.run_us.len() >= REMEMBERED_JOBS && !jobs.run_us.contains_key(job_key) {
            jobs.run_us.clear();
        }
        let avg = jobs.run_us.entry(job_key.to_owned()).or_insert(us);
        *avg = (*avg - *avg / 4 + us / 4).max(1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Jobs> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(100);

    #[test]
    fn a_quarter_of_the_workers_by_default_and_never_more_than_all() {
        assert_eq!(JobShares::new(16, 0, 16).per_job(), 4);
        assert_eq!(JobShares::new(2, 0, 16).per_job(), 1);
        assert_eq!(JobShares::new(16, 40, 16).per_job(), 16);
        assert_eq!(JobShares::new(16, 3, 16).per_job(), 3);
    }

    #[test]
    fn long_runs_hold_no_more_than_the_share_and_short_runs_nearly_all() {
        let shares = JobShares::new(16, 4, 16);
        let _ = shares.claimed("g/long");
        shares.ended("g/long", Some(Duration::from_secs(30)));
        let _ = shares.claimed("g/long");
        for _ in 0..20 {
            let _ = shares.claimed("g/short");
            shares.ended("g/short", Some(Duration::from_micros(50)));
        }
        let _ = shares.claimed("g/short");
        let room = shares.room(WINDOW);
        // One fire per worker within the window: the job holds its 4 runs.
        assert_eq!(room.jobs["g/long"], 3, "{room:?}");
        // Sixteen per worker (the most): 256 less 12 left for the other jobs.
        assert_eq!(room.jobs["g/short"], 243, "{room:?}");
        // A job not run here yet: its share.
        assert_eq!(room.default, 4);
    }

    #[test]
    fn a_job_holding_its_share_has_no_room_and_others_keep_theirs() {
        let shares = JobShares::new(16, 4, 16);
        for _ in 0..4 {
            let _ = shares.claimed("g/spin");
        }
        let mut room = shares.room(WINDOW);
        assert_eq!(room.full(), vec!["g/spin".to_owned()]);
        assert!(!room.take("g/spin"));
        assert!(room.take("g/hello"));
        shares.ended("g/spin", None);
        let mut room = shares.room(WINDOW);
        assert!(room.take("g/spin"), "a fire ended: room for one more");
        assert!(!room.take("g/spin"));
    }

    #[test]
    fn a_job_runs_at_most_its_share_at_once() {
        let shares = JobShares::new(16, 2, 16);
        let slots = shares.claimed("g/a");
        let _one = Arc::clone(&slots).try_acquire_owned().expect("first");
        let _two = Arc::clone(&slots).try_acquire_owned().expect("second");
        assert!(slots.try_acquire_owned().is_err(), "a third waits");
    }

    #[test]
    fn a_job_is_forgotten_once_its_last_fire_ends() {
        let shares = JobShares::new(16, 4, 16);
        let _ = shares.claimed("g/a");
        let _ = shares.claimed("g/a");
        shares.ended("g/a", None);
        shares.ended("g/a", None);
        assert!(shares.room(WINDOW).jobs.is_empty());
    }
}
