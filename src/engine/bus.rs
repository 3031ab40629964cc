//! The in-process bus: wakes dispatchers when work becomes claimable and sync waiters when a
//! run ends. Other nodes reach it through [`Store::listen`](crate::store::Store::listen)
//! (Postgres NOTIFY); on SQLite every writer is in this process.

use std::sync::Arc;

use tokio::sync::{Notify, broadcast};

use crate::domain::lifecycle::Effects;
use crate::domain::time::Ts;
use crate::ids::{EnvId, RunId};
use crate::store::Wakeup;

/// Sent on the run channel when any run may have ended (waiters re-check theirs).
pub const ANY_RUN: &str = "*";

#[derive(Clone)]
pub struct Bus {
    /// Where a new `system.` subscriber joined the history (the tailer starts there).
    history_floor: Arc<std::sync::Mutex<Option<i64>>>,
    messages: broadcast::Sender<Arc<BusMessage>>,
    work: Arc<Notify>,
    /// Wakes the system-event tailer: the history may have grown.
    history: Arc<Notify>,
    /// Wakes the timer loop: something may now be due earlier than it planned to wake.
    schedule: Arc<Notify>,
    /// What the timer has not yet taken into its plan.
    plan: Arc<std::sync::Mutex<ScheduleNews>>,
    runs: broadcast::Sender<RunId>,
    /// A consumer group's queue changed here (settled, released, retuned): members look again.
    groups: Arc<Notify>,
    /// A KV value was written (here or on another node): watchers read their buckets again.
    kv: Arc<Notify>,
    /// Events were stored or a projection's cursor moved (here or on another node): projection
    /// feeds and catch-up waiters look again.
    projections: Arc<Notify>,
    /// Wakes the scheduler: a cron schedule or a debounce changed on this node.
    scheduler: Arc<Notify>,
}

impl Default for Bus {
    fn default() -> Self {
        let (runs, _) = broadcast::channel(4096);
        let (messages, _) = broadcast::channel(8192);
        Self {
            history_floor: Arc::new(std::sync::Mutex::new(None)),
            messages,
            work: Arc::new(Notify::new()),
            history: Arc::new(Notify::new()),
            schedule: Arc::new(Notify::new()),
            scheduler: Arc::new(Notify::new()),
            plan: Arc::default(),
            runs,
            groups: Arc::new(Notify::new()),
            kv: Arc::new(Notify::new()),
            projections: Arc::new(Notify::new()),
        }
    }
}

/// Changes to the timer's schedule since it last looked: the earliest instant a commit on this
/// node set, and whether a commit elsewhere (whose instants are not known here) means the
/// schedule must be read again.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleNews {
    pub earliest: Option<Ts>,
    pub read_again: bool,
}

impl Bus {
    /// Tells everyone what a commit changed.
    pub fn publish(&self, effects: &Effects) {
        if effects.work_ready {
            self.work.notify_waiters();
        }
        // Any commit may have appended to the history.
        self.history.notify_waiters();
        if effects
            .stored
            .iter()
            .any(|(kind, _)| *kind == crate::store::StoredKind::Event)
        {
            self.projections.notify_waiters();
        }
        if let Some(at) = effects.scheduled {
            self.update_plan(|news| {
                news.earliest = Some(news.earliest.map_or(at, |e| e.min(at)));
            });
        }
        for run in &effects.finished_runs {
            let _ = self.runs.send(run.clone());
        }
        super::observability::record_ended(&effects.ended_runs, crate::domain::time::Ts::now());
    }

    fn update_plan(&self, change: impl FnOnce(&mut ScheduleNews)) {
        change(
            &mut self
                .plan
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        self.schedule.notify_waiters();
    }

    /// What changed in the schedule since the last call (the timer loop's).
    pub(crate) fn take_schedule_news(&self) -> ScheduleNews {
        std::mem::take(
            &mut *self
                .plan
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    pub fn wake(&self, wakeup: Wakeup) {
        match wakeup {
            Wakeup::WorkReady => {
                self.work.notify_waiters();
                self.history.notify_waiters();
                self.update_plan(|news| news.read_again = true);
            }
            Wakeup::RunFinished(run) => {
                let _ = self.runs.send(run);
            }
            Wakeup::RunsChanged => {
                let _ = self.runs.send(RunId::from_stored(ANY_RUN.to_owned()));
            }
            Wakeup::KvChanged => self.kv_changed(),
            Wakeup::ProjectionsChanged => self.projections_changed(),
            // Projection feeds read the durable copy themselves.
            Wakeup::Stored {
                kind: crate::store::StoredKind::Event,
                ..
            } => self.projections_changed(),
            // Needs a read of the durable copy; the engine relays these (see `relay_stored`).
            Wakeup::Stored { .. } => {}
        }
    }

    /// A subscriber to system events joined when the history ended at `seq`.
    pub fn follow_history_from(&self, seq: i64) {
        let mut floor = self
            .history_floor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *floor = Some(floor.map_or(seq, |f| f.min(seq)));
        drop(floor);
        self.history.notify_waiters();
    }

    pub(crate) fn take_history_floor(&self) -> Option<i64> {
        self.history_floor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// A commit appended to the history: wake the system-event tailer.
    pub fn history_appended(&self) {
        self.history.notify_waiters();
    }

    /// A handle to await [`history_appended`](Self::history_appended) (or any commit); enable
    /// it before reading the history.
    pub fn history_changes(&self) -> Arc<Notify> {
        self.history.clone()
    }

    pub fn groups_changed(&self) {
        self.groups.notify_waiters();
    }

    /// A handle to await [`groups_changed`](Self::groups_changed).
    pub fn group_changes(&self) -> Arc<Notify> {
        self.groups.clone()
    }

    /// A KV write committed: wake the watchers.
    pub fn kv_changed(&self) {
        self.kv.notify_waiters();
    }

    /// A handle to await [`kv_changed`](Self::kv_changed); enable it before reading.
    pub fn kv_changes(&self) -> Arc<Notify> {
        self.kv.clone()
    }

    /// Events were stored or a projection's cursor moved.
    pub fn projections_changed(&self) {
        self.projections.notify_waiters();
    }

    /// A handle to await [`projections_changed`](Self::projections_changed); enable it before
    /// reading.
    pub fn projection_changes(&self) -> Arc<Notify> {
        self.projections.clone()
    }

    /// A cron schedule or a debounce changed here: the scheduler reads its next instant again.
    pub fn scheduler_changed(&self) {
        self.scheduler.notify_one();
    }

    /// A handle to await [`scheduler_changed`](Self::scheduler_changed).
    pub fn scheduler(&self) -> Arc<Notify> {
        self.scheduler.clone()
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

    /// Live fan-out to `/ws` subscribers on this node.
    pub fn publish_message(&self, message: BusMessage) {
        if self.messages.receiver_count() > 0 {
            let _ = self.messages.send(Arc::new(message));
        }
    }

    pub fn has_subscribers(&self) -> bool {
        self.messages.receiver_count() > 0
    }

    pub fn subscribe_messages(&self) -> broadcast::Receiver<Arc<BusMessage>> {
        self.messages.subscribe()
    }

    pub fn subscribe_runs(&self) -> broadcast::Receiver<RunId> {
        self.runs.subscribe()
    }
}

/// Where a live message comes from; subscription patterns choose with a prefix
/// (`topic:` or none, `events:`, `system.`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Topic,
    Event,
    System,
}

/// One message delivered to live subscribers.
#[derive(Debug, Clone)]
pub struct BusMessage {
    pub env_id: EnvId,
    pub kind: MessageKind,
    pub subject: String,
    pub id: String,
    /// The durable copy's sequence (messages.seq, events.seq or history.seq).
    pub sequence: i64,
    pub data: serde_json::Value,
    pub timestamp: crate::domain::time::Ts,
}

impl BusMessage {
    /// A message published on a developer topic (`messages.seq` is its sequence).
    pub fn topic(
        env_id: EnvId,
        id: String,
        sequence: i64,
        topic: String,
        data: serde_json::Value,
        timestamp: crate::domain::time::Ts,
    ) -> Self {
        Self {
            env_id,
            kind: MessageKind::Topic,
            subject: topic,
            id,
            sequence,
            data,
            timestamp,
        }
    }

    /// An emitted event, under its name.
    pub fn event(
        env_id: EnvId,
        id: String,
        name: String,
        data: serde_json::Value,
        timestamp: crate::domain::time::Ts,
    ) -> Self {
        Self {
            env_id,
            kind: MessageKind::Event,
            subject: name,
            id,
            sequence: 0,
            data,
            timestamp,
        }
    }
}
