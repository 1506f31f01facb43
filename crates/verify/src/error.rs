//! The one error type of token verification, with a stable machine-readable code per reason.

use std::fmt;

/// Why a token was refused. [`Error::code`] is stable and safe to show to clients; the
/// `Display` text adds detail for logs. Neither ever contains the token or key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The token is not a well-formed compact JWS with JSON header and claims.
    #[error("malformed token: {0}")]
    Malformed(Malformed),
    /// The token is larger than the profile allows; nothing of it was decoded.
    #[error("token is {size} bytes, more than the {max} allowed")]
    TooLarge { size: usize, max: usize },
    /// The header names an algorithm the profile does not allow for the key (or at all).
    #[error("algorithm {alg:?} is not allowed here")]
    BadAlgorithm { alg: String },
    /// The header carries a `crit` parameter this verifier does not implement.
    #[error("unsupported critical header parameter")]
    CriticalHeader,
    /// The header has no `kid`; every issuer we trust names its key.
    #[error("token header has no kid")]
    MissingKid,
    /// No key of the issuer has this `kid`, even after a permitted refresh.
    #[error("no key with kid {kid:?}")]
    UnknownKid { kid: String },
    /// The signature does not verify with the issuer's key.
    #[error("signature does not verify")]
    BadSignature,
    /// The signature was removed by a front door (`SIGNATURE_REMOVED_BY_GOOGLE`); only the
    /// trusted-front-door API may read such a token.
    #[error("signature was removed by a front door; this token cannot be verified")]
    SignatureRemoved,
    #[error("token expired at {exp} (now {now}, leeway {leeway} s)")]
    Expired { now: u64, exp: u64, leeway: u64 },
    #[error("token is not valid before {nbf} (now {now}, leeway {leeway} s)")]
    NotYetValid { now: u64, nbf: u64, leeway: u64 },
    #[error("token issued in the future at {iat} (now {now}, leeway {leeway} s)")]
    IssuedInFuture { now: u64, iat: u64, leeway: u64 },
    #[error("token lifetime of {lifetime} s exceeds the {max} s allowed")]
    LifetimeTooLong { lifetime: u64, max: u64 },
    #[error("issuer {iss:?} is not accepted")]
    WrongIssuer { iss: String },
    #[error("audience is not accepted")]
    WrongAudience,
    #[error("required claim {claim:?} is missing")]
    MissingClaim { claim: &'static str },
    #[error("claim {claim:?} is invalid: {why}")]
    InvalidClaim {
        claim: &'static str,
        why: &'static str,
    },
    #[error("email is not verified")]
    EmailUnverified,
    /// The issuer's keys could not be obtained and no usable cached copy exists.
    #[error("issuer keys unavailable: {reason}")]
    KeysUnavailable { reason: String },
}

/// What exactly is malformed; kept apart so tests and logs can tell the cases apart while
/// clients see one code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Malformed {
    Segments,
    Base64,
    Utf8,
    Json,
    DuplicateKey,
    HeaderShape,
    ClaimsShape,
    NumericDate,
    SignatureLength,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Malformed::Segments => "not three dot-separated segments",
            Malformed::Base64 => "invalid base64url",
            Malformed::Utf8 => "invalid UTF-8",
            Malformed::Json => "invalid JSON",
            Malformed::DuplicateKey => "duplicate JSON member",
            Malformed::HeaderShape => "header is not a JSON object of the expected shape",
            Malformed::ClaimsShape => "claims are not a JSON object of the expected shape",
            Malformed::NumericDate => "a date claim is not a non-negative JSON number",
            Malformed::SignatureLength => "signature has the wrong length",
        })
    }
}

impl Error {
    /// The stable reason code (`malformed`, `bad_signature`, ...). Clients and metrics
    /// depend on these strings: never rename one.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Malformed(_) => "malformed",
            Error::TooLarge { .. } => "too_large",
            Error::BadAlgorithm { .. } => "bad_algorithm",
            Error::CriticalHeader => "unsupported_crit",
            Error::MissingKid => "missing_kid",
            Error::UnknownKid { .. } => "unknown_kid",
            Error::BadSignature => "bad_signature",
            Error::SignatureRemoved => "signature_removed",
            Error::Expired { .. } => "expired",
            Error::NotYetValid { .. } => "not_yet_valid",
            Error::IssuedInFuture { .. } => "issued_in_future",
            Error::LifetimeTooLong { .. } => "lifetime_too_long",
            Error::WrongIssuer { .. } => "wrong_issuer",
            Error::WrongAudience => "wrong_audience",
            Error::MissingClaim { .. } => "missing_claim",
            Error::InvalidClaim { .. } => "invalid_claim",
            Error::EmailUnverified => "email_unverified",
            Error::KeysUnavailable { .. } => "keys_unavailable",
        }
    }

    /// Every reason code, for metrics that pre-register one counter per reason.
    pub const CODES: &'static [&'static str] = &[
        "malformed",
        "too_large",
        "bad_algorithm",
        "unsupported_crit",
        "missing_kid",
        "unknown_kid",
        "bad_signature",
        "signature_removed",
        "expired",
        "not_yet_valid",
        "issued_in_future",
        "lifetime_too_long",
        "wrong_issuer",
        "wrong_audience",
        "missing_claim",
        "invalid_claim",
        "email_unverified",
        "keys_unavailable",
    ];

    /// True when the failure is the verifier's (keys could not be fetched), not the token's:
    /// a front door answers 503 rather than 401 for these.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::KeysUnavailable { .. })
    }
}

impl From<Malformed> for Error {
    fn from(m: Malformed) -> Self {
        Error::Malformed(m)
    }
}
