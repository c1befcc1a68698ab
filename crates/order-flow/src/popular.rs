//! Units sold per product per UTC day, for popular products (SPEC §7).
//!
//! Postgres (units of `PAID` orders by `paid_at`) is the truth; Redis keeps
//! one sorted set per day as a fast index of it. A day key is only ever
//! *created* from Postgres (`rebuild_day`), with a sentinel member so an empty
//! day still exists; sales then add to keys that exist. So a key that exists
//! is complete, a missing one (never built, expired, flushed) is rebuilt — a
//! sale is never counted into a key that is missing its earlier sales.
//!
//! A count can still be wrong: a process that dies between a sale's commit
//! and its count leaves the day short, and a day rebuilt between the two
//! counts the sale twice. Recovery corrects such a day ([`reconcile_day`])
//! once the same difference with Postgres has stood for longer than a sale
//! takes to be counted.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use edge::pg::{column, Db, Query};
use edge::redis::Redis;
use edge::redis::{text, Script};
use edge::Problem;
use spin_sdk::redis::{RedisParameter, RedisResult};

/// Day keys live a little over the longest window (7 days).
const DAY_KEY_TTL_SECONDS: i64 = 8 * 24 * 60 * 60;
/// The member that marks a day as built (product ids are positive).
const SENTINEL: &str = "0";

/// The sorted set of units sold on UTC `day`. All day keys share the
/// `{popular}` hash tag, so a window can be unioned on Redis Cluster too.
pub fn day_key(day: NaiveDate) -> String {
    format!("{{popular}}:{}", day.format("%Y-%m-%d"))
}

/// Add an order's units to its day, if that day's key exists. ARGV: TTL, then
/// (product, quantity) pairs.
const COUNT_SALE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 2, #ARGV, 2 do
  redis.call('ZINCRBY', KEYS[1], ARGV[i + 1], ARGV[i])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
";

/// Build a day from a Postgres snapshot, only if nobody has (a key that
/// exists already counts every sale since it was built). ARGV: TTL, sentinel,
/// then (product, units) pairs.
const REBUILD_DAY: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('ZADD', KEYS[1], 0, ARGV[2])
for i = 3, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
";

/// The window's totals: `0` then the indexes of missing day keys, or `1` then
/// member/score pairs of their union.
const WINDOW: &str = r"
local missing = {}
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then table.insert(missing, i) end
end
if #missing > 0 then return {0, missing} end
local union = {'ZUNION', #KEYS}
for i = 1, #KEYS do table.insert(union, KEYS[i]) end
table.insert(union, 'WITHSCORES')
return {1, redis.call(unpack(union))}
";

/// The day's counts brought in line with Postgres (ARGV: `units`), for the
/// products whose difference has stood, unchanged, for ARGV[1] ms on Redis'
/// clock: a difference is first noted in KEYS[2] (`<redis>:<postgres>:<ms>`)
/// and corrected by a later run that finds exactly it again. A sale counted
/// meanwhile changes the Redis side, and the note starts over; a sale in
/// flight (committed, not counted yet) is gone from the difference by the
/// next run. Replies how many products were corrected. ARGV: the age in ms,
/// then (product, units) pairs of Postgres' snapshot.
const RECONCILE_DAY: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local settled = tonumber(ARGV[1])
local postgres, products = {}, {}
for i = 2, #ARGV, 2 do
  postgres[ARGV[i]] = tonumber(ARGV[i + 1])
  products[ARGV[i]] = true
end
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, product in ipairs(members) do
  if product ~= '0' then products[product] = true end
end
local corrected = 0
for product in pairs(products) do
  local in_redis = tonumber(redis.call('ZSCORE', KEYS[1], product) or '0')
  local in_postgres = postgres[product] or 0
  if in_redis == in_postgres then
    redis.call('HDEL', KEYS[2], product)
  else
    local seen = in_redis .. ':' .. in_postgres
    local noted = redis.call('HGET', KEYS[2], product)
    local noted_seen, noted_at = nil, nil
    if noted then noted_seen, noted_at = string.match(noted, '^(.*):(%d+)$') end
    if noted_seen == seen and now - tonumber(noted_at) >= settled then
      if in_postgres == 0 then
        redis.call('ZREM', KEYS[1], product)
      else
        redis.call('ZADD', KEYS[1], in_postgres, product)
      end
      redis.call('HDEL', KEYS[2], product)
      corrected = corrected + 1
    elseif noted_seen ~= seen then
      redis.call('HSET', KEYS[2], product, seen .. ':' .. now)
    end
  end
end
for _, product in ipairs(redis.call('HKEYS', KEYS[2])) do
  if not products[product] then redis.call('HDEL', KEYS[2], product) end
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 and redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], ttl) end
return corrected
";

/// Units sold and not refunded per product, of orders paid in `[from, until)`.
const SOLD_BETWEEN: Query = Query::new(
    "SELECT i.product_id, sum(i.quantity - i.refunded_quantity)::int8 AS units
    FROM orders o JOIN order_items i ON i.order_id = o.id
    WHERE o.status IN ('PAID', 'PARTIALLY_REFUNDED', 'REFUNDED')
      AND o.paid_at >= $1::timestamp AT TIME ZONE 'UTC'
      AND o.paid_at < $2::timestamp AT TIME ZONE 'UTC'
    GROUP BY i.product_id
    HAVING sum(i.quantity - i.refunded_quantity) > 0",
);

/// Count a paid order's lines (product id, quantity) on the day it was paid,
/// on `redis` when the request already has a connection (on Spin every
/// `open` is a new TCP connection), else on a new one.
/// Best effort: a missing day key is rebuilt from Postgres when next read.
pub fn count_sale(paid_at: DateTime<Utc>, lines: &[(i64, i64)], redis: Option<&Redis>) {
    let mut args = vec![RedisParameter::Int64(DAY_KEY_TTL_SECONDS)];
    for (product_id, quantity) in lines {
        args.push(RedisParameter::Int64(*product_id));
        args.push(RedisParameter::Int64(*quantity));
    }
    let count = |redis: &Redis| {
        Script::new(COUNT_SALE)
            .run(redis, &[&day_key(paid_at.date_naive())], &args)
            .map_err(edge::redis::unavailable)
    };
    let counted = match redis {
        Some(redis) => count(redis),
        None => edge::redis::connect().and_then(|redis| count(&redis)),
    };
    if let Err(problem) = counted {
        eprintln!(
            "popular products: a sale was not counted in Redis: {}",
            problem.detail
        );
    }
}

/// Units sold per product over `[from, until)`, straight from Postgres.
pub fn sold_in_postgres(
    db: &Db,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<(i64, i64)>, Problem> {
    let rows = db.query(
        &SOLD_BETWEEN,
        &[edge::pg::utc_param(from), edge::pg::utc_param(until)],
    )?;
    rows.iter()
        .map(|row| Ok((column(&row, "product_id")?, column(&row, "units")?)))
        .collect()
}

/// Units sold per product over the UTC days `first..=last`, from Redis,
/// building missing day keys from Postgres first. `Err` when Redis fails
/// (the caller answers from Postgres).
pub fn sold_in_redis(
    db: &Db,
    redis: &Redis,
    first: NaiveDate,
    last: NaiveDate,
) -> Result<Vec<(i64, i64)>, Problem> {
    let days: Vec<NaiveDate> = first.iter_days().take_while(|d| *d <= last).collect();
    let keys: Vec<String> = days.iter().map(|d| day_key(*d)).collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    // At most two rounds: read; if days were missing, build them and read again.
    for _ in 0..2 {
        let reply = Script::new(WINDOW)
            .run(redis, &key_refs, &[])
            .map_err(edge::redis::unavailable)?;
        match reply.split_first() {
            Some((RedisResult::Int64(1), pairs)) => return Ok(totals(pairs)),
            Some((RedisResult::Int64(0), missing)) => {
                for index in missing {
                    let RedisResult::Int64(i) = index else { continue };
                    let day = days[(*i - 1) as usize];
                    rebuild_day(db, redis, day)?;
                }
            }
            _ => {
                return Err(Problem::unavailable(
                    "unexpected reply from the popular-products script",
                ))
            }
        }
    }
    Err(Problem::unavailable(
        "the popular-products keys could not be built",
    ))
}

/// Units sold and not refunded per product, of orders paid on UTC `day`.
fn sold_on(db: &Db, day: NaiveDate) -> Result<Vec<(i64, i64)>, Problem> {
    let start = day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
    sold_in_postgres(db, start, start + Duration::days(1))
}

/// Correct the counts of the days a window can show (today and the 7 before),
/// against Postgres (see `RECONCILE_DAY`): a difference is corrected once it
/// has stood for `settled_millis`. Returns how many product counts were corrected.
pub fn reconcile_days(db: &Db, redis: &Redis, today: NaiveDate, settled_millis: i64) -> Result<i64, Problem> {
    let mut corrected = 0;
    for back in 0..8 {
        let day = today - Duration::days(back);
        let mut args = vec![RedisParameter::Int64(settled_millis)];
        for (product_id, units) in sold_on(db, day)? {
            args.push(RedisParameter::Int64(product_id));
            args.push(RedisParameter::Int64(units));
        }
        let drift = format!("{{popular}}:drift:{}", day.format("%Y-%m-%d"));
        let reply = Script::new(RECONCILE_DAY)
            .run(redis, &[&day_key(day), &drift], &args)
            .map_err(edge::redis::unavailable)?;
        if let Some(RedisResult::Int64(n)) = reply.first() {
            corrected += n;
        }
    }
    Ok(corrected)
}

fn rebuild_day(db: &Db, redis: &Redis, day: NaiveDate) -> Result<(), Problem> {
    let sold = sold_on(db, day)?;
    let mut args = vec![
        RedisParameter::Int64(DAY_KEY_TTL_SECONDS),
        RedisParameter::Binary(SENTINEL.as_bytes().to_vec()),
    ];
    for (product_id, units) in sold {
        args.push(RedisParameter::Int64(product_id));
        args.push(RedisParameter::Int64(units));
    }
    Script::new(REBUILD_DAY)
        .run(redis, &[&day_key(day)], &args)
        .map(drop)
        .map_err(edge::redis::unavailable)
}

/// Member/score pairs into (product, units), without the sentinel.
fn totals(pairs: &[RedisResult]) -> Vec<(i64, i64)> {
    pairs
        .chunks_exact(2)
        .filter_map(|pair| {
            let product: i64 = text(&pair[0])?.parse().ok()?;
            let units = text(&pair[1])?.parse::<f64>().ok()? as i64;
            (product > 0 && units > 0).then_some((product, units))
        })
        .collect()
}
