//! Correctly signed tokens with arbitrary headers and claims. Random bytes
//! (the `authorization` target) almost never get past the signature; this
//! target does, so the claim rules themselves are fuzzed. The oracle is the
//! safety half of the rules: a token is accepted only if its header says
//! HS256, it was signed with the secret, `sub` is the caller's id as a
//! string, and the configured issuer and audience are the token's.
#![no_main]

use arbitrary::Arbitrary;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use edge::auth::{verify, AuthConfig};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};
use sha2::Sha256;

const SECRET: &str = "fuzz-secret";
const ISSUER: &str = "shop";
const AUDIENCE: &str = "edge";

#[derive(Arbitrary, Debug)]
enum Alg {
    Hs256,
    Hs384,
    Rs256,
    None,
    Other(String),
}

#[derive(Arbitrary, Debug, Clone)]
enum Claim {
    Missing,
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
    List(Vec<String>),
    /// Seconds from now, for `exp` and `nbf` that are near the present.
    FromNow(i16),
}

/// A claim that is often the expected value, so that accepted tokens are
/// reachable and the fuzzer explores their neighbourhood.
#[derive(Arbitrary, Debug, Clone)]
enum Likely {
    Expected,
    ExpectedInList,
    Other(Claim),
}

#[derive(Arbitrary, Debug)]
enum Sub {
    UserId(i64),
    Claim(Claim),
}

#[derive(Arbitrary, Debug)]
struct Token {
    alg: Alg,
    typ: Option<String>,
    sub: Sub,
    exp: Claim,
    nbf: Claim,
    iss: Likely,
    aud: Likely,
    role: Likely,
    extra: Vec<(String, Claim)>,
    signed_with_secret: bool,
}

fn value(claim: &Claim, now: i64) -> Option<Value> {
    Some(match claim {
        Claim::Missing => return None,
        Claim::Text(text) => json!(text),
        Claim::Int(n) => json!(n),
        Claim::Float(f) => json!(f),
        Claim::Bool(b) => json!(b),
        Claim::Null => Value::Null,
        Claim::List(items) => json!(items),
        Claim::FromNow(seconds) => json!(now + i64::from(*seconds)),
    })
}

fn likely(claim: &Likely, expected: &str) -> Claim {
    match claim {
        Likely::Expected => Claim::Text(expected.to_owned()),
        Likely::ExpectedInList => Claim::List(vec![expected.to_owned()]),
        Likely::Other(claim) => claim.clone(),
    }
}

fn sign(message: &str, key: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(message.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

fuzz_target!(|token: Token| {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    let alg = match &token.alg {
        Alg::Hs256 => "HS256".to_owned(),
        Alg::Hs384 => "HS384".to_owned(),
        Alg::Rs256 => "RS256".to_owned(),
        Alg::None => "none".to_owned(),
        Alg::Other(other) => other.clone(),
    };
    let mut header = json!({ "alg": alg });
    if let Some(typ) = &token.typ {
        header["typ"] = json!(typ);
    }
    let sub = match &token.sub {
        Sub::UserId(id) => Claim::Text(id.to_string()),
        Sub::Claim(claim) => claim.clone(),
    };
    let (iss, aud, role) =
        (likely(&token.iss, ISSUER), likely(&token.aud, AUDIENCE), likely(&token.role, "admin"));
    let mut claims = Map::new();
    for (name, claim) in token.extra.iter().map(|(n, c)| (n.as_str(), c)).chain([
        ("sub", &sub),
        ("exp", &token.exp),
        ("nbf", &token.nbf),
        ("iss", &iss),
        ("aud", &aud),
        ("role", &role),
    ]) {
        if let Some(value) = value(claim, now) {
            claims.insert(name.to_owned(), value);
        }
    }
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(Value::Object(claims.clone()).to_string())
    );
    let key: &[u8] = if token.signed_with_secret { SECRET.as_bytes() } else { b"not-the-secret" };
    let signature = sign(&signing_input, key);
    let authorization = format!("Bearer {signing_input}.{signature}");
    let config = AuthConfig {
        secret: SECRET.into(),
        issuer: Some(ISSUER.into()),
        audience: Some(AUDIENCE.into()),
    };
    match verify(Some(authorization.as_bytes()), &config) {
        Ok(caller) => {
            assert_eq!(alg, "HS256", "accepted a token whose header says {alg}");
            assert!(token.signed_with_secret, "accepted a token signed with another key");
            assert!(caller.user_id > 0);
            assert_eq!(claims.get("sub"), Some(&json!(caller.user_id.to_string())));
            assert_eq!(claims.get("iss"), Some(&json!(ISSUER)));
            let aud = claims.get("aud").expect("accepted a token without aud");
            assert!(aud == &json!(AUDIENCE) || aud.as_array().is_some_and(|a| a.contains(&json!(AUDIENCE))));
            assert!(claims.get("exp").and_then(Value::as_f64).is_some_and(|exp| exp >= (now - 60) as f64));
            if let Some(nbf) = claims.get("nbf") {
                assert!(nbf.as_f64().is_some_and(|nbf| nbf <= (now + 60) as f64), "accepted nbf {nbf}");
            }
            assert_eq!(caller.is_admin, claims.get("role") == Some(&json!("admin")));
        }
        Err(problem) => assert_eq!(problem.code.status(), 401),
    }
});
