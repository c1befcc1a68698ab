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
/// ($5 NULL). Only while the lease is still this attempt's. Committed
/// without waiting for the WAL flush (`set_config(…, true)` in the statement
/// itself: one plain statement, no rows to read): a record lost to a crash
/// leaves the event leased, and it is sent again once the lease ends — at
/// least once, as a receiver expects (it deduplicates by `webhook-id`).
const RECORD: &str = "UPDATE order_events SET
        status = CASE WHEN $3 THEN 'DELIVERED' WHEN $5::int8 IS NULL THEN 'FAILED' ELSE 'PENDING' END,
        delivered_at = CASE WHEN $3 THEN now() END,
        next_attempt_at = CASE WHEN $3 OR $5::int8 IS NULL THEN next_attempt_at
                               ELSE now() + make_interval(secs => $5::int8) END,
        last_response_status = $4, last_error = $6, lease_token = NULL, lease_until = NULL
    WHERE id = $1::uuid AND lease_token = $2::uuid
      AND set_config('synchronous_commit', 'off', true) IS NOT NULL";

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
        ParameterValue::Uuid(token.to_owned()),
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
            ParameterValue::Uuid(event.id.clone()),
            ParameterValue::Uuid(token.to_owned()),
            ParameterValue::Boolean(delivered),
            status.map_or(ParameterValue::DbNull, |s| ParameterValue::Int32(i32::from(s))),
            retry_after.map_or(ParameterValue::DbNull, ParameterValue::Int64),
            error.map_or(ParameterValue::DbNull, |e| ParameterValue::Str(e.to_owned())),
        ],
    )?;
    Ok(())
}

/// An event's columns as the admin routes show them (times as UTC).
const EVENT_COLUMNS: &str = "e.id::text AS id, e.seq, e.type, e.order_id, e.status, e.attempts,
    e.last_attempt_at AT TIME ZONE 'UTC' AS last_attempt_at, e.last_response_status, e.last_error,
    CASE WHEN e.status = 'PENDING' THEN e.next_attempt_at AT TIME ZONE 'UTC' END AS next_attempt_at,
    e.delivered_at AT TIME ZONE 'UTC' AS delivered_at, e.created_at AT TIME ZONE 'UTC' AS created_at, e.body";

/// A page of events, newest first, below `seq` $4, filtered by order $1,
/// type $2 and status $3 when given.
const LIST: &str = "FROM order_events e
    WHERE ($1::int8 IS NULL OR e.order_id = $1) AND ($2::text IS NULL OR e.type = $2)
      AND ($3::text IS NULL OR e.status = $3) AND e.seq < $4
    ORDER BY e.seq DESC LIMIT $5";

/// A redeliver: the event `PENDING` and due now, with a fresh schedule of
/// attempts, the same id and body. A lease in force is kept, so an attempt
/// in flight is never joined by a second one.
const REDELIVER: &str = "UPDATE order_events e
    SET status = 'PENDING', next_attempt_at = now(), attempts = 0, delivered_at = NULL
    WHERE e.id = $1::uuid RETURNING ";

/// What the on-call view shows of the outbox.
const BACKLOG: Query = Query::new(
    "SELECT count(*) FILTER (WHERE status = 'PENDING') AS pending,
            count(*) FILTER (WHERE status = 'FAILED') AS failed,
            extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'PENDING'))::int8 AS oldest
    FROM order_events",
);

/// An event as the admin routes show it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub order_id: i64,
    pub status: String,
    pub attempts: i32,
    pub last_attempt_at: Option<String>,
    pub last_response_status: Option<i32>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<String>,
    pub delivered_at: Option<String>,
    pub created_at: String,
    /// The envelope every attempt sends.
    pub payload: serde_json::Value,
    /// For the page cursor.
    #[serde(skip)]
    pub seq: i64,
}

fn event_view(row: &spin_sdk::pg4::Row<'_>) -> Result<EventView, Problem> {
    let body: String = column(row, "body")?;
    Ok(EventView {
        id: column(row, "id")?,
        event_type: column(row, "type")?,
        order_id: column(row, "order_id")?,
        status: column(row, "status")?,
        attempts: column(row, "attempts")?,
        last_attempt_at: edge::pg::utc_opt(row, "last_attempt_at")?,
        last_response_status: column(row, "last_response_status")?,
        last_error: column(row, "last_error")?,
        next_attempt_at: edge::pg::utc_opt(row, "next_attempt_at")?,
        delivered_at: edge::pg::utc_opt(row, "delivered_at")?,
        created_at: edge::pg::utc(row, "created_at")?,
        payload: serde_json::from_str(&body)
            .map_err(|_| Problem::unavailable("a stored event is corrupt"))?,
        seq: column(row, "seq")?,
    })
}

/// Which events to list.
#[derive(Debug, Default)]
pub struct Filter {
    pub order_id: Option<i64>,
    pub event_type: Option<String>,
    pub status: Option<String>,
}

/// A page of events, newest first, below `before` (a `seq`).
pub fn list(db: &Db, filter: &Filter, before: i64, limit: i64) -> Result<Vec<EventView>, Problem> {
    let text = |value: &Option<String>| value.clone().map_or(ParameterValue::DbNull, ParameterValue::Str);
    let sql = format!("SELECT {EVENT_COLUMNS} {LIST}");
    let rows = db.query(
        &Query::new(&sql),
        &[
            filter
                .order_id
                .map_or(ParameterValue::DbNull, ParameterValue::Int64),
            text(&filter.event_type),
            text(&filter.status),
            ParameterValue::Int64(before),
            ParameterValue::Int64(limit),
        ],
    )?;
    rows.iter().map(|row| event_view(&row)).collect()
}

/// Make event `id` due again; `None` when there is no such event.
pub fn redeliver(db: &Db, id: &uuid::Uuid) -> Result<Option<EventView>, Problem> {
    let sql = format!("{REDELIVER}{EVENT_COLUMNS}");
    let rows = db.query(&Query::new(&sql), &[ParameterValue::Uuid(id.to_string())])?;
    rows.first(event_view)
}

/// The outbox as the on-call view shows it.
#[derive(Debug, Clone, Copy, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Backlog {
    pub pending: i64,
    pub failed: i64,
    pub oldest_pending_seconds: Option<i64>,
}

pub fn backlog(db: &Db) -> Result<Backlog, Problem> {
    let rows = db.query(&BACKLOG, &[])?;
    rows.first(|row| {
        Ok(Backlog {
            pending: column(row, "pending")?,
            failed: column(row, "failed")?,
            oldest_pending_seconds: column(row, "oldest")?,
        })
    })?
    .ok_or_else(|| Problem::unavailable("the outbox could not be read"))
}
