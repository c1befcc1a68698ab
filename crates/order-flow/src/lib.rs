//! The order flow (SPEC §4): every step of paying for an order as one atomic,
//! conditional SQL statement, shared by the order component (which runs the
//! steps forward) and the recovery component (which finishes or undoes an
//! order from its stored state).
//!
//! Steps, in order: create the order `PENDING` with price snapshots; reserve
//! each line's stock in product-id order; take the coupon; debit the wallet
//! with its `PAYMENT` entry; confirm (reserved stock becomes sold, order
//! `PAID`). Each statement first locks the order row and checks its status,
//! so a step and a recovery transition of the same order never interleave,
//! and records its progress on the order (or its lines) in the same
//! statement. No transaction spans two host calls.
//!
//! One durable commit per order: the steps before the answer is decided
//! (create, reserve, coupon, debit) commit without waiting for the WAL flush;
//! the statement that decides the answer (confirm, undo, or hold) commits
//! durably, and so flushes every earlier step with it. A Postgres crash
//! before that loses only steps no client was told of: the order is missing
//! or interrupted, as if the request had died, and recovery resolves it.

mod failpoint;
pub mod popular;
pub mod recovery;
pub mod refund;
pub mod view;

pub use failpoint::Failpoints;

use commerce::coupon::{Discount, DiscountType};
use commerce::order::{self, CouponState, OrderRequest, OrderStatus, Priced};
use commerce::Rejection;
use edge::pg::{column, instant, Db, DbError, Query};
use edge::Problem;
use spin_sdk::pg4::ParameterValue;
use std::collections::HashMap;

/// Prices of the requested products that exist (a read; snapshots are taken
/// from it), with what the sold-out gate needs to refuse without writing:
/// the units left (the reserve stays the guard), whether the key already
/// made an order (invariant 5: such a key is answered with that order), and
/// the newest order's time (from which Redis can answer for every key).
const PRICES: Query = Query::new(
    "SELECT id, price, stock - reserved AS available,
            EXISTS (SELECT 1 FROM orders WHERE user_id = $2 AND idempotency_key = $3) AS keyed,
            (SELECT (extract(epoch FROM created_at) * 1000)::int8 FROM orders ORDER BY id DESC LIMIT 1)
                AS newest_order_ms
    FROM products WHERE id = ANY($1)",
);

/// Step 1. Invariant 5: one key, one order (`one_order_per_key`). The order
/// and its lines are written together; an unknown product ends it `FAILED`
/// at once, with no lines. A key that already made an order writes nothing
/// (`ON CONFLICT DO NOTHING` waits for a racing insert of the key to end),
/// and no row comes back: that order is then read by its key
/// ([`view::Select::Key`]), in a statement that sees the racing insert.
const CREATE: Query = Query::with(
    "created AS (
        INSERT INTO orders (user_id, idempotency_key, request_fingerprint, status, user_coupon_id,
                            total_amount, failure_code, failure_detail, failure_product_id, request_id)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $13)
        ON CONFLICT ON CONSTRAINT one_order_per_key DO NOTHING
        RETURNING id, status
    ), lines AS (
        INSERT INTO order_items (order_id, product_id, quantity, unit_price)
        SELECT created.id, line.product_id, line.quantity, line.unit_price
        FROM created, unnest($10::int8[], $11::int8[], $12::int8[]) AS line(product_id, quantity, unit_price)
        WHERE created.status = 'PENDING'
    )",
    "SELECT id FROM created",
)
.committed_without_flush();

/// Step 2, per line. Invariant 2: never hold more than is left
/// (`stock - reserved >= q`), and the order records that it holds this stock.
const RESERVE: Query = Query::with(
    "pending AS (
        SELECT id FROM orders
        WHERE id = $1 AND status = 'PENDING' AND NOT $2 = ANY(reserved_products) FOR UPDATE
    ), held AS (
        UPDATE products SET reserved = reserved + $3
        FROM pending WHERE products.id = $2 AND products.stock - products.reserved >= $3
        RETURNING products.id
    )",
    "UPDATE orders SET reserved_products = array_append(reserved_products, held.id), updated_at = now()
    FROM held WHERE orders.id = $1
    RETURNING orders.id",
)
.committed_without_flush();

/// What the order's coupon looks like to this user (a read, to price the discount).
const COUPON: Query = Query::new(
    "SELECT uc.status, c.discount_type, c.discount_value, c.max_discount, c.min_order_amount,
            c.expires_at <= now() AS expired
    FROM user_coupons uc JOIN coupons c ON c.id = uc.coupon_id
    WHERE uc.id = $1 AND uc.user_id = $2",
);

/// Step 3. Invariant 3: a user coupon is USED by at most one order — only
/// the owner's, unused, unexpired, with the minimum met — and the order
/// records the discount in the same statement.
const TAKE_COUPON: Query = Query::with(
    "pending AS (
        SELECT id FROM orders WHERE id = $1 AND status = 'PENDING' AND NOT coupon_applied FOR UPDATE
    ), used AS (
        UPDATE user_coupons uc SET status = 'USED', order_id = pending.id, used_at = now()
        FROM pending, coupons c
        WHERE uc.id = $2 AND uc.user_id = $3 AND uc.status = 'ISSUED' AND c.id = uc.coupon_id
          AND c.expires_at > now() AND c.min_order_amount <= $4
        RETURNING uc.id
    )",
    "UPDATE orders SET coupon_applied = true, discount_amount = $5, updated_at = now()
    FROM used WHERE orders.id = $1
    RETURNING orders.id",
)
.committed_without_flush();

/// Step 4. Invariant 1: the balance never goes below zero and moves only with
/// its PAYMENT entry; invariant 4: one PAYMENT per order
/// (`ledger_one_payment_per_order`). A wallet is created for a free order.
const DEBIT: Query = Query::with(
    "pending AS (
        SELECT id FROM orders WHERE id = $1 AND status = 'PENDING' AND NOT balance_deducted FOR UPDATE
    ), debited AS (
        UPDATE wallets SET balance = balance - $3, updated_at = now()
        FROM pending WHERE wallets.user_id = $2 AND wallets.balance >= $3
        RETURNING wallets.balance
    ), opened AS (
        INSERT INTO wallets (user_id, balance)
        SELECT $2, 0 FROM pending WHERE $3 = 0 AND NOT EXISTS (SELECT 1 FROM wallets WHERE user_id = $2)
        ON CONFLICT (user_id) DO NOTHING
        RETURNING balance
    ), entry AS (
        INSERT INTO wallet_ledger (user_id, kind, amount, balance_after, order_id)
        SELECT $2, 'PAYMENT', -$3, balance, $1
        FROM (SELECT balance FROM debited UNION ALL SELECT balance FROM opened) b
        RETURNING balance_after
    )",
    "UPDATE orders SET balance_deducted = true, updated_at = now()
    FROM entry WHERE orders.id = $1
    RETURNING entry.balance_after",
)
.committed_without_flush();

/// Step 5, also recovery's roll-forward. Invariants 2 and 4: held stock
/// becomes sold exactly once, when a debited order becomes PAID; products
/// are locked in id order so concurrent confirmations cannot deadlock.
/// Invariant 6: the order's `order.paid` event is written by this same
/// statement, so it exists exactly when the order became PAID; leased to
/// token $2 for $3 seconds when one is given (its first attempt then needs
/// no claim: it is the order's first event, nothing can be ahead of it).
const CONFIRM: Query = Query::with(
    "paid AS (
        UPDATE orders SET status = 'PAID', paid_at = now(), updated_at = now()
        WHERE id = $1 AND status IN ('PENDING', 'ON_HOLD') AND balance_deducted
        RETURNING id, user_id, paid_at, reserved_products, total_amount, discount_amount, user_coupon_id
    ), event AS (
        INSERT INTO order_events (order_id, type, lease_token, lease_until, attempts, last_attempt_at, data)
        SELECT paid.id, 'order.paid', $2::uuid,
            CASE WHEN $2::uuid IS NOT NULL THEN now() + make_interval(secs => $3::int8) END,
            CASE WHEN $2::uuid IS NOT NULL THEN 1 ELSE 0 END,
            CASE WHEN $2::uuid IS NOT NULL THEN now() END,
            jsonb_build_object(
            'orderId', paid.id, 'userId', paid.user_id, 'status', 'PAID',
            'items', (SELECT jsonb_agg(jsonb_build_object('productId', i.product_id, 'quantity', i.quantity,
                                                          'unitPrice', i.unit_price,
                                                          'lineTotal', i.quantity * i.unit_price)
                                       ORDER BY i.product_id)
                      FROM order_items i WHERE i.order_id = paid.id),
            'totalAmount', paid.total_amount, 'discountAmount', paid.discount_amount,
            'paidAmount', paid.total_amount - paid.discount_amount,
            'userCouponId', paid.user_coupon_id, 'paidAt', api_time(paid.paid_at))
        FROM paid
        RETURNING id::text AS id, body
    ), lines AS (
        SELECT i.product_id, i.quantity FROM order_items i JOIN paid ON paid.id = i.order_id
        WHERE i.product_id = ANY(paid.reserved_products)
    ), locked AS (
        SELECT p.id FROM products p JOIN lines ON lines.product_id = p.id ORDER BY p.id FOR UPDATE OF p
    ), sold AS (
        UPDATE products p SET stock = p.stock - lines.quantity, reserved = p.reserved - lines.quantity
        FROM lines, locked WHERE p.id = lines.product_id AND locked.id = p.id
    )",
    "SELECT paid_at AT TIME ZONE 'UTC' AS paid_at,
            array(SELECT product_id FROM lines ORDER BY product_id) AS products,
            array(SELECT quantity FROM lines ORDER BY product_id) AS quantities,
            (SELECT id FROM event) AS event_id, (SELECT body FROM event) AS event_body
    FROM paid",
);

/// Undo, for a business failure (`FAILED`) and recovery's roll-back
/// (`CANCELLED`). Invariants 2 and 3: give back exactly what the order holds,
/// once (the status moves on in the same statement), and only if no money
/// moved (`NOT balance_deducted`). The progress columns stay as a record of
/// what was held. Invariant 6: a roll-back writes its `order.cancelled`
/// event in this statement; a `FAILED` order has none.
const UNDO: Query = Query::with(
    "ended AS (
        UPDATE orders SET status = $2, failure_code = $3, failure_detail = $4, failure_product_id = $5,
                          updated_at = now()
        WHERE id = $1 AND status IN ('PENDING', 'ON_HOLD') AND NOT balance_deducted
        RETURNING id, user_id, status, total_amount, user_coupon_id, coupon_applied, reserved_products
    ), event AS (
        INSERT INTO order_events (order_id, type, data)
        SELECT ended.id, 'order.cancelled', jsonb_build_object(
            'orderId', ended.id, 'userId', ended.user_id, 'status', 'CANCELLED',
            'items', (SELECT coalesce(jsonb_agg(jsonb_build_object('productId', i.product_id,
                                                                   'quantity', i.quantity,
                                                                   'unitPrice', i.unit_price,
                                                                   'lineTotal', i.quantity * i.unit_price)
                                                ORDER BY i.product_id), '[]')
                      FROM order_items i WHERE i.order_id = ended.id),
            'totalAmount', ended.total_amount)
        FROM ended WHERE ended.status = 'CANCELLED'
    ), lines AS (
        SELECT i.product_id, i.quantity FROM order_items i JOIN ended ON ended.id = i.order_id
        WHERE i.product_id = ANY(ended.reserved_products)
    ), locked AS (
        SELECT p.id FROM products p JOIN lines ON lines.product_id = p.id ORDER BY p.id FOR UPDATE OF p
    ), returned AS (
        UPDATE products p SET reserved = p.reserved - lines.quantity
        FROM lines, locked WHERE p.id = lines.product_id AND locked.id = p.id
    ), restored AS (
        UPDATE user_coupons uc SET status = 'ISSUED', order_id = NULL, used_at = NULL
        FROM ended WHERE ended.coupon_applied AND uc.id = ended.user_coupon_id AND uc.order_id = $1
    )",
    "SELECT reserved_products FROM ended",
);

/// 4-5: an infrastructure failure interrupted the steps; recovery resolves it.
const HOLD: &str =
    "UPDATE orders SET status = 'ON_HOLD', updated_at = now() WHERE id = $1 AND status = 'PENDING'";

/// Why a step did not complete.
#[derive(Debug)]
pub enum StepError {
    /// A business rule said no: undo and end the order `FAILED`.
    Business(Rejection, Option<i64>),
    /// A store failed: hold the order for recovery.
    Infrastructure(Problem),
    /// The order is no longer `PENDING` (recovery resolved it meanwhile).
    Superseded,
}

impl From<DbError> for StepError {
    fn from(error: DbError) -> StepError {
        StepError::Infrastructure(error.into())
    }
}

impl From<Problem> for StepError {
    fn from(problem: Problem) -> StepError {
        StepError::Infrastructure(problem)
    }
}

/// The requested products that exist, as read before the order is written.
pub struct Catalogue {
    /// Each product's current price.
    pub prices: HashMap<i64, i64>,
    /// Each product's units left to order (stock not reserved).
    available: HashMap<i64, i64>,
    /// Whether the request's key already made an order.
    keyed: bool,
    /// When (Unix ms) the newest order was made, if there is one.
    pub newest_order_ms: Option<i64>,
}

impl Catalogue {
    /// Whether `product_id` has `quantity` units left (when it was read).
    pub fn has_units(&self, product_id: i64, quantity: i64) -> bool {
        self.available
            .get(&product_id)
            .is_some_and(|left| *left >= quantity)
    }

    /// The first product (in the request's product-id order) with fewer
    /// units left than the request needs, if the key made no order yet: the
    /// reserve would refuse it. A key that made an order is answered with
    /// that order, never refused here.
    pub fn short_of(&self, request: &OrderRequest) -> Option<i64> {
        if self.keyed {
            return None;
        }
        request
            .lines
            .iter()
            .find(|line| {
                self.available
                    .get(&line.product_id)
                    .is_some_and(|left| *left < line.quantity)
            })
            .map(|line| line.product_id)
    }
}

/// Current prices and units left of the requested products that exist, read
/// for `user_id`'s order with `key`.
pub fn catalogue(db: &Db, user_id: i64, key: &str, request: &OrderRequest) -> Result<Catalogue, Problem> {
    let ids: Vec<i64> = request.lines.iter().map(|l| l.product_id).collect();
    let rows = db.query(
        &PRICES,
        &[
            ParameterValue::ArrayInt64(ids.into_iter().map(Some).collect()),
            ParameterValue::Int64(user_id),
            ParameterValue::Str(key.to_owned()),
        ],
    )?;
    let mut catalogue = Catalogue {
        prices: HashMap::new(),
        available: HashMap::new(),
        keyed: false,
        newest_order_ms: None,
    };
    for row in rows.iter() {
        let id = column(&row, "id")?;
        catalogue.prices.insert(id, column(&row, "price")?);
        catalogue.available.insert(id, column(&row, "available")?);
        catalogue.keyed = column(&row, "keyed")?;
        catalogue.newest_order_ms = column(&row, "newest_order_ms")?;
    }
    Ok(catalogue)
}

/// Who is ordering what, with which key.
pub struct NewOrder<'a> {
    pub user_id: i64,
    pub key: &'a str,
    pub fingerprint: &'a str,
    pub request: &'a OrderRequest,
}

/// The outcome of step 1.
pub enum Created {
    /// `PENDING`, ready for the next steps.
    Pending(i64),
    /// Ended `FAILED` at once: a product does not exist.
    Failed(i64, Rejection, i64),
    /// The key already made an order (Redis had lost it, or its lease
    /// ended): answer from that one ([`view::Select::Key`]).
    Duplicate,
}

/// Step 1: the order and its price snapshots, or a `FAILED` order when a
/// product is unknown.
pub fn create(db: &Db, new: &NewOrder<'_>, priced: Result<&Priced, i64>) -> Result<Created, Problem> {
    let (status, total, failure, lines) = match priced {
        Ok(priced) => (OrderStatus::Pending, priced.total, None, priced.lines.as_slice()),
        Err(missing) => (
            OrderStatus::Failed,
            0,
            Some((order::product_not_found(missing), missing)),
            &[][..],
        ),
    };
    let column_of = |f: fn(&order::PricedLine) -> i64| {
        ParameterValue::ArrayInt64(lines.iter().map(|l| Some(f(l))).collect())
    };
    let params = [
        ParameterValue::Int64(new.user_id),
        ParameterValue::Str(new.key.to_owned()),
        ParameterValue::Str(new.fingerprint.to_owned()),
        ParameterValue::Str(status.as_str().to_owned()),
        new.request
            .user_coupon_id
            .map_or(ParameterValue::DbNull, ParameterValue::Int64),
        ParameterValue::Int64(total),
        failure.as_ref().map_or(ParameterValue::DbNull, |(r, _)| {
            ParameterValue::Str(r.code.as_str().to_owned())
        }),
        failure.as_ref().map_or(ParameterValue::DbNull, |(r, _)| {
            ParameterValue::Str(r.detail.clone())
        }),
        failure
            .as_ref()
            .map_or(ParameterValue::DbNull, |(_, id)| ParameterValue::Int64(*id)),
        column_of(|l| l.product_id),
        column_of(|l| l.quantity),
        column_of(|l| l.unit_price),
        ParameterValue::Str(edge::observe::request_id()),
    ];
    let Some(id) = db
        .query(&CREATE, &params)?
        .first(|row| column::<i64>(row, "id"))?
    else {
        return Ok(Created::Duplicate);
    };
    Ok(match failure {
        Some((rejection, product)) => Created::Failed(id, rejection, product),
        None => Created::Pending(id),
    })
}

/// A paid order's confirmation.
pub struct Paid {
    pub balance: i64,
    pub discount: i64,
    pub paid_at: chrono::DateTime<chrono::Utc>,
    /// Its `order.paid`, leased for the first attempt (see [`confirm`]).
    pub event: Option<outbox::store::Claimed>,
}

/// Steps 2–5 for a `PENDING` order.
pub fn pay(
    db: &Db,
    order_id: i64,
    user_id: i64,
    request: &OrderRequest,
    priced: &Priced,
    failpoints: &Failpoints,
    lease: Option<&outbox::Lease>,
) -> Result<Paid, StepError> {
    failpoints.check("after-create")?;
    for line in &priced.lines {
        reserve(db, order_id, line.product_id, line.quantity)?;
        failpoints.check("after-reserve")?;
    }
    let discount = match request.user_coupon_id {
        Some(user_coupon_id) => take_coupon(db, order_id, user_id, user_coupon_id, priced.total)?,
        None => 0,
    };
    failpoints.check("after-coupon")?;
    let balance = debit(db, order_id, user_id, priced.total - discount)?;
    failpoints.check("after-debit")?; // also "before confirm": nothing happens in between
    let confirmed = confirm(db, order_id, lease)?.ok_or(StepError::Superseded)?;
    Ok(Paid {
        balance,
        discount,
        paid_at: confirmed.paid_at,
        event: confirmed.event,
    })
}

fn reserve(db: &Db, order_id: i64, product_id: i64, quantity: i64) -> Result<(), StepError> {
    let params = [
        ParameterValue::Int64(order_id),
        ParameterValue::Int64(product_id),
        ParameterValue::Int64(quantity),
    ];
    if db.query(&RESERVE, &params)?.is_empty() {
        return Err(if still_pending(db, order_id)? {
            StepError::Business(order::out_of_stock(product_id), Some(product_id))
        } else {
            StepError::Superseded
        });
    }
    Ok(())
}

/// Step 3: price the discount, then take the coupon (conditionally, so two
/// orders racing for one coupon cannot both have it).
fn take_coupon(
    db: &Db,
    order_id: i64,
    user_id: i64,
    user_coupon_id: i64,
    total: i64,
) -> Result<i64, StepError> {
    let discount = coupon_discount(db, user_id, user_coupon_id, total)?;
    let params = [
        ParameterValue::Int64(order_id),
        ParameterValue::Int64(user_coupon_id),
        ParameterValue::Int64(user_id),
        ParameterValue::Int64(total),
        ParameterValue::Int64(discount),
    ];
    if db.query(&TAKE_COUPON, &params)?.is_empty() {
        if !still_pending(db, order_id)? {
            return Err(StepError::Superseded);
        }
        // Another order took it (or it expired) since we looked: say which.
        coupon_discount(db, user_id, user_coupon_id, total)?;
        return Err(StepError::Business(
            Rejection::new(
                commerce::ErrorCode::CouponAlreadyUsed,
                "this coupon has already been used",
            ),
            None,
        ));
    }
    Ok(discount)
}

/// The discount `user_coupon_id` gives on `total`, or why it cannot be used.
fn coupon_discount(db: &Db, user_id: i64, user_coupon_id: i64, total: i64) -> Result<i64, StepError> {
    let rows = db.query(
        &COUPON,
        &[
            ParameterValue::Int64(user_coupon_id),
            ParameterValue::Int64(user_id),
        ],
    )?;
    let coupon = rows.first(|row| {
        let kind: String = column(row, "discount_type")?;
        let discount = Discount {
            kind: DiscountType::parse(&kind)?,
            value: column(row, "discount_value")?,
            max_discount: column(row, "max_discount")?,
            min_order_amount: column(row, "min_order_amount")?,
        };
        let state = CouponState {
            used: column::<String>(row, "status")? == "USED",
            expired: column(row, "expired")?,
        };
        Ok((discount, state))
    })?;
    let Some((discount, state)) = coupon else {
        return Err(StepError::Business(order::coupon_not_found(user_coupon_id), None));
    };
    discount
        .apply(state, total)
        .map_err(|rejection| StepError::Business(rejection, None))
}

/// Step 4: debit the wallet; returns the balance after.
fn debit(db: &Db, order_id: i64, user_id: i64, amount: i64) -> Result<i64, StepError> {
    let params = [
        ParameterValue::Int64(order_id),
        ParameterValue::Int64(user_id),
        ParameterValue::Int64(amount),
    ];
    let rows = db.query(&DEBIT, &params)?;
    match rows.first(|row| column::<i64>(row, "balance_after"))? {
        Some(balance) => Ok(balance),
        None if still_pending(db, order_id)? => {
            Err(StepError::Business(order::insufficient_balance(amount), None))
        }
        None => Err(StepError::Superseded),
    }
}

/// A confirmed (paid) order: when, and the (product, quantity) lines sold.
pub struct Confirmed {
    pub paid_at: chrono::DateTime<chrono::Utc>,
    pub lines: Vec<(i64, i64)>,
    /// Its `order.paid`, leased for its first attempt (when a lease was given).
    pub event: Option<outbox::store::Claimed>,
}

/// Step 5 (and recovery's roll-forward): `PAID`, stock sold, its
/// `order.paid` written (and leased, with `lease`). `None` when the order
/// was not debited or is already final.
pub fn confirm(db: &Db, order_id: i64, lease: Option<&outbox::Lease>) -> Result<Option<Confirmed>, Problem> {
    let [token, seconds] = outbox::Lease::params(lease);
    let rows = db.query(&CONFIRM, &[ParameterValue::Int64(order_id), token, seconds])?;
    rows.first(|row| {
        let products: Vec<Option<i64>> = column(row, "products")?;
        let quantities: Vec<Option<i64>> = column(row, "quantities")?;
        let lines = products
            .into_iter()
            .flatten()
            .zip(quantities.into_iter().flatten())
            .collect();
        let event_id: Option<String> = column(row, "event_id")?;
        let event = match (lease, event_id) {
            (Some(_), Some(id)) => Some(outbox::store::Claimed {
                id,
                event_type: "order.paid".into(),
                order_id,
                body: column(row, "event_body")?,
                attempt: 1,
            }),
            _ => None,
        };
        Ok(Confirmed {
            paid_at: instant(row, "paid_at")?,
            lines,
            event,
        })
    })
}

/// End an order that did not pay: `FAILED` with its reason, or `CANCELLED`
/// by recovery. Releases its stock and coupon; returns the products whose
/// units came back (for their sold-out gates), or `None` if it was not ended
/// (already final, or already debited — those roll forward instead).
pub fn undo(db: &Db, order_id: i64, outcome: Undo<'_>) -> Result<Option<Vec<i64>>, Problem> {
    let (status, code, detail, product) = match outcome {
        Undo::Fail(rejection, product) => (
            OrderStatus::Failed,
            ParameterValue::Str(rejection.code.as_str().to_owned()),
            ParameterValue::Str(rejection.detail.clone()),
            product.map_or(ParameterValue::DbNull, ParameterValue::Int64),
        ),
        Undo::Cancel => (
            OrderStatus::Cancelled,
            ParameterValue::DbNull,
            ParameterValue::DbNull,
            ParameterValue::DbNull,
        ),
    };
    let params = [
        ParameterValue::Int64(order_id),
        ParameterValue::Str(status.as_str().to_owned()),
        code,
        detail,
        product,
    ];
    let released = db
        .query(&UNDO, &params)?
        .first(|row| column::<Vec<Option<i64>>>(row, "reserved_products"))?;
    Ok(released.map(|products| products.into_iter().flatten().collect()))
}

/// How an unpaid order ends.
pub enum Undo<'a> {
    Fail(&'a Rejection, Option<i64>),
    Cancel,
}

/// Put an interrupted order on hold for recovery (`false` if it was no longer `PENDING`).
pub fn hold(db: &Db, order_id: i64) -> Result<bool, DbError> {
    Ok(db.execute(HOLD, &[ParameterValue::Int64(order_id)])? == 1)
}

/// An order's status (a read).
const STATUS: Query = Query::new("SELECT status FROM orders WHERE id = $1");

fn still_pending(db: &Db, order_id: i64) -> Result<bool, DbError> {
    let rows = db.query(&STATUS, &[ParameterValue::Int64(order_id)])?;
    let status = rows.iter().next().and_then(|row| row.get::<String>("status"));
    Ok(status.as_deref() == Some(OrderStatus::Pending.as_str()))
}
