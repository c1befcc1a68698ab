//! The first-come-first-served decision of a coupon (SPEC §3), in Redis.
//!
//! Per coupon, `coupon:{id}:remaining` (units left), `coupon:{id}:issued`
//! (the users who have one), `coupon:{id}:window` (the issue window,
//! `<starts ms> <ends ms>`), `coupon:{id}:decided` (the users `DECIDE`
//! granted a unit Postgres has not recorded yet, with when) and, briefly,
//! `coupon:{id}:late` (holders recorded while the other keys were missing).
//! The `{id}` hash tag keeps the keys in one slot
//! so the scripts also run on Redis Cluster. Postgres stays the record of what
//! was issued, and guards the quantity too (see `PERSIST_ISSUE`); these keys are
//! the fast, atomic front door, rebuilt from Postgres when missing. Every
//! refusal (outside the window, already issued, sold out) is decided here
//! alone: only an issue that Redis grants reaches Postgres.
//!
//! A process that dies between `DECIDE` and Postgres leaves a unit taken and a
//! user recorded in Redis that Postgres never hears of: `RECONCILE` (run by
//! recovery) gives such units back once they are older than an issue can take,
//! and counts holders Postgres has that Redis lost.

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
redis.call('HSET', KEYS[5], ARGV[1], now)
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[5], ttl) end
return 0
";

/// Undo one `DECIDE` whose issue could not be persisted: the user's slot is
/// given back, and the unit only if the slot was still there (so a rebuild
/// in between cannot be credited twice). Not run when Postgres says the
/// user holds a copy: then the slot and the unit `DECIDE` took are exactly
/// what Redis had lost of that copy.
const COMPENSATE: &str = r"
redis.call('HDEL', KEYS[5], ARGV[1])
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
redis.call('HDEL', KEYS[5], ARGV[1])
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
redis.call('DEL', KEYS[2], KEYS[5])
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

/// Invariant 3 after a process died mid-issue (run by recovery, with a
/// snapshot of Postgres taken just before). Replies {released, recounted}:
///
/// - a user Redis holds and the snapshot does not, granted by `DECIDE` more
///   than ARGV[1] ms ago (on Redis' clock), is released — the slot and the
///   unit — as an issue that can no longer be recorded (if its process was
///   only slow, its `RECORDED` puts the holder back; Postgres' own count
///   never lets the quantity be passed either way);
/// - a user Redis holds that neither `DECIDE` nor the snapshot accounts for
///   is dated now, and released by a later run if still unaccounted for (the
///   snapshot may predate the holder's commit);
/// - a holder in the snapshot that Redis lost is counted (slot and unit).
///
/// Users granted more recently are left alone: their issue is in flight.
/// Nothing happens while the keys are missing (they are rebuilt from
/// Postgres when next needed). ARGV: the age in ms, then the snapshot's users.
const RECONCILE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0} end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local stale_before = now - tonumber(ARGV[1])
local holders = {}
for i = 2, #ARGV do holders[ARGV[i]] = true end
local released, recounted = 0, 0
for _, user in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if not holders[user] then
    local decided = redis.call('HGET', KEYS[5], user)
    if not decided then
      redis.call('HSET', KEYS[5], user, now)
    elseif tonumber(decided) < stale_before then
      redis.call('SREM', KEYS[2], user)
      redis.call('HDEL', KEYS[5], user)
      redis.call('INCR', KEYS[1])
      released = released + 1
    end
  end
end
for user in pairs(holders) do
  if redis.call('SADD', KEYS[2], user) == 1 then
    redis.call('DECR', KEYS[1])
    recounted = recounted + 1
  end
  redis.call('HDEL', KEYS[5], user)
end
for _, user in ipairs(redis.call('HKEYS', KEYS[5])) do
  if redis.call('SISMEMBER', KEYS[2], user) == 0 then redis.call('HDEL', KEYS[5], user) end
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 and redis.call('EXISTS', KEYS[5]) == 1 then redis.call('PEXPIRE', KEYS[5], ttl) end
return {released, recounted}
";

/// Whether a coupon's keys agree with Postgres' count: `1` when the keys
/// are missing, or `remaining + issued = quantity`, the issued set holds
/// exactly the recorded count and no issue is waiting in `decided`; else `0`
/// (then `RECONCILE` looks closer). ARGV: quantity, recorded issues.
const AGREES: &str = r"
local remaining = redis.call('GET', KEYS[1])
if not remaining then return 1 end
local issued = redis.call('SCARD', KEYS[2])
if tonumber(remaining) + issued == tonumber(ARGV[1]) and issued == tonumber(ARGV[2])
   and redis.call('EXISTS', KEYS[5]) == 0 then
  return 1
end
return 0
";

/// What one reconciliation of a coupon changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Repaired {
    /// Units given back from issues that died before Postgres recorded them.
    pub released: i64,
    /// Holders Postgres recorded that Redis had lost, counted again.
    pub recounted: i64,
}

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
pub struct Allocation<'r> {
    redis: RedisHandle<'r>,
    remaining: String,
    issued: String,
    window: String,
    late: String,
    decided: String,
}

/// The connection an [`Allocation`] runs on: its own, or a caller's.
enum RedisHandle<'r> {
    Own(Redis),
    Shared(&'r Redis),
}

impl std::ops::Deref for RedisHandle<'_> {
    type Target = Redis;
    fn deref(&self) -> &Redis {
        match self {
            RedisHandle::Own(redis) => redis,
            RedisHandle::Shared(redis) => redis,
        }
    }
}

/// The unit left of coupon `coupon_id` (the key `GET`, `None` when missing).
pub fn remaining_key(coupon_id: i64) -> String {
    format!("coupon:{{{coupon_id}}}:remaining")
}

impl Allocation<'static> {
    /// A coupon's keys on a new connection.
    pub fn open(coupon_id: i64) -> Result<Allocation<'static>, Problem> {
        Ok(Allocation::with(
            RedisHandle::Own(edge::redis::connect()?),
            coupon_id,
        ))
    }
}

impl<'r> Allocation<'r> {
    /// A coupon's keys on `redis` (recovery walks many coupons on one connection).
    pub fn on(redis: &'r Redis, coupon_id: i64) -> Allocation<'r> {
        Allocation::with(RedisHandle::Shared(redis), coupon_id)
    }

    fn with(redis: RedisHandle<'r>, coupon_id: i64) -> Allocation<'r> {
        Allocation {
            redis,
            remaining: remaining_key(coupon_id),
            issued: format!("coupon:{{{coupon_id}}}:issued"),
            window: format!("coupon:{{{coupon_id}}}:window"),
            late: format!("coupon:{{{coupon_id}}}:late"),
            decided: format!("coupon:{{{coupon_id}}}:decided"),
        }
    }

    fn keys(&self) -> [&str; 5] {
        [
            &self.remaining,
            &self.issued,
            &self.window,
            &self.late,
            &self.decided,
        ]
    }

    /// Whether the keys agree with Postgres' count (see `AGREES`).
    pub fn agrees(&self, total_quantity: i64, recorded: i64) -> Result<bool, Problem> {
        let reply = Script::new(AGREES)
            .run(
                &self.redis,
                &self.keys(),
                &[
                    RedisParameter::Int64(total_quantity),
                    RedisParameter::Int64(recorded),
                ],
            )
            .map_err(unavailable)?;
        Ok(matches!(reply.as_slice(), [RedisResult::Int64(1)]))
    }

    /// Bring the keys in line with `holders`, the users Postgres recorded
    /// (a snapshot read just before), releasing issues granted more than
    /// `stale_after_millis` ago that it never recorded (see `RECONCILE`).
    pub fn reconcile(&self, holders: &[i64], stale_after_millis: i64) -> Result<Repaired, Problem> {
        let mut args = vec![RedisParameter::Int64(stale_after_millis)];
        args.extend(holders.iter().map(|u| RedisParameter::Int64(*u)));
        let reply = Script::new(RECONCILE)
            .run(&self.redis, &self.keys(), &args)
            .map_err(unavailable)?;
        match reply.as_slice() {
            [RedisResult::Int64(released), RedisResult::Int64(recounted)] => Ok(Repaired {
                released: *released,
                recounted: *recounted,
            }),
            other => Err(Problem::unavailable(format!(
                "unexpected reply from the coupon reconciliation: {other:?}"
            ))),
        }
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
