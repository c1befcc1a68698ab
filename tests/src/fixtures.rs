//! Data straight into the tables (and counted straight from them), for
//! tests whose subject is something else.

use crate::TestApp;

/// A product with `stock` units (its initial stock too).
pub async fn product(app: &TestApp, price: i64, stock: i64) -> i64 {
    let db = app.pg().await.unwrap();
    db.query_one(
        "INSERT INTO products (name, price, stock, initial_stock) VALUES ('p', $1, $2, $2) RETURNING id",
        &[&price, &stock],
    )
    .await
    .unwrap()
    .get(0)
}

/// Fund a wallet as a charge would, ledger row included (the money invariant holds).
pub async fn fund(app: &TestApp, user: i64, amount: i64) {
    let db = app.pg().await.unwrap();
    db.execute(
        "WITH w AS (INSERT INTO wallets (user_id, balance) VALUES ($1, $2)
                    ON CONFLICT (user_id) DO UPDATE SET balance = wallets.balance + $2 RETURNING balance)
         INSERT INTO wallet_ledger (user_id, kind, amount, balance_after, charge_key)
         SELECT $1, 'CHARGE', $2, balance, gen_random_uuid()::text FROM w",
        &[&user, &amount],
    )
    .await
    .unwrap();
}

/// How many users Postgres says hold `coupon`.
pub async fn coupon_holders(app: &TestApp, coupon: i64) -> i64 {
    let db = app.pg().await.unwrap();
    db.query_one(
        "SELECT count(*) FROM user_coupons WHERE coupon_id = $1",
        &[&coupon],
    )
    .await
    .unwrap()
    .get(0)
}
