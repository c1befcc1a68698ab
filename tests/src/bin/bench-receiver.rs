//! `bench-receiver <port>`: a webhook receiver for the benchmarks, as cheap as
//! a receiver can be (the load generator, the app, its stores and this share
//! the machine): every `POST` is answered `204` at once and counted;
//! `GET /count` answers the count. Signatures are checked by the tests'
//! receiver (tests/receiver/receiver.py), not here.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("usage: bench-receiver <port>"))?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("Serving http://127.0.0.1:{port}");
    let count = Arc::new(AtomicU64::new(0));
    loop {
        let (stream, _) = listener.accept().await?;
        let count = count.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let count = count.clone();
                async move {
                    let (status, body) = if request.method() == Method::POST {
                        let _ = request.into_body().collect().await;
                        count.fetch_add(1, Ordering::Relaxed);
                        (StatusCode::NO_CONTENT, String::new())
                    } else {
                        (
                            StatusCode::OK,
                            format!("{{\"deliveries\":{}}}", count.load(Ordering::Relaxed)),
                        )
                    };
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    *response.status_mut() = status;
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}
