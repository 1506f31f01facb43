//! `gatehouse decode` and `gatehouse verify`: look inside a token, or verify it.

use anyhow::Context as _;
use clap::Args;
use gatehouse_verify::unverified::danger_decode_unverified;
use gatehouse_verify::{Clock, IssuerProfile, SystemClock, Verifier};
use serde_json::{Value, json};
use std::io::Read as _;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// The token (compact JWS), or `-` to read it from standard input.
    pub token: String,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The token (compact JWS), or `-` to read it from standard input.
    pub token: String,
    /// Issuer profile: google | firebase:PROJECT | iap | oidc:ISSUER_URL | an issuer string.
    #[arg(long, default_value = "google")]
    pub issuer: String,
    /// Where the issuer's keys are (a JWK set or a kid -> X.509 PEM map), e.g. the
    /// emulator's http://127.0.0.1:9099/oauth2/v3/certs.
    #[arg(long)]
    pub jwks: Option<String>,
    /// An accepted audience (repeatable). Required unless the profile fixes it (firebase).
    #[arg(long = "audience")]
    pub audiences: Vec<String>,
}

fn read_token(arg: &str) -> anyhow::Result<String> {
    if arg != "-" {
        return Ok(arg.trim().to_owned());
    }
    let mut token = String::new();
    std::io::stdin()
        .take(1 << 20)
        .read_to_string(&mut token)
        .context("reading the token from standard input")?;
    Ok(token.trim().to_owned())
}

pub fn decode(args: DecodeArgs) -> anyhow::Result<ExitCode> {
    let token = read_token(&args.token)?;
    let decoded = match danger_decode_unverified(&token) {
        Ok(decoded) => decoded,
        Err(error) => {
            println!("{}", error.code());
            eprintln!("gatehouse: cannot decode: {error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let now = SystemClock.now_unix();
    let expiry = decoded
        .claims
        .get("exp")
        .and_then(Value::as_u64)
        .map_or_else(
            || "no exp claim".to_owned(),
            |exp| expiry_in_words(exp, now),
        );
    let out = json!({"header": decoded.header, "claims": decoded.claims, "expiry": expiry});
    // Anyone's token: its strings must not drive the terminal or reorder what is read.
    println!(
        "{}",
        crate::terminal::json_for_terminal(&serde_json::to_string_pretty(&out)?)
    );
    eprintln!("note: decoded only; the signature was not checked (use `gatehouse verify`)");
    Ok(ExitCode::SUCCESS)
}

pub async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let token = read_token(&args.token)?;
    let profile = IssuerProfile::parse(&args.issuer, args.jwks.as_deref())?
        .with_audiences(args.audiences.iter().cloned());
    let verifier = Verifier::builder()
        .profile(profile)
        .token_cache_capacity(0)
        .build()
        .context("building the verifier (name an --audience?)")?;
    let now = SystemClock.now_unix();
    match verifier.verify(&token, now).await {
        Ok(identity) => {
            let out = json!({
                "profile": identity.profile(),
                "claims": identity.claims().as_map(),
                "expiry": expiry_in_words(identity.expires_at(), now),
            });
            // Verified is not harmless: the issuer's users choose their names.
            println!(
                "{}",
                crate::terminal::json_for_terminal(&serde_json::to_string_pretty(&out)?)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            println!("{}", error.code());
            eprintln!("gatehouse: token refused: {error}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// "expires in 59 minutes", "expired 2 hours ago".
pub fn expiry_in_words(exp: u64, now: u64) -> String {
    if exp > now {
        format!("expires in {}", duration_in_words(exp - now))
    } else if exp == now {
        "expires now".to_owned()
    } else {
        format!("expired {} ago", duration_in_words(now - exp))
    }
}

fn duration_in_words(secs: u64) -> String {
    let (n, unit) = match secs {
        0..60 => (secs, "second"),
        60..3600 => (secs / 60, "minute"),
        3600..86400 => (secs / 3600, "hour"),
        _ => (secs / 86400, "day"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_words() {
        assert_eq!(expiry_in_words(1060, 1000), "expires in 1 minute");
        assert_eq!(expiry_in_words(1000 + 3599, 1000), "expires in 59 minutes");
        assert_eq!(expiry_in_words(1000, 1001), "expired 1 second ago");
        assert_eq!(expiry_in_words(1000, 1000 + 7200), "expired 2 hours ago");
        assert_eq!(expiry_in_words(1000, 1000), "expires now");
    }
}
