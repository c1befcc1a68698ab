//! SPEC §5 on a schedule: the Spin cron trigger calls `handle-cron-event`
//! (world `fermyon:spin-cron@2.0.0`, under `wit/`) every minute in every
//! instance; the batch itself, lock included, is `order_flow::recovery`,
//! shared with the admin route. The events a run makes are then delivered
//! (`outbox`).

wit_bindgen::generate!({
    path: "../../wit",
    world: "fermyon:spin-cron/spin-cron",
});

use order_flow::recovery::{self, Lock, RunError};
use std::time::Duration;

/// How long the webhook attempts after a run may go on.
const DELIVERY_BUDGET: Duration = Duration::from_secs(20);

struct Recovery;

impl Guest for Recovery {
    fn handle_cron_event(metadata: Metadata) -> Result<(), Error> {
        let pending_timeout = recovery::pending_timeout().map_err(|problem| Error::Other(problem.detail))?;
        match recovery::run(Lock::Take, pending_timeout) {
            Ok(summary) => {
                if summary.examined > 0 {
                    eprintln!("recovery at {}: {summary:?}", metadata.timestamp);
                    // The first attempt of the events the run made (SPEC §9).
                    if let Err(problem) = outbox::deliver(outbox::Scope::Due, DELIVERY_BUDGET) {
                        eprintln!("recovery: webhook delivery stopped: {}", problem.detail);
                    }
                }
                Ok(())
            }
            // Another instance is running the batch this minute.
            Err(RunError::Locked) => Ok(()),
            Err(RunError::Failed(problem)) => Err(Error::Other(problem.detail)),
        }
    }
}

export!(Recovery);
