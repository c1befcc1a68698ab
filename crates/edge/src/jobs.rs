//! Scheduled jobs over HTTP (SPEC "Operations"): platforms whose scheduler
//! can only send a plain `GET` (Akamai Functions' `spin aka cron`) cannot
//! carry a bearer token, so a job route takes a shared secret in its query
//! string instead, `?key=`, checked against the secret variable `jobs_key`.
//!
//! The key is compared in constant time (SHA-256 of both sides, then a
//! constant-time comparison of the digests, so neither the content nor the
//! length of the key leaks through timing), and no answer or log line ever
//! holds it: the log line names the route pattern, never the query.

use crate::config::variable;
use crate::input::query_param;
use crate::request::Request;
use crate::Problem;
use commerce::ErrorCode;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The variable that holds the jobs' key; empty turns the job routes off.
const JOBS_KEY_VARIABLE: &str = "jobs_key";

/// `Ok` when `req` carries the jobs' key: `404 NOT_FOUND` while no key is
/// configured (the routes do not exist), `401 UNAUTHORIZED` for a missing
/// or wrong one.
pub fn authorize(req: &Request) -> Result<(), Problem> {
    let expected = variable(JOBS_KEY_VARIABLE)?;
    check(&expected, query_param(req, "key")?.as_deref())
}

/// The pure part of [`authorize`].
fn check(expected: &str, given: Option<&str>) -> Result<(), Problem> {
    if expected.is_empty() {
        return Err(Problem::new(
            ErrorCode::NotFound,
            "no such route (the job routes are off: jobs_key is not set)",
        ));
    }
    let given = given.ok_or_else(|| Problem::new(ErrorCode::Unauthorized, "the job's ?key= is required"))?;
    if keys_match(expected, given) {
        Ok(())
    } else {
        Err(Problem::new(
            ErrorCode::Unauthorized,
            "the job's key is not valid",
        ))
    }
}

/// Whether two keys are equal, in time independent of where they differ
/// and of their lengths.
fn keys_match(expected: &str, given: &str) -> bool {
    let digest = |key: &str| Sha256::digest(key.as_bytes());
    digest(expected).ct_eq(&digest(given)).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_configured_key_means_no_route() {
        for given in [None, Some(""), Some("anything")] {
            assert_eq!(check("", given).unwrap_err().code, ErrorCode::NotFound);
        }
    }

    #[test]
    fn a_missing_or_wrong_key_is_unauthorized() {
        let expected = "k3y-of-the-scheduler";
        for given in [
            None,
            Some(""),
            Some("k3y-of-the-schedule"),
            Some("k3y-of-the-scheduler "),
            Some("K3Y-OF-THE-SCHEDULER"),
        ] {
            assert_eq!(
                check(expected, given).unwrap_err().code,
                ErrorCode::Unauthorized,
                "{given:?}"
            );
        }
        assert!(check(expected, Some(expected)).is_ok());
    }

    #[test]
    fn no_answer_holds_the_key() {
        let expected = "k3y-of-the-scheduler";
        for given in [None, Some("k3y-of-the-schedule"), Some(expected)] {
            if let Err(problem) = check(expected, given) {
                assert!(!problem.detail.contains("k3y"), "{}", problem.detail);
            }
        }
    }
}
