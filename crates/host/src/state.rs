//! The per-instance store data: WASI contexts plus what Spin's factors give a
//! component (its outbound allow-list, its variables, its Postgres pools).

use crate::outbound::AllowedHosts;
use crate::pg::PgPools;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

/// Everything about one component that outlives a single instance.
#[derive(Debug)]
pub struct ComponentContext {
    pub id: String,
    pub allowed_hosts: AllowedHosts,
    /// `[component.x.variables]`, rendered at start-up.
    pub variables: HashMap<String, String>,
    /// `[component.x] environment`.
    pub environment: Vec<(String, String)>,
    /// One pool per address, per component, as in Spin.
    pub pg_pools: PgPools,
    /// Redis connections the component's instances dropped, for the next `open`.
    pub idle_redis: Arc<crate::redis_host::IdleRedis>,
    /// Test setting: delay every Postgres and Redis call by a random 0..=this,
    /// to widen race windows (zero in normal runs).
    pub store_delay_max: std::time::Duration,
}

impl ComponentContext {
    /// Wait the random store delay, if one is configured.
    pub async fn store_delay(&self) {
        if !self.store_delay_max.is_zero() {
            let max = self.store_delay_max.as_micros() as u64;
            let micros = rand::random_range(0..=max);
            tokio::time::sleep(std::time::Duration::from_micros(micros)).await;
        }
    }
}

/// The data of one instance's `Store`: fresh for every request or cron event.
pub struct InstanceState {
    pub component: Arc<ComponentContext>,
    pub table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    outbound_http: NoOutboundHttp,
}

impl InstanceState {
    pub fn new(component: Arc<ComponentContext>) -> InstanceState {
        let mut wasi = WasiCtx::builder();
        // Spin sends guest stdout and stderr to the host's stderr.
        wasi.stdout(wasmtime_wasi::cli::stderr()).inherit_stderr();
        for (key, value) in &component.environment {
            wasi.env(key, value);
        }
        InstanceState {
            component,
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            outbound_http: NoOutboundHttp,
        }
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound_http,
        }
    }
}

/// Outbound `wasi:http` requests are refused with `HTTP-request-denied`:
/// none of the manifests this host runs allows an `http(s)://` host, and
/// Spin refuses a request to a host its component does not list (so does
/// this host, for every host; it has no HTTP client at all).
struct NoOutboundHttp;

/// What `send_request` hands back: the response, and a future for the I/O.
type HttpError = wasmtime_wasi_http::Error;
type IoDone = Box<dyn Future<Output = Result<(), HttpError>> + Send>;
type Sent = Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoDone), HttpError>> + Send>;

impl WasiHttpHooks for NoOutboundHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: IoDone,
    ) -> Sent {
        tracing::warn!(
            "Outbound network destination not allowed: {} (this host makes no outbound HTTP requests)",
            request.uri()
        );
        Box::new(async { Err(HttpError::HttpRequestDenied) })
    }
}
