//! Signing keys and their rotation, and the documents that publish them.
//!
//! A ring (Google's `accounts.google.com` keys, or Firebase's `securetoken` keys) is a
//! sequence of RS256 keys, generation 0, 1, 2, ... Key `g` signs from its `signs_from` until
//! key `g+1`'s `signs_from`. The schedule guarantees what caching verifiers need:
//! - a new key is created (and so published) at least `max_age` before it signs, so every
//!   cached key document already holds it when the first token it signs arrives;
//! - a retired key stays published until `token_lifetime` (+ leeway) after its successor
//!   took over, so every token it signed can still be verified.
//!
//! Several emulator processes on one database agree: generations are unique per ring, the
//! insert of a generation that already exists does nothing, and each process reloads.

use crate::error::IdpError;
use crate::util::{hex, random_bytes, sha256};
use gatehouse_store::{Store, Value};
use gatehouse_verify::{Algorithm, KeySet, PublicKey, SigningKey};
use parking_lot::RwLock;
use serde_json::{Map, Value as Json, json};
use std::sync::Arc;

/// Extra time a retired key stays published beyond its last token's expiry (clock skew of
/// verifiers).
pub const RETIRE_LEEWAY: i64 = 300;

/// The two rings the emulator keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingName {
    /// `accounts.google.com` ID tokens (users and service accounts).
    Google,
    /// Firebase / Identity Platform ID tokens (`securetoken.google.com/PROJECT`).
    SecureToken,
}

impl RingName {
    pub fn as_str(self) -> &'static str {
        match self {
            RingName::Google => "google",
            RingName::SecureToken => "securetoken",
        }
    }
    fn common_name(self) -> &'static str {
        match self {
            RingName::Google => "accounts.google.com",
            RingName::SecureToken => "securetoken.system.gserviceaccount.com",
        }
    }
}

/// Timing of a ring, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub max_age: i64,
    pub rotation: i64,
    pub token_lifetime: i64,
}

/// A key's place in the schedule (no key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTimes {
    pub generation: i64,
    pub kid: String,
    pub created_at: i64,
    pub signs_from: i64,
}

impl Schedule {
    /// The key that signs at `now`: the newest whose `signs_from` has come. `keys` in any
    /// order.
    pub fn signer<'a>(&self, keys: &'a [KeyTimes], now: i64) -> Option<&'a KeyTimes> {
        keys.iter()
            .filter(|k| k.signs_from <= now)
            .max_by_key(|k| (k.signs_from, k.generation))
    }

    /// Whether `key` belongs in the published documents at `now`.
    pub fn published(&self, keys: &[KeyTimes], key: &KeyTimes, now: i64) -> bool {
        if key.created_at > now {
            return false;
        }
        if key.signs_from > now {
            return true; // upcoming: published ahead of signing
        }
        // The first key after it that has started signing retired it.
        let successor_start = keys
            .iter()
            .filter(|k| k.signs_from > key.signs_from && k.signs_from <= now)
            .map(|k| k.signs_from)
            .min();
        match successor_start {
            None => true, // still the signer
            Some(retired_at) => now < retired_at + self.token_lifetime + RETIRE_LEEWAY,
        }
    }

    /// Seconds between reloads of the keys on every replica: short enough that a key one
    /// replica creates is published by all well within its max-age; at most every half
    /// [`MAINTENANCE_MARGIN`], which [`Schedule::due`] keeps in hand.
    pub fn reload_interval(&self) -> i64 {
        (self.max_age / 10).clamp(1, MAINTENANCE_MARGIN / 2)
    }

    /// How long before it signs a new key must exist: every replica reloads it within two
    /// reload intervals, and every key document cached before that expires within
    /// `max_age`.
    pub fn lead(&self) -> i64 {
        self.max_age + 2 * self.reload_interval()
    }

    /// The key an explicit rotation asked for at `now` creates: `(generation, signs_from)`,
    /// or `None` while a successor is already waiting to sign (asking twice rotates once).
    ///
    /// It signs [`Schedule::lead`] from now: publication before use, as for a scheduled
    /// rotation.
    pub fn forced(&self, keys: &[KeyTimes], now: i64) -> Option<(i64, i64)> {
        match keys.iter().max_by_key(|k| k.generation) {
            None => Some((0, now)),
            Some(newest) if newest.signs_from > now => None,
            Some(newest) => Some((newest.generation + 1, now + self.lead())),
        }
    }

    /// The key to create at `now`, if one is due: `(generation, signs_from)`.
    ///
    /// The first key signs at once (no document has been cached yet). Afterwards the next
    /// key is created `max_age` (+ a minute of margin for the maintenance interval) before
    /// the current one's rotation is due, and never signs before `now +` [`Schedule::lead`].
    pub fn due(&self, keys: &[KeyTimes], now: i64) -> Option<(i64, i64)> {
        let Some(newest) = keys.iter().max_by_key(|k| k.generation) else {
            return Some((0, now));
        };
        let rotate_at = newest.signs_from + self.rotation;
        if now + self.max_age + MAINTENANCE_MARGIN >= rotate_at && newest.signs_from <= now {
            Some((newest.generation + 1, rotate_at.max(now + self.lead())))
        } else {
            None
        }
    }
}

/// [`Schedule::due`] or [`Schedule::forced`]: the key to create at a time, if any.
type KeyDue = fn(&Schedule, &[KeyTimes], i64) -> Option<(i64, i64)>;

/// How often [`KeyRing::maintain`] should run, at most; also the margin the schedule keeps.
pub const MAINTENANCE_MARGIN: i64 = 60;

/// One published key with its documents' entries.
#[derive(Debug, Clone)]
struct Published {
    kid: String,
    jwk: Json,
    cert_pem: String,
    public: PublicKey,
}

/// What requests read: the signer and ready-made documents. Replaced whole on change.
pub struct Snapshot {
    signer: Arc<SigningKey>,
    published: Vec<Published>,
    /// `{"keys":[...]}` bytes.
    pub jwks: Arc<[u8]>,
    /// `{kid: PEM}` bytes.
    pub pem_map: Arc<[u8]>,
    keyset: Arc<KeySet>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("signer", &self.signer.kid())
            .field(
                "published",
                &self
                    .published
                    .iter()
                    .map(|p| p.kid.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    pub fn signer(&self) -> &SigningKey {
        &self.signer
    }
    pub fn keyset(&self) -> Arc<KeySet> {
        self.keyset.clone()
    }
    pub fn kids(&self) -> Vec<String> {
        self.published.iter().map(|p| p.kid.clone()).collect()
    }
    /// The published public keys.
    pub fn public_keys(&self) -> Vec<PublicKey> {
        self.published.iter().map(|p| p.public.clone()).collect()
    }
}

/// A ring backed by the store.
pub struct KeyRing {
    name: RingName,
    schedule: Schedule,
    store: Store,
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    /// Keys loaded from the store, by generation.
    loaded: RwLock<Vec<(KeyTimes, Arc<SigningKey>, String)>>,
    /// Serializes maintenance and explicit rotations, so a slower run cannot install a
    /// snapshot older than a faster one's.
    busy: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("name", &self.name)
            .field("schedule", &self.schedule)
            .finish_non_exhaustive()
    }
}

/// A fresh kid: 40 hex digits, like Google's.
fn new_kid() -> String {
    hex(&sha256(&random_bytes(32))[..20])
}

/// A self-signed X.509 certificate for `key`, as Google publishes in its PEM maps.
pub fn self_signed_cert(
    key: &SigningKey,
    common_name: &str,
    not_before: i64,
    not_after: i64,
) -> Result<String, IdpError> {
    let der = key.to_pkcs8_der()?;
    let pair = rcgen::KeyPair::try_from(der.as_slice())
        .map_err(|e| IdpError::Certificate(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| IdpError::Certificate(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let (y, m, d) = crate::util::civil_from_days(not_before.div_euclid(86_400));
    params.not_before = rcgen::date_time_ymd(y as i32, m as u8, d as u8);
    let (y, m, d) = crate::util::civil_from_days(not_after.div_euclid(86_400) + 1);
    params.not_after = rcgen::date_time_ymd(y as i32, m as u8, d as u8);
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&random_bytes(16)));
    let cert = params
        .self_signed(&pair)
        .map_err(|e| IdpError::Certificate(e.to_string()))?;
    Ok(cert.pem())
}

impl KeyRing {
    pub fn new(name: RingName, schedule: Schedule, store: Store) -> KeyRing {
        KeyRing {
            name,
            schedule,
            store,
            snapshot: RwLock::new(None),
            loaded: RwLock::new(Vec::new()),
            busy: tokio::sync::Mutex::new(()),
        }
    }

    pub fn name(&self) -> RingName {
        self.name
    }

    pub fn schedule(&self) -> Schedule {
        self.schedule
    }

    /// The current snapshot. `None` only before the first [`KeyRing::maintain`].
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.read().clone()
    }

    /// Creates a key if one is due, reloads keys from the store, and rebuilds the snapshot
    /// for `now`. Run at start and then at least every [`MAINTENANCE_MARGIN`] seconds.
    pub async fn maintain(&self, now: i64) -> Result<(), IdpError> {
        self.create_if(now, Schedule::due).await?;
        Ok(())
    }

    /// Rotates now: creates a successor that signs from [`Schedule::forced`]'s time (unless
    /// one is already waiting) and answers the ring's keys. Replicas agree through the
    /// store: whichever inserts the generation first wins, the others load that key.
    pub async fn rotate(&self, now: i64) -> Result<Vec<KeyTimes>, IdpError> {
        self.create_if(now, Schedule::forced).await
    }

    /// The loaded keys' times, oldest first.
    pub fn key_times(&self) -> Vec<KeyTimes> {
        self.loaded.read().iter().map(|k| k.0.clone()).collect()
    }

    async fn create_if(&self, now: i64, wanted: KeyDue) -> Result<Vec<KeyTimes>, IdpError> {
        let _busy = self.busy.lock().await;
        self.reload().await?;
        if let Some((generation, signs_from)) = wanted(&self.schedule, &self.key_times(), now) {
            self.create(generation, signs_from, now).await?;
            self.reload().await?;
        }
        self.rebuild(now)?;
        Ok(self.key_times())
    }

    async fn create(&self, generation: i64, signs_from: i64, now: i64) -> Result<(), IdpError> {
        let kid = new_kid();
        let key = SigningKey::generate_rs256(kid.clone())?;
        let cert = self_signed_cert(
            &key,
            self.name.common_name(),
            now - 86_400,
            signs_from + self.schedule.rotation * 4 + self.schedule.token_lifetime,
        )?;
        let der = key.to_pkcs8_der()?;
        // Another replica may have created this generation first; then ours is dropped.
        let inserted = self
            .store
            .execute(
                "INSERT INTO idp_keys (ring, generation, kid, created_at, signs_from, pkcs8, cert_pem)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (ring, generation) DO NOTHING",
                &[
                    self.name.as_str().into(),
                    generation.into(),
                    kid.clone().into(),
                    now.into(),
                    signs_from.into(),
                    Value::Bytes(der),
                    cert.into(),
                ],
            )
            .await?;
        if inserted == 1 {
            tracing::info!(
                ring = self.name.as_str(),
                kid,
                generation,
                signs_from,
                "created a signing key"
            );
        }
        Ok(())
    }

    async fn reload(&self) -> Result<(), IdpError> {
        let rows = self
            .store
            .fetch_all(
                "SELECT generation, kid, created_at, signs_from, pkcs8, cert_pem FROM idp_keys
                 WHERE ring = $1 ORDER BY generation",
                &[self.name.as_str().into()],
            )
            .await?;
        let known: Vec<i64> = self.loaded.read().iter().map(|k| k.0.generation).collect();
        let mut added = Vec::new();
        for row in rows {
            let generation = row.int(0)?;
            if known.contains(&generation) {
                continue;
            }
            let kid = row.text(1)?;
            let key = SigningKey::from_pkcs8_der(kid.clone(), Algorithm::RS256, &row.bytes(4)?)?;
            added.push((
                KeyTimes {
                    generation,
                    kid,
                    created_at: row.int(2)?,
                    signs_from: row.int(3)?,
                },
                Arc::new(key),
                row.text(5)?,
            ));
        }
        if !added.is_empty() {
            let mut loaded = self.loaded.write();
            loaded.extend(added);
            loaded.sort_by_key(|k| k.0.generation);
        }
        Ok(())
    }

    fn rebuild(&self, now: i64) -> Result<(), IdpError> {
        let loaded = self.loaded.read().clone();
        let times: Vec<KeyTimes> = loaded.iter().map(|k| k.0.clone()).collect();
        let Some(signer_times) = self.schedule.signer(&times, now) else {
            return Err(IdpError::Corrupt("no signing key"));
        };
        let mut signer = None;
        let mut published = Vec::new();
        for (t, key, cert) in &loaded {
            if t.generation == signer_times.generation {
                signer = Some(key.clone());
            }
            if self.schedule.published(&times, t, now) {
                published.push(Published {
                    kid: t.kid.clone(),
                    jwk: key.public_jwk()?,
                    cert_pem: cert.clone(),
                    public: key.public_key()?,
                });
            }
        }
        let signer = signer.ok_or(IdpError::Corrupt("signer not loaded"))?;
        let jwks = json!({"keys": published.iter().map(|p| p.jwk.clone()).collect::<Vec<_>>()});
        let mut pem = Map::new();
        for p in &published {
            pem.insert(p.kid.clone(), Json::String(p.cert_pem.clone()));
        }
        let keyset = KeySet::new(published.iter().map(|p| p.public.clone()));
        let snapshot = Snapshot {
            signer,
            jwks: serde_json::to_vec_pretty(&jwks)
                .map_err(|_| IdpError::Corrupt("jwks"))?
                .into(),
            pem_map: serde_json::to_vec_pretty(&Json::Object(pem))
                .map_err(|_| IdpError::Corrupt("pem map"))?
                .into(),
            published,
            keyset: Arc::new(keyset),
        };
        *self.snapshot.write() = Some(Arc::new(snapshot));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Schedule = Schedule {
        max_age: 3600,
        rotation: 86_400,
        token_lifetime: 3600,
    };

    fn key(generation: i64, created_at: i64, signs_from: i64) -> KeyTimes {
        KeyTimes {
            generation,
            kid: format!("k{generation}"),
            created_at,
            signs_from,
        }
    }

    #[test]
    fn first_key_signs_at_once() {
        assert_eq!(S.due(&[], 1000), Some((0, 1000)));
    }

    #[test]
    fn next_key_is_published_max_age_before_it_signs() {
        let k0 = key(0, 0, 0);
        // Not yet due.
        assert_eq!(S.due(std::slice::from_ref(&k0), 1000), None);
        // Due once now + max_age + margin reaches the rotation time.
        let t = 86_400 - 3600 - MAINTENANCE_MARGIN;
        assert_eq!(S.due(std::slice::from_ref(&k0), t - 1), None);
        let (g, from) = S.due(std::slice::from_ref(&k0), t).unwrap();
        assert_eq!((g, from), (1, 86_400));
        assert!(from - t >= S.max_age);
        // Late maintenance (process was down): the new key still waits max_age, and the
        // time other replicas take to load it.
        let (_, from) = S.due(std::slice::from_ref(&k0), 200_000).unwrap();
        assert_eq!(from, 200_000 + 3600 + 2 * 30);
        // The old key keeps signing meanwhile.
        let k1 = key(1, 200_000, 203_600);
        let keys = [k0.clone(), k1.clone()];
        assert_eq!(S.signer(&keys, 200_001).unwrap().kid, "k0");
        assert!(S.published(&keys, &k1, 200_001));
        assert_eq!(S.signer(&keys, 203_600).unwrap().kid, "k1");
        // Nothing more is due while the newest key has not started.
        assert_eq!(S.due(&keys, 203_000), None);
    }

    #[test]
    fn a_forced_rotation_signs_after_the_lead_and_only_once() {
        let short = Schedule {
            max_age: 30,
            rotation: 600,
            token_lifetime: 3600,
        };
        assert_eq!(short.reload_interval(), 3);
        assert_eq!(S.reload_interval(), MAINTENANCE_MARGIN / 2);
        assert_eq!(
            Schedule {
                max_age: 1,
                ..short
            }
            .reload_interval(),
            1
        );
        let k0 = key(0, 0, 0);
        let (g, from) = short.forced(std::slice::from_ref(&k0), 100).unwrap();
        assert_eq!((g, from), (1, 100 + 30 + 2 * 3));
        // Asked again (here or on another replica) while the successor waits: nothing new.
        let keys = [k0, key(g, 100, from)];
        assert_eq!(short.forced(&keys, 101), None);
        assert_eq!(short.forced(&keys, from - 1), None);
        assert_eq!(short.signer(&keys, from - 1).unwrap().kid, "k0");
        assert!(short.published(&keys, &keys[1], 100));
        // Once it signs, the next request rotates again.
        assert_eq!(short.forced(&keys, from), Some((2, from + short.lead())));
        // The scheduled rotation counts from the forced key.
        assert_eq!(short.due(&keys, from + 1), None);
        assert!(
            short
                .due(&keys, from + 600 - 30 - MAINTENANCE_MARGIN)
                .is_some()
        );
    }

    #[test]
    fn retired_key_stays_published_until_its_last_token_expires() {
        let keys = [key(0, 0, 0), key(1, 80_000, 86_400)];
        let retired = &keys[0];
        assert!(S.published(&keys, retired, 86_399));
        assert!(S.published(&keys, retired, 86_400));
        let last_exp = 86_399 + S.token_lifetime;
        assert!(S.published(&keys, retired, last_exp));
        assert!(S.published(&keys, retired, 86_400 + 3600 + RETIRE_LEEWAY - 1));
        assert!(!S.published(&keys, retired, 86_400 + 3600 + RETIRE_LEEWAY));
        // The signer is always published; a key not yet created is not.
        assert!(S.published(&keys, &keys[1], 200_000));
        assert!(!S.published(&keys, &keys[1], 79_999));
    }
}
