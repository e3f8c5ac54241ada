//! Tier 1 of Bulkhead: the edge. It reads the name a connection is for (ClientHello SNI on the TLS
//! listener, `Host` on the plain HTTP listener) without terminating TLS, finds the tenant that owns
//! it in the current [`EdgeSnapshot`](bulkhead_crds::snapshot::EdgeSnapshot), and forwards the raw
//! stream to one of that tenant's routers behind a PROXY v2 header, byte for byte.
//!
//! * [`config`]: [`EdgeConfig`] and [`EdgeLimits`], every limit in one place.
//! * `table`: the routing table built from a snapshot, swapped atomically.
//! * `connection`: one connection from accept to close; `refuse`: alerts and short HTTP answers.
//! * `balance`: power of two choices among a tenant's routers.
//! * [`metrics`]: [`EdgeMetrics`], labels bounded by the snapshot.
#![forbid(unsafe_code)]

mod balance;
pub mod config;
mod connection;
pub mod metrics;
mod refuse;
mod server;
mod table;

pub use config::{EdgeConfig, EdgeLimits};
pub use metrics::EdgeMetrics;
pub use server::{Edge, EdgeError};
