//! SPEC §3, first-come-first-served coupons: admin create, public detail,
//! issue (decided in Redis, recorded in Postgres), and the user's coupons.

use chrono::{DateTime, Duration, Utc};
use commerce::coupon::{user_coupon_status, window};
use commerce::page::split_page;
use commerce::ErrorCode;
use coupon_allocation::{Allocation, Decision, Snapshot};
use edge::auth;
use edge::bodies::CreateCouponBody;
use edge::input::{json_body, page};
use edge::pg::{column, instant, rfc3339, utc, utc_opt, utc_param, Db, Query};
use edge::redis::DATABASE_ID_COLUMN;
use edge::respond::{self, Page};
use edge::router::{get, post, serve, Params};
use edge::Request;
use edge::{ApiResult, Problem};
use serde::Serialize;
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;
use spin_sdk::pg4::{ParameterValue, Row};

/// Redis keys outlive the issue window by this much, then go.
const KEYS_OUTLIVE_WINDOW: Duration = Duration::days(1);

/// The coupon columns every answer needs, times read as UTC (Spin cannot read `timestamptz`).
const COUPON_COLUMNS: &str = "c.id, c.name, c.discount_type, c.discount_value, c.max_discount,
    c.min_order_amount, c.total_quantity, c.issued_count,
    c.issue_starts_at AT TIME ZONE 'UTC' AS issue_starts_at,
    c.issue_ends_at AT TIME ZONE 'UTC' AS issue_ends_at,
    c.expires_at AT TIME ZONE 'UTC' AS expires_at";

const INSERT_COUPON: &str = "
INSERT INTO coupons AS c (name, discount_type, discount_value, max_discount, min_order_amount,
                          total_quantity, issue_starts_at, issue_ends_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7::timestamp AT TIME ZONE 'UTC', $8::timestamp AT TIME ZONE 'UTC',
        $9::timestamp AT TIME ZONE 'UTC')
RETURNING ";

/// A coupon, with the database's clock (one clock for every instance).
const GET_COUPON: &str = "SELECT now() AT TIME ZONE 'UTC' AS now, ";

/// Invariant 3, durably: the issue is counted on the coupon row only while
/// below the quantity, and recorded once per (coupon, user) — both or
/// neither; a user Postgres already holds a copy for (`held`: Redis had lost
/// it) changes nothing. Answers with `held`, and with the coupon (as `c`,
/// for `COUPON_COLUMNS`) and the new copy when one was issued.
const PERSIST_ISSUE_COUNTED: &str = "held AS (
        SELECT 1 FROM user_coupons WHERE coupon_id = $1 AND user_id = $2
    ), counted AS (
        UPDATE coupons SET issued_count = issued_count + 1
        WHERE id = $1 AND issued_count < total_quantity AND NOT EXISTS (SELECT 1 FROM held)
        RETURNING *
    ), issued AS (
        INSERT INTO user_coupons (coupon_id, user_id) SELECT id, $2 FROM counted
        RETURNING id, issued_at
    )";
const PERSIST_ISSUE_ANSWER: &str = "SELECT EXISTS (SELECT 1 FROM held) AS held,
    now() AT TIME ZONE 'UTC' AS now, issued.id AS user_coupon_id,
    issued.issued_at AT TIME ZONE 'UTC' AS issued_at, ";
const PERSIST_ISSUE_FROM: &str = "FROM (VALUES (1)) AS one LEFT JOIN (issued CROSS JOIN counted c) ON true";

/// Whether the user holds a copy, read after the issue statement failed:
/// a request of the same user that committed first makes it fail on the
/// unique (coupon, user), and then the answer is that they have it.
const HOLDS_COPY: Query =
    Query::new("SELECT 1 AS held FROM user_coupons WHERE coupon_id = $1 AND user_id = $2");

/// One consistent snapshot to rebuild the Redis keys from, with the database's
/// clock (and, after it, `DATABASE_ID_COLUMN`: keys are built only for their own database).
const ALLOCATION_SNAPSHOT: &str =
    "SELECT now() AT TIME ZONE 'UTC' AS now, c.total_quantity - c.issued_count AS remaining,
            c.issue_starts_at AT TIME ZONE 'UTC' AS issue_starts_at,
            c.issue_ends_at AT TIME ZONE 'UTC' AS issue_ends_at,
            coalesce(array_agg(uc.user_id) FILTER (WHERE uc.user_id IS NOT NULL), '{}') AS users";
const ALLOCATION_SNAPSHOT_FROM: &str = "FROM coupons c LEFT JOIN user_coupons uc ON uc.coupon_id = c.id
    WHERE c.id = $1
    GROUP BY c.id";

const LIST_USER_COUPONS: &str = "
SELECT now() AT TIME ZONE 'UTC' AS now, uc.id AS user_coupon_id, uc.status, uc.order_id,
       uc.issued_at AT TIME ZONE 'UTC' AS issued_at, uc.used_at AT TIME ZONE 'UTC' AS used_at, ";

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve(
        req,
        out,
        "coupon",
        &[
            post("/api/v1/admin/coupons", create_coupon),
            get("/api/v1/coupons/{id}", get_coupon),
            post("/api/v1/coupons/{id}/issue", issue_coupon),
            get("/api/v1/me/coupons", my_coupons),
        ],
    )
    .await
}

/// A coupon as stored.
struct CouponRecord {
    id: i64,
    name: String,
    discount_type: String,
    discount_value: i64,
    max_discount: Option<i64>,
    min_order_amount: i64,
    total_quantity: i64,
    issued_count: i64,
    issue_starts_at: DateTime<Utc>,
    issue_ends_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

impl CouponRecord {
    /// Read the columns of `COUPON_COLUMNS`.
    fn from_row(row: &Row<'_>) -> Result<CouponRecord, Problem> {
        Ok(CouponRecord {
            id: column(row, "id")?,
            name: column(row, "name")?,
            discount_type: column(row, "discount_type")?,
            discount_value: column(row, "discount_value")?,
            max_discount: column(row, "max_discount")?,
            min_order_amount: column(row, "min_order_amount")?,
            total_quantity: column(row, "total_quantity")?,
            issued_count: column(row, "issued_count")?,
            issue_starts_at: instant(row, "issue_starts_at")?,
            issue_ends_at: instant(row, "issue_ends_at")?,
            expires_at: instant(row, "expires_at")?,
        })
    }

    fn view(&self) -> Coupon {
        Coupon {
            id: self.id,
            name: self.name.clone(),
            discount_type: self.discount_type.clone(),
            discount_value: self.discount_value,
            max_discount: self.max_discount,
            min_order_amount: self.min_order_amount,
            total_quantity: self.total_quantity,
            remaining: self.total_quantity - self.issued_count,
            issue_starts_at: rfc3339(self.issue_starts_at),
            issue_ends_at: rfc3339(self.issue_ends_at),
            expires_at: rfc3339(self.expires_at),
        }
    }

    /// The answer for a user's copy of this coupon.
    fn user_view(&self, user_coupon: UserCouponState) -> UserCoupon {
        UserCoupon {
            user_coupon_id: user_coupon.id,
            coupon_id: self.id,
            name: self.name.clone(),
            discount_type: self.discount_type.clone(),
            discount_value: self.discount_value,
            max_discount: self.max_discount,
            min_order_amount: self.min_order_amount,
            status: user_coupon_status(user_coupon.used, self.expires_at, user_coupon.now),
            issued_at: user_coupon.issued_at,
            expires_at: rfc3339(self.expires_at),
            used_at: user_coupon.used_at,
            order_id: user_coupon.order_id,
        }
    }
}

/// A user's copy of a coupon, as stored, and the time it is looked at.
struct UserCouponState {
    id: i64,
    used: bool,
    issued_at: String,
    used_at: Option<String>,
    order_id: Option<i64>,
    now: DateTime<Utc>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Coupon {
    id: i64,
    name: String,
    discount_type: String,
    discount_value: i64,
    max_discount: Option<i64>,
    min_order_amount: i64,
    total_quantity: i64,
    remaining: i64,
    issue_starts_at: String,
    issue_ends_at: String,
    expires_at: String,
}

fn not_found(id: i64) -> Problem {
    Problem::new(ErrorCode::CouponNotFound, format!("no coupon with id {id}"))
}

fn create_coupon(req: &Request, _: &Params) -> ApiResult {
    auth::authenticate_admin(req)?;
    let coupon = json_body::<CreateCouponBody>(req)?.new_coupon()?;
    let db = Db::connect()?;
    let rows = db.query(
        &Query::new(&format!("{INSERT_COUPON}{COUPON_COLUMNS}, {DATABASE_ID_COLUMN}")),
        &[
            ParameterValue::Str(coupon.name.clone()),
            ParameterValue::Str(coupon.discount.kind.as_str().to_owned()),
            ParameterValue::Int64(coupon.discount.value),
            coupon
                .discount
                .max_discount
                .map_or(ParameterValue::DbNull, ParameterValue::Int64),
            ParameterValue::Int64(coupon.discount.min_order_amount),
            ParameterValue::Int64(coupon.total_quantity),
            utc_param(coupon.issue_starts_at),
            utc_param(coupon.issue_ends_at),
            utc_param(coupon.expires_at),
        ],
    )?;
    let (created, database_id) = rows
        .first(|row| {
            Ok((
                CouponRecord::from_row(row)?,
                column::<String>(row, "database_id")?,
            ))
        })?
        .ok_or_else(|| Problem::unavailable("the insert returned no row"))?;
    // Prime the stock in Redis. If this fails the first issue rebuilds it, so
    // the coupon is created either way. A window that has already closed
    // needs no stock (and a pre-1970 one has no valid Redis expiry).
    if coupon.issue_ends_at > Utc::now() {
        let snapshot = Snapshot {
            remaining: created.total_quantity,
            issue_starts_at: coupon.issue_starts_at,
            issue_ends_at: coupon.issue_ends_at,
            users: vec![],
        };
        let primed = Allocation::open(created.id).and_then(|allocation| {
            allocation.verify_database(&database_id)?;
            allocation.rebuild(&snapshot, keys_expiry(coupon.issue_ends_at))
        });
        if let Err(problem) = primed {
            eprintln!(
                "coupon {} created but not primed in Redis: {}",
                created.id, problem.detail
            );
        }
    }
    let mut response = respond::json(201, &created.view());
    response.set_header("location", format!("/api/v1/coupons/{}", created.id));
    Ok(response)
}

fn keys_expiry(issue_ends_at: DateTime<Utc>) -> i64 {
    (issue_ends_at + KEYS_OUTLIVE_WINDOW).timestamp_millis()
}

fn get_coupon(_: &Request, params: &Params) -> ApiResult {
    let id = commerce::ids::parse_positive_id(params.get("id"), "id")?;
    let db = Db::connect()?;
    let rows = db.query(
        &Query::new(&format!(
            "{GET_COUPON}{COUPON_COLUMNS} FROM coupons c WHERE c.id = $1"
        )),
        &[ParameterValue::Int64(id)],
    )?;
    match rows.first(CouponRecord::from_row)? {
        Some(coupon) => Ok(respond::ok(&coupon.view())),
        None => Err(not_found(id)),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserCoupon {
    user_coupon_id: i64,
    coupon_id: i64,
    name: String,
    discount_type: String,
    discount_value: i64,
    max_discount: Option<i64>,
    min_order_amount: i64,
    status: &'static str,
    issued_at: String,
    expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    used_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<i64>,
}

fn issue_coupon(req: &Request, params: &Params) -> ApiResult {
    let caller = auth::authenticate(req)?;
    let id = commerce::ids::parse_positive_id(params.get("id"), "id")?;

    // Redis decides; Postgres is opened only to rebuild missing keys or to
    // record an issue Redis granted.
    let allocation = Allocation::open(id)?;
    let mut decision = allocation.decide(caller.user_id)?;
    let mut db = None;
    if decision == Decision::Missing {
        let connected = Db::connect()?;
        rebuild(&connected, &allocation, id)?;
        db = Some(connected);
        decision = allocation.decide(caller.user_id)?;
    }
    match decision {
        Decision::Issued => hang_if_armed(req),
        Decision::AlreadyIssued => return Err(already_issued()),
        Decision::SoldOut => return Err(sold_out()),
        Decision::NotOpenYet => return Err(window::not_open_yet().into()),
        Decision::Closed => return Err(window::closed().into()),
        Decision::Missing => return Err(Problem::unavailable("the coupon's stock could not be loaded")),
    }

    let outcome = match db {
        Some(db) => Ok(db),
        None => Db::connect(),
    }
    .and_then(|db| record_issue(&db, id, caller.user_id));
    match outcome {
        Ok(issued) => {
            // Best effort: the issue is recorded; a failure here only leaves
            // Redis a unit ahead, which Postgres' own count still guards.
            if let Err(e) = allocation.recorded(caller.user_id) {
                eprintln!("coupon {id}: issued, but not confirmed in Redis: {}", e.detail);
            }
            Ok(respond::json(201, &issued))
        }
        // Postgres says the user holds a copy Redis had lost: what `DECIDE`
        // just took (their slot and a unit) is that copy, so it stays, as
        // a recorded issue.
        Err(problem) if problem.code == ErrorCode::CouponAlreadyIssued => {
            if let Err(e) = allocation.recorded(caller.user_id) {
                eprintln!("coupon {id}: a held copy not confirmed in Redis: {}", e.detail);
            }
            Err(problem)
        }
        Err(problem) => {
            if let Err(e) = allocation.compensate(caller.user_id) {
                eprintln!(
                    "coupon {id}: could not give back a unit for user {}: {}",
                    caller.user_id, e.detail
                );
            }
            Err(problem)
        }
    }
}

/// Record an issue Redis granted: the user's copy, or `409` when Postgres
/// says they have one (or that the coupons are gone), or `503`.
fn record_issue(db: &Db, id: i64, user_id: i64) -> Result<UserCoupon, Problem> {
    let params = [ParameterValue::Int64(id), ParameterValue::Int64(user_id)];
    let answer = format!("{PERSIST_ISSUE_ANSWER}{COUPON_COLUMNS} {PERSIST_ISSUE_FROM}");
    let rows = match db.query(&Query::with(PERSIST_ISSUE_COUNTED, &answer), &params) {
        Ok(rows) => rows,
        Err(failed) => {
            let holds = db.query(&HOLDS_COPY, &params).map(|rows| !rows.is_empty());
            return Err(match holds {
                Ok(true) => already_issued(),
                _ => {
                    eprintln!(
                        "coupon {id}: the issue could not be recorded: {}",
                        Problem::from(failed).detail
                    );
                    Problem::unavailable("the coupon could not be recorded; nothing was issued")
                }
            });
        }
    };
    let issued = rows.first(|row| {
        if column::<bool>(row, "held")? {
            return Err(already_issued());
        }
        let Some(user_coupon_id) = column::<Option<i64>>(row, "user_coupon_id")? else {
            // Postgres counted the quantity out although Redis had a unit: Redis was behind.
            return Err(sold_out());
        };
        let state = UserCouponState {
            id: user_coupon_id,
            used: false,
            issued_at: utc(row, "issued_at")?,
            used_at: None,
            order_id: None,
            now: instant(row, "now")?,
        };
        Ok(CouponRecord::from_row(row)?.user_view(state))
    })?;
    issued.ok_or_else(|| Problem::unavailable("the issue statement answered no row"))
}

/// Test builds only (`failpoints`): `x-failpoint: hang:after-decide` parks
/// the issue after Redis granted it and before Postgres hears of it, so a
/// test can kill the process there, as a crash would.
fn hang_if_armed(#[allow(unused_variables)] req: &Request) {
    #[cfg(feature = "failpoints")]
    if req.header_str("x-failpoint") == Some("hang:after-decide") {
        std::thread::sleep(std::time::Duration::from_secs(600));
    }
}

fn already_issued() -> Problem {
    Problem::new(ErrorCode::CouponAlreadyIssued, "you already have this coupon")
}

fn sold_out() -> Problem {
    Problem::new(ErrorCode::CouponSoldOut, "all coupons have been issued")
}

/// Seed Redis from one Postgres snapshot (a no-op for the stock if another
/// instance did first). A window that has closed by the database's clock is
/// refused here: its keys would already be gone.
fn rebuild(db: &Db, allocation: &Allocation, id: i64) -> Result<(), Problem> {
    let sql = format!("{ALLOCATION_SNAPSHOT}, {DATABASE_ID_COLUMN} {ALLOCATION_SNAPSHOT_FROM}");
    let rows = db.query(&Query::new(&sql), &[ParameterValue::Int64(id)])?;
    let snapshot = rows.first(|row| {
        let users: Vec<Option<i64>> = column(row, "users")?;
        Ok((
            instant(row, "now")?,
            column::<String>(row, "database_id")?,
            Snapshot {
                remaining: column(row, "remaining")?,
                issue_starts_at: instant(row, "issue_starts_at")?,
                issue_ends_at: instant(row, "issue_ends_at")?,
                users: users.into_iter().flatten().collect(),
            },
        ))
    })?;
    let Some((now, database_id, snapshot)) = snapshot else {
        return Err(not_found(id));
    };
    allocation.verify_database(&database_id)?;
    if now >= snapshot.issue_ends_at {
        return Err(window::closed().into());
    }
    allocation.rebuild(&snapshot, keys_expiry(snapshot.issue_ends_at))
}

fn my_coupons(req: &Request, _: &Params) -> ApiResult {
    let caller = auth::authenticate(req)?;
    let (limit, cursor) = page(req)?;
    let before = cursor.map_or(i64::MAX, |c| c.after_id);
    let db = Db::connect()?;
    let sql = format!(
        "{LIST_USER_COUPONS}{COUPON_COLUMNS} FROM user_coupons uc JOIN coupons c ON c.id = uc.coupon_id
         WHERE uc.user_id = $1 AND uc.id < $2 ORDER BY uc.id DESC LIMIT $3"
    );
    let rows = db.query(
        &Query::new(&sql),
        &[
            ParameterValue::Int64(caller.user_id),
            ParameterValue::Int64(before),
            ParameterValue::Int64(i64::from(limit.get()) + 1),
        ],
    )?;
    let coupons = rows
        .iter()
        .map(|row| {
            let coupon = CouponRecord::from_row(&row)?;
            let status: String = column(&row, "status")?;
            Ok(coupon.user_view(UserCouponState {
                id: column(&row, "user_coupon_id")?,
                used: status == "USED",
                issued_at: utc(&row, "issued_at")?,
                used_at: utc_opt(&row, "used_at")?,
                order_id: column(&row, "order_id")?,
                now: instant(&row, "now")?,
            }))
        })
        .collect::<Result<Vec<_>, Problem>>()?;
    let (items, next_cursor) = split_page(coupons, limit, |c| c.user_coupon_id);
    Ok(respond::ok(&Page { items, next_cursor }))
}
