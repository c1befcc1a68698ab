//! Development tokens: an HS256 JWT signed with the app's `jwt_secret`.

use anyhow::Result;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde::Serialize;

#[derive(Serialize)]
struct Claims<'a> {
    sub: String,
    iat: i64,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

pub struct TokenRequest<'a> {
    pub sub: i64,
    pub role: Option<&'a str>,
    pub ttl_seconds: i64,
    pub secret: &'a str,
    pub issuer: Option<&'a str>,
    pub audience: Option<&'a str>,
}

pub fn mint(request: &TokenRequest<'_>) -> Result<String> {
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: request.sub.to_string(),
        iat: now,
        exp: now + request.ttl_seconds,
        role: request.role,
        iss: request.issuer.filter(|s| !s.is_empty()),
        aud: request.audience.filter(|s| !s.is_empty()),
    };
    Ok(encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(request.secret.as_bytes()),
    )?)
}
