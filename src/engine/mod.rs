//! The engine: the domain operations behind every transport (register, emit, query, cancel).
//!
//! Transport-agnostic: takes parsed ids and domain inputs, returns records or [`EngineError`].

mod cursor;
mod error;
mod events;
mod functions;
mod runs;
mod triggers;

use std::sync::Arc;

pub use error::EngineError;
pub use events::{EmitEvent, EmitResult, EventPage, EventPageQuery};
pub use functions::{FunctionPage, RegisterFunction};
pub use runs::{RunPage, RunPageQuery};

use crate::store::SharedStore;
use crate::store::time::Ts;

/// Tunables of the engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Largest accepted event payload (`data` plus `metadata`, serialised), in bytes.
    pub max_payload_bytes: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_payload_bytes: 1024 * 1024,
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
    options: EngineOptions,
    triggers: triggers::TriggerCache,
    started_at: Ts,
}

impl Engine {
    pub fn new(store: SharedStore, options: EngineOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                options,
                triggers: triggers::TriggerCache::default(),
                started_at: Ts::now(),
            }),
        }
    }

    pub fn store(&self) -> &SharedStore {
        &self.inner.store
    }

    pub fn options(&self) -> &EngineOptions {
        &self.inner.options
    }

    pub fn started_at(&self) -> Ts {
        self.inner.started_at
    }
}

/// Page sizes: a missing or zero limit means the default; larger ones are capped.
pub(crate) fn page_limit(requested: Option<i64>) -> Result<i64, EngineError> {
    match requested {
        None | Some(0) => Ok(50),
        Some(n) if n < 0 => Err(EngineError::InvalidArgument(format!(
            "limit must be between 1 and 1000 (got {n})"
        ))),
        Some(n) => Ok(n.min(1000)),
    }
}
