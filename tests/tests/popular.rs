//! SPEC §7: popular products over the last days — ranking, window edges, the
//! cache, and the same answer from Redis and from the Postgres fallback.

use edge_tests::private::PrivateRedis;
use edge_tests::{token, Options, Reply, TestApp};
use serde_json::{json, Value};

const POPULAR: &str = "/api/v1/products/popular";

async fn product(db: &tokio_postgres::Client, name: &str, price: i64) -> i64 {
    db.query_one(
        "INSERT INTO products (name, price, stock, initial_stock) VALUES ($1, $2, 1000, 1000) RETURNING id",
        &[&name, &price],
    )
    .await
    .unwrap()
    .get(0)
}

/// An order with `status`, paid (if PAID) at `now() + offset` — dated by the test.
async fn sale(db: &tokio_postgres::Client, status: &str, paid_at: &str, lines: &[(i64, i64)]) {
    let order: i64 = db
        .query_one(
            "INSERT INTO orders (user_id, idempotency_key, request_fingerprint, status, total_amount,
                                 balance_deducted, paid_at, failure_code)
             VALUES (1, gen_random_uuid()::text, 'f', $1, 0, $1 = 'PAID', CASE WHEN $1 = 'PAID' THEN $2::text::timestamptz END,
                     CASE WHEN $1 = 'FAILED' THEN 'OUT_OF_STOCK' END)
             RETURNING id",
            &[&status, &paid_at],
        )
        .await
        .unwrap()
        .get(0);
    for (product, quantity) in lines {
        db.execute(
            "INSERT INTO order_items (order_id, product_id, quantity, unit_price) VALUES ($1, $2, $3, 1)",
            &[&order, product, quantity],
        )
        .await
        .unwrap();
    }
}

/// A UTC time `days` days before today at `time`, as text for Postgres.
async fn day(db: &tokio_postgres::Client, days_ago: i32, time: &str) -> String {
    db.query_one(
        "SELECT to_char((now() AT TIME ZONE 'UTC')::date - $1::int4, 'YYYY-MM-DD') || 'T' || $2::text || 'Z'",
        &[&days_ago, &time],
    )
    .await
    .unwrap()
    .get(0)
}

fn ranking(reply: &Reply) -> Vec<(i64, i64)> {
    reply.body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", reply.text))
        .iter()
        .map(|i| {
            (
                i["productId"].as_i64().unwrap(),
                i["soldQuantity"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn forget_cache(app: &TestApp) {
    let mut redis = app.redis().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(app.redis_key("{popular}:answer:*"))
        .query(&mut redis)
        .unwrap();
    for key in keys {
        redis::cmd("DEL").arg(key).exec(&mut redis).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ranking_over_the_window_with_ties_limits_and_edges() {
    let app = TestApp::start(2).await.unwrap();
    let db = app.pg().await.unwrap();
    let mut ids = Vec::new();
    for (name, price) in [
        ("A", 1000),
        ("B", 2000),
        ("C", 3000),
        ("D", 4000),
        ("E", 5000),
        ("F", 6000),
    ] {
        ids.push(product(&db, name, price).await);
    }
    let [a, b, c, d, e, f] = ids[..] else {
        unreachable!()
    };
    let today = day(&db, 0, "09:00:00").await;
    let yesterday = day(&db, 1, "23:59:59").await;
    let first_day_start = day(&db, 2, "00:00:00").await;
    let just_before = day(&db, 3, "23:59:59").await;
    sale(&db, "PAID", &today, &[(a, 5), (b, 2)]).await;
    sale(&db, "PAID", &yesterday, &[(b, 3), (c, 4)]).await;
    sale(&db, "PAID", &first_day_start, &[(d, 4)]).await; // in: 00:00:00Z of the first day
    sale(&db, "PAID", &just_before, &[(e, 100)]).await; // out: one second earlier
    sale(&db, "FAILED", &today, &[(f, 50)]).await; // never paid: never counted
    sale(&db, "CANCELLED", &today, &[(f, 50)]).await;

    let reply = app.get(POPULAR, None).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text);
    // b: 5 units; a: 5 (tie, lower id first — a < b); c and d: 4 (tie, c < d).
    assert_eq!(ranking(&reply), vec![(a, 5), (b, 5), (c, 4), (d, 4)]);
    assert_eq!(
        reply.body["items"][0],
        json!({"rank": 1, "productId": a, "name": "A", "price": 1000, "soldQuantity": 5})
    );
    assert_eq!(
        reply.body["from"],
        format!("{}.000000Z", first_day_start.trim_end_matches('Z'))
    );
    let to = chrono::DateTime::parse_from_rfc3339(reply.body["to"].as_str().unwrap()).unwrap();
    let from = chrono::DateTime::parse_from_rfc3339(reply.body["from"].as_str().unwrap()).unwrap();
    assert!(
        to - from >= chrono::Duration::days(2) && to - from < chrono::Duration::days(3),
        "{from} .. {to}"
    );

    let top2 = app.get(&format!("{POPULAR}?days=3&limit=2"), None).await.unwrap();
    assert_eq!(ranking(&top2), vec![(a, 5), (b, 5)]);
    let one_day = app.get(&format!("{POPULAR}?days=1"), None).await.unwrap();
    assert_eq!(ranking(&one_day), vec![(a, 5), (b, 2)]);
    let week = app
        .get(&format!("{POPULAR}?days=7&limit=20"), None)
        .await
        .unwrap();
    assert_eq!(ranking(&week), vec![(e, 100), (a, 5), (b, 5), (c, 4), (d, 4)]);

    for bad in [
        "days=0",
        "days=8",
        "days=x",
        "limit=0",
        "limit=21",
        "days=1&days=2",
    ] {
        app.get(&format!("{POPULAR}?{bad}"), None)
            .await
            .unwrap()
            .assert_problem(400, "INVALID_REQUEST");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_are_cached_briefly_and_live_sales_count() {
    let app = TestApp::start(1).await.unwrap();
    let db = app.pg().await.unwrap();
    let p = product(&db, "Tea", 1000).await;
    let first = app.get(POPULAR, None).await.unwrap();
    assert_eq!(ranking(&first), vec![], "no sales yet");
    // A real order through the API after the day key was built.
    db.execute("INSERT INTO wallets (user_id, balance) VALUES (3, 10000)", &[])
        .await
        .unwrap();
    db.execute(
        "INSERT INTO wallet_ledger (user_id, kind, amount, balance_after, charge_key) VALUES (3, 'CHARGE', 10000, 10000, 'k')",
        &[],
    )
    .await
    .unwrap();
    let headers = [("content-type", "application/json"), ("idempotency-key", "live")];
    let body = json!({"items": [{"productId": p, "quantity": 3}]})
        .to_string()
        .into_bytes();
    let placed = app
        .request(
            reqwest::Method::POST,
            "/api/v1/orders",
            Some(&token(3, None)),
            &headers,
            Some(body),
        )
        .await
        .unwrap();
    assert_eq!(placed.status, 201, "{}", placed.text);

    let cached = app.get(POPULAR, None).await.unwrap();
    assert_eq!(cached.text, first.text, "served from the 10-second cache");
    forget_cache(&app);
    let fresh = app.get(POPULAR, None).await.unwrap();
    assert_eq!(
        ranking(&fresh),
        vec![(p, 3)],
        "the sale was counted into the existing day key"
    );
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let units: Option<f64> = redis::cmd("ZSCORE")
        .arg(app.redis_key(&format!("{{popular}}:{today}")))
        .arg(p)
        .query(&mut app.redis().unwrap())
        .unwrap();
    assert_eq!(units, Some(3.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn same_answer_from_redis_from_rebuilt_keys_and_from_postgres() {
    let mut redis = PrivateRedis::start().unwrap();
    let app = TestApp::start_opts(Options {
        instances: 1,
        redis_url: Some(redis.url()),
        ..Options::default()
    })
    .await
    .unwrap();
    let db = app.pg().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(product(&db, &format!("P{i}"), 1000 + i).await);
    }
    for (days_ago, time) in [
        (0, "01:00:00"),
        (1, "12:00:00"),
        (2, "00:00:00"),
        (4, "00:00:00"),
        (6, "23:59:59"),
    ] {
        let at = day(&db, days_ago, time).await;
        let lines: Vec<(i64, i64)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, ((i as i64 * 7 + days_ago as i64 * 3) % 5) + 1))
            .collect();
        sale(&db, "PAID", &at, &lines).await;
    }
    let items = |reply: &Reply| -> Value { reply.body["items"].clone() };
    let mut answers = Vec::new();
    for days in [1, 3, 7] {
        let path = format!("{POPULAR}?days={days}&limit=20");
        let from_redis = app.get(&path, None).await.unwrap();
        assert_eq!(from_redis.status, 200);
        answers.push((path, items(&from_redis), from_redis.body["from"].clone()));
    }
    // Keys deleted: rebuilt from Postgres, same answers.
    redis::cmd("FLUSHALL").exec(&mut app.redis().unwrap()).unwrap();
    for (path, expected, from) in &answers {
        let rebuilt = app.get(path, None).await.unwrap();
        assert_eq!(
            (&items(&rebuilt), &rebuilt.body["from"]),
            (expected, from),
            "{path} after the keys were deleted"
        );
    }
    // Redis stopped: answered from Postgres, same answers.
    redis.crash();
    for (path, expected, from) in &answers {
        let fallback = app.get(path, None).await.unwrap();
        assert_eq!(fallback.status, 200, "{}", fallback.text);
        assert_eq!(
            (&items(&fallback), &fallback.body["from"]),
            (expected, from),
            "{path} with Redis down"
        );
    }
}
