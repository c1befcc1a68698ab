//! SPEC §2 end to end: the catalogue through two host instances.

use edge_tests::{invariants, token, TestApp};
use serde_json::json;
use std::collections::HashSet;

async fn create(app: &TestApp, name: &str, price: i64, stock: i64) -> i64 {
    let admin = token(1, Some("admin"));
    let reply = app
        .post_json(
            "/api/v1/admin/products",
            Some(&admin),
            &json!({"name": name, "price": price, "stock": stock}),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 201, "{}", reply.text);
    let id = reply.body["id"].as_i64().unwrap();
    assert_eq!(
        reply.header("location"),
        Some(format!("/api/v1/products/{id}").as_str())
    );
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn pagination_walks_every_product_exactly_once_across_instances() {
    let app = TestApp::start(2).await.unwrap();
    let mut created = HashSet::new();
    for i in 0..23 {
        created.insert(create(&app, &format!("product {i}"), 1000 + i, i).await);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/products?limit=5&cursor={c}"),
            None => "/api/v1/products?limit=5".to_owned(),
        };
        let reply = app.get(&path, None).await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text);
        let items = reply.body["items"].as_array().unwrap();
        assert!(items.len() <= 5);
        seen.extend(items.iter().map(|p| p["id"].as_i64().unwrap()));
        pages += 1;
        match reply.body["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 5);
    assert_eq!(seen.len(), 23, "no product twice");
    assert_eq!(seen.iter().copied().collect::<HashSet<_>>(), created);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "ordered by id");

    let default_page = app.get("/api/v1/products", None).await.unwrap();
    assert_eq!(
        default_page.body["items"].as_array().unwrap().len(),
        20,
        "default limit"
    );
    invariants::assert_all(&app.pg().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn detail_and_its_errors() {
    let app = TestApp::start(1).await.unwrap();
    let id = create(&app, "Cold Brew", 5500, 7).await;
    let reply = app.get(&format!("/api/v1/products/{id}"), None).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body,
        json!({"id": id, "name": "Cold Brew", "price": 5500, "stock": 7})
    );

    // Stock shown is what can still be ordered: stock minus reservations.
    app.pg()
        .await
        .unwrap()
        .execute("UPDATE products SET reserved = 3 WHERE id = $1", &[&id])
        .await
        .unwrap();
    assert_eq!(
        app.get(&format!("/api/v1/products/{id}"), None)
            .await
            .unwrap()
            .body["stock"],
        4
    );

    app.get("/api/v1/products/999999", None)
        .await
        .unwrap()
        .assert_problem(404, "PRODUCT_NOT_FOUND");
    for bad in ["abc", "0", "-1", "1.5", "99999999999999999999"] {
        app.get(&format!("/api/v1/products/{bad}"), None)
            .await
            .unwrap()
            .assert_problem(400, "INVALID_REQUEST");
    }
    for bad in [
        "limit=0",
        "limit=101",
        "limit=x",
        "cursor=garbage!",
        "limit=1&limit=2",
    ] {
        app.get(&format!("/api/v1/products?{bad}"), None)
            .await
            .unwrap()
            .assert_problem(400, "INVALID_REQUEST");
    }
    app.get("/api/v1/products/1/extra", None)
        .await
        .unwrap()
        .assert_problem(404, "NOT_FOUND");
    app.get("/api/v1/no-such-route", None)
        .await
        .unwrap()
        .assert_problem(404, "NOT_FOUND");
    let wrong_method = app
        .request(
            reqwest::Method::DELETE,
            &format!("/api/v1/products/{id}"),
            None,
            &[],
            None,
        )
        .await
        .unwrap();
    wrong_method.assert_problem(405, "METHOD_NOT_ALLOWED");
    assert_eq!(wrong_method.header("allow"), Some("GET"));
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_create_needs_an_admin_token_and_valid_input() {
    let app = TestApp::start(1).await.unwrap();
    let body = json!({"name": "Mug", "price": 18000, "stock": 4});
    let anonymous = app
        .post_json("/api/v1/admin/products", None, &body)
        .await
        .unwrap();
    anonymous.assert_problem(401, "UNAUTHORIZED");
    assert_eq!(anonymous.header("www-authenticate"), Some("Bearer"));
    app.post_json("/api/v1/admin/products", Some("not-a-jwt"), &body)
        .await
        .unwrap()
        .assert_problem(401, "UNAUTHORIZED");
    app.post_json("/api/v1/admin/products", Some(&token(5, None)), &body)
        .await
        .unwrap()
        .assert_problem(403, "FORBIDDEN");

    let admin = token(1, Some("admin"));
    let invalid = [
        (json!({"name": "", "price": 1, "stock": 0}), "name"),
        (json!({"name": "x".repeat(201), "price": 1, "stock": 0}), "name"),
        // Postgres cannot store NUL: once a client-caused 503 (Schemathesis).
        (json!({"name": "nul\u{0}inside", "price": 1, "stock": 0}), "name"),
        (json!({"name": "x", "price": 0, "stock": 0}), "price"),
        (json!({"name": "x", "price": 1, "stock": -1}), "stock"),
        (json!({"name": "x", "price": 1.5, "stock": 0}), "price"),
        (json!({"name": "x", "price": "1", "stock": 0}), "price"),
        (json!({"name": "x", "stock": 0}), "price"),
        (
            json!({"name": "x", "price": 1, "stock": 0, "colour": "red"}),
            "colour",
        ),
    ];
    for (body, field) in invalid {
        let reply = app
            .post_json("/api/v1/admin/products", Some(&admin), &body)
            .await
            .unwrap();
        reply.assert_problem(400, "INVALID_REQUEST");
        assert!(
            reply.body["detail"].as_str().unwrap().contains(field),
            "{field}: {}",
            reply.text
        );
    }
    let malformed = app
        .request(
            reqwest::Method::POST,
            "/api/v1/admin/products",
            Some(&admin),
            &[("content-type", "application/json")],
            Some(b"{not json".to_vec()),
        )
        .await
        .unwrap();
    malformed.assert_problem(400, "INVALID_REQUEST");
    let count: i64 = app
        .pg()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM products", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0, "nothing was created by rejected requests");
}
