//! Postgres through `spin:postgres/postgres@4.0.0`.
//!
//! Spin cannot read `timestamptz` columns (its driver decodes them as
//! zone-less date-times), so every query reads times as
//! `col AT TIME ZONE 'UTC'` and [`utc`] turns the value back into UTC.

use crate::config::variable;
use crate::Problem;
use chrono::{DateTime, Utc};
use spin_sdk::pg4::{Connection, Decode, ParameterValue, PgError, QueryError, Row, RowSet};

/// An open connection to the app's database.
pub struct Db(Connection);

/// A failed statement: kept apart from [`Problem`] so a caller can react to a
/// constraint it relies on (by SQLSTATE) before it becomes a `503`.
#[derive(Debug)]
pub struct DbError(pub Box<PgError>);

impl DbError {
    /// The SQLSTATE Postgres reported, if the statement reached it.
    pub fn sqlstate(&self) -> Option<&str> {
        match self.0.as_ref() {
            PgError::QueryFailed(QueryError::DbError(db)) => Some(db.code.as_str()),
            _ => None,
        }
    }
}

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

    pub fn query(&self, sql: &str, params: &[ParameterValue]) -> Result<RowSet, DbError> {
        self.0.query(sql, params).map_err(|e| DbError(Box::new(e)))
    }

    pub fn execute(&self, sql: &str, params: &[ParameterValue]) -> Result<u64, DbError> {
        self.0.execute(sql, params).map_err(|e| DbError(Box::new(e)))
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

/// Map the first row of `rows`, if there is one.
pub fn first<T>(
    rows: &RowSet,
    map: impl FnOnce(&Row<'_>) -> Result<T, Problem>,
) -> Result<Option<T>, Problem> {
    rows.rows().next().map(|row| map(&row)).transpose()
}
