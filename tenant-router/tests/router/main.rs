//! Tenant router behaviour over real loopback sockets: PROXY v2, rustls, hyper clients and backends.

mod backend_faults;
mod backend_tls;
mod config_swap;
mod filters;
mod h1_upstream;
mod limits;
mod passthrough;
mod resilience;
mod routing;
mod support;
mod tenancy;
mod upstream_pool;
mod workers;
