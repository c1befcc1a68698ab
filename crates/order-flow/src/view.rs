//! Orders as the API shows them, read back from Postgres. The `201` of a
//! paid order and its replay from the Postgres backstop are built by the same
//! code from the same values, so they are the same bytes.

use crate::refund::RefundView;
use commerce::order::OrderStatus;
use edge::pg::{column, instant, rfc3339, Db, Query};
use edge::Problem;
use serde::Serialize;
use spin_sdk::pg4::{ParameterValue, Row};

/// An order's columns, times read as UTC, with its PAYMENT balance.
const ORDER_COLUMNS: &str = "
SELECT o.id, o.user_id, o.status, o.user_coupon_id, o.total_amount, o.discount_amount, o.balance_deducted,
       o.refunded_amount, o.request_id,
       o.request_fingerprint, o.failure_code, o.failure_detail, o.failure_product_id,
       o.created_at AT TIME ZONE 'UTC' AS created_at, o.paid_at AT TIME ZONE 'UTC' AS paid_at,
       (SELECT l.balance_after FROM wallet_ledger l WHERE l.order_id = o.id AND l.kind = 'PAYMENT') AS balance
FROM orders o";

const LINES: Query = Query::new(
    "SELECT order_id, product_id, quantity, unit_price FROM order_items
    WHERE order_id = ANY($1) ORDER BY order_id, product_id",
);

/// One line of an order.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    pub product_id: i64,
    pub quantity: i64,
    pub unit_price: i64,
    pub line_total: i64,
}

/// An order as stored.
#[derive(Debug, Clone)]
pub struct Order {
    pub id: i64,
    pub user_id: i64,
    pub status: OrderStatus,
    pub user_coupon_id: Option<i64>,
    pub total_amount: i64,
    pub discount_amount: i64,
    pub balance_deducted: bool,
    pub refunded_amount: i64,
    /// The `Request-Id` of the request that placed it.
    pub request_id: Option<String>,
    pub request_fingerprint: String,
    pub failure_code: Option<String>,
    pub failure_detail: Option<String>,
    pub failure_product_id: Option<i64>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub paid_at: Option<chrono::DateTime<chrono::Utc>>,
    pub balance: Option<i64>,
    pub items: Vec<Item>,
}

/// The `201` of a paid order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PaidOrder<'a> {
    pub order_id: i64,
    pub status: &'static str,
    pub items: &'a [Item],
    pub total_amount: i64,
    pub discount_amount: i64,
    pub paid_amount: i64,
    pub balance: i64,
    pub paid_at: String,
}

impl<'a> PaidOrder<'a> {
    /// The one way a `201` is built, fresh or replayed from Postgres.
    pub fn new(
        order_id: i64,
        items: &'a [Item],
        total_amount: i64,
        discount_amount: i64,
        balance: i64,
        paid_at: chrono::DateTime<chrono::Utc>,
    ) -> PaidOrder<'a> {
        PaidOrder {
            order_id,
            status: OrderStatus::Paid.as_str(),
            items,
            total_amount,
            discount_amount,
            paid_amount: total_amount - discount_amount,
            balance,
            paid_at: rfc3339(paid_at),
        }
    }
}

impl Item {
    pub fn priced(line: &commerce::order::PricedLine) -> Item {
        Item {
            product_id: line.product_id,
            quantity: line.quantity,
            unit_price: line.unit_price,
            line_total: line.line_total,
        }
    }
}

/// `GET /orders/{id}` and each item of `GET /orders`: the `201` fields (with
/// nulls where the order has not paid) plus status, creation time and coupon.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderDetail<'a> {
    pub order_id: i64,
    pub status: &'static str,
    pub items: &'a [Item],
    pub total_amount: i64,
    pub discount_amount: i64,
    /// What was debited: `totalAmount - discountAmount` once the wallet was
    /// debited, else 0.
    pub paid_amount: i64,
    pub balance: Option<i64>,
    pub paid_at: Option<String>,
    pub created_at: String,
    pub user_coupon_id: Option<i64>,
    /// What was given back (SPEC §8), 0 before any refund.
    pub refunded_amount: i64,
    /// The refunds, oldest first: on `GET /orders/{id}` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refunds: Option<Vec<RefundView>>,
}

/// An order in the admin list: as `GET /orders/{id}` shows it, refunds
/// included, with its owner and without a balance.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminOrder<'a> {
    pub order_id: i64,
    pub user_id: i64,
    pub status: &'static str,
    pub items: &'a [Item],
    pub total_amount: i64,
    pub discount_amount: i64,
    pub paid_amount: i64,
    pub paid_at: Option<String>,
    pub created_at: String,
    pub user_coupon_id: Option<i64>,
    pub refunded_amount: i64,
    pub refunds: &'a [RefundView],
}

impl Order {
    /// This order in the admin list, with its refunds.
    pub fn admin_view<'a>(&'a self, refunds: &'a [RefundView]) -> AdminOrder<'a> {
        AdminOrder {
            order_id: self.id,
            user_id: self.user_id,
            status: self.status.as_str(),
            items: &self.items,
            total_amount: self.total_amount,
            discount_amount: self.discount_amount,
            paid_amount: self.paid_amount(),
            paid_at: self.paid_at.map(rfc3339),
            created_at: rfc3339(self.created_at),
            user_coupon_id: self.user_coupon_id,
            refunded_amount: self.refunded_amount,
            refunds,
        }
    }

    fn from_row(row: &Row<'_>) -> Result<Order, Problem> {
        let status: String = column(row, "status")?;
        let paid_at: Option<chrono::NaiveDateTime> = column(row, "paid_at")?;
        Ok(Order {
            id: column(row, "id")?,
            user_id: column(row, "user_id")?,
            status: OrderStatus::parse(&status)
                .ok_or_else(|| Problem::unavailable("unknown order status"))?,
            user_coupon_id: column(row, "user_coupon_id")?,
            total_amount: column(row, "total_amount")?,
            discount_amount: column(row, "discount_amount")?,
            balance_deducted: column(row, "balance_deducted")?,
            refunded_amount: column(row, "refunded_amount")?,
            request_id: column(row, "request_id")?,
            request_fingerprint: column(row, "request_fingerprint")?,
            failure_code: column(row, "failure_code")?,
            failure_detail: column(row, "failure_detail")?,
            failure_product_id: column(row, "failure_product_id")?,
            created_at: instant(row, "created_at")?,
            paid_at: paid_at.map(|t| t.and_utc()),
            balance: column(row, "balance")?,
            items: Vec::new(),
        })
    }

    pub fn paid_amount(&self) -> i64 {
        if self.balance_deducted {
            self.total_amount - self.discount_amount
        } else {
            0
        }
    }

    /// The `201` that placing the order answered, if it was paid (refunds
    /// since do not change what that answer was).
    pub fn paid_view(&self) -> Option<PaidOrder<'_>> {
        // Only confirming an order sets `paid_at`.
        let paid_at = self.paid_at?;
        Some(PaidOrder::new(
            self.id,
            &self.items,
            self.total_amount,
            self.discount_amount,
            self.balance?,
            paid_at,
        ))
    }

    pub fn detail(&self) -> OrderDetail<'_> {
        OrderDetail {
            order_id: self.id,
            status: self.status.as_str(),
            items: &self.items,
            total_amount: self.total_amount,
            discount_amount: self.discount_amount,
            paid_amount: self.paid_amount(),
            balance: self.balance,
            paid_at: self.paid_at.map(rfc3339),
            created_at: rfc3339(self.created_at),
            user_coupon_id: self.user_coupon_id,
            refunded_amount: self.refunded_amount,
            refunds: None,
        }
    }
}

/// Which orders to load.
pub enum Select<'a> {
    /// One order, if it is this user's.
    Id { user_id: i64, order_id: i64 },
    /// The order a user's idempotency key made.
    Key { user_id: i64, key: &'a str },
    /// A page of a user's orders, newest first, below `before`.
    Page { user_id: i64, before: i64, limit: i64 },
    /// Any orders by id (recovery).
    Ids(&'a [i64]),
    /// A page of every user's orders, newest first, below `before`, of one
    /// status and one user when given (the admin list).
    Admin {
        status: Option<OrderStatus>,
        user_id: Option<i64>,
        before: i64,
        limit: i64,
    },
}

/// Load orders with their lines.
pub fn load(db: &Db, select: Select<'_>) -> Result<Vec<Order>, Problem> {
    let (filter, params) = match select {
        Select::Id { user_id, order_id } => (
            "WHERE o.id = $1 AND o.user_id = $2",
            vec![ParameterValue::Int64(order_id), ParameterValue::Int64(user_id)],
        ),
        Select::Key { user_id, key } => (
            "WHERE o.user_id = $1 AND o.idempotency_key = $2",
            vec![
                ParameterValue::Int64(user_id),
                ParameterValue::Str(key.to_owned()),
            ],
        ),
        Select::Page {
            user_id,
            before,
            limit,
        } => (
            "WHERE o.user_id = $1 AND o.id < $2 ORDER BY o.id DESC LIMIT $3",
            vec![
                ParameterValue::Int64(user_id),
                ParameterValue::Int64(before),
                ParameterValue::Int64(limit),
            ],
        ),
        Select::Ids(ids) => (
            "WHERE o.id = ANY($1) ORDER BY o.id",
            vec![ParameterValue::ArrayInt64(ids.iter().map(|i| Some(*i)).collect())],
        ),
        Select::Admin {
            status,
            user_id,
            before,
            limit,
        } => (
            "WHERE ($1::text IS NULL OR o.status = $1) AND ($2::int8 IS NULL OR o.user_id = $2) AND o.id < $3
             ORDER BY o.id DESC LIMIT $4",
            vec![
                status.map_or(ParameterValue::DbNull, |s| {
                    ParameterValue::Str(s.as_str().to_owned())
                }),
                user_id.map_or(ParameterValue::DbNull, ParameterValue::Int64),
                ParameterValue::Int64(before),
                ParameterValue::Int64(limit),
            ],
        ),
    };
    let rows = db.query(&Query::new(&format!("{ORDER_COLUMNS} {filter}")), &params)?;
    let mut orders = rows
        .iter()
        .map(|row| Order::from_row(&row))
        .collect::<Result<Vec<_>, _>>()?;
    if orders.is_empty() {
        return Ok(orders);
    }
    let ids = orders.iter().map(|o| Some(o.id)).collect();
    let lines = db.query(&LINES, &[ParameterValue::ArrayInt64(ids)])?;
    for row in lines.iter() {
        let order_id: i64 = column(&row, "order_id")?;
        let (quantity, unit_price): (i64, i64) = (column(&row, "quantity")?, column(&row, "unit_price")?);
        if let Some(order) = orders.iter_mut().find(|o| o.id == order_id) {
            order.items.push(Item {
                product_id: column(&row, "product_id")?,
                quantity,
                unit_price,
                line_total: quantity * unit_price,
            });
        }
    }
    Ok(orders)
}
