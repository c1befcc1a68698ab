//! Spin's HTTP routing rules.
//!
//! Routes are exact (`/a/b`), wildcard (`/a/...`) or have `:name` segments.
//! A route string is normalised by adding a leading `/` and dropping one
//! trailing `/`; a request path is matched with all leading and trailing `/`
//! trimmed, so `/a/` matches `/a` and `/a` matches `/a/...`. When several
//! routes match, segments are compared from the left and at the first
//! difference exact beats `:param` beats wildcard; otherwise the shorter route
//! wins; a full tie goes to the route declared first.

use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Exact(String),
    Param(String),
    Wildcard,
}

impl Segment {
    fn rank(&self) -> u8 {
        match self {
            Segment::Exact(_) => 0,
            Segment::Param(_) => 1,
            Segment::Wildcard => 2,
        }
    }
}

/// One routable `[[trigger.http]]` entry.
#[derive(Debug, Clone)]
pub struct Route<T> {
    /// As written in the manifest (`spin-raw-component-route`).
    pub raw: String,
    /// Normalised (`spin-matched-route`).
    pub based: String,
    segments: Vec<Segment>,
    pub target: T,
}

/// The outcome of routing a path.
#[derive(Debug)]
pub struct RouteMatch<'a, T> {
    pub route: &'a Route<T>,
    /// The part of the path matched by a trailing wildcard (`spin-path-info`).
    pub path_info: String,
    /// `:name` captures, in route order.
    pub params: Vec<(String, String)>,
}

impl<T> Route<T> {
    pub fn new(raw: &str, target: T) -> Route<T> {
        let mut based = if raw.starts_with('/') {
            raw.to_owned()
        } else {
            format!("/{raw}")
        };
        if based.ends_with('/') {
            based.pop();
        }
        let segments = based
            .trim_start_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| match s {
                "..." => Segment::Wildcard,
                s if s.starts_with(':') => Segment::Param(s[1..].to_owned()),
                s => Segment::Exact(s.to_owned()),
            })
            .collect::<Vec<_>>();
        // `...` only means "wildcard" as the last segment.
        let segments = segments
            .iter()
            .enumerate()
            .map(|(i, s)| match s {
                Segment::Wildcard if i + 1 != segments.len() => Segment::Exact("...".into()),
                other => other.clone(),
            })
            .collect();
        Route {
            raw: raw.to_owned(),
            based,
            segments,
            target,
        }
    }

    /// `spin-component-route`: the raw route without a trailing `/...`.
    pub fn component_route(&self) -> &str {
        self.raw
            .strip_suffix("/...")
            .unwrap_or(if self.raw == "/..." { "" } else { &self.raw })
    }

    fn matches(&self, path: &str) -> Option<(String, Vec<(String, String)>)> {
        let trimmed = path.trim_matches('/');
        let parts: Vec<&str> = if trimmed.is_empty() {
            Vec::new()
        } else {
            trimmed.split('/').collect()
        };
        let mut params = Vec::new();
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Wildcard => return Some((path_info(path, i), params)),
                Segment::Exact(text) => {
                    if parts.get(i) != Some(&text.as_str()) {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    let value = parts.get(i).filter(|v| !v.is_empty())?;
                    params.push((name.clone(), (*value).to_owned()));
                }
            }
        }
        (parts.len() == self.segments.len()).then(|| (String::new(), params))
    }
}

/// The raw path after its first `prefix_segments` segments, keeping its
/// leading slash (`/foo/bar/` after one segment is `/bar/`).
fn path_info(path: &str, prefix_segments: usize) -> String {
    if prefix_segments == 0 {
        return path.to_owned();
    }
    let mut rest = path.trim_start_matches('/');
    for i in 0..prefix_segments {
        let Some(slash) = rest.find('/') else {
            return String::new();
        };
        rest = &rest[slash..];
        if i + 1 < prefix_segments {
            rest = &rest[1..];
        }
    }
    rest.to_owned()
}

fn precedence<T>(a: &Route<T>, b: &Route<T>) -> Ordering {
    for (x, y) in a.segments.iter().zip(&b.segments) {
        match x.rank().cmp(&y.rank()) {
            Ordering::Equal => continue,
            unequal => return unequal,
        }
    }
    a.segments.len().cmp(&b.segments.len())
}

/// All of an app's routes.
#[derive(Debug)]
pub struct Router<T> {
    routes: Vec<Route<T>>,
}

impl<T> Router<T> {
    pub fn new(routes: Vec<Route<T>>) -> Router<T> {
        Router { routes }
    }

    /// The route Spin would pick for `path` (without query), if any.
    pub fn route(&self, path: &str) -> Option<RouteMatch<'_, T>> {
        let mut best: Option<RouteMatch<'_, T>> = None;
        for route in &self.routes {
            let Some((path_info, params)) = route.matches(path) else {
                continue;
            };
            if best
                .as_ref()
                .is_none_or(|b| precedence(route, b.route) == Ordering::Less)
            {
                best = Some(RouteMatch {
                    route,
                    path_info,
                    params,
                });
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[&'static str]) -> Router<&'static str> {
        Router::new(routes.iter().map(|r| Route::new(r, *r)).collect())
    }

    fn pick(router: &Router<&'static str>, path: &str) -> Option<(&'static str, String)> {
        router.route(path).map(|m| (m.route.target, m.path_info))
    }

    #[test]
    fn exact_beats_wildcard_and_longest_prefix_wins() {
        let r = router(&[
            "/...",
            "/api/v1/...",
            "/api/v1/products/...",
            "/api/v1/products/popular",
        ]);
        assert_eq!(
            pick(&r, "/api/v1/products/popular").unwrap().0,
            "/api/v1/products/popular"
        );
        assert_eq!(
            pick(&r, "/api/v1/products/42").unwrap(),
            ("/api/v1/products/...", "/42".into())
        );
        assert_eq!(
            pick(&r, "/api/v1/products").unwrap(),
            ("/api/v1/products/...", "".into())
        );
        assert_eq!(
            pick(&r, "/api/v1/products/").unwrap(),
            ("/api/v1/products/...", "/".into())
        );
        assert_eq!(
            pick(&r, "/api/v1/nope/x").unwrap(),
            ("/api/v1/...", "/nope/x".into())
        );
        assert_eq!(pick(&r, "/").unwrap(), ("/...", "/".into()));
    }

    #[test]
    fn trailing_slashes_and_exact_routes() {
        let r = router(&["/a", "/a/b/"]);
        assert!(pick(&r, "/a").is_some());
        assert!(pick(&r, "/a/").is_some());
        assert!(pick(&r, "/ab").is_none());
        assert_eq!(pick(&r, "/a/b").unwrap().0, "/a/b/");
        assert!(pick(&r, "/a/b/c").is_none());
        assert_eq!(r.route("/a/b").unwrap().route.based, "/a/b");
    }

    #[test]
    fn params_rank_between_exact_and_wildcard() {
        let r = router(&["/api/...", "/api/:id", "/api/x", "/:x/b", "/q/..."]);
        assert_eq!(pick(&r, "/api/x").unwrap().0, "/api/x");
        let m = r.route("/api/7").unwrap();
        assert_eq!(m.route.target, "/api/:id");
        assert_eq!(m.params, vec![("id".to_owned(), "7".to_owned())]);
        assert_eq!(pick(&r, "/api/7/8").unwrap().0, "/api/...");
        assert_eq!(
            pick(&r, "/q/b").unwrap().0,
            "/q/...",
            "leftmost specific segment decides"
        );
    }

    #[test]
    fn first_declared_wins_a_tie() {
        let r = router(&["/p/:one", "/p/:two"]);
        assert_eq!(pick(&r, "/p/1").unwrap().0, "/p/:one");
    }

    #[test]
    fn path_info_keeps_raw_slashes() {
        assert_eq!(path_info("/foo", 1), "");
        assert_eq!(path_info("/foo/", 1), "/");
        assert_eq!(path_info("/foo/bar", 1), "/bar");
        assert_eq!(path_info("/foo/bar/", 1), "/bar/");
        assert_eq!(path_info("/a/b/c/d", 2), "/c/d");
        assert_eq!(path_info("/x", 0), "/x");
    }

    #[test]
    fn component_route_strips_wildcard() {
        assert_eq!(Route::new("/api/v1/...", ()).component_route(), "/api/v1");
        assert_eq!(Route::new("/...", ()).component_route(), "");
        assert_eq!(Route::new("/api", ()).component_route(), "/api");
    }
}
