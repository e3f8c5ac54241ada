//! Stream names: which snapshot a request is about, and the URL path that serves it.
//!
//! There is one edge stream and one stream per tenant. On the wire (acknowledgements, logs) a name is
//! `edge` or `tenants/<tenant>`; the stream itself is served at `/v1/snapshots/<name>`. A tenant name
//! is a Kubernetes object name (`Tenant` objects are cluster-scoped): a DNS-1123 subdomain.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// URL path prefix of snapshot streams.
pub const STREAMS_PATH: &str = "/v1/snapshots/";

/// URL path of acknowledgements.
pub const ACKS_PATH: &str = "/v1/acks";

/// Longest tenant name (a DNS-1123 subdomain).
pub const MAX_TENANT_NAME_LEN: usize = 253;

const EDGE: &str = "edge";
const TENANTS: &str = "tenants/";

/// One snapshot stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamName {
    /// The edge snapshot (hostname → tenant, tenant → router endpoints).
    Edge,
    /// One tenant's router snapshot (it holds that tenant's private keys).
    Tenant(String),
}

/// A stream name that is not `edge` or `tenants/<DNS-1123 subdomain>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid snapshot stream name {0:?}: expected \"edge\" or \"tenants/<tenant>\" with a DNS-1123 tenant name")]
pub struct StreamNameError(pub String);

impl StreamName {
    /// A tenant's stream, with the name checked.
    pub fn tenant(name: impl Into<String>) -> Result<Self, StreamNameError> {
        let name = name.into();
        if is_dns1123_subdomain(&name) {
            Ok(Self::Tenant(name))
        } else {
            Err(StreamNameError(format!("{TENANTS}{name}")))
        }
    }

    /// Checks a name built directly from the enum.
    pub fn validate(&self) -> Result<(), StreamNameError> {
        match self {
            Self::Edge => Ok(()),
            Self::Tenant(t) if is_dns1123_subdomain(t) => Ok(()),
            Self::Tenant(_) => Err(StreamNameError(self.to_string())),
        }
    }

    /// The URL path that serves this stream (`/v1/snapshots/edge`, `/v1/snapshots/tenants/acme`).
    pub fn path(&self) -> String {
        format!("{STREAMS_PATH}{self}")
    }

    /// The stream a URL path names: `None` for a path outside the stream space or an invalid name.
    pub fn from_path(path: &str) -> Option<Self> {
        path.strip_prefix(STREAMS_PATH)?.parse().ok()
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Edge => f.write_str(EDGE),
            Self::Tenant(t) => write!(f, "{TENANTS}{t}"),
        }
    }
}

impl FromStr for StreamName {
    type Err = StreamNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == EDGE {
            return Ok(Self::Edge);
        }
        match s.strip_prefix(TENANTS) {
            Some(tenant) => Self::tenant(tenant).map_err(|_| StreamNameError(s.to_owned())),
            None => Err(StreamNameError(s.to_owned())),
        }
    }
}

impl Serialize for StreamName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StreamName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether `name` is a DNS-1123 subdomain: at most 253 characters of `[a-z0-9.-]`, dot-separated
/// labels that start and end with an alphanumeric character.
fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= MAX_TENANT_NAME_LEN
        && name.split('.').all(|label| {
            let b = label.as_bytes();
            matches!((b.first(), b.last()), (Some(f), Some(l)) if f.is_ascii_alphanumeric() && l.is_ascii_alphanumeric())
                && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_round_trip() {
        let acme = StreamName::tenant("acme").unwrap();
        assert_eq!(acme.to_string(), "tenants/acme");
        assert_eq!(acme.path(), "/v1/snapshots/tenants/acme");
        assert_eq!(
            StreamName::from_path("/v1/snapshots/tenants/acme"),
            Some(acme.clone())
        );
        assert_eq!(
            StreamName::from_path("/v1/snapshots/edge"),
            Some(StreamName::Edge)
        );
        assert_eq!(serde_json::to_string(&acme).unwrap(), "\"tenants/acme\"");
        assert_eq!(
            serde_json::from_str::<StreamName>("\"edge\"").unwrap(),
            StreamName::Edge
        );
    }

    #[test]
    fn tenant_names_that_could_escape_the_path_are_refused() {
        for bad in [
            "", "Acme", "a/b", "..", "a..b", "-a", "a-", "a_b", "a b", "é",
        ] {
            assert!(StreamName::tenant(bad).is_err(), "{bad:?}");
            assert!(
                StreamName::from_path(&format!("/v1/snapshots/tenants/{bad}")).is_none(),
                "{bad:?}"
            );
        }
        assert!(StreamName::tenant("a".repeat(254)).is_err());
        assert!(StreamName::tenant("team-1.example").is_ok());
        assert!(StreamName::Tenant("A".into()).validate().is_err());
        assert!(StreamName::from_path("/v1/snapshots/edge/x").is_none());
        assert!(StreamName::from_path("/v1/snapshotsedge").is_none());
        assert!(serde_json::from_str::<StreamName>("\"tenants/../edge\"").is_err());
    }
}
