//! The invariants of SPEC.md, checked over the database after a test: the
//! oracle every scenario test ends with. Each check returns descriptions of
//! the rows that break it, so a failure names what is wrong.

use anyhow::Result;

/// Invariant 1 (money): for every user, `balance = Σ ledger amounts` (CHARGE
/// and REFUND positive, PAYMENT negative) and `balance ≥ 0`; every ledger
/// row's `balance_after` is non-negative.
pub async fn money(db: &tokio_postgres::Client) -> Result<Vec<String>> {
    let rows = db
        .query(
            "SELECT coalesce(w.user_id, l.user_id) AS user_id, coalesce(w.balance, 0) AS balance,
                    coalesce(l.total, 0)::int8 AS ledger_total
             FROM wallets w FULL JOIN (
                 SELECT user_id, sum(amount) AS total FROM wallet_ledger GROUP BY user_id
             ) l ON l.user_id = w.user_id
             WHERE coalesce(w.balance, 0) <> coalesce(l.total, 0) OR coalesce(w.balance, 0) < 0",
            &[],
        )
        .await?;
    let mut violations: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "user {}: balance {} but ledger sums to {}",
                r.get::<_, i64>("user_id"),
                r.get::<_, i64>("balance"),
                r.get::<_, i64>("ledger_total")
            )
        })
        .collect();
    let negative = db
        .query("SELECT id FROM wallet_ledger WHERE balance_after < 0", &[])
        .await?;
    violations.extend(
        negative
            .iter()
            .map(|r| format!("ledger row {} has a negative balance_after", r.get::<_, i64>(0))),
    );
    Ok(violations)
}

/// Invariant 2 (stock): `0 ≤ reserved ≤ stock`, `initial stock + restocked units = stock + Σ
/// (quantity − refunded quantity)` over lines of PAID, PARTIALLY_REFUNDED and
/// REFUNDED orders, and `reserved = Σ quantity held by unfinished orders`
/// (nothing held by a finished one); only paid lines have refunded units.
pub async fn stock(db: &tokio_postgres::Client) -> Result<Vec<String>> {
    let rows = db
        .query(
            "SELECT p.id, p.stock, p.reserved, p.initial_stock,
                    coalesce(restocked.units, 0)::int8 AS restocked,
                    coalesce(sold.units, 0)::int8 AS sold, coalesce(held.units, 0)::int8 AS held
             FROM products p
             LEFT JOIN (SELECT product_id, sum(quantity) AS units FROM product_restocks GROUP BY product_id) restocked
                    ON restocked.product_id = p.id
             LEFT JOIN (SELECT i.product_id, sum(i.quantity - i.refunded_quantity) AS units FROM order_items i
                        JOIN orders o ON o.id = i.order_id
                        WHERE o.status IN ('PAID', 'PARTIALLY_REFUNDED', 'REFUNDED') GROUP BY i.product_id) sold
                    ON sold.product_id = p.id
             LEFT JOIN (SELECT i.product_id, sum(i.quantity) AS units FROM order_items i
                        JOIN orders o ON o.id = i.order_id
                        WHERE o.status IN ('PENDING', 'ON_HOLD') AND i.product_id = ANY(o.reserved_products)
                        GROUP BY i.product_id) held
                    ON held.product_id = p.id
             WHERE p.reserved < 0 OR p.reserved > p.stock
                OR p.initial_stock + coalesce(restocked.units, 0) <> p.stock + coalesce(sold.units, 0)
                OR p.reserved <> coalesce(held.units, 0)",
            &[],
        )
        .await?;
    let mut violations: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "product {}: stock {} reserved {} initial {} restocked {} sold {} held by open orders {}",
                r.get::<_, i64>("id"),
                r.get::<_, i64>("stock"),
                r.get::<_, i64>("reserved"),
                r.get::<_, i64>("initial_stock"),
                r.get::<_, i64>("restocked"),
                r.get::<_, i64>("sold"),
                r.get::<_, i64>("held")
            )
        })
        .collect();
    let refunded_unpaid = db
        .query(
            "SELECT i.order_id, i.product_id, o.status FROM order_items i JOIN orders o ON o.id = i.order_id
             WHERE i.refunded_quantity <> 0 AND o.status NOT IN ('PARTIALLY_REFUNDED', 'REFUNDED')",
            &[],
        )
        .await?;
    violations.extend(refunded_unpaid.iter().map(|r| {
        format!(
            "order {} ({}) has refunded units of product {}",
            r.get::<_, i64>(0),
            r.get::<_, String>(2),
            r.get::<_, i64>(1)
        )
    }));
    Ok(violations)
}

/// Invariant 4 (orders) and the money side of orders: a PAID order has
/// exactly one PAYMENT entry, equal to its `paidAmount`; an order that did not
/// pay has none (unless still being resolved with its wallet debited); a USED
/// user coupon belongs to exactly one order that took it and is not undone.
pub async fn orders(db: &tokio_postgres::Client) -> Result<Vec<String>> {
    let mut violations = Vec::new();
    let payments = db
        .query(
            "SELECT o.id, o.status, o.balance_deducted, o.total_amount - o.discount_amount AS due,
                    count(l.id) AS entries, coalesce(-sum(l.amount), 0)::int8 AS paid
             FROM orders o LEFT JOIN wallet_ledger l ON l.order_id = o.id AND l.kind = 'PAYMENT'
             GROUP BY o.id
             HAVING (o.status IN ('PAID', 'PARTIALLY_REFUNDED', 'REFUNDED')
                     AND (count(l.id) <> 1 OR -sum(l.amount) <> o.total_amount - o.discount_amount))
                 OR (o.balance_deducted <> (count(l.id) = 1))
                 OR (o.status IN ('FAILED', 'CANCELLED') AND count(l.id) <> 0)",
            &[],
        )
        .await?;
    violations.extend(payments.iter().map(|r| {
        format!(
            "order {} ({}): due {} but {} PAYMENT entries totalling {}",
            r.get::<_, i64>("id"),
            r.get::<_, String>("status"),
            r.get::<_, i64>("due"),
            r.get::<_, i64>("entries"),
            r.get::<_, i64>("paid")
        )
    }));
    let coupons = db
        .query(
            "SELECT uc.id, uc.status, uc.order_id, o.status AS order_status
             FROM user_coupons uc LEFT JOIN orders o ON o.id = uc.order_id
             WHERE (uc.status = 'USED') <> (o.id IS NOT NULL AND o.coupon_applied
                                            AND o.status IN ('PAID', 'PARTIALLY_REFUNDED', 'PENDING', 'ON_HOLD'))",
            &[],
        )
        .await?;
    violations.extend(coupons.iter().map(|r| {
        format!(
            "user coupon {} is {} but its order {:?} is {:?}",
            r.get::<_, i64>("id"),
            r.get::<_, String>("status"),
            r.get::<_, Option<i64>>("order_id"),
            r.get::<_, Option<String>>("order_status")
        )
    }));
    // Refunds: the order's refunded amount is the sum of its REFUND entries
    // and of its refund rows, at most what was paid, all of it once REFUNDED;
    // each refund row's amount is its items' and it has one entry unless 0.
    let refunds = db
        .query(
            "SELECT o.id, o.status, o.refunded_amount, o.total_amount - o.discount_amount AS paid,
                    coalesce((SELECT sum(l.amount) FROM wallet_ledger l
                              WHERE l.order_id = o.id AND l.kind = 'REFUND'), 0)::int8 AS entries,
                    coalesce((SELECT sum(r.amount) FROM refunds r WHERE r.order_id = o.id), 0)::int8 AS rows
             FROM orders o
             WHERE o.refunded_amount <> coalesce((SELECT sum(l.amount) FROM wallet_ledger l
                                                  WHERE l.order_id = o.id AND l.kind = 'REFUND'), 0)
                OR o.refunded_amount <> coalesce((SELECT sum(r.amount) FROM refunds r WHERE r.order_id = o.id), 0)
                OR o.refunded_amount > o.total_amount - o.discount_amount
                OR (o.status = 'REFUNDED' AND o.refunded_amount <> o.total_amount - o.discount_amount)
                OR (o.status = 'REFUNDED' AND EXISTS (SELECT 1 FROM order_items i
                                                      WHERE i.order_id = o.id AND i.refunded_quantity <> i.quantity))
                OR (o.status = 'PARTIALLY_REFUNDED' AND NOT EXISTS (SELECT 1 FROM order_items i
                                                      WHERE i.order_id = o.id AND i.refunded_quantity <> i.quantity))",
            &[],
        )
        .await?;
    violations.extend(refunds.iter().map(|r| {
        format!(
            "order {} ({}): refunded {} of {} paid, REFUND entries {}, refund rows {}",
            r.get::<_, i64>("id"),
            r.get::<_, String>("status"),
            r.get::<_, i64>("refunded_amount"),
            r.get::<_, i64>("paid"),
            r.get::<_, i64>("entries"),
            r.get::<_, i64>("rows")
        )
    }));
    let refund_rows = db
        .query(
            "SELECT r.id::text FROM refunds r
             WHERE r.amount <> (SELECT coalesce(sum((item ->> 'amount')::int8), 0) FROM jsonb_array_elements(r.items) item)
                OR (r.amount > 0) <> EXISTS (SELECT 1 FROM wallet_ledger l WHERE l.refund_id = r.id)",
            &[],
        )
        .await?;
    violations.extend(refund_rows.iter().map(|r| {
        format!(
            "refund {} does not match its items or its ledger entry",
            r.get::<_, String>(0)
        )
    }));
    Ok(violations)
}

/// Invariant 6 (events): every order that is PAID, PARTIALLY_REFUNDED or
/// REFUNDED has exactly one `order.paid`, every CANCELLED order (only
/// recovery cancels) exactly one `order.cancelled`, every refund exactly one
/// `order.refunded` of its amount, and no other order any event; every
/// event's body is its envelope (`id`, `type`, `data` of its own order).
pub async fn events(db: &tokio_postgres::Client) -> Result<Vec<String>> {
    let per_order = db
        .query(
            "SELECT o.id, o.status,
                    count(e.id) FILTER (WHERE e.type = 'order.paid') AS paid,
                    count(e.id) FILTER (WHERE e.type = 'order.cancelled') AS cancelled,
                    count(e.id) FILTER (WHERE e.type = 'order.refunded') AS refunded,
                    (SELECT count(*) FROM refunds r WHERE r.order_id = o.id) AS refunds
             FROM orders o LEFT JOIN order_events e ON e.order_id = o.id
             GROUP BY o.id
             HAVING count(e.id) FILTER (WHERE e.type = 'order.paid')
                        <> (o.status IN ('PAID', 'PARTIALLY_REFUNDED', 'REFUNDED'))::int
                 OR count(e.id) FILTER (WHERE e.type = 'order.cancelled') <> (o.status = 'CANCELLED')::int
                 OR count(e.id) FILTER (WHERE e.type = 'order.refunded')
                        <> (SELECT count(*) FROM refunds r WHERE r.order_id = o.id)",
            &[],
        )
        .await?;
    let mut violations: Vec<String> = per_order
        .iter()
        .map(|r| {
            format!(
                "order {} ({}): {} order.paid, {} order.cancelled, {} order.refunded for {} refunds",
                r.get::<_, i64>("id"),
                r.get::<_, String>("status"),
                r.get::<_, i64>("paid"),
                r.get::<_, i64>("cancelled"),
                r.get::<_, i64>("refunded"),
                r.get::<_, i64>("refunds")
            )
        })
        .collect();
    let mismatched = db
        .query(
            "SELECT e.id::text, e.type FROM order_events e
             LEFT JOIN refunds r ON r.id = e.refund_id
             WHERE (e.body::jsonb ->> 'id') IS DISTINCT FROM e.id::text
                OR (e.body::jsonb ->> 'type') IS DISTINCT FROM e.type
                OR (e.body::jsonb -> 'data' ->> 'orderId')::int8 IS DISTINCT FROM e.order_id
                OR (e.type = 'order.refunded' AND (r.order_id IS DISTINCT FROM e.order_id
                    OR (e.data ->> 'amount')::int8 IS DISTINCT FROM r.amount))",
            &[],
        )
        .await?;
    violations.extend(mismatched.iter().map(|r| {
        format!(
            "event {} ({}) does not match its envelope, order or refund",
            r.get::<_, String>(0),
            r.get::<_, String>(1)
        )
    }));
    Ok(violations)
}

/// Invariant 4's clock: every order is final (PAID, FAILED or CANCELLED).
pub async fn all_orders_final(db: &tokio_postgres::Client) -> Result<Vec<String>> {
    let rows = db
        .query(
            "SELECT id, status FROM orders WHERE status IN ('PENDING', 'ON_HOLD')",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| format!("order {} is still {}", r.get::<_, i64>(0), r.get::<_, String>(1)))
        .collect())
}

/// Invariant 3 (coupons), in Postgres: issued ≤ quantity, the count on the
/// coupon equals the rows, at most one per (coupon, user) (a constraint), and
/// a USED user coupon names its order.
pub async fn coupons(db: &tokio_postgres::Client) -> Result<Vec<String>> {
    let rows = db
        .query(
            "SELECT c.id, c.total_quantity, c.issued_count, count(uc.id) AS rows
             FROM coupons c LEFT JOIN user_coupons uc ON uc.coupon_id = c.id
             GROUP BY c.id HAVING count(uc.id) <> c.issued_count OR count(uc.id) > c.total_quantity",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            format!(
                "coupon {}: quantity {} counted {} rows {}",
                r.get::<_, i64>("id"),
                r.get::<_, i64>("total_quantity"),
                r.get::<_, i64>("issued_count"),
                r.get::<_, i64>("rows")
            )
        })
        .collect())
}

/// Invariant 3 in Redis, once quiet: for every coupon whose keys exist,
/// `remaining + issued = totalQuantity` and the issued set is exactly the
/// users Postgres recorded.
pub async fn coupon_keys(db: &tokio_postgres::Client, redis: &mut redis::Connection) -> Result<Vec<String>> {
    let scope = crate::RedisScope::of(db).await?;
    let mut violations = Vec::new();
    for row in db.query("SELECT id, total_quantity FROM coupons", &[]).await? {
        let (id, total): (i64, i64) = (row.get(0), row.get(1));
        let remaining: Option<i64> = redis::cmd("GET")
            .arg(scope.key(&format!("coupon:{{{id}}}:remaining")))
            .query(redis)?;
        let Some(remaining) = remaining else { continue };
        let mut members: Vec<i64> = redis::cmd("SMEMBERS")
            .arg(scope.key(&format!("coupon:{{{id}}}:issued")))
            .query(redis)?;
        members.sort_unstable();
        let mut recorded: Vec<i64> = db
            .query("SELECT user_id FROM user_coupons WHERE coupon_id = $1", &[&id])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        recorded.sort_unstable();
        if remaining + recorded.len() as i64 != total {
            violations.push(format!(
                "coupon {id}: redis remaining {remaining} + issued {} != {total}",
                recorded.len()
            ));
        }
        if members != recorded {
            violations.push(format!(
                "coupon {id}: redis issued set differs from Postgres ({} vs {})",
                members.len(),
                recorded.len()
            ));
        }
    }
    Ok(violations)
}

/// Every invariant; panics listing the violations.
pub async fn assert_all(db: &tokio_postgres::Client) {
    let mut violations = money(db).await.expect("money invariant query");
    violations.extend(stock(db).await.expect("stock invariant query"));
    violations.extend(coupons(db).await.expect("coupon invariant query"));
    violations.extend(orders(db).await.expect("order invariant query"));
    violations.extend(events(db).await.expect("event invariant query"));
    assert!(
        violations.is_empty(),
        "invariants broken:\n{}",
        violations.join("\n")
    );
}

/// Every invariant including the Redis side of coupons (call once quiet).
pub async fn assert_all_with_redis(db: &tokio_postgres::Client, redis: &mut redis::Connection) {
    assert_all(db).await;
    let violations = coupon_keys(db, redis).await.expect("coupon keys check");
    assert!(
        violations.is_empty(),
        "invariants broken:\n{}",
        violations.join("\n")
    );
}
