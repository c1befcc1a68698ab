//! Cancellation and refunds (SPEC §8): a refund of a paid order, decided and
//! done by one atomic conditional statement.
//!
//! The statement locks the order row first, then all its lines, so refunds
//! and cancels of one order, on any instance, run one after the other and
//! each sees what the previous ones refunded (rows locked `FOR UPDATE` are
//! read in their latest committed version). It checks every rule, and only
//! when all pass writes every effect: the refund row, the order's refunded
//! amount and status, the lines' refunded units, the stock, the wallet with
//! its `REFUND` entry, and the coupon when the order is fully refunded. A
//! refusal writes nothing. It commits durably, so an answered refund
//! survives a crash; a crash before the answer leaves nothing of it.
//!
//! The amounts follow `commerce::refund`: the nets of the lines are computed
//! there (they never change once the order is paid) and passed in; the
//! statement applies `refund_amount`'s two floors to the locked refunded
//! units, so no two refunds can price the same unit.

use crate::view::{self, Order, Select};
use commerce::order::OrderStatus;
use commerce::refund::{self, PaidLine, RefundRequest};
use commerce::{ErrorCode, Rejection};
use edge::pg::{column, instant, rfc3339, Db, Query};
use edge::Problem;
use serde::{Deserialize, Serialize};
use spin_sdk::pg4::ParameterValue;

/// Invariants 1, 2, 3 and 4 for refunds: all effects or none, never a unit
/// or a KRW twice, never more than was sold or paid (see the module doc);
/// invariant 6: the refund's `order.refunded` event is one of those effects;
/// invariant 5: a key that already made a refund of this order is answered
/// with it (`DUPLICATE`, read by [`EARLIER_REFUND`]) and nothing is written.
/// $1 order, $2 owner (NULL for an admin), $3 kind, $4 requester, $5 key,
/// $6 fingerprint, $7/$8/$9/$12 product ids, quantities, nets and the
/// client's indexes of the lines asked for, $10 reason, $11 cancel window in
/// minutes (cancels only).
const REFUND: Query = Query::with(
    "target AS (
        SELECT id, user_id, status, paid_at, refunded_amount, user_coupon_id, coupon_applied
        FROM orders WHERE id = $1 AND ($2::int8 IS NULL OR user_id = $2) FOR UPDATE
    ), earlier AS (
        SELECT 1 FROM refunds
        WHERE order_id = $1 AND kind = $3 AND requested_by = $4 AND idempotency_key = $5
    ), items AS (
        SELECT i.product_id, i.quantity, i.refunded_quantity
        FROM target JOIN order_items i ON i.order_id = target.id
        ORDER BY i.product_id FOR UPDATE OF i
    ), asked AS (
        SELECT * FROM unnest($7::int8[], $8::int8[], $9::int8[], $12::int8[])
            AS a(product_id, quantity, net, position)
    ), lines AS (
        SELECT asked.product_id, asked.quantity, asked.position, items.quantity AS sold,
               items.refunded_quantity AS before,
               (floor(asked.net::numeric * (items.refunded_quantity + asked.quantity) / items.quantity)
                - floor(asked.net::numeric * items.refunded_quantity / items.quantity))::int8 AS amount
        FROM asked JOIN items USING (product_id)
    ), missing AS (
        SELECT asked.product_id, asked.position FROM asked
        WHERE NOT EXISTS (SELECT 1 FROM items WHERE items.product_id = asked.product_id)
        ORDER BY asked.position LIMIT 1
    ), excess AS (
        SELECT product_id FROM lines WHERE before + quantity > sold ORDER BY position LIMIT 1
    ), verdict AS (
        SELECT CASE
            WHEN EXISTS (SELECT 1 FROM earlier) THEN 'DUPLICATE'
            WHEN NOT EXISTS (SELECT 1 FROM target) THEN 'ORDER_NOT_FOUND'
            WHEN (SELECT status FROM target) NOT IN ('PAID', 'PARTIALLY_REFUNDED')
              OR ($3::text = 'CANCEL' AND ((SELECT status FROM target) <> 'PAID'
                                      OR (SELECT refunded_amount FROM target) > 0))
                THEN 'ORDER_NOT_REFUNDABLE'
            WHEN $3 = 'CANCEL'
              AND (SELECT paid_at FROM target) + $11::int8 * interval '1 minute' <= now()
                THEN 'CANCEL_WINDOW_CLOSED'
            WHEN EXISTS (SELECT 1 FROM missing) THEN 'NOT_IN_ORDER'
            WHEN EXISTS (SELECT 1 FROM excess) THEN 'REFUND_EXCEEDS_ORDER'
            ELSE 'OK'
        END AS outcome
    ), refund AS (
        INSERT INTO refunds (order_id, kind, requested_by, idempotency_key, request_fingerprint,
                             amount, items, reason)
        SELECT $1, $3, $4, $5, $6, (SELECT sum(amount) FROM lines),
               (SELECT jsonb_agg(jsonb_build_object('productId', product_id, 'quantity', quantity,
                                                    'amount', amount) ORDER BY product_id) FROM lines),
               $10
        FROM verdict WHERE outcome = 'OK'
        RETURNING id, amount, items, reason, created_at
    ), order_after AS (
        UPDATE orders o SET refunded_amount = o.refunded_amount + refund.amount, updated_at = now(),
            status = CASE WHEN (SELECT sum(quantity - refunded_quantity) FROM items)
                               = (SELECT sum(quantity) FROM lines)
                          THEN 'REFUNDED' ELSE 'PARTIALLY_REFUNDED' END
        FROM refund WHERE o.id = $1
        RETURNING o.status, o.refunded_amount, o.user_coupon_id, o.coupon_applied
    ), event AS (
        INSERT INTO order_events (order_id, type, refund_id, data)
        SELECT $1, 'order.refunded', refund.id, jsonb_build_object(
            'refundId', refund.id, 'orderId', $1::int8, 'userId', target.user_id, 'amount', refund.amount,
            'items', refund.items, 'orderStatus', order_after.status,
            'refundedAmount', order_after.refunded_amount, 'reason', refund.reason,
            'createdAt', api_time(refund.created_at))
        FROM refund, target, order_after
    ), items_after AS (
        UPDATE order_items i SET refunded_quantity = i.refunded_quantity + lines.quantity
        FROM lines, refund WHERE i.order_id = $1 AND i.product_id = lines.product_id
    ), products_locked AS (
        SELECT p.id FROM products p JOIN lines ON lines.product_id = p.id
        WHERE (SELECT outcome FROM verdict) = 'OK'
        ORDER BY p.id FOR UPDATE OF p
    ), restocked AS (
        UPDATE products p SET stock = p.stock + lines.quantity
        FROM lines, products_locked, refund WHERE p.id = lines.product_id AND products_locked.id = p.id
    ), credited AS (
        UPDATE wallets w SET balance = w.balance + refund.amount, updated_at = now()
        FROM refund, target WHERE w.user_id = target.user_id
        RETURNING w.balance
    ), entry AS (
        INSERT INTO wallet_ledger (user_id, kind, amount, balance_after, order_id, refund_id)
        SELECT target.user_id, 'REFUND', refund.amount, credited.balance, $1, refund.id
        FROM target, refund, credited WHERE refund.amount > 0
    ), coupon_back AS (
        UPDATE user_coupons uc SET status = 'ISSUED', order_id = NULL, used_at = NULL
        FROM order_after
        WHERE order_after.status = 'REFUNDED' AND order_after.coupon_applied
          AND uc.id = order_after.user_coupon_id AND uc.order_id = $1
    )",
    "SELECT verdict.outcome, (SELECT status FROM target) AS order_status,
            (SELECT paid_at AT TIME ZONE 'UTC' FROM target) AS paid_at,
            (SELECT product_id FROM missing) AS missing_product,
            (SELECT position FROM missing) AS missing_position,
            (SELECT product_id FROM excess) AS excess_product,
            refund.id::text AS refund_id, refund.amount, refund.items::text AS items,
            refund.created_at AT TIME ZONE 'UTC' AS created_at,
            order_after.status AS status_after, (SELECT balance FROM credited) AS balance
    FROM verdict LEFT JOIN refund ON true LEFT JOIN order_after ON true",
);

/// The refunds of some orders, each order's oldest first.
const REFUNDS_OF: Query = Query::new(
    "SELECT order_id, id::text AS refund_id, amount, items::text AS items,
            created_at AT TIME ZONE 'UTC' AS created_at
    FROM refunds WHERE order_id = ANY($1) ORDER BY order_id, created_at, id",
);

/// The refund a key already made of an order (the Postgres backstop of
/// idempotency), answered as it was: the order's status right after it
/// (`REFUNDED` once the refunds up to it cover every unit) and the balance
/// its `REFUND` entry left (the balance now for a refund of 0 KRW, which has
/// no entry).
const EARLIER_REFUND: Query = Query::new(
    "SELECT r.id::text AS refund_id, r.amount, r.items::text AS items, r.request_fingerprint,
            r.created_at AT TIME ZONE 'UTC' AS created_at,
            CASE WHEN (SELECT sum((line->>'quantity')::int8)
                       FROM refunds up_to, jsonb_array_elements(up_to.items) AS line
                       WHERE up_to.order_id = r.order_id
                         AND (up_to.created_at, up_to.id) <= (r.created_at, r.id))
                      = (SELECT sum(quantity) FROM order_items WHERE order_id = r.order_id)
                 THEN 'REFUNDED' ELSE 'PARTIALLY_REFUNDED' END AS status_after,
            coalesce((SELECT balance_after FROM wallet_ledger WHERE refund_id = r.id),
                     (SELECT balance FROM wallets WHERE user_id = o.user_id)) AS balance,
            o.paid_at AT TIME ZONE 'UTC' AS paid_at
    FROM refunds r JOIN orders o ON o.id = r.order_id
    WHERE r.order_id = $1 AND r.kind = $2 AND r.requested_by = $3 AND r.idempotency_key = $4",
);

/// Which route asks.
#[derive(Debug, Clone, Copy)]
pub enum Asker {
    /// The owner's cancel: a full refund within `window_minutes` of payment.
    Owner { user_id: i64, window_minutes: i64 },
    /// An admin's partial refund, of any paid order.
    Admin { user_id: i64 },
}

impl Asker {
    fn kind(self) -> &'static str {
        match self {
            Asker::Owner { .. } => "CANCEL",
            Asker::Admin { .. } => "REFUND",
        }
    }

    fn user_id(self) -> i64 {
        match self {
            Asker::Owner { user_id, .. } | Asker::Admin { user_id } => user_id,
        }
    }
}

/// One refunded line, as stored and shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefundedItem {
    pub product_id: i64,
    pub quantity: i64,
    pub amount: i64,
}

/// A refund as the order view lists it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefundView {
    pub refund_id: String,
    pub amount: i64,
    pub items: Vec<RefundedItem>,
    pub created_at: String,
}

/// A refund that was made (now, or earlier with the same key).
#[derive(Debug, Clone)]
pub struct Refunded {
    pub refund: RefundView,
    pub order_status: OrderStatus,
    pub balance: i64,
    /// When the order was paid (its sales are taken off that day).
    pub paid_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// What a refund request came to.
pub enum Outcome {
    Refunded(Refunded),
    /// This key already made a refund of this order: it, as it was answered.
    Duplicate(Refunded),
    Refused(Problem),
}

/// The order `order_id` as the asker may refund it: `404` when it is not
/// theirs (an admin may refund any order).
pub fn order_to_refund(db: &Db, asker: Asker, order_id: i64) -> Result<Order, Problem> {
    let select = match asker {
        Asker::Owner { user_id, .. } => Select::Id { user_id, order_id },
        Asker::Admin { .. } => Select::Ids(std::slice::from_ref(&order_id)),
    };
    view::load(db, select)?
        .into_iter()
        .next()
        .ok_or_else(|| not_found(order_id))
}

fn not_found(order_id: i64) -> Problem {
    Problem::new(ErrorCode::OrderNotFound, format!("no order {order_id}"))
}

/// Refund `request` of `order` (as read by [`order_to_refund`]) for `asker`
/// with idempotency `key` and `fingerprint`.
pub fn refund(
    db: &Db,
    asker: Asker,
    order: &Order,
    request: &RefundRequest,
    key: &str,
    fingerprint: &str,
) -> Result<Outcome, Problem> {
    let paid = paid_lines(order);
    let nets = refund::line_nets(&paid, order.discount_amount);
    // A line the order does not have gets net 0: the statement refuses it by name.
    let net_of = |product_id: i64| {
        paid.iter()
            .position(|l| l.product_id == product_id)
            .map_or(0, |i| nets[i])
    };
    let array = |values: Vec<i64>| ParameterValue::ArrayInt64(values.into_iter().map(Some).collect());
    let (owner, window) = match asker {
        Asker::Owner {
            user_id,
            window_minutes,
        } => (
            ParameterValue::Int64(user_id),
            ParameterValue::Int64(window_minutes),
        ),
        Asker::Admin { .. } => (ParameterValue::DbNull, ParameterValue::DbNull),
    };
    let params = [
        ParameterValue::Int64(order.id),
        owner,
        ParameterValue::Str(asker.kind().to_owned()),
        ParameterValue::Int64(asker.user_id()),
        ParameterValue::Str(key.to_owned()),
        ParameterValue::Str(fingerprint.to_owned()),
        array(request.lines.iter().map(|l| l.product_id).collect()),
        array(request.lines.iter().map(|l| l.quantity).collect()),
        array(request.lines.iter().map(|l| net_of(l.product_id)).collect()),
        request
            .reason
            .clone()
            .map_or(ParameterValue::DbNull, ParameterValue::Str),
        window,
        array(request.positions.iter().map(|&i| i as i64).collect()),
    ];
    // The statement finds a refund this key made before it; one it did not
    // see (a request with the key committed while this one waited for the
    // order's lock) shows as a refusal, or as a failure of the unique
    // `one_refund_per_key`, and is looked for by key after either.
    let verdict = match db.query(&REFUND, &params) {
        Ok(rows) => decide(&rows, order.id)?,
        Err(failed) => {
            return match earlier(db, asker, order.id, key, fingerprint)? {
                Some(earlier) => Ok(Outcome::Duplicate(earlier)),
                None => Err(failed.into()),
            }
        }
    };
    let refused = match verdict {
        Verdict::Done(refunded) => return Ok(Outcome::Refunded(refunded)),
        Verdict::Duplicate => None,
        Verdict::Refused(problem) => Some(problem),
    };
    match (earlier(db, asker, order.id, key, fingerprint)?, refused) {
        (Some(earlier), _) => Ok(Outcome::Duplicate(earlier)),
        (None, Some(problem)) => Ok(Outcome::Refused(problem)),
        (None, None) => Err(Problem::unavailable(
            "the refund for this key is not readable yet",
        )),
    }
}

/// What the refund statement's row says.
enum Verdict {
    Done(Refunded),
    /// The key already made a refund of this order.
    Duplicate,
    Refused(Problem),
}

fn decide(rows: &edge::pg::Rows, order_id: i64) -> Result<Verdict, Problem> {
    let verdict = rows.first(|row| {
        let outcome: String = column(row, "outcome")?;
        let status: Option<String> = column(row, "order_status")?;
        let refused = |rejection: Rejection| Ok(Verdict::Refused(rejection.into()));
        match outcome.as_str() {
            "OK" => {
                let paid_at: Option<chrono::NaiveDateTime> = column(row, "paid_at")?;
                Ok(Verdict::Done(Refunded {
                    refund: refund_view(row)?,
                    order_status: status_of(column(row, "status_after")?)?,
                    balance: column(row, "balance")?,
                    paid_at: paid_at.map(|t| t.and_utc()),
                }))
            }
            "DUPLICATE" => Ok(Verdict::Duplicate),
            "ORDER_NOT_FOUND" => Ok(Verdict::Refused(not_found(order_id))),
            "ORDER_NOT_REFUNDABLE" => {
                let status = status.unwrap_or_default();
                Ok(Verdict::Refused(
                    Problem::from(refund::not_refundable(&status)).with_extension("orderStatus", status),
                ))
            }
            "CANCEL_WINDOW_CLOSED" => refused(refund::cancel_window_closed()),
            "NOT_IN_ORDER" => {
                let position: i64 = column(row, "missing_position")?;
                refused(refund::not_in_order(
                    position as usize,
                    column(row, "missing_product")?,
                ))
            }
            "REFUND_EXCEEDS_ORDER" => {
                let product_id: i64 = column(row, "excess_product")?;
                Ok(Verdict::Refused(
                    Problem::from(refund::exceeds_order(product_id)).with_extension("productId", product_id),
                ))
            }
            other => Err(Problem::unavailable(format!("unexpected refund verdict {other}"))),
        }
    })?;
    verdict.ok_or_else(|| Problem::unavailable("the refund statement answered no row"))
}

/// The refund `key` already made of `order_id`, as it was answered; `422`
/// when it was made for another request.
fn earlier(
    db: &Db,
    asker: Asker,
    order_id: i64,
    key: &str,
    fingerprint: &str,
) -> Result<Option<Refunded>, Problem> {
    let rows = db.query(
        &EARLIER_REFUND,
        &[
            ParameterValue::Int64(order_id),
            ParameterValue::Str(asker.kind().to_owned()),
            ParameterValue::Int64(asker.user_id()),
            ParameterValue::Str(key.to_owned()),
        ],
    )?;
    let found = rows.first(|row| {
        let stored: String = column(row, "request_fingerprint")?;
        let paid_at: Option<chrono::NaiveDateTime> = column(row, "paid_at")?;
        Ok((
            stored,
            Refunded {
                refund: refund_view(row)?,
                order_status: status_of(column(row, "status_after")?)?,
                balance: column(row, "balance")?,
                paid_at: paid_at.map(|t| t.and_utc()),
            },
        ))
    })?;
    match found {
        Some((stored, _)) if stored != fingerprint => Err(edge::idempotency::reused()),
        Some((_, refunded)) => Ok(Some(refunded)),
        None => Ok(None),
    }
}

/// The order's lines as paid, which refund amounts are priced from.
pub fn paid_lines(order: &Order) -> Vec<PaidLine> {
    order
        .items
        .iter()
        .map(|item| PaidLine {
            product_id: item.product_id,
            quantity: item.quantity,
            line_total: item.line_total,
        })
        .collect()
}

/// The refunds of `order_id`, oldest first.
pub fn refunds_of(db: &Db, order_id: i64) -> Result<Vec<RefundView>, Problem> {
    Ok(refunds_of_orders(db, &[order_id])?
        .remove(&order_id)
        .unwrap_or_default())
}

/// The refunds of each of `order_ids` that has any, oldest first.
pub fn refunds_of_orders(
    db: &Db,
    order_ids: &[i64],
) -> Result<std::collections::HashMap<i64, Vec<RefundView>>, Problem> {
    let ids = order_ids.iter().map(|id| Some(*id)).collect();
    let rows = db.query(&REFUNDS_OF, &[ParameterValue::ArrayInt64(ids)])?;
    let mut by_order: std::collections::HashMap<i64, Vec<RefundView>> = std::collections::HashMap::new();
    for row in rows.iter() {
        let order_id: i64 = column(&row, "order_id")?;
        by_order.entry(order_id).or_default().push(refund_view(&row)?);
    }
    Ok(by_order)
}

fn refund_view(row: &spin_sdk::pg4::Row<'_>) -> Result<RefundView, Problem> {
    let items: String = column(row, "items")?;
    Ok(RefundView {
        refund_id: column(row, "refund_id")?,
        amount: column(row, "amount")?,
        items: serde_json::from_str(&items)
            .map_err(|_| Problem::unavailable("a stored refund is corrupt"))?,
        created_at: rfc3339(instant(row, "created_at")?),
    })
}

fn status_of(text: String) -> Result<OrderStatus, Problem> {
    OrderStatus::parse(&text).ok_or_else(|| Problem::unavailable("unknown order status"))
}
