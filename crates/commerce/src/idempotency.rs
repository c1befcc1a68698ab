//! The `Idempotency-Key` header (SPEC "Conventions").

use crate::{ErrorCode, Rejection};

/// The longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// A valid key: 1–255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parse the header value; absent is `IDEMPOTENCY_KEY_REQUIRED`, malformed is `INVALID_REQUEST`.
    pub fn parse(header: Option<&[u8]>) -> Result<IdempotencyKey, Rejection> {
        let Some(raw) = header else {
            return Err(Rejection::new(
                ErrorCode::IdempotencyKeyRequired,
                "this request needs an Idempotency-Key header",
            ));
        };
        let visible = raw.iter().all(|b| (0x21..=0x7e).contains(b));
        if raw.is_empty() || raw.len() > MAX_KEY_LEN || !visible {
            return Err(Rejection::invalid(
                "Idempotency-Key",
                format!("must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
            ));
        }
        Ok(IdempotencyKey(
            String::from_utf8(raw.to_vec()).expect("ASCII is UTF-8"),
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_visible_ascii_up_to_255() {
        assert!(IdempotencyKey::parse(Some(b"a")).is_ok());
        assert!(IdempotencyKey::parse(Some("k".repeat(255).as_bytes())).is_ok());
        assert!(IdempotencyKey::parse(Some(b"order-2026-11-28T07:42:14Z#1~!")).is_ok());
    }

    #[test]
    fn missing_is_required_and_malformed_is_invalid() {
        assert_eq!(
            IdempotencyKey::parse(None).unwrap_err().code,
            ErrorCode::IdempotencyKeyRequired
        );
        for bad in [
            &b""[..],
            b"has space",
            b"tab\t",
            "한글".as_bytes(),
            b"\x7f",
            "k".repeat(256).as_bytes(),
        ] {
            assert_eq!(
                IdempotencyKey::parse(Some(bad)).unwrap_err().code,
                ErrorCode::InvalidRequest,
                "{bad:?}"
            );
        }
    }
}
