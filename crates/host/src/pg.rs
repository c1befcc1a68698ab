//! `spin:postgres/postgres@4.0.0` on tokio-postgres, as Spin implements it.
//!
//! - One deadpool pool per address per component (64 connections, recycled
//!   with a session clean-up); a pooled connection is held for the life of the
//!   guest's `connection` resource, so statements on one resource share a
//!   session.
//! - Values convert exactly as in Spin, including its limits: `timestamp` and
//!   `timestamptz` both decode as a zone-less date-time, which Postgres' driver
//!   only accepts for `timestamp` — reading a `timestamptz` column fails as it
//!   does on Spin, so components read `col AT TIME ZONE 'UTC'`. Parameters are
//!   not coerced: an `int64` binds only to `int8`.
//! - Errors carry Spin's shapes: `query-failed(db-error)` with the SQLSTATE
//!   for an `execute`, and for a `query` that fails while it is prepared or
//!   its parameters bound; `query-failed(text)` for a `query` that fails
//!   while it runs (a constraint violated, a division by zero): Spin reads
//!   its rows as a stream and reports a failure there as the text of the
//!   error, SQLSTATE included only as words. So no guest can lean on a code
//!   here that Spin would not give it. `connection-failed` for opening.
//! - TLS as Spin negotiates it: `sslmode=disable` connects in clear; any
//!   other mode (`prefer`, the default, and `require`) goes through
//!   native-tls with the system's roots, so a server that offers TLS must
//!   present a certificate that verifies (a self-signed one fails `open`,
//!   as on Spin), and `require` fails against a server without TLS.
//! - A `query` whose result is empty is refused at once with an error naming
//!   spinframework/spin#3671: Spin 4.0.0–4.0.2 never answer it (the request
//!   hangs), so nothing that reads rows may depend on it.
//! - Statements are prepared once per pooled connection and reused (Spin
//!   prepares every statement every time): the same results and errors, one
//!   round trip fewer per statement.

use crate::bindings::spin::spin::postgres::postgres::{
    Column, DbDataType, DbError, DbValue, Error, Host, HostConnection, ParameterValue, QueryError, RowSet,
};
use crate::state::InstanceState;
use anyhow::Context as _;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::TryStreamExt;
use postgres_native_tls::MakeTlsConnector;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type};
use tokio_postgres::Row;
use wasmtime::component::Resource;

/// Connections per pool unless configured: Spin's fixed size.
pub const DEFAULT_POOL_SIZE: usize = 64;

/// What a guest gets for a `query` with no rows.
pub const EMPTY_RESULT: &str = "the query returned no rows: Spin 4.0.0-4.0.2 never answer such a query \
     (the request hangs; spinframework/spin#3671), so this host refuses it. Read rows with a statement \
     that always yields one (edge::pg::Query), or use `execute`.";

/// A guest's open connection: a pooled client, returned to its pool on drop.
pub struct PgConnection {
    client: deadpool_postgres::Object,
}

/// The pools of one component, by address.
#[derive(Debug)]
pub struct PgPools {
    size: usize,
    pools: Mutex<HashMap<String, Pool>>,
}

impl PgPools {
    /// Pools of at most `size` connections each (Spin's newer runtime config
    /// has the same knob, `[outbound_pg] max_connections`).
    pub fn new(size: usize) -> PgPools {
        PgPools {
            size,
            pools: Mutex::default(),
        }
    }

    fn pool_for(&self, address: &str, config: tokio_postgres::Config) -> Result<Pool, String> {
        let mut pools = self.pools.lock().expect("pool map lock poisoned");
        if let Some(pool) = pools.get(address) {
            return Ok(pool.clone());
        }
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Clean,
        };
        // As Spin: only `disable` skips TLS; the connector verifies the
        // certificate and host name against the system's roots.
        let manager = if config.get_ssl_mode() == tokio_postgres::config::SslMode::Disable {
            Manager::from_config(config, tokio_postgres::NoTls, manager_config)
        } else {
            let tls = native_tls::TlsConnector::new().map_err(|e| e.to_string())?;
            Manager::from_config(config, MakeTlsConnector::new(tls), manager_config)
        };
        let pool = Pool::builder(manager)
            .max_size(self.size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| e.to_string())?;
        pools.insert(address.to_owned(), pool.clone());
        Ok(pool)
    }
}

impl InstanceState {
    async fn open_pg(&mut self, address: &str) -> Result<PgConnection, Error> {
        let config: tokio_postgres::Config = address
            .parse()
            .map_err(|e: tokio_postgres::Error| Error::ConnectionFailed(e.to_string()))?;
        let ports = config.get_ports();
        for (i, host) in config.get_hosts().iter().enumerate() {
            let tokio_postgres::config::Host::Tcp(host) = host else {
                return Err(Error::ConnectionFailed(
                    "Unix sockets are not supported on WebAssembly".into(),
                ));
            };
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            if !self.component.allowed_hosts.allows("postgres", host, port) {
                let shown = match ports.get(i).or(ports.first()) {
                    Some(port) => format!("postgres://{host}:{port}"),
                    None => format!("postgres://{host}"),
                };
                crate::outbound::report_denied(&self.component.id, &shown);
                return Err(Error::ConnectionFailed(format!(
                    "address {shown} is not permitted"
                )));
            }
        }
        let pool = self
            .component
            .pg_pools
            .pool_for(address, config)
            .map_err(|e| Error::ConnectionFailed(format!("TLS could not be set up: {e}")))?;
        let client = pool
            .get()
            .await
            .map_err(|e| Error::ConnectionFailed(format!("{:?}", anyhow::Error::from(e))))?;
        Ok(PgConnection { client })
    }
}

impl Host for InstanceState {}

impl HostConnection for InstanceState {
    async fn open(&mut self, address: String) -> wasmtime::Result<Result<Resource<PgConnection>, Error>> {
        self.component.store_delay().await;
        Ok(match self.open_pg(&address).await {
            Ok(connection) => Ok(self.table.push(connection)?),
            Err(e) => Err(e),
        })
    }

    async fn query(
        &mut self,
        connection: Resource<PgConnection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<RowSet, Error>> {
        self.component.store_delay().await;
        let client = &self.table.get(&connection)?.client;
        let params = match to_sql_parameters(&params) {
            Ok(params) => params,
            Err(e) => return Ok(Err(Error::BadParameter(format!("{e:?}")))),
        };
        let prepared = match client.prepare_cached(&statement).await {
            Ok(prepared) => prepared,
            Err(e) => return Ok(Err(query_failed(e))),
        };
        // As Spin: a failure before the rows start (binding) has its code…
        let stream = match client.query_raw(&prepared, as_refs(&params)).await {
            Ok(stream) => stream,
            Err(e) => return Ok(Err(query_failed(e))),
        };
        // …one while they come is text: Spin's row stream turns the error
        // into `anyhow` and reports its `Debug` form, which prints the
        // error's own `Debug` form.
        let rows: Vec<Row> = match stream.try_collect().await {
            Ok(rows) => rows,
            Err(e) => {
                let text = format!("{:?}", query_failed(e));
                return Ok(Err(Error::QueryFailed(QueryError::Text(text))));
            }
        };
        // Spin describes the columns from the first row and, on 4.0.0–4.0.2,
        // waits for it forever when there is none. Fail loudly instead.
        let Some(first) = rows.first() else {
            tracing::error!(
                component = %self.component.id,
                statement = %statement.trim(),
                "{EMPTY_RESULT}"
            );
            return Ok(Err(Error::QueryFailed(QueryError::Text(EMPTY_RESULT.into()))));
        };
        let columns = infer_columns(first);
        let converted = rows
            .iter()
            .map(convert_row)
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(|e| Error::QueryFailed(QueryError::Text(format!("{e:?}"))));
        Ok(converted.map(|rows| RowSet { columns, rows }))
    }

    async fn execute(
        &mut self,
        connection: Resource<PgConnection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        self.component.store_delay().await;
        let client = &self.table.get(&connection)?.client;
        let params = match to_sql_parameters(&params) {
            Ok(params) => params,
            Err(e) => return Ok(Err(Error::ValueConversionFailed(format!("{e:?}")))),
        };
        Ok(client
            .execute(&statement, &as_refs(&params))
            .await
            .map_err(query_failed))
    }

    async fn drop(&mut self, connection: Resource<PgConnection>) -> wasmtime::Result<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}

fn query_failed(e: tokio_postgres::Error) -> Error {
    let Some(db) = e.as_db_error() else {
        return Error::QueryFailed(QueryError::Text(format!("{e:?}")));
    };
    let optional = [
        ("column", db.column().map(str::to_owned)),
        ("constraint", db.constraint().map(str::to_owned)),
        ("routine", db.routine().map(str::to_owned)),
        ("hint", db.hint().map(str::to_owned)),
        ("table", db.table().map(str::to_owned)),
        ("datatype", db.datatype().map(str::to_owned)),
        ("schema", db.schema().map(str::to_owned)),
        ("file", db.file().map(str::to_owned)),
        ("line", db.line().map(|l| l.to_string())),
        ("where_", db.where_().map(str::to_owned)),
    ];
    Error::QueryFailed(QueryError::DbError(DbError {
        as_text: format!("{e:?}"),
        severity: db.severity().to_owned(),
        code: db.code().code().to_owned(),
        message: db.message().to_owned(),
        detail: db.detail().map(str::to_owned),
        extras: optional
            .into_iter()
            .filter_map(|(name, value)| value.map(|v| (name.to_owned(), v)))
            .collect(),
    }))
}

fn as_refs(params: &[Box<dyn ToSql + Send + Sync>]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
}

fn infer_columns(row: &Row) -> Vec<Column> {
    row.columns()
        .iter()
        .map(|column| Column {
            name: column.name().to_owned(),
            data_type: data_type(column.type_()),
        })
        .collect()
}

fn data_type(ty: &Type) -> DbDataType {
    match *ty {
        Type::BOOL => DbDataType::Boolean,
        Type::CHAR => DbDataType::Int8,
        Type::INT2 => DbDataType::Int16,
        Type::INT4 => DbDataType::Int32,
        Type::INT8 => DbDataType::Int64,
        Type::FLOAT4 => DbDataType::Floating32,
        Type::FLOAT8 => DbDataType::Floating64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR => DbDataType::Str,
        Type::BYTEA => DbDataType::Binary,
        Type::DATE => DbDataType::Date,
        Type::TIME => DbDataType::Time,
        Type::TIMESTAMP | Type::TIMESTAMPTZ => DbDataType::Datetime,
        Type::UUID => DbDataType::Uuid,
        Type::JSONB => DbDataType::Jsonb,
        Type::NUMERIC => DbDataType::Decimal,
        Type::INT4_ARRAY => DbDataType::ArrayInt32,
        Type::INT8_ARRAY => DbDataType::ArrayInt64,
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY => DbDataType::ArrayStr,
        ref other => DbDataType::Other(other.name().to_owned()),
    }
}

fn convert_row(row: &Row) -> anyhow::Result<Vec<DbValue>> {
    (0..row.len()).map(|i| convert_value(row, i)).collect()
}

/// Read column `i` as `T`, mapping NULL to `db-null`.
fn read<'a, T: FromSql<'a>>(
    row: &'a Row,
    i: usize,
    wrap: impl FnOnce(T) -> DbValue,
) -> anyhow::Result<DbValue> {
    let value: Option<T> = row.try_get(i)?;
    Ok(value.map(wrap).unwrap_or(DbValue::DbNull))
}

fn convert_value(row: &Row, i: usize) -> anyhow::Result<DbValue> {
    use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
    match *row.columns()[i].type_() {
        Type::BOOL => read(row, i, DbValue::Boolean),
        Type::INT2 => read(row, i, DbValue::Int16),
        Type::INT4 => read(row, i, DbValue::Int32),
        Type::INT8 => read(row, i, DbValue::Int64),
        Type::FLOAT4 => read(row, i, DbValue::Floating32),
        Type::FLOAT8 => read(row, i, DbValue::Floating64),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR => read(row, i, DbValue::Str),
        Type::BYTEA => read(row, i, DbValue::Binary),
        Type::DATE => read(row, i, |d: NaiveDate| {
            DbValue::Date((d.year(), d.month() as u8, d.day() as u8))
        }),
        Type::TIME => read(row, i, |t: NaiveTime| {
            DbValue::Time((t.hour() as u8, t.minute() as u8, t.second() as u8, t.nanosecond()))
        }),
        // As in Spin: both decode as NaiveDateTime, which the driver accepts
        // only for `timestamp`, so a `timestamptz` column fails here.
        Type::TIMESTAMP | Type::TIMESTAMPTZ => read(row, i, |t: NaiveDateTime| {
            DbValue::Datetime((
                t.year(),
                t.month() as u8,
                t.day() as u8,
                t.hour() as u8,
                t.minute() as u8,
                t.second() as u8,
                t.nanosecond(),
            ))
        }),
        Type::UUID => read(row, i, |u: uuid::Uuid| DbValue::Uuid(u.to_string())),
        Type::JSONB => {
            let value: Option<serde_json::Value> = row.try_get(i)?;
            Ok(match value {
                Some(v) => DbValue::Jsonb(serde_json::to_vec(&v)?),
                None => DbValue::DbNull,
            })
        }
        Type::NUMERIC => read(row, i, |d: rust_decimal::Decimal| DbValue::Decimal(d.to_string())),
        Type::INT4_ARRAY => read(row, i, DbValue::ArrayInt32),
        Type::INT8_ARRAY => read(row, i, DbValue::ArrayInt64),
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY => read(row, i, DbValue::ArrayStr),
        _ => read(row, i, |raw: RawValue| DbValue::Unsupported(raw.0)),
    }
}

/// Any column's wire bytes, for types Spin reports as `unsupported`.
struct RawValue(Vec<u8>);

impl<'a> FromSql<'a> for RawValue {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue(raw.to_vec()))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// SQL NULL for a parameter of any type.
#[derive(Debug)]
struct PgNull;

impl ToSql for PgNull {
    fn to_sql(
        &self,
        _: &Type,
        _: &mut tokio_postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(IsNull::Yes)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

fn to_sql_parameters(params: &[ParameterValue]) -> anyhow::Result<Vec<Box<dyn ToSql + Send + Sync>>> {
    params.iter().map(to_sql_parameter).collect()
}

fn to_sql_parameter(value: &ParameterValue) -> anyhow::Result<Box<dyn ToSql + Send + Sync>> {
    use chrono::{NaiveDate, NaiveTime};
    Ok(match value {
        ParameterValue::Boolean(v) => Box::new(*v),
        ParameterValue::Int8(v) => Box::new(*v),
        ParameterValue::Int16(v) => Box::new(*v),
        ParameterValue::Int32(v) => Box::new(*v),
        ParameterValue::Int64(v) => Box::new(*v),
        ParameterValue::Floating32(v) => Box::new(*v),
        ParameterValue::Floating64(v) => Box::new(*v),
        ParameterValue::Str(v) => Box::new(v.clone()),
        ParameterValue::Binary(v) => Box::new(v.clone()),
        ParameterValue::Date((y, m, d)) => {
            Box::new(NaiveDate::from_ymd_opt(*y, (*m).into(), (*d).into()).context("invalid date")?)
        }
        ParameterValue::Time((h, m, s, ns)) => Box::new(
            NaiveTime::from_hms_nano_opt((*h).into(), (*m).into(), (*s).into(), *ns)
                .context("invalid time")?,
        ),
        ParameterValue::Datetime((y, mo, d, h, mi, s, ns)) => Box::new(
            NaiveDate::from_ymd_opt(*y, (*mo).into(), (*d).into())
                .and_then(|date| date.and_hms_nano_opt((*h).into(), (*mi).into(), (*s).into(), *ns))
                .context("invalid datetime")?,
        ),
        ParameterValue::Timestamp(secs) => {
            Box::new(chrono::DateTime::<chrono::Utc>::from_timestamp(*secs, 0).context("invalid timestamp")?)
        }
        ParameterValue::Uuid(v) => Box::new(uuid::Uuid::parse_str(v)?),
        ParameterValue::Jsonb(v) => Box::new(serde_json::from_slice::<serde_json::Value>(v)?),
        ParameterValue::Decimal(v) => Box::new(rust_decimal::Decimal::from_str_exact(v)?),
        ParameterValue::ArrayInt32(v) => Box::new(v.clone()),
        ParameterValue::ArrayInt64(v) => Box::new(v.clone()),
        ParameterValue::ArrayStr(v) => Box::new(v.clone()),
        ParameterValue::DbNull => Box::new(PgNull),
        ParameterValue::RangeInt32(_)
        | ParameterValue::RangeInt64(_)
        | ParameterValue::RangeDecimal(_)
        | ParameterValue::ArrayDecimal(_)
        | ParameterValue::Interval(_) => {
            anyhow::bail!("this local host does not support range, decimal-array or interval parameters")
        }
    })
}
