//! SPEC "Operations", scheduled jobs over HTTP: the recovery batch (§5) and
//! the webhook batch (§9) for platforms that run no cron trigger and whose
//! scheduler sends a plain `GET` (Akamai Functions' `spin aka cron`). The
//! scheduler cannot carry an admin token, so the routes take the jobs key
//! in the query string (`edge::jobs`); the batches themselves are the ones
//! the cron components and the admin routes run.
//!
//! Each run ends within 25 s, inside the 30 s such a platform gives a
//! request: recovery stops taking up orders after its time budget, delivery
//! stops starting rounds after [`DELIVER_BUDGET`]; what is left waits for
//! the next run. The events a recovery run makes get their first attempt
//! right after its answer (SPEC §9), in what is left of those 25 s.

use edge::respond;
use edge::router::{get, serve, Params};
use edge::{ApiResult, Request};
use order_flow::recovery::{self, Lock};
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;
use std::time::{Duration, Instant};

/// How long one run of a job may take (the platform stops a request at 30 s).
const JOB_LIMIT: Duration = Duration::from_secs(25);
/// Rounds of webhook attempts start within this; the last one ends within
/// the delivery timeout after it, with 3 s left to record its outcomes.
const DELIVER_BUDGET: Duration = JOB_LIMIT
    .saturating_sub(outbox::send::TIMEOUT)
    .saturating_sub(Duration::from_secs(3));

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve(
        req,
        out,
        "jobs",
        &[
            get("/api/v1/jobs/recovery", run_recovery),
            get("/api/v1/jobs/deliver", deliver),
        ],
    )
    .await
}

/// The recovery batch: the summary of `POST /admin/recovery/run`, or `409
/// RECOVERY_IN_PROGRESS` while another run holds the lock.
fn run_recovery(req: &Request, _: &Params) -> ApiResult {
    let started = Instant::now();
    edge::jobs::authorize(req)?;
    let summary = recovery::run(Lock::Take, recovery::pending_timeout()?)?;
    // The first attempts of the events the run made, after the answer, with
    // rounds started only while the last can end within the job's limit.
    let left = DELIVER_BUDGET.saturating_sub(started.elapsed());
    if !left.is_zero() {
        outbox::deliver_after_response_within(outbox::Scope::Due, left);
    }
    Ok(respond::ok(&summary))
}

/// The due webhook attempts: `{attempted, delivered, failed}`, as
/// `POST /admin/events/deliver`.
fn deliver(req: &Request, _: &Params) -> ApiResult {
    edge::jobs::authorize(req)?;
    Ok(respond::ok(&outbox::deliver(outbox::Scope::Due, DELIVER_BUDGET)?))
}
