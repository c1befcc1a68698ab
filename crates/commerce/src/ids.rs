//! Positive `i64` identifiers. Ids arrive as path segments or JSON numbers and
//! are rejected before any lookup when they are not positive integers.

use crate::Rejection;

/// Parse a path segment as a positive id; `field` names it in the rejection.
pub fn parse_positive_id(segment: &str, field: &str) -> Result<i64, Rejection> {
    // `i64::from_str` accepts a leading '+'; ids are plain digits only.
    if segment.is_empty() || !segment.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Rejection::invalid(field, "must be a positive integer"));
    }
    match segment.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        Ok(_) => Err(Rejection::invalid(field, "must be a positive integer")),
        Err(_) => Err(Rejection::invalid(field, "is out of range")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn accepts_positive_integers_up_to_i64_max() {
        assert_eq!(parse_positive_id("1", "id"), Ok(1));
        assert_eq!(parse_positive_id("9223372036854775807", "id"), Ok(i64::MAX));
    }

    #[test]
    fn rejects_everything_else_naming_the_field() {
        for bad in [
            "",
            "0",
            "-1",
            "+1",
            "1.5",
            "abc",
            "9223372036854775808",
            " 1",
            "1e3",
        ] {
            let err = parse_positive_id(bad, "productId").unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidRequest, "{bad:?}");
            assert!(err.detail.starts_with("productId"), "{bad:?}: {}", err.detail);
        }
    }
}
