//! The engine: the domain operations behind every transport (register, emit, query, cancel).
//!
//! Transport-agnostic: takes parsed ids and domain inputs, returns records or [`EngineError`].

mod access;
mod admin;
mod audit;
mod bus;
mod commits;
mod control;
mod cursor;
mod data;
mod error;
mod events;
mod execution;
mod fanout;
mod flow;
mod functions;
mod groups;
mod history_sql;
mod kv;
mod observability;
mod policies;
mod projections;
mod pubsub;
mod push;
mod retention;
mod runs;
mod schedules;
mod schemas;
mod sql_projections;
mod streams;
mod sync;
mod system;
mod system_events;
mod triggers;
mod upkeep;
mod watch;
mod webhooks;

use std::sync::Arc;

pub use crate::store::kv_nats::NatsKv;
pub use access::{Credential, PLATFORM_SCOPE};
pub use admin::{
    DeletionReport, IssuedKey, NewKey, NewUser, RoleView, SESSION_PREFIX, SESSION_TTL, SignedIn,
};
pub use audit::{AuditPage, AuditQuery, AuditSettings};
pub use bus::{Bus, BusMessage, MessageKind};
pub use control::{DeleteRunsQuery, MAX_DELETE_BATCH, PausedState};
pub use data::config_document;
pub use error::EngineError;
pub use events::{EmitEvent, EmitResult, EventPage, EventPageQuery, MAX_TRIGGER_BATCH};
pub use execution::{PollOutcome, WorkerHello};
pub use fanout::NatsFanout;
pub use functions::{FunctionHistoryPage, FunctionPage, RegisterFunction};
pub use groups::GroupMember;
pub use history_sql::{HistoryRows, MAX_QUERY_ROWS, MAX_QUERY_TIMEOUT_MS};
pub use kv::KvBackend;
pub use observability::Overview;
pub use policies::{PolicyDocument, PolicySave};
pub use projections::{
    FeedItem, MAX_CATCHUP_STREAM_WAIT, MAX_CATCHUP_WAIT, ProjectedEvent, ProjectionFeed,
    ProjectionReport, ProjectionState, RegisterProjection, RunnerCommit,
};
pub use pubsub::Published;
pub use push::{
    BREAKERS_BUCKET, PUSH_ERROR_CODE, PushOptions, breaker_document, breaker_mirror_key,
    push_request,
};
pub use retention::{RetentionReport, run_retention};
pub use runs::{RunPage, RunPageQuery};
pub use schedules::CRON_EVENT;
pub use schemas::{EnforcementReport, RegisterSchema, SchemaCheck, SchemaHistoryPage};
pub use sql_projections::{CreateSqlProjection, RebuildRequest, SqlRows};
pub use streams::{AppendEvent, Appended, EntityHistoryEntry, EntityHistoryPage};
pub use sync::{INVOKED_EVENT, MAX_SYNC_WAIT, SyncOutcome};
pub use watch::{ConfigWatch, ConfigWatchEvent, KvWatch, KvWatchEvent};
pub use webhooks::{Ingested, NewSource, SourceChanges, SourceView, VerifyTest};

use crate::domain::time::Ts;
use crate::store::SharedStore;

/// Tunables of the engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Largest accepted event payload (`data` plus `metadata`, serialised), in bytes.
    pub max_payload_bytes: usize,
    /// How long a dispatched job stays leased without a heartbeat or checkpoint before another
    /// worker may claim it (the stale-claim threshold).
    pub lease_ttl: std::time::Duration,
    /// Encrypts secrets; without it the server refuses to store them.
    pub master_key: Option<crate::domain::secret::MasterKey>,
    /// Push delivery: signing key, request timeout, per-endpoint concurrency, breakers.
    pub push: PushOptions,
    /// Where KV buckets live: the database, or NATS JetStream (`--nats-url`).
    pub kv: KvBackend,
    /// Live messages cross nodes over NATS (`--nats-url`) instead of Postgres NOTIFY.
    pub fanout: Option<NatsFanout>,
    /// What happens to an event that does not match its registered schema, unless the schema
    /// names its own mode (`--event-schema-enforcement`).
    pub schema_enforcement: crate::domain::event_schema::Enforcement,
    /// How long a projection runner's lease lasts without a renewal (the runner renews at a
    /// third of it).
    pub projection_lease_ttl: std::time::Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_payload_bytes: 1024 * 1024,
            lease_ttl: std::time::Duration::from_secs(90),
            master_key: None,
            push: PushOptions::default(),
            kv: KvBackend::Database,
            fanout: None,
            schema_enforcement: crate::domain::event_schema::Enforcement::Off,
            projection_lease_ttl: std::time::Duration::from_secs(15),
        }
    }
}

/// Cheap to clone; every clone shares the store and the compiled-trigger cache.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: SharedStore,
    /// Where KV buckets live: the store itself, or NATS JetStream.
    kv: Arc<dyn crate::store::kv::KvStore>,
    options: EngineOptions,
    started_at: Ts,
    bus: Bus,
    /// The group commits of job reports and of events.
    commits: commits::GroupCommits,
    /// Live copies to and from the other nodes over NATS (with `--nats-url`).
    fanout: Option<NatsFanout>,
    /// Set when this node registers a push function: the push dispatcher looks again at once.
    push_registered: std::sync::atomic::AtomicBool,
    /// Compiled event schemas, per name, for enforcement.
    schemas: schemas::SchemaCache,
    /// Keys, sessions, roles and policy sets, remembered briefly for authorization.
    access: access::AccessCache,
    shutdown: tokio_util::sync::CancellationToken,
}

impl Engine {
    pub fn new(store: SharedStore, options: EngineOptions) -> Self {
        let fanout = options.fanout.clone();
        let kv: Arc<dyn crate::store::kv::KvStore> = match &options.kv {
            KvBackend::Database => store.clone(),
            KvBackend::Nats(nats) => Arc::new(nats.clone()),
        };
        Self {
            inner: Arc::new(Inner {
                kv,
                store,
                commits: commits::GroupCommits::default(),
                fanout,
                options,
                started_at: Ts::now(),
                bus: Bus::default(),
                push_registered: std::sync::atomic::AtomicBool::new(false),
                schemas: schemas::SchemaCache::default(),
                access: access::AccessCache::default(),
                shutdown: tokio_util::sync::CancellationToken::new(),
            }),
        }
    }

    /// Whether a push function was registered on this node since the last call.
    pub(crate) fn take_push_registered(&self) -> bool {
        self.inner
            .push_registered
            .swap(false, std::sync::atomic::Ordering::AcqRel)
    }

    pub(crate) fn store(&self) -> &SharedStore {
        &self.inner.store
    }

    /// The KV backend (the database, or NATS JetStream with `--nats-url`).
    pub(crate) fn kv(&self) -> &dyn crate::store::kv::KvStore {
        self.inner.kv.as_ref()
    }

    pub fn options(&self) -> &EngineOptions {
        &self.inner.options
    }

    pub fn started_at(&self) -> Ts {
        self.inner.started_at
    }

    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    /// Delivers a message or event this node just stored to its live subscribers here and, with
    /// NATS, to the other nodes' (without NATS they learn of it from Postgres NOTIFY).
    pub(crate) fn publish_live(&self, message: BusMessage) {
        if let Some(fanout) = &self.inner.fanout {
            fanout.publish(&message);
        }
        self.bus().publish_message(message);
    }

    /// Whether other nodes' messages and events arrive over NATS rather than NOTIFY.
    pub(crate) fn live_over_nats(&self) -> bool {
        self.inner.fanout.is_some()
    }

    /// Cancelled when the server stops: held polls and sync waits return at once.
    pub fn shutdown_token(&self) -> &tokio_util::sync::CancellationToken {
        &self.inner.shutdown
    }

    /// Starts the engine's background work: timers (sleeps, wait and invoke timeouts, lease
    /// expiry wakeups) and cross-node wakeups. Both stop when the shutdown token is cancelled.
    pub fn spawn_background(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let listener = {
            let engine = self.clone();
            tokio::spawn(async move {
                let relay = engine.clone();
                let sink: crate::store::WakeupSink = std::sync::Arc::new(move |w| match w {
                    crate::store::Wakeup::Stored { kind, seq } => {
                        relay.bus().wake(crate::store::Wakeup::Stored { kind, seq });
                        let relay = relay.clone();
                        tokio::spawn(async move { relay.relay_stored(kind, seq).await });
                    }
                    other => relay.bus().wake(other),
                });
                engine
                    .store()
                    .listen(sink, engine.shutdown_token().clone())
                    .await;
            })
        };
        let timers = {
            let engine = self.clone();
            tokio::spawn(async move { engine.run_timers().await })
        };
        let tailer = {
            let engine = self.clone();
            tokio::spawn(async move { engine.run_history_tailer().await })
        };
        let push = {
            let engine = self.clone();
            tokio::spawn(async move { engine.run_push_dispatcher().await })
        };
        let upkeep = {
            let engine = self.clone();
            tokio::spawn(async move { engine.run_statistics_upkeep().await })
        };
        let sql_projections = {
            let engine = self.clone();
            tokio::spawn(async move { engine.run_sql_projections().await })
        };
        let scheduler = {
            let engine = self.clone();
            tokio::spawn(async move { engine.run_scheduler().await })
        };
        let mut tasks = vec![
            listener,
            timers,
            tailer,
            push,
            upkeep,
            sql_projections,
            scheduler,
        ];
        tasks.extend(self.spawn_committers());
        if let Some(fanout) = self.inner.fanout.clone() {
            tasks.push(tokio::spawn(fanout.run(self.clone())));
        }
        tasks
    }
}

/// Page sizes: a missing or zero limit means the default (50); larger ones are capped at 1000.
pub(crate) fn page_limit(requested: Option<i64>) -> Result<i64, EngineError> {
    page_size(requested.unwrap_or(0), 50, 1000)
}

/// A page size with its own default (for 0) and cap; a negative one is refused.
pub(crate) fn page_size(limit: i64, default: i64, max: i64) -> Result<i64, EngineError> {
    match limit {
        0 => Ok(default),
        n if n < 0 => Err(EngineError::InvalidArgument(format!(
            "limit must be between 1 and {max} (got {n})"
        ))),
        n => Ok(n.min(max)),
    }
}
