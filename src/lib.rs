//! What the `bulkhead` and `bulkhead-dataplane` binaries (and `bulkhead-bench`, in `crates/bench`)
//! share: the data-plane subcommands (`edge` and `router` in cluster mode), process set-up,
//! telemetry and the demo PKI. This is the binaries' edge, so errors are `anyhow`.
#![forbid(unsafe_code)]

pub mod boundary_flags;
pub mod cluster;
pub mod edge_flags;
pub mod otlp_client;
pub mod pki;
pub mod process;
pub mod router_flags;
pub mod telemetry;

/// The process allocator of every binary linking this crate (`bulkhead`, `bulkhead-dataplane`,
/// `bulkhead-bench`): the system's, with over-aligned blocks (tokio's tasks and sockets) served
/// without `memalign` (see `crates/alloc`).
#[global_allocator]
static ALLOCATOR: bulkhead_alloc::Malloc = bulkhead_alloc::Malloc;
