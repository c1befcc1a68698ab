//! Operations: `GET /api/v1/health`, `GET /api/v1/openapi.json`, the on-call
//! view `GET /api/v1/admin/ops`, and the catch-all route that answers
//! `404 NOT_FOUND` for anything else under `/api/v1`.

use commerce::order::OrderStatus;
use edge::pg::{column, Db, Query};
use edge::redis::{text, Redis, DATABASE_ID_COLUMN};
use edge::router::{get, serve, Params};
use edge::Request;
use edge::{respond, ApiResult, Problem};
use serde_json::{json, Value};
use spin_sdk::http::{IncomingRequest, Response, ResponseOutparam};
use spin_sdk::http_component;
use spin_sdk::pg4::ParameterValue;
use spin_sdk::redis::{RedisParameter, RedisResult};

/// The API contract, served as is; `tests/` checks real responses against it.
const OPENAPI: &str = include_str!("../openapi.json");

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve(
        req,
        out,
        "ops",
        &[
            get("/api/v1/health", health),
            get("/api/v1/openapi.json", openapi),
            get("/api/v1/admin/ops", on_call),
        ],
    )
    .await
}

/// The id of the database `pg_url` names, `None` when Postgres does not answer.
fn postgres_database_id() -> Option<String> {
    let query = format!("SELECT {DATABASE_ID_COLUMN}");
    let db = Db::connect().ok()?;
    let rows = db.query(&Query::new(&query), &[]).ok()?;
    rows.first(|row| column::<String>(row, "database_id"))
        .ok()
        .flatten()
}

fn redis_ok(redis: &Redis) -> bool {
    matches!(redis.execute("PING", &[]).as_deref(), Ok([RedisResult::Status(pong)]) if pong == "PONG")
}

/// `200` when both stores answer and the app's `database_id` is the
/// database's own (else its Redis keys would be another database's).
fn health(_: &Request, _: &Params) -> ApiResult {
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let database_id = postgres_database_id();
    let redis = edge::redis::connect();
    let (postgres, redis_up) = (database_id.is_some(), redis.as_ref().is_ok_and(redis_ok));
    if let (Some(database_id), Ok(redis)) = (&database_id, &redis) {
        if redis_up {
            redis.verify_database(database_id).map_err(|problem| {
                problem
                    .with_extension("postgres", "ok")
                    .with_extension("redis", "ok")
            })?;
            return Ok(respond::ok(
                &json!({"status": "ok", "postgres": "ok", "redis": "ok"}),
            ));
        }
    }
    let mut failing: Vec<String> = [("postgres", postgres), ("redis", redis_up)]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| format!("{name} not answering"))
        .collect();
    if let Err(problem) = &redis {
        failing.push(problem.detail.clone());
    }
    Err(Problem::unavailable(failing.join("; "))
        .with_extension("postgres", word(postgres))
        .with_extension("redis", word(redis_up)))
}

/// Orders per status, for every status (zero included).
const ORDERS_BY_STATUS: Query = Query::new(
    "SELECT s.status, count(o.id) AS orders
    FROM unnest($1::text[]) AS s(status) LEFT JOIN orders o ON o.status = s.status
    GROUP BY s.status",
);

/// How long an unfinished order may sit before it counts as stuck.
const STUCK_AFTER_SECONDS: i64 = 120;

/// Orders unfinished for too long, the last recovery run (if any), and the
/// database's id (the coupon keys read below must be this database's).
const STUCK_AND_LAST_RUN: &str = "SELECT
    (SELECT count(*) FROM orders WHERE status IN ('PENDING', 'ON_HOLD')
        AND updated_at < now() - make_interval(secs => $1::int8)) AS stuck,
    r.ran_at AT TIME ZONE 'UTC' AS ran_at, r.examined, r.rolled_forward, r.rolled_back, r.skipped";
const STUCK_AND_LAST_RUN_FROM: &str =
    "FROM (VALUES (1)) AS one(x) LEFT JOIN (SELECT * FROM recovery_runs ORDER BY id DESC LIMIT 1) r ON true";

/// The coupons whose Redis keys may exist (they outlive the issue window by
/// a day), with what Postgres says remains.
const LIVE_COUPONS: Query = Query::new(
    "SELECT id, total_quantity - issued_count AS remaining FROM coupons
    WHERE issue_ends_at + interval '1 day' > now() ORDER BY id LIMIT 1000",
);

/// `GET /api/v1/admin/ops`: order counts by status, stuck orders, the last
/// recovery run, coupons whose Redis stock disagrees with Postgres, the
/// webhook backlog and whether webhooks are on, and the stores' health. Redis unavailable still answers (`"redis": "unavailable"`,
/// no drift known); Postgres unavailable is a `503`.
fn on_call(req: &Request, _: &Params) -> ApiResult {
    edge::auth::authenticate_admin(req)?;
    let db = Db::connect()?;
    let statuses = OrderStatus::ALL.map(|s| Some(s.as_str().to_owned())).to_vec();
    let mut orders = serde_json::Map::new();
    for row in db
        .query(&ORDERS_BY_STATUS, &[ParameterValue::ArrayStr(statuses)])?
        .iter()
    {
        orders.insert(
            column::<String>(&row, "status")?,
            column::<i64>(&row, "orders")?.into(),
        );
    }
    let sql = format!("{STUCK_AND_LAST_RUN}, {DATABASE_ID_COLUMN} {STUCK_AND_LAST_RUN_FROM}");
    let (stuck, last_recovery, database_id) = db
        .query(&Query::new(&sql), &[ParameterValue::Int64(STUCK_AFTER_SECONDS)])?
        .first(|row| {
            let ran_at: Option<chrono::NaiveDateTime> = column(row, "ran_at")?;
            let last = match ran_at {
                Some(at) => json!({
                    "at": edge::pg::rfc3339(at.and_utc()),
                    "examined": column::<i64>(row, "examined")?,
                    "rolledForward": column::<i64>(row, "rolled_forward")?,
                    "rolledBack": column::<i64>(row, "rolled_back")?,
                    "skipped": column::<i64>(row, "skipped")?,
                }),
                None => Value::Null,
            };
            Ok((
                column::<i64>(row, "stuck")?,
                last,
                column::<String>(row, "database_id")?,
            ))
        })?
        .ok_or_else(|| Problem::unavailable("the on-call query answered no row"))?;
    let redis = edge::redis::connect().ok().filter(redis_ok);
    let drift = match &redis {
        Some(redis) => {
            redis.verify_database(&database_id)?;
            coupon_drift(&db, redis)?
        }
        None => Vec::new(),
    };
    let backlog = outbox::store::backlog(&db)?;
    let events = json!({
        "pending": backlog.pending,
        "failed": backlog.failed,
        "oldestPendingSeconds": backlog.oldest_pending_seconds,
        "webhooks": outbox::Webhooks::from_variables().state(),
    });
    Ok(respond::ok(&json!({
        "orders": orders,
        "stuckOrders": stuck,
        "lastRecovery": last_recovery,
        "couponDrift": drift,
        "events": events,
        "postgres": "ok",
        "redis": if redis.is_some() { "ok" } else { "unavailable" },
    })))
}

/// Coupons whose Redis `remaining` exists and differs from Postgres' (a
/// missing key is no drift: it is rebuilt from Postgres when next needed).
/// Meaningful once quiet: an issue in flight is briefly counted by one only.
fn coupon_drift(db: &Db, redis: &Redis) -> Result<Vec<Value>, Problem> {
    let mut drift = Vec::new();
    for row in db.query(&LIVE_COUPONS, &[])?.iter() {
        let (coupon_id, in_postgres): (i64, i64) = (column(&row, "id")?, column(&row, "remaining")?);
        let key = redis.key(&coupon_allocation::remaining_key(coupon_id));
        let reply = redis
            .execute("GET", &[RedisParameter::Binary(key.into_bytes())])
            .map_err(edge::redis::unavailable)?;
        let in_redis = reply.first().and_then(text).and_then(|v| v.parse::<i64>().ok());
        if let Some(in_redis) = in_redis.filter(|r| *r != in_postgres) {
            drift.push(
                json!({"couponId": coupon_id, "redisRemaining": in_redis, "postgresRemaining": in_postgres}),
            );
        }
    }
    Ok(drift)
}

fn openapi(_: &Request, _: &Params) -> ApiResult {
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(OPENAPI)
        .build())
}
