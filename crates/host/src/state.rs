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
    outbound_http: OutboundHttp,
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
            outbound_http: OutboundHttp {
                component: component.clone(),
            },
            component,
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
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

/// Outbound `wasi:http` requests, as Spin sends them: to an `http(s)://`
/// origin the component's `allowed_outbound_hosts` lists (anything else is
/// `HTTP-request-denied` before any connection), then `http_client::send`
/// (a keep-alive pool, the guest's timeouts, the `Host` header from the URL).
/// Conformance checks compare the errors on both runtimes: a refused
/// host, a refused connection, a receiver that does not answer in time.
struct OutboundHttp {
    component: Arc<ComponentContext>,
}

/// What `send_request` hands back: the response, and a future for the I/O.
type HttpError = wasmtime_wasi_http::Error;
type IoDone = Box<dyn Future<Output = Result<(), HttpError>> + Send>;
type Sent = Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoDone), HttpError>> + Send>;

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: IoDone,
    ) -> Sent {
        // Errors of the guest's response body are the guest's to handle.
        _ = fut;
        let uri = request.uri().clone();
        let scheme = uri.scheme_str().unwrap_or("https").to_owned();
        let host = uri.host().unwrap_or_default().to_owned();
        let port = uri
            .port_u16()
            .or_else(|| crate::outbound::default_port(&scheme))
            .unwrap_or(0);
        let known_scheme = scheme == "http" || scheme == "https";
        if !known_scheme || host.is_empty() || !self.component.allowed_hosts.allows(&scheme, &host, port) {
            crate::outbound::report_denied(&self.component.id, &format!("{scheme}://{host}:{port}"));
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        // Spin sends no `Host` of the guest's: its client writes one from the URL.
        request.headers_mut().remove(http::header::HOST);
        if let Some(authority) = uri.authority().filter(|_| scheme == "https") {
            if let Ok(value) = http::HeaderValue::from_str(authority.as_str()) {
                request.headers_mut().insert(http::header::HOST, value);
            }
        }
        Box::new(crate::http_client::send(request, options))
    }
}
