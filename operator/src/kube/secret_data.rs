//! TLS Secrets on demand: the operator caches the metadata of every `kubernetes.io/tls` Secret
//! (a metadata-only watch, [`super::watch`]) and holds the data (the private key) only of the
//! Secrets a Gateway of ours references.
//!
//! - [`referenced_secrets`]: the Secrets the translator would resolve: every `certificateRefs`
//!   entry of a Gateway whose class Bulkhead serves (or of a ListenerSet naming one), in its
//!   namespace or in another one whose ReferenceGrant permits it (the same collection and grant check the translator makes).
//! - [`SecretData`] (in the store): where each referenced Secret's data stands, and what to fetch
//!   ([`SecretData::plan`]): a Secret referenced for the first time, or whose metadata shows a new
//!   `resourceVersion`, is fetched (`GET`); one no longer referenced, or deleted, has its data
//!   dropped from memory. While a Secret is re-fetched its previous data keeps serving.
//! - [`run_secret_fetcher`]: the task making the `GET`s, each bounded by
//!   [`DEFAULT_SECRET_FETCH_TIMEOUT`], at most [`SECRET_FETCH_CONCURRENCY`] at once, answering
//!   with [`super::store::StoreEvent::SecretFetched`].
//!
//! A failed `GET` (403, 404, timeout) is counted (`bulkhead_operator_reconcile_errors_total{kind=
//! "secret_fetch"}`), logged, and the Secret is treated as missing: its listener reports
//! `ResolvedRefs=False` / `InvalidCertificateRef`, as for a Secret that does not exist, and every
//! other listener and tenant keeps serving. It is fetched again when its metadata changes, when
//! it is referenced anew, and on a timer with backoff ([`retry_delay`]: 1 s doubling to 5 min),
//! so that a transient failure (an API server timeout, RBAC fixed later) heals by itself.

use super::onboarding::retry_delay;
use super::store::StoreEvent;
use crate::index::{Kind, ObjectIndex};
use crate::objects::{Object, ObjectSet};
use crate::translator::fingerprint::collect_refs;
use crate::translator::listener_sets;
use crate::translator::world::World;
use ::kube::api::Api;
use ::kube::Client;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The Gateway API group (a Gateway's `from` in a ReferenceGrant).
const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Longest one Secret `GET` may take before it counts as failed (the Secret is then treated as
/// missing until its metadata changes). Flag: `bulkhead operator --secret-fetch-timeout-secs`.
pub const DEFAULT_SECRET_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Most Secret `GET`s in flight at once.
pub const SECRET_FETCH_CONCURRENCY: usize = 8;

/// Namespace and name of a Secret.
pub type SecretKey = (String, String);

/// A request to read one Secret's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFetch {
    /// The Secret's namespace.
    pub namespace: String,
    /// The Secret's name.
    pub name: String,
    /// The `resourceVersion` its metadata showed when the fetch was decided.
    pub resource_version: String,
}

/// The answer to a [`SecretFetch`].
#[derive(Debug, Clone)]
pub struct FetchedSecret {
    /// What was asked.
    pub request: SecretFetch,
    /// The Secret, or why it could not be read.
    pub result: Result<Secret, String>,
}

/// Where one referenced Secret's data stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DataState {
    /// A `GET` is in flight; `held`: data of an older version is in the index meanwhile;
    /// `failures`: failed reads of this version before this one.
    Fetching {
        version: String,
        held: bool,
        failures: u32,
    },
    /// The data of `version` is in the index.
    Held { version: String },
    /// The `GET` of `version` failed `failures` times: the Secret counts as missing until a read
    /// succeeds; the next read is due at `retry_at`.
    Failed {
        version: String,
        failures: u32,
        retry_at: Instant,
    },
}

impl DataState {
    fn version(&self) -> &str {
        match self {
            Self::Fetching { version, .. }
            | Self::Held { version }
            | Self::Failed { version, .. } => version,
        }
    }
}

/// What [`SecretData::plan`] decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SecretPlan {
    /// Secrets to read.
    pub fetch: Vec<SecretFetch>,
    /// Secrets whose data must leave the index (no longer referenced).
    pub drop: Vec<SecretKey>,
    /// Some referenced Secret has never been read yet: compiling now would publish its listener
    /// without a certificate, so the compilation waits for the answer.
    pub waiting: bool,
}

/// The TLS Secrets as the metadata watch shows them, and the data state of the referenced ones
/// (the data itself is in the store's index, where the translator reads it).
#[derive(Debug, Default)]
pub struct SecretData {
    /// Secret → `resourceVersion`, as last listed or changed.
    meta: BTreeMap<SecretKey, String>,
    /// Referenced Secrets and their data.
    data: BTreeMap<SecretKey, DataState>,
    /// The Secrets referenced as of the last [`SecretData::plan`]: a change of one of them needs
    /// a new plan.
    referenced: BTreeSet<SecretKey>,
    /// Whether metadata or a read's answer arrived since the last plan (else, with the same
    /// references, the plan would be the last one again).
    dirty: bool,
    /// The last plan's `waiting`.
    waiting: bool,
}

impl SecretData {
    /// Replaces the metadata after a (re)list; returns the Secrets gone whose data is held.
    pub fn replace_meta(&mut self, objects: &[Object]) -> Vec<SecretKey> {
        self.dirty = true;
        self.meta = objects.iter().filter_map(meta_entry).collect();
        let gone: Vec<SecretKey> = self
            .data
            .keys()
            .filter(|k| !self.meta.contains_key(*k))
            .cloned()
            .collect();
        for key in &gone {
            self.data.remove(key);
        }
        gone
    }

    /// Records a Secret added or changed; returns whether it is referenced and its version
    /// changed (its data must be read again).
    pub fn upsert_meta(&mut self, object: &Object) -> bool {
        self.dirty = true;
        let Some((key, version)) = meta_entry(object) else {
            return false;
        };
        let referenced = self.referenced.contains(&key);
        let old = self.meta.insert(key, version.clone());
        referenced && old.as_ref() != Some(&version)
    }

    /// Forgets a deleted Secret (its data, if held, must leave the index); returns whether it
    /// was referenced.
    pub fn remove_meta(&mut self, key: &SecretKey) -> bool {
        self.dirty = true;
        self.meta.remove(key);
        self.data.remove(key);
        self.referenced.contains(key)
    }

    /// Whether the data of `key` is held or being fetched (for tests).
    pub fn is_tracked(&self, key: &SecretKey) -> bool {
        self.data.contains_key(key)
    }

    /// When the next failed read is due again, if any.
    pub fn next_retry(&self) -> Option<Instant> {
        self.data
            .values()
            .filter_map(|s| match s {
                DataState::Failed { retry_at, .. } => Some(*retry_at),
                _ => None,
            })
            .min()
    }

    /// [`SecretData::plan`], or (`references_changed` false, no metadata or answer arrived
    /// since the last plan, and no failed read due again) nothing to do: the route churn that
    /// makes up most compilations costs no walk over every referenced Secret.
    pub fn plan_if_changed(
        &mut self,
        referenced: &BTreeSet<SecretKey>,
        references_changed: bool,
    ) -> SecretPlan {
        let retry_due = self.next_retry().is_some_and(|at| at <= Instant::now());
        if !references_changed && !self.dirty && !retry_due {
            return SecretPlan {
                waiting: self.waiting,
                ..SecretPlan::default()
            };
        }
        self.plan(referenced)
    }

    /// Decides what to fetch and what to drop, given the Secrets referenced now.
    pub fn plan(&mut self, referenced: &BTreeSet<SecretKey>) -> SecretPlan {
        self.dirty = false;
        self.referenced.clone_from(referenced);
        let mut plan = SecretPlan::default();
        let unreferenced: Vec<SecretKey> = self
            .data
            .keys()
            .filter(|k| !referenced.contains(*k) || !self.meta.contains_key(*k))
            .cloned()
            .collect();
        for key in unreferenced {
            self.data.remove(&key);
            plan.drop.push(key);
        }
        let now = Instant::now();
        for key in referenced {
            let Some(version) = self.meta.get(key) else {
                continue;
            };
            let state = self.data.get(key);
            if let Some(DataState::Fetching {
                held: false,
                failures: 0,
                ..
            }) = state
            {
                plan.waiting = true;
            }
            let (held, failures) = match state {
                None => (false, 0),
                Some(DataState::Fetching { .. }) => continue,
                // A failed read of this version, due again: read again, without holding the
                // compilation (the listener already reports the Secret missing).
                Some(DataState::Failed {
                    version: v,
                    failures,
                    retry_at,
                }) if v == version => {
                    if *retry_at > now {
                        continue;
                    }
                    (false, *failures)
                }
                Some(s) if s.version() == version => continue,
                Some(s) => (matches!(s, DataState::Held { .. }), 0),
            };
            plan.waiting |= !held && failures == 0;
            self.data.insert(
                key.clone(),
                DataState::Fetching {
                    version: version.clone(),
                    held,
                    failures,
                },
            );
            plan.fetch.push(SecretFetch {
                namespace: key.0.clone(),
                name: key.1.clone(),
                resource_version: version.clone(),
            });
        }
        self.waiting = plan.waiting;
        plan
    }

    /// Records the answer to a fetch: the Secret to index (`Some(Ok)`), to remove from the index
    /// (`Some(Err)`, the fetch failed), or nothing (no longer referenced: the answer is stale).
    pub fn fetched(&mut self, fetched: FetchedSecret) -> Option<Result<Secret, String>> {
        self.dirty = true;
        let FetchedSecret { request, result } = fetched;
        let key = (request.namespace, request.name);
        let state = self.data.get_mut(&key)?;
        let DataState::Fetching { failures, .. } = state else {
            return None;
        };
        let failures = failures.saturating_add(1);
        *state = match &result {
            Ok(secret) => DataState::Held {
                version: secret
                    .metadata
                    .resource_version
                    .clone()
                    .unwrap_or(request.resource_version),
            },
            Err(_) => DataState::Failed {
                version: request.resource_version,
                failures,
                retry_at: Instant::now() + retry_delay(failures),
            },
        };
        Some(result)
    }
}

fn meta_entry(object: &Object) -> Option<(SecretKey, String)> {
    let meta = object.metadata();
    let key = (meta.namespace.clone()?, meta.name.clone()?);
    Some((key, meta.resource_version.clone().unwrap_or_default()))
}

/// The Secrets the Gateways of our classes and the ListenerSets attached to them reference
/// (`certificateRefs`), where the reference is permitted: in the referring object's namespace, or
/// granted by a ReferenceGrant.
pub fn referenced_secrets(index: &ObjectIndex) -> BTreeSet<SecretKey> {
    let set = ObjectSet::from_objects(
        [
            Kind::GatewayClass,
            Kind::Gateway,
            Kind::ReferenceGrant,
            Kind::ListenerSet,
        ]
        .into_iter()
        .flat_map(|kind| index.of_kind(kind).cloned()),
    );
    let world = World::new(&set);
    let gateways = set
        .gateways
        .iter()
        .filter(|g| world.is_ours(g))
        .map(|g| ("Gateway", &g.metadata, serde_json::to_value(&g.spec)));
    let listener_sets = set
        .listener_sets
        .iter()
        .filter(|ls| listener_sets::parent(&world, ls).is_some())
        .map(|ls| {
            (
                listener_sets::KIND,
                &ls.metadata,
                serde_json::to_value(&ls.spec),
            )
        });
    let mut out = BTreeSet::new();
    for (from_kind, meta, spec) in gateways.chain(listener_sets) {
        let from_ns = meta.namespace.as_deref().unwrap_or_default();
        let mut refs = BTreeSet::new();
        collect_refs(&spec.unwrap_or_default(), from_ns, &mut refs);
        for (kind, ns, name) in refs {
            let permitted = ns == from_ns
                || world.grant_permits(
                    (GATEWAY_GROUP, from_kind, from_ns),
                    ("", "Secret", &ns, &name),
                );
            if kind == "Secret" && permitted {
                out.insert((ns, name));
            }
        }
    }
    out
}

/// Reads each requested Secret (`GET`, [`SECRET_FETCH_CONCURRENCY`] at once, each within
/// `timeout`) and answers on `events` (while it is open), until `requests` closes.
pub async fn run_secret_fetcher(
    client: Client,
    requests: mpsc::UnboundedReceiver<SecretFetch>,
    events: mpsc::WeakSender<StoreEvent>,
    timeout: Duration,
) {
    let mut requests = requests;
    let incoming = futures::stream::poll_fn(move |cx| requests.poll_recv(cx));
    incoming
        .for_each_concurrent(SECRET_FETCH_CONCURRENCY, |request| {
            let (client, events) = (client.clone(), events.clone());
            async move {
                let result = fetch(client, &request, timeout).await;
                let answer = FetchedSecret { request, result };
                if let Some(events) = events.upgrade() {
                    let _ = events
                        .send(StoreEvent::SecretFetched(Box::new(answer)))
                        .await;
                }
            }
        })
        .await;
}

/// One `GET`, its failure worded for the listener condition and the log.
async fn fetch(client: Client, request: &SecretFetch, timeout: Duration) -> Result<Secret, String> {
    let api: Api<Secret> = Api::namespaced(client, &request.namespace);
    match tokio::time::timeout(timeout, api.get(&request.name)).await {
        Ok(Ok(secret)) => Ok(secret),
        Ok(Err(::kube::Error::Api(status))) => Err(format!(
            "cannot be read ({} {})",
            status.code, status.reason
        )),
        Ok(Err(e)) => Err(format!("cannot be read ({e})")),
        Err(_) => Err(format!("cannot be read (no answer within {timeout:?})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::testing::{failure, respond_json, MockApi};

    fn request(name: &str) -> SecretFetch {
        SecretFetch {
            namespace: "team-a".into(),
            name: name.into(),
            resource_version: "4".into(),
        }
    }

    async fn next_answer(rx: &mut mpsc::Receiver<StoreEvent>) -> FetchedSecret {
        match rx.recv().await {
            Some(StoreEvent::SecretFetched(f)) => *f,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// The reader makes exactly the `GET` asked for, and a refusal (403) or a Secret gone (404)
    /// comes back as a failure naming the status.
    #[tokio::test]
    async fn the_reader_gets_each_requested_secret_and_reports_refusals() {
        let (client, mut mock) = MockApi::pair();
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let (events, mut answers) = mpsc::channel(4);
        let reader = tokio::spawn(run_secret_fetcher(
            client,
            requests_rx,
            events.downgrade(),
            DEFAULT_SECRET_FETCH_TIMEOUT,
        ));
        requests.send(request("web-cert")).expect("reader running");
        let (r, send) = mock.next_request().await;
        assert_eq!(r.method(), http::Method::GET);
        assert_eq!(r.uri().path(), "/api/v1/namespaces/team-a/secrets/web-cert");
        respond_json(
            send,
            200,
            &serde_json::json!({
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": {"name": "web-cert", "namespace": "team-a", "resourceVersion": "4"},
                "data": {"tls.crt": "Y3J0", "tls.key": "a2V5"}
            }),
        );
        let fetched = next_answer(&mut answers).await;
        assert_eq!(fetched.request, request("web-cert"));
        let secret = fetched.result.expect("read");
        assert!(secret.data.is_some_and(|d| d.contains_key("tls.key")));

        for (code, reason) in [(403, "Forbidden"), (404, "NotFound")] {
            requests.send(request("locked")).expect("reader running");
            let (r, send) = mock.next_request().await;
            assert_eq!(r.uri().path(), "/api/v1/namespaces/team-a/secrets/locked");
            respond_json(send, code, &failure(code, reason, "no"));
            let error = next_answer(&mut answers).await.result.expect_err("failed");
            assert!(error.contains(&code.to_string()), "{error}");
        }
        drop(requests);
        reader.await.expect("the reader ends with its requests");
    }
}

#[cfg(test)]
mod listener_set_tests {
    use super::*;
    use crate::objects::parse_documents;
    use std::path::Path;

    #[test]
    fn listener_sets_attached_to_our_gateways_have_their_certificates_read() {
        let yaml = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: shared, namespace: infra}\nspec: {gatewayClassName: bulkhead, listeners: []}\n---\n\
            apiVersion: gateway.networking.k8s.io/v1\nkind: ListenerSet\nmetadata: {name: shop, namespace: acme}\nspec:\n  parentRef: {name: shared, namespace: infra}\n  listeners:\n  - {name: https, protocol: HTTPS, port: 443, tls: {certificateRefs: [{name: shop-cert}, {name: other, namespace: elsewhere}]}}\n---\n\
            apiVersion: gateway.networking.k8s.io/v1\nkind: ListenerSet\nmetadata: {name: stray, namespace: acme}\nspec:\n  parentRef: {name: missing, namespace: infra}\n  listeners:\n  - {name: https, protocol: HTTPS, port: 443, tls: {certificateRefs: [{name: stray-cert}]}}\n";
        let (objects, errors) = parse_documents(Path::new("t.yaml"), yaml);
        assert!(errors.is_empty(), "{errors:?}");
        let referenced = referenced_secrets(&ObjectIndex::from_objects(objects));
        assert_eq!(
            referenced,
            BTreeSet::from([("acme".to_owned(), "shop-cert".to_owned())]),
            "the ungranted cross-namespace ref and the ListenerSet without our parent are not read"
        );
    }
}
