//! OAuth 2.0 / OpenID Connect as Google speaks it: registered clients and their redirect
//! URIs, authorization requests, ID tokens, authorization codes (+PKCE), refresh and access
//! tokens, and the `/token` endpoint's grants. No HTTP here; `now` is an argument.

use crate::accounts::{self, Account};
use crate::error::IdpError;
use crate::keys::RingName;
use crate::service_accounts;
use crate::state::IdpState;
use crate::util::{b64url, ct_eq, random_token, secret_hash, sha256};
use gatehouse_store::{Row, Statement, Value};
use serde_json::{Map, Value as Json, json};
use std::collections::HashMap;

/// Google's ID token issuer.
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";
/// Where google-auth and gtoken send service-account assertions (their `aud`).
pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

/// Authorization codes live this long (Google: a few minutes).
pub const CODE_LIFETIME: i64 = 300;

/// Bounds on request parameters.
/// Large enough for a 16 KiB token (the verifier's own cap).
pub const MAX_PARAM: usize = 16 * 1024 + 512;
pub const MAX_PARAMS: usize = 32;
/// The longest `nonce` accepted: it is copied into the ID token, which must stay within what
/// verifiers take (gatehouse-verify's 16 KiB among them). Nonces are a hash or a random
/// string, tens of characters.
pub const MAX_NONCE: usize = 1024;

/// An error answer of the token endpoint: `{"error", "error_description"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub status: u16,
    pub error: &'static str,
    pub description: String,
}

impl OAuthError {
    pub fn new(error: &'static str, description: impl Into<String>) -> OAuthError {
        let status = match error {
            "invalid_client" | "unauthorized_client" => 401,
            "server_error" => 500,
            _ => 400,
        };
        OAuthError {
            status,
            error,
            description: description.into(),
        }
    }
    pub fn body(&self) -> Json {
        json!({"error": self.error, "error_description": self.description})
    }
}

impl From<IdpError> for OAuthError {
    fn from(error: IdpError) -> Self {
        tracing::error!(%error, "internal error");
        OAuthError::new("server_error", "Internal error")
    }
}

/// Form or query parameters, bounded, with duplicates refused (RFC 6749 §3.1).
#[derive(Clone, Default)]
pub struct Params(HashMap<String, String>);

impl std::fmt::Debug for Params {
    // Values include secrets (client_secret, code, code_verifier, assertion): names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.0.keys().collect();
        names.sort();
        f.debug_struct("Params").field("names", &names).finish()
    }
}

impl Params {
    pub fn parse(encoded: &str) -> Result<Params, OAuthError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(encoded)
            .map_err(|_| OAuthError::new("invalid_request", "Malformed parameters"))?;
        Params::from_pairs(pairs)
    }

    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<Params, OAuthError> {
        if pairs.len() > MAX_PARAMS {
            return Err(OAuthError::new("invalid_request", "Too many parameters"));
        }
        let mut map = HashMap::new();
        for (k, v) in pairs {
            if k.len() > 64 || v.len() > MAX_PARAM {
                return Err(OAuthError::new(
                    "invalid_request",
                    format!("Parameter {k:.64} is too long"),
                ));
            }
            if map.insert(k.clone(), v).is_some() {
                return Err(OAuthError::new(
                    "invalid_request",
                    format!("Parameter {k} is repeated"),
                ));
            }
        }
        Ok(Params(map))
    }

    /// A parameter, treating empty as absent.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn require(&self, key: &str) -> Result<&str, OAuthError> {
        self.get(key).ok_or_else(|| {
            OAuthError::new(
                "invalid_request",
                format!("Missing required parameter: {key}"),
            )
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }
}

// ---------------------------------------------------------------------------------------
// Clients

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// A web application: exact redirect URIs.
    Web,
    /// The default web client: loopback redirect URIs on any port and path, like Google's
    /// installed-app clients, plus any registered exactly.
    Default,
    /// A Chrome extension: `https://<extension-id>.chromiumapp.org/...`.
    Extension,
}

impl ClientKind {
    fn as_str(self) -> &'static str {
        match self {
            ClientKind::Web => "web",
            ClientKind::Default => "default",
            ClientKind::Extension => "extension",
        }
    }
    fn parse(s: &str) -> Option<ClientKind> {
        match s {
            "web" => Some(ClientKind::Web),
            "default" => Some(ClientKind::Default),
            "extension" => Some(ClientKind::Extension),
            _ => None,
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct Client {
    pub client_id: String,
    pub client_secret: Option<String>,
    pub kind: ClientKind,
    pub redirect_uris: Vec<String>,
    pub extension_id: Option<String>,
    pub name: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<hidden>"),
            )
            .field("kind", &self.kind)
            .field("redirect_uris", &self.redirect_uris)
            .field("extension_id", &self.extension_id)
            .finish()
    }
}

fn is_loopback_http(uri: &url::Url) -> bool {
    uri.scheme() == "http"
        && matches!(
            uri.host(),
            Some(url::Host::Domain("localhost"))
                | Some(url::Host::Ipv4(std::net::Ipv4Addr::LOCALHOST))
                | Some(url::Host::Ipv6(std::net::Ipv6Addr::LOCALHOST))
        )
}

impl Client {
    /// Whether `redirect_uri` may receive this client's responses. Fragments and user info
    /// are never allowed.
    pub fn accepts_redirect(&self, redirect_uri: &str) -> bool {
        let Ok(uri) = url::Url::parse(redirect_uri) else {
            return false;
        };
        if uri.fragment().is_some() || !uri.username().is_empty() || uri.password().is_some() {
            return false;
        }
        if self.redirect_uris.iter().any(|r| r == redirect_uri) {
            return true;
        }
        match self.kind {
            ClientKind::Web => false,
            ClientKind::Default => is_loopback_http(&uri),
            ClientKind::Extension => self.extension_id.as_deref().is_some_and(|id| {
                uri.scheme() == "https"
                    && uri.port().is_none()
                    && uri.host_str() == Some(&format!("{id}.chromiumapp.org"))
            }),
        }
    }

    /// The client as the registration API shows it (never the secret).
    pub fn to_json(&self) -> Json {
        json!({
            "clientId": self.client_id,
            "type": self.kind.as_str(),
            "redirectUris": self.redirect_uris,
            "extensionId": self.extension_id,
            "name": self.name,
            "hasSecret": self.client_secret.is_some(),
        })
    }

    fn from_row(row: &Row) -> Result<Client, IdpError> {
        let uris: Vec<String> = serde_json::from_str(&row.text(3)?)
            .map_err(|_| IdpError::Corrupt("client redirect URIs"))?;
        Ok(Client {
            client_id: row.text(0)?,
            client_secret: row.opt_text(1)?,
            kind: ClientKind::parse(&row.text(2)?).ok_or(IdpError::Corrupt("client kind"))?,
            redirect_uris: uris,
            extension_id: row.opt_text(4)?,
            name: row.text(5)?,
        })
    }
}

pub async fn client(state: &IdpState, client_id: &str) -> Result<Option<Client>, IdpError> {
    let row = state
        .store()
        .fetch_optional(
            "SELECT client_id, client_secret, kind, redirect_uris, extension_id, name FROM idp_clients WHERE client_id = $1",
            &[client_id.into()],
        )
        .await?;
    row.as_ref().map(Client::from_row).transpose()
}

pub async fn list_clients(state: &IdpState) -> Result<Vec<Client>, IdpError> {
    let rows = state
        .store()
        .fetch_all(
            "SELECT client_id, client_secret, kind, redirect_uris, extension_id, name FROM idp_clients ORDER BY created_at LIMIT 1000",
            &[],
        )
        .await?;
    rows.iter().map(Client::from_row).collect()
}

async fn insert_client(state: &IdpState, c: &Client, now: i64) -> Result<u64, IdpError> {
    let uris = serde_json::to_string(&c.redirect_uris).map_err(|_| IdpError::Corrupt("uris"))?;
    Ok(state
        .store()
        .execute(
            "INSERT INTO idp_clients (client_id, client_secret, kind, redirect_uris, extension_id, name, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            &[
                c.client_id.clone().into(),
                c.client_secret.clone().into(),
                c.kind.as_str().into(),
                uris.into(),
                c.extension_id.clone().into(),
                c.name.clone().into(),
                now.into(),
            ],
        )
        .await?)
}

pub async fn ensure_default_client(state: &IdpState, now: i64) -> Result<(), IdpError> {
    let c = Client {
        client_id: state.config().default_client_id.clone(),
        client_secret: None,
        kind: ClientKind::Default,
        redirect_uris: Vec::new(),
        extension_id: None,
        name: "Gatehouse default web client".into(),
    };
    insert_client(state, &c, now).await?;
    Ok(())
}

/// A client registration request (the emulator's own API, `POST /emulator/v1/clients`).
#[derive(Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientRequest {
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    pub extension_id: Option<String>,
    pub name: Option<String>,
}

impl std::fmt::Debug for ClientRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRequest")
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<hidden>"),
            )
            .field("kind", &self.kind)
            .field("redirect_uris", &self.redirect_uris)
            .field("extension_id", &self.extension_id)
            .field("name", &self.name)
            .finish()
    }
}

/// Registers a client. Errors are `invalid_request`; an existing id is refused.
pub async fn register_client(
    state: &IdpState,
    req: ClientRequest,
    now: i64,
) -> Result<Client, OAuthError> {
    let bad = |d: &str| OAuthError::new("invalid_request", d);
    let kind = match req.kind.as_deref().unwrap_or("web") {
        "web" => ClientKind::Web,
        "extension" => ClientKind::Extension,
        _ => return Err(bad("type must be web or extension")),
    };
    if req.redirect_uris.len() > 50 {
        return Err(bad("at most 50 redirect URIs"));
    }
    for uri in &req.redirect_uris {
        let parsed =
            url::Url::parse(uri).map_err(|_| bad("redirect URI is not an absolute URL"))?;
        if uri.len() > 2048
            || parsed.fragment().is_some()
            || !matches!(parsed.scheme(), "http" | "https")
        {
            return Err(bad("redirect URI must be http(s), without a fragment"));
        }
    }
    let extension_id = match (kind, req.extension_id) {
        (ClientKind::Extension, Some(id))
            if id.len() == 32 && id.bytes().all(|b| (b'a'..=b'p').contains(&b)) =>
        {
            Some(id)
        }
        (ClientKind::Extension, _) => {
            return Err(bad(
                "extensionId must be a Chrome extension id (32 letters a-p)",
            ));
        }
        (_, Some(_)) => return Err(bad("extensionId is only for type extension")),
        (_, None) => None,
    };
    if kind == ClientKind::Web && req.redirect_uris.is_empty() {
        return Err(bad("a web client needs redirectUris"));
    }
    let client_id = match req.client_id {
        Some(id)
            if !id.is_empty()
                && id.len() <= 200
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) =>
        {
            id
        }
        Some(_) => return Err(bad("clientId must be 1-200 characters [A-Za-z0-9._-]")),
        None => format!(
            "{}-{}.apps.googleusercontent.com",
            state.config().project_number,
            crate::util::random_hex(16)
        ),
    };
    if req
        .client_secret
        .as_ref()
        .is_some_and(|s| s.len() > 200 || s.is_empty())
    {
        return Err(bad("clientSecret must be 1-200 characters"));
    }
    let c = Client {
        client_id,
        client_secret: req.client_secret,
        kind,
        redirect_uris: req.redirect_uris,
        extension_id,
        name: req
            .name
            .unwrap_or_else(|| "OAuth client".into())
            .chars()
            .take(200)
            .collect(),
    };
    if insert_client(state, &c, now).await? == 0 {
        return Err(bad("a client with this clientId exists"));
    }
    Ok(c)
}

// ---------------------------------------------------------------------------------------
// Tokens

/// `at_hash`: base64url of the left half of SHA-256 of the access token (OIDC Core §3.2.2.9).
pub fn at_hash(access_token: &str) -> String {
    let h = sha256(access_token.as_bytes());
    b64url(&h[..16])
}

/// Scope flags that decide which claims a user's ID token carries.
#[derive(Debug, Clone, Copy)]
pub struct ScopeFlags {
    pub email: bool,
    pub profile: bool,
}

impl ScopeFlags {
    pub fn from_scope(scope: &str) -> ScopeFlags {
        let has = |s: &str| {
            scope
                .split_whitespace()
                .any(|x| x == s || x == format!("https://www.googleapis.com/auth/userinfo.{s}"))
        };
        ScopeFlags {
            email: has("email"),
            profile: has("profile"),
        }
    }
}

/// Claims of a user's Google ID token for `client_id`.
pub fn user_id_token_claims(
    account: &Account,
    client_id: &str,
    scope: ScopeFlags,
    nonce: Option<&str>,
    access_token: Option<&str>,
    now: i64,
    lifetime: i64,
) -> Map<String, Json> {
    let mut c = Map::new();
    c.insert("iss".into(), json!(GOOGLE_ISSUER));
    c.insert("azp".into(), json!(client_id));
    c.insert("aud".into(), json!(client_id));
    c.insert("sub".into(), json!(account.sub));
    c.extend(account.profile_claims(scope.profile, scope.email));
    if let Some(at) = access_token {
        c.insert("at_hash".into(), json!(at_hash(at)));
    }
    if let Some(n) = nonce {
        c.insert("nonce".into(), json!(n));
    }
    c.insert("iat".into(), json!(now));
    c.insert("exp".into(), json!(now + lifetime));
    c
}

/// Who an access token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    User,
    ServiceAccount,
}

impl Subject {
    fn as_str(self) -> &'static str {
        match self {
            Subject::User => "user",
            Subject::ServiceAccount => "sa",
        }
    }
}

/// A new opaque access token, and the statement that records it. `grant` names the code
/// exchange it descends from (see [`revoke`]); tokens minted outside one have none.
pub fn new_access_token(
    subject_kind: Subject,
    subject: &str,
    client_id: &str,
    scope: &str,
    expires_at: i64,
    grant: Option<&str>,
) -> (String, Statement) {
    let token = format!("ya29.{}", random_token(48));
    let stmt = Statement::new(
        "INSERT INTO idp_access_tokens (token_hash, subject_kind, subject, client_id, scope, expires_at, grant_hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        vec![
            secret_hash(&token).into(),
            subject_kind.as_str().into(),
            subject.into(),
            client_id.into(),
            scope.into(),
            expires_at.into(),
            grant.into(),
        ],
    );
    (token, stmt)
}

/// What an access token grants, if it is live.
#[derive(Debug, Clone)]
pub struct AccessGrant {
    pub subject_kind: Subject,
    pub subject: String,
    pub client_id: String,
    pub scope: String,
    pub expires_at: i64,
}

pub async fn lookup_access_token(
    state: &IdpState,
    token: &str,
    now: i64,
) -> Result<Option<AccessGrant>, IdpError> {
    if token.len() > 512 {
        return Ok(None);
    }
    let row = state
        .store()
        .fetch_optional(
            "SELECT subject_kind, subject, client_id, scope, expires_at FROM idp_access_tokens WHERE token_hash = $1",
            &[secret_hash(token).into()],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let expires_at = row.int(4)?;
    if expires_at <= now {
        return Ok(None);
    }
    Ok(Some(AccessGrant {
        subject_kind: if row.text(0)? == "sa" {
            Subject::ServiceAccount
        } else {
            Subject::User
        },
        subject: row.text(1)?,
        client_id: row.text(2)?,
        scope: row.text(3)?,
        expires_at,
    }))
}

/// The userinfo document (`/oauth2/v3/userinfo`) for a live user access token.
pub async fn userinfo(state: &IdpState, token: &str, now: i64) -> Result<Option<Json>, IdpError> {
    let Some(grant) = lookup_access_token(state, token, now).await? else {
        return Ok(None);
    };
    match grant.subject_kind {
        Subject::User => {
            let Some(account) = accounts::by_sub(state.store(), &grant.subject).await? else {
                return Ok(None);
            };
            let flags = ScopeFlags::from_scope(&grant.scope);
            let mut m = Map::new();
            m.insert("sub".into(), json!(account.sub));
            m.extend(account.profile_claims(flags.profile, flags.email));
            Ok(Some(Json::Object(m)))
        }
        Subject::ServiceAccount => {
            let Some(sa) = service_accounts::get(state, &grant.subject).await? else {
                return Ok(None);
            };
            Ok(Some(
                json!({"sub": sa.unique_id, "email": sa.email, "email_verified": true}),
            ))
        }
    }
}

/// `/oauth2/v3/tokeninfo`: what Google says about an ID token it signed (`id_token=`, claims
/// as strings plus `alg`/`kid`/`typ`) or a live access token (`access_token=`). `None` means
/// `invalid_token`.
pub async fn tokeninfo(
    state: &IdpState,
    id_token: Option<&str>,
    access_token: Option<&str>,
    now: i64,
) -> Result<Option<Json>, IdpError> {
    if let Some(token) = id_token {
        // Tokeninfo reports the audience rather than checking it: accept the token's own.
        let Ok(peek) = gatehouse_verify::unverified::danger_decode_unverified(token) else {
            return Ok(None);
        };
        let auds: Vec<String> = match peek.claims.get("aud") {
            Some(Json::String(a)) => vec![a.clone()],
            Some(Json::Array(a)) => a
                .iter()
                .filter_map(Json::as_str)
                .map(str::to_owned)
                .collect(),
            _ => return Ok(None),
        };
        if auds.is_empty() || auds.len() > 16 {
            return Ok(None);
        }
        let snapshot = state.snapshot(RingName::Google)?;
        let verifier = state
            .verifier_builder()
            .profile(
                gatehouse_verify::IssuerProfile::google()
                    .with_keys(gatehouse_verify::KeySource::Static(snapshot.keyset()))
                    .with_audiences(auds),
            )
            .build()
            .map_err(|e| IdpError::Verifier(e.to_string()))?;
        let Ok(identity) = verifier
            .verify(token, u64::try_from(now).unwrap_or(0))
            .await
        else {
            return Ok(None);
        };
        let mut out = Map::new();
        for (k, v) in identity.claims().as_map() {
            let text = match v {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.insert(k.clone(), Json::String(text));
        }
        for k in ["alg", "kid", "typ"] {
            if let Some(Json::String(v)) = peek.header.get(k) {
                out.insert(k.into(), json!(v));
            }
        }
        return Ok(Some(Json::Object(out)));
    }
    if let Some(token) = access_token {
        let Some(grant) = lookup_access_token(state, token, now).await? else {
            return Ok(None);
        };
        let mut out = json!({
            "azp": grant.client_id,
            "aud": grant.client_id,
            "scope": grant.scope,
            "exp": grant.expires_at.to_string(),
            "expires_in": (grant.expires_at - now).to_string(),
            "access_type": "online",
        });
        match grant.subject_kind {
            Subject::User => {
                if let Some(a) = accounts::by_sub(state.store(), &grant.subject).await? {
                    out["sub"] = json!(a.sub);
                    if ScopeFlags::from_scope(&grant.scope).email {
                        out["email"] = json!(a.email);
                        out["email_verified"] = json!(a.email_verified.to_string());
                    }
                }
            }
            Subject::ServiceAccount => {
                if let Some(sa) = service_accounts::get(state, &grant.subject).await? {
                    out["sub"] = json!(sa.unique_id);
                    out["email"] = json!(sa.email);
                    out["email_verified"] = json!("true");
                }
            }
        }
        return Ok(Some(out));
    }
    Ok(None)
}

// ---------------------------------------------------------------------------------------
// Authorization requests

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResponseType {
    pub code: bool,
    pub id_token: bool,
    pub token: bool,
}

impl ResponseType {
    fn parse(s: &str) -> Option<ResponseType> {
        let mut rt = ResponseType::default();
        for part in s.split_whitespace() {
            match part {
                "code" if !rt.code => rt.code = true,
                "id_token" if !rt.id_token => rt.id_token = true,
                "token" if !rt.token => rt.token = true,
                _ => return None,
            }
        }
        (rt.code || rt.id_token || rt.token).then_some(rt)
    }
    /// Implicit and hybrid responses go in the fragment; pure `code` in the query.
    fn fragment(self) -> bool {
        self.id_token || self.token
    }
}

/// A checked authorization request.
#[derive(Debug, Clone)]
pub struct AuthRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub response_type: ResponseType,
    pub scope: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub prompt: Option<String>,
    pub login_hint: Option<String>,
    pub code_challenge: Option<String>,
    pub response_mode_fragment: bool,
}

/// Why an authorization request cannot proceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// The client or redirect URI cannot be trusted: show an error page, never redirect.
    Page(String),
    /// Tell the client through its redirect URI.
    Redirect { url: String },
}

/// The parameters an authorization request carries through the sign-in page's forms.
pub const AUTH_PARAMS: &[&str] = &[
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "nonce",
    "prompt",
    "login_hint",
    "code_challenge",
    "code_challenge_method",
    "response_mode",
    "access_type",
    "include_granted_scopes",
    "hd",
];

/// Builds `redirect_uri` with `params` in its query or fragment.
pub fn redirect_with(redirect_uri: &str, fragment: bool, params: &[(&str, &str)]) -> String {
    let encoded = serde_urlencoded::to_string(params).unwrap_or_default();
    if fragment {
        format!("{redirect_uri}#{encoded}")
    } else if redirect_uri.contains('?') {
        format!("{redirect_uri}&{encoded}")
    } else {
        format!("{redirect_uri}?{encoded}")
    }
}

/// Checks an authorization request: client and redirect URI first (failures there never
/// redirect), then everything else (failures redirect with `error=`).
pub async fn check_auth_request(state: &IdpState, p: &Params) -> Result<AuthRequest, AuthFailure> {
    let Some(client_id) = p.get("client_id") else {
        return Err(AuthFailure::Page(
            "Missing required parameter: client_id".into(),
        ));
    };
    let client = match client(state, client_id).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Err(AuthFailure::Page(format!(
                "The OAuth client was not found (invalid_client): {client_id:.200}"
            )));
        }
        Err(e) => {
            tracing::error!(error = %e, "client lookup failed");
            return Err(AuthFailure::Page("Internal error".into()));
        }
    };
    let Some(redirect_uri) = p.get("redirect_uri") else {
        return Err(AuthFailure::Page(
            "Missing required parameter: redirect_uri".into(),
        ));
    };
    if !client.accepts_redirect(redirect_uri) {
        return Err(AuthFailure::Page(format!(
            "redirect_uri_mismatch: {redirect_uri:.300} is not registered for this client"
        )));
    }
    let rt_param = p.get("response_type");
    let rt = rt_param.and_then(ResponseType::parse);
    let fragment_default = rt.is_some_and(ResponseType::fragment);
    let fragment = match p.get("response_mode") {
        Some("fragment") => true,
        Some("query") if !fragment_default => false,
        _ => fragment_default,
    };
    let fail = |error: &str, description: &str| {
        let mut params = vec![("error", error), ("error_description", description)];
        if let Some(s) = p.get("state") {
            params.push(("state", s));
        }
        AuthFailure::Redirect {
            url: redirect_with(redirect_uri, fragment, &params),
        }
    };
    let Some(rt) = rt else {
        return Err(fail(
            "unsupported_response_type",
            "response_type must be code, id_token, token or a combination",
        ));
    };
    let scope = p.get("scope").unwrap_or("");
    if rt.id_token && !scope.split_whitespace().any(|s| s == "openid") {
        return Err(fail("invalid_scope", "id_token needs the openid scope"));
    }
    if scope.is_empty() {
        return Err(fail("invalid_request", "Missing required parameter: scope"));
    }
    let nonce = p.get("nonce").map(str::to_owned);
    if rt.id_token && nonce.is_none() {
        return Err(fail("invalid_request", "Missing required parameter: nonce"));
    }
    if nonce.as_ref().is_some_and(|n| n.len() > MAX_NONCE) {
        return Err(fail("invalid_request", "nonce is too long"));
    }
    // RFC 7636 as Google implements it: S256, or `plain` (also when no method is named).
    // A plain challenge is stored as its S256 form, so the exchange checks both alike.
    let code_challenge = match (p.get("code_challenge"), p.get("code_challenge_method")) {
        (None, None) => None,
        (Some(c), Some("S256"))
            if c.len() == 43
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Some(c.to_owned())
        }
        (Some(_), Some("S256")) => {
            return Err(fail(
                "invalid_request",
                "code_challenge must be a base64url SHA-256",
            ));
        }
        (Some(c), None | Some("plain")) if is_code_verifier(c) => {
            Some(b64url(&sha256(c.as_bytes())))
        }
        (Some(_), None | Some("plain")) => {
            return Err(fail(
                "invalid_request",
                "a plain code_challenge must be 43-128 characters of A-Z a-z 0-9 - . _ ~",
            ));
        }
        _ => {
            return Err(fail(
                "invalid_request",
                "code_challenge_method must be S256 or plain (with a code_challenge)",
            ));
        }
    };
    let prompt = p.get("prompt").map(str::to_owned);
    if prompt.as_deref().is_some_and(|pr| {
        pr.split_whitespace()
            .any(|x| !matches!(x, "none" | "consent" | "select_account" | "login"))
    }) {
        return Err(fail("invalid_request", "Invalid prompt"));
    }
    Ok(AuthRequest {
        client_id: client.client_id,
        redirect_uri: redirect_uri.to_owned(),
        response_type: rt,
        scope: scope.to_owned(),
        state: p.get("state").map(str::to_owned),
        nonce,
        prompt,
        login_hint: p.get("login_hint").map(str::to_owned),
        code_challenge,
        response_mode_fragment: fragment,
    })
}

impl AuthRequest {
    pub fn prompt_none(&self) -> bool {
        self.prompt
            .as_deref()
            .is_some_and(|p| p.split_whitespace().any(|x| x == "none"))
    }

    /// The redirect that reports `error` to the client.
    pub fn error_redirect(&self, error: &str, description: &str) -> String {
        let mut params = vec![("error", error), ("error_description", description)];
        if let Some(s) = &self.state {
            params.push(("state", s));
        }
        redirect_with(&self.redirect_uri, self.response_mode_fragment, &params)
    }
}

/// Completes an authorization request for `account`: mints what `response_type` asks for
/// and returns the redirect URL.
pub async fn complete(
    state: &IdpState,
    req: &AuthRequest,
    account: &Account,
    now: i64,
) -> Result<String, IdpError> {
    let lifetime = state.config().token_lifetime;
    let mut statements = Vec::new();
    let mut out: Vec<(&str, String)> = Vec::new();
    if let Some(s) = &req.state {
        out.push(("state", s.clone()));
    }
    let mut issued_code = None;
    if req.response_type.code {
        let code = format!("4/{}", random_token(32));
        statements.push(Statement::new(
            "INSERT INTO idp_codes (code_hash, client_id, redirect_uri, sub, scope, nonce, code_challenge, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            vec![
                secret_hash(&code).into(),
                req.client_id.clone().into(),
                req.redirect_uri.clone().into(),
                account.sub.clone().into(),
                req.scope.clone().into(),
                req.nonce.clone().into(),
                req.code_challenge.clone().into(),
                (now + CODE_LIFETIME).into(),
            ],
        ));
        out.push(("code", code.clone()));
        issued_code = Some(code);
    }
    let mut access = None;
    if req.response_type.token {
        let (token, stmt) = new_access_token(
            Subject::User,
            &account.sub,
            &req.client_id,
            &req.scope,
            now + lifetime,
            None,
        );
        statements.push(stmt);
        out.push(("access_token", token.clone()));
        out.push(("token_type", "Bearer".into()));
        out.push(("expires_in", (lifetime - 1).to_string()));
        access = Some(token);
    }
    if req.response_type.id_token {
        let mut claims = user_id_token_claims(
            account,
            &req.client_id,
            ScopeFlags::from_scope(&req.scope),
            req.nonce.as_deref(),
            access.as_deref(),
            now,
            lifetime,
        );
        if let Some(code) = &issued_code {
            // OIDC Core 3.3.2.11: the hybrid flow's ID token binds the code beside it, so a
            // code swapped in the front channel is caught by the client.
            claims.insert("c_hash".into(), json!(at_hash(code)));
        }
        out.push(("id_token", state.sign(RingName::Google, &claims)?));
    }
    out.push(("scope", req.scope.clone()));
    out.push(("authuser", "0".into()));
    out.push(("prompt", "none".into()));
    if !statements.is_empty() {
        state.store().transaction(&statements, false).await?;
    }
    let pairs: Vec<(&str, &str)> = out.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Ok(redirect_with(
        &req.redirect_uri,
        req.response_mode_fragment,
        &pairs,
    ))
}

// ---------------------------------------------------------------------------------------
// The token endpoint

pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Client credentials from the form or HTTP Basic (never both).
#[derive(Clone, Default)]
pub struct ClientAuth {
    pub basic: Option<(String, String)>,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field(
                "basic_client_id",
                &self.basic.as_ref().map(|b| b.0.as_str()),
            )
            .field("secret", &"<hidden>")
            .finish()
    }
}

fn client_credentials<'a>(
    p: &'a Params,
    auth: &'a ClientAuth,
) -> Result<(Option<&'a str>, Option<&'a str>), OAuthError> {
    match &auth.basic {
        Some((id, secret)) => {
            if p.get("client_secret").is_some() {
                return Err(OAuthError::new(
                    "invalid_request",
                    "Client credentials in both the header and the body",
                ));
            }
            if p.get("client_id").is_some_and(|c| c != id) {
                return Err(OAuthError::new("invalid_client", "client_id mismatch"));
            }
            // `id:` is a public client's way of saying "no secret" in the header (requests-
            // oauthlib, Go's oauth2 in header style), as `client_secret=` is in the form.
            let secret = Some(secret.as_str()).filter(|s| !s.is_empty());
            Ok((Some(id.as_str()), secret))
        }
        None => Ok((p.get("client_id"), p.get("client_secret"))),
    }
}

/// Authenticates the client: a client with a secret must present it (with PKCE too, and to
/// refresh); a client without one must not send one.
async fn authenticate_client(
    state: &IdpState,
    client_id: Option<&str>,
    secret: Option<&str>,
) -> Result<Client, OAuthError> {
    let Some(client_id) = client_id else {
        return Err(OAuthError::new(
            "invalid_request",
            "Missing required parameter: client_id",
        ));
    };
    let Some(c) = client(state, client_id).await? else {
        return Err(OAuthError::new(
            "invalid_client",
            "The OAuth client was not found.",
        ));
    };
    match (&c.client_secret, secret) {
        (Some(expected), Some(given)) if ct_eq(expected.as_bytes(), given.as_bytes()) => Ok(c),
        (Some(_), Some(_)) => Err(OAuthError::new("invalid_client", "Unauthorized")),
        // As Google: a client that has a secret must send it, with PKCE too and for a
        // refresh, or its codes and refresh tokens would be bearer tokens for anyone.
        (Some(_), None) => Err(OAuthError::new(
            "invalid_client",
            "client_secret is missing.",
        )),
        (None, Some(_)) => Err(OAuthError::new("invalid_client", "Unauthorized")),
        _ => Ok(c),
    }
}

/// `/token`: dispatches on `grant_type`.
pub async fn token(
    state: &IdpState,
    p: &Params,
    auth: &ClientAuth,
    now: i64,
) -> Result<Json, OAuthError> {
    match p.get("grant_type") {
        Some("authorization_code") => exchange_code(state, p, auth, now).await,
        Some("refresh_token") => refresh(state, p, auth, now).await,
        Some(JWT_BEARER) => {
            let assertion = p.require("assertion")?;
            service_accounts::exchange_assertion(state, assertion, now).await
        }
        Some(other) => Err(OAuthError::new(
            "unsupported_grant_type",
            format!("Invalid grant_type: {other:.100}"),
        )),
        None => Err(OAuthError::new(
            "unsupported_grant_type",
            "Invalid grant_type: ",
        )),
    }
}

/// RFC 7636's `code-verifier` (and a plain challenge): 43-128 unreserved characters.
fn is_code_verifier(text: &str) -> bool {
    (43..=128).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// `challenge` is the S256 form (a plain challenge was stored as its hash).
fn pkce_ok(verifier: &str, challenge: &str) -> bool {
    is_code_verifier(verifier)
        && ct_eq(
            b64url(&sha256(verifier.as_bytes())).as_bytes(),
            challenge.as_bytes(),
        )
}

async fn exchange_code(
    state: &IdpState,
    p: &Params,
    auth: &ClientAuth,
    now: i64,
) -> Result<Json, OAuthError> {
    let code = p.require("code")?;
    let redirect_uri = p.require("redirect_uri")?;
    let (client_id, secret) = client_credentials(p, auth)?;
    let hash = secret_hash(code);
    let row = state
        .store()
        .fetch_optional(
            "SELECT client_id, redirect_uri, sub, scope, nonce, code_challenge, expires_at, used FROM idp_codes WHERE code_hash = $1",
            &[hash.clone().into()],
        )
        .await
        .map_err(IdpError::from)?;
    let bad_grant = || OAuthError::new("invalid_grant", "Malformed auth code.");
    let Some(row) = row else {
        return Err(bad_grant());
    };
    let code_client = row.text(0).map_err(IdpError::from)?;
    let code_redirect = row.text(1).map_err(IdpError::from)?;
    let sub = row.text(2).map_err(IdpError::from)?;
    let scope = row.text(3).map_err(IdpError::from)?;
    let nonce = row.opt_text(4).map_err(IdpError::from)?;
    let challenge = row.opt_text(5).map_err(IdpError::from)?;
    let expires_at = row.int(6).map_err(IdpError::from)?;
    if row.bool(7).map_err(IdpError::from)? {
        revoke_issued_for_code(state, &hash).await?;
        return Err(OAuthError::new("invalid_grant", "Bad Request"));
    }
    if expires_at <= now {
        return Err(OAuthError::new("invalid_grant", "Bad Request"));
    }
    let verifier = p.get("code_verifier");
    if let Some(ch) = &challenge {
        match verifier {
            Some(v) if pkce_ok(v, ch) => {}
            Some(_) => return Err(OAuthError::new("invalid_grant", "Invalid code verifier.")),
            None => return Err(OAuthError::new("invalid_grant", "Missing code verifier.")),
        }
    } else if verifier.is_some() {
        return Err(OAuthError::new(
            "invalid_request",
            "code_verifier without code_challenge",
        ));
    }
    let client = authenticate_client(state, client_id, secret).await?;
    if client.client_id != code_client {
        return Err(OAuthError::new("invalid_grant", "Bad Request"));
    }
    if redirect_uri != code_redirect {
        return Err(OAuthError::new("redirect_uri_mismatch", "Bad Request"));
    }
    let Some(account) = accounts::by_sub(state.store(), &sub).await? else {
        return Err(OAuthError::new("invalid_grant", "Account has been deleted"));
    };
    let lifetime = state.config().token_lifetime;
    // The code's hash names the grant this exchange starts.
    let (access, access_stmt) = new_access_token(
        Subject::User,
        &sub,
        &client.client_id,
        &scope,
        now + lifetime,
        Some(&hash),
    );
    let refresh = format!("1//{}", random_token(48));
    let statements = [
        // Consume the code first: a replay (or a concurrent duplicate) changes no row and
        // aborts the whole transaction.
        Statement::new(
            "UPDATE idp_codes SET used = 1 WHERE code_hash = $1 AND used = 0",
            vec![hash.clone().into()],
        ),
        access_stmt,
        Statement::new(
            "INSERT INTO idp_refresh_tokens (token_hash, kind, audience, subject, scope, auth_time, created_at, grant_hash)
             VALUES ($1, 'google', $2, $3, $4, $5, $6, $7)",
            vec![
                secret_hash(&refresh).into(),
                client.client_id.clone().into(),
                sub.clone().into(),
                scope.clone().into(),
                now.into(),
                now.into(),
                hash.clone().into(),
            ],
        ),
    ];
    let id_token = if scope.split_whitespace().any(|s| s == "openid") {
        let claims = user_id_token_claims(
            &account,
            &client.client_id,
            ScopeFlags::from_scope(&scope),
            nonce.as_deref(),
            Some(&access),
            now,
            lifetime,
        );
        Some(state.sign(RingName::Google, &claims)?)
    } else {
        None
    };
    if state
        .store()
        .transaction(&statements, true)
        .await
        .map_err(IdpError::from)?
        .is_none()
    {
        // Another request used the code meanwhile: this one is its replay.
        revoke_issued_for_code(state, &hash).await?;
        return Err(OAuthError::new("invalid_grant", "Bad Request"));
    }
    let mut body = json!({
        "access_token": access,
        "expires_in": lifetime - 1,
        "refresh_token": refresh,
        "scope": scope,
        "token_type": "Bearer",
    });
    if let Some(t) = id_token {
        body["id_token"] = json!(t);
    }
    Ok(body)
}

/// A code used twice was stolen (or leaked) somewhere: the tokens its first use issued,
/// and those its refresh token minted since, are revoked, as RFC 6749 4.1.2 and the OAuth
/// security BCP ask, so that whoever holds them, the client or the thief, must sign in again.
async fn revoke_issued_for_code(state: &IdpState, code_hash: &str) -> Result<(), OAuthError> {
    revoke_grant(state, code_hash).await?;
    tracing::warn!(
        severity = "WARNING",
        "an authorization code was used twice; the tokens it issued are revoked"
    );
    Ok(())
}

async fn refresh(
    state: &IdpState,
    p: &Params,
    auth: &ClientAuth,
    now: i64,
) -> Result<Json, OAuthError> {
    let token = p.require("refresh_token")?;
    let (client_id, secret) = client_credentials(p, auth)?;
    let row = state
        .store()
        .fetch_optional(
            "SELECT audience, subject, scope, revoked, grant_hash FROM idp_refresh_tokens WHERE token_hash = $1 AND kind = 'google'",
            &[secret_hash(token).into()],
        )
        .await
        .map_err(IdpError::from)?;
    let Some(row) = row else {
        return Err(OAuthError::new("invalid_grant", "Bad Request"));
    };
    let audience = row.text(0).map_err(IdpError::from)?;
    let sub = row.text(1).map_err(IdpError::from)?;
    let scope = row.text(2).map_err(IdpError::from)?;
    if row.bool(3).map_err(IdpError::from)? {
        return Err(OAuthError::new(
            "invalid_grant",
            "Token has been expired or revoked.",
        ));
    }
    let grant = row.opt_text(4).map_err(IdpError::from)?;
    // A public client (no secret) refreshes with its id alone; any other sends its secret.
    let client = authenticate_client(state, client_id, secret).await?;
    if client.client_id != audience {
        return Err(OAuthError::new("invalid_grant", "Bad Request"));
    }
    let Some(account) = accounts::by_sub(state.store(), &sub).await? else {
        return Err(OAuthError::new("invalid_grant", "Account has been deleted"));
    };
    let lifetime = state.config().token_lifetime;
    let (access, stmt) = new_access_token(
        Subject::User,
        &sub,
        &audience,
        &scope,
        now + lifetime,
        grant.as_deref(),
    );
    let mut body = json!({
        "access_token": access,
        "expires_in": lifetime - 1,
        "scope": scope,
        "token_type": "Bearer",
    });
    if scope.split_whitespace().any(|s| s == "openid") {
        let claims = user_id_token_claims(
            &account,
            &audience,
            ScopeFlags::from_scope(&scope),
            None,
            Some(&access),
            now,
            lifetime,
        );
        body["id_token"] = json!(state.sign(RingName::Google, &claims)?);
    }
    state
        .store()
        .transaction(&[stmt], false)
        .await
        .map_err(IdpError::from)?;
    Ok(body)
}

/// Discovery: Google's field set with this emulator's endpoints, listing only what they do
/// (Google's also names the device flow and the response type `none`, which are not here: a
/// client choosing from this document must not pick what would then be refused).
pub fn discovery(base: &str) -> Json {
    json!({
        "issuer": GOOGLE_ISSUER,
        "authorization_endpoint": format!("{base}/o/oauth2/v2/auth"),
        "token_endpoint": format!("{base}/token"),
        "userinfo_endpoint": format!("{base}/v1/userinfo"),
        "revocation_endpoint": format!("{base}/revoke"),
        "jwks_uri": format!("{base}/oauth2/v3/certs"),
        "response_types_supported": [
            "code", "token", "id_token", "code token", "code id_token",
            "token id_token", "code token id_token"
        ],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "claims_supported": [
            "aud", "email", "email_verified", "exp", "family_name", "given_name", "iat",
            "iss", "name", "picture", "sub"
        ],
        "code_challenge_methods_supported": ["plain", "S256"],
        "grant_types_supported": [
            "authorization_code", "refresh_token", JWT_BEARER
        ],
    })
}

/// Revokes a refresh token or access token (`/revoke?token=`), and with it the rest of its
/// grant, as Google: "If the token is an access token and it has a corresponding refresh
/// token, the refresh token will also be revoked", and the access tokens of a revoked
/// refresh token stop working. Unknown tokens: `invalid_token`.
pub async fn revoke(state: &IdpState, token: &str) -> Result<(), OAuthError> {
    let hash = secret_hash(token);
    let row = state
        .store()
        .fetch_optional(
            "SELECT grant_hash FROM idp_refresh_tokens WHERE token_hash = $1
             UNION ALL SELECT grant_hash FROM idp_access_tokens WHERE token_hash = $1",
            &[hash.clone().into()],
        )
        .await
        .map_err(IdpError::from)?;
    let Some(row) = row else {
        return Err(OAuthError::new("invalid_token", "Token expired or revoked"));
    };
    match row.opt_text(0).map_err(IdpError::from)? {
        Some(grant) => revoke_grant(state, &grant).await,
        // A token outside any grant (implicit flow, service account, Firebase session).
        None => {
            let statements = [
                Statement::new(
                    "UPDATE idp_refresh_tokens SET revoked = 1 WHERE token_hash = $1",
                    vec![hash.clone().into()],
                ),
                Statement::new(
                    "DELETE FROM idp_access_tokens WHERE token_hash = $1",
                    vec![Value::Text(hash)],
                ),
            ];
            state
                .store()
                .transaction(&statements, false)
                .await
                .map_err(IdpError::from)?;
            Ok(())
        }
    }
}

/// Revokes the grant's refresh token and deletes its access tokens, together.
async fn revoke_grant(state: &IdpState, grant: &str) -> Result<(), OAuthError> {
    let statements = [
        Statement::new(
            "UPDATE idp_refresh_tokens SET revoked = 1 WHERE grant_hash = $1",
            vec![grant.into()],
        ),
        Statement::new(
            "DELETE FROM idp_access_tokens WHERE grant_hash = $1",
            vec![grant.into()],
        ),
    ];
    state
        .store()
        .transaction(&statements, false)
        .await
        .map_err(IdpError::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(kind: ClientKind, uris: &[&str], ext: Option<&str>) -> Client {
        Client {
            client_id: "c".into(),
            client_secret: None,
            kind,
            redirect_uris: uris.iter().map(|s| (*s).to_owned()).collect(),
            extension_id: ext.map(str::to_owned),
            name: "n".into(),
        }
    }

    #[test]
    fn redirect_rules() {
        let web = client(ClientKind::Web, &["https://app.example/cb"], None);
        assert!(web.accepts_redirect("https://app.example/cb"));
        assert!(!web.accepts_redirect("https://app.example/cb2"));
        assert!(!web.accepts_redirect("https://app.example/cb#x"));
        assert!(!web.accepts_redirect("http://127.0.0.1:1/cb"));
        let default = client(ClientKind::Default, &[], None);
        assert!(default.accepts_redirect("http://127.0.0.1:8080/x?y=1"));
        assert!(default.accepts_redirect("http://localhost/"));
        assert!(default.accepts_redirect("http://[::1]:9/cb"));
        assert!(!default.accepts_redirect("https://127.0.0.1/cb"));
        assert!(!default.accepts_redirect("http://127.0.0.2/cb"));
        assert!(!default.accepts_redirect("http://evil@127.0.0.1/cb"));
        assert!(!default.accepts_redirect("http://localhost.evil.example/cb"));
        let id = "abcdefghijklmnopabcdefghijklmnop";
        let ext = client(ClientKind::Extension, &[], Some(id));
        assert!(ext.accepts_redirect(&format!("https://{id}.chromiumapp.org/")));
        assert!(ext.accepts_redirect(&format!("https://{id}.chromiumapp.org/cb?x")));
        assert!(!ext.accepts_redirect(&format!("http://{id}.chromiumapp.org/")));
        assert!(!ext.accepts_redirect("https://aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.chromiumapp.org/"));
        assert!(!ext.accepts_redirect(&format!("https://{id}.chromiumapp.org:444/")));
    }

    #[test]
    fn response_types() {
        assert_eq!(
            ResponseType::parse("id_token"),
            Some(ResponseType {
                id_token: true,
                ..Default::default()
            })
        );
        assert!(ResponseType::parse("code id_token").unwrap().fragment());
        assert!(!ResponseType::parse("code").unwrap().fragment());
        assert!(ResponseType::parse("code code").is_none());
        assert!(ResponseType::parse("bogus").is_none());
        assert!(ResponseType::parse("").is_none());
    }

    #[test]
    fn pkce_s256() {
        // RFC 7636 appendix B.
        let v = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(pkce_ok(v, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
        assert!(!pkce_ok(v, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"));
        assert!(!pkce_ok(
            "short",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
    }

    #[test]
    fn at_hash_is_left_half() {
        // OIDC Core example: access token "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y" ->
        // at_hash "77QmUPtjPfzWtF2AnpK9RQ".
        assert_eq!(
            at_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }

    #[test]
    fn debug_hides_secrets() {
        let p = Params::parse("client_secret=s3cr3t&code_verifier=v3r1f13r").unwrap();
        let shown = format!("{p:?}");
        assert!(
            shown.contains("client_secret")
                && !shown.contains("s3cr3t")
                && !shown.contains("v3r1f13r")
        );
        let a = ClientAuth {
            basic: Some(("id".into(), "s3cr3t".into())),
        };
        assert!(!format!("{a:?}").contains("s3cr3t"));
    }

    #[test]
    fn params_refuse_duplicates_and_bound_size() {
        assert!(Params::parse("a=1&a=2").is_err());
        assert!(Params::parse(&format!("a={}", "x".repeat(MAX_PARAM + 1))).is_err());
        let p = Params::parse("a=1&b=").unwrap();
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), None);
    }
}
