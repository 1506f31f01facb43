//! The gateway's configuration: the TOML file (`--config`) or the flags-only form of
//! DESIGN §2, parsed into one [`Config`]. Every mistake in a file is reported with its line
//! and column, so a bad file is refused at start (and a bad reload keeps the old config).

use gatehouse_verify::members::{Groups, Member, Policy, RUN_INVOKER};
use gatehouse_verify::profile::IssuerProfile;
use http::Uri;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// The default listen address of `gatehouse proxy`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The default `iss` of the gateway's assertions, IAP's.
pub const DEFAULT_ASSERTION_ISSUER: &str = "https://cloud.google.com/iap";
/// Assertions live 10 minutes, as IAP's.
pub const DEFAULT_ASSERTION_LIFETIME: u64 = 600;
/// The most `workers` a configuration may ask for.
pub const MAX_WORKERS: usize = 256;

/// One worker per CPU the process may run on (cgroup quotas included).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS))
}

/// A configuration could not be used. `Display` gives `FILE:LINE:COLUMN: reason` when the
/// mistake has a place in a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    /// 1-based line and column of the offending value, when known.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}:", file.display())?;
        }
        if let Some(line) = self.line {
            write!(f, "{line}:")?;
            if let Some(column) = self.column {
                write!(f, "{column}:")?;
            }
        }
        if self.file.is_some() || self.line.is_some() {
            f.write_str(" ")?;
        }
        f.write_str(&self.reason)
    }
}

impl ConfigError {
    fn plain(reason: impl Into<String>) -> Self {
        ConfigError {
            file: None,
            line: None,
            column: None,
            reason: reason.into(),
        }
    }
}

/// Where token forwarding leaves the verified token for the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ForwardToken {
    /// As Cloud Run: `header.payload.SIGNATURE_REMOVED_BY_GOOGLE`.
    #[default]
    SignatureRemoved,
    /// The token exactly as the client sent it.
    Keep,
    /// Remove the header that carried it.
    Strip,
}

/// How CORS preflights (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) are met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorsMode {
    /// The gateway answers preflights itself from `allow_origins` (no token needed).
    Answer,
    /// Preflights go to the upstream unauthenticated; the app answers them.
    Pass,
    /// Preflights are requests like any other (Cloud Run's behaviour: they need a token).
    RequireAuth,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    pub mode: CorsMode,
    /// Exact origins (`https://app.example.com`); `*` only without credentials.
    pub allow_origins: Vec<String>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub allow_credentials: bool,
    pub max_age: u64,
}

impl Default for Cors {
    fn default() -> Self {
        Cors {
            mode: CorsMode::RequireAuth,
            allow_origins: Vec::new(),
            allow_methods: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
                .map(String::from)
                .to_vec(),
            allow_headers: [
                "authorization",
                "content-type",
                "x-serverless-authorization",
            ]
            .map(String::from)
            .to_vec(),
            expose_headers: Vec::new(),
            allow_credentials: false,
            max_age: 600,
        }
    }
}

/// A token bucket per caller (verified email or subject; the client address when
/// anonymous): `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// One route: which requests it takes and how they are admitted.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    /// Lowercase host without port; `None` matches any host.
    pub host: Option<String>,
    /// Path prefix on segment boundaries (`/api` takes `/api` and `/api/x`, not `/apix`).
    pub path_prefix: String,
    pub upstream: Uri,
    /// Speak HTTP/2 without TLS (h2c, prior knowledge) to the upstream.
    pub upstream_h2c: bool,
    /// Accepted `aud` values: the route's URL, custom audiences, the project's client ids.
    pub audiences: Vec<String>,
    /// Issuer profiles, each already given the route's audiences.
    pub issuers: Vec<IssuerProfile>,
    pub issuer_names: Vec<String>,
    pub policy: Policy,
    pub forward_token: ForwardToken,
    pub cors: Cors,
    pub rate_limit: Option<RateLimit>,
    /// `aud` of the assertions made for this route.
    pub assertion_audience: String,
    /// Entries of the verified-token cache (0 disables it).
    pub token_cache: usize,
    /// At most this many requests in flight to the upstream at once (Cloud Run's
    /// per-instance `concurrency`); more wait their turn, up to the upstream timeout.
    /// `None`: no bound.
    pub concurrency: Option<usize>,
    /// This route's upstream timeout (Cloud Run's per-service request timeout), in place of
    /// `[timeouts] upstream_seconds`.
    pub upstream_timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_header_bytes: usize,
    /// Request bodies larger than this are refused (413), also mid-stream.
    pub max_body_bytes: u64,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            max_body_bytes: 1024 * 1024 * 1024,
            max_connections: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Time to read a request head, and so also the keep-alive idle time between requests.
    pub header_read: Duration,
    /// A connection with no byte in either direction for this long is closed.
    pub idle: Duration,
    /// Time until the upstream's response head.
    pub upstream: Duration,
    /// How long SIGTERM waits for in-flight requests before closing connections.
    pub shutdown_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            header_read: Duration::from_secs(30),
            idle: Duration::from_secs(300),
            upstream: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionConfig {
    pub issuer: String,
    pub lifetime: u64,
    /// PKCS#8 PEM of a P-256 key; a fresh key per process when absent.
    pub key_file: Option<PathBuf>,
}

impl Default for AssertionConfig {
    fn default() -> Self {
        AssertionConfig {
            issuer: DEFAULT_ASSERTION_ISSUER.into(),
            lifetime: DEFAULT_ASSERTION_LIFETIME,
            key_file: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// When set, `/_gatehouse/metrics` is served here and no longer on `listen`.
    pub admin_listen: Option<SocketAddr>,
    pub tls: Option<TlsConfig>,
    /// PEM certificates trusted for `https://` upstreams besides the system's roots.
    pub upstream_ca: Option<PathBuf>,
    /// Peers (load balancers, other proxies) whose forwarding headers are believed: a
    /// request from one keeps them, and its client is the last address in
    /// `X-Forwarded-For` that is not one of these.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Threads serving `listen`, each with its own event loop and upstream connections.
    pub workers: usize,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub assertion: AssertionConfig,
    pub groups: Groups,
    pub routes: Vec<RouteConfig>,
    /// Poll the config file (and policy files) for changes at this interval.
    pub watch_interval: Option<Duration>,
    /// Files whose change triggers a reload (the config file and the policy files it
    /// names), with a fingerprint of their bytes as this configuration read them.
    pub sources: Sources,
}

/// The files a configuration was read from, and a fingerprint of what was read: a watcher
/// comparing it with the files' bytes now sees any change made after the read, however
/// soon after, and none made before it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    pub files: Vec<PathBuf>,
    pub fingerprint: u64,
}

impl Sources {
    fn read(&mut self, file: &Path, bytes: &[u8]) {
        self.fingerprint = chain(self.fingerprint, file, Some(bytes));
        self.files.push(file.to_owned());
    }

    /// The fingerprint of the files as they are now (a missing or unreadable one counts as
    /// such): equal to [`Sources::fingerprint`] when none changed since they were read.
    pub fn fingerprint_now(&self) -> u64 {
        self.files.iter().fold(0, |fingerprint, file| {
            chain(fingerprint, file, std::fs::read(file).ok().as_deref())
        })
    }
}

fn chain(fingerprint: u64, file: &Path, bytes: Option<&[u8]>) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (fingerprint, file, bytes).hash(&mut h);
    h.finish()
}

// ---------------------------------------------------------------------------------------
// The file form.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<Spanned<String>>,
    admin_listen: Option<Spanned<String>>,
    tls: Option<RawTls>,
    upstream_ca: Option<PathBuf>,
    #[serde(default)]
    trusted_proxies: Vec<Spanned<String>>,
    workers: Option<Spanned<usize>>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    assertion: RawAssertion,
    /// OAuth client ids of the project: accepted as audience on every route (seed 003).
    #[serde(default)]
    client_ids: Vec<String>,
    #[serde(default)]
    groups: BTreeMap<String, Vec<Member>>,
    /// Seconds between checks of the config file for changes; 0 turns watching off.
    watch_seconds: Option<u64>,
    #[serde(default, rename = "route")]
    routes: Vec<Spanned<RawRoute>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_header_bytes: Option<usize>,
    max_body_bytes: Option<u64>,
    max_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    connect_seconds: Option<f64>,
    header_read_seconds: Option<f64>,
    idle_seconds: Option<f64>,
    upstream_seconds: Option<f64>,
    shutdown_grace_seconds: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAssertion {
    issuer: Option<String>,
    lifetime_seconds: Option<u64>,
    key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawIssuer {
    Spec(String),
    Table {
        profile: String,
        jwks: Option<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Option<String>,
    host: Option<String>,
    path_prefix: Option<String>,
    upstream: Spanned<String>,
    #[serde(default)]
    upstream_h2c: bool,
    /// The route's own URL (Cloud Run's default audience).
    url: Option<String>,
    #[serde(default)]
    audiences: Vec<String>,
    #[serde(default)]
    client_ids: Vec<String>,
    #[serde(default)]
    issuers: Vec<Spanned<RawIssuer>>,
    /// Inline policy: a TOML table of the get-iam-policy shape, or that JSON as a string.
    policy: Option<Spanned<toml::Value>>,
    policy_file: Option<Spanned<PathBuf>>,
    /// Shorthand for a policy granting the invoker role to these members.
    allow: Option<Vec<Member>>,
    #[serde(default)]
    forward_token: ForwardToken,
    #[serde(default)]
    cors: Option<Spanned<RawCors>>,
    rate_limit: Option<RateLimit>,
    assertion_audience: Option<String>,
    verified_token_cache: Option<usize>,
    concurrency: Option<usize>,
    upstream_seconds: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCors {
    mode: Option<CorsMode>,
    #[serde(default)]
    allow_origins: Vec<String>,
    allow_methods: Option<Vec<String>>,
    allow_headers: Option<Vec<String>>,
    #[serde(default)]
    expose_headers: Vec<String>,
    #[serde(default)]
    allow_credentials: bool,
    max_age_seconds: Option<u64>,
}

/// Maps byte offsets of one text to 1-based lines and columns.
struct Positions<'a> {
    text: &'a str,
    file: Option<PathBuf>,
}

impl Positions<'_> {
    fn error(&self, span: Option<Range<usize>>, reason: impl Into<String>) -> ConfigError {
        let (line, column) = match span {
            Some(span) => {
                let start = span.start.min(self.text.len());
                let before = &self.text[..start];
                let line = before.matches('\n').count() + 1;
                let column = before
                    .rfind('\n')
                    .map_or(before.chars().count(), |i| before[i + 1..].chars().count())
                    + 1;
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        ConfigError {
            file: self.file.clone(),
            line,
            column,
            reason: reason.into(),
        }
    }
}

pub const DEFAULT_WATCH_SECONDS: u64 = 2;

impl Config {
    /// Reads and checks a configuration file. Relative paths in it (policy files, TLS,
    /// assertion key) are taken relative to the file's directory.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(path.to_owned()),
            line: None,
            column: None,
            reason: format!("cannot read: {e}"),
        })?;
        Config::from_toml(&text, Some(path))
    }

    /// Parses configuration text; `path` names the file for errors and relative paths.
    pub fn from_toml(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
        let at = Positions {
            text,
            file: path.map(Path::to_owned),
        };
        let base = path
            .and_then(Path::parent)
            .map(Path::to_owned)
            .unwrap_or_default();
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| at.error(e.span(), e.message().trim().to_owned()))?;

        let listen = match &raw.listen {
            Some(s) => parse_addr(s.get_ref()).map_err(|r| at.error(Some(s.span()), r))?,
            None => parse_addr(DEFAULT_LISTEN).map_err(ConfigError::plain)?,
        };
        let admin_listen = match &raw.admin_listen {
            Some(s) => Some(parse_addr(s.get_ref()).map_err(|r| at.error(Some(s.span()), r))?),
            None => None,
        };
        let mut limits = Limits::default();
        if let Some(v) = raw.limits.max_header_bytes {
            limits.max_header_bytes = v.clamp(1024, 1024 * 1024);
        }
        if let Some(v) = raw.limits.max_body_bytes {
            limits.max_body_bytes = v;
        }
        if let Some(v) = raw.limits.max_connections {
            limits.max_connections = v.max(1);
        }
        let mut timeouts = Timeouts::default();
        let secs = |v: Option<f64>, d: Duration| -> Result<Duration, ConfigError> {
            match v {
                None => Ok(d),
                Some(s) if s.is_finite() && s > 0.0 && s < 1e7 => Ok(Duration::from_secs_f64(s)),
                Some(s) => Err(ConfigError {
                    file: at.file.clone(),
                    line: None,
                    column: None,
                    reason: format!("timeouts: {s} is not a positive number of seconds"),
                }),
            }
        };
        timeouts.connect = secs(raw.timeouts.connect_seconds, timeouts.connect)?;
        timeouts.header_read = secs(raw.timeouts.header_read_seconds, timeouts.header_read)?;
        timeouts.idle = secs(raw.timeouts.idle_seconds, timeouts.idle)?;
        timeouts.upstream = secs(raw.timeouts.upstream_seconds, timeouts.upstream)?;
        timeouts.shutdown_grace =
            secs(raw.timeouts.shutdown_grace_seconds, timeouts.shutdown_grace)?;

        let mut assertion = AssertionConfig::default();
        if let Some(iss) = raw.assertion.issuer {
            assertion.issuer = iss;
        }
        if let Some(l) = raw.assertion.lifetime_seconds {
            assertion.lifetime = l.clamp(30, 3600);
        }
        assertion.key_file = raw.assertion.key_file.map(|p| base.join(p));

        let mut groups = Groups::new();
        for (name, members) in raw.groups {
            groups
                .insert(&name, members)
                .map_err(|e| at.error(None, format!("groups: {e}")))?;
        }

        let mut sources = Sources::default();
        if let Some(path) = path {
            sources.read(path, text.as_bytes());
        }
        let mut routes = Vec::with_capacity(raw.routes.len());
        for (index, spanned) in raw.routes.into_iter().enumerate() {
            let span = spanned.span();
            let route = spanned.into_inner();
            let route = compile_route(route, index, &raw.client_ids, &base, &at, &mut sources)
                .map_err(|mut e| {
                    if e.line.is_none() {
                        let located = at.error(Some(span.clone()), String::new());
                        e.line = located.line;
                        e.column = located.column;
                    }
                    e
                })?;
            routes.push(route);
        }
        if routes.is_empty() {
            return Err(at.error(
                None,
                "no routes: add at least one [[route]] with an upstream",
            ));
        }
        check_route_uniqueness(&routes).map_err(|r| at.error(None, r))?;
        // A real get-iam-policy file may name Google Groups; their members are not fetched,
        // so one not listed under [groups] matches no one. Allowed, but said.
        for (route, group) in undefined_groups(&routes, &groups) {
            tracing::warn!(
                route,
                group,
                "the policy grants group:{group}, which [groups] does not define: it matches no one"
            );
        }
        for (route, upstream) in waits_past_idle(&routes, &timeouts) {
            tracing::warn!(
                route,
                upstream_seconds = upstream.as_secs_f64(),
                idle_seconds = timeouts.idle.as_secs_f64(),
                "the upstream timeout is longer than the idle timeout: a client waiting that long \
                 for an answer is closed at the idle timeout, with no 504; raise idle_seconds"
            );
        }
        let watch = raw.watch_seconds.unwrap_or(DEFAULT_WATCH_SECONDS);
        let tls = raw.tls.map(|t| TlsConfig {
            cert: base.join(t.cert),
            key: base.join(t.key),
        });
        let workers = match &raw.workers {
            None => default_workers(),
            Some(w) if (1..=MAX_WORKERS).contains(w.get_ref()) => *w.get_ref(),
            Some(w) => {
                return Err(at.error(
                    Some(w.span()),
                    format!("workers must be 1 to {MAX_WORKERS}"),
                ));
            }
        };
        let trusted_proxies = raw
            .trusted_proxies
            .iter()
            .map(|spec| {
                parse_network(spec.get_ref()).ok_or_else(|| {
                    at.error(
                        Some(spec.span()),
                        format!(
                            "trusted_proxies: {:?} is not an address or a network like 10.0.0.0/8",
                            spec.get_ref()
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Config {
            listen,
            admin_listen,
            tls,
            upstream_ca: raw.upstream_ca.map(|ca| base.join(ca)),
            trusted_proxies,
            workers,
            limits,
            timeouts,
            assertion,
            groups,
            routes,
            watch_interval: (watch > 0 && path.is_some()).then(|| Duration::from_secs(watch)),
            sources,
        })
    }

    /// The flags-only form: one route for every path to `upstream`.
    pub fn from_flags(flags: &Flags) -> Result<Config, ConfigError> {
        let upstream = parse_upstream(&flags.upstream).map_err(ConfigError::plain)?;
        if flags.audiences.is_empty() {
            return Err(ConfigError::plain(
                "--audience is required with --upstream (the gateway's URL, as Cloud Run's)",
            ));
        }
        let spec = flags.issuer.as_deref().unwrap_or("google");
        let profile = IssuerProfile::parse(spec, flags.jwks.as_deref())
            .map_err(|e| ConfigError::plain(e.to_string()))?
            .with_audiences(flags.audiences.iter().cloned());
        let members = if flags.allow.is_empty() {
            vec![Member::AllAuthenticatedUsers]
        } else {
            flags
                .allow
                .iter()
                .map(|m| m.parse::<Member>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ConfigError::plain(e.to_string()))?
        };
        let listen = parse_addr(flags.listen.as_deref().unwrap_or(DEFAULT_LISTEN))
            .map_err(ConfigError::plain)?;
        let route = RouteConfig {
            name: "default".into(),
            host: None,
            path_prefix: "/".into(),
            upstream,
            upstream_h2c: false,
            assertion_audience: flags.audiences[0].clone(),
            audiences: flags.audiences.clone(),
            issuers: vec![profile],
            issuer_names: vec![match &flags.jwks {
                Some(url) => format!("{spec} (keys {url})"),
                None => spec.to_owned(),
            }],
            policy: Policy::granting(RUN_INVOKER, members),
            forward_token: ForwardToken::SignatureRemoved,
            cors: Cors::default(),
            rate_limit: None,
            token_cache: gatehouse_verify::verifier::DEFAULT_TOKEN_CACHE_ENTRIES,
            concurrency: None,
            upstream_timeout: None,
        };
        Ok(Config {
            listen,
            admin_listen: None,
            tls: match (&flags.tls_cert, &flags.tls_key) {
                (Some(cert), Some(key)) => Some(TlsConfig {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                (None, None) => None,
                _ => {
                    return Err(ConfigError::plain("--tls-cert and --tls-key go together"));
                }
            },
            upstream_ca: None,
            trusted_proxies: Vec::new(),
            workers: default_workers(),
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            assertion: AssertionConfig::default(),
            groups: Groups::new(),
            routes: vec![route],
            watch_interval: None,
            sources: Sources::default(),
        })
    }
}

/// The flags-only form's inputs (DESIGN §2).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub upstream: String,
    pub audiences: Vec<String>,
    pub allow: Vec<String>,
    pub listen: Option<String>,
    pub issuer: Option<String>,
    pub jwks: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// `10.0.0.0/8`, `::1/128`, or a bare address (that address alone).
fn parse_network(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not a listen address like 127.0.0.1:8080"))
}

/// An upstream is `http://host[:port][/base]` or `https://...`.
pub(crate) fn parse_upstream(s: &str) -> Result<Uri, String> {
    let uri: Uri = s
        .parse()
        .map_err(|_| format!("upstream {s:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(format!(
                "upstream {s:?}: scheme {other:?} is not supported (use http:// or https://)"
            ));
        }
        None => return Err(format!("upstream {s:?} needs http:// or https://")),
    }
    if uri.authority().is_none_or(|a| a.host().is_empty()) {
        return Err(format!("upstream {s:?} has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("upstream {s:?} may not have a query"));
    }
    Ok(uri)
}

fn normalize_prefix(p: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err(format!("path_prefix {p:?} must start with /"));
    }
    if p.contains(['?', '#']) || p.contains(char::is_whitespace) {
        return Err(format!("path_prefix {p:?} may not contain ?, # or spaces"));
    }
    // In the one spelling request paths are routed by, or a prefix written another way
    // (`/café`, `/%7Eadmin`) would never match the paths it means.
    let normal = crate::paths::normalize(p).map_err(|e| format!("path_prefix {p:?}: {e}"))?;
    let trimmed = normal.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    })
}

fn compile_route(
    raw: RawRoute,
    index: usize,
    client_ids: &[String],
    base: &Path,
    at: &Positions<'_>,
    sources: &mut Sources,
) -> Result<RouteConfig, ConfigError> {
    let upstream = parse_upstream(raw.upstream.get_ref())
        .map_err(|r| at.error(Some(raw.upstream.span()), r))?;
    let name = raw.name.unwrap_or_else(|| format!("route{index}"));
    let path_prefix = normalize_prefix(raw.path_prefix.as_deref().unwrap_or("/"))
        .map_err(|r| at.error(None, format!("route {name:?}: {r}")))?;
    let host = raw
        .host
        .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase());
    if host
        .as_deref()
        .is_some_and(|h| h.is_empty() || !h.bytes().all(crate::routes::is_host_name_byte))
    {
        return Err(at.error(
            None,
            format!(
                "route {name:?}: host must be a bare host name (letters, digits, -, ., _ or ~: no scheme, port or path; an IDN in its xn-- form)"
            ),
        ));
    }
    let mut audiences: Vec<String> = Vec::new();
    for a in raw
        .url
        .iter()
        .chain(raw.audiences.iter())
        .chain(raw.client_ids.iter())
        .chain(client_ids.iter())
    {
        if !a.is_empty() && !audiences.contains(a) {
            audiences.push(a.clone());
        }
    }

    // Policy: exactly one of policy, policy_file, allow.
    let given = [
        raw.policy.is_some(),
        raw.policy_file.is_some(),
        raw.allow.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given != 1 {
        return Err(at.error(
            None,
            format!(
                "route {name:?}: give exactly one of policy (inline get-iam-policy JSON shape), policy_file or allow"
            ),
        ));
    }
    let policy = if let Some(p) = &raw.policy {
        let json = match p.get_ref() {
            toml::Value::String(s) => s.clone(),
            other => serde_json::to_string(other)
                .map_err(|e| at.error(Some(p.span()), format!("policy: {e}")))?,
        };
        Policy::from_json(&json).map_err(|e| at.error(Some(p.span()), format!("policy: {e}")))?
    } else if let Some(f) = &raw.policy_file {
        let file = base.join(f.get_ref());
        let text = std::fs::read_to_string(&file).map_err(|e| {
            at.error(
                Some(f.span()),
                format!("policy_file {}: {e}", file.display()),
            )
        })?;
        sources.read(&file, text.as_bytes());
        Policy::from_json(&text).map_err(|e| {
            at.error(
                Some(f.span()),
                format!("policy_file {}: {e}", file.display()),
            )
        })?
    } else {
        Policy::granting(RUN_INVOKER, raw.allow.unwrap_or_default())
    };
    let public = policy.is_public(RUN_INVOKER);
    if audiences.is_empty() && !public {
        return Err(at.error(
            None,
            format!(
                "route {name:?} checks tokens but accepts no audience: set url, audiences or client_ids"
            ),
        ));
    }

    let mut issuers = Vec::new();
    let mut issuer_names = Vec::new();
    let specs: Vec<(String, Option<String>, Option<Range<usize>>)> = if raw.issuers.is_empty() {
        vec![("google".into(), None, None)]
    } else {
        raw.issuers
            .iter()
            .map(|s| {
                let span = Some(s.span());
                match s.get_ref() {
                    RawIssuer::Spec(p) => (p.clone(), None, span),
                    RawIssuer::Table { profile, jwks } => (profile.clone(), jwks.clone(), span),
                }
            })
            .collect()
    };
    for (spec, jwks, span) in specs {
        let builtin = matches!(spec.as_str(), "google" | "iap")
            || spec
                .strip_prefix("firebase:")
                .is_some_and(|p| !p.is_empty())
            || spec.strip_prefix("oidc:").is_some_and(|u| !u.is_empty());
        if !builtin
            && jwks.is_none()
            && !spec.starts_with("https://")
            && !spec.starts_with("http://")
        {
            return Err(at.error(
                span,
                format!(
                    "issuer {spec:?}: use google, iap, firebase:PROJECT, oidc:URL, or an issuer URL; a literal issuer that is not a URL needs jwks"
                ),
            ));
        }
        let profile = IssuerProfile::parse(&spec, jwks.as_deref())
            .map_err(|e| at.error(span.clone(), e.to_string()))?
            .with_audiences(audiences.iter().cloned());
        issuers.push(profile);
        // The key source is part of the name: a reload that changes it builds a new verifier.
        issuer_names.push(match jwks {
            Some(url) => format!("{spec} (keys {url})"),
            None => spec,
        });
    }

    let cors = match raw.cors {
        None => Cors::default(),
        Some(c) => {
            let span = c.span();
            let c = c.into_inner();
            if c.allow_credentials && c.allow_origins.iter().any(|o| o == "*") {
                return Err(at.error(
                    Some(span),
                    "cors: allow_origins \"*\" cannot go with allow_credentials (it would trust every site)",
                ));
            }
            let defaults = Cors::default();
            Cors {
                mode: c.mode.unwrap_or(if c.allow_origins.is_empty() {
                    CorsMode::RequireAuth
                } else {
                    CorsMode::Answer
                }),
                allow_origins: c.allow_origins,
                allow_methods: c.allow_methods.unwrap_or(defaults.allow_methods),
                allow_headers: c.allow_headers.unwrap_or(defaults.allow_headers),
                expose_headers: c.expose_headers,
                allow_credentials: c.allow_credentials,
                max_age: c
                    .max_age_seconds
                    .map_or(defaults.max_age, |m| m.min(86_400)),
            }
        }
    };
    if let Some(rl) = raw.rate_limit {
        if !(rl.per_second.is_finite() && rl.per_second > 0.0) || rl.burst == 0 {
            return Err(at.error(
                None,
                format!("route {name:?}: rate_limit needs per_second > 0 and burst >= 1"),
            ));
        }
    }
    if raw.upstream_h2c && upstream.scheme_str() == Some("https") {
        return Err(at.error(
            Some(raw.upstream.span()),
            format!("route {name:?}: upstream_h2c is HTTP/2 in cleartext; an https:// upstream is spoken to over TLS"),
        ));
    }
    if let Some(c) = raw.concurrency {
        if !(1..=MAX_CONCURRENCY).contains(&c) {
            return Err(at.error(
                None,
                format!(
                    "route {name:?}: concurrency must be 1 to {MAX_CONCURRENCY}, as on Cloud Run"
                ),
            ));
        }
    }
    let upstream_timeout = match raw.upstream_seconds {
        None => None,
        Some(secs) => {
            let span = secs.span();
            let secs = secs.into_inner();
            if !(secs.is_finite() && secs > 0.0 && secs < 1e7) {
                return Err(at.error(
                    Some(span),
                    format!("route {name:?}: upstream_seconds {secs} is not a positive number of seconds"),
                ));
            }
            Some(Duration::from_secs_f64(secs))
        }
    };
    let assertion_audience = raw
        .assertion_audience
        .or_else(|| audiences.first().cloned())
        .unwrap_or_else(|| format!("gatehouse:{name}"));
    Ok(RouteConfig {
        name,
        host,
        path_prefix,
        upstream,
        upstream_h2c: raw.upstream_h2c,
        audiences,
        issuers,
        issuer_names,
        policy,
        forward_token: raw.forward_token,
        cors,
        rate_limit: raw.rate_limit,
        assertion_audience,
        token_cache: raw
            .verified_token_cache
            .unwrap_or(gatehouse_verify::verifier::DEFAULT_TOKEN_CACHE_ENTRIES)
            .min(1 << 20),
        concurrency: raw.concurrency,
        upstream_timeout,
    })
}

/// Cloud Run's largest per-instance concurrency.
const MAX_CONCURRENCY: usize = 1000;

/// The routes whose upstream timeout is longer than the idle timeout, and that timeout. No
/// byte moves on a client's connection while its request waits for the upstream's answer
/// head, so the idle timeout closes it first. Allowed (an upload that keeps bytes moving
/// may take longer than the idle timeout), but said.
pub fn waits_past_idle<'a>(
    routes: &'a [RouteConfig],
    timeouts: &Timeouts,
) -> Vec<(&'a str, Duration)> {
    routes
        .iter()
        .map(|r| {
            (
                r.name.as_str(),
                r.upstream_timeout.unwrap_or(timeouts.upstream),
            )
        })
        .filter(|(_, upstream)| *upstream > timeouts.idle)
        .collect()
}

/// (route, group) for every `group:` the routes' invoker bindings name that `groups` lacks.
pub fn undefined_groups<'a>(routes: &'a [RouteConfig], groups: &Groups) -> Vec<(&'a str, &'a str)> {
    let mut missing = Vec::new();
    for route in routes {
        for member in route.policy.members_of(RUN_INVOKER) {
            if let Member::Group(name) = member {
                if !groups.contains(name) {
                    missing.push((route.name.as_str(), name.as_str()));
                }
            }
        }
    }
    missing
}

fn check_route_uniqueness(routes: &[RouteConfig]) -> Result<(), String> {
    for (i, a) in routes.iter().enumerate() {
        for b in &routes[i + 1..] {
            if a.name == b.name {
                return Err(format!("two routes are named {:?}", a.name));
            }
            if a.host == b.host && a.path_prefix == b.path_prefix {
                return Err(format!(
                    "routes {:?} and {:?} take the same host and path prefix",
                    a.name, b.name
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
