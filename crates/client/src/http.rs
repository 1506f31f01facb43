//! An HTTP client that calls a receiving service as Cloud Run's callers do: an ID token for
//! the target's audience (its origin, unless told) in `Authorization: Bearer`, and one retry
//! with a fresh token if the receiver answers 401.

use crate::cache::TokenCache;
use crate::error::Error;
use crate::source::IdToken;
use crate::transport;
use http::header::{AUTHORIZATION, HeaderName, HeaderValue};
use reqwest::{Method, Response};
use std::sync::Arc;
use std::time::Duration;

/// Cloud Run's rule: the audience of a service is its URL's origin
/// (`https://receiver-xyz.a.run.app`), without path, query or default port.
pub fn audience_for_url(url: &str) -> Result<String, Error> {
    let parsed = parse_url(url)?;
    Ok(parsed.origin().ascii_serialization())
}

fn parse_url(url: &str) -> Result<url::Url, Error> {
    let invalid = |detail: String| Error::InvalidUrl {
        url: without_userinfo(url),
        detail,
    };
    let parsed = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(invalid("expected an http(s) URL with a host".into()));
    }
    // reqwest would send it as Basic credentials, which the Bearer token then replaces,
    // and every message naming the URL would show the password.
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid(
            "a URL with user-info is not sent: credentials go in headers".into(),
        ));
    }
    Ok(parsed)
}

/// `url` for messages, any user-info (`user:password@`) replaced: read off the text, so a
/// URL that does not even parse shows none either.
fn without_userinfo(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let sep = if scheme.is_empty() { "" } else { "://" };
            format!("{scheme}{sep}…@{}", &rest[at + 1..])
        }
        None => url.to_owned(),
    }
}

/// Sends requests with ID tokens from a [`TokenCache`].
#[derive(Debug, Clone)]
pub struct AuthorizedClient {
    /// For remote receivers: honours the proxy variables.
    http: reqwest::Client,
    /// For receivers on this machine or link-local: never through a proxy, which would see
    /// the token in cleartext and reach its own loopback, not ours.
    direct: reqwest::Client,
    tokens: Arc<TokenCache>,
}

impl AuthorizedClient {
    /// A client with the default transport: no redirects followed, since a redirect must
    /// not carry the token to another host; at most 30 s per request.
    pub fn new(tokens: Arc<TokenCache>) -> Result<Self, Error> {
        AuthorizedClient::with_timeout(tokens, Some(transport::TOTAL_TIMEOUT))
    }

    /// [`new`](Self::new), with requests allowed `total` from connect to last body byte;
    /// `None` lets a slow or streamed answer take as long as it takes (curl's default).
    /// Connecting is still bounded.
    pub fn with_timeout(tokens: Arc<TokenCache>, total: Option<Duration>) -> Result<Self, Error> {
        Ok(AuthorizedClient {
            http: transport::build(transport::builder(total))?,
            direct: transport::build(transport::builder(total).no_proxy())?,
            tokens,
        })
    }

    /// Send every request with `http`, whatever the host (its proxy settings included).
    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.direct = http.clone();
        self.http = http;
        self
    }

    pub fn tokens(&self) -> &Arc<TokenCache> {
        &self.tokens
    }

    pub fn request(&self, method: Method, url: &str) -> AuthorizedRequest<'_> {
        AuthorizedRequest {
            client: self,
            method,
            url: url.to_owned(),
            audience: None,
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn get(&self, url: &str) -> AuthorizedRequest<'_> {
        self.request(Method::GET, url)
    }

    pub fn post(&self, url: &str) -> AuthorizedRequest<'_> {
        self.request(Method::POST, url)
    }
}

/// One request, built up then [`send`](Self::send)-ed.
#[derive(Debug)]
pub struct AuthorizedRequest<'a> {
    client: &'a AuthorizedClient,
    method: Method,
    url: String,
    audience: Option<String>,
    headers: Vec<(String, String)>,
    body: Option<reqwest::Body>,
}

impl AuthorizedRequest<'_> {
    /// The token's audience, instead of the URL's origin (a custom audience).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// A header to send. An `Authorization` header is replaced by the token's.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The body. Bytes and strings can be replayed for the 401 retry; a stream cannot, so a
    /// streamed request is sent once.
    pub fn body(mut self, body: impl Into<reqwest::Body>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Send it. A 401 answer is retried once with a freshly minted token when the body can
    /// be replayed (and returned as is when no fresh token can be had); any other answer
    /// (4xx/5xx included) is returned as is.
    pub async fn send(self) -> Result<Response, Error> {
        let url = parse_url(&self.url)?;
        let audience = match self.audience {
            Some(audience) => audience,
            None => url.origin().ascii_serialization(),
        };
        let mut builder = self.client.http.request(self.method, url.clone());
        for (name, value) in &self.headers {
            let name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| Error::InvalidHeader {
                    detail: format!("`{name}` is not a header name"),
                })?;
            if name == AUTHORIZATION {
                continue; // ours replaces it, never sits beside it
            }
            let value = HeaderValue::from_str(value).map_err(|_| Error::InvalidHeader {
                detail: format!("the value of `{name}` is not a valid header value"),
            })?;
            builder = builder.header(name, value);
        }
        if let Some(body) = self.body {
            builder = builder.body(body);
        }
        let request = builder.build().map_err(|e| request_error(&url, e))?;

        let tokens = &self.client.tokens;
        let token = tokens.token(&audience).await?;
        let replay = request.try_clone();
        let client = self.client;
        let response = execute(client, request, &token, &url).await?;
        if response.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let Some(replay) = replay else {
            return Ok(response);
        };
        tracing::debug!(%audience, "401 from the receiver; retrying once with a fresh token");
        tokens.invalidate(&audience, &token);
        // The receiver's 401 is the answer; a token service that fails now only means there
        // is no second try, and must not turn the answer into an error.
        let fresh = match tokens.token(&audience).await {
            Ok(fresh) => fresh,
            Err(error) => {
                tracing::warn!(%audience, %error, "401 from the receiver; no fresh token to retry with");
                return Ok(response);
            }
        };
        execute(client, replay, &fresh, &url).await
    }
}

/// Send `request` with `token` as its only `Authorization`.
async fn execute(
    client: &AuthorizedClient,
    mut request: reqwest::Request,
    token: &IdToken,
    url: &url::Url,
) -> Result<Response, Error> {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.as_str())).map_err(|_| {
        Error::InvalidHeader {
            detail: "the ID token is not a valid header value".into(),
        }
    })?;
    value.set_sensitive(true); // kept out of reqwest's and hyper's debug output
    request.headers_mut().insert(AUTHORIZATION, value);
    let http = if transport::is_local(url) {
        &client.direct
    } else {
        &client.http
    };
    http.execute(request)
        .await
        .map_err(|e| request_error(url, e))
}

fn request_error(url: &url::Url, error: reqwest::Error) -> Error {
    // reqwest's own words ("error sending request") do not say why; its causes (from hyper
    // and the OS, never the request's headers) do.
    let error = error.without_url();
    let mut detail = error.to_string();
    let mut cause = std::error::Error::source(&error);
    while let Some(error) = cause {
        detail.push_str(": ");
        detail.push_str(&error.to_string());
        cause = error.source();
    }
    Error::Request {
        url: url.as_str().to_owned(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_user_info_are_refused_and_never_shown_with_it() {
        for url in [
            "http://user:S3CRET@127.0.0.1:1/x",
            "https://S3CRET@svc.example/",
            "http://user:S3CRET@[::1/x",
        ] {
            let error = audience_for_url(url).unwrap_err();
            assert!(
                matches!(error, Error::InvalidUrl { .. }),
                "{url}: {error:?}"
            );
            let shown = format!("{error} {error:?}");
            assert!(!shown.contains("S3CRET"), "{shown}");
        }
        assert_eq!(without_userinfo("http://a:b@h:1/p@q"), "http://…@h:1/p@q");
        assert_eq!(without_userinfo("http://h/p@q"), "http://h/p@q");
        assert_eq!(
            audience_for_url("https://svc.example:443/x?y").unwrap(),
            "https://svc.example"
        );
    }

    #[test]
    fn audience_is_the_origin() {
        let cases = [
            (
                "https://receiver-xyz.a.run.app/hello?x=1",
                "https://receiver-xyz.a.run.app",
            ),
            ("https://svc.example:443/", "https://svc.example"),
            ("http://127.0.0.1:8080/api/v1", "http://127.0.0.1:8080"),
            ("HTTPS://Svc.Example/path", "https://svc.example"),
        ];
        for (url, audience) in cases {
            assert_eq!(audience_for_url(url).unwrap(), audience, "{url}");
        }
        assert!(audience_for_url("ftp://x/").is_err());
        assert!(audience_for_url("not a url").is_err());
    }
}
