//! What the installation around the objects adds to their statuses, after translation (the
//! translator reads objects only): the addresses clients reach the edge at, written to every served
//! Gateway's `status.addresses` (external-dns and the conformance suite read them), and the
//! `SupportedVersion` condition of our GatewayClasses, decided by the installed Gateway API CRD
//! bundle version (annotation [`BUNDLE_VERSION_ANNOTATION`] of the CRDs).
//!
//! Addresses come from `bulkhead operator --gateway-address` (static, repeatable) or else from the
//! edge Service's `status.loadBalancer.ingress` (`--edge-service NAMESPACE/NAME`); in standalone
//! mode from `--gateway-address` or else the addresses of its HTTP and HTTPS listeners.

use crate::status::{condition, ObjectStatus};
use gateway_api::gateways::GatewayStatusAddresses;
use k8s_openapi::api::core::v1::LoadBalancerIngress;
use serde_json::Value;
use std::net::IpAddr;

/// The annotation of the Gateway API CRDs that names their bundle version (`v1.4.0`, ...).
pub const BUNDLE_VERSION_ANNOTATION: &str = "gateway.networking.k8s.io/bundle-version";

/// Gateway API bundle versions Bulkhead supports, as version prefixes (`v1.4.` matches `v1.4.0`,
/// `v1.4.1`, ...).
pub const SUPPORTED_BUNDLE_VERSIONS: &[&str] = &["v1.4.", "v1.5."];

use crate::conditions::REASON_SUPPORTED_VERSION;
pub use crate::conditions::{REASON_UNSUPPORTED_VERSION as UNSUPPORTED_VERSION, SUPPORTED_VERSION};

/// The type of a Gateway address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AddressType {
    /// An IPv4 or IPv6 address (`IPAddress`).
    Ip,
    /// A DNS name (`Hostname`).
    Hostname,
}

/// One address a Gateway is reachable at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GatewayAddress {
    /// Its type.
    pub kind: AddressType,
    /// The IP address or hostname as text.
    pub value: String,
}

impl GatewayAddress {
    /// An address from text: an IP address is `IPAddress`, anything else `Hostname`.
    pub fn parse(text: &str) -> Self {
        let text = text.trim();
        let kind = if text.parse::<IpAddr>().is_ok() {
            AddressType::Ip
        } else {
            AddressType::Hostname
        };
        Self {
            kind,
            value: text.to_owned(),
        }
    }

    /// An IP address.
    pub fn ip(ip: IpAddr) -> Self {
        Self {
            kind: AddressType::Ip,
            value: ip.to_string(),
        }
    }

    fn to_status(&self) -> GatewayStatusAddresses {
        GatewayStatusAddresses {
            r#type: Some(
                match self.kind {
                    AddressType::Ip => "IPAddress",
                    AddressType::Hostname => "Hostname",
                }
                .to_owned(),
            ),
            value: self.value.clone(),
        }
    }
}

/// The addresses of a load balancer's `status.loadBalancer.ingress` (IP, else hostname), sorted,
/// without duplicates.
pub fn addresses_of_ingress(ingress: &[LoadBalancerIngress]) -> Vec<GatewayAddress> {
    let mut out: Vec<GatewayAddress> = ingress
        .iter()
        .filter_map(|i| match (&i.ip, &i.hostname) {
            (Some(ip), _) if !ip.is_empty() => Some(GatewayAddress::parse(ip)),
            (_, Some(host)) if !host.is_empty() => Some(GatewayAddress::parse(host)),
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// What is known of the installed Gateway API CRDs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CrdBundle {
    /// Not known (yet): no `SupportedVersion` condition is written.
    #[default]
    Unknown,
    /// Standalone mode: objects are read with Bulkhead's own Gateway API types.
    BuiltIn,
    /// The CRDs are installed with this `gateway.networking.k8s.io/bundle-version` (`None`: a
    /// CRD without the annotation).
    Installed(Option<String>),
}

impl CrdBundle {
    /// The `SupportedVersion` condition's status, reason and message (`None` when unknown).
    fn verdict(&self) -> Option<(bool, &'static str, String)> {
        let supported = SUPPORTED_BUNDLE_VERSIONS.join("x, ") + "x";
        match self {
            Self::Unknown => None,
            Self::BuiltIn => Some((
                true,
                REASON_SUPPORTED_VERSION,
                format!("standalone mode reads Gateway API objects with Bulkhead's own types (bundle versions {supported})"),
            )),
            Self::Installed(Some(v)) if SUPPORTED_BUNDLE_VERSIONS.iter().any(|p| v.starts_with(p)) => Some((
                true,
                REASON_SUPPORTED_VERSION,
                format!("Gateway API CRD bundle version {v} is supported"),
            )),
            Self::Installed(Some(v)) => Some((
                false,
                UNSUPPORTED_VERSION,
                format!("Gateway API CRD bundle version {v} is not supported (supported: {supported}); served on a best-effort basis"),
            )),
            Self::Installed(None) => Some((
                false,
                UNSUPPORTED_VERSION,
                format!("a Gateway API CRD has no {BUNDLE_VERSION_ANNOTATION} annotation (supported: {supported}); served on a best-effort basis"),
            )),
        }
    }
}

/// The installation around the objects (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Installation {
    /// Where clients reach the edge, sorted.
    pub addresses: Vec<GatewayAddress>,
    /// The installed CRD bundle.
    pub crd_bundle: CrdBundle,
    /// Gateway API kinds Bulkhead needs that the API server serves at no version Bulkhead reads
    /// (API discovery, [`crate::kube::discovery`]), each with the versions looked for: the
    /// GatewayClass then says `SupportedVersion=False`, naming them.
    pub missing_kinds: Vec<String>,
}

/// Writes `installation` into `statuses` (again and again: the result depends on the last call
/// only): `status.addresses` of every Gateway a tenant serves (not of Gateways outside every
/// tenant, which are not accepted; removed when no address is known), and the `SupportedVersion`
/// condition of every GatewayClass status (with the `Accepted` condition's observed generation).
pub fn apply_installation(statuses: &mut [ObjectStatus], installation: &Installation) {
    let addresses: Vec<Value> = installation
        .addresses
        .iter()
        .map(|a| serde_json::to_value(a.to_status()).unwrap_or_default())
        .collect();
    let verdict = match installation.missing_kinds.as_slice() {
        [] => installation.crd_bundle.verdict(),
        missing => Some((
            false,
            UNSUPPORTED_VERSION,
            format!(
                "Gateway API kinds Bulkhead needs are not served by the API server: {}; every other kind is served without them",
                missing.join(", ")
            ),
        )),
    };
    for s in statuses.iter_mut() {
        match s.kind.as_str() {
            "Gateway" if s.tenant.is_some() => {
                if let Value::Object(map) = &mut s.status {
                    if addresses.is_empty() {
                        map.remove("addresses");
                    } else {
                        map.insert("addresses".into(), Value::Array(addresses.clone()));
                    }
                }
            }
            "GatewayClass" => {
                if let Some((ok, reason, message)) = &verdict {
                    set_condition(&mut s.status, SUPPORTED_VERSION, *ok, reason, message);
                }
            }
            _ => {}
        }
    }
}

/// Adds (or replaces) condition `type_` in `status.conditions`, with the generation the
/// `Accepted` condition observed.
fn set_condition(status: &mut Value, type_: &str, ok: bool, reason: &str, message: &str) {
    let Some(Value::Array(conditions)) = status.get_mut("conditions") else {
        return;
    };
    let generation = conditions
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(crate::conditions::ACCEPTED))
        .and_then(|c| c.get("observedGeneration"))
        .and_then(Value::as_i64);
    let c =
        serde_json::to_value(condition(type_, ok, reason, message, generation)).unwrap_or_default();
    conditions.retain(|c| c.get("type").and_then(Value::as_str) != Some(type_));
    conditions.push(c);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::ObjectMeta;
    use serde_json::json;

    fn status(kind: &str, tenant: Option<&str>, status: Value) -> ObjectStatus {
        ObjectStatus {
            api_version: "gateway.networking.k8s.io/v1".into(),
            kind: kind.into(),
            metadata: ObjectMeta {
                namespace: None,
                name: "x".into(),
            },
            status,
            tenant: tenant.map(str::to_owned),
        }
    }

    fn class() -> ObjectStatus {
        let accepted = condition("Accepted", true, "Accepted", "ok", Some(3));
        status(
            "GatewayClass",
            None,
            json!({"conditions": [serde_json::to_value(accepted).unwrap()]}),
        )
    }

    #[test]
    fn served_gateways_get_the_addresses_with_their_types_and_orphans_do_not() {
        let mut statuses = vec![
            status("Gateway", Some("acme"), json!({"conditions": []})),
            status("Gateway", None, json!({"conditions": []})),
        ];
        let installation = Installation {
            addresses: vec![
                GatewayAddress::parse("192.0.2.7"),
                GatewayAddress::parse("2001:db8::7"),
                GatewayAddress::parse("lb.example.test"),
            ],
            crd_bundle: CrdBundle::Unknown,
            missing_kinds: Vec::new(),
        };
        apply_installation(&mut statuses, &installation);
        assert_eq!(
            statuses[0].status["addresses"],
            json!([
                {"type": "IPAddress", "value": "192.0.2.7"},
                {"type": "IPAddress", "value": "2001:db8::7"},
                {"type": "Hostname", "value": "lb.example.test"},
            ])
        );
        assert!(statuses[1].status.get("addresses").is_none());
        apply_installation(&mut statuses, &Installation::default());
        assert!(
            statuses[0].status.get("addresses").is_none(),
            "addresses gone"
        );
    }

    #[test]
    fn load_balancer_ingress_gives_ips_else_hostnames() {
        let ingress = vec![
            LoadBalancerIngress {
                hostname: Some("lb.example.test".into()),
                ..Default::default()
            },
            LoadBalancerIngress {
                ip: Some("192.0.2.9".into()),
                hostname: Some("ignored.example.test".into()),
                ..Default::default()
            },
            LoadBalancerIngress::default(),
        ];
        assert_eq!(
            addresses_of_ingress(&ingress),
            vec![
                GatewayAddress::parse("192.0.2.9"),
                GatewayAddress::parse("lb.example.test"),
            ]
        );
    }

    fn supported_version(s: &ObjectStatus) -> Value {
        s.status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == SUPPORTED_VERSION)
            .cloned()
            .unwrap_or(Value::Null)
    }

    #[test]
    fn supported_version_follows_the_crd_bundle_version() {
        let cases = [
            (
                CrdBundle::Installed(Some("v1.4.1".into())),
                "True",
                "SupportedVersion",
            ),
            (
                CrdBundle::Installed(Some("v1.5.0".into())),
                "True",
                "SupportedVersion",
            ),
            (
                CrdBundle::Installed(Some("v1.2.0".into())),
                "False",
                "UnsupportedVersion",
            ),
            (CrdBundle::Installed(None), "False", "UnsupportedVersion"),
            (CrdBundle::BuiltIn, "True", "SupportedVersion"),
        ];
        for (bundle, want, reason) in cases {
            let mut statuses = vec![class()];
            let installation = Installation {
                addresses: Vec::new(),
                crd_bundle: bundle.clone(),
                missing_kinds: Vec::new(),
            };
            apply_installation(&mut statuses, &installation);
            apply_installation(&mut statuses, &installation);
            let c = supported_version(&statuses[0]);
            assert_eq!(c["status"], want, "{bundle:?}: {c}");
            assert_eq!(c["reason"], reason, "{bundle:?}: {c}");
            assert_eq!(c["observedGeneration"], 3, "{bundle:?}: {c}");
            assert_eq!(
                statuses[0].status["conditions"].as_array().unwrap().len(),
                2
            );
        }
        let mut statuses = vec![class()];
        apply_installation(&mut statuses, &Installation::default());
        assert_eq!(supported_version(&statuses[0]), Value::Null);
    }

    /// A required kind the cluster does not serve (Gateway API v1.4 without ReferenceGrant, say)
    /// is said on the GatewayClass, whatever the bundle version.
    #[test]
    fn a_missing_kind_makes_the_version_unsupported_and_is_named() {
        let mut statuses = vec![class()];
        let installation = Installation {
            addresses: Vec::new(),
            crd_bundle: CrdBundle::Installed(Some("v1.5.0".into())),
            missing_kinds: vec!["ReferenceGrant (v1, v1beta1)".into()],
        };
        apply_installation(&mut statuses, &installation);
        let c = supported_version(&statuses[0]);
        assert_eq!(c["status"], "False", "{c}");
        assert_eq!(c["reason"], "UnsupportedVersion", "{c}");
        assert!(
            c["message"]
                .as_str()
                .is_some_and(|m| m.contains("ReferenceGrant (v1, v1beta1)")),
            "{c}"
        );
    }
}
