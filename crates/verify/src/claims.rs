//! Decoded claims of a verified token, with the registered and Google-specific claims typed.

use crate::error::{Error, Malformed};
use serde_json::{Map, Value};
use std::fmt;

/// The claims of a token. Only the verifier (or the explicitly named unverified decoders)
/// can make one.
#[derive(Clone, PartialEq)]
pub struct Claims {
    map: Map<String, Value>,
    iss: String,
    sub: Option<String>,
    aud: Vec<String>,
    exp: u64,
    iat: Option<u64>,
    nbf: Option<u64>,
    email: Option<String>,
    email_verified: bool,
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

fn numeric_date(map: &Map<String, Value>, claim: &'static str) -> Result<Option<u64>, Error> {
    match map.get(claim) {
        None => Ok(None),
        // RFC 7519 NumericDate: a JSON number. Strings, negatives and non-finite values
        // are refused rather than coerced: coercion is where parsers disagree.
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0 && *f < 1e15)
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or(Malformed::NumericDate.into()),
        Some(_) => Err(Malformed::NumericDate.into()),
    }
}

fn opt_string(map: &Map<String, Value>, claim: &'static str) -> Result<Option<String>, Error> {
    match map.get(claim) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Error::InvalidClaim {
            claim,
            why: "not a string",
        }),
    }
}

impl Claims {
    pub(crate) fn from_map(map: Map<String, Value>) -> Result<Self, Error> {
        let iss = opt_string(&map, "iss")?.ok_or(Error::MissingClaim { claim: "iss" })?;
        let sub = opt_string(&map, "sub")?;
        let aud = match map.get("aud") {
            None => return Err(Error::MissingClaim { claim: "aud" }),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) if !items.is_empty() && items.len() <= 64 => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or(Error::InvalidClaim {
                    claim: "aud",
                    why: "not a string or an array of strings",
                })?,
            Some(_) => {
                return Err(Error::InvalidClaim {
                    claim: "aud",
                    why: "not a string or an array of strings",
                });
            }
        };
        let exp = numeric_date(&map, "exp")?.ok_or(Error::MissingClaim { claim: "exp" })?;
        let iat = numeric_date(&map, "iat")?;
        let nbf = numeric_date(&map, "nbf")?;
        let email = opt_string(&map, "email")?;
        let email_verified = match map.get("email_verified") {
            None => false,
            Some(Value::Bool(b)) => *b,
            // Google's tokeninfo renders booleans as strings; accept exactly those two.
            Some(Value::String(s)) if s == "true" => true,
            Some(Value::String(s)) if s == "false" => false,
            Some(_) => {
                return Err(Error::InvalidClaim {
                    claim: "email_verified",
                    why: "not a boolean",
                });
            }
        };
        Ok(Claims {
            map,
            iss,
            sub,
            aud,
            exp,
            iat,
            nbf,
            email,
            email_verified,
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
        self.map.get("hd").and_then(Value::as_str)
    }
    pub fn get(&self, claim: &str) -> Option<&Value> {
        self.map.get(claim)
    }
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.map
    }
}
