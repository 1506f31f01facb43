//! `gatehouse vote`: the idp-sql voting app (seed 001) on its own: where it listens,
//! where the votes live, whom it trusts, how long clients may take, and a stop on SIGTERM
//! that drains open requests within a deadline.

use anyhow::Context as _;
use clap::Args;
use gatehouse_vote::config::{DEFAULT_IDP, EMULATOR_WEB_CLIENT_ID};
use gatehouse_vote::server::ServerLimits;
use gatehouse_vote::{AppState, DatabaseTarget, SignInConfig, TrustConfig, VoteStore};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct VoteArgs {
    /// Address to listen on [default: 0.0.0.0:$PORT when PORT is set, as on Cloud Run,
    /// else 127.0.0.1:8081].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// postgres://USER:PASSWORD@HOST:PORT/DB (or sqlite:PATH). Without it:
    /// CLOUD_SQL_CREDENTIALS_SECRET, then DB_USER/DB_PASSWORD/DB_NAME with DB_HOST or
    /// CLOUD_SQL_CONNECTION_NAME (+ DB_SOCKET_DIR), else SQLite under --data.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
    /// Data directory for the SQLite file.
    #[arg(long, default_value = ".gatehouse")]
    pub data: PathBuf,
    /// The identity provider: the emulator's URL, or `google` for Google itself.
    #[arg(long, default_value = DEFAULT_IDP)]
    pub idp: String,
    /// OAuth client id the page signs in with and tokens must name as `aud` (repeatable;
    /// the first is the page's) [default: the emulator's web client].
    #[arg(long = "client-id")]
    pub client_ids: Vec<String>,
    /// Authorization endpoint for the sign-in popup [default: from --idp].
    #[arg(long)]
    pub auth_endpoint: Option<String>,
    /// Where Google-issued tokens' keys are [default: from --idp].
    #[arg(long)]
    pub jwks: Option<String>,
    /// Also accept Firebase / Identity Platform ID tokens of this project.
    #[arg(long)]
    pub firebase_project: Option<String>,
    /// Where the Firebase tokens' keys are [default: from --idp].
    #[arg(long)]
    pub firebase_keys: Option<String>,
    /// Sign in the Firebase way: the page trades the Google token for the project's own
    /// (accounts:signInWithIdp with this Web API key) and renews it with the refresh token.
    #[arg(long, requires = "firebase_project")]
    pub firebase_api_key: Option<String>,
    /// Project in the logs' `logging.googleapis.com/trace`.
    #[arg(long, env = "GOOGLE_CLOUD_PROJECT", default_value = "gatehouse-demo")]
    pub project: String,
    /// Origin allowed to call /run-secure-endpoint cross-origin (repeatable; `*` = any).
    #[arg(long = "allowed-origin", env = "ALLOWED_ORIGIN", default_value = "*")]
    pub allowed_origins: Vec<String>,
    /// Seconds a client has to send a request head (and an idle connection stays open, and
    /// a request body may pause).
    #[arg(long, value_name = "SECONDS", default_value = "30", value_parser = seconds)]
    pub header_read_seconds: Duration,
    /// Open connections at most; more wait to be accepted.
    #[arg(long, value_name = "N", default_value_t = ServerLimits::default().max_connections,
          value_parser = at_least_one)]
    pub max_connections: usize,
    /// After SIGTERM, seconds open requests have to finish before their connections are
    /// dropped and the process exits 0.
    #[arg(long, value_name = "SECONDS", default_value = "8", value_parser = seconds)]
    pub shutdown_grace_seconds: Duration,
}

fn at_least_one(value: &str) -> Result<usize, String> {
    value
        .parse::<usize>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("{value:?} is not a whole number of at least 1"))
}

/// A positive number of seconds, fractions allowed.
fn seconds(value: &str) -> Result<Duration, String> {
    value
        .parse::<f64>()
        .ok()
        .filter(|s| *s > 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("{value:?} is not a positive number of seconds"))
}

/// Everything `serve` needs, resolved from the arguments and the environment.
#[derive(Debug)]
pub struct VoteSettings {
    pub listen: SocketAddr,
    pub database: DatabaseTarget,
    pub sign_in: SignInConfig,
    pub trust: TrustConfig,
    pub project: String,
    pub allowed_origins: Vec<String>,
}

impl VoteArgs {
    /// How long clients may take and how many may connect.
    pub fn server_limits(&self) -> ServerLimits {
        ServerLimits {
            header_read_timeout: self.header_read_seconds,
            max_connections: self.max_connections,
            shutdown_grace: self.shutdown_grace_seconds,
        }
    }

    pub fn settings(self) -> anyhow::Result<VoteSettings> {
        let listen = match self.listen {
            Some(addr) => addr,
            None => match std::env::var("PORT")
                .ok()
                .and_then(|p| p.parse::<u16>().ok())
            {
                Some(port) => SocketAddr::from(([0, 0, 0, 0], port)),
                None => SocketAddr::from(([127, 0, 0, 1], 8081)),
            },
        };
        let database =
            gatehouse_vote::database::resolve(self.database.as_deref(), &self.data, |name| {
                std::env::var(name).ok()
            })
            .context("database settings")?;
        let real_google = self.idp == "google";
        let mut client_ids = self.client_ids;
        if client_ids.is_empty() {
            anyhow::ensure!(
                !real_google,
                "--idp google needs --client-id (your OAuth web client)"
            );
            client_ids.push(EMULATOR_WEB_CLIENT_ID.to_owned());
        }
        let mut sign_in = if real_google {
            SignInConfig::google(&client_ids[0])
        } else {
            SignInConfig::emulator(&self.idp, &client_ids[0])
        };
        if let Some(key) = &self.firebase_api_key {
            sign_in.firebase = Some(if real_google {
                gatehouse_vote::FirebaseClient::google(key)
            } else {
                gatehouse_vote::FirebaseClient::emulator(&self.idp, key)
            });
        }
        if let Some(endpoint) = self.auth_endpoint {
            sign_in.authorization_endpoint = endpoint;
        }
        let mut trust = if real_google {
            TrustConfig::google(client_ids)
        } else {
            TrustConfig::emulator(&self.idp, client_ids)
        };
        if let Some(jwks) = self.jwks {
            trust.google_keys_url = jwks;
        }
        if let Some(project) = &self.firebase_project {
            let keys = self
                .firebase_keys
                .clone()
                .or_else(|| (!real_google).then(|| TrustConfig::emulator_firebase_keys(&self.idp)));
            trust = trust.with_firebase(project, keys.as_deref());
        }
        Ok(VoteSettings {
            listen,
            database,
            sign_in,
            trust,
            project: self.project,
            allowed_origins: self.allowed_origins,
        })
    }
}

/// Opens the vote store, waiting a little for a database that is still starting.
pub async fn open_votes(target: &DatabaseTarget) -> anyhow::Result<VoteStore> {
    let mut delay = Duration::from_millis(250);
    let mut attempt = 1;
    loop {
        match gatehouse_vote::open_votes(target).await {
            Ok(votes) => return Ok(votes),
            Err(error) if attempt < 8 && matches!(target, DatabaseTarget::Url(_)) => {
                tracing::warn!(
                    severity = "WARNING",
                    database = %target.describe(),
                    attempt,
                    %error,
                    "database not ready; retrying"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(4));
                attempt += 1;
            }
            Err(error) => {
                return Err(error).with_context(|| format!("opening {}", target.describe()));
            }
        }
    }
}

/// The app's state from resolved settings and an open store.
pub fn app_state(settings: &VoteSettings, votes: VoteStore) -> anyhow::Result<AppState> {
    let verifier = settings
        .trust
        .verifier()
        .context("token verifier settings")?;
    Ok(
        AppState::builder(votes, Arc::new(verifier), settings.sign_in.clone())
            .trace_project(settings.project.clone())
            .allowed_origins(settings.allowed_origins.clone())
            .build(),
    )
}

/// Resolves when the process is asked to stop (SIGTERM, as Cloud Run sends, or Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// How long closing the database pool may take after the drain: SQLite checkpoints its
/// WAL then, which a crash would leave to the next start anyway.
const POOL_CLOSE_WAIT: Duration = Duration::from_secs(1);

pub async fn run(args: VoteArgs) -> anyhow::Result<ExitCode> {
    let limits = args.server_limits();
    let settings = args.settings()?;
    let votes = open_votes(&settings.database).await?;
    let state = app_state(&settings, votes.clone())?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("listening on {}", settings.listen))?;
    let addr = listener.local_addr().unwrap_or(settings.listen);
    tracing::info!(
        severity = "INFO",
        %addr,
        database = %settings.database.describe(),
        sign_in = %settings.sign_in.authorization_endpoint,
        "gatehouse vote listening on http://{addr}/"
    );
    gatehouse_vote::server::serve(
        listener,
        gatehouse_vote::app(state),
        &limits,
        shutdown_signal(),
    )
    .await;
    tracing::info!(
        severity = "INFO",
        "shutting down: closing the database pool"
    );
    close_in_time(votes.close(), "the votes database").await;
    Ok(ExitCode::SUCCESS)
}

/// Waits up to [`POOL_CLOSE_WAIT`] for a database pool to close, then goes on: a connection
/// a stopped server left open may still hold it, and the database survives a close cut
/// short (SQLite replays its WAL at the next start; PostgreSQL had every commit already).
pub(crate) async fn close_in_time(close: impl std::future::Future<Output = ()>, what: &str) {
    if tokio::time::timeout(POOL_CLOSE_WAIT, close).await.is_err() {
        tracing::warn!(
            severity = "WARNING",
            "{what} did not close in time; exiting anyway"
        );
    }
}
