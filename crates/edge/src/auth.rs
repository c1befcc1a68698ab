//! Bearer-token authentication (SPEC "Conventions").
//!
//! HS256 only, secret from the `jwt_secret` variable; `sub` is the user id (a
//! positive integer in a string), `exp` is required, `iss`/`aud` are checked
//! when `jwt_issuer`/`jwt_audience` are set, `role = "admin"` opens admin
//! routes. Anything else is `401` with `WWW-Authenticate: Bearer`.

use crate::config::{optional_variable, variable};
use crate::request::Request;
use crate::Problem;
use commerce::ErrorCode;
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Seconds of clock skew tolerated on `exp` between the issuer and this app.
const EXPIRY_LEEWAY_SECONDS: u64 = 5;

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: i64,
    pub is_admin: bool,
}

/// What token verification needs from the configuration.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub secret: String,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl AuthConfig {
    /// Read `jwt_secret`, `jwt_issuer` and `jwt_audience`.
    pub fn from_variables() -> Result<AuthConfig, Problem> {
        Ok(AuthConfig {
            secret: variable("jwt_secret")?,
            issuer: optional_variable("jwt_issuer")?,
            audience: optional_variable("jwt_audience")?,
        })
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    role: Option<String>,
    /// Typed here because jsonwebtoken also accepts an array of issuers,
    /// which RFC 7519 (4.1.1) does not allow: `"iss": ["shop"]` is a 401.
    #[serde(default, rename = "iss")]
    _issuer: Option<String>,
}

fn unauthorized(detail: &str) -> Problem {
    Problem::new(ErrorCode::Unauthorized, detail)
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is
/// compared case-insensitively (RFC 9110 11.1: `bearer`, `BEARER` alike),
/// and one or more spaces may follow it.
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Verify a raw `Authorization` header value and return the caller.
pub fn verify(authorization: Option<&[u8]>, config: &AuthConfig) -> Result<Caller, Problem> {
    let header = authorization.ok_or_else(|| unauthorized("a bearer token is required"))?;
    let header =
        std::str::from_utf8(header).map_err(|_| unauthorized("the Authorization header is not text"))?;
    let token = bearer_token(header)
        .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;

    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = EXPIRY_LEEWAY_SECONDS;
    // A token that says it is not valid yet is not valid yet.
    validation.validate_nbf = true;
    // A configured issuer or audience must be present, not merely right when present.
    let mut required = vec!["exp", "sub"];
    match &config.issuer {
        Some(issuer) => {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        None => validation.iss = None,
    }
    match &config.audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    let key = DecodingKey::from_secret(config.secret.as_bytes());
    let claims = decode::<Claims>(token, &key, &validation)
        .map_err(|e| unauthorized(&format!("the token is not valid ({e})")))?
        .claims;

    let user_id = commerce::ids::parse_positive_id(&claims.sub, "sub")
        .map_err(|_| unauthorized("the token's sub must be a positive integer user id"))?;
    Ok(Caller {
        user_id,
        is_admin: claims.role.as_deref() == Some("admin"),
    })
}

/// The caller of `req`, or `401`. Two `Authorization` headers are `401`
/// too: a proxy in front may have checked one while this would read the
/// other, so neither is trusted.
pub fn authenticate(req: &Request) -> Result<Caller, Problem> {
    let authorization = req
        .header("authorization")
        .map_err(|_| unauthorized("send one Authorization header, not several"))?;
    let config = AuthConfig::from_variables()?;
    let caller = verify(authorization, &config)?;
    crate::observe::set_user(caller.user_id);
    Ok(caller)
}

/// The caller of `req` if an admin: `401` without a valid token, `403` otherwise.
pub fn authenticate_admin(req: &Request) -> Result<Caller, Problem> {
    let caller = authenticate(req)?;
    if !caller.is_admin {
        return Err(Problem::new(ErrorCode::Forbidden, "this route needs role=admin"));
    }
    Ok(caller)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::{json, Value};

    const SECRET: &str = "test-secret";

    fn config() -> AuthConfig {
        AuthConfig {
            secret: SECRET.into(),
            issuer: None,
            audience: None,
        }
    }

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn token(claims: Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn check(token: &str, config: &AuthConfig) -> Result<Caller, Problem> {
        verify(Some(format!("Bearer {token}").as_bytes()), config)
    }

    #[test]
    fn accepts_a_valid_user_and_admin() {
        let user = check(&token(json!({"sub": "7", "exp": now() + 60})), &config()).unwrap();
        assert_eq!(
            user,
            Caller {
                user_id: 7,
                is_admin: false
            }
        );
        let admin = check(
            &token(json!({"sub": "9007199254740993", "exp": now() + 60, "role": "admin"})),
            &config(),
        )
        .unwrap();
        assert_eq!(
            admin,
            Caller {
                user_id: 9_007_199_254_740_993,
                is_admin: true
            }
        );
    }

    #[test]
    fn rejects_bad_tokens_as_unauthorized() {
        let alg_none = {
            // header {"alg":"none","typ":"JWT"}, no signature
            let claims = serde_json::to_vec(&json!({"sub": "1", "exp": now() + 60})).unwrap();
            use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
            let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
            format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), b64(&claims))
        };
        let cases = [
            token(json!({"sub": "1"})),                                       // no exp
            token(json!({"sub": "1", "exp": now() - 3600})),                  // expired
            token(json!({"exp": now() + 60})),                                // no sub
            token(json!({"sub": "abc", "exp": now() + 60})),                  // non-numeric sub
            token(json!({"sub": "0", "exp": now() + 60})),                    // not positive
            token(json!({"sub": "99999999999999999999", "exp": now() + 60})), // beyond i64
            encode(
                &Header::new(Algorithm::HS384),
                &json!({"sub": "1", "exp": now() + 60}),
                &EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap(),
            encode(
                &Header::new(Algorithm::HS256),
                &json!({"sub": "1", "exp": now() + 60}),
                &EncodingKey::from_secret(b"other"),
            )
            .unwrap(),
            alg_none,
            "not.a.token".into(),
        ];
        for token in cases {
            let problem = check(&token, &config()).unwrap_err();
            assert_eq!(problem.code, ErrorCode::Unauthorized, "{token}");
        }
        let not_yet_valid = token(json!({"sub": "1", "exp": now() + 600, "nbf": now() + 300}));
        assert!(check(&not_yet_valid, &config()).is_err());
        assert!(verify(None, &config()).is_err());
        assert!(verify(Some(b"Basic abc"), &config()).is_err());
        assert!(verify(Some(b"Bearer"), &config()).is_err());
        assert!(verify(Some(b"Bearer    "), &config()).is_err());
        assert!(verify(Some(b"Bearerx abc"), &config()).is_err());
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        let token = token(json!({"sub": "3", "exp": now() + 60}));
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let header = format!("{scheme} {token}");
            let caller = verify(Some(header.as_bytes()), &config()).expect(scheme);
            assert_eq!(caller.user_id, 3);
        }
        let spaced = format!("Bearer   {token}");
        assert!(verify(Some(spaced.as_bytes()), &config()).is_ok());
    }

    #[test]
    fn checks_issuer_and_audience_when_configured() {
        let strict = AuthConfig {
            issuer: Some("shop".into()),
            audience: Some("edge".into()),
            ..config()
        };
        let good = token(json!({"sub": "1", "exp": now() + 60, "iss": "shop", "aud": "edge"}));
        assert!(check(&good, &strict).is_ok());
        for bad in [
            token(json!({"sub": "1", "exp": now() + 60, "iss": "other", "aud": "edge"})),
            token(json!({"sub": "1", "exp": now() + 60, "iss": "shop", "aud": "other"})),
            token(json!({"sub": "1", "exp": now() + 60})),
            // Found by the jwt_claims fuzz target: jsonwebtoken takes a list of issuers.
            token(json!({"sub": "1", "exp": now() + 60, "iss": ["shop"], "aud": "edge"})),
        ] {
            assert!(check(&bad, &strict).is_err());
        }
        // Without configuration, iss/aud in a token are ignored.
        assert!(check(&good, &config()).is_ok());
    }
}
