//! The emulator's shared state: settings, storage, key rings, the clock, and the small
//! in-memory caches the metadata server keeps.

use crate::accounts::{self, NewAccount};
use crate::config::IdpConfig;
use crate::db;
use crate::error::IdpError;
use crate::keys::{KeyRing, KeyTimes, RingName, Schedule, Snapshot};
use crate::oauth;
use crate::service_accounts;
use gatehouse_store::Store;
use gatehouse_verify::{Clock, SystemClock};
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Entries each metadata token cache may hold before it is cleared of expired entries (and
/// emptied if that is not enough).
pub const TOKEN_CACHE_ENTRIES: usize = 10_000;

/// Minted tokens reused until this long before they expire, as the real metadata server.
pub const REUSE_MARGIN: i64 = 300;

/// A small cache of minted tokens keyed by who and for what.
#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<String, (String, i64)>>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.entries.lock().len())
            .finish()
    }
}

impl TokenCache {
    /// A cached token for `key` that stays valid beyond `now + REUSE_MARGIN`.
    pub fn get(&self, key: &str, now: i64) -> Option<(String, i64)> {
        let entries = self.entries.lock();
        entries
            .get(key)
            .filter(|(_, exp)| *exp - REUSE_MARGIN > now)
            .cloned()
    }

    pub fn put(&self, key: String, token: String, exp: i64, now: i64) {
        let mut entries = self.entries.lock();
        if entries.len() >= TOKEN_CACHE_ENTRIES {
            entries.retain(|_, (_, e)| *e - REUSE_MARGIN > now);
            if entries.len() >= TOKEN_CACHE_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (token, exp));
    }
}

struct Inner {
    config: IdpConfig,
    store: Store,
    google: KeyRing,
    securetoken: KeyRing,
    clock: Arc<dyn Clock>,
    identity_tokens: TokenCache,
    access_tokens: TokenCache,
    /// Handed to every verifier built here: building a client per verifier costs
    /// milliseconds (TLS roots), and these verifiers never fetch (their keys are static).
    http: reqwest::Client,
}

/// Cheap to clone; handlers share one.
#[derive(Clone)]
pub struct IdpState(Arc<Inner>);

impl fmt::Debug for IdpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdpState")
            .field("base_url", &self.0.config.base_url)
            .field("project", &self.0.config.project_id)
            .field("store", &self.0.store)
            .finish_non_exhaustive()
    }
}

impl IdpState {
    /// Migrates the store, seeds what a first start needs (demo users, the default web
    /// client, the default service account) and loads or creates signing keys.
    pub async fn open(config: IdpConfig, store: Store) -> Result<IdpState, IdpError> {
        IdpState::open_with_clock(config, store, Arc::new(SystemClock)).await
    }

    pub async fn open_with_clock(
        config: IdpConfig,
        store: Store,
        clock: Arc<dyn Clock>,
    ) -> Result<IdpState, IdpError> {
        store.migrate(db::COMPONENT, db::MIGRATIONS).await?;
        let schedule = Schedule {
            max_age: config.key_max_age,
            rotation: config.key_rotation,
            token_lifetime: config.token_lifetime,
        };
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| IdpError::Verifier(e.to_string()))?;
        let state = IdpState(Arc::new(Inner {
            http,
            google: KeyRing::new(RingName::Google, schedule, store.clone()),
            securetoken: KeyRing::new(RingName::SecureToken, schedule, store.clone()),
            config,
            store,
            clock,
            identity_tokens: TokenCache::default(),
            access_tokens: TokenCache::default(),
        }));
        let now = state.now();
        state.maintain().await?;
        if state.0.config.seed_demo_users {
            for email in ["alice@example.com", "bob@example.com"] {
                let account = NewAccount {
                    email: email.into(),
                    ..Default::default()
                }
                .build(&state.0.config.base_url)
                .map_err(|_| IdpError::Corrupt("demo account"))?;
                accounts::upsert(&state.0.store, &account, now).await?;
            }
        }
        oauth::ensure_default_client(&state, now).await?;
        service_accounts::ensure(&state, &state.0.config.default_service_account.clone(), now)
            .await?;
        Ok(state)
    }

    pub fn config(&self) -> &IdpConfig {
        &self.0.config
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// Now, in Unix seconds, from the injected clock.
    pub fn now(&self) -> i64 {
        i64::try_from(self.0.clock.now_unix()).unwrap_or(i64::MAX)
    }

    pub fn ring(&self, name: RingName) -> &KeyRing {
        match name {
            RingName::Google => &self.0.google,
            RingName::SecureToken => &self.0.securetoken,
        }
    }

    pub fn snapshot(&self, name: RingName) -> Result<Arc<Snapshot>, IdpError> {
        self.ring(name)
            .snapshot()
            .ok_or(IdpError::Corrupt("no signing keys loaded"))
    }

    /// Signs `claims` with the ring's current key.
    pub fn sign<C: Serialize + ?Sized>(
        &self,
        ring: RingName,
        claims: &C,
    ) -> Result<String, IdpError> {
        Ok(self.snapshot(ring)?.signer().sign_jwt(claims)?)
    }

    /// A verifier builder for tokens checked against static keys (assertions, the
    /// emulator's own tokens): no token cache, the shared HTTP client.
    pub fn verifier_builder(&self) -> gatehouse_verify::verifier::VerifierBuilder {
        gatehouse_verify::Verifier::builder()
            .http_client(self.0.http.clone())
            .token_cache_capacity(0)
    }

    pub fn identity_tokens(&self) -> &TokenCache {
        &self.0.identity_tokens
    }

    pub fn access_tokens(&self) -> &TokenCache {
        &self.0.access_tokens
    }

    /// Key rotation and reload for both rings, and removal of expired bearer records.
    pub async fn maintain(&self) -> Result<(), IdpError> {
        let now = self.now();
        self.0.google.maintain(now).await?;
        self.0.securetoken.maintain(now).await?;
        self.0
            .store
            .execute(
                "DELETE FROM idp_access_tokens WHERE expires_at < $1",
                &[now.into()],
            )
            .await?;
        self.0
            .store
            .execute(
                "DELETE FROM idp_codes WHERE expires_at < $1",
                &[(now - 3600).into()],
            )
            .await?;
        Ok(())
    }

    /// Rotates both rings now (unless a successor already waits), as every replica sees
    /// through the store; answers each ring's keys.
    pub async fn rotate(&self) -> Result<[(RingName, Vec<KeyTimes>); 2], IdpError> {
        let now = self.now();
        Ok([
            (RingName::Google, self.0.google.rotate(now).await?),
            (RingName::SecureToken, self.0.securetoken.rotate(now).await?),
        ])
    }

    /// Runs [`IdpState::maintain`] every reload interval ([`Schedule::reload_interval`]:
    /// a tenth of the key max-age, between 1 and 30 s) until the task is dropped or
    /// aborted.
    pub fn spawn_maintenance(&self) -> tokio::task::JoinHandle<()> {
        let state = self.clone();
        let every = self.0.google.schedule().reload_interval().max(1) as u64;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(every));
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(error) = state.maintain().await {
                    tracing::warn!(%error, "key maintenance failed; will retry");
                }
            }
        })
    }
}
