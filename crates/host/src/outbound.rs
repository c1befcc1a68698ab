//! `allowed_outbound_hosts`: which addresses a component may open.
//!
//! Entries are `scheme://host[:port]` (after `{{ variable }}` templates are
//! rendered), with `*` for any scheme, host or port, `*.domain` for its
//! subdomains, and `a..b` port ranges (end exclusive), as in Spin. A missing
//! port means the scheme's default. CIDR hosts and `self` are not supported
//! by this host and are rejected at start-up instead of being misread.

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone, PartialEq)]
enum Host {
    Any,
    SubdomainOf(String),
    Exact(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Port {
    Any,
    Exact(u16),
    Range(u16, u16),
}

#[derive(Debug, Clone, PartialEq)]
struct Pattern {
    scheme: Option<String>,
    host: Host,
    port: Port,
}

/// The default port Spin assumes for a scheme.
pub fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "postgres" => Some(5432),
        "mysql" => Some(3306),
        "redis" => Some(6379),
        "mqtt" => Some(1883),
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// A component's parsed allow-list.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts(Vec<Pattern>);

impl AllowedHosts {
    pub fn parse(entries: &[String]) -> Result<AllowedHosts> {
        entries
            .iter()
            .map(|entry| {
                parse_entry(entry).with_context(|| format!("invalid allowed_outbound_hosts entry {entry:?}"))
            })
            .collect::<Result<_>>()
            .map(AllowedHosts)
    }

    /// Is `scheme://host:port` allowed?
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.0.iter().any(|pattern| {
            pattern.scheme.as_deref().is_none_or(|s| s == scheme)
                && match &pattern.host {
                    Host::Any => true,
                    Host::SubdomainOf(domain) => host
                        .strip_suffix(domain.as_str())
                        .is_some_and(|prefix| prefix.ends_with('.') && prefix.len() > 1),
                    Host::Exact(exact) => exact.eq_ignore_ascii_case(host),
                }
                && match pattern.port {
                    Port::Any => true,
                    Port::Exact(p) => p == port,
                    Port::Range(start, end) => (start..end).contains(&port),
                }
        })
    }
}

fn parse_entry(entry: &str) -> Result<Pattern> {
    let Some((scheme, rest)) = entry.split_once("://") else {
        bail!("{entry:?} does not contain a scheme (e.g., 'http://' or '*://')");
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') {
        bail!("{entry:?} has a path but is not allowed to");
    }
    if rest.contains('@') {
        bail!("{entry:?} must not contain user information");
    }
    let scheme = match scheme {
        "*" => None,
        s if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphabetic()) => Some(s.to_owned()),
        s => bail!("invalid scheme {s:?}"),
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => (host, Some(port)),
        _ => (rest, None),
    };
    let host = match host {
        "" => bail!("missing host"),
        "*" => Host::Any,
        "self" | "self.alt" => bail!("'self' hosts are not supported by this host"),
        h if h.contains('/') => bail!("CIDR hosts are not supported by this host"),
        h => match h.strip_prefix("*.") {
            Some(domain) => Host::SubdomainOf(domain.to_ascii_lowercase()),
            None => Host::Exact(
                h.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_ascii_lowercase(),
            ),
        },
    };
    let port = match port {
        Some("*") => Port::Any,
        Some(range) if range.contains("..") => {
            let (start, end) = range.split_once("..").expect("checked");
            Port::Range(
                start.parse().context("invalid port range")?,
                end.parse().context("invalid port range")?,
            )
        }
        Some(port) => Port::Exact(port.parse().context("invalid port")?),
        None => match scheme.as_deref().and_then(default_port) {
            Some(port) => Port::Exact(port),
            None => bail!(
                "no port was provided and the scheme {:?} does not have a known default port number",
                scheme.as_deref().unwrap_or("*")
            ),
        },
    };
    Ok(Pattern { scheme, host, port })
}

/// Tell the operator, as Spin does, that a component was denied an address.
pub fn report_denied(component: &str, destination: &str) {
    tracing::error!(
        component,
        "Outbound network destination not allowed: {destination}"
    );
    eprintln!(
        "Warning: A component tried to make an outbound network connection to disallowed destination '{destination}'.\n\
         To allow this request, add 'allowed_outbound_hosts = [\"{destination}\"]' to the manifest component section."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn exact_entries_with_default_ports() {
        let allowed = hosts(&["postgres://127.0.0.1", "redis://localhost:6380"]);
        assert!(allowed.allows("postgres", "127.0.0.1", 5432));
        assert!(!allowed.allows("postgres", "127.0.0.1", 5433));
        assert!(
            !allowed.allows("redis", "127.0.0.1", 6380),
            "no DNS: localhost is not 127.0.0.1"
        );
        assert!(allowed.allows("redis", "localhost", 6380));
        assert!(!allowed.allows("redis", "localhost", 6379));
    }

    #[test]
    fn wildcards_and_ranges() {
        let allowed = hosts(&["*://*.example.com:*", "redis://10.0.0.1:7000..7002"]);
        assert!(allowed.allows("https", "api.example.com", 1));
        assert!(!allowed.allows("https", "example.com", 443));
        assert!(allowed.allows("redis", "10.0.0.1", 7001));
        assert!(
            !allowed.allows("redis", "10.0.0.1", 7002),
            "range end is exclusive"
        );
    }

    #[test]
    fn rejects_malformed_entries() {
        for bad in [
            "127.0.0.1:5432",
            "postgres://h/db",
            "rediss://h",
            "postgres://u@h",
            "*://h",
            "http://self",
        ] {
            assert!(AllowedHosts::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
}
