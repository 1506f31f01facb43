//! The idp-sql voting app of seed 001 (CATS v DOGS), in Rust: users sign in through a
//! Google-style identity provider (the Gatehouse emulator by default), and each vote is
//! accepted only with a verified ID token, then written with the voter's uid and the
//! server's time to SQLite (default) or PostgreSQL. Seed 000's secure endpoint and an
//! authenticated aggregate query live here too.
//!
//! - [`votes`]: the rules (teams, leader message) and the `pet_votes` queries;
//! - [`database`]: where the votes live (`--database`, Cloud SQL credentials, SQLite);
//! - [`http`]: `fn app(state) -> Router` and its thin handlers;
//! - [`page`]: the HTML and the assets compiled into the binary;
//! - [`server`]: the app on a socket, with timeouts, a connection cap and a bounded stop;
//! - [`config`]: sign-in and trust settings; [`time`]: the injected clock.

pub mod config;
pub mod database;
pub mod http;
pub mod page;
pub mod server;
pub mod time;
pub mod votes;

pub use config::{FirebaseClient, SignInConfig, TrustConfig};
pub use database::{CloudSqlCredentials, DatabaseTarget, DatabaseUrl};
pub use http::{AppState, app};
pub use time::{Clock, ManualClock, SystemClock, Timestamp};
pub use votes::{Tally, Team, VoteStore, VoteStoreError, leader_message};

use gatehouse_store::{Store, StoreError};

/// Opens the store `target` names, with the database enforcing the request budget
/// ([`votes::DATABASE_LIMITS`]), and creates or updates the tables.
pub async fn open_votes(target: &DatabaseTarget) -> Result<VoteStore, StoreError> {
    let store = match target {
        DatabaseTarget::Sqlite(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
                    path: dir.to_owned(),
                    source,
                })?;
            }
            Store::open_sqlite_file_with(path, votes::DATABASE_LIMITS).await?
        }
        DatabaseTarget::Url(url) => {
            Store::open_url_with(url.expose(), votes::DATABASE_LIMITS).await?
        }
    };
    VoteStore::open(store).await
}
