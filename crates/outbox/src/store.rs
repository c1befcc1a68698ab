//! The outbox in Postgres: taking due events for an attempt, recording how
//! it went, and what the admin routes and the on-call view read.

use crate::schedule;
use edge::pg::{column, Db, Query};
use edge::Problem;
use spin_sdk::pg4::ParameterValue;

/// How long an attempt may hold its event before another runner may take it
/// (the delivery timeout, and room to record the outcome).
pub const LEASE_SECONDS: i64 = 30;

/// SPEC §9, "no event in flight from two places" and "events of one order in
/// the order they were made": take up to $1 due events — `PENDING`, due, not
/// leased, with no earlier `PENDING` event of the same order — of order $2 (or
/// of any order when NULL), leasing each to token $4 for $3 seconds and
/// counting the attempt. `SKIP LOCKED` lets runners on other instances take
/// other events meanwhile; a row another runner leased after this
/// statement's snapshot is re-checked once locked and left out.
const CLAIM: Query = Query::with(
    "due AS (
        SELECT e.id FROM order_events e
        WHERE e.status = 'PENDING' AND e.next_attempt_at <= now()
          AND (e.lease_until IS NULL OR e.lease_until <= now())
          AND ($2::int8 IS NULL OR e.order_id = $2)
          AND NOT EXISTS (
              SELECT 1 FROM order_events earlier
              WHERE earlier.order_id = e.order_id AND earlier.seq < e.seq AND earlier.status = 'PENDING')
        ORDER BY e.next_attempt_at, e.seq
        LIMIT $1
        FOR UPDATE SKIP LOCKED
    )",
    "UPDATE order_events e
    SET lease_token = $4::uuid, lease_until = now() + make_interval(secs => $3::int8),
        attempts = e.attempts + 1, last_attempt_at = now()
    FROM due WHERE e.id = due.id
    RETURNING e.id::text AS id, e.type, e.order_id, e.body, e.attempts",
);

/// Record an attempt of the event leased to token $2: `DELIVERED`, or back
/// to `PENDING` due in $5 seconds, or `FAILED` when no attempts are left
/// ($5 NULL). Only while the lease is still this attempt's.
const RECORD: &str = "UPDATE order_events SET
        status = CASE WHEN $3 THEN 'DELIVERED' WHEN $5::int8 IS NULL THEN 'FAILED' ELSE 'PENDING' END,
        delivered_at = CASE WHEN $3 THEN now() END,
        next_attempt_at = CASE WHEN $3 OR $5::int8 IS NULL THEN next_attempt_at
                               ELSE now() + make_interval(secs => $5::int8) END,
        last_response_status = $4, last_error = $6, lease_token = NULL, lease_until = NULL
    WHERE id = $1::uuid AND lease_token = $2::uuid";

/// An event taken for an attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    pub event_type: String,
    pub order_id: i64,
    pub body: String,
    /// This attempt's number (1 for the first).
    pub attempt: i32,
}

/// Which events a run takes.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    /// The events of one order (right after the request that made them).
    Order(i64),
    /// Any due event.
    Due,
}

/// Take up to `limit` due events of `scope`, leased to `token`.
pub fn claim(db: &Db, scope: Scope, limit: i64, token: &str) -> Result<Vec<Claimed>, Problem> {
    let order = match scope {
        Scope::Order(id) => ParameterValue::Int64(id),
        Scope::Due => ParameterValue::DbNull,
    };
    let params = [
        ParameterValue::Int64(limit),
        order,
        ParameterValue::Int64(LEASE_SECONDS),
        ParameterValue::Str(token.to_owned()),
    ];
    let rows = db.query(&CLAIM, &params)?;
    rows.iter()
        .map(|row| {
            Ok(Claimed {
                id: column(&row, "id")?,
                event_type: column(&row, "type")?,
                order_id: column(&row, "order_id")?,
                body: column(&row, "body")?,
                attempt: column(&row, "attempts")?,
            })
        })
        .collect()
}

/// Record how an attempt went (`status` of the answer, or `error`).
pub fn record(
    db: &Db,
    event: &Claimed,
    token: &str,
    delivered: bool,
    status: Option<u16>,
    error: Option<&str>,
) -> Result<(), Problem> {
    let retry_after = if delivered {
        None
    } else {
        schedule::retry_after_seconds(event.attempt)
    };
    db.execute(
        RECORD,
        &[
            ParameterValue::Str(event.id.clone()),
            ParameterValue::Str(token.to_owned()),
            ParameterValue::Boolean(delivered),
            status.map_or(ParameterValue::DbNull, |s| ParameterValue::Int32(i32::from(s))),
            retry_after.map_or(ParameterValue::DbNull, ParameterValue::Int64),
            error.map_or(ParameterValue::DbNull, |e| ParameterValue::Str(e.to_owned())),
        ],
    )?;
    Ok(())
}
