//! Domain types shared by the engine and the store: function definitions, triggers, run states,
//! history kinds.

pub mod breaker;
pub mod expression;
pub mod function;
pub mod group;
pub mod history;
pub mod job;
pub mod job_wire;
pub mod kv;
pub mod lifecycle;
pub mod pattern;
pub mod run;
pub mod secret;
pub mod signature;
pub mod storable;
pub mod time;
