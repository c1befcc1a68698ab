//! The JSON request bodies of the API (member names as in SPEC.md) and the
//! domain value each becomes. The components parse these, and so do the fuzz
//! targets (`fuzz/`), so what is fuzzed is exactly what a component accepts.
//!
//! Unknown members are refused (`deny_unknown_fields`): a misspelt
//! `userCouponID` is a `400`, not an order placed without its coupon.
//!
//! Every body, and every object inside one, is a JSON object and nothing
//! else. serde's derived `Deserialize` for a struct also takes an array of its
//! fields in order (`[5000]` would be a charge of 5,000), so each type here
//! derives with `#[serde(remote = "Self")]`, which turns the derived code into
//! an inherent `deserialize`, and gets its `Deserialize` from [`objects_only!`],
//! which asks the deserializer for a map and refuses anything else.

use commerce::coupon::{CouponInput, NewCoupon};
use commerce::order::{Line, OrderRequest};
use commerce::product::{NewProduct, Restock};
use commerce::refund::RefundRequest;
use commerce::wallet::ChargeAmount;
use commerce::Rejection;
use serde::{Deserialize, Serialize};

/// `Deserialize` for body types derived with `#[serde(remote = "Self")]`:
/// from a JSON object only (`400` "expected a JSON object" otherwise).
macro_rules! objects_only {
    ($($body:ident),* $(,)?) => {$(
        impl<'de> Deserialize<'de> for $body {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct ObjectOnly;
                impl<'de> serde::de::Visitor<'de> for ObjectOnly {
                    type Value = $body;
                    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                        formatter.write_str("a JSON object")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<$body, A::Error> {
                        // The derived (inherent) deserializer, fed the object's members.
                        $body::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    }
                }
                deserializer.deserialize_map(ObjectOnly)
            }
        }
    )*};
}

objects_only!(
    ChargeBody,
    CreateProductBody,
    RestockBody,
    CreateCouponBody,
    OrderBody,
    LineBody,
    CancelBody,
    RefundBody
);

/// `POST /api/v1/wallet/charge`. Serialisable: it is the charge's fingerprint.
#[derive(Debug, Deserialize, Serialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct ChargeBody {
    pub amount: i64,
}

impl Serialize for ChargeBody {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ChargeBody::serialize(self, serializer)
    }
}

impl ChargeBody {
    pub fn amount(&self) -> Result<ChargeAmount, Rejection> {
        ChargeAmount::new(self.amount)
    }
}

/// `POST /api/v1/admin/products`.
#[derive(Debug, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
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

/// `POST /api/v1/admin/products/{id}/restock`.
#[derive(Debug, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct RestockBody {
    pub quantity: i64,
}

impl RestockBody {
    pub fn into_restock(self) -> Result<Restock, Rejection> {
        Restock::new(self.quantity)
    }
}

/// `POST /api/v1/admin/coupons`.
#[derive(Debug, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, rename_all = "camelCase")]
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
#[serde(remote = "Self", deny_unknown_fields, rename_all = "camelCase")]
pub struct OrderBody {
    pub items: Vec<LineBody>,
    #[serde(default)]
    pub user_coupon_id: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, rename_all = "camelCase")]
pub struct LineBody {
    pub product_id: i64,
    pub quantity: i64,
}

impl From<LineBody> for Line {
    fn from(line: LineBody) -> Line {
        Line {
            product_id: line.product_id,
            quantity: line.quantity,
        }
    }
}

impl OrderBody {
    pub fn into_order_request(self) -> Result<OrderRequest, Rejection> {
        OrderRequest::new(
            self.items.into_iter().map(Line::from).collect(),
            self.user_coupon_id,
        )
    }
}

/// `POST /api/v1/orders/{id}/cancel`: no body, or an empty object.
#[derive(Debug, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct CancelBody {}

/// `POST /api/v1/admin/orders/{id}/refunds`.
#[derive(Debug, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct RefundBody {
    pub items: Vec<LineBody>,
    #[serde(default)]
    pub reason: Option<String>,
}

impl RefundBody {
    pub fn into_refund_request(self) -> Result<RefundRequest, Rejection> {
        RefundRequest::new(self.items.into_iter().map(Line::from).collect(), self.reason)
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

    /// Each body type, given what serde's derive would take for it as an
    /// array of its fields, or another JSON value that is not an object.
    #[test]
    fn a_body_is_a_json_object_and_nothing_else() {
        fn refused<T: serde::de::DeserializeOwned + std::fmt::Debug>(body: &str, field: &str) {
            let problem = parse_json::<T>(body.as_bytes()).expect_err(body);
            assert_eq!(problem.code, commerce::ErrorCode::InvalidRequest, "{body}");
            assert_eq!(
                problem.detail,
                format!(
                    "{field}: invalid type: {}, expected a JSON object",
                    kind(body, field)
                ),
                "{body}"
            );
        }
        fn kind(body: &str, field: &str) -> &'static str {
            let value: serde_json::Value = serde_json::from_str(body).unwrap();
            let at = if field == "body" {
                &value
            } else {
                &value["items"][0]
            };
            match at {
                serde_json::Value::Array(_) => "sequence",
                serde_json::Value::String(_) => "string \"x\"",
                serde_json::Value::Number(_) => "integer `5000`",
                serde_json::Value::Bool(_) => "boolean `true`",
                _ => "null",
            }
        }
        refused::<ChargeBody>("[5000]", "body");
        refused::<ChargeBody>("5000", "body");
        refused::<ChargeBody>("null", "body");
        refused::<CreateProductBody>(r#"["Kettle", 42000, 12]"#, "body");
        refused::<CreateCouponBody>(r#"["c", "FIXED", 1000, null, 0, 10, "a", "b", "c"]"#, "body");
        refused::<OrderBody>(r#"[[{"productId": 1, "quantity": 1}], null]"#, "body");
        refused::<OrderBody>(r#""x""#, "body");
        refused::<OrderBody>("true", "body");
        refused::<OrderBody>(r#"{"items": [[1, 1]]}"#, "items[0]");
        // The object forms still parse.
        assert_eq!(
            parse_json::<ChargeBody>(br#"{"amount": 5000}"#).unwrap().amount,
            5000
        );
    }

    #[test]
    fn unknown_members_are_refused_by_name() {
        let problem = parse_json::<OrderBody>(br#"{"items":[],"userCouponID":9}"#).unwrap_err();
        assert!(problem.detail.contains("userCouponID"), "{}", problem.detail);
    }
}
