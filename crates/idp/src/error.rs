//! Internal failures (storage, crypto). Protocol errors have their own shapes in `oauth`
//! and `toolkit`; these become a 500 whose body says nothing about internals.

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdpError {
    #[error("storage: {0}")]
    Store(#[from] gatehouse_store::StoreError),
    #[error("signing: {0}")]
    Sign(#[from] gatehouse_verify::SignError),
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("verifier: {0}")]
    Verifier(String),
    #[error("password hashing failed")]
    Password,
    #[error("stored data is inconsistent: {0}")]
    Corrupt(&'static str),
}
