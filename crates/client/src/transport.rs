//! The HTTP plumbing shared by the token sources: one client configuration, bounded answer
//! sizes, and the mapping of transport failures and error bodies onto [`Error`].

use crate::error::{Error, OAuthError};
use std::time::Duration;

/// Largest token-service answer we read. ID tokens are a few KiB; anything near this is wrong.
pub(crate) const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The client the token sources use unless given another: short connect timeout (a missing
/// metadata server must fail fast), bounded total time, no redirects (a token service that
/// redirects is misconfigured, and a redirect must never carry a token elsewhere).
pub fn default_http_client() -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("gatehouse-client/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::HttpClient {
            detail: e.to_string(),
        })
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

/// Error text from a server, cut to a length fit for one log line.
fn short(text: &str) -> String {
    const MAX: usize = 200;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}
