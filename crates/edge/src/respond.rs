//! Successful JSON answers.

use serde::Serialize;
use spin_sdk::http::Response;

/// A JSON response with the given status.
pub fn json(status: u16, value: &impl Serialize) -> Response {
    let body = serde_json::to_vec(value).expect("response values always serialise");
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body)
        .build()
}

/// `200 OK` with a JSON body.
pub fn ok(value: &impl Serialize) -> Response {
    json(200, value)
}
