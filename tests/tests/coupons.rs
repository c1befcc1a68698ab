//! SPEC §3 (scenarios 3-1, 3-2): first come, first served, across instances,
//! through a Redis flush and a failing Postgres.

use edge_tests::private::PrivatePostgres;
use edge_tests::{fixtures, invariants, token, Options, Reply, TestApp};
use serde_json::{json, Value};
use std::collections::HashMap;

fn coupon_body(quantity: i64, starts: &str, ends: &str) -> Value {
    json!({
        "name": "First come", "discountType": "FIXED", "discountValue": 3000, "minOrderAmount": 10000,
        "totalQuantity": quantity, "issueStartsAt": starts, "issueEndsAt": ends, "expiresAt": "2099-12-31T00:00:00Z",
    })
}

async fn create_coupon(app: &TestApp, quantity: i64) -> i64 {
    let body = coupon_body(quantity, "2020-01-01T00:00:00Z", "2099-01-01T00:00:00Z");
    let reply = app
        .post_json("/api/v1/admin/coupons", Some(&token(1, Some("admin"))), &body)
        .await
        .unwrap();
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.body["id"].as_i64().unwrap()
}

async fn issue(app: &TestApp, coupon: i64, user: i64) -> Reply {
    let path = format!("/api/v1/coupons/{coupon}/issue");
    app.request(reqwest::Method::POST, &path, Some(&token(user, None)), &[], None)
        .await
        .unwrap()
}

/// Fire one issue request per user at once, spread over the instances.
async fn storm(app: &TestApp, coupon: i64, users: impl IntoIterator<Item = i64>) -> Vec<(i64, Reply)> {
    let tasks: Vec<_> = users
        .into_iter()
        .map(|user| {
            let url = format!("{}/api/v1/coupons/{coupon}/issue", app.base_url());
            let client = app.client.clone();
            tokio::spawn(async move {
                let token = token(user, None);
                let reply =
                    edge_tests::send(&client, reqwest::Method::POST, &url, Some(&token), &[], None).await;
                (user, reply.unwrap())
            })
        })
        .collect();
    futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

fn by_status(replies: &[(i64, Reply)]) -> HashMap<(u16, String), usize> {
    let mut counts = HashMap::new();
    for (_, reply) in replies {
        let code = reply.body["code"].as_str().unwrap_or("").to_owned();
        *counts.entry((reply.status, code)).or_default() += 1;
    }
    counts
}

fn redis_remaining(app: &TestApp, coupon: i64) -> Option<i64> {
    redis::cmd("GET")
        .arg(app.redis_key(&format!("coupon:{{{coupon}}}:remaining")))
        .query(&mut app.redis().unwrap())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn create_read_and_validate() {
    let app = TestApp::start(1).await.unwrap();
    let admin = token(1, Some("admin"));
    let body = coupon_body(30, "2020-01-01T00:00:00Z", "2099-01-01T00:00:00+09:00");
    let created = app
        .post_json("/api/v1/admin/coupons", Some(&admin), &body)
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.body["id"].as_i64().unwrap();
    assert_eq!(
        created.header("location"),
        Some(format!("/api/v1/coupons/{id}").as_str())
    );
    assert_eq!(created.body["remaining"], 30);
    assert_eq!(created.body["issueEndsAt"], "2098-12-31T15:00:00.000000Z");
    assert_eq!(created.body["maxDiscount"], Value::Null);
    assert_eq!(
        redis_remaining(&app, id),
        Some(30),
        "the stock is primed in Redis"
    );

    let read = app.get(&format!("/api/v1/coupons/{id}"), None).await.unwrap();
    assert_eq!((read.status, &read.body), (200, &created.body));

    // Found by Schemathesis: a window that closed before 1970 has no valid
    // Redis expiry, and priming it failed. A closed window needs no stock.
    let closed = coupon_body(5, "1969-01-01T00:00:00Z", "1969-06-01T00:00:00Z");
    let closed = app
        .post_json("/api/v1/admin/coupons", Some(&admin), &closed)
        .await
        .unwrap();
    assert_eq!(closed.status, 201, "{}", closed.text);
    let closed_id = closed.body["id"].as_i64().unwrap();
    assert_eq!(redis_remaining(&app, closed_id), None, "nothing to prime");
    assert!(
        !app.hosts[0].logs().contains("not primed"),
        "{}",
        app.hosts[0].logs()
    );
    issue(&app, closed_id, 5)
        .await
        .assert_problem(409, "COUPON_NOT_ISSUABLE");
    app.get("/api/v1/coupons/424242", None)
        .await
        .unwrap()
        .assert_problem(404, "COUPON_NOT_FOUND");
    app.get("/api/v1/coupons/x", None)
        .await
        .unwrap()
        .assert_problem(400, "INVALID_REQUEST");
    issue(&app, 424242, 5)
        .await
        .assert_problem(404, "COUPON_NOT_FOUND");
    issue(&app, 0, 5).await.assert_problem(400, "INVALID_REQUEST");

    let bad = [
        (json!({"totalQuantity": 0}), "totalQuantity"),
        (json!({"discountType": "BOGUS"}), "discountType"),
        (
            json!({"discountType": "RATE", "discountValue": 101}),
            "discountValue",
        ),
        (json!({"issueStartsAt": "2099-01-01T00:00:00Z"}), "issueEndsAt"),
        (json!({"expiresAt": "2030-01-01T00:00:00Z"}), "expiresAt"),
        (json!({"issueEndsAt": "tomorrow"}), "issueEndsAt"),
        (json!({"surprise": 1}), "surprise"),
        // Postgres cannot store NUL: once a client-caused 503 (Schemathesis).
        (json!({"name": "nul\u{0}inside"}), "name"),
    ];
    for (patch, field) in bad {
        let mut body = body.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let reply = app
            .post_json("/api/v1/admin/coupons", Some(&admin), &body)
            .await
            .unwrap();
        reply.assert_problem(400, "INVALID_REQUEST");
        assert!(
            reply.body["detail"].as_str().unwrap().contains(field),
            "{field}: {}",
            reply.text
        );
    }
    app.post_json("/api/v1/admin/coupons", None, &body)
        .await
        .unwrap()
        .assert_problem(401, "UNAUTHORIZED");
    app.post_json("/api/v1/admin/coupons", Some(&token(2, None)), &body)
        .await
        .unwrap()
        .assert_problem(403, "FORBIDDEN");
    let anonymous = app
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/coupons/{id}/issue"),
            None,
            &[],
            None,
        )
        .await
        .unwrap();
    anonymous.assert_problem(401, "UNAUTHORIZED");
}

#[tokio::test(flavor = "multi_thread")]
async fn outside_the_issue_window_is_not_issuable() {
    let app = TestApp::start(1).await.unwrap();
    let admin = token(1, Some("admin"));
    // Keys live until a day after the window: a closed window's keys are already gone.
    let windows = [
        ("2098-01-01T00:00:00Z", "2099-01-01T00:00:00Z", Some(5)),
        ("2020-01-01T00:00:00Z", "2021-01-01T00:00:00Z", None),
    ];
    for (starts, ends, keys) in windows {
        let reply = app
            .post_json(
                "/api/v1/admin/coupons",
                Some(&admin),
                &coupon_body(5, starts, ends),
            )
            .await
            .unwrap();
        let id = reply.body["id"].as_i64().unwrap();
        issue(&app, id, 3)
            .await
            .assert_problem(409, "COUPON_NOT_ISSUABLE");
        assert_eq!(fixtures::coupon_holders(&app, id).await, 0);
        assert_eq!(
            redis_remaining(&app, id),
            keys,
            "an open-to-come window is primed at creation; a long-closed one has no keys"
        );
    }
}

/// Guard: `DECIDE`'s end-of-window check. The keys outlive the window by a
/// day, so a window that has just closed is refused by Redis alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_window_that_has_just_closed_is_refused_by_redis() {
    let app = TestApp::start(1).await.unwrap();
    let ends = chrono::Utc::now() + chrono::Duration::seconds(2);
    let body = coupon_body(
        5,
        "2020-01-01T00:00:00Z",
        &ends.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    );
    let created = app
        .post_json("/api/v1/admin/coupons", Some(&token(1, Some("admin"))), &body)
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.body["id"].as_i64().unwrap();
    assert_eq!(issue(&app, id, 1).await.status, 201, "the window is open");
    while chrono::Utc::now() < ends + chrono::Duration::milliseconds(300) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    issue(&app, id, 2)
        .await
        .assert_problem(409, "COUPON_NOT_ISSUABLE");
    assert_eq!(fixtures::coupon_holders(&app, id).await, 1);
    assert_eq!(redis_remaining(&app, id), Some(4), "the keys are still there");
}

/// Guard: the `DECIDE` Lua script (and the counted insert in Postgres).
#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_users_race_for_a_hundred_coupons_across_instances() {
    let app = TestApp::start(2).await.unwrap();
    let coupon = create_coupon(&app, 100).await;
    let replies = storm(&app, coupon, 1..=1000).await;
    let counts = by_status(&replies);
    for (_, reply) in replies.iter().filter(|(_, r)| r.status == 503) {
        eprintln!("503: {}", reply.text);
    }
    assert_eq!(counts.get(&(201, String::new())), Some(&100), "{counts:?}");
    assert_eq!(
        counts.get(&(409, "COUPON_SOLD_OUT".into())),
        Some(&900),
        "{counts:?}"
    );
    for (_, reply) in replies.iter().filter(|(_, r)| r.status == 409) {
        reply.assert_problem(409, "COUPON_SOLD_OUT");
    }
    assert_eq!(fixtures::coupon_holders(&app, coupon).await, 100);
    assert_eq!(redis_remaining(&app, coupon), Some(0));
    let read = app.get(&format!("/api/v1/coupons/{coupon}"), None).await.unwrap();
    assert_eq!(read.body["remaining"], 0);
    invariants::assert_all_with_redis(&app.pg().await.unwrap(), &mut app.redis().unwrap()).await;
}

/// Guard: the `SISMEMBER` check of `DECIDE` (and the unique (coupon, user)).
#[tokio::test(flavor = "multi_thread")]
async fn one_user_firing_fifty_times_gets_one_coupon() {
    let app = TestApp::start(2).await.unwrap();
    let coupon = create_coupon(&app, 100).await;
    let replies = storm(&app, coupon, std::iter::repeat_n(42, 50)).await;
    let counts = by_status(&replies);
    assert_eq!(counts.get(&(201, String::new())), Some(&1), "{counts:?}");
    assert_eq!(
        counts.get(&(409, "COUPON_ALREADY_ISSUED".into())),
        Some(&49),
        "{counts:?}"
    );
    assert_eq!(fixtures::coupon_holders(&app, coupon).await, 1);
    assert_eq!(redis_remaining(&app, coupon), Some(99));
    invariants::assert_all_with_redis(&app.pg().await.unwrap(), &mut app.redis().unwrap()).await;
}

/// Guards: the race-free rebuild (`REBUILD` only seeds missing keys) and the
/// quantity counted on the coupon row in Postgres.
#[tokio::test(flavor = "multi_thread")]
async fn a_redis_flush_mid_storm_never_over_issues() {
    let app = TestApp::start(2).await.unwrap();
    let coupon = create_coupon(&app, 100).await;
    let early = storm(&app, coupon, 1..=40).await;
    assert!(early.iter().all(|(_, r)| r.status == 201));

    let flusher = {
        let url = app.redis_url.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            let mut redis = redis::Client::open(url).unwrap().get_connection().unwrap();
            redis::cmd("FLUSHDB").exec(&mut redis).unwrap();
        })
    };
    // New users and the 40 early ones again, while Redis loses everything.
    let replies = storm(&app, coupon, (1..=40).chain(1001..=1400)).await;
    flusher.await.unwrap();

    let issued = fixtures::coupon_holders(&app, coupon).await;
    assert_eq!(
        issued, 100,
        "demand exceeds supply, so every coupon goes, and no more"
    );
    for (user, reply) in &replies {
        match (reply.status, reply.body["code"].as_str()) {
            (201, _) => assert!(*user > 1000, "user {user} got a second coupon"),
            (409, Some("COUPON_SOLD_OUT" | "COUPON_ALREADY_ISSUED")) => {}
            other => panic!("unexpected {other:?}: {}", reply.text),
        }
    }
    let db = app.pg().await.unwrap();
    let doubles: i64 = db
        .query_one("SELECT count(*) FROM (SELECT user_id FROM user_coupons GROUP BY coupon_id, user_id HAVING count(*) > 1) d", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(doubles, 0);
    invariants::assert_all_with_redis(&db, &mut app.redis().unwrap()).await;
}

/// Guard: `COMPENSATE` after a failed persist. The persist is made to fail with
/// a connection-class error from the real database.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_persist_answers_503_and_gives_the_unit_back() {
    let app = TestApp::start(1).await.unwrap();
    let coupon = create_coupon(&app, 10).await;
    let db = app.pg().await.unwrap();
    db.batch_execute(
        "CREATE FUNCTION fail_issue() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '08006'; END $$;
         CREATE TRIGGER fail_issue BEFORE INSERT ON user_coupons FOR EACH ROW EXECUTE FUNCTION fail_issue();",
    )
    .await
    .unwrap();
    let reply = issue(&app, coupon, 7).await;
    reply.assert_problem(503, "SERVICE_UNAVAILABLE");
    assert!(reply.header("retry-after").is_some());
    assert_eq!(fixtures::coupon_holders(&app, coupon).await, 0);
    assert_eq!(redis_remaining(&app, coupon), Some(10), "the unit went back");
    let member: bool = redis::cmd("SISMEMBER")
        .arg(app.redis_key(&format!("coupon:{{{coupon}}}:issued")))
        .arg(7)
        .query(&mut app.redis().unwrap())
        .unwrap();
    assert!(!member, "the user may try again");

    db.batch_execute("DROP TRIGGER fail_issue ON user_coupons")
        .await
        .unwrap();
    assert_eq!(issue(&app, coupon, 7).await.status, 201);
    invariants::assert_all_with_redis(&db, &mut app.redis().unwrap()).await;
}

/// A real outage: Postgres crashes while a storm is in flight and comes back.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_crashing_mid_storm_loses_nothing() {
    let postgres = PrivatePostgres::start().unwrap();
    let app = TestApp::start_opts(Options {
        instances: 2,
        pg_server: Some(postgres.server_url()),
        ..Options::default()
    })
    .await
    .unwrap();
    let coupon = create_coupon(&app, 100).await;
    let (replies, crashed) = tokio::join!(storm(&app, coupon, 1..=300), async {
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
        postgres.crash()
    });
    crashed.unwrap();
    postgres.resume().unwrap();
    for (_, reply) in &replies {
        match (reply.status, reply.body["code"].as_str()) {
            (201, _) | (409, Some("COUPON_SOLD_OUT")) => {}
            (503, _) => reply.assert_problem(503, "SERVICE_UNAVAILABLE"),
            other => panic!("unexpected {other:?}: {}", reply.text),
        }
    }
    let created = replies.iter().filter(|(_, r)| r.status == 201).count() as i64;
    // Every 201 is a durable row; every other answer left nothing behind.
    assert_eq!(fixtures::coupon_holders(&app, coupon).await, created);
    invariants::assert_all_with_redis(&app.pg().await.unwrap(), &mut app.redis().unwrap()).await;
    // After recovery the remaining coupons can still be issued, exactly.
    let after = storm(&app, coupon, 5001..=5300).await;
    let more = after.iter().filter(|(_, r)| r.status == 201).count() as i64;
    assert_eq!(created + more, 100);
    invariants::assert_all_with_redis(&app.pg().await.unwrap(), &mut app.redis().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn my_coupons_show_derived_status() {
    let app = TestApp::start(1).await.unwrap();
    let (a, b, c) = (
        create_coupon(&app, 5).await,
        create_coupon(&app, 5).await,
        create_coupon(&app, 5).await,
    );
    for coupon in [a, b, c] {
        assert_eq!(issue(&app, coupon, 9).await.status, 201);
    }
    assert_eq!(issue(&app, a, 10).await.status, 201);
    let db = app.pg().await.unwrap();
    db.execute("UPDATE coupons SET expires_at = now() - interval '1 second', issue_ends_at = now() - interval '1 day', issue_starts_at = now() - interval '2 days' WHERE id = $1", &[&b]).await.unwrap();
    db.execute("UPDATE user_coupons SET status = 'USED', order_id = 77, used_at = now() WHERE coupon_id = $1 AND user_id = 9", &[&c]).await.unwrap();

    let mine = app
        .get("/api/v1/me/coupons?limit=2", Some(&token(9, None)))
        .await
        .unwrap();
    assert_eq!(mine.status, 200, "{}", mine.text);
    let first_page = mine.body["items"].as_array().unwrap().clone();
    let cursor = mine.body["nextCursor"].as_str().unwrap().to_owned();
    let rest = app
        .get(
            &format!("/api/v1/me/coupons?limit=2&cursor={cursor}"),
            Some(&token(9, None)),
        )
        .await
        .unwrap();
    let items: Vec<Value> = first_page
        .into_iter()
        .chain(rest.body["items"].as_array().unwrap().iter().cloned())
        .collect();
    let statuses: Vec<(i64, &str)> = items
        .iter()
        .map(|i| (i["couponId"].as_i64().unwrap(), i["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        vec![(c, "USED"), (b, "EXPIRED"), (a, "ISSUED")],
        "newest first, own coupons only"
    );
    assert_eq!(items[0]["orderId"], 77);
    assert!(items[0]["usedAt"].is_string());
    assert_eq!(rest.body["nextCursor"], Value::Null);
    app.get("/api/v1/me/coupons", None)
        .await
        .unwrap()
        .assert_problem(401, "UNAUTHORIZED");
}
