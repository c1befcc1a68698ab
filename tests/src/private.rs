//! Private Postgres and Redis servers for tests that stop or break a store,
//! so the shared servers other tests use are never touched.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free port for a private server, below the kernel's ephemeral range
/// (32768–60999 by default). A server restarted after a crash must get its
/// port back, and a port from the ephemeral range may by then be the source
/// port of some client's connection (seen in CI under load: Redis could not
/// bind its old port again).
pub(crate) fn free_port() -> u16 {
    loop {
        let port = 20_000 + (uuid::Uuid::new_v4().as_u128() % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn pg_bin(tool: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("the postgresql package is installed")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    versions.sort();
    versions
        .last()
        .expect("a Postgres version")
        .join("bin")
        .join(tool)
}

fn is_root() -> bool {
    std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout == b"0\n")
            .unwrap_or(false)
}

/// Run a Postgres tool as the `postgres` user when we are root (initdb refuses root).
fn pg_command(tool: &str) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(pg_bin(tool));
        command
    } else {
        Command::new(pg_bin(tool))
    }
}

/// A throw-away Postgres cluster on a free loopback port.
pub struct PrivatePostgres {
    dir: tempdir::Dir,
    pub port: u16,
    max_connections: u32,
    /// More `-c name=value` server settings.
    settings: String,
}

mod tempdir {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl PrivatePostgres {
    pub fn start() -> Result<PrivatePostgres> {
        PrivatePostgres::start_sized(200)
    }

    /// A server taking `max_connections` clients (real Spin keeps up to 64
    /// per component per process, so its tests need more than the default).
    pub fn start_sized(max_connections: u32) -> Result<PrivatePostgres> {
        PrivatePostgres::start_with(max_connections, &[])
    }

    /// A server with more settings (`("name", "value")`) than the usual ones.
    pub fn start_with(max_connections: u32, settings: &[(&str, &str)]) -> Result<PrivatePostgres> {
        let path = std::env::temp_dir().join(format!("edge-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path)?;
        if is_root() {
            Command::new("chown")
                .args(["postgres:", &path.to_string_lossy()])
                .status()?;
        }
        let status = pg_command("initdb")
            .args(["-D", &path.to_string_lossy(), "-U", "postgres", "--auth=trust"])
            .stdout(Stdio::null())
            .status()
            .context("initdb")?;
        if !status.success() {
            bail!("initdb failed");
        }
        let server = PrivatePostgres {
            dir: tempdir::Dir(path),
            port: free_port(),
            max_connections,
            settings: settings
                .iter()
                .map(|(name, value)| format!(" -c {name}={value}"))
                .collect(),
        };
        server.resume()?;
        Ok(server)
    }

    pub fn server_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// Start (again) on the same port and data.
    pub fn resume(&self) -> Result<()> {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k /tmp -c fsync=off -c max_connections={}{}",
            self.port, self.max_connections, self.settings
        );
        let log = self.dir.0.join("server.log");
        let status = pg_command("pg_ctl")
            .args([
                "-D",
                &self.dir.0.to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-w",
                "-o",
                &options,
                "start",
            ])
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!(
                "pg_ctl start failed: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Stop abruptly, like a crash: in-flight statements fail.
    pub fn crash(&self) -> Result<()> {
        pg_command("pg_ctl")
            .args([
                "-D",
                &self.dir.0.to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .stdout(Stdio::null())
            .status()?;
        Ok(())
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.crash();
    }
}

/// A throw-away Redis on a free loopback port.
pub struct PrivateRedis {
    child: Option<Child>,
    pub port: u16,
}

impl PrivateRedis {
    pub fn start() -> Result<PrivateRedis> {
        let mut redis = PrivateRedis {
            child: None,
            port: free_port(),
        };
        redis.resume()?;
        Ok(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn resume(&mut self) -> Result<()> {
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .context("redis-server")?;
        let url = self.url();
        let child = self.child.insert(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if redis::Client::open(url.as_str())?.get_connection().is_ok() {
                return Ok(());
            }
            if let Some(status) = child.try_wait()? {
                bail!("private redis at {url} exited: {status}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("private redis at {url} did not start")
    }

    /// Kill the server: connections drop, data is gone (nothing is saved).
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.crash();
    }
}

/// PgBouncer 1.25 (from `../shared/pgbouncer`) in transaction mode in front
/// of the Postgres at `target_port`, on a free port: the pooler of the
/// scale-out tests. `None` (after one line) where the binary is not at hand,
/// unless `EDGE_TEST_REQUIRE_PGBOUNCER=1` (CI), where that is a failure.
pub struct PrivatePgBouncer {
    child: Child,
    dir: tempdir::Dir,
    pub port: u16,
}

impl PrivatePgBouncer {
    /// At most `pool_size` server connections per (database, user).
    pub fn start(target_port: u16, pool_size: u32) -> Result<Option<PrivatePgBouncer>> {
        let binary = std::env::var_os("EDGE_TEST_PGBOUNCER")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::workspace_dir().join("../shared/pgbouncer/pgbouncer"));
        if !binary.exists() {
            if std::env::var("EDGE_TEST_REQUIRE_PGBOUNCER").is_ok_and(|v| v == "1") {
                bail!(
                    "PgBouncer is required (EDGE_TEST_REQUIRE_PGBOUNCER=1): {} is missing",
                    binary.display()
                );
            }
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "skipping the pooler tests: no {}",
                binary.display()
            );
            return Ok(None);
        }
        let path = std::env::temp_dir().join(format!("edge-pgbouncer-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path)?;
        let dir = tempdir::Dir(path.clone());
        let port = free_port();
        // Transaction mode with prepared statements tracked (Spin's driver
        // and tokio-postgres prepare named statements): PgBouncer ≥ 1.21.
        let config = format!(
            "[databases]\n* = host=127.0.0.1 port={target_port}\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {dir}/users.txt\n\
             pool_mode = transaction\nmax_prepared_statements = 200\n\
             default_pool_size = {pool_size}\nmax_db_connections = {pool_size}\n\
             max_client_conn = 5000\nlogfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n",
            dir = path.display()
        );
        std::fs::write(path.join("pgbouncer.ini"), config)?;
        std::fs::write(path.join("users.txt"), "\"postgres\" \"\"\n")?;
        if is_root() {
            Command::new("chown")
                .args(["-R", "postgres:", &path.to_string_lossy()])
                .status()?;
        }
        let mut command = Command::new(&binary);
        if is_root() {
            // It refuses to run as root.
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(path.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let bouncer = PrivatePgBouncer { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("PgBouncer did not listen on {port}: {}", bouncer.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Some(bouncer))
    }

    /// A URL of database `name` through the pooler (no TLS on loopback).
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{name}?sslmode=disable",
            self.port
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PrivatePgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
