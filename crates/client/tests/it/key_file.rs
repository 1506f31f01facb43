//! The service-account key file source against a stand-in jwt-bearer token endpoint.

use crate::support::{
    Counter, SA_EMAIL, T0, TempFile, clock, dead_addr, id_token, key_file_json, serve,
    service_account_key,
};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use gatehouse_client::{
    Error, GOOGLE_TOKEN_AUDIENCE, IdTokenSource, JWT_BEARER_GRANT_TYPE, KeyFileError,
    KeyFileSource, ServiceAccountKey,
};
use gatehouse_verify::unverified::danger_decode_unverified;
use gatehouse_verify::{Clock, FixedClock};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Clone)]
pub struct TokenEndpoint {
    pub clock: FixedClock,
    pub hits: Counter,
    pub refuse: bool,
    pub forms: Arc<parking_lot::Mutex<Vec<HashMap<String, String>>>>,
}

impl TokenEndpoint {
    pub fn new(clock: FixedClock) -> Self {
        TokenEndpoint {
            clock,
            hits: Counter::default(),
            refuse: false,
            forms: Default::default(),
        }
    }

    /// Serves `/token`; returns its URL.
    pub async fn start(self) -> String {
        let addr: SocketAddr =
            serve(Router::new().route("/token", post(token)).with_state(self)).await;
        format!("http://{addr}/token")
    }
}

async fn token(
    State(endpoint): State<TokenEndpoint>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    endpoint.hits.hit();
    endpoint.forms.lock().push(form.clone());
    if endpoint.refuse {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."})),
        )
            .into_response();
    }
    let Some(claims) = form
        .get("assertion")
        .and_then(|a| danger_decode_unverified(a).ok())
        .map(|d| d.claims)
    else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_request"})),
        )
            .into_response();
    };
    let audience = claims["target_audience"].as_str().unwrap_or_default();
    let email = claims["iss"].as_str().unwrap_or_default();
    let id_token = id_token(audience, email, endpoint.clock.now_unix(), 3600);
    Json(json!({"id_token": id_token})).into_response()
}

async fn source_for(token_uri: &str) -> (KeyFileSource, TempFile) {
    let file = TempFile::with_contents("key.json", key_file_json(token_uri).to_string().as_bytes());
    let source = KeyFileSource::from_file(file.path()).await.unwrap();
    (source, file)
}

#[tokio::test]
async fn exchanges_a_self_signed_jwt_for_an_id_token() {
    let (pinned, clock) = clock();
    let endpoint = TokenEndpoint::new(pinned);
    let forms = endpoint.forms.clone();
    let token_uri = endpoint.start().await;
    let (source, _file) = source_for(&token_uri).await;
    let source = source.with_clock(clock);

    let token = source.mint("https://receiver.example").await.unwrap();
    assert_eq!(token.expires_at(), T0 + 3600);
    let claims = danger_decode_unverified(token.as_str()).unwrap().claims;
    assert_eq!(claims["aud"], "https://receiver.example");
    assert_eq!(claims["email"], SA_EMAIL);

    let forms = forms.lock().clone();
    assert_eq!(forms.len(), 1);
    let form = &forms[0];
    let mut names: Vec<_> = form.keys().cloned().collect();
    names.sort();
    assert_eq!(names, ["assertion", "grant_type"]);
    assert_eq!(form["grant_type"], JWT_BEARER_GRANT_TYPE);
    assert_assertion_is_google_auths(&form["assertion"], "https://receiver.example", T0);
}

/// The assertion python google-auth's `service_account.IDTokenCredentials` makes, field for
/// field (google/oauth2/service_account.py `_make_authorization_grant_assertion` and
/// google/auth/jwt.py `encode`): header `typ`, `alg` RS256, `kid` = `private_key_id`;
/// claims `iat`, `exp` = `iat` + 3600, `iss` = client email, `aud` = Google's token
/// endpoint (not `token_uri`), `target_audience`, and nothing else (no `sub`).
fn assert_assertion_is_google_auths(assertion: &str, audience: &str, now: u64) {
    let decoded = danger_decode_unverified(assertion).unwrap();
    assert_eq!(
        Value::Object(decoded.header),
        json!({"typ": "JWT", "alg": "RS256", "kid": service_account_key().kid()})
    );
    assert_eq!(
        Value::Object(decoded.claims),
        json!({
            "iat": now,
            "exp": now + 3600,
            "iss": SA_EMAIL,
            "aud": GOOGLE_TOKEN_AUDIENCE,
            "target_audience": audience,
        })
    );
    // Signed with the key file's key: the stand-in issuer's verifier would check this; here
    // it is enough that the signature segment is an RS256-sized one.
    let signature = assertion.rsplit('.').next().unwrap();
    assert_eq!(signature.len(), 342, "a 2048-bit RSA signature, base64url");
}

#[tokio::test]
async fn the_assertion_claims_are_exactly_google_auths() {
    let (_, clock) = clock();
    let (source, _file) = source_for("http://127.0.0.1:1/token").await;
    let source = source.with_clock(clock);
    let assertion = source.assertion("https://x.example").unwrap();
    assert_assertion_is_google_auths(&assertion, "https://x.example", T0);
    // Field order as python's dict: iat, exp, iss, aud, target_audience.
    let payload = assertion.split('.').nth(1).unwrap();
    use base64::Engine as _;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let text = String::from_utf8(json).unwrap();
    let order: Vec<usize> = [
        "\"iat\"",
        "\"exp\"",
        "\"iss\"",
        "\"aud\"",
        "\"target_audience\"",
    ]
    .iter()
    .map(|k| text.find(k).unwrap())
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[tokio::test]
async fn a_refusing_token_endpoint_is_a_clear_error_without_retries() {
    let (pinned, clock) = clock();
    let mut endpoint = TokenEndpoint::new(pinned);
    endpoint.refuse = true;
    let hits = endpoint.hits.clone();
    let token_uri = endpoint.start().await;
    let (source, _file) = source_for(&token_uri).await;
    let source = source.with_clock(clock);
    let error = source.mint("https://receiver.example").await.unwrap_err();
    match &error {
        Error::Refused { status, oauth, .. } => {
            assert_eq!(*status, 400);
            assert_eq!(oauth.error.as_deref(), Some("invalid_grant"));
            assert_eq!(oauth.description.as_deref(), Some("Invalid JWT Signature."));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        error.to_string(),
        format!(
            "the token endpoint at {token_uri} refused: HTTP 400: invalid_grant: Invalid JWT Signature."
        )
    );
    assert_eq!(hits.get(), 1);
}

#[tokio::test]
async fn an_unreachable_token_endpoint_is_a_clear_error() {
    let addr = dead_addr().await;
    let (source, _file) = source_for(&format!("http://{addr}/token")).await;
    let error = source.mint("https://receiver.example").await.unwrap_err();
    assert!(matches!(error, Error::Unreachable { .. }), "{error:?}");
    assert!(error.to_string().contains("token endpoint"), "{error}");
}

fn parse(value: &Value) -> Result<ServiceAccountKey, KeyFileError> {
    ServiceAccountKey::from_json(value.to_string().as_bytes(), "key.json")
}

#[test]
fn malformed_key_files_name_the_field() {
    let good = key_file_json("https://oauth2.googleapis.com/token");
    parse(&good).unwrap();
    for field in [
        "type",
        "client_email",
        "private_key_id",
        "private_key",
        "token_uri",
    ] {
        let mut bad = good.clone();
        bad.as_object_mut().unwrap().remove(field);
        let error = parse(&bad).unwrap_err();
        assert_eq!(error.field(), Some(field), "{error}");
        assert_eq!(
            error.to_string(),
            format!("key file key.json has no `{field}` field")
        );

        let mut bad = good.clone();
        bad[field] = json!(17);
        let error = parse(&bad).unwrap_err();
        assert_eq!(error.field(), Some(field), "{error}");
        assert!(error.to_string().contains("is not a string"), "{error}");

        let mut bad = good.clone();
        bad[field] = json!("");
        assert_eq!(parse(&bad).unwrap_err().field(), Some(field));
    }
    let cases = [
        ("type", json!("authorized_user"), "only \"service_account\""),
        ("client_email", json!("nobody"), "not an email"),
        ("private_key", json!("MIIEvQIBADANBg..."), "PKCS#8"),
        ("token_uri", json!("/token"), "http(s) URL"),
        (
            "token_uri",
            json!("https://u:S3CRET@oauth2.example/token"),
            "user-info",
        ),
        ("project_id", json!(["x"]), "not a string"),
    ];
    for (field, value, says) in cases {
        let mut bad = good.clone();
        bad[field] = value;
        let error = parse(&bad).unwrap_err();
        assert_eq!(error.field(), Some(field), "{error}");
        assert!(error.to_string().contains(says), "{error}");
        assert!(
            !format!("{error} {error:?}").contains("S3CRET"),
            "{error:?}"
        );
    }
    let error = ServiceAccountKey::from_json(b"{not json", "key.json").unwrap_err();
    assert!(matches!(error, KeyFileError::NotJson { .. }), "{error:?}");
    let error = ServiceAccountKey::from_json(b"[]", "key.json").unwrap_err();
    assert!(matches!(error, KeyFileError::NotJson { .. }), "{error:?}");
}

#[tokio::test]
async fn a_private_key_that_does_not_parse_names_the_field_and_hides_the_key() {
    let mut bad = key_file_json("https://oauth2.googleapis.com/token");
    let pem = "-----BEGIN PRIVATE KEY-----\nAAAAsecretsecretAAAA\n-----END PRIVATE KEY-----\n";
    bad["private_key"] = json!(pem);
    let file = TempFile::with_contents("bad.json", bad.to_string().as_bytes());
    let error = KeyFileSource::from_file(file.path()).await.unwrap_err();
    match &error {
        Error::KeyFile(e) => assert_eq!(e.field(), Some("private_key")),
        other => panic!("{other:?}"),
    }
    assert!(!error.to_string().contains("secret"), "{error}");
}

#[tokio::test]
async fn a_missing_file_is_a_clear_error() {
    let error = KeyFileSource::from_file("/nonexistent/key.json")
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::KeyFile(KeyFileError::Read { .. })),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("/nonexistent/key.json"),
        "{error}"
    );
}

#[tokio::test]
async fn debug_hides_the_private_key() {
    let (source, _file) = source_for("http://127.0.0.1:1/token").await;
    let shown = format!("{source:?} {:?}", source.key());
    assert!(shown.contains("<hidden>"), "{shown}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    let pem = service_account_key().to_pkcs8_pem().unwrap();
    let body_line = pem.lines().nth(1).unwrap();
    assert!(!shown.contains(body_line), "{shown}");
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any bytes: an error or a key, never a panic.
        #[test]
        fn on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = ServiceAccountKey::from_json(&bytes, "fuzz.json");
        }

        /// A good key file with one field replaced by any JSON scalar: either still good, or
        /// an error that names that very field (the PEM check aside, which is later).
        #[test]
        fn on_one_bad_field(
            field in prop::sample::select(vec![
                "type", "client_email", "private_key_id", "private_key", "token_uri",
                "project_id", "client_id",
            ]),
            value in prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                ".{0,40}".prop_map(Value::from),
            ],
        ) {
            let mut file = key_file_json("https://oauth2.googleapis.com/token");
            file[field] = value;
            if let Err(error) = ServiceAccountKey::from_json(file.to_string().as_bytes(), "k.json") {
                prop_assert_eq!(error.field(), Some(field), "{}", error);
            }
        }
    }
}

/// A front that answers an outage with a big HTML page (a load balancer's, a captive
/// portal's): the refusal's status is what the user needs, not "answer too large".
#[tokio::test]
async fn an_error_answer_larger_than_the_limit_is_still_reported_as_the_refusal_it_is() {
    async fn outage() -> Response {
        let page = format!(
            "<html><body>Service Unavailable{}</body></html>",
            " ".repeat(200 * 1024)
        );
        (StatusCode::SERVICE_UNAVAILABLE, page).into_response()
    }
    let addr = serve(Router::new().route("/token", post(outage))).await;
    let token_uri = format!("http://{addr}/token");
    let (source, _file) = source_for(&token_uri).await;
    let error = source.mint("https://receiver.example").await.unwrap_err();
    match &error {
        Error::Refused { status, .. } => assert_eq!(*status, 503, "{error}"),
        other => panic!("{other:?}"),
    }
    assert!(error.to_string().contains("Service Unavailable"), "{error}");
}
