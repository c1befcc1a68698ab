//! The database's identity and the Redis state that belongs to it (issue 17).
//!
//! Every Redis key the app writes is `db:<database id>:<name>` (see
//! `edge::redis`), the id being the one the migrations stored in
//! `app_identity`. So one database's Redis state can be found — and reset —
//! alone, even on a Redis other databases share.

use crate::migrate::connect;
use anyhow::{Context, Result};
use redis::AsyncCommands;

/// Keys deleted per `UNLINK`, and asked for per `SCAN` step.
const BATCH: usize = 1_000;

/// The id of the database at `pg_url` (`SELECT database_id FROM app_identity`).
pub async fn database_id(pg_url: &str) -> Result<String> {
    let (client, driver) = connect(pg_url).await?;
    let row = client
        .query_one("SELECT database_id::text FROM app_identity", &[])
        .await
        .context("cannot read app_identity: are the migrations applied?")?;
    drop(client);
    let _ = driver.await;
    Ok(row.get(0))
}

/// Delete every Redis key of the database at `pg_url` from the Redis at
/// `redis_url`; answers the database's id and how many keys went.
///
/// Safe while traffic runs: each key is rebuilt from Postgres by the first
/// request that needs it, as after a Redis restart (coupon stock and holders,
/// popular-product days), an idempotency record that goes makes a repeat
/// answer from Postgres' own record of the effect, and a recovery lock that
/// goes at worst lets two recovery runs overlap, which their conditional
/// updates allow. Keys of other databases are never touched.
pub async fn reset_redis(pg_url: &str, redis_url: &str) -> Result<(String, u64)> {
    let database_id = database_id(pg_url).await?;
    let client = redis::Client::open(redis_url).context("bad Redis URL")?;
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .context("cannot connect to Redis")?;
    let pattern = format!("db:{database_id}:*");
    let mut deleted = 0;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(BATCH)
            .query_async(&mut redis)
            .await
            .context("SCAN failed")?;
        if !keys.is_empty() {
            let gone: u64 = redis.unlink(&keys).await.context("UNLINK failed")?;
            deleted += gone;
        }
        if next == 0 {
            return Ok((database_id, deleted));
        }
        cursor = next;
    }
}
