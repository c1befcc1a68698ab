//! `GET /api/v1/health` names the store that does not answer.

use edge_tests::TestApp;

/// A loopback port nothing listens on.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread")]
async fn health_reports_each_store() {
    let app = TestApp::start(1).await.unwrap();
    let ok = app.get("/api/v1/health", None).await.unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.body,
        serde_json::json!({"status": "ok", "postgres": "ok", "redis": "ok"})
    );

    let port = dead_port();
    let redis_url = format!("redis://127.0.0.1:{port}");
    let redis_host = format!("127.0.0.1:{port}");
    let no_redis = TestApp::start_with(
        1,
        &[
            ("SPIN_VARIABLE_REDIS_URL", &redis_url),
            ("SPIN_VARIABLE_REDIS_HOST", &redis_host),
        ],
    )
    .await
    .unwrap();
    let reply = no_redis.get("/api/v1/health", None).await.unwrap();
    reply.assert_problem(503, "SERVICE_UNAVAILABLE");
    assert_eq!(
        (reply.body["postgres"].as_str(), reply.body["redis"].as_str()),
        (Some("ok"), Some("unavailable"))
    );
    assert!(reply.header("retry-after").is_some());

    let pg_url = format!("postgres://postgres@127.0.0.1:{port}/none");
    let pg_host = format!("127.0.0.1:{port}");
    let no_pg = TestApp::start_with(
        1,
        &[
            ("SPIN_VARIABLE_PG_URL", &pg_url),
            ("SPIN_VARIABLE_PG_HOST", &pg_host),
        ],
    )
    .await
    .unwrap();
    let reply = no_pg.get("/api/v1/health", None).await.unwrap();
    reply.assert_problem(503, "SERVICE_UNAVAILABLE");
    assert_eq!(
        (reply.body["postgres"].as_str(), reply.body["redis"].as_str()),
        (Some("unavailable"), Some("ok"))
    );
    // The 503 is documented too.
    let served = app.get("/api/v1/openapi.json", None).await.unwrap();
    edge_tests::contract::Contract::new(served.body).check("GET", "/api/v1/health", &reply);
    // A store that is down is a 503, never a 500, on every route that needs it.
    no_pg
        .get("/api/v1/products", None)
        .await
        .unwrap()
        .assert_problem(503, "SERVICE_UNAVAILABLE");
}
