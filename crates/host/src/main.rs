//! `edge-host`: run the app, apply migrations, mint development tokens.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use edge_host::http_trigger::{HttpTrigger, RequestLimits};
use edge_host::manifest::App;
use edge_host::runtime::{default_cache_dir, Runtime, Settings};
use edge_host::variables::Resolver;
use edge_host::{cron_trigger, identity, migrate, token};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "edge-host",
    version,
    about = "A Spin-compatible local host for this app"
)]
struct Cli {
    /// The application manifest.
    #[arg(long, short = 'f', global = true, default_value = "spin.toml")]
    manifest: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the app's HTTP routes and run its cron triggers (like `spin up`).
    Up {
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: String,
        /// Where compiled components are cached between runs.
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Connections per Postgres pool (per component and address); Spin's is 64.
        #[arg(long, env = "EDGE_HOST_PG_POOL_SIZE", default_value_t = edge_host::pg::DEFAULT_POOL_SIZE)]
        pg_pool_size: usize,
        /// Do not run the `[[trigger.cron]]` schedules (e.g. in tests that run recovery by hand).
        #[arg(long)]
        no_cron: bool,
        /// Run COMPONENT's cron trigger on EXPRESSION instead of the manifest's
        /// (tests that cannot wait a minute): `--schedule 'recovery=*/2 * * * * *'`.
        #[arg(long = "schedule", value_parser = parse_override::<String>)]
        schedules: Vec<(String, String)>,
        /// Delay every Postgres and Redis call by a random 0..=N ms, to widen
        /// race windows in tests (ACIDRain-style); 0 in normal runs.
        #[arg(long, env = "EDGE_HOST_STORE_DELAY_MS", default_value_t = 0)]
        store_delay_ms: u64,
        /// Load COMPONENT from PATH instead of its manifest `source`
        /// (e.g. a test build with failpoints): `--source order=target/failpoints/order.wasm`.
        #[arg(long = "source", value_parser = parse_override::<PathBuf>)]
        sources: Vec<(String, PathBuf)>,
        /// Refuse requests whose headers total over N bytes with `431`.
        #[arg(long, env = "EDGE_HOST_MAX_HEADER_BYTES", default_value_t = RequestLimits::default().max_header_bytes)]
        max_header_bytes: usize,
    },
    /// Apply the migrations in `migrations/` next to the manifest.
    Migrate {
        /// Database URL; defaults to the app's `pg_url` variable.
        #[arg(long)]
        database_url: Option<String>,
        /// Also load the demo data (`demo/demo-data.sql`).
        #[arg(long)]
        demo_data: bool,
    },
    /// Print the id of the database (its Redis keys are `db:<id>:…`); the app's
    /// `database_id` variable must be this.
    DatabaseId {
        /// Database URL; defaults to the app's `pg_url` variable.
        #[arg(long)]
        database_url: Option<String>,
    },
    /// After restoring Postgres from a backup: delete the database's Redis
    /// state, which the app then rebuilds from Postgres. Safe while traffic
    /// runs; other databases' keys on the same Redis are left alone.
    RedisReset {
        /// Database URL; defaults to the app's `pg_url` variable.
        #[arg(long)]
        database_url: Option<String>,
        /// Redis URL; defaults to the app's `redis_url` variable.
        #[arg(long)]
        redis_url: Option<String>,
    },
    /// Mint a development JWT signed with the app's `jwt_secret`.
    Token {
        /// The user id (`sub`).
        #[arg(long)]
        sub: i64,
        /// `admin` for admin routes.
        #[arg(long)]
        role: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
    },
}

/// `COMPONENT=VALUE`.
fn parse_override<T: From<String>>(text: &str) -> Result<(String, T), String> {
    let (id, value) = text.split_once('=').ok_or("expected COMPONENT=VALUE")?;
    Ok((id.to_owned(), T::from(value.to_owned())))
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EDGE_HOST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let app = App::load(&cli.manifest)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Up {
                listen,
                cache_dir,
                pg_pool_size,
                no_cron,
                schedules,
                store_delay_ms,
                sources,
                max_header_bytes,
            } => {
                if store_delay_ms > 0 {
                    tracing::warn!(
                        "test mode: every store call is delayed by a random 0..={store_delay_ms} ms"
                    );
                }
                let settings = Settings {
                    cache_dir: cache_dir.unwrap_or_else(|| default_cache_dir(&app)),
                    pg_pool_size,
                    source_overrides: sources.into_iter().collect(),
                    store_delay_max: std::time::Duration::from_millis(store_delay_ms),
                };
                let schedules = (!no_cron).then(|| schedules.into_iter().collect());
                let limits = RequestLimits { max_header_bytes };
                up(app, &listen, settings, limits, schedules).await
            }
            Command::Migrate {
                database_url,
                demo_data,
            } => {
                let url = app_variable(&app, database_url, "pg_url")?;
                let demo = demo_data.then(|| app.dir.join("demo").join("demo-data.sql"));
                migrate::migrate(&url, &app.dir.join("migrations"), demo.as_deref()).await
            }
            Command::DatabaseId { database_url } => {
                let url = app_variable(&app, database_url, "pg_url")?;
                println!("{}", identity::database_id(&url).await?);
                Ok(())
            }
            Command::RedisReset {
                database_url,
                redis_url,
            } => {
                let pg_url = app_variable(&app, database_url, "pg_url")?;
                let redis_url = app_variable(&app, redis_url, "redis_url")?;
                let (database_id, deleted) = identity::reset_redis(&pg_url, &redis_url).await?;
                println!("deleted {deleted} Redis keys of database {database_id}; they are rebuilt from Postgres on first use");
                Ok(())
            }
            Command::Token { sub, role, ttl } => {
                let secret = app_variable(&app, None, "jwt_secret")?;
                let issuer = app_variable(&app, None, "jwt_issuer").ok();
                let audience = app_variable(&app, None, "jwt_audience").ok();
                let jwt = token::mint(&token::TokenRequest {
                    sub,
                    role: role.as_deref(),
                    ttl_seconds: ttl,
                    secret: &secret,
                    issuer: issuer.as_deref(),
                    audience: audience.as_deref(),
                })?;
                println!("{jwt}");
                Ok(())
            }
        }
    })
}

/// `given`, or else the app's variable `name` (from `SPIN_VARIABLE_*`, `.env`, defaults).
fn app_variable(app: &App, given: Option<String>, name: &str) -> Result<String> {
    match given {
        Some(value) => Ok(value),
        None => Resolver::one_from_env(&app.manifest, name),
    }
}

/// `schedules`: `None` runs no cron triggers; otherwise per-component overrides.
async fn up(
    app: App,
    listen: &str,
    settings: Settings,
    limits: RequestLimits,
    schedules: Option<HashMap<String, String>>,
) -> Result<()> {
    let resolver = Resolver::from_env(&app.manifest)?;
    let runtime = Runtime::load(&app, &resolver, &settings)?;
    let trigger = Arc::new(HttpTrigger::new(&app, &runtime, limits)?);
    let jobs = cron_trigger::jobs(&app, &runtime, schedules.as_ref().unwrap_or(&HashMap::new()))?;
    let cron_tasks: Vec<_> = jobs
        .into_iter()
        .filter(|_| schedules.is_some())
        .map(|job| tokio::spawn(job.run()))
        .collect();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    // Tests and scripts read this line to learn the port.
    println!("Serving http://{}", listener.local_addr()?);
    trigger.serve(listener, shutdown_signal()).await?;
    for task in cron_tasks {
        task.abort();
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
