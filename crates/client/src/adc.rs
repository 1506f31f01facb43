//! Application Default Credentials for ID tokens, in google-auth's `fetch_id_token` order:
//! the key file named by `GOOGLE_APPLICATION_CREDENTIALS`, then the metadata server (when it
//! answers the libraries' ping), then an error listing everything that was tried.

use crate::env::Env;
use crate::error::Error;
use crate::key_file::KeyFileSource;
use crate::metadata::{DEFAULT_METADATA_HOST, DEFAULT_METADATA_IP, MetadataServer, ping_url};
use crate::source::IdTokenSource;
use std::time::Duration;

/// Where to look besides the environment.
#[derive(Debug, Clone)]
pub struct AdcOptions {
    /// Probe the real metadata server (`GCE_METADATA_IP`, default 169.254.169.254) when
    /// `GCE_METADATA_HOST` is unset. On by default; the CLI turns it off in favour of the
    /// emulator.
    pub probe_default_metadata: bool,
    /// Further metadata hosts to try, in order, after the environment's (the emulator's).
    pub fallback_metadata_hosts: Vec<String>,
    /// How long a metadata ping may take.
    pub ping_timeout: Duration,
}

impl Default for AdcOptions {
    fn default() -> Self {
        AdcOptions {
            probe_default_metadata: true,
            fallback_metadata_hosts: Vec::new(),
            ping_timeout: Duration::from_secs(2),
        }
    }
}

/// The first usable source in ADC order. A `GOOGLE_APPLICATION_CREDENTIALS` that is set but
/// unusable is an error at once (as in google-auth), not a reason to fall through; a
/// `GCE_METADATA_HOST` that does not answer is passed over for the fallback hosts, with a
/// warning, since their service account is another one.
pub async fn application_default(
    env: &Env,
    options: &AdcOptions,
) -> Result<Box<dyn IdTokenSource>, Error> {
    let mut tried = Vec::new();
    match env.get("GOOGLE_APPLICATION_CREDENTIALS") {
        Some(path) => return Ok(Box::new(KeyFileSource::from_file(path).await?)),
        None => tried.push("GOOGLE_APPLICATION_CREDENTIALS (unset)".to_owned()),
    }

    let http = crate::transport::direct_http_client()?;
    let mut candidates: Vec<(String, String)> = Vec::new(); // (data host, ping URL)
    let env_host = MetadataServer::host_from_env(env);
    match env_host.clone() {
        Some(host) => {
            let base = crate::metadata::base_url(&host)?;
            candidates.push((host, format!("{base}/")));
        }
        None if options.probe_default_metadata => {
            // As python: the ping goes to the IP, data calls to the well-known host name.
            let ip = env
                .get("GCE_METADATA_IP")
                .unwrap_or_else(|| DEFAULT_METADATA_IP.to_owned());
            let base = crate::metadata::base_url(&ip)?;
            candidates.push((DEFAULT_METADATA_HOST.to_owned(), format!("{base}/")));
        }
        None => tried.push("GCE_METADATA_HOST (unset)".to_owned()),
    }
    for host in &options.fallback_metadata_hosts {
        let base = crate::metadata::base_url(host)?;
        candidates.push((host.clone(), format!("{base}/")));
    }

    // The environment's server, when the variable names one, is the first candidate.
    let mut env_host_failed = None;
    for (index, (host, ping)) in candidates.into_iter().enumerate() {
        match ping_url(&http, &ping, options.ping_timeout).await {
            Ok(()) => {
                if let Some(reason) = &env_host_failed {
                    // Another server is another service account: whoever set the variable
                    // expected that one's identity, so the switch is said, not made silently.
                    tracing::warn!(
                        using = %host,
                        %reason,
                        "GCE_METADATA_HOST does not answer; using a fallback metadata server (another identity)"
                    );
                }
                tracing::debug!(%host, "using the metadata server");
                return Ok(Box::new(MetadataServer::new(&host)?.with_http_client(http)));
            }
            Err(error) => {
                let reason = error.to_string(); // names the server and its URL
                if index == 0 && env_host.is_some() {
                    env_host_failed = Some(reason.clone());
                }
                tried.push(reason);
            }
        }
    }
    Err(Error::NoCredentials { tried })
}
