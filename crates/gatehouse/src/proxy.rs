//! `gatehouse proxy`: the identity-aware gateway (DESIGN §5), from a config file or the
//! flags-only form of DESIGN §2. SIGHUP reloads the file (so does a change to it); SIGTERM
//! or Ctrl-C stops accepting and drains in-flight requests.

use anyhow::Context as _;
use clap::Args;
use gatehouse_gateway::{Config, Flags, Gateway};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// TOML configuration (routes, IAM policies, groups, CORS, limits); reloaded on SIGHUP
    /// and when the file changes. See README "gatehouse proxy".
    #[arg(long, value_name = "FILE", conflicts_with_all = ["upstream", "audience", "allow", "issuer", "jwks"])]
    config: Option<PathBuf>,
    /// The one upstream of the flags-only form, e.g. http://127.0.0.1:8081.
    #[arg(long, value_name = "URL", required_unless_present = "config")]
    upstream: Option<String>,
    /// Accepted token audience(s): the gateway's URL, custom audiences, OAuth client ids.
    #[arg(long, value_name = "AUD", num_args = 1.., required_unless_present = "config")]
    audience: Vec<String>,
    /// IAM member granted the invoker role (repeatable) [default: allAuthenticatedUsers].
    #[arg(long, value_name = "MEMBER")]
    allow: Vec<String>,
    /// Listen address [default: 127.0.0.1:8080, or the file's `listen`].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Token issuer: google (default) | firebase:PROJECT | iap | oidc:URL | an issuer string.
    #[arg(long, value_name = "PROFILE")]
    issuer: Option<String>,
    /// Where the issuer's keys come from (JWK set or kid -> PEM map).
    #[arg(long, value_name = "URL")]
    jwks: Option<String>,
    /// TLS certificate chain (PEM); with --tls-key, serve HTTPS.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "config"
    )]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_cert",
        conflicts_with = "config"
    )]
    tls_key: Option<PathBuf>,
    /// Check the configuration, print the routes and exit.
    #[arg(long)]
    check: bool,
}

pub async fn run(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    let (mut config, source) = match &args.config {
        Some(path) => (Config::from_file(path)?, Some(path.clone())),
        None => {
            let flags = Flags {
                upstream: args.upstream.clone().unwrap_or_default(),
                audiences: args.audience.clone(),
                allow: args.allow.clone(),
                listen: args.listen.clone(),
                issuer: args.issuer.clone(),
                jwks: args.jwks.clone(),
                tls_cert: args.tls_cert.clone(),
                tls_key: args.tls_key.clone(),
            };
            (Config::from_flags(&flags)?, None)
        }
    };
    if let Some(listen) = &args.listen {
        config.listen = listen.parse().with_context(|| {
            format!("--listen {listen:?} is not an address like 127.0.0.1:8080")
        })?;
    }
    if args.check {
        for route in &config.routes {
            println!(
                "route {:?}: host {} prefix {} -> {} (issuers {}, audiences {})",
                route.name,
                route.host.as_deref().unwrap_or("*"),
                route.path_prefix,
                route.upstream,
                route.issuer_names.join(", "),
                route.audiences.join(", "),
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let tls = config.tls.is_some();
    let gateway = Gateway::bind(config, source).await?;
    let addr = gateway.local_addr()?;
    let scheme = if tls { "https" } else { "http" };
    println!("gatehouse proxy listening on {scheme}://{addr}");
    if let Some(admin) = gateway.admin_addr() {
        println!("gatehouse proxy metrics on http://{admin}/_gatehouse/metrics");
    }
    tracing::info!(%addr, "gatehouse proxy listening");

    let handle = gateway.handle();
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            // A refused file is logged by reload and the old configuration stays.
            let _ = handle.reload();
        }
    });
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    gateway
        .run(async move {
            tokio::select! {
                _ = terminate.recv() => tracing::info!("SIGTERM: draining"),
                _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: draining"),
            }
        })
        .await;
    Ok(ExitCode::SUCCESS)
}
