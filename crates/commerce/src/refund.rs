//! Cancellation and refunds (SPEC §8): what a valid refund request is, and
//! how much each refunded unit pays back.
//!
//! The rule of amounts: the order's discount is spread over its lines in
//! proportion to their totals (largest remainder, so the shares add up to
//! the discount exactly); a line's *net* is its total less its share; and
//! refunding units of a line pays the difference of two floors, so that a
//! line refunded in any number of pieces returns exactly its net and a whole
//! order exactly its `paidAmount` — never a KRW more.

use crate::order::{self, Line};
use crate::{ErrorCode, Rejection};

/// The longest refund reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// An order line as it was paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaidLine {
    pub product_id: i64,
    pub quantity: i64,
    pub line_total: i64,
}

/// Each line's net (its total less its share of `discount`), in the order of
/// `lines`. Line *i* gets `floor(discount × total_i / total)`; the KRW left
/// over go one each to the lines with the largest remainders
/// `(discount × total_i) mod total`, ties to the lower product id.
pub fn line_nets(lines: &[PaidLine], discount: i64) -> Vec<i64> {
    let total: i128 = lines.iter().map(|l| i128::from(l.line_total)).sum();
    if total == 0 {
        return lines.iter().map(|l| l.line_total).collect();
    }
    let weighted: Vec<i128> = lines
        .iter()
        .map(|l| i128::from(discount) * i128::from(l.line_total))
        .collect();
    let mut shares: Vec<i128> = weighted.iter().map(|w| w / total).collect();
    let left_over = i128::from(discount) - shares.iter().sum::<i128>();
    let mut by_remainder: Vec<usize> = (0..lines.len()).collect();
    by_remainder.sort_by_key(|&i| (std::cmp::Reverse(weighted[i] % total), lines[i].product_id));
    for &i in by_remainder.iter().take(left_over as usize) {
        shares[i] += 1;
    }
    lines
        .iter()
        .zip(shares)
        .map(|(line, share)| line.line_total - share as i64)
        .collect()
}

/// What refunding `quantity` more of a line's `sold` units pays, when
/// `refunded_before` of them were refunded already:
/// `floor(net × (r + q) / Q) − floor(net × r / Q)`.
pub fn refund_amount(net: i64, sold: i64, refunded_before: i64, quantity: i64) -> i64 {
    let part = |units: i64| i128::from(net) * i128::from(units) / i128::from(sold);
    (part(refunded_before + quantity) - part(refunded_before)) as i64
}

/// A valid partial refund: 1–50 distinct products sorted by id, quantities
/// 1–1000, a reason of at most 500 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    /// Sorted by product id: the request as its idempotency fingerprint sees it.
    pub lines: Vec<Line>,
    /// For each of `lines`, its index in the client's `items`, so an error
    /// about a line names it as the client wrote it.
    pub positions: Vec<usize>,
    pub reason: Option<String>,
}

impl RefundRequest {
    pub fn new(items: Vec<Line>, reason: Option<String>) -> Result<RefundRequest, Rejection> {
        let lines = order::validate_lines(items.clone())?;
        let positions = lines
            .iter()
            .map(|line| {
                items
                    .iter()
                    .position(|item| item.product_id == line.product_id)
                    .expect("a validated line is one of the items")
            })
            .collect();
        if let Some(reason) = &reason {
            check_reason(reason)?;
        }
        Ok(RefundRequest {
            lines,
            positions,
            reason,
        })
    }

    /// A refund of every unit of `lines` not yet refunded (the owner's cancel).
    pub fn everything(lines: &[PaidLine]) -> RefundRequest {
        RefundRequest {
            lines: lines
                .iter()
                .map(|l| Line {
                    product_id: l.product_id,
                    quantity: l.quantity,
                })
                .collect(),
            positions: (0..lines.len()).collect(),
            reason: None,
        }
    }
}

/// A reason is free text for people: at most 500 characters, line breaks
/// and tabs allowed, no other control characters (Postgres cannot store
/// NUL in `text`, and the rest have no place in a note an operator reads).
fn check_reason(reason: &str) -> Result<(), Rejection> {
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(Rejection::invalid(
            "reason",
            format!("must be at most {MAX_REASON_CHARS} characters"),
        ));
    }
    let layout = |c: char| matches!(c, '\n' | '\r' | '\t');
    if reason.chars().any(|c| c.is_control() && !layout(c)) {
        return Err(Rejection::invalid(
            "reason",
            "must not contain control characters other than line breaks and tabs",
        ));
    }
    Ok(())
}

/// `409 ORDER_NOT_REFUNDABLE`: the order is not paid, or (for a cancel)
/// already partly refunded.
pub fn not_refundable(status: &str) -> Rejection {
    Rejection::new(
        ErrorCode::OrderNotRefundable,
        format!("an order that is {status} cannot be refunded this way"),
    )
}

/// `409 CANCEL_WINDOW_CLOSED`.
pub fn cancel_window_closed() -> Rejection {
    Rejection::new(
        ErrorCode::CancelWindowClosed,
        "the time to cancel this order has passed",
    )
}

/// `400 INVALID_REQUEST` naming the line whose product the order does not have.
pub fn not_in_order(index: usize, product_id: i64) -> Rejection {
    Rejection::invalid(
        &format!("items[{index}].productId"),
        format!("product {product_id} is not in this order"),
    )
}

/// `409 REFUND_EXCEEDS_ORDER` (the problem carries the `productId`).
pub fn exceeds_order(product_id: i64) -> Rejection {
    Rejection::new(
        ErrorCode::RefundExceedsOrder,
        format!("more units of product {product_id} than remain to refund"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn line(product_id: i64, quantity: i64, unit_price: i64) -> PaidLine {
        PaidLine {
            product_id,
            quantity,
            line_total: quantity * unit_price,
        }
    }

    #[test]
    fn the_discount_is_spread_by_largest_remainder_ties_to_the_lower_id() {
        // 1,000 off 3 × 1,000: 333 each, the KRW left over to product 1.
        let lines = [line(1, 1, 1_000), line(2, 1, 1_000), line(3, 1, 1_000)];
        assert_eq!(line_nets(&lines, 1_000), [666, 667, 667]);
        // Proportional: 300 off 1,000 + 2,000 → 100 and 200.
        assert_eq!(
            line_nets(&[line(5, 1, 1_000), line(9, 2, 1_000)], 300),
            [900, 1_800]
        );
        assert_eq!(line_nets(&[line(1, 2, 500)], 0), [1_000]);
    }

    #[test]
    fn a_piece_pays_the_difference_of_two_floors() {
        // Net 1,000 over 3 units: 333, 333, 334.
        assert_eq!(refund_amount(1_000, 3, 0, 1), 333);
        assert_eq!(refund_amount(1_000, 3, 1, 1), 333);
        assert_eq!(refund_amount(1_000, 3, 2, 1), 334);
        assert_eq!(refund_amount(1_000, 3, 0, 3), 1_000);
    }

    #[test]
    fn a_refund_request_is_validated_like_order_lines() {
        let one = |product_id, quantity| Line { product_id, quantity };
        assert!(RefundRequest::new(vec![], None).is_err());
        assert!(RefundRequest::new(vec![one(1, 0)], None).is_err());
        assert!(RefundRequest::new(vec![one(1, 1), one(1, 2)], None).is_err());
        assert!(RefundRequest::new(vec![one(1, 1)], Some("x".repeat(501))).is_err());
        let ok = RefundRequest::new(vec![one(7, 1), one(2, 3)], Some("é".repeat(500))).unwrap();
        assert_eq!(ok.lines, [one(2, 3), one(7, 1)], "sorted by product");
        assert_eq!(ok.positions, [1, 0], "each line keeps the client's index");
    }

    #[test]
    fn a_reason_is_text_a_person_reads() {
        let one = vec![Line {
            product_id: 1,
            quantity: 1,
        }];
        for fine in ["damaged", "box crushed\nitem fine", "col\tumn", "줄\r\n바꿈"] {
            assert!(
                RefundRequest::new(one.clone(), Some(fine.into())).is_ok(),
                "{fine:?}"
            );
        }
        for bad in [
            "nul\u{0}byte",
            "bell\u{7}",
            "esc\u{1b}[31m",
            "del\u{7f}",
            "c1\u{85}",
        ] {
            let rejection = RefundRequest::new(one.clone(), Some(bad.into())).unwrap_err();
            assert_eq!(rejection.code, ErrorCode::InvalidRequest, "{bad:?}");
            assert!(rejection.detail.starts_with("reason:"), "{}", rejection.detail);
        }
    }

    /// An order of 1–6 lines (prices up to 10^9, quantities 1–1000) and a
    /// discount up to its total.
    fn orders() -> impl Strategy<Value = (Vec<PaidLine>, i64)> {
        prop::collection::vec((1i64..1_000, 1_000i64..1_000_000_000), 1..6).prop_flat_map(|raw| {
            let lines: Vec<PaidLine> = raw
                .iter()
                .enumerate()
                .map(|(i, (quantity, price))| line(i as i64 + 1, *quantity, *price))
                .collect();
            let total: i64 = lines.iter().map(|l| l.line_total).sum();
            (Just(lines), 0..=total)
        })
    }

    proptest! {
        #[test]
        fn the_nets_add_up_to_what_was_paid((lines, discount) in orders()) {
            let nets = line_nets(&lines, discount);
            let total: i64 = lines.iter().map(|l| l.line_total).sum();
            prop_assert_eq!(nets.iter().sum::<i64>(), total - discount);
            for (net, line) in nets.iter().zip(&lines) {
                prop_assert!((0..=line.line_total).contains(net));
            }
        }

        /// Any sequence of partial refunds, in any pieces, of any order:
        /// each line returns exactly its net, the order exactly its
        /// `paidAmount`, and no prefix ever more.
        #[test]
        fn refunds_in_any_pieces_return_exactly_what_was_paid(
            (lines, discount) in orders(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
        ) {
            let nets = line_nets(&lines, discount);
            let paid: i64 = lines.iter().map(|l| l.line_total).sum::<i64>() - discount;
            let mut refunded = vec![0i64; lines.len()];
            let mut returned = vec![0i64; lines.len()];
            // Each cut refunds a piece of some line; then the rest of everything.
            for cut in &cuts {
                let i = cut.index(lines.len());
                let left = lines[i].quantity - refunded[i];
                if left == 0 { continue; }
                let quantity = 1 + cut.index(left as usize) as i64;
                returned[i] += refund_amount(nets[i], lines[i].quantity, refunded[i], quantity);
                refunded[i] += quantity;
                prop_assert!(returned[i] <= nets[i]);
                prop_assert!(returned.iter().sum::<i64>() <= paid);
            }
            for i in 0..lines.len() {
                let left = lines[i].quantity - refunded[i];
                returned[i] += refund_amount(nets[i], lines[i].quantity, refunded[i], left);
                prop_assert_eq!(returned[i], nets[i]);
            }
            prop_assert_eq!(returned.iter().sum::<i64>(), paid);
        }
    }
}
