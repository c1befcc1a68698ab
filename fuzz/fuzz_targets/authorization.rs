//! The `Authorization` header and JWT claims: any bytes are a caller or a 401.
#![no_main]

use edge::auth::{verify, AuthConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|header: &[u8]| {
    let config = AuthConfig { secret: "fuzz-secret".into(), issuer: Some("shop".into()), audience: None };
    if let Err(problem) = verify(Some(header), &config) {
        assert_eq!(problem.code.status(), 401);
    }
});
