//! The `Idempotency-Key` header: any bytes are a key or a 400.
#![no_main]

use commerce::idempotency::IdempotencyKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|header: &[u8]| {
    match IdempotencyKey::parse(Some(header)) {
        Ok(key) => assert!(!key.as_str().is_empty() && key.as_str().len() <= 255),
        Err(rejection) => assert_eq!(rejection.code.status(), 400),
    }
});
