//! The stable, machine-readable error codes of the API (`code` in every
//! `application/problem+json` answer) and the rejection value rules return.

use std::fmt;

/// Declares every code once: variant, `code` string, HTTP status and title.
macro_rules! error_codes {
    ($($variant:ident => ($code:literal, $status:literal, $title:literal),)*) => {
        /// One stable error code. The HTTP status and title belong to the code, so a
        /// code always answers with the same status wherever it is raised.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            /// Every code, for documentation and tests that walk the whole contract.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The `code` member of the problem document.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }

            /// The code named `text`, if there is one (e.g. a stored outcome).
            pub fn parse(text: &str) -> Option<ErrorCode> {
                match text {
                    $($code => Some(ErrorCode::$variant),)*
                    _ => None,
                }
            }

            /// The HTTP status this code is always answered with.
            pub fn status(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)*
                }
            }

            /// A short human-readable summary (the problem's `title`).
            pub fn title(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $title,)*
                }
            }
        }
    };
}

error_codes! {
    // Conventions of every endpoint.
    InvalidRequest => ("INVALID_REQUEST", 400, "The request is not valid"),
    Unauthorized => ("UNAUTHORIZED", 401, "Authentication is required"),
    Forbidden => ("FORBIDDEN", 403, "This action is not allowed for the caller"),
    NotFound => ("NOT_FOUND", 404, "No such resource"),
    MethodNotAllowed => ("METHOD_NOT_ALLOWED", 405, "Method not allowed on this resource"),
    PayloadTooLarge => ("PAYLOAD_TOO_LARGE", 413, "The request body is too large"),
    UnsupportedMediaType => ("UNSUPPORTED_MEDIA_TYPE", 415, "The request body must be declared as JSON"),
    HeadersTooLarge => ("HEADERS_TOO_LARGE", 431, "The request headers are too large"),
    ServiceUnavailable => ("SERVICE_UNAVAILABLE", 503, "The service is temporarily unavailable"),
    // Idempotency.
    IdempotencyKeyRequired => ("IDEMPOTENCY_KEY_REQUIRED", 400, "An Idempotency-Key header is required"),
    RequestInProgress => ("REQUEST_IN_PROGRESS", 409, "A request with this Idempotency-Key is still in progress"),
    IdempotencyKeyReused => ("IDEMPOTENCY_KEY_REUSED", 422, "This Idempotency-Key was used with a different request"),
    // Wallet (§1).
    InvalidChargeUnit => ("INVALID_CHARGE_UNIT", 400, "The amount is not a positive multiple of 1,000 KRW"),
    ChargeLimitExceeded => ("CHARGE_LIMIT_EXCEEDED", 400, "The amount exceeds the per-charge limit"),
    BalanceLimitExceeded => ("BALANCE_LIMIT_EXCEEDED", 409, "The balance would exceed its limit"),
    // Products (§2).
    ProductNotFound => ("PRODUCT_NOT_FOUND", 404, "Product not found"),
    // Coupons (§3).
    CouponNotFound => ("COUPON_NOT_FOUND", 404, "Coupon not found"),
    CouponSoldOut => ("COUPON_SOLD_OUT", 409, "All coupons have been issued"),
    CouponAlreadyIssued => ("COUPON_ALREADY_ISSUED", 409, "This user already has this coupon"),
    CouponNotIssuable => ("COUPON_NOT_ISSUABLE", 409, "The coupon is outside its issue window"),
    // Orders (§4).
    OrderNotFound => ("ORDER_NOT_FOUND", 404, "Order not found"),
    InsufficientBalance => ("INSUFFICIENT_BALANCE", 409, "The wallet balance is too low"),
    OutOfStock => ("OUT_OF_STOCK", 409, "Not enough stock"),
    CouponAlreadyUsed => ("COUPON_ALREADY_USED", 409, "The coupon has already been used"),
    CouponExpired => ("COUPON_EXPIRED", 409, "The coupon has expired"),
    CouponMinOrderNotMet => ("COUPON_MIN_ORDER_NOT_MET", 409, "The order is below the coupon's minimum"),
    // Cancellation and refunds (§8).
    OrderNotRefundable => ("ORDER_NOT_REFUNDABLE", 409, "The order cannot be refunded this way"),
    CancelWindowClosed => ("CANCEL_WINDOW_CLOSED", 409, "The time to cancel this order has passed"),
    RefundExceedsOrder => ("REFUND_EXCEEDS_ORDER", 409, "More units than remain to refund"),
    // Recovery (§5).
    RecoveryInProgress => ("RECOVERY_IN_PROGRESS", 409, "A recovery run is already in progress"),
    // Order events (§9).
    EventNotFound => ("EVENT_NOT_FOUND", 404, "Event not found"),
}

impl ErrorCode {
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
    fn codes_parse_back() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
        }
        assert_eq!(ErrorCode::parse("NOPE"), None);
    }

    #[test]
    fn type_uri_is_derived_from_code() {
        assert_eq!(
            ErrorCode::ProductNotFound.type_uri(),
            "urn:commerce-edge:problem:product-not-found"
        );
    }
}
