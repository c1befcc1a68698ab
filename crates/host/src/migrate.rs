//! Schema migrations (refinery, files in `migrations/` named `V<n>__<name>.sql`)
//! and the optional demo data of the local run.

use anyhow::{Context, Result};
use std::path::Path;

/// Apply every pending migration in `dir` to the database at `url`.
pub async fn migrate(url: &str, dir: &Path, demo_data: Option<&Path>) -> Result<()> {
    let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("cannot connect to {}", redact(url)))?;
    let driver = tokio::spawn(connection);
    let migrations = refinery::load_sql_migrations(dir)
        .with_context(|| format!("cannot read migrations from {}", dir.display()))?;
    let report = refinery::Runner::new(&migrations)
        .set_abort_divergent(true)
        .run_async(&mut client)
        .await
        .context("migration failed")?;
    for applied in report.applied_migrations() {
        tracing::info!("applied migration {applied}");
    }
    if let Some(demo) = demo_data {
        let sql = std::fs::read_to_string(demo).with_context(|| format!("cannot read {}", demo.display()))?;
        client.batch_execute(&sql).await.context("demo data failed")?;
    }
    drop(client);
    let _ = driver.await;
    Ok(())
}

/// A connection URL without its password, for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}
