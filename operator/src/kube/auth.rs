//! Snapshot API authentication by `TokenReview`: the edge and the routers present projected
//! service-account tokens for [`SNAPSHOT_AUDIENCE`]; the API server says whose they are.
//!
//! - `system:serviceaccount:<namespace>:bulkhead-router` is the router of the tenant that owns
//!   `<namespace>` ([`TenantDirectory`], kept current by the control loop) →
//!   [`Identity::Tenant`]; a namespace no served tenant owns is refused.
//! - `system:serviceaccount:<system namespace>:bulkhead-edge` → [`Identity::Edge`].
//! - Anything else, an unauthenticated token, or a token reviewed without our audience →
//!   [`AuthError::Unauthenticated`]. An API error, a timeout, or a directory not loaded yet →
//!   [`AuthError::Unavailable`] (the client retries; nothing undecided becomes an identity).
//!
//! Positive reviews are cached for [`POSITIVE_CACHE_TTL`] (far less than a projected token's
//! hour), keyed by the token's SHA-256 digest, at most [`MAX_CACHED_TOKENS`] entries. The cache
//! holds the reviewed user name, not the identity: a tenant removed from the directory stops being
//! served at once. Tokens are never logged.
//!
//! A router's stream is guarded ([`Authenticator::admit`]): before every frame the server checks
//! that the router's namespace still belongs to the tenant whose stream it reads, so a Tenant
//! whose `spec.namespace` changed never sends its new namespace's snapshot (private keys) to the
//! routers left in the old one.

use crate::children::{EDGE_NAME, ROUTER_NAME, SNAPSHOT_AUDIENCE};
use ::kube::api::{Api, PostParams};
use ::kube::Client;
use bulkhead_snapshot_wire::{Admission, AuthError, Authenticator, Identity, StreamGuard};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// How long a positive review is trusted without asking the API server again.
pub const POSITIVE_CACHE_TTL: Duration = Duration::from_secs(60);
/// Most reviews cached at once (one per live token: routers, edge replicas).
pub const MAX_CACHED_TOKENS: usize = 1024;
/// Deadline of one `TokenReview` call (below the snapshot server's own authentication timeout).
pub const TOKEN_REVIEW_TIMEOUT: Duration = Duration::from_secs(5);
/// User-name prefix of service accounts.
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// Which served tenant owns which namespace. Cheap to clone; clones share the table.
#[derive(Debug, Clone, Default)]
pub struct TenantDirectory {
    inner: Arc<RwLock<DirectoryState>>,
}

#[derive(Debug, Default)]
struct DirectoryState {
    loaded: bool,
    by_namespace: BTreeMap<String, String>,
}

impl TenantDirectory {
    /// An empty directory, not loaded yet (routers are told to retry).
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the table (namespace → tenant) and marks the directory loaded. Returns the
    /// `(namespace, tenant)` pairs it no longer holds: routers authenticated in such a namespace
    /// must stop reading that tenant's snapshots.
    pub fn replace(&self, by_namespace: BTreeMap<String, String>) -> Vec<(String, String)> {
        let mut state = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        state.loaded = true;
        let old = std::mem::replace(&mut state.by_namespace, by_namespace);
        old.into_iter()
            .filter(|(ns, tenant)| state.by_namespace.get(ns) != Some(tenant))
            .collect()
    }

    /// Whether `tenant` is the served tenant owning `namespace`.
    pub fn owns(&self, namespace: &str, tenant: &str) -> bool {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .by_namespace
            .get(namespace)
            .is_some_and(|t| t == tenant)
    }

    /// Whether the table was loaded at least once.
    pub fn is_loaded(&self) -> bool {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .loaded
    }

    /// The served tenant owning `namespace`.
    pub fn tenant_of(&self, namespace: &str) -> Option<String> {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .by_namespace
            .get(namespace)
            .cloned()
    }
}

struct CachedReview {
    username: String,
    expires: Instant,
}

/// The operator's [`Authenticator`]: `TokenReview` against the API server, see the module docs.
pub struct TokenReviewAuth {
    client: Client,
    directory: TenantDirectory,
    system_namespace: String,
    cache: Mutex<HashMap<[u8; 32], CachedReview>>,
}

impl std::fmt::Debug for TokenReviewAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewAuth")
            .field("system_namespace", &self.system_namespace)
            .finish_non_exhaustive()
    }
}

impl TokenReviewAuth {
    /// An authenticator asking `client`'s API server; the edge's service account lives in
    /// `system_namespace`.
    pub fn new(
        client: Client,
        directory: TenantDirectory,
        system_namespace: impl Into<String>,
    ) -> Self {
        Self {
            client,
            directory,
            system_namespace: system_namespace.into(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, key: &[u8; 32]) -> Option<String> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .get(key)
            .filter(|c| c.expires > Instant::now())
            .map(|c| c.username.clone())
    }

    fn remember(&self, key: [u8; 32], username: &str) {
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= MAX_CACHED_TOKENS {
            cache.retain(|_, c| c.expires > now);
        }
        if cache.len() >= MAX_CACHED_TOKENS {
            if let Some(oldest) = cache.iter().min_by_key(|(_, c)| c.expires).map(|(k, _)| *k) {
                cache.remove(&oldest);
            }
        }
        cache.insert(
            key,
            CachedReview {
                username: username.to_owned(),
                expires: now + POSITIVE_CACHE_TTL,
            },
        );
    }

    /// Asks the API server whose token this is; returns the authenticated user name.
    async fn review(&self, token: &str) -> Result<String, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                audiences: Some(vec![SNAPSHOT_AUDIENCE.to_owned()]),
                token: Some(token.to_owned()),
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = tokio::time::timeout(
            TOKEN_REVIEW_TIMEOUT,
            api.create(&PostParams::default(), &review),
        )
        .await
        .map_err(|_| AuthError::Unavailable("TokenReview timed out".into()))?
        .map_err(|e| AuthError::Unavailable(format!("TokenReview failed: {e}")))?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status
                .error
                .unwrap_or_else(|| "token not authenticated".to_owned());
            return Err(AuthError::Unauthenticated(why));
        }
        let audience_ok = status
            .audiences
            .iter()
            .flatten()
            .any(|a| a == SNAPSHOT_AUDIENCE);
        if !audience_ok {
            return Err(AuthError::Unauthenticated(format!(
                "token is not valid for the audience {SNAPSHOT_AUDIENCE}"
            )));
        }
        status
            .user
            .and_then(|u| u.username)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| AuthError::Unauthenticated("token names no user".into()))
    }

    /// Maps an authenticated user name to the identity it may read snapshots as.
    fn identify(&self, username: &str) -> Result<Identity, AuthError> {
        let refused = || AuthError::Unauthenticated(format!("{username} may not read snapshots"));
        let (namespace, account) = username
            .strip_prefix(SERVICE_ACCOUNT_PREFIX)
            .and_then(|rest| rest.split_once(':'))
            .ok_or_else(refused)?;
        if namespace == self.system_namespace && account == EDGE_NAME {
            return Ok(Identity::Edge);
        }
        if account != ROUTER_NAME {
            return Err(refused());
        }
        if !self.directory.is_loaded() {
            return Err(AuthError::Unavailable(
                "the tenant list is not loaded yet".into(),
            ));
        }
        self.directory
            .tenant_of(namespace)
            .map(Identity::Tenant)
            .ok_or_else(|| {
                AuthError::Unauthenticated(format!(
                    "namespace {namespace:?} is not onboarded by a served Tenant"
                ))
            })
    }
}

impl TokenReviewAuth {
    /// The user name `token` was reviewed as (cached, or asked of the API server).
    async fn username(&self, token: &str) -> Result<String, AuthError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(username) = self.cached(&key) {
            return Ok(username);
        }
        let username = self.review(token).await?;
        self.remember(key, &username);
        Ok(username)
    }
}

/// The guard of a router's stream: its service account's namespace must still belong to the
/// tenant it was admitted as, checked against the [`TenantDirectory`] before every frame.
struct NamespaceGuard {
    directory: TenantDirectory,
    namespace: String,
    tenant: String,
}

impl StreamGuard for NamespaceGuard {
    fn still_allowed(&self) -> bool {
        self.directory.owns(&self.namespace, &self.tenant)
    }
}

impl Authenticator for TokenReviewAuth {
    async fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        self.admit(token).await.map(|a| a.identity)
    }

    async fn admit(&self, token: &str) -> Result<Admission, AuthError> {
        let username = self.username(token).await?;
        let identity = self.identify(&username)?;
        let namespace = username
            .strip_prefix(SERVICE_ACCOUNT_PREFIX)
            .and_then(|rest| rest.split_once(':'))
            .map(|(namespace, _)| namespace.to_owned());
        let guard: Option<Arc<dyn StreamGuard>> = match (&identity, namespace) {
            (Identity::Tenant(tenant), Some(namespace)) => Some(Arc::new(NamespaceGuard {
                directory: self.directory.clone(),
                namespace,
                tenant: tenant.clone(),
            })),
            _ => None,
        };
        Ok(Admission { identity, guard })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::testing::{json_body, respond_json, MockApi};
    use serde_json::json;

    fn directory() -> TenantDirectory {
        let d = TenantDirectory::new();
        d.replace(BTreeMap::from([("team-a".to_owned(), "acme".to_owned())]));
        d
    }

    fn authenticated(username: &str, audiences: &[&str]) -> serde_json::Value {
        json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "metadata": {},
            "spec": {},
            "status": {
                "authenticated": true,
                "audiences": audiences,
                "user": {"username": username}
            }
        })
    }

    /// Runs one authentication against a mock API server answering `answer` (status, body); returns
    /// the result and the request body the operator sent.
    async fn authenticate_once(
        auth: &TokenReviewAuth,
        mock: &mut MockApi,
        token: &str,
        status: u16,
        answer: serde_json::Value,
    ) -> (Result<Identity, AuthError>, serde_json::Value) {
        let call = auth.authenticate(token);
        let serve = async {
            let (request, send) = mock.next_request().await;
            assert_eq!(request.method(), http::Method::POST);
            assert_eq!(
                request.uri().path(),
                "/apis/authentication.k8s.io/v1/tokenreviews"
            );
            let body = json_body(request).await;
            respond_json(send, status, &answer);
            body
        };
        tokio::join!(call, serve)
    }

    #[tokio::test]
    async fn a_router_token_maps_to_the_tenant_owning_its_namespace() {
        let (client, mut mock) = MockApi::pair();
        let auth = TokenReviewAuth::new(client, directory(), "bulkhead-system");
        let (result, sent) = authenticate_once(
            &auth,
            &mut mock,
            "tok-a",
            200,
            authenticated(
                "system:serviceaccount:team-a:bulkhead-router",
                &[SNAPSHOT_AUDIENCE],
            ),
        )
        .await;
        assert_eq!(result, Ok(Identity::Tenant("acme".into())));
        assert!(crate::rbac::allows(
            "authentication.k8s.io",
            "tokenreviews",
            "create",
            crate::rbac::Scope::Cluster
        ));
        assert_eq!(sent["kind"], "TokenReview");
        assert_eq!(sent["spec"]["token"], "tok-a");
        assert_eq!(sent["spec"]["audiences"], json!([SNAPSHOT_AUDIENCE]));
    }

    #[tokio::test]
    async fn the_edge_account_in_the_system_namespace_is_the_edge() {
        let (client, mut mock) = MockApi::pair();
        let auth = TokenReviewAuth::new(client, directory(), "bulkhead-system");
        let (result, _) = authenticate_once(
            &auth,
            &mut mock,
            "tok-e",
            200,
            authenticated(
                "system:serviceaccount:bulkhead-system:bulkhead-edge",
                &[SNAPSHOT_AUDIENCE],
            ),
        )
        .await;
        assert_eq!(result, Ok(Identity::Edge));

        let (result, _) = authenticate_once(
            &auth,
            &mut mock,
            "tok-fake-edge",
            200,
            authenticated(
                "system:serviceaccount:team-a:bulkhead-edge",
                &[SNAPSHOT_AUDIENCE],
            ),
        )
        .await;
        assert!(
            matches!(result, Err(AuthError::Unauthenticated(_))),
            "an edge-named account in a tenant namespace is nobody: {result:?}"
        );
    }

    #[tokio::test]
    async fn wrong_audience_unauthenticated_and_strangers_are_refused() {
        let (client, mut mock) = MockApi::pair();
        let auth = TokenReviewAuth::new(client, directory(), "bulkhead-system");
        let cases = [
            authenticated(
                "system:serviceaccount:team-a:bulkhead-router",
                &["https://kubernetes.default.svc"],
            ),
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {},
                   "status": {"authenticated": false, "error": "token expired"}}),
            authenticated(
                "system:serviceaccount:team-b:bulkhead-router",
                &[SNAPSHOT_AUDIENCE],
            ),
            authenticated("system:serviceaccount:team-a:default", &[SNAPSHOT_AUDIENCE]),
            authenticated("alice", &[SNAPSHOT_AUDIENCE]),
        ];
        for (i, answer) in cases.into_iter().enumerate() {
            let (result, _) =
                authenticate_once(&auth, &mut mock, &format!("tok-{i}"), 200, answer).await;
            assert!(
                matches!(result, Err(AuthError::Unauthenticated(_))),
                "case {i}: {result:?}"
            );
        }
    }

    #[tokio::test]
    async fn api_errors_and_an_unloaded_directory_are_unavailable() {
        let (client, mut mock) = MockApi::pair();
        let auth = TokenReviewAuth::new(client.clone(), directory(), "bulkhead-system");
        let (result, _) = authenticate_once(
            &auth,
            &mut mock,
            "tok",
            500,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "message": "etcd unavailable", "reason": "InternalError", "code": 500}),
        )
        .await;
        assert!(
            matches!(result, Err(AuthError::Unavailable(_))),
            "{result:?}"
        );

        let auth = TokenReviewAuth::new(client, TenantDirectory::new(), "bulkhead-system");
        let (result, _) = authenticate_once(
            &auth,
            &mut mock,
            "tok",
            200,
            authenticated(
                "system:serviceaccount:team-a:bulkhead-router",
                &[SNAPSHOT_AUDIENCE],
            ),
        )
        .await;
        assert!(
            matches!(result, Err(AuthError::Unavailable(_))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn positive_reviews_are_cached_but_the_directory_is_asked_each_time() {
        let (client, mut mock) = MockApi::pair();
        let dir = directory();
        let auth = TokenReviewAuth::new(client, dir.clone(), "bulkhead-system");
        let (result, _) = authenticate_once(
            &auth,
            &mut mock,
            "tok-a",
            200,
            authenticated(
                "system:serviceaccount:team-a:bulkhead-router",
                &[SNAPSHOT_AUDIENCE],
            ),
        )
        .await;
        assert_eq!(result, Ok(Identity::Tenant("acme".into())));
        // A cached token answers without asking the API server: had it sent a request, the mock
        // would see it first (`biased` polls the authentication first, which finishes at once).
        let again = tokio::select! {
            biased;
            r = auth.authenticate("tok-a") => r,
            _ = mock.next_request() => panic!("the cached review was not used"),
        };
        assert_eq!(again, Ok(Identity::Tenant("acme".into())));
        dir.replace(BTreeMap::new());
        let after_removal = tokio::select! {
            biased;
            r = auth.authenticate("tok-a") => r,
            _ = mock.next_request() => panic!("the cached review was not used"),
        };
        assert!(matches!(after_removal, Err(AuthError::Unauthenticated(_))));
    }

    #[tokio::test]
    async fn the_cache_is_bounded() {
        let (client, _mock) = MockApi::pair();
        let auth = TokenReviewAuth::new(client, directory(), "bulkhead-system");
        for i in 0..(MAX_CACHED_TOKENS + 10) {
            let key: [u8; 32] = Sha256::digest(i.to_string().as_bytes()).into();
            auth.remember(key, "system:serviceaccount:team-a:bulkhead-router");
        }
        let len = auth.cache.lock().map(|c| c.len()).unwrap_or_default();
        assert_eq!(len, MAX_CACHED_TOKENS);
    }
}
