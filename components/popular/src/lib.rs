//! SPEC §7: `GET /api/v1/products/popular` — the products with the most units
//! in paid orders over the last `days` UTC days, from Redis day keys, or from
//! Postgres when Redis cannot answer. Answers are cached for 10 seconds.

use chrono::Duration;
use commerce::popular::{parse_days, parse_limit, rank, Window};
use edge::input::query_param;
use edge::pg::{column, instant, rfc3339, Db, Query};
use edge::redis::{text, Redis, DATABASE_ID_COLUMN};
use edge::router::{get, serve, Params};
use edge::Request;
use edge::{respond, ApiResult, Problem};
use order_flow::popular::{sold_in_postgres, sold_in_redis};
use serde::Serialize;
use spin_sdk::http::{IncomingRequest, Response, ResponseOutparam};
use spin_sdk::http_component;
use spin_sdk::pg4::ParameterValue;
use spin_sdk::redis::RedisParameter;

/// How long an answer may be served from the cache.
const CACHE_SECONDS: i64 = 10;

/// The database's clock: one clock for every instance (and, after it,
/// `DATABASE_ID_COLUMN`: day keys are built only for their own database).
const NOW: &str = "SELECT now() AT TIME ZONE 'UTC' AS now";
const PRODUCTS: Query = Query::new("SELECT id, name, price FROM products WHERE id = ANY($1)");

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, "popular", &[get("/api/v1/products/popular", popular)]).await
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Ranked {
    rank: usize,
    product_id: i64,
    name: String,
    price: i64,
    sold_quantity: i64,
}

#[derive(Serialize)]
struct Popular {
    items: Vec<Ranked>,
    from: String,
    to: String,
}

fn cache_key(days: u32, limit: u32) -> String {
    format!("{{popular}}:answer:{days}:{limit}")
}

fn popular(req: &Request, _: &Params) -> ApiResult {
    let days = parse_days(query_param(req, "days")?.as_deref())?;
    let limit = parse_limit(query_param(req, "limit")?.as_deref())?;
    let redis = edge::redis::connect().ok();
    if let Some(cached) = redis.as_ref().and_then(|r| cached(r, days, limit)) {
        return Ok(json_text(cached));
    }

    let db = Db::connect()?;
    let (now, database_id) = db
        .query(&Query::new(&format!("{NOW}, {DATABASE_ID_COLUMN}")), &[])?
        .first(|row| Ok((instant(row, "now")?, column::<String>(row, "database_id")?)))?
        .ok_or_else(|| Problem::unavailable("no clock"))?;
    if let Some(redis) = &redis {
        redis.verify_database(&database_id)?;
    }
    let window = Window::ending(now, days);
    let until = window.from + Duration::days(i64::from(days));
    let sold = match &redis {
        Some(redis) => sold_in_redis(&db, redis, window.first_day, window.today).or_else(|problem| {
            eprintln!(
                "popular products from Postgres, Redis could not answer: {}",
                problem.detail
            );
            sold_in_postgres(&db, window.from, until)
        })?,
        None => sold_in_postgres(&db, window.from, until)?,
    };
    let ranked = rank(sold, limit);
    let ids = ranked.iter().map(|(id, _)| Some(*id)).collect();
    let rows = db.query(&PRODUCTS, &[ParameterValue::ArrayInt64(ids)])?;
    let mut products = std::collections::HashMap::new();
    for row in rows.iter() {
        products.insert(
            column::<i64>(&row, "id")?,
            (column::<String>(&row, "name")?, column::<i64>(&row, "price")?),
        );
    }
    let items = ranked
        .into_iter()
        .filter_map(|(product_id, sold_quantity)| {
            let (name, price) = products.remove(&product_id)?;
            Some((product_id, name, price, sold_quantity))
        })
        .enumerate()
        .map(|(i, (product_id, name, price, sold_quantity))| Ranked {
            rank: i + 1,
            product_id,
            name,
            price,
            sold_quantity,
        })
        .collect();
    let body = respond::to_json(&Popular {
        items,
        from: rfc3339(window.from),
        to: rfc3339(window.to),
    });
    if let Some(redis) = &redis {
        store(redis, days, limit, &body);
    }
    Ok(json_text(body))
}

fn json_text(body: Vec<u8>) -> Response {
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(body)
        .build()
}

fn cached(redis: &Redis, days: u32, limit: u32) -> Option<Vec<u8>> {
    let reply = redis
        .execute(
            "GET",
            &[RedisParameter::Binary(
                redis.key(&cache_key(days, limit)).into_bytes(),
            )],
        )
        .ok()?;
    reply.first().and_then(text).map(String::into_bytes)
}

/// Best effort: a missing cache only costs a recomputation.
fn store(redis: &Redis, days: u32, limit: u32, body: &[u8]) {
    let stored = redis.execute(
        "SET",
        &[
            RedisParameter::Binary(redis.key(&cache_key(days, limit)).into_bytes()),
            RedisParameter::Binary(body.to_vec()),
            RedisParameter::Binary(b"EX".to_vec()),
            RedisParameter::Int64(CACHE_SECONDS),
        ],
    );
    if let Err(e) = stored {
        eprintln!("popular products: answer not cached: {e:?}");
    }
}
