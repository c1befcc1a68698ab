//! The cron trigger, as the Spin cron plugin runs it: 6-field expressions
//! (seconds first, UTC, day-of-month AND day-of-week), a fresh instance per
//! event, events may overlap, a failure is logged and the schedule goes on.
//! Every host process runs its own schedule (as every Spin instance does),
//! which is why the recovery batch takes a Redis lock.

use crate::bindings::cron::fermyon::spin_cron::cron_types::Metadata;
use crate::manifest::App;
use crate::runtime::{cron_pre, LoadedComponent, Runtime};
use anyhow::{Context, Result};
use chrono::Utc;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use std::collections::HashMap;
use std::sync::Arc;

pub struct CronJob {
    component: Arc<LoadedComponent>,
    schedule: Cron,
    expression: String,
}

/// Parse an expression exactly as the plugin does.
pub fn parse_expression(expression: &str) -> Result<Cron> {
    CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Disallowed)
        .dom_and_dow(true)
        .build()
        .parse(expression)
        .map_err(|e| anyhow::anyhow!("invalid cron_expression {expression:?}: {e}"))
}

/// The app's cron jobs; `overrides` replaces a component's expression (tests
/// that cannot wait a minute).
pub fn jobs(app: &App, runtime: &Runtime, overrides: &HashMap<String, String>) -> Result<Vec<CronJob>> {
    app.manifest
        .trigger
        .cron
        .iter()
        .map(|trigger| {
            let component = runtime.components[&trigger.component].clone();
            cron_pre(&component)?;
            let expression = overrides
                .get(&trigger.component)
                .unwrap_or(&trigger.cron_expression);
            Ok(CronJob {
                component,
                schedule: parse_expression(expression)
                    .with_context(|| format!("cron trigger for {:?}", trigger.component))?,
                expression: expression.clone(),
            })
        })
        .collect()
}

impl CronJob {
    /// Fire on schedule forever (the caller aborts the task on shutdown).
    pub async fn run(self) {
        let id = self.component.context.id.clone();
        tracing::info!("cron: {id} scheduled as {:?}", self.expression);
        loop {
            let now = Utc::now();
            let Ok(next) = self.schedule.find_next_occurrence(&now, false) else {
                tracing::warn!("cron: {id} has no future occurrence");
                return;
            };
            let wait = (next - now).to_std().unwrap_or_default();
            tokio::time::sleep(wait).await;
            let component = self.component.clone();
            tokio::spawn(async move {
                if let Err(e) = fire(&component).await {
                    tracing::error!("Component {} failed: {e:?}", component.context.id);
                }
            });
        }
    }
}

/// One event on a fresh instance.
pub async fn fire(component: &LoadedComponent) -> Result<()> {
    let pre = cron_pre(component)?;
    let mut store = component.new_store();
    let instance = pre
        .instantiate_async(&mut store)
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    instance
        .call_handle_cron_event(&mut store, Metadata { timestamp })
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}").context("cron handler trapped"))?
        .map_err(|e| anyhow::anyhow!("{e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_fields_with_seconds_only() {
        assert!(parse_expression("0 * * * * *").is_ok());
        assert!(parse_expression("*/2 * * * * *").is_ok());
        assert!(parse_expression("* * * * *").is_err(), "seconds are required");
        assert!(parse_expression("0 * * * * * 2030").is_err(), "no year field");
        assert!(parse_expression("nonsense").is_err());
    }

    #[test]
    fn next_occurrence_is_on_the_second() {
        let cron = parse_expression("0 * * * * *").unwrap();
        let now = Utc::now();
        let next = cron.find_next_occurrence(&now, false).unwrap();
        assert!(next > now && (next - now).num_seconds() <= 60);
        assert_eq!(chrono::Timelike::second(&next), 0);
    }
}
