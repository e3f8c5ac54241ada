//! The Bulkhead control plane.
//!
//! * [`objects`]: the objects it reads (Tenant, Gateway API, Secrets, Services, EndpointSlices),
//!   typed, parsed from multi-document YAML.
//! * [`translator`]: a pure function from objects to the edge snapshot, one snapshot per tenant,
//!   and the status of every object, following the Gateway API specification.
//! * [`compiler`]: the translator run incrementally (only tenants whose inputs changed are
//!   re-translated), with snapshot versions.
//! * [`features`]: the Gateway API features Bulkhead implements (`GatewayClass.status.supportedFeatures`).
//! * [`index`]: every object, indexed by kind, namespace and name for incremental compilation.
//! * [`status`]: object statuses, marking Gateways `Programmed` once routers acknowledge, and
//!   stamping condition transition times; [`status_installation`]: Gateway addresses and the
//!   GatewayClass `SupportedVersion` condition, from the installation around the objects.
//! * [`children`]: the objects applied for each Tenant (router Deployment, Service, PDB,
//!   NetworkPolicy, ServiceAccount, bootstrap Secret), typed and pure.
//! * [`metrics`]: the control plane's Prometheus metrics.
//! * [`rbac`]: the one list of API calls the operator makes, and the RBAC rendered from it.
//! * [`router_endpoints`]: each tenant's router addresses for the edge snapshot, from the
//!   EndpointSlices of its router Service (pure; the compiler uses it whatever the provider).
//! * [`file_provider`]: standalone mode's source of objects: a directory of manifests, watched.
//! * [`kube`]: the Kubernetes provider: watchers, the control loop, onboarding (children applied
//!   per Tenant), statuses written back, and the snapshot API's `TokenReview` authenticator.
#![forbid(unsafe_code)]

pub mod children;
pub mod compiler;
pub mod conditions;
pub mod features;
pub mod file_provider;
pub mod index;
pub mod kube;
pub mod metrics;
pub mod objects;
pub mod rbac;
pub mod router_endpoints;
pub mod status;
pub mod status_installation;
pub mod translator;

pub use compiler::{CompileOutput, Compiler};
pub use file_provider::{FileProvider, LoadedState, ProviderError};
pub use objects::{parse_documents, LoadError, Object, ObjectSet};
pub use status::{apply_acks, ObjectStatus};
pub use translator::{translate, translate_with, TranslateInput, TranslateSettings, Translation};
