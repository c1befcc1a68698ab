//! The request as a handler sees it: method, path, query, every header as
//! sent, and a body that was read up to [`MAX_BODY_BYTES`] and no further.
//!
//! spin-sdk's own `Request` reads the whole body before a handler runs (a
//! 512 MiB upload costs a Spin process over 1 GiB before any check), keeps
//! only the last of a repeated header, and cannot say a header was repeated.
//! This one is read by [`crate::router::serve`] from the `IncomingRequest`
//! as a stream, so a body over the limit is refused when its first byte
//! past the limit arrives, before any authentication or store work.

use spin_sdk::http::Method;

/// The largest request body any route accepts (an order of 50 lines is ~3 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A header the API interprets was sent more than once, so which value
/// counts is ambiguous (a proxy may have checked one, the app would read
/// another): the request is refused rather than guessed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeated;

/// An HTTP request with its body read.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    path: String,
    query: String,
    /// Lower-case names, in the order sent; a repeated header appears once per value.
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Request {
    /// A request for `path_with_query` (`/api/v1/x?y=1`, as wasi-http gives it).
    pub fn new(
        method: Method,
        path_with_query: &str,
        headers: impl IntoIterator<Item = (String, Vec<u8>)>,
        body: Vec<u8>,
    ) -> Request {
        let (path, query) = path_with_query.split_once('?').unwrap_or((path_with_query, ""));
        Request {
            method,
            path: path.to_owned(),
            query: query.to_owned(),
            headers: headers
                .into_iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value))
                .collect(),
            body,
        }
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path, as sent (not percent-decoded).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The query string without its `?` (empty when there is none).
    pub fn query(&self) -> &str {
        &self.query
    }

    /// The value of header `name` (any case) when it was sent once; `None`
    /// when it was not sent; [`Repeated`] when it was sent more than once.
    pub fn header(&self, name: &str) -> Result<Option<&[u8]>, Repeated> {
        let mut values = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice());
        match (values.next(), values.next()) {
            (first, None) => Ok(first),
            (Some(_), Some(_)) => Err(Repeated),
            (None, Some(_)) => unreachable!("a second value without a first"),
        }
    }

    /// Header `name` as text when it was sent once and is UTF-8: for headers
    /// whose absence and ambiguity mean the same (`traceparent`, test hooks).
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name)
            .ok()
            .flatten()
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The same request with its body read.
    pub(crate) fn with_body(self, body: Vec<u8>) -> Request {
        Request { body, ..self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request {
        Request::new(
            Method::Get,
            "/api/v1/products?limit=5&cursor=a%3D",
            headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())),
            Vec::new(),
        )
    }

    #[test]
    fn path_and_query_are_split_as_sent() {
        let req = request(&[]);
        assert_eq!(req.path(), "/api/v1/products");
        assert_eq!(req.query(), "limit=5&cursor=a%3D");
        let bare = Request::new(Method::Get, "/api/v1/wallet", Vec::new(), Vec::new());
        assert_eq!((bare.path(), bare.query()), ("/api/v1/wallet", ""));
    }

    #[test]
    fn a_header_counts_only_when_sent_once() {
        let req = request(&[
            ("Authorization", "Bearer a"),
            ("authorization", "Bearer b"),
            ("Content-Type", "application/json"),
        ]);
        assert_eq!(req.header("authorization"), Err(Repeated));
        assert_eq!(req.header_str("AUTHORIZATION"), None);
        assert_eq!(req.header("content-type"), Ok(Some(&b"application/json"[..])));
        assert_eq!(req.header_str("Content-Type"), Some("application/json"));
        assert_eq!(req.header("idempotency-key"), Ok(None));
    }
}
