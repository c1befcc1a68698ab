//! A component's route table.
//!
//! Spin sends a request to a component by its manifest routes; the component
//! then picks a handler by method and full path. Patterns are literal segments
//! and `{name}` captures. A path that matches no pattern is `404 NOT_FOUND`; a
//! path that matches with another method is `405` with `Allow`.
//!
//! Every answer leaves here with its `Request-Id` and its log line
//! ([`crate::observe`]). Components export [`serve`] as their
//! `wasi:http/incoming-handler`, so the body is read here, as a stream.

use crate::request::Request;
use crate::{body, observe, ApiResult, Problem};
use commerce::ErrorCode;
use spin_sdk::http::{IncomingRequest, Method, OutgoingResponse, Response, ResponseOutparam};
use std::cell::RefCell;

thread_local! {
    /// Work the handler left for after its answer (see [`after_response`]).
    static AFTER_RESPONSE: RefCell<Vec<Box<dyn FnOnce()>>> = const { RefCell::new(Vec::new()) };
}

/// Do `work` once the answer has been sent, in this request's instance: the
/// client never waits for it (a webhook's first attempt, say). Spin keeps
/// the instance running until the handler returns, after the response.
pub fn after_response(work: impl FnOnce() + 'static) {
    AFTER_RESPONSE.with(|after| after.borrow_mut().push(Box::new(work)));
}

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

/// Serve a request for `component` (its name in `spin.toml`): find the
/// route (`404`/`405` otherwise), read the body up to
/// [`MAX_BODY_BYTES`](crate::request::MAX_BODY_BYTES) (`413` the moment it
/// is passed, before the handler authenticates anything), run the handler,
/// every failure becoming a problem; then name the answer (`Request-Id`),
/// log it and send it, and then do what the handler left for afterwards
/// ([`after_response`]).
pub async fn serve(
    incoming: IncomingRequest,
    out: ResponseOutparam,
    component: &'static str,
    routes: &[Route],
) {
    let target = incoming.path_with_query().unwrap_or_else(|| "/".to_owned());
    let head = Request::new(
        incoming.method(),
        &target,
        incoming.headers().entries(),
        Vec::new(),
    );
    let request_id = observe::begin(
        component,
        method_name(head.method()),
        head.header_str("traceparent"),
    );
    let mut body = std::pin::pin!(incoming.into_body_stream());
    let (mut response, refused_body) = match find(routes, &head) {
        Err(problem) => (problem.into_response(), None),
        Ok((route, params)) => {
            observe::matched(route.pattern);
            match body::read(&head, body.as_mut()).await {
                Ok(bytes) => {
                    let req = head.with_body(bytes);
                    let response = (route.handler)(&req, &params).unwrap_or_else(Problem::into_response);
                    (response, None)
                }
                Err(refusal) => (refusal.problem.into_response(), refusal.unread.then_some(body)),
            }
        }
    };
    response.set_header(observe::REQUEST_ID, request_id);
    let code = problem_code(&response);
    observe::finish(*response.status(), code.as_deref());
    send(out, response).await;
    if let Some(rest) = refused_body {
        body::drain(rest).await;
    }
    for work in AFTER_RESPONSE.with(|after| after.take()) {
        work();
    }
}

/// Hand `response` to Spin, head and body.
async fn send(out: ResponseOutparam, mut response: Response) {
    let body = std::mem::take(response.body_mut());
    match OutgoingResponse::try_from(response) {
        Ok(outgoing) => {
            if let Err(e) = out.set_with_body(outgoing, body).await {
                eprintln!("the response could not be sent: {e}");
            }
        }
        Err(e) => eprintln!("the response could not be built: {e}"),
    }
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

/// The route for `req`'s method and path, with its captures; `404` when no
/// pattern matches the path, `405` with `Allow` when only other methods do.
fn find<'r>(routes: &'r [Route], req: &Request) -> Result<(&'r Route, Params), Problem> {
    let path = req.path();
    let mut allowed: Vec<&'static str> = Vec::new();
    for route in routes {
        let Some(params) = match_pattern(route.pattern, path) else {
            continue;
        };
        if route.method == *req.method() {
            return Ok((route, params));
        }
        allowed.push(method_name(&route.method));
    }
    if allowed.is_empty() {
        return Err(Problem::new(
            ErrorCode::NotFound,
            format!("no resource at {path}"),
        ));
    }
    allowed.sort_unstable();
    allowed.dedup();
    let allow = allowed.join(", ");
    Err(Problem::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "{} is not allowed here; allowed: {allow}",
            method_name(req.method())
        ),
    )
    .with_header("allow", allow))
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
