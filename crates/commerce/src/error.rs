//! The stable, machine-readable error codes of the API (`code` in every
//! `application/problem+json` answer) and the rejection value rules return.

use std::fmt;

/// One stable error code. The HTTP status and title belong to the code, so a
/// code always answers with the same status wherever it is raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    ServiceUnavailable,
    ProductNotFound,
}

impl ErrorCode {
    /// Every code, for documentation and tests that walk the whole contract.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::InvalidRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::ServiceUnavailable,
        ErrorCode::ProductNotFound,
    ];

    /// The `code` member of the problem document.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            ErrorCode::ProductNotFound => "PRODUCT_NOT_FOUND",
        }
    }

    /// The HTTP status this code is always answered with.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound | ErrorCode::ProductNotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::ServiceUnavailable => 503,
        }
    }

    /// A short human-readable summary (the problem's `title`).
    pub fn title(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "The request is not valid",
            ErrorCode::Unauthorized => "Authentication is required",
            ErrorCode::Forbidden => "This action is not allowed for the caller",
            ErrorCode::NotFound => "No such resource",
            ErrorCode::MethodNotAllowed => "Method not allowed on this resource",
            ErrorCode::PayloadTooLarge => "The request body is too large",
            ErrorCode::ServiceUnavailable => "The service is temporarily unavailable",
            ErrorCode::ProductNotFound => "Product not found",
        }
    }

    /// The problem `type` URI: stable, one per code.
    pub fn type_uri(self) -> String {
        format!(
            "urn:commerce-edge:problem:{}",
            self.as_str().to_ascii_lowercase().replace('_', "-")
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule said no: the stable code plus a detail for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub detail: String,
}

impl Rejection {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Rejection {
            code,
            detail: detail.into(),
        }
    }

    /// `400 INVALID_REQUEST` naming the offending field.
    pub fn invalid(field: &str, problem: impl fmt::Display) -> Self {
        Rejection::new(ErrorCode::InvalidRequest, format!("{field}: {problem}"))
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

impl std::error::Error for Rejection {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_upper_snake_case() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            let name = code.as_str();
            assert!(seen.insert(name), "duplicate code {name}");
            assert!(name.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
        }
    }

    #[test]
    fn statuses_are_client_or_unavailable() {
        for code in ErrorCode::ALL {
            let status = code.status();
            assert!(
                (400..500).contains(&status) || status == 503,
                "{code} -> {status}"
            );
        }
    }

    #[test]
    fn type_uri_is_derived_from_code() {
        assert_eq!(
            ErrorCode::ProductNotFound.type_uri(),
            "urn:commerce-edge:problem:product-not-found"
        );
    }
}
