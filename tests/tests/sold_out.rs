//! SPEC §4, the sold-out gate: the races that could make it refuse a product
//! Postgres has units of, each forced with the failure points of the test
//! build, on two instances. The promise under test is the spec's: a product
//! with units is orderable again within a second, whatever interleaving.
//! (The gate end to end on every runtime: `tests/tests/e2e/sold_out.rs`.)

use edge_tests::{invariants, token, Options, Reply, TestApp};
use serde_json::json;
use std::time::{Duration, Instant};

async fn app() -> TestApp {
    TestApp::start_opts(Options {
        instances: 2,
        failpoints: true,
        ..Options::default()
    })
    .await
    .unwrap()
}

async fn product(app: &TestApp, stock: i64) -> i64 {
    let reply = app
        .post_json(
            "/api/v1/admin/products",
            Some(&token(1, Some("admin"))),
            &json!({"name": "Lamp", "price": 1_000, "stock": stock}),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.body["id"].as_i64().unwrap()
}

async fn fund(app: &TestApp, user: i64, amount: i64) {
    let reply = app
        .request(
            reqwest::Method::POST,
            "/api/v1/wallet/charges",
            Some(&token(user, None)),
            &[("idempotency-key", "fund"), ("content-type", "application/json")],
            Some(json!({ "amount": amount }).to_string().into_bytes()),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 201, "{}", reply.text);
}

async fn order(app: &TestApp, user: i64, key: &str, product: i64, failpoint: Option<&str>) -> Reply {
    let mut headers = vec![("idempotency-key", key), ("content-type", "application/json")];
    if let Some(failpoint) = failpoint {
        headers.push(("x-failpoint", failpoint));
    }
    let body = json!({"items": [{"productId": product, "quantity": 1}]});
    app.request(
        reqwest::Method::POST,
        "/api/v1/orders",
        Some(&token(user, None)),
        &headers,
        Some(body.to_string().into_bytes()),
    )
    .await
    .unwrap()
}

async fn restock(app: &TestApp, product: i64, quantity: i64) {
    let reply = app
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/admin/products/{product}/restock"),
            Some(&token(1, Some("admin"))),
            &[
                ("idempotency-key", "restock"),
                ("content-type", "application/json"),
            ],
            Some(json!({ "quantity": quantity }).to_string().into_bytes()),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text);
}

/// Wait until an order holds units of `product` (its reserve committed).
async fn until_reserved(db: &tokio_postgres::Client, product: i64) {
    while db
        .query_one("SELECT reserved FROM products WHERE id = $1", &[&product])
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 0
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A product whose one unit user 1 bought, and whose gate the next order
/// (user 2's) closed: sold out, the gate closed for 800 ms.
async fn sold_out_product(app: &TestApp) -> i64 {
    let product = product(app, 1).await;
    fund(app, 1, 100_000).await;
    assert_eq!(order(app, 1, "last-unit", product, None).await.status, 201);
    order(app, 2, "closes-the-gate", product, None)
        .await
        .assert_problem(409, "OUT_OF_STOCK");
    product
}

/// One order a probe every 50 ms for `how_long`, by rich users: when each
/// was answered and whether it was paid.
async fn probe(app: &TestApp, product: i64, first_user: i64, how_long: Duration) -> Vec<(Duration, Reply)> {
    let start = Instant::now();
    let mut answers = Vec::new();
    let mut n = 0;
    while start.elapsed() < how_long {
        let reply = order(app, first_user + n % 10, &format!("probe-{n}"), product, None).await;
        answers.push((start.elapsed(), reply));
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    answers
}

/// *A release committing while another request closes the gate.* A request
/// reads Postgres while the product is sold out, then stops (`hang:before-close`,
/// 1.5 s) before closing the gate; meanwhile a restock commits and reopens
/// it. The stale close lands after the restock and must be dropped (it
/// carries the reopen counter it read before Postgres): a close that landed
/// would refuse every order for 0.8 s while Postgres has 100 units.
#[tokio::test(flavor = "multi_thread")]
async fn a_close_read_before_a_release_never_shuts_the_product_after_it() {
    let app = app().await;
    let product = product(&app, 1).await;
    for user in 1..=11 {
        fund(&app, user, 100_000).await;
    }
    assert_eq!(order(&app, 11, "last-unit", product, None).await.status, 201);

    let stale = order(&app, 11, "stale", product, Some("hang:before-close"));
    let release_and_probe = async {
        // The stale request has read Postgres (0 units) and is stopped.
        tokio::time::sleep(Duration::from_millis(400)).await;
        restock(&app, product, 100).await;
        probe(&app, product, 1, Duration::from_millis(2_500)).await
    };
    let (stale, probes) = tokio::join!(stale, release_and_probe);
    stale.assert_problem(409, "OUT_OF_STOCK");
    let refused: Vec<_> = probes
        .iter()
        .filter(|(_, reply)| reply.status != 201)
        .map(|(at, reply)| (at, reply.status))
        .collect();
    assert!(refused.is_empty(), "refused after the restock: {refused:?}");
    assert!(probes.len() > 20, "the probes covered the stale close");
    invariants::assert_all(&app.pg().await.unwrap()).await;
}

/// *A process dying between a release and its reopening.* A buyer who cannot
/// pay holds the last unit (`hang:after-reserve`) while orders, refused,
/// keep the gate closed; the refused payment gives the unit back and its request
/// traps before reopening the gate (`crash:after-undo`). The gate's own
/// expiry must make the unit orderable within a second of the release.
#[tokio::test(flavor = "multi_thread")]
async fn a_release_whose_reopening_died_is_orderable_within_a_second() {
    let app = app().await;
    let product = product(&app, 1).await;
    for user in 1..=10 {
        fund(&app, user, 100_000).await;
    }
    let poor = 50;
    let cannot_pay = order(
        &app,
        poor,
        "cannot-pay",
        product,
        Some("hang:after-reserve,crash:after-undo"),
    );
    // Orders refused all along keep the gate closed (each one Postgres
    // refuses closes it again), so it is closed when the unit comes back.
    // They stop half a second before the release can come (the hang is
    // 1.5 s after the reserve): one still on its way at the release could
    // meet the gate just expired and buy the unit, rightly.
    let closing = async {
        until_reserved(&app.pg().await.unwrap(), product).await;
        let reserved = Instant::now();
        let mut n = 0;
        while reserved.elapsed() < Duration::from_millis(1_000) {
            order(&app, 1, &format!("refused-{n}"), product, None)
                .await
                .assert_problem(409, "OUT_OF_STOCK");
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(n > 10, "the gate was closed before the release");
    };
    let (trapped, ()) = tokio::join!(cannot_pay, closing);
    let released = Instant::now();
    assert_eq!(trapped.status, 500, "the request trapped: {}", trapped.text);
    let deadline = released + Duration::from_secs(3);
    let mut n = 0;
    let paid_after = loop {
        let reply = order(&app, 2 + n % 9, &format!("again-{n}"), product, None).await;
        if reply.status == 201 {
            break released.elapsed();
        }
        reply.assert_problem(409, "OUT_OF_STOCK");
        assert!(Instant::now() < deadline, "the unit stayed refused");
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        paid_after <= Duration::from_secs(1),
        "the released unit was refused for {paid_after:?}"
    );
    invariants::assert_all(&app.pg().await.unwrap()).await;
}

/// *A gate expiring under a crowd.* When a sold-out product's gate expires,
/// the first order is sent on to look at Postgres again and the gate closes
/// behind it for the others. Every order of a crowd arriving then is armed
/// to trap once it has read Postgres (`crash:before-close`): exactly one
/// gets that far, the rest are refused at the gate (were every order sent
/// on, each would trap).
#[tokio::test(flavor = "multi_thread")]
async fn an_expired_gate_sends_one_order_to_look_again_not_the_crowd() {
    let app = app().await;
    let product = sold_out_product(&app).await;
    // Past the closed gate's 800 ms: it has expired.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let crowd = futures::future::join_all((0..20).map(|i| {
        let app = &app;
        async move {
            order(
                app,
                10 + i,
                &format!("crowd-{i}"),
                product,
                Some("crash:before-close"),
            )
            .await
        }
    }))
    .await;
    let trapped = crowd.iter().filter(|reply| reply.status == 500).count();
    assert_eq!(trapped, 1, "orders that read Postgres after the gate expired");
    for reply in crowd.iter().filter(|reply| reply.status != 500) {
        reply.assert_problem(409, "OUT_OF_STOCK");
    }
    invariants::assert_all(&app.pg().await.unwrap()).await;
}

/// The order sent on to look again finds the units back — their reopening
/// was lost (here: units written straight to Postgres while Redis still
/// remembers the product short) — and reopens the gate for everyone before
/// it buys: while it is stopped after its reserve (`hang:after-reserve`),
/// another buyer is sold a unit, not refused by the gate it closed behind it.
#[tokio::test(flavor = "multi_thread")]
async fn an_order_that_looks_again_and_finds_units_reopens_the_gate() {
    let app = app().await;
    let product = sold_out_product(&app).await;
    for user in 2..=3 {
        fund(&app, user, 100_000).await;
    }
    let db = app.pg().await.unwrap();
    db.execute(
        "UPDATE products SET stock = stock + 5, initial_stock = initial_stock + 5 WHERE id = $1",
        &[&product],
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    let looking = order(&app, 2, "looks-again", product, Some("hang:after-reserve"));
    let meanwhile = async {
        until_reserved(&db, product).await;
        order(&app, 3, "meanwhile", product, None).await
    };
    let (looking, meanwhile) = tokio::join!(looking, meanwhile);
    assert_eq!(
        meanwhile.status, 201,
        "refused while the units were back: {}",
        meanwhile.text
    );
    assert_eq!(looking.status, 201, "{}", looking.text);
    invariants::assert_all(&db).await;
}
