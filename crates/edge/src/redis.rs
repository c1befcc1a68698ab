//! Redis through `fermyon:spin/redis@2.0.0`.

use crate::config::variable;
use crate::Problem;
use spin_sdk::redis::{Connection, Error as RedisError};

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
