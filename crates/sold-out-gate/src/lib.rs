//! The sold-out gate (SPEC §4): once Postgres has shown a product short of
//! the units an order needs, further orders needing as many or more are
//! refused `409 OUT_OF_STOCK` from Redis alone — no order row, no reserve
//! attempt — until units come back.
//!
//! A product's gate is three keys under the [`HASH_TAG`] (so one request's
//! gates are read in one script, on Redis Cluster too):
//!
//! - `{soldout}:<product>`, present while the gate is closed, holding the
//!   smallest quantity Postgres refused since it closed: fewer units than
//!   that may still be there, so orders of fewer pass;
//! - `{soldout}:<product>:opened`, a counter every reopening increments;
//! - `{soldout}:<product>:short`, the same quantity as the closed key, kept
//!   a minute after the gate last closed: when the closed key expires, the
//!   first order that comes is sent on to Postgres to look again and the
//!   gate closes behind it for the others until it has (it reopens the gate
//!   if the units are there, or closes it again), so a crowd meeting an
//!   expired gate sends one read to Postgres, not one per buyer.
//!
//! A refusal is an answer like any other: it is kept for the request's
//! idempotency key — and must not be given to a key that already made an
//! order. So orders keep their keys' records in the gate's slot too, and one
//! script ([`Gates::admit`]) reads the key's record and the gates, then keeps
//! the refusal or claims the key: an order crosses Redis once before
//! Postgres, and a refusal is one round trip.
//!
//! Redis alone can tell a key made no order only while it holds the record
//! of every key of the last 24 hours (the time keys are kept). After Redis
//! lost data (flushed, restarted empty) it does not, until the newest order
//! made before the loss is 24 hours old. One more key says from when Redis
//! can answer alone: `{soldout}:order-records-complete-from`, a time in Unix
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
//!   [`CLOSED_FOR_MILLIS`] after it was last closed and the next order looks
//!   at Postgres again, so a product with units is orderable again within a
//!   second whatever happens.
//! - *Redis flushed or restarted mid-sale.* The gate forgets: orders go on
//!   to Postgres, which closes it again. A counter that vanished makes every
//!   close read before the flush mismatch, so none lands.

use edge::idempotency::{Pending, LEASE_MILLIS, RETENTION_SECONDS};
use edge::redis::{text, unavailable, Redis, Script};
use edge::Problem;
use spin_sdk::redis::{RedisParameter, RedisResult};

/// What Redis said of an order before it goes to Postgres.
pub enum Admission {
    /// The key already has a record (a replay, `409 REQUEST_IN_PROGRESS` or
    /// `422`): answer from it.
    Answered(String),
    /// The line at this index (in the order's lines) is refused at its
    /// closed gate; its refusal is now the key's record.
    Refused(usize),
    /// The key is claimed for this request; the gates as read.
    Claimed(Gates),
}

/// How long a closed gate stays closed without being closed again: under the
/// one second the spec allows a product with units to be refused.
pub const CLOSED_FOR_MILLIS: i64 = 800;

/// How long a product is remembered as last seen short after its gate last
/// closed: while it is, the gate's expiry sends one order on to Postgres to
/// look again, not every order that arrives.
const REMEMBERED_SHORT_MILLIS: i64 = 60_000;

/// The Redis Cluster hash tag of every gate key, and of the records of the
/// keys orders are placed with, so one script can touch them together.
pub const HASH_TAG: &str = "{soldout}";

/// Admit an order (KEYS: per line its closed key, `opened` counter and
/// last-seen-short key, then the records-complete marker, then the
/// idempotency key's record). A key with a record is answered from it
/// (invariant 5), never refused or claimed again. Only while Redis holds
/// every recent key's record (ARGV[1] is now, in Unix ms; else the key may
/// have made an order Redis forgot): a line whose closed gate refuses its
/// quantity (ARGV[4 + 2i]) is refused, and its refusal (ARGV[5 + 2i]) kept
/// as the key's record for ARGV[4] seconds; a line whose gate expired on a
/// product last seen short of its quantity makes this order the one that
/// looks at Postgres again, and the gate closes for the others meanwhile
/// (ARGV[5] ms). Otherwise the key is claimed (ARGV[2] for ARGV[3] ms); what
/// comes back per line is its `opened` counter (for the conditional close)
/// and whether this order looks again, after the records-complete marker.
const ADMIT: &str = r"
local record = KEYS[#KEYS]
local existing = redis.call('GET', record)
if existing then return {'answered', existing} end
local lines = (#KEYS - 2) / 3
local gates = redis.call('MGET', unpack(KEYS, 1, #KEYS - 1))
local complete_from = tonumber(gates[#gates])
local looks_again = {}
if complete_from and tonumber(ARGV[1]) >= complete_from then
  for line = 1, lines do
    local refuses_from = tonumber(gates[3 * line - 2])
    if refuses_from and tonumber(ARGV[4 + 2 * line]) >= refuses_from then
      redis.call('SET', record, ARGV[5 + 2 * line], 'EX', ARGV[4])
      return {'refused', line}
    end
  end
  for line = 1, lines do
    local short = tonumber(gates[3 * line])
    if not gates[3 * line - 2] and short and tonumber(ARGV[4 + 2 * line]) >= short then
      redis.call('SET', KEYS[3 * line - 2], short, 'PX', ARGV[5])
      looks_again[line] = 1
    end
  end
end
redis.call('SET', record, ARGV[2], 'PX', ARGV[3])
local reply = {'claimed', gates[#gates]}
for line = 1, lines do
  reply[2 * line + 1] = gates[3 * line - 1]
  reply[2 * line + 2] = looks_again[line] or 0
end
return reply
";

/// Close a product's gate (KEYS[1]) for orders of ARGV[1] units or more (or
/// keep a smaller quantity already there) for `CLOSED_FOR_MILLIS` (ARGV[2]),
/// and remember it short (KEYS[3]) for ARGV[4] ms, unless it was reopened
/// (KEYS[2] moved on from ARGV[3]) since the caller read Postgres: units came
/// back after that read.
const CLOSE: &str = r"
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[3] then return 0 end
local refused = tonumber(ARGV[1])
local closed = math.min(tonumber(redis.call('GET', KEYS[1]) or refused), refused)
redis.call('SET', KEYS[1], closed, 'PX', ARGV[2])
redis.call('SET', KEYS[3], closed, 'PX', ARGV[4])
return 1
";

/// Reopen every gate of KEYS (triples: closed key, opened counter,
/// last-seen-short key): units came back. Moving the counter on drops any
/// close read from Postgres before.
const REOPEN: &str = r"
for i = 1, #KEYS, 3 do
  redis.call('DEL', KEYS[i], KEYS[i + 2])
  redis.call('INCR', KEYS[i + 1])
end
return 1
";

/// From when (Unix ms) Redis holds the idempotency record of every recent key.
/// (Named anew when the order records moved into the gate's slot: records
/// kept under their old names are not there for the gate, so it starts
/// unmarked and waits out their 24 h.)
const RECORDS_COMPLETE_FROM: &str = "{soldout}:order-records-complete-from";

fn closed_key(product_id: i64) -> String {
    format!("{HASH_TAG}:{product_id}")
}

fn opened_key(product_id: i64) -> String {
    format!("{HASH_TAG}:{product_id}:opened")
}

fn short_key(product_id: i64) -> String {
    format!("{HASH_TAG}:{product_id}:short")
}

/// A product's gate keys, in the order the scripts take them.
fn gate_keys(product_id: i64) -> [String; 3] {
    [
        closed_key(product_id),
        opened_key(product_id),
        short_key(product_id),
    ]
}

/// The gates of one order's products, as read before Postgres was.
pub struct Gates {
    /// Per line in the order's (product id) order: product, quantity, its
    /// `opened` counter, whether this order looks at Postgres again for it.
    lines: Vec<Gate>,
    /// Whether Redis says from when it can answer for every recent key
    /// (false when it lost that, or never had it).
    records_marked: bool,
}

struct Gate {
    product_id: i64,
    quantity: i64,
    opened: String,
    looks_again: bool,
}

impl Gates {
    /// Admit an order for `lines` (product, quantity) under `claim` at
    /// `now_millis`: answer it from its key's record, refuse it at a closed
    /// gate (keeping `refusals[i]`, the final record of line i's refusal, as
    /// the key's answer), or claim the key. One round trip.
    pub fn admit(
        redis: &Redis,
        lines: &[(i64, i64)],
        now_millis: i64,
        claim: &Pending,
        refusals: &[Vec<u8>],
    ) -> Result<Admission, Problem> {
        let mut keys: Vec<String> = lines
            .iter()
            .flat_map(|(product, _)| gate_keys(*product))
            .collect();
        keys.push(RECORDS_COMPLETE_FROM.to_owned());
        keys.push(claim.redis_key().to_owned());
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut args = vec![
            RedisParameter::Int64(now_millis),
            RedisParameter::Binary(claim.in_flight().as_bytes().to_vec()),
            RedisParameter::Int64(LEASE_MILLIS),
            RedisParameter::Int64(RETENTION_SECONDS),
            RedisParameter::Int64(CLOSED_FOR_MILLIS),
        ];
        for ((_, quantity), refusal) in lines.iter().zip(refusals) {
            args.push(RedisParameter::Int64(*quantity));
            args.push(RedisParameter::Binary(refusal.clone()));
        }
        let reply = Script::new(ADMIT).run(redis, &keys, &args).map_err(unavailable)?;
        let malformed = || Problem::unavailable("redis answered the sold-out gate's script in another shape");
        let (verdict, values) = reply.split_first().ok_or_else(malformed)?;
        match (text(verdict).as_deref(), values) {
            (Some("answered"), [existing]) => text(existing).map(Admission::Answered).ok_or_else(malformed),
            (Some("refused"), [RedisResult::Int64(line)]) => usize::try_from(*line - 1)
                .ok()
                .filter(|line| *line < lines.len())
                .map(Admission::Refused)
                .ok_or_else(malformed),
            (Some("claimed"), [marker, values @ ..]) if values.len() == 2 * lines.len() => {
                let lines = lines
                    .iter()
                    .zip(values.chunks(2))
                    .map(|((product_id, quantity), pair)| Gate {
                        product_id: *product_id,
                        quantity: *quantity,
                        opened: text(&pair[0]).unwrap_or_default(),
                        looks_again: matches!(pair[1], RedisResult::Int64(1)),
                    })
                    .collect();
                Ok(Admission::Claimed(Gates {
                    lines,
                    records_marked: text(marker).is_some_and(|at| at.parse::<i64>().is_ok()),
                }))
            }
            _ => Err(malformed()),
        }
    }

    /// Whether Redis has lost (or never had) the time from which it holds
    /// every recent key's record: the order's Postgres read tells it again.
    pub fn records_unmarked(&self) -> bool {
        !self.records_marked
    }

    /// Say from when Redis holds every recent key's record: `newest_order`
    /// (Unix ms, `None` when there is no order) is the newest order
    /// Postgres has, read after these gates were; records of orders up to
    /// it may be lost, so Redis answers alone once it is older than the
    /// time keys are kept. Orders after it were claimed in Redis, which was
    /// up. `SET NX`: the first to say it is right.
    pub fn mark_records_complete(&self, redis: &Redis, newest_order: Option<i64>, now_millis: i64) {
        let from = newest_order.map_or(now_millis, |newest| newest + RETENTION_SECONDS * 1000);
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

    /// The lines (product, quantity) this order was sent on to look at
    /// Postgres again for: their gates closed again behind it, and reopen
    /// if Postgres has the units ([`reopen`]).
    pub fn looking_again(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.lines
            .iter()
            .filter(|gate| gate.looks_again)
            .map(|gate| (gate.product_id, gate.quantity))
    }

    /// Close `product_id`'s gate: Postgres, read after these gates were,
    /// has fewer units of it than this order needs. Best effort: a gate left
    /// open only sends orders on to Postgres.
    pub fn close(&self, redis: &Redis, product_id: i64) {
        let Some(gate) = self.lines.iter().find(|gate| gate.product_id == product_id) else {
            return;
        };
        let keys = gate_keys(product_id);
        let closed = Script::new(CLOSE).run(
            redis,
            &keys.each_ref().map(String::as_str),
            &[
                RedisParameter::Int64(gate.quantity),
                RedisParameter::Int64(CLOSED_FOR_MILLIS),
                RedisParameter::Binary(gate.opened.clone().into_bytes()),
                RedisParameter::Int64(REMEMBERED_SHORT_MILLIS),
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
    let keys: Vec<String> = products.iter().flat_map(|product| gate_keys(*product)).collect();
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
