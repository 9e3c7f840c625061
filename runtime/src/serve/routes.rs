//! Route matching as API Gateway's HTTP APIs do it, with no I/O so that every case is a unit
//! test. Of the routes that match a request, the most specific wins: compared segment by
//! segment, a literal beats a `{param}`, which beats a greedy `{proxy+}`; then a route for the
//! request's method beats `ANY`; `$default` catches what nothing else does.

use crate::config::file::{PayloadVersion, RouteConfig};

/// One route, parsed.
#[derive(Debug, Clone)]
pub struct Route {
    /// `GET /pets/{id}` or `$default`, as API Gateway names it in `routeKey`.
    pub key: String,
    /// The path as written (`resource` in a 1.0 event).
    pub path: String,
    /// `None` for `ANY`.
    method: Option<String>,
    /// `None` for `$default`.
    segments: Option<Vec<Segment>>,
    /// The function it invokes.
    pub function: String,
    /// The event format.
    pub payload: PayloadVersion,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Greedy(String),
}

/// A matched route and the values of its path parameters (percent-decoded).
#[derive(Debug)]
pub struct Matched<'a> {
    /// The route.
    pub route: &'a Route,
    /// `{name}` → value, in path order.
    pub params: Vec<(String, String)>,
}

/// All routes of a server.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// Function URLs, by function name: `$default` routes of payload 2.0, reached under
    /// [`URL_PREFIX`]`NAME/`.
    urls: Vec<Route>,
}

/// Where a function's URL is served: `/lambda-url/NAME/…` (a Lambda function URL is a host
/// of its own; lamina has one listener, so each gets a path prefix instead).
pub const URL_PREFIX: &str = "/lambda-url/";

impl RouteTable {
    /// Parses routes that `lamina.toml` checking has already accepted.
    pub fn new(routes: &[RouteConfig]) -> Self {
        let routes = routes
            .iter()
            .map(|r| {
                let default = r.path == "$default";
                Route {
                    key: r.key(),
                    path: r.path.clone(),
                    method: (r.method != "ANY").then(|| r.method.clone()),
                    segments: (!default).then(|| parse(&r.path)),
                    function: r.function.clone(),
                    payload: r.payload,
                }
            })
            .collect();
        RouteTable {
            routes,
            urls: Vec::new(),
        }
    }

    /// Adds a function URL for each function named.
    pub fn with_function_urls(mut self, functions: &[String]) -> Self {
        self.urls = functions
            .iter()
            .map(|function| Route {
                key: "$default".to_owned(),
                path: "$default".to_owned(),
                method: None,
                segments: None,
                function: function.clone(),
                payload: PayloadVersion::V2,
            })
            .collect();
        self
    }

    /// The function URL `path` is under, and the path the function sees (what follows
    /// `/lambda-url/NAME`, at least `/`).
    pub fn find_url<'a>(&'a self, path: &'a str) -> Option<(Matched<'a>, &'a str)> {
        let rest = path.strip_prefix(URL_PREFIX)?;
        let (name, tail) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let route = self.urls.iter().find(|r| r.function == name)?;
        Some((
            Matched {
                route,
                params: Vec::new(),
            },
            tail,
        ))
    }

    /// Whether there are no routes at all.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// How many routes there are.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Each route's key and function, in order, and the function URLs: what a reload
    /// compares.
    pub fn keys(&self) -> Vec<String> {
        self.routes
            .iter()
            .map(|r| format!("{} -> {} ({:?})", r.key, r.function, r.payload))
            .chain(self.urls.iter().map(|r| format!("url -> {}", r.function)))
            .collect()
    }

    /// The most specific route for `method` and `path` (the raw path, before decoding).
    pub fn find(&self, method: &str, path: &str) -> Option<Matched<'_>> {
        // Decoded once, not per route: `/` is never part of an escape, so segments stay apart.
        let request: Vec<String> = split(path).into_iter().map(decode).collect();
        let mut best: Option<(Vec<u8>, Matched<'_>)> = None;
        for route in &self.routes {
            if route.method.as_deref().is_some_and(|m| m != method) {
                continue;
            }
            let Some(segments) = &route.segments else {
                continue;
            };
            let Some((mut rank, params)) = match_segments(segments, &request) else {
                continue;
            };
            rank.push(u8::from(route.method.is_some()));
            if best.as_ref().is_none_or(|(b, _)| rank > *b) {
                best = Some((rank, Matched { route, params }));
            }
        }
        best.map(|(_, m)| m).or_else(|| {
            self.routes
                .iter()
                .find(|r| r.segments.is_none())
                .map(|route| Matched {
                    route,
                    params: Vec::new(),
                })
        })
    }
}

fn split(path: &str) -> Vec<&str> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').collect()
    }
}

fn parse(path: &str) -> Vec<Segment> {
    split(path)
        .into_iter()
        .map(
            |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(inner) => match inner.strip_suffix('+') {
                    Some(name) => Segment::Greedy(name.to_owned()),
                    None => Segment::Param(inner.to_owned()),
                },
                None => Segment::Literal(s.to_owned()),
            },
        )
        .collect()
}

/// Path parameters, name → value.
type Params = Vec<(String, String)>;

/// The rank (one number per route segment: 2 literal, 1 parameter, 0 greedy) and the
/// parameters, when the route matches.
fn match_segments(route: &[Segment], request: &[String]) -> Option<(Vec<u8>, Params)> {
    let mut rank = Vec::with_capacity(route.len() + 1);
    let mut params = Vec::new();
    for (i, segment) in route.iter().enumerate() {
        match segment {
            Segment::Literal(lit) => {
                if request.get(i).is_none_or(|s| s != lit) {
                    return None;
                }
                rank.push(2);
            }
            Segment::Param(name) => {
                let value = request.get(i).filter(|s| !s.is_empty())?;
                params.push((name.clone(), value.clone()));
                rank.push(1);
            }
            Segment::Greedy(name) => {
                // One or more segments: `/pets/{proxy+}` does not match `/pets`.
                if request.len() <= i {
                    return None;
                }
                params.push((name.clone(), request[i..].join("/")));
                rank.push(0);
                return Some((rank, params));
            }
        }
    }
    (request.len() == route.len()).then_some((rank, params))
}

/// Percent-decodes a path segment; bytes that do not form UTF-8 are replaced.
pub fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &[(&str, &str, &str)]) -> RouteTable {
        let routes: Vec<RouteConfig> = routes
            .iter()
            .map(|(m, p, f)| RouteConfig {
                method: (*m).into(),
                path: (*p).into(),
                function: (*f).into(),
                payload: PayloadVersion::V2,
            })
            .collect();
        RouteTable::new(&routes)
    }

    fn to(t: &RouteTable, method: &str, path: &str) -> Option<String> {
        t.find(method, path).map(|m| m.route.function.clone())
    }

    #[test]
    fn api_gateways_priority_example() {
        // The example of API Gateway's developer guide, "Working with routes for HTTP APIs".
        let t = table(&[
            ("ANY", "$default", "default"),
            ("ANY", "/{proxy+}", "any-proxy"),
            ("GET", "/pets/{proxy+}", "get-proxy"),
            ("GET", "/pets/dog/{id}", "get-id"),
            ("GET", "/pets/dog/1", "get-1"),
        ]);
        assert_eq!(to(&t, "GET", "/pets/dog/1").as_deref(), Some("get-1"));
        assert_eq!(to(&t, "GET", "/pets/dog/2").as_deref(), Some("get-id"));
        assert_eq!(to(&t, "GET", "/pets/cat/1").as_deref(), Some("get-proxy"));
        assert_eq!(to(&t, "POST", "/pets/dog/1").as_deref(), Some("any-proxy"));
        assert_eq!(to(&t, "GET", "/").as_deref(), Some("default"));
    }

    #[test]
    fn a_method_beats_any_on_the_same_path() {
        let t = table(&[("ANY", "/a", "any"), ("GET", "/a", "get")]);
        assert_eq!(to(&t, "GET", "/a").as_deref(), Some("get"));
        assert_eq!(to(&t, "PUT", "/a").as_deref(), Some("any"));
        assert_eq!(to(&t, "PUT", "/b"), None);
    }

    #[test]
    fn parameters_are_decoded_and_greedy_takes_the_rest() {
        let t = table(&[
            ("GET", "/hello/{name}", "hello"),
            ("ANY", "/files/{proxy+}", "files"),
        ]);
        let m = t.find("GET", "/hello/J%C3%BCrgen").unwrap();
        assert_eq!(m.params, [("name".to_owned(), "Jürgen".to_owned())]);
        let m = t.find("DELETE", "/files/a/b/c.txt").unwrap();
        assert_eq!(m.params, [("proxy".to_owned(), "a/b/c.txt".to_owned())]);
        assert!(t.find("GET", "/files").is_none());
        assert!(t.find("GET", "/hello").is_none());
        assert!(t.find("GET", "/hello/a/b").is_none());
        assert!(t.find("GET", "/hello/").is_none());
    }
}
