//! SPEC §9 for the shop's operators: the order events as the outbox holds
//! them, a redeliver of any event, and the delivery batch on demand (for
//! platforms without cron triggers; the `webhooks` cron component runs the
//! same batch every 5 s).

use commerce::page::split_page;
use commerce::ErrorCode;
use edge::auth;
use edge::input::{page, query_param};
use edge::pg::Db;
use edge::respond::{self, Page};
use edge::router::{get, post, serve, Params};
use edge::{ApiResult, Problem, Request};
use outbox::store::{self, Filter};
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;
use std::time::Duration;

/// How long the admin delivery run may take new events.
const DELIVER_BUDGET: Duration = Duration::from_secs(20);

const EVENT_TYPES: [&str; 3] = ["order.paid", "order.cancelled", "order.refunded"];
const EVENT_STATUSES: [&str; 3] = ["PENDING", "DELIVERED", "FAILED"];

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve(
        req,
        out,
        "events",
        &[
            get("/api/v1/admin/events", list_events),
            post("/api/v1/admin/events/deliver", deliver),
            post("/api/v1/admin/events/{id}/redeliver", redeliver),
        ],
    )
    .await
}

/// `?name=` when it is one of `allowed`, else `400` naming it.
fn one_of(req: &Request, name: &str, allowed: &[&str]) -> Result<Option<String>, Problem> {
    match query_param(req, name)? {
        Some(value) if !allowed.contains(&value.as_str()) => Err(Problem::invalid(
            name,
            format!("must be one of {}", allowed.join(", ")),
        )),
        value => Ok(value),
    }
}

fn list_events(req: &Request, _: &Params) -> ApiResult {
    auth::authenticate_admin(req)?;
    let (limit, cursor) = page(req)?;
    let filter = Filter {
        order_id: query_param(req, "orderId")?
            .map(|id| commerce::ids::parse_positive_id(&id, "orderId"))
            .transpose()?,
        event_type: one_of(req, "type", &EVENT_TYPES)?,
        status: one_of(req, "status", &EVENT_STATUSES)?,
    };
    let db = Db::connect()?;
    let before = cursor.map_or(i64::MAX, |c| c.after_id);
    let events = store::list(&db, &filter, before, i64::from(limit.get()) + 1)?;
    let (items, next_cursor) = split_page(events, limit, |e| e.seq);
    Ok(respond::ok(&Page { items, next_cursor }))
}

/// `202` the event, due now: it is sent again, same id and body, right
/// after this answer (or by the next delivery run).
fn redeliver(req: &Request, params: &Params) -> ApiResult {
    auth::authenticate_admin(req)?;
    let id = uuid::Uuid::parse_str(params.get("id"))
        .map_err(|_| Problem::invalid("id", "must be an event id (a UUID)"))?;
    let db = Db::connect()?;
    let event = store::redeliver(&db, &id)?
        .ok_or_else(|| Problem::new(ErrorCode::EventNotFound, format!("no event {id}")))?;
    outbox::deliver_after_response(outbox::Scope::Order(event.order_id));
    Ok(respond::json(202, &event))
}

/// The delivery batch now: `{attempted, delivered, failed}`.
fn deliver(req: &Request, _: &Params) -> ApiResult {
    auth::authenticate_admin(req)?;
    Ok(respond::ok(&outbox::deliver(outbox::Scope::Due, DELIVER_BUDGET)?))
}
