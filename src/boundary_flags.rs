//! Flags of the router's boundary policy ([`bulkhead_router::BoundaryPolicy`]), shared by
//! `bulkhead router` and `bulkhead standalone`: escaped slashes in paths, trusted
//! `X-Forwarded-For` hops, allowed `Upgrade` protocols.

use bulkhead_router::{
    BoundaryPolicy, EscapedSlashes, DEFAULT_ESCAPED_SLASHES, DEFAULT_UPGRADE_PROTOCOLS,
    DEFAULT_XFF_TRUSTED_HOPS, FORBIDDEN_UPGRADE_PROTOCOL,
};

/// The boundary policy flags.
#[derive(clap::Args, Debug, Clone)]
pub struct BoundaryArgs {
    /// What to do with `%2F` / `%5C` in request paths: unescape-and-redirect (307 to the decoded
    /// path), unescape-and-forward, reject (400) or keep-unchanged (unsafe if a backend decodes them).
    #[arg(long, env = "BULKHEAD_ESCAPED_SLASHES", default_value_t = DEFAULT_ESCAPED_SLASHES)]
    pub escaped_slashes: EscapedSlashes,
    /// Proxies in front of the router trusted to append to `X-Forwarded-For`: the last this many
    /// client-supplied entries are kept; 0 replaces them all.
    #[arg(long, env = "BULKHEAD_XFF_TRUSTED_HOPS", default_value_t = DEFAULT_XFF_TRUSTED_HOPS)]
    pub xff_trusted_hops: usize,
    /// A protocol requests may `Upgrade` to (repeat the flag, or separate with commas); `h2c` is
    /// refused.
    #[arg(
        long = "upgrade-protocol",
        env = "BULKHEAD_UPGRADE_PROTOCOLS",
        value_delimiter = ',',
        value_parser = parse_upgrade_protocol,
        default_values_t = DEFAULT_UPGRADE_PROTOCOLS.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>()
    )]
    pub upgrade_protocols: Vec<String>,
}

impl Default for BoundaryArgs {
    fn default() -> Self {
        let policy = BoundaryPolicy::default();
        Self {
            escaped_slashes: policy.escaped_slashes,
            xff_trusted_hops: policy.xff_trusted_hops,
            upgrade_protocols: policy.upgrade_protocols,
        }
    }
}

impl BoundaryArgs {
    /// The policy these flags describe.
    pub fn policy(&self) -> BoundaryPolicy {
        BoundaryPolicy {
            escaped_slashes: self.escaped_slashes,
            xff_trusted_hops: self.xff_trusted_hops,
            upgrade_protocols: self.upgrade_protocols.clone(),
        }
    }
}

/// An `Upgrade` protocol name, lower-cased; `h2c` (a tunnel past every route rule) is refused.
fn parse_upgrade_protocol(s: &str) -> Result<String, String> {
    let name = s.trim().to_ascii_lowercase();
    if name == FORBIDDEN_UPGRADE_PROTOCOL {
        return Err(format!(
            "{FORBIDDEN_UPGRADE_PROTOCOL} upgrades are never forwarded"
        ));
    }
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b',' && b != b'/')
    {
        return Err(format!("{s:?} is not a protocol name"));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        boundary: BoundaryArgs,
    }

    #[test]
    fn defaults_are_the_router_defaults() {
        let cli = Cli::parse_from(["x"]);
        assert_eq!(cli.boundary.policy(), BoundaryPolicy::default());
        assert_eq!(BoundaryArgs::default().policy(), BoundaryPolicy::default());
    }

    #[test]
    fn flags_set_the_policy_and_h2c_is_refused() {
        let cli = Cli::parse_from([
            "x",
            "--escaped-slashes",
            "reject",
            "--xff-trusted-hops",
            "2",
            "--upgrade-protocol",
            "WebSocket,foo",
        ]);
        let policy = cli.boundary.policy();
        assert_eq!(policy.escaped_slashes, EscapedSlashes::Reject);
        assert_eq!(policy.xff_trusted_hops, 2);
        assert_eq!(policy.upgrade_protocols, ["websocket", "foo"]);
        assert!(Cli::try_parse_from(["x", "--upgrade-protocol", "h2c"]).is_err());
        assert!(Cli::try_parse_from(["x", "--escaped-slashes", "drop"]).is_err());
    }
}
