//! Redis through `fermyon:spin/redis@2.0.0`, in the key space of one database.
//!
//! Redis only ever holds a fast copy of what Postgres knows, so its keys must
//! belong to one database: every key is named `db:<database id>:<name>`, the
//! id being the one the migrations stored in `app_identity` and the app is
//! given as its `database_id` variable (read with the URL, no round trip).
//! Two databases on one Redis — staging and production, tenants, tests —
//! then never see each other's stock, replays, rankings or locks, and one
//! database's keys can be reset alone (`edge-host redis-reset`). The id has
//! no `{`, so a name's own hash tag (`coupon:{7}:…`) still decides its slot
//! on Redis Cluster.

use crate::config::variable;
use crate::Problem;
use spin_sdk::redis::{Connection, Error as RedisError, RedisParameter, RedisResult};

/// A select-list item that reads the database's id, for the statements that
/// build Redis state from Postgres (see [`Redis::verify_database`]).
pub const DATABASE_ID_COLUMN: &str = "(SELECT database_id::text FROM app_identity) AS database_id";

/// A connection to the app's Redis and the key space of its database.
pub struct Redis {
    connection: Connection,
    /// `db:<id>:`, before every key name.
    prefix: String,
}

/// Open the Redis named by the `redis_url` variable, in the key space of the
/// database named by `database_id`.
pub fn connect() -> Result<Redis, Problem> {
    let database_id = database_id()?;
    let url = variable("redis_url")?;
    let connection = Connection::open(&url).map_err(unavailable)?;
    Ok(Redis {
        connection,
        prefix: format!("db:{database_id}:"),
    })
}

/// The `database_id` variable, in the canonical form Postgres prints a
/// `uuid` in; anything else is a deployment fault (`503`), never a key.
fn database_id() -> Result<String, Problem> {
    let value = variable("database_id")?;
    uuid::Uuid::try_parse(value.trim())
        .map(|id| id.hyphenated().to_string())
        .map_err(|_| {
            Problem::unavailable(
                "the database_id variable is not a UUID (read it with: SELECT database_id FROM app_identity)",
            )
        })
}

impl Redis {
    /// The full name of the key `name` of this database.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Run a command as it is: keys among `args` must come from [`Redis::key`].
    pub fn execute(&self, command: &str, args: &[RedisParameter]) -> Result<Vec<RedisResult>, RedisError> {
        self.connection.execute(command, args)
    }

    /// Refuse to build this database's Redis state from another database:
    /// `in_postgres` is what [`DATABASE_ID_COLUMN`] read from the database
    /// `pg_url` names. A mismatch is a deployment fault (the variable was
    /// copied from another deployment), answered `503` before anything is
    /// written under the wrong id.
    pub fn verify_database(&self, in_postgres: &str) -> Result<(), Problem> {
        if self.prefix == format!("db:{in_postgres}:") {
            return Ok(());
        }
        eprintln!(
            "refusing to use Redis: the database_id variable ({}) is not the id of the database pg_url names ({in_postgres})",
            self.prefix.trim_start_matches("db:").trim_end_matches(':')
        );
        Err(Problem::unavailable(
            "the database_id variable does not name the database pg_url points at",
        ))
    }
}

/// A Redis failure as `503`.
pub fn unavailable(error: RedisError) -> Problem {
    let reason = match error {
        RedisError::InvalidAddress => "its address is not allowed or malformed".to_owned(),
        RedisError::TooManyConnections => "too many connections".to_owned(),
        RedisError::TypeError => "unexpected value type".to_owned(),
        RedisError::Other(message) => message,
    };
    Problem::unavailable(format!("redis failed ({reason})"))
}

/// A Lua script run with `EVALSHA`, falling back to `EVAL` when Redis does
/// not know it yet (`NOSCRIPT`, e.g. after a restart or on a new node).
pub struct Script {
    source: &'static str,
    sha1: String,
}

impl Script {
    pub fn new(source: &'static str) -> Script {
        Script {
            source,
            sha1: sha1_smol::Sha1::from(source).digest().to_string(),
        }
    }

    /// Run the script on the keys named `keys` of this database (each gets
    /// the database's prefix here, so no script can miss it) with `args`;
    /// the reply is Spin's flattened list.
    pub fn run(
        &self,
        redis: &Redis,
        keys: &[&str],
        args: &[RedisParameter],
    ) -> Result<Vec<RedisResult>, RedisError> {
        let mut params = Vec::with_capacity(2 + keys.len() + args.len());
        params.push(RedisParameter::Binary(self.sha1.as_bytes().to_vec()));
        params.push(RedisParameter::Int64(keys.len() as i64));
        params.extend(
            keys.iter()
                .map(|k| RedisParameter::Binary(redis.key(k).into_bytes())),
        );
        params.extend(args.iter().cloned());
        match redis.execute("EVALSHA", &params) {
            Err(RedisError::Other(message)) if is_noscript(&message) => {
                params[0] = RedisParameter::Binary(self.source.as_bytes().to_vec());
                redis.execute("EVAL", &params)
            }
            other => other,
        }
    }
}

/// Spin passes the client library's rendering of the `NOSCRIPT` reply, which
/// differs between versions ("NOSCRIPT …", "NoScriptError: …", "NoScript: …").
fn is_noscript(message: &str) -> bool {
    message.contains("NOSCRIPT") || message.contains("NoScript") || message.contains("No matching script")
}

/// A bulk-string reply as text, `None` for nil.
pub fn text(result: &RedisResult) -> Option<String> {
    match result {
        RedisResult::Binary(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        RedisResult::Status(status) => Some(status.clone()),
        _ => None,
    }
}

/// An unguessable token, so a claim or a lock is recognisably its owner's.
pub fn random_token() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the host provides randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
