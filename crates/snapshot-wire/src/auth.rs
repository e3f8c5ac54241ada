//! Who is asking: bearer tokens are turned into an [`Identity`] by an [`Authenticator`], and an
//! identity may read exactly one stream (the edge its own, a tenant's router its tenant's).
//!
//! The contract an authenticator implements (the operator's TokenReview one included):
//! - `authenticate` receives the bearer token exactly as sent (never empty, at most
//!   [`MAX_TOKEN_LEN`] bytes, not yet checked in any other way) and must not log it.
//! - It returns [`AuthError::Unauthenticated`] when the token is invalid, expired, issued for another
//!   audience, or belongs to nobody who may read snapshots; the server answers 401.
//! - It returns [`AuthError::Unavailable`] when it could not decide (e.g. the API server did not
//!   answer); the server answers 503 and the client retries with backoff. It must never turn an
//!   undecided check into an identity.
//! - It answers within [`AUTH_TIMEOUT`] or the server answers 503; it may cache positive answers for
//!   less than a token's lifetime.
//! - A TokenReview implementation maps `system:serviceaccount:<namespace>:bulkhead-router` (with the
//!   Bulkhead audience among the reviewed audiences) to `Identity::Tenant(<tenant owning namespace>)`,
//!   and the edge's service account to `Identity::Edge`. Which stream an identity may read is decided
//!   here ([`Identity::may_read`]), not by the authenticator.
//! - When the right to read can be withdrawn while a stream is open (a router's namespace no longer
//!   belongs to its tenant), it implements [`Authenticator::admit`] and returns a [`StreamGuard`]
//!   with the identity: the server asks the guard before every frame it sends on that stream and
//!   ends the stream when it says no (the client reconnects and is authenticated again).
//!
//! [`MAX_TOKEN_LEN`]: crate::limits::MAX_TOKEN_LEN
//! [`AUTH_TIMEOUT`]: crate::limits::AUTH_TIMEOUT

use crate::stream::StreamName;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// The edge tier: reads the edge stream.
    Edge,
    /// A tenant's router: reads that tenant's stream only.
    Tenant(String),
}

impl Identity {
    /// Whether this identity may read (and acknowledge) `stream`.
    pub fn may_read(&self, stream: &StreamName) -> bool {
        match (self, stream) {
            (Self::Edge, StreamName::Edge) => true,
            (Self::Tenant(mine), StreamName::Tenant(asked)) => mine == asked,
            _ => false,
        }
    }
}

/// A check the server re-runs before every frame of an open stream; see the module documentation.
pub trait StreamGuard: Send + Sync + 'static {
    /// Whether the stream may still receive frames; `false` ends it.
    fn still_allowed(&self) -> bool;
}

/// An authenticated caller and, when its right to read can be withdrawn, the guard of the streams
/// it opens.
#[derive(Clone)]
pub struct Admission {
    /// Who is asking.
    pub identity: Identity,
    /// Asked before every frame of a stream this admission opens; `None`: the identity suffices.
    pub guard: Option<Arc<dyn StreamGuard>>,
}

impl Admission {
    /// Whether the guard (if any) still allows its streams.
    pub fn still_allowed(&self) -> bool {
        self.guard.as_ref().is_none_or(|g| g.still_allowed())
    }
}

impl From<Identity> for Admission {
    fn from(identity: Identity) -> Self {
        Self {
            identity,
            guard: None,
        }
    }
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("identity", &self.identity)
            .field("guarded", &self.guard.is_some())
            .finish()
    }
}

/// Why a token was not turned into an identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The token is not valid for the snapshot service (answered 401).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The check could not be made (answered 503; the client retries).
    #[error("authentication unavailable: {0}")]
    Unavailable(String),
}

/// Turns a bearer token into an [`Identity`]; see the module documentation for the contract.
pub trait Authenticator: Send + Sync + 'static {
    /// Authenticates one token.
    fn authenticate(&self, token: &str)
        -> impl Future<Output = Result<Identity, AuthError>> + Send;

    /// Authenticates one token and says how to re-check it while its streams are open. The
    /// default has no guard: the identity alone decides, once.
    fn admit(&self, token: &str) -> impl Future<Output = Result<Admission, AuthError>> + Send {
        let identity = self.authenticate(token);
        async move { identity.await.map(Admission::from) }
    }
}

impl<A: Authenticator> Authenticator for Arc<A> {
    fn authenticate(
        &self,
        token: &str,
    ) -> impl Future<Output = Result<Identity, AuthError>> + Send {
        (**self).authenticate(token)
    }

    fn admit(&self, token: &str) -> impl Future<Output = Result<Admission, AuthError>> + Send {
        (**self).admit(token)
    }
}

/// A fixed token → identity table (standalone mode and tests). Tokens are kept as SHA-256 digests,
/// so a lookup compares digests, never secret bytes.
#[derive(Clone, Default)]
pub struct StaticTokens {
    by_digest: HashMap<[u8; 32], Identity>,
}

impl std::fmt::Debug for StaticTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticTokens")
            .field("tokens", &self.by_digest.len())
            .finish()
    }
}

impl StaticTokens {
    /// An empty table (every token is refused).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a token.
    pub fn insert(&mut self, token: &str, identity: Identity) {
        self.by_digest.insert(digest(token), identity);
    }

    /// Builder form of [`insert`](Self::insert).
    pub fn with(mut self, token: &str, identity: Identity) -> Self {
        self.insert(token, identity);
        self
    }
}

impl<S: AsRef<str>> FromIterator<(S, Identity)> for StaticTokens {
    fn from_iter<I: IntoIterator<Item = (S, Identity)>>(iter: I) -> Self {
        let mut tokens = Self::new();
        for (token, identity) in iter {
            tokens.insert(token.as_ref(), identity);
        }
        tokens
    }
}

impl Authenticator for StaticTokens {
    fn authenticate(
        &self,
        token: &str,
    ) -> impl Future<Output = Result<Identity, AuthError>> + Send {
        let found = self
            .by_digest
            .get(&digest(token))
            .cloned()
            .ok_or_else(|| AuthError::Unauthenticated("unknown token".into()));
        std::future::ready(found)
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_read_only_their_own_stream() {
        let acme = StreamName::tenant("acme").unwrap();
        let globex = StreamName::tenant("globex").unwrap();
        assert!(Identity::Tenant("acme".into()).may_read(&acme));
        assert!(!Identity::Tenant("acme".into()).may_read(&globex));
        assert!(!Identity::Tenant("acme".into()).may_read(&StreamName::Edge));
        assert!(Identity::Edge.may_read(&StreamName::Edge));
        assert!(!Identity::Edge.may_read(&acme));
    }

    #[tokio::test]
    async fn static_tokens_map_known_tokens_and_refuse_others() {
        let tokens: StaticTokens = [("t-acme", Identity::Tenant("acme".into()))]
            .into_iter()
            .collect();
        let tokens = tokens.with("t-edge", Identity::Edge);
        assert_eq!(
            tokens.authenticate("t-acme").await,
            Ok(Identity::Tenant("acme".into()))
        );
        assert_eq!(tokens.authenticate("t-edge").await, Ok(Identity::Edge));
        assert!(matches!(
            tokens.authenticate("t-acme ").await,
            Err(AuthError::Unauthenticated(_))
        ));
        assert!(!format!("{tokens:?}").contains("t-acme"));
    }
}
