//! SPEC §4-5 and §5: an interrupted payment is held, and recovery finishes or
//! undoes it — after failure points, real store outages, a killed instance,
//! and two runners at once.

use edge_tests::fixtures::{fund, product};
use edge_tests::private::{PrivatePostgres, PrivateRedis};
use edge_tests::{invariants, send, settle, token, Options, Reply, TestApp};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ORDERS: &str = "/api/v1/orders";
const RECOVER: &str = "/api/v1/admin/recovery/run";

/// A user coupon for `user` (FIXED 1,000 off), straight into the tables.
async fn user_coupon(app: &TestApp, user: i64) -> i64 {
    let db = app.pg().await.unwrap();
    let coupon: i64 = db
        .query_one(
            "INSERT INTO coupons (name, discount_type, discount_value, total_quantity, issued_count,
                                  issue_starts_at, issue_ends_at, expires_at)
             VALUES ('c', 'FIXED', 1000, 1, 1, now() - interval '1 day', now() + interval '1 day', now() + interval '2 days')
             RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    db.query_one(
        "INSERT INTO user_coupons (coupon_id, user_id) VALUES ($1, $2) RETURNING id",
        &[&coupon, &user],
    )
    .await
    .unwrap()
    .get(0)
}

async fn place(
    app: &TestApp,
    base: &str,
    user: i64,
    key: &str,
    body: &Value,
    failpoint: Option<&str>,
) -> Reply {
    let mut headers = vec![("content-type", "application/json"), ("idempotency-key", key)];
    if let Some(point) = failpoint {
        headers.push(("x-failpoint", point));
    }
    let url = format!("{base}{ORDERS}");
    send(
        &app.client,
        reqwest::Method::POST,
        &url,
        Some(&token(user, None)),
        &headers,
        Some(body.to_string().into_bytes()),
    )
    .await
    .unwrap()
}

async fn recover(app: &TestApp, headers: &[(&str, &str)]) -> Reply {
    app.request(
        reqwest::Method::POST,
        RECOVER,
        Some(&token(1, Some("admin"))),
        headers,
        None,
    )
    .await
    .unwrap()
}

async fn status_of(app: &TestApp, order: i64) -> String {
    app.pg()
        .await
        .unwrap()
        .query_one("SELECT status FROM orders WHERE id = $1", &[&order])
        .await
        .unwrap()
        .get(0)
}

async fn assert_resolved(app: &TestApp) {
    let db = app.pg().await.unwrap();
    invariants::assert_all(&db).await;
    let open = invariants::all_orders_final(&db).await.unwrap();
    assert!(open.is_empty(), "{open:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_failpoint_holds_the_order_and_recovery_resolves_it() {
    let app = TestApp::start_opts(Options {
        instances: 1,
        failpoints: true,
        ..Options::default()
    })
    .await
    .unwrap();
    let (a, b) = (product(&app, 2_000, 10).await, product(&app, 3_000, 10).await);
    let cases = [
        ("after-create", "CANCELLED"),
        ("after-reserve", "CANCELLED"),
        ("after-coupon", "CANCELLED"),
        ("after-debit", "PAID"),
    ];
    for (i, (point, resolved)) in cases.into_iter().enumerate() {
        let user = 100 + i as i64;
        fund(&app, user, 50_000).await;
        let coupon = user_coupon(&app, user).await;
        let body = json!({"items": [{"productId": a, "quantity": 1}, {"productId": b, "quantity": 2}], "userCouponId": coupon});
        let reply = place(
            &app,
            app.base_url(),
            user,
            &format!("hold-{point}"),
            &body,
            Some(point),
        )
        .await;
        assert_eq!(reply.status, 202, "{point}: {}", reply.text);
        let order = reply.body["orderId"].as_i64().unwrap();
        assert_eq!(reply.body, json!({"orderId": order, "status": "ON_HOLD"}));
        assert_eq!(
            reply.header("location"),
            Some(format!("{ORDERS}/{order}").as_str())
        );
        let document = app.get("/api/v1/openapi.json", None).await.unwrap().body;
        edge_tests::contract::Contract::new(document).check("POST", ORDERS, &reply);
        let seen = app
            .get(&format!("{ORDERS}/{order}"), Some(&token(user, None)))
            .await
            .unwrap();
        assert_eq!(seen.body["status"], "ON_HOLD");
        invariants::assert_all(&app.pg().await.unwrap()).await;

        let run = recover(&app, &[]).await;
        assert_eq!(run.status, 200, "{}", run.text);
        let forward = u64::from(resolved == "PAID");
        assert_eq!(run.body, summary(1, forward, 1 - forward), "{point}");
        assert_eq!(status_of(&app, order).await, resolved, "{point}");
        assert_resolved(&app).await;
        // The repeat of the request answers with what recovery decided.
        let again = place(&app, app.base_url(), user, &format!("hold-{point}"), &body, None).await;
        assert_eq!(again.status, 202, "the stored hold is replayed: {}", again.text);
    }
    let balance_after_paid: i64 = app
        .pg()
        .await
        .unwrap()
        .query_one("SELECT balance FROM wallets WHERE user_id = 103", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(balance_after_paid, 50_000 - 8_000 + 1_000);
    // Build today's popular key now; the next rolled-forward sale must add to it.
    let before = app.get("/api/v1/products/popular?days=1", None).await.unwrap();
    let sold_b = |reply: &Reply| {
        reply.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["productId"] == b)
            .map(|i| i["soldQuantity"].as_i64().unwrap())
    };
    assert_eq!(
        sold_b(&before),
        Some(2),
        "the rolled-forward order is paid: {}",
        before.text
    );
    fund(&app, 200, 50_000).await;
    let body = json!({"items": [{"productId": b, "quantity": 3}]});
    assert_eq!(
        place(&app, app.base_url(), 200, "late", &body, Some("after-debit"))
            .await
            .status,
        202
    );
    assert_eq!(recover(&app, &[]).await.body["rolledForward"], 1);
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let counted: Option<f64> = redis::cmd("ZSCORE")
        .arg(app.redis_key(&format!("{{popular}}:{today}")))
        .arg(b)
        .query(&mut app.redis().unwrap())
        .unwrap();
    assert_eq!(
        counted,
        Some(5.0),
        "recovery's roll-forward counts the sale into the day key"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_dies_leaves_a_pending_order_that_recovery_finishes() {
    let app = TestApp::start_opts(Options {
        instances: 1,
        failpoints: true,
        env: &[("SPIN_VARIABLE_PENDING_TIMEOUT_SECONDS", "1")],
        ..Options::default()
    })
    .await
    .unwrap();
    let p = product(&app, 1_000, 10).await;
    fund(&app, 7, 10_000).await;
    fund(&app, 8, 10_000).await;
    let body = json!({"items": [{"productId": p, "quantity": 3}]});
    let died_paid = place(
        &app,
        app.base_url(),
        7,
        "crash-1",
        &body,
        Some("crash:after-debit"),
    )
    .await;
    assert_eq!(
        (died_paid.status, died_paid.text.as_str()),
        (500, ""),
        "a trapped component is Spin's empty 500"
    );
    let died_early = place(
        &app,
        app.base_url(),
        8,
        "crash-2",
        &body,
        Some("crash:after-reserve"),
    )
    .await;
    assert_eq!(died_early.status, 500);
    let pending: i64 = app
        .pg()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM orders WHERE status = 'PENDING'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pending, 2);
    // Not yet stale: recovery leaves them alone.
    assert_eq!(recover(&app, &[]).await.body["examined"], 0);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let run = recover(&app, &[]).await;
    assert_eq!(run.body, summary(2, 1, 1));
    assert_resolved(&app).await;
    let stock: i64 = app
        .pg()
        .await
        .unwrap()
        .query_one("SELECT stock FROM products WHERE id = $1", &[&p])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stock, 7, "only the debited order took stock");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_route_takes_the_lock() {
    let app = TestApp::start(1).await.unwrap();
    app.request(reqwest::Method::POST, RECOVER, None, &[], None)
        .await
        .unwrap()
        .assert_problem(401, "UNAUTHORIZED");
    app.request(reqwest::Method::POST, RECOVER, Some(&token(2, None)), &[], None)
        .await
        .unwrap()
        .assert_problem(403, "FORBIDDEN");
    let mut redis = app.redis().unwrap();
    redis::cmd("SET")
        .arg(app.redis_key("lock:order-recovery"))
        .arg("someone-else")
        .exec(&mut redis)
        .unwrap();
    recover(&app, &[])
        .await
        .assert_problem(409, "RECOVERY_IN_PROGRESS");
    let lock: String = redis::cmd("GET")
        .arg(app.redis_key("lock:order-recovery"))
        .query(&mut redis)
        .unwrap();
    assert_eq!(lock, "someone-else", "a runner only ever releases its own lock");
    redis::cmd("DEL")
        .arg(app.redis_key("lock:order-recovery"))
        .exec(&mut redis)
        .unwrap();
    let run = recover(&app, &[]).await;
    assert_eq!(run.body, summary(0, 0, 0));
    let lock: Option<String> = redis::cmd("GET")
        .arg(app.redis_key("lock:order-recovery"))
        .query(&mut redis)
        .unwrap();
    assert_eq!(lock, None, "released after the run");
}

/// Guard: the status conditions of `CONFIRM` and `UNDO` (the lock is bypassed).
#[tokio::test(flavor = "multi_thread")]
async fn two_runners_at_once_resolve_each_order_exactly_once() {
    let app = TestApp::start_opts(Options {
        instances: 2,
        failpoints: true,
        ..Options::default()
    })
    .await
    .unwrap();
    let p = product(&app, 1_000, 1_000).await;
    let mut held = 0;
    for user in 1..=40 {
        fund(&app, user, 10_000).await;
        let point = if user % 2 == 0 {
            "after-debit"
        } else {
            "after-reserve"
        };
        let reply = place(
            &app,
            app.base_url(),
            user,
            "k",
            &json!({"items": [{"productId": p, "quantity": 2}]}),
            Some(point),
        )
        .await;
        assert_eq!(reply.status, 202);
        held += 1;
    }
    let bypass = [("x-failpoint", "bypass-recovery-lock")];
    let (first, second) = tokio::join!(recover(&app, &bypass), recover(&app, &bypass));
    let total = |field: &str| first.body[field].as_u64().unwrap() + second.body[field].as_u64().unwrap();
    assert_eq!(total("rolledForward"), 20, "{} / {}", first.text, second.text);
    assert_eq!(total("rolledBack"), 20, "{} / {}", first.text, second.text);
    assert!(total("examined") >= held);
    assert_eq!(
        total("examined"),
        total("rolledForward") + total("rolledBack") + total("skipped")
    );
    assert_resolved(&app).await;
    let stock: i64 = app
        .pg()
        .await
        .unwrap()
        .query_one("SELECT stock FROM products WHERE id = $1", &[&p])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stock, 1_000 - 20 * 2, "each paid order's stock left exactly once");
}

/// Fire `count` single-unit orders from distinct users at `base`, without waiting.
fn storm(
    app: &TestApp,
    base: &str,
    users: std::ops::RangeInclusive<i64>,
    product: i64,
) -> Vec<tokio::task::JoinHandle<Option<Reply>>> {
    users
        .map(|user| {
            let url = format!("{base}{ORDERS}");
            let client = app.client.clone();
            tokio::spawn(async move {
                let key = format!("storm-{user}");
                let headers = [
                    ("content-type", "application/json"),
                    ("idempotency-key", key.as_str()),
                ];
                let body = json!({"items": [{"productId": product, "quantity": 1}]})
                    .to_string()
                    .into_bytes();
                send(
                    &client,
                    reqwest::Method::POST,
                    &url,
                    Some(&token(user, None)),
                    &headers,
                    Some(body),
                )
                .await
                .ok()
            })
        })
        .collect()
}

/// Every answer of a storm is a paid order, a hold, a business refusal or a
/// 503; returns how many of each status.
fn assert_clear_answers(replies: &[Reply]) -> std::collections::BTreeMap<u16, usize> {
    let mut tally = std::collections::BTreeMap::new();
    for reply in replies {
        match reply.status {
            201 | 202 => {}
            409 => reply.assert_problem(409, reply.body["code"].as_str().unwrap_or("?")),
            503 => reply.assert_problem(503, "SERVICE_UNAVAILABLE"),
            other => panic!("unexpected {other}: {}", reply.text),
        }
        *tally.entry(reply.status).or_default() += 1;
    }
    eprintln!("answers by status: {tally:?}");
    tally
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_crashing_under_two_hundred_orders_loses_nothing() {
    // The steps before an order's answer commit without waiting for the WAL
    // flush; only the answering statement waits. The WAL writer here sleeps
    // 10 s (its maximum), so a commit that did not wait is still in Postgres'
    // memory when the crash comes: a 201 sent after such a commit would be
    // lost, and the checks below would see it.
    let postgres = PrivatePostgres::start_with(200, &[("wal_writer_delay", "10s")]).unwrap();
    let app = TestApp::start_opts(Options {
        instances: 2,
        pg_server: Some(postgres.server_url()),
        env: &[("SPIN_VARIABLE_PENDING_TIMEOUT_SECONDS", "1")],
        ..Options::default()
    })
    .await
    .unwrap();
    let p = product(&app, 1_000, 150).await;
    for user in 1..=200 {
        fund(&app, user, 5_000).await;
    }
    let first = storm(&app, &app.hosts[0].base_url.clone(), 1..=100, p);
    let second = storm(&app, &app.hosts[1].base_url.clone(), 101..=200, p);
    // Crash once orders are being written, so some are caught between steps.
    let db = app.pg().await.unwrap();
    while db
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
        < 20
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(db);
    postgres.crash().unwrap();
    let mut replies = settle(first).await;
    replies.extend(settle(second).await);
    postgres.resume().unwrap();
    let tally = assert_clear_answers(&replies);
    assert!(
        tally.get(&201) < Some(&150),
        "the crash interrupted the storm: {tally:?}"
    );

    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let run = recover(&app, &[]).await;
    assert_eq!(run.status, 200, "{}", run.text);
    assert_resolved(&app).await;
    assert_answers_kept(&app.pg().await.unwrap(), &replies).await;

    // The sharpest case: orders answered one by one on a quiet database, then
    // a crash at once. Only the answering statement's own flush (not the WAL
    // writer, asleep for 10 s) can have put them on disk.
    let p = product(&app, 1_000, 10).await;
    let mut answered = vec![];
    for user in 1..=3 {
        let body = json!({"items": [{"productId": p, "quantity": 1}]});
        let reply = place(&app, app.base_url(), user, &format!("quiet-{user}"), &body, None).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        answered.push(reply);
    }
    postgres.crash().unwrap();
    postgres.resume().unwrap();
    let db = app.pg().await.unwrap();
    assert_answers_kept(&db, &answered).await;
    invariants::assert_all(&db).await;
}

/// Every 201 survived with its effects: the order `PAID` with its one
/// `PAYMENT` entry of the amount answered (the invariants tie stock,
/// balances and coupons to exactly these rows).
async fn assert_answers_kept(db: &tokio_postgres::Client, replies: &[Reply]) {
    for reply in replies.iter().filter(|r| r.status == 201) {
        let id = reply.body["orderId"].as_i64().unwrap();
        let row = db
            .query_opt(
                "SELECT o.status, (SELECT -sum(amount) FROM wallet_ledger
                                   WHERE order_id = o.id AND kind = 'PAYMENT')::int8 AS paid
                 FROM orders o WHERE o.id = $1",
                &[&id],
            )
            .await
            .unwrap();
        let Some(row) = row else {
            panic!("order {id} was answered 201 and is gone after the crash");
        };
        assert_eq!(
            row.get::<_, String>("status"),
            "PAID",
            "a 201 is forever (order {id})"
        );
        assert_eq!(
            row.get::<_, Option<i64>>("paid"),
            reply.body["paidAmount"].as_i64(),
            "order {id}: the debit answered is the debit kept"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_dying_under_load_loses_nothing() {
    let mut redis = PrivateRedis::start().unwrap();
    let app = TestApp::start_opts(Options {
        instances: 2,
        redis_url: Some(redis.url()),
        env: &[("SPIN_VARIABLE_PENDING_TIMEOUT_SECONDS", "1")],
        ..Options::default()
    })
    .await
    .unwrap();
    let p = product(&app, 1_000, 150).await;
    for user in 1..=200 {
        fund(&app, user, 5_000).await;
    }
    let first = storm(&app, &app.hosts[0].base_url.clone(), 1..=100, p);
    let second = storm(&app, &app.hosts[1].base_url.clone(), 101..=200, p);
    tokio::time::sleep(Duration::from_millis(40)).await;
    redis.crash();
    let mut replies = settle(first).await;
    replies.extend(settle(second).await);
    assert_clear_answers(&replies);
    // Orders go through without Redis: idempotency falls back to Postgres.
    let paid = replies.iter().filter(|r| r.status == 201).count();
    assert_eq!(paid, 150, "stock for 150, and Redis is not needed to pay");
    redis.resume().unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(recover(&app, &[]).await.status, 200);
    assert_resolved(&app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_instance_is_recovered_by_the_other_instances_cron() {
    let mut app = TestApp::start_opts(Options {
        instances: 2,
        failpoints: true,
        recovery_schedule: Some("* * * * * *"),
        env: &[("SPIN_VARIABLE_PENDING_TIMEOUT_SECONDS", "2")],
        ..Options::default()
    })
    .await
    .unwrap();
    let p = product(&app, 1_000, 1_000).await;
    for user in 1..=150 {
        fund(&app, user, 5_000).await;
    }
    // The victim gets the storm and dies in the middle of it.
    let victim = app.hosts[0].base_url.clone();
    let tasks = storm(&app, &victim, 1..=150, p);
    // Kill it once orders are being written, so some are caught between steps.
    let db = app.pg().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while db
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
        < 20
    {
        assert!(Instant::now() < deadline, "the storm never reached the database");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    app.hosts[0].kill();
    let replies = settle(tasks).await;
    for reply in &replies {
        assert!(
            matches!(reply.status, 201 | 409 | 500 | 503),
            "{}: {}",
            reply.status,
            reply.text
        );
    }
    eprintln!("{} of 150 requests answered before the kill", replies.len());
    assert!(replies.len() < 150, "the kill interrupted the storm");

    // The survivor's cron resolves whatever the victim left PENDING.
    let left_open = invariants::all_orders_final(&app.pg().await.unwrap())
        .await
        .unwrap()
        .len();
    eprintln!("orders left open by the kill: {left_open}");
    assert!(left_open > 0, "the kill caught orders between steps");
    // Both instances run recovery every second, so the victim may have died
    // holding the recovery lock: then the survivor waits for it to expire
    // (that is what its TTL is for) and resolves the orders after that.
    let orphaned_lock_millis: i64 = redis::cmd("PTTL")
        .arg(app.redis_key("lock:order-recovery"))
        .query(&mut app.redis().unwrap())
        .unwrap();
    eprintln!("recovery lock left by the victim: {orphaned_lock_millis} ms to live");
    let patience = Duration::from_secs(30) + Duration::from_millis(orphaned_lock_millis.max(0) as u64);
    let deadline = Instant::now() + patience;
    loop {
        let open = invariants::all_orders_final(&app.pg().await.unwrap())
            .await
            .unwrap();
        if open.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still open after {patience:?}: {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_resolved(&app).await;
    // A new instance joins and serves as usual.
    app.add_instance().unwrap();
    fund(&app, 999, 1_000).await;
    let base = app.hosts[2].base_url.clone();
    assert_eq!(
        place(
            &app,
            &base,
            999,
            "after",
            &json!({"items": [{"productId": p, "quantity": 1}]}),
            None
        )
        .await
        .status,
        201
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cron_trigger_runs_recovery_on_schedule() {
    let app = TestApp::start_opts(Options {
        instances: 1,
        failpoints: true,
        recovery_schedule: Some("*/1 * * * * *"),
        ..Options::default()
    })
    .await
    .unwrap();
    let p = product(&app, 1_000, 10).await;
    fund(&app, 5, 10_000).await;
    let held = place(
        &app,
        app.base_url(),
        5,
        "k",
        &json!({"items": [{"productId": p, "quantity": 1}]}),
        Some("after-reserve"),
    )
    .await;
    let order = held.body["orderId"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_of(&app, order).await == "ON_HOLD" {
        assert!(
            Instant::now() < deadline,
            "the cron trigger never resolved the held order"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status_of(&app, order).await, "CANCELLED");
    assert_resolved(&app).await;
}

/// The summary of a run that resolved orders and found nothing in Redis to repair.
fn summary(examined: u64, rolled_forward: u64, rolled_back: u64) -> serde_json::Value {
    json!({
        "examined": examined,
        "rolledForward": rolled_forward,
        "rolledBack": rolled_back,
        "skipped": 0,
        "repaired": {"couponUnitsReleased": 0, "couponHoldersRecounted": 0, "popularCountsCorrected": 0}
    })
}
