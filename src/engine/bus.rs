//! The in-process bus: wakes dispatchers when work becomes claimable and sync waiters when a
//! run ends. Other nodes reach it through [`Store::listen`](crate::store::Store::listen)
//! (Postgres NOTIFY); on SQLite every writer is in this process.

use std::sync::Arc;

use tokio::sync::{Notify, broadcast};

use crate::ids::RunId;
use crate::store::Wakeup;
use crate::store::model::Effects;

#[derive(Clone)]
pub struct Bus {
    work: Arc<Notify>,
    /// Wakes the timer loop: something may now be due earlier than it planned to wake.
    schedule: Arc<Notify>,
    runs: broadcast::Sender<RunId>,
}

impl Default for Bus {
    fn default() -> Self {
        let (runs, _) = broadcast::channel(4096);
        Self {
            work: Arc::new(Notify::new()),
            schedule: Arc::new(Notify::new()),
            runs,
        }
    }
}

impl Bus {
    /// Tells everyone what a commit changed.
    pub fn publish(&self, effects: &Effects) {
        if effects.work_ready {
            self.work.notify_waiters();
        }
        // Any commit may have scheduled a sleep, a retry, a wait or a lease earlier than the
        // timer's current plan.
        self.schedule.notify_waiters();
        for run in &effects.finished_runs {
            let _ = self.runs.send(run.clone());
        }
    }

    pub fn wake(&self, wakeup: Wakeup) {
        match wakeup {
            Wakeup::WorkReady => {
                self.work.notify_waiters();
                self.schedule.notify_waiters();
            }
            Wakeup::RunFinished(run) => {
                let _ = self.runs.send(run);
            }
        }
    }

    pub fn work_ready(&self) {
        self.work.notify_waiters();
    }

    /// A handle to await the next "work ready" wakeup; create it *before* checking for work.
    pub fn work(&self) -> Arc<Notify> {
        self.work.clone()
    }

    /// A handle to await "the schedule may have changed"; enable it before reading the schedule.
    pub fn schedule(&self) -> Arc<Notify> {
        self.schedule.clone()
    }

    pub fn subscribe_runs(&self) -> broadcast::Receiver<RunId> {
        self.runs.subscribe()
    }
}
