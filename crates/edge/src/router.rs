//! A component's route table.
//!
//! Spin sends a request to a component by its manifest routes; the component
//! then picks a handler by method and full path. Patterns are literal segments
//! and `{name}` captures. A path that matches no pattern is `404 NOT_FOUND`; a
//! path that matches with another method is `405` with `Allow`.
//!
//! Every answer leaves here with its `Request-Id` and its log line
//! ([`crate::observe`]).

use crate::{observe, ApiResult, Problem};
use commerce::ErrorCode;
use spin_sdk::http::{Method, Request, Response};

/// Captured `{name}` segments of a matched pattern.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Params(Vec<(&'static str, String)>);

impl Params {
    /// The raw text of a capture the pattern declares.
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("route pattern has no capture {{{name}}}"))
    }
}

pub type Handler = fn(&Request, &Params) -> ApiResult;

pub struct Route {
    method: Method,
    pattern: &'static str,
    handler: Handler,
}

pub fn get(pattern: &'static str, handler: Handler) -> Route {
    Route {
        method: Method::Get,
        pattern,
        handler,
    }
}

pub fn post(pattern: &'static str, handler: Handler) -> Route {
    Route {
        method: Method::Post,
        pattern,
        handler,
    }
}

/// Match `path` against `pattern`, returning the captures.
fn match_pattern(pattern: &'static str, path: &str) -> Option<Params> {
    let mut params = Vec::new();
    let mut pattern_segments = pattern.split('/');
    let mut path_segments = path.split('/');
    loop {
        match (pattern_segments.next(), path_segments.next()) {
            (None, None) => return Some(Params(params)),
            (Some(p), Some(s)) => {
                if let Some(name) = p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                    if s.is_empty() {
                        return None;
                    }
                    params.push((name, s.to_owned()));
                } else if p != s {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

fn method_name(method: &Method) -> &'static str {
    match method {
        Method::Get => "GET",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Patch => "PATCH",
        Method::Head => "HEAD",
        Method::Options => "OPTIONS",
        Method::Connect => "CONNECT",
        Method::Trace => "TRACE",
        Method::Other(_) => "OTHER",
    }
}

/// Serve `req` for `component` (its name in `spin.toml`): find the handler
/// and run it, every failure becoming a problem; then name the answer
/// (`Request-Id`) and log it.
pub fn dispatch(req: Request, component: &'static str, routes: &[Route]) -> Response {
    let method = method_name(req.method());
    let traceparent = req.header("traceparent").and_then(|v| v.as_str());
    let request_id = observe::begin(component, method, traceparent);
    let mut response = route(&req, routes);
    response.set_header(observe::REQUEST_ID, request_id);
    let code = problem_code(&response);
    observe::finish(*response.status(), code.as_deref());
    response
}

/// The `code` of a problem document (also one stored for an idempotency key).
fn problem_code(response: &Response) -> Option<String> {
    let is_problem = response
        .header("content-type")
        .and_then(|v| v.as_str())
        .is_some_and(|t| t == "application/problem+json");
    if !is_problem {
        return None;
    }
    let body: serde_json::Value = serde_json::from_slice(response.body()).ok()?;
    body.get("code")?.as_str().map(str::to_owned)
}

fn route(req: &Request, routes: &[Route]) -> Response {
    let path = req.path().to_owned();
    let mut allowed: Vec<&'static str> = Vec::new();
    for route in routes {
        let Some(params) = match_pattern(route.pattern, &path) else {
            continue;
        };
        if route.method == *req.method() {
            observe::matched(route.pattern);
            return match (route.handler)(req, &params) {
                Ok(response) => response,
                Err(problem) => problem.into_response(),
            };
        }
        allowed.push(method_name(&route.method));
    }
    if allowed.is_empty() {
        return Problem::new(ErrorCode::NotFound, format!("no resource at {path}")).into_response();
    }
    allowed.sort_unstable();
    allowed.dedup();
    let allow = allowed.join(", ");
    Problem::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "{} is not allowed here; allowed: {allow}",
            method_name(req.method())
        ),
    )
    .with_header("allow", allow)
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_and_capture_segments() {
        assert_eq!(
            match_pattern("/api/v1/products", "/api/v1/products"),
            Some(Params::default())
        );
        assert_eq!(
            match_pattern("/api/v1/products/{id}", "/api/v1/products/42")
                .unwrap()
                .get("id"),
            "42"
        );
        assert!(match_pattern("/api/v1/products/{id}", "/api/v1/products/").is_none());
        assert!(match_pattern("/api/v1/products/{id}", "/api/v1/products/4/x").is_none());
        assert!(match_pattern("/api/v1/products", "/api/v1/products/").is_none());
    }
}
