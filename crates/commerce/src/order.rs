//! Orders and payment (SPEC §4): what a valid order is, how it is priced and
//! discounted, and the states it moves through.

use crate::coupon::{Discount, DiscountType};
use crate::{ErrorCode, Rejection};
use std::collections::{BTreeMap, HashMap};

/// The most distinct products in one order.
pub const MAX_ITEMS: usize = 50;
/// The most units of one product in one order.
pub const MAX_QUANTITY: i64 = 1_000;

/// One line as requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    pub product_id: i64,
    pub quantity: i64,
}

/// A valid order request: 1–50 distinct products, quantities 1–1000, lines
/// sorted by product id (the order stock is reserved in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRequest {
    pub lines: Vec<Line>,
    pub user_coupon_id: Option<i64>,
}

impl OrderRequest {
    pub fn new(lines: Vec<Line>, user_coupon_id: Option<i64>) -> Result<OrderRequest, Rejection> {
        let lines = validate_lines(lines)?;
        if let Some(id) = user_coupon_id {
            if id <= 0 {
                return Err(Rejection::invalid("userCouponId", "must be a positive integer"));
            }
        }
        Ok(OrderRequest {
            lines,
            user_coupon_id,
        })
    }
}

/// The `items` of an order or a refund: 1–50 distinct positive product ids,
/// quantities 1–1000; answered sorted by product id.
pub fn validate_lines(lines: Vec<Line>) -> Result<Vec<Line>, Rejection> {
    if lines.is_empty() || lines.len() > MAX_ITEMS {
        return Err(Rejection::invalid(
            "items",
            format!("must hold 1 to {MAX_ITEMS} products"),
        ));
    }
    let mut seen = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        if line.product_id <= 0 {
            return Err(Rejection::invalid(
                &format!("items[{i}].productId"),
                "must be a positive integer",
            ));
        }
        if !(1..=MAX_QUANTITY).contains(&line.quantity) {
            return Err(Rejection::invalid(
                &format!("items[{i}].quantity"),
                format!("must be from 1 to {MAX_QUANTITY}"),
            ));
        }
        if seen.insert(line.product_id, *line).is_some() {
            return Err(Rejection::invalid(
                &format!("items[{i}].productId"),
                format!(
                    "product {} appears twice; send one line per product",
                    line.product_id
                ),
            ));
        }
    }
    Ok(seen.into_values().collect())
}

/// A line with its price snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PricedLine {
    pub product_id: i64,
    pub quantity: i64,
    pub unit_price: i64,
    pub line_total: i64,
}

/// The order priced at its current product prices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    pub lines: Vec<PricedLine>,
    pub total: i64,
}

/// Why an order could not be priced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PricingError {
    /// A business outcome: the order ends `FAILED` with `PRODUCT_NOT_FOUND`.
    UnknownProduct(i64),
    /// Bad input: the total does not fit a 64-bit number of KRW.
    Overflow(Rejection),
}

/// Price `request` with `prices` (product id → price).
pub fn price(request: &OrderRequest, prices: &HashMap<i64, i64>) -> Result<Priced, PricingError> {
    let overflow = || PricingError::Overflow(Rejection::invalid("items", "the order total is too large"));
    let mut lines = Vec::with_capacity(request.lines.len());
    let mut total: i64 = 0;
    for line in &request.lines {
        let unit_price = *prices
            .get(&line.product_id)
            .ok_or(PricingError::UnknownProduct(line.product_id))?;
        let line_total = unit_price.checked_mul(line.quantity).ok_or_else(overflow)?;
        total = total.checked_add(line_total).ok_or_else(overflow)?;
        lines.push(PricedLine {
            product_id: line.product_id,
            quantity: line.quantity,
            unit_price,
            line_total,
        });
    }
    Ok(Priced { lines, total })
}

/// `404 PRODUCT_NOT_FOUND` for an order line.
pub fn product_not_found(product_id: i64) -> Rejection {
    Rejection::new(
        ErrorCode::ProductNotFound,
        format!("product {product_id} does not exist"),
    )
}

/// `409 OUT_OF_STOCK` for an order line.
pub fn out_of_stock(product_id: i64) -> Rejection {
    Rejection::new(
        ErrorCode::OutOfStock,
        format!("not enough stock of product {product_id}"),
    )
}

/// `409 INSUFFICIENT_BALANCE`.
pub fn insufficient_balance(needed: i64) -> Rejection {
    Rejection::new(
        ErrorCode::InsufficientBalance,
        format!("the wallet balance is below the {needed} KRW to pay"),
    )
}

/// What a user coupon looks like when an order wants to use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CouponState {
    /// Already used by an order.
    pub used: bool,
    /// Past its `expiresAt`.
    pub expired: bool,
}

impl Discount {
    /// The discount on an order of `total` (before discount), or why the
    /// coupon cannot be used: used, expired, or minimum not met (in that order).
    pub fn apply(&self, state: CouponState, total: i64) -> Result<i64, Rejection> {
        if state.used {
            return Err(Rejection::new(
                ErrorCode::CouponAlreadyUsed,
                "this coupon has already been used",
            ));
        }
        if state.expired {
            return Err(Rejection::new(
                ErrorCode::CouponExpired,
                "this coupon has expired",
            ));
        }
        if total < self.min_order_amount {
            return Err(Rejection::new(
                ErrorCode::CouponMinOrderNotMet,
                format!(
                    "this coupon needs an order of at least {} KRW",
                    self.min_order_amount
                ),
            ));
        }
        Ok(match self.kind {
            DiscountType::Fixed => self.value.min(total),
            DiscountType::Rate => {
                let rate = (i128::from(total) * i128::from(self.value) / 100) as i64;
                self.max_discount.map_or(rate, |cap| rate.min(cap))
            }
        })
    }
}

/// `404 COUPON_NOT_FOUND` for a user coupon that is not the caller's.
pub fn coupon_not_found(user_coupon_id: i64) -> Rejection {
    Rejection::new(
        ErrorCode::CouponNotFound,
        format!("you have no coupon {user_coupon_id}"),
    )
}

/// The states of an order. `PENDING` while the steps run; `ON_HOLD` when an
/// infrastructure failure interrupted them; `PAID`, `FAILED` (a business rule
/// said no) and `CANCELLED` (recovery rolled it back) are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    Pending,
    OnHold,
    Paid,
    Failed,
    Cancelled,
    /// Paid, and some units refunded (SPEC §8).
    PartiallyRefunded,
    /// Paid, and every unit refunded.
    Refunded,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::OnHold => "ON_HOLD",
            OrderStatus::Paid => "PAID",
            OrderStatus::Failed => "FAILED",
            OrderStatus::Cancelled => "CANCELLED",
            OrderStatus::PartiallyRefunded => "PARTIALLY_REFUNDED",
            OrderStatus::Refunded => "REFUNDED",
        }
    }

    /// Every status, in the order an order may pass through them.
    pub const ALL: [OrderStatus; 7] = [
        OrderStatus::Pending,
        OrderStatus::OnHold,
        OrderStatus::Paid,
        OrderStatus::Failed,
        OrderStatus::Cancelled,
        OrderStatus::PartiallyRefunded,
        OrderStatus::Refunded,
    ];

    pub fn parse(text: &str) -> Option<OrderStatus> {
        OrderStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            OrderStatus::Paid
                | OrderStatus::Failed
                | OrderStatus::Cancelled
                | OrderStatus::PartiallyRefunded
                | OrderStatus::Refunded
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(product_id: i64, quantity: i64) -> Line {
        Line { product_id, quantity }
    }

    #[test]
    fn valid_requests_are_sorted_by_product() {
        let request = OrderRequest::new(vec![line(9, 1), line(2, 3)], Some(4)).unwrap();
        assert_eq!(request.lines, vec![line(2, 3), line(9, 1)]);
        assert!(OrderRequest::new((1..=50).map(|p| line(p, 1000)).collect(), None).is_ok());
    }

    #[test]
    fn invalid_requests_name_the_field() {
        let cases = [
            (OrderRequest::new(vec![], None), "items"),
            (
                OrderRequest::new((1..=51).map(|p| line(p, 1)).collect(), None),
                "items",
            ),
            (OrderRequest::new(vec![line(1, 0)], None), "items[0].quantity"),
            (OrderRequest::new(vec![line(1, 1001)], None), "items[0].quantity"),
            (OrderRequest::new(vec![line(0, 1)], None), "items[0].productId"),
            (
                OrderRequest::new(vec![line(1, 1), line(1, 2)], None),
                "items[1].productId",
            ),
            (OrderRequest::new(vec![line(1, 1)], Some(0)), "userCouponId"),
        ];
        for (result, field) in cases {
            let err = result.unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidRequest);
            assert!(err.detail.starts_with(field), "{field}: {}", err.detail);
        }
    }

    #[test]
    fn pricing_snapshots_and_checks() {
        let request = OrderRequest::new(vec![line(1, 2), line(2, 3)], None).unwrap();
        let prices = HashMap::from([(1, 4_500), (2, 1_000)]);
        let priced = price(&request, &prices).unwrap();
        assert_eq!(priced.total, 12_000);
        assert_eq!(
            priced.lines[0],
            PricedLine {
                product_id: 1,
                quantity: 2,
                unit_price: 4_500,
                line_total: 9_000
            }
        );
        assert_eq!(
            price(&request, &HashMap::from([(1, 1)])),
            Err(PricingError::UnknownProduct(2))
        );
        let huge = HashMap::from([(1, i64::MAX / 2), (2, 1)]);
        assert!(matches!(price(&request, &huge), Err(PricingError::Overflow(_))));
    }

    fn fresh() -> CouponState {
        CouponState {
            used: false,
            expired: false,
        }
    }

    #[test]
    fn fixed_discount_never_exceeds_the_total() {
        let fixed = Discount {
            kind: DiscountType::Fixed,
            value: 3_000,
            max_discount: None,
            min_order_amount: 0,
        };
        assert_eq!(fixed.apply(fresh(), 10_000), Ok(3_000));
        assert_eq!(fixed.apply(fresh(), 2_000), Ok(2_000));
    }

    #[test]
    fn rate_discount_floors_and_caps() {
        let rate = Discount {
            kind: DiscountType::Rate,
            value: 15,
            max_discount: Some(2_000),
            min_order_amount: 0,
        };
        assert_eq!(rate.apply(fresh(), 9_999), Ok(1_499), "floor(9999 * 15 / 100)");
        assert_eq!(rate.apply(fresh(), 100_000), Ok(2_000), "capped");
        let uncapped = Discount {
            max_discount: None,
            ..rate
        };
        assert_eq!(
            uncapped.apply(fresh(), i64::MAX),
            Ok((i128::from(i64::MAX) * 15 / 100) as i64)
        );
        let all = Discount {
            kind: DiscountType::Rate,
            value: 100,
            max_discount: None,
            min_order_amount: 0,
        };
        assert_eq!(all.apply(fresh(), 5_000), Ok(5_000), "a free order");
    }

    #[test]
    fn coupon_rules_in_order() {
        let d = Discount {
            kind: DiscountType::Fixed,
            value: 1,
            max_discount: None,
            min_order_amount: 10_000,
        };
        assert_eq!(
            d.apply(fresh(), 10_000),
            Ok(1),
            "the minimum is inclusive, before discount"
        );
        let code = |state, total| d.apply(state, total).unwrap_err().code;
        assert_eq!(code(fresh(), 9_999), ErrorCode::CouponMinOrderNotMet);
        assert_eq!(
            code(
                CouponState {
                    used: false,
                    expired: true
                },
                9_999
            ),
            ErrorCode::CouponExpired
        );
        assert_eq!(
            code(
                CouponState {
                    used: true,
                    expired: true
                },
                9_999
            ),
            ErrorCode::CouponAlreadyUsed
        );
    }

    #[test]
    fn statuses_round_trip() {
        for status in ["PENDING", "ON_HOLD", "PAID", "FAILED", "CANCELLED"] {
            assert_eq!(OrderStatus::parse(status).unwrap().as_str(), status);
        }
        assert!(OrderStatus::Paid.is_final() && !OrderStatus::OnHold.is_final());
        assert_eq!(OrderStatus::parse("paid"), None);
    }
}
