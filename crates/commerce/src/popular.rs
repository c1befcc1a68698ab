//! Popular products (SPEC §7): the window and the ranking.

use crate::page::Limit;
use crate::Rejection;
use chrono::{DateTime, Duration, NaiveDate, Utc};

pub const DEFAULT_DAYS: u32 = 3;
pub const MAX_DAYS: u32 = 7;
pub const DEFAULT_LIMIT: u32 = 5;
pub const MAX_LIMIT: u32 = 20;

/// The last `days` UTC calendar days including today: `first_day` at
/// 00:00:00Z up to `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub first_day: NaiveDate,
    pub today: NaiveDate,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Window {
    pub fn ending(now: DateTime<Utc>, days: u32) -> Window {
        let today = now.date_naive();
        let first_day = today - Duration::days(i64::from(days) - 1);
        let from = first_day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
        Window {
            first_day,
            today,
            from,
            to: now,
        }
    }
}

/// `?days=`: 1–7, 3 when absent.
pub fn parse_days(raw: Option<&str>) -> Result<u32, Rejection> {
    Limit::parse(raw, DEFAULT_DAYS, MAX_DAYS)
        .map(Limit::get)
        .map_err(|_| Rejection::invalid("days", format!("must be an integer from 1 to {MAX_DAYS}")))
}

/// `?limit=`: 1–20, 5 when absent.
pub fn parse_limit(raw: Option<&str>) -> Result<u32, Rejection> {
    Limit::parse(raw, DEFAULT_LIMIT, MAX_LIMIT).map(Limit::get)
}

/// The top `limit` of (product, units): most units first, ties to the lower id.
pub fn rank(mut sold: Vec<(i64, i64)>, limit: u32) -> Vec<(i64, i64)> {
    sold.retain(|(_, units)| *units > 0);
    sold.sort_by(|(a_id, a_units), (b_id, b_units)| b_units.cmp(a_units).then(a_id.cmp(b_id)));
    sold.truncate(limit as usize);
    sold
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_covers_whole_utc_days_including_today() {
        let now = DateTime::parse_from_rfc3339("2026-11-28T07:42:14Z")
            .unwrap()
            .with_timezone(&Utc);
        let window = Window::ending(now, 3);
        assert_eq!(window.from.to_rfc3339(), "2026-11-26T00:00:00+00:00");
        assert_eq!(window.to, now);
        assert_eq!(
            Window::ending(now, 1).from.to_rfc3339(),
            "2026-11-28T00:00:00+00:00"
        );
    }

    #[test]
    fn parameters_have_bounds_and_defaults() {
        assert_eq!(parse_days(None), Ok(3));
        assert_eq!(parse_limit(None), Ok(5));
        assert_eq!(parse_days(Some("7")), Ok(7));
        assert_eq!(parse_limit(Some("20")), Ok(20));
        for bad in ["0", "8", "x", ""] {
            assert!(
                parse_days(Some(bad)).unwrap_err().detail.starts_with("days"),
                "{bad}"
            );
        }
        assert!(parse_limit(Some("21")).unwrap_err().detail.starts_with("limit"));
    }

    #[test]
    fn ranking_breaks_ties_by_lower_id() {
        let sold = vec![(5, 10), (2, 10), (9, 30), (1, 0), (3, 1)];
        assert_eq!(rank(sold.clone(), 3), vec![(9, 30), (2, 10), (5, 10)]);
        assert_eq!(rank(sold, 20).len(), 4, "products with no sales are not ranked");
    }
}
