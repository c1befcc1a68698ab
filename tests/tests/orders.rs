//! SPEC §4 (scenarios 4-1…4-4) and §6 (duplicate payment), end to end on two
//! instances, each test ending with the invariant checker.

use edge_tests::fixtures::{fund, product};
use edge_tests::{invariants, send, token, Reply, TestApp};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

const ORDERS: &str = "/api/v1/orders";

/// A coupon issued to `user` through the API; returns the user coupon id.
async fn coupon(app: &TestApp, user: i64, spec: Value) -> i64 {
    let mut body = json!({"name": "c", "totalQuantity": 100, "issueStartsAt": "2020-01-01T00:00:00Z",
        "issueEndsAt": "2099-01-01T00:00:00Z", "expiresAt": "2099-06-01T00:00:00Z"});
    for (k, v) in spec.as_object().unwrap() {
        body[k] = v.clone();
    }
    let created = app
        .post_json("/api/v1/admin/coupons", Some(&token(1, Some("admin"))), &body)
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.body["id"].as_i64().unwrap();
    let issued = app
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/coupons/{id}/issue"),
            Some(&token(user, None)),
            &[],
            None,
        )
        .await
        .unwrap();
    assert_eq!(issued.status, 201, "{}", issued.text);
    issued.body["userCouponId"].as_i64().unwrap()
}

async fn order(app: &TestApp, user: i64, key: &str, body: Value) -> Reply {
    let headers = [("content-type", "application/json"), ("idempotency-key", key)];
    app.request(
        reqwest::Method::POST,
        ORDERS,
        Some(&token(user, None)),
        &headers,
        Some(body.to_string().into_bytes()),
    )
    .await
    .unwrap()
}

async fn stock_of(app: &TestApp, product: i64) -> (i64, i64) {
    let row = app
        .pg()
        .await
        .unwrap()
        .query_one("SELECT stock, reserved FROM products WHERE id = $1", &[&product])
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

async fn balance(app: &TestApp, user: i64) -> i64 {
    let db = app.pg().await.unwrap();
    db.query_opt("SELECT balance FROM wallets WHERE user_id = $1", &[&user])
        .await
        .unwrap()
        .map_or(0, |r| r.get(0))
}

async fn coupon_status(app: &TestApp, user_coupon: i64) -> (String, Option<i64>) {
    let row = app
        .pg()
        .await
        .unwrap()
        .query_one(
            "SELECT status, order_id FROM user_coupons WHERE id = $1",
            &[&user_coupon],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

async fn check_invariants(app: &TestApp) {
    invariants::assert_all(&app.pg().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn paying_without_a_coupon() {
    let app = TestApp::start(2).await.unwrap();
    let (a, b) = (product(&app, 4_500, 10).await, product(&app, 1_000, 5).await);
    fund(&app, 3, 50_000).await;
    let reply = order(
        &app,
        3,
        "o-1",
        json!({"items": [{"productId": b, "quantity": 3}, {"productId": a, "quantity": 2}]}),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let id = reply.body["orderId"].as_i64().unwrap();
    assert_eq!(
        reply.header("location"),
        Some(format!("/api/v1/orders/{id}").as_str())
    );
    assert_eq!(reply.body["status"], "PAID");
    assert_eq!(
        reply.body["items"],
        json!([
            {"productId": a, "quantity": 2, "unitPrice": 4500, "lineTotal": 9000},
            {"productId": b, "quantity": 3, "unitPrice": 1000, "lineTotal": 3000},
        ])
    );
    assert_eq!(
        (
            reply.body["totalAmount"].as_i64(),
            reply.body["discountAmount"].as_i64()
        ),
        (Some(12_000), Some(0))
    );
    assert_eq!(
        (reply.body["paidAmount"].as_i64(), reply.body["balance"].as_i64()),
        (Some(12_000), Some(38_000))
    );
    assert!(reply.body["paidAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(stock_of(&app, a).await, (8, 0));
    assert_eq!(stock_of(&app, b).await, (2, 0));

    let ledger = app
        .get("/api/v1/wallet/transactions?limit=1", Some(&token(3, None)))
        .await
        .unwrap();
    assert_eq!(ledger.body["items"][0]["type"], "PAYMENT");
    assert_eq!(ledger.body["items"][0]["amount"], -12_000);
    assert_eq!(ledger.body["items"][0]["orderId"], id);

    let popular = app.get("/api/v1/products/popular?days=1", None).await.unwrap();
    let ranked: Vec<(i64, i64)> = popular.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["productId"].as_i64().unwrap(),
                i["soldQuantity"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ranked,
        vec![(b, 3), (a, 2)],
        "the sale counts for popular products"
    );

    let detail = app
        .get(&format!("{ORDERS}/{id}"), Some(&token(3, None)))
        .await
        .unwrap();
    assert_eq!(detail.status, 200);
    for field in [
        "orderId",
        "status",
        "items",
        "totalAmount",
        "discountAmount",
        "paidAmount",
        "balance",
        "paidAt",
    ] {
        assert_eq!(detail.body[field], reply.body[field], "{field}");
    }
    assert!(detail.body["createdAt"].is_string());
    assert_eq!(detail.body["userCouponId"], Value::Null);
    app.get(&format!("{ORDERS}/{id}"), Some(&token(4, None)))
        .await
        .unwrap()
        .assert_problem(404, "ORDER_NOT_FOUND");
    app.get(&format!("{ORDERS}/{id}"), None)
        .await
        .unwrap()
        .assert_problem(401, "UNAUTHORIZED");
    check_invariants(&app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn paying_with_fixed_and_rate_coupons() {
    let app = TestApp::start(1).await.unwrap();
    let p = product(&app, 9_999, 100).await;
    fund(&app, 5, 100_000).await;
    let fixed = coupon(
        &app,
        5,
        json!({"discountType": "FIXED", "discountValue": 3000, "minOrderAmount": 10000}),
    )
    .await;
    let rate = coupon(
        &app,
        5,
        json!({"discountType": "RATE", "discountValue": 15, "maxDiscount": 2000}),
    )
    .await;
    let small_rate = coupon(&app, 5, json!({"discountType": "RATE", "discountValue": 15})).await;

    let with_fixed = order(
        &app,
        5,
        "f",
        json!({"items": [{"productId": p, "quantity": 2}], "userCouponId": fixed}),
    )
    .await;
    assert_eq!(with_fixed.status, 201, "{}", with_fixed.text);
    assert_eq!(with_fixed.body["discountAmount"], 3_000);
    assert_eq!(with_fixed.body["paidAmount"], 19_998 - 3_000);
    let order_id = with_fixed.body["orderId"].as_i64().unwrap();
    assert_eq!(
        coupon_status(&app, fixed).await,
        ("USED".to_owned(), Some(order_id))
    );
    let mine = app
        .get("/api/v1/me/coupons", Some(&token(5, None)))
        .await
        .unwrap();
    let used = mine.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["userCouponId"] == fixed)
        .unwrap()
        .clone();
    assert_eq!(
        (used["status"].as_str(), used["orderId"].as_i64()),
        (Some("USED"), Some(order_id))
    );

    let with_rate = order(
        &app,
        5,
        "r",
        json!({"items": [{"productId": p, "quantity": 2}], "userCouponId": rate}),
    )
    .await;
    assert_eq!(
        with_rate.body["discountAmount"], 2_000,
        "15% of 19,998 is 2,999, capped at 2,000"
    );
    let floored = order(
        &app,
        5,
        "s",
        json!({"items": [{"productId": p, "quantity": 1}], "userCouponId": small_rate}),
    )
    .await;
    assert_eq!(floored.body["discountAmount"], 1_499, "floor(9,999 × 15 / 100)");
    assert_eq!(balance(&app, 5).await, 100_000 - 16_998 - 17_998 - 8_500);
    let detail = app
        .get(&format!("{ORDERS}/{order_id}"), Some(&token(5, None)))
        .await
        .unwrap();
    assert_eq!(detail.body["userCouponId"], fixed);
    check_invariants(&app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn each_business_failure_leaves_everything_as_it_was() {
    let app = TestApp::start(2).await.unwrap();
    let (a, b) = (product(&app, 5_000, 10).await, product(&app, 1_000, 3).await);
    fund(&app, 7, 12_000).await;
    let fixed = coupon(
        &app,
        7,
        json!({"discountType": "FIXED", "discountValue": 1000, "minOrderAmount": 20000}),
    )
    .await;
    let someone_elses = coupon(&app, 8, json!({"discountType": "FIXED", "discountValue": 1000})).await;
    let expired = coupon(&app, 7, json!({"discountType": "FIXED", "discountValue": 1000})).await;
    app.pg().await.unwrap()
        .execute("UPDATE coupons SET expires_at = now() - interval '1 second', issue_ends_at = now() - interval '1 day', issue_starts_at = now() - interval '2 days' WHERE id = (SELECT coupon_id FROM user_coupons WHERE id = $1)", &[&expired])
        .await
        .unwrap();
    let used = coupon(&app, 7, json!({"discountType": "FIXED", "discountValue": 1000})).await;
    assert_eq!(
        order(
            &app,
            7,
            "use-it",
            json!({"items": [{"productId": b, "quantity": 1}], "userCouponId": used})
        )
        .await
        .status,
        201
    );
    let before = (
        stock_of(&app, a).await,
        stock_of(&app, b).await,
        balance(&app, 7).await,
    );

    let cases = [
        (
            json!({"items": [{"productId": a, "quantity": 3}]}),
            409,
            "INSUFFICIENT_BALANCE",
        ),
        (
            json!({"items": [{"productId": a, "quantity": 1}, {"productId": b, "quantity": 3}]}),
            409,
            "OUT_OF_STOCK",
        ),
        (
            json!({"items": [{"productId": a, "quantity": 2}], "userCouponId": fixed}),
            409,
            "COUPON_MIN_ORDER_NOT_MET",
        ),
        (
            json!({"items": [{"productId": a, "quantity": 1}], "userCouponId": someone_elses}),
            404,
            "COUPON_NOT_FOUND",
        ),
        (
            json!({"items": [{"productId": a, "quantity": 1}], "userCouponId": expired}),
            409,
            "COUPON_EXPIRED",
        ),
        (
            json!({"items": [{"productId": a, "quantity": 1}], "userCouponId": used}),
            409,
            "COUPON_ALREADY_USED",
        ),
        (
            json!({"items": [{"productId": a, "quantity": 1}, {"productId": 999_999, "quantity": 1}]}),
            404,
            "PRODUCT_NOT_FOUND",
        ),
        // Reserved, coupon taken, then the wallet says no: both are given back.
        (
            json!({"items": [{"productId": a, "quantity": 4}], "userCouponId": fixed}),
            409,
            "INSUFFICIENT_BALANCE",
        ),
    ];
    for (i, (body, status, code)) in cases.into_iter().enumerate() {
        let reply = order(&app, 7, &format!("fail-{i}"), body).await;
        reply.assert_problem(status, code);
        if code == "OUT_OF_STOCK" {
            assert_eq!(reply.body["productId"], b, "{}", reply.text);
        }
        if code == "PRODUCT_NOT_FOUND" {
            assert_eq!(reply.body["productId"], 999_999);
        }
        let after = (
            stock_of(&app, a).await,
            stock_of(&app, b).await,
            balance(&app, 7).await,
        );
        assert_eq!(after, before, "{code} left something behind");
        assert_eq!(
            coupon_status(&app, fixed).await,
            ("ISSUED".to_owned(), None),
            "{code}"
        );
        check_invariants(&app).await;
    }
    // Failed orders exist and are listed — all but the one refused for
    // lack of stock, which Postgres' read refused without writing an order
    // (SPEC §4, the sold-out gate).
    let listed = app
        .get("/api/v1/orders?limit=100", Some(&token(7, None)))
        .await
        .unwrap();
    let statuses: Vec<&str> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "FAILED").count(),
        7,
        "{statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&"PAID"), "newest first");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_orders_are_rejected_before_anything_happens() {
    let app = TestApp::start(1).await.unwrap();
    let (p, pricey) = (
        product(&app, 1_000, 10).await,
        product(&app, i64::MAX / 500, 10).await,
    );
    let too_many: Vec<Value> = (1..=51)
        .map(|i| json!({"productId": 1_000_000 + i, "quantity": 1}))
        .collect();
    let cases = [
        json!({"items": []}),
        json!({"items": [{"productId": p, "quantity": 0}]}),
        json!({"items": [{"productId": p, "quantity": 1001}]}),
        json!({"items": [{"productId": p, "quantity": 1}, {"productId": p, "quantity": 2}]}),
        json!({"items": [{"productId": p, "quantity": 1.5}]}),
        json!({"items": [{"productId": "x", "quantity": 1}]}),
        json!({"items": too_many}),
        json!({"items": [{"productId": pricey, "quantity": 1000}]}),
        json!({"items": [{"productId": p, "quantity": 1}], "coupon": 3}),
    ];
    for (i, body) in cases.into_iter().enumerate() {
        order(&app, 2, &format!("bad-{i}"), body.clone())
            .await
            .assert_problem(400, "INVALID_REQUEST");
    }
    let no_key = app
        .request(
            reqwest::Method::POST,
            ORDERS,
            Some(&token(2, None)),
            &[],
            Some(br#"{"items":[]}"#.to_vec()),
        )
        .await
        .unwrap();
    no_key.assert_problem(400, "IDEMPOTENCY_KEY_REQUIRED");
    app.post_json(ORDERS, None, &json!({"items": []}))
        .await
        .unwrap()
        .assert_problem(401, "UNAUTHORIZED");
    let count: i64 = app
        .pg()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0);
    // A 400 is not stored: the key is still free, also when the total
    // proved too large only once the prices were read (after its claim).
    fund(&app, 2, 5_000).await;
    for key in ["bad-0", "bad-7"] {
        let reply = order(&app, 2, key, json!({"items": [{"productId": p, "quantity": 1}]})).await;
        assert_eq!(reply.status, 201, "{key}: {}", reply.text);
    }
}

/// Fire `bodies` at once, each with its own user and key, over the instances.
async fn race(app: &TestApp, requests: Vec<(i64, String, Value)>) -> Vec<Reply> {
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|(user, key, body)| {
            let url = format!("{}{ORDERS}", app.base_url());
            let client = app.client.clone();
            tokio::spawn(async move {
                let headers = [
                    ("content-type", "application/json"),
                    ("idempotency-key", key.as_str()),
                ];
                let bytes = Some(body.to_string().into_bytes());
                send(
                    &client,
                    reqwest::Method::POST,
                    &url,
                    Some(&token(user, None)),
                    &headers,
                    bytes,
                )
                .await
                .unwrap()
            })
        })
        .collect();
    futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

fn tally(replies: &[Reply]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for reply in replies {
        let key = format!("{} {}", reply.status, reply.body["code"].as_str().unwrap_or(""));
        *counts.entry(key.trim().to_owned()).or_default() += 1;
    }
    counts
}

/// Guard: the conditional reservation `stock - reserved >= q` (`RESERVE`).
#[tokio::test(flavor = "multi_thread")]
async fn five_hundred_buyers_never_oversell_fifty_units() {
    let app = TestApp::start(2).await.unwrap();
    let p = product(&app, 1_000, 50).await;
    for user in 1..=500 {
        fund(&app, user, 10_000).await;
    }
    let replies = race(
        &app,
        (1..=500)
            .map(|u| {
                (
                    u,
                    format!("buy-{u}"),
                    json!({"items": [{"productId": p, "quantity": 1}]}),
                )
            })
            .collect(),
    )
    .await;
    let counts = tally(&replies);
    assert_eq!(counts.get("201"), Some(&50), "{counts:?}");
    assert_eq!(counts.get("409 OUT_OF_STOCK"), Some(&450), "{counts:?}");
    assert_eq!(stock_of(&app, p).await, (0, 0));
    check_invariants(&app).await;
}

/// Guard: the conditional debit `balance >= amount` (`DEBIT`).
#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_orders_cannot_spend_ten_orders_of_money() {
    let app = TestApp::start(2).await.unwrap();
    let p = product(&app, 3_000, 1_000).await;
    fund(&app, 21, 30_000).await;
    let replies = race(
        &app,
        (1..=100)
            .map(|i| {
                (
                    21,
                    format!("spend-{i}"),
                    json!({"items": [{"productId": p, "quantity": 1}]}),
                )
            })
            .collect(),
    )
    .await;
    let counts = tally(&replies);
    assert_eq!(counts.get("201"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("409 INSUFFICIENT_BALANCE"), Some(&90), "{counts:?}");
    assert_eq!(balance(&app, 21).await, 0);
    assert_eq!(stock_of(&app, p).await, (990, 0));
    check_invariants(&app).await;
}

/// Guard: the conditional `ISSUED → USED` of the coupon (`TAKE_COUPON`).
#[tokio::test(flavor = "multi_thread")]
async fn twenty_orders_racing_for_one_coupon() {
    let app = TestApp::start(2).await.unwrap();
    let p = product(&app, 10_000, 100).await;
    fund(&app, 31, 1_000_000).await;
    let c = coupon(&app, 31, json!({"discountType": "FIXED", "discountValue": 4000})).await;
    let replies = race(
        &app,
        (1..=20)
            .map(|i| {
                (
                    31,
                    format!("c-{i}"),
                    json!({"items": [{"productId": p, "quantity": 1}], "userCouponId": c}),
                )
            })
            .collect(),
    )
    .await;
    let counts = tally(&replies);
    assert_eq!(counts.get("201"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("409 COUPON_ALREADY_USED"), Some(&19), "{counts:?}");
    let paid = replies.iter().find(|r| r.status == 201).unwrap();
    assert_eq!(paid.body["discountAmount"], 4_000);
    assert_eq!(balance(&app, 31).await, 1_000_000 - 6_000);
    assert_eq!(
        stock_of(&app, p).await,
        (99, 0),
        "the 19 losers released their reservations"
    );
    check_invariants(&app).await;
}

/// Guards: the Redis claim and the unique (user, key) on orders.
#[tokio::test(flavor = "multi_thread")]
async fn fifty_identical_requests_make_one_order_and_one_payment() {
    let app = TestApp::start(2).await.unwrap();
    let p = product(&app, 2_000, 100).await;
    fund(&app, 41, 100_000).await;
    let body = json!({"items": [{"productId": p, "quantity": 2}]});
    let replies = race(
        &app,
        (0..50)
            .map(|_| (41, "same-key".to_owned(), body.clone()))
            .collect(),
    )
    .await;
    let created: HashSet<&str> = replies
        .iter()
        .filter(|r| r.status == 201)
        .map(|r| r.text.as_str())
        .collect();
    assert_eq!(created.len(), 1, "every 201 is the same order");
    for reply in &replies {
        if reply.status != 201 {
            reply.assert_problem(409, "REQUEST_IN_PROGRESS");
        }
    }
    let db = app.pg().await.unwrap();
    let orders: i64 = db
        .query_one("SELECT count(*) FROM orders WHERE user_id = 41", &[])
        .await
        .unwrap()
        .get(0);
    let payments: i64 = db
        .query_one(
            "SELECT count(*) FROM wallet_ledger WHERE user_id = 41 AND kind = 'PAYMENT'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!((orders, payments), (1, 1));
    assert_eq!(balance(&app, 41).await, 96_000);
    check_invariants(&app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn repeats_are_answered_from_postgres_when_redis_lost_the_key() {
    let app = TestApp::start(2).await.unwrap();
    let p = product(&app, 2_000, 100).await;
    fund(&app, 51, 10_000).await;
    let paid = order(
        &app,
        51,
        "k-paid",
        json!({"items": [{"productId": p, "quantity": 1}]}),
    )
    .await;
    let failed = order(
        &app,
        51,
        "k-failed",
        json!({"items": [{"productId": p, "quantity": 50}]}),
    )
    .await;
    failed.assert_problem(409, "INSUFFICIENT_BALANCE");
    redis::cmd("FLUSHDB").exec(&mut app.redis().unwrap()).unwrap();

    let again = order(
        &app,
        51,
        "k-paid",
        json!({"items": [{"productId": p, "quantity": 1}]}),
    )
    .await;
    assert_eq!((again.status, again.text.as_str()), (201, paid.text.as_str()));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let failed_again = order(
        &app,
        51,
        "k-failed",
        json!({"items": [{"productId": p, "quantity": 50}]}),
    )
    .await;
    assert_eq!(
        (failed_again.status, failed_again.text.as_str()),
        (409, failed.text.as_str())
    );
    order(
        &app,
        51,
        "k-paid",
        json!({"items": [{"productId": p, "quantity": 2}]}),
    )
    .await
    .assert_problem(422, "IDEMPOTENCY_KEY_REUSED");
    let count: i64 = app
        .pg()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM orders WHERE user_id = 51", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 2);
    assert_eq!(balance(&app, 51).await, 8_000);
    check_invariants(&app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_free_order_still_has_its_payment_entry() {
    let app = TestApp::start(1).await.unwrap();
    let p = product(&app, 3_000, 10).await;
    let c = coupon(&app, 61, json!({"discountType": "FIXED", "discountValue": 5000})).await;
    let reply = order(
        &app,
        61,
        "free",
        json!({"items": [{"productId": p, "quantity": 1}], "userCouponId": c}),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(
        (
            reply.body["discountAmount"].as_i64(),
            reply.body["paidAmount"].as_i64()
        ),
        (Some(3_000), Some(0))
    );
    assert_eq!(
        reply.body["balance"], 0,
        "a user who never charged pays 0 from a 0 balance"
    );
    let entries: i64 = app
        .pg()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM wallet_ledger WHERE user_id = 61 AND kind = 'PAYMENT' AND amount = 0",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(entries, 1);
    check_invariants(&app).await;
}
