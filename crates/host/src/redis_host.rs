//! `fermyon:spin/redis@2.0.0` on the `redis` crate, as Spin implements it:
//! `invalid-address` for a malformed or disallowed address, server errors as
//! `other(message)`, and `execute` replies flattened depth-first into a list
//! (nesting is lost; an error anywhere in the reply fails the call).
//!
//! One difference, in cost only: Spin opens a new TCP connection on every
//! `open`; this host keeps a dropped connection for the next `open` of the
//! same address (see [`IdleRedis`]), so a guest sees what a fresh connection
//! would show it — the URL's database, no transaction or subscription
//! state — without the connect and teardown.

use crate::bindings::spin::fermyon::spin::redis::{
    Error, Host, HostConnection, Payload, RedisParameter, RedisResult,
};
use crate::state::InstanceState;
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, Value};
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use wasmtime::component::Resource;

/// An open connection; handed back to its [`IdleRedis`] when the guest drops
/// it, unless the guest may have changed its state.
pub struct RedisConnection {
    connection: KeptConnection,
    address: String,
    idle: Arc<IdleRedis>,
    /// Whether the next `open` may have this connection as if it were new.
    reusable: bool,
}

impl Drop for RedisConnection {
    fn drop(&mut self) {
        if self.reusable {
            self.idle.put(&self.address, self.connection.clone());
        }
    }
}

/// A connection, and a second handle on its socket to see, without a
/// round trip, whether Redis has closed it.
#[derive(Clone, Debug)]
struct KeptConnection {
    connection: MultiplexedConnection,
    socket: Arc<std::net::TcpStream>,
}

impl KeptConnection {
    /// Whether Redis has closed the connection (restart, shutdown, idle
    /// `timeout`): the socket, peeked without blocking, holds the end of the
    /// stream or an error — seen as soon as the close arrives, even before
    /// the connection's reader has read it.
    fn is_closed(&self) -> bool {
        let mut byte = [0u8; 1];
        match self.socket.peek(&mut byte) {
            Ok(0) => true,
            // A reply to a command whose request was cancelled, not yet read.
            Ok(_) => false,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }
}

/// Connections the guests dropped, by address: at most [`IdleRedis::KEEP`]
/// per address. One whose socket Redis has closed (a restart, a shutdown,
/// an idle timeout) is never handed out again, so a Redis that went away is
/// noticed at `open` — where Spin's fresh connection would fail too — with
/// no round trip to ask.
#[derive(Debug, Default)]
pub struct IdleRedis {
    by_address: Mutex<HashMap<String, Vec<KeptConnection>>>,
}

impl IdleRedis {
    /// Enough for every concurrent request of a busy instance.
    const KEEP: usize = 256;

    /// A kept connection whose socket is still open; closed ones are dropped on the way.
    fn take_open(&self, address: &str) -> Option<KeptConnection> {
        let mut by_address = self.by_address.lock().ok()?;
        let idle = by_address.get_mut(address)?;
        while let Some(kept) = idle.pop() {
            if !kept.is_closed() {
                return Some(kept);
            }
        }
        None
    }

    fn put(&self, address: &str, connection: KeptConnection) {
        if let Ok(mut by_address) = self.by_address.lock() {
            let idle = by_address.entry(address.to_owned()).or_default();
            if idle.len() < Self::KEEP {
                idle.push(connection);
            }
        }
    }
}

/// Commands after which a connection is no longer what a new one would be:
/// they select another database, open a transaction or a subscription, or
/// change the client's identity or protocol. (A script cannot: since
/// Redis 7, `SELECT` inside a script does not outlive it.)
const STATEFUL_COMMANDS: &[&str] = &[
    "AUTH",
    "CLIENT",
    "DISCARD",
    "EXEC",
    "HELLO",
    "MONITOR",
    "MULTI",
    "PSUBSCRIBE",
    "PUNSUBSCRIBE",
    "QUIT",
    "READONLY",
    "READWRITE",
    "RESET",
    "SELECT",
    "SSUBSCRIBE",
    "SUBSCRIBE",
    "SUNSUBSCRIBE",
    "SYNC",
    "PSYNC",
    "UNSUBSCRIBE",
    "UNWATCH",
    "WATCH",
];

impl InstanceState {
    async fn open_redis(&mut self, address: &str) -> Result<RedisConnection, Error> {
        let url = url::Url::parse(address).map_err(|_| Error::InvalidAddress)?;
        let host = url
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = url.port().or_else(|| crate::outbound::default_port(url.scheme()));
        let allowed = port.is_some_and(|port| self.component.allowed_hosts.allows(url.scheme(), host, port));
        if !allowed {
            let shown = match url.port() {
                Some(port) => format!("{}://{host}:{port}", url.scheme()),
                None => format!("{}://{host}", url.scheme()),
            };
            crate::outbound::report_denied(&self.component.id, &shown);
            return Err(Error::InvalidAddress);
        }
        let idle = self.component.idle_redis.clone();
        let connection = match idle.take_open(address) {
            Some(kept) => kept,
            None => connect(address).await?,
        };
        Ok(RedisConnection {
            connection,
            address: address.to_owned(),
            idle,
            reusable: true,
        })
    }

    /// The connection behind a resource (after the test delay, if any).
    async fn redis(
        &mut self,
        connection: &Resource<RedisConnection>,
    ) -> wasmtime::Result<MultiplexedConnection> {
        self.component.store_delay().await;
        // A multiplexed connection is a cheap handle; cloning lets the call
        // await without holding a borrow of the resource table.
        Ok(self.table.get(connection)?.connection.connection.clone())
    }
}

/// A new connection, as Spin makes on every `open`.
async fn connect(address: &str) -> Result<KeptConnection, Error> {
    let client = redis::Client::open(address).map_err(|_| Error::InvalidAddress)?;
    let info = client.get_connection_info();
    // Only TCP: a Unix socket names no host that `allowed_outbound_hosts`
    // could allow, and this host has no TLS (`rediss://` is refused above).
    let redis::ConnectionAddr::Tcp(host, port) = info.addr() else {
        return Err(Error::InvalidAddress);
    };
    let stream = tokio::net::TcpStream::connect((host.as_str(), *port))
        .await
        .map_err(|e| other(e.into()))?;
    // The same socket (and its non-blocking mode) under a second descriptor.
    let socket = stream
        .as_fd()
        .try_clone_to_owned()
        .map(std::net::TcpStream::from)
        .map_err(|e| other(e.into()))?;
    // Spin 4.0.2 (redis-rs 0.32) waits for Redis as long as it takes;
    // redis-rs 1.x would give up after 500 ms per reply, failing under load
    // where Spin does not.
    let unbounded = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let (connection, driver) =
        MultiplexedConnection::new_with_config(info.redis_settings(), stream, unbounded)
            .await
            .map_err(other)?;
    // Reads replies until Redis closes the socket or every handle is dropped.
    tokio::spawn(driver);
    Ok(KeptConnection {
        connection,
        socket: Arc::new(socket),
    })
}

fn other(e: redis::RedisError) -> Error {
    Error::Other(e.to_string())
}

impl Host for InstanceState {}

impl HostConnection for InstanceState {
    async fn open(&mut self, address: String) -> wasmtime::Result<Result<Resource<RedisConnection>, Error>> {
        self.component.store_delay().await;
        Ok(match self.open_redis(&address).await {
            Ok(connection) => Ok(self.table.push(connection)?),
            Err(e) => Err(e),
        })
    }

    async fn publish(
        &mut self,
        connection: Resource<RedisConnection>,
        channel: String,
        payload: Payload,
    ) -> wasmtime::Result<Result<(), Error>> {
        let mut conn = self.redis(&connection).await?;
        Ok(conn.publish::<_, _, ()>(channel, payload).await.map_err(other))
    }

    async fn get(
        &mut self,
        connection: Resource<RedisConnection>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Payload>, Error>> {
        let mut conn = self.redis(&connection).await?;
        Ok(conn.get(key).await.map_err(other))
    }

    async fn set(
        &mut self,
        connection: Resource<RedisConnection>,
        key: String,
        value: Payload,
    ) -> wasmtime::Result<Result<(), Error>> {
        let mut conn = self.redis(&connection).await?;
        Ok(conn.set::<_, _, ()>(key, value).await.map_err(other))
    }

    async fn incr(
        &mut self,
        connection: Resource<RedisConnection>,
        key: String,
    ) -> wasmtime::Result<Result<i64, Error>> {
        let mut conn = self.redis(&connection).await?;
        Ok(conn.incr(key, 1).await.map_err(other))
    }

    async fn del(
        &mut self,
        connection: Resource<RedisConnection>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<u32, Error>> {
        let mut conn = self.redis(&connection).await?;
        Ok(conn.del(keys).await.map_err(other))
    }

    async fn sadd(
        &mut self,
        connection: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> wasmtime::Result<Result<u32, Error>> {
        let mut conn = self.redis(&connection).await?;
        Ok(conn.sadd(key, values).await.map_err(|e| match e.kind() {
            redis::ErrorKind::UnexpectedReturnType => Error::TypeError,
            _ => other(e),
        }))
    }

    async fn smembers(
        &mut self,
        connection: Resource<RedisConnection>,
        key: String,
    ) -> wasmtime::Result<Result<Vec<String>, Error>> {
        let mut conn = self.redis(&connection).await?;
        Ok(conn.smembers(key).await.map_err(other))
    }

    async fn srem(
        &mut self,
        connection: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> wasmtime::Result<Result<u32, Error>> {
        let mut conn = self.redis(&connection).await?;
        Ok(conn.srem(key, values).await.map_err(other))
    }

    async fn execute(
        &mut self,
        connection: Resource<RedisConnection>,
        command: String,
        arguments: Vec<RedisParameter>,
    ) -> wasmtime::Result<Result<Vec<RedisResult>, Error>> {
        if STATEFUL_COMMANDS
            .iter()
            .any(|c| c.eq_ignore_ascii_case(command.trim()))
        {
            self.table.get_mut(&connection)?.reusable = false;
        }
        let mut conn = self.redis(&connection).await?;
        let mut cmd = redis::cmd(&command);
        for argument in arguments {
            match argument {
                RedisParameter::Int64(n) => cmd.arg(n),
                RedisParameter::Binary(bytes) => cmd.arg(bytes),
            };
        }
        let reply: Value = match cmd.query_async(&mut conn).await {
            Ok(reply) => reply,
            Err(e) => return Ok(Err(other(e))),
        };
        let reply = match reply.extract_error() {
            Ok(reply) => reply,
            Err(e) => return Ok(Err(other(e))),
        };
        let mut results = Vec::new();
        Ok(flatten(reply, &mut results).map(|()| results))
    }

    async fn drop(&mut self, connection: Resource<RedisConnection>) -> wasmtime::Result<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}

/// Spin's depth-first flattening of a reply.
fn flatten(value: Value, out: &mut Vec<RedisResult>) -> Result<(), Error> {
    match value {
        Value::Nil => out.push(RedisResult::Nil),
        Value::Int(n) => out.push(RedisResult::Int64(n)),
        Value::BulkString(bytes) => out.push(RedisResult::Binary(bytes)),
        Value::SimpleString(s) => out.push(RedisResult::Status(s)),
        Value::Okay => out.push(RedisResult::Status("OK".into())),
        Value::Array(items) | Value::Set(items) => {
            for item in items {
                flatten(item, out)?;
            }
        }
        Value::Double(d) => out.push(RedisResult::Binary(d.to_string().into_bytes())),
        Value::Boolean(b) => out.push(RedisResult::Int64(b.into())),
        Value::BigNumber(n) => out.push(RedisResult::Binary(n.to_string().into_bytes())),
        other => {
            return Err(Error::Other(format!(
                "Could not convert Redis response - TypeError: {other:?} is not supported"
            )))
        }
    }
    Ok(())
}
