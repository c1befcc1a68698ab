//! Where webhooks go, from the variables `webhook_url`, `webhook_origin` and
//! `webhook_secret` (SPEC §9). An empty URL turns delivery off; a URL, origin
//! or secret that cannot work turns it *misconfigured*: nothing is sent (an
//! attempt that could only fail would spend an event's retries), every event
//! is kept, and `GET /api/v1/admin/ops` says so.

use crate::sign::Secret;
use http::uri::{Scheme, Uri};

/// What delivery does.
#[derive(Debug, Clone)]
pub enum Webhooks {
    /// `webhook_url` is empty: events are recorded and listed, not sent.
    Off,
    On(Target),
    /// Why not, in words that name no secret.
    Misconfigured(String),
}

/// A receiver to post to.
#[derive(Debug, Clone)]
pub struct Target {
    pub https: bool,
    /// `host[:port]` as written in the URL.
    pub authority: String,
    pub path_and_query: String,
    pub secret: Secret,
}

impl Webhooks {
    /// Read the three variables (a variable Spin cannot give is misconfiguration).
    pub fn from_variables() -> Webhooks {
        let read = |name: &str| {
            edge::config::variable(name).map_err(|_| format!("the variable {name} is not available"))
        };
        // Off is the common case and costs one host call, not three (every
        // paid order asks: bench/README.md, "Where Spin spends a paid order").
        let url = match read("webhook_url") {
            Ok(url) if url.is_empty() => return Webhooks::Off,
            Ok(url) => url,
            Err(why) => return Webhooks::Misconfigured(why),
        };
        match (read("webhook_origin"), read("webhook_secret")) {
            (Ok(origin), Ok(secret)) => Webhooks::from_values(&url, &origin, &secret),
            (Err(why), _) | (_, Err(why)) => Webhooks::Misconfigured(why),
        }
    }

    /// The pure part of [`Webhooks::from_variables`].
    pub fn from_values(url: &str, origin: &str, secret: &str) -> Webhooks {
        if url.is_empty() {
            return Webhooks::Off;
        }
        let Some((target, url_origin)) = parse_url(url) else {
            return Webhooks::Misconfigured("webhook_url is not an absolute http:// or https:// URL".into());
        };
        if normalized_origin(origin).as_deref() != Some(url_origin.as_str()) {
            return Webhooks::Misconfigured(format!(
                "webhook_origin must be the origin of webhook_url ({url_origin}), which Spin must allow"
            ));
        }
        match Secret::parse(secret) {
            Some(secret) => Webhooks::On(Target { secret, ..target }),
            None => Webhooks::Misconfigured("webhook_secret is not whsec_ followed by a base64 key".into()),
        }
    }

    /// `on`, `off` or `misconfigured`, as the on-call view shows it.
    pub fn state(&self) -> &'static str {
        match self {
            Webhooks::Off => "off",
            Webhooks::On(_) => "on",
            Webhooks::Misconfigured(_) => "misconfigured",
        }
    }
}

/// A target (with a placeholder secret) and its origin, `scheme://host:port`.
fn parse_url(url: &str) -> Option<(Target, String)> {
    let uri: Uri = url.parse().ok()?;
    let https = match uri.scheme() {
        Some(s) if *s == Scheme::HTTPS => true,
        Some(s) if *s == Scheme::HTTP => false,
        _ => return None,
    };
    let authority = uri.authority()?;
    if authority.host().is_empty() || authority.as_str().contains('@') {
        return None;
    }
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let scheme = if https { "https" } else { "http" };
    let origin = format!("{scheme}://{}:{port}", authority.host().to_ascii_lowercase());
    let target = Target {
        https,
        authority: authority.as_str().to_owned(),
        path_and_query: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        secret: Secret::parse("whsec_AA==").expect("a placeholder key"),
    };
    Some((target, origin))
}

/// `scheme://host:port` of an origin as written (default port filled in,
/// host in lower case, one trailing slash allowed).
fn normalized_origin(origin: &str) -> Option<String> {
    let (target, normalized) = parse_url(origin.strip_suffix('/').unwrap_or(origin))?;
    (target.path_and_query == "/").then_some(normalized)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn an_empty_url_is_off() {
        assert_eq!(Webhooks::from_values("", "", "").state(), "off");
        assert_eq!(
            Webhooks::from_values("", "http://127.0.0.1:1", "nonsense").state(),
            "off"
        );
    }

    #[test]
    fn a_url_its_origin_and_a_secret_are_on() {
        for (url, origin) in [
            (
                "https://hooks.shop.example/commerce?v=1",
                "https://hooks.shop.example:443",
            ),
            ("https://Hooks.Shop.Example/x", "https://hooks.shop.example"),
            ("http://127.0.0.1:8088/in", "http://127.0.0.1:8088/"),
        ] {
            match Webhooks::from_values(url, origin, SECRET) {
                Webhooks::On(target) => assert!(url.ends_with(&target.path_and_query), "{url}"),
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn what_cannot_work_is_misconfigured_and_says_why_without_the_secret() {
        for (url, origin, secret) in [
            ("hooks.shop.example/x", "https://hooks.shop.example", SECRET),
            ("ftp://hooks.shop.example/x", "ftp://hooks.shop.example", SECRET),
            (
                "https://user:pw@hooks.shop.example/x",
                "https://hooks.shop.example",
                SECRET,
            ),
            ("https://hooks.shop.example/x", "https://other.example", SECRET),
            (
                "https://hooks.shop.example/x",
                "http://hooks.shop.example",
                SECRET,
            ),
            (
                "https://hooks.shop.example:8443/x",
                "https://hooks.shop.example",
                SECRET,
            ),
            (
                "https://hooks.shop.example/x",
                "https://hooks.shop.example/x",
                SECRET,
            ),
            (
                "https://hooks.shop.example/x",
                "https://hooks.shop.example",
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ),
            ("https://hooks.shop.example/x", "https://hooks.shop.example", ""),
        ] {
            match Webhooks::from_values(url, origin, secret) {
                Webhooks::Misconfigured(why) => assert!(!why.contains("MfKQ9r8"), "{why}"),
                other => panic!("{url} {origin}: {other:?}"),
            }
        }
    }
}
