//! `gatehouse idp` (the Google identity emulator) and `gatehouse keys create-sa-key` /
//! `delete-sa-key`.

use anyhow::{Context as _, bail};
use base64::Engine as _;
use clap::{Args, Subcommand};
use gatehouse_idp::{IdpConfig, IdpState};
use gatehouse_store::Store;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// The emulator's SQLite file under the data directory.
pub const IDP_DB_FILE: &str = "idp.db";

#[derive(Debug, Args)]
pub struct IdpArgs {
    /// Address of the main port (OIDC, /token, sign-in, Identity Toolkit, metadata for the
    /// default service account).
    #[arg(long, default_value = "127.0.0.1:9099")]
    listen: String,
    /// The URL clients reach the emulator at (default: http://LISTEN).
    #[arg(long)]
    issuer: Option<String>,
    /// Another name clients reach the emulator by (a name, or `.domain` for it and its
    /// subdomains; repeatable). Any IP address, `localhost`, Google's names and the
    /// --issuer URL's host are always answered; other names get 403, so that no web page
    /// can reach the emulator through DNS rebinding.
    #[arg(long = "allowed-host", value_name = "NAME")]
    allowed_hosts: Vec<String>,
    /// The project the emulator pretends to be.
    #[arg(long, default_value = "demo-project")]
    project: String,
    /// An extra metadata server for a service account: ADDR=SA_EMAIL (repeatable).
    #[arg(long = "metadata", value_name = "ADDR=SA_EMAIL")]
    metadata: Vec<String>,
    /// Data directory for the SQLite database.
    #[arg(long, default_value = ".gatehouse", conflicts_with = "database")]
    data: PathBuf,
    /// A database URL instead (postgres://... or sqlite:PATH).
    // The URL may hold a password: `--help` must not print it.
    #[arg(long, env = "GATEHOUSE_IDP_DATABASE", hide_env_values = true)]
    database: Option<String>,
    /// Key documents' Cache-Control max-age; new keys are published this long before use.
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    key_max_age: i64,
    /// Seconds a signing key signs before its successor takes over.
    #[arg(long, default_value_t = 7 * 86_400, value_name = "SECS")]
    key_rotation: i64,
}

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a Google-format service-account key through the emulator's IAM-shaped API and
    /// print the key file JSON (a file it is printed into is made readable by you only).
    CreateSaKey {
        /// The service account's email.
        sa_email: String,
        /// The emulator's URL.
        #[arg(long, default_value = "http://127.0.0.1:9099")]
        idp: String,
        /// Write the key file to FILE (replaced if it exists), readable by you only (0600).
        #[arg(short = 'o', long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Delete a service-account key through the emulator's IAM-shaped API: assertions
    /// signed with it are refused from then on, and it no longer counts toward the
    /// account's 10 keys.
    DeleteSaKey {
        /// The service account's email.
        sa_email: String,
        /// The key's id: the key file's `private_key_id`.
        key_id: String,
        /// The emulator's URL.
        #[arg(long, default_value = "http://127.0.0.1:9099")]
        idp: String,
    },
}

fn parse_metadata(spec: &str) -> anyhow::Result<(String, String)> {
    let (addr, email) = spec
        .split_once('=')
        .with_context(|| format!("--metadata {spec:?}: expected ADDR=SA_EMAIL"))?;
    if addr.is_empty() || !email.contains('@') {
        bail!("--metadata {spec:?}: expected ADDR=SA_EMAIL");
    }
    Ok((addr.to_owned(), email.to_owned()))
}

pub async fn run(args: IdpArgs) -> anyhow::Result<ExitCode> {
    let metadata_specs = args
        .metadata
        .iter()
        .map(|s| parse_metadata(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let main = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = main.local_addr()?;
    let base_url = args
        .issuer
        .clone()
        .unwrap_or_else(|| format!("http://{local}"));
    let mut config = IdpConfig::new(&base_url, &args.project);
    config.allowed_hosts = args.allowed_hosts.clone();
    config.key_max_age = args.key_max_age.max(1);
    config.key_rotation = args.key_rotation.max(config.key_max_age + 120);
    let store = match &args.database {
        Some(url) => Store::open_url(url).await,
        None => {
            crate::private_files::prepare_data_dir(&args.data, &[IDP_DB_FILE])?;
            Store::open_data_dir(&args.data, IDP_DB_FILE).await
        }
    }
    .context("cannot open the database")?;
    let state = IdpState::open(config, store.clone())
        .await
        .context("cannot start the emulator")?;
    let mut metadata = Vec::new();
    let mut banner = Vec::new();
    for (addr, email) in metadata_specs {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (metadata for {email})"))?;
        let at = listener.local_addr()?;
        tracing::info!(addr = %at, %email, "metadata server");
        banner.push(format!("  metadata for {email}: GCE_METADATA_HOST={at}"));
        metadata.push((listener, email));
    }
    let maintenance = state.spawn_maintenance();
    tracing::info!(%local, base_url, project = args.project, "gatehouse idp listening");
    // The first line is what tests and scripts wait for.
    println!("gatehouse idp listening on http://{local} (issuer base {base_url})");
    println!(
        "  metadata for {} (default): GCE_METADATA_HOST={local}",
        state.config().default_service_account
    );
    for line in banner {
        println!("{line}");
    }
    println!("  sign-in: {base_url}/o/oauth2/v2/auth  keys: {base_url}/oauth2/v3/certs");
    println!("  Firebase: connectAuthEmulator(auth, \"{base_url}\")");
    gatehouse_idp::http::serve(state, main, metadata, shutdown_signal()).await?;
    maintenance.abort();
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

pub async fn keys(args: KeysArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        KeysCommand::CreateSaKey {
            sa_email,
            idp,
            output,
        } => {
            let text = create_sa_key(&idp, &sa_email).await?;
            let file = format!("{}\n", text.trim_end());
            match output {
                Some(path) => crate::private_files::write_private(&path, file.as_bytes())?,
                None => {
                    // `> key.json` made the file with the umask's mode, usually readable by
                    // everyone (gcloud writes key files 0600 for the same reason).
                    #[cfg(unix)]
                    if let Err(error) = crate::private_files::restrict_stdout_if_file() {
                        eprintln!(
                            "gatehouse: warning: cannot make the key file readable by you only: {error}"
                        );
                    }
                    let mut stdout = std::io::stdout().lock();
                    stdout.write_all(file.as_bytes())?;
                    stdout.flush()?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::DeleteSaKey {
            sa_email,
            key_id,
            idp,
        } => {
            delete_sa_key(&idp, &sa_email, &key_id).await?;
            eprintln!(
                "deleted key {} of {}",
                crate::terminal::escape_controls(&key_id),
                crate::terminal::escape_controls(&sa_email)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Asks the emulator at `idp` for a new key of `sa_email`; the key file's text.
async fn create_sa_key(idp: &str, sa_email: &str) -> anyhow::Result<String> {
    let url = sa_key_url(idp, sa_email)?;
    if url.scheme() != "https" && !is_loopback(&url) {
        tracing::warn!(
            idp,
            "the private key will travel unencrypted: --idp is neither https nor on this machine"
        );
    }
    // A private key comes back: no redirect may fetch it from another host and no proxy
    // may see it (the direct client: no proxy, no redirects, connect and total timeouts).
    let http = gatehouse_client::direct_http_client()?;
    let response = http
        .post(url)
        .json(&serde_json::json!({}))
        .send()
        .await
        .with_context(|| format!("cannot reach the emulator at {idp}"))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .with_context(|| format!("reading the answer of the emulator at {idp}"))?;
    if !status.is_success() {
        bail!(
            "the emulator at {idp} refused to create a key ({status}){}",
            error_text(&body)
        );
    }
    let body: serde_json::Value =
        serde_json::from_slice(&body).context("the emulator's answer is not JSON")?;
    let data = body
        .get("privateKeyData")
        .and_then(serde_json::Value::as_str)
        .context("the answer has no privateKeyData")?;
    let file = base64::engine::general_purpose::STANDARD
        .decode(data)
        .context("privateKeyData is not base64")?;
    String::from_utf8(file).context("the key file is not UTF-8")
}

/// Asks the emulator at `idp` to delete `sa_email`'s key `key_id`.
async fn delete_sa_key(idp: &str, sa_email: &str, key_id: &str) -> anyhow::Result<()> {
    let url = sa_key_id_url(idp, sa_email, key_id)?;
    // The same direct client as creation: the emulator is reached whatever proxy the
    // environment names.
    let http = gatehouse_client::direct_http_client()?;
    let response = http
        .delete(url)
        .send()
        .await
        .with_context(|| format!("cannot reach the emulator at {idp}"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.bytes().await.unwrap_or_default();
        bail!(
            "the emulator at {idp} refused to delete the key ({status}){}",
            error_text(&body)
        );
    }
    Ok(())
}

/// [`sa_key_url`] and then `/{key_id}`, the id one path segment too.
fn sa_key_id_url(idp: &str, sa_email: &str, key_id: &str) -> anyhow::Result<reqwest::Url> {
    let mut url = sa_key_url(idp, sa_email)?;
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("--idp `{idp}` cannot have paths"))?
        .push(key_id);
    Ok(url)
}

/// `{idp}/v1/projects/-/serviceAccounts/{sa_email}/keys`, the email one path segment
/// whatever it holds (`/`, `?`, `#` and `..` cannot lead elsewhere).
fn sa_key_url(idp: &str, sa_email: &str) -> anyhow::Result<reqwest::Url> {
    let mut url =
        reqwest::Url::parse(idp).with_context(|| format!("--idp `{idp}` is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host().is_none()
        || !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        bail!("--idp must be an http(s) URL of the emulator, without a user, query or fragment");
    }
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("--idp `{idp}` cannot have paths"))?
        .pop_if_empty()
        .extend(["v1", "projects", "-", "serviceAccounts", sa_email, "keys"]);
    Ok(url)
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An error answer's message for one line of a terminal: Google's `error.message`, an
/// OAuth `error`, or the text; cut short, its control characters escaped.
fn error_text(body: &[u8]) -> String {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let message = json.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("error"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    });
    let text = match message {
        Some(message) => message,
        None => String::from_utf8_lossy(body).trim().to_owned(),
    };
    if text.is_empty() {
        return String::new();
    }
    let cut: String = text.chars().take(200).collect();
    let more = if cut.len() < text.len() { "..." } else { "" };
    format!(": {}{more}", crate::terminal::escape_controls(&cut))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_email_is_one_path_segment() {
        let url = sa_key_url("http://127.0.0.1:9099/", "a/../b?c#d@x.example").unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9099/v1/projects/-/serviceAccounts/a%2F..%2Fb%3Fc%23d@x.example/keys"
        );
        let url = sa_key_url(
            "http://127.0.0.1:9099/prefix",
            "runner@demo-project.iam.gserviceaccount.com",
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9099/prefix/v1/projects/-/serviceAccounts/runner@demo-project.iam.gserviceaccount.com/keys"
        );
        assert!(sa_key_url("http://u:pw@127.0.0.1:9099", "a@b").is_err());
        assert!(sa_key_url("http://127.0.0.1:9099?x", "a@b").is_err());
        assert!(sa_key_url("file:///tmp", "a@b").is_err());
    }

    #[test]
    fn the_key_id_is_one_path_segment() {
        let url = sa_key_id_url("http://127.0.0.1:9099", "a@b.example", "../../x?y#z").unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9099/v1/projects/-/serviceAccounts/a@b.example/keys/..%2F..%2Fx%3Fy%23z"
        );
    }

    /// Create and delete against an emulator in this process: the second delete is refused
    /// with the emulator's reason.
    #[tokio::test]
    async fn delete_sa_key_deletes_once() {
        let store = gatehouse_store::Store::open_sqlite_memory().await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let idp = format!("http://{}", listener.local_addr().unwrap());
        let state = IdpState::open(IdpConfig::new(&idp, "demo-project"), store)
            .await
            .unwrap();
        let server =
            tokio::spawn(async move { axum::serve(listener, gatehouse_idp::app(state)).await });
        let sa = "runner@demo-project.iam.gserviceaccount.com";
        let file: serde_json::Value =
            serde_json::from_str(&create_sa_key(&idp, sa).await.unwrap()).unwrap();
        let key_id = file["private_key_id"].as_str().unwrap();
        delete_sa_key(&idp, sa, key_id).await.unwrap();
        let error = delete_sa_key(&idp, sa, key_id)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("404") && error.contains("no such key"),
            "{error}"
        );
        server.abort();
    }

    #[test]
    fn an_error_answer_is_one_inert_line() {
        assert_eq!(
            error_text(br#"{"error":{"code":400,"message":"bad \u001b[2J email"}}"#),
            r": bad \u{1b}[2J email"
        );
        assert_eq!(error_text(b"Method Not Allowed\n"), ": Method Not Allowed");
        assert_eq!(error_text(b""), "");
        assert_eq!(error_text(&[b'x'; 300]).len(), 2 + 200 + 3);
    }
}
