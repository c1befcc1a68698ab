//! `GET /api/v1/health` names the store that does not answer, and refuses a
//! `database_id` that is not the database's own.

use edge_tests::{token, Options, TestApp};
use redis::Commands;

/// A loopback port nothing listens on.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread")]
async fn health_reports_each_store() {
    let app = TestApp::start(1).await.unwrap();
    let ok = app.get("/api/v1/health", None).await.unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.body,
        serde_json::json!({"status": "ok", "postgres": "ok", "redis": "ok"})
    );

    let port = dead_port();
    let redis_url = format!("redis://127.0.0.1:{port}");
    let redis_host = format!("127.0.0.1:{port}");
    let no_redis = TestApp::start_with(
        1,
        &[
            ("SPIN_VARIABLE_REDIS_URL", &redis_url),
            ("SPIN_VARIABLE_REDIS_HOST", &redis_host),
        ],
    )
    .await
    .unwrap();
    let reply = no_redis.get("/api/v1/health", None).await.unwrap();
    reply.assert_problem(503, "SERVICE_UNAVAILABLE");
    assert_eq!(
        (reply.body["postgres"].as_str(), reply.body["redis"].as_str()),
        (Some("ok"), Some("unavailable"))
    );
    assert!(reply.header("retry-after").is_some());

    let pg_url = format!("postgres://postgres@127.0.0.1:{port}/none");
    let pg_host = format!("127.0.0.1:{port}");
    let no_pg = TestApp::start_with(
        1,
        &[
            ("SPIN_VARIABLE_PG_URL", &pg_url),
            ("SPIN_VARIABLE_PG_HOST", &pg_host),
        ],
    )
    .await
    .unwrap();
    let reply = no_pg.get("/api/v1/health", None).await.unwrap();
    reply.assert_problem(503, "SERVICE_UNAVAILABLE");
    assert_eq!(
        (reply.body["postgres"].as_str(), reply.body["redis"].as_str()),
        (Some("unavailable"), Some("ok"))
    );
    // The 503 is documented too.
    let served = app.get("/api/v1/openapi.json", None).await.unwrap();
    edge_tests::contract::Contract::new(served.body).check("GET", "/api/v1/health", &reply);
    // A store that is down is a 503, never a 500, on every route that needs it.
    no_pg
        .get("/api/v1/products", None)
        .await
        .unwrap()
        .assert_problem(503, "SERVICE_UNAVAILABLE");
}

/// A deployment given another database's id (copied from the other
/// deployment's configuration) on the Redis both share: its health check
/// fails, and it builds no Redis state under the other database's id.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_id_of_another_database_is_refused() {
    let first = TestApp::start(1).await.unwrap();
    let borrowed_id = first.db.database_id.clone();
    let misconfigured = TestApp::start_opts(Options {
        instances: 1,
        env: &[("SPIN_VARIABLE_DATABASE_ID", &borrowed_id)],
        redis_url: Some(first.redis_url.clone()),
        ..Options::default()
    })
    .await
    .unwrap();
    let health = misconfigured.get("/api/v1/health", None).await.unwrap();
    health.assert_problem(503, "SERVICE_UNAVAILABLE");
    assert!(
        health.body["detail"].as_str().unwrap().contains("database_id"),
        "{}",
        health.text
    );
    assert_eq!(
        (health.body["postgres"].as_str(), health.body["redis"].as_str()),
        (Some("ok"), Some("ok"))
    );

    // Its coupon is created in its own Postgres, but neither priming nor
    // issuing builds keys under the id it borrowed.
    let admin = token(1, Some("admin"));
    let coupon = serde_json::json!({"name": "Mislabelled", "discountType": "FIXED", "discountValue": 1000,
        "totalQuantity": 5, "issueStartsAt": "2020-01-01T00:00:00Z",
        "issueEndsAt": "2099-01-01T00:00:00Z", "expiresAt": "2099-06-01T00:00:00Z"});
    let created = misconfigured
        .post_json("/api/v1/admin/coupons", Some(&admin), &coupon)
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.text);
    let issued = misconfigured
        .request(
            reqwest::Method::POST,
            "/api/v1/coupons/1/issue",
            Some(&token(2, None)),
            &[],
            None,
        )
        .await
        .unwrap();
    issued.assert_problem(503, "SERVICE_UNAVAILABLE");
    let keys: Vec<String> = first.redis().unwrap().keys(first.redis_key("coupon:*")).unwrap();
    assert_eq!(keys, Vec::<String>::new(), "no key under the borrowed id");
    let popular = misconfigured.get("/api/v1/products/popular", None).await.unwrap();
    popular.assert_problem(503, "SERVICE_UNAVAILABLE");
    let keys: Vec<String> = first.redis().unwrap().keys(first.redis_key("*")).unwrap();
    assert_eq!(keys, Vec::<String>::new(), "nothing under the borrowed id");

    // An id that is not a UUID at all is a 503 naming the variable.
    let garbled = TestApp::start_with(1, &[("SPIN_VARIABLE_DATABASE_ID", "production")])
        .await
        .unwrap();
    let health = garbled.get("/api/v1/health", None).await.unwrap();
    health.assert_problem(503, "SERVICE_UNAVAILABLE");
    assert!(
        health.body["detail"].as_str().unwrap().contains("database_id"),
        "{}",
        health.text
    );
}

/// The app with the order component's failure points, a product and a
/// funded `buyer`.
async fn with_failpoints_and_a_buyer(buyer: i64) -> (TestApp, i64) {
    let app = TestApp::start_opts(Options {
        instances: 1,
        failpoints: true,
        ..Options::default()
    })
    .await
    .unwrap();
    let product = edge_tests::fixtures::product(&app, 1_000, 10).await;
    edge_tests::fixtures::fund(&app, buyer, 10_000).await;
    (app, product)
}

async fn on_call(app: &TestApp) -> serde_json::Value {
    let view = app
        .get("/api/v1/admin/ops", Some(&token(1, Some("admin"))))
        .await
        .unwrap();
    assert_eq!(view.status, 200, "{}", view.text);
    view.body
}

async fn place(app: &TestApp, bearer: &str, key: &str, body: &str, failpoint: &str) -> edge_tests::Reply {
    app.request(
        reqwest::Method::POST,
        "/api/v1/orders",
        Some(bearer),
        &[
            ("idempotency-key", key),
            ("content-type", "application/json"),
            ("x-failpoint", failpoint),
        ],
        Some(body.as_bytes().to_vec()),
    )
    .await
    .unwrap()
}

/// The on-call view moves with what happens: a held order, the same order
/// stuck, a recovery run resolving it; the hold and the run are logged as
/// business events.
#[tokio::test(flavor = "multi_thread")]
async fn the_on_call_view_shows_a_held_order_a_stuck_one_and_the_recovery_run() {
    let (app, product) = with_failpoints_and_a_buyer(5).await;
    let body = serde_json::json!({"items": [{"productId": product, "quantity": 1}]}).to_string();
    let held = place(&app, &token(5, None), "held", &body, "after-debit").await;
    assert_eq!(
        (held.status, &held.body["status"]),
        (202, &serde_json::json!("ON_HOLD")),
        "{}",
        held.text
    );
    let order_id = held.body["orderId"].as_i64().unwrap();
    let view = on_call(&app).await;
    assert_eq!(
        (&view["orders"]["ON_HOLD"], &view["stuckOrders"]),
        (&1.into(), &0.into()),
        "{view}"
    );
    let event = app
        .log_lines()
        .into_iter()
        .find(|l| l["event"] == "order.held")
        .expect("the hold is logged");
    assert_eq!(event["orderId"], order_id);
    assert_eq!(event["requestId"], held.header("request-id").unwrap());
    assert!(
        event["cause"].as_str().unwrap().contains("failpoint after-debit"),
        "{event}"
    );

    app.pg()
        .await
        .unwrap()
        .execute(
            "UPDATE orders SET updated_at = now() - interval '3 minutes' WHERE id = $1",
            &[&order_id],
        )
        .await
        .unwrap();
    assert_eq!(on_call(&app).await["stuckOrders"], 1);

    let run = app
        .request(
            reqwest::Method::POST,
            "/api/v1/admin/recovery/run",
            Some(&token(1, Some("admin"))),
            &[],
            None,
        )
        .await
        .unwrap();
    assert_eq!(run.status, 200, "{}", run.text);
    let view = on_call(&app).await;
    assert_eq!(view["lastRecovery"]["rolledForward"], 1, "{view}");
    assert_eq!(view["lastRecovery"]["examined"], 1, "{view}");
    assert_eq!(
        (
            &view["orders"]["ON_HOLD"],
            &view["orders"]["PAID"],
            &view["stuckOrders"]
        ),
        (&0.into(), &1.into(), &0.into())
    );
    let run_logged = app
        .log_lines()
        .into_iter()
        .find(|l| l["event"] == "recovery.run")
        .expect("the run is logged");
    assert_eq!(run_logged["rolledForward"], 1);
    assert_eq!(run_logged["requestId"], run.header("request-id").unwrap());
}

/// No token, secret, `Idempotency-Key` value or body in the logs — also when
/// a request panics mid-order (a trap; the panic's own message is there).
#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_the_logs_even_when_a_request_panics() {
    let (app, product) = with_failpoints_and_a_buyer(6).await;
    let key = format!("key-{}", uuid::Uuid::new_v4().simple());
    let body = serde_json::json!({"items": [{"productId": product, "quantity": 3}]}).to_string();
    let bearer = token(6, None);
    let crashed = place(&app, &bearer, &key, &body, "crash:after-debit").await;
    assert_eq!(crashed.status, 500, "{}", crashed.text);
    let refused = place(&app, &bearer, &key, "{\"items\": \"not a list\"}", "").await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    let denied = app
        .request(
            reqwest::Method::GET,
            "/api/v1/wallet",
            Some("forged.token.value"),
            &[],
            None,
        )
        .await
        .unwrap();
    denied.assert_problem(401, "UNAUTHORIZED");
    let logs = app.logs();
    assert!(
        logs.contains("failpoint crash:after-debit"),
        "the panic is in these logs:\n{logs}"
    );
    assert!(app.log_lines().len() >= 2, "the requests are logged:\n{logs}");
    for secret in [
        bearer.as_str(),
        edge_tests::SECRET,
        key.as_str(),
        body.as_str(),
        "not a list",
        "forged.token.value",
    ] {
        assert!(!logs.contains(secret), "the logs hold {secret:?}:\n{logs}");
    }
}
