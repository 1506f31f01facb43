//! `gatehouse idp` (the Google identity emulator) and `gatehouse keys create-sa-key`.

use anyhow::{Context as _, bail};
use base64::Engine as _;
use clap::{Args, Subcommand};
use gatehouse_idp::{IdpConfig, IdpState};
use gatehouse_store::Store;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct IdpArgs {
    /// Address of the main port (OIDC, /token, sign-in, Identity Toolkit, metadata for the
    /// default service account).
    #[arg(long, default_value = "127.0.0.1:9099")]
    listen: String,
    /// The URL clients reach the emulator at (default: http://LISTEN).
    #[arg(long)]
    issuer: Option<String>,
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
    #[arg(long, env = "GATEHOUSE_IDP_DATABASE")]
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
    /// print the key file JSON.
    CreateSaKey {
        /// The service account's email.
        sa_email: String,
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
    config.key_max_age = args.key_max_age.max(1);
    config.key_rotation = args.key_rotation.max(config.key_max_age + 120);
    let store = match &args.database {
        Some(url) => Store::open_url(url).await,
        None => Store::open_data_dir(&args.data, "idp.db").await,
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
        KeysCommand::CreateSaKey { sa_email, idp } => {
            let url = format!(
                "{}/v1/projects/-/serviceAccounts/{}/keys",
                idp.trim_end_matches('/'),
                sa_email
            );
            let response = reqwest::Client::new()
                .post(&url)
                .json(&serde_json::json!({}))
                .send()
                .await
                .with_context(|| format!("cannot reach the emulator at {idp}"))?;
            let status = response.status();
            let body: serde_json::Value = response
                .json()
                .await
                .context("the emulator's answer is not JSON")?;
            if !status.is_success() {
                bail!("the emulator refused ({status}): {body}");
            }
            let data = body
                .get("privateKeyData")
                .and_then(serde_json::Value::as_str)
                .context("the answer has no privateKeyData")?;
            let file = base64::engine::general_purpose::STANDARD
                .decode(data)
                .context("privateKeyData is not base64")?;
            let text = String::from_utf8(file).context("the key file is not UTF-8")?;
            println!("{}", text.trim_end());
            Ok(ExitCode::SUCCESS)
        }
    }
}
