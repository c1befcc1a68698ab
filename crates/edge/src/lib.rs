//! What every component shares, and nothing scenario-specific.
//!
//! A component handler reads like *parse → rule → SQL/Lua → respond*; this crate
//! supplies the parse, store and respond parts over `spin-sdk`:
//!
//! - [`router`]: a route table per component, `404`/`405` answers, and the
//!   `wasi:http` handler every component exports ([`router::serve`]);
//! - [`request`] and [`body`]: the request as handlers see it, its body read
//!   as a stream up to its limit (`413` beyond);
//! - [`problem`]: RFC 9457 `application/problem+json` errors with stable codes;
//! - [`input`]: JSON bodies and query strings into typed values (`400` naming the field);
//! - [`bodies`]: the API's request bodies and the domain values they become;
//! - [`auth`]: HS256 JWT bearer tokens per the spec's conventions;
//! - [`config`]: Spin variables;
//! - [`observe`]: request ids and the JSON log lines of requests and business events;
//! - [`pg`] and [`redis`]: opening the stores and mapping their failures to `503`.

pub mod auth;
pub mod bodies;
pub mod body;
pub mod config;
pub mod idempotency;
pub mod input;
pub mod jobs;
pub mod observe;
pub mod pg;
pub mod problem;
pub mod redis;
pub mod request;
pub mod respond;
pub mod router;

pub use problem::Problem;
pub use request::Request;

/// What a handler returns: a response, or a problem to answer with.
pub type ApiResult = Result<spin_sdk::http::Response, Problem>;
