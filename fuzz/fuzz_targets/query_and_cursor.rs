//! Query strings, limits, cursors, path ids and popular-products parameters.
#![no_main]

use commerce::page::{Cursor, Limit};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|query: &str| {
    for name in ["limit", "cursor", "days"] {
        if let Ok(value) = edge::input::parse_query_param(query, name) {
            let value = value.as_deref();
            let _ = Limit::parse(value, 20, 100);
            let _ = Cursor::parse(value);
            let _ = commerce::popular::parse_days(value);
            let _ = commerce::popular::parse_limit(value);
            let _ = commerce::ids::parse_positive_id(value.unwrap_or_default(), "id");
        }
    }
});
