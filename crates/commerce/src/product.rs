//! Products: what an admin may create.

use crate::Rejection;

/// The longest product name, in characters (not bytes).
pub const MAX_NAME_CHARS: usize = 200;

/// A validated product to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProduct {
    pub name: String,
    pub price: i64,
    pub stock: i64,
}

impl NewProduct {
    /// Check an admin's input: name 1–200 characters (after trimming nothing:
    /// a name of only spaces is empty), price > 0 KRW, stock ≥ 0.
    pub fn new(name: String, price: i64, stock: i64) -> Result<NewProduct, Rejection> {
        let chars = name.chars().count();
        if name.trim().is_empty() || chars > MAX_NAME_CHARS {
            return Err(Rejection::invalid(
                "name",
                format!("must be 1 to {MAX_NAME_CHARS} characters and not blank"),
            ));
        }
        if price <= 0 {
            return Err(Rejection::invalid("price", "must be a positive number of KRW"));
        }
        if stock < 0 {
            return Err(Rejection::invalid("stock", "must not be negative"));
        }
        Ok(NewProduct { name, price, stock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_boundaries() {
        assert!(NewProduct::new("a".into(), 1, 0).is_ok());
        assert!(NewProduct::new("가".repeat(200), i64::MAX, i64::MAX).is_ok());
    }

    #[test]
    fn rejects_naming_the_field() {
        let cases = [
            (NewProduct::new(String::new(), 1, 0), "name"),
            (NewProduct::new("   ".into(), 1, 0), "name"),
            (NewProduct::new("가".repeat(201), 1, 0), "name"),
            (NewProduct::new("a".into(), 0, 0), "price"),
            (NewProduct::new("a".into(), -5, 0), "price"),
            (NewProduct::new("a".into(), 1, -1), "stock"),
        ];
        for (result, field) in cases {
            let err = result.unwrap_err();
            assert!(err.detail.starts_with(field), "{}", err.detail);
        }
    }
}
