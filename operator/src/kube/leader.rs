//! Leader election: one active operator at a time, by a `coordination.k8s.io/v1` `Lease` named
//! [`LEASE_NAME`] in the operator's namespace (the only place its RBAC grants leases).
//!
//! A replica takes the Lease when nobody holds it, when it already holds it, or when the holder
//! has not renewed it for its `leaseDurationSeconds`; writes are optimistic (`replace` carries the
//! resource version, so two candidates cannot both win). The leader renews every
//! [`RENEW_INTERVAL`]; if it cannot renew within [`LEASE_DURATION`] it has lost the Lease and must
//! stop acting ([`LeaderElector::hold`] returns).

use ::kube::api::{Api, PostParams};
use ::kube::Client;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Name of the Lease.
pub const LEASE_NAME: &str = "bulkhead-operator";
/// How long a Lease stays valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews, and how often a candidate retries.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(5);

/// Whether `me` may take a Lease with this spec at `now`.
pub fn may_take(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> bool {
    let Some(spec) = spec else {
        return true;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => true,
        Some(holder) if holder == me => true,
        Some(_) => {
            let duration = spec
                .lease_duration_seconds
                .map_or(LEASE_DURATION.as_secs(), |s| u64::try_from(s).unwrap_or(0));
            match &spec.renew_time {
                None => true,
                Some(renewed) => {
                    let expires = renewed
                        .0
                        .as_second()
                        .saturating_add(i64::try_from(duration).unwrap_or(i64::MAX));
                    expires < now.as_second()
                }
            }
        }
    }
}

/// The spec `me` writes when taking or renewing a Lease whose previous spec was `previous`.
pub fn claimed_spec(previous: Option<&LeaseSpec>, me: &str, now: Timestamp) -> LeaseSpec {
    let renewing = previous.and_then(|p| p.holder_identity.as_deref()) == Some(me);
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: i32::try_from(LEASE_DURATION.as_secs()).ok(),
        acquire_time: if renewing {
            previous.and_then(|p| p.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if renewing || previous.is_none() {
            transitions
        } else {
            transitions.saturating_add(1)
        }),
        ..LeaseSpec::default()
    }
}

fn is_conflict(e: &::kube::Error) -> bool {
    matches!(e, ::kube::Error::Api(s) if s.code == 409)
}

/// Takes and keeps the Lease for one identity (the pod's name).
pub struct LeaderElector {
    api: Api<Lease>,
    identity: String,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl LeaderElector {
    /// An elector for the Lease in `namespace`, as `identity`.
    pub fn new(client: Client, namespace: &str, identity: impl Into<String>) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            identity: identity.into(),
        }
    }

    /// One attempt to take or renew the Lease: `Ok(true)` when this identity holds it now.
    pub async fn try_acquire(&self) -> Result<bool, ::kube::Error> {
        let now = Timestamp::now();
        match self.api.get_opt(LEASE_NAME).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE_NAME.to_owned()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(claimed_spec(None, &self.identity, now)),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(e) if is_conflict(&e) => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Some(mut lease) => {
                if !may_take(lease.spec.as_ref(), &self.identity, now) {
                    return Ok(false);
                }
                lease.spec = Some(claimed_spec(lease.spec.as_ref(), &self.identity, now));
                match self
                    .api
                    .replace(LEASE_NAME, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(e) if is_conflict(&e) => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Gives the Lease up if this identity holds it (on shutdown), so a successor need not wait
    /// for it to expire.
    pub async fn release(&self) -> Result<(), ::kube::Error> {
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        match self
            .api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Waits until this identity leads; `false` if `shutdown` came first.
    pub async fn acquire(&self, shutdown: &CancellationToken) -> bool {
        loop {
            match self.try_acquire().await {
                Ok(true) => {
                    tracing::info!(identity = %self.identity, "leader election won");
                    return true;
                }
                Ok(false) => tracing::debug!("another operator leads; waiting"),
                Err(e) => tracing::warn!(error = %e, "leader election failed; retrying"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(RENEW_INTERVAL) => {}
            }
        }
    }

    /// Renews the Lease until `shutdown` (returns `true`) or until leadership is lost: another
    /// identity took it, or no renewal succeeded for [`LEASE_DURATION`] (returns `false`).
    pub async fn hold(&self, shutdown: &CancellationToken) -> bool {
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return true,
                () = tokio::time::sleep(RENEW_INTERVAL) => {}
            }
            match self.try_acquire().await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => return false,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the leader Lease");
                    if renewed.elapsed() >= LEASE_DURATION {
                        return false;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::testing::{failure, json_body, respond_json, MockApi};
    use crate::rbac::{allows, Scope};

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn held_by(holder: &str, renewed: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            lease_transitions: Some(2),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_is_taken_when_free_mine_or_expired() {
        let now = at("2026-01-01T00:00:20Z");
        assert!(may_take(None, "a", now));
        assert!(may_take(Some(&LeaseSpec::default()), "a", now));
        assert!(may_take(
            Some(&held_by("a", "2026-01-01T00:00:19Z")),
            "a",
            now
        ));
        assert!(!may_take(
            Some(&held_by("b", "2026-01-01T00:00:10Z")),
            "a",
            now
        ));
        assert!(may_take(
            Some(&held_by("b", "2026-01-01T00:00:04Z")),
            "a",
            now
        ));
    }

    #[test]
    fn taking_over_counts_a_transition_and_renewing_keeps_the_acquire_time() {
        let now = at("2026-01-01T00:01:00Z");
        let taken = claimed_spec(Some(&held_by("b", "2026-01-01T00:00:00Z")), "a", now);
        assert_eq!(taken.holder_identity.as_deref(), Some("a"));
        assert_eq!(taken.lease_transitions, Some(3));
        assert_eq!(taken.acquire_time, Some(MicroTime(now)));
        let later = at("2026-01-01T00:01:05Z");
        let renewed = claimed_spec(Some(&taken), "a", later);
        assert_eq!(renewed.lease_transitions, Some(3));
        assert_eq!(renewed.acquire_time, Some(MicroTime(now)));
        assert_eq!(renewed.renew_time, Some(MicroTime(later)));
    }

    #[tokio::test]
    async fn a_missing_lease_is_created_in_the_operator_namespace() {
        let (client, mut mock) = MockApi::pair();
        let elector = LeaderElector::new(client, "bulkhead-system", "operator-0");
        let serve = async {
            let (request, send) = mock.next_request().await;
            assert_eq!(request.method(), http::Method::GET);
            assert_eq!(
                request.uri().path(),
                "/apis/coordination.k8s.io/v1/namespaces/bulkhead-system/leases/bulkhead-operator"
            );
            assert!(allows(
                "coordination.k8s.io",
                "leases",
                "get",
                Scope::OperatorNamespace
            ));
            respond_json(send, 404, &failure(404, "NotFound", "not found"));
            let (request, send) = mock.next_request().await;
            assert_eq!(request.method(), http::Method::POST);
            assert!(allows(
                "coordination.k8s.io",
                "leases",
                "create",
                Scope::OperatorNamespace
            ));
            let body = json_body(request).await;
            assert_eq!(body["spec"]["holderIdentity"], "operator-0");
            respond_json(send, 201, &body);
        };
        let (won, ()) = tokio::join!(elector.try_acquire(), serve);
        assert!(won.expect("no API error"));
    }

    #[tokio::test]
    async fn a_lease_held_by_a_live_leader_is_left_alone() {
        let (client, mut mock) = MockApi::pair();
        let elector = LeaderElector::new(client, "bulkhead-system", "operator-1");
        let now = Timestamp::now();
        let serve = async {
            let (_, send) = mock.next_request().await;
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.into()),
                    namespace: Some("bulkhead-system".into()),
                    resource_version: Some("5".into()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some("operator-0".into()),
                    lease_duration_seconds: Some(3600),
                    renew_time: Some(MicroTime(now)),
                    ..LeaseSpec::default()
                }),
            };
            respond_json(send, 200, &serde_json::to_value(&lease).expect("json"));
        };
        let (won, ()) = tokio::join!(elector.try_acquire(), serve);
        assert!(!won.expect("no API error"), "no PUT was needed to lose");
    }
}
