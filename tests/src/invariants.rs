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

/// Invariant 2 (stock), the part that holds at any time: `0 ≤ reserved ≤ stock`.
pub async fn stock(db: &tokio_postgres::Client) -> Result<Vec<String>> {
    let rows = db
        .query(
            "SELECT id, stock, reserved FROM products WHERE reserved < 0 OR reserved > stock OR stock < 0",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            format!(
                "product {}: stock {} reserved {}",
                r.get::<_, i64>("id"),
                r.get::<_, i64>("stock"),
                r.get::<_, i64>("reserved")
            )
        })
        .collect())
}

/// Every invariant; panics listing the violations.
pub async fn assert_all(db: &tokio_postgres::Client) {
    let mut violations = money(db).await.expect("money invariant query");
    violations.extend(stock(db).await.expect("stock invariant query"));
    assert!(
        violations.is_empty(),
        "invariants broken:\n{}",
        violations.join("\n")
    );
}
