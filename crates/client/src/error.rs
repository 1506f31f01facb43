//! One error type for every token source and the authenticated client. Each variant carries
//! what makes a report useful (the URL, the status, the field) and never a token or a key.

use std::fmt;

/// Why a service-account key file cannot be used. Names the file and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    #[error("cannot read key file {path}: {detail}")]
    Read { path: String, detail: String },
    #[error("key file {path} is not JSON: {detail}")]
    NotJson { path: String, detail: String },
    #[error("key file {path} has no `{field}` field")]
    MissingField { path: String, field: &'static str },
    #[error("key file {path}: field `{field}` {problem}")]
    BadField {
        path: String,
        field: &'static str,
        problem: String,
    },
}

impl KeyFileError {
    /// The field the error is about, if it is about one.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            KeyFileError::MissingField { field, .. } | KeyFileError::BadField { field, .. } => {
                Some(field)
            }
            _ => None,
        }
    }
}

/// An OAuth-style error body (`{"error": ..., "error_description": ...}`), when one came.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OAuthError {
    pub error: Option<String>,
    pub description: Option<String>,
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.error, &self.description) {
            (Some(e), Some(d)) => write!(f, ": {e}: {d}"),
            (Some(e), None) => write!(f, ": {e}"),
            (None, Some(d)) => write!(f, ": {d}"),
            (None, None) => Ok(()),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Nothing answered (connection refused, timeout, DNS).
    #[error("cannot reach the {service} at {url}: {detail}")]
    Unreachable {
        service: &'static str,
        url: String,
        detail: String,
    },
    /// Something answered, but without `Metadata-Flavor: Google`.
    #[error(
        "{url} answered HTTP {status} without `Metadata-Flavor: Google`: not a metadata server"
    )]
    NotMetadataServer { url: String, status: u16 },
    /// The service answered with an error status.
    #[error("the {service} at {url} refused: HTTP {status}{oauth}")]
    Refused {
        service: &'static str,
        url: String,
        status: u16,
        oauth: OAuthError,
    },
    /// The service answered 2xx, but not with an ID token.
    #[error("the {service} at {url} answered without a usable ID token: {detail}")]
    BadAnswer {
        service: &'static str,
        url: String,
        detail: String,
    },
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    /// Application Default Credentials found nothing; lists what was tried, in order.
    #[error("no credentials found; tried: {}", .tried.join("; "))]
    NoCredentials { tried: Vec<String> },
    #[error("cannot sign the service-account assertion: {0}")]
    Sign(gatehouse_verify::SignError),
    #[error("invalid URL `{url}`: {detail}")]
    InvalidUrl { url: String, detail: String },
    #[error("`{email}` is not an email address")]
    InvalidEmail { email: String },
    #[error("invalid header: {detail}")]
    InvalidHeader { detail: String },
    /// The authenticated request itself failed (not the token).
    #[error("request to {url} failed: {detail}")]
    Request { url: String, detail: String },
    #[error("cannot build the HTTP client: {detail}")]
    HttpClient { detail: String },
}
