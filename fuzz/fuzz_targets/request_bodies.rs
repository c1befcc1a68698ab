//! Request bodies into domain values, through the very types the components
//! parse (`edge::bodies`): any bytes give a value or a 4xx rejection, a body
//! is accepted only if it is a JSON object whose lines are objects too, and
//! accepted text is text Postgres can store (no NUL: a `503` a client caused).
#![no_main]

use commerce::order::{price, PricingError};
use edge::bodies::{ChargeBody, CreateCouponBody, CreateProductBody, OrderBody, RefundBody};
use edge::input::parse_json;
use edge::Problem;
use libfuzzer_sys::fuzz_target;

/// A client's mistake is a 4xx, never a 5xx.
fn client_error(problem: Problem) {
    let status = problem.code.status();
    assert!((400..500).contains(&status), "{status} for {}", problem.detail);
}

fn check<T>(outcome: Result<T, Problem>) -> Option<T> {
    outcome.map_err(client_error).ok()
}

/// The oracle of "a body is a JSON object": `data` was accepted as a body.
fn accepted_as_object(data: &[u8]) {
    let value: serde_json::Value = serde_json::from_slice(data).expect("an accepted body is JSON");
    assert!(value.is_object(), "accepted a body that is not an object: {value}");
}

/// Postgres refuses NUL in `text` while binding it: accepted text has none.
fn storable(text: &str) {
    assert!(!text.contains('\0'), "accepted text with NUL: {text:?}");
}

fuzz_target!(|data: &[u8]| {
    if let Some(body) = check(parse_json::<ChargeBody>(data)) {
        accepted_as_object(data);
        check(body.amount().map_err(Problem::from));
    }
    if let Some(body) = check(parse_json::<CreateProductBody>(data)) {
        accepted_as_object(data);
        if let Some(product) = check(body.into_new_product().map_err(Problem::from)) {
            storable(&product.name);
        }
    }
    if let Some(body) = check(parse_json::<CreateCouponBody>(data)) {
        accepted_as_object(data);
        if let Some(coupon) = check(body.new_coupon().map_err(Problem::from)) {
            storable(&coupon.name);
        }
    }
    if let Some(body) = check(parse_json::<RefundBody>(data)) {
        accepted_as_object(data);
        let items = body.items.len();
        if let Some(request) = check(body.into_refund_request().map_err(Problem::from)) {
            request.reason.as_deref().map(storable);
            // Each line names the client's own index, once.
            let mut positions = request.positions.clone();
            positions.sort_unstable();
            positions.dedup();
            assert_eq!(positions.len(), request.lines.len());
            assert!(positions.iter().all(|&i| i < items));
        }
    }
    if let Some(body) = check(parse_json::<OrderBody>(data)) {
        accepted_as_object(data);
        let value: serde_json::Value = serde_json::from_slice(data).unwrap();
        for line in value["items"].as_array().expect("items is an array") {
            assert!(line.is_object(), "accepted an order line that is not an object: {line}");
        }
        if let Some(request) = check(body.into_order_request().map_err(Problem::from)) {
            // Price every line at each product's id: large ids probe overflow.
            let prices = request.lines.iter().map(|l| (l.product_id, l.product_id)).collect();
            match price(&request, &prices) {
                Ok(priced) => assert!(priced.total >= 0),
                Err(PricingError::Overflow(rejection)) => client_error(rejection.into()),
                Err(PricingError::UnknownProduct(id)) => panic!("product {id} has a price"),
            }
        }
    }
});
