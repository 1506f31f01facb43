//! What the app is told: how the page signs users in (authorization endpoint, client id:
//! the emulator by default, real Google / Identity Platform when configured) and which
//! issuers the server trusts (the `google` profile, optionally `firebase:PROJECT`).

use gatehouse_verify::profile::{FIREBASE_CERTS_URL, GOOGLE_JWKS_URL};
use gatehouse_verify::{BuildError, IssuerProfile, Verifier};

/// The emulator's address when nothing else is said (Firebase's emulator port).
pub const DEFAULT_IDP: &str = "http://127.0.0.1:9099";

/// The emulator's default web client (`gatehouse_idp::config::DEFAULT_WEB_CLIENT_ID`; the
/// vote crate does not depend on the emulator). It accepts loopback redirect URIs.
pub const EMULATOR_WEB_CLIENT_ID: &str = "gatehouse-web.apps.googleusercontent.com";

/// Where the sign-in popup comes back to, on the app's own origin.
pub const CALLBACK_PATH: &str = "/auth/callback";

/// The page's sign-in settings, handed to the browser as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInConfig {
    /// The OAuth 2.0 authorization endpoint (`.../o/oauth2/v2/auth`).
    pub authorization_endpoint: String,
    /// The OAuth client the page signs in as; tokens carry it as `aud`.
    pub client_id: String,
    pub scope: String,
    /// "Sign In with {provider_label}".
    pub provider_label: String,
    /// When set, the page trades the Google ID token for a Firebase / Identity Platform
    /// session (`accounts:signInWithIdp`) and renews it with the refresh token, as the
    /// seed's Firebase SDK does.
    pub firebase: Option<FirebaseClient>,
}

/// The Firebase / Identity Platform endpoints the page talks to (public values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirebaseClient {
    pub api_key: String,
    /// `https://identitytoolkit.googleapis.com`, or the emulator's
    /// `http://127.0.0.1:9099/identitytoolkit.googleapis.com`.
    pub identity_toolkit: String,
    /// `https://securetoken.googleapis.com`, or the emulator's counterpart.
    pub secure_token: String,
}

impl FirebaseClient {
    /// Through the emulator at `idp`, as `connectAuthEmulator` points the SDK.
    pub fn emulator(idp: &str, api_key: &str) -> Self {
        let idp = idp.trim_end_matches('/');
        FirebaseClient {
            api_key: api_key.to_owned(),
            identity_toolkit: format!("{idp}/identitytoolkit.googleapis.com"),
            secure_token: format!("{idp}/securetoken.googleapis.com"),
        }
    }

    /// Google's Identity Platform / Firebase Auth.
    pub fn google(api_key: &str) -> Self {
        FirebaseClient {
            api_key: api_key.to_owned(),
            identity_toolkit: "https://identitytoolkit.googleapis.com".to_owned(),
            secure_token: "https://securetoken.googleapis.com".to_owned(),
        }
    }
}

/// `scheme://host[:port]` of a URL, for the page's Content-Security-Policy.
fn origin_of(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    match parsed.origin() {
        url::Origin::Tuple(..) => Some(parsed.origin().ascii_serialization()),
        url::Origin::Opaque(_) => None,
    }
}

impl SignInConfig {
    /// Sign-in through the emulator at `idp` (e.g. `http://127.0.0.1:9099`).
    pub fn emulator(idp: &str, client_id: &str) -> Self {
        SignInConfig {
            authorization_endpoint: format!("{}/o/oauth2/v2/auth", idp.trim_end_matches('/')),
            client_id: client_id.to_owned(),
            scope: "openid email profile".to_owned(),
            provider_label: "Google".to_owned(),
            firebase: None,
        }
    }

    /// Sign-in through Google itself.
    pub fn google(client_id: &str) -> Self {
        SignInConfig {
            authorization_endpoint: "https://accounts.google.com/o/oauth2/v2/auth".to_owned(),
            ..SignInConfig::emulator("", client_id)
        }
    }

    /// What the browser module reads (nothing secret: a client id is public).
    pub fn to_client_json(&self) -> serde_json::Value {
        serde_json::json!({
            "authorizationEndpoint": self.authorization_endpoint,
            "clientId": self.client_id,
            "scope": self.scope,
            "callbackPath": CALLBACK_PATH,
            // Re-run sign-in when the token has less than this left (seconds).
            "refreshBeforeExpiry": 300,
            "firebase": self.firebase.as_ref().map(|f| serde_json::json!({
                "apiKey": f.api_key,
                "identityToolkit": f.identity_toolkit,
                "secureToken": f.secure_token,
            })),
        })
    }

    /// Origins besides the app's own that the page's scripts may call (`connect-src`).
    pub fn connect_origins(&self) -> Vec<String> {
        let mut origins = Vec::new();
        if let Some(f) = &self.firebase {
            for url in [&f.identity_toolkit, &f.secure_token] {
                if let Some(o) = origin_of(url) {
                    if !origins.contains(&o) {
                        origins.push(o);
                    }
                }
            }
        }
        origins
    }
}

/// Which tokens the server accepts on a vote and on the authenticated endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustConfig {
    /// Accepted `aud` values for Google-issued ID tokens: the web client id(s).
    pub client_ids: Vec<String>,
    /// Where Google's keys come from (the emulator's `/oauth2/v3/certs`, or Google's).
    pub google_keys_url: String,
    /// Firebase / Identity Platform project and where its keys come from.
    pub firebase: Option<(String, String)>,
}

impl TrustConfig {
    /// Trust the emulator at `idp` as Google.
    pub fn emulator(idp: &str, client_ids: Vec<String>) -> Self {
        TrustConfig {
            client_ids,
            google_keys_url: format!("{}/oauth2/v3/certs", idp.trim_end_matches('/')),
            firebase: None,
        }
    }

    /// Trust Google itself.
    pub fn google(client_ids: Vec<String>) -> Self {
        TrustConfig {
            client_ids,
            google_keys_url: GOOGLE_JWKS_URL.to_owned(),
            firebase: None,
        }
    }

    /// Also accept Firebase / Identity Platform tokens of `project`, keys at `keys_url`
    /// (the emulator's `/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com`,
    /// or `None` for Google's).
    pub fn with_firebase(mut self, project: &str, keys_url: Option<&str>) -> Self {
        self.firebase = Some((
            project.to_owned(),
            keys_url.unwrap_or(FIREBASE_CERTS_URL).to_owned(),
        ));
        self
    }

    /// The emulator's Firebase key document under `idp`.
    pub fn emulator_firebase_keys(idp: &str) -> String {
        format!(
            "{}/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com",
            idp.trim_end_matches('/')
        )
    }

    pub fn verifier(&self) -> Result<Verifier, BuildError> {
        let mut builder = Verifier::builder().profile(
            IssuerProfile::google()
                .with_jwks_url(&self.google_keys_url)
                .with_audiences(self.client_ids.iter().cloned()),
        );
        if let Some((project, keys)) = &self.firebase {
            builder = builder.profile(IssuerProfile::firebase(project).with_jwks_url(keys));
        }
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firebase_mode_names_its_endpoints_and_origins() {
        let mut c = SignInConfig::emulator("http://127.0.0.1:9099/", "web");
        assert!(c.connect_origins().is_empty());
        assert!(c.to_client_json()["firebase"].is_null());
        c.firebase = Some(FirebaseClient::emulator("http://127.0.0.1:9099", "key"));
        assert_eq!(c.connect_origins(), ["http://127.0.0.1:9099"]);
        let json = c.to_client_json();
        assert_eq!(
            json["firebase"]["identityToolkit"],
            "http://127.0.0.1:9099/identitytoolkit.googleapis.com"
        );
        c.firebase = Some(FirebaseClient::google("key"));
        assert_eq!(
            c.connect_origins(),
            [
                "https://identitytoolkit.googleapis.com",
                "https://securetoken.googleapis.com"
            ]
        );
    }
}
