//! Operations (SPEC "Operations"): the request id every answer carries, and
//! the JSON log lines components write to standard output — one per request,
//! one per business event — which Spin keeps under `.spin/logs/` and, with
//! OpenTelemetry on, exports with the request's trace.
//!
//! The request id is the trace id of a valid W3C `traceparent`, so the id a
//! client sees, the log line and the trace Spin exports are one; without one
//! it is a fresh id of the same form. Spin (and our host) instantiates a
//! component afresh for every request, so the request's context lives in a
//! thread-local for the length of the request.
//!
//! What is logged is chosen field by field — route *patterns*, statuses,
//! codes, ids — never a header, a token, an `Idempotency-Key` or a body.

use serde_json::{json, Map, Value};
use std::cell::RefCell;
use std::time::Instant;

/// The response header that names the request.
pub const REQUEST_ID: &str = "request-id";

/// What is known of the request being served.
struct Context {
    request_id: String,
    component: &'static str,
    method: &'static str,
    route: String,
    started: Instant,
    user_id: Option<i64>,
    order_id: Option<i64>,
}

thread_local! {
    static CURRENT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// The trace id of `traceparent` if it is a valid W3C trace context header
/// (version 00 exactly as specified; a later version read by its first four
/// fields), else `None`: an invalid one is ignored, never an error.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut fields = traceparent.trim().split('-');
    let (version, trace_id, parent_id, flags) =
        (fields.next()?, fields.next()?, fields.next()?, fields.next()?);
    let rest = fields.next();
    let lower_hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let all_zero = |s: &str| s.bytes().all(|b| b == b'0');
    let valid = lower_hex(version, 2)
        && version != "ff"
        && (version != "00" || rest.is_none())
        && lower_hex(trace_id, 32)
        && !all_zero(trace_id)
        && lower_hex(parent_id, 16)
        && !all_zero(parent_id)
        && lower_hex(flags, 2);
    valid.then_some(trace_id)
}

/// A fresh request id: 32 lowercase hex digits, never all zero.
fn fresh_id() -> String {
    let token = crate::redis::random_token();
    if token.bytes().all(|b| b == b'0') {
        return fresh_id();
    }
    token
}

/// Start serving a request: its id comes from `traceparent` or is fresh.
pub fn begin(component: &'static str, method: &'static str, traceparent: Option<&str>) -> String {
    let request_id = traceparent
        .and_then(trace_id_of)
        .map_or_else(fresh_id, str::to_owned);
    CURRENT.with(|current| {
        *current.borrow_mut() = Some(Context {
            request_id: request_id.clone(),
            component,
            method,
            route: String::new(),
            started: Instant::now(),
            user_id: None,
            order_id: None,
        })
    });
    request_id
}

/// The id of the request being served (a fresh one outside a request, e.g.
/// a cron run).
pub fn request_id() -> String {
    CURRENT
        .with(|current| current.borrow().as_ref().map(|c| c.request_id.clone()))
        .unwrap_or_else(|| begin("", "", None))
}

/// The route pattern that matched (set once the route table has picked one).
pub fn matched(route: &'static str) {
    CURRENT.with(|current| {
        if let Some(context) = current.borrow_mut().as_mut() {
            context.route = route.to_owned();
        }
    });
}

/// The authenticated caller, for the request's log line.
pub fn set_user(user_id: i64) {
    CURRENT.with(|current| {
        if let Some(context) = current.borrow_mut().as_mut() {
            context.user_id = Some(user_id);
        }
    });
}

/// The order the request is about, for the request's log line.
pub fn set_order(order_id: i64) {
    CURRENT.with(|current| {
        if let Some(context) = current.borrow_mut().as_mut() {
            context.order_id = Some(order_id);
        }
    });
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// One JSON line on standard output.
fn write(line: Map<String, Value>) {
    println!("{}", Value::Object(line));
}

/// The request's line: what was asked (method, route pattern), by whom, how
/// it ended (status, `code` of an error) and how long it took.
pub fn finish(status: u16, code: Option<&str>) {
    CURRENT.with(|current| {
        let current = current.borrow();
        let Some(context) = current.as_ref() else { return };
        let mut line = Map::new();
        line.insert("time".into(), now().into());
        line.insert(
            "level".into(),
            if status >= 500 { "error" } else { "info" }.into(),
        );
        line.insert("requestId".into(), context.request_id.clone().into());
        line.insert("component".into(), context.component.into());
        line.insert("method".into(), context.method.into());
        line.insert("route".into(), context.route.clone().into());
        line.insert("status".into(), status.into());
        if let Some(code) = code {
            line.insert("code".into(), code.into());
        }
        let micros = context.started.elapsed().as_micros() as f64;
        line.insert("durationMs".into(), json!((micros / 10.0).round() / 100.0));
        if let Some(user_id) = context.user_id {
            line.insert("userId".into(), user_id.into());
        }
        if let Some(order_id) = context.order_id {
            line.insert("orderId".into(), order_id.into());
        }
        write(line);
    });
}

/// A business event's line (`event` names it: `order.held`, `recovery.run`,
/// `refund`), with its own fields after the request's id and component.
pub fn event(event: &str, fields: Value) {
    let request_id = request_id();
    let component = CURRENT.with(|current| current.borrow().as_ref().map_or("", |c| c.component));
    let mut line = Map::new();
    line.insert("time".into(), now().into());
    line.insert("level".into(), "info".into());
    line.insert("requestId".into(), request_id.into());
    if !component.is_empty() {
        line.insert("component".into(), component.into());
    }
    line.insert("event".into(), event.into());
    if let Value::Object(fields) = fields {
        line.extend(fields);
    }
    write(line);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_gives_its_trace_id() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id_of(header), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        // A later version may carry more fields; its first four still count.
        assert_eq!(
            trace_id_of("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[test]
    fn an_invalid_traceparent_is_ignored() {
        for header in [
            "",
            "garbage",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert_eq!(trace_id_of(header), None, "{header:?}");
        }
    }

    #[test]
    fn a_request_id_without_traceparent_has_the_same_form() {
        let id = begin("test", "GET", Some("not a traceparent"));
        assert_eq!(id.len(), 32);
        assert!(trace_id_of(&format!("00-{id}-00f067aa0ba902b7-01")).is_some());
        assert_eq!(request_id(), id);
    }
}
