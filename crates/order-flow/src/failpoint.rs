//! Failure points between the order steps, for tests of holds and recovery.
//!
//! Only builds with the `failpoints` feature have them (`./dev build` makes a
//! separate test build of the components); in every other build `Failpoints`
//! is empty and `check` does nothing. A test arms one per request with the
//! `x-failpoint` header: `after-debit` fails like a store would (the order is
//! held), `crash:after-debit` traps like a dying process (the order stays
//! `PENDING` until recovery finds it), `crash:after-confirm` traps once the
//! order is paid and before its sale is counted for popular products, and
//! `bypass-recovery-lock` makes an admin recovery run ignore the lock.

use crate::StepError;

/// The failure point armed for one request.
#[derive(Debug, Clone, Default)]
pub struct Failpoints {
    #[cfg(feature = "failpoints")]
    armed: Option<String>,
}

impl Failpoints {
    /// From the request's `x-failpoint` header (ignored without the feature).
    pub fn from_header(#[allow(unused_variables)] value: Option<&str>) -> Failpoints {
        Failpoints {
            #[cfg(feature = "failpoints")]
            armed: value.map(str::to_owned),
        }
    }

    /// `bypass-recovery-lock`: a recovery run that ignores the lock, to prove
    /// the conditional updates alone keep two runners from doubling a step.
    pub fn recovery_lock(&self) -> crate::recovery::Lock {
        #[cfg(feature = "failpoints")]
        if self.armed.as_deref() == Some("bypass-recovery-lock") {
            return crate::recovery::Lock::Bypass;
        }
        crate::recovery::Lock::Take
    }

    /// Trap here, like a dying process, if `crash:<point>` is armed (for
    /// points after the last step, where there is nothing left to fail).
    pub fn crash_if_armed(&self, #[allow(unused_variables)] point: &str) {
        #[cfg(feature = "failpoints")]
        if self.armed.as_deref().and_then(|a| a.strip_prefix("crash:")) == Some(point) {
            panic!("failpoint crash:{point}");
        }
    }

    /// Fail here if this point is armed.
    pub fn check(&self, #[allow(unused_variables)] point: &str) -> Result<(), StepError> {
        #[cfg(feature = "failpoints")]
        match self.armed.as_deref() {
            Some(armed) if armed == point => {
                return Err(StepError::Infrastructure(edge::Problem::unavailable(format!(
                    "failpoint {point}"
                ))))
            }
            Some(armed) if armed.strip_prefix("crash:") == Some(point) => panic!("failpoint crash:{point}"),
            _ => {}
        }
        Ok(())
    }
}
