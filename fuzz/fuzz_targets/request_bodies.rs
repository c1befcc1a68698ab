//! Request bodies into domain values: any bytes give a value or a rejection.
#![no_main]

use commerce::coupon::{CouponInput, NewCoupon};
use commerce::order::{Line, OrderRequest};
use commerce::product::NewProduct;
use commerce::wallet::ChargeAmount;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = edge::input::parse_json::<Value>(data) else { return };
    let int = |name: &str| body.get(name).and_then(Value::as_i64).unwrap_or_default();
    let text = |name: &str| body.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
    let _ = ChargeAmount::new(int("amount"));
    let _ = NewProduct::new(text("name"), int("price"), int("stock"));
    let (name, kind, starts, ends, expires) =
        (text("name"), text("discountType"), text("issueStartsAt"), text("issueEndsAt"), text("expiresAt"));
    let _ = NewCoupon::new(CouponInput {
        name: &name,
        discount_type: &kind,
        discount_value: int("discountValue"),
        max_discount: body.get("maxDiscount").and_then(Value::as_i64),
        min_order_amount: int("minOrderAmount"),
        total_quantity: int("totalQuantity"),
        issue_starts_at: &starts,
        issue_ends_at: &ends,
        expires_at: &expires,
    });
    let lines = body
        .get("items")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|l| Line {
                    product_id: l.get("productId").and_then(Value::as_i64).unwrap_or_default(),
                    quantity: l.get("quantity").and_then(Value::as_i64).unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    if let Ok(request) = OrderRequest::new(lines, body.get("userCouponId").and_then(Value::as_i64)) {
        let prices = request.lines.iter().map(|l| (l.product_id, int("price"))).collect();
        let _ = commerce::order::price(&request, &prices);
    }
});
