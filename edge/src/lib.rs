//! Tier 1 of Bulkhead: the edge. It reads the name a connection is for (ClientHello SNI on the TLS
//! listener, `Host` on the plain HTTP listener) without terminating TLS, finds the tenant that owns
//! it in the current [`EdgeSnapshot`](bulkhead_snapshot::EdgeSnapshot), and forwards the raw
//! stream to one of that tenant's routers behind a PROXY v2 header, byte for byte.
//!
//! * [`config`]: [`EdgeConfig`] and [`EdgeLimits`], every limit in one place; [`cidr`]: the
//!   networks of trusted load balancers that may send a PROXY header.
//! * `table`: the routing table built from a snapshot, swapped atomically.
//! * `connection`: one connection from accept to close; `upstream_proxy`: the PROXY header of a
//!   trusted load balancer; `refuse`: alerts and short HTTP answers; `refusals`: the periodic
//!   summary of refusals in the log.
//! * `balance`: power of two choices among a tenant's routers; `health`: endpoints whose connect
//!   failed are marked failing and skipped for a doubling backoff.
//! * `sources`: per-source limits (connection rate, connections still sniffing, forwarded
//!   connections per tenant), so one client cannot starve the others.
//! * [`metrics`]: [`EdgeMetrics`], labels bounded by the snapshot.
#![forbid(unsafe_code)]

mod balance;
pub mod cidr;
pub mod config;
mod connection;
mod health;
pub mod metrics;
mod refusals;
mod refuse;
mod server;
mod sources;
mod table;
mod upstream_proxy;

pub use cidr::{Cidr, CidrError};
pub use config::{EdgeConfig, EdgeLimits};
pub use metrics::EdgeMetrics;
pub use server::{Edge, EdgeError};
