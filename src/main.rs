//! The `ironflow` binary: parses the command line and runs the chosen command.

use clap::Parser;
use ironflow::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn init_logging(filter: &str) {
    init_logging_as(filter, LogFormat::Text);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

/// Logs on stderr: colours only when it is a terminal (never escape codes in a log file), or
/// one JSON object per line carrying the current span (a request's id, method and path).
fn init_logging_as(filter: &str, format: LogFormat) {
    init_subscriber(filter, format, None);
}

type OtlpLayer = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

/// The log layer (with its own filter) and, when given, the OTLP layer (with its own).
fn init_subscriber(filter: &str, format: LogFormat, otlp: Option<OtlpLayer>) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    tracing_subscriber::registry().with(otlp).with(logs).init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            // --log-level / LOG_LEVEL, else RUST_LOG, else info.
            let filter = args
                .log_level
                .clone()
                .or_else(|| std::env::var("RUST_LOG").ok())
                .unwrap_or_else(|| "info".to_owned());
            let format = if args.log_format == "json" {
                LogFormat::Json
            } else {
                LogFormat::Text
            };
            let (otlp, _tracing) = match args
                .otlp_endpoint
                .as_deref()
                .filter(|e| !e.trim().is_empty())
            {
                Some(endpoint) => {
                    let (layer, guard) = ironflow::telemetry::otlp_layer(endpoint)?;
                    (Some(layer), Some(guard))
                }
                None => (None, None),
            };
            init_subscriber(&filter, format, otlp);
            let metrics = ironflow::server::prometheus_builder()
                .and_then(metrics_exporter_prometheus::PrometheusBuilder::install_recorder)
                .map_err(|e| tracing::warn!(error = %e, "metrics disabled"))
                .ok();
            let server =
                ironflow::server::start_with_push(args.options()?, args.push_options(), metrics)
                    .await?;
            eprintln!("ironflow: listening on http://{}", server.local_addr);
            let token = server.shutdown.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!("shutdown requested; finishing in-flight requests");
                token.cancel();
            });
            server.wait().await?;
            tracing::info!("ironflow stopped");
        }
        Command::Bench(args) => {
            // RUST_LOG (e.g. `sqlx::query=debug`: every statement with its time) for profiling.
            init_logging(&std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()));
            if args.mode == "sql-projection" {
                let report = ironflow::bench::run_sql_projection(args.projection_options()).await?;
                println!("{}", report.summary_line());
                if args.json {
                    println!("{}", serde_json::to_string(&report)?);
                }
                return Ok(());
            }
            if args.mode == "cron" {
                let report = ironflow::bench::run_cron(args.cron_options()).await?;
                println!("{}", report.summary_line());
                if args.json {
                    println!("{}", serde_json::to_string(&report)?);
                }
                return Ok(());
            }
            if args.mode == "authz" {
                let report = ironflow::bench::run_authz(args.authz_options()).await?;
                println!("{}", report.summary_line());
                if args.json {
                    println!("{}", serde_json::to_string(&report)?);
                }
                return Ok(());
            }
            if args.mode == "appends" {
                let report = ironflow::bench::run_appends(args.append_options()).await?;
                println!("{}", report.summary_line());
                if args.json {
                    println!("{}", serde_json::to_string(&report)?);
                }
                return Ok(());
            }
            let report = ironflow::bench::run(args.options()).await?;
            println!("{}", report.summary_line());
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            }
        }
        Command::Runs(args) => {
            let client = client(&args.connection)?;
            let out = ironflow::client::commands::runs(&client, &args.command).await;
            print_output(out, args.connection.json)?;
        }
        Command::Events(args) => {
            let client = client(&args.connection)?;
            let out = ironflow::client::commands::events(&client, &args.command).await;
            print_output(out, args.connection.json)?;
        }
        Command::Functions(args) => {
            let client = client(&args.connection)?;
            let out = ironflow::client::commands::functions(&client, &args.command).await;
            print_output(out, args.connection.json)?;
        }
        Command::History(args) => {
            let client = client(&args.connection)?;
            let out =
                ironflow::client::commands::history(&client, &args.run, args.at.as_deref()).await;
            print_output(out, args.connection.json)?;
        }
        Command::Sql(args) => {
            let client = client(&args.connection)?;
            let out = ironflow::client::commands::sql(
                &client,
                &args.query,
                args.timeout_ms,
                args.max_rows,
            )
            .await;
            print_output(out, args.connection.json)?;
        }
        Command::Inspect(args) => {
            let client = client(&args.connection)?;
            let options = ironflow::inspect::InspectOptions {
                run: args.run.clone(),
                at: args.at.clone(),
                replay: args.replay,
                speed: args.speed,
            };
            let result = if args.dap {
                ironflow::inspect::dap::serve(client, options).await
            } else {
                ironflow::inspect::tui::run(client, options).await
            };
            if let Err(e) = result {
                eprintln!("ironflow inspect: {e}");
                std::process::exit(1);
            }
        }
        Command::BenchWorker(args) => {
            init_logging("warn");
            ironflow::bench::serve_worker(args.options()).await?;
        }
        Command::Backup(args) => {
            init_logging("warn");
            let url = args.database.url();
            if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                eprintln!(
                    "ironflow backup: for Postgres use pg_dump (see the README), e.g. pg_dump --schema {} --format=custom --file=ironflow.dump '{}'",
                    args.database.db_schema,
                    ironflow::server::redact_url(&url)
                );
                std::process::exit(2);
            }
            let path = url.strip_prefix("sqlite://").unwrap_or(&url);
            if !std::path::Path::new(path).exists() {
                eprintln!("ironflow backup: {path} does not exist: nothing to back up");
                std::process::exit(1);
            }
            if args.file.exists() {
                eprintln!(
                    "ironflow backup: {} already exists: give a new file",
                    args.file.display()
                );
                std::process::exit(1);
            }
            match ironflow::store::sqlite::backup(std::path::Path::new(path), &args.file).await {
                Ok(()) => eprintln!(
                    "ironflow: a consistent copy of {path} is in {}",
                    args.file.display()
                ),
                Err(e) => {
                    eprintln!("ironflow backup: {e}");
                    std::process::exit(1);
                }
            }
        }
        Command::Keys(args) => match args.command {
            ironflow::cli::KeysCommand::Create {
                database,
                roles,
                name,
                org,
                project,
                env,
                expires_in,
            } => {
                init_logging("warn");
                let store = ironflow::server::open_store(&database.options()).await?;
                let minted = ironflow::tenancy::mint_key(
                    &store,
                    ironflow::tenancy::MintKey {
                        name,
                        roles,
                        org,
                        project,
                        env,
                        expires_in,
                    },
                )
                .await;
                store.close().await;
                match minted {
                    Ok(key) => {
                        eprintln!(
                            "ironflow: created key {} ({}) in organisation {} (shown once, only its hash is stored):",
                            key.id,
                            key.roles.join(", "),
                            key.org
                        );
                        println!("{}", key.secret);
                    }
                    Err(e) => {
                        eprintln!("ironflow keys create: {e}");
                        std::process::exit(1);
                    }
                }
            }
        },
        Command::Migrate(args) => {
            init_logging("info");
            let options = args.options();
            ironflow::server::open_store(&options).await?.close().await;
            eprintln!(
                "ironflow: migrations applied to {}",
                ironflow::server::redact_url(&options.url)
            );
        }
    }
    Ok(())
}

fn client(args: &ironflow::cli::ConnectionArgs) -> anyhow::Result<ironflow::client::Client> {
    Ok(ironflow::client::Client::new(args.options())?)
}

/// Prints a client command's result: JSON or text on stdout; an error on stderr, exit 1.
fn print_output(
    out: Result<ironflow::client::commands::Output, ironflow::client::ClientError>,
    json: bool,
) -> anyhow::Result<()> {
    match out {
        Ok(out) if json => println!("{}", serde_json::to_string_pretty(&out.json)?),
        Ok(out) => print!("{}", out.text),
        Err(e) => {
            eprintln!("ironflow: {e}");
            std::process::exit(1);
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
