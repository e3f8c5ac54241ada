//! The Kubernetes provider: the operator's side that talks to the API server (kube-rs).
//!
//! * [`watch`]: one watcher per kind the translator reads, metadata stripped before caching;
//!   a kind that cannot be listed is degraded, not waited for.
//! * [`decode`]: objects decoded one by one, so one unreadable object never fails a list.
//! * [`watch_health`]: degraded kinds and undecodable objects as readiness detail and gauges.
//! * [`secret_data`]: TLS Secrets' data read only while a Gateway references them.
//! * [`store`]: the cache those watchers fill, the initial-list gate, parking, debounce.
//! * [`control`]: the control loop (store → compiler → snapshot server → statuses, onboarding).
//! * [`route_parents`]: other controllers' route `status.parents` entries, kept in our writes.
//! * [`wiring`]: [`run`], which wires watchers, the control loop and the writers.
//! * [`status_writer`]: statuses written by server-side apply, only when they changed.
//! * [`route_status`]: route statuses merged with the live `status.parents` of other
//!   controllers and replaced with optimistic concurrency.
//! * [`onboarding`]: each served Tenant's children server-side applied, with backoff.
//! * [`child_watch`]: the children watched, so a deleted or edited one is repaired at once.
//! * [`events`]: Kubernetes Events for snapshot rejections.
//! * [`fed`]: the control loop fed with events instead of watchers (benchmarks, tests).
//! * [`discovery`]: the version of each Gateway API kind the API server serves.
//! * [`installation`]: Gateway addresses (edge Service load balancer) and the CRD bundle version.
//! * [`edge_bootstrap`]: the edge's bootstrap ConfigMap, the last acknowledged edge snapshot.
//! * [`auth`]: the snapshot API's `TokenReview` authenticator.
//! * [`leader`]: leader election by a `Lease` in the operator's namespace.
//! * [`leader_label`]: the leader's pod label, which the snapshot Service selects.

pub mod auth;
pub mod child_watch;
pub(crate) mod control;
pub mod decode;
pub mod discovery;
pub mod edge_bootstrap;
pub mod events;
pub mod fed;
pub mod installation;
pub mod leader;
pub mod leader_label;
pub(crate) mod onboarding;
pub mod route_parents;
pub mod route_status;
pub mod secret_data;
pub mod status_writer;
pub mod store;
#[cfg(test)]
pub(crate) mod testing;
pub mod watch;
pub mod watch_health;
pub mod wiring;

pub use ::kube::Client;
pub use auth::{TenantDirectory, TokenReviewAuth};
pub use fed::{spawn_fed_control_loop, FedControlLoop};
pub use wiring::{run, OperatorConfig};

/// The field manager of every server-side apply the operator makes (children and statuses).
pub const FIELD_MANAGER: &str = "bulkhead-operator";

/// The API client from the environment (the pod's service account in a cluster, else the
/// kubeconfig), its TLS on rustls with the ring provider.
pub async fn default_client() -> Result<Client, ::kube::Error> {
    // Fails only when a provider is already installed, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::try_default().await
}
