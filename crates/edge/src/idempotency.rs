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
const LEASE_MILLIS: i64 = 60_000;
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

/// Keep a final answer decided without claiming the key (nothing was done:
/// the sold-out gate's refusal), unless the key already has a record, which
/// is returned to be answered instead.
const ANSWER_ONCE: &str = r"
local existing = redis.call('GET', KEYS[1])
if existing then return existing end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
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

/// Claim `key` for `caller` on `route` (a stable name, e.g. `wallet.charge`).
pub fn claim(
    caller: &Caller,
    route: &str,
    key: IdempotencyKey,
    fingerprint: String,
) -> Result<Claim, Problem> {
    claim_on(crate::redis::connect(), caller, route, key, fingerprint)
}

/// [`claim`] on a Redis connection the request already opened (or the
/// failure to open one).
pub fn claim_on(
    redis: Result<Redis, Problem>,
    caller: &Caller,
    route: &str,
    key: IdempotencyKey,
    fingerprint: String,
) -> Result<Claim, Problem> {
    let redis_key = redis_key(caller, route, &key);
    let in_flight = format!("v1 inflight {fingerprint} {}", crate::redis::random_token());
    let claimed = redis.and_then(|redis| {
        let reply = Script::new(CLAIM)
            .run(
                &redis,
                &[&redis_key],
                &[
                    RedisParameter::Binary(in_flight.clone().into_bytes()),
                    RedisParameter::Int64(LEASE_MILLIS),
                ],
            )
            .map_err(crate::redis::unavailable)?;
        Ok((redis, reply.first().and_then(text)))
    });
    match claimed {
        Ok((redis, None)) => Ok(Claim::Owned(Owned {
            key,
            fingerprint,
            redis: Some((redis, redis_key, in_flight)),
        })),
        Ok((_, Some(existing))) => Ok(Claim::Answered(answer_existing(&existing, &fingerprint)?)),
        Err(problem) => {
            eprintln!(
                "idempotency fast path unavailable, relying on the Postgres backstop: {}",
                problem.detail
            );
            Ok(Claim::Owned(Owned {
                key,
                fingerprint,
                redis: None,
            }))
        }
    }
}

/// Answer `refusal`, a business answer decided without claiming the key and
/// without any effect, and keep it as the key's answer — unless the key
/// already has one (a replay, `409 REQUEST_IN_PROGRESS` or `422`), which is
/// answered instead. If Redis fails the refusal is answered unkept: with no
/// effect behind it, a retry is simply decided again.
pub fn answer_once(
    redis: &Redis,
    caller: &Caller,
    route: &str,
    key: &IdempotencyKey,
    fingerprint: &str,
    refusal: Problem,
) -> Result<Response, Problem> {
    let response = refusal.into_response();
    let kept = Script::new(ANSWER_ONCE).run(
        redis,
        &[&redis_key(caller, route, key)],
        &[
            RedisParameter::Binary(record(fingerprint, &response)),
            RedisParameter::Int64(RETENTION_SECONDS),
        ],
    );
    match kept {
        Ok(reply) => match reply.first().and_then(text) {
            Some(existing) => answer_existing(&existing, fingerprint),
            None => Ok(response),
        },
        Err(e) => {
            eprintln!("could not keep a refusal for its key (a retry decides again): {e:?}");
            Ok(response)
        }
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
        let Some((redis, redis_key, in_flight)) = self.redis else {
            return response;
        };
        // A replay built from Postgres is already a final answer; storing it is harmless.
        let result = if not_final {
            Script::new(RELEASE).run(
                &redis,
                &[&redis_key],
                &[RedisParameter::Binary(in_flight.into_bytes())],
            )
        } else {
            Script::new(COMPLETE).run(
                &redis,
                &[&redis_key],
                &[
                    RedisParameter::Binary(in_flight.into_bytes()),
                    RedisParameter::Binary(record(&self.fingerprint, &response)),
                    RedisParameter::Int64(RETENTION_SECONDS),
                ],
            )
        };
        if let Err(e) = result {
            // The effect (if any) is durable in Postgres; a lost record only
            // means a repeat is answered from there instead.
            eprintln!("could not record the idempotent outcome: {e:?}");
        }
        response
    }
}
