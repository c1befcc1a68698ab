//! Hostile input at the edge, through the real host and components: the tokens
//! an attacker tries first, and heads too large to be honest (bodies too
//! large: e2e's `bodies_are_read_up_to_their_limit`, on Spin too). Each
//! is a `problem+json` 4xx with a stable code; a well-formed control request
//! beside each case proves the check is what refused it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use edge_tests::{reply_of, Reply, TestApp, SECRET};
use hmac::{Hmac, Mac};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::{json, Value};
use sha2::Sha256;

const ISSUER: &str = "https://auth.shop.example";
const AUDIENCE: &str = "commerce-edge";
/// The host's default limit of a request head (`edge-host up --max-header-bytes`).
const HOST_MAX_HEADERS: usize = 64 * 1024;

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// Claims a strictly configured app accepts, for user 7.
fn good_claims() -> Value {
    json!({"sub": "7", "exp": now() + 600, "iss": ISSUER, "aud": AUDIENCE})
}

fn hs(alg: Algorithm, claims: &Value, secret: &[u8]) -> String {
    encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn hs256(claims: &Value) -> String {
    hs(Algorithm::HS256, claims, SECRET.as_bytes())
}

fn with_claim(name: &str, value: Value) -> Value {
    let mut claims = good_claims();
    claims[name] = value;
    claims
}

fn without_claim(name: &str) -> Value {
    let mut claims = good_claims();
    claims.as_object_mut().unwrap().remove(name);
    claims
}

/// A token whose header is whatever the attacker wants, HMAC-signed with the
/// app's secret: the server must not let the header choose the algorithm.
fn forged(header: Value, claims: &Value) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

fn unsigned(header: Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

async fn product_count(app: &TestApp) -> i64 {
    let pg = app.pg().await.unwrap();
    let row = pg.query_one("SELECT count(*) FROM products", &[]).await.unwrap();
    row.get(0)
}

async fn strict_app() -> TestApp {
    TestApp::start_with(
        1,
        &[
            ("SPIN_VARIABLE_JWT_ISSUER", ISSUER),
            ("SPIN_VARIABLE_JWT_AUDIENCE", AUDIENCE),
        ],
    )
    .await
    .unwrap()
}

async fn wallet_with(app: &TestApp, authorization: HeaderValue) -> Reply {
    let url = format!("{}/api/v1/wallet", app.base_url());
    let response = app
        .client
        .get(&url)
        .header("authorization", authorization)
        .send()
        .await
        .unwrap();
    reply_of(response).await
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_an_attacker_would_try_are_refused() {
    let app = strict_app().await;
    let control = app
        .get("/api/v1/wallet", Some(&hs256(&good_claims())))
        .await
        .unwrap();
    assert_eq!(control.status, 200, "{}", control.text);
    assert_eq!(control.body["userId"], 7);

    let claims = good_claims();
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none, no signature",
            unsigned(json!({"alg": "none", "typ": "JWT"}), &claims),
        ),
        (
            "alg None, no signature",
            unsigned(json!({"alg": "None"}), &claims),
        ),
        ("alg none, signed anyway", forged(json!({"alg": "none"}), &claims)),
        (
            "RS256 header, secret used as the key",
            forged(json!({"alg": "RS256", "typ": "JWT"}), &claims),
        ),
        (
            "ES256 header, secret used as the key",
            forged(json!({"alg": "ES256"}), &claims),
        ),
        (
            "HS384 with the secret",
            hs(Algorithm::HS384, &claims, SECRET.as_bytes()),
        ),
        (
            "HS512 with the secret",
            hs(Algorithm::HS512, &claims, SECRET.as_bytes()),
        ),
        (
            "HS256 with another secret",
            hs(Algorithm::HS256, &claims, b"not-the-secret"),
        ),
        ("signature stripped", {
            let token = hs256(&claims);
            token[..token.rfind('.').unwrap() + 1].to_owned()
        }),
        ("no exp", hs256(&without_claim("exp"))),
        (
            "expired an hour ago",
            hs256(&with_claim("exp", json!(now() - 3600))),
        ),
        ("exp as a string", hs256(&with_claim("exp", json!("99999999999")))),
        (
            "not valid before in five minutes",
            hs256(&with_claim("nbf", json!(now() + 300))),
        ),
        ("no iss", hs256(&without_claim("iss"))),
        (
            "wrong iss",
            hs256(&with_claim("iss", json!("https://evil.example"))),
        ),
        ("iss as a list", hs256(&with_claim("iss", json!([ISSUER])))),
        ("no aud", hs256(&without_claim("aud"))),
        ("wrong aud", hs256(&with_claim("aud", json!("another-api")))),
        ("no sub", hs256(&without_claim("sub"))),
        ("sub not a number", hs256(&with_claim("sub", json!("alice")))),
        ("sub zero", hs256(&with_claim("sub", json!("0")))),
        ("sub negative", hs256(&with_claim("sub", json!("-7")))),
        (
            "sub beyond 64 bits",
            hs256(&with_claim("sub", json!("99999999999999999999"))),
        ),
        ("sub with a fraction", hs256(&with_claim("sub", json!("7.0")))),
        ("sub padded", hs256(&with_claim("sub", json!(" 7")))),
        ("sub a JSON number", hs256(&with_claim("sub", json!(7)))),
        ("sub huge", hs256(&with_claim("sub", json!("9".repeat(10_000))))),
        ("not a JWT", "not-a-token".to_owned()),
        ("two segments", "eyJhbGciOiJIUzI1NiJ9.e30".to_owned()),
        ("garbage segments", "%%%.***.$$$".to_owned()),
    ];
    for (case, token) in &cases {
        let reply = app.get("/api/v1/wallet", Some(token)).await.unwrap();
        assert_eq!(reply.status, 401, "{case}: {}", reply.text);
        reply.assert_problem(401, "UNAUTHORIZED");
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{case}");
    }

    let raw_headers: Vec<(&str, HeaderValue)> = vec![
        ("Basic scheme", HeaderValue::from_static("Basic dXNlcjpwYXNz")),
        ("Bearer without a token", HeaderValue::from_static("Bearer ")),
        (
            "token without a scheme",
            HeaderValue::from_str(&hs256(&claims)).unwrap(),
        ),
        (
            "a 32 KiB token",
            HeaderValue::from_str(&format!("Bearer {}", "a".repeat(32 * 1024))).unwrap(),
        ),
    ];
    for (case, header) in raw_headers {
        let reply = wallet_with(&app, header).await;
        assert_eq!(reply.status, 401, "{case}: {}", reply.text);
        reply.assert_problem(401, "UNAUTHORIZED");
    }
    // Bytes that are not UTF-8 never reach a component: Spin's trigger
    // refuses the request with a bare 500 first, and so does the host
    // (host_conformance: routing_follows_spin_precedence_and_sets_spin_headers).
    let latin1 = wallet_with(&app, HeaderValue::from_bytes(b"Bearer \xff\xfe.\xfd").unwrap()).await;
    assert_eq!((latin1.status, latin1.text.as_str()), (500, ""));
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_routes_want_exactly_the_admin_role() {
    let app = strict_app().await;
    let product = json!({"name": "Kettle", "price": 30000, "stock": 5});
    let admin = hs256(&with_claim("role", json!("admin")));
    let created = app
        .post_json("/api/v1/admin/products", Some(&admin), &product)
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.text);

    // A role of the wrong JSON type makes the claims unreadable: 401, not 403.
    let cases = [
        (Value::Null, 403),
        (json!("ADMIN"), 403),
        (json!("user"), 403),
        (json!(["admin"]), 401),
        (json!(true), 401),
    ];
    for (role, status) in cases {
        let token = hs256(&with_claim("role", role.clone()));
        let reply = app
            .post_json("/api/v1/admin/products", Some(&token), &product)
            .await
            .unwrap();
        let code = if status == 401 {
            "UNAUTHORIZED"
        } else {
            "FORBIDDEN"
        };
        assert_eq!(reply.status, status, "role {role}: {}", reply.text);
        reply.assert_problem(status, code);
    }
    assert_eq!(product_count(&app).await, 1, "only the admin's product exists");
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_headers_are_431() {
    let app = TestApp::start(1).await.unwrap();
    let url = format!("{}/api/v1/products", app.base_url());
    let with_padding = |size: usize| {
        let client = app.client.clone();
        let url = url.clone();
        async move {
            let padding = HeaderValue::from_str(&"p".repeat(size)).unwrap();
            client
                .get(&url)
                .header(HeaderName::from_static("x-padding"), padding)
                .send()
                .await
        }
    };
    let fine = with_padding(HOST_MAX_HEADERS / 2).await.unwrap();
    assert_eq!(fine.status(), 200);
    let big = reply_of(with_padding(HOST_MAX_HEADERS + 1).await.unwrap()).await;
    big.assert_problem(431, "HEADERS_TOO_LARGE");
    // Beyond what the HTTP parser buffers at all, the connection gets a bare 431
    // (or is closed): either way nothing reaches a component, and the host lives.
    if let Ok(response) = with_padding(4 * 1024 * 1024).await {
        assert_eq!(response.status(), 431);
    }
    assert_eq!(app.get("/api/v1/products", None).await.unwrap().status, 200);
}
