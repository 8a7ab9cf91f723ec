//! A late-bound, narrow link to this node's scheduler for the layers above the
//! engine (the admin service and the API): wake it after a change, and ask
//! whether its loop runs. Nothing else of the scheduler is reachable through
//! it, so the operator surface cannot depend on the scheduler's internals.
//!
//! The link is made before the scheduler exists (the API serves during a long
//! bootstrap) and connected once it does; until then, and for ever in a process
//! without a scheduler (the CLI's `--db` mode), waking does nothing: the
//! scheduler that shares the database sees the change at its next poll.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::Notify;

/// What a connected [`SchedulerLink`] reaches.
#[derive(Debug)]
struct Connected {
    wake: Arc<Notify>,
    running: Arc<AtomicBool>,
}

/// Wakes the node's scheduler and says whether it runs; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct SchedulerLink(Arc<OnceLock<Connected>>);

impl SchedulerLink {
    /// A link to nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Connects the link to a scheduler's wake signal and running flag. Only
    /// the first connection counts.
    pub fn connect(&self, wake: Arc<Notify>, running: Arc<AtomicBool>) {
        let _ = self.0.set(Connected { wake, running });
    }

    /// Lets the scheduler see a change at once (no-op until connected).
    pub fn wake(&self) {
        if let Some(c) = self.0.get() {
            c.wake.notify_one();
        }
    }

    /// Whether the scheduler's loop runs now.
    pub fn is_running(&self) -> bool {
        self.0
            .get()
            .is_some_and(|c| c.running.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unconnected_link_does_nothing_and_a_connected_one_wakes() {
        let link = SchedulerLink::new();
        link.wake();
        assert!(!link.is_running());
        let wake = Arc::new(Notify::new());
        let running = Arc::new(AtomicBool::new(true));
        link.clone()
            .connect(Arc::clone(&wake), Arc::clone(&running));
        assert!(link.is_running());
        link.wake();
        // The permit stored by notify_one makes this return at once.
        wake.notified().await;
        running.store(false, Ordering::Relaxed);
        assert!(!link.is_running());
    }
}
