//! Public keys and key sets: parsed once from a JWK set or a kid -> X.509 PEM map (the two
//! formats Google publishes), so that verification is a lookup and one signature check.

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use std::fmt;
use std::sync::Arc;

/// The signature algorithms an issuer profile may allow. Each key verifies exactly one of
/// them, fixed by the key's own type; HMAC and `none` do not exist here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256, RSA keys of 2048 to 8192 bits.
    RS256,
    /// ECDSA on P-256 with SHA-256, the JWS fixed-width `r || s` signature.
    ES256,
}

impl Algorithm {
    pub fn from_jws_name(name: &str) -> Option<Self> {
        match name {
            "RS256" => Some(Algorithm::RS256),
            "ES256" => Some(Algorithm::ES256),
            _ => None,
        }
    }

    pub fn jws_name(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::ES256 => "ES256",
        }
    }
}

/// Why a published key was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("key document is not JSON: {0}")]
    NotJson(String),
    #[error("key document is neither a JWK set nor a kid -> PEM certificate map")]
    UnknownDocument,
    #[error("key document is {size} bytes, more than the {max} allowed")]
    DocumentTooLarge { size: usize, max: usize },
    #[error("key document has {count} keys, more than the {max} allowed")]
    TooManyKeys { count: usize, max: usize },
    #[error("key has no kid")]
    MissingKid,
    #[error("unsupported key type {0:?}")]
    UnsupportedKeyType(String),
    #[error("key is not for signatures (use = {0:?})")]
    NotForSignatures(String),
    #[error("key's key_ops do not include verify")]
    NotForVerifying,
    #[error("key's alg {alg:?} does not match its type")]
    AlgorithmMismatch { alg: String },
    #[error("key member {0:?} is missing or not base64url")]
    BadMember(&'static str),
    #[error("RSA key refused: {0}")]
    WeakRsaKey(&'static str),
    #[error("key refused by the crypto library")]
    Rejected,
    #[error("certificate could not be parsed")]
    BadCertificate,
}

/// One issuer key, parsed and ready to verify.
#[derive(Clone)]
pub struct PublicKey {
    kid: Arc<str>,
    alg: Algorithm,
    key: Arc<ParsedPublicKey>,
    /// RSA modulus length in bytes; RS256 signatures are exactly this long.
    signature_len: usize,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 8192;

impl PublicKey {
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// Whether `other` is this key: same algorithm and public key material (the kid aside).
    pub fn same_key(&self, other: &PublicKey) -> bool {
        self.alg == other.alg
            && (Arc::ptr_eq(&self.key, &other.key) || (*self.key).as_ref() == (*other.key).as_ref())
    }

    pub(crate) fn signature_length_ok(&self, len: usize) -> bool {
        len == self.signature_len
    }

    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.key.verify_sig(message, signature).is_ok()
    }

    /// The raw signature check the JWS path makes (length, then the key's one algorithm),
    /// exposed for the raw-signature test vectors only. Not part of the API.
    #[doc(hidden)]
    pub fn verify_signature_for_tests(&self, message: &[u8], signature: &[u8]) -> bool {
        self.signature_length_ok(signature.len()) && self.verify(message, signature)
    }

    /// An RSA key from its big-endian modulus and exponent (a JWK's `n` and `e`).
    pub fn rsa(kid: &str, n: &[u8], e: &[u8]) -> Result<Self, KeyError> {
        let n = strip_leading_zeros(n);
        let e = strip_leading_zeros(e);
        check_rsa(n, e)?;
        let key = RsaPublicKeyComponents { n, e }
            .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
            .map_err(|_| KeyError::Rejected)?;
        Ok(PublicKey {
            kid: kid.into(),
            alg: Algorithm::RS256,
            key: Arc::new(key),
            signature_len: n.len(),
        })
    }

    /// A P-256 key from its affine coordinates (a JWK's `x` and `y`, 32 bytes each).
    pub fn p256(kid: &str, x: &[u8], y: &[u8]) -> Result<Self, KeyError> {
        if x.len() != 32 || y.len() != 32 {
            return Err(KeyError::BadMember("x/y"));
        }
        let mut point = Vec::with_capacity(65);
        point.push(0x04);
        point.extend_from_slice(x);
        point.extend_from_slice(y);
        let key = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
            .map_err(|_| KeyError::Rejected)?;
        Ok(PublicKey {
            kid: kid.into(),
            alg: Algorithm::ES256,
            key: Arc::new(key),
            signature_len: 64,
        })
    }

    /// A key from a DER `SubjectPublicKeyInfo`, its algorithm told by the SPKI's OID.
    pub fn from_spki_der(kid: &str, spki: &[u8]) -> Result<Self, KeyError> {
        use x509_parser::prelude::FromDer;
        use x509_parser::public_key::PublicKey as X509Key;
        use x509_parser::x509::SubjectPublicKeyInfo;
        let (rest, info) =
            SubjectPublicKeyInfo::from_der(spki).map_err(|_| KeyError::BadCertificate)?;
        if !rest.is_empty() {
            return Err(KeyError::BadCertificate);
        }
        match info.parsed().map_err(|_| KeyError::BadCertificate)? {
            X509Key::RSA(rsa) => PublicKey::rsa(kid, rsa.modulus, rsa.exponent),
            X509Key::EC(point) => {
                let p256 = x509_parser::oid_registry::OID_EC_P256;
                let curve = info
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok());
                if curve.as_ref() != Some(&p256) || point.data().len() != 65 {
                    return Err(KeyError::UnsupportedKeyType("EC (not P-256)".into()));
                }
                // SEC 1: 0x04 is the uncompressed form; a hybrid (0x06, 0x07) or any other
                // prefix is not read as one.
                if point.data()[0] != 0x04 {
                    return Err(KeyError::UnsupportedKeyType(
                        "EC point not in uncompressed form".into(),
                    ));
                }
                let data = point.data();
                PublicKey::p256(kid, &data[1..33], &data[33..65])
            }
            _ => Err(KeyError::UnsupportedKeyType("SPKI".into())),
        }
    }

    /// The key inside a PEM X.509 certificate (Google's `oauth2/v1/certs` and Firebase's
    /// robot metadata). The certificate's validity dates are not checked: Google's own
    /// libraries do not, and the document's freshness is what the cache governs.
    pub fn from_x509_pem(kid: &str, pem: &str) -> Result<Self, KeyError> {
        let (rest, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .map_err(|_| KeyError::BadCertificate)?;
        if pem.label != "CERTIFICATE" || !rest.iter().all(u8::is_ascii_whitespace) {
            return Err(KeyError::BadCertificate);
        }
        let cert = pem.parse_x509().map_err(|_| KeyError::BadCertificate)?;
        PublicKey::from_spki_der(kid, cert.tbs_certificate.subject_pki.raw)
    }

    /// A key from one JWK object (RFC 7517). `use`, when present, must be `sig`; `alg`,
    /// when present, must be the one algorithm the key's type allows.
    pub fn from_jwk(jwk: &Map<String, Value>) -> Result<Self, KeyError> {
        let kid = match jwk.get("kid") {
            Some(Value::String(kid)) if !kid.is_empty() => kid.as_str(),
            _ => return Err(KeyError::MissingKid),
        };
        if let Some(u) = jwk.get("use") {
            if u.as_str() != Some("sig") {
                return Err(KeyError::NotForSignatures(u.to_string()));
            }
        }
        // RFC 7517 §4.3: `key_ops`, when present, must allow verifying.
        if let Some(ops) = jwk.get("key_ops") {
            let verify = ops
                .as_array()
                .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
            if !verify {
                return Err(KeyError::NotForVerifying);
            }
        }
        let kty = jwk.get("kty").and_then(Value::as_str).unwrap_or("");
        let expected = match kty {
            "RSA" => Algorithm::RS256,
            "EC" => Algorithm::ES256,
            other => {
                return Err(KeyError::UnsupportedKeyType(
                    other.chars().take(16).collect(),
                ));
            }
        };
        if let Some(alg) = jwk.get("alg") {
            if alg.as_str() != Some(expected.jws_name()) {
                return Err(KeyError::AlgorithmMismatch {
                    alg: alg.to_string().chars().take(16).collect(),
                });
            }
        }
        let member = |name: &'static str| -> Result<Vec<u8>, KeyError> {
            jwk.get(name)
                .and_then(Value::as_str)
                .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
                .ok_or(KeyError::BadMember(name))
        };
        match expected {
            Algorithm::RS256 => PublicKey::rsa(kid, &member("n")?, &member("e")?),
            Algorithm::ES256 => {
                if jwk.get("crv").and_then(Value::as_str) != Some("P-256") {
                    return Err(KeyError::UnsupportedKeyType("EC (not P-256)".into()));
                }
                PublicKey::p256(kid, &member("x")?, &member("y")?)
            }
        }
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

fn check_rsa(n: &[u8], e: &[u8]) -> Result<(), KeyError> {
    // An empty (or all-zero) modulus has no bits; `n` has no leading zero byte otherwise.
    let bits = n
        .first()
        .map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize);
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(KeyError::WeakRsaKey("modulus must be 2048 to 8192 bits"));
    }
    if n.last().is_some_and(|b| b & 1 == 0) {
        return Err(KeyError::WeakRsaKey("even modulus"));
    }
    // e = 1 makes every "signature" its own message; tiny or even exponents are not RSA.
    if e.is_empty()
        || e.len() > 4
        || e.last().is_some_and(|b| b & 1 == 0)
        || (e.len() == 1 && e[0] < 3)
    {
        return Err(KeyError::WeakRsaKey(
            "public exponent must be odd, at least 3, below 2^32",
        ));
    }
    if roca::is_vulnerable(n) {
        return Err(KeyError::WeakRsaKey(
            "modulus has the ROCA (CVE-2017-15361) fingerprint",
        ));
    }
    Ok(())
}

/// The ROCA fingerprint test (Nemec et al., CCS 2017): keys from the vulnerable Infineon
/// library have `n mod p` inside the subgroup generated by 65537 for every small prime `p`.
mod roca {
    const PRIMES: [u32; 38] = [
        3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89,
        97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
    ];

    fn residue(n: &[u8], p: u32) -> u32 {
        n.iter()
            .fold(0u32, |acc, b| ((acc << 8) | u32::from(*b)) % p)
    }

    fn in_subgroup_of_65537(r: u32, p: u32) -> bool {
        let g = 65537 % p;
        let mut x = 1u32;
        for _ in 0..p {
            if x == r {
                return true;
            }
            x = x * g % p;
        }
        false
    }

    pub(super) fn is_vulnerable(n: &[u8]) -> bool {
        PRIMES
            .iter()
            .all(|&p| in_subgroup_of_65537(residue(n, p), p))
    }
}

/// Limits on what a key document may hold.
#[derive(Debug, Clone, Copy)]
pub struct KeyLimits {
    pub max_document_bytes: usize,
    pub max_keys: usize,
}

impl Default for KeyLimits {
    fn default() -> Self {
        KeyLimits {
            max_document_bytes: 256 * 1024,
            max_keys: 64,
        }
    }
}

/// An issuer's keys, looked up by `kid`. Small (issuers publish two or three keys), so a
/// linear scan beats hashing.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<PublicKey>,
}

impl KeySet {
    /// A key set from keys already parsed. Keys sharing a kid are dropped: a lookup must
    /// never have to choose.
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        let keys: Vec<PublicKey> = keys.into_iter().collect();
        let unique = keys
            .iter()
            .filter(|k| keys.iter().filter(|o| o.kid == k.kid).count() == 1)
            .cloned()
            .collect();
        KeySet { keys: unique }
    }

    pub fn get(&self, kid: &str) -> Option<&PublicKey> {
        self.keys.iter().find(|k| &*k.kid == kid)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| &*k.kid)
    }

    /// Parses a key document, telling the format apart by content: an object with a
    /// `keys` array is a JWK set, an object of strings a kid -> PEM certificate map.
    /// Keys of types we do not verify (e.g. `oct`, P-384) are skipped; a document with no
    /// usable key at all is an error.
    pub fn from_document(bytes: &[u8], limits: KeyLimits) -> Result<Self, KeyError> {
        if bytes.len() > limits.max_document_bytes {
            return Err(KeyError::DocumentTooLarge {
                size: bytes.len(),
                max: limits.max_document_bytes,
            });
        }
        let map =
            crate::json::parse_object(bytes).map_err(|e| KeyError::NotJson(format!("{e:?}")))?;
        let mut parsed = Vec::new();
        let mut last_error = None;
        if let Some(Value::Array(jwks)) = map.get("keys") {
            if jwks.len() > limits.max_keys {
                return Err(KeyError::TooManyKeys {
                    count: jwks.len(),
                    max: limits.max_keys,
                });
            }
            for jwk in jwks {
                let result = jwk
                    .as_object()
                    .ok_or(KeyError::UnknownDocument)
                    .and_then(PublicKey::from_jwk);
                match result {
                    Ok(key) => parsed.push(key),
                    Err(e) => last_error = Some(e),
                }
            }
        } else if !map.is_empty() && map.values().all(Value::is_string) {
            if map.len() > limits.max_keys {
                return Err(KeyError::TooManyKeys {
                    count: map.len(),
                    max: limits.max_keys,
                });
            }
            for (kid, pem) in &map {
                match PublicKey::from_x509_pem(kid, pem.as_str().unwrap_or_default()) {
                    Ok(key) => parsed.push(key),
                    Err(e) => last_error = Some(e),
                }
            }
        } else {
            return Err(KeyError::UnknownDocument);
        }
        if let Some(e) = &last_error {
            tracing::warn!(error = %e, "skipped a key in the issuer's key document");
        }
        let set = KeySet::new(parsed);
        if set.is_empty() {
            return Err(last_error.unwrap_or(KeyError::UnknownDocument));
        }
        Ok(set)
    }
}
