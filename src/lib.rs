//! What the `bulkhead` and `bulkhead-dataplane` binaries share: the data-plane subcommands (`edge`
//! and `router` in cluster mode, `bench-candidate` for the load harness), process set-up and
//! telemetry. This is the binaries' edge, so errors are `anyhow`.
#![forbid(unsafe_code)]

pub mod bench;
pub mod boundary_flags;
pub mod cluster;
pub mod edge_flags;
pub mod otlp_client;
pub mod process;
pub mod router_flags;
pub mod telemetry;
