//! HTTP as a hostile client writes it, byte by byte: a chunked body of any
//! size, written while the answer is read (so an early `413` is seen even
//! when the server stops reading), and the memory of the process that
//! served it.

use anyhow::{bail, Context, Result};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An answer read off the wire.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    /// Header names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Body bytes written before the answer was complete.
    pub written_before_answer: u64,
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// `POST path` with a chunked body of `total` bytes (see [`send_chunked`]).
pub async fn post_chunked(
    base_url: &str,
    path: &str,
    headers: &[(&str, &str)],
    total: u64,
) -> Result<RawReply> {
    send_chunked(base_url, "POST", path, headers, total).await
}

/// `method path` to `base_url` (`http://host:port`) with `headers` and a
/// chunked body of `total` bytes of spaces, written in 64 KiB chunks by one
/// task while another reads the answer. Returns as soon as the answer is
/// read; the rest of the body is then abandoned.
pub async fn send_chunked(
    base_url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    total: u64,
) -> Result<RawReply> {
    let address = base_url.trim_start_matches("http://").trim_end_matches('/');
    let stream = TcpStream::connect(address)
        .await
        .with_context(|| format!("connect to {address}"))?;
    let (mut reader, mut writer) = stream.into_split();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nTransfer-Encoding: chunked\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer_count = written.clone();
    let writing = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        const CHUNK: usize = 64 * 1024;
        let chunk = {
            let mut chunk = format!("{CHUNK:x}\r\n").into_bytes();
            chunk.extend(std::iter::repeat_n(b' ', CHUNK));
            chunk.extend_from_slice(b"\r\n");
            chunk
        };
        let mut left = total;
        while left >= CHUNK as u64 {
            writer.write_all(&chunk).await?;
            left -= CHUNK as u64;
            writer_count.fetch_add(CHUNK as u64, std::sync::atomic::Ordering::Relaxed);
        }
        if left > 0 {
            let mut last = format!("{left:x}\r\n").into_bytes();
            last.extend(std::iter::repeat_n(b' ', left as usize));
            last.extend_from_slice(b"\r\n");
            writer.write_all(&last).await?;
        }
        writer.write_all(b"0\r\n\r\n").await?;
        anyhow::Ok(())
    });
    let reply = tokio::time::timeout(Duration::from_secs(120), read_reply(&mut reader)).await;
    writing.abort();
    let mut reply = reply.context("no answer within 120 s")??;
    reply.written_before_answer = written.load(std::sync::atomic::Ordering::Relaxed);
    Ok(reply)
}

/// Read one HTTP/1.1 answer with a `Content-Length` (or up to the close).
async fn read_reply(reader: &mut (impl AsyncReadExt + Unpin)) -> Result<RawReply> {
    let mut buffer = Vec::new();
    let mut scratch = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let read = reader.read(&mut scratch).await?;
        if read == 0 {
            bail!(
                "connection closed before an answer: {:?}",
                String::from_utf8_lossy(&buffer)
            );
        }
        buffer.extend_from_slice(&scratch[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no status line in {head:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let mut body = buffer[head_end..].to_vec();
    loop {
        let complete = match (length, chunked) {
            (Some(length), _) => body.len() >= length,
            (None, true) => dechunk(&body).is_some(),
            (None, false) => false,
        };
        if complete {
            break;
        }
        let read = reader.read(&mut scratch).await.unwrap_or(0);
        if read == 0 {
            break;
        }
        body.extend_from_slice(&scratch[..read]);
    }
    if let Some(length) = length {
        body.truncate(length);
    } else if chunked {
        body = dechunk(&body).context("a chunked answer cut short")?;
    }
    Ok(RawReply {
        status,
        headers,
        body,
        written_before_answer: 0,
    })
}

/// A whole chunked body decoded, or `None` while its last chunk has not come.
fn dechunk(mut wire: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = wire.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&wire[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        wire = &wire[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        if wire.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&wire[..size]);
        wire = &wire[size + 2..];
    }
}

/// The peak resident memory (`VmHWM`, KiB) of process `pid` and every
/// process under it (`spin up` serves HTTP from a child process).
pub fn peak_memory_kib(pid: u32) -> u64 {
    let mut total = 0;
    let mut pending = vec![pid];
    while let Some(pid) = pending.pop() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        total += status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten();
        for task in tasks.flatten() {
            let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            pending.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
        }
    }
    total
}
