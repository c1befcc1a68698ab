//! Wallet charges (SPEC §1, scenarios 1-1 and 1-2).

use crate::{ErrorCode, Rejection};

/// Charges are whole multiples of this many KRW.
pub const CHARGE_UNIT: i64 = 1_000;
/// The most one charge may add.
pub const MAX_CHARGE: i64 = 1_000_000;
/// The most a wallet may ever hold; a charge that would pass it changes nothing.
pub const MAX_BALANCE: i64 = 10_000_000;

/// A charge amount that passed the request rules (checked in the spec's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChargeAmount(i64);

impl ChargeAmount {
    pub fn new(amount: i64) -> Result<ChargeAmount, Rejection> {
        if amount <= 0 || amount % CHARGE_UNIT != 0 {
            return Err(Rejection::new(
                ErrorCode::InvalidChargeUnit,
                format!("amount must be a positive multiple of {CHARGE_UNIT} KRW"),
            ));
        }
        if amount > MAX_CHARGE {
            return Err(Rejection::new(
                ErrorCode::ChargeLimitExceeded,
                format!("one charge may add at most {MAX_CHARGE} KRW"),
            ));
        }
        Ok(ChargeAmount(amount))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// The rejection when a charge would take the balance past [`MAX_BALANCE`].
pub fn balance_limit_exceeded() -> Rejection {
    Rejection::new(
        ErrorCode::BalanceLimitExceeded,
        format!("the balance may not exceed {MAX_BALANCE} KRW; nothing was charged"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_then_limit_in_the_spec_order() {
        assert_eq!(ChargeAmount::new(1_000).unwrap().get(), 1_000);
        assert_eq!(ChargeAmount::new(1_000_000).unwrap().get(), 1_000_000);
        for amount in [0, -1_000, 999, 1_500, i64::MIN] {
            assert_eq!(
                ChargeAmount::new(amount).unwrap_err().code,
                ErrorCode::InvalidChargeUnit,
                "{amount}"
            );
        }
        for amount in [1_001_000, i64::MAX - i64::MAX % 1_000] {
            assert_eq!(
                ChargeAmount::new(amount).unwrap_err().code,
                ErrorCode::ChargeLimitExceeded,
                "{amount}"
            );
        }
        // Not a multiple AND over the limit: the unit rule comes first.
        assert_eq!(
            ChargeAmount::new(1_000_001).unwrap_err().code,
            ErrorCode::InvalidChargeUnit
        );
    }
}
