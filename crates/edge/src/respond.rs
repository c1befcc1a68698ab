//! Successful JSON answers.

use serde::Serialize;
use spin_sdk::http::Response;

/// One page of a list (SPEC "Lists").
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// The JSON bytes of a response value.
pub fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("response values always serialise")
}

/// A JSON response with the given status.
pub fn json(status: u16, value: &impl Serialize) -> Response {
    let body = to_json(value);
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
