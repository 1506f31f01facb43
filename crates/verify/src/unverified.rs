//! Reading a token without verifying it. Both entry points say so in their names: one for
//! humans inspecting a token, one for apps behind a front door that already verified it.

use crate::claims::Claims;
use crate::error::{Error, Malformed};
use crate::jws::{self, Compact, SIGNATURE_REMOVED};
use serde_json::{Map, Value};

/// A token's header and claims, as JSON objects, verified by nobody.
#[derive(Debug, Clone)]
pub struct Unverified {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
}

/// Header and claims of any well-formed compact JWS, verifying nothing. For display
/// (`gatehouse decode`) only: never make a decision on its output.
pub fn danger_decode_unverified(token: &str) -> Result<Unverified, Error> {
    let compact = Compact::split(token)?;
    let header = jws::parse_claims(compact.header).map_err(|e| match e {
        Error::Malformed(Malformed::ClaimsShape) => Error::Malformed(Malformed::HeaderShape),
        e => e,
    })?;
    Ok(Unverified {
        header,
        claims: jws::parse_claims(compact.payload)?,
    })
}

/// The claims of a token that a trusted front door (Cloud Run, or the Gatehouse gateway)
/// verified and forwarded with its signature replaced by `SIGNATURE_REMOVED_BY_GOOGLE`.
///
/// Only tokens in exactly that form are accepted, so a signed token cannot be smuggled
/// through here; the caller must be sure that only the front door can reach it.
pub fn trusted_front_door_claims(token: &str) -> Result<Claims, Error> {
    let compact = Compact::split(token)?;
    if compact.signature != SIGNATURE_REMOVED {
        return Err(Error::BadSignature);
    }
    jws::parse_header(compact.header)?;
    jws::decode_claims(compact.payload)
}
