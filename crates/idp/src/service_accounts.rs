//! Service accounts: the IAM-shaped key API (a Google-format key file whose `token_uri` is
//! this emulator), the jwt-bearer exchange of a service account's self-signed JWT, and the
//! ID / access tokens a service account gets (also used by the metadata server).
//!
//! The emulator keeps only the public half of each key it issues, as Google does; an
//! assertion verifies only against a key it issued to that same account.

use crate::error::IdpError;
use crate::keys::RingName;
use crate::oauth::{self, GOOGLE_ISSUER, GOOGLE_TOKEN_URL, OAuthError, Subject};
use crate::state::IdpState;
use crate::util::{b64std, numeric_id, random_hex, rfc3339, valid_email};
use gatehouse_store::{Statement, Value};
use gatehouse_verify::{Algorithm, IssuerProfile, KeySet, KeySource, PublicKey, SigningKey};
use serde_json::{Map, Value as Json, json};
use std::sync::Arc;

/// Largest assertion accepted (bytes).
pub const MAX_ASSERTION: usize = 16 * 1024;
/// Longest lifetime of an assertion (`exp - iat`), as Google.
pub const MAX_ASSERTION_LIFETIME: u64 = 3600;
/// Keys per service account, as IAM's limit.
pub const MAX_KEYS_PER_ACCOUNT: i64 = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub email: String,
    pub unique_id: String,
    pub project_id: String,
}

pub async fn get(state: &IdpState, email: &str) -> Result<Option<ServiceAccount>, IdpError> {
    let row = state
        .store()
        .fetch_optional(
            "SELECT email, unique_id, project_id FROM idp_service_accounts WHERE email = $1",
            &[email.to_ascii_lowercase().into()],
        )
        .await?;
    row.map(|r| {
        Ok(ServiceAccount {
            email: r.text(0)?,
            unique_id: r.text(1)?,
            project_id: r.text(2)?,
        })
    })
    .transpose()
}

/// The service account `email`, created on first use with a stable numeric id.
pub async fn ensure(state: &IdpState, email: &str, now: i64) -> Result<ServiceAccount, IdpError> {
    let email = email.to_ascii_lowercase();
    if let Some(sa) = get(state, &email).await? {
        return Ok(sa);
    }
    let unique_id = numeric_id(&format!("service-account:{email}"), 21);
    // `name@PROJECT.iam.gserviceaccount.com` names its project; others belong to ours.
    let project_id = email
        .split_once('@')
        .and_then(|(_, d)| d.strip_suffix(".iam.gserviceaccount.com"))
        .unwrap_or(&state.config().project_id)
        .to_owned();
    state
        .store()
        .execute(
            "INSERT INTO idp_service_accounts (email, unique_id, project_id, created_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            &[
                email.clone().into(),
                unique_id.into(),
                project_id.into(),
                now.into(),
            ],
        )
        .await?;
    get(state, &email)
        .await?
        .ok_or(IdpError::Corrupt("service account vanished"))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyApiError {
    #[error("invalid service account email")]
    BadEmail,
    #[error("this service account has the maximum number of keys ({MAX_KEYS_PER_ACCOUNT})")]
    TooManyKeys,
    #[error("this service account has no such key")]
    NoSuchKey,
}

/// `POST /v1/projects/-/serviceAccounts/EMAIL/keys`: a new key, answered as IAM does with
/// `privateKeyData` = base64 of the key file.
pub async fn create_key(
    state: &IdpState,
    email: &str,
    now: i64,
) -> Result<Result<Json, KeyApiError>, IdpError> {
    let email = email.trim().to_ascii_lowercase();
    if !valid_email(&email) {
        return Ok(Err(KeyApiError::BadEmail));
    }
    let sa = ensure(state, &email, now).await?;
    // Refused before the costly key generation; the insert below checks again, atomically.
    let count = state
        .store()
        .fetch_optional(
            "SELECT COUNT(*) FROM idp_sa_keys WHERE email = $1",
            &[sa.email.clone().into()],
        )
        .await?
        .map(|r| r.int(0))
        .transpose()?
        .unwrap_or(0);
    if count >= MAX_KEYS_PER_ACCOUNT {
        return Ok(Err(KeyApiError::TooManyKeys));
    }
    let key_id = random_hex(20);
    let key = SigningKey::generate_rs256(key_id.clone())?;
    let base = &state.config().base_url;
    let key_file = json!({
        "type": "service_account",
        "project_id": sa.project_id,
        "private_key_id": key_id,
        "private_key": key.to_pkcs8_pem()?,
        "client_email": sa.email,
        "client_id": sa.unique_id,
        "auth_uri": format!("{base}/o/oauth2/auth"),
        "token_uri": format!("{base}/token"),
        "auth_provider_x509_cert_url": format!("{base}/oauth2/v1/certs"),
        "client_x509_cert_url": format!("{base}/robot/v1/metadata/x509/{}", sa.email.replace('@', "%40")),
        "universe_domain": "googleapis.com",
    });
    let statements = [
        // Creations for one account take turns: the no-op update holds the account's row
        // until commit on PostgreSQL (SQLite's write lock already serialises the whole
        // transaction), so the count in the insert sees every key committed before it.
        Statement::new(
            "UPDATE idp_service_accounts SET email = email WHERE email = $1",
            vec![sa.email.clone().into()],
        ),
        Statement::new(
            "INSERT INTO idp_sa_keys (key_id, email, spki, created_at)
             SELECT $1, $2, $3, $4
             WHERE (SELECT COUNT(*) FROM idp_sa_keys WHERE email = $2) < $5",
            vec![
                key_id.clone().into(),
                sa.email.clone().into(),
                Value::Bytes(key.public_spki_der()?),
                now.into(),
                MAX_KEYS_PER_ACCOUNT.into(),
            ],
        ),
    ];
    if state
        .store()
        .transaction(&statements, true)
        .await?
        .is_none()
    {
        // The account exists (ensured above, never deleted): the insert found it full.
        return Ok(Err(KeyApiError::TooManyKeys));
    }
    let file = serde_json::to_vec_pretty(&key_file).map_err(|_| IdpError::Corrupt("key file"))?;
    Ok(Ok(json!({
        "name": format!("projects/{}/serviceAccounts/{}/keys/{}", sa.project_id, sa.email, key_id),
        "privateKeyType": "TYPE_GOOGLE_CREDENTIALS_FILE",
        "privateKeyData": b64std(&file),
        "validAfterTime": rfc3339(now),
        "validBeforeTime": "9999-12-31T23:59:59Z",
        "keyAlgorithm": "KEY_ALG_RSA_2048",
        "keyOrigin": "GOOGLE_PROVIDED",
        "keyType": "USER_MANAGED",
    })))
}

/// `DELETE /v1/projects/-/serviceAccounts/EMAIL/keys/KEY_ID`: assertions signed with the
/// key are refused from now on (tokens already minted with it live out their lifetime),
/// and it no longer counts toward the per-account limit.
pub async fn delete_key(
    state: &IdpState,
    email: &str,
    key_id: &str,
) -> Result<Result<(), KeyApiError>, IdpError> {
    let email = email.trim().to_ascii_lowercase();
    if !valid_email(&email) {
        return Ok(Err(KeyApiError::BadEmail));
    }
    let deleted = state
        .store()
        .execute(
            "DELETE FROM idp_sa_keys WHERE key_id = $1 AND email = $2",
            &[key_id.into(), email.into()],
        )
        .await?;
    Ok(if deleted == 0 {
        Err(KeyApiError::NoSuchKey)
    } else {
        Ok(())
    })
}

/// Claims of a service account's Google ID token for `audience`.
pub fn id_token_claims(
    sa: &ServiceAccount,
    audience: &str,
    now: i64,
    lifetime: i64,
) -> Map<String, Json> {
    let mut c = Map::new();
    c.insert("iss".into(), json!(GOOGLE_ISSUER));
    c.insert("aud".into(), json!(audience));
    c.insert("azp".into(), json!(sa.unique_id));
    c.insert("sub".into(), json!(sa.unique_id));
    c.insert("email".into(), json!(sa.email));
    c.insert("email_verified".into(), json!(true));
    c.insert("iat".into(), json!(now));
    c.insert("exp".into(), json!(now + lifetime));
    c
}

/// An audience a service account may ask an ID token for: non-empty, bounded, printable.
pub fn valid_audience(aud: &str) -> bool {
    !aud.is_empty() && aud.len() <= 2048 && !aud.chars().any(char::is_control)
}

/// The jwt-bearer grant: verifies the assertion against the public key the emulator issued
/// (found by `kid` = `private_key_id`, and only for its own account), then answers with an
/// ID token (`target_audience`) or an access token (`scope`).
pub async fn exchange_assertion(
    state: &IdpState,
    assertion: &str,
    now: i64,
) -> Result<Json, OAuthError> {
    if assertion.len() > MAX_ASSERTION {
        return Err(OAuthError::new("invalid_grant", "Invalid JWT: too large"));
    }
    // Peek at the header for the key id and at `iss` for the account: both only select
    // which issued key to try; the verifier then checks everything against that key.
    let peek = gatehouse_verify::unverified::danger_decode_unverified(assertion)
        .map_err(|_| OAuthError::new("invalid_grant", "Invalid JWT: malformed"))?;
    let kid = peek.header.get("kid").and_then(Json::as_str).unwrap_or("");
    let iss = peek.claims.get("iss").and_then(Json::as_str).unwrap_or("");
    if kid.is_empty() || kid.len() > 128 || iss.is_empty() || iss.len() > 254 {
        return Err(OAuthError::new("invalid_grant", "Invalid JWT Signature."));
    }
    let row = state
        .store()
        .fetch_optional(
            "SELECT k.spki, s.email, s.unique_id, s.project_id FROM idp_sa_keys k
             JOIN idp_service_accounts s ON s.email = k.email WHERE k.key_id = $1",
            &[kid.into()],
        )
        .await
        .map_err(IdpError::from)?;
    let Some(row) = row else {
        return Err(OAuthError::new("invalid_grant", "Invalid JWT Signature."));
    };
    let sa = ServiceAccount {
        email: row.text(1).map_err(IdpError::from)?,
        unique_id: row.text(2).map_err(IdpError::from)?,
        project_id: row.text(3).map_err(IdpError::from)?,
    };
    let public = PublicKey::from_spki_der(kid, &row.bytes(0).map_err(IdpError::from)?)
        .map_err(|_| IdpError::Corrupt("service account key"))?;
    if public.algorithm() != Algorithm::RS256 {
        return Err(IdpError::Corrupt("service account key type").into());
    }
    let profile = IssuerProfile::literal(
        &sa.email,
        KeySource::Static(Arc::new(KeySet::new([public]))),
    )
    .with_audiences([GOOGLE_TOKEN_URL.to_owned(), state.config().token_url()])
    .with_max_lifetime(MAX_ASSERTION_LIFETIME)
    .require_subject(false);
    let verifier = state
        .verifier_builder()
        .profile(profile)
        .build()
        .map_err(|e| IdpError::Verifier(e.to_string()))?;
    let now_u = u64::try_from(now).unwrap_or(0);
    let verified = verifier.verify(assertion, now_u).await.map_err(|e| {
        let description = match e.code() {
            "bad_signature" | "unknown_kid" | "bad_algorithm" | "missing_kid" => "Invalid JWT Signature.".to_owned(),
            "wrong_issuer" => "Invalid JWT: iss does not match the key's service account".to_owned(),
            "wrong_audience" => "Invalid JWT: aud must be the token endpoint".to_owned(),
            "expired" | "not_yet_valid" | "issued_in_future" | "lifetime_too_long" => {
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.".to_owned()
            }
            code => format!("Invalid JWT: {code}"),
        };
        OAuthError::new("invalid_grant", description)
    })?;
    let claims = verified.claims();
    if let Some(sub) = claims.get("sub") {
        // Domain-wide delegation is not emulated; `sub` may only name the account itself.
        if sub.as_str() != Some(sa.email.as_str()) {
            return Err(OAuthError::new(
                "unauthorized_client",
                "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.",
            ));
        }
    }
    let lifetime = state.config().token_lifetime;
    let target = claims.get("target_audience").and_then(Json::as_str);
    let scope = claims.get("scope").and_then(Json::as_str);
    match (target, scope) {
        (Some(aud), _) if valid_audience(aud) => {
            let token = state.sign(RingName::Google, &id_token_claims(&sa, aud, now, lifetime))?;
            Ok(json!({"id_token": token}))
        }
        (None, Some(scope)) if !scope.trim().is_empty() && scope.len() <= 4096 => {
            let (token, stmt) = oauth::new_access_token(
                Subject::ServiceAccount,
                &sa.email,
                &sa.unique_id,
                scope,
                now + lifetime,
                None,
            );
            state
                .store()
                .transaction(&[stmt], false)
                .await
                .map_err(IdpError::from)?;
            Ok(json!({"access_token": token, "expires_in": lifetime - 1, "token_type": "Bearer"}))
        }
        _ => Err(OAuthError::new(
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        )),
    }
}

/// An ID token for the service account, minted or reused from the cache until five minutes
/// before it expires (the metadata server's behaviour).
pub async fn cached_id_token(
    state: &IdpState,
    email: &str,
    audience: &str,
    full: bool,
    now: i64,
) -> Result<String, IdpError> {
    // The cache is consulted before the database: a hit costs a map lookup.
    let key = format!("{}\n{}\n{}", email.to_ascii_lowercase(), full, audience);
    if let Some((token, _)) = state.identity_tokens().get(&key, now) {
        return Ok(token);
    }
    let sa = &ensure(state, email, now).await?;
    let lifetime = state.config().token_lifetime;
    let mut claims = id_token_claims(sa, audience, now, lifetime);
    if full {
        let c = state.config();
        claims.insert(
            "google".into(),
            json!({"compute_engine": {
                "instance_creation_timestamp": now - 3600,
                "instance_id": crate::metadata::instance_id(c),
                "instance_name": "gatehouse",
                "project_id": sa.project_id,
                "project_number": c.project_number.parse::<u64>().unwrap_or(0),
                "zone": c.zone,
            }}),
        );
    }
    let token = state.sign(RingName::Google, &claims)?;
    state
        .identity_tokens()
        .put(key, token.clone(), now + lifetime, now);
    Ok(token)
}

/// An access token for the service account (metadata `.../token`), cached the same way.
/// Returns the token and its remaining lifetime.
pub async fn cached_access_token(
    state: &IdpState,
    email: &str,
    scopes: &str,
    now: i64,
) -> Result<(String, i64), IdpError> {
    let key = format!("{}\n{}", email.to_ascii_lowercase(), scopes);
    if let Some((token, exp)) = state.access_tokens().get(&key, now) {
        // Unlike an ID token, an access token can be revoked (`/revoke`, on any replica):
        // a hit is handed out only while its record still stands, one indexed lookup.
        if oauth::lookup_access_token(state, &token, now)
            .await?
            .is_some()
        {
            return Ok((token, exp - now));
        }
    }
    let sa = &ensure(state, email, now).await?;
    let lifetime = state.config().token_lifetime;
    let (token, stmt) = oauth::new_access_token(
        Subject::ServiceAccount,
        &sa.email,
        &sa.unique_id,
        scopes,
        now + lifetime,
        None,
    );
    state.store().transaction(&[stmt], false).await?;
    state
        .access_tokens()
        .put(key, token.clone(), now + lifetime, now);
    Ok((token, lifetime))
}
