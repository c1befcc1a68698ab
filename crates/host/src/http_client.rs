//! Outbound `wasi:http` requests sent as Spin 4 sends them: plain `http://`
//! through one keep-alive pool per process (Spin's hyper-util legacy client,
//! which also writes the `Host` header from the URL), the guest's
//! `connect-timeout` applied to connecting and its `first-byte-timeout` to
//! everything up to the response head (connecting included, as in Spin), 600 s
//! each when it sets none. `https://` goes through wasmtime's client (a TLS
//! connection each time; this host is for tests and loopback receivers).

use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Duration;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// What Spin waits for when the guest does not say.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

tokio::task_local! {
    /// The connect timeout of the request being sent (a pooled connector
    /// cannot take it as an argument).
    static CONNECT_TIMEOUT: Duration;
}

/// `HttpConnector` bounded by the request's connect timeout.
#[derive(Clone)]
struct Connector(HttpConnector);

/// Connecting took longer than the guest allowed.
#[derive(Debug)]
struct ConnectTimedOut;

impl std::fmt::Display for ConnectTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connect timed out")
    }
}

impl std::error::Error for ConnectTimedOut {}

type Connecting = Pin<
    Box<
        dyn Future<Output = Result<<HttpConnector as tower_service::Service<http::Uri>>::Response, BoxError>>
            + Send,
    >,
>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<http::Uri> for Connector {
    type Response = <HttpConnector as tower_service::Service<http::Uri>>::Response;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Connecting {
        let timeout = CONNECT_TIMEOUT.try_with(|t| *t).unwrap_or(DEFAULT_TIMEOUT);
        let connecting = self.0.call(uri);
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(connected) => connected.map_err(Into::into),
                Err(_) => Err(Box::new(ConnectTimedOut) as BoxError),
            }
        })
    }
}

static POOL: LazyLock<Client<Connector, WasiBody>> = LazyLock::new(|| {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(Connector(connector))
});

type IoDone = Box<dyn Future<Output = Result<(), Error>> + Send>;

/// Send an allowed request (see the module doc).
pub async fn send(
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<(http::Response<WasiBody>, IoDone), Error> {
    if request.uri().scheme() != Some(&http::uri::Scheme::HTTP) {
        let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
        return Ok((response.map(BodyExt::boxed_unsync), Box::new(io)));
    }
    let connect = options.and_then(|o| o.connect_timeout).unwrap_or(DEFAULT_TIMEOUT);
    let first_byte = options
        .and_then(|o| o.first_byte_timeout)
        .unwrap_or(DEFAULT_TIMEOUT);
    let sent = CONNECT_TIMEOUT.scope(connect, tokio::time::timeout(first_byte, POOL.request(request)));
    let response = sent
        .await
        .map_err(|_| Error::ConnectionReadTimeout)?
        .map_err(client_error)?;
    let response = response.map(|body| body.map_err(Error::from).boxed_unsync());
    Ok((response, Box::new(async { Ok(()) })))
}

/// The `wasi:http` error of a failed request, as Spin's client reports it.
fn client_error(error: hyper_util::client::legacy::Error) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&error);
    while let Some(cause) = source {
        if cause.is::<ConnectTimedOut>() {
            return Error::ConnectionTimeout;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => Error::ConnectionRefused,
                std::io::ErrorKind::TimedOut => Error::ConnectionTimeout,
                _ => Error::ConnectionTerminated,
            };
        }
        source = cause.source();
    }
    Error::HttpProtocolError
}
