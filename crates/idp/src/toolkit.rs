//! The Identity Toolkit subset the Firebase SDKs use (as the Firebase Auth emulator exposes
//! it): email/password accounts, Google sign-in through this emulator's own ID tokens,
//! account lookup/update/delete, and token refresh. Firebase ID tokens are really signed,
//! with the production claim shape. Passwords are hashed with argon2.

use crate::error::IdpError;
use crate::keys::RingName;
use crate::oauth::{self, Params};
use crate::state::IdpState;
use crate::util::{random_token, rfc3339, secret_hash, valid_email};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use gatehouse_store::{Row, Statement, Value};
use gatehouse_verify::{IssuerProfile, KeySource, Verifier};
use serde_json::{Map, Value as Json, json};
use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Semaphore;

pub const MAX_PASSWORD: usize = 4096;
pub const MIN_PASSWORD: usize = 6;
pub const MAX_DISPLAY_NAME: usize = 256;
pub const MAX_PHOTO_URL: usize = 2048;

/// An Identity Toolkit error: HTTP status and `message` (`CODE` or `CODE : detail`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolkitError {
    pub status: u16,
    pub message: String,
}

impl ToolkitError {
    pub fn new(message: impl Into<String>) -> ToolkitError {
        ToolkitError {
            status: 400,
            message: message.into(),
        }
    }
    pub fn body(&self) -> Json {
        json!({"error": {
            "code": self.status,
            "message": self.message,
            "errors": [{"message": self.message, "reason": "invalid", "domain": "global"}],
        }})
    }
}

impl From<IdpError> for ToolkitError {
    fn from(error: IdpError) -> Self {
        tracing::error!(%error, "internal error");
        ToolkitError {
            status: 500,
            message: "INTERNAL_ERROR".into(),
        }
    }
}

impl From<gatehouse_store::StoreError> for ToolkitError {
    fn from(error: gatehouse_store::StoreError) -> Self {
        IdpError::from(error).into()
    }
}

/// Who is calling: an end user (API key) or the Admin SDK (`Authorization: Bearer owner`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    User,
    Admin,
}

impl Caller {
    /// The Admin SDKs in emulator mode send `Authorization: Bearer owner`. They run on
    /// servers and send no `Origin`; a request with one comes from a web page, which CORS
    /// lets any site send, so it is never Admin. It is then a plain user call, as with any
    /// bearer other than `owner`: admin-only requests fail as unauthenticated ones do.
    pub fn from_headers(headers: &http::HeaderMap) -> Caller {
        if headers.contains_key(http::header::ORIGIN) {
            return Caller::User;
        }
        let owner = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .is_some_and(|(scheme, token)| {
                scheme.eq_ignore_ascii_case("bearer") && token.trim() == "owner"
            });
        if owner { Caller::Admin } else { Caller::User }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct FbUser {
    pub project: String,
    pub uid: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub display_name: Option<String>,
    pub photo_url: Option<String>,
    password_hash: Option<String>,
    pub google_sub: Option<String>,
    pub google_email: Option<String>,
    pub created_at: i64,
    pub last_login_at: i64,
    pub password_updated_at: Option<i64>,
    pub valid_since: i64,
}

impl std::fmt::Debug for FbUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FbUser")
            .field("project", &self.project)
            .field("uid", &self.uid)
            .field("email", &self.email)
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "<hidden>"),
            )
            .finish_non_exhaustive()
    }
}

const COLUMNS: &str = "project, uid, email, email_verified, display_name, photo_url, password_hash, google_sub, google_email, created_at, last_login_at, password_updated_at, valid_since";

impl FbUser {
    fn from_row(r: &Row) -> Result<FbUser, IdpError> {
        Ok(FbUser {
            project: r.text(0)?,
            uid: r.text(1)?,
            email: r.opt_text(2)?,
            email_verified: r.bool(3)?,
            display_name: r.opt_text(4)?,
            photo_url: r.opt_text(5)?,
            password_hash: r.opt_text(6)?,
            google_sub: r.opt_text(7)?,
            google_email: r.opt_text(8)?,
            created_at: r.int(9)?,
            last_login_at: r.int(10)?,
            password_updated_at: r.opt_int(11)?,
            valid_since: r.int(12)?,
        })
    }

    fn provider_infos(&self) -> Vec<Json> {
        let mut v = Vec::new();
        if let (Some(email), true) = (&self.email, self.password_hash.is_some()) {
            let mut p = json!({"providerId": "password", "email": email, "federatedId": email, "rawId": email});
            if let Some(n) = &self.display_name {
                p["displayName"] = json!(n);
            }
            if let Some(u) = &self.photo_url {
                p["photoUrl"] = json!(u);
            }
            v.push(p);
        }
        if let Some(sub) = &self.google_sub {
            let mut p = json!({"providerId": "google.com", "rawId": sub, "federatedId": sub});
            if let Some(e) = &self.google_email {
                p["email"] = json!(e);
            }
            if let Some(n) = &self.display_name {
                p["displayName"] = json!(n);
            }
            if let Some(u) = &self.photo_url {
                p["photoUrl"] = json!(u);
            }
            v.push(p);
        }
        v
    }

    /// The user as `accounts:lookup` returns it.
    pub fn to_json(&self) -> Json {
        let mut m = Map::new();
        m.insert("localId".into(), json!(self.uid));
        if let Some(e) = &self.email {
            m.insert("email".into(), json!(e));
        }
        m.insert("emailVerified".into(), json!(self.email_verified));
        if let Some(n) = &self.display_name {
            m.insert("displayName".into(), json!(n));
        }
        if let Some(u) = &self.photo_url {
            m.insert("photoUrl".into(), json!(u));
        }
        if self.password_hash.is_some() {
            // What the real service shows instead of the hash.
            m.insert("passwordHash".into(), json!("UkVEQUNURUQ="));
        }
        if let Some(t) = self.password_updated_at {
            m.insert("passwordUpdatedAt".into(), json!(t * 1000));
        }
        m.insert(
            "providerUserInfo".into(),
            Json::Array(self.provider_infos()),
        );
        m.insert("validSince".into(), json!(self.valid_since.to_string()));
        m.insert(
            "lastLoginAt".into(),
            json!((self.last_login_at * 1000).to_string()),
        );
        m.insert(
            "createdAt".into(),
            json!((self.created_at * 1000).to_string()),
        );
        m.insert("lastRefreshAt".into(), json!(rfc3339(self.last_login_at)));
        Json::Object(m)
    }
}

/// The one column a Firebase user is looked up by (a fixed set: the SQL is built from these
/// names only, never from input).
#[derive(Clone, Copy)]
enum UserKey {
    Uid,
    Email,
    GoogleSub,
}

async fn user_where(
    state: &IdpState,
    project: &str,
    key: UserKey,
    value: &str,
) -> Result<Option<FbUser>, IdpError> {
    let column = match key {
        UserKey::Uid => "uid",
        UserKey::Email => "email",
        UserKey::GoogleSub => "google_sub",
    };
    let row = state
        .store()
        .fetch_optional(
            &format!("SELECT {COLUMNS} FROM idp_fb_users WHERE project = $1 AND {column} = $2"),
            &[project.into(), value.into()],
        )
        .await?;
    row.as_ref().map(FbUser::from_row).transpose()
}

async fn user_by_uid(
    state: &IdpState,
    project: &str,
    uid: &str,
) -> Result<Option<FbUser>, IdpError> {
    user_where(state, project, UserKey::Uid, uid).await
}

async fn user_by_email(
    state: &IdpState,
    project: &str,
    email: &str,
) -> Result<Option<FbUser>, IdpError> {
    user_where(state, project, UserKey::Email, email).await
}

async fn user_by_google(
    state: &IdpState,
    project: &str,
    sub: &str,
) -> Result<Option<FbUser>, IdpError> {
    user_where(state, project, UserKey::GoogleSub, sub).await
}

/// A Firebase-style uid: 28 characters of [A-Za-z0-9].
fn new_uid() -> String {
    let raw = random_token(32);
    let mut uid: String = raw
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(28)
        .collect();
    while uid.len() < 28 {
        uid.push('0');
    }
    uid
}

/// The argon2 computations of the whole process. Each takes 19 MiB and a core for a while;
/// unbounded, a flood of unauthenticated sign-ins would hold one blocking thread apiece (up
/// to 512) and exhaust memory. At most one per core runs; the rest wait their turn (the
/// semaphore is fair), which only slows sign-ins under such a flood.
struct PasswordWork {
    permits: Semaphore,
    limit: usize,
    running: AtomicUsize,
    peak: AtomicUsize,
}

static PASSWORD_WORK: LazyLock<PasswordWork> = LazyLock::new(|| {
    let limit = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    PasswordWork {
        permits: Semaphore::new(limit),
        limit,
        running: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
    }
});

/// How many password hashes may run at once, and the most that have (for tests).
#[doc(hidden)]
pub fn password_work_limits() -> (usize, usize) {
    let work = &*PASSWORD_WORK;
    (work.limit, work.peak.load(Ordering::SeqCst))
}

async fn password_work<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, IdpError> {
    let work: &'static PasswordWork = &PASSWORD_WORK;
    let permit = work
        .permits
        .acquire()
        .await
        .map_err(|_| IdpError::Password)?;
    tokio::task::spawn_blocking(move || {
        // Released when the computation ends, not when the request does: a client that
        // hangs up does not free its slot while argon2 still runs.
        let _permit = permit;
        let running = work.running.fetch_add(1, Ordering::SeqCst) + 1;
        work.peak.fetch_max(running, Ordering::SeqCst);
        let out = f();
        work.running.fetch_sub(1, Ordering::SeqCst);
        out
    })
    .await
    .map_err(|_| IdpError::Password)
}

async fn hash_password(password: String) -> Result<String, IdpError> {
    password_work(move || {
        let salt = SaltString::encode_b64(&crate::util::random_bytes(16))
            .map_err(|_| IdpError::Password)?;
        argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|_| IdpError::Password)
    })
    .await?
}

async fn password_matches(password: String, stored: String) -> Result<bool, IdpError> {
    password_work(move || {
        let Ok(parsed) = PasswordHash::new(&stored) else {
            return false;
        };
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
    .await
}

fn body_str<'a>(body: &'a Json, key: &str) -> Option<&'a str> {
    body.get(key)
        .and_then(Json::as_str)
        .filter(|s| !s.is_empty())
}

fn check_email(email: &str) -> Result<String, ToolkitError> {
    let email = email.trim().to_ascii_lowercase();
    if valid_email(&email) {
        Ok(email)
    } else {
        Err(ToolkitError::new("INVALID_EMAIL"))
    }
}

fn check_password(p: &str) -> Result<(), ToolkitError> {
    if p.len() > MAX_PASSWORD {
        return Err(ToolkitError::new("WEAK_PASSWORD : Password is too long"));
    }
    if p.chars().count() < MIN_PASSWORD {
        return Err(ToolkitError::new(
            "WEAK_PASSWORD : Password should be at least 6 characters",
        ));
    }
    Ok(())
}

fn check_display_name(n: Option<&str>) -> Result<(), ToolkitError> {
    if n.is_some_and(|n| n.len() > MAX_DISPLAY_NAME) {
        return Err(ToolkitError::new("INVALID_DISPLAY_NAME"));
    }
    Ok(())
}

fn check_photo_url(u: Option<&str>) -> Result<(), ToolkitError> {
    if u.is_some_and(|u| u.len() > MAX_PHOTO_URL || url::Url::parse(u).is_err()) {
        return Err(ToolkitError::new("INVALID_PHOTO_URL"));
    }
    Ok(())
}

/// Claims of a Firebase ID token, the production shape.
pub fn firebase_claims(
    user: &FbUser,
    provider: &str,
    auth_time: i64,
    now: i64,
    lifetime: i64,
) -> Map<String, Json> {
    let mut identities = Map::new();
    if let Some(sub) = &user.google_sub {
        identities.insert("google.com".into(), json!([sub]));
    }
    if let Some(e) = &user.email {
        identities.insert("email".into(), json!([e]));
    }
    let mut c = Map::new();
    if let Some(n) = &user.display_name {
        c.insert("name".into(), json!(n));
    }
    if let Some(u) = &user.photo_url {
        c.insert("picture".into(), json!(u));
    }
    c.insert(
        "iss".into(),
        json!(format!("https://securetoken.google.com/{}", user.project)),
    );
    c.insert("aud".into(), json!(user.project));
    c.insert("auth_time".into(), json!(auth_time));
    c.insert("user_id".into(), json!(user.uid));
    c.insert("sub".into(), json!(user.uid));
    c.insert("iat".into(), json!(now));
    c.insert("exp".into(), json!(now + lifetime));
    if let Some(e) = &user.email {
        c.insert("email".into(), json!(e));
        c.insert("email_verified".into(), json!(user.email_verified));
    }
    c.insert(
        "firebase".into(),
        json!({"identities": identities, "sign_in_provider": provider}),
    );
    c
}

struct Tokens {
    id_token: String,
    refresh_token: String,
    statement: Statement,
}

/// A signed ID token and a new refresh token (its insert statement left to the caller, so
/// that it joins the request's transaction).
fn mint(state: &IdpState, user: &FbUser, provider: &str, now: i64) -> Result<Tokens, IdpError> {
    let lifetime = state.config().token_lifetime;
    let id_token = state.sign(
        RingName::SecureToken,
        &firebase_claims(user, provider, now, now, lifetime),
    )?;
    let refresh_token = format!("AMf-{}", random_token(64));
    let statement = Statement::new(
        "INSERT INTO idp_refresh_tokens (token_hash, kind, audience, subject, scope, auth_time, created_at)
         VALUES ($1, 'firebase', $2, $3, $4, $5, $6)",
        vec![
            secret_hash(&refresh_token).into(),
            user.project.clone().into(),
            user.uid.clone().into(),
            provider.into(),
            now.into(),
            now.into(),
        ],
    );
    Ok(Tokens {
        id_token,
        refresh_token,
        statement,
    })
}

fn insert_user(u: &FbUser) -> Statement {
    Statement::new(
        format!(
            "INSERT INTO idp_fb_users ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        ),
        vec![
            u.project.clone().into(),
            u.uid.clone().into(),
            u.email.clone().into(),
            u.email_verified.into(),
            u.display_name.clone().into(),
            u.photo_url.clone().into(),
            u.password_hash.clone().into(),
            u.google_sub.clone().into(),
            u.google_email.clone().into(),
            u.created_at.into(),
            u.last_login_at.into(),
            u.password_updated_at.into(),
            u.valid_since.into(),
        ],
    )
}

/// Deletes every Firebase refresh token of a user.
fn revoke_refresh_tokens(project: &str, uid: &str) -> Statement {
    Statement::new(
        "DELETE FROM idp_refresh_tokens WHERE kind = 'firebase' AND audience = $1 AND subject = $2",
        vec![project.into(), uid.into()],
    )
}

fn login_statement(u: &FbUser, now: i64) -> Statement {
    Statement::new(
        "UPDATE idp_fb_users SET last_login_at = $1 WHERE project = $2 AND uid = $3",
        vec![now.into(), u.project.clone().into(), u.uid.clone().into()],
    )
}

/// Runs the statements; a unique-constraint race (two sign-ups of one email at once)
/// surfaces as `EMAIL_EXISTS`.
async fn commit(state: &IdpState, statements: &[Statement]) -> Result<(), ToolkitError> {
    match state.store().transaction(statements, false).await {
        Ok(_) => Ok(()),
        Err(gatehouse_store::StoreError::Database(e))
            if e.as_database_error()
                .is_some_and(|d| d.is_unique_violation()) =>
        {
            Err(ToolkitError::new("EMAIL_EXISTS"))
        }
        Err(e) => Err(e.into()),
    }
}

/// `accounts:signUp`: an email/password account, or an anonymous one without either.
pub async fn sign_up(
    state: &IdpState,
    project: &str,
    body: &Json,
    now: i64,
) -> Result<Json, ToolkitError> {
    let email = body_str(body, "email");
    let password = body_str(body, "password");
    let display_name = body_str(body, "displayName");
    check_display_name(display_name)?;
    let (email, provider) = match (email, password) {
        (Some(e), Some(p)) => {
            check_password(p)?;
            (Some(check_email(e)?), "password")
        }
        (Some(_), None) => return Err(ToolkitError::new("MISSING_PASSWORD")),
        (None, Some(_)) => return Err(ToolkitError::new("MISSING_EMAIL")),
        (None, None) => (None, "anonymous"),
    };
    if let Some(e) = &email {
        if user_by_email(state, project, e).await?.is_some() {
            return Err(ToolkitError::new("EMAIL_EXISTS"));
        }
    }
    let password_hash = match password {
        Some(p) => Some(hash_password(p.to_owned()).await?),
        None => None,
    };
    let user = FbUser {
        project: project.to_owned(),
        uid: new_uid(),
        email: email.clone(),
        email_verified: false,
        display_name: display_name.map(str::to_owned),
        photo_url: None,
        password_updated_at: password_hash.as_ref().map(|_| now),
        password_hash,
        google_sub: None,
        google_email: None,
        created_at: now,
        last_login_at: now,
        valid_since: now,
    };
    let tokens = mint(state, &user, provider, now)?;
    commit(state, &[insert_user(&user), tokens.statement]).await?;
    let mut out = json!({
        "kind": "identitytoolkit#SignupNewUserResponse",
        "localId": user.uid,
        "idToken": tokens.id_token,
        "refreshToken": tokens.refresh_token,
        "expiresIn": state.config().token_lifetime.to_string(),
    });
    if let Some(e) = email {
        out["email"] = json!(e);
    }
    if let Some(n) = display_name {
        out["displayName"] = json!(n);
    }
    Ok(out)
}

/// `accounts:signInWithPassword`.
pub async fn sign_in_with_password(
    state: &IdpState,
    project: &str,
    body: &Json,
    now: i64,
) -> Result<Json, ToolkitError> {
    let email =
        check_email(body_str(body, "email").ok_or_else(|| ToolkitError::new("INVALID_EMAIL"))?)?;
    let password =
        body_str(body, "password").ok_or_else(|| ToolkitError::new("MISSING_PASSWORD"))?;
    if password.len() > MAX_PASSWORD {
        return Err(ToolkitError::new("INVALID_PASSWORD"));
    }
    let Some(user) = user_by_email(state, project, &email).await? else {
        return Err(ToolkitError::new("EMAIL_NOT_FOUND"));
    };
    let Some(stored) = user.password_hash.clone() else {
        return Err(ToolkitError::new("INVALID_PASSWORD"));
    };
    if !password_matches(password.to_owned(), stored).await? {
        return Err(ToolkitError::new("INVALID_PASSWORD"));
    }
    let tokens = mint(state, &user, "password", now)?;
    commit(state, &[login_statement(&user, now), tokens.statement]).await?;
    Ok(json!({
        "kind": "identitytoolkit#VerifyPasswordResponse",
        "localId": user.uid,
        "email": email,
        "displayName": user.display_name.clone().unwrap_or_default(),
        "idToken": tokens.id_token,
        "registered": true,
        "refreshToken": tokens.refresh_token,
        "expiresIn": state.config().token_lifetime.to_string(),
    }))
}

/// Audiences looked up per Google ID token (Google's own tokens name one).
const MAX_TOKEN_AUDIENCES: usize = 4;

/// The registered clients a Google ID token names as its `aud`. The claims are read before
/// the signature is checked only to know which clients to look up (one query each, however
/// many clients exist); the verifier then demands the signature and one of these, so the
/// unverified text can only narrow what is accepted.
async fn named_clients(state: &IdpState, token: &str) -> Result<Vec<String>, ToolkitError> {
    let claims = gatehouse_verify::unverified::danger_decode_unverified(token)
        .map_err(|e| ToolkitError::new(format!("INVALID_IDP_RESPONSE : {}", e.code())))?
        .claims;
    let named: Vec<&str> = match claims.get("aud") {
        Some(Json::String(a)) => vec![a.as_str()],
        Some(Json::Array(a)) => a
            .iter()
            .filter_map(Json::as_str)
            .take(MAX_TOKEN_AUDIENCES)
            .collect(),
        _ => Vec::new(),
    };
    let mut found = Vec::new();
    for aud in named {
        if oauth::client(state, aud).await?.is_some() {
            found.push(aud.to_owned());
        }
    }
    Ok(found)
}

/// `accounts:signInWithIdp` for `google.com`: the `postBody` carries an ID token this
/// emulator signed (from its sign-in page); the Firebase user is found or created by the
/// Google account's `sub`.
pub async fn sign_in_with_idp(
    state: &IdpState,
    project: &str,
    body: &Json,
    now: i64,
) -> Result<Json, ToolkitError> {
    let post_body = body_str(body, "postBody")
        .ok_or_else(|| ToolkitError::new("INVALID_IDP_RESPONSE : postBody is missing"))?;
    let params = Params::parse(post_body)
        .map_err(|_| ToolkitError::new("INVALID_IDP_RESPONSE : malformed postBody"))?;
    match params.get("providerId") {
        Some("google.com") => {}
        Some(_) => {
            return Err(ToolkitError::new(
                "INVALID_PROVIDER_ID : only google.com is emulated",
            ));
        }
        None => {
            return Err(ToolkitError::new(
                "INVALID_IDP_RESPONSE : providerId is missing",
            ));
        }
    }
    // The Google account: from an ID token this emulator signed, or from one of its access
    // tokens (`GoogleAuthProvider.credential(null, accessToken)`).
    let (sub, g_email, g_verified, name, picture, raw) =
        if let Some(id_token) = params.get("id_token") {
            let audiences = named_clients(state, id_token).await?;
            if audiences.is_empty() {
                return Err(ToolkitError::new("INVALID_IDP_RESPONSE : wrong_audience"));
            }
            let verifier = own_verifier(
                state,
                RingName::Google,
                IssuerProfile::google().with_audiences(audiences),
            )?;
            let identity = verifier
                .verify(id_token, u64::try_from(now).unwrap_or(0))
                .await
                .map_err(|e| ToolkitError::new(format!("INVALID_IDP_RESPONSE : {}", e.code())))?;
            let text = |k: &str| {
                identity
                    .claims()
                    .get(k)
                    .and_then(Json::as_str)
                    .map(str::to_owned)
            };
            (
                identity.subject().to_owned(),
                identity.email().map(str::to_ascii_lowercase),
                identity.email_verified(),
                text("name"),
                text("picture"),
                identity.claims().as_map().clone(),
            )
        } else if let Some(access_token) = params.get("access_token") {
            let grant = oauth::lookup_access_token(state, access_token, now)
                .await?
                .filter(|g| g.subject_kind == oauth::Subject::User)
                .ok_or_else(|| ToolkitError::new("INVALID_IDP_RESPONSE : invalid access_token"))?;
            let account = crate::accounts::by_sub(state.store(), &grant.subject)
                .await?
                .ok_or_else(|| ToolkitError::new("INVALID_IDP_RESPONSE : account not found"))?;
            let mut raw = account.profile_claims(true, true);
            raw.insert("sub".into(), json!(account.sub));
            (
                account.sub.clone(),
                Some(account.email.clone()),
                account.email_verified,
                Some(account.name.clone()),
                account.picture.clone(),
                raw,
            )
        } else {
            return Err(ToolkitError::new(
                "INVALID_IDP_RESPONSE : id_token or access_token is missing",
            ));
        };
    let existing = user_by_google(state, project, &sub).await?;
    let (user, is_new, mut statements) = match existing {
        Some(u) => {
            let s = vec![login_statement(&u, now)];
            (u, false, s)
        }
        None => {
            // An existing email account is linked when the Google email is verified (as
            // Firebase's "one account per email" setting does); otherwise a new user.
            let by_email = match &g_email {
                Some(e) => user_by_email(state, project, e).await?,
                None => None,
            };
            match by_email {
                Some(mut u) if g_verified => {
                    u.google_sub = Some(sub.clone());
                    u.google_email = g_email.clone();
                    let mut s = vec![Statement::new(
                        "UPDATE idp_fb_users SET google_sub = $1, google_email = $2, email_verified = 1, last_login_at = $3 WHERE project = $4 AND uid = $5",
                        vec![
                            sub.clone().into(),
                            g_email.clone().into(),
                            now.into(),
                            project.into(),
                            u.uid.clone().into(),
                        ],
                    )];
                    if !u.email_verified {
                        // Nobody proved they own this email when the password was set: it
                        // may be an attacker's, set up in advance (account pre-hijacking).
                        // Firebase unlinks it, and ends the sessions it opened.
                        u.password_hash = None;
                        u.password_updated_at = None;
                        u.valid_since = now;
                        s.push(Statement::new(
                            "UPDATE idp_fb_users SET password_hash = NULL, password_updated_at = NULL, valid_since = $1 WHERE project = $2 AND uid = $3",
                            vec![now.into(), project.into(), u.uid.clone().into()],
                        ));
                        s.push(revoke_refresh_tokens(project, &u.uid));
                    }
                    u.email_verified = true;
                    (u, false, s)
                }
                Some(_) => return Err(ToolkitError::new("FEDERATED_USER_ID_ALREADY_LINKED")),
                None => {
                    let u = FbUser {
                        project: project.to_owned(),
                        uid: new_uid(),
                        email: g_email.clone(),
                        email_verified: g_verified,
                        display_name: name.clone(),
                        photo_url: picture.clone(),
                        password_hash: None,
                        google_sub: Some(sub.clone()),
                        google_email: g_email.clone(),
                        created_at: now,
                        last_login_at: now,
                        password_updated_at: None,
                        valid_since: now,
                    };
                    let s = vec![insert_user(&u)];
                    (u, true, s)
                }
            }
        }
    };
    let tokens = mint(state, &user, "google.com", now)?;
    statements.push(tokens.statement);
    commit(state, &statements).await?;
    let mut out = json!({
        "kind": "identitytoolkit#VerifyAssertionResponse",
        "federatedId": format!("https://accounts.google.com/{sub}"),
        "providerId": "google.com",
        "localId": user.uid,
        "emailVerified": user.email_verified,
        "isNewUser": is_new,
        "rawUserInfo": Json::Object(raw).to_string(),
        "idToken": tokens.id_token,
        "refreshToken": tokens.refresh_token,
        "expiresIn": state.config().token_lifetime.to_string(),
    });
    if let Some(t) = params.get("id_token") {
        out["oauthIdToken"] = json!(t);
    }
    if let Some(t) = params.get("access_token") {
        out["oauthAccessToken"] = json!(t);
    }
    if let Some(e) = &user.email {
        out["email"] = json!(e);
    }
    if let Some(n) = &name {
        out["displayName"] = json!(n);
        out["fullName"] = json!(n);
    }
    if let Some(p) = &picture {
        out["photoUrl"] = json!(p);
    }
    Ok(out)
}

fn own_verifier(
    state: &IdpState,
    ring: RingName,
    profile: IssuerProfile,
) -> Result<Verifier, IdpError> {
    let snapshot = state.snapshot(ring)?;
    state
        .verifier_builder()
        .profile(profile.with_keys(KeySource::Static(snapshot.keyset())))
        .build()
        .map_err(|e| IdpError::Verifier(e.to_string()))
}

/// The user an `idToken` in the body names (verified), or with the Admin SDK a `localId`.
async fn target_user(
    state: &IdpState,
    project: &str,
    body: &Json,
    caller: Caller,
    now: i64,
) -> Result<FbUser, ToolkitError> {
    if let Some(token) = body_str(body, "idToken") {
        let verifier = own_verifier(
            state,
            RingName::SecureToken,
            IssuerProfile::firebase(project),
        )?;
        let identity = verifier
            .verify(token, u64::try_from(now).unwrap_or(0))
            .await
            .map_err(|e| match e.code() {
                "expired" => ToolkitError::new("TOKEN_EXPIRED"),
                _ => ToolkitError::new("INVALID_ID_TOKEN"),
            })?;
        let user = user_by_uid(state, project, identity.subject())
            .await?
            .ok_or_else(|| ToolkitError::new("USER_NOT_FOUND"))?;
        // Tokens from before a password or email change no longer count (validSince); the
        // same second still does, so the token the change itself returned works.
        let iat = identity.claims().issued_at().unwrap_or(0);
        if i64::try_from(iat).unwrap_or(0) < user.valid_since {
            return Err(ToolkitError::new("TOKEN_EXPIRED"));
        }
        return Ok(user);
    }
    if caller == Caller::Admin {
        if let Some(uid) = body_str(body, "localId") {
            return user_by_uid(state, project, uid)
                .await?
                .ok_or_else(|| ToolkitError::new("USER_NOT_FOUND"));
        }
    }
    Err(ToolkitError::new("INVALID_ID_TOKEN"))
}

/// `accounts:lookup`: by `idToken`, or (Admin SDK) by `localId`/`email` arrays.
pub async fn lookup(
    state: &IdpState,
    project: &str,
    body: &Json,
    caller: Caller,
    now: i64,
) -> Result<Json, ToolkitError> {
    let mut users = Vec::new();
    if body_str(body, "idToken").is_some() || caller == Caller::User {
        users.push(target_user(state, project, body, caller, now).await?);
    } else {
        let list = |k: &str| -> Vec<String> {
            body.get(k)
                .and_then(Json::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Json::as_str)
                        .take(100)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        for uid in list("localId") {
            if let Some(u) = user_by_uid(state, project, &uid).await? {
                users.push(u);
            }
        }
        for email in list("email") {
            if let Some(u) = user_by_email(state, project, &email.to_ascii_lowercase()).await? {
                users.push(u);
            }
        }
    }
    let mut out = json!({"kind": "identitytoolkit#GetAccountInfoResponse"});
    if !users.is_empty() {
        out["users"] = Json::Array(users.iter().map(FbUser::to_json).collect());
    }
    Ok(out)
}

/// `accounts:update`: display name, photo, email, password (`deleteAttribute` clears).
pub async fn update(
    state: &IdpState,
    project: &str,
    body: &Json,
    caller: Caller,
    now: i64,
) -> Result<Json, ToolkitError> {
    let mut user = target_user(state, project, body, caller, now).await?;
    // Keyed by column, the last value winning: the body can name one column twice
    // (`email` with `emailVerified`, `displayName` with `deleteAttribute`), and PostgreSQL
    // refuses an UPDATE that assigns a column twice.
    let mut sets: BTreeMap<&str, Value> = BTreeMap::new();
    let mut credentials_changed = false;
    if let Some(n) = body.get("displayName").and_then(Json::as_str) {
        check_display_name(Some(n))?;
        user.display_name = Some(n.to_owned()).filter(|n| !n.is_empty());
        sets.insert("display_name", user.display_name.clone().into());
    }
    if let Some(u) = body.get("photoUrl").and_then(Json::as_str) {
        let u = Some(u).filter(|u| !u.is_empty());
        check_photo_url(u)?;
        user.photo_url = u.map(str::to_owned);
        sets.insert("photo_url", user.photo_url.clone().into());
    }
    if let Some(attrs) = body.get("deleteAttribute").and_then(Json::as_array) {
        for a in attrs.iter().take(8) {
            match a.as_str() {
                Some("DISPLAY_NAME") => {
                    user.display_name = None;
                    sets.insert("display_name", Value::Null);
                }
                Some("PHOTO_URL") => {
                    user.photo_url = None;
                    sets.insert("photo_url", Value::Null);
                }
                _ => {
                    return Err(ToolkitError::new(
                        "INVALID_REQ_TYPE : unsupported deleteAttribute",
                    ));
                }
            }
        }
    }
    if let Some(e) = body_str(body, "email") {
        let e = check_email(e)?;
        if user.email.as_deref() != Some(e.as_str()) {
            if user_by_email(state, project, &e).await?.is_some() {
                return Err(ToolkitError::new("EMAIL_EXISTS"));
            }
            user.email = Some(e);
            user.email_verified = false;
            sets.insert("email", user.email.clone().into());
            sets.insert("email_verified", false.into());
            credentials_changed = true;
        }
    }
    if caller == Caller::Admin {
        if let Some(v) = body.get("emailVerified").and_then(Json::as_bool) {
            user.email_verified = v;
            sets.insert("email_verified", v.into());
        }
    }
    if let Some(p) = body_str(body, "password") {
        check_password(p)?;
        if user.email.is_none() {
            return Err(ToolkitError::new("MISSING_EMAIL"));
        }
        let h = hash_password(p.to_owned()).await?;
        user.password_hash = Some(h.clone());
        user.password_updated_at = Some(now);
        sets.insert("password_hash", h.into());
        sets.insert("password_updated_at", now.into());
        credentials_changed = true;
    }
    if credentials_changed {
        // Firebase's validSince: ID tokens issued before this second and every refresh token
        // issued so far stop working, so a stolen session does not outlive the change.
        user.valid_since = now;
        sets.insert("valid_since", now.into());
    }
    let mut statements = Vec::new();
    if !sets.is_empty() {
        let mut sql = String::from("UPDATE idp_fb_users SET ");
        let mut params = Vec::new();
        for (i, (col, v)) in sets.into_iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("{col} = ${}", i + 1));
            params.push(v);
        }
        let n = params.len();
        sql.push_str(&format!(" WHERE project = ${} AND uid = ${}", n + 1, n + 2));
        params.push(project.into());
        params.push(user.uid.clone().into());
        statements.push(Statement::new(sql, params));
    }
    if credentials_changed {
        // Before the insert of the token this answer returns, which must survive.
        statements.push(revoke_refresh_tokens(project, &user.uid));
    }
    let mut out = user.to_json();
    out["kind"] = json!("identitytoolkit#SetAccountInfoResponse");
    if credentials_changed && body.get("returnSecureToken").and_then(Json::as_bool) == Some(true) {
        let provider = if user.google_sub.is_some() && user.password_hash.is_none() {
            "google.com"
        } else {
            "password"
        };
        let tokens = mint(state, &user, provider, now)?;
        statements.push(tokens.statement);
        out["idToken"] = json!(tokens.id_token);
        out["refreshToken"] = json!(tokens.refresh_token);
        out["expiresIn"] = json!(state.config().token_lifetime.to_string());
    }
    if !statements.is_empty() {
        commit(state, &statements).await?;
    }
    Ok(out)
}

/// `accounts:delete`.
pub async fn delete(
    state: &IdpState,
    project: &str,
    body: &Json,
    caller: Caller,
    now: i64,
) -> Result<Json, ToolkitError> {
    let user = target_user(state, project, body, caller, now).await?;
    commit(
        state,
        &[
            revoke_refresh_tokens(project, &user.uid),
            Statement::new(
                "DELETE FROM idp_fb_users WHERE project = $1 AND uid = $2",
                vec![project.into(), user.uid.clone().into()],
            ),
        ],
    )
    .await?;
    Ok(json!({"kind": "identitytoolkit#DeleteAccountResponse"}))
}

/// `DELETE /emulator/v1/projects/{id}/accounts`.
pub async fn delete_all(state: &IdpState, project: &str) -> Result<Json, ToolkitError> {
    commit(
        state,
        &[
            Statement::new(
                "DELETE FROM idp_refresh_tokens WHERE kind = 'firebase' AND audience = $1",
                vec![project.into()],
            ),
            Statement::new(
                "DELETE FROM idp_fb_users WHERE project = $1",
                vec![project.into()],
            ),
        ],
    )
    .await?;
    Ok(json!({}))
}

/// `securetoken.googleapis.com/v1/token`: a new ID token for a refresh token.
pub async fn refresh(
    state: &IdpState,
    project: &str,
    p: &Params,
    now: i64,
) -> Result<Json, ToolkitError> {
    match p.get("grant_type") {
        Some("refresh_token") => {}
        Some(_) => return Err(ToolkitError::new("INVALID_GRANT_TYPE")),
        None => return Err(ToolkitError::new("MISSING_GRANT_TYPE")),
    }
    let token = p
        .get("refresh_token")
        .ok_or_else(|| ToolkitError::new("MISSING_REFRESH_TOKEN"))?;
    let row = state
        .store()
        .fetch_optional(
            "SELECT audience, subject, scope, auth_time, revoked, created_at FROM idp_refresh_tokens WHERE token_hash = $1 AND kind = 'firebase'",
            &[secret_hash(token).into()],
        )
        .await?;
    let Some(row) = row else {
        return Err(ToolkitError::new("INVALID_REFRESH_TOKEN"));
    };
    let token_project = row.text(0).map_err(IdpError::from)?;
    if token_project != project || row.bool(4).map_err(IdpError::from)? {
        return Err(ToolkitError::new("INVALID_REFRESH_TOKEN"));
    }
    let uid = row.text(1).map_err(IdpError::from)?;
    let provider = row.text(2).map_err(IdpError::from)?;
    let auth_time = row.int(3).map_err(IdpError::from)?;
    let created_at = row.int(5).map_err(IdpError::from)?;
    let user = user_by_uid(state, project, &uid)
        .await?
        .ok_or_else(|| ToolkitError::new("USER_NOT_FOUND"))?;
    // Issued before the user's validSince (a credential change): dead, as in Firebase. The
    // same second still counts, so the token the change itself returned works.
    if created_at < user.valid_since {
        return Err(ToolkitError::new("TOKEN_EXPIRED"));
    }
    let lifetime = state.config().token_lifetime;
    let id_token = state.sign(
        RingName::SecureToken,
        &firebase_claims(&user, &provider, auth_time, now, lifetime),
    )?;
    Ok(json!({
        "access_token": id_token,
        "expires_in": lifetime.to_string(),
        "id_token": id_token,
        "project_id": state.config().project_number,
        "refresh_token": token,
        "token_type": "Bearer",
        "user_id": uid,
    }))
}

/// `accounts:createAuthUri` (the JS SDK's `fetchSignInMethodsForEmail`): which ways an email
/// can sign in.
pub async fn create_auth_uri(
    state: &IdpState,
    project: &str,
    body: &Json,
) -> Result<Json, ToolkitError> {
    let email = check_email(
        body_str(body, "identifier")
            .or_else(|| body_str(body, "email"))
            .ok_or_else(|| ToolkitError::new("MISSING_IDENTIFIER"))?,
    )?;
    let user = user_by_email(state, project, &email).await?;
    let mut methods = Vec::new();
    if let Some(u) = &user {
        if u.password_hash.is_some() {
            methods.push("password");
        }
        if u.google_sub.is_some() {
            methods.push("google.com");
        }
    }
    let providers: Vec<&str> = methods
        .iter()
        .filter(|m| **m != "password")
        .copied()
        .collect();
    Ok(json!({
        "kind": "identitytoolkit#CreateAuthUriResponse",
        "registered": user.is_some(),
        "allProviders": providers,
        "signinMethods": methods,
        "sessionId": random_token(16),
    }))
}

/// Dispatches `accounts:ACTION` (with the request's JSON body).
pub async fn dispatch(
    state: &IdpState,
    project: &str,
    action: &str,
    body: &Json,
    caller: Caller,
    now: i64,
) -> Result<Json, ToolkitError> {
    match action {
        "signUp" => sign_up(state, project, body, now).await,
        "signInWithPassword" => sign_in_with_password(state, project, body, now).await,
        "signInWithIdp" => sign_in_with_idp(state, project, body, now).await,
        "lookup" => lookup(state, project, body, caller, now).await,
        "update" => update(state, project, body, caller, now).await,
        "delete" => delete(state, project, body, caller, now).await,
        "createAuthUri" => create_auth_uri(state, project, body).await,
        _ => Err(ToolkitError {
            status: 404,
            message: format!("NOT_FOUND : accounts:{action:.64} is not emulated"),
        }),
    }
}
