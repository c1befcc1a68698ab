//! Idempotency keys (SPEC "Conventions"), shared by every route that has an
//! effect worth doing once: wallet charges and orders.
//!
//! The fast path is Redis. The first request with a key claims it with an
//! in-flight record that is a **lease** (60 s), processes, and replaces the
//! claim with its final response for 24 h. A second request with the key gets
//! the stored response replayed byte for byte (`Idempotent-Replayed: true`),
//! `409 REQUEST_IN_PROGRESS` while the first is in flight, or
//! `422 IDEMPOTENCY_KEY_REUSED` when its body differs. A `5xx` releases the
//! claim so the client may retry.
//!
//! Redis is only the fast path: the durable guarantee is a Postgres unique
//! constraint on (user, key) on the effect itself, which each route checks and
//! answers from (see `wallet`'s charge). So when Redis is down or has lost the
//! key, requests still go through, and a repeat finds the effect in Postgres.

use crate::auth::Caller;
use crate::redis::Redis;
use crate::redis::{text, Script};
use crate::request::Request;
use crate::Problem;
use commerce::idempotency::IdempotencyKey;
use commerce::ErrorCode;
use serde::Serialize;
use sha2::{Digest, Sha256};
use spin_sdk::http::Response;
use spin_sdk::redis::RedisParameter;

/// How long an in-flight claim blocks its key if its request never finishes.
pub const LEASE_MILLIS: i64 = 60_000;
/// How long a final response is kept for replay.
pub const RETENTION_SECONDS: i64 = 24 * 60 * 60;

/// One key, one effect: the first request takes the key; everyone else reads
/// what is there (an in-flight claim or a final response).
const CLAIM: &str = r"
local existing = redis.call('GET', KEYS[1])
if existing then return existing end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
";

/// Store the final response only while the claim is still ours: an expired
/// lease may have been taken by a retry since.
const COMPLETE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
";

/// Give the key back after a failure with no effect, only if the claim is ours.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// The header that marks a replayed answer.
pub const REPLAYED: &str = "idempotent-replayed";

/// The key header of `req`, validated (`400` when missing, malformed or
/// sent twice: which of two keys would count is not for the app to guess).
pub fn key_of(req: &Request) -> Result<IdempotencyKey, Problem> {
    let header = req
        .header("idempotency-key")
        .map_err(|_| Problem::invalid("Idempotency-Key", "must be sent once"))?;
    Ok(IdempotencyKey::parse(header)?)
}

/// A stable digest of what the request asks for (its validated content, so
/// whitespace or key order in the JSON do not make it "different").
pub fn fingerprint(route: &str, request: &impl Serialize) -> String {
    let canonical = serde_json::to_vec(request).expect("requests serialise");
    hex(&Sha256::new()
        .chain_update(route)
        .chain_update([0])
        .chain_update(canonical)
        .finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The outcome of claiming a key.
pub enum Claim {
    /// This request owns the key: do the work, then [`Owned::finish`].
    Owned(Owned),
    /// Answer this without doing anything (a replay, `409` or `422`).
    Answered(Response),
}

/// A claimed key.
pub struct Owned {
    pub key: IdempotencyKey,
    pub fingerprint: String,
    /// `None` when Redis was unavailable: the Postgres backstop still holds.
    redis: Option<(Redis, String, String)>,
}

/// A claim about to be made: the key's Redis name and its in-flight record.
/// [`claim`] makes it with its own script; a route may make it inside a
/// script of its own, in the same round trip as the reads it needs first
/// (the sold-out gate does), and then hand the outcome back here.
pub struct Pending {
    key: IdempotencyKey,
    fingerprint: String,
    redis_key: String,
    in_flight: String,
}

impl Pending {
    /// The claim of `key` for `caller` on `route` (a stable name, e.g.
    /// `wallet.charge`).
    pub fn new(caller: &Caller, route: &str, key: IdempotencyKey, fingerprint: String) -> Pending {
        Pending {
            redis_key: redis_key(caller, route, &key),
            in_flight: format!("v1 inflight {fingerprint} {}", crate::redis::random_token()),
            key,
            fingerprint,
        }
    }

    /// The same claim with its record in the Redis Cluster slot of
    /// `hash_tag` (e.g. `{soldout}`), so one script can touch it and that
    /// slot's keys together.
    pub fn in_slot_of(mut self, hash_tag: &str) -> Pending {
        self.redis_key = format!("{hash_tag}{}", self.redis_key);
        self
    }

    /// The name of the key's record (without the database's prefix, which
    /// [`crate::redis::Script::run`] adds).
    pub fn redis_key(&self) -> &str {
        &self.redis_key
    }

    /// The record that claims the key for [`LEASE_MILLIS`].
    pub fn in_flight(&self) -> &str {
        &self.in_flight
    }

    /// The record that keeps `response` as the key's final answer.
    pub fn final_record(&self, response: &Response) -> Vec<u8> {
        record(&self.fingerprint, response)
    }

    /// What to answer when the key already had `existing` as its record.
    pub fn answer_existing(&self, existing: &str) -> Result<Response, Problem> {
        answer_existing(existing, &self.fingerprint)
    }

    /// The claim, made on `redis`: this request owns the key.
    pub fn claimed(self, redis: Redis) -> Owned {
        let Pending {
            key,
            fingerprint,
            redis_key,
            in_flight,
        } = self;
        Owned {
            key,
            fingerprint,
            redis: Some((redis, redis_key, in_flight)),
        }
    }

    /// Redis could not take the claim: the request goes on, relying on the
    /// Postgres backstop.
    pub fn unclaimed(self, cause: &str) -> Owned {
        eprintln!("idempotency fast path unavailable, relying on the Postgres backstop: {cause}");
        Owned {
            key: self.key,
            fingerprint: self.fingerprint,
            redis: None,
        }
    }
}

/// Claim `key` for `caller` on `route` (a stable name, e.g. `wallet.charge`).
pub fn claim(
    caller: &Caller,
    route: &str,
    key: IdempotencyKey,
    fingerprint: String,
) -> Result<Claim, Problem> {
    let pending = Pending::new(caller, route, key, fingerprint);
    let claimed = crate::redis::connect().and_then(|redis| {
        let reply = Script::new(CLAIM)
            .run(
                &redis,
                &[pending.redis_key()],
                &[
                    RedisParameter::Binary(pending.in_flight().as_bytes().to_vec()),
                    RedisParameter::Int64(LEASE_MILLIS),
                ],
            )
            .map_err(crate::redis::unavailable)?;
        Ok((redis, reply.first().and_then(text)))
    });
    match claimed {
        Ok((redis, None)) => Ok(Claim::Owned(pending.claimed(redis))),
        Ok((_, Some(existing))) => Ok(Claim::Answered(pending.answer_existing(&existing)?)),
        Err(problem) => Ok(Claim::Owned(pending.unclaimed(&problem.detail))),
    }
}

/// The Redis key of (user, route, key); the client's key is hashed, so any
/// visible ASCII is a safe key name.
fn redis_key(caller: &Caller, route: &str, key: &IdempotencyKey) -> String {
    format!(
        "idem:{route}:{}:{}",
        caller.user_id,
        hex(&Sha256::digest(key.as_str().as_bytes()))
    )
}

/// A final answer as kept for replays: its header line, then its body.
fn record(fingerprint: &str, response: &Response) -> Vec<u8> {
    let content_type = response
        .header("content-type")
        .and_then(|v| v.as_str())
        .unwrap_or("application/json");
    let mut record = format!("v1 done {fingerprint} {} {content_type}\n", response.status()).into_bytes();
    record.extend_from_slice(response.body());
    record
}

/// What to answer when the key is already taken.
fn answer_existing(record: &str, fingerprint: &str) -> Result<Response, Problem> {
    let (header, body) = record.split_once('\n').unwrap_or((record, ""));
    let fields: Vec<&str> = header.split(' ').collect();
    match fields.as_slice() {
        ["v1", _, stored, ..] if *stored != fingerprint => Err(reused()),
        ["v1", "inflight", ..] => Err(in_progress()),
        ["v1", "done", _, status, content_type] => {
            let status: u16 = status
                .parse()
                .map_err(|_| Problem::unavailable("a stored response is corrupt"))?;
            Ok(replay(status, content_type, body.as_bytes().to_vec()))
        }
        _ => Err(Problem::unavailable("a stored idempotency record is corrupt")),
    }
}

/// `409 REQUEST_IN_PROGRESS`: another request with the key has not finished.
/// Never kept as the key's answer (see [`Owned::finish`]).
pub fn in_progress() -> Problem {
    Problem::new(
        ErrorCode::RequestInProgress,
        "a request with this Idempotency-Key is still being processed; retry later",
    )
    .with_header("retry-after", "1")
}

/// `422 IDEMPOTENCY_KEY_REUSED`.
pub fn reused() -> Problem {
    Problem::new(
        ErrorCode::IdempotencyKeyReused,
        "this Idempotency-Key was already used with a different request",
    )
}

/// A stored answer sent again, marked as a replay.
pub fn replay(status: u16, content_type: &str, body: Vec<u8>) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header(REPLAYED, "true")
        .body(body)
        .build()
}

impl Owned {
    /// The Redis connection the claim was made on, for the request's other
    /// Redis work (`None` when Redis was unavailable).
    pub fn redis(&self) -> Option<&Redis> {
        self.redis.as_ref().map(|(redis, _, _)| redis)
    }

    /// Keep the final answer for replays (`2xx`, `4xx`), or release the key
    /// after a `5xx` (no effect happened, the client may retry) or a `409
    /// REQUEST_IN_PROGRESS` found in Postgres (the answer is another
    /// request's, still to come). Returns the answer to send now.
    pub fn finish(self, outcome: Result<Response, Problem>) -> Response {
        let not_final = match &outcome {
            Ok(response) => *response.status() >= 500,
            Err(problem) => problem.code.status() >= 500 || problem.code == ErrorCode::RequestInProgress,
        };
        let response = outcome.unwrap_or_else(Problem::into_response);
        if not_final {
            self.release();
            return response;
        }
        let Some((redis, redis_key, in_flight)) = self.redis else {
            return response;
        };
        // A replay built from Postgres is already a final answer; storing it is harmless.
        let completed = Script::new(COMPLETE).run(
            &redis,
            &[&redis_key],
            &[
                RedisParameter::Binary(in_flight.into_bytes()),
                RedisParameter::Binary(record(&self.fingerprint, &response)),
                RedisParameter::Int64(RETENTION_SECONDS),
            ],
        );
        if let Err(e) = completed {
            // The effect (if any) is durable in Postgres; a lost record only
            // means a repeat is answered from there instead.
            eprintln!("could not record the idempotent outcome: {e:?}");
        }
        response
    }

    /// Give the key back with no answer kept: nothing happened, and what was
    /// found wrong (a request invalid once the prices were read) is, like
    /// every validation error, not an answer to replay.
    pub fn release(self) {
        let Some((redis, redis_key, in_flight)) = self.redis else {
            return;
        };
        let released = Script::new(RELEASE).run(
            &redis,
            &[&redis_key],
            &[RedisParameter::Binary(in_flight.into_bytes())],
        );
        if let Err(e) = released {
            // The claim is a lease: the key comes free when it runs out.
            eprintln!("could not release an idempotency claim: {e:?}");
        }
    }
}
