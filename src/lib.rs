//! Ironflow: a Continuous History platform — events, durable workflows and time travel over
//! the database you already run.

pub mod api;
pub mod bench;
pub mod cli;
pub mod client;
pub mod domain;
pub mod engine;
pub mod ids;
pub mod inspect;
pub mod proto;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tenancy;
