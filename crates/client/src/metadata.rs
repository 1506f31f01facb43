//! The metadata server source (GCE, Cloud Run, GKE, or the emulator's metadata listener):
//! `GET .../instance/service-accounts/default/identity?audience=A&format=full` with
//! `Metadata-Flavor: Google`, the answer being the raw JWT.

use crate::env::Env;
use crate::error::Error;
use crate::source::{IdToken, IdTokenSource};
use crate::transport::{self, refused, success_body, unreachable};
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use std::time::Duration;

/// The host the libraries use when `GCE_METADATA_HOST` is unset.
pub const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";
/// The address python google-auth pings when `GCE_METADATA_IP` is unset.
pub const DEFAULT_METADATA_IP: &str = "169.254.169.254";

const SERVICE: &str = "metadata server";
const FLAVOR: &str = "Metadata-Flavor";
const IDENTITY_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/identity";

/// A metadata server, by host.
#[derive(Debug, Clone)]
pub struct MetadataServer {
    /// `http://HOST[:PORT]`, no trailing slash.
    base: String,
    http: reqwest::Client,
}

impl MetadataServer {
    /// The server at `host` (`HOST`, `HOST:PORT`, or a full `http://HOST:PORT` URL), as
    /// `GCE_METADATA_HOST` names it. Reached directly, never through a proxy.
    pub fn new(host: &str) -> Result<Self, Error> {
        Ok(MetadataServer {
            base: base_url(host)?,
            http: transport::direct_http_client()?,
        })
    }

    /// The server the official libraries would use: `GCE_METADATA_HOST`, else the older
    /// `GCE_METADATA_ROOT`, else `metadata.google.internal`.
    pub fn from_env(env: &Env) -> Result<Self, Error> {
        MetadataServer::new(
            &Self::host_from_env(env).unwrap_or_else(|| DEFAULT_METADATA_HOST.into()),
        )
    }

    /// `GCE_METADATA_HOST`, else `GCE_METADATA_ROOT`, if either is set.
    pub fn host_from_env(env: &Env) -> Option<String> {
        env.get("GCE_METADATA_HOST")
            .or_else(|| env.get("GCE_METADATA_ROOT"))
    }

    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    /// `http://HOST[:PORT]`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The identity URL for `audience` (URL-encoded, then `format=full`, as python sends it).
    pub fn identity_url(&self, audience: &str) -> String {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("audience", audience)
            .append_pair("format", "full")
            .finish();
        format!("{}{IDENTITY_PATH}?{query}", self.base)
    }

    /// The libraries' availability check: `GET /` answering 200 with `Metadata-Flavor: Google`.
    pub async fn ping(&self, timeout: Duration) -> Result<(), Error> {
        ping_url(&self.http, &format!("{}/", self.base), timeout).await
    }

    async fn mint_identity(&self, audience: &str) -> Result<IdToken, Error> {
        let url = self.identity_url(audience);
        let response = self
            .http
            .get(&url)
            .header(FLAVOR, "Google")
            .send()
            .await
            .map_err(|e| unreachable(SERVICE, &url, e))?;
        if !has_google_flavor(&response) {
            return Err(Error::NotMetadataServer {
                status: response.status().as_u16(),
                url,
            });
        }
        let body = success_body(SERVICE, &url, response).await?;
        let text = std::str::from_utf8(&body).map_err(|_| Error::BadAnswer {
            service: SERVICE,
            url: url.clone(),
            detail: "answer is not UTF-8".into(),
        })?;
        IdToken::from_minted(SERVICE, &url, text)
    }
}

impl IdTokenSource for MetadataServer {
    fn mint<'a>(&'a self, audience: &'a str) -> BoxFuture<'a, Result<IdToken, Error>> {
        self.mint_identity(audience).boxed()
    }

    fn describe(&self) -> String {
        format!("metadata server at {}", self.base)
    }
}

/// `GET url` with `Metadata-Flavor: Google`; OK only for 200 with the header on the answer.
pub(crate) async fn ping_url(
    http: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<(), Error> {
    let response = http
        .get(url)
        .header(FLAVOR, "Google")
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| unreachable(SERVICE, url, e))?;
    let status = response.status();
    if !has_google_flavor(&response) {
        return Err(Error::NotMetadataServer {
            url: url.to_owned(),
            status: status.as_u16(),
        });
    }
    if status != reqwest::StatusCode::OK {
        return Err(refused(SERVICE, url, status.as_u16(), b""));
    }
    Ok(())
}

fn has_google_flavor(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(FLAVOR)
        .is_some_and(|v| v.as_bytes() == b"Google")
}

/// `http://` + host, unless the host already is a URL; checked to be a plain origin and
/// returned as the parser understood it. Anything beyond `scheme://host[:port]` is refused:
/// a query or fragment would swallow the paths appended to the base, and a user or password
/// would be sent as Basic credentials and shown in every message naming the server.
pub(crate) fn base_url(host: &str) -> Result<String, Error> {
    let host = host.trim().trim_end_matches('/');
    let candidate = if host.starts_with("http://") || host.starts_with("https://") {
        host.to_owned()
    } else {
        format!("http://{host}")
    };
    let invalid = |shown: &str, detail: &str| Error::InvalidUrl {
        url: shown.to_owned(),
        detail: detail.to_owned(),
    };
    let parsed = url::Url::parse(&candidate).map_err(|e| invalid(host, &e.to_string()))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid(host, "no host"));
    }
    let origin = parsed.origin().ascii_serialization();
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // Named without the credentials: the message is printed.
        return Err(invalid(
            &origin,
            "expected HOST[:PORT], without a user or password",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid(
            host,
            "expected HOST[:PORT], without a query or fragment",
        ));
    }
    if parsed.path() != "/" && !parsed.path().is_empty() {
        return Err(invalid(host, "expected HOST[:PORT], without a path"));
    }
    Ok(origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_become_origins() {
        assert_eq!(base_url("127.0.0.1:9099").unwrap(), "http://127.0.0.1:9099");
        assert_eq!(
            base_url("metadata.google.internal").unwrap(),
            "http://metadata.google.internal"
        );
        // As the URL parser reads it: the default port is implied.
        assert_eq!(base_url("http://[::1]:80/").unwrap(), "http://[::1]");
        assert_eq!(
            base_url("https://Metadata.Example:8443").unwrap(),
            "https://metadata.example:8443"
        );
        assert!(base_url("host:1/path").is_err());
        assert!(base_url("").is_err());
    }

    #[test]
    fn hosts_with_more_than_an_origin_are_refused() {
        for host in [
            "127.0.0.1:9101?x",
            "127.0.0.1:9101/?x",
            "127.0.0.1:9101#frag",
            "http://127.0.0.1:9101?",
            "u@127.0.0.1:9099",
            "http://u:s3cret@127.0.0.1:9099",
            "http://:s3cret@127.0.0.1:9099/",
        ] {
            let error = base_url(host).expect_err(host);
            assert!(
                matches!(error, Error::InvalidUrl { .. }),
                "{host}: {error:?}"
            );
            assert!(!error.to_string().contains("s3cret"), "{error}");
        }
        assert!(MetadataServer::new("127.0.0.1:9101?x").is_err());
        assert!(crate::EmulatorUser::new("http://u:s3cret@127.0.0.1:9099", "a@b.c").is_err());
    }

    #[test]
    fn identity_url_encodes_the_audience() {
        let server = MetadataServer::new("127.0.0.1:1").unwrap();
        assert_eq!(
            server.identity_url("https://a.example/x?y=1&z"),
            "http://127.0.0.1:1/computeMetadata/v1/instance/service-accounts/default/identity\
             ?audience=https%3A%2F%2Fa.example%2Fx%3Fy%3D1%26z&format=full"
        );
    }

    #[test]
    fn env_host_order() {
        let env = Env::from_pairs([
            ("GCE_METADATA_ROOT", "root:1"),
            ("GCE_METADATA_HOST", "host:2"),
        ]);
        assert_eq!(
            MetadataServer::host_from_env(&env).as_deref(),
            Some("host:2")
        );
        let env = Env::from_pairs([("GCE_METADATA_ROOT", "root:1")]);
        assert_eq!(
            MetadataServer::host_from_env(&env).as_deref(),
            Some("root:1")
        );
        let env = Env::from_pairs([("GCE_METADATA_HOST", "")]);
        assert_eq!(MetadataServer::host_from_env(&env), None);
    }
}
