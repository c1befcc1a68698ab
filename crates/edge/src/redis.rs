//! Redis through `fermyon:spin/redis@2.0.0`.

use crate::config::variable;
use crate::Problem;
use spin_sdk::redis::{Connection, Error as RedisError, RedisParameter, RedisResult};

/// Open the Redis named by the `redis_url` variable.
pub fn connect() -> Result<Connection, Problem> {
    let url = variable("redis_url")?;
    Connection::open(&url).map_err(unavailable)
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

    /// Run the script with `keys` and `args`; the reply is Spin's flattened list.
    pub fn run(
        &self,
        redis: &Connection,
        keys: &[&str],
        args: &[RedisParameter],
    ) -> Result<Vec<RedisResult>, RedisError> {
        let mut params = Vec::with_capacity(2 + keys.len() + args.len());
        params.push(RedisParameter::Binary(self.sha1.as_bytes().to_vec()));
        params.push(RedisParameter::Int64(keys.len() as i64));
        params.extend(keys.iter().map(|k| RedisParameter::Binary(k.as_bytes().to_vec())));
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
