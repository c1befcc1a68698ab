//! Issue 29: what a process killed at the wrong instant leaves in Redis,
//! healed by the recovery batch — coupon units taken by issues Postgres never
//! heard of, and popular-products counts a dead sale never made or a rebuild
//! made twice. The instances are killed for real (SIGKILL) with their
//! requests parked at a failure point (`hang:after-decide`, `crash:after-confirm`
//! of the test builds); the same on real Spin, killed at random: e2e
//! `a_coupon_storm_with_instances_killed_at_random_is_healed_by_recovery`.

use edge_tests::{fixtures, invariants, token, Options, Reply, TestApp};
use redis::Commands;
use serde_json::{json, Value};
use std::time::Duration;

/// How old a Redis state must be before recovery repairs it (the pending
/// timeout): short here, so the tests need not wait a minute.
const SETTLED_SECONDS: &str = "3";

async fn app(instances: usize) -> TestApp {
    TestApp::start_opts(Options {
        instances,
        failpoints: true,
        env: &[("SPIN_VARIABLE_PENDING_TIMEOUT_SECONDS", SETTLED_SECONDS)],
        ..Options::default()
    })
    .await
    .unwrap()
}

async fn recover(app: &TestApp) -> Value {
    let reply = app
        .post_json(
            "/api/v1/admin/recovery/run",
            Some(&token(1, Some("admin"))),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body
}

async fn issue(app: &TestApp, coupon: i64, user: i64) -> Reply {
    let path = format!("/api/v1/coupons/{coupon}/issue");
    app.request(reqwest::Method::POST, &path, Some(&token(user, None)), &[], None)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn issues_killed_between_redis_and_postgres_are_given_back_by_recovery() {
    let mut app = app(2).await;
    let body = json!({"name": "Drop", "discountType": "FIXED", "discountValue": 1000, "totalQuantity": 100,
                      "issueStartsAt": "2020-01-01T00:00:00Z", "issueEndsAt": "2099-01-01T00:00:00Z",
                      "expiresAt": "2099-06-01T00:00:00Z"});
    let created = app
        .post_json("/api/v1/admin/coupons", Some(&token(1, Some("admin"))), &body)
        .await
        .unwrap();
    let coupon = created.body["id"].as_i64().unwrap();
    // Thirty issues park between the Redis decision and Postgres, on both instances…
    let urls: Vec<String> = app.hosts.iter().map(|h| h.base_url.clone()).collect();
    let doomed: Vec<_> = (1..=30)
        .map(|user| {
            let url = format!("{}/api/v1/coupons/{coupon}/issue", urls[user as usize % 2]);
            let client = app.client.clone();
            tokio::spawn(async move {
                let _ = client
                    .post(url)
                    .bearer_auth(token(user, None))
                    .header("x-failpoint", "hang:after-decide")
                    .send()
                    .await;
            })
        })
        .collect();
    // …while fifty others get theirs.
    for user in 101..=150 {
        assert_eq!(issue(&app, coupon, user).await.status, 201);
    }
    let mut redis = app.redis().unwrap();
    let decided = app.redis_key(&format!("coupon:{{{coupon}}}:decided"));
    for _ in 0..100 {
        if redis.hlen::<_, i64>(&decided).unwrap() == 30 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        redis.hlen::<_, i64>(&decided).unwrap(),
        30,
        "thirty issues parked"
    );
    // Both instances die with them; a fresh one takes over.
    for host in &mut app.hosts {
        host.kill();
    }
    app.hosts.clear();
    app.add_instance().unwrap();
    for task in doomed {
        let _ = task.await;
    }
    let remaining = app.redis_key(&format!("coupon:{{{coupon}}}:remaining"));
    assert_eq!(
        redis.get::<_, i64>(&remaining).unwrap(),
        20,
        "Redis counts 80 issued"
    );
    assert_eq!(
        fixtures::coupon_holders(&app, coupon).await,
        50,
        "Postgres recorded 50"
    );
    // The harm being healed: a user whose issue died is told they have it.
    let refused = issue(&app, coupon, 7).await;
    refused.assert_problem(409, "COUPON_ALREADY_ISSUED");
    let ops = app
        .get("/api/v1/admin/ops", Some(&token(1, Some("admin"))))
        .await
        .unwrap();
    assert_eq!(ops.body["couponDrift"][0]["redisRemaining"], 20, "{}", ops.text);

    // Younger than an issue may take: recovery leaves them alone.
    let early = recover(&app).await;
    assert_eq!(early["repaired"]["couponUnitsReleased"], 0, "{early}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let run = recover(&app).await;
    assert_eq!(run["repaired"]["couponUnitsReleased"], 30, "{run}");
    assert_eq!(redis.get::<_, i64>(&remaining).unwrap(), 50);
    let ops = app
        .get("/api/v1/admin/ops", Some(&token(1, Some("admin"))))
        .await
        .unwrap();
    assert_eq!(ops.body["couponDrift"], json!([]), "{}", ops.text);
    let lines = app.log_lines();
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "recovery.run" && l["repaired"]["couponUnitsReleased"] == 30),
        "the run's log line says what it repaired"
    );
    invariants::assert_all_with_redis(&app.pg().await.unwrap(), &mut redis).await;

    // Those thirty can have the coupon now; demand exceeds supply: exactly 100 go.
    for user in 1..=30 {
        assert_eq!(issue(&app, coupon, user).await.status, 201, "user {user}");
    }
    let mut more = 0;
    for user in 1001..=1040 {
        match issue(&app, coupon, user).await.status {
            201 => more += 1,
            409 => {}
            other => panic!("{other}"),
        }
    }
    assert_eq!(more, 20);
    assert_eq!(fixtures::coupon_holders(&app, coupon).await, 100);
    invariants::assert_all_with_redis(&app.pg().await.unwrap(), &mut redis).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn popular_counts_a_dead_sale_left_wrong_are_corrected_by_recovery() {
    let app = app(1).await;
    let admin = token(1, Some("admin"));
    let product = app
        .post_json(
            "/api/v1/admin/products",
            Some(&admin),
            &json!({"name": "Lamp", "price": 1000, "stock": 100}),
        )
        .await
        .unwrap()
        .body["id"]
        .as_i64()
        .unwrap();
    let charged = app
        .request(
            reqwest::Method::POST,
            "/api/v1/wallet/charges",
            Some(&token(5, None)),
            &[("idempotency-key", "fund"), ("content-type", "application/json")],
            Some(br#"{"amount": 50000}"#.to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(charged.status, 201);
    // Today's key exists (a read builds it), then a sale's count dies with it.
    assert_eq!(
        app.get("/api/v1/products/popular", None).await.unwrap().status,
        200
    );
    let order = |key: &'static str, failpoint: Option<&'static str>| {
        let app = &app;
        async move {
            let mut headers = vec![("idempotency-key", key), ("content-type", "application/json")];
            if let Some(point) = failpoint {
                headers.push(("x-failpoint", point));
            }
            let body = json!({"items": [{"productId": product, "quantity": 3}]});
            app.request(
                reqwest::Method::POST,
                "/api/v1/orders",
                Some(&token(5, None)),
                &headers,
                Some(body.to_string().into_bytes()),
            )
            .await
            .unwrap()
        }
    };
    assert_eq!(order("counted", None).await.status, 201);
    let died = order("died", Some("crash:after-confirm")).await;
    assert_eq!(died.status, 500, "the request died after paying: {}", died.text);
    let day = app.redis_key(&format!("{{popular}}:{}", chrono::Utc::now().format("%Y-%m-%d")));
    let mut redis = app.redis().unwrap();
    let counted = |redis: &mut redis::Connection| redis.zscore::<_, _, Option<i64>>(&day, product).unwrap();
    assert_eq!(counted(&mut redis), Some(3), "six units were sold, three counted");

    // A difference is corrected only once it has stood longer than a count takes.
    assert_eq!(recover(&app).await["repaired"]["popularCountsCorrected"], 0);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(recover(&app).await["repaired"]["popularCountsCorrected"], 1);
    assert_eq!(counted(&mut redis), Some(6));

    // A day counted twice (a rebuild between a sale's commit and its count).
    let _: () = redis.zincr(&day, product, 3).unwrap();
    assert_eq!(recover(&app).await["repaired"]["popularCountsCorrected"], 0);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(recover(&app).await["repaired"]["popularCountsCorrected"], 1);
    assert_eq!(counted(&mut redis), Some(6));
    // A count still moving is not corrected against: each change starts over.
    let _: () = redis.zincr(&day, product, 1).unwrap();
    recover(&app).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let _: () = redis.zincr(&day, product, 1).unwrap();
    assert_eq!(recover(&app).await["repaired"]["popularCountsCorrected"], 0);
    assert_eq!(counted(&mut redis), Some(8));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(recover(&app).await["repaired"]["popularCountsCorrected"], 1);
    assert_eq!(counted(&mut redis), Some(6));
    invariants::assert_all(&app.pg().await.unwrap()).await;
}
