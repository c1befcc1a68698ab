//! Postgres through `spin:postgres/postgres@4.0.0`.
//!
//! Two limits of Spin shape this module:
//!
//! - **Spin 4.0.0–4.0.2 never answer a `query` whose result is empty**
//!   (spinframework/spin#3671: the host waits for the columns of a first row
//!   that never comes; the request hangs, nothing is logged). So no statement
//!   that returns rows is sent as written: [`Db::query`] takes a [`Query`],
//!   which always reaches the database as a statement that yields at least one
//!   row, and hands back [`Rows`] without that extra row. There is no other way
//!   to read rows (clippy's `disallowed-methods` refuses `Connection::query`
//!   outside this module), so no call site can forget it.
//! - Spin cannot read `timestamptz` columns (its driver decodes them as
//!   zone-less date-times), so every query reads times as
//!   `col AT TIME ZONE 'UTC'` and [`utc`] turns the value back into UTC.

use crate::config::variable;
use crate::Problem;
use chrono::{DateTime, Utc};
use spin_sdk::pg4::{Connection, DbValue, Decode, ParameterValue, PgError, QueryError, Row, RowSet};

/// An open connection to the app's database.
pub struct Db(Connection);

/// A failed statement, before it becomes a `503`.
///
/// It offers no SQLSTATE on purpose: Spin reports an error raised while a
/// `query` runs (a constraint violated, say) as text, without the code
/// (spin `factor-outbound-pg`: `QueryError::Text` for errors in the row
/// stream), so nothing may branch on one. A statement that must tell an
/// earlier effect from a new one says so in its result instead (see the
/// idempotency backstops: `ON CONFLICT DO NOTHING`, or the earlier row read
/// in the same statement), and a failure is followed, where it matters, by
/// a look for what a racing request committed.
#[derive(Debug)]
pub struct DbError(pub Box<PgError>);

impl From<DbError> for Problem {
    fn from(error: DbError) -> Problem {
        Problem::unavailable(format!("the database failed ({})", short(&error.0)))
    }
}

/// A one-line reason without connection strings or statement text.
fn short(error: &PgError) -> String {
    match error {
        PgError::ConnectionFailed(_) => "connection failed".into(),
        PgError::QueryFailed(QueryError::DbError(db)) => format!("SQLSTATE {}", db.code),
        PgError::QueryFailed(QueryError::Text(_)) => "query failed".into(),
        PgError::BadParameter(_) | PgError::ValueConversionFailed(_) => "bad parameter".into(),
        PgError::Other(_) => "unexpected error".into(),
    }
}

impl Db {
    /// Open the database named by the `pg_url` variable.
    pub fn connect() -> Result<Db, Problem> {
        let url = variable("pg_url")?;
        Connection::open(&url)
            .map(Db)
            .map_err(|e| Problem::from(DbError(Box::new(e))))
    }

    /// Run a statement that returns rows (see [`Query`] for the shape it is sent in).
    pub fn query(&self, query: &Query<'_>, params: &[ParameterValue]) -> Result<Rows, DbError> {
        #[allow(clippy::disallowed_methods)] // the one call that sends a `Query`'s always-a-row shape
        let set = self.0.query(&query.sql(), params);
        set.map(Rows).map_err(|e| DbError(Box::new(e)))
    }

    /// Run a statement that returns no rows; answers how many it changed.
    /// (`execute` is not affected by spin#3671: it never waits for rows.)
    pub fn execute(&self, sql: &str, params: &[ParameterValue]) -> Result<u64, DbError> {
        self.0.execute(sql, params).map_err(|e| DbError(Box::new(e)))
    }
}

/// A statement that returns rows, written as its optional `WITH` items and
/// the statement that yields the rows (a `SELECT`, or an `INSERT`/`UPDATE`/
/// `DELETE … RETURNING`).
///
/// It is sent as
///
/// ```sql
/// WITH <ctes>, edge_result AS MATERIALIZED (<rows>)
/// SELECT edge_page.* FROM (VALUES (1)) AS edge_always(one)
/// LEFT JOIN (SELECT row_number() OVER () AS edge_row, edge_result.* FROM edge_result) AS edge_page
///     ON true
/// ORDER BY edge_page.edge_row
/// ```
///
/// one statement, as atomic as the one written, that always yields a row:
/// the rows of `rows` in their order, numbered, or one row of `NULL`s when
/// there are none, which [`Rows`] leaves out. The `WITH` items are given
/// apart because Postgres allows data-modifying `WITH` items only at the top
/// level, so a statement with them cannot be wrapped whole.
///
/// A statement [`committed without flush`](Query::committed_without_flush)
/// also sets `synchronous_commit = off` for its own transaction, in the same
/// statement.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    ctes: &'a str,
    rows: &'a str,
    flush: Flush,
}

/// Whether a statement's commit waits for its WAL to reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flush {
    /// Postgres' default: once the statement answers, it survives a crash.
    Wait,
    /// `synchronous_commit = off` for this transaction alone (`SET LOCAL`
    /// semantics, so nothing leaks to the pooled session or through a
    /// transaction pooler): visible to everyone at once, durable only once
    /// the WAL writer or a later flushing commit writes it out (Postgres
    /// flushes WAL in order, so any later durable commit covers it).
    Skip,
}

/// The column that numbers the real rows (`NULL` in the stand-in row).
const ROW_NUMBER: &str = "edge_row";

impl<'a> Query<'a> {
    /// A statement without `WITH` items.
    pub const fn new(rows: &'a str) -> Query<'a> {
        Query {
            ctes: "",
            rows,
            flush: Flush::Wait,
        }
    }

    /// A statement whose `WITH` items (`a AS (…), b AS (…)`, without the
    /// `WITH` keyword) come before the statement that yields the rows.
    pub const fn with(ctes: &'a str, rows: &'a str) -> Query<'a> {
        Query {
            ctes,
            rows,
            flush: Flush::Wait,
        }
    }

    /// Commit without waiting for the WAL flush. Only for a step whose
    /// outcome no client is told before a later statement commits durably:
    /// a crash in between loses at most such steps, which leaves the same
    /// states an interrupted request leaves.
    pub const fn committed_without_flush(self) -> Query<'a> {
        Query {
            flush: Flush::Skip,
            ..self
        }
    }

    /// The text sent to Postgres.
    pub fn sql(&self) -> String {
        let separator = if self.ctes.trim().is_empty() { "" } else { "," };
        // A `WITH` item runs only if the statement reads it, so the setting
        // is joined in (one row, no columns out).
        let (no_flush, join_no_flush) = match self.flush {
            Flush::Wait => ("", ""),
            Flush::Skip => (
                " edge_no_flush AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true)),",
                " CROSS JOIN edge_no_flush",
            ),
        };
        format!(
            "WITH {ctes}{separator}{no_flush} edge_result AS MATERIALIZED ({rows})\n\
             SELECT edge_page.* FROM (VALUES (1)) AS edge_always(one){join_no_flush}\n\
             LEFT JOIN (SELECT row_number() OVER () AS {ROW_NUMBER}, edge_result.* FROM edge_result) \
             AS edge_page ON true\n\
             ORDER BY edge_page.{ROW_NUMBER}",
            ctes = self.ctes,
            rows = self.rows,
        )
    }
}

/// The rows a [`Query`] yielded, without the stand-in row of an empty result.
pub struct Rows(RowSet);

impl Rows {
    /// The rows, in the statement's order.
    pub fn iter(&self) -> impl Iterator<Item = Row<'_>> {
        self.0.rows().zip(&self.0.rows).filter_map(|(row, values)| {
            let stand_in = matches!(values.first(), Some(DbValue::DbNull) | None);
            (!stand_in).then_some(row)
        })
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Map the first row, if there is one.
    pub fn first<T>(&self, map: impl FnOnce(&Row<'_>) -> Result<T, Problem>) -> Result<Option<T>, Problem> {
        self.iter().next().map(|row| map(&row)).transpose()
    }
}

/// Read a column a query is known to return; a mismatch is a bug surfaced as `503`.
pub fn column<T: Decode>(row: &Row<'_>, name: &str) -> Result<T, Problem> {
    row.get::<T>(name)
        .ok_or_else(|| Problem::unavailable(format!("unexpected value in column {name}")))
}

/// A time read as `col AT TIME ZONE 'UTC'`.
pub fn instant(row: &Row<'_>, name: &str) -> Result<DateTime<Utc>, Problem> {
    let naive: chrono::NaiveDateTime = column(row, name)?;
    Ok(naive.and_utc())
}

/// A time read as `col AT TIME ZONE 'UTC'`, in RFC 3339 (microseconds, `Z`).
pub fn utc(row: &Row<'_>, name: &str) -> Result<String, Problem> {
    Ok(rfc3339(instant(row, name)?))
}

/// An optional time read as `col AT TIME ZONE 'UTC'`, in RFC 3339.
pub fn utc_opt(row: &Row<'_>, name: &str) -> Result<Option<String>, Problem> {
    let naive: Option<chrono::NaiveDateTime> = column(row, name)?;
    Ok(naive.map(|t| rfc3339(t.and_utc())))
}

/// How every time is written in answers.
pub fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A UTC time as a parameter: bind it as `$n::timestamp AT TIME ZONE 'UTC'`
/// (Spin's datetime parameter only binds to `timestamp`).
pub fn utc_param(time: DateTime<Utc>) -> ParameterValue {
    use chrono::{Datelike, Timelike};
    ParameterValue::Datetime((
        time.year(),
        time.month() as u8,
        time.day() as u8,
        time.hour() as u8,
        time.minute() as u8,
        time.second() as u8,
        time.nanosecond(),
    ))
}
