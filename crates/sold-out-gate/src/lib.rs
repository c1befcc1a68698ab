//! The sold-out gate (SPEC §4): once Postgres has shown a product short of
//! the units an order needs, further orders needing as many or more are
//! refused `409 OUT_OF_STOCK` from Redis alone — no order row, no reserve
//! attempt — until units come back.
//!
//! A product's gate is two keys under the `{soldout}` hash tag (so one
//! request's gates are read in one `MGET`, on Redis Cluster too):
//!
//! - `{soldout}:<product>`, present while the gate is closed, holding the
//!   smallest quantity Postgres refused since it closed: fewer units than
//!   that may still be there, so orders of fewer pass;
//! - `{soldout}:<product>:opened`, a counter every reopening increments.
//!
//! A refusal is an answer like any other: it is kept for the request's
//! idempotency key — and must not be given to a key that already made an
//! order. Redis alone can tell only while it holds the record of every key
//! of the last 24 hours (the time keys are kept). After Redis lost data
//! (flushed, restarted empty) it does not, until the newest order made
//! before the loss is 24 hours old. One more key says from when Redis can
//! answer alone: `{soldout}:records-complete-from`, a time in Unix
//! milliseconds, set by the first order that finds it missing from the
//! newest order Postgres has (see [`Gates::mark_records_complete`]). Until
//! then a closed gate sends orders on to the read Postgres does anyway —
//! prices, units left, whether the key made an order — which refuses the
//! short ones without writing.
//!
//! Postgres' conditional reserve stays the only guard against overselling;
//! the gate only spares Postgres the orders it would refuse. Three races
//! could make it refuse a product that has units, and each is closed:
//!
//! - *A release committing while another request closes the gate.* The
//!   closing request read Postgres before the units came back, the release
//!   reopened the gate, and the close lands after. A close is therefore
//!   conditional: it carries the `opened` counter read *before* Postgres was
//!   read, and is dropped if a reopening happened since.
//! - *A process dying between a release's commit and its reopening* (or
//!   Redis failing the reopening). The closed key expires
//!   [`CLOSED_FOR_MILLIS`] after it was last closed, so a product with units
//!   is orderable again within a second whatever happens.
//! - *Redis flushed or restarted mid-sale.* The gate forgets: orders go on
//!   to Postgres, which closes it again. A counter that vanished makes every
//!   close read before the flush mismatch, so none lands.

use edge::redis::{text, unavailable, Redis, Script};
use edge::Problem;
use spin_sdk::redis::RedisParameter;

/// How long a closed gate stays closed without being closed again: under the
/// one second the spec allows a product with units to be refused.
pub const CLOSED_FOR_MILLIS: i64 = 800;

/// Close a product's gate (KEYS[1]) for orders of ARGV[1] units or more (or
/// keep a smaller quantity already there) for `CLOSED_FOR_MILLIS` (ARGV[2]),
/// unless it was reopened (KEYS[2] moved on from ARGV[3]) since the caller
/// read Postgres: units came back after that read.
const CLOSE: &str = r"
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[3] then return 0 end
local refused = tonumber(ARGV[1])
local closed = tonumber(redis.call('GET', KEYS[1]) or refused)
redis.call('SET', KEYS[1], math.min(closed, refused), 'PX', ARGV[2])
return 1
";

/// Reopen every gate of KEYS (pairs: closed key, opened counter): units came
/// back. Moving the counter on drops any close read from Postgres before.
const REOPEN: &str = r"
for i = 1, #KEYS, 2 do
  redis.call('DEL', KEYS[i])
  redis.call('INCR', KEYS[i + 1])
end
return 1
";

/// From when (Unix ms) Redis holds the idempotency record of every recent key.
const RECORDS_COMPLETE_FROM: &str = "{soldout}:records-complete-from";

fn closed_key(product_id: i64) -> String {
    format!("{{soldout}}:{product_id}")
}

fn opened_key(product_id: i64) -> String {
    format!("{{soldout}}:{product_id}:opened")
}

/// The gates of one order's products, as read before Postgres was.
pub struct Gates {
    /// Per line in the order's (product id) order: product, quantity, the
    /// smallest quantity its closed gate refuses, its `opened` counter.
    lines: Vec<Gate>,
    /// From when (Unix ms) Redis can answer for every recent key; `None`
    /// when Redis lost it (or never had it).
    records_complete_from: Option<i64>,
}

struct Gate {
    product_id: i64,
    quantity: i64,
    refuses_from: Option<i64>,
    opened: String,
}

impl Gates {
    /// Read the gates of `lines` (product, quantity). `None` when Redis
    /// cannot answer: nothing is refused then, the order goes to Postgres.
    pub fn read(redis: &Redis, lines: &[(i64, i64)]) -> Option<Gates> {
        let keys: Vec<RedisParameter> = lines
            .iter()
            .flat_map(|(product, _)| [closed_key(*product), opened_key(*product)])
            .chain([RECORDS_COMPLETE_FROM.to_owned()])
            .map(|name| RedisParameter::Binary(redis.key(&name).into_bytes()))
            .collect();
        let values = match redis.execute("MGET", &keys) {
            Ok(values) if values.len() == keys.len() => values,
            Ok(_) => {
                eprintln!(
                    "sold-out gate: MGET answered another number of values; the order goes to Postgres"
                );
                return None;
            }
            Err(e) => {
                eprintln!("sold-out gate: not read ({e:?}); the order goes to Postgres");
                return None;
            }
        };
        let (marker, values) = values.split_last().expect("the keys are never empty");
        let lines = lines
            .iter()
            .zip(values.chunks(2))
            .map(|((product_id, quantity), pair)| Gate {
                product_id: *product_id,
                quantity: *quantity,
                refuses_from: text(&pair[0]).and_then(|closed| closed.parse().ok()),
                opened: text(&pair[1]).unwrap_or_default(),
            })
            .collect();
        let records_complete_from = text(marker).and_then(|at| at.parse().ok());
        Some(Gates {
            lines,
            records_complete_from,
        })
    }

    /// The first product whose closed gate refuses the quantity ordered, if
    /// Redis can also answer for the order's key at `now_millis` (see the
    /// module doc); otherwise `None`, and Postgres' read decides.
    pub fn refused(&self, now_millis: i64) -> Option<i64> {
        if self.records_complete_from.is_none_or(|from| now_millis < from) {
            return None;
        }
        self.lines
            .iter()
            .find(|gate| gate.refuses_from.is_some_and(|from| gate.quantity >= from))
            .map(|gate| gate.product_id)
    }

    /// Whether Redis has lost (or never had) the time from which it holds
    /// every recent key's record: the order's Postgres read tells it again.
    pub fn records_unmarked(&self) -> bool {
        self.records_complete_from.is_none()
    }

    /// Say from when Redis holds every recent key's record: `newest_order`
    /// (Unix ms, `None` when there is no order) is the newest order
    /// Postgres has, read after these gates were; records of orders up to
    /// it may be lost, so Redis answers alone once it is older than the
    /// `retention_millis` keys are kept. Orders after it were claimed in
    /// Redis, which was up. `SET NX`: the first to say it is right.
    pub fn mark_records_complete(
        &self,
        redis: &Redis,
        newest_order: Option<i64>,
        now_millis: i64,
        retention_millis: i64,
    ) {
        let from = newest_order.map_or(now_millis, |newest| newest + retention_millis);
        let marked = redis.execute(
            "SET",
            &[
                RedisParameter::Binary(redis.key(RECORDS_COMPLETE_FROM).into_bytes()),
                RedisParameter::Int64(from),
                RedisParameter::Binary(b"NX".to_vec()),
            ],
        );
        if let Err(e) = marked {
            eprintln!("sold-out gate: records' completeness not marked: {e:?}");
        }
    }

    /// Close `product_id`'s gate: Postgres, read after these gates were,
    /// has fewer units of it than this order needs. Best effort: a gate left
    /// open only sends orders on to Postgres.
    pub fn close(&self, redis: &Redis, product_id: i64) {
        let Some(gate) = self.lines.iter().find(|gate| gate.product_id == product_id) else {
            return;
        };
        let closed = Script::new(CLOSE).run(
            redis,
            &[&closed_key(product_id), &opened_key(product_id)],
            &[
                RedisParameter::Int64(gate.quantity),
                RedisParameter::Int64(CLOSED_FOR_MILLIS),
                RedisParameter::Binary(gate.opened.clone().into_bytes()),
            ],
        );
        if let Err(e) = closed {
            eprintln!("sold-out gate: product {product_id} not closed: {e:?}");
        }
    }
}

/// Reopen the gates of `products`: units of them came back (call it right
/// after the statement that gave them back committed).
pub fn reopen(redis: &Redis, products: &[i64]) -> Result<(), Problem> {
    if products.is_empty() {
        return Ok(());
    }
    let keys: Vec<String> = products
        .iter()
        .flat_map(|product| [closed_key(*product), opened_key(*product)])
        .collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    Script::new(REOPEN)
        .run(redis, &keys, &[])
        .map(drop)
        .map_err(unavailable)
}

/// [`reopen`] on `redis`, or on a new connection when the request has none,
/// logging a failure: the gate then opens by itself within
/// [`CLOSED_FOR_MILLIS`].
pub fn reopen_logged(redis: Option<&Redis>, products: &[i64]) {
    if products.is_empty() {
        return;
    }
    let reopened = match redis {
        Some(redis) => reopen(redis, products),
        None => edge::redis::connect().and_then(|redis| reopen(&redis, products)),
    };
    if let Err(problem) = reopened {
        eprintln!(
            "sold-out gate: products {products:?} not reopened (they open within {CLOSED_FOR_MILLIS} ms): {}",
            problem.detail
        );
    }
}
