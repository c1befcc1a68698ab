//! The test harness: real host processes running the real compiled
//! components against a real Postgres and Redis.
//!
//! Each [`TestApp`] gets its own database (created from the migrations and
//! dropped afterwards) and its own Redis logical database (claimed from a
//! pool of indexes), so tests run in parallel without seeing each other. Host
//! processes are started from `target/debug/edge-host`; `./dev test` builds
//! it and the components first.

pub mod contract;
pub mod fixtures;
pub mod invariants;
pub mod otlp;
pub mod private;
pub mod raw;
pub mod receiver;
pub mod spin;

use anyhow::{bail, Context, Result};
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The JWT secret every test app is configured with.
pub const SECRET: &str = "test-secret-0123456789";

/// Redis logical databases the harness hands out (0 holds the claims).
const REDIS_SLOTS: std::ops::RangeInclusive<u32> = 1..=15;

pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// Where the admin connection to the test Postgres points.
pub fn pg_server_url() -> String {
    std::env::var("EDGE_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// The test Redis (without a database index).
pub fn redis_server_url() -> String {
    std::env::var("EDGE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn host_binary() -> PathBuf {
    let binary = workspace_dir().join("target/debug/edge-host");
    assert!(
        binary.exists(),
        "{} is missing: run the suite with ./dev test (or ./dev build first)",
        binary.display()
    );
    binary
}

/// `edge-host redis-reset` (README "Backup and restore") for the database at
/// `pg_url` on the Redis at `redis_url`; answers what it printed.
pub fn redis_reset(pg_url: &str, redis_url: &str) -> Result<String> {
    let output = Command::new(host_binary())
        .args(["-f", &workspace_dir().join("spin.toml").to_string_lossy()])
        .args(["redis-reset", "--database-url", pg_url, "--redis-url", redis_url])
        .env("EDGE_HOST_LOG", "warn")
        .output()
        .context("run edge-host redis-reset")?;
    if !output.status.success() {
        bail!("redis-reset failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A database of its own, migrated, dropped when the value is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
    /// Its `app_identity` id: the app's `database_id` variable.
    pub database_id: String,
    server: String,
}

/// The Redis key space of one database: `db:<database id>:<name>`, as the
/// components name their keys (`edge::redis`).
#[derive(Clone, Debug)]
pub struct RedisScope {
    pub database_id: String,
}

impl RedisScope {
    /// The scope of the database `db` is connected to.
    pub async fn of(db: &tokio_postgres::Client) -> Result<RedisScope> {
        let row = db
            .query_one("SELECT database_id::text FROM app_identity", &[])
            .await?;
        Ok(RedisScope {
            database_id: row.get(0),
        })
    }

    pub fn key(&self, name: &str) -> String {
        format!("db:{}:{name}", self.database_id)
    }
}

impl TestDb {
    /// A database on the shared test server.
    pub async fn create() -> Result<TestDb> {
        TestDb::create_on(&pg_server_url()).await
    }

    /// A database on the server at `server` (a URL without a database).
    pub async fn create_on(server: &str) -> Result<TestDb> {
        TestDb::fill_new(server, |url, name| {
            let status = Command::new(host_binary())
                .args([
                    "-f",
                    &workspace_dir().join("spin.toml").to_string_lossy(),
                    "migrate",
                    "--database-url",
                    url,
                ])
                .env("EDGE_HOST_LOG", "warn")
                .status()
                .context("run migrations")?;
            if !status.success() {
                bail!("migrations failed for {name}");
            }
            Ok(())
        })
        .await
    }

    /// A new, empty database on `server`, then `fill(url, name)` gives it its
    /// schema (and data); answers it with the `database_id` it ends up with.
    async fn fill_new(server: &str, fill: impl FnOnce(&str, &str) -> Result<()>) -> Result<TestDb> {
        let name = format!("edge_test_{}", uuid::Uuid::new_v4().simple());
        let admin = connect(&format!("{server}/postgres")).await?;
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await?;
        // Spin refuses the self-signed certificate of a default Debian
        // Postgres unless TLS is off (our host does too).
        let url = format!("{server}/{name}?sslmode=disable");
        fill(&url, &name)?;
        let scope = RedisScope::of(&connect(&url).await?).await?;
        Ok(TestDb {
            name,
            url,
            database_id: scope.database_id,
            server: server.to_owned(),
        })
    }
}

impl TestDb {
    /// A custom-format `pg_dump` of this database into `path`.
    pub fn dump(&self, path: &Path) -> Result<()> {
        let status = Command::new("pg_dump")
            .args(["--format=custom", "--file"])
            .arg(path)
            .arg(&self.url)
            .status()
            .context("run pg_dump")?;
        if !status.success() {
            bail!("pg_dump of {} failed", self.name);
        }
        Ok(())
    }

    /// A new database on `server` restored from the dump at `path` with
    /// `pg_restore` (so it keeps the dumped `database_id`), as an operator
    /// restores a backup.
    pub async fn restore_on(server: &str, path: &Path) -> Result<TestDb> {
        TestDb::fill_new(server, |url, name| {
            let status = Command::new("pg_restore")
                .args(["--exit-on-error", "--no-owner", "--dbname"])
                .arg(url)
                .arg(path)
                .status()
                .context("run pg_restore")?;
            if !status.success() {
                bail!("pg_restore into {name} failed");
            }
            Ok(())
        })
        .await
    }

    /// The Postgres server (URL without a database) this database is on.
    pub fn server(&self) -> &str {
        &self.server
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (name, server) = (self.name.clone(), self.server.clone());
        // Drop runs outside any async context we can borrow: use a small runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let admin = connect(&format!("{server}/postgres")).await.ok()?;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// Connect to Postgres, driving the connection in the background.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connect to {url}"))?;
    tokio::spawn(connection);
    Ok(client)
}

/// A Redis logical database of its own, flushed before use and released on drop.
pub struct RedisSlot {
    index: u32,
    pub url: String,
}

impl RedisSlot {
    pub fn claim() -> Result<RedisSlot> {
        let client = redis::Client::open(format!("{}/0", redis_server_url()))?;
        let mut control = client.get_connection()?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            for index in REDIS_SLOTS {
                let claimed: Option<String> = redis::cmd("SET")
                    .arg(format!("edge-test:slot:{index}"))
                    .arg(std::process::id())
                    .arg("NX")
                    .arg("EX")
                    .arg(1800)
                    .query(&mut control)?;
                if claimed.is_some() {
                    let url = format!("{}/{index}", redis_server_url());
                    let mut slot = redis::Client::open(url.as_str())?.get_connection()?;
                    redis::cmd("FLUSHDB").exec(&mut slot)?;
                    return Ok(RedisSlot { index, url });
                }
            }
            if Instant::now() > deadline {
                bail!("no free Redis database among {REDIS_SLOTS:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for RedisSlot {
    fn drop(&mut self) {
        let release = || -> redis::RedisResult<()> {
            let mut slot = redis::Client::open(self.url.as_str())?.get_connection()?;
            redis::cmd("FLUSHDB").exec(&mut slot)?;
            let mut control = redis::Client::open(format!("{}/0", redis_server_url()))?.get_connection()?;
            redis::cmd("DEL")
                .arg(format!("edge-test:slot:{}", self.index))
                .exec(&mut control)
        };
        let _ = release();
    }
}

/// A running instance of the app: an `edge-host up` process, or a real
/// `spin up` (see [`Host::start_spin`]).
pub struct Host {
    child: Child,
    pub base_url: String,
    pub log: PathBuf,
    /// Spin's `--log-dir` (component output), when this is Spin.
    spin_logs: Option<PathBuf>,
}

static HOST_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Host {
    /// Start the host on a free port and wait until it serves.
    pub fn start(manifest: &Path, env: &[(String, String)]) -> Result<Host> {
        Host::start_with_args(manifest, env, &[])
    }

    /// Start with extra `edge-host up` arguments.
    pub fn start_with_args(manifest: &Path, env: &[(String, String)], args: &[String]) -> Result<Host> {
        let log = std::env::temp_dir().join(format!(
            "edge-host-{}-{}.log",
            std::process::id(),
            HOST_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let mut command = Command::new(host_binary());
        // Small pools unless a test asks for Spin's 64: tests run in parallel
        // against one Postgres (max_connections 100).
        command.env("EDGE_HOST_PG_POOL_SIZE", "8");
        let child = command
            .args(["-f", &manifest.to_string_lossy(), "up", "--listen", "127.0.0.1:0"])
            .args(args)
            .env(
                "EDGE_HOST_LOG",
                std::env::var("EDGE_HOST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("spawn edge-host")?;
        Host::serving(child, log, None, Duration::from_secs(60))
    }

    /// Start real Spin (`spin up`) on `manifest` on a free port and wait until
    /// it serves. `components` limits it to those (`-c`, for a Spin without
    /// the cron plugin); Spin runs the manifest's cron triggers otherwise.
    pub fn start_spin(
        spin: &spin::SpinInstall,
        manifest: &Path,
        env: &[(String, String)],
        components: Option<&[String]>,
    ) -> Result<Host> {
        let n = HOST_COUNTER.fetch_add(1, Ordering::Relaxed);
        let stem = format!("spin-{}-{}", std::process::id(), n);
        let log = std::env::temp_dir().join(format!("{stem}.log"));
        let spin_logs = std::env::temp_dir().join(format!("{stem}-logs"));
        std::fs::create_dir_all(&spin_logs)?;
        let listen = format!("127.0.0.1:{}", private::free_port());
        let mut command = Command::new(&spin.bin);
        command
            .args(["up", "-f", &manifest.to_string_lossy(), "--listen", &listen])
            .arg("--log-dir")
            .arg(&spin_logs);
        for component in components.into_iter().flatten() {
            command.args(["-c", component]);
        }
        // Its own process group: `spin up` runs each trigger as a child
        // process, and killing the instance must kill them all.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("SPIN_DATA_DIR", &spin.data_dir)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("spawn spin up")?;
        // The first start compiles every component (Spin caches it after).
        Host::serving(child, log, Some(spin_logs), Duration::from_secs(300))
    }

    /// Wait for the `Serving <url>` line both runtimes print.
    fn serving(mut child: Child, log: PathBuf, spin_logs: Option<PathBuf>, within: Duration) -> Result<Host> {
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("Serving ") {
                    let _ = sender.send(url.trim().to_owned());
                }
            }
        });
        let mut host = Host {
            child,
            base_url: String::new(),
            log,
            spin_logs,
        };
        match receiver.recv_timeout(within) {
            Ok(base_url) => {
                host.base_url = base_url;
                Ok(host)
            }
            Err(_) => {
                let logs = host.logs();
                host.kill();
                bail!("the app did not start: {logs}")
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the process dies mid-whatever, like a crashed instance
    /// (Spin with every trigger process it started).
    pub fn kill(&mut self) {
        if self.spin_logs.is_some() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a graceful exit.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        Ok(self.child.wait()?)
    }

    /// What the instance wrote: its own output and, on Spin, the components'.
    pub fn logs(&self) -> String {
        let mut logs = std::fs::read_to_string(&self.log).unwrap_or_default();
        if let Some(dir) = &self.spin_logs {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            files.sort();
            for file in files {
                logs.push_str(&format!("\n--- {}\n", file.display()));
                logs.push_str(&std::fs::read_to_string(&file).unwrap_or_default());
            }
        }
        logs
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
        if let Some(dir) = &self.spin_logs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Mint an HS256 token for `user_id`.
pub fn token(user_id: i64, role: Option<&str>) -> String {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    let mut claims = json!({ "sub": user_id.to_string(), "iat": now, "exp": now + 3600 });
    if let Some(role) = role {
        claims["role"] = json!(role);
    }
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encode token")
}

/// The app from `spin.toml`: N host instances sharing one database and one Redis.
pub struct TestApp {
    pub hosts: Vec<Host>,
    pub client: reqwest::Client,
    pub db: TestDb,
    /// The Redis the app uses (a claimed logical database unless private).
    pub redis_url: String,
    _redis_slot: Option<RedisSlot>,
    manifest: PathBuf,
    env: Vec<(String, String)>,
    args: Vec<String>,
    spin: Option<spin::SpinInstall>,
    next: AtomicUsize,
}

/// How to start a [`TestApp`].
#[derive(Default)]
pub struct Options<'a> {
    pub instances: usize,
    /// Extra environment for the hosts (e.g. `SPIN_VARIABLE_*` overrides).
    pub env: &'a [(&'a str, &'a str)],
    /// A Postgres server URL (no database) instead of the shared one.
    pub pg_server: Option<String>,
    /// This database (e.g. one restored from a dump) instead of a new one.
    pub db: Option<TestDb>,
    /// A Redis URL instead of a claimed logical database of the shared one.
    pub redis_url: Option<String>,
    /// Load the test build of the order component (with failure points).
    pub failpoints: bool,
    /// Run the recovery cron trigger on this schedule (no cron triggers otherwise,
    /// so that nothing resolves orders behind a test's back). Host only: Spin
    /// runs the manifest's own schedule.
    pub recovery_schedule: Option<&'a str>,
    /// Serve the app with real Spin instead of `edge-host`.
    pub spin: Option<spin::SpinInstall>,
    /// Reach the database through a pooler on this loopback port (the
    /// database itself is made and migrated directly on `pg_server`).
    pub pooler_port: Option<u16>,
    /// The manifest to serve, relative to the workspace (`spin.toml` when
    /// `None`), e.g. the derived `spin.akamai.toml`.
    pub manifest: Option<&'a str>,
}

/// Race-window runs: `EDGE_HOST_STORE_DELAY_MS` (inherited by every host)
/// delays every store call; `EDGE_TEST_UNEVEN_DELAY_MS` delays only the first
/// instance's, so instances interleave unevenly.
fn uneven_delay(env: &[(String, String)], instance: usize) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    if let Ok(delay) = std::env::var("EDGE_TEST_UNEVEN_DELAY_MS") {
        let delay = if instance == 0 { delay } else { "0".to_owned() };
        env.push(("EDGE_HOST_STORE_DELAY_MS".to_owned(), delay));
    }
    env
}

/// The answers of requests spawned as tasks, in order; a request that got no
/// answer at all (the connection broke) is left out.
pub async fn settle(tasks: Vec<tokio::task::JoinHandle<Option<Reply>>>) -> Vec<Reply> {
    futures::future::join_all(tasks)
        .await
        .into_iter()
        .filter_map(|r| r.expect("the request task ran"))
        .collect()
}

/// A response: status, headers and the parsed JSON body (`Null` when empty).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Assert this is a problem document with `status` and `code`.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "unexpected status: {}", self.text);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}",
            self.text
        );
        assert_eq!(self.body["code"], code, "{}", self.text);
        assert_eq!(self.body["status"], status, "{}", self.text);
        for member in ["type", "title", "detail"] {
            assert!(
                self.body[member].is_string(),
                "problem without {member}: {}",
                self.text
            );
        }
    }
}

impl TestApp {
    /// The real app (`spin.toml`) on `instances` host processes.
    pub async fn start(instances: usize) -> Result<TestApp> {
        TestApp::start_with(instances, &[]).await
    }

    pub async fn start_with(instances: usize, env: &[(&str, &str)]) -> Result<TestApp> {
        TestApp::start_opts(Options {
            instances,
            env,
            ..Options::default()
        })
        .await
    }

    pub async fn start_opts(options: Options<'_>) -> Result<TestApp> {
        let db = match (options.db, &options.pg_server) {
            (Some(db), _) => db,
            (None, Some(server)) => TestDb::create_on(server).await?,
            (None, None) => TestDb::create().await?,
        };
        let (redis_url, redis_slot) = match options.redis_url {
            Some(url) => (url, None),
            None => {
                let slot = RedisSlot::claim()?;
                (slot.url.clone(), Some(slot))
            }
        };
        let pg_host = db
            .url
            .split('@')
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default()
            .to_owned();
        let redis_host = redis_url
            .trim_start_matches("redis://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let pg_url = match options.pooler_port {
            Some(port) => format!("postgres://postgres@127.0.0.1:{port}/{}?sslmode=disable", db.name),
            None => db.url.clone(),
        };
        let pg_host = match options.pooler_port {
            Some(port) => format!("127.0.0.1:{port}"),
            None => pg_host,
        };
        let mut env = vec![
            ("SPIN_VARIABLE_PG_URL".to_owned(), pg_url),
            ("SPIN_VARIABLE_PG_HOST".to_owned(), pg_host),
            ("SPIN_VARIABLE_REDIS_URL".to_owned(), redis_url.clone()),
            ("SPIN_VARIABLE_REDIS_HOST".to_owned(), redis_host),
            ("SPIN_VARIABLE_JWT_SECRET".to_owned(), SECRET.to_owned()),
            ("SPIN_VARIABLE_DATABASE_ID".to_owned(), db.database_id.clone()),
        ];
        env.extend(options.env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let manifest = workspace_dir().join(options.manifest.unwrap_or("spin.toml"));
        let mut args = Vec::new();
        if options.failpoints {
            for component in ["order", "coupon"] {
                let build = workspace_dir().join(format!("target/failpoints/{component}.wasm"));
                assert!(build.exists(), "{} is missing: run ./dev build", build.display());
                args.push(format!("--source={component}={}", build.display()));
            }
        }
        match options.recovery_schedule {
            Some(schedule) => args.push(format!("--schedule=recovery={schedule}")),
            None => args.push("--no-cron".to_owned()),
        }
        if options.spin.is_some() {
            assert!(
                !options.failpoints && options.recovery_schedule.is_none(),
                "failure points and schedules are host flags; Spin runs the manifest as it is"
            );
        }
        let mut app = TestApp {
            hosts: Vec::new(),
            // No answer within this is a failure, never a hang (spin#3671 hangs forever).
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .timeout(Duration::from_secs(60))
                .build()?,
            db,
            redis_url,
            _redis_slot: redis_slot,
            manifest,
            env,
            args,
            spin: options.spin,
            next: AtomicUsize::new(0),
        };
        for _ in 0..options.instances.max(1) {
            app.add_instance()?;
        }
        Ok(app)
    }

    /// Start one more instance of the app (e.g. to replace a killed one).
    pub fn add_instance(&mut self) -> Result<()> {
        let spin = self.spin.clone();
        self.add_instance_on(spin.as_ref())
    }

    /// Start one more instance on real Spin (`Some`) or on the host (`None`),
    /// sharing this app's stores: apps served by both at once.
    pub fn add_instance_on(&mut self, spin: Option<&spin::SpinInstall>) -> Result<()> {
        let host = match spin {
            // A Spin without the cron plugin runs the HTTP components only.
            Some(spin) if !spin.version.has_cron() => {
                let components = spin::http_components(&self.manifest);
                Host::start_spin(spin, &self.manifest, &self.env, Some(&components))?
            }
            Some(spin) => Host::start_spin(spin, &self.manifest, &self.env, None)?,
            None => {
                let env = uneven_delay(&self.env, self.hosts.len());
                Host::start_with_args(&self.manifest, &env, &self.args)?
            }
        };
        self.hosts.push(host);
        Ok(())
    }
    /// A base URL, rotating over the instances so consecutive calls spread.
    pub fn base_url(&self) -> &str {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.hosts.len();
        &self.hosts[i].base_url
    }

    pub async fn pg(&self) -> Result<tokio_postgres::Client> {
        connect(&self.db.url).await
    }

    /// Everything the instances wrote (their own output and the components').
    pub fn logs(&self) -> String {
        self.hosts.iter().map(Host::logs).collect::<Vec<_>>().join("\n")
    }

    /// The JSON log lines the components wrote (SPEC "Operations"): every
    /// line that is a JSON object with a `requestId`.
    pub fn log_lines(&self) -> Vec<Value> {
        self.logs()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line.trim()).ok())
            .filter(|line| line.get("requestId").is_some())
            .collect()
    }

    /// The full name of this app's Redis key `name` (see [`RedisScope`]).
    pub fn redis_key(&self, name: &str) -> String {
        RedisScope {
            database_id: self.db.database_id.clone(),
        }
        .key(name)
    }

    pub fn redis(&self) -> Result<redis::Connection> {
        Ok(redis::Client::open(self.redis_url.as_str())?.get_connection()?)
    }

    /// Send a request to the next instance.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Reply> {
        let url = format!("{}{path}", self.base_url());
        send(&self.client, method, &url, token, headers, body).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Result<Reply> {
        self.request(reqwest::Method::GET, path, token, &[], None).await
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Result<Reply> {
        self.request(
            reqwest::Method::POST,
            path,
            token,
            &[("content-type", "application/json")],
            Some(body.to_string().into_bytes()),
        )
        .await
    }
}

pub async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<Reply> {
    let mut request = client.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("request to {url}"))?;
    Ok(reply_of(response).await)
}

/// A response read whole (its body as JSON when it is JSON, else `null`).
pub async fn reply_of(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        text,
        body,
    }
}
