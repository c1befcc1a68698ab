//! Untrusted input into typed values. Every failure is `400 INVALID_REQUEST`
//! whose detail names the offending field (or `415` for a body not declared
//! as JSON; a body too large never gets here, see [`crate::body`]).

use crate::request::Request;
use crate::Problem;
use commerce::page::{Cursor, Limit, DEFAULT_LIMIT, MAX_LIMIT};
use serde::de::DeserializeOwned;

/// Parse a JSON body into `T`. The request must say it is JSON
/// ([`check_json_content_type`]); body types (`edge::bodies`) take a JSON
/// object only and refuse unknown members.
pub fn json_body<T: DeserializeOwned>(req: &Request) -> Result<T, Problem> {
    let content_type = req.header("content-type").map_err(|_| {
        Problem::new(
            commerce::ErrorCode::UnsupportedMediaType,
            "send one Content-Type header, application/json",
        )
    })?;
    check_json_content_type(content_type.map(|v| std::str::from_utf8(v).unwrap_or("")))?;
    parse_json(req.body())
}

/// A body must be declared `application/json` (parameters allowed; a
/// `charset` must be UTF-8, JSON's only encoding). Anything else, or no
/// `Content-Type` at all, is `415`: a payment API does not guess what a body
/// is, and a browser can send `text/plain` across origins without asking.
pub fn check_json_content_type(content_type: Option<&str>) -> Result<(), Problem> {
    let unsupported = |detail: String| Err(Problem::new(commerce::ErrorCode::UnsupportedMediaType, detail));
    let Some(content_type) = content_type else {
        return unsupported("a body needs Content-Type: application/json".into());
    };
    let mut parts = content_type.split(';');
    let media_type = parts.next().unwrap_or_default().trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return unsupported(format!(
            "Content-Type {media_type:?} is not supported; send application/json"
        ));
    }
    for parameter in parts {
        let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        let value = value.trim().trim_matches('"');
        if name.trim().eq_ignore_ascii_case("charset") && !value.eq_ignore_ascii_case("utf-8") {
            return unsupported(format!("charset {value:?} is not supported; JSON is UTF-8"));
        }
    }
    Ok(())
}

/// The pure part of [`json_body`], testable natively.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    if body.is_empty() {
        return Err(Problem::invalid("body", "a JSON object is required"));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        Problem::invalid(&field, strip_position(&err.inner().to_string()))
    })?;
    deserializer
        .end()
        .map_err(|_| Problem::invalid("body", "trailing characters after the JSON value"))?;
    Ok(value)
}

/// serde_json appends " at line 1 column 17"; the field name says more.
fn strip_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(at) => &message[..at],
        None => message,
    }
}

/// `?limit=` and `?cursor=` of a list (SPEC "Lists").
pub fn page(req: &Request) -> Result<(Limit, Option<Cursor>), Problem> {
    let limit = Limit::parse(query_param(req, "limit")?.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let cursor = Cursor::parse(query_param(req, "cursor")?.as_deref())?;
    Ok((limit, cursor))
}

/// The decoded value of query parameter `name`, if present. A parameter given
/// twice is ambiguous and rejected.
pub fn query_param(req: &Request, name: &str) -> Result<Option<String>, Problem> {
    parse_query_param(req.query(), name)
}

/// The pure part of [`query_param`].
pub fn parse_query_param(query: &str, name: &str) -> Result<Option<String>, Problem> {
    let mut found = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key == name {
            if found.is_some() {
                return Err(Problem::invalid(name, "must be given at most once"));
            }
            found = Some(value.into_owned());
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use commerce::ErrorCode;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Charge {
        #[allow(dead_code)]
        amount: i64,
    }

    fn detail_of(body: &str) -> String {
        let problem = parse_json::<Charge>(body.as_bytes()).unwrap_err();
        assert_eq!(problem.code, ErrorCode::InvalidRequest);
        problem.detail
    }

    #[test]
    fn names_the_field_for_every_kind_of_bad_body() {
        assert!(detail_of(r#"{"amount": 1.5}"#).starts_with("amount:"));
        assert!(detail_of(r#"{"amount": "10"}"#).starts_with("amount:"));
        assert!(detail_of(r#"{"amount": 99999999999999999999}"#).starts_with("amount:"));
        assert!(detail_of(r#"{}"#).contains("amount"));
        assert!(detail_of(r#"{"amount": 1, "extra": 2}"#).contains("extra"));
        assert!(detail_of(r#"{"amount": 1} x"#).starts_with("body:"));
        assert!(detail_of("").starts_with("body:"));
        assert!(detail_of("[").starts_with("body:"));
        assert!(!detail_of(r#"{"amount": 1.5}"#).contains("line"));
    }

    #[test]
    fn only_a_body_declared_as_json_is_read() {
        for accepted in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
            "application/json; version=1",
        ] {
            assert!(check_json_content_type(Some(accepted)).is_ok(), "{accepted}");
        }
        for refused in [
            None,
            Some(""),
            Some("text/plain"),
            Some("text/plain; charset=utf-8"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/merge-patch+json"),
            Some("application/jsonx"),
            Some("application/json; charset=latin-1"),
        ] {
            let problem = check_json_content_type(refused).expect_err(&format!("{refused:?}"));
            assert_eq!(problem.code, ErrorCode::UnsupportedMediaType, "{refused:?}");
            assert_eq!(problem.code.status(), 415);
        }
    }

    #[test]
    fn query_params_decode_and_reject_repeats() {
        assert_eq!(
            parse_query_param("limit=5&cursor=a%3D", "cursor")
                .unwrap()
                .as_deref(),
            Some("a=")
        );
        assert_eq!(parse_query_param("", "limit").unwrap(), None);
        assert!(parse_query_param("limit=1&limit=2", "limit").is_err());
    }
}
