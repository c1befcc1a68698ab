//! SPEC §4 and §6: placing and paying for orders (idempotent), and reading
//! them back; §8: the owner's cancel and an admin's partial refund. The steps
//! and the refund statement live in `order-flow`, shared with recovery.

use commerce::order::{self, price, OrderStatus, Priced, PricingError};
use commerce::page::split_page;
use commerce::refund::RefundRequest;
use commerce::{ErrorCode, Rejection};
use edge::auth::{self, Caller};
use edge::bodies::{CancelBody, OrderBody, RefundBody};
use edge::idempotency::{self, Claim};
use edge::input::{json_body, page, query_param};
use edge::pg::Db;
use edge::redis::Redis;
use edge::respond::{self, Page};
use edge::router::{get, post, serve, Params};
use edge::Request;
use edge::{ApiResult, Problem};
use order_flow::recovery;
use order_flow::refund::{self as refunds, Asker, Outcome, Refunded};
use order_flow::view::{self, Item, PaidOrder, Select};
use order_flow::{Created, Failpoints, NewOrder, StepError, Undo};
use serde::Serialize;
use sold_out_gate::{Admission, Gates};
use spin_sdk::http::{IncomingRequest, Response, ResponseOutparam};
use spin_sdk::http_component;

/// The idempotency scope of order placement.
const PLACE_ROUTE: &str = "orders.place";
/// The idempotency scopes of §8, each with the order id after it.
const CANCEL_ROUTE: &str = "orders.cancel";
const REFUND_ROUTE: &str = "admin.orders.refund";

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve(
        req,
        out,
        "order",
        &[
            post("/api/v1/orders", place_order),
            get("/api/v1/orders", list_orders),
            get("/api/v1/orders/{id}", get_order),
            post("/api/v1/orders/{id}/cancel", cancel_order),
            post("/api/v1/admin/orders/{id}/refunds", refund_order),
            get("/api/v1/admin/orders", admin_list_orders),
            post("/api/v1/admin/recovery/run", run_recovery),
        ],
    )
    .await
}

fn place_order(req: &Request, _: &Params) -> ApiResult {
    let caller = auth::authenticate(req)?;
    let key = idempotency::key_of(req)?;
    let request = json_body::<OrderBody>(req)?.into_order_request()?;
    let lines: Vec<(i64, i64)> = request.lines.iter().map(|l| (l.product_id, l.quantity)).collect();
    // The validated request (lines sorted by product), so line order does not matter.
    let canonical = (&lines, request.user_coupon_id);
    let fingerprint = idempotency::fingerprint(PLACE_ROUTE, &canonical);
    let claim =
        idempotency::Pending::new(&caller, PLACE_ROUTE, key, fingerprint).in_slot_of(sold_out_gate::HASH_TAG);
    // The sold-out gate (SPEC §4) and the key's claim, in one Redis round
    // trip before Postgres is touched: a product Postgres was just short of
    // is refused from Redis, with no order written, and the refusal is kept
    // as the key's answer.
    let mut refusals: Vec<Response> = lines
        .iter()
        .map(|(product_id, _)| sold_out(*product_id).into_response())
        .collect();
    let records: Vec<Vec<u8>> = refusals
        .iter()
        .map(|refusal| claim.final_record(refusal))
        .collect();
    let now_millis = chrono::Utc::now().timestamp_millis();
    let admitted = edge::redis::connect()
        .and_then(|redis| Gates::admit(&redis, &lines, now_millis, &claim, &records).map(|a| (redis, a)));
    let (owned, gates) = match admitted {
        Ok((_, Admission::Answered(existing))) => return claim.answer_existing(&existing),
        Ok((_, Admission::Refused(line))) => return Ok(refusals.swap_remove(line)),
        Ok((redis, Admission::Claimed(gates))) => (claim.claimed(redis), Some(gates)),
        Err(problem) => (claim.unclaimed(&problem.detail), None),
    };
    let failpoints = Failpoints::from_header(req.header_str("x-failpoint"));
    let placing = Placing {
        new: NewOrder {
            user_id: caller.user_id,
            key: owned.key.as_str(),
            fingerprint: &owned.fingerprint,
            request: &request,
        },
        failpoints: &failpoints,
        redis: owned.redis(),
        gates: gates.as_ref(),
    };
    match placing.read_and_place(now_millis) {
        Placed::Answer(outcome) => Ok(owned.finish(outcome)),
        Placed::Invalid(problem) => {
            owned.release();
            Err(problem)
        }
    }
}

/// `409 OUT_OF_STOCK` for `product_id`, the answer of the sold-out gate.
fn sold_out(product_id: i64) -> Problem {
    business(&order::out_of_stock(product_id), Some(product_id))
}

/// What placing a claimed order came to.
enum Placed {
    /// The key's answer, to keep for it (see [`idempotency::Owned::finish`]).
    Answer(ApiResult),
    /// The request proved invalid once prices were read: answered, never kept.
    Invalid(Problem),
}

/// One order being placed under its claimed key.
struct Placing<'a> {
    new: NewOrder<'a>,
    failpoints: &'a Failpoints,
    /// The claim's connection (`None` when Redis was unavailable).
    redis: Option<&'a Redis>,
    /// The sold-out gates as read before Postgres (`None` without Redis).
    gates: Option<&'a Gates>,
}

impl Placing<'_> {
    /// Read the prices and units left, then run the steps.
    fn read_and_place(&self, now_millis: i64) -> Placed {
        let db = match Db::connect() {
            Ok(db) => db,
            Err(problem) => return Placed::Answer(Err(problem)),
        };
        let new = &self.new;
        let catalogue = match order_flow::catalogue(&db, new.user_id, new.key, new.request) {
            Ok(catalogue) => catalogue,
            Err(problem) => return Placed::Answer(Err(problem)),
        };
        if let (Some(redis), Some(gates)) = (self.redis, self.gates) {
            if gates.records_unmarked() {
                gates.mark_records_complete(redis, catalogue.newest_order_ms, now_millis);
            }
            // Sent on to look again at products last seen short, this order
            // reopens those Postgres has the units of, for everyone.
            let back: Vec<i64> = gates
                .looking_again()
                .filter(|(product_id, quantity)| catalogue.has_units(*product_id, *quantity))
                .map(|(product_id, _)| product_id)
                .collect();
            sold_out_gate::reopen_logged(Some(redis), &back);
        }
        let priced = match price(new.request, &catalogue.prices) {
            Ok(priced) => Ok(priced),
            Err(PricingError::UnknownProduct(id)) => Err(id),
            Err(PricingError::Overflow(rejection)) => return Placed::Invalid(rejection.into()),
        };
        // Postgres has fewer units than this order needs: refused as at the
        // gate, without writing an order (the claim keeps the refusal; with
        // Redis out, the order goes on and its `FAILED` row keeps it), and
        // the gate closes behind it.
        if let (Ok(_), Some(product_id), Some(redis)) = (&priced, catalogue.short_of(new.request), self.redis)
        {
            self.failpoints.hang_if_armed("before-close");
            self.failpoints.crash_if_armed("before-close");
            if let Some(gates) = self.gates {
                gates.close(redis, product_id);
            }
            return Placed::Answer(Err(sold_out(product_id)));
        }
        Placed::Answer(self.place(&db, priced.as_ref().map_err(|id| *id)))
    }

    /// Run the steps; every outcome becomes the answer to store for this key.
    fn place(&self, db: &Db, priced: Result<&Priced, i64>) -> ApiResult {
        let new = &self.new;
        let order_id = match order_flow::create(db, new, priced)? {
            Created::Pending(id) => {
                edge::observe::set_order(id);
                id
            }
            Created::Failed(_, rejection, product_id) => return Err(business(&rejection, Some(product_id))),
            Created::Duplicate => return answer_from_postgres(db, new),
        };
        let priced = priced.expect("a pending order was priced");
        // With webhooks on, the confirm leases the order.paid it writes for the
        // first attempt, right after the answer.
        let lease = outbox::Lease::when_on();
        match order_flow::pay(
            db,
            order_id,
            new.user_id,
            new.request,
            priced,
            self.failpoints,
            lease.as_ref(),
        ) {
            Ok(paid) => {
                self.failpoints.crash_if_armed("after-confirm");
                let lines: Vec<(i64, i64)> =
                    priced.lines.iter().map(|l| (l.product_id, l.quantity)).collect();
                order_flow::popular::count_sale(paid.paid_at, &lines, self.redis);
                if let (Some(lease), Some(event)) = (lease, paid.event) {
                    lease.deliver_after_response(event);
                }
                let items: Vec<Item> = priced.lines.iter().map(Item::priced).collect();
                let body = PaidOrder::new(
                    order_id,
                    &items,
                    priced.total,
                    paid.discount,
                    paid.balance,
                    paid.paid_at,
                );
                Ok(created(order_id, &body))
            }
            Err(StepError::Business(rejection, product_id)) => {
                self.fail(db, order_id, &rejection, product_id)
            }
            Err(StepError::Infrastructure(problem)) => Ok(hold(db, order_id, &problem.detail)),
            Err(StepError::Superseded) => current_state(db, new.user_id, order_id),
        }
    }

    /// A business rule refused the order: undo it (`FAILED`), reopen the
    /// gates of the units it gave back, and close the gate of a product the
    /// reserve found short.
    fn fail(&self, db: &Db, order_id: i64, rejection: &Rejection, product_id: Option<i64>) -> ApiResult {
        match order_flow::undo(db, order_id, Undo::Fail(rejection, product_id)) {
            Ok(Some(released)) => {
                self.failpoints.crash_if_armed("after-undo");
                sold_out_gate::reopen_logged(self.redis, &released);
                if let (ErrorCode::OutOfStock, Some(short), Some(redis), Some(gates)) =
                    (rejection.code, product_id, self.redis, self.gates)
                {
                    gates.close(redis, short);
                }
                Err(business(rejection, product_id))
            }
            Ok(None) => current_state(db, self.new.user_id, order_id),
            Err(problem) => Ok(hold(db, order_id, &problem.detail)),
        }
    }
}

fn created(order_id: i64, body: &impl Serialize) -> Response {
    let mut response = respond::json(201, body);
    response.set_header("location", format!("/api/v1/orders/{order_id}"));
    response
}

/// A business failure as a problem (`OUT_OF_STOCK` names the product).
fn business(rejection: &Rejection, product_id: Option<i64>) -> Problem {
    let problem = Problem::from(rejection.clone());
    match (rejection.code, product_id) {
        (ErrorCode::OutOfStock | ErrorCode::ProductNotFound, Some(id)) => {
            problem.with_extension("productId", id)
        }
        _ => problem,
    }
}

/// 4-5: an infrastructure failure interrupted the steps. The order is put on
/// hold (or stays `PENDING` if even that fails); recovery resolves it.
fn hold(db: &Db, order_id: i64, cause: &str) -> Response {
    let status = match order_flow::hold(db, order_id) {
        Ok(_) => OrderStatus::OnHold,
        Err(e) => {
            eprintln!("order {order_id} could not be put on hold, it stays PENDING for recovery: {e:?}");
            OrderStatus::Pending
        }
    };
    edge::observe::event(
        "order.held",
        serde_json::json!({"orderId": order_id, "status": status.as_str(), "cause": cause}),
    );
    on_hold(order_id)
}

fn on_hold(order_id: i64) -> Response {
    accepted(order_id, OrderStatus::OnHold.as_str())
}

/// `202` pointing at an order that is not paid (yet).
fn accepted(order_id: i64, status: &'static str) -> Response {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Accepted {
        order_id: i64,
        status: &'static str,
    }
    let mut response = respond::json(202, &Accepted { order_id, status });
    response.set_header("location", format!("/api/v1/orders/{order_id}"));
    response
}

/// The key already made an order (Redis had lost the key, or its lease
/// expired): answer with that order, never a second one.
fn answer_from_postgres(db: &Db, new: &NewOrder<'_>) -> ApiResult {
    let order = view::load(
        db,
        Select::Key {
            user_id: new.user_id,
            key: new.key,
        },
    )?
    .into_iter()
    .next()
    .ok_or_else(|| Problem::unavailable("the order for this key is not readable yet"))?;
    if order.request_fingerprint != new.fingerprint {
        return Err(idempotency::reused());
    }
    // Another request with the key is still paying for it (or died doing so,
    // and recovery will end it): its answer is not known yet.
    if order.status == OrderStatus::Pending {
        return Err(idempotency::in_progress());
    }
    Ok(replayed(answer_for(&order)?))
}

/// What placing `order` answered (or would answer now).
fn answer_for(order: &view::Order) -> ApiResult {
    if let Some(paid) = order.paid_view() {
        return Ok(created(order.id, &paid));
    }
    match (order.status.is_final(), &order.failure_code) {
        (true, Some(code)) => {
            let code =
                ErrorCode::parse(code).ok_or_else(|| Problem::unavailable("unknown stored failure"))?;
            let rejection = Rejection::new(code, order.failure_detail.clone().unwrap_or_default());
            Err(business(&rejection, order.failure_product_id).of_request(order.request_id.clone()))
        }
        // Still being resolved, or cancelled by recovery: point at the order.
        _ => Ok(accepted(order.id, order.status.as_str())),
    }
}

fn current_state(db: &Db, user_id: i64, order_id: i64) -> ApiResult {
    let order = view::load(db, Select::Id { user_id, order_id })?
        .into_iter()
        .next()
        .ok_or_else(|| Problem::unavailable("the order is not readable"))?;
    answer_for(&order)
}

fn get_order(req: &Request, params: &Params) -> ApiResult {
    let caller: Caller = auth::authenticate(req)?;
    let order_id = commerce::ids::parse_positive_id(params.get("id"), "id")?;
    edge::observe::set_order(order_id);
    let db = Db::connect()?;
    Ok(respond::ok(&full_detail(&db, caller.user_id, order_id, None)?))
}

/// `GET /orders/{id}`'s body, with its refunds; `balance` replaces the
/// payment's balance (a cancel answers with the wallet after the refund).
fn full_detail(
    db: &Db,
    user_id: i64,
    order_id: i64,
    balance: Option<i64>,
) -> Result<serde_json::Value, Problem> {
    let Some(order) = view::load(db, Select::Id { user_id, order_id })?
        .into_iter()
        .next()
    else {
        // Another user's order is as good as absent.
        return Err(Problem::new(
            ErrorCode::OrderNotFound,
            format!("you have no order {order_id}"),
        ));
    };
    let mut detail = order.detail();
    detail.refunds = Some(refunds::refunds_of(db, order_id)?);
    if balance.is_some() {
        detail.balance = balance;
    }
    Ok(serde_json::to_value(&detail).expect("order views serialise"))
}

/// SPEC §8: the owner cancels a paid order — a full refund, within
/// `cancel_window_minutes` of payment.
fn cancel_order(req: &Request, params: &Params) -> ApiResult {
    let caller = auth::authenticate(req)?;
    let order_id = commerce::ids::parse_positive_id(params.get("id"), "id")?;
    edge::observe::set_order(order_id);
    let key = idempotency::key_of(req)?;
    // No body and `{}` are the same request.
    if !req.body().is_empty() {
        json_body::<CancelBody>(req)?;
    }
    let asker = Asker::Owner {
        user_id: caller.user_id,
        window_minutes: cancel_window_minutes()?,
    };
    let route = format!("{CANCEL_ROUTE}:{order_id}");
    let fingerprint = idempotency::fingerprint(&route, &());
    let db = Db::connect()?;
    match idempotency::claim(&caller, &route, key, fingerprint)? {
        Claim::Answered(response) => Ok(response),
        Claim::Owned(owned) => {
            let outcome = refund_for(
                &db,
                &owned,
                asker,
                order_id,
                |order| RefundRequest::everything(&refunds::paid_lines(order)),
                |refunded| {
                    let detail = full_detail(&db, caller.user_id, order_id, Some(refunded.balance))?;
                    Ok(respond::ok(&detail))
                },
            );
            Ok(owned.finish(outcome))
        }
    }
}

/// SPEC §8: an admin refunds units of a paid order, of any age.
fn refund_order(req: &Request, params: &Params) -> ApiResult {
    let admin = auth::authenticate_admin(req)?;
    let order_id = commerce::ids::parse_positive_id(params.get("id"), "id")?;
    edge::observe::set_order(order_id);
    let key = idempotency::key_of(req)?;
    let request = json_body::<RefundBody>(req)?.into_refund_request()?;
    let asker = Asker::Admin {
        user_id: admin.user_id,
    };
    let route = format!("{REFUND_ROUTE}:{order_id}");
    let canonical: (Vec<(i64, i64)>, &Option<String>) = (
        request.lines.iter().map(|l| (l.product_id, l.quantity)).collect(),
        &request.reason,
    );
    let fingerprint = idempotency::fingerprint(&route, &canonical);
    let db = Db::connect()?;
    match idempotency::claim(&admin, &route, key, fingerprint)? {
        Claim::Answered(response) => Ok(response),
        Claim::Owned(owned) => {
            let outcome = refund_for(
                &db,
                &owned,
                asker,
                order_id,
                |_| request.clone(),
                |refunded| Ok(refund_created(order_id, refunded)),
            );
            Ok(owned.finish(outcome))
        }
    }
}

/// Refund `order_id` for `asker` under the claimed key: the request made from
/// the order as read (`request_of`), its effects done by the one refund
/// statement, then answered with `answer` (as a replay when the key had
/// already made this refund).
fn refund_for(
    db: &Db,
    owned: &idempotency::Owned,
    asker: Asker,
    order_id: i64,
    request_of: impl FnOnce(&view::Order) -> RefundRequest,
    answer: impl Fn(&Refunded) -> ApiResult,
) -> ApiResult {
    let order = refunds::order_to_refund(db, asker, order_id)?;
    let request = request_of(&order);
    match refunds::refund(
        db,
        asker,
        &order,
        &request,
        owned.key.as_str(),
        &owned.fingerprint,
    )? {
        Outcome::Refunded(refunded) => {
            refund_done(order_id, &refunded, owned.redis());
            answer(&refunded)
        }
        Outcome::Duplicate(refunded) => answer(&refunded).map(replayed),
        Outcome::Refused(problem) => Err(problem),
    }
}

/// The `201` of a partial refund.
fn refund_created(order_id: i64, refunded: &Refunded) -> Response {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Created<'a> {
        refund_id: &'a str,
        order_id: i64,
        amount: i64,
        items: &'a [refunds::RefundedItem],
        order_status: &'static str,
        balance: i64,
        created_at: &'a str,
    }
    respond::json(
        201,
        &Created {
            refund_id: &refunded.refund.refund_id,
            order_id,
            amount: refunded.refund.amount,
            items: &refunded.refund.items,
            order_status: refunded.order_status.as_str(),
            balance: refunded.balance,
            created_at: &refunded.refund.created_at,
        },
    )
}

/// An answer rebuilt from the Postgres backstop, marked as a replay (always
/// JSON: problems are answered as they are).
fn replayed(response: Response) -> Response {
    let status = *response.status();
    idempotency::replay(status, "application/json", response.into_body())
}

/// After a refund: its business event, and its units off popular products.
fn refund_done(order_id: i64, refunded: &Refunded, redis: Option<&Redis>) {
    edge::observe::event(
        "refund",
        serde_json::json!({
            "orderId": order_id,
            "refundId": refunded.refund.refund_id,
            "amount": refunded.refund.amount,
            "orderStatus": refunded.order_status.as_str(),
        }),
    );
    take_off_popular(refunded, redis);
    // The refunded units are back in stock: orderable again at once.
    let products: Vec<i64> = refunded.refund.items.iter().map(|item| item.product_id).collect();
    sold_out_gate::reopen_logged(redis, &products);
    outbox::deliver_after_response(outbox::Scope::Order(order_id));
}

/// Refunded units no longer count for popular products, on the day the order
/// was paid (best effort, as counting the sale was).
fn take_off_popular(refunded: &Refunded, redis: Option<&Redis>) {
    let Some(paid_at) = refunded.paid_at else { return };
    let lines: Vec<(i64, i64)> = refunded
        .refund
        .items
        .iter()
        .map(|item| (item.product_id, -item.quantity))
        .collect();
    order_flow::popular::count_sale(paid_at, &lines, redis);
}

/// How long after payment the owner may cancel; 0 turns cancelling off.
fn cancel_window_minutes() -> Result<i64, Problem> {
    edge::config::variable("cancel_window_minutes")?
        .parse::<i64>()
        .ok()
        .filter(|minutes| *minutes >= 0)
        .ok_or_else(|| Problem::unavailable("the variable cancel_window_minutes is not a number of minutes"))
}

/// SPEC §9: every user's orders, newest first, for the shop's back office.
fn admin_list_orders(req: &Request, _: &Params) -> ApiResult {
    auth::authenticate_admin(req)?;
    let (limit, cursor) = page(req)?;
    let status = query_param(req, "status")?
        .map(|s| OrderStatus::parse(&s).ok_or_else(|| Problem::invalid("status", "is not an order status")))
        .transpose()?;
    let user_id = query_param(req, "userId")?
        .map(|id| commerce::ids::parse_positive_id(&id, "userId"))
        .transpose()?;
    let db = Db::connect()?;
    let orders = view::load(
        &db,
        Select::Admin {
            status,
            user_id,
            before: cursor.map_or(i64::MAX, |c| c.after_id),
            limit: i64::from(limit.get()) + 1,
        },
    )?;
    let (orders, next_cursor) = split_page(orders, limit, |o| o.id);
    let ids: Vec<i64> = orders.iter().map(|o| o.id).collect();
    let refunds = refunds::refunds_of_orders(&db, &ids)?;
    let items = orders
        .iter()
        .map(|o| o.admin_view(refunds.get(&o.id).map_or(&[], Vec::as_slice)))
        .collect();
    Ok(respond::ok(&Page { items, next_cursor }))
}

fn list_orders(req: &Request, _: &Params) -> ApiResult {
    let caller = auth::authenticate(req)?;
    let (limit, cursor) = page(req)?;
    let before = cursor.map_or(i64::MAX, |c| c.after_id);
    let db = Db::connect()?;
    let orders = view::load(
        &db,
        Select::Page {
            user_id: caller.user_id,
            before,
            limit: i64::from(limit.get()) + 1,
        },
    )?;
    let (orders, next_cursor) = split_page(orders, limit, |o| o.id);
    let items = orders.iter().map(view::Order::detail).collect();
    Ok(respond::ok(&Page { items, next_cursor }))
}

/// SPEC §5: run the recovery batch now (for platforms without cron triggers).
fn run_recovery(req: &Request, _: &Params) -> ApiResult {
    auth::authenticate_admin(req)?;
    let failpoints = Failpoints::from_header(req.header_str("x-failpoint"));
    let summary = recovery::run(failpoints.recovery_lock(), recovery::pending_timeout()?)?;
    // The events the run made (and any other due), after the answer.
    outbox::deliver_after_response(outbox::Scope::Due);
    Ok(respond::ok(&summary))
}
