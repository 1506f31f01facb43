//! The HTTP plumbing shared by the token sources: one client configuration, bounded answer
//! sizes, and the mapping of transport failures and error bodies onto [`Error`].

use crate::error::{Error, OAuthError};
use std::time::Duration;

/// Largest token-service answer we read. ID tokens are a few KiB; anything near this is wrong.
pub(crate) const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// How long a connection may take: a missing metadata server must fail fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a token-service request may take, connect to last body byte.
pub(crate) const TOTAL_TIMEOUT: Duration = Duration::from_secs(30);

/// The client the token sources use unless given another: short connect timeout (a missing
/// metadata server must fail fast), bounded total time, no redirects (a token service that
/// redirects is misconfigured, and a redirect must never carry a token elsewhere). It honours
/// the proxy variables (`HTTPS_PROXY`, `NO_PROXY`, ...), as a remote token endpoint may need.
pub fn default_http_client() -> Result<reqwest::Client, Error> {
    build(builder(Some(TOTAL_TIMEOUT)))
}

/// [`default_http_client`], but never through a proxy: for the metadata server, the emulator
/// and anything on loopback. A proxy there would see the tokens in cleartext, and a remote one
/// would reach its own loopback or link-local address, not ours. Go's metadata client has no
/// proxy either.
pub fn direct_http_client() -> Result<reqwest::Client, Error> {
    build(builder(Some(TOTAL_TIMEOUT)).no_proxy())
}

/// The shared settings; `total` bounds a request from connect to last body byte.
pub(crate) fn builder(total: Option<Duration>) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("gatehouse-client/", env!("CARGO_PKG_VERSION")));
    match total {
        Some(total) => builder.timeout(total),
        None => builder,
    }
}

pub(crate) fn build(builder: reqwest::ClientBuilder) -> Result<reqwest::Client, Error> {
    builder.build().map_err(|e| Error::HttpClient {
        detail: e.to_string(),
    })
}

/// Whether `url` names this machine (`localhost`, loopback) or a link-local address (the
/// metadata server's 169.254.169.254): places a proxy must never be asked to reach.
pub(crate) fn is_local(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_link_local(),
        Some(url::Host::Ipv6(ip)) => {
            ip.is_loopback()
                || ip.is_unicast_link_local()
                || ip
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_loopback() || v4.is_link_local())
        }
        None => false,
    }
}

/// A transport failure, described without the request (whose headers may hold a token).
pub(crate) fn unreachable(service: &'static str, url: &str, error: reqwest::Error) -> Error {
    let detail = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "connection failed".to_owned()
    } else {
        error.without_url().to_string()
    };
    Error::Unreachable {
        service,
        url: url.to_owned(),
        detail,
    }
}

/// The body, up to [`MAX_ANSWER_BYTES`].
pub(crate) async fn read_body(
    service: &'static str,
    url: &str,
    mut response: reqwest::Response,
) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(Error::BadAnswer {
                        service,
                        url: url.to_owned(),
                        detail: format!("answer larger than {MAX_ANSWER_BYTES} bytes"),
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(unreachable(service, url, e)),
        }
    }
}

/// The body of a 2xx answer (see [`read_body`]), or, for any other status, `Refused` with as
/// much of the body as fits in [`MAX_ANSWER_BYTES`]: an error page past the limit (a load
/// balancer's, a portal's) is still reported as the refusal it is, by its status.
pub(crate) async fn success_body(
    service: &'static str,
    url: &str,
    mut response: reqwest::Response,
) -> Result<Vec<u8>, Error> {
    let status = response.status();
    if status.is_success() {
        return read_body(service, url, response).await;
    }
    let mut body = Vec::new();
    // Whatever arrives before the limit or a failure: the status is the report.
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_ANSWER_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == MAX_ANSWER_BYTES {
            break;
        }
    }
    Err(refused(service, url, status.as_u16(), &body))
}

/// `Refused` for an error status, with the OAuth error fields when the body has them.
pub(crate) fn refused(service: &'static str, url: &str, status: u16, body: &[u8]) -> Error {
    let mut oauth = OAuthError::default();
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(body) {
        let text = |key: &str| map.get(key).and_then(|v| v.as_str()).map(short);
        oauth.error = text("error");
        oauth.description = text("error_description");
        // Google APIs' shape: {"error": {"code": 400, "message": "..."}}
        if oauth.error.is_none() {
            if let Some(message) = map
                .get("error")
                .and_then(|e| e.get("message"))
                .and_then(|m| m.as_str())
            {
                oauth.error = Some(short(message));
            }
        }
    } else if let Ok(text) = std::str::from_utf8(body) {
        let text = text.trim();
        if !text.is_empty() {
            oauth.description = Some(short(text));
        }
    }
    Error::Refused {
        service,
        url: url.to_owned(),
        status,
        oauth,
    }
}

/// Error text from a server, cut to a length fit for one log line, its control characters
/// and bidirectional-text overrides written as `\u{..}`: the text ends up on a terminal, where
/// a token service must not be able to move the cursor, retitle the window or reorder what
/// the user reads.
fn short(text: &str) -> String {
    const MAX: usize = 200;
    let mut end = text.len().min(MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + 3);
    for c in text[..end].chars() {
        if c.is_control() || is_bidi_control(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    if end < text.len() {
        out.push_str("...");
    }
    out
}

/// The invisible characters that reorder text on screen (Unicode's bidi controls): escaped
/// with the control characters wherever outside text reaches a terminal (here, and in the
/// `gatehouse` binary's output).
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_error_text_cannot_drive_the_terminal() {
        let body = br#"{"error":"bad\u001b]0;owned\u0007","error_description":"x\u009b2J\u202egnp.exe\r\nforged"}"#;
        let shown = refused("token endpoint", "http://t.example/token", 400, body).to_string();
        assert!(
            !shown.chars().any(|c| c.is_control() || is_bidi_control(c)),
            "{shown:?}"
        );
        assert!(shown.contains(r"bad\u{1b}]0;owned\u{7}"), "{shown}");
        assert!(
            shown.contains(r"x\u{9b}2J\u{202e}gnp.exe\u{d}\u{a}forged"),
            "{shown}"
        );

        let plain = refused("emulator", "http://e/", 500, "oops\x1b[2J".as_bytes()).to_string();
        assert!(plain.ends_with(r"oops\u{1b}[2J"), "{plain}");
    }

    #[test]
    fn long_error_text_is_cut_on_a_char_boundary() {
        let text = "é".repeat(150);
        let cut = short(&text);
        assert!(cut.ends_with("..."));
        assert_eq!(cut.chars().filter(|&c| c == 'é').count(), 100);
    }

    #[test]
    fn local_hosts_never_go_through_a_proxy() {
        for local in [
            "http://127.0.0.1:9099/",
            "http://127.8.0.1/",
            "http://localhost:8080/x",
            "http://LOCALHOST./",
            "http://app.localhost/",
            "http://[::1]:80/",
            "http://169.254.169.254/",
            "http://[fe80::1]/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            assert!(is_local(&url::Url::parse(local).unwrap()), "{local}");
        }
        for remote in [
            "https://receiver-xyz.a.run.app/",
            "http://10.0.0.1/",
            "http://localhost.example/",
            "http://[2001:db8::1]/",
        ] {
            assert!(!is_local(&url::Url::parse(remote).unwrap()), "{remote}");
        }
    }
}
