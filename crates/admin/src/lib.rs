//! Admin endpoints shared by every Bulkhead process: `/healthz`, `/readyz`, `/metrics` (Prometheus /
//! OpenMetrics text format) and, where the process provides one, `/status`.
//!
//! The server is deliberately small: HTTP/1.1 only, GET only, bounded header read time, one task per
//! connection. It serves on its own listener so that data-plane load never starves it of a port.
#![forbid(unsafe_code)]

mod ready;
mod server;

pub use ready::{Readiness, ReadyFlag};
pub use server::{AdminError, AdminServer, AdminState, StatusFn};
