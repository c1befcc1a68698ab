//! Coupons (SPEC §3): what an admin may create, when a coupon may be issued,
//! what a user coupon's status is, and what discount it gives (SPEC §4).

use crate::Rejection;
use chrono::{DateTime, Datelike, SubsecRound, Utc};

/// How a coupon discounts an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscountType {
    /// A fixed number of KRW off.
    Fixed,
    /// A percentage (1–100) off, optionally capped.
    Rate,
}

impl DiscountType {
    pub fn parse(text: &str) -> Result<DiscountType, Rejection> {
        match text {
            "FIXED" => Ok(DiscountType::Fixed),
            "RATE" => Ok(DiscountType::Rate),
            _ => Err(Rejection::invalid("discountType", "must be FIXED or RATE")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DiscountType::Fixed => "FIXED",
            DiscountType::Rate => "RATE",
        }
    }
}

/// The discount rule of a coupon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discount {
    pub kind: DiscountType,
    /// KRW for `Fixed`, percent for `Rate`.
    pub value: i64,
    /// The most a `Rate` coupon takes off.
    pub max_discount: Option<i64>,
    /// The order total (before discount) must be at least this.
    pub min_order_amount: i64,
}

/// A validated coupon to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCoupon {
    pub name: String,
    pub discount: Discount,
    pub total_quantity: i64,
    pub issue_starts_at: DateTime<Utc>,
    pub issue_ends_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// An admin's input, as received.
#[derive(Debug, Clone)]
pub struct CouponInput<'a> {
    pub name: &'a str,
    pub discount_type: &'a str,
    pub discount_value: i64,
    pub max_discount: Option<i64>,
    pub min_order_amount: i64,
    pub total_quantity: i64,
    pub issue_starts_at: &'a str,
    pub issue_ends_at: &'a str,
    pub expires_at: &'a str,
}

/// Parse an RFC 3339 time as the API stores it, naming the field when it
/// cannot be one:
///
/// - in UTC it must fall in the years 0001–9999, the only years RFC 3339
///   can write (`9999-12-31T23:00:00-05:00` is in the year 10000 in UTC,
///   and would be answered as `+10000-01-01T…`);
/// - digits below the microsecond are dropped: Postgres keeps microseconds,
///   so the time compared here is the time stored and answered (two times
///   apart by less than a microsecond are one time).
pub fn parse_time(text: &str, field: &str) -> Result<DateTime<Utc>, Rejection> {
    let time = DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| Rejection::invalid(field, "must be an RFC 3339 date-time, e.g. 2026-12-01T00:00:00Z"))?;
    if !(1..=9999).contains(&time.year()) {
        return Err(Rejection::invalid(
            field,
            "must fall in the years 0001 to 9999 in UTC",
        ));
    }
    Ok(time.trunc_subsecs(6))
}

impl NewCoupon {
    pub fn new(input: CouponInput<'_>) -> Result<NewCoupon, Rejection> {
        crate::product::check_name(input.name)?;
        let kind = DiscountType::parse(input.discount_type)?;
        match kind {
            DiscountType::Fixed if input.discount_value <= 0 => {
                return Err(Rejection::invalid(
                    "discountValue",
                    "must be a positive number of KRW",
                ))
            }
            DiscountType::Rate if !(1..=100).contains(&input.discount_value) => {
                return Err(Rejection::invalid(
                    "discountValue",
                    "must be a percentage from 1 to 100",
                ))
            }
            _ => {}
        }
        match (kind, input.max_discount) {
            (DiscountType::Fixed, Some(_)) => {
                return Err(Rejection::invalid("maxDiscount", "applies to RATE coupons only"))
            }
            (_, Some(cap)) if cap <= 0 => return Err(Rejection::invalid("maxDiscount", "must be positive")),
            _ => {}
        }
        if input.min_order_amount < 0 {
            return Err(Rejection::invalid("minOrderAmount", "must not be negative"));
        }
        if input.total_quantity <= 0 {
            return Err(Rejection::invalid("totalQuantity", "must be positive"));
        }
        let issue_starts_at = parse_time(input.issue_starts_at, "issueStartsAt")?;
        let issue_ends_at = parse_time(input.issue_ends_at, "issueEndsAt")?;
        let expires_at = parse_time(input.expires_at, "expiresAt")?;
        if issue_starts_at >= issue_ends_at {
            return Err(Rejection::invalid("issueEndsAt", "must be after issueStartsAt"));
        }
        if issue_ends_at > expires_at {
            return Err(Rejection::invalid("expiresAt", "must not be before issueEndsAt"));
        }
        Ok(NewCoupon {
            name: input.name.to_owned(),
            discount: Discount {
                kind,
                value: input.discount_value,
                max_discount: input.max_discount,
                min_order_amount: input.min_order_amount,
            },
            total_quantity: input.total_quantity,
            issue_starts_at,
            issue_ends_at,
            expires_at,
        })
    }
}

/// The issue window is `[starts, ends)`. Where `now` falls in it is decided
/// next to the stock, atomically with the issue (the coupon component's
/// `DECIDE` script, on Redis' clock); these are its two refusals.
pub mod window {
    use crate::{ErrorCode, Rejection};

    pub fn not_open_yet() -> Rejection {
        Rejection::new(
            ErrorCode::CouponNotIssuable,
            "the issue window has not opened yet",
        )
    }

    pub fn closed() -> Rejection {
        Rejection::new(ErrorCode::CouponNotIssuable, "the issue window has closed")
    }
}

/// The status a user sees: `USED` once an order used it, else `EXPIRED` from
/// `expires_at` on (derived when read, never stored), else `ISSUED`.
pub fn user_coupon_status(used: bool, expires_at: DateTime<Utc>, now: DateTime<Utc>) -> &'static str {
    if used {
        "USED"
    } else if now >= expires_at {
        "EXPIRED"
    } else {
        "ISSUED"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    fn input() -> CouponInput<'static> {
        CouponInput {
            name: "Welcome",
            discount_type: "RATE",
            discount_value: 10,
            max_discount: Some(5_000),
            min_order_amount: 10_000,
            total_quantity: 100,
            issue_starts_at: "2026-12-01T00:00:00Z",
            issue_ends_at: "2026-12-02T00:00:00+09:00",
            expires_at: "2026-12-31T00:00:00Z",
        }
    }

    #[test]
    fn accepts_a_valid_coupon_in_any_offset() {
        let coupon = NewCoupon::new(input()).unwrap();
        assert_eq!(coupon.discount.kind, DiscountType::Rate);
        assert_eq!(coupon.issue_ends_at.to_rfc3339(), "2026-12-01T15:00:00+00:00");
        let fixed = NewCoupon::new(CouponInput {
            discount_type: "FIXED",
            discount_value: 3_000,
            max_discount: None,
            ..input()
        });
        assert!(fixed.is_ok());
        let equal_end_and_expiry = CouponInput {
            expires_at: "2026-12-01T15:00:00Z",
            ..input()
        };
        assert!(
            NewCoupon::new(equal_end_and_expiry).is_ok(),
            "issueEndsAt ≤ expiresAt allows equality"
        );
    }

    #[test]
    fn rejects_naming_the_field() {
        let cases = [
            (CouponInput { name: " ", ..input() }, "name"),
            (
                CouponInput {
                    discount_type: "PERCENT",
                    ..input()
                },
                "discountType",
            ),
            (
                CouponInput {
                    discount_value: 0,
                    ..input()
                },
                "discountValue",
            ),
            (
                CouponInput {
                    discount_value: 101,
                    ..input()
                },
                "discountValue",
            ),
            (
                CouponInput {
                    discount_type: "FIXED",
                    discount_value: -1,
                    max_discount: None,
                    ..input()
                },
                "discountValue",
            ),
            (
                CouponInput {
                    discount_type: "FIXED",
                    discount_value: 1,
                    ..input()
                },
                "maxDiscount",
            ),
            (
                CouponInput {
                    max_discount: Some(0),
                    ..input()
                },
                "maxDiscount",
            ),
            (
                CouponInput {
                    min_order_amount: -1,
                    ..input()
                },
                "minOrderAmount",
            ),
            (
                CouponInput {
                    total_quantity: 0,
                    ..input()
                },
                "totalQuantity",
            ),
            (
                CouponInput {
                    issue_starts_at: "yesterday",
                    ..input()
                },
                "issueStartsAt",
            ),
            (
                CouponInput {
                    issue_ends_at: "2026-12-01T00:00:00Z",
                    ..input()
                },
                "issueEndsAt",
            ),
            (
                CouponInput {
                    expires_at: "2026-12-01T14:59:59Z",
                    ..input()
                },
                "expiresAt",
            ),
        ];
        for (case, field) in cases {
            let err = NewCoupon::new(case).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidRequest);
            assert!(err.detail.starts_with(field), "{field}: {}", err.detail);
        }
    }

    #[test]
    fn times_are_taken_as_postgres_stores_them() {
        let t = |s| parse_time(s, "t");
        // Below the microsecond: dropped, so these two are one time.
        let starts = t("2026-12-01T00:00:00.0000001Z").unwrap();
        assert_eq!(starts, t("2026-12-01T00:00:00.0000009Z").unwrap());
        assert_eq!(starts, t("2026-12-01T00:00:00Z").unwrap());
        // Before 2000 too (where a driver truncating toward 2000 would round up).
        assert_eq!(
            t("1999-12-31T23:59:59.9999999Z").unwrap(),
            t("1999-12-31T23:59:59.999999Z").unwrap()
        );
        let window = NewCoupon::new(CouponInput {
            issue_starts_at: "2026-12-01T00:00:00.0000001Z",
            issue_ends_at: "2026-12-01T00:00:00.0000009Z",
            expires_at: "2026-12-02T00:00:00Z",
            ..input()
        })
        .unwrap_err();
        assert!(window.detail.starts_with("issueEndsAt"), "{}", window.detail);
        // Only the years RFC 3339 can write, in UTC.
        for beyond in [
            "9999-12-31T23:00:00-05:00",
            "0001-01-01T00:30:00+01:00",
            "0000-06-01T00:00:00Z",
        ] {
            let err = t(beyond).unwrap_err();
            assert!(err.detail.contains("0001 to 9999"), "{beyond}: {}", err.detail);
        }
        assert!(t("9999-12-31T23:59:59.999999Z").is_ok());
        assert!(t("0001-01-01T00:00:00Z").is_ok());
    }

    proptest::proptest! {
        /// Any RFC 3339 time, at any offset and with nine fractional digits:
        /// taken at most a microsecond below the instant written, with no
        /// digit below the microsecond, in years 0001–9999, and written back
        /// (as answers write it) to text that parses to the same time.
        #[test]
        fn an_accepted_time_is_stored_and_answered_unchanged(
            // From a day before 0001-01-01 to a day after 9999-12-31, UTC.
            seconds in -62_135_683_200i64..253_402_387_200,
            nanos in 0u32..1_000_000_000,
            offset_minutes in -1439i32..=1439,
        ) {
            let exact = DateTime::from_timestamp(seconds, nanos).unwrap();
            let offset = chrono::FixedOffset::east_opt(offset_minutes * 60).unwrap();
            let local = exact.with_timezone(&offset);
            // Only what a client can write: a four-digit year at its offset.
            proptest::prop_assume!((1..=9999).contains(&local.year()));
            let text = local.to_rfc3339_opts(chrono::SecondsFormat::Nanos, false);
            match parse_time(&text, "t") {
                Ok(time) => {
                    proptest::prop_assert_eq!(time.timestamp_subsec_nanos() % 1_000, 0);
                    proptest::prop_assert!(time <= exact && exact - time < chrono::Duration::microseconds(1));
                    proptest::prop_assert!((1..=9999).contains(&time.year()));
                    let answered = time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                    proptest::prop_assert_eq!(parse_time(&answered, "t").unwrap(), time);
                }
                Err(rejection) => {
                    // Refused only for a UTC year RFC 3339 cannot write.
                    proptest::prop_assert!(!(1..=9999).contains(&exact.year()), "{} refused", text);
                    proptest::prop_assert!(rejection.detail.contains("0001 to 9999"));
                }
            }
        }
    }

    #[test]
    fn window_refusals_are_not_issuable() {
        for refusal in [window::not_open_yet(), window::closed()] {
            assert_eq!(refusal.code, ErrorCode::CouponNotIssuable);
        }
        assert_ne!(window::not_open_yet().detail, window::closed().detail);
    }

    #[test]
    fn status_is_derived() {
        let t = |s| parse_time(s, "t").unwrap();
        let expires = t("2026-12-31T00:00:00Z");
        assert_eq!(
            user_coupon_status(false, expires, t("2026-12-30T00:00:00Z")),
            "ISSUED"
        );
        assert_eq!(user_coupon_status(false, expires, expires), "EXPIRED");
        assert_eq!(
            user_coupon_status(true, expires, t("2027-01-30T00:00:00Z")),
            "USED"
        );
    }
}
