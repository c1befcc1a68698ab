//! The first-come-first-served decision, in Redis.
//!
//! Per coupon, `coupon:{id}:remaining` (units left), `coupon:{id}:issued`
//! (the users who have one), `coupon:{id}:window` (the issue window,
//! `<starts ms> <ends ms>`) and, briefly, `coupon:{id}:late` (holders
//! recorded while the other keys were missing). The `{id}` hash tag keeps the keys in one slot
//! so the scripts also run on Redis Cluster. Postgres stays the record of what
//! was issued, and guards the quantity too (see `PERSIST_ISSUE`); these keys are
//! the fast, atomic front door, rebuilt from Postgres when missing. Every
//! refusal (outside the window, already issued, sold out) is decided here
//! alone: only an issue that Redis grants reaches Postgres.

use chrono::{DateTime, Utc};
use edge::redis::Redis;
use edge::redis::{unavailable, Script};
use edge::Problem;
use spin_sdk::redis::{RedisParameter, RedisResult};

/// Invariant 3: never more than the quantity, never two per user, never
/// outside the window — decided in one atomic step, on Redis' clock. Replies
/// -1 when a key is missing (rebuild first), 0 issued, 1 already issued to
/// this user, 2 sold out, 3 window not open yet, 4 window closed.
const DECIDE: &str = r"
local window = redis.call('GET', KEYS[3])
if not window or redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local starts, ends = string.match(window, '^(%-?%d+) (%-?%d+)$')
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if now < tonumber(starts) then return 3 end
if now >= tonumber(ends) then return 4 end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return 1 end
if tonumber(redis.call('GET', KEYS[1])) <= 0 then return 2 end
redis.call('DECR', KEYS[1])
redis.call('SADD', KEYS[2], ARGV[1])
return 0
";

/// Undo one `DECIDE` whose issue could not be persisted: the user's slot is
/// given back, and the unit only if the slot was still there (so a rebuild
/// in between cannot be credited twice). Not run when Postgres says the
/// user holds a copy: then the slot and the unit `DECIDE` took are exactly
/// what Redis had lost of that copy.
const COMPENSATE: &str = r"
if redis.call('SREM', KEYS[2], ARGV[1]) == 1 and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('INCR', KEYS[1])
end
return 1
";

/// After Postgres recorded the issue: make sure Redis counts it. The keys may
/// have been rebuilt (after a Redis flush or restart) from a snapshot taken
/// before this issue committed, which lacks this holder and has one unit too
/// many; a holder already there means nothing changed. With the keys missing
/// (a rebuild may be reading its snapshot right now), the holder is left in
/// `late` for `REBUILD` to apply. ARGV: user, how long `late` may wait (ms).
const RECORDED: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then redis.call('DECR', KEYS[1]) end
else
  redis.call('SADD', KEYS[4], ARGV[1])
  redis.call('PEXPIRE', KEYS[4], ARGV[2])
end
return 1
";

/// How long a holder recorded while the keys were missing waits for a rebuild;
/// after that any rebuild's snapshot includes it anyway.
const LATE_TTL_MILLIS: i64 = 86_400_000;

/// Seed the keys from a Postgres snapshot. The window never changes, so it
/// is (re)written every time; the stock and holders only if they do not
/// exist (SET NX semantics: keys that exist are newer than any snapshot).
/// Holders recorded while the keys were missing (`late`, see `RECORDED`) are
/// added on top of the snapshot: those it already has change nothing.
/// ARGV: remaining, expiry (Unix ms), window start and end (Unix ms), then
/// the users who already have the coupon.
const REBUILD: &str = r"
redis.call('SET', KEYS[3], ARGV[3] .. ' ' .. ARGV[4], 'PXAT', ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2])
for i = 5, #ARGV, 1000 do
  redis.call('SADD', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
for _, user in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  if redis.call('SADD', KEYS[2], user) == 1 then redis.call('DECR', KEYS[1]) end
end
redis.call('DEL', KEYS[4])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIREAT', KEYS[2], ARGV[2]) end
return 1
";

/// What Postgres says the keys should hold.
pub struct Snapshot {
    pub remaining: i64,
    pub issue_starts_at: DateTime<Utc>,
    pub issue_ends_at: DateTime<Utc>,
    pub users: Vec<i64>,
}

/// What the script decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Missing,
    Issued,
    AlreadyIssued,
    SoldOut,
    NotOpenYet,
    Closed,
}

/// A coupon's keys, on one Redis connection.
pub struct Allocation {
    redis: Redis,
    remaining: String,
    issued: String,
    window: String,
    late: String,
}

impl Allocation {
    pub fn open(coupon_id: i64) -> Result<Allocation, Problem> {
        Ok(Allocation {
            redis: edge::redis::connect()?,
            remaining: format!("coupon:{{{coupon_id}}}:remaining"),
            issued: format!("coupon:{{{coupon_id}}}:issued"),
            window: format!("coupon:{{{coupon_id}}}:window"),
            late: format!("coupon:{{{coupon_id}}}:late"),
        })
    }

    fn keys(&self) -> [&str; 4] {
        [&self.remaining, &self.issued, &self.window, &self.late]
    }

    pub fn decide(&self, user_id: i64) -> Result<Decision, Problem> {
        let reply = Script::new(DECIDE)
            .run(&self.redis, &self.keys(), &[RedisParameter::Int64(user_id)])
            .map_err(unavailable)?;
        match reply.as_slice() {
            [RedisResult::Int64(-1)] => Ok(Decision::Missing),
            [RedisResult::Int64(0)] => Ok(Decision::Issued),
            [RedisResult::Int64(1)] => Ok(Decision::AlreadyIssued),
            [RedisResult::Int64(2)] => Ok(Decision::SoldOut),
            [RedisResult::Int64(3)] => Ok(Decision::NotOpenYet),
            [RedisResult::Int64(4)] => Ok(Decision::Closed),
            other => Err(Problem::unavailable(format!(
                "unexpected reply from the coupon script: {other:?}"
            ))),
        }
    }

    /// Count an issue Postgres has recorded (see `RECORDED`).
    pub fn recorded(&self, user_id: i64) -> Result<(), Problem> {
        Script::new(RECORDED)
            .run(
                &self.redis,
                &self.keys(),
                &[
                    RedisParameter::Int64(user_id),
                    RedisParameter::Int64(LATE_TTL_MILLIS),
                ],
            )
            .map(drop)
            .map_err(unavailable)
    }

    /// Give back what `decide` took for `user_id`: the unit and the slot.
    pub fn compensate(&self, user_id: i64) -> Result<(), Problem> {
        Script::new(COMPENSATE)
            .run(&self.redis, &self.keys(), &[RedisParameter::Int64(user_id)])
            .map(drop)
            .map_err(unavailable)
    }

    /// See [`Redis::verify_database`]: before building keys from a snapshot.
    pub fn verify_database(&self, in_postgres: &str) -> Result<(), Problem> {
        self.redis.verify_database(in_postgres)
    }

    /// Seed the keys unless they exist; `expires_at_ms` is when they may go.
    pub fn rebuild(&self, snapshot: &Snapshot, expires_at_ms: i64) -> Result<(), Problem> {
        let mut args = vec![
            RedisParameter::Int64(snapshot.remaining),
            RedisParameter::Int64(expires_at_ms),
            RedisParameter::Int64(snapshot.issue_starts_at.timestamp_millis()),
            RedisParameter::Int64(snapshot.issue_ends_at.timestamp_millis()),
        ];
        let users = &snapshot.users;
        args.extend(users.iter().map(|u| RedisParameter::Int64(*u)));
        Script::new(REBUILD)
            .run(&self.redis, &self.keys(), &args)
            .map(drop)
            .map_err(unavailable)
    }
}
