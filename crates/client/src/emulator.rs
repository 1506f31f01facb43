//! The emulator user source: asks the Gatehouse emulator (`gatehouse idp`) for a test user's
//! ID token, adding the user if new, as its sign-in page's "use another account" does.
//!
//! Contract (emulator-only, like the Firebase emulator's `/emulator/v1/...` paths):
//! `POST {idp}/emulator/v1/users/token` with JSON `{"email": E, "audience": A}` (`audience`
//! optional: the emulator's default web client id) answers `{"id_token": "..."}`, or an OAuth
//! error body (`{"error": "invalid_client", ...}` for an audience that is no registered client).

use crate::error::Error;
use crate::source::{IdToken, IdTokenSource};
use crate::transport::{self, success_body, unreachable};
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};

/// Where the emulator mints a test user's token.
pub const EMULATOR_USER_TOKEN_PATH: &str = "/emulator/v1/users/token";
const SERVICE: &str = "emulator";

/// A test user of the emulator at `idp`.
#[derive(Debug, Clone)]
pub struct EmulatorUser {
    url: String,
    email: String,
    http: reqwest::Client,
}

impl EmulatorUser {
    /// The user `email` of the emulator whose base URL is `idp` (e.g. `http://127.0.0.1:9099`).
    pub fn new(idp: &str, email: &str) -> Result<Self, Error> {
        let base = crate::metadata::base_url(idp)?;
        if !email.contains('@') {
            return Err(Error::InvalidEmail {
                email: email.to_owned(),
            });
        }
        Ok(EmulatorUser {
            url: format!("{base}{EMULATOR_USER_TOKEN_PATH}"),
            email: email.to_owned(),
            // The emulator is a local development service: never through a proxy.
            http: transport::direct_http_client()?,
        })
    }

    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    pub fn email(&self) -> &str {
        &self.email
    }

    /// A token for the user; `audience` `None` means the emulator's default web client.
    pub async fn mint_for(&self, audience: Option<&str>) -> Result<IdToken, Error> {
        let mut request = json!({"email": self.email});
        if let Some(audience) = audience {
            request["audience"] = json!(audience);
        }
        let url = self.url.as_str();
        let response = self
            .http
            .post(url)
            .json(&request)
            .send()
            .await
            .map_err(|e| unreachable(SERVICE, url, e))?;
        let body = success_body(SERVICE, url, response).await?;
        let bad = |detail: &str| Error::BadAnswer {
            service: SERVICE,
            url: url.to_owned(),
            detail: detail.to_owned(),
        };
        let answer: Value = serde_json::from_slice(&body).map_err(|_| bad("answer is not JSON"))?;
        let token = answer
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no `id_token` in the answer"))?;
        IdToken::from_minted(SERVICE, url, token)
    }
}

impl IdTokenSource for EmulatorUser {
    fn mint<'a>(&'a self, audience: &'a str) -> BoxFuture<'a, Result<IdToken, Error>> {
        self.mint_for(Some(audience)).boxed()
    }

    fn describe(&self) -> String {
        format!("emulator user {} at {}", self.email, self.url)
    }
}
