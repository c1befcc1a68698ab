//! `GET /api/v1/openapi.json` stays true: real answers of every documented
//! operation — successes and errors — are checked against the document.

use edge_tests::contract::Contract;
use edge_tests::{token, TestApp};
use serde_json::json;
use std::collections::BTreeSet;

#[tokio::test(flavor = "multi_thread")]
async fn real_responses_match_the_served_openapi_document() {
    let app = TestApp::start(1).await.unwrap();
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

    let documented: BTreeSet<(String, String)> = contract.operations().into_iter().collect();
    assert_eq!(
        exercised, documented,
        "every documented operation is exercised here"
    );
}
