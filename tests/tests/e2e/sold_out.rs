//! SPEC §4, the sold-out gate, end to end on every runtime: a sold-out
//! product refuses a crowd without an order written; units that come back
//! (a restock, a refund, a refused payment, recovery's roll-back) are
//! ordered again within a second under a running storm; and a mix of all of
//! them with Redis forgetting everything never oversells. The races the
//! gate closes with failure points are in `tests/tests/sold_out.rs` (host).

use super::*;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Mutex;

async fn restock(app: &TestApp, product: i64, key: &str, quantity: i64) -> Reply {
    named(
        app.request(
            Method::POST,
            &format!("/api/v1/admin/products/{product}/restock"),
            Some(&admin()),
            &[("idempotency-key", key), ("content-type", "application/json")],
            Some(json!({ "quantity": quantity }).to_string().into_bytes()),
        )
        .await
        .unwrap(),
    )
}

/// What the orders table and its id sequence look like: a refusal that
/// wrote nothing changes neither (an insert attempt takes an id even when
/// it is rolled back or does nothing).
async fn orders_written(app: &TestApp) -> (i64, i64) {
    let pg = app.pg().await.unwrap();
    let row = pg
        .query_one(
            "SELECT (SELECT count(*) FROM orders), (SELECT last_value FROM orders_id_seq)",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// A product sold out refuses two hundred concurrent orders across two
/// instances `409 OUT_OF_STOCK` naming it, and not one of them writes an
/// order or takes an order id; each refusal is its key's answer, replayed
/// as such, and the key cannot be reused for another order. A restock makes
/// it orderable again at once, and the restock is itself idempotent.
pub(super) async fn a_sold_out_product_refuses_a_crowd_without_writing_orders(runtime: Runtime) {
    let app = start(&runtime, 2, &[]).await;
    let product = new_product(&app, 1_000, 5).await;
    futures::future::join_all((1..=5).map(|user| fund(&app, user, 10_000))).await;
    for user in 1..=5 {
        paid_order(&app, user, "first-five", json!({"items": [line(product, 1)]})).await;
    }
    let before = orders_written(&app).await;

    let replies = all_at_once(200, |i| {
        let app = &app;
        async move { order(app, 100 + i as i64, "crowd", json!({"items": [line(product, 1)]})).await }
    })
    .await;
    for reply in &replies {
        reply.assert_problem(409, "OUT_OF_STOCK");
        assert_eq!(reply.body["productId"], product, "{}", reply.text);
    }
    assert_eq!(orders_written(&app).await, before, "a refusal wrote an order");
    let gate: bool = app
        .redis()
        .unwrap()
        .exists(app.redis_key(&format!("{{soldout}}:{product}")))
        .unwrap();
    assert!(gate, "the product's gate is closed in Redis");

    // Each refusal is kept for its key: replayed, and the key is spent.
    let again = order(&app, 100, "crowd", json!({"items": [line(product, 1)]})).await;
    again.assert_problem(409, "OUT_OF_STOCK");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.text, replies[0].text, "replayed byte for byte");
    let other = order(&app, 100, "crowd", json!({"items": [line(product, 2)]})).await;
    other.assert_problem(422, "IDEMPOTENCY_KEY_REUSED");

    // A restock reopens it: the next order is paid, and the restock is
    // answered once per key.
    let restocked = restock(&app, product, "spring-delivery", 3).await;
    assert_eq!(restocked.status, 200, "{}", restocked.text);
    assert_eq!(restocked.body["stock"], 3);
    let replayed = restock(&app, product, "spring-delivery", 3).await;
    assert_eq!(replayed.status, 200);
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(replayed.body, restocked.body);
    restock(&app, product, "spring-delivery", 4)
        .await
        .assert_problem(422, "IDEMPOTENCY_KEY_REUSED");
    fund(&app, 101, 10_000).await;
    paid_order(&app, 101, "after-restock", json!({"items": [line(product, 1)]})).await;
    assert_eq!(stock_of(&app, product).await, 2);
    check_invariants(&app).await;
}

/// Restock input errors are the client's: `400` naming the field, `404` for
/// a product that does not exist, `403` for a non-admin, `400` without a key.
pub(super) async fn restocks_refuse_what_a_careful_client_would_not_send(runtime: Runtime) {
    let app = start(&runtime, 1, &[]).await;
    let product = new_product(&app, 1_000, 5).await;
    for (body, field) in [
        (json!({"quantity": 0}), "quantity"),
        (json!({"quantity": 1_000_001}), "quantity"),
        (json!({"quantity": "3"}), "quantity"),
        (json!({"quantity": 3, "note": "x"}), "note"),
        (json!({}), "quantity"),
    ] {
        let reply = named(
            app.request(
                Method::POST,
                &format!("/api/v1/admin/products/{product}/restock"),
                Some(&admin()),
                &[("idempotency-key", "k"), ("content-type", "application/json")],
                Some(body.to_string().into_bytes()),
            )
            .await
            .unwrap(),
        );
        reply.assert_problem(400, "INVALID_REQUEST");
        assert!(
            reply.body["detail"].as_str().unwrap().contains(field),
            "{}",
            reply.text
        );
    }
    restock(&app, 999_999, "k", 1)
        .await
        .assert_problem(404, "PRODUCT_NOT_FOUND");
    let no_key = named(
        app.post_json(
            &format!("/api/v1/admin/products/{product}/restock"),
            Some(&admin()),
            &json!({"quantity": 1}),
        )
        .await
        .unwrap(),
    );
    no_key.assert_problem(400, "IDEMPOTENCY_KEY_REQUIRED");
    let not_admin = call(
        &app,
        Method::POST,
        &format!("/api/v1/admin/products/{product}/restock"),
        Some(7),
        &[("idempotency-key", "k")],
        Some(json!({"quantity": 1})),
    )
    .await;
    not_admin.assert_problem(403, "FORBIDDEN");
    // A stock the counter cannot hold is refused, and adds nothing.
    let huge = new_product(&app, 1_000, i64::MAX - 10).await;
    restock(&app, huge, "k", 11)
        .await
        .assert_problem(400, "INVALID_REQUEST");
    assert_eq!(stock_of(&app, huge).await, i64::MAX - 10);
    assert_eq!(stock_of(&app, product).await, 5);
    check_invariants(&app).await;
}

/// Orders for one unit of `product`, sixteen at a time over the instances,
/// by users 1–40 (funded by the caller), while `running`; every answer kept
/// with when it came.
struct Storm {
    running: AtomicBool,
    stopped: AtomicBool,
    answers: Mutex<Vec<(Instant, Reply)>>,
    sent: AtomicI64,
}

impl Storm {
    fn new() -> Storm {
        Storm {
            running: AtomicBool::new(true),
            stopped: AtomicBool::new(false),
            answers: Mutex::new(Vec::new()),
            sent: AtomicI64::new(0),
        }
    }

    async fn run(&self, app: &TestApp, product: i64) {
        futures::future::join_all((0..16).map(|_| async {
            while !self.stopped.load(Ordering::SeqCst) {
                if !self.running.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                let n = self.sent.fetch_add(1, Ordering::SeqCst);
                let user = 1 + n % 40;
                let reply = order(
                    app,
                    user,
                    &format!("storm-{n}"),
                    json!({"items": [line(product, 1)]}),
                )
                .await;
                assert!(
                    reply.status == 201 || reply.body["code"] == "OUT_OF_STOCK",
                    "{}: {}",
                    reply.status,
                    reply.text
                );
                self.answers.lock().unwrap().push((Instant::now(), reply));
            }
        }))
        .await;
    }

    /// Wait until the storm was refused after `since` (the gate closed).
    async fn until_refused(&self, since: Instant) {
        self.until(since, "refused", |reply| reply.status == 409).await;
    }

    /// How long after a release that began at `began` and was answered at
    /// `answered` the storm's first paid order since `began` was answered
    /// (zero when the storm had it before the release's own answer).
    async fn orderable_after(&self, began: Instant, answered: Instant) -> Duration {
        let paid = self.until(began, "paid", |reply| reply.status == 201).await;
        paid.saturating_duration_since(answered)
    }

    async fn until(&self, since: Instant, what: &str, wanted: impl Fn(&Reply) -> bool) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let seen = self
                .answers
                .lock()
                .unwrap()
                .iter()
                .find(|(at, reply)| *at > since && wanted(reply))
                .map(|(at, _)| *at);
            if let Some(at) = seen {
                return at;
            }
            let sent = self.sent.load(Ordering::SeqCst);
            assert!(
                Instant::now() < deadline,
                "the storm was never {what} ({sent} orders sent)"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// An order the storm paid for (to refund).
    fn a_paid_order(&self) -> i64 {
        self.answers
            .lock()
            .unwrap()
            .iter()
            .find_map(|(_, reply)| (reply.status == 201).then(|| reply.body["orderId"].as_i64().unwrap()))
            .expect("the storm paid for an order")
    }

    /// Pause the storm and wait for its requests in flight to end.
    async fn pause(&self) {
        self.running.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Units that come back make a sold-out product orderable again within a
/// second (SPEC §4), with a storm of orders running on two instances the
/// whole time: a restock, a refund, a payment refused after its reserve
/// (its order's second line held back by the test while the storm closes
/// the gate)
/// and recovery rolling back an order put on hold (by a deadlock). Each is
/// timed from its own answer to the storm's first paid order after it.
pub(super) async fn units_that_come_back_are_ordered_again_within_a_second(runtime: Runtime) {
    let app = start(&runtime, 2, &[]).await;
    let (product, second) = (
        new_product(&app, 1_000, 2).await,
        new_product(&app, 1_000, 5).await,
    );
    futures::future::join_all((1..=40).map(|user| fund(&app, user, 100_000))).await;
    let (poor, deadlocked) = (90, 91);
    charge(&app, poor, "a-little", 500).await;
    fund(&app, deadlocked, 10_000).await;
    let storm = Storm::new();
    let mut waits = Vec::new();

    let phases = async {
        storm.until_refused(Instant::now()).await;

        // A restock.
        let began = Instant::now();
        let restocked = restock(&app, product, "delivery", 1).await;
        assert_eq!(restocked.status, 200, "{}", restocked.text);
        waits.push(("restock", storm.orderable_after(began, Instant::now()).await));
        storm.until_refused(Instant::now()).await;

        // A refund.
        let paid = storm.a_paid_order();
        let began = Instant::now();
        let refunded = refund(&app, paid, "one-back", refund_lines(&[(product, 1)])).await;
        assert_eq!(refunded.status, 201, "{}", refunded.text);
        waits.push(("refund", storm.orderable_after(began, Instant::now()).await));
        storm.until_refused(Instant::now()).await;

        // A payment refused after its reserve: the poor buyer's order holds
        // the unit while its second line waits on a row the test holds, and
        // the storm, refused, closes the gate.
        storm.pause().await;
        assert_eq!(restock(&app, product, "for-the-poor", 1).await.status, 200);
        let mut holder = app.pg().await.unwrap();
        let held = holder.transaction().await.unwrap();
        held.execute(
            "SELECT 1 FROM products WHERE id = $1 FOR NO KEY UPDATE",
            &[&second],
        )
        .await
        .unwrap();
        let refused = async {
            let body = json!({"items": [line(product, 1), line(second, 1)]});
            let reply = order(&app, poor, "cannot-pay", body).await;
            reply.assert_problem(409, "INSUFFICIENT_BALANCE");
            Instant::now()
        };
        let holding = async {
            until_waiting_on_locks(&app, 1).await;
            storm.running.store(true, Ordering::SeqCst);
            storm.until_refused(Instant::now()).await;
            let began = Instant::now();
            held.rollback().await.unwrap();
            began
        };
        let (answered, began) = tokio::join!(refused, holding);
        waits.push(("refused payment", storm.orderable_after(began, answered).await));
        storm.until_refused(Instant::now()).await;

        // Recovery rolling back an order a deadlock put on hold.
        storm.pause().await;
        assert_eq!(restock(&app, product, "for-the-held", 1).await.status, 200);
        let order_id = held_by_a_deadlock(&app, deadlocked, product).await;
        storm.running.store(true, Ordering::SeqCst);
        storm.until_refused(Instant::now()).await;
        let began = Instant::now();
        let run = recover_now(&app).await;
        assert_eq!(run.status, 200, "{}", run.text);
        assert_eq!(run.body["rolledBack"], 1, "{}", run.text);
        waits.push((
            "recovery roll-back",
            storm.orderable_after(began, Instant::now()).await,
        ));
        let held = get(&app, &format!("/api/v1/orders/{order_id}"), Some(deadlocked)).await;
        assert_eq!(held.body["status"], "CANCELLED");

        storm.stopped.store(true, Ordering::SeqCst);
    };
    tokio::join!(storm.run(&app, product), phases);
    println!("orderable again after: {waits:?}");
    for (release, wait) in &waits {
        assert!(
            *wait <= Duration::from_secs(1),
            "after a {release} the product was refused for {wait:?}"
        );
    }
    check_invariants(&app).await;
}

/// An order of one unit of `product` by `buyer`, put on hold by a deadlock
/// (as in the cron scenario): it holds the unit until recovery ends it.
async fn held_by_a_deadlock(app: &TestApp, buyer: i64, product: i64) -> i64 {
    let mut blocker = app.pg().await.unwrap();
    blocker
        .batch_execute("SET deadlock_timeout = '30s'")
        .await
        .unwrap();
    let tx = blocker.transaction().await.unwrap();
    tx.execute("SELECT 1 FROM wallets WHERE user_id = $1 FOR UPDATE", &[&buyer])
        .await
        .unwrap();
    let placing = order(app, buyer, "held", json!({"items": [line(product, 1)]}));
    let deadlock = async {
        until_waiting_on_locks(app, 1).await;
        let pending: i64 = tx
            .query_one(
                "SELECT id FROM orders WHERE user_id = $1 AND status = 'PENDING'",
                &[&buyer],
            )
            .await
            .unwrap()
            .get(0);
        // Postgres aborts the order's debit; let go so it can be held.
        tx.execute("SELECT 1 FROM orders WHERE id = $1 FOR UPDATE", &[&pending])
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        pending
    };
    let (reply, pending) = tokio::join!(placing, deadlock);
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(reply.body["orderId"], pending);
    pending
}

/// Storms, releases, refunds, restocks and Redis forgetting everything
/// mid-sale, all at once on two instances: never an oversold unit, never a
/// server error, and every invariant (stock counting restocks) after.
pub(super) async fn a_mix_of_storms_releases_refunds_restocks_and_a_redis_flush_never_oversells(
    runtime: Runtime,
) {
    let app = start(&runtime, 2, &[]).await;
    let product = new_product(&app, 1_000, 30).await;
    futures::future::join_all((1..=60).map(|user| fund(&app, user, 5_000))).await;
    let orders = all_at_once(300, |i| {
        let app = &app;
        async move {
            // Users 61–80 have no money: their reserves are given back.
            let user = 1 + (i as i64 % 80);
            let quantity = 1 + (i as i64 % 3);
            order(
                app,
                user,
                &format!("mix-{i}"),
                json!({"items": [line(product, quantity)]}),
            )
            .await
        }
    });
    let restocks = async {
        for i in 0..5 {
            tokio::time::sleep(Duration::from_millis(40)).await;
            assert_eq!(restock(&app, product, &format!("r-{i}"), 10).await.status, 200);
        }
    };
    let flush = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        forget_redis(&app);
    };
    let (orders, (), ()) = tokio::join!(orders, restocks, flush);
    let mut refunds = Vec::new();
    for reply in &orders {
        match (reply.status, reply.body["code"].as_str()) {
            (201, _) => refunds.push(reply.body["orderId"].as_i64().unwrap()),
            (409, Some("OUT_OF_STOCK" | "INSUFFICIENT_BALANCE" | "REQUEST_IN_PROGRESS")) => {}
            other => panic!("{other:?}: {}", reply.text),
        }
    }
    assert!(!refunds.is_empty(), "some orders were paid");
    // Refunds give units back while a second storm runs.
    let refunded = futures::future::join_all(refunds.iter().take(10).map(|order_id| {
        let app = &app;
        async move { refund(app, *order_id, "back", refund_lines(&[(product, 1)])).await }
    }));
    let second = all_at_once(200, |i| {
        let app = &app;
        async move {
            order(
                app,
                1 + (i as i64 % 60),
                &format!("again-{i}"),
                json!({"items": [line(product, 1)]}),
            )
            .await
        }
    });
    let (refunded, second) = tokio::join!(refunded, second);
    for reply in refunded {
        assert_eq!(reply.status, 201, "{}", reply.text);
    }
    for reply in &second {
        assert!(
            reply.status == 201
                || matches!(
                    reply.body["code"].as_str(),
                    Some("OUT_OF_STOCK" | "INSUFFICIENT_BALANCE")
                ),
            "{}: {}",
            reply.status,
            reply.text
        );
    }
    check_invariants(&app).await;
}

/// A gate's refusal is kept as its key's answer, so it must never answer a
/// key that already made an order: after Redis lost every key (and with them
/// its records of which keys made orders), a repeat of a paid order's key is
/// answered with that order from Postgres — while the product is sold out
/// and its gate closed again — and the refusals go on writing nothing.
pub(super) async fn a_key_that_made_an_order_is_never_refused_at_the_gate(runtime: Runtime) {
    let app = start(&runtime, 1, &[]).await;
    let product = new_product(&app, 1_000, 2).await;
    fund(&app, 1, 10_000).await;
    fund(&app, 2, 10_000).await;
    let body = json!({"items": [line(product, 1)]});
    let paid = order(&app, 1, "paid-before", body.clone()).await;
    assert_eq!(paid.status, 201, "{}", paid.text);
    paid_order(&app, 2, "last-unit", body.clone()).await;

    forget_redis(&app);
    // Sold out: the gate closes again, from Postgres.
    for user in 3..=6 {
        order(&app, user, "too-late", body.clone())
            .await
            .assert_problem(409, "OUT_OF_STOCK");
    }
    let gate: bool = app
        .redis()
        .unwrap()
        .exists(app.redis_key(&format!("{{soldout}}:{product}")))
        .unwrap();
    assert!(gate, "the gate closed again");
    let before = orders_written(&app).await;

    let repeat = order(&app, 1, "paid-before", body.clone()).await;
    assert_eq!(repeat.status, 201, "{}", repeat.text);
    assert_eq!(repeat.header("idempotent-replayed"), Some("true"));
    assert_eq!(repeat.body["orderId"], paid.body["orderId"]);
    order(&app, 7, "new-key", body)
        .await
        .assert_problem(409, "OUT_OF_STOCK");
    let (count, _) = orders_written(&app).await;
    assert_eq!(count, before.0, "no order written");
    check_invariants(&app).await;
}
