//! Fresh, real backing services for Ironflow's tests.
//!
//! This crate owns the lifecycle of the external services that Ironflow's
//! integration tests run against, so that every test gets its own isolated
//! instance and nothing is left behind afterwards:
//!
//! * [`postgres()`] creates a fresh, empty Postgres database with a unique name
//!   and returns a [`PgDatabase`] handle. The database is dropped again when the
//!   handle is dropped (also when the test panics) or explicitly via
//!   [`PgDatabase::drop_database`].
//!
//!   The server is chosen as follows:
//!   - if `IRONFLOW_TEST_DATABASE_URL` is set (for example
//!     `postgres://postgres@127.0.0.1:5432/postgres`), it is used as an admin
//!     connection and the test databases are created on that server (needs
//!     PostgreSQL 13 or newer for `DROP DATABASE ... WITH (FORCE)`, older
//!     servers get a terminate-then-drop fallback);
//!   - otherwise a throwaway cluster is created once per process with `initdb`
//!     and started with `pg_ctl` on a free loopback port (the binaries are looked
//!     up on `PATH`, then in `/usr/lib/postgresql/<version>/bin`). When running
//!     as root, they run as the `postgres` user via `runuser` (or `su`). The
//!     cluster is stopped (`pg_ctl stop -m immediate`) and its temporary
//!     directory removed by a small watchdog shell process once the test process
//!     exits, however it exits. Since `cargo nextest` runs every test in its own
//!     process, setting `IRONFLOW_TEST_DATABASE_URL` is noticeably faster there.
//!
//! * [`nats()`] starts a fresh `nats-server` with JetStream enabled as a child
//!   process on a free loopback port with its own storage directory, and returns
//!   a [`NatsServer`] handle which kills the server and removes the directory on
//!   drop. The binary is taken from `IRONFLOW_TEST_NATS_SERVER`, else
//!   `nats-server` on `PATH`, else `/usr/sbin/nats-server`.
//!
//! Everything is safe to use from many tests concurrently, both as threads in
//! one process (`cargo test`) and as separate processes (`cargo nextest`).

mod nats;
mod postgres;
mod process;

pub use nats::{NatsServer, nats};
pub use postgres::{ClusterDurability, PgCluster, PgDatabase, RestartMode, postgres};
