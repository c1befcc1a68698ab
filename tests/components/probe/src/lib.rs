//! Reports what the host hands a component, for the host conformance tests:
//! the request as seen through wasi-http, variables, and the exact values and
//! errors of the Postgres and Redis interfaces. It calls the raw interfaces
//! on purpose (the app reads rows only through `edge::pg`).
#![allow(clippy::disallowed_methods)]

use serde_json::{json, Value};
use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;
use spin_sdk::pg4::{self, ParameterValue};
use spin_sdk::redis::{self, RedisParameter};
use spin_sdk::variables;

#[http_component]
async fn handle(req: Request) -> Response {
    let path = req.path().to_owned();
    let body = match path.as_str() {
        "/http/out" => http_out().await,
        "/http/post" => http_post(req.query()),
        "/pg/roundtrip" => pg_roundtrip(),
        "/pg/timestamptz" => pg_timestamptz(),
        "/pg/unique" => pg_unique(),
        "/pg/empty" => pg_empty(),
        "/pg/finish" => pg_finish(),
        "/pg/open" => pg_open(
            req.header("x-pg-url")
                .and_then(|v| v.as_str())
                .unwrap_or_default(),
        ),
        "/pg/denied" => {
            json!({ "error": format!("{:?}", pg4::Connection::open("postgres://postgres@127.0.0.2:5432/x").err()) })
        }
        "/redis/ops" => redis_ops(),
        "/redis/session" => redis_session(),
        "/redis/denied" => {
            json!({ "error": format!("{:?}", redis::Connection::open("redis://127.0.0.2:6379").err()) })
        }
        p if p.starts_with("/var/") => match variables::get(&p["/var/".len()..]) {
            Ok(value) => json!({ "ok": value }),
            Err(e) => json!({ "error": format!("{e:?}") }),
        },
        _ => echo(&req),
    };
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(body.to_string())
        .build()
}

fn echo(req: &Request) -> Value {
    let headers: Vec<Value> = req
        .headers()
        .map(|(name, value)| json!([name, value.as_str().unwrap_or("<binary>")]))
        .collect();
    json!({
        "component": variables::get("name").unwrap_or_default(),
        "method": format!("{:?}", req.method()),
        "uri": req.uri(),
        "path": req.path(),
        "query": req.query(),
        "headers": headers,
    })
}

fn pg() -> pg4::Connection {
    pg4::Connection::open(&variables::get("pg_url").expect("pg_url")).expect("open postgres")
}

fn debug_rows(rows: &pg4::RowSet) -> Value {
    json!({
        "columns": rows.columns.iter().map(|c| json!([c.name, format!("{:?}", c.data_type)])).collect::<Vec<_>>(),
        "rows": rows.rows.iter().map(|r| r.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>()).collect::<Vec<_>>(),
    })
}

/// Every type the schema uses, written as parameters and read back, then NULLs.
fn pg_roundtrip() -> Value {
    let db = pg();
    let create = "CREATE TEMPORARY TABLE probe_types (
        i2 int2, i4 int4, i8 int8, t text, b bool, ts timestamp, u uuid, n numeric, j jsonb, v varchar(10))";
    db.execute(create, &[]).expect("create");
    let insert = "INSERT INTO probe_types VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
    let values = [
        ParameterValue::Int16(-7),
        ParameterValue::Int32(2_000_000_000),
        ParameterValue::Int64(9_007_199_254_740_993),
        ParameterValue::Str("héllo".into()),
        ParameterValue::Boolean(true),
        ParameterValue::Datetime((2026, 11, 28, 7, 42, 14, 123_456_000)),
        ParameterValue::Uuid("8f14e45f-ceea-467f-a8f2-4f6c3f1b2a10".into()),
        ParameterValue::Decimal("1234.50".into()),
        ParameterValue::Jsonb(br#"{"b": [1, 2], "a": null}"#.to_vec()),
        ParameterValue::Str("short".into()),
    ];
    let inserted = db.execute(insert, &values).expect("insert values");
    let nulls = vec![ParameterValue::DbNull; 10];
    db.execute(insert, &nulls).expect("insert nulls");
    let rows = db
        .query("SELECT * FROM probe_types ORDER BY i2 NULLS LAST", &[])
        .expect("select");
    let wrong_type = db
        .execute(
            "INSERT INTO probe_types (i4) VALUES ($1)",
            &[ParameterValue::Int64(1)],
        )
        .err();
    json!({
        "inserted": inserted,
        "result": debug_rows(&rows),
        "int64_into_int4": format!("{wrong_type:?}"),
    })
}

/// Spin cannot read `timestamptz`; `AT TIME ZONE 'UTC'` can.
fn pg_timestamptz() -> Value {
    let db = pg();
    let raw = db
        .query("SELECT TIMESTAMPTZ '2026-11-28 07:42:14+09' AS at", &[])
        .err();
    let utc = db
        .query(
            "SELECT TIMESTAMPTZ '2026-11-28 07:42:14+09' AT TIME ZONE 'UTC' AS at",
            &[],
        )
        .map(|rows| debug_rows(&rows));
    json!({ "raw": format!("{raw:?}"), "utc": utc.map_err(|e| format!("{e:?}")).unwrap_or_else(Value::String) })
}

/// Work that takes a second and then leaves a row: a client that went away
/// meanwhile must not stop it (Spin runs every guest to its end).
fn pg_finish() -> Value {
    std::thread::sleep(std::time::Duration::from_secs(1));
    let db = pg();
    db.execute(
        "CREATE TABLE IF NOT EXISTS probe_finished (at timestamptz DEFAULT now())",
        &[],
    )
    .expect("create");
    db.execute("INSERT INTO probe_finished DEFAULT VALUES", &[])
        .expect("insert");
    json!({ "finished": true })
}

/// A `query` that matches no rows (Spin 4.0.0–4.0.2 never answer it: spin#3671).
fn pg_empty() -> Value {
    match pg().query("SELECT 1 AS one WHERE false", &[]) {
        Ok(rows) => json!({ "ok": debug_rows(&rows) }),
        Err(e) => json!({ "error": format!("{e:?}") }),
    }
}

/// An outbound HTTP request to a host the manifest does not allow.
async fn http_out() -> Value {
    let sent: Result<Response, _> = spin_sdk::http::send(Request::get("http://127.0.0.2:9/")).await;
    json!({ "error": sent.err().map(|e| format!("{e:?}")) })
}

/// A signed webhook POST to `?url=` (whose origin the manifest allows) as
/// the app sends one (`outbox::send`, 10 s timeouts): its status, or the
/// error code the runtime gave.
fn http_post(query: &str) -> Value {
    let url = query.strip_prefix("url=").unwrap_or_default();
    let origin = url.split('/').take(3).collect::<Vec<_>>().join("/");
    let outbox::Webhooks::On(target) = outbox::Webhooks::from_values(url, &origin, "whsec_c2VjcmV0") else {
        return json!({ "error": "not a webhook URL" });
    };
    let message = outbox::send::Message {
        id: "probe-event",
        body: br#"{"probe": true}"#,
    };
    match outbox::send::post_all(&target, &[message]).pop() {
        Some((outbox::send::Answer::Status(status), took)) => {
            json!({ "status": status, "ms": took.as_millis() as u64 })
        }
        Some((outbox::send::Answer::Error(error), took)) => {
            json!({ "error": error, "ms": took.as_millis() as u64 })
        }
        None => json!({ "error": "no answer" }),
    }
}

/// Open `url` and run one statement: how the host negotiates TLS.
fn pg_open(url: &str) -> Value {
    let opened = pg4::Connection::open(url).and_then(|db| db.execute("SELECT 1", &[]));
    match opened {
        Ok(_) => json!({ "ok": true }),
        Err(e) => json!({ "error": format!("{e:?}") }),
    }
}

/// One unique violation three ways: by `execute`, by a `query` (raised
/// while its row runs), and a `query` refused while binding a parameter
/// (NUL in text) — what each error carries.
fn pg_unique() -> Value {
    let db = pg();
    db.execute("CREATE TEMPORARY TABLE probe_unique (k int8 PRIMARY KEY)", &[])
        .expect("create");
    db.execute("INSERT INTO probe_unique VALUES (1)", &[])
        .expect("first insert");
    let execute = db.execute("INSERT INTO probe_unique VALUES (1)", &[]).err();
    let query = db
        .query("INSERT INTO probe_unique VALUES (1) RETURNING k", &[])
        .err();
    let bind = db
        .query(
            "SELECT $1::text AS t",
            &[ParameterValue::Str("nul\u{0}byte".into())],
        )
        .err();
    json!({ "execute": pg_error(execute), "query": pg_error(query), "bind": pg_error(bind) })
}

fn pg_error(error: Option<pg4::PgError>) -> Value {
    match error {
        Some(pg4::PgError::QueryFailed(pg4::QueryError::DbError(e))) => json!({
            "kind": "db-error", "code": e.code, "severity": e.severity, "message": e.message,
            "extras": e.extras.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        }),
        Some(pg4::PgError::QueryFailed(pg4::QueryError::Text(text))) => {
            json!({ "kind": "text", "text": text })
        }
        other => json!({ "kind": "other", "error": format!("{other:?}") }),
    }
}

fn redis_ops() -> Value {
    let redis =
        redis::Connection::open(&variables::get("redis_url").expect("redis_url")).expect("open redis");
    let script = "return {redis.call('INCRBY', KEYS[1], ARGV[1]), 'x', {1, 2}}";
    json!({
        "set": format!("{:?}", redis.set("probe:k", b"v1".as_ref())),
        "get": format!("{:?}", redis.get("probe:k")),
        "get_missing": format!("{:?}", redis.get("probe:missing")),
        "incr": format!("{:?}", redis.incr("probe:n")),
        "incr_again": format!("{:?}", redis.incr("probe:n")),
        "incr_wrong_type": format!("{:?}", redis.incr("probe:k")),
        "sadd": format!("{:?}", redis.sadd("probe:s", &["a".into(), "b".into(), "a".into()])),
        "smembers": format!("{:?}", redis.smembers("probe:s").map(|mut m| { m.sort(); m })),
        "srem": format!("{:?}", redis.srem("probe:s", &["a".into(), "zz".into()])),
        "del": format!("{:?}", redis.del(&["probe:k".into(), "probe:s".into(), "probe:none".into()])),
        "eval": format!("{:?}", redis.execute("EVAL", &[
            RedisParameter::Binary(script.as_bytes().to_vec()),
            RedisParameter::Int64(1),
            RedisParameter::Binary(b"probe:n".to_vec()),
            RedisParameter::Int64(40),
        ])),
        "status": format!("{:?}", redis.execute("SET", &[RedisParameter::Binary(b"probe:x".to_vec()), RedisParameter::Binary(b"1".to_vec())])),
        "server_error": format!("{:?}", redis.execute("NOSUCHCOMMAND", &[])),
    })
}

/// What a connection opened after others were dropped shows: one of them
/// moved to database 15, another was left inside `MULTI`. A new connection
/// (Spin opens one per `open`) is in the URL's database with no transaction.
fn redis_session() -> Value {
    let url = variables::get("redis_url").expect("redis_url");
    let open = || redis::Connection::open(&url).expect("open redis");
    let moved = open();
    let selected = moved.execute("select", &[RedisParameter::Int64(15)]);
    let planted = moved.set("probe:session", b"database 15".as_ref());
    drop(moved);
    let in_transaction = open();
    let began = in_transaction.execute("MULTI", &[]);
    drop(in_transaction);
    let fresh = open();
    json!({
        "selected": format!("{selected:?}"),
        "planted": format!("{planted:?}"),
        "began": format!("{began:?}"),
        "set": format!("{:?}", fresh.execute("SET", &[
            RedisParameter::Binary(b"probe:after".to_vec()),
            RedisParameter::Binary(b"1".to_vec()),
        ])),
        "get_planted": format!("{:?}", fresh.get("probe:session")),
    })
}
