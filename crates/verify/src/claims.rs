//! Decoded claims of a verified token, with the registered and Google-specific claims typed.

use crate::error::{Error, Malformed};
use crate::json::{Field, StrictError, parse_members, parse_object};
use serde_json::{Map, Value};
use std::fmt;
use std::sync::OnceLock;

/// The claims of a token. Only the verifier (or the explicitly named unverified decoders)
/// can make one. The registered and Google claims are typed up front; the full JSON map is
/// built on first use of [`Claims::get`] / [`Claims::as_map`], so the hot path builds none.
#[derive(Clone)]
pub struct Claims {
    raw: Box<str>,
    map: OnceLock<Map<String, Value>>,
    iss: String,
    sub: Option<String>,
    aud: Vec<String>,
    exp: u64,
    iat: Option<u64>,
    nbf: Option<u64>,
    email: Option<String>,
    email_verified: bool,
    hd: Option<String>,
    auth_time: Option<Result<u64, ()>>,
}

impl PartialEq for Claims {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl fmt::Debug for Claims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claims")
            .field("iss", &self.iss)
            .field("sub", &self.sub)
            .field("aud", &self.aud)
            .field("email", &self.email)
            .field("exp", &self.exp)
            .finish_non_exhaustive()
    }
}

const MAX_NUMERIC_DATE: u64 = 1_000_000_000_000_000;

fn numeric_date(field: Option<&Field<'_>>) -> Result<Option<u64>, Error> {
    match field {
        None => Ok(None),
        // RFC 7519 NumericDate: a JSON number. Strings, negatives and non-finite values
        // are refused rather than coerced: coercion is where parsers disagree.
        // Bounded (1e15 s is the year 33,658) so that no date is "forever" and sums with
        // a leeway or lifetime never come near overflow.
        Some(Field::Num(n)) => n
            .as_u64()
            .filter(|i| *i < MAX_NUMERIC_DATE)
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0 && *f < MAX_NUMERIC_DATE as f64)
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or(Malformed::NumericDate.into()),
        Some(_) => Err(Malformed::NumericDate.into()),
    }
}

fn opt_string(field: Option<&Field<'_>>, claim: &'static str) -> Result<Option<String>, Error> {
    match field {
        None => Ok(None),
        Some(Field::Str(s)) => Ok(Some(s.to_string())),
        Some(_) => Err(Error::InvalidClaim {
            claim,
            why: "not a string",
        }),
    }
}

impl Claims {
    /// Parses a claims set (the decoded JWT payload): strict JSON, duplicates refused at
    /// any depth, the typed claims checked for their types.
    pub(crate) fn parse(raw: String) -> Result<Self, Error> {
        let members = parse_members(&raw).map_err(|e| -> Error {
            match e {
                StrictError::Duplicate => Malformed::DuplicateKey.into(),
                StrictError::NotObject => Malformed::ClaimsShape.into(),
                StrictError::Syntax => Malformed::Json.into(),
            }
        })?;
        let field = |name: &str| members.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let iss = opt_string(field("iss"), "iss")?.ok_or(Error::MissingClaim { claim: "iss" })?;
        let sub = opt_string(field("sub"), "sub")?;
        let not_strings = Error::InvalidClaim {
            claim: "aud",
            why: "not a string or an array of strings",
        };
        let aud = match field("aud") {
            None => return Err(Error::MissingClaim { claim: "aud" }),
            Some(Field::Str(s)) => vec![s.to_string()],
            Some(Field::Strings(items)) if !items.is_empty() && items.len() <= 64 => {
                items.iter().map(|s| s.to_string()).collect()
            }
            Some(_) => return Err(not_strings),
        };
        let exp = numeric_date(field("exp"))?.ok_or(Error::MissingClaim { claim: "exp" })?;
        let iat = numeric_date(field("iat"))?;
        let nbf = numeric_date(field("nbf"))?;
        let email = opt_string(field("email"), "email")?;
        let email_verified = match field("email_verified") {
            None => false,
            Some(Field::Bool(b)) => *b,
            // Google's tokeninfo renders booleans as strings; accept exactly those two.
            Some(Field::Str(s)) if s == "true" => true,
            Some(Field::Str(s)) if s == "false" => false,
            Some(_) => {
                return Err(Error::InvalidClaim {
                    claim: "email_verified",
                    why: "not a boolean",
                });
            }
        };
        let hd = match field("hd") {
            Some(Field::Str(s)) => Some(s.to_string()),
            _ => None,
        };
        let auth_time = field("auth_time").map(|f| match f {
            Field::Num(n) => n.as_u64().ok_or(()),
            _ => Err(()),
        });
        drop(members);
        Ok(Claims {
            raw: raw.into_boxed_str(),
            map: OnceLock::new(),
            iss,
            sub,
            aud,
            exp,
            iat,
            nbf,
            email,
            email_verified,
            hd,
            auth_time,
        })
    }

    pub fn issuer(&self) -> &str {
        &self.iss
    }
    pub fn subject(&self) -> Option<&str> {
        self.sub.as_deref()
    }
    pub fn audiences(&self) -> &[String] {
        &self.aud
    }
    pub fn expires_at(&self) -> u64 {
        self.exp
    }
    pub fn issued_at(&self) -> Option<u64> {
        self.iat
    }
    pub fn not_before(&self) -> Option<u64> {
        self.nbf
    }
    pub fn email(&self) -> Option<&str> {
        self.email.as_deref()
    }
    /// True only when the token says `email_verified: true` (or Google's string `"true"`).
    pub fn email_verified(&self) -> bool {
        self.email_verified
    }
    /// Google's hosted domain (`hd`), present for Workspace accounts.
    pub fn hosted_domain(&self) -> Option<&str> {
        self.hd.as_deref()
    }
    /// Firebase's `auth_time`: `None` when absent, `Some(Err(()))` when not a NumericDate.
    pub(crate) fn auth_time(&self) -> Option<Result<u64, ()>> {
        self.auth_time
    }
    pub fn get(&self, claim: &str) -> Option<&Value> {
        self.as_map().get(claim)
    }
    pub fn as_map(&self) -> &Map<String, Value> {
        // `raw` passed the same strict parser at construction, so this cannot fail.
        self.map
            .get_or_init(|| parse_object(self.raw.as_bytes()).unwrap_or_default())
    }
}
