//! Scale-out within Postgres' connection budget (issue 15): four app
//! processes — two on our host, two on real Spin 4.0.2, each with Spin's
//! pools of up to 64 connections per component — against one Postgres with
//! `max_connections = 100`, through PgBouncer in transaction mode. The
//! concurrency scenarios run across all four: no connection failure (no
//! `503`), every invariant, and Postgres never sees more server connections
//! than the pooler's pool.

use edge_tests::private::{PrivatePgBouncer, PrivatePostgres};
use edge_tests::spin::{SpinInstall, SpinVersion};
use edge_tests::{invariants, token, Options, Reply, TestApp};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Server connections PgBouncer may open to the database.
const POOL: u32 = 40;

async fn post(app: &TestApp, path: &str, user: i64, key: Option<&str>, body: Option<Value>) -> Reply {
    let mut headers = vec![];
    if let Some(key) = key {
        headers.push(("idempotency-key", key));
    }
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    let token = token(user, None);
    app.request(
        reqwest::Method::POST,
        path,
        Some(&token),
        &headers,
        body.map(|b| b.to_string().into_bytes()),
    )
    .await
    .unwrap()
}

fn tally(replies: &[Reply]) -> BTreeMap<(u16, String), usize> {
    let mut counts = BTreeMap::new();
    for reply in replies {
        let what = reply.body["code"]
            .as_str()
            .or(reply.body["status"].as_str())
            .unwrap_or_default();
        *counts.entry((reply.status, what.to_owned())).or_default() += 1;
    }
    counts
}

/// No request failed for want of a connection.
#[track_caller]
fn no_unavailable(replies: &[Reply]) {
    let counts = tally(replies);
    assert!(
        !counts.keys().any(|(status, _)| *status >= 500),
        "a request failed: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn four_processes_share_a_hundred_connections_through_pgbouncer() {
    let Some(spin) = SpinInstall::get(SpinVersion::V4_0_2) else {
        return;
    };
    let postgres = PrivatePostgres::start_sized(100).unwrap();
    let Some(bouncer) = PrivatePgBouncer::start(postgres.port, POOL).unwrap() else {
        return;
    };
    let mut app = TestApp::start_opts(Options {
        instances: 2,
        // Spin's pool size, so the host asks for as many as Spin would.
        env: &[("EDGE_HOST_PG_POOL_SIZE", "64")],
        pg_server: Some(postgres.server_url()),
        pooler_port: Some(bouncer.port),
        ..Options::default()
    })
    .await
    .unwrap();
    app.add_instance_on(Some(&spin)).unwrap();
    app.add_instance_on(Some(&spin)).unwrap();
    // The test's own connections name themselves, so the sample counts the app's.
    let ours = format!("{}&application_name=edge-tests", app.db.url);
    let direct = edge_tests::connect(&ours).await.unwrap();

    // Sample the server connections Postgres holds while the storms run.
    let peak = Arc::new(AtomicI64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        let sampler_db = edge_tests::connect(&ours).await.unwrap();
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let row = sampler_db
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                           AND application_name <> 'edge-tests'",
                        &[],
                    )
                    .await
                    .unwrap();
                peak.fetch_max(row.get(0), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // Coupons: 800 requests, 400 users, 150 coupons.
    let created = app
        .post_json(
            "/api/v1/admin/coupons",
            Some(&token(1, Some("admin"))),
            &json!({"name": "c", "discountType": "FIXED", "discountValue": 1000, "totalQuantity": 150,
                    "issueStartsAt": "2020-01-01T00:00:00Z", "issueEndsAt": "2099-01-01T00:00:00Z",
                    "expiresAt": "2099-06-01T00:00:00Z"}),
        )
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.text);
    let coupon = created.body["id"].as_i64().unwrap();
    let issue_path = format!("/api/v1/coupons/{coupon}/issue");
    let replies =
        futures::future::join_all((0..800).map(|i| post(&app, &issue_path, 1_000 + i % 400, None, None)))
            .await;
    no_unavailable(&replies);
    assert_eq!(tally(&replies).get(&(201, "ISSUED".to_owned())), Some(&150));

    // Money for 400 buyers, 400 charges at once.
    let charges = futures::future::join_all((0..400).map(|i| {
        post(
            &app,
            "/api/v1/wallet/charges",
            2_000 + i,
            Some("fund"),
            Some(json!({"amount": 50_000})),
        )
    }))
    .await;
    no_unavailable(&charges);
    assert_eq!(tally(&charges), BTreeMap::from([((201, String::new()), 400)]));

    // Orders: 400 buyers for 100 units.
    let product = app
        .post_json(
            "/api/v1/admin/products",
            Some(&token(1, Some("admin"))),
            &json!({"name": "Kettle", "price": 30_000, "stock": 100}),
        )
        .await
        .unwrap();
    let product = product.body["id"].as_i64().unwrap();
    let order = json!({"items": [{"productId": product, "quantity": 1}]});
    let orders = futures::future::join_all((0..400).map(|i| {
        post(
            &app,
            "/api/v1/orders",
            2_000 + i,
            Some("buy"),
            Some(order.clone()),
        )
    }))
    .await;
    no_unavailable(&orders);
    let counts = tally(&orders);
    assert_eq!(counts.get(&(201, "PAID".to_owned())), Some(&100), "{counts:?}");
    assert_eq!(
        counts.get(&(409, "OUT_OF_STOCK".to_owned())),
        Some(&300),
        "{counts:?}"
    );

    // Duplicate payment: one key, 60 requests at once, one order.
    let same = futures::future::join_all(
        (0..60).map(|_| post(&app, "/api/v1/orders", 2_500, Some("once"), Some(order.clone()))),
    )
    .await;
    no_unavailable(&same);
    let _ = post(
        &app,
        "/api/v1/wallet/charges",
        2_500,
        Some("fund"),
        Some(json!({"amount": 50_000})),
    )
    .await;
    let made: i64 = direct
        .query_one("SELECT count(*) FROM orders WHERE user_id = 2500", &[])
        .await
        .unwrap()
        .get(0);
    assert!(made <= 1, "one key, one order: {made}");

    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let peak = peak.load(Ordering::Relaxed);
    assert!(
        peak <= i64::from(POOL),
        "Postgres held {peak} app connections, the pool is {POOL}"
    );
    assert!(peak > 0, "the sampler saw the app's connections");
    for (i, host) in app.hosts.iter().enumerate() {
        let logs = host.logs();
        assert!(!logs.contains("too many clients"), "instance {i}: {logs}");
    }
    assert!(!bouncer.log().contains("ERROR"), "{}", bouncer.log());
    invariants::assert_all_with_redis(&direct, &mut app.redis().unwrap()).await;
}
