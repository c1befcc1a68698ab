//! The commerce domain: typed values, business rules and the stable error codes
//! of the API contract (`SPEC.md`).
//!
//! This crate knows nothing of Spin, HTTP bodies or storage. Components parse a
//! request into the values defined here, ask these rules for a decision, and
//! only then talk to Postgres or Redis. Every rule is written once, here, and
//! tested natively (`cargo test -p commerce`).

pub mod coupon;
pub mod error;
pub mod idempotency;
pub mod ids;
pub mod order;
pub mod page;
pub mod popular;
pub mod product;
pub mod refund;
pub mod wallet;

pub use error::{ErrorCode, Rejection};
