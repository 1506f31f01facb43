//! The service-to-service demo inside `gatehouse up`: a small caller service that calls the
//! gateway's `/api` route (which admits one service account only) with `gatehouse-client`,
//! as a Cloud Run service calls another: an ID token from its metadata server whose audience
//! is the receiver's origin, cached, sent as `Authorization: Bearer`.
//!
//! `GET /` calls as the admitted account, `GET /?as=other` as the refused one. The answer is
//! `{"caller", "status", "body"}` with 200 whenever the receiver answered (its 403 included),
//! or `{"caller", "error"}` with 502 when the call itself failed.

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gatehouse_client::{AuthorizedClient, MetadataServer, TokenCache};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// The receiver's path behind the gateway.
pub const RECEIVER_PATH: &str = "/api/votes/hourly";

/// Largest receiver answer passed on.
const MAX_BODY_BYTES: usize = 256 * 1024;

/// One service account: its email and a client holding its metadata server's tokens.
#[derive(Debug)]
struct Caller {
    email: String,
    client: AuthorizedClient,
}

impl Caller {
    fn new(email: &str, metadata: SocketAddr) -> anyhow::Result<Self> {
        let source = MetadataServer::new(&metadata.to_string())
            .map_err(|e| anyhow::anyhow!("metadata server for {email}: {e}"))?;
        let client = AuthorizedClient::new(TokenCache::new(source))
            .map_err(|e| anyhow::anyhow!("HTTP client for {email}: {e}"))?;
        Ok(Caller {
            email: email.to_owned(),
            client,
        })
    }
}

#[derive(Debug)]
struct Demo {
    /// The receiver's full URL (the gateway's origin + [`RECEIVER_PATH`]).
    target: String,
    admitted: Caller,
    other: Caller,
}

/// The caller service: `gateway` is the gateway's origin (`http://HOST:PORT`), the audience
/// of every token; each account is given by its email and metadata server.
pub fn app(
    gateway: &str,
    admitted: (&str, SocketAddr),
    other: (&str, SocketAddr),
) -> anyhow::Result<Router> {
    let demo = Demo {
        target: format!("{}{RECEIVER_PATH}", gateway.trim_end_matches('/')),
        admitted: Caller::new(admitted.0, admitted.1)?,
        other: Caller::new(other.0, other.1)?,
    };
    Ok(Router::new()
        .route("/", get(call))
        .with_state(Arc::new(demo)))
}

async fn call(
    State(demo): State<Arc<Demo>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let caller = match query.get("as").map(String::as_str) {
        None | Some("" | "caller") => &demo.admitted,
        Some("other") => &demo.other,
        Some(unknown) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": format!("as={unknown}: expected `caller` or `other`") })),
            )
                .into_response();
        }
    };
    match caller.client.get(&demo.target).send().await {
        Ok(answer) => {
            let status = answer.status().as_u16();
            match read_body(answer).await {
                Ok(body) => Json(json!({
                    "caller": caller.email,
                    "status": status,
                    "body": body,
                }))
                .into_response(),
                Err(error) => failed(&caller.email, &error),
            }
        }
        Err(error) => failed(&caller.email, &error.to_string()),
    }
}

/// The receiver's body: its JSON when it is JSON, else its text.
async fn read_body(mut answer: reqwest::Response) -> Result<Value, String> {
    let mut bytes = Vec::new();
    while let Some(chunk) = answer
        .chunk()
        .await
        .map_err(|e| format!("reading the receiver's answer: {}", e.without_url()))?
    {
        if bytes.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(format!(
                "the receiver's answer is larger than {MAX_BODY_BYTES} bytes"
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())))
}

fn failed(email: &str, error: &str) -> Response {
    tracing::warn!(severity = "WARNING", caller = %email, %error, "service-to-service call failed");
    (
        StatusCode::BAD_GATEWAY,
        Json(json!({ "caller": email, "error": error })),
    )
        .into_response()
}
