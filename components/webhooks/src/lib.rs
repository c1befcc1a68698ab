//! SPEC §9 on a schedule: the Spin cron trigger calls `handle-cron-event`
//! (world `fermyon:spin-cron@2.0.0`, under `wit/`) every 5 s in every
//! instance, and the due webhook attempts go out (`outbox::deliver`; leases
//! keep any event from being sent by two runs at once).

wit_bindgen::generate!({
    path: "../../wit",
    world: "fermyon:spin-cron/spin-cron",
});

use std::time::Duration;

/// A run stops taking new events after this; the next run, 5 s later, goes on.
const BUDGET: Duration = Duration::from_secs(20);

struct Webhooks;

impl Guest for Webhooks {
    fn handle_cron_event(_: Metadata) -> Result<(), Error> {
        outbox::deliver(outbox::Scope::Due, BUDGET)
            .map(drop)
            .map_err(|problem| Error::Other(problem.detail))
    }
}

export!(Webhooks);
