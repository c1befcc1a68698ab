//! SPEC §1, the wallet: balance, idempotent charges, and the ledger.

use commerce::page::split_page;
use commerce::wallet::{balance_limit_exceeded, ChargeAmount, MAX_BALANCE};
use edge::auth::{self, Caller};
use edge::bodies::ChargeBody;
use edge::idempotency::{self, Claim};
use edge::input::{json_body, page};
use edge::pg::{column, utc, Db, Query};
use edge::respond::{self, Page};
use edge::router::{get, post, serve, Params};
use edge::Request;
use edge::{ApiResult, Problem};
use serde::Serialize;
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;
use spin_sdk::pg4::{ParameterValue, Row};

/// The idempotency scope of charges.
const CHARGE_ROUTE: &str = "wallet.charge";

const GET_BALANCE: Query = Query::new("SELECT balance FROM wallets WHERE user_id = $1");

/// Invariants 1 (money) and 5 (one key, one effect), in one statement: a
/// charge this key already made is answered as it is (`replayed`), with no
/// second credit; otherwise the wallet is credited only while the cap holds,
/// and only together with its ledger row, whose (user, key) is unique — two
/// requests racing with one key cannot both commit (the loser fails whole).
const CHARGE: Query = Query::with(
    "earlier AS (
        SELECT charge_id::text AS charge_id, user_id, amount, balance_after,
               created_at AT TIME ZONE 'UTC' AS created_at, request_fingerprint
        FROM wallet_ledger WHERE user_id = $1 AND charge_key = $4
    ), credited AS (
        INSERT INTO wallets AS w (user_id, balance)
        SELECT $1, $2 WHERE NOT EXISTS (SELECT 1 FROM earlier)
        ON CONFLICT (user_id) DO UPDATE SET balance = w.balance + EXCLUDED.balance, updated_at = now()
            WHERE w.balance + EXCLUDED.balance <= $3
        RETURNING balance
    ), charged AS (
        INSERT INTO wallet_ledger (user_id, kind, amount, balance_after, charge_key, request_fingerprint)
        SELECT $1, 'CHARGE', $2, balance, $4, $5 FROM credited
        RETURNING charge_id::text AS charge_id, user_id, amount, balance_after,
                  created_at AT TIME ZONE 'UTC' AS created_at, request_fingerprint
    )",
    "SELECT *, false AS replayed FROM charged UNION ALL SELECT *, true AS replayed FROM earlier",
);

/// The charge a key made, read after the charge statement failed: when a
/// request with the same key committed first, the unique (user, key) made
/// this one fail, and the charge to answer with is that one.
const CHARGE_BY_KEY: Query = Query::new(
    "SELECT charge_id::text AS charge_id, user_id, amount, balance_after,
            created_at AT TIME ZONE 'UTC' AS created_at, request_fingerprint, true AS replayed
    FROM wallet_ledger WHERE user_id = $1 AND charge_key = $2",
);

const LIST_LEDGER: Query = Query::new(
    "SELECT id, kind, amount, balance_after, order_id, created_at AT TIME ZONE 'UTC' AS created_at
    FROM wallet_ledger WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
);

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve(
        req,
        out,
        "wallet",
        &[
            get("/api/v1/wallet", balance),
            post("/api/v1/wallet/charges", charge),
            get("/api/v1/wallet/transactions", transactions),
        ],
    )
    .await
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Balance {
    user_id: i64,
    balance: i64,
}

fn balance(req: &Request, _: &Params) -> ApiResult {
    let caller = auth::authenticate(req)?;
    let db = Db::connect()?;
    let rows = db.query(&GET_BALANCE, &[ParameterValue::Int64(caller.user_id)])?;
    let balance = rows.first(|row| column::<i64>(row, "balance"))?.unwrap_or(0);
    Ok(respond::ok(&Balance {
        user_id: caller.user_id,
        balance,
    }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Charge {
    charge_id: String,
    user_id: i64,
    amount: i64,
    balance: i64,
    charged_at: String,
}

/// A charge as stored: the charge, the fingerprint of the request that
/// made it, and whether it was made by an earlier request with the key.
struct StoredCharge {
    charge: Charge,
    fingerprint: String,
    replayed: bool,
}

fn charge_from_row(row: &Row<'_>) -> Result<StoredCharge, Problem> {
    Ok(StoredCharge {
        charge: Charge {
            charge_id: column(row, "charge_id")?,
            user_id: column(row, "user_id")?,
            amount: column(row, "amount")?,
            balance: column(row, "balance_after")?,
            charged_at: utc(row, "created_at")?,
        },
        fingerprint: column(row, "request_fingerprint")?,
        replayed: column(row, "replayed")?,
    })
}

fn charge(req: &Request, _: &Params) -> ApiResult {
    let caller = auth::authenticate(req)?;
    let key = idempotency::key_of(req)?;
    let request: ChargeBody = json_body(req)?;
    let amount = request.amount()?;
    let fingerprint = idempotency::fingerprint(CHARGE_ROUTE, &request);
    match idempotency::claim(&caller, CHARGE_ROUTE, key, fingerprint)? {
        Claim::Answered(response) => Ok(response),
        Claim::Owned(owned) => {
            let outcome = perform_charge(&caller, amount, owned.key.as_str(), &owned.fingerprint);
            Ok(owned.finish(outcome))
        }
    }
}

/// Charge once per key. The Postgres backstop of idempotency (Redis lost the
/// key, or its lease ended) needs no error code, which Spin does not report
/// for `query`: the statement itself answers with the earlier charge, and a
/// failed statement is followed by a look for the charge that beat it.
fn perform_charge(caller: &Caller, amount: ChargeAmount, key: &str, fingerprint: &str) -> ApiResult {
    let db = Db::connect()?;
    let params = [
        ParameterValue::Int64(caller.user_id),
        ParameterValue::Int64(amount.get()),
        ParameterValue::Int64(MAX_BALANCE),
        ParameterValue::Str(key.to_owned()),
        ParameterValue::Str(fingerprint.to_owned()),
    ];
    let stored = match db.query(&CHARGE, &params) {
        Ok(rows) => rows.first(charge_from_row)?,
        Err(failed) => {
            let by_key = [
                ParameterValue::Int64(caller.user_id),
                ParameterValue::Str(key.to_owned()),
            ];
            match db.query(&CHARGE_BY_KEY, &by_key)?.first(charge_from_row)? {
                Some(earlier) => Some(earlier),
                None => return Err(failed.into()),
            }
        }
    };
    match stored {
        None => Err(balance_limit_exceeded().into()),
        Some(stored) if !stored.replayed => Ok(respond::json(201, &stored.charge)),
        Some(stored) if stored.fingerprint == fingerprint => Ok(idempotency::replay(
            201,
            "application/json",
            respond::to_json(&stored.charge),
        )),
        Some(_) => Err(idempotency::reused()),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    id: i64,
    #[serde(rename = "type")]
    kind: String,
    amount: i64,
    balance_after: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<i64>,
    created_at: String,
}

fn transactions(req: &Request, _: &Params) -> ApiResult {
    let caller = auth::authenticate(req)?;
    let (limit, cursor) = page(req)?;
    let before = cursor.map_or(i64::MAX, |c| c.after_id);
    let db = Db::connect()?;
    let rows = db.query(
        &LIST_LEDGER,
        &[
            ParameterValue::Int64(caller.user_id),
            ParameterValue::Int64(before),
            ParameterValue::Int64(i64::from(limit.get()) + 1),
        ],
    )?;
    let entries = rows
        .iter()
        .map(|row| {
            Ok(Entry {
                id: column(&row, "id")?,
                kind: column(&row, "kind")?,
                amount: column(&row, "amount")?,
                balance_after: column(&row, "balance_after")?,
                order_id: column(&row, "order_id")?,
                created_at: utc(&row, "created_at")?,
            })
        })
        .collect::<Result<Vec<_>, Problem>>()?;
    let (items, next_cursor) = split_page(entries, limit, |e| e.id);
    Ok(respond::ok(&Page { items, next_cursor }))
}
