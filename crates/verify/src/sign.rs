//! Signing keys and JWT encoding, for the parts that mint tokens (the emulator, the
//! gateway's IAP-style assertions, a service account's self-signed JWT). Kept beside the
//! verifier so that both sides share one notion of algorithms and key formats.

use crate::keys::{Algorithm, PublicKey};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::{Value, json};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    #[error("key generation failed")]
    Generate,
    #[error("private key is not an unencrypted PKCS#8 {0} key")]
    BadPrivateKey(&'static str),
    #[error("private key PEM is malformed")]
    BadPem,
    #[error("signing failed")]
    Sign,
    #[error("claims do not serialize to a JSON object")]
    Claims,
}

enum Inner {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// A private key with its `kid`. Its `Debug` never prints key material.
pub struct SigningKey {
    kid: String,
    inner: Inner,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.algorithm())
            .field("key", &"<hidden>")
            .finish()
    }
}

impl SigningKey {
    /// A new RSA-2048 key for RS256, the size Google's issuers use.
    pub fn generate_rs256(kid: impl Into<String>) -> Result<Self, SignError> {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| SignError::Generate)?;
        Ok(SigningKey {
            kid: kid.into(),
            inner: Inner::Rsa(pair),
        })
    }

    /// A new P-256 key for ES256 (IAP's assertion algorithm).
    pub fn generate_es256(kid: impl Into<String>) -> Result<Self, SignError> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| SignError::Generate)?;
        Ok(SigningKey {
            kid: kid.into(),
            inner: Inner::Ec(pair),
        })
    }

    /// A key from unencrypted PKCS#8 DER, of the given algorithm.
    pub fn from_pkcs8_der(
        kid: impl Into<String>,
        alg: Algorithm,
        der: &[u8],
    ) -> Result<Self, SignError> {
        let inner = match alg {
            Algorithm::RS256 => Inner::Rsa(
                RsaKeyPair::from_pkcs8(der).map_err(|_| SignError::BadPrivateKey("RSA"))?,
            ),
            Algorithm::ES256 => Inner::Ec(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(|_| SignError::BadPrivateKey("P-256"))?,
            ),
        };
        Ok(SigningKey {
            kid: kid.into(),
            inner,
        })
    }

    /// A key from a `-----BEGIN PRIVATE KEY-----` PEM block, as in a Google service-account
    /// key file's `private_key`.
    pub fn from_pkcs8_pem(
        kid: impl Into<String>,
        alg: Algorithm,
        pem: &str,
    ) -> Result<Self, SignError> {
        let (_, block) =
            x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|_| SignError::BadPem)?;
        if block.label != "PRIVATE KEY" {
            return Err(SignError::BadPem);
        }
        SigningKey::from_pkcs8_der(kid, alg, &block.contents)
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn algorithm(&self) -> Algorithm {
        match self.inner {
            Inner::Rsa(_) => Algorithm::RS256,
            Inner::Ec(_) => Algorithm::ES256,
        }
    }

    /// The private key as unencrypted PKCS#8 DER, for storage. Handle as a secret.
    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, SignError> {
        match &self.inner {
            Inner::Rsa(pair) => pair
                .as_der()
                .map(|d| d.as_ref().to_vec())
                .map_err(|_| SignError::Generate),
            Inner::Ec(pair) => pair
                .to_pkcs8v1()
                .map(|d| d.as_ref().to_vec())
                .map_err(|_| SignError::Generate),
        }
    }

    /// The private key as a PKCS#8 PEM block (a service-account key file's `private_key`).
    pub fn to_pkcs8_pem(&self) -> Result<String, SignError> {
        let der = self.to_pkcs8_der()?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).map_err(|_| SignError::Generate)?);
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        Ok(pem)
    }

    /// The public half as a DER SubjectPublicKeyInfo.
    pub fn public_spki_der(&self) -> Result<Vec<u8>, SignError> {
        let der = match &self.inner {
            Inner::Rsa(pair) => pair.public_key().as_der().map(|d| d.as_ref().to_vec()),
            Inner::Ec(pair) => pair.public_key().as_der().map(|d| d.as_ref().to_vec()),
        };
        der.map_err(|_| SignError::Generate)
    }

    /// The public half as a verifier key.
    pub fn public_key(&self) -> Result<PublicKey, SignError> {
        PublicKey::from_spki_der(&self.kid, &self.public_spki_der()?)
            .map_err(|_| SignError::Generate)
    }

    /// The public half as a JWK (`kty`, `alg`, `use: sig`, `kid`, and `n`/`e` or `crv`/`x`/`y`).
    pub fn public_jwk(&self) -> Result<Value, SignError> {
        match &self.inner {
            Inner::Rsa(pair) => {
                let public = pair.public_key();
                let n = public.modulus().big_endian_without_leading_zero();
                let e = public.exponent().big_endian_without_leading_zero();
                Ok(json!({
                    "kty": "RSA",
                    "alg": "RS256",
                    "use": "sig",
                    "kid": self.kid,
                    "n": URL_SAFE_NO_PAD.encode(n),
                    "e": URL_SAFE_NO_PAD.encode(e),
                }))
            }
            Inner::Ec(pair) => {
                let point = pair.public_key().as_ref();
                if point.len() != 65 {
                    return Err(SignError::Generate);
                }
                Ok(json!({
                    "kty": "EC",
                    "alg": "ES256",
                    "use": "sig",
                    "crv": "P-256",
                    "kid": self.kid,
                    "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
                }))
            }
        }
    }

    /// Raw signature over `message` (RS256: PKCS#1 v1.5; ES256: fixed `r || s`).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let rng = SystemRandom::new();
        match &self.inner {
            Inner::Rsa(pair) => {
                let mut sig = vec![0u8; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .map_err(|_| SignError::Sign)?;
                Ok(sig)
            }
            Inner::Ec(pair) => pair
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| SignError::Sign),
        }
    }

    /// A compact JWS of `claims` with header `{"alg", "kid", "typ": "JWT"}`.
    pub fn sign_jwt<C: Serialize + ?Sized>(&self, claims: &C) -> Result<String, SignError> {
        let header = json!({"alg": self.algorithm().jws_name(), "kid": self.kid, "typ": "JWT"});
        self.sign_jwt_with_header(&header, claims)
    }

    /// A compact JWS with a caller-built header (it must name this key's algorithm).
    pub fn sign_jwt_with_header<C: Serialize + ?Sized>(
        &self,
        header: &Value,
        claims: &C,
    ) -> Result<String, SignError> {
        let claims = serde_json::to_vec(claims).map_err(|_| SignError::Claims)?;
        if claims.first() != Some(&b'{') {
            return Err(SignError::Claims);
        }
        let header = serde_json::to_vec(header).map_err(|_| SignError::Claims)?;
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(claims));
        let signature = self.sign(token.as_bytes())?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(token)
    }
}
