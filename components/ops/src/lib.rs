//! Operations: `GET /api/v1/health`, `GET /api/v1/openapi.json`, and the
//! catch-all route that answers `404 NOT_FOUND` for anything else under `/api/v1`.

use edge::pg::{Db, Query};
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

fn postgres_ok() -> bool {
    Db::connect().is_ok_and(|db| db.query(&Query::new("SELECT 1"), &[]).is_ok())
}

fn redis_ok() -> bool {
    edge::redis::connect().is_ok_and(|redis| {
        matches!(redis.execute("PING", &[]).as_deref(), Ok([RedisResult::Status(pong)]) if pong == "PONG")
    })
}

fn health(_: &Request, _: &Params) -> ApiResult {
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let (postgres, redis) = (postgres_ok(), redis_ok());
    if postgres && redis {
        return Ok(respond::ok(
            &json!({"status": "ok", "postgres": "ok", "redis": "ok"}),
        ));
    }
    let failing: Vec<&str> = [("postgres", postgres), ("redis", redis)]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| name)
        .collect();
    Err(
        Problem::unavailable(format!("{} not answering", failing.join(" and ")))
            .with_extension("postgres", word(postgres))
            .with_extension("redis", word(redis)),
    )
}

fn openapi(_: &Request, _: &Params) -> ApiResult {
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(OPENAPI)
        .build())
}
