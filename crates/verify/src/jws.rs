//! Strict parsing of compact JWS tokens (RFC 7515 §7.1) and their signature check.
//!
//! Nothing here trusts the header beyond a lookup: the caller supplies the key set and the
//! algorithms its issuer profile allows; `jwk`, `jku`, `x5u` and `x5c` are never read.

use crate::error::{Error, Malformed};
use crate::json::{Field, StrictError, parse_members, parse_object};
use crate::keys::{Algorithm, KeySet, PublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// What Cloud Run puts where the signature was, after its own check.
pub const SIGNATURE_REMOVED: &str = "SIGNATURE_REMOVED_BY_GOOGLE";

/// A compact JWS split into its parts, nothing decoded yet.
#[derive(Clone, Copy)]
pub(crate) struct Compact<'a> {
    pub header: &'a str,
    pub payload: &'a str,
    pub signature: &'a str,
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a str,
}

impl<'a> Compact<'a> {
    pub fn split(token: &'a str) -> Result<Self, Error> {
        let mut it = token.splitn(4, '.');
        let (Some(header), Some(payload), Some(signature), None) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(Malformed::Segments.into());
        };
        if header.is_empty() || payload.is_empty() || signature.is_empty() {
            return Err(Malformed::Segments.into());
        }
        Ok(Compact {
            header,
            payload,
            signature,
            signing_input: &token[..header.len() + 1 + payload.len()],
        })
    }
}

/// The protected header, as far as verification cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub typ: Option<String>,
}

/// Strict base64url: the unpadded alphabet only, canonical trailing bits.
pub(crate) fn b64_decode(s: &str) -> Result<Vec<u8>, Error> {
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| Malformed::Base64.into())
}

fn json_object(segment: &str, shape: Malformed) -> Result<Map<String, Value>, Error> {
    let bytes = b64_decode(segment)?;
    if std::str::from_utf8(&bytes).is_err() {
        return Err(Malformed::Utf8.into());
    }
    parse_object(&bytes).map_err(|e| match e {
        StrictError::Duplicate => Malformed::DuplicateKey.into(),
        StrictError::NotObject => shape.into(),
        StrictError::Syntax => Malformed::Json.into(),
    })
}

pub(crate) fn parse_header(segment: &str) -> Result<Header, Error> {
    let bytes = b64_decode(segment)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| Error::from(Malformed::Utf8))?;
    let members = parse_members(text).map_err(|e| -> Error {
        match e {
            StrictError::Duplicate => Malformed::DuplicateKey.into(),
            StrictError::NotObject => Malformed::HeaderShape.into(),
            StrictError::Syntax => Malformed::Json.into(),
        }
    })?;
    let field = |name: &str| members.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    // We implement no extension, so any `crit` (RFC 7515 §4.1.11) must be refused; this
    // also refuses RFC 7797's unencoded payloads, which require `crit: ["b64"]`.
    if field("crit").is_some() {
        return Err(Error::CriticalHeader);
    }
    let alg = match field("alg") {
        Some(Field::Str(alg)) => {
            Algorithm::from_jws_name(alg).ok_or_else(|| Error::BadAlgorithm {
                alg: alg.chars().take(32).collect(),
            })?
        }
        _ => return Err(Malformed::HeaderShape.into()),
    };
    let string = |name: &str| match field(name) {
        None => Ok(None),
        Some(Field::Str(s)) => Ok(Some(s.to_string())),
        Some(_) => Err(Error::from(Malformed::HeaderShape)),
    };
    Ok(Header {
        alg,
        kid: string("kid")?,
        typ: string("typ")?,
    })
}

/// The claims of a token, typed (the hot path: no JSON value tree is built).
pub(crate) fn decode_claims(segment: &str) -> Result<crate::claims::Claims, Error> {
    let bytes = b64_decode(segment)?;
    let text = String::from_utf8(bytes).map_err(|_| Error::from(Malformed::Utf8))?;
    crate::claims::Claims::parse(text)
}

pub(crate) fn parse_claims(segment: &str) -> Result<Map<String, Value>, Error> {
    json_object(segment, Malformed::ClaimsShape)
}

/// Checks the signature of `compact` with the key its `kid` names in `keys`, for an
/// algorithm in `allowed`. Returns the header on success. A key verifies only the one
/// algorithm of its own type.
/// Returns the key that checked the signature.
pub(crate) fn verify_signature<'k>(
    compact: &Compact<'_>,
    header: &Header,
    keys: &'k KeySet,
    allowed: &[Algorithm],
) -> Result<&'k PublicKey, Error> {
    if !allowed.contains(&header.alg) {
        return Err(Error::BadAlgorithm {
            alg: header.alg.jws_name().to_owned(),
        });
    }
    let kid = header.kid.as_deref().ok_or(Error::MissingKid)?;
    let key = keys.get(kid).ok_or_else(|| Error::UnknownKid {
        kid: kid.chars().take(64).collect(),
    })?;
    if key.algorithm() != header.alg {
        return Err(Error::BadAlgorithm {
            alg: header.alg.jws_name().to_owned(),
        });
    }
    if compact.signature == SIGNATURE_REMOVED {
        return Err(Error::SignatureRemoved);
    }
    let signature = b64_decode(compact.signature)?;
    if !key.signature_length_ok(signature.len()) {
        return Err(Malformed::SignatureLength.into());
    }
    if key.verify(compact.signing_input.as_bytes(), &signature) {
        Ok(key)
    } else {
        Err(Error::BadSignature)
    }
}

/// Checks only the signature of a compact JWS against `keys`, for an algorithm in `allowed`,
/// and returns the decoded payload. The payload is not parsed and no claim is checked, so
/// this is not token verification: it serves signature-level test vectors (Wycheproof's
/// JWS payloads are not JWT claims) and callers that check claims themselves.
/// An empty payload is allowed here (RFC 7515 permits it; a JWT never has one).
pub fn verify_signature_only(
    token: &str,
    keys: &KeySet,
    allowed: &[Algorithm],
) -> Result<Vec<u8>, Error> {
    let compact = match token.split_once("..") {
        // `header..signature`: an empty payload, which `Compact::split` refuses.
        Some((header, signature))
            if !header.is_empty() && !header.contains('.') && !signature.contains('.') =>
        {
            Compact {
                header,
                payload: "",
                signature,
                signing_input: &token[..header.len() + 1],
            }
        }
        _ => Compact::split(token)?,
    };
    if compact.signature.is_empty() {
        return Err(Malformed::Segments.into());
    }
    let header = parse_header(compact.header)?;
    verify_signature(&compact, &header, keys, allowed)?;
    b64_decode(compact.payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_needs_exactly_three_non_empty_segments() {
        for bad in ["", "a", "a.b", "a.b.c.d", ".b.c", "a..c", "a.b.", "a.b.c."] {
            assert_eq!(
                Compact::split(bad).err(),
                Some(Error::Malformed(Malformed::Segments)),
                "{bad:?}"
            );
        }
        let c = Compact::split("aa.bb.cc").unwrap();
        assert_eq!(c.signing_input, "aa.bb");
    }

    #[test]
    fn base64_is_strict() {
        assert!(b64_decode("Zm9v").is_ok());
        assert!(b64_decode("Zm9v=").is_err(), "padding");
        assert!(b64_decode("Zm+v").is_err(), "standard alphabet");
        assert!(b64_decode("Zm9v\n").is_err(), "whitespace");
        assert!(b64_decode("Zh").is_err(), "non-canonical trailing bits");
    }

    fn seg(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn header_rules() {
        assert_eq!(
            parse_header(&seg(r#"{"alg":"RS256","kid":"k"}"#))
                .unwrap()
                .kid
                .as_deref(),
            Some("k")
        );
        assert_eq!(
            parse_header(&seg(r#"{"alg":"none"}"#)).unwrap_err().code(),
            "bad_algorithm"
        );
        assert_eq!(
            parse_header(&seg(r#"{"alg":"HS256"}"#)).unwrap_err().code(),
            "bad_algorithm"
        );
        assert_eq!(
            parse_header(&seg(r#"{"alg":"RS256","crit":["exp"]}"#)).unwrap_err(),
            Error::CriticalHeader
        );
        assert_eq!(
            parse_header(&seg(r#"{"alg":"RS256","alg":"none"}"#)).unwrap_err(),
            Error::Malformed(Malformed::DuplicateKey)
        );
        assert_eq!(
            parse_header(&seg(r#"{"alg":"RS256","kid":7}"#)).unwrap_err(),
            Error::Malformed(Malformed::HeaderShape)
        );
        assert_eq!(
            parse_header(&URL_SAFE_NO_PAD.encode(b"{\"alg\":\"RS256\",\"kid\":\"\xff\"}"))
                .unwrap_err(),
            Error::Malformed(Malformed::Utf8)
        );
    }
}
