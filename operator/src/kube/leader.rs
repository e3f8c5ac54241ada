//! Leader election: one active operator at a time, by a `coordination.k8s.io/v1` `Lease` named
//! [`LEASE_NAME`] in the operator's namespace (the only place its RBAC grants leases).
//!
//! The semantics are client-go's (`k8s.io/client-go/tools/leaderelection`):
//! - A candidate takes the Lease when nobody holds it, when it already holds it, or when the
//!   holder's record has not changed for the Lease's `leaseDurationSeconds` **as this process
//!   observed it** (measured on this process's monotonic clock from the moment it first saw that
//!   record). The holder's `renewTime` is never compared with this process's wall clock, so a
//!   replica whose clock runs fast cannot steal a live Lease.
//! - Writes are optimistic (`replace` carries the resource version, so two candidates cannot both
//!   win), and every API call runs under [`API_CALL_TIMEOUT`]: a hung call is a failed call.
//! - The leader renews every [`RETRY_PERIOD`]. If no renewal succeeded within [`RENEW_DEADLINE`]
//!   of the start of the last successful one, it has lost the Lease and stops acting
//!   ([`LeaderElector::hold`] returns). [`RENEW_DEADLINE`] is below [`LEASE_DURATION`], so the
//!   old leader has stopped before any other replica may take over.

use ::kube::api::{Api, PostParams};
use ::kube::Client;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Name of the Lease.
pub const LEASE_NAME: &str = "bulkhead-operator";
/// How long a Lease stays valid without renewal (client-go's default).
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long the leader keeps acting without a successful renewal (client-go's default); below
/// [`LEASE_DURATION`], so it stops before a standby may take the Lease.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often the leader renews, and how often a candidate retries (client-go's default).
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// Longest time one election attempt (a read and a write) may take before it counts as failed.
pub const API_CALL_TIMEOUT: Duration = Duration::from_secs(5);

const _: () = assert!(RENEW_DEADLINE.as_secs() < LEASE_DURATION.as_secs());
const _: () = assert!(RETRY_PERIOD.as_secs() < RENEW_DEADLINE.as_secs());

/// Why an election attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    /// The API server refused or failed the call.
    #[error("leader election API call failed: {0}")]
    Api(#[from] ::kube::Error),
    /// The attempt took longer than [`API_CALL_TIMEOUT`].
    #[error("leader election API call timed out after {0:?}")]
    Timeout(Duration),
}

/// Whether `me` may take a Lease with this spec, when the spec's record has looked the same to
/// this process for `unchanged_for`.
pub fn may_take(spec: Option<&LeaseSpec>, me: &str, unchanged_for: Duration) -> bool {
    let Some(spec) = spec else {
        return true;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => true,
        Some(holder) if holder == me => true,
        Some(_) => unchanged_for >= lease_duration(spec),
    }
}

/// The Lease's own duration, or [`LEASE_DURATION`] when it has none.
fn lease_duration(spec: &LeaseSpec) -> Duration {
    spec.lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(LEASE_DURATION, Duration::from_secs)
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

/// The Lease record as this process last saw it, and when (monotonic) it first saw it so.
#[derive(Debug)]
struct Observed {
    record: Option<LeaseSpec>,
    since: Instant,
}

/// Takes and keeps the Lease for one identity (the pod's name).
pub struct LeaderElector {
    api: Api<Lease>,
    identity: String,
    observed: Mutex<Option<Observed>>,
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
            observed: Mutex::new(None),
        }
    }

    /// How long the Lease's record has looked like `record` to this process, noting `record` as
    /// new (observed now) when it differs from the last one seen.
    fn unchanged_for(&self, record: Option<&LeaseSpec>, now: Instant) -> Duration {
        let mut observed = self.observed.lock().unwrap_or_else(PoisonError::into_inner);
        match observed.as_ref() {
            Some(seen) if seen.record.as_ref() == record => {
                now.saturating_duration_since(seen.since)
            }
            _ => {
                *observed = Some(Observed {
                    record: record.cloned(),
                    since: now,
                });
                Duration::ZERO
            }
        }
    }

    /// One attempt to take or renew the Lease, under [`API_CALL_TIMEOUT`]: `Ok(true)` when this
    /// identity holds it now.
    pub async fn try_acquire(&self) -> Result<bool, ElectionError> {
        tokio::time::timeout(API_CALL_TIMEOUT, self.attempt())
            .await
            .map_err(|_| ElectionError::Timeout(API_CALL_TIMEOUT))?
            .map_err(ElectionError::Api)
    }

    async fn attempt(&self) -> Result<bool, ::kube::Error> {
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
                let unchanged_for = self.unchanged_for(lease.spec.as_ref(), Instant::now());
                if !may_take(lease.spec.as_ref(), &self.identity, unchanged_for) {
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
    pub async fn release(&self) -> Result<(), ElectionError> {
        tokio::time::timeout(API_CALL_TIMEOUT, self.give_up())
            .await
            .map_err(|_| ElectionError::Timeout(API_CALL_TIMEOUT))?
            .map_err(ElectionError::Api)
    }

    async fn give_up(&self) -> Result<(), ::kube::Error> {
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

    /// Waits until this identity leads: `Some(start)` with the start of the winning attempt (the
    /// base of the first [`RENEW_DEADLINE`]), `None` if `shutdown` came first. `healthy` is told
    /// after every attempt whether the election itself works (a refused or hung API call does not).
    pub async fn acquire(
        &self,
        shutdown: &CancellationToken,
        healthy: impl Fn(bool),
    ) -> Option<Instant> {
        loop {
            let start = Instant::now();
            match self.try_acquire().await {
                Ok(true) => {
                    healthy(true);
                    tracing::info!(identity = %self.identity, "leader election won");
                    return Some(start);
                }
                Ok(false) => {
                    healthy(true);
                    tracing::debug!("another operator leads; waiting");
                }
                Err(e) => {
                    healthy(false);
                    tracing::warn!(error = %e, "leader election failed; retrying");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(RETRY_PERIOD) => {}
            }
        }
    }

    /// Renews the Lease won at `won_at` until `shutdown` (returns `true`) or until leadership is
    /// lost (returns `false`): another identity took it, or no renewal succeeded within
    /// [`RENEW_DEADLINE`] of the start of the last successful one. A renewal still in flight at
    /// the deadline is abandoned: the caller must stop acting at once.
    pub async fn hold(&self, won_at: Instant, shutdown: &CancellationToken) -> bool {
        let mut renewed = won_at;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return true,
                () = tokio::time::sleep(RETRY_PERIOD) => {}
            }
            let deadline = renewed + RENEW_DEADLINE;
            let start = Instant::now();
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return true,
                () = tokio::time::sleep_until(deadline) => None,
                r = self.try_acquire() => Some(r),
            };
            match outcome {
                Some(Ok(true)) => renewed = start,
                Some(Ok(false)) => {
                    tracing::warn!(identity = %self.identity, "another operator took the leader Lease");
                    return false;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "cannot renew the leader Lease");
                    if Instant::now() >= deadline {
                        return false;
                    }
                }
                None => {
                    tracing::warn!(deadline = ?RENEW_DEADLINE, "no renewal of the leader Lease within the renew deadline");
                    return false;
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
    fn a_lease_is_taken_when_free_mine_or_unchanged_for_its_duration() {
        let live = held_by("b", "2026-01-01T00:00:10Z");
        assert!(may_take(None, "a", Duration::ZERO));
        assert!(may_take(Some(&LeaseSpec::default()), "a", Duration::ZERO));
        assert!(may_take(
            Some(&held_by("a", "2026-01-01T00:00:19Z")),
            "a",
            Duration::ZERO
        ));
        assert!(!may_take(Some(&live), "a", Duration::from_secs(14)));
        assert!(may_take(Some(&live), "a", Duration::from_secs(15)));
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

    fn lease(spec: LeaseSpec, version: &str) -> serde_json::Value {
        serde_json::to_value(Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.into()),
                namespace: Some("bulkhead-system".into()),
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
        })
        .expect("json")
    }

    /// A holder whose clock is an hour behind ours (or ours an hour ahead): its `renewTime` looks
    /// long expired, but the record keeps changing, so the Lease is never taken; once the record
    /// stops changing, it is taken after a full lease duration of this process's own time.
    #[tokio::test(start_paused = true)]
    async fn a_skewed_clock_never_steals_a_live_lease() {
        use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
        use std::sync::Arc;
        let (client, mut mock) = MockApi::pair();
        let elector = LeaderElector::new(client, "bulkhead-system", "operator-1");
        let holder_alive = Arc::new(AtomicBool::new(true));
        let writes = Arc::new(AtomicU32::new(0));
        let server = {
            let (holder_alive, writes) = (holder_alive.clone(), writes.clone());
            tokio::spawn(async move {
                let an_hour_ago = Timestamp::now() - std::time::Duration::from_secs(3600);
                let mut renewals = 0u64;
                loop {
                    let (request, send) = mock.next_request().await;
                    if request.method() == http::Method::PUT {
                        writes.fetch_add(1, Ordering::SeqCst);
                        let body = json_body(request).await;
                        respond_json(send, 200, &body);
                        continue;
                    }
                    if holder_alive.load(Ordering::SeqCst) {
                        renewals += 1; // the live holder renews by its own, skewed, clock
                    }
                    let mut spec = held_by("operator-0", "2026-01-01T00:00:00Z");
                    spec.renew_time = Some(MicroTime(
                        an_hour_ago + std::time::Duration::from_secs(renewals * 2),
                    ));
                    respond_json(send, 200, &lease(spec, &renewals.to_string()));
                }
            })
        };
        let mut last_change = Instant::now();
        for round in 0..20 {
            last_change = Instant::now();
            let won = elector.try_acquire().await.expect("no API error");
            assert!(!won, "round {round}: a live lease was taken");
            tokio::time::advance(RETRY_PERIOD).await;
        }
        assert_eq!(writes.load(Ordering::SeqCst), 0);
        // The holder died: its record stays the same; it is taken after a lease duration.
        holder_alive.store(false, Ordering::SeqCst);
        while !elector.try_acquire().await.expect("no API error") {
            tokio::time::advance(RETRY_PERIOD).await;
        }
        let waited = Instant::now().duration_since(last_change);
        assert!(
            waited >= LEASE_DURATION && waited <= LEASE_DURATION + 2 * RETRY_PERIOD,
            "taken after {waited:?}"
        );
        assert_eq!(writes.load(Ordering::SeqCst), 1);
        server.abort();
    }

    /// The leader's renewal hangs (the API server never answers): it gives the Lease up within
    /// the renew deadline, before any standby could take it.
    #[tokio::test(start_paused = true)]
    async fn a_hung_renewal_ends_leadership_before_the_lease_expires() {
        let (client, mut mock) = MockApi::pair();
        let elector = LeaderElector::new(client, "bulkhead-system", "operator-0");
        let won_at = Instant::now();
        let shutdown = CancellationToken::new();
        let hung = async {
            // Hold every request unanswered until the elector gives up.
            let mut pending = Vec::new();
            loop {
                let (_, send) = mock.next_request().await;
                pending.push(send);
            }
        };
        // Paused time: a renewal that waited on the hung call forever would hit this minute.
        let bounded =
            tokio::time::timeout(Duration::from_secs(60), elector.hold(won_at, &shutdown));
        let held = tokio::select! {
            held = bounded => held.expect("leadership ended while the call still hung"),
            () = hung => unreachable!(),
        };
        assert!(!held, "leadership must end");
        let acted_for = Instant::now().duration_since(won_at);
        assert!(
            acted_for <= RENEW_DEADLINE,
            "acted {acted_for:?} without a renewal (deadline {RENEW_DEADLINE:?})"
        );
        assert!(acted_for < LEASE_DURATION);
    }

    /// Another replica took the Lease: the next renewal sees it and leadership ends at once.
    #[tokio::test(start_paused = true)]
    async fn a_lost_lease_ends_leadership_at_the_next_renewal() {
        let (client, mut mock) = MockApi::pair();
        let elector = LeaderElector::new(client, "bulkhead-system", "operator-0");
        let shutdown = CancellationToken::new();
        let serve = async {
            let (request, send) = mock.next_request().await;
            assert_eq!(request.method(), http::Method::GET);
            respond_json(
                send,
                200,
                &lease(held_by("operator-1", "2026-01-01T00:00:00Z"), "7"),
            );
        };
        let (held, ()) = tokio::join!(elector.hold(Instant::now(), &shutdown), serve);
        assert!(!held);
    }

    /// A refused election (no Role for Leases) is reported as unhealthy, and as healthy again once
    /// it works.
    #[tokio::test(start_paused = true)]
    async fn a_refused_election_is_reported_unhealthy() {
        let (client, mut mock) = MockApi::pair();
        let elector = LeaderElector::new(client, "bulkhead-system", "operator-0");
        let shutdown = CancellationToken::new();
        let health = std::sync::Mutex::new(Vec::new());
        let serve = async {
            let (_, send) = mock.next_request().await;
            respond_json(send, 403, &failure(403, "Forbidden", "leases is forbidden"));
            let (_, send) = mock.next_request().await;
            respond_json(send, 404, &failure(404, "NotFound", "not found"));
            let (request, send) = mock.next_request().await;
            let body = json_body(request).await;
            respond_json(send, 201, &body);
        };
        let (won, ()) = tokio::join!(
            elector.acquire(&shutdown, |ok| health.lock().expect("lock").push(ok)),
            serve
        );
        assert!(won.is_some());
        assert_eq!(*health.lock().expect("lock"), vec![false, true]);
    }
}
