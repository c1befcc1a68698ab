//! RFC 9457 problem documents.
//!
//! Every error the API answers is one of these, with the stable `code` of
//! [`commerce::ErrorCode`]. Infrastructure failures become `503` with
//! `Retry-After`, and their detail never includes a panic message or a trace.

use commerce::{ErrorCode, Rejection};
use serde_json::{json, Value};
use spin_sdk::http::Response;

/// Seconds a client should wait before retrying after a `503`.
const RETRY_AFTER_SECONDS: &str = "1";

#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub code: ErrorCode,
    pub detail: String,
    /// Extension members (e.g. `productId` on `OUT_OF_STOCK`).
    pub extensions: Vec<(&'static str, Value)>,
    /// Extra response headers (e.g. `Allow` on `405`).
    pub headers: Vec<(&'static str, String)>,
    /// The `requestId` member when it is not the current request's: a
    /// stored outcome rebuilt for a repeated idempotency key names the
    /// request that first had it.
    pub request_id: Option<String>,
}

impl Problem {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Problem {
        Problem {
            code,
            detail: detail.into(),
            extensions: Vec::new(),
            headers: Vec::new(),
            request_id: None,
        }
    }

    /// `400 INVALID_REQUEST` naming the field.
    pub fn invalid(field: &str, problem: impl std::fmt::Display) -> Problem {
        Rejection::invalid(field, problem).into()
    }

    /// `503 SERVICE_UNAVAILABLE`: a store failed; the client may retry.
    pub fn unavailable(what: impl std::fmt::Display) -> Problem {
        Problem::new(ErrorCode::ServiceUnavailable, format!("{what}; please retry"))
            .with_header("retry-after", RETRY_AFTER_SECONDS)
    }

    pub fn with_extension(mut self, name: &'static str, value: impl Into<Value>) -> Problem {
        self.extensions.push((name, value.into()));
        self
    }

    /// Name `request_id` (the request that first had this outcome) in the body.
    pub fn of_request(mut self, request_id: Option<String>) -> Problem {
        self.request_id = request_id;
        self
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Problem {
        self.headers.push((name, value.into()));
        self
    }

    /// The problem document: members in the RFC's order, the request's id
    /// (SPEC "Operations"), then extensions.
    pub fn body(&self) -> Value {
        let mut doc = json!({
            "type": self.code.type_uri(),
            "title": self.code.title(),
            "status": self.code.status(),
            "code": self.code.as_str(),
            "detail": self.detail,
            "requestId": self.request_id.clone().unwrap_or_else(crate::observe::request_id),
        });
        let members = doc.as_object_mut().expect("a problem is an object");
        for (name, value) in &self.extensions {
            members.insert((*name).to_owned(), value.clone());
        }
        doc
    }

    pub fn into_response(self) -> Response {
        let mut builder = Response::builder();
        builder
            .status(self.code.status())
            .header("content-type", "application/problem+json");
        for (name, value) in &self.headers {
            builder.header(*name, value.as_str());
        }
        if self.code == ErrorCode::Unauthorized {
            builder.header("www-authenticate", "Bearer");
        }
        builder.body(self.body().to_string()).build()
    }
}

impl From<Rejection> for Problem {
    fn from(rejection: Rejection) -> Problem {
        Problem::new(rejection.code, rejection.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_rfc_members_and_extensions() {
        let body = Problem::new(ErrorCode::ProductNotFound, "no product 7")
            .with_extension("productId", 7)
            .body();
        assert_eq!(body["status"], 404);
        assert_eq!(body["code"], "PRODUCT_NOT_FOUND");
        assert_eq!(body["detail"], "no product 7");
        assert_eq!(body["productId"], 7);
        assert_eq!(body["type"], "urn:commerce-edge:problem:product-not-found");
    }

    #[test]
    fn unavailable_asks_to_retry() {
        let problem = Problem::unavailable("postgres is unreachable");
        assert_eq!(problem.code.status(), 503);
        assert!(problem.headers.contains(&("retry-after", "1".into())));
    }
}
