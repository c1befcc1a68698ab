//! Recovery of interrupted orders (SPEC §5), run by the cron component every
//! minute and by the admin route on demand.
//!
//! Every `ON_HOLD` order, and every `PENDING` order older than the pending
//! timeout, is resolved from its stored state alone: debited → roll forward
//! (`CONFIRM`: stock sold, `PAID`); not debited → roll back (`UNDO`: stock and
//! coupon given back, `CANCELLED`). A Redis lock keeps one runner at a time
//! across instances, but it is only an optimisation: each transition is a
//! conditional update on the order's status, so a second runner (expired
//! lock, clock skew, a manual run) can never apply a step twice.

use crate::{confirm, popular, undo, Undo};
use edge::pg::{column, Db, Query};
use edge::redis::Redis;
use edge::redis::{text, Script};
use edge::Problem;
use serde::Serialize;
use spin_sdk::pg4::ParameterValue;
use spin_sdk::redis::RedisParameter;

/// The lock every runner takes.
const LOCK_KEY: &str = "lock:order-recovery";
/// Shorter than the one-minute schedule, so a crashed runner never blocks the next.
const LOCK_TTL_MILLIS: i64 = 50_000;
/// Orders resolved per run; the rest wait for the next run.
const BATCH: i64 = 500;

/// What recovery looks for: held orders, and pending ones that stopped moving.
const UNFINISHED: Query = Query::new(
    "SELECT id, balance_deducted FROM orders
    WHERE status = 'ON_HOLD' OR (status = 'PENDING' AND created_at < now() - make_interval(secs => $1::int8))
    ORDER BY id LIMIT $2",
);

/// Every run leaves its summary, for the on-call view (`GET /api/v1/admin/ops`).
const RECORD_RUN: &str = "INSERT INTO recovery_runs (examined, rolled_forward, rolled_back, skipped)
    VALUES ($1, $2, $3, $4)";

/// Release the lock only if it is still ours (it may have expired and been
/// taken by another runner).
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// What one run did (`examined` = the sum of the other three).
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub examined: u64,
    pub rolled_forward: u64,
    pub rolled_back: u64,
    pub skipped: u64,
}

/// Why a run did not happen or did not finish.
#[derive(Debug)]
pub enum RunError {
    /// Another runner holds the lock.
    Locked,
    /// A store failed; whatever was resolved stays resolved.
    Failed(Problem),
}

/// Whether to take the lock (always, except in a test proving the
/// conditional updates alone are enough).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    Take,
    Bypass,
}

/// One recovery run. `pending_timeout_seconds` is how old a `PENDING` order
/// must be before it counts as interrupted.
pub fn run(lock: Lock, pending_timeout_seconds: i64) -> Result<Summary, RunError> {
    let held = match lock {
        Lock::Take => take_lock()?,
        Lock::Bypass => None,
    };
    let outcome = resolve_all(pending_timeout_seconds);
    if let Some((redis, token)) = held {
        let released =
            Script::new(RELEASE).run(&redis, &[LOCK_KEY], &[RedisParameter::Binary(token.into_bytes())]);
        if let Err(e) = released {
            eprintln!("recovery: could not release the lock (it expires by itself): {e:?}");
        }
    }
    outcome.map_err(RunError::Failed)
}

/// `SET lock NX PX`; `None` when Redis is unavailable (recovery still runs:
/// the conditional updates are the guarantee).
fn take_lock() -> Result<Option<(Redis, String)>, RunError> {
    let redis = match edge::redis::connect() {
        Ok(redis) => redis,
        Err(problem) => {
            eprintln!(
                "recovery: running without the lock, Redis is unavailable: {}",
                problem.detail
            );
            return Ok(None);
        }
    };
    let token = edge::redis::random_token();
    let reply = redis.execute(
        "SET",
        &[
            RedisParameter::Binary(redis.key(LOCK_KEY).into_bytes()),
            RedisParameter::Binary(token.clone().into_bytes()),
            RedisParameter::Binary(b"NX".to_vec()),
            RedisParameter::Binary(b"PX".to_vec()),
            RedisParameter::Int64(LOCK_TTL_MILLIS),
        ],
    );
    match reply {
        Ok(reply) if reply.first().and_then(text).as_deref() == Some("OK") => Ok(Some((redis, token))),
        Ok(_) => Err(RunError::Locked),
        Err(e) => {
            eprintln!("recovery: running without the lock, Redis failed: {e:?}");
            Ok(None)
        }
    }
}

/// Record the run and log its summary (a business event).
fn record(db: &Db, summary: &Summary) {
    let count = |n: u64| ParameterValue::Int64(n as i64);
    let recorded = db.execute(
        RECORD_RUN,
        &[
            count(summary.examined),
            count(summary.rolled_forward),
            count(summary.rolled_back),
            count(summary.skipped),
        ],
    );
    if let Err(e) = recorded {
        eprintln!("recovery: the run was not recorded: {e:?}");
    }
    edge::observe::event(
        "recovery.run",
        serde_json::to_value(summary).expect("summaries serialise"),
    );
}

fn resolve_all(pending_timeout_seconds: i64) -> Result<Summary, Problem> {
    let db = Db::connect()?;
    let rows = db.query(
        &UNFINISHED,
        &[
            ParameterValue::Int64(pending_timeout_seconds),
            ParameterValue::Int64(BATCH),
        ],
    )?;
    let orders = rows
        .iter()
        .map(|row| {
            Ok((
                column::<i64>(&row, "id")?,
                column::<bool>(&row, "balance_deducted")?,
            ))
        })
        .collect::<Result<Vec<_>, Problem>>()?;
    let mut summary = Summary::default();
    for (order_id, debited) in orders {
        summary.examined += 1;
        if debited {
            match confirm(&db, order_id, None)? {
                Some(confirmed) => {
                    popular::count_sale(confirmed.paid_at, &confirmed.lines, None);
                    summary.rolled_forward += 1;
                }
                None => summary.skipped += 1,
            }
        } else if undo(&db, order_id, Undo::Cancel)? {
            summary.rolled_back += 1;
        } else {
            // Resolved meanwhile, or debited since we looked: the next run sees it.
            summary.skipped += 1;
        }
    }
    record(&db, &summary);
    Ok(summary)
}
