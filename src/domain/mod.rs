//! Domain types shared by the engine and the store: function definitions, triggers, run states,
//! history kinds.

pub mod authz;
pub mod breaker;
pub mod event_schema;
pub mod expression;
pub mod function;
pub mod function_history;
pub mod group;
pub mod history;
pub mod history_sql;
pub mod job;
pub mod job_wire;
pub mod kv;
pub mod lifecycle;
pub mod pattern;
pub mod policy;
pub mod projection;
pub mod redaction;
pub mod run;
pub mod secret;
pub mod signature;
pub mod sql_projection;
pub mod storable;
pub mod stream;
pub mod time;
pub mod time_travel;
