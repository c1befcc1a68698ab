//! SPEC §8 under faults: Postgres crashing in the middle of a refund storm.
//! (The functional and concurrency scenarios run on the host and on real
//! Spin in `e2e.rs`.)

use edge_tests::fixtures::{fund, product};
use edge_tests::private::PrivatePostgres;
use edge_tests::{invariants, send, settle, token, Options, Reply, TestApp};
use serde_json::json;
use std::time::Duration;

/// A paid order of `quantity` units of `product` for `user`, through the API.
async fn paid_order(app: &TestApp, user: i64, product: i64, quantity: i64) -> i64 {
    let reply = app
        .request(
            reqwest::Method::POST,
            "/api/v1/orders",
            Some(&token(user, None)),
            &[
                ("idempotency-key", &format!("buy-{user}")),
                ("content-type", "application/json"),
            ],
            Some(
                json!({"items": [{"productId": product, "quantity": quantity}]})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.body["orderId"].as_i64().unwrap()
}

/// Odd users cancel their order; even ones get one unit refunded by an admin.
fn refund_storm(app: &TestApp, orders: &[(i64, i64)]) -> Vec<tokio::task::JoinHandle<Option<Reply>>> {
    orders
        .iter()
        .enumerate()
        .map(|(i, &(user, order))| {
            let base = app.hosts[i % app.hosts.len()].base_url.clone();
            let client = app.client.clone();
            tokio::spawn(async move {
                let (url, who, body) = if user % 2 == 1 {
                    (
                        format!("{base}/api/v1/orders/{order}/cancel"),
                        token(user, None),
                        None,
                    )
                } else {
                    let body = json!({"items": [{"productId": 1, "quantity": 1}]});
                    (
                        format!("{base}/api/v1/admin/orders/{order}/refunds"),
                        token(1, Some("admin")),
                        Some(body.to_string().into_bytes()),
                    )
                };
                let key = format!("refund-{order}");
                let headers = [
                    ("idempotency-key", key.as_str()),
                    ("content-type", "application/json"),
                ];
                send(&client, reqwest::Method::POST, &url, Some(&who), &headers, body)
                    .await
                    .ok()
            })
        })
        .collect()
}

/// Every answered refund is there in full: its row, its amount, its ledger
/// entry and the order's status as answered (the invariants then tie stock,
/// balances and coupons to exactly these rows; nothing else is partly there).
async fn assert_refunds_kept(db: &tokio_postgres::Client, replies: &[Reply]) {
    for reply in replies {
        let (refund_id, amount, status) = match reply.status {
            200 => (
                reply.body["refunds"][0]["refundId"].clone(),
                reply.body["refundedAmount"].clone(),
                reply.body["status"].clone(),
            ),
            201 => (
                reply.body["refundId"].clone(),
                reply.body["amount"].clone(),
                reply.body["orderStatus"].clone(),
            ),
            503 => {
                reply.assert_problem(503, "SERVICE_UNAVAILABLE");
                continue;
            }
            other => panic!("unexpected {other}: {}", reply.text),
        };
        let id = refund_id.as_str().unwrap().to_owned();
        let row = db
            .query_opt(
                "SELECT r.amount, o.status,
                        (SELECT l.amount FROM wallet_ledger l WHERE l.refund_id = r.id) AS entry
                 FROM refunds r JOIN orders o ON o.id = r.order_id WHERE r.id = $1::text::uuid",
                &[&id],
            )
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("refund {id} was answered and is gone after the crash"));
        assert_eq!(Some(row.get::<_, i64>("amount")), amount.as_i64(), "refund {id}");
        assert_eq!(
            row.get::<_, Option<i64>>("entry"),
            amount.as_i64(),
            "refund {id}: its REFUND entry"
        );
        assert_eq!(
            Some(row.get::<_, String>("status").as_str()),
            status.as_str(),
            "refund {id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_crashing_in_a_refund_storm_leaves_every_refund_whole_or_absent() {
    // The WAL writer sleeps 10 s: only a refund's own durable commit can have
    // put it on disk before the crash.
    let postgres = PrivatePostgres::start_with(200, &[("wal_writer_delay", "10s")]).unwrap();
    let app = TestApp::start_opts(Options {
        instances: 2,
        pg_server: Some(postgres.server_url()),
        ..Options::default()
    })
    .await
    .unwrap();
    let item = product(&app, 3_000, 1_000).await;
    assert_eq!(item, 1, "the storm refunds product 1");
    let mut orders = Vec::new();
    for user in 2..=161 {
        fund(&app, user, 10_000).await;
        orders.push((user, paid_order(&app, user, item, 3).await));
    }
    let tasks = refund_storm(&app, &orders);
    let db = app.pg().await.unwrap();
    while db
        .query_one("SELECT count(*) FROM refunds", &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
        < 15
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(db);
    postgres.crash().unwrap();
    let replies = settle(tasks).await;
    postgres.resume().unwrap();
    let answered = replies.iter().filter(|r| r.status < 300).count();
    eprintln!("{answered} of {} refunds answered before the crash", orders.len());
    assert!(answered < orders.len(), "the crash interrupted the storm");
    let db = app.pg().await.unwrap();
    assert_refunds_kept(&db, &replies).await;
    invariants::assert_all(&db).await;

    // Quiet refunds answered one by one, then a crash at once.
    let mut quiet = Vec::new();
    for &(user, order) in orders.iter().filter(|(user, _)| user % 2 == 0).take(3) {
        let reply = app
            .request(
                reqwest::Method::POST,
                &format!("/api/v1/admin/orders/{order}/refunds"),
                Some(&token(1, Some("admin"))),
                &[
                    ("idempotency-key", &format!("quiet-{user}")),
                    ("content-type", "application/json"),
                ],
                Some(
                    json!({"items": [{"productId": item, "quantity": 1}]})
                        .to_string()
                        .into_bytes(),
                ),
            )
            .await
            .unwrap();
        assert_eq!(reply.status, 201, "{}", reply.text);
        quiet.push(reply);
    }
    postgres.crash().unwrap();
    postgres.resume().unwrap();
    let db = app.pg().await.unwrap();
    assert_refunds_kept(&db, &quiet).await;
    invariants::assert_all(&db).await;
}

/// The owner's cancels and an admin's one-unit refunds of the same order, all
/// at once across two instances (also run with race windows, `./dev race`):
/// either a cancel wins before any refund (one refund of everything) or the
/// refunds share the units and every cancel is refused — never both, never a
/// unit twice.
#[tokio::test(flavor = "multi_thread")]
async fn cancels_racing_partial_refunds_never_refund_a_unit_twice() {
    let app = TestApp::start(2).await.unwrap();
    let item = product(&app, 1_000, 100).await;
    fund(&app, 7, 100_000).await;
    let order = paid_order(&app, 7, item, 10).await;
    let post = |i: usize, owner: bool| {
        let base = app.hosts[i % 2].base_url.clone();
        let client = app.client.clone();
        async move {
            let (url, who, body) = if owner {
                (
                    format!("{base}/api/v1/orders/{order}/cancel"),
                    token(7, None),
                    None,
                )
            } else {
                let body = json!({"items": [{"productId": item, "quantity": 1}]});
                (
                    format!("{base}/api/v1/admin/orders/{order}/refunds"),
                    token(1, Some("admin")),
                    Some(body.to_string().into_bytes()),
                )
            };
            let key = format!("race-{i}");
            let headers = [
                ("idempotency-key", key.as_str()),
                ("content-type", "application/json"),
            ];
            send(&client, reqwest::Method::POST, &url, Some(&who), &headers, body)
                .await
                .unwrap()
        }
    };
    let replies = futures::future::join_all((0..40).map(|i| post(i, i % 4 == 0))).await;
    let cancelled = replies.iter().filter(|r| r.status == 200).count();
    let refunded = replies.iter().filter(|r| r.status == 201).count();
    for reply in replies.iter().filter(|r| r.status >= 300) {
        assert_eq!(reply.status, 409, "{}", reply.text);
    }
    let db = app.pg().await.unwrap();
    let (units, amount): (i64, i64) = {
        let row = db
            .query_one(
                "SELECT i.refunded_quantity, o.refunded_amount FROM orders o
                 JOIN order_items i ON i.order_id = o.id WHERE o.id = $1",
                &[&order],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    match cancelled {
        1 => assert_eq!(
            (refunded, units, amount),
            (0, 10, 10_000),
            "a cancel refunds everything, alone"
        ),
        0 => assert_eq!((units, amount), (refunded as i64, 1_000 * refunded as i64)),
        _ => panic!("{cancelled} cancels succeeded"),
    }
    invariants::assert_all(&db).await;
}
