//! Order events (SPEC §9) leave the transactional outbox as Standard
//! Webhooks.
//!
//! The statements that change an order (`order-flow`: confirm, recovery's
//! roll-back, refunds) insert its event in the same statement, into
//! `order_events` (migration V8), with the body every attempt sends. This
//! crate delivers them:
//!
//! - [`store`]: a run *claims* due events — leasing each so no other runner
//!   sends it meanwhile, never an event while an earlier one of its order is
//!   still pending — and records each attempt's outcome on the schedule of
//!   [`schedule`];
//! - [`send`]: the attempts of a run, all at once, over Spin's outbound
//!   HTTP, signed by [`sign`];
//! - [`config`]: where to (`webhook_url`, `webhook_origin`,
//!   `webhook_secret`), or off, or misconfigured (nothing sent, every event kept).
//!
//! [`deliver`] is what the components call: right after answering the
//! request that made an event (its first attempt), after a recovery run,
//! every 5 s from the `webhooks` cron component, and on the admin route. A
//! paid order's first attempt skips the claim: the confirm that writes its
//! `order.paid` also leases it ([`Lease`]).

pub mod config;
pub mod schedule;
pub mod send;
pub mod sign;
pub mod store;

pub use config::Webhooks;
pub use store::Scope;

use edge::pg::Db;
use edge::Problem;
use serde::Serialize;
use std::time::{Duration, Instant};

/// Events attempted at once in one round.
const ROUND: i64 = 16;

/// What a delivery run did (the admin route's answer).
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub attempted: u64,
    pub delivered: u64,
    pub failed: u64,
}

/// Deliver the due events of `scope`, a round of attempts at a time, until
/// none is due or `budget` has passed (a round already started finishes:
/// at most the delivery timeout more). Nothing is sent unless webhooks are
/// on.
pub fn deliver(scope: Scope, budget: Duration) -> Result<Summary, Problem> {
    let Webhooks::On(target) = Webhooks::from_variables() else {
        return Ok(Summary::default());
    };
    let started = Instant::now();
    let db = Db::connect()?;
    let mut summary = Summary::default();
    while started.elapsed() < budget {
        let token = uuid::Uuid::new_v4().to_string();
        let claimed = store::claim(&db, scope, ROUND, &token)?;
        if claimed.is_empty() {
            break;
        }
        let messages: Vec<send::Message<'_>> = claimed
            .iter()
            .map(|event| send::Message {
                id: &event.id,
                body: event.body.as_bytes(),
            })
            .collect();
        let answers = send::post_all(&target, &messages);
        for (event, (answer, took)) in claimed.iter().zip(answers) {
            record_attempt(&db, event, &token, &answer, took)?;
            summary.attempted += 1;
            if answer.delivered() {
                summary.delivered += 1;
            } else {
                summary.failed += 1;
            }
        }
    }
    Ok(summary)
}

/// The first attempt of an event its own statement leased (`CONFIRM` takes
/// the lease of the `order.paid` it writes, so the attempt after the answer
/// needs no claim): the receiver and the lease's token.
pub struct Lease {
    target: config::Target,
    token: String,
}

impl Lease {
    /// A lease to take, when webhooks are on.
    pub fn when_on() -> Option<Lease> {
        match Webhooks::from_variables() {
            Webhooks::On(target) => Some(Lease {
                target,
                token: uuid::Uuid::new_v4().to_string(),
            }),
            _ => None,
        }
    }

    /// The statement's parameters: the token, and the lease's length in seconds.
    pub fn params(lease: Option<&Lease>) -> [spin_sdk::pg4::ParameterValue; 2] {
        use spin_sdk::pg4::ParameterValue;
        match lease {
            Some(lease) => [
                ParameterValue::Uuid(lease.token.clone()),
                ParameterValue::Int64(store::LEASE_SECONDS),
            ],
            None => [
                ParameterValue::DbNull,
                ParameterValue::Int64(store::LEASE_SECONDS),
            ],
        }
    }

    /// Attempt `event` (leased by its statement) once the answer is sent.
    pub fn deliver_after_response(self, event: store::Claimed) {
        edge::router::after_response(move || {
            if let Err(problem) = self.attempt(&event) {
                eprintln!("webhooks: the first attempt was not recorded: {}", problem.detail);
            }
        });
    }

    fn attempt(&self, event: &store::Claimed) -> Result<(), Problem> {
        let message = send::Message {
            id: &event.id,
            body: event.body.as_bytes(),
        };
        let (answer, took) = send::post_all(&self.target, &[message])
            .pop()
            .expect("one answer per message");
        record_attempt(&Db::connect()?, event, &self.token, &answer, took)
    }
}

/// Log an attempt and record how it went.
fn record_attempt(
    db: &Db,
    event: &store::Claimed,
    token: &str,
    answer: &send::Answer,
    took: Duration,
) -> Result<(), Problem> {
    let (status, error) = match answer {
        send::Answer::Status(status) => (Some(*status), None),
        send::Answer::Error(error) => (None, Some(error.as_str())),
    };
    log_attempt(event, status, error, took);
    store::record(db, event, token, answer.delivered(), status, error)
}

/// How long the first attempts after an answer may go on (a round already
/// started finishes).
const AFTER_RESPONSE_BUDGET: Duration = Duration::from_secs(15);

/// Deliver the due events of `scope` once the answer to this request is
/// sent (SPEC §9: the first attempt right after the answer, which never
/// waits for it). A failure here is retried by the next cron run.
pub fn deliver_after_response(scope: Scope) {
    deliver_after_response_within(scope, AFTER_RESPONSE_BUDGET);
}

/// [`deliver_after_response`], with rounds started only within `budget`
/// (a caller whose platform stops the request at a limit).
pub fn deliver_after_response_within(scope: Scope, budget: Duration) {
    edge::router::after_response(move || {
        if let Err(problem) = deliver(scope, budget) {
            eprintln!("webhooks: delivery after the answer stopped: {}", problem.detail);
        }
    });
}

/// One line per attempt (SPEC §9 "Logs"): never the secret, never the body.
fn log_attempt(event: &store::Claimed, status: Option<u16>, error: Option<&str>, took: Duration) {
    let mut line = serde_json::json!({
        "eventId": event.id,
        "type": event.event_type,
        "orderId": event.order_id,
        "attempt": event.attempt,
        "durationMs": (took.as_micros() as f64 / 10.0).round() / 100.0,
    });
    match (status, error) {
        (Some(status), _) => line["responseStatus"] = status.into(),
        (None, Some(error)) => line["error"] = error.into(),
        (None, None) => {}
    }
    edge::observe::event("webhook.attempt", line);
}
