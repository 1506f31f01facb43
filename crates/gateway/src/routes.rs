//! The compiled routing table: each route with its verifier, policy, limiter and options.
//! A reload builds a new [`Snapshot`] and swaps it in whole; requests in flight keep the
//! one they started with.

use crate::config::{Config, ConfigError, RouteConfig};
use crate::ratelimit::RateLimiter;
use gatehouse_verify::members::{Groups, RUN_INVOKER};
use gatehouse_verify::verifier::Verifier;
use std::borrow::Cow;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// One route, ready to serve.
#[derive(Debug)]
pub struct Route {
    pub config: RouteConfig,
    /// `None` on a public route that names no audience: nothing to verify against.
    pub verifier: Option<Arc<Verifier>>,
    /// Granted to `allUsers`: refuses nothing (Cloud Run's `--allow-unauthenticated`).
    pub public: bool,
    pub(crate) assertion_audience: Arc<str>,
    pub(crate) name: Arc<str>,
    pub(crate) limiter: Option<Arc<RateLimiter>>,
    /// Permits for requests in flight to the upstream, when the route bounds them.
    pub(crate) concurrency: Option<Arc<Semaphore>>,
}

impl Route {
    fn build(config: RouteConfig, previous: Option<&Route>) -> Result<Route, ConfigError> {
        let public = config.policy.is_public(RUN_INVOKER);
        // A reload that leaves a route's issuers and audiences alone keeps its verifier, and
        // with it the warm key and token caches.
        let reusable = previous.filter(|p| {
            p.config.issuer_names == config.issuer_names
                && p.config.audiences == config.audiences
                && p.config.token_cache == config.token_cache
        });
        let verifier = match reusable.and_then(|p| p.verifier.clone()) {
            Some(v) => Some(v),
            None if config.audiences.is_empty() && public => None,
            None => {
                let mut builder = Verifier::builder().token_cache_capacity(config.token_cache);
                for profile in &config.issuers {
                    builder = builder.profile(profile.clone());
                }
                let verifier = builder.build().map_err(|e| ConfigError {
                    file: None,
                    line: None,
                    column: None,
                    reason: format!("route {:?}: {e}", config.name),
                })?;
                Some(Arc::new(verifier))
            }
        };
        // Kept across a reload that leaves the bound alone, so requests in flight still
        // count; likewise a limit's buckets, or any edit of the file would refill them.
        let concurrency = previous
            .filter(|p| p.config.concurrency == config.concurrency)
            .and_then(|p| p.concurrency.clone())
            .or_else(|| config.concurrency.map(|n| Arc::new(Semaphore::new(n))));
        let limiter = previous
            .filter(|p| p.config.rate_limit == config.rate_limit)
            .and_then(|p| p.limiter.clone())
            .or_else(|| {
                config
                    .rate_limit
                    .map(|limit| Arc::new(RateLimiter::new(limit)))
            });
        Ok(Route {
            concurrency,
            limiter,
            public,
            verifier,
            assertion_audience: config.assertion_audience.as_str().into(),
            name: config.name.as_str().into(),
            config,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn matches(&self, host: Option<&str>, path: &str, fold_case: bool) -> bool {
        if let Some(h) = &self.config.host {
            if host != Some(h.as_str()) {
                return false;
            }
        }
        if fold_case {
            prefix_matches_folded(&self.config.path_prefix, path)
        } else {
            prefix_matches(&self.config.path_prefix, path)
        }
    }
}

/// As [`prefix_matches`], letters compared without case.
fn prefix_matches_folded(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.get(..prefix.len()) {
        Some(head) if head.eq_ignore_ascii_case(prefix) => {
            path.as_bytes().get(prefix.len()).is_none_or(|&b| b == b'/')
        }
        _ => false,
    }
}

/// `/api` takes `/api`, `/api/` and `/api/x`, never `/apix`.
pub(crate) fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The lowercase host of a `Host` value or authority, without port or trailing dot;
/// borrowed when it already is (the usual case: no allocation per request). `None` when it
/// is no host: a port of anything but digits, an IPv6 literal not closed or followed by
/// more, a byte no host name has. Such a value must not fall through to a route without a
/// host while the server behind reads a host of its own out of it (`admin.example:abc` is
/// `admin.example` to nginx and Go alike).
pub(crate) fn normalize_host(raw: &str) -> Option<Cow<'_, str>> {
    let raw = raw.trim();
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (literal, after) = rest.split_once(']')?;
        if literal.is_empty()
            || !literal
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        let port = match after {
            "" => "",
            _ => after.strip_prefix(':')?,
        };
        (literal, port)
    } else {
        let (host, port) = raw.rsplit_once(':').unwrap_or((raw, ""));
        if !host.bytes().all(is_host_name_byte) {
            return None;
        }
        (host, port)
    };
    // RFC 3986 §3.2.3: `port = *DIGIT`; five at most, as no port has more.
    if port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let host = host.trim_end_matches('.');
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    })
}

/// A byte of a host name or IPv4 address as clients send them: letters, digits, `-`, `.`,
/// and the `_` and `~` some internal names use. (RFC 3986's reg-name also allows escapes
/// and sub-delimiters, which no DNS name has and servers read differently.)
pub(crate) fn is_host_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Everything a request needs from configuration, swapped whole on reload.
#[derive(Debug)]
pub struct Snapshot {
    pub routes: Vec<Arc<Route>>,
    pub groups: Groups,
    pub generation: u64,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Read off the routes once, not per request: [`Snapshot::has_prefixes`] and
    /// [`Snapshot::has_upper_case_prefixes`].
    prefixes: bool,
    upper_case_prefixes: bool,
}

impl Snapshot {
    /// Builds the table, reusing the verifiers of `previous` where nothing changed.
    pub fn build(config: &Config, previous: Option<&Snapshot>) -> Result<Snapshot, ConfigError> {
        let mut routes = Vec::with_capacity(config.routes.len());
        for rc in &config.routes {
            let prev = previous.and_then(|p| p.routes.iter().find(|r| r.config.name == rc.name));
            routes.push(Arc::new(Route::build(rc.clone(), prev.map(|r| &**r))?));
        }
        let prefixes = routes.iter().any(|r| r.config.path_prefix != "/");
        let upper_case_prefixes = routes
            .iter()
            .any(|r| r.config.path_prefix.bytes().any(|b| b.is_ascii_uppercase()));
        Ok(Snapshot {
            routes,
            prefixes,
            upper_case_prefixes,
            groups: config.groups.clone(),
            generation: previous.map_or(1, |p| p.generation + 1),
            trusted_proxies: config.trusted_proxies.clone(),
        })
    }

    pub fn trusts(&self, peer: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&peer))
    }

    /// The route for a request: host-specific routes before host-less ones, then the
    /// longest path prefix.
    pub fn select(&self, host: Option<&str>, path: &str) -> Option<&Arc<Route>> {
        self.select_by(host, path, false)
    }

    /// The route a server comparing paths without case would give `path`.
    pub fn select_folded(&self, host: Option<&str>, path: &str) -> Option<&Arc<Route>> {
        self.select_by(host, path, true)
    }

    fn select_by(&self, host: Option<&str>, path: &str, fold_case: bool) -> Option<&Arc<Route>> {
        self.routes
            .iter()
            .filter(|r| r.matches(host, path, fold_case))
            .max_by_key(|r| (r.config.host.is_some(), r.config.path_prefix.len()))
    }

    /// Whether any route has a path prefix other than `/`: only then can another reading
    /// of a path pick another route.
    pub(crate) fn has_prefixes(&self) -> bool {
        self.prefixes
    }

    /// Whether a prefix has upper case: a lower-case path may then be its to a server
    /// comparing paths without case.
    pub(crate) fn has_upper_case_prefixes(&self) -> bool {
        self.upper_case_prefixes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/"));
        assert!(prefix_matches("/api", "/api/v1"));
        assert!(!prefix_matches("/api", "/apix"));
        assert!(!prefix_matches("/api", "/"));
        assert!(!prefix_matches("/api", "/API"));
        assert!(prefix_matches_folded("/api", "/API/v1"));
        assert!(prefix_matches_folded("/api", "/Api"));
        assert!(!prefix_matches_folded("/api", "/APIX"));
        assert!(!prefix_matches_folded("/api", "/ap"));
        // A multi-byte character where the prefix would end is no match, not a panic.
        assert!(!prefix_matches_folded("/api", "/ap\u{e9}"));
    }

    #[test]
    fn hosts_are_normalized() {
        let host = |raw| normalize_host(raw).map(Cow::into_owned);
        assert_eq!(host("Example.COM:8080").as_deref(), Some("example.com"));
        assert_eq!(host("example.com.").as_deref(), Some("example.com"));
        assert_eq!(host("example.com:").as_deref(), Some("example.com"));
        assert_eq!(host("[::1]:80").as_deref(), Some("::1"));
        assert_eq!(host("[::1]").as_deref(), Some("::1"));
        assert_eq!(host("127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(host("").as_deref(), Some(""));
    }

    #[test]
    fn what_is_no_host_is_refused_not_read_as_another() {
        for raw in [
            "admin.example:abc",
            "admin.example:80x",
            "admin.example: 80",
            "admin.example:123456",
            "admin.example:80:80",
            "admin example",
            "admin.example/x",
            "admin%2eexample",
            "admin.example@evil",
            "[::1",
            "[::1]x",
            "[::1]:8o",
            "[]",
            "[v1.x]",
            "[::1%25eth0]",
            "caf\u{e9}.example",
        ] {
            assert_eq!(normalize_host(raw), None, "{raw:?}");
        }
    }

    #[test]
    fn a_reload_keeps_the_buckets_and_permits_of_a_limit_it_leaves_alone() {
        let config = |per_second: f64| {
            crate::config::Config::from_toml(
                &format!(
                    "[[route]]\nname = \"api\"\nupstream = \"http://127.0.0.1:1\"\nallow = [\"allUsers\"]\nconcurrency = 4\nrate_limit = {{ per_second = {per_second:?}, burst = 2 }}\n"
                ),
                None,
            )
            .unwrap()
        };
        let first = Snapshot::build(&config(1.0), None).unwrap();
        let same = Snapshot::build(&config(1.0), Some(&first)).unwrap();
        let changed = Snapshot::build(&config(2.0), Some(&same)).unwrap();
        let limiter = |s: &Snapshot| s.routes[0].limiter.clone().unwrap();
        let permits = |s: &Snapshot| s.routes[0].concurrency.clone().unwrap();
        assert!(Arc::ptr_eq(&limiter(&first), &limiter(&same)));
        assert!(Arc::ptr_eq(&permits(&first), &permits(&same)));
        assert!(!Arc::ptr_eq(&limiter(&same), &limiter(&changed)));
        assert!(Arc::ptr_eq(&permits(&same), &permits(&changed)));
    }

    #[test]
    fn selection_prefers_host_then_longest_prefix() {
        let config = crate::config::Config::from_toml(
            r#"
            [[route]]
            name = "root"
            upstream = "http://127.0.0.1:1"
            allow = ["allUsers"]
            [[route]]
            name = "api"
            path_prefix = "/api"
            upstream = "http://127.0.0.1:2"
            allow = ["allUsers"]
            [[route]]
            name = "admin-host"
            host = "admin.example"
            upstream = "http://127.0.0.1:3"
            allow = ["allUsers"]
            "#,
            None,
        )
        .unwrap();
        let snap = Snapshot::build(&config, None).unwrap();
        let pick = |h: Option<&str>, p: &str| snap.select(h, p).map(|r| r.name().to_owned());
        assert_eq!(pick(None, "/x").as_deref(), Some("root"));
        assert_eq!(pick(Some("a.example"), "/api/v1").as_deref(), Some("api"));
        assert_eq!(
            pick(Some("admin.example"), "/api/v1").as_deref(),
            Some("admin-host")
        );
    }
}
