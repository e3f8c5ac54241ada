//! The edge's limit flags, shared by `bulkhead edge`, `bulkhead-dataplane edge` and
//! `bulkhead standalone`: each overrides one field of [`EdgeLimits`] (defaults and what happens
//! at each limit: `bulkhead_edge::config`), and each can also be set by its environment variable.

use bulkhead_edge::config;
use bulkhead_edge::EdgeLimits;
use std::time::Duration;

/// The edge's limits and timeouts on the command line.
#[derive(clap::Args, Debug, Clone)]
pub struct EdgeLimitArgs {
    /// Milliseconds a client may take to send its PROXY header and ClientHello or request head.
    #[arg(long, env = "BULKHEAD_EDGE_SNIFF_TIMEOUT_MS", default_value_t = millis(config::DEFAULT_SNIFF_TIMEOUT))]
    pub edge_sniff_timeout_ms: u64,
    /// Seconds a forwarded connection may pass without a byte in either direction.
    #[arg(long, env = "BULKHEAD_EDGE_IDLE_TIMEOUT_SECS", default_value_t = config::DEFAULT_IDLE_TIMEOUT.as_secs())]
    pub edge_idle_timeout_secs: u64,
    /// Most connections still sniffing at once, across all sources.
    #[arg(long, env = "BULKHEAD_EDGE_MAX_SNIFFING", default_value_t = config::DEFAULT_MAX_SNIFFING, value_parser = positive_usize)]
    pub edge_max_sniffing: usize,
    /// Most open client connections across both listeners.
    #[arg(long, env = "BULKHEAD_EDGE_MAX_CONNECTIONS", default_value_t = config::DEFAULT_MAX_CONNECTIONS, value_parser = positive_usize)]
    pub edge_max_connections: usize,
    /// Most open forwarded connections per tenant.
    #[arg(long, env = "BULKHEAD_EDGE_MAX_CONNECTIONS_PER_TENANT", default_value_t = config::DEFAULT_MAX_CONNECTIONS_PER_TENANT, value_parser = positive_usize)]
    pub edge_max_connections_per_tenant: usize,
    /// Most connections still sniffing from one source (IPv4 address, IPv6 /64).
    #[arg(long, env = "BULKHEAD_EDGE_MAX_SNIFFING_PER_SOURCE", default_value_t = config::DEFAULT_MAX_SNIFFING_PER_SOURCE, value_parser = positive_usize)]
    pub edge_max_sniffing_per_source: usize,
    /// New connections per second one source may open on average.
    #[arg(long, env = "BULKHEAD_EDGE_SOURCE_CONNECT_RATE", default_value_t = config::DEFAULT_SOURCE_CONNECT_RATE, value_parser = clap::value_parser!(u32).range(1..))]
    pub edge_source_connect_rate: u32,
    /// New connections one source may open at once (token bucket size).
    #[arg(long, env = "BULKHEAD_EDGE_SOURCE_CONNECT_BURST", default_value_t = config::DEFAULT_SOURCE_CONNECT_BURST, value_parser = clap::value_parser!(u32).range(1..))]
    pub edge_source_connect_burst: u32,
    /// Most sources whose connection rate is tracked at once (beyond: admitted untracked).
    #[arg(long, env = "BULKHEAD_EDGE_SOURCE_RATE_TABLE_SIZE", default_value_t = config::DEFAULT_SOURCE_RATE_TABLE_SIZE, value_parser = positive_usize)]
    pub edge_source_rate_table_size: usize,
    /// Most open forwarded connections from one source to one tenant.
    #[arg(long, env = "BULKHEAD_EDGE_MAX_CONNECTIONS_PER_SOURCE_PER_TENANT", default_value_t = config::DEFAULT_MAX_CONNECTIONS_PER_SOURCE_PER_TENANT, value_parser = positive_usize)]
    pub edge_max_connections_per_source_per_tenant: usize,
}

impl EdgeLimitArgs {
    /// The limits these flags describe; fields without a flag keep their defaults.
    pub fn limits(&self) -> EdgeLimits {
        EdgeLimits {
            sniff_timeout: Duration::from_millis(self.edge_sniff_timeout_ms),
            idle_timeout: Duration::from_secs(self.edge_idle_timeout_secs),
            max_sniffing: self.edge_max_sniffing,
            max_connections: self.edge_max_connections,
            max_connections_per_tenant: self.edge_max_connections_per_tenant,
            max_sniffing_per_source: self.edge_max_sniffing_per_source,
            source_connect_rate: self.edge_source_connect_rate,
            source_connect_burst: self.edge_source_connect_burst,
            source_rate_table_size: self.edge_source_rate_table_size,
            max_connections_per_source_per_tenant: self.edge_max_connections_per_source_per_tenant,
            ..EdgeLimits::default()
        }
    }
}

impl Default for EdgeLimitArgs {
    /// The flags of [`EdgeLimits::default`], for callers that build arguments in code.
    fn default() -> Self {
        let d = EdgeLimits::default();
        Self {
            edge_sniff_timeout_ms: millis(d.sniff_timeout),
            edge_idle_timeout_secs: d.idle_timeout.as_secs(),
            edge_max_sniffing: d.max_sniffing,
            edge_max_connections: d.max_connections,
            edge_max_connections_per_tenant: d.max_connections_per_tenant,
            edge_max_sniffing_per_source: d.max_sniffing_per_source,
            edge_source_connect_rate: d.source_connect_rate,
            edge_source_connect_burst: d.source_connect_burst,
            edge_source_rate_table_size: d.source_rate_table_size,
            edge_max_connections_per_source_per_tenant: d.max_connections_per_source_per_tenant,
        }
    }
}

/// A count of at least one: a limit of 0 would refuse everything.
fn positive_usize(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A duration in whole milliseconds, for a flag's default.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        edge: EdgeLimitArgs,
    }

    #[test]
    fn defaults_are_the_edge_defaults_and_flags_override_them() {
        let cli = Cli::parse_from(["bulkhead"]);
        assert_eq!(cli.edge.limits(), EdgeLimits::default());
        assert_eq!(EdgeLimitArgs::default().limits(), EdgeLimits::default());
        let cli = Cli::parse_from([
            "bulkhead",
            "--edge-max-sniffing-per-source",
            "16",
            "--edge-source-connect-rate",
            "5",
            "--edge-sniff-timeout-ms",
            "1500",
        ]);
        let limits = cli.edge.limits();
        assert_eq!(limits.max_sniffing_per_source, 16);
        assert_eq!(limits.source_connect_rate, 5);
        assert_eq!(limits.sniff_timeout, Duration::from_millis(1500));
        for zero in [
            "--edge-max-sniffing-per-source",
            "--edge-source-connect-burst",
        ] {
            assert!(
                Cli::try_parse_from(["bulkhead", zero, "0"]).is_err(),
                "{zero} 0"
            );
        }
    }
}
