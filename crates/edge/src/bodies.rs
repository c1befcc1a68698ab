//! The JSON request bodies of the API (member names as in SPEC.md) and the
//! domain value each becomes. The components parse these, and so do the fuzz
//! targets (`fuzz/`), so what is fuzzed is exactly what a component accepts.
//!
//! Unknown members are refused (`deny_unknown_fields`): a misspelt
//! `userCouponID` is a `400`, not an order placed without its coupon.

use commerce::coupon::{CouponInput, NewCoupon};
use commerce::order::{Line, OrderRequest};
use commerce::product::NewProduct;
use commerce::wallet::ChargeAmount;
use commerce::Rejection;
use serde::{Deserialize, Serialize};

/// `POST /api/v1/wallet/charge`. Serialisable: it is the charge's fingerprint.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChargeBody {
    pub amount: i64,
}

impl ChargeBody {
    pub fn amount(&self) -> Result<ChargeAmount, Rejection> {
        ChargeAmount::new(self.amount)
    }
}

/// `POST /api/v1/admin/products`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProductBody {
    pub name: String,
    pub price: i64,
    pub stock: i64,
}

impl CreateProductBody {
    pub fn into_new_product(self) -> Result<NewProduct, Rejection> {
        NewProduct::new(self.name, self.price, self.stock)
    }
}

/// `POST /api/v1/admin/coupons`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateCouponBody {
    pub name: String,
    pub discount_type: String,
    pub discount_value: i64,
    #[serde(default)]
    pub max_discount: Option<i64>,
    #[serde(default)]
    pub min_order_amount: i64,
    pub total_quantity: i64,
    pub issue_starts_at: String,
    pub issue_ends_at: String,
    pub expires_at: String,
}

impl CreateCouponBody {
    pub fn new_coupon(&self) -> Result<NewCoupon, Rejection> {
        NewCoupon::new(CouponInput {
            name: &self.name,
            discount_type: &self.discount_type,
            discount_value: self.discount_value,
            max_discount: self.max_discount,
            min_order_amount: self.min_order_amount,
            total_quantity: self.total_quantity,
            issue_starts_at: &self.issue_starts_at,
            issue_ends_at: &self.issue_ends_at,
            expires_at: &self.expires_at,
        })
    }
}

/// `POST /api/v1/orders`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OrderBody {
    pub items: Vec<LineBody>,
    #[serde(default)]
    pub user_coupon_id: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LineBody {
    pub product_id: i64,
    pub quantity: i64,
}

impl OrderBody {
    pub fn into_order_request(self) -> Result<OrderRequest, Rejection> {
        let lines = self
            .items
            .into_iter()
            .map(|line| Line {
                product_id: line.product_id,
                quantity: line.quantity,
            })
            .collect();
        OrderRequest::new(lines, self.user_coupon_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::parse_json;

    #[test]
    fn order_body_uses_the_spec_member_names() {
        let body: OrderBody =
            parse_json(br#"{"items":[{"productId":3,"quantity":2}],"userCouponId":9}"#).unwrap();
        let request = body.into_order_request().unwrap();
        assert_eq!(request.user_coupon_id, Some(9));
        assert_eq!(request.lines.len(), 1);
    }

    #[test]
    fn unknown_members_are_refused_by_name() {
        let problem = parse_json::<OrderBody>(br#"{"items":[],"userCouponID":9}"#).unwrap_err();
        assert!(problem.detail.contains("userCouponID"), "{}", problem.detail);
    }
}
