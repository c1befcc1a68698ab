//! The time fields of a coupon (`issueStartsAt`, `issueEndsAt`, `expiresAt`):
//! RFC 3339 text near the edges a client can reach — nine fractional digits,
//! any offset, years at 0001 and 9999 — or any text at all. A time is
//! refused with a 4xx or taken exactly as Postgres will store it and the API
//! will answer it: no digit below the microsecond, a year RFC 3339 can
//! write in UTC, written back to text that parses to the same time, and a
//! window that still holds on the stored values (a `503` from the window's
//! CHECK constraint was the bug this target guards against).
#![no_main]

use arbitrary::Arbitrary;
use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use commerce::coupon::{parse_time, CouponInput, NewCoupon};
use libfuzzer_sys::fuzz_target;

/// A time as a client might write it.
#[derive(Arbitrary, Debug)]
enum Written {
    /// Any text.
    Text(String),
    /// Well-formed RFC 3339 with every part chosen (often out of range).
    Parts {
        year: u16,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
        /// Fractional digits, up to nine of them are written.
        fraction: u32,
        digits: u8,
        /// The offset in minutes, `Z` when zero.
        offset: i16,
    },
}

impl Written {
    fn text(&self) -> String {
        match self {
            Written::Text(text) => text.clone(),
            Written::Parts { year, month, day, hour, minute, second, fraction, digits, offset } => {
                let digits = usize::from(*digits % 10);
                let fraction = format!("{fraction:09}");
                let fraction = match digits {
                    0 => String::new(),
                    n => format!(".{}", &fraction[fraction.len() - 9..][..n]),
                };
                let offset = match offset {
                    0 => "Z".to_owned(),
                    minutes => {
                        let sign = if *minutes < 0 { '-' } else { '+' };
                        let minutes = minutes.unsigned_abs() % (24 * 60);
                        format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
                    }
                };
                format!(
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{fraction}{offset}",
                    year % 10_000,
                    month % 13,
                    day % 32,
                    hour % 24,
                    minute % 60,
                    second % 60
                )
            }
        }
    }
}

/// A time the API took: as Postgres stores it and the API answers it.
fn stored_as_answered(time: DateTime<Utc>) {
    assert_eq!(time.timestamp_subsec_nanos() % 1_000, 0, "{time:?} has digits below the microsecond");
    assert!((1..=9999).contains(&time.year()), "{time:?} is outside 0001-9999");
    let answered = time.to_rfc3339_opts(SecondsFormat::Micros, true);
    assert_eq!(answered.len(), "2026-12-01T00:00:00.000000Z".len(), "{answered}");
    assert_eq!(parse_time(&answered, "t").unwrap(), time, "{answered}");
}

fuzz_target!(|times: (Written, Written, Written)| {
    let (starts, ends, expires) = (times.0.text(), times.1.text(), times.2.text());
    for text in [&starts, &ends, &expires] {
        match parse_time(text, "t") {
            Ok(time) => stored_as_answered(time),
            Err(rejection) => assert_eq!(rejection.code.status(), 400, "{text}"),
        }
    }
    let coupon = NewCoupon::new(CouponInput {
        name: "Fuzz",
        discount_type: "FIXED",
        discount_value: 1_000,
        max_discount: None,
        min_order_amount: 0,
        total_quantity: 10,
        issue_starts_at: &starts,
        issue_ends_at: &ends,
        expires_at: &expires,
    });
    match coupon {
        Ok(coupon) => {
            // What the schema's CHECK (issue_starts_at < issue_ends_at <= expires_at)
            // will see: the stored values.
            assert!(coupon.issue_starts_at < coupon.issue_ends_at, "{starts} / {ends}");
            assert!(coupon.issue_ends_at <= coupon.expires_at, "{ends} / {expires}");
        }
        Err(rejection) => assert_eq!(rejection.code.status(), 400, "{}", rejection.detail),
    }
});
