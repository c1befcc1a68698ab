//! Counting paid units for popular products (SPEC §7): one sorted set per UTC
//! day. A failure here never fails a paid order: the popular-products answer
//! falls back to Postgres when the day keys are missing.

use chrono::{DateTime, Utc};
use edge::redis::Script;
use spin_sdk::redis::RedisParameter;

/// Day keys live a little over the longest window (7 days).
pub const DAY_KEY_TTL_SECONDS: i64 = 8 * 24 * 60 * 60;

/// The sorted set of units sold on the UTC day of `at`. All day keys share
/// the `{popular}` hash tag so a window can be unioned on Redis Cluster too.
pub fn day_key(at: DateTime<Utc>) -> String {
    format!("{{popular}}:{}", at.format("%Y-%m-%d"))
}

/// Add an order's units to its day in one round trip. ARGV: TTL, then
/// (product, quantity) pairs.
const COUNT_SALE: &str = r"
for i = 2, #ARGV, 2 do
  redis.call('ZINCRBY', KEYS[1], ARGV[i + 1], ARGV[i])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
";

/// Count a paid order's lines (product id, quantity) on the day it was paid.
pub fn count_sale(paid_at: DateTime<Utc>, lines: &[(i64, i64)]) {
    let mut args = vec![RedisParameter::Int64(DAY_KEY_TTL_SECONDS)];
    for (product_id, quantity) in lines {
        args.push(RedisParameter::Int64(*product_id));
        args.push(RedisParameter::Int64(*quantity));
    }
    let counted = edge::redis::connect().and_then(|redis| {
        Script::new(COUNT_SALE)
            .run(&redis, &[&day_key(paid_at)], &args)
            .map_err(edge::redis::unavailable)
    });
    if let Err(problem) = counted {
        eprintln!(
            "popular products: a sale was not counted in Redis: {}",
            problem.detail
        );
    }
}
