//! Schema migrations (refinery, files in `migrations/` named `V<n>__<name>.sql`)
//! and the optional demo data of the local run.

use anyhow::{Context, Result};
use std::path::Path;

/// Apply every pending migration in `dir` to the database at `url`.
pub async fn migrate(url: &str, dir: &Path, demo_data: Option<&Path>) -> Result<()> {
    let (mut client, driver) = connect(url)
        .await
        .with_context(|| format!("cannot connect to {}", redact(url)))?;
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

/// Connect as the components do (see [`crate::pg`]): in clear only with
/// `sslmode=disable`, otherwise TLS with the certificate verified, so the
/// app's own `pg_url` migrates the database the app will use.
pub(crate) async fn connect(
    url: &str,
) -> Result<(
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
)> {
    let config: tokio_postgres::Config = url.parse()?;
    if config.get_ssl_mode() == tokio_postgres::config::SslMode::Disable {
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        return Ok((client, tokio::spawn(connection)));
    }
    let tls = postgres_native_tls::MakeTlsConnector::new(native_tls::TlsConnector::new()?);
    let (client, connection) = config.connect(tls).await?;
    Ok((client, tokio::spawn(connection)))
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
