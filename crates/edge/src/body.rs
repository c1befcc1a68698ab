//! Request bodies, read as a stream and never past their limit.
//!
//! A body announced larger than [`MAX_BODY_BYTES`] (`Content-Length`) is
//! refused without reading a byte; one sent without a length (chunked) is
//! refused when the chunk that passes the limit arrives. Either way the
//! component holds at most the limit plus one chunk (16 KiB) in memory.
//!
//! After a `413` is sent, up to [`DRAIN_BYTES`] more are read and thrown
//! away: most clients write their whole body before reading the answer, and
//! a connection closed on unread data is reset, which would lose the `413`
//! for a body only a little too large. A body larger still is cut off.

use crate::request::{Request, MAX_BODY_BYTES};
use crate::Problem;
use commerce::ErrorCode;
use futures::{Stream, StreamExt};
use std::pin::Pin;

/// How much of a refused body is read and discarded after the `413`.
pub const DRAIN_BYTES: usize = 1024 * 1024;

/// Why a body was not read.
pub struct Refusal {
    pub problem: Problem,
    /// Whether the rest of the body is still on the wire (drain it after answering).
    pub unread: bool,
}

fn too_large() -> Problem {
    Problem::new(
        ErrorCode::PayloadTooLarge,
        format!("the body may be at most {MAX_BODY_BYTES} bytes"),
    )
}

/// Whether a `Content-Length` already says the body is over the limit.
fn announced_too_large(content_length: Option<&[u8]>) -> bool {
    let Some(digits) = content_length.map(<[u8]>::trim_ascii) else {
        return false;
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    // Digits beyond what a u64 holds are a length over any limit.
    std::str::from_utf8(digits)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .is_none_or(|length| length > MAX_BODY_BYTES as u64)
}

/// The bytes read so far, refusing the chunk that would pass the limit.
#[derive(Default)]
struct Limited(Vec<u8>);

impl Limited {
    fn push(&mut self, chunk: &[u8]) -> Result<(), Problem> {
        if self.0.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        self.0.extend_from_slice(chunk);
        Ok(())
    }
}

/// Read the body of `head` from `body`, up to the limit.
pub async fn read<S, E>(head: &Request, mut body: Pin<&mut S>) -> Result<Vec<u8>, Refusal>
where
    S: Stream<Item = Result<Vec<u8>, E>>,
    E: std::fmt::Debug,
{
    // A repeated or unreadable Content-Length is left to the read, which
    // stops at the limit all the same.
    if announced_too_large(head.header("content-length").ok().flatten()) {
        return Err(Refusal {
            problem: too_large(),
            unread: true,
        });
    }
    let mut read = Limited::default();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Refusal {
            problem: Problem::new(
                ErrorCode::InvalidRequest,
                format!("the request body could not be read ({e:?})"),
            ),
            unread: false,
        })?;
        read.push(&chunk).map_err(|problem| Refusal {
            problem,
            unread: true,
        })?;
    }
    Ok(read.0)
}

/// Read and discard up to [`DRAIN_BYTES`] of a refused body.
pub async fn drain<S, E>(mut body: Pin<&mut S>)
where
    S: Stream<Item = Result<Vec<u8>, E>>,
{
    let mut left = DRAIN_BYTES;
    while let Some(Ok(chunk)) = body.next().await {
        if chunk.len() >= left {
            return;
        }
        left -= chunk.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_refused_at_the_chunk_that_passes_the_limit() {
        let mut read = Limited::default();
        read.push(&vec![b' '; MAX_BODY_BYTES - 1]).unwrap();
        read.push(b"x").unwrap();
        let problem = read.push(b"y").unwrap_err();
        assert_eq!(problem.code, ErrorCode::PayloadTooLarge);
        assert_eq!(read.0.len(), MAX_BODY_BYTES, "nothing past the limit is kept");
    }

    /// A chunked body of `chunks` chunks of 16 KiB, counting what was taken from it.
    fn chunked(
        chunks: usize,
        taken: &std::cell::Cell<usize>,
    ) -> impl Stream<Item = Result<Vec<u8>, ()>> + '_ {
        futures::stream::iter(0..chunks).map(move |_| {
            taken.set(taken.get() + 1);
            Ok(vec![b' '; 16 * 1024])
        })
    }

    #[test]
    fn a_huge_chunked_body_is_refused_after_the_limit_and_drained_no_further() {
        let head = Request::new(spin_sdk::http::Method::Post, "/", Vec::new(), Vec::new());
        let taken = std::cell::Cell::new(0);
        let body = chunked(32 * 1024, &taken); // 512 MiB
        let mut body = std::pin::pin!(body);
        let refusal = futures::executor::block_on(read(&head, body.as_mut()))
            .err()
            .unwrap();
        assert_eq!(refusal.problem.code, ErrorCode::PayloadTooLarge);
        assert!(refusal.unread);
        assert_eq!(taken.get(), MAX_BODY_BYTES / (16 * 1024) + 1);
        futures::executor::block_on(drain(body.as_mut()));
        let drained = taken.get() - (MAX_BODY_BYTES / (16 * 1024) + 1);
        assert_eq!(drained, DRAIN_BYTES / (16 * 1024), "{drained} chunks drained");
    }

    #[test]
    fn a_body_within_the_limit_is_read_whole() {
        let head = Request::new(spin_sdk::http::Method::Post, "/", Vec::new(), Vec::new());
        let taken = std::cell::Cell::new(0);
        let body = std::pin::pin!(chunked(4, &taken));
        let bytes = futures::executor::block_on(read(&head, body)).ok().unwrap();
        assert_eq!(bytes.len(), 4 * 16 * 1024);
    }

    #[test]
    fn a_content_length_over_the_limit_is_refused_unread() {
        let limit = MAX_BODY_BYTES.to_string();
        let over = (MAX_BODY_BYTES + 1).to_string();
        assert!(!announced_too_large(None));
        assert!(!announced_too_large(Some(limit.as_bytes())));
        assert!(announced_too_large(Some(over.as_bytes())));
        assert!(announced_too_large(Some(b"99999999999999999999")));
        // Not a number: left to the read itself, which still stops at the limit.
        assert!(!announced_too_large(Some(b"lots")));
    }
}
