//! A tower layer that verifies the bearer token of each request, and the axum extractor
//! that hands handlers the verified [`Identity`]: a handler that takes `Identity` cannot
//! run for an unauthenticated request.

use crate::clock::{Clock, SystemClock};
use crate::error::Error;
use crate::verifier::{Identity, Verifier};
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Cloud Run reads this header before `Authorization`, leaving `Authorization` to the app.
pub const SERVERLESS_AUTHORIZATION: &str = "x-serverless-authorization";

/// The bearer token of a header value: scheme case-insensitive, exactly one space-free token.
pub fn bearer_value(value: &HeaderValue) -> Option<&str> {
    let bytes = value.as_bytes();
    // What `HeaderValue::to_str` accepts (visible ASCII and tab), checked without an early
    // exit so that it runs many bytes at a time: a token is ~1 KB, read on every request.
    let visible = bytes.iter().fold(true, |ok, &b| {
        ok & ((b.wrapping_sub(0x20) < 0x5f) | (b == b'\t'))
    });
    if !visible {
        return None;
    }
    let value = std::str::from_utf8(bytes).ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}

/// The request's token: `X-Serverless-Authorization` first (when `serverless` is set),
/// else `Authorization: Bearer`. `Authorization: Bearer` with nothing after is no token.
/// The header it comes from sent twice is [`RepeatedToken`]: judging one value while
/// something behind reads the other would let an unchecked token ride on a checked one.
pub fn bearer_token(headers: &HeaderMap, serverless: bool) -> Result<Option<&str>, RepeatedToken> {
    let name = if serverless && headers.contains_key(SERVERLESS_AUTHORIZATION) {
        SERVERLESS_AUTHORIZATION
    } else {
        AUTHORIZATION.as_str()
    };
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(_), Some(_)) => Err(RepeatedToken),
        (value, _) => Ok(value.and_then(bearer_value)),
    }
}

/// The header a token is read from came more than once (RFC 6750 §3.1: a malformed
/// request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepeatedToken;

/// Whether requests without a valid token are refused (`Required`) or passed on without an
/// [`Identity`] (`Optional`, for pages that are public but personalise when signed in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Required,
    Optional,
}

/// Set on the request (in `Optional` mode) when a token was present but refused, so the
/// handler can say why.
#[derive(Debug, Clone)]
pub struct VerificationFailure(pub Error);

#[derive(Clone)]
pub struct VerifyLayer {
    verifier: Arc<Verifier>,
    clock: Arc<dyn Clock>,
    mode: Mode,
    serverless_header: bool,
}

impl std::fmt::Debug for VerifyLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyLayer")
            .field("verifier", &self.verifier)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl VerifyLayer {
    pub fn new(verifier: Arc<Verifier>) -> Self {
        VerifyLayer {
            verifier,
            clock: Arc::new(SystemClock),
            mode: Mode::Required,
            serverless_header: false,
        }
    }
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
    /// Read `X-Serverless-Authorization` before `Authorization`, as Cloud Run does.
    pub fn serverless_header(mut self, yes: bool) -> Self {
        self.serverless_header = yes;
        self
    }
}

impl<S> Layer<S> for VerifyLayer {
    type Service = VerifyService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        VerifyService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct VerifyService<S> {
    inner: S,
    layer: VerifyLayer,
}

impl<S, B> Service<Request<B>> for VerifyService<S>
where
    S: Service<Request<B>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone that was polled ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            // Only this layer's verdict reaches the handler: not one an outer layer, with
            // other audiences or another header, left on the request.
            request.extensions_mut().remove::<Identity>();
            request.extensions_mut().remove::<VerificationFailure>();
            let token = match bearer_token(request.headers(), layer.serverless_header) {
                Ok(token) => token.map(str::to_owned),
                Err(RepeatedToken) => return Ok(AuthRejection::Repeated.into_response()),
            };
            match token {
                None if layer.mode == Mode::Required => {
                    return Ok(AuthRejection::Missing.into_response());
                }
                None => {}
                Some(token) => {
                    let now = layer.clock.now_unix();
                    match layer.verifier.verify(&token, now).await {
                        Ok(identity) => {
                            request.extensions_mut().insert(identity);
                        }
                        Err(error) => {
                            tracing::debug!(reason = error.code(), %error, "token refused");
                            if layer.mode == Mode::Required {
                                return Ok(AuthRejection::Invalid(error).into_response());
                            }
                            request.extensions_mut().insert(VerificationFailure(error));
                        }
                    }
                }
            }
            inner.call(request).await
        })
    }
}

/// Why a handler that needs an [`Identity`] did not get one. Its response follows RFC 6750.
#[derive(Debug, Clone)]
pub enum AuthRejection {
    Missing,
    /// The token's header came more than once: refused in either [`Mode`], as malformed.
    Repeated,
    Invalid(Error),
}

impl AuthRejection {
    pub fn reason(&self) -> &'static str {
        match self {
            AuthRejection::Missing => "missing_token",
            AuthRejection::Repeated => "repeated_token",
            AuthRejection::Invalid(e) => e.code(),
        }
    }
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        let (status, challenge, error) = match &self {
            AuthRejection::Missing => (
                StatusCode::UNAUTHORIZED,
                "Bearer".to_owned(),
                "unauthenticated",
            ),
            AuthRejection::Repeated => (
                StatusCode::BAD_REQUEST,
                "Bearer error=\"invalid_request\", error_description=\"repeated_token\"".to_owned(),
                "invalid_request",
            ),
            AuthRejection::Invalid(e) if e.is_unavailable() => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "Bearer error=\"invalid_token\", error_description=\"{}\"",
                    e.code()
                ),
                "temporarily_unavailable",
            ),
            AuthRejection::Invalid(e) => (
                StatusCode::UNAUTHORIZED,
                format!(
                    "Bearer error=\"invalid_token\", error_description=\"{}\"",
                    e.code()
                ),
                "invalid_token",
            ),
        };
        let body = serde_json::json!({"error": error, "reason": self.reason()});
        let mut response = (status, axum::Json(body)).into_response();
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response.headers_mut().insert(WWW_AUTHENTICATE, value);
        }
        response
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(identity) = parts.extensions.get::<Identity>() {
            return Ok(identity.clone());
        }
        Err(match parts.extensions.get::<VerificationFailure>() {
            Some(VerificationFailure(e)) => AuthRejection::Invalid(e.clone()),
            None => AuthRejection::Missing,
        })
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Identity {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Identity>().cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reading `bearer_value` had before it stopped using `to_str`: it must agree.
    fn by_to_str(value: &HeaderValue) -> Option<&str> {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
            .then_some(token)
    }

    #[test]
    fn bearer_values_read_as_header_text() {
        let long = format!("Bearer {}", "a.b-c_".repeat(300));
        let cases: [&[u8]; 15] = [
            b"Bearer abc.def.ghi",
            b"bearer abc",
            b"BEARER  abc ",
            b"Bearer\tabc",
            b"Bearer abc\tdef",
            b"Bearer abc def",
            b"Bearer ",
            b"Basic abc",
            b"Bearer abc\xe9",
            b"Bearer abc\x80def",
            "Bearer abc\u{e9}".as_bytes(),
            b"Bearer \xff",
            b"Bearerabc",
            b"",
            long.as_bytes(),
        ];
        for case in cases {
            let value = HeaderValue::from_bytes(case).unwrap();
            assert_eq!(bearer_value(&value), by_to_str(&value), "{case:?}");
        }
        assert_eq!(
            bearer_value(&HeaderValue::from_static("Bearer t.o.k")),
            Some("t.o.k")
        );
    }
}
