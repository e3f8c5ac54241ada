//! The snapshot contract between Bulkhead's control plane and its data plane, without Kubernetes.
//!
//! * [`schema`]: what the operator compiles and the edge and the routers serve: one
//!   [`EdgeSnapshot`] for the edge tier and one [`TenantSnapshot`] per tenant.
//! * [`subscription`]: how a data-plane process receives versioned snapshots and acknowledges them.
//! * [`applier`]: the thread a data plane applies its snapshots on, off the runtime's workers.
//! * The rules both sides must apply identically, so that a snapshot the operator publishes is never
//!   refused by a router: [`regex`] (size and length limits; compiling, with feature `regex`),
//!   [`redirect`] (accepted status codes), [`cors`] (CORS filter values and origin matching), [`pem`] (PEM chain and key to a rustls `CertifiedKey`;
//!   feature `tls`) and [`validate`] (the structural checks of each snapshot kind).
//!
//! Every item of [`schema`] and [`subscription`] is also re-exported at the crate root.
#![forbid(unsafe_code)]

pub mod applier;
pub mod cors;
#[cfg(feature = "tls")]
pub mod pem;
pub mod redirect;
pub mod regex;
pub mod schema;
pub mod subscription;
pub mod validate;

pub use schema::*;
pub use subscription::*;
pub use validate::SnapshotError;
