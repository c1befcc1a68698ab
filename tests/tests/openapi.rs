//! `GET /api/v1/openapi.json` stays true: real answers of every documented
//! operation — successes and errors — are checked against the document.

use edge_tests::contract::Contract;
use edge_tests::{token, TestApp};
use serde_json::json;
use std::collections::BTreeSet;

/// The jobs key the app is started with (SPEC "Scheduled jobs over HTTP").
const JOBS_KEY: &str = "openapi-jobs-key";

#[tokio::test(flavor = "multi_thread")]
async fn real_responses_match_the_served_openapi_document() {
    let app = TestApp::start_with(1, &[("SPIN_VARIABLE_JOBS_KEY", JOBS_KEY)])
        .await
        .unwrap();
    let served = app.get("/api/v1/openapi.json", None).await.unwrap();
    assert_eq!(served.status, 200);
    let contract = Contract::new(served.body.clone());
    let admin = token(1, Some("admin"));
    let user = token(2, None);
    let mut exercised = BTreeSet::new();
    let mut check = |method: &str, template: &str, reply: &edge_tests::Reply| {
        contract.check(method, template, reply);
        exercised.insert((method.to_owned(), template.to_owned()));
    };

    check("GET", "/api/v1/openapi.json", &served);
    check(
        "GET",
        "/api/v1/health",
        &app.get("/api/v1/health", None).await.unwrap(),
    );

    let created = app
        .post_json(
            "/api/v1/admin/products",
            Some(&admin),
            &json!({"name": "Mug", "price": 18000, "stock": 3}),
        )
        .await
        .unwrap();
    check("POST", "/api/v1/admin/products", &created);
    for (body, token) in [
        (json!({"name": "", "price": 1, "stock": 1}), Some(admin.as_str())),
        (json!({"name": "x", "price": 1, "stock": 1}), None),
        (json!({"name": "x", "price": 1, "stock": 1}), Some(user.as_str())),
    ] {
        check(
            "POST",
            "/api/v1/admin/products",
            &app.post_json("/api/v1/admin/products", token, &body)
                .await
                .unwrap(),
        );
    }

    check(
        "GET",
        "/api/v1/products",
        &app.get("/api/v1/products?limit=1", None).await.unwrap(),
    );
    check(
        "GET",
        "/api/v1/products",
        &app.get("/api/v1/products?limit=0", None).await.unwrap(),
    );
    let id = created.body["id"].as_i64().unwrap();
    check(
        "GET",
        "/api/v1/products/{id}",
        &app.get(&format!("/api/v1/products/{id}"), None).await.unwrap(),
    );
    check(
        "GET",
        "/api/v1/products/{id}",
        &app.get("/api/v1/products/987654", None).await.unwrap(),
    );
    check(
        "GET",
        "/api/v1/products/{id}",
        &app.get("/api/v1/products/x", None).await.unwrap(),
    );

    // Wallet (§1).
    let user_token = Some(user.as_str());
    check(
        "GET",
        "/api/v1/wallet",
        &app.get("/api/v1/wallet", user_token).await.unwrap(),
    );
    check(
        "GET",
        "/api/v1/wallet",
        &app.get("/api/v1/wallet", None).await.unwrap(),
    );
    let charge = |key: String, body: serde_json::Value| {
        let user = user.clone();
        let app = &app;
        async move {
            let mut headers = vec![("content-type", "application/json")];
            if !key.is_empty() {
                headers.push(("idempotency-key", key.as_str()));
            }
            app.request(
                reqwest::Method::POST,
                "/api/v1/wallet/charges",
                Some(&user),
                &headers,
                Some(body.to_string().into_bytes()),
            )
            .await
            .unwrap()
        }
    };
    for (key, body) in [
        ("c1", json!({"amount": 1000})),
        ("c1", json!({"amount": 1000})),
        ("c1", json!({"amount": 2000})),
        ("", json!({"amount": 1000})),
        ("c2", json!({"amount": 999})),
        ("c3", json!({"amount": 2_000_000})),
    ] {
        check(
            "POST",
            "/api/v1/wallet/charges",
            &charge(key.to_owned(), body).await,
        );
    }
    let not_json = app
        .request(
            reqwest::Method::POST,
            "/api/v1/wallet/charges",
            Some(&user),
            &[("idempotency-key", "c4"), ("content-type", "text/plain")],
            Some(br#"{"amount": 1000}"#.to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(not_json.status, 415);
    check("POST", "/api/v1/wallet/charges", &not_json);
    for i in 0..10 {
        charge(format!("fill-{i}"), json!({"amount": 1_000_000})).await;
    }
    check(
        "POST",
        "/api/v1/wallet/charges",
        &charge("over-cap".into(), json!({"amount": 1000})).await,
    );
    check(
        "GET",
        "/api/v1/wallet/transactions",
        &app.get("/api/v1/wallet/transactions?limit=2", user_token)
            .await
            .unwrap(),
    );
    check(
        "GET",
        "/api/v1/wallet/transactions",
        &app.get("/api/v1/wallet/transactions?limit=500", user_token)
            .await
            .unwrap(),
    );

    // Coupons (§3).
    let coupon = json!({"name": "Ten off", "discountType": "RATE", "discountValue": 10, "maxDiscount": 5000,
        "totalQuantity": 1, "issueStartsAt": "2020-01-01T00:00:00Z", "issueEndsAt": "2099-01-01T00:00:00Z",
        "expiresAt": "2099-06-01T00:00:00Z"});
    let created = app
        .post_json("/api/v1/admin/coupons", Some(&admin), &coupon)
        .await
        .unwrap();
    check("POST", "/api/v1/admin/coupons", &created);
    check(
        "POST",
        "/api/v1/admin/coupons",
        &app.post_json("/api/v1/admin/coupons", Some(&admin), &json!({}))
            .await
            .unwrap(),
    );
    check(
        "POST",
        "/api/v1/admin/coupons",
        &app.post_json("/api/v1/admin/coupons", Some(&user), &coupon)
            .await
            .unwrap(),
    );
    let coupon_id = created.body["id"].as_i64().unwrap();
    check(
        "GET",
        "/api/v1/coupons/{id}",
        &app.get(&format!("/api/v1/coupons/{coupon_id}"), None)
            .await
            .unwrap(),
    );
    check(
        "GET",
        "/api/v1/coupons/{id}",
        &app.get("/api/v1/coupons/999999", None).await.unwrap(),
    );
    let issue = |id: i64, who: String| {
        let app = &app;
        async move {
            app.request(
                reqwest::Method::POST,
                &format!("/api/v1/coupons/{id}/issue"),
                Some(&who),
                &[],
                None,
            )
            .await
            .unwrap()
        }
    };
    check(
        "POST",
        "/api/v1/coupons/{id}/issue",
        &issue(coupon_id, user.clone()).await,
    );
    check(
        "POST",
        "/api/v1/coupons/{id}/issue",
        &issue(coupon_id, user.clone()).await,
    );
    check(
        "POST",
        "/api/v1/coupons/{id}/issue",
        &issue(coupon_id, token(3, None)).await,
    );
    check(
        "POST",
        "/api/v1/coupons/{id}/issue",
        &issue(999_999, user.clone()).await,
    );
    check(
        "GET",
        "/api/v1/me/coupons",
        &app.get("/api/v1/me/coupons", user_token).await.unwrap(),
    );
    check(
        "GET",
        "/api/v1/me/coupons",
        &app.get("/api/v1/me/coupons", None).await.unwrap(),
    );

    // Orders (§4).
    let db = app.pg().await.unwrap();
    db.execute(
        "INSERT INTO wallets (user_id, balance) VALUES (2, 0) ON CONFLICT DO NOTHING",
        &[],
    )
    .await
    .unwrap();
    let place = |key: &'static str, body: serde_json::Value| {
        let user = user.clone();
        let app = &app;
        async move {
            let headers = [("content-type", "application/json"), ("idempotency-key", key)];
            app.request(
                reqwest::Method::POST,
                "/api/v1/orders",
                Some(&user),
                &headers,
                Some(body.to_string().into_bytes()),
            )
            .await
            .unwrap()
        }
    };
    let line = json!({"items": [{"productId": id, "quantity": 1}]});
    check("POST", "/api/v1/orders", &place("o1", line.clone()).await); // 201 from the charges above
    check(
        "POST",
        "/api/v1/orders",
        &place("o1", json!({"items": [{"productId": id, "quantity": 2}]})).await,
    );
    check(
        "POST",
        "/api/v1/orders",
        &place("o2", json!({"items": [{"productId": id, "quantity": 9}]})).await,
    );
    check(
        "POST",
        "/api/v1/orders",
        &place("o3", json!({"items": [{"productId": 987654, "quantity": 1}]})).await,
    );
    check("POST", "/api/v1/orders", &place("o4", json!({"items": []})).await);
    let order_id = app.get("/api/v1/orders", user_token).await.unwrap().body["items"][0]["orderId"]
        .as_i64()
        .unwrap();
    check(
        "GET",
        "/api/v1/orders",
        &app.get("/api/v1/orders", user_token).await.unwrap(),
    );
    check(
        "GET",
        "/api/v1/orders",
        &app.get("/api/v1/orders", None).await.unwrap(),
    );
    check(
        "GET",
        "/api/v1/orders/{id}",
        &app.get(&format!("/api/v1/orders/{order_id}"), user_token)
            .await
            .unwrap(),
    );
    check(
        "GET",
        "/api/v1/orders/{id}",
        &app.get("/api/v1/orders/987654", user_token).await.unwrap(),
    );

    // Cancellation and refunds (§8).
    db.execute(
        "UPDATE wallets SET balance = balance + 100000 WHERE user_id = 2",
        &[],
    )
    .await
    .unwrap();
    let to_cancel = place("o5", line.clone()).await;
    assert_eq!(to_cancel.status, 201, "{}", to_cancel.text);
    let to_cancel = to_cancel.body["orderId"].as_i64().unwrap();
    let paid = app.get("/api/v1/orders", user_token).await.unwrap().body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["status"] == "PAID" && o["orderId"] != to_cancel)
        .map(|o| o["orderId"].as_i64().unwrap())
        .unwrap();
    let post = |path: String, who: String, key: Option<&'static str>, body: Option<serde_json::Value>| {
        let app = &app;
        async move {
            let mut headers = vec![("content-type", "application/json")];
            headers.extend(key.map(|k| ("idempotency-key", k)));
            app.request(
                reqwest::Method::POST,
                &path,
                Some(&who),
                &headers,
                body.map(|b| b.to_string().into_bytes()),
            )
            .await
            .unwrap()
        }
    };
    let cancel = |order: i64| format!("/api/v1/orders/{order}/cancel");
    let cancelled = post(cancel(to_cancel), user.clone(), Some("c1"), Some(json!({}))).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text);
    check("POST", "/api/v1/orders/{id}/cancel", &cancelled);
    for reply in [
        post(cancel(to_cancel), user.clone(), Some("c2"), None).await,
        post(cancel(987654), user.clone(), Some("c3"), None).await,
        post(cancel(to_cancel), user.clone(), None, None).await,
        post(
            cancel(to_cancel),
            user.clone(),
            Some("c4"),
            Some(json!({"why": 1})),
        )
        .await,
    ] {
        check("POST", "/api/v1/orders/{id}/cancel", &reply);
    }
    let refunds = |order: i64| format!("/api/v1/admin/orders/{order}/refunds");
    let one = json!({"items": [{"productId": id, "quantity": 1}], "reason": "damaged"});
    let refunded = post(refunds(paid), admin.clone(), Some("r1"), Some(one.clone())).await;
    assert_eq!(refunded.status, 201, "{}", refunded.text);
    check("POST", "/api/v1/admin/orders/{id}/refunds", &refunded);
    for reply in [
        post(refunds(paid), admin.clone(), Some("r2"), Some(one.clone())).await,
        post(refunds(987654), admin.clone(), Some("r3"), Some(one.clone())).await,
        post(
            refunds(paid),
            admin.clone(),
            Some("r4"),
            Some(json!({"items": []})),
        )
        .await,
        post(refunds(paid), user.clone(), Some("r5"), Some(one.clone())).await,
        post(
            refunds(paid),
            admin.clone(),
            Some("r1"),
            Some(json!({"items": [{"productId": id, "quantity": 2}]})),
        )
        .await,
    ] {
        check("POST", "/api/v1/admin/orders/{id}/refunds", &reply);
    }
    let restock = |product: i64| format!("/api/v1/admin/products/{product}/restock");
    let restocked = post(
        restock(id),
        admin.clone(),
        Some("s1"),
        Some(json!({"quantity": 5})),
    )
    .await;
    assert_eq!(restocked.status, 200, "{}", restocked.text);
    check("POST", "/api/v1/admin/products/{id}/restock", &restocked);
    for reply in [
        post(
            restock(id),
            admin.clone(),
            Some("s1"),
            Some(json!({"quantity": 5})),
        )
        .await,
        post(
            restock(id),
            admin.clone(),
            Some("s1"),
            Some(json!({"quantity": 6})),
        )
        .await,
        post(
            restock(987654),
            admin.clone(),
            Some("s2"),
            Some(json!({"quantity": 5})),
        )
        .await,
        post(
            restock(id),
            admin.clone(),
            Some("s3"),
            Some(json!({"quantity": 0})),
        )
        .await,
        post(restock(id), admin.clone(), None, Some(json!({"quantity": 5}))).await,
        post(
            restock(id),
            user.clone(),
            Some("s4"),
            Some(json!({"quantity": 5})),
        )
        .await,
    ] {
        check("POST", "/api/v1/admin/products/{id}/restock", &reply);
    }
    check(
        "GET",
        "/api/v1/orders/{id}",
        &app.get(&format!("/api/v1/orders/{paid}"), user_token)
            .await
            .unwrap(),
    );

    // Popular products (§7).
    check(
        "GET",
        "/api/v1/products/popular",
        &app.get("/api/v1/products/popular?days=7", None).await.unwrap(),
    );
    check(
        "GET",
        "/api/v1/products/popular",
        &app.get("/api/v1/products/popular?days=9", None).await.unwrap(),
    );

    // Recovery (§5).
    let run = app
        .request(
            reqwest::Method::POST,
            "/api/v1/admin/recovery/run",
            Some(&admin),
            &[],
            None,
        )
        .await
        .unwrap();
    check("POST", "/api/v1/admin/recovery/run", &run);
    let denied = app
        .request(
            reqwest::Method::POST,
            "/api/v1/admin/recovery/run",
            Some(&user),
            &[],
            None,
        )
        .await
        .unwrap();
    check("POST", "/api/v1/admin/recovery/run", &denied);

    // Scheduled jobs over HTTP: the key in the query string, no token.
    for job in ["/api/v1/jobs/recovery", "/api/v1/jobs/deliver"] {
        for query in [format!("?key={JOBS_KEY}"), "?key=wrong".to_owned(), String::new()] {
            check(
                "GET",
                job,
                &app.get(&format!("{job}{query}"), None).await.unwrap(),
            );
        }
    }

    // Order events (§9): the list with its filters, a redeliver, a delivery run.
    let post = |path: String, bearer: &str| {
        let app = &app;
        let bearer = bearer.to_owned();
        async move {
            app.request(reqwest::Method::POST, &path, Some(&bearer), &[], None)
                .await
                .unwrap()
        }
    };
    for (path, bearer) in [
        (
            "/api/v1/admin/events?type=order.paid&limit=2",
            Some(admin.as_str()),
        ),
        ("/api/v1/admin/events?status=LOST", Some(admin.as_str())),
        ("/api/v1/admin/events", Some(user.as_str())),
        ("/api/v1/admin/events", None),
    ] {
        check(
            "GET",
            "/api/v1/admin/events",
            &app.get(path, bearer).await.unwrap(),
        );
    }
    let listed = app.get("/api/v1/admin/events", Some(&admin)).await.unwrap();
    let event_id = listed.body["items"][0]["id"]
        .as_str()
        .expect("an order made events")
        .to_owned();
    for path in [
        format!("/api/v1/admin/events/{event_id}/redeliver"),
        format!("/api/v1/admin/events/{}/redeliver", uuid::Uuid::new_v4()),
        "/api/v1/admin/events/x/redeliver".to_owned(),
    ] {
        check(
            "POST",
            "/api/v1/admin/events/{id}/redeliver",
            &post(path, &admin).await,
        );
    }
    for bearer in [&admin, &user] {
        let run = post("/api/v1/admin/events/deliver".to_owned(), bearer).await;
        check("POST", "/api/v1/admin/events/deliver", &run);
    }
    for (path, bearer) in [
        ("/api/v1/admin/orders?limit=3", Some(admin.as_str())),
        (
            "/api/v1/admin/orders?status=REFUNDED&userId=2",
            Some(admin.as_str()),
        ),
        ("/api/v1/admin/orders?status=SHIPPED", Some(admin.as_str())),
        ("/api/v1/admin/orders", Some(user.as_str())),
    ] {
        check(
            "GET",
            "/api/v1/admin/orders",
            &app.get(path, bearer).await.unwrap(),
        );
    }

    // Operations: the on-call view.
    for bearer in [Some(admin.as_str()), Some(user.as_str()), None] {
        check(
            "GET",
            "/api/v1/admin/ops",
            &app.get("/api/v1/admin/ops", bearer).await.unwrap(),
        );
    }

    // Every operation refuses a body over 64 KiB, before the token is checked.
    for (method, template) in contract.operations() {
        let path = template.replace("{id}", "1");
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let too_large = app
            .request(
                method.clone(),
                &path,
                None,
                &[("content-type", "application/json")],
                Some(vec![b' '; 64 * 1024 + 1]),
            )
            .await
            .unwrap();
        too_large.assert_problem(413, "PAYLOAD_TOO_LARGE");
        contract.check(method.as_str(), &template, &too_large);
    }

    let documented: BTreeSet<(String, String)> = contract.operations().into_iter().collect();
    assert_eq!(
        exercised, documented,
        "every documented operation is exercised here"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_documented_error_codes_are_exactly_the_domain_codes() {
    let app = TestApp::start(1).await.unwrap();
    let doc = app.get("/api/v1/openapi.json", None).await.unwrap().body;
    let documented: BTreeSet<String> = doc["components"]["schemas"]["Problem"]["properties"]["code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    let domain: BTreeSet<String> = commerce::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str().to_owned())
        .collect();
    assert_eq!(documented, domain);
}
