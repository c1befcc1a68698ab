//! Operations: `GET /api/v1/health`, `GET /api/v1/openapi.json`, and the
//! catch-all route that answers `404 NOT_FOUND` for anything else under `/api/v1`.

use edge::pg::{column, Db, Query};
use edge::redis::{Redis, DATABASE_ID_COLUMN};
use edge::router::{dispatch, get, Params};
use edge::{respond, ApiResult, Problem};
use serde_json::json;
use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;
use spin_sdk::redis::RedisResult;

/// The API contract, served as is; `tests/` checks real responses against it.
const OPENAPI: &str = include_str!("../openapi.json");

#[http_component]
fn handle(req: Request) -> Response {
    dispatch(
        req,
        &[
            get("/api/v1/health", health),
            get("/api/v1/openapi.json", openapi),
        ],
    )
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

fn openapi(_: &Request, _: &Params) -> ApiResult {
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(OPENAPI)
        .build())
}
