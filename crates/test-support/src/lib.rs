//! Dev-only fixtures shared by Bulkhead's tests, written once instead of once per test crate (as
//! linkerd2-proxy's test-util crates do): a throwaway PKI, rustls client and server configurations,
//! loopback backends (accept loops that echo, drain or run a handler), manifest builders with the
//! two-tenant world, and the fuzz seeds with the checks the fuzz targets apply. Never a dependency
//! of a shipped binary: list it under `[dev-dependencies]` only.
//!
//! | module | feature | owns |
//! |---|---|---|
//! | [`fuzz`] | (always) | reading `fuzz/seeds/<target>/` |
//! | [`manifests`] | (always) | YAML builders for `bulkhead standalone`; (`tls`) the two-tenant world |
//! | `fuzz::frames` | `frames` | the snapshot frame decoder checks (shared with the fuzz target) |
//! | `net` | `net` | loopback backends (`net::serve_each`, echo, drain, closed ports) and raw clients |
//! | `pki` | `tls` | the demo CA of `src/pki.rs` (one copy) with the DER forms tests compare |
//! | `tls` | `tls` | rustls client and server configurations, a ClientHello taken out of rustls |
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod fuzz;
pub mod manifests;
#[cfg(feature = "net")]
pub mod net;
#[cfg(feature = "tls")]
pub mod pki;
#[cfg(feature = "tls")]
pub mod tls;
