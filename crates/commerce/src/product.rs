//! Products: what an admin may create.

use crate::Rejection;

/// The longest product or coupon name, in characters (not bytes).
pub const MAX_NAME_CHARS: usize = 200;

/// Check a display name (products, coupons): 1–200 characters, not blank, and
/// no control characters — Postgres cannot store NUL in `text` (found by
/// Schemathesis: a 503 a client could cause), and the others have no place in
/// a name a shopper reads.
pub fn check_name(name: &str) -> Result<(), Rejection> {
    if name.trim().is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(Rejection::invalid(
            "name",
            format!("must be 1 to {MAX_NAME_CHARS} characters and not blank"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Rejection::invalid("name", "must not contain control characters"));
    }
    Ok(())
}

/// A validated product to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProduct {
    pub name: String,
    pub price: i64,
    pub stock: i64,
}

impl NewProduct {
    /// Check an admin's input: a [`check_name`] name (kept as sent, spaces
    /// and all), price > 0 KRW, stock ≥ 0.
    pub fn new(name: String, price: i64, stock: i64) -> Result<NewProduct, Rejection> {
        check_name(&name)?;
        if price <= 0 {
            return Err(Rejection::invalid("price", "must be a positive number of KRW"));
        }
        if stock < 0 {
            return Err(Rejection::invalid("stock", "must not be negative"));
        }
        Ok(NewProduct { name, price, stock })
    }
}

/// The most units one restock may add (SPEC §2).
pub const MAX_RESTOCK: i64 = 1_000_000;

/// A validated number of units to add to a product: 1 to [`MAX_RESTOCK`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restock(i64);

impl Restock {
    pub fn new(quantity: i64) -> Result<Restock, Rejection> {
        if !(1..=MAX_RESTOCK).contains(&quantity) {
            return Err(Rejection::invalid(
                "quantity",
                format!("must be 1 to {MAX_RESTOCK} units"),
            ));
        }
        Ok(Restock(quantity))
    }

    pub fn quantity(self) -> i64 {
        self.0
    }
}

/// A restock the stock counter cannot hold (a product created with a stock
/// near the largest number): the client's input, so a `400`.
pub fn restock_overflows() -> Rejection {
    Rejection::invalid(
        "quantity",
        "would take the product's stock past the largest number it can hold",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restocks_are_one_to_a_million_units() {
        assert_eq!(Restock::new(1).map(Restock::quantity), Ok(1));
        assert_eq!(Restock::new(MAX_RESTOCK).map(Restock::quantity), Ok(MAX_RESTOCK));
        for quantity in [0, -1, MAX_RESTOCK + 1, i64::MIN, i64::MAX] {
            let err = Restock::new(quantity).unwrap_err();
            assert!(err.detail.starts_with("quantity"), "{}", err.detail);
        }
    }

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
            (NewProduct::new("nul\0inside".into(), 1, 0), "name"),
            (NewProduct::new("line\nbreak".into(), 1, 0), "name"),
            (NewProduct::new("\u{9f}".into(), 1, 0), "name"),
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
