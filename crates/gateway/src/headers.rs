//! Header rules of a front door: which client-sent headers are identity claims to remove,
//! which are hop-by-hop, and the forwarding headers the upstream gets.

use bytes::{BufMut as _, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Uri, request};
use std::net::SocketAddr;

// Names made at compile time: a name given as a `&str` is parsed and classified on every
// use, several times per request.
pub(crate) const EMAIL: HeaderName = HeaderName::from_static("x-goog-authenticated-user-email");
pub(crate) const USER_ID: HeaderName = HeaderName::from_static("x-goog-authenticated-user-id");
pub(crate) const ASSERTION: HeaderName = HeaderName::from_static("x-goog-iap-jwt-assertion");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// Google's prefix on the identity headers' values.
pub(crate) const ACCOUNTS_PREFIX: &str = "accounts.google.com:";

/// Whether a client-sent header (lowercase name) claims an identity only the gateway may
/// assert.
fn is_identity_name(n: &str) -> bool {
    n.starts_with("x-goog-authenticated-user-")
        || n.starts_with("x-goog-iap-")
        || n.starts_with("x-gatehouse-")
        || matches!(
            n,
            "x-forwarded-user"
                | "x-forwarded-email"
                | "x-forwarded-groups"
                | "x-forwarded-preferred-username"
                | "x-forwarded-access-token"
        )
}

/// Headers that tell an app where a request came from or which URL it was for: believed
/// only from a trusted proxy (the gateway sets its own `X-Forwarded-For/Proto/Host` and
/// `Forwarded`; apps and frameworks read these others for the client's address or to
/// build and re-route URLs).
fn is_client_claim(n: &str) -> bool {
    matches!(
        n,
        "x-real-ip"
            | "true-client-ip"
            | "x-client-ip"
            | "x-cluster-client-ip"
            | "cf-connecting-ip"
            | "fastly-client-ip"
            | "x-forwarded-port"
            | "x-forwarded-prefix"
            | "x-forwarded-ssl"
            | "x-forwarded-scheme"
            | "x-forwarded-server"
            | "front-end-https"
    )
}

/// Never believed from anyone: IIS and Symfony route by these instead of the request
/// line, so a request would reach a path its route was not chosen by.
fn is_url_override(n: &str) -> bool {
    matches!(n, "x-original-url" | "x-rewrite-url")
}

/// Whether a client-sent header is to be removed before the gateway says who the caller
/// is and where the request came from. A name with `_` is judged as with `-`: CGI, WSGI
/// and Rack servers read `X-Goog-Authenticated-User_Email` as the real header.
fn is_spoofable(name: &HeaderName, from_trusted_proxy: bool) -> bool {
    let n = name.as_str(); // always lowercase
    if n.contains('_') {
        let n = n.replace('_', "-");
        // A proxy writes the forwarding names with `-`: the `_` twins are nobody's. Nor
        // is the token's: the app would read a twin of `X-Serverless-Authorization` as the
        // token the gateway checked (Cloud Run's precedence), signature removed or not.
        return is_identity_name(&n)
            || is_client_claim(&n)
            || is_url_override(&n)
            || n.starts_with("x-forwarded-")
            || n == "forwarded"
            || n == "x-serverless-authorization";
    }
    is_identity_name(n) || is_url_override(n) || (!from_trusted_proxy && is_client_claim(n))
}

/// Removes every identity header, whatever its case or count, and what a client may not
/// claim about where its request came from (see [`is_spoofable`]).
pub(crate) fn strip_identity(headers: &mut HeaderMap, from_trusted_proxy: bool) -> usize {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_spoofable(n, from_trusted_proxy))
        .cloned()
        .collect();
    for n in &names {
        headers.remove(n);
    }
    names.len()
}

/// The hop-by-hop headers (RFC 9110 §7.6.1 and the customary others), `Upgrade` last.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including those `Connection` names, and
/// `Upgrade` (re-added by the caller for an upgrade it forwards). A message that came with
/// `Transfer-Encoding` loses its `Content-Length` too (RFC 9112 §6.3: the encoding framed
/// it, and the length would misframe what is sent on).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let present = hop_by_hop_present(headers);
    strip_present(headers, present);
}

const CONNECTION_BIT: u16 = 1;
const TE_BIT: u16 = 1 << 5;
const TRANSFER_ENCODING_BIT: u16 = 1 << 7;
const UPGRADE_BIT: u16 = 1 << 8;

/// Which of [`HOP_BY_HOP`] the message has, as bits: one pass over its names. Most
/// messages have none or only `Connection`, and every look-up spared is a hash.
fn hop_by_hop_present(headers: &HeaderMap) -> u16 {
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    present
}

/// [`strip_hop_by_hop`] with the names present already known.
fn strip_present(headers: &mut HeaderMap, present: u16) {
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        // The `Connection` values are held (shared, not copied) so the names they list can
        // be removed while reading them. Nearly always there is one (`keep-alive`): only
        // more than one costs a list.
        let mut values = headers.get_all(header::CONNECTION).iter();
        let first = values.next().cloned();
        let rest: Vec<HeaderValue> = values.cloned().collect();
        for token in first.iter().chain(&rest).flat_map(|v| tokens(v.as_bytes())) {
            // A hop-by-hop name goes below, by its bit, when present: looked up here it
            // would cost a name parsed and hashed for nothing (`keep-alive`, which most
            // messages' `Connection` says).
            if !HOP_BY_HOP
                .iter()
                .any(|h| h.as_str().as_bytes().eq_ignore_ascii_case(token))
            {
                if let Ok(name) = HeaderName::from_bytes(token) {
                    headers.remove(name);
                }
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if present & TRANSFER_ENCODING_BIT != 0 {
        headers.remove(header::CONTENT_LENGTH);
    }
}

/// [`strip_hop_by_hop`] for an upstream's answer, which is framed anew for the client:
/// false (and nothing removed) when it came in a transfer coding other than `chunked`,
/// which hyper does not take off and the client would get still applied, unlabelled.
pub(crate) fn strip_answer_hop_by_hop(headers: &mut HeaderMap) -> bool {
    let present = hop_by_hop_present(headers);
    if present & TRANSFER_ENCODING_BIT != 0 && !only_chunked(headers) {
        return false;
    }
    strip_present(headers, present);
    true
}

/// Whether a message's `Transfer-Encoding`, if any, is `chunked` alone: the one coding
/// hyper removes. Any other is still applied to the body it hands over.
pub(crate) fn only_chunked(headers: &HeaderMap) -> bool {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| tokens(v.as_bytes()));
    match (codings.next(), codings.next()) {
        (None, _) => true,
        (Some(c), None) => c.eq_ignore_ascii_case(b"chunked"),
        _ => false,
    }
}

/// What a request's hop-by-hop headers asked of this hop, read before they are removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Hop {
    /// A WebSocket handshake: the one upgrade tunnelled. Any other (`h2c` above all, whose
    /// tunnel would carry further requests past routing and policy) is not forwarded.
    pub websocket: bool,
    /// `TE: trailers`, which an HTTP/2 upstream needs for gRPC.
    pub te_trailers: bool,
    /// The body is in a transfer coding besides `chunked`, which hyper does not take off:
    /// it would go upstream still applied, unlabelled (RFC 9112 §6.1: 501).
    pub unsupported_coding: bool,
}

/// Reads what the request asks of this hop, then removes its hop-by-hop headers (those
/// its `Connection` names included): before the gateway adds its own headers, so a client
/// naming them in `Connection` removes only what it sent.
pub(crate) fn take_hop_by_hop(request: &mut http::Request<impl Sized>) -> Hop {
    let h = request.headers();
    let present = hop_by_hop_present(h);
    let websocket = present & (CONNECTION_BIT | UPGRADE_BIT) == CONNECTION_BIT | UPGRADE_BIT
        && request.method() == http::Method::GET
        && request.version() == http::Version::HTTP_11
        && has_token(h, header::CONNECTION, "upgrade")
        && is_websocket(h);
    let te_trailers = present & TE_BIT != 0 && has_token(h, header::TE, "trailers");
    let unsupported_coding = present & TRANSFER_ENCODING_BIT != 0 && !only_chunked(h);
    strip_present(request.headers_mut(), present);
    Hop {
        websocket,
        te_trailers,
        unsupported_coding,
    }
}

/// What a message's `Connection` fields say of its connection, read from their bytes.
#[derive(Debug, Default)]
pub(crate) struct ConnectionTokens {
    pub(crate) close: bool,
    keep_alive: bool,
}

impl ConnectionTokens {
    /// Reads one `Connection` value; true if it names more than `close` and `keep-alive`
    /// (header names, to be removed with it).
    pub(crate) fn read(&mut self, value: &[u8]) -> bool {
        let mut names_others = false;
        for token in tokens(value) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else {
                names_others = true;
            }
        }
        names_others
    }

    /// Whether an answer lets the connection carry another request (RFC 9112 §9.3).
    pub(crate) fn keep_alive(&self, version: http::Version) -> bool {
        !self.close && (version == http::Version::HTTP_11 || self.keep_alive)
    }
}

/// Whether a comma-separated header's values include `token` (any case).
pub(crate) fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| tokens(v.as_bytes()))
        .any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// The comma-separated tokens of a list field's value, trimmed, empty ones skipped; as
/// bytes, so a value with a byte past ASCII is still read for the rest.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Whether `Upgrade` asks for exactly one protocol, WebSocket (RFC 6455 §4.1).
pub(crate) fn is_websocket(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::UPGRADE).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => v
            .to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("websocket")),
        _ => false,
    }
}

/// An HTTP/2 client may send its cookies as several `cookie` fields; an HTTP/1.1 message
/// carries one (RFC 9113 §8.2.3: joined with "; " before passing on).
pub(crate) fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    if values.next().is_none() || values.next().is_none() {
        return;
    }
    let mut joined = BytesMut::new();
    for v in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.put_slice(b"; ");
        }
        joined.put_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_maybe_shared(joined.freeze()) {
        headers.insert(header::COOKIE, v);
    }
}

/// What this hop says of a connection in the forwarding headers, made once per connection.
#[derive(Debug)]
pub(crate) struct Forwarding {
    /// `X-Forwarded-For`: the peer's address.
    for_ip: Option<HeaderValue>,
    /// `X-Forwarded-Proto`.
    proto: &'static str,
    /// `Forwarded` up to the host: `for=...;proto=...`.
    forwarded: String,
    /// The last host asked for on this connection and the `Forwarded` value made for it:
    /// a connection's requests nearly always name the same host.
    last: parking_lot::Mutex<Option<(HeaderValue, HeaderValue)>>,
}

impl Forwarding {
    pub(crate) fn new(peer: SocketAddr, tls: bool) -> Self {
        let proto = if tls { "https" } else { "http" };
        // An IPv4 client of a dual-stack listener is itself, not `::ffff:a.b.c.d`.
        let ip = peer.ip().to_canonical();
        let v6 = ip.is_ipv6();
        let ip = ip.to_string();
        // RFC 7239: an IPv6 node is bracketed and quoted.
        let quoted = if v6 {
            format!("\"[{ip}]\"")
        } else {
            ip.clone()
        };
        Forwarding {
            for_ip: HeaderValue::from_str(&ip).ok(),
            proto,
            forwarded: format!("for={quoted};proto={proto}"),
            last: parking_lot::Mutex::new(None),
        }
    }
}

/// The fields the gateway adds to a request on its way upstream (identity, forwarding),
/// each name once and none of them in the request's map: the worker's HTTP/1.1 pool writes
/// them straight into the head it sends, hyper's clients get them inserted
/// ([`insert_added`]). Seven map inserts, each hashing a name, cost ~2,000 instructions
/// a request (bench/gateway/instructions).
pub(crate) type Added = Vec<(HeaderName, HeaderValue)>;

/// The fields the gateway adds to a request, as many as it may add: three of identity,
/// four of forwarding.
pub(crate) const ADDED: usize = 7;

/// `added` into `headers`, each replacing any value there.
pub(crate) fn insert_added(headers: &mut HeaderMap, added: Added) {
    for (name, value) in added {
        headers.insert(name, value);
    }
}

/// Removes `X-Forwarded-For/Proto/Host` and `Forwarded`, the fields the gateway sets
/// itself: an untrusted client's, and any in trailers, where nobody's are believed.
pub(crate) fn remove_forwarding(headers: &mut HeaderMap) {
    // One pass over the names: a client rarely sends any of these, and a removal looked up
    // by name would hash it.
    let sent = headers.keys().any(|name| {
        *name == X_FORWARDED_FOR
            || *name == X_FORWARDED_PROTO
            || *name == X_FORWARDED_HOST
            || *name == header::FORWARDED
    });
    if sent {
        for name in [
            X_FORWARDED_FOR,
            X_FORWARDED_PROTO,
            X_FORWARDED_HOST,
            header::FORWARDED,
        ] {
            headers.remove(name);
        }
    }
}

/// Sets `X-Forwarded-For/Proto/Host` and `Forwarded` (RFC 7239). From a peer that is not
/// a trusted proxy they say what this hop saw, replacing client-sent values (removed from
/// `headers`, this hop's put in `added`): the gateway is the front door, so nothing before
/// it is believed about where a request came from. From a trusted proxy they are kept and
/// this hop is added, in `headers`. `host` is the `Host` the client sent (empty when none).
pub(crate) fn set_forwarded(
    headers: &mut HeaderMap,
    added: &mut Added,
    hop: &Forwarding,
    host: &HeaderValue,
    from_trusted_proxy: bool,
) {
    if from_trusted_proxy {
        add_hop(headers, hop, host);
        return;
    }
    remove_forwarding(headers);
    if let Some(v) = &hop.for_ip {
        added.push((X_FORWARDED_FOR, v.clone()));
    }
    added.push((X_FORWARDED_PROTO, HeaderValue::from_static(hop.proto)));
    if !host.is_empty() {
        added.push((X_FORWARDED_HOST, host.clone()));
    }
    let mut last = hop.last.lock();
    let forwarded = match &*last {
        Some((seen, value)) if seen == host => Some(value.clone()),
        _ => {
            let made = forwarded_value(hop, host);
            if let Some(value) = &made {
                *last = Some((host.clone(), value.clone()));
            }
            made
        }
    };
    drop(last);
    if let Some(v) = forwarded {
        added.push((header::FORWARDED, v));
    }
}

/// Behind a trusted proxy: its forwarding headers stay, this hop is appended to the lists,
/// and proto and host are its word where it gave one.
fn add_hop(headers: &mut HeaderMap, hop: &Forwarding, host: &HeaderValue) {
    if let Some(ip) = &hop.for_ip {
        let joined = joined_with(headers, &X_FORWARDED_FOR, ip.as_bytes());
        headers.insert(X_FORWARDED_FOR, joined);
    }
    if !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(hop.proto));
    }
    if !headers.contains_key(X_FORWARDED_HOST) && !host.is_empty() {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
    if let Some(element) = forwarded_value(hop, host) {
        let joined = joined_with(headers, &header::FORWARDED, element.as_bytes());
        headers.insert(header::FORWARDED, joined);
    }
}

/// The values of list header `name`, then `last`, as one comma-separated value.
fn joined_with(headers: &HeaderMap, name: &HeaderName, last: &[u8]) -> HeaderValue {
    let mut joined = BytesMut::new();
    for value in headers.get_all(name) {
        joined.put_slice(value.as_bytes());
        joined.put_slice(b", ");
    }
    joined.put_slice(last);
    // Every part is a header value already: joined with ", ", still one.
    HeaderValue::from_maybe_shared(joined.freeze()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The client behind a trusted proxy: the last address in `X-Forwarded-For` that is not a
/// trusted proxy (the one the nearest trusted hop saw connect); entries further left were
/// written by the client or by proxies nobody vouches for. If every entry is trusted, the
/// first; if an entry is not an address, the last trusted hop before it (so `None` when it
/// is the last entry or there are none).
pub(crate) fn forwarded_client(
    headers: &HeaderMap,
    trusted: impl Fn(std::net::IpAddr) -> bool,
) -> Option<std::net::IpAddr> {
    // Read from the right, as written: no list is made.
    let entries = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .rev()
        .flat_map(|v| v.to_str().unwrap_or("!").rsplit(','));
    let mut nearest = None;
    for entry in entries {
        let Ok(ip) = entry.trim().parse::<std::net::IpAddr>() else {
            return nearest;
        };
        let ip = ip.to_canonical();
        nearest = Some(ip);
        if !trusted(ip) {
            break;
        }
    }
    nearest
}

/// `Forwarded` (RFC 7239) for a request that asked for `host` (empty: none).
fn forwarded_value(hop: &Forwarding, host: &HeaderValue) -> Option<HeaderValue> {
    if host.is_empty() {
        return HeaderValue::from_str(&hop.forwarded).ok();
    }
    let mut forwarded = String::with_capacity(hop.forwarded.len() + host.len() + 8);
    forwarded.push_str(&hop.forwarded);
    forwarded.push_str(";host=\"");
    let text = String::from_utf8_lossy(host.as_bytes());
    forwarded.extend(text.chars().filter(|c| !matches!(c, '"' | '\\')));
    forwarded.push('"');
    HeaderValue::from_str(&forwarded).ok()
}

/// Moves a request head's bytes (its target and header values) into one allocation of
/// their own.
///
/// hyper parses an HTTP/1 head as slices of the connection's read buffer (8 KiB at least),
/// and looks for the client hanging up while the request is in flight, which needs that
/// buffer writable: while any slice of it lives, hyper allocates the connection another
/// one. So every busy connection held two read buffers, one only to keep its head alive.
/// Copied out (the head's own size, usually well under 1 KiB), the buffer is reused.
/// A value that will not re-parse (none should) keeps its slice: correct, only not detached.
pub(crate) fn detach(head: &mut request::Parts) {
    // Origin form (`/path?query`), as nearly every request comes, is the path and query
    // alone; anything else (absolute form, authority form) is re-made from its text.
    let origin_form = head.uri.scheme().is_none() && head.uri.authority().is_none();
    let target = match (origin_form, head.uri.path_and_query()) {
        (true, Some(pq)) => std::borrow::Cow::Borrowed(pq.as_str()),
        _ => std::borrow::Cow::Owned(head.uri.to_string()),
    };
    let values: usize = head.headers.values().map(HeaderValue::len).sum();
    let mut buf = BytesMut::with_capacity(target.len() + values);
    buf.put_slice(target.as_bytes());
    for value in head.headers.values() {
        buf.put_slice(value.as_bytes());
    }
    let bytes = buf.freeze();
    let mut at = target.len();
    drop(target);
    if let Ok(uri) = Uri::from_maybe_shared(bytes.slice(..at)) {
        head.uri = uri;
    }
    for value in head.headers.values_mut() {
        let end = at + value.len();
        if let Ok(mut copy) = HeaderValue::from_maybe_shared(bytes.slice(at..end)) {
            copy.set_sensitive(value.is_sensitive());
            *value = copy;
        }
        at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_headers_are_recognised_in_any_case() {
        let mut h = HeaderMap::new();
        h.append("X-Goog-Authenticated-User-Email", "a".parse().unwrap());
        h.append("x-goog-authenticated-user-email", "b".parse().unwrap());
        h.append("X-GOOG-IAP-JWT-ASSERTION", "c".parse().unwrap());
        h.append("X-Forwarded-User", "d".parse().unwrap());
        h.append("X-Gatehouse-Anything", "e".parse().unwrap());
        h.append("x-goog-api-client", "keep".parse().unwrap());
        assert_eq!(strip_identity(&mut h, false), 4);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn underscore_twins_address_claims_and_url_overrides_go() {
        let names = |trusted: bool| {
            let mut h = HeaderMap::new();
            for name in [
                "x-goog-authenticated-user_email",
                "x_goog_iap_jwt_assertion",
                "x_forwarded_for",
                "x-forwarded_host",
                "x_real_ip",
                "x-real-ip",
                "x-original-url",
                "x_serverless_authorization",
                "x-serverless_authorization",
                "x-api_key",
                "x-request-id",
            ] {
                h.append(HeaderName::from_static(name), "v".parse().unwrap());
            }
            strip_identity(&mut h, trusted);
            let mut left: Vec<String> = h.keys().map(|n| n.as_str().to_owned()).collect();
            left.sort();
            left
        };
        // Names with `_` that mean nothing to the gateway are the app's.
        assert_eq!(names(false), ["x-api_key", "x-request-id"]);
        // A trusted proxy's `X-Real-IP` is its word on the client.
        assert_eq!(names(true), ["x-api_key", "x-real-ip", "x-request-id"]);
    }

    #[test]
    fn a_length_beside_a_transfer_encoding_goes_with_it() {
        let mut h = HeaderMap::new();
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("content-length", "5".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty(), "{h:?}");
        let mut h = HeaderMap::new();
        h.insert("content-length", "5".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h["content-length"], "5");
    }

    #[test]
    fn only_a_websocket_handshake_is_an_upgrade() {
        let hop = |method: &str, version: http::Version, headers: &[(&str, &str)]| {
            let mut request = http::Request::builder().method(method).version(version);
            for (k, v) in headers {
                request = request.header(*k, *v);
            }
            let mut request = request.body(()).unwrap();
            let hop = take_hop_by_hop(&mut request);
            assert!(!request.headers().contains_key("upgrade"));
            hop.websocket
        };
        let ws = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ];
        assert!(hop("GET", http::Version::HTTP_11, &ws));
        assert!(!hop("POST", http::Version::HTTP_11, &ws));
        assert!(!hop("GET", http::Version::HTTP_10, &ws));
        for upgrade in ["h2c", "websocket, h2c", "h2c, websocket", "TLS/1.2"] {
            let headers = [("connection", "upgrade"), ("upgrade", upgrade)];
            assert!(!hop("GET", http::Version::HTTP_11, &headers), "{upgrade}");
        }
        assert!(!hop(
            "GET",
            http::Version::HTTP_11,
            &[("upgrade", "websocket")]
        ));
    }

    #[test]
    fn only_chunked_is_taken_off() {
        let te = |values: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("transfer-encoding", HeaderValue::from_static(v));
            }
            only_chunked(&h)
        };
        assert!(te(&[]));
        assert!(te(&["chunked"]));
        assert!(te(&["Chunked "]));
        assert!(!te(&["gzip, chunked"]));
        assert!(!te(&["gzip", "chunked"]));
        assert!(!te(&["chunked, chunked"]));
    }

    #[test]
    fn split_cookies_are_joined() {
        let mut h = HeaderMap::new();
        h.append("cookie", "a=1".parse().unwrap());
        h.append("cookie", "b=2".parse().unwrap());
        h.append("cookie", "c=3".parse().unwrap());
        join_cookies(&mut h);
        assert_eq!(
            h.get_all("cookie").iter().collect::<Vec<_>>(),
            ["a=1; b=2; c=3"]
        );
        let mut h = HeaderMap::new();
        h.append("cookie", "a=1".parse().unwrap());
        join_cookies(&mut h);
        assert_eq!(h["cookie"], "a=1");
    }

    /// `set_forwarded` for a peer that is not a trusted proxy, its fields inserted.
    fn forwarded(h: &mut HeaderMap, hop: &Forwarding, host: &HeaderValue, trusted: bool) {
        let mut added = Added::new();
        set_forwarded(h, &mut added, hop, host, trusted);
        insert_added(h, added);
    }

    #[test]
    fn an_ipv4_client_of_a_dual_stack_listener_is_forwarded_as_ipv4() {
        let mut h = HeaderMap::new();
        let hop = Forwarding::new("[::ffff:192.0.2.7]:5000".parse().unwrap(), false);
        forwarded(&mut h, &hop, &HeaderValue::from_static(""), false);
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["forwarded"], "for=192.0.2.7;proto=http");
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("content-type", "text/plain".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));

        // Any one of them alone is found and removed.
        for name in HOP_BY_HOP {
            let mut h = HeaderMap::new();
            h.insert("content-type", "text/plain".parse().unwrap());
            h.insert(name.clone(), "x".parse().unwrap());
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name} stayed");
        }

        // A byte past ASCII in the list does not hide the names beside it, in a request or
        // an answer.
        for answer in [false, true] {
            let mut h = HeaderMap::new();
            let listed = HeaderValue::from_bytes(b"x-secret, caf\xe9,, X-Other").unwrap();
            h.insert("connection", listed);
            h.insert("x-secret", "1".parse().unwrap());
            h.insert("x-other", "1".parse().unwrap());
            h.insert("content-type", "text/plain".parse().unwrap());
            if answer {
                assert!(strip_answer_hop_by_hop(&mut h));
            } else {
                strip_hop_by_hop(&mut h);
            }
            assert_eq!(h.len(), 1, "{h:?}");
        }
    }

    #[test]
    fn forwarded_headers_replace_client_values() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
        let hop = Forwarding::new("[::1]:5000".parse().unwrap(), true);
        let mut added = Added::new();
        let host = HeaderValue::from_static("app.example");
        set_forwarded(&mut h, &mut added, &hop, &host, false);
        assert!(
            h.is_empty(),
            "the client's value is gone before this hop's is added"
        );
        insert_added(&mut h, added);
        assert_eq!(h["x-forwarded-for"], "::1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(
            h["forwarded"],
            "for=\"[::1]\";proto=https;host=\"app.example\""
        );
        let hop = Forwarding::new("10.1.2.3:5000".parse().unwrap(), false);
        forwarded(&mut h, &hop, &HeaderValue::from_static(""), false);
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["forwarded"], "for=10.1.2.3;proto=http");
        assert!(!h.contains_key("x-forwarded-host"));
        // One connection's requests naming different hosts each get their own.
        for host in ["a.example", "b.example", "a.example", ""] {
            forwarded(&mut h, &hop, &HeaderValue::from_static(host), false);
            let expected = if host.is_empty() {
                "for=10.1.2.3;proto=http".to_owned()
            } else {
                format!("for=10.1.2.3;proto=http;host=\"{host}\"")
            };
            assert_eq!(h["forwarded"], expected.as_str());
        }
    }

    #[test]
    fn the_client_behind_trusted_proxies_is_the_last_untrusted_address() {
        let trusted = |ip: std::net::IpAddr| ip.to_string().starts_with("10.");
        let client = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(X_FORWARDED_FOR, v.parse().unwrap());
            }
            forwarded_client(&h, trusted).map(|ip| ip.to_string())
        };
        assert_eq!(
            client(&["1.1.1.1, 2.2.2.2, 10.0.0.1"]).as_deref(),
            Some("2.2.2.2")
        );
        assert_eq!(
            client(&["1.1.1.1", "2.2.2.2 ,10.0.0.1"]).as_deref(),
            Some("2.2.2.2")
        );
        assert_eq!(client(&["10.0.0.3, 10.0.0.1"]).as_deref(), Some("10.0.0.3"));
        assert_eq!(
            client(&["::ffff:10.0.0.9, 2001:db8::1"]).as_deref(),
            Some("2001:db8::1")
        );
        // Nothing left of an entry that is not an address is believed.
        assert_eq!(
            client(&["1.1.1.1, garbage, 10.0.0.1"]).as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(client(&["1.1.1.1, garbage"]), None);
        assert_eq!(client(&[]), None);
    }

    #[test]
    fn a_detached_head_reads_the_same_and_shares_no_bytes() {
        let mut head = http::Request::builder()
            .uri("/a/b?c=d&e")
            .header("authorization", "Bearer t.o.k")
            .header("x-many", "1")
            .header("x-many", "2")
            .header(
                "user-agent",
                HeaderValue::from_bytes(b"probe/1.0 \xe9").unwrap(),
            )
            .body(())
            .unwrap()
            .into_parts()
            .0;
        head.headers
            .get_mut("authorization")
            .unwrap()
            .set_sensitive(true);
        let before = head.headers.clone();
        let before_ptr = head.headers["x-many"].as_bytes().as_ptr();
        detach(&mut head);
        assert_eq!(head.uri, "/a/b?c=d&e");
        assert_eq!(head.headers, before);
        assert!(head.headers["authorization"].is_sensitive());
        assert_ne!(head.headers["x-many"].as_bytes().as_ptr(), before_ptr);
        let all: Vec<_> = head.headers.get_all("x-many").iter().collect();
        assert_eq!(all, ["1", "2"]);

        let mut absolute = http::Request::builder()
            .uri("http://example.com:8080/p?q")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        detach(&mut absolute);
        assert_eq!(absolute.uri, "http://example.com:8080/p?q");
    }
}
