//! Command-line flags (and environment variables) that override a tenant router's upstream limits
//! ([`RouterLimits`]): circuit breakers, the mirror bound and outlier detection. `bulkhead router`
//! and `bulkhead standalone` take them alike.

use bulkhead_router::{
    RouterLimits, DEFAULT_MAX_MIRRORS_IN_FLIGHT, DEFAULT_MAX_REQUESTS_PER_BACKEND,
    DEFAULT_OUTLIER_CONSECUTIVE_FAILURES,
};

/// Upstream limits of every tenant router the process runs.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct UpstreamLimitArgs {
    /// Circuit breaker: most requests in flight to one backend; more are answered 503 at once.
    #[arg(long, env = "BULKHEAD_ROUTER_MAX_REQUESTS_PER_BACKEND", default_value_t = DEFAULT_MAX_REQUESTS_PER_BACKEND)]
    pub router_max_requests_per_backend: usize,
    /// Most mirrored requests in flight per router; further mirrors are dropped and counted.
    #[arg(long, env = "BULKHEAD_ROUTER_MAX_MIRRORS_IN_FLIGHT", default_value_t = DEFAULT_MAX_MIRRORS_IN_FLIGHT)]
    pub router_max_mirrors_in_flight: usize,
    /// Consecutive gateway failures that eject an endpoint from load balancing (0: never).
    #[arg(long, env = "BULKHEAD_ROUTER_OUTLIER_CONSECUTIVE_FAILURES", default_value_t = DEFAULT_OUTLIER_CONSECUTIVE_FAILURES)]
    pub router_outlier_consecutive_failures: u32,
}

impl Default for UpstreamLimitArgs {
    fn default() -> Self {
        Self {
            router_max_requests_per_backend: DEFAULT_MAX_REQUESTS_PER_BACKEND,
            router_max_mirrors_in_flight: DEFAULT_MAX_MIRRORS_IN_FLIGHT,
            router_outlier_consecutive_failures: DEFAULT_OUTLIER_CONSECUTIVE_FAILURES,
        }
    }
}

impl UpstreamLimitArgs {
    /// Writes the flags into `limits`.
    pub fn apply(&self, limits: &mut RouterLimits) {
        limits.max_requests_per_backend = self.router_max_requests_per_backend;
        limits.max_mirrors_in_flight = self.router_max_mirrors_in_flight;
        limits.outlier_consecutive_failures = self.router_outlier_consecutive_failures;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_change_nothing() {
        let mut limits = RouterLimits::default();
        UpstreamLimitArgs::default().apply(&mut limits);
        assert_eq!(limits, RouterLimits::default());
    }
}
