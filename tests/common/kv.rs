//! KV fixtures: a server whose KV store is the database (SQLite, Postgres) or NATS
//! JetStream (a fresh real `nats-server`), and `every_kv_backend!` to run a test on all three.

use ironflow_testcontainers::NatsServer;

use super::{Backend, ServerConfig, TestServer};

/// Where the KV store under test lives.
#[derive(Debug, Clone, Copy)]
pub enum Setup {
    Db(Backend),
    /// NATS JetStream KV (the server's own tables on SQLite).
    Nats,
}

/// A server and, for NATS, the NATS server it uses.
pub struct Kv {
    server: TestServer,
    _nats: Option<NatsServer>,
}

impl std::ops::Deref for Kv {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.server
    }
}

impl Kv {
    pub async fn stop(self) {
        self.server.stop().await;
    }
}

pub async fn start(setup: Setup) -> Kv {
    match setup {
        Setup::Db(backend) => Kv {
            server: TestServer::start(backend).await,
            _nats: None,
        },
        Setup::Nats => {
            let nats = ironflow_testcontainers::nats()
                .await
                .expect("a fresh nats-server");
            let config = ServerConfig {
                nats_url: Some(nats.url()),
                ..ServerConfig::default()
            };
            Kv {
                server: TestServer::start_with(Backend::Sqlite, config).await,
                _nats: Some(nats),
            }
        }
    }
}

/// Runs each body on SQLite, Postgres and NATS, as three tests.
#[macro_export]
macro_rules! every_kv_backend {
    ($($name:ident => $body:ident;)+) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$body($crate::common::kv::Setup::Db($crate::common::Backend::Sqlite)).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$body($crate::common::kv::Setup::Db($crate::common::Backend::Postgres)).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn nats() {
                    super::$body($crate::common::kv::Setup::Nats).await;
                }
            }
        )+
    };
}
