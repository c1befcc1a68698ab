//! Failure points between the order steps, for tests of holds and recovery.
//!
//! Only builds with the `failpoints` feature have them (`./dev build` makes a
//! separate test build of the components); in every other build `Failpoints`
//! is empty and `check` does nothing. A test arms one per request with the
//! `x-failpoint` header: `after-debit` fails like a store would (the order is
//! held), `crash:after-debit` traps like a dying process (the order stays
//! `PENDING` until recovery finds it), `crash:after-confirm` traps once the
//! order is paid and before its sale is counted for popular products,
//! `crash:after-undo` traps once a refused order gave its units back and
//! before its products' sold-out gates reopen, `crash:before-close` traps
//! once an order found Postgres short and before it closes the product's
//! sold-out gate, `hang:<point>` stops there
//! for [`HANG`] (a request caught mid-way), and `bypass-recovery-lock` makes
//! an admin recovery run ignore the lock. Several points are armed with
//! commas between them.

use crate::StepError;

/// How long a `hang:<point>` stops the request.
#[cfg(feature = "failpoints")]
const HANG: std::time::Duration = std::time::Duration::from_millis(1500);

/// The failure points armed for one request.
#[derive(Debug, Clone, Default)]
pub struct Failpoints {
    #[cfg(feature = "failpoints")]
    armed: Vec<String>,
}

impl Failpoints {
    /// From the request's `x-failpoint` header (ignored without the feature).
    pub fn from_header(#[allow(unused_variables)] value: Option<&str>) -> Failpoints {
        Failpoints {
            #[cfg(feature = "failpoints")]
            armed: value
                .map(|v| v.split(',').map(|point| point.trim().to_owned()).collect())
                .unwrap_or_default(),
        }
    }

    #[cfg(feature = "failpoints")]
    fn armed(&self, failpoint: &str) -> bool {
        self.armed.iter().any(|armed| armed == failpoint)
    }

    /// Stop here for a while if `hang:<point>` is armed.
    pub fn hang_if_armed(&self, #[allow(unused_variables)] point: &str) {
        #[cfg(feature = "failpoints")]
        if self.armed(&format!("hang:{point}")) {
            std::thread::sleep(HANG);
        }
    }

    /// `bypass-recovery-lock`: a recovery run that ignores the lock, to prove
    /// the conditional updates alone keep two runners from doubling a step.
    pub fn recovery_lock(&self) -> crate::recovery::Lock {
        #[cfg(feature = "failpoints")]
        if self.armed("bypass-recovery-lock") {
            return crate::recovery::Lock::Bypass;
        }
        crate::recovery::Lock::Take
    }

    /// Trap here, like a dying process, if `crash:<point>` is armed (for
    /// points after the last step, where there is nothing left to fail).
    pub fn crash_if_armed(&self, #[allow(unused_variables)] point: &str) {
        #[cfg(feature = "failpoints")]
        if self.armed(&format!("crash:{point}")) {
            panic!("failpoint crash:{point}");
        }
    }

    /// Fail here if this point is armed (after hanging, if that is armed).
    pub fn check(&self, point: &str) -> Result<(), StepError> {
        self.hang_if_armed(point);
        self.crash_if_armed(point);
        #[cfg(feature = "failpoints")]
        if self.armed(point) {
            return Err(StepError::Infrastructure(edge::Problem::unavailable(format!(
                "failpoint {point}"
            ))));
        }
        Ok(())
    }
}
