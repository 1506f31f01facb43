//! `gatehouse decode` and `gatehouse verify`: look inside a token, or verify it.

use clap::Args;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// The token (compact JWS).
    pub token: String,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The token (compact JWS).
    pub token: String,
}

pub fn decode(_args: DecodeArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("decode is not implemented yet")
}

pub async fn verify(_args: VerifyArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("verify is not implemented yet")
}
