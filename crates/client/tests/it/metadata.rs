//! The metadata server source against a stand-in that behaves as GCE's does.

use crate::support::{Counter, T0, clock, dead_addr, id_token, serve};
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gatehouse_client::{Env, Error, IdTokenSource, MetadataServer};
use gatehouse_verify::unverified::danger_decode_unverified;
use gatehouse_verify::{Clock, FixedClock};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub const SA: &str = "runner@demo-project.iam.gserviceaccount.com";

/// How the stand-in behaves.
#[derive(Clone)]
pub struct Stand {
    pub clock: FixedClock,
    pub hits: Counter,
    /// Send `Metadata-Flavor: Google` on answers.
    pub flavored: bool,
    /// Answer the identity path with this status and no token.
    pub fail_with: Option<StatusCode>,
    /// While set, answer the identity path 503 (a server that breaks mid-test).
    pub broken: Arc<std::sync::atomic::AtomicBool>,
    /// Delay each identity answer.
    pub delay: Duration,
    /// Token lifetime.
    pub life: u64,
    /// Last query string seen.
    pub queries: Arc<parking_lot::Mutex<Vec<HashMap<String, String>>>>,
}

impl Stand {
    pub fn new(clock: FixedClock) -> Self {
        Stand {
            clock,
            hits: Counter::default(),
            flavored: true,
            fail_with: None,
            broken: Default::default(),
            delay: Duration::ZERO,
            life: 3600,
            queries: Default::default(),
        }
    }

    pub async fn start(self) -> SocketAddr {
        serve(router(self)).await
    }
}

fn flavor(stand: &Stand, response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    if stand.flavored {
        response
            .headers_mut()
            .insert("Metadata-Flavor", "Google".parse().unwrap());
    }
    response
}

pub fn router(stand: Stand) -> Router {
    async fn ping(State(stand): State<Stand>, headers: HeaderMap) -> Response {
        if headers.get("metadata-flavor").map(|v| v.as_bytes()) != Some(b"Google") {
            return flavor(&stand, StatusCode::FORBIDDEN);
        }
        flavor(&stand, "computeMetadata/\n")
    }
    async fn identity(
        State(stand): State<Stand>,
        headers: HeaderMap,
        Query(query): Query<HashMap<String, String>>,
    ) -> Response {
        stand.hits.hit();
        stand.queries.lock().push(query.clone());
        if headers.get("metadata-flavor").map(|v| v.as_bytes()) != Some(b"Google") {
            return flavor(&stand, (StatusCode::FORBIDDEN, "Missing Metadata-Flavor"));
        }
        tokio::time::sleep(stand.delay).await;
        if stand.broken.load(std::sync::atomic::Ordering::SeqCst) {
            return flavor(&stand, (StatusCode::SERVICE_UNAVAILABLE, "broken"));
        }
        if let Some(status) = stand.fail_with {
            return flavor(&stand, (status, "metadata says no"));
        }
        let Some(audience) = query.get("audience") else {
            return flavor(
                &stand,
                (
                    StatusCode::BAD_REQUEST,
                    "non-empty audience parameter required",
                ),
            );
        };
        let token = id_token(audience, SA, stand.clock.now_unix(), stand.life);
        flavor(&stand, ([("content-type", "application/text")], token))
    }
    Router::new()
        .route("/", get(ping))
        .route(
            "/computeMetadata/v1/instance/service-accounts/default/identity",
            get(identity),
        )
        .with_state(stand)
}

#[tokio::test]
async fn mints_an_identity_token_for_the_audience() {
    let (clock, _) = clock();
    let stand = Stand::new(clock);
    let queries = stand.queries.clone();
    let addr = stand.start().await;
    let source = MetadataServer::new(&addr.to_string()).unwrap();
    let audience = "https://receiver.example/path?a=1&b=2";
    let token = source.mint(audience).await.unwrap();
    assert_eq!(token.expires_at(), T0 + 3600);
    let claims = danger_decode_unverified(token.as_str()).unwrap().claims;
    assert_eq!(claims["aud"], audience);
    assert_eq!(claims["email"], SA);
    let seen = queries.lock().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0]["audience"], audience,
        "the audience survives URL-encoding"
    );
    assert_eq!(seen[0]["format"], "full");
    assert!(source.describe().contains(&addr.to_string()));
}

#[tokio::test]
async fn gce_metadata_host_is_honoured() {
    let (clock, _) = clock();
    let addr = Stand::new(clock).start().await;
    let env = Env::from_pairs([("GCE_METADATA_HOST", addr.to_string())]);
    let source = MetadataServer::from_env(&env).unwrap();
    assert_eq!(source.base_url(), format!("http://{addr}"));
    source.ping(Duration::from_secs(2)).await.unwrap();
    source.mint("https://a.example").await.unwrap();
    // The older name still works; the newer wins when both are set.
    let env = Env::from_pairs([("GCE_METADATA_ROOT", addr.to_string())]);
    assert_eq!(
        MetadataServer::from_env(&env).unwrap().base_url(),
        format!("http://{addr}")
    );
    let env = Env::from_pairs::<[(&str, &str); 0], _, _>([]);
    assert_eq!(
        MetadataServer::from_env(&env).unwrap().base_url(),
        "http://metadata.google.internal"
    );
}

#[tokio::test]
async fn an_answer_without_metadata_flavor_is_refused() {
    let (clock, _) = clock();
    let mut stand = Stand::new(clock);
    stand.flavored = false;
    let addr = stand.start().await;
    let source = MetadataServer::new(&addr.to_string()).unwrap();
    let error = source.mint("https://a.example").await.unwrap_err();
    assert!(
        matches!(error, Error::NotMetadataServer { status: 200, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("Metadata-Flavor"), "{error}");
    let error = source.ping(Duration::from_secs(2)).await.unwrap_err();
    assert!(
        matches!(error, Error::NotMetadataServer { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_server_that_is_down_is_a_clear_error() {
    let addr = dead_addr().await;
    let source = MetadataServer::new(&addr.to_string()).unwrap();
    let error = source.mint("https://a.example").await.unwrap_err();
    assert!(matches!(error, Error::Unreachable { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("metadata server") && text.contains(&addr.to_string()),
        "{text}"
    );
}

#[tokio::test]
async fn an_error_status_is_reported_with_the_body() {
    let (clock, _) = clock();
    let mut stand = Stand::new(clock);
    stand.fail_with = Some(StatusCode::NOT_FOUND);
    let hits = stand.hits.clone();
    let addr = stand.start().await;
    let source = MetadataServer::new(&addr.to_string()).unwrap();
    let error = source.mint("https://a.example").await.unwrap_err();
    assert!(
        matches!(error, Error::Refused { status: 404, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("metadata says no"), "{error}");
    assert_eq!(hits.get(), 1, "one request, no retries");
}

#[tokio::test]
async fn a_non_jwt_answer_is_a_bad_answer() {
    async fn garbage() -> Response {
        ([("Metadata-Flavor", "Google")], "not-a-token").into_response()
    }
    let app = Router::new().route(
        "/computeMetadata/v1/instance/service-accounts/default/identity",
        get(garbage),
    );
    let addr = serve(app).await;
    let error = MetadataServer::new(&addr.to_string())
        .unwrap()
        .mint("https://a.example")
        .await
        .unwrap_err();
    assert!(matches!(error, Error::BadAnswer { .. }), "{error:?}");
}
