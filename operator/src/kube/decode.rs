//! Decoding watched objects one by one.
//!
//! kube-rs decodes a whole list response at once: one object our types cannot read (an
//! `HTTPRoute` filter of a newer Gateway API release such as `ExternalAuth`, any enum value newer
//! than our crates, an integer out of range in a `Tenant`) would fail the list, so the kind would
//! never finish its initial list and a later relist would freeze it. The watchers therefore watch
//! [`Lenient<K>`]: its decoding never fails on a well-formed JSON object, it holds either the typed
//! object or an [`Unreadable`] (the object's identity and the decode error). The store drops an
//! unreadable object (and any version of it cached before), the control loop counts, logs and
//! reports it, and every other object keeps being served.

use crate::index::Kind;
use ::kube::Resource;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::borrow::Cow;

/// An object the operator's types cannot decode: its identity and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The kind.
    pub kind: Kind,
    /// Its `apiVersion`, as served.
    pub api_version: String,
    /// Its namespace (`None`: cluster-scoped).
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// Its UID, when it could be read.
    pub uid: Option<String>,
    /// The decode error.
    pub error: String,
}

/// A watched object: decoded, or kept as an error (see the module documentation).
#[derive(Debug, Clone)]
pub enum Lenient<K> {
    /// Decoded into the operator's type.
    Decoded(K),
    /// Not decodable.
    Undecodable(Box<Undecoded>),
}

/// What is known of an object that could not be decoded.
#[derive(Debug, Clone)]
pub struct Undecoded {
    /// The object's metadata (empty when even that could not be read).
    pub metadata: ObjectMeta,
    /// Its `apiVersion`, as served.
    pub api_version: String,
    /// The decode error.
    pub error: String,
}

impl<K> Lenient<K> {
    /// The typed object, or what is known of the one that could not be decoded.
    pub fn into_result(self, kind: Kind) -> Result<K, Box<Unreadable>> {
        match self {
            Self::Decoded(o) => Ok(o),
            Self::Undecodable(u) => {
                let Undecoded {
                    metadata,
                    api_version,
                    error,
                } = *u;
                Err(Box::new(Unreadable {
                    kind,
                    api_version,
                    namespace: metadata.namespace,
                    name: metadata.name.unwrap_or_default(),
                    uid: metadata.uid,
                    error,
                }))
            }
        }
    }
}

impl<'de, K: DeserializeOwned> Deserialize<'de> for Lenient<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        match K::deserialize(&value) {
            Ok(o) => Ok(Self::Decoded(o)),
            Err(e) => Ok(Self::Undecodable(Box::new(Undecoded {
                metadata: value
                    .get("metadata")
                    .and_then(|m| ObjectMeta::deserialize(m).ok())
                    .unwrap_or_default(),
                api_version: value["apiVersion"].as_str().unwrap_or_default().to_owned(),
                error: e.to_string(),
            }))),
        }
    }
}

/// The API version a kind is watched at: `None` is the version of the operator's type; a Gateway
/// API kind is watched at the version API discovery found (see [`super::discovery`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct WatchedVersion(pub Option<&'static str>);

impl<K: Resource<DynamicType = ()>> Resource for Lenient<K> {
    type DynamicType = WatchedVersion;
    type Scope = K::Scope;

    fn kind(_: &WatchedVersion) -> Cow<'_, str> {
        K::kind(&())
    }

    fn group(_: &WatchedVersion) -> Cow<'_, str> {
        K::group(&())
    }

    fn version(dt: &WatchedVersion) -> Cow<'_, str> {
        dt.0.map_or_else(|| K::version(&()), Cow::Borrowed)
    }

    fn plural(_: &WatchedVersion) -> Cow<'_, str> {
        K::plural(&())
    }

    fn meta(&self) -> &ObjectMeta {
        match self {
            Self::Decoded(o) => o.meta(),
            Self::Undecodable(u) => &u.metadata,
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Self::Decoded(o) => o.meta_mut(),
            Self::Undecodable(u) => &mut u.metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_crds::Tenant;
    use gateway_api::httproutes::HttpRoute;

    /// An HTTPRoute with a filter of the experimental channel newer than our types.
    pub(crate) fn external_auth_route(name: &str) -> Value {
        serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": "team-a", "uid": "u-1"},
            "spec": {"parentRefs": [{"name": "web"}], "rules": [{
                "filters": [{"type": "ExternalAuth",
                             "externalAuth": {"protocol": "HTTP", "backendRef": {"name": "auth"}}}],
                "backendRefs": [{"name": "app", "port": 80}]
            }]}
        })
    }

    #[test]
    fn an_unknown_filter_type_is_kept_as_an_error_with_its_identity() {
        let route: Lenient<HttpRoute> =
            serde_json::from_value(external_auth_route("auth")).expect("never fails");
        let unreadable = route
            .into_result(Kind::HttpRoute)
            .expect_err("not decodable");
        assert_eq!(unreadable.name, "auth");
        assert_eq!(unreadable.namespace.as_deref(), Some("team-a"));
        assert_eq!(unreadable.uid.as_deref(), Some("u-1"));
        assert_eq!(unreadable.api_version, "gateway.networking.k8s.io/v1");
        assert!(
            unreadable.error.contains("ExternalAuth"),
            "{}",
            unreadable.error
        );
    }

    #[test]
    fn an_integer_out_of_range_in_a_tenant_is_kept_as_an_error() {
        let tenant: Lenient<Tenant> = serde_json::from_value(serde_json::json!({
            "apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant",
            "metadata": {"name": "big"},
            "spec": {"namespace": "team-b", "hostnames": ["b.test"], "replicas": 4_294_967_296_u64}
        }))
        .expect("never fails");
        let unreadable = tenant.into_result(Kind::Tenant).expect_err("not decodable");
        assert_eq!(
            (unreadable.name.as_str(), unreadable.namespace),
            ("big", None)
        );
    }

    #[test]
    fn a_list_with_one_bad_item_decodes_the_others() {
        let good = serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "good", "namespace": "team-a"},
            "spec": {"parentRefs": [{"name": "web"}]}
        });
        let list: Vec<Lenient<HttpRoute>> =
            serde_json::from_value(serde_json::json!([good, external_auth_route("bad")]))
                .expect("the list decodes");
        assert!(
            matches!(&list[0], Lenient::Decoded(r) if r.metadata.name.as_deref() == Some("good"))
        );
        assert!(matches!(&list[1], Lenient::Undecodable(_)));
        let newest = WatchedVersion::default();
        assert_eq!(Lenient::<HttpRoute>::plural(&newest), "httproutes");
        assert_eq!(
            Lenient::<HttpRoute>::api_version(&newest),
            "gateway.networking.k8s.io/v1"
        );
        assert_eq!(
            Lenient::<HttpRoute>::api_version(&WatchedVersion(Some("v1beta1"))),
            "gateway.networking.k8s.io/v1beta1"
        );
    }
}
