//! When a failed delivery is tried again (SPEC §9): 5 s, 30 s, 2 min, 10 min,
//! 30 min, 1 h, 2 h, 4 h and 8 h after each failure; the 10th failure ends it.

/// The attempts an event gets before it is `FAILED`.
pub const MAX_ATTEMPTS: i32 = 10;

/// Seconds to wait after the n-th failed attempt (n = 1..=9).
const RETRY_AFTER_SECONDS: [i64; 9] = [5, 30, 120, 600, 1_800, 3_600, 7_200, 14_400, 28_800];

/// How long to wait after `failed_attempts` failures before the next
/// attempt; `None` once there are no attempts left.
pub fn retry_after_seconds(failed_attempts: i32) -> Option<i64> {
    let index = usize::try_from(failed_attempts.checked_sub(1)?).ok()?;
    RETRY_AFTER_SECONDS.get(index).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_of_the_spec_then_failed_after_the_tenth() {
        let waits: Vec<Option<i64>> = (1..=MAX_ATTEMPTS).map(retry_after_seconds).collect();
        assert_eq!(
            waits,
            [5, 30, 120, 600, 1_800, 3_600, 7_200, 14_400, 28_800]
                .map(Some)
                .into_iter()
                .chain([None])
                .collect::<Vec<_>>()
        );
        assert_eq!(retry_after_seconds(0), None);
        assert_eq!(retry_after_seconds(-1), None);
        assert_eq!(retry_after_seconds(11), None);
    }
}
