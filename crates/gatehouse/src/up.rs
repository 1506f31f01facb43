//! `gatehouse up`: the whole system on one machine, in one process (DESIGN §2): the
//! identity emulator with its metadata servers, the voting app on a loopback port, and the
//! gateway in front of it as the only public entry, and a small caller service that calls the
//! gateway's service-to-service route as a service account (`s2s`). Prints a banner saying
//! what runs, what to open, and three commands to try.

use anyhow::Context as _;
use clap::Args;
use gatehouse_idp::config::DEFAULT_WEB_CLIENT_ID;
use gatehouse_idp::{IdpConfig, IdpState};
use gatehouse_store::Store;
use gatehouse_vote::{DatabaseTarget, DatabaseUrl, SignInConfig, TrustConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Data directory: the emulator's users and keys, and the votes (SQLite).
    #[arg(long, default_value = ".gatehouse")]
    pub data: PathBuf,
    /// Put the emulator's data and the votes in this database instead (postgres://...).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
    /// The gateway: the public entry.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The identity emulator (Firebase's emulator port).
    #[arg(long, default_value = "127.0.0.1:9099")]
    pub idp_listen: SocketAddr,
    /// The URL browsers, clients and the other parts reach the emulator at, when it is not
    /// http://IDP_LISTEN (a name, or a TLS front) [default: http://IDP_LISTEN].
    #[arg(long, value_name = "URL")]
    pub issuer: Option<String>,
    /// Metadata server of the demo service account the service-to-service route admits.
    #[arg(long, default_value = "127.0.0.1:9101")]
    pub caller_metadata: SocketAddr,
    /// Metadata server of a second demo service account, which that route refuses.
    #[arg(long, default_value = "127.0.0.1:9102")]
    pub other_metadata: SocketAddr,
    /// The service-to-service demo: a caller service that calls the `/api` route through the
    /// gateway as the admitted service account (`GET /`) or the refused one (`GET /?as=other`).
    #[arg(long, default_value = "127.0.0.1:8082")]
    pub caller_listen: SocketAddr,
    /// Where the voting app listens (loopback; reached through the gateway; port 0: a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub vote_listen: SocketAddr,
    /// The project the emulator pretends to be.
    #[arg(long, default_value = "demo-project")]
    pub project: String,
    /// Your own layout: the gateway's routes from this file (`gatehouse proxy --config`
    /// format) instead of the built-in three; its `listen` replaces --listen, and it is
    /// reloaded when it changes. Start from `--print-gateway-config`.
    #[arg(long, value_name = "FILE")]
    pub gateway_config: Option<PathBuf>,
    /// Print the built-in gateway configuration (a starting point for --gateway-config)
    /// and exit. It names the voting app at --vote-listen (127.0.0.1:8081 when that is 0).
    #[arg(long)]
    pub print_gateway_config: bool,
}

/// How much longer than the gateway's drain (its grace period) stopping may take before
/// what is still open is cut: the other parts' in-flight requests end well within it.
const STOP_MARGIN: Duration = Duration::from_secs(5);

/// The MV3 extension's OAuth client (extension/README.md): its id is fixed by the
/// manifest's key, so the emulator can name `https://<id>.chromiumapp.org/` as its redirect.
pub const EXTENSION_CLIENT_ID: &str = "gatehouse-extension";
pub const EXTENSION_ID: &str = "ejohimejhdbellhapfccflnfiibkojco";

/// A concrete address for `addr`: port 0 becomes a free port now, because URLs that
/// name it (issuer, audiences) are needed before every listener is bound.
fn concrete(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let probe = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    Ok(probe.local_addr()?)
}

/// The gateway's routes as a config file would say them.
fn gateway_toml(
    listen: SocketAddr,
    public_url: &str,
    idp: &str,
    vote_upstream: &str,
    caller: &str,
) -> String {
    format!(
        r#"listen = "{listen}"
client_ids = ["{DEFAULT_WEB_CLIENT_ID}", "{EXTENSION_CLIENT_ID}"]

# Seed 000's secure endpoint: any signed-in user. The app verifies the token again, so it
# gets the token as sent.
[[route]]
name = "secure-endpoint"
path_prefix = "/run-secure-endpoint"
upstream = "{vote_upstream}"
url = "{public_url}"
issuers = [{{ profile = "google", jwks = "{idp}/oauth2/v3/certs" }}]
allow = ["allAuthenticatedUsers"]
forward_token = "keep"
[route.cors]
mode = "answer"
allow_origins = ["*"]

# Service to service: one named service account only.
[[route]]
name = "service-api"
path_prefix = "/api"
upstream = "{vote_upstream}"
url = "{public_url}"
issuers = [{{ profile = "google", jwks = "{idp}/oauth2/v3/certs" }}]
allow = ["serviceAccount:{caller}"]
forward_token = "keep"

# The voting app, public as seed 001 deploys it (--allow-unauthenticated); it verifies the
# ID token itself on every vote.
[[route]]
name = "vote"
path_prefix = "/"
upstream = "{vote_upstream}"
url = "{public_url}"
issuers = [{{ profile = "google", jwks = "{idp}/oauth2/v3/certs" }}]
allow = ["allUsers"]
"#
    )
}

fn banner(
    routes: &str,
    public_url: &str,
    idp: &str,
    loopback: (SocketAddr, SocketAddr), // the voting app, the caller service
    caller: (&SocketAddr, &str),
    other: (&SocketAddr, &str),
    data: &str,
) -> String {
    let (caller_addr, caller_email) = caller;
    let (other_addr, other_email) = other;
    let (vote_addr, caller_service) = loopback;
    format!(
        r#"
Gatehouse is up.

What runs
  gateway            {public_url}  (the public entry)
{routes}  identity emulator  {idp}  (sign-in page, /token, keys, metadata of the default service account)
    demo users alice@example.com and bob@example.com are on the sign-in page; add any other there
  metadata servers   {caller_addr} -> {caller_email}
                     {other_addr} -> {other_email}
  voting app         http://{vote_addr}  (loopback upstream; use the gateway)
  caller service     http://{caller_service}  (calls {public_url}/api as a service account)
  data               {data}

Open {public_url}/ , click "Sign In with Google", choose alice@example.com, and vote.

Try
  1. Vote as a user (the app checks the token itself):
     gatehouse call {public_url}/ -d team=CATS --user alice@example.com --audience {DEFAULT_WEB_CLIENT_ID} --idp {idp}
  2. Call the secure endpoint (the gateway admits any signed-in user):
     gatehouse call {public_url}/run-secure-endpoint -H 'Content-Type: application/json' -d '{{"url":"https://example.com"}}' --user bob@example.com --audience {DEFAULT_WEB_CLIENT_ID} --idp {idp}
  3. Service to service: the caller service calls /api/votes/hourly through the gateway with
     gatehouse-client (only {caller_email} is admitted; the other gets 403):
     curl http://{caller_service}/
     curl 'http://{caller_service}/?as=other'
     or by hand: gatehouse call {public_url}/api/votes/hourly --metadata {caller_addr}

Stop with Ctrl-C.
"#
    )
}

/// Registers the extension's client on first start, so its sign-in works against `up`.
async fn register_extension_client(state: &IdpState) -> anyhow::Result<()> {
    use gatehouse_idp::oauth;
    if oauth::client(state, EXTENSION_CLIENT_ID)
        .await
        .context("reading the emulator's clients")?
        .is_some()
    {
        return Ok(());
    }
    let request = oauth::ClientRequest {
        client_id: Some(EXTENSION_CLIENT_ID.to_owned()),
        kind: Some("extension".to_owned()),
        extension_id: Some(EXTENSION_ID.to_owned()),
        name: Some("Gatehouse extension".to_owned()),
        ..Default::default()
    };
    oauth::register_client(state, request, state.now())
        .await
        .map_err(|e| anyhow::anyhow!("registering the extension's client: {e:?}"))?;
    Ok(())
}

/// `--issuer`, checked to be an http(s) origin (paths are appended to it) and without its
/// trailing slash.
fn issuer_url(text: &str) -> anyhow::Result<String> {
    let url =
        reqwest::Url::parse(text).with_context(|| format!("--issuer `{text}` is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host().is_none()
        || !url.username().is_empty()
        || url.password().is_some()
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
    {
        anyhow::bail!("--issuer `{text}`: expected http(s)://HOST[:PORT]");
    }
    Ok(url.origin().ascii_serialization())
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let caller_email = format!("vote-caller@{}.iam.gserviceaccount.com", args.project);
    let other_email = format!("other-service@{}.iam.gserviceaccount.com", args.project);
    if args.print_gateway_config {
        let vote = if args.vote_listen.port() == 0 {
            SocketAddr::from(([127, 0, 0, 1], 8081))
        } else {
            args.vote_listen
        };
        let listen = args.listen;
        println!(
            "# gatehouse up --vote-listen {vote} --gateway-config THIS_FILE\n{}",
            gateway_toml(
                listen,
                &format!("http://{listen}"),
                &match &args.issuer {
                    Some(url) => issuer_url(url)?,
                    None => format!("http://{}", args.idp_listen),
                },
                &format!("http://{vote}"),
                &caller_email,
            )
        );
        return Ok(ExitCode::SUCCESS);
    }
    // A user's own gateway layout, read first: its listen address is the public URL.
    let own_config = match &args.gateway_config {
        Some(path) => Some(
            gatehouse_gateway::Config::from_file(path)
                .map_err(|e| anyhow::anyhow!("--gateway-config: {e}"))?,
        ),
        None => None,
    };
    let gateway_addr = match &own_config {
        Some(config) => config.listen,
        None => concrete(args.listen)?,
    };
    let public_url = format!("http://{gateway_addr}");

    // Storage: SQLite files under --data, or one PostgreSQL database for both parts.
    let (idp_store, vote_target, data_note) = match &args.database {
        Some(url) => {
            let store = Store::open_url(url)
                .await
                .context("opening --database for the emulator")?;
            let target = DatabaseTarget::Url(DatabaseUrl::new(url));
            let note = target.describe();
            (store, target, note)
        }
        None => {
            crate::private_files::prepare_data_dir(
                &args.data,
                &[
                    crate::idp::IDP_DB_FILE,
                    gatehouse_vote::database::SQLITE_FILE,
                ],
            )?;
            let store = Store::open_data_dir(&args.data, crate::idp::IDP_DB_FILE)
                .await
                .with_context(|| format!("opening {}", args.data.display()))?;
            let target =
                DatabaseTarget::Sqlite(args.data.join(gatehouse_vote::database::SQLITE_FILE));
            (store, target, format!("{} (SQLite)", args.data.display()))
        }
    };

    // The emulator and its metadata servers.
    let idp_listener = tokio::net::TcpListener::bind(args.idp_listen)
        .await
        .with_context(|| format!("listening on {} (emulator)", args.idp_listen))?;
    let idp_url = match &args.issuer {
        Some(url) => issuer_url(url)?,
        None => format!("http://{}", idp_listener.local_addr()?),
    };
    let idp_state = IdpState::open(IdpConfig::new(&idp_url, &args.project), idp_store.clone())
        .await
        .context("starting the emulator")?;
    register_extension_client(&idp_state).await?;
    let mut metadata = Vec::new();
    for (addr, email) in [
        (args.caller_metadata, &caller_email),
        (args.other_metadata, &other_email),
    ] {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr} (metadata for {email})"))?;
        metadata.push((listener, email.clone()));
    }
    let metadata_addrs: Vec<SocketAddr> = metadata
        .iter()
        .map(|(l, _)| l.local_addr())
        .collect::<Result<_, _>>()?;

    // The voting app, trusting the emulator as Google: user tokens name the web client,
    // service tokens name the gateway's URL (Cloud Run's audience rule).
    let votes = crate::vote::open_votes(&vote_target).await?;
    let settings = crate::vote::VoteSettings {
        listen: args.vote_listen,
        database: vote_target.clone(),
        sign_in: SignInConfig::emulator(&idp_url, DEFAULT_WEB_CLIENT_ID),
        // Firebase / Identity Platform tokens of the project are good for a vote too.
        trust: TrustConfig::emulator(
            &idp_url,
            vec![
                DEFAULT_WEB_CLIENT_ID.to_owned(),
                EXTENSION_CLIENT_ID.to_owned(),
                public_url.clone(),
            ],
        )
        .with_firebase(
            &args.project,
            Some(&TrustConfig::emulator_firebase_keys(&idp_url)),
        ),
        project: args.project.clone(),
        allowed_origins: vec!["*".to_owned()],
    };
    let vote_state = crate::vote::app_state(&settings, votes.clone())?;
    let vote_listener = tokio::net::TcpListener::bind(args.vote_listen)
        .await
        .with_context(|| format!("listening on {} (voting app)", args.vote_listen))?;
    let vote_addr = vote_listener.local_addr()?;

    // The service-to-service demo: a caller service holding both accounts' metadata servers.
    let caller_listener = tokio::net::TcpListener::bind(args.caller_listen)
        .await
        .with_context(|| format!("listening on {} (caller service)", args.caller_listen))?;
    let caller_service = caller_listener.local_addr()?;
    let caller_app = crate::s2s::app(
        &public_url,
        (&caller_email, metadata_addrs[0]),
        (&other_email, metadata_addrs[1]),
    )?;

    // The gateway in front: the built-in layout, or the user's file (reloaded on change).
    let config = match own_config {
        Some(config) => config,
        None => {
            let toml = gateway_toml(
                gateway_addr,
                &public_url,
                &idp_url,
                &format!("http://{vote_addr}"),
                &caller_email,
            );
            gatehouse_gateway::Config::from_toml(&toml, None).map_err(|e| {
                anyhow::anyhow!("the gateway configuration `up` built is invalid: {e}")
            })?
        }
    };
    let stop_deadline = config.timeouts.shutdown_grace + STOP_MARGIN;
    let gateway = gatehouse_gateway::Gateway::bind(config, args.gateway_config.clone())
        .await
        .with_context(|| format!("starting the gateway on {gateway_addr}"))?;

    let routes = match &args.gateway_config {
        Some(path) => format!("    routes from {}\n", path.display()),
        None => format!(
            "    /                      -> voting app, public (allUsers); the app verifies the ID token on each vote\n    \
             /run-secure-endpoint   -> voting app, any signed-in user (allAuthenticatedUsers)\n    \
             /api                   -> voting app, only serviceAccount:{caller_email}\n"
        ),
    };
    // Every listener is bound: connections wait in the backlog, so the banner can come
    // first (whoever waits for a port to answer has the banner by then).
    println!(
        "{}",
        banner(
            &routes,
            &public_url,
            &idp_url,
            (vote_addr, caller_service),
            (&metadata_addrs[0], &caller_email),
            (&metadata_addrs[1], &other_email),
            &data_note,
        )
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let maintenance = idp_state.spawn_maintenance();
    let mut tasks = tokio::task::JoinSet::new();
    {
        let rx = stop_rx.clone();
        tasks.spawn(async move {
            gatehouse_idp::http::serve(idp_state, idp_listener, metadata, stopped(rx))
                .await
                .context("emulator")
        });
    }
    {
        let rx = stop_rx.clone();
        tasks.spawn(async move {
            // The same limits as `gatehouse vote`'s: the app is an upstream here, but its
            // port is open on loopback to every local process.
            gatehouse_vote::server::serve(
                vote_listener,
                gatehouse_vote::app(vote_state),
                &gatehouse_vote::server::ServerLimits::default(),
                stopped(rx),
            )
            .await;
            Ok(())
        });
    }
    {
        let rx = stop_rx.clone();
        tasks.spawn(async move {
            axum::serve(caller_listener, caller_app)
                .with_graceful_shutdown(stopped(rx))
                .await
                .context("caller service")
        });
    }
    {
        let rx = stop_rx.clone();
        tasks.spawn(async move {
            gateway.run(stopped(rx)).await;
            Ok(())
        });
    }

    tracing::info!(severity = "INFO", gateway = %public_url, idp = %idp_url, "gatehouse up");

    // Stop everything on a signal, or when any part stops on its own (an error).
    let mut failure = None;
    tokio::select! {
        () = crate::vote::shutdown_signal() => {}
        Some(result) = tasks.join_next() => {
            failure = Some(match result {
                Ok(Ok(())) => anyhow::anyhow!("a part stopped unexpectedly"),
                Ok(Err(e)) => e,
                Err(e) => anyhow::anyhow!("a part panicked: {e}"),
            });
        }
    }
    let _ = stop_tx.send(true);
    // The emulator's and the caller service's servers wait for every open connection, a
    // client that never finishes its request included; and the signal handler is ours now,
    // so Ctrl-C no longer kills. Hence a deadline (the gateway's drain and a margin), and a
    // second signal that stops at once.
    let drain = async {
        while let Some(result) = tasks.join_next().await {
            if let Ok(Err(e)) = result {
                tracing::warn!(severity = "WARNING", error = %format!("{e:#}"), "while stopping");
            }
        }
    };
    tokio::select! {
        () = drain => {}
        () = tokio::time::sleep(stop_deadline) => {
            tracing::warn!(
                severity = "WARNING",
                seconds = stop_deadline.as_secs(),
                "parts still draining at the deadline; closing their connections"
            );
        }
        () = crate::vote::shutdown_signal() => {
            tracing::warn!(severity = "WARNING", "second signal: stopping now");
        }
    }
    tasks.abort_all();
    maintenance.abort();
    crate::vote::close_in_time(votes.close(), "the votes database").await;
    crate::vote::close_in_time(idp_store.close(), "the emulator's database").await;
    match failure {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}
