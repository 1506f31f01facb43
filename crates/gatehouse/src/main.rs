//! The `gatehouse` binary: argument parsing and wiring of the parts, nothing else.
//!
//! Each subcommand's arguments and `run` live in a module named for the part it drives;
//! this file only lists them (DESIGN §2 is the contract).

mod client;
mod idp;
mod inspect;
mod logging;
mod private_files;
mod proxy;
mod s2s;
mod terminal;
mod up;
mod vote;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

// jemalloc, not glibc's malloc: a proxied request's larger blocks (its future, ~5 KiB; the
// upstream answer's read buffer, 4 KiB; the upstream request head) are past glibc's
// per-thread cache and take its slow path each time; jemalloc's thread caches hold them.
// Counted by bench/gateway/instructions: 3.4% fewer instructions a request; peak RSS
// holding 1,000 busy connections 41-46 MiB against glibc's 40-41 (bench/README.md, Gateway).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The identity-aware gateway: Cloud Run's invoker check and IAP's signed identity in
    /// front of any HTTP service.
    Proxy(proxy::ProxyArgs),
    /// Print a token's header and claims, with its expiry in words (verifies nothing).
    Decode(inspect::DecodeArgs),
    /// Verify a token: exit 0 and print its claims, or print the reason code and exit 1.
    Verify(inspect::VerifyArgs),
    /// Print an ID token for an audience, from the metadata server, a service-account key
    /// file, an emulator user, or (no flag) the environment's credentials.
    Token(client::TokenArgs),
    /// Call a URL with an ID token for its origin (curl with a token); prints the body,
    /// exits non-zero on 4xx/5xx.
    Call(client::CallArgs),
    /// The idp-sql voting app (CATS v DOGS): sign in, vote with a verified ID token.
    Vote(vote::VoteArgs),
    /// The whole system on one machine: emulator, gateway and the voting app, with a banner.
    Up(up::UpArgs),
    /// The Google identity emulator: sign-in, tokens, metadata server, service-account keys,
    /// Identity Toolkit (unmodified official clients work by changing only a host).
    Idp(idp::IdpArgs),
    /// Service-account keys: `keys create-sa-key SA_EMAIL` prints a Google-format key file,
    /// `keys delete-sa-key SA_EMAIL KEY_ID` deletes one.
    Keys(idp::KeysArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("gatehouse: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Proxy(args) => proxy::run(args).await,
            Command::Decode(args) => inspect::decode(args),
            Command::Verify(args) => inspect::verify(args).await,
            Command::Token(args) => client::token(args).await,
            Command::Call(args) => client::call(args).await,
            Command::Vote(args) => vote::run(args).await,
            Command::Up(args) => up::run(args).await,
            Command::Idp(args) => idp::run(args).await,
            Command::Keys(args) => idp::keys(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            // Errors quote servers, files and tokens: nothing in them may drive the terminal.
            let shown = terminal::escape_controls_keep_lines(&format!("{error:#}"));
            eprintln!("gatehouse: {shown}");
            ExitCode::FAILURE
        }
    }
}
