//! `check-invariants <postgres-url> [<redis-url>]`: the SPEC invariants over a
//! live database (and its Redis), for benchmarks and operators. Exits 1 and
//! lists the violations if any invariant is broken.

use edge_tests::invariants;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let pg_url = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: check-invariants <postgres-url> [<redis-url>]"))?;
    let db = edge_tests::connect(&pg_url).await?;
    let mut violations = invariants::money(&db).await?;
    violations.extend(invariants::stock(&db).await?);
    violations.extend(invariants::coupons(&db).await?);
    violations.extend(invariants::orders(&db).await?);
    violations.extend(invariants::events(&db).await?);
    if let Some(redis_url) = args.next() {
        let mut redis = redis::Client::open(redis_url)?.get_connection()?;
        violations.extend(invariants::coupon_keys(&db, &mut redis).await?);
    }
    if violations.is_empty() {
        println!("invariants hold");
        Ok(())
    } else {
        for violation in &violations {
            println!("VIOLATION {violation}");
        }
        std::process::exit(1)
    }
}
