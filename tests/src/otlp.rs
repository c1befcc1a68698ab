//! A real OTLP/HTTP receiver (a collector's front door) for the end-to-end
//! suite: Spin, run with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing here, posts
//! its traces and logs as protobuf, which is decoded with OpenTelemetry's own
//! message types (`opentelemetry-proto`) and kept for the test to query.

use anyhow::Result;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use std::sync::{Arc, Mutex};

/// A span as received.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    /// String-valued attributes (`db.system`, `http.request.method`, …).
    pub attributes: Vec<(String, String)>,
}

impl Span {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    /// Bodies of the log records (Spin forwards the components' output).
    logs: Vec<String>,
}

/// The receiver; it stops when dropped.
pub struct Collector {
    /// What to give Spin as `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    received: Arc<Mutex<Received>>,
    server: tokio::task::JoinHandle<()>,
}

impl Collector {
    pub async fn start() -> Result<Collector> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let received = Arc::new(Mutex::new(Received::default()));
        let store = received.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| export(request, store.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Collector {
            endpoint,
            received,
            server,
        })
    }

    /// The spans received so far of trace `trace_id`.
    pub fn spans_of(&self, trace_id: &str) -> Vec<Span> {
        let received = self.received.lock().unwrap();
        received
            .spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }

    /// The log record bodies received so far.
    pub fn logs(&self) -> Vec<String> {
        self.received.lock().unwrap().logs.clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One export request: `POST /v1/traces` or `/v1/logs` (protobuf); anything
/// else (metrics) is accepted and dropped.
async fn export(
    request: Request<Incoming>,
    store: Arc<Mutex<Received>>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = request.uri().path().to_owned();
    let body = request.into_body().collect().await?.to_bytes();
    let mut received = store.lock().unwrap();
    match path.as_str() {
        "/v1/traces" => {
            if let Ok(export) = ExportTraceServiceRequest::decode(body) {
                for span in export
                    .resource_spans
                    .into_iter()
                    .flat_map(|r| r.scope_spans)
                    .flat_map(|s| s.spans)
                {
                    let attributes = span
                        .attributes
                        .iter()
                        .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                            Value::StringValue(v) => Some((kv.key.clone(), v.clone())),
                            _ => None,
                        })
                        .collect();
                    received.spans.push(Span {
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        name: span.name,
                        attributes,
                    });
                }
            }
        }
        "/v1/logs" => {
            if let Ok(export) = ExportLogsServiceRequest::decode(body) {
                for record in export
                    .resource_logs
                    .into_iter()
                    .flat_map(|r| r.scope_logs)
                    .flat_map(|s| s.log_records)
                {
                    if let Some(Value::StringValue(text)) = record.body.and_then(|b| b.value) {
                        received.logs.push(text);
                    }
                }
            }
        }
        _ => {}
    }
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::new()))
        .expect("a static response"))
}
