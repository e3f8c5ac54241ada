//! Gateway flags shared by `bulkhead operator` and `bulkhead standalone`: the listener ports the
//! edge receives (defaults and meaning: `bulkhead_operator::translator::TranslateSettings`) and the
//! static addresses written to every served Gateway's `status.addresses`
//! (`bulkhead_operator::status_installation`).

use bulkhead_operator::status_installation::GatewayAddress;
use bulkhead_operator::translator::TranslateSettings;
#[cfg(doc)]
use bulkhead_operator::translator::{DEFAULT_HTTP_LISTENER_PORTS, DEFAULT_TLS_LISTENER_PORTS};

/// Listener ports and Gateway addresses on the command line.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct GatewayArgs {
    /// Gateway listener ports of protocol HTTP the edge receives on its HTTP listener (comma
    /// separated); a listener on another port is Accepted=False/PortUnavailable. Default: 80 for
    /// `operator` and `translate` (the edge Service's port); every port for `standalone`.
    #[arg(long, env = "BULKHEAD_LISTENER_HTTP_PORTS", value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..))]
    pub listener_http_ports: Vec<u16>,
    /// Gateway listener ports of protocol HTTPS and TLS the edge receives on its TLS listener
    /// (comma separated); a listener on another port is Accepted=False/PortUnavailable. Default:
    /// 443 for `operator` and `translate`; every port for `standalone`.
    #[arg(long, env = "BULKHEAD_LISTENER_TLS_PORTS", value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..))]
    pub listener_tls_ports: Vec<u16>,
    /// An address (IP or hostname) clients reach the edge at, written to every served Gateway's
    /// status.addresses (repeatable; overrides the addresses found otherwise).
    #[arg(
        long = "gateway-address",
        env = "BULKHEAD_GATEWAY_ADDRESSES",
        value_delimiter = ','
    )]
    pub gateway_addresses: Vec<String>,
}

impl GatewayArgs {
    /// The translator's settings: the ports given, else the cluster defaults (80 and 443,
    /// [`DEFAULT_HTTP_LISTENER_PORTS`], [`DEFAULT_TLS_LISTENER_PORTS`]).
    pub fn settings(&self) -> TranslateSettings {
        self.settings_or(&TranslateSettings::default())
    }

    /// The translator's settings: the ports given, else those of `default` (standalone passes
    /// [`TranslateSettings::every_port`], its fixed contract).
    pub fn settings_or(&self, default: &TranslateSettings) -> TranslateSettings {
        let given = |ports: &[u16], default: &std::collections::BTreeSet<u16>| match ports {
            [] => default.clone(),
            ports => ports.iter().copied().collect(),
        };
        TranslateSettings {
            http_ports: given(&self.listener_http_ports, &default.http_ports),
            tls_ports: given(&self.listener_tls_ports, &default.tls_ports),
        }
    }

    /// The static Gateway addresses, sorted (empty: none given).
    pub fn static_addresses(&self) -> Vec<GatewayAddress> {
        let mut out: Vec<GatewayAddress> = self
            .gateway_addresses
            .iter()
            .filter(|a| !a.trim().is_empty())
            .map(|a| GatewayAddress::parse(a))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}
