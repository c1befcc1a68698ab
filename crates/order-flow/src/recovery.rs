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
//!
//! Then the run repairs what a dead process left in Redis (issue 29): coupon
//! units taken by an issue that never reached Postgres, holders Redis lost,
//! popular-products counts a sale never made or made twice — each only once
//! it has stood longer than the work it stands for can take (the pending
//! timeout), so work still in flight is never undone.

use crate::{confirm, popular, undo, Undo};
use commerce::ErrorCode;
use edge::pg::{column, Db, Query};
use edge::redis::Redis;
use edge::redis::{text, Script};
use edge::Problem;
use serde::Serialize;
use spin_sdk::pg4::ParameterValue;
use spin_sdk::redis::RedisParameter;
use std::time::{Duration, Instant};

/// The lock every runner takes.
const LOCK_KEY: &str = "lock:order-recovery";
/// Shorter than the one-minute schedule, so a crashed runner never blocks the next.
const LOCK_TTL_MILLIS: i64 = 50_000;
/// Orders resolved per run; the rest wait for the next run.
const BATCH: i64 = 500;
/// No order is taken up, and no repair started, after this much of a run:
/// a run ends well within the 30 s a platform gives a request (SPEC
/// "Scheduled jobs over HTTP": 25 s) and the lock's life; the rest waits.
const TIME_BUDGET: Duration = Duration::from_secs(20);

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

/// What one run did (`examined` = the sum of the other three), and what it
/// repaired in Redis.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub examined: u64,
    pub rolled_forward: u64,
    pub rolled_back: u64,
    pub skipped: u64,
    pub repaired: Repaired,
}

/// What a run repaired in Redis.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Repaired {
    /// Coupon units given back from issues that died before Postgres recorded them.
    pub coupon_units_released: i64,
    /// Coupon holders Postgres recorded that Redis had lost, counted again.
    pub coupon_holders_recounted: i64,
    /// Popular-products counts (product and day) brought in line with Postgres.
    pub popular_counts_corrected: i64,
}

/// Coupons whose keys may still exist (they outlive the window by a day),
/// with the quantity and what Postgres counted.
const LIVE_COUPONS: Query = Query::new(
    "SELECT id, total_quantity, issued_count FROM coupons
    WHERE issue_ends_at > now() - interval '2 days' ORDER BY id",
);

/// Who holds coupon $1, as Postgres recorded it (always one row).
const HOLDERS: Query =
    Query::new("SELECT coalesce(array_agg(user_id), '{}') AS users FROM user_coupons WHERE coupon_id = $1");

/// Why a run did not happen or did not finish.
#[derive(Debug)]
pub enum RunError {
    /// Another runner holds the lock.
    Locked,
    /// A store failed; whatever was resolved stays resolved.
    Failed(Problem),
}

impl From<RunError> for Problem {
    /// The answer of a route that runs the batch.
    fn from(error: RunError) -> Problem {
        match error {
            RunError::Locked => Problem::new(
                ErrorCode::RecoveryInProgress,
                "another recovery run holds the lock; try again shortly",
            ),
            RunError::Failed(problem) => problem,
        }
    }
}

/// How old a `PENDING` order must be before recovery resolves it: the
/// variable `pending_timeout_seconds`.
pub fn pending_timeout() -> Result<i64, Problem> {
    edge::config::variable("pending_timeout_seconds")?
        .parse()
        .map_err(|_| Problem::unavailable("the variable pending_timeout_seconds is not a number"))
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
    let outcome = resolve_all(pending_timeout_seconds, held.as_ref().map(|(redis, _)| redis));
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

/// Repair Redis from Postgres (see the module doc), on the lock's connection.
fn repair(db: &Db, redis: &Redis, settled_millis: i64) -> Result<Repaired, Problem> {
    let mut repaired = Repaired::default();
    let rows = db.query(&LIVE_COUPONS, &[])?;
    let coupons = rows
        .iter()
        .map(|row| {
            Ok((
                column::<i64>(&row, "id")?,
                column::<i64>(&row, "total_quantity")?,
                column::<i64>(&row, "issued_count")?,
            ))
        })
        .collect::<Result<Vec<_>, Problem>>()?;
    for (coupon_id, quantity, issued) in coupons {
        let allocation = coupon_allocation::Allocation::on(redis, coupon_id);
        if allocation.agrees(quantity, issued)? {
            continue;
        }
        let holders: Vec<i64> = db
            .query(&HOLDERS, &[ParameterValue::Int64(coupon_id)])?
            .first(|row| column::<Vec<Option<i64>>>(row, "users"))?
            .unwrap_or_default()
            .into_iter()
            .flatten()
            .collect();
        let fixed = allocation.reconcile(&holders, settled_millis)?;
        repaired.coupon_units_released += fixed.released;
        repaired.coupon_holders_recounted += fixed.recounted;
    }
    let today = chrono::Utc::now().date_naive();
    repaired.popular_counts_corrected = popular::reconcile_days(db, redis, today, settled_millis)?;
    Ok(repaired)
}

fn resolve_all(pending_timeout_seconds: i64, redis: Option<&Redis>) -> Result<Summary, Problem> {
    let started = Instant::now();
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
        if started.elapsed() >= TIME_BUDGET {
            break;
        }
        summary.examined += 1;
        if debited {
            match confirm(&db, order_id, None)? {
                Some(confirmed) => {
                    popular::count_sale(confirmed.paid_at, &confirmed.lines, None);
                    summary.rolled_forward += 1;
                }
                None => summary.skipped += 1,
            }
        } else if let Some(released) = undo(&db, order_id, Undo::Cancel)? {
            sold_out_gate::reopen_logged(redis, &released);
            summary.rolled_back += 1;
        } else {
            // Resolved meanwhile, or debited since we looked: the next run sees it.
            summary.skipped += 1;
        }
    }
    // Without the lock's connection (Redis down) there is nothing to repair.
    if let (Some(redis), true) = (redis, started.elapsed() < TIME_BUDGET) {
        match repair(&db, redis, pending_timeout_seconds * 1000) {
            Ok(repaired) => summary.repaired = repaired,
            Err(problem) => eprintln!("recovery: Redis was not repaired this run: {}", problem.detail),
        }
    }
    record(&db, &summary);
    Ok(summary)
}
