//! `gatehouse token` and `gatehouse call`: an ID token from the chosen source, printed or
//! sent to a receiving service as `Authorization: Bearer` (curl with a token).

use anyhow::{Context as _, bail};
use clap::Args;
use gatehouse_client::{
    AdcOptions, AuthorizedClient, EmulatorUser, Env, IdToken, IdTokenSource, KeyFileSource,
    MetadataServer, TokenCache, application_default, audience_for_url,
};
use std::future::Future;
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// What `call` exits with when the receiver answers 4xx/5xx (curl `--fail`'s code).
const HTTP_ERROR_EXIT: u8 = 22;

/// Where the token comes from. Without a flag: GOOGLE_APPLICATION_CREDENTIALS, then
/// GCE_METADATA_HOST, then the emulator's metadata server at --idp.
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// The metadata server at HOST:PORT (as GCE_METADATA_HOST names it).
    #[arg(long, value_name = "HOST:PORT", conflicts_with_all = ["key_file", "user"])]
    pub metadata: Option<String>,
    /// A Google-format service-account key file (self-signed JWT exchanged at its token_uri).
    #[arg(long, value_name = "FILE", conflicts_with = "user")]
    pub key_file: Option<PathBuf>,
    /// A test user of the emulator at --idp (added if new).
    #[arg(long, value_name = "EMAIL")]
    pub user: Option<String>,
    /// The emulator.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9099")]
    pub idp: String,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The token's `aud`: the receiving service's URL (required unless --user, whose
    /// default is the emulator's web client id).
    #[arg(long, value_name = "AUD")]
    pub audience: Option<String>,
    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Debug, Args)]
pub struct CallArgs {
    /// The URL to call.
    pub url: String,
    /// The token's `aud` [default: the URL's origin, Cloud Run's rule; with --user, the
    /// emulator's default web client id, as `token --user`].
    #[arg(long, value_name = "AUD")]
    pub audience: Option<String>,
    /// The method [default: GET, or POST with -d].
    #[arg(short = 'X', long = "request", value_name = "METHOD")]
    pub method: Option<String>,
    /// The body (`@FILE` reads a file, `@-` stdin); form-encoded unless -H says otherwise.
    #[arg(short = 'd', long = "data", value_name = "DATA")]
    pub data: Option<String>,
    /// A header, `Name: value` (repeatable). An Authorization header is replaced by the token.
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,
    /// Status, timing and the token's source on stderr.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Give up on the call after SECS (fractions allowed) [default: no limit, as curl; only
    /// connecting is bounded].
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub max_time: Option<Duration>,
    #[command(flatten)]
    pub source: SourceArgs,
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .filter(|limit| !limit.is_zero())
        .ok_or_else(|| format!("`{text}` is not a positive number of seconds"))
}

/// What `call --user` without `--audience` names its token's audience (in `-v` and as its
/// cache key): a user's `aud` is an OAuth client id, never the service's URL.
const EMULATOR_DEFAULT_CLIENT: &str = "the emulator's default web client";

/// A test user's tokens for the emulator's default web client, whatever audience the cache
/// asks for: what `token --user` prints without `--audience`.
#[derive(Debug)]
struct EmulatorDefaultClient(EmulatorUser);

type Minting<'a> =
    Pin<Box<dyn Future<Output = Result<IdToken, gatehouse_client::Error>> + Send + 'a>>;

impl IdTokenSource for EmulatorDefaultClient {
    fn mint<'a>(&'a self, _audience: &'a str) -> Minting<'a> {
        Box::pin(self.0.mint_for(None))
    }

    fn describe(&self) -> String {
        self.0.describe()
    }
}

/// The source the flags name (or ADC's choice), for tokens of any audience.
async fn source(args: &SourceArgs) -> anyhow::Result<Box<dyn IdTokenSource>> {
    if let Some(host) = &args.metadata {
        return Ok(Box::new(MetadataServer::new(host)?));
    }
    if let Some(path) = &args.key_file {
        return Ok(Box::new(KeyFileSource::from_file(path).await?));
    }
    if let Some(email) = &args.user {
        return Ok(Box::new(EmulatorUser::new(&args.idp, email)?));
    }
    let options = AdcOptions {
        // DESIGN §2: the environment's sources, then the emulator, which serves the
        // default service account's metadata on its own port.
        probe_default_metadata: false,
        fallback_metadata_hosts: vec![args.idp.clone()],
        ..AdcOptions::default()
    };
    Ok(application_default(&Env::process(), &options).await?)
}

pub async fn token(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let token = match (&args.source.user, &args.audience) {
        (Some(email), audience) => {
            EmulatorUser::new(&args.source.idp, email)?
                .mint_for(audience.as_deref())
                .await?
        }
        (None, Some(audience)) => source(&args.source).await?.mint(audience).await?,
        (None, None) => bail!(
            "--audience is required: the URL of the service the token is for (e.g. https://receiver.example)"
        ),
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", token.as_str())?;
    Ok(ExitCode::SUCCESS)
}

pub async fn call(args: CallArgs) -> anyhow::Result<ExitCode> {
    // Checked before anything prints it: a URL with user-info is refused, its password
    // never shown.
    let origin = audience_for_url(&args.url)?;
    // The whole command is checked before a token is asked for: a typo must not cost a
    // token-service round trip, nor hide behind that service's error when it is down.
    let method = match (&args.method, &args.data) {
        (Some(method), _) => {
            gatehouse_client::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                .with_context(|| format!("`{method}` is not an HTTP method"))?
        }
        (None, Some(_)) => gatehouse_client::Method::POST,
        (None, None) => gatehouse_client::Method::GET,
    };
    let mut headers = Vec::with_capacity(args.headers.len());
    let mut has_content_type = false;
    for header in &args.headers {
        let Some((name, value)) = header.split_once(':') else {
            bail!("header `{header}` is not `Name: value`");
        };
        let (name, value) = (name.trim(), value.trim());
        reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .with_context(|| format!("`{name}` is not a header name"))?;
        reqwest::header::HeaderValue::from_str(value)
            .with_context(|| format!("the value of `{name}` is not a valid header value"))?;
        has_content_type |= name.eq_ignore_ascii_case("content-type");
        headers.push((name, value));
    }
    let body = args.data.as_deref().map(read_data).transpose()?;

    let (audience, source): (String, Box<dyn IdTokenSource>) =
        match (&args.audience, &args.source.user) {
            (Some(audience), _) => (audience.clone(), source(&args.source).await?),
            (None, Some(email)) => (
                EMULATOR_DEFAULT_CLIENT.to_owned(),
                Box::new(EmulatorDefaultClient(EmulatorUser::new(
                    &args.source.idp,
                    email,
                )?)),
            ),
            (None, None) => (origin, source(&args.source).await?),
        };
    let described = source.describe();
    let cache = TokenCache::new(source);
    // The token services keep their 30 s limit; the call itself may take as long as the
    // receiver does (a long report, a stream), unless --max-time says otherwise.
    let client = AuthorizedClient::with_timeout(cache.clone(), args.max_time)?;

    let started = Instant::now();
    cache.token(&audience).await?; // minted here, so -v can time it apart from the call
    let minted_in = started.elapsed();

    let mut request = client
        .request(method.clone(), &args.url)
        .audience(audience.clone());
    for (name, value) in headers {
        request = request.header(name, value);
    }
    if let Some(body) = body {
        if !has_content_type {
            request = request.header("Content-Type", "application/x-www-form-urlencoded");
        }
        request = request.body(body);
    }
    if args.verbose {
        eprintln!(
            "* token for {audience} from {described} in {} ms",
            minted_in.as_millis()
        );
        eprintln!("> {method} {}", args.url);
    }
    let sent = Instant::now();
    let mut response = request.send().await?;
    let status = response.status();
    if args.verbose {
        eprintln!("< {status} in {} ms", sent.elapsed().as_millis());
    }
    // Written as it arrives, as curl does: a stream (server-sent events, a long report) is
    // seen while it runs, and a large answer is never held whole in memory.
    let mut received = 0usize;
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("reading the answer of {}", args.url))?
    {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&chunk)?;
        stdout.flush()?;
        received += chunk.len();
    }
    if args.verbose {
        eprintln!("* {received} bytes in {} ms", sent.elapsed().as_millis());
    }
    if status.is_client_error() || status.is_server_error() {
        if !args.verbose {
            eprintln!("gatehouse: {} answered {status}", args.url);
        }
        return Ok(ExitCode::from(HTTP_ERROR_EXIT));
    }
    Ok(ExitCode::SUCCESS)
}

/// `-d`'s value: literal, `@FILE`, or `@-` for stdin (as curl).
fn read_data(data: &str) -> anyhow::Result<Vec<u8>> {
    match data.strip_prefix('@') {
        Some("-") => {
            let mut body = Vec::new();
            std::io::stdin().read_to_end(&mut body)?;
            Ok(body)
        }
        Some(path) => std::fs::read(path).with_context(|| format!("reading -d @{path}")),
        None => Ok(data.as_bytes().to_vec()),
    }
}
