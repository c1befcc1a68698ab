//! The HTTP trigger: Spin's routing, its `spin-*` request headers, a fresh
//! instance per request, and Spin's answers when nothing matches (`404`,
//! empty body) or a component fails (`500`, empty body). Unlike Spin, it
//! refuses oversized request heads and bodies before a component runs
//! ([`RequestLimits`]).

use crate::manifest::{App, HttpRoute};
use crate::routes::{Route, RouteMatch, Router};
use crate::runtime::{LoadedComponent, Runtime};
use crate::state::InstanceState;
use anyhow::{Context, Result};
use bytes::Bytes;
use commerce::ErrorCode;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

/// What a route leads to: the component and its wasi-http entry point.
struct Target {
    component: Arc<LoadedComponent>,
    proxy: ProxyPre<InstanceState>,
}

pub struct HttpTrigger {
    router: Router<Arc<Target>>,
    app_name: String,
    app_version: Option<String>,
    limits: RequestLimits,
}

/// What a client may send. The body has no limit here, as on Spin: it is
/// streamed into the component, which reads what it accepts (`edge::body`).
/// The head does: a total of header names and values over
/// `max_header_bytes` is `431` before any component runs (Spin has no such
/// limit; docs/host-vs-spin.md).
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Largest total of header names and values (`431` beyond). Heads larger
    /// than hyper's read buffer (~400 KiB) get hyper's bare `431`.
    pub max_header_bytes: usize,
}

impl Default for RequestLimits {
    fn default() -> RequestLimits {
        RequestLimits {
            max_header_bytes: 64 * 1024,
        }
    }
}

type Response = hyper::Response<HyperOutgoingBody>;

fn empty(status: u16) -> Response {
    text(status, "")
}

/// An `application/problem+json` answer in the shape the components give
/// (RFC 9457 members plus the stable `code`).
fn problem(code: ErrorCode, detail: String) -> Response {
    let document = serde_json::json!({
        "type": code.type_uri(),
        "title": code.title(),
        "status": code.status(),
        "code": code.as_str(),
        "detail": detail,
    });
    let body = Full::new(Bytes::from(document.to_string()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = hyper::Response::new(body);
    *response.status_mut() = hyper::StatusCode::from_u16(code.status()).expect("valid status");
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

fn text(status: u16, body: &'static str) -> Response {
    let body = Full::new(Bytes::from_static(body.as_bytes()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = hyper::Response::new(body);
    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("valid status");
    response
}

impl HttpTrigger {
    pub fn new(app: &App, runtime: &Runtime, limits: RequestLimits) -> Result<HttpTrigger> {
        let mut targets: HashMap<&str, Arc<Target>> = HashMap::new();
        let mut routes = Vec::new();
        let mut seen: HashMap<&str, &str> = HashMap::new();
        for trigger in &app.manifest.trigger.http {
            let HttpRoute::Path(raw) = &trigger.route else {
                continue; // private: reachable only by service chaining, which this host does not offer
            };
            let target = match targets.get(trigger.component.as_str()) {
                Some(target) => target.clone(),
                None => {
                    let component = runtime.components[&trigger.component].clone();
                    let proxy = ProxyPre::new(component.pre.clone())
                        .map_err(|e| anyhow::anyhow!("{e:?}"))
                        .with_context(|| {
                            format!(
                                "component {:?} does not export wasi:http/incoming-handler",
                                trigger.component
                            )
                        })?;
                    let target = Arc::new(Target { component, proxy });
                    targets.insert(&trigger.component, target.clone());
                    target
                }
            };
            // Spin keeps the last of two identical route strings and says so.
            if let Some(previous) = seen.insert(raw, &trigger.component) {
                tracing::error!(
                    "The following component routes are duplicates and will never be used:\n  {previous}: {raw} (duplicate of {})",
                    trigger.component
                );
                routes.retain(|r: &Route<Arc<Target>>| r.raw != *raw);
            }
            routes.push(Route::new(raw, target));
        }
        Ok(HttpTrigger {
            router: Router::new(routes),
            app_name: app.manifest.application.name.clone(),
            app_version: app.manifest.application.version.clone(),
            limits,
        })
    }

    /// Serve until `shutdown` resolves, then finish in-flight requests.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, client) = match accepted {
                        Ok(pair) => pair,
                        Err(e) => { tracing::warn!("accept failed: {e}"); continue; }
                    };
                    let _ = stream.set_nodelay(true);
                    let trigger = self.clone();
                    let service = hyper::service::service_fn(move |req| {
                        let trigger = trigger.clone();
                        async move { Ok::<_, std::convert::Infallible>(trigger.handle(req, client).await) }
                    });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::debug!("connection from {client}: {e}");
                        }
                    });
                }
                () = &mut shutdown => break,
            }
        }
        drop(listener);
        tracing::info!("shutting down: finishing in-flight requests");
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(std::time::Duration::from_secs(30)) => tracing::warn!("gave up waiting for in-flight requests"),
        }
        Ok(())
    }

    async fn handle(&self, req: hyper::Request<Incoming>, client: SocketAddr) -> Response {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let (response, component) = match self.route(req, client).await {
            Ok(pair) => pair,
            Err((e, component)) => {
                tracing::error!("Error processing request: {e:?}");
                (empty(500), component)
            }
        };
        tracing::info!(
            target: "edge_host::request",
            "{method} {path} {} {} {:.1}ms",
            response.status().as_u16(),
            component.as_deref().unwrap_or("-"),
            started.elapsed().as_secs_f64() * 1000.0
        );
        response
    }

    async fn route(
        &self,
        req: hyper::Request<Incoming>,
        client: SocketAddr,
    ) -> Result<(Response, Option<String>), (anyhow::Error, Option<String>)> {
        let path = req.uri().path().to_owned();
        if let Some(reserved) = path.strip_prefix("/.well-known/spin/") {
            return Ok((self.well_known(reserved), None));
        }
        let Some(matched) = self.router.route(&path) else {
            return Ok((empty(404), None));
        };
        let component_id = matched.route.target.component.context.id.clone();
        let target = matched.route.target.clone();
        if let Some(refusal) = self.limits.refusal(&req) {
            return Ok((refusal, Some(component_id)));
        }
        let req = prepare_request(req, &matched, client).map_err(|e| (e, Some(component_id.clone())))?;
        drop(matched);
        match invoke(&target, req).await {
            Ok(response) => Ok((response, Some(component_id))),
            Err(e) => Err((e, Some(component_id))),
        }
    }

    fn well_known(&self, reserved: &str) -> Response {
        match reserved {
            "health" => text(200, "OK"),
            "info" => {
                let info = serde_json::json!({
                    "name": self.app_name,
                    "version": self.app_version,
                    "host": "edge-host",
                });
                let body = Full::new(Bytes::from(info.to_string()))
                    .map_err(|never| match never {})
                    .boxed_unsync();
                let mut response = hyper::Response::new(body);
                response
                    .headers_mut()
                    .insert("content-type", HeaderValue::from_static("application/json"));
                response
            }
            _ => empty(404),
        }
    }
}

impl RequestLimits {
    /// Check the head: the problem to answer instead of running the
    /// component, if there is one.
    fn refusal(&self, req: &hyper::Request<Incoming>) -> Option<Response> {
        let header_bytes: usize = req
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        (header_bytes > self.max_header_bytes).then(|| {
            problem(
                ErrorCode::HeadersTooLarge,
                format!(
                    "the request headers may be at most {} bytes in all",
                    self.max_header_bytes
                ),
            )
        })
    }
}

/// Rewrite the request as Spin hands it to a guest: absolute URI from the
/// `Host` header, no `Connection` header, and the `spin-*` headers appended.
fn prepare_request(
    req: hyper::Request<Incoming>,
    matched: &RouteMatch<'_, Arc<Target>>,
    client: SocketAddr,
) -> Result<hyper::Request<Incoming>> {
    let (mut parts, body) = req.into_parts();
    // Spin's HTTP trigger reads every header value as UTF-8 before a
    // component runs, and answers 500 when one is not.
    if let Some((name, _)) = parts
        .headers
        .iter()
        .find(|(_, v)| std::str::from_utf8(v.as_bytes()).is_err())
    {
        anyhow::bail!("the value of header {name} is not UTF-8");
    }
    let host = parts
        .headers
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_else(|| "localhost".to_owned());
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_owned();
    parts.uri = hyper::Uri::builder()
        .scheme("http")
        .authority(host.as_str())
        .path_and_query(path_and_query.as_str())
        .build()
        .context("cannot build the request URI")?;
    parts.headers.remove(hyper::header::CONNECTION);

    let route = matched.route;
    let mut spin_headers = vec![
        ("spin-full-url", format!("http://{host}{path_and_query}")),
        ("spin-path-info", matched.path_info.clone()),
        ("spin-matched-route", route.based.clone()),
        ("spin-base-path", "/".to_owned()),
        ("spin-raw-component-route", route.raw.clone()),
        ("spin-component-route", route.component_route().to_owned()),
        ("spin-client-addr", client.to_string()),
    ];
    let param_headers: Vec<(String, String)> = matched
        .params
        .iter()
        .map(|(name, value)| {
            (
                format!("spin-path-match-{}", name.to_ascii_lowercase().replace('_', "-")),
                value.clone(),
            )
        })
        .collect();
    for (name, value) in spin_headers.drain(..) {
        parts
            .headers
            .append(name, HeaderValue::from_str(&value).context("header value")?);
    }
    for (name, value) in param_headers {
        parts.headers.append(
            HeaderName::from_bytes(name.as_bytes())?,
            HeaderValue::from_str(&value)?,
        );
    }
    Ok(hyper::Request::from_parts(parts, body))
}

/// Run the component's `wasi:http/incoming-handler` on a fresh instance.
async fn invoke(target: &Target, req: hyper::Request<Incoming>) -> Result<Response> {
    let mut store = target.component.new_store();
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let incoming = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, req)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let outparam = store
        .data_mut()
        .http()
        .new_response_outparam(sender)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let proxy_pre = target.proxy.clone();
    let mut guest = RunsToCompletion::new(async move {
        let proxy = proxy_pre.instantiate_async(&mut store).await?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, incoming, outparam)
            .await
    });
    // Drive the guest on this task: most guests set the response and return in
    // one go, and handing them to another task costs a cross-thread wake-up
    // per request. A guest still running once the head is sent (writing its
    // body, or working after its answer) carries on in a task of its own, and
    // so does one whose client goes away first (see `RunsToCompletion`).
    let mut receiver = receiver;
    let finished = tokio::select! {
        biased;
        head = &mut receiver => {
            guest.detach();
            return response_or_error(head.map_err(|_| anyhow::anyhow!("response channel closed")));
        }
        finished = &mut guest => finished,
    };
    match receiver.await {
        Ok(head) => response_or_error(Ok(head)),
        Err(_) => match finished {
            Ok(()) => anyhow::bail!("guest failed to produce a response prior to returning"),
            Err(e) => Err(anyhow::anyhow!("{e:?}").context("guest invocation failed")),
        },
    }
}

type GuestRun = std::pin::Pin<Box<dyn std::future::Future<Output = wasmtime::Result<()>> + Send>>;

/// A guest's run, which always runs to its end, as on Spin (whose trigger
/// runs every guest in a task of its own): if the request's task stops
/// polling it before it finished — the client went away — the rest of the
/// run moves to a task of its own instead of being cancelled mid-way (an
/// order half-paid, an event's first attempt never made).
struct RunsToCompletion(Option<GuestRun>);

impl RunsToCompletion {
    fn new(
        run: impl std::future::Future<Output = wasmtime::Result<()>> + Send + 'static,
    ) -> RunsToCompletion {
        RunsToCompletion(Some(Box::pin(run)))
    }

    /// Let the rest of the run go on in a task of its own.
    fn detach(&mut self) {
        if let Some(run) = self.0.take() {
            tokio::spawn(async move {
                if let Err(e) = run.await {
                    tracing::warn!("Component error after response started: {e:?}");
                }
            });
        }
    }
}

impl std::future::Future for RunsToCompletion {
    type Output = wasmtime::Result<()>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<wasmtime::Result<()>> {
        let Some(run) = self.0.as_mut() else {
            return std::task::Poll::Ready(Ok(()));
        };
        let outcome = std::task::ready!(run.as_mut().poll(cx));
        self.0 = None;
        std::task::Poll::Ready(outcome)
    }
}

impl Drop for RunsToCompletion {
    fn drop(&mut self) {
        self.detach();
    }
}

fn response_or_error(
    head: Result<Result<Response, wasmtime_wasi_http::p2::bindings::http::types::ErrorCode>>,
) -> Result<Response> {
    match head? {
        Ok(response) => Ok(response),
        Err(code) => anyhow::bail!("guest answered with an error: {code:?}"),
    }
}
