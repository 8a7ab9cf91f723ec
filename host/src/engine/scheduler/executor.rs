//! Where runs happen beside the loop: the guests' own threads
//! ([`GuestExecutor`]) and the group-committed start marks ([`StartMarks`]).

use super::*;

/// A run still going after this long leaves the node's threads for the
/// guests' own (two epoch ticks: a run that long is not a short one).
pub(super) const MOVE_AFTER: Duration = Duration::from_millis(20);

/// The executor guests run on.
///
/// By default (`guest_threads = 0`) a run begins on the node's own async
/// threads, where a short run costs nothing extra, and a run still going after
/// [`MOVE_AFTER`] moves to threads of the guests' own (one per core): runs that
/// spin, or flood, or wait on the world, then cannot queue the node's
/// check-ins, lease renewals, claims and completions, or the short runs of
/// other jobs, behind their epoch ticks. (Sharing the threads kept check-ins
/// on time, but a job beside four spinning runs waited 1.5 s to start, p99.)
/// A run moves as it is: its future is handed to the guest threads between
/// two polls, at an epoch tick. With `guest_threads = N` every run goes to N
/// threads of their own from its start, which bounds guests to N cores.
pub(super) struct GuestExecutor {
    /// `None` only when the threads could not be started (logged): guests then
    /// stay on the caller's executor.
    runtime: Option<tokio::runtime::Runtime>,
    /// Every run on the guest threads from its start (`guest_threads = N`).
    always: bool,
}

impl GuestExecutor {
    pub(super) fn start(threads: usize) -> Self {
        let always = threads > 0;
        let threads = if always {
            threads
        } else {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("quartzite-guest")
            .enable_all()
            .build();
        match runtime {
            Ok(rt) => GuestExecutor {
                runtime: Some(rt),
                always,
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the guest threads; guests share the scheduler's");
                GuestExecutor {
                    runtime: None,
                    always,
                }
            }
        }
    }

    pub(super) async fn execute(
        &self,
        runtime: &Arc<Runtime>,
        job: &JobImpl,
        request: RunRequest,
    ) -> RunReport {
        let Some(rt) = &self.runtime else {
            return runtime.execute(job, request).await;
        };
        let (runtime, job_for_run) = (Arc::clone(runtime), job.clone());
        let fire_id = request.fire_id.clone();
        let mut run = Box::pin(async move { runtime.execute(&job_for_run, request).await });
        if !self.always {
            tokio::select! {
                biased;
                report = &mut run => return report,
                () = tokio::time::sleep(MOVE_AFTER) => {}
            }
        }
        match rt.spawn(run).await {
            Ok(report) => report,
            Err(e) => {
                // The run's task panicked or was dropped at shutdown: a failed run, never a lost fire.
                tracing::error!(fire = %fire_id, error = %e, "the run's task ended abnormally");
                RunReport {
                    outcome: RunOutcome::Failed {
                        retryable: true,
                        message: "the run ended abnormally in the host".into(),
                    },
                    started_at: SystemTime::now(),
                    duration: Duration::ZERO,
                    logs: Vec::new(),
                    logs_dropped: 0,
                }
            }
        }
    }
}

impl Drop for GuestExecutor {
    fn drop(&mut self) {
        // Dropped from async code: do not block on the guest threads.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Records in the store that runs are about to begin, in one statement for
/// every fire that asks while the previous statement runs (group commit), so
/// that a node lost (stopped, killed) hands back the fires it claimed ahead
/// but never ran as untouched, and only started runs count as interrupted.
/// A fire is marked before it waits for a worker, at most one worker's worth
/// ahead, so marking overlaps the runs before it.
pub(super) struct StartMarks {
    queue: mpsc::UnboundedSender<StartAsk>,
}

/// A claim to mark, and where to say whether it was marked.
type StartAsk = (
    crate::store::model::ClaimRef,
    tokio::sync::oneshot::Sender<Result<bool, crate::store::StoreError>>,
);

impl StartMarks {
    pub(super) fn start(store: Arc<dyn Store>, node_id: String) -> Self {
        let (queue, mut asks) = mpsc::unbounded_channel::<StartAsk>();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while asks.recv_many(&mut batch, 1024).await > 0 {
                let (fires, replies): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut batch).into_iter().unzip();
                let result = store.fire_mark_started(&node_id, &fires).await;
                let marked: std::collections::HashSet<&str> = match &result {
                    Ok(ids) => ids.iter().map(String::as_str).collect(),
                    Err(_) => std::collections::HashSet::new(),
                };
                for (fire, reply) in fires.iter().zip(replies) {
                    let _ = reply.send(match &result {
                        Ok(_) => Ok(marked.contains(fire.fire_id.as_str())),
                        Err(e) => Err(crate::store::StoreError::Unavailable(format!(
                            "marking the run started failed: {e}"
                        ))),
                    });
                }
            }
        });
        StartMarks { queue }
    }

    /// Marks `fire` started; `false` when its claim is no longer this node's
    /// (handed back or taken over since, even if this node claimed the fire
    /// again): the fire must not run under this claim.
    pub(super) async fn mark(&self, fire: &FireClaim) -> Result<bool, crate::store::StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let ask = crate::store::model::ClaimRef::from(fire);
        if self.queue.send((ask, reply)).is_err() {
            return Err(crate::store::StoreError::Conflict(
                "the node is stopping".into(),
            ));
        }
        answer.await.unwrap_or_else(|_| {
            Err(crate::store::StoreError::Conflict(
                "the node is stopping".into(),
            ))
        })
    }
}
