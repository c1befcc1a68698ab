//! One round of attempts over Spin's outbound HTTP (`wasi:http/outgoing-handler`).
//!
//! Every request of the round is handed to Spin before any answer is waited
//! for, so a round takes as long as its slowest receiver, at most the
//! delivery timeout: Spin itself stops waiting (request options
//! `connect-timeout` and `first-byte-timeout`), the component never sleeps.

use crate::config::Target;
use std::time::{Duration, Instant};
// The bindings spin-sdk itself sends requests with (its `send` takes no
// request options, and a second binding of wasi:http would add ~150 KiB).
use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::{
    ErrorCode, Fields, FutureIncomingResponse, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};

/// Delivered means a `2xx` within this (SPEC §9).
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// An event on its way.
pub struct Message<'a> {
    pub id: &'a str,
    pub body: &'a [u8],
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The receiver answered with this status.
    Status(u16),
    /// No answer: Spin's error code (`ConnectionRefused`, `ConnectionReadTimeout`, …).
    Error(String),
}

impl Answer {
    pub fn delivered(&self) -> bool {
        matches!(self, Answer::Status(status) if (200..300).contains(status))
    }
}

/// Post every message to `target`, all at once; each answer with how long it took.
pub fn post_all(target: &Target, messages: &[Message<'_>]) -> Vec<(Answer, Duration)> {
    let timestamp = chrono::Utc::now().timestamp();
    let started = Instant::now();
    let in_flight: Vec<Result<FutureIncomingResponse, Answer>> = messages
        .iter()
        .map(|message| start(target, message, timestamp))
        .collect();
    in_flight
        .into_iter()
        .map(|sent| {
            let answer = match sent {
                Ok(future) => wait(&future),
                Err(answer) => answer,
            };
            (answer, started.elapsed())
        })
        .collect()
}

fn error(code: &ErrorCode) -> Answer {
    // The variant's name (`ConnectionRefused`), without a payload's details.
    let text = format!("{code:?}");
    let text = text.strip_prefix("ErrorCode::").unwrap_or(&text);
    let name = text.split(['(', ' ', '{']).next().unwrap_or(text);
    Answer::Error(name.to_owned())
}

/// Send the request and its body; the answer is waited for later.
fn start(target: &Target, message: &Message<'_>, timestamp: i64) -> Result<FutureIncomingResponse, Answer> {
    let signature = target.secret.sign(message.id, timestamp, message.body);
    let headers = Fields::from_list(&[
        ("content-type".to_owned(), b"application/json".to_vec()),
        // A length, not chunks: every receiver reads that (not all take chunked bodies).
        (
            "content-length".to_owned(),
            message.body.len().to_string().into_bytes(),
        ),
        ("webhook-id".to_owned(), message.id.as_bytes().to_vec()),
        ("webhook-timestamp".to_owned(), timestamp.to_string().into_bytes()),
        ("webhook-signature".to_owned(), signature.into_bytes()),
    ])
    .map_err(|e| Answer::Error(format!("headers refused: {e:?}")))?;
    let request = OutgoingRequest::new(headers);
    let scheme = if target.https { Scheme::Https } else { Scheme::Http };
    let set = [
        request.set_method(&Method::Post),
        request.set_scheme(Some(&scheme)),
        request.set_authority(Some(&target.authority)),
        request.set_path_with_query(Some(&target.path_and_query)),
    ];
    if set.iter().any(Result::is_err) {
        return Err(Answer::Error("the webhook URL was refused".into()));
    }
    let body = request
        .body()
        .map_err(|()| Answer::Error("no request body".into()))?;
    let options = RequestOptions::new();
    let nanos = TIMEOUT.as_nanos() as u64;
    // A runtime without these options still has its own (Spin: 600 s).
    let _ = options.set_connect_timeout(Some(nanos));
    let _ = options.set_first_byte_timeout(Some(nanos));
    let future = outgoing_handler::handle(request, Some(options)).map_err(|code| error(&code))?;
    write_body(body, message.body)?;
    Ok(future)
}

fn write_body(body: OutgoingBody, bytes: &[u8]) -> Result<(), Answer> {
    let stream = body
        .write()
        .map_err(|()| Answer::Error("no body stream".into()))?;
    // `blocking-write-and-flush` takes at most 4 KiB at a time.
    for chunk in bytes.chunks(4096) {
        stream
            .blocking_write_and_flush(chunk)
            .map_err(|e| Answer::Error(format!("the body could not be sent: {e:?}")))?;
    }
    drop(stream);
    OutgoingBody::finish(body, None).map_err(|code| error(&code))
}

fn wait(future: &FutureIncomingResponse) -> Answer {
    future.subscribe().block();
    match future.get() {
        Some(Ok(Ok(response))) => Answer::Status(response.status()),
        Some(Ok(Err(code))) => error(&code),
        Some(Err(())) | None => Answer::Error("no response".into()),
    }
}
