//! The emulator's settings: where it is reachable, which project it pretends to be, and
//! its key schedule.

use crate::util::numeric_id;

/// Settings for one emulator. `base_url` is the URL clients reach it at (token endpoint,
/// discovery, key files' `token_uri` are built from it).
#[derive(Debug, Clone)]
pub struct IdpConfig {
    /// `http://127.0.0.1:9099`, no trailing slash.
    pub base_url: String,
    pub project_id: String,
    pub project_number: String,
    /// The service account the main port's metadata server speaks for.
    pub default_service_account: String,
    pub region: String,
    pub zone: String,
    /// `Cache-Control: max-age` of key documents; a new key is published at least this long
    /// before it signs.
    pub key_max_age: i64,
    /// How long a key signs before its successor takes over.
    pub key_rotation: i64,
    /// Lifetime of ID and access tokens (Google: one hour).
    pub token_lifetime: i64,
    /// Add alice@example.com and bob@example.com on first start.
    pub seed_demo_users: bool,
    /// The default web client's id (accepts loopback redirect URIs on any port).
    pub default_client_id: String,
    /// Names the emulator answers to besides any IP address, `localhost`, Google's names and
    /// the base URL's host (a name, or `.domain` for it and its subdomains); see [`hosts`].
    ///
    /// [`hosts`]: crate::hosts
    pub allowed_hosts: Vec<String>,
}

/// The default web client's id, stable so other parts and docs can name it.
pub const DEFAULT_WEB_CLIENT_ID: &str = "gatehouse-web.apps.googleusercontent.com";

impl IdpConfig {
    pub fn new(base_url: &str, project_id: &str) -> IdpConfig {
        let project_number = numeric_id(&format!("project:{project_id}"), 12);
        IdpConfig {
            base_url: base_url.trim_end_matches('/').to_owned(),
            project_id: project_id.to_owned(),
            default_service_account: format!(
                "{project_number}-compute@developer.gserviceaccount.com"
            ),
            project_number,
            region: "us-central1".into(),
            zone: "us-central1-a".into(),
            key_max_age: 3600,
            key_rotation: 7 * 86_400,
            token_lifetime: 3600,
            seed_demo_users: true,
            default_client_id: DEFAULT_WEB_CLIENT_ID.into(),
            allowed_hosts: Vec::new(),
        }
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.base_url)
    }
}
