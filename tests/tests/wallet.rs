//! SPEC §1 (scenarios 1-1, 1-2) and the idempotency conventions, end to end.

use edge_tests::{invariants, token, Reply, TestApp};
use serde_json::{json, Value};
use std::collections::HashSet;

const CHARGES: &str = "/api/v1/wallet/charges";

async fn charge_raw(app: &TestApp, user: i64, key: Option<&str>, body: &[u8]) -> Reply {
    let token = token(user, None);
    let mut headers = vec![("content-type", "application/json")];
    if let Some(key) = key {
        headers.push(("idempotency-key", key));
    }
    app.request(
        reqwest::Method::POST,
        CHARGES,
        Some(&token),
        &headers,
        Some(body.to_vec()),
    )
    .await
    .unwrap()
}

async fn charge(app: &TestApp, user: i64, key: &str, amount: Value) -> Reply {
    charge_raw(
        app,
        user,
        Some(key),
        json!({ "amount": amount }).to_string().as_bytes(),
    )
    .await
}

async fn balance(app: &TestApp, user: i64) -> i64 {
    let reply = app.get("/api/v1/wallet", Some(&token(user, None))).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["userId"], user);
    reply.body["balance"].as_i64().unwrap()
}

async fn ledger_rows(app: &TestApp, user: i64) -> i64 {
    let db = app.pg().await.unwrap();
    db.query_one("SELECT count(*) FROM wallet_ledger WHERE user_id = $1", &[&user])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn charge_rules_and_boundaries() {
    let app = TestApp::start(1).await.unwrap();
    assert_eq!(balance(&app, 1).await, 0, "a user who never charged has 0");

    let first = charge(&app, 1, "k-1", json!(1_000)).await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.body["userId"], 1);
    assert_eq!(first.body["amount"], 1_000);
    assert_eq!(first.body["balance"], 1_000);
    assert!(uuid::Uuid::parse_str(first.body["chargeId"].as_str().unwrap()).is_ok());
    assert!(first.body["chargedAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(first.header("idempotent-replayed"), None);

    for amount in [0, -1_000, 999, 1_500, 1_000_001] {
        charge(&app, 1, &format!("unit-{amount}"), json!(amount))
            .await
            .assert_problem(400, "INVALID_CHARGE_UNIT");
    }
    charge(&app, 1, "over", json!(1_001_000))
        .await
        .assert_problem(400, "CHARGE_LIMIT_EXCEEDED");
    for bad in [
        json!(1.5),
        json!("1000"),
        json!(null),
        json!(1e20),
        json!(9_223_372_036_854_775_808u64),
    ] {
        let reply = charge(&app, 1, "typed", bad.clone()).await;
        reply.assert_problem(400, "INVALID_REQUEST");
        assert!(
            reply.body["detail"].as_str().unwrap().starts_with("amount"),
            "{bad}: {}",
            reply.text
        );
    }
    let missing = charge_raw(&app, 1, Some("missing"), b"{}").await;
    missing.assert_problem(400, "INVALID_REQUEST");
    assert!(missing.body["detail"].as_str().unwrap().contains("amount"));
    charge_raw(&app, 1, Some("broken"), b"{\"amount\":")
        .await
        .assert_problem(400, "INVALID_REQUEST");
    assert_eq!(balance(&app, 1).await, 1_000, "rejected requests change nothing");

    // Up to exactly 10,000,000, then one unit more is refused and changes nothing.
    assert_eq!(charge(&app, 1, "max-charge", json!(1_000_000)).await.status, 201);
    for i in 0..8 {
        assert_eq!(
            charge(&app, 1, &format!("fill-{i}"), json!(1_000_000))
                .await
                .status,
            201
        );
    }
    let last = charge(&app, 1, "to-the-cap", json!(999_000)).await;
    assert_eq!(last.body["balance"], 10_000_000, "{}", last.text);
    let rows_before = ledger_rows(&app, 1).await;
    charge(&app, 1, "one-more", json!(1_000))
        .await
        .assert_problem(409, "BALANCE_LIMIT_EXCEEDED");
    assert_eq!(balance(&app, 1).await, 10_000_000);
    assert_eq!(ledger_rows(&app, 1).await, rows_before);
    invariants::assert_all(&app.pg().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotency_key_semantics() {
    let app = TestApp::start(2).await.unwrap();
    charge_raw(&app, 1, None, br#"{"amount":1000}"#)
        .await
        .assert_problem(400, "IDEMPOTENCY_KEY_REQUIRED");
    let long = "k".repeat(256);
    for bad in ["", long.as_str(), "has space"] {
        charge_raw(&app, 1, Some(bad), br#"{"amount":1000}"#)
            .await
            .assert_problem(400, "INVALID_REQUEST");
    }

    // A validation failure is not stored: the key stays free.
    charge(&app, 1, "key-a", json!(999))
        .await
        .assert_problem(400, "INVALID_CHARGE_UNIT");
    let first = charge_raw(&app, 1, Some("key-a"), br#"{"amount":5000}"#).await;
    assert_eq!(first.status, 201, "{}", first.text);

    // Same key, same request (whitespace aside): the stored answer, byte for byte.
    for body in [&br#"{"amount":5000}"#[..], br#"{ "amount" : 5000 }"#] {
        let again = charge_raw(&app, 1, Some("key-a"), body).await;
        assert_eq!(again.status, 201);
        assert_eq!(again.text, first.text);
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
    }
    // Same key, different request.
    charge(&app, 1, "key-a", json!(6000))
        .await
        .assert_problem(422, "IDEMPOTENCY_KEY_REUSED");
    // The key belongs to the user: another user's same key is another charge.
    assert_eq!(charge(&app, 2, "key-a", json!(5000)).await.status, 201);
    assert_eq!(balance(&app, 1).await, 5_000);
    assert_eq!(ledger_rows(&app, 1).await, 1);

    // Business outcomes (4xx) are stored and replayed too.
    for i in 0..10 {
        charge(&app, 3, &format!("fill-{i}"), json!(1_000_000)).await;
    }
    let refused = charge(&app, 3, "refused", json!(1000)).await;
    refused.assert_problem(409, "BALANCE_LIMIT_EXCEEDED");
    app.pg()
        .await
        .unwrap()
        .execute("UPDATE wallets SET balance = 0 WHERE user_id = 3", &[])
        .await
        .unwrap();
    let replayed = charge(&app, 3, "refused", json!(1000)).await;
    assert_eq!(
        (replayed.status, replayed.text.as_str()),
        (409, refused.text.as_str())
    );
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    app.pg()
        .await
        .unwrap()
        .execute("UPDATE wallets SET balance = 10000000 WHERE user_id = 3", &[])
        .await
        .unwrap();
    invariants::assert_all(&app.pg().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_redis_key_never_charges_twice() {
    let app = TestApp::start(2).await.unwrap();
    let first = charge(&app, 7, "flushed", json!(20_000)).await;
    assert_eq!(first.status, 201);
    redis::cmd("FLUSHDB").exec(&mut app.redis().unwrap()).unwrap();

    let again = charge(&app, 7, "flushed", json!(20_000)).await;
    assert_eq!(again.status, 201, "{}", again.text);
    assert_eq!(
        again.text, first.text,
        "the answer is rebuilt from the charge in Postgres"
    );
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    redis::cmd("FLUSHDB").exec(&mut app.redis().unwrap()).unwrap();
    charge(&app, 7, "flushed", json!(30_000))
        .await
        .assert_problem(422, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(balance(&app, 7).await, 20_000);
    assert_eq!(ledger_rows(&app, 7).await, 1);
    invariants::assert_all(&app.pg().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn charges_work_exactly_once_while_redis_is_down() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (url, host) = (format!("redis://127.0.0.1:{dead}"), format!("127.0.0.1:{dead}"));
    let app = TestApp::start_with(
        1,
        &[
            ("SPIN_VARIABLE_REDIS_URL", &url),
            ("SPIN_VARIABLE_REDIS_HOST", &host),
        ],
    )
    .await
    .unwrap();
    let first = charge(&app, 9, "no-redis", json!(3_000)).await;
    assert_eq!(first.status, 201, "{}", first.text);
    let again = charge(&app, 9, "no-redis", json!(3_000)).await;
    assert_eq!((again.status, again.text.as_str()), (201, first.text.as_str()));
    assert_eq!(balance(&app, 9).await, 3_000);
    assert_eq!(ledger_rows(&app, 9).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn transactions_are_listed_newest_first_with_cursors() {
    let app = TestApp::start(1).await.unwrap();
    for i in 1..=25 {
        assert_eq!(
            charge(&app, 4, &format!("t-{i}"), json!(i * 1_000)).await.status,
            201
        );
    }
    charge(&app, 5, "other-user", json!(1_000)).await;
    let user = token(4, None);
    let mut seen = Vec::new();
    let mut path = "/api/v1/wallet/transactions?limit=10".to_owned();
    loop {
        let page = app.get(&path, Some(&user)).await.unwrap();
        assert_eq!(page.status, 200, "{}", page.text);
        seen.extend(page.body["items"].as_array().unwrap().iter().cloned());
        match page.body["nextCursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/wallet/transactions?limit=10&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25, "own entries only, each once");
    let amounts: Vec<i64> = seen.iter().map(|e| e["amount"].as_i64().unwrap()).collect();
    assert_eq!(
        amounts,
        (1..=25).rev().map(|i| i * 1_000).collect::<Vec<_>>(),
        "newest first"
    );
    assert!(seen
        .iter()
        .all(|e| e["type"] == "CHARGE" && e.get("orderId").is_none()));
    assert_eq!(seen[0]["balanceAfter"], (1..=25).sum::<i64>() * 1_000);

    app.get("/api/v1/wallet/transactions?cursor=nope", Some(&user))
        .await
        .unwrap()
        .assert_problem(400, "INVALID_REQUEST");
    for path in ["/api/v1/wallet", "/api/v1/wallet/transactions"] {
        app.get(path, None)
            .await
            .unwrap()
            .assert_problem(401, "UNAUTHORIZED");
    }
    let anonymous = app
        .post_json(CHARGES, None, &json!({"amount": 1000}))
        .await
        .unwrap();
    anonymous.assert_problem(401, "UNAUTHORIZED");
}

/// Guard: the single conditional statement that credits the wallet and writes
/// its ledger row (`CHARGE`). A read-then-write charge loses updates here.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_charges_with_distinct_keys_across_instances_all_count() {
    let app = TestApp::start(2).await.unwrap();
    let requests = (0..200).map(|i| {
        let amount = 1_000 * (1 + i % 5);
        let url = format!("{}{CHARGES}", app.base_url());
        let client = app.client.clone();
        tokio::spawn(async move {
            let key = format!("distinct-{i}");
            let token = token(11, None);
            let body = json!({ "amount": amount }).to_string().into_bytes();
            let headers = [
                ("content-type", "application/json"),
                ("idempotency-key", key.as_str()),
            ];
            let reply = edge_tests::send(
                &client,
                reqwest::Method::POST,
                &url,
                Some(&token),
                &headers,
                Some(body),
            )
            .await;
            (amount, reply.unwrap())
        })
    });
    let mut expected = 0;
    for result in futures::future::join_all(requests).await {
        let (amount, reply) = result.unwrap();
        assert_eq!(reply.status, 201, "{}", reply.text);
        expected += amount;
    }
    assert_eq!(balance(&app, 11).await, expected);
    assert_eq!(ledger_rows(&app, 11).await, 200);
    invariants::assert_all(&app.pg().await.unwrap()).await;
}

/// Guards: the Redis claim (fast path) and the unique (user, key) on the
/// ledger (backstop). With neither, this charges up to 50 times.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_with_one_key_across_instances_charge_once() {
    let app = TestApp::start(2).await.unwrap();
    let requests = (0..50).map(|_| {
        let url = format!("{}{CHARGES}", app.base_url());
        let client = app.client.clone();
        tokio::spawn(async move {
            let token = token(12, None);
            let headers = [
                ("content-type", "application/json"),
                ("idempotency-key", "the-one-key"),
            ];
            edge_tests::send(
                &client,
                reqwest::Method::POST,
                &url,
                Some(&token),
                &headers,
                Some(br#"{"amount":7000}"#.to_vec()),
            )
            .await
            .unwrap()
        })
    });
    let replies: Vec<Reply> = futures::future::join_all(requests)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let created: HashSet<&str> = replies
        .iter()
        .filter(|r| r.status == 201)
        .map(|r| r.text.as_str())
        .collect();
    assert_eq!(created.len(), 1, "every 201 is the same charge");
    for reply in &replies {
        match reply.status {
            201 => {}
            409 => reply.assert_problem(409, "REQUEST_IN_PROGRESS"),
            other => panic!("unexpected {other}: {}", reply.text),
        }
    }
    assert_eq!(balance(&app, 12).await, 7_000);
    assert_eq!(ledger_rows(&app, 12).await, 1);
    invariants::assert_all(&app.pg().await.unwrap()).await;
}
