//! Keyset pagination: `?limit=` and the opaque `?cursor=` of every list.
//!
//! A cursor encodes the sort key of the last item of a page. It is opaque to
//! clients (base64url of a versioned text) so the encoding can change without
//! breaking anyone who treats it as a string; a cursor that does not decode is
//! a `400`, never an empty page.

use crate::Rejection;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// SPEC "Lists": `?limit=` defaults to 20 and may be 1–100.
pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

/// How many items a page may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(u32);

impl Limit {
    /// Parse `?limit=`: absent means `default`; otherwise an integer in `1..=max`.
    pub fn parse(raw: Option<&str>, default: u32, max: u32) -> Result<Limit, Rejection> {
        let Some(raw) = raw else {
            return Ok(Limit(default));
        };
        match raw.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) && !raw.starts_with('+') => Ok(Limit(n)),
            _ => Err(Rejection::invalid(
                "limit",
                format!("must be an integer from 1 to {max}"),
            )),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// The position after which the next page starts: the id of the last item
/// returned (lists are ordered by id, ascending or descending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub after_id: i64,
}

const CURSOR_PREFIX: &str = "v1:";

impl Cursor {
    pub fn encode(self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{CURSOR_PREFIX}{}", self.after_id))
    }

    /// Parse `?cursor=`; absent means the first page.
    pub fn parse(raw: Option<&str>) -> Result<Option<Cursor>, Rejection> {
        let Some(raw) = raw else { return Ok(None) };
        let invalid = || Rejection::invalid("cursor", "is not a cursor returned by this API");
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
        let text = std::str::from_utf8(&bytes).map_err(|_| invalid())?;
        let id = text.strip_prefix(CURSOR_PREFIX).ok_or_else(invalid)?;
        let after_id = crate::ids::parse_positive_id(id, "cursor").map_err(|_| invalid())?;
        Ok(Some(Cursor { after_id }))
    }
}

/// Cut a fetched page: callers fetch `limit + 1` rows so they know whether a
/// next page exists without a second query.
pub fn split_page<T>(mut rows: Vec<T>, limit: Limit, id_of: impl Fn(&T) -> i64) -> (Vec<T>, Option<String>) {
    let limit = limit.get() as usize;
    if rows.len() > limit {
        rows.truncate(limit);
        let next = rows.last().map(|last| {
            Cursor {
                after_id: id_of(last),
            }
            .encode()
        });
        (rows, next)
    } else {
        (rows, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_defaults_and_bounds() {
        assert_eq!(Limit::parse(None, 20, 100).unwrap().get(), 20);
        assert_eq!(Limit::parse(Some("1"), 20, 100).unwrap().get(), 1);
        assert_eq!(Limit::parse(Some("100"), 20, 100).unwrap().get(), 100);
        for bad in ["0", "101", "-1", "abc", "", "1.0", "+5", "99999999999"] {
            assert!(Limit::parse(Some(bad), 20, 100).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cursor_round_trips() {
        let cursor = Cursor { after_id: 42 };
        assert_eq!(Cursor::parse(Some(&cursor.encode())).unwrap(), Some(cursor));
        assert_eq!(Cursor::parse(None).unwrap(), None);
    }

    #[test]
    fn garbage_cursors_are_rejected() {
        let not_ours = URL_SAFE_NO_PAD.encode("v2:5");
        let zero = URL_SAFE_NO_PAD.encode("v1:0");
        for bad in ["", "!!", "42", not_ours.as_str(), zero.as_str()] {
            let err = Cursor::parse(Some(bad)).unwrap_err();
            assert!(err.detail.starts_with("cursor"), "{bad:?}");
        }
    }

    #[test]
    fn split_page_reports_next_cursor_only_when_more_rows_exist() {
        let limit = Limit::parse(Some("2"), 20, 100).unwrap();
        let (items, next) = split_page(vec![1, 2, 3], limit, |id| *id);
        assert_eq!(items, vec![1, 2]);
        assert_eq!(
            Cursor::parse(next.as_deref()).unwrap(),
            Some(Cursor { after_id: 2 })
        );
        let (items, next) = split_page(vec![1, 2], limit, |id| *id);
        assert_eq!(items, vec![1, 2]);
        assert_eq!(next, None);
    }
}
