//! One model for the four route kinds. The generated Gateway API types give every kind (and every
//! place a filter can appear) its own Rust type with the same JSON shape; the translator reads them
//! through these small serde structs instead, filled from the route's JSON, so each rule is written
//! once.

use super::world::{name_of, ns_of, RouteKind, RouteObject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Deserialize;
use serde_json::Value;

/// A reference to a parent (a Gateway, usually).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ParentRefModel {
    pub(crate) group: Option<String>,
    pub(crate) kind: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) name: String,
    pub(crate) section_name: Option<String>,
    pub(crate) port: Option<i32>,
}

/// A backend reference (also the target of a mirror filter, which has no weight or filters).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BackendRefModel {
    pub(crate) group: Option<String>,
    pub(crate) kind: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) name: String,
    pub(crate) port: Option<i32>,
    pub(crate) weight: Option<i32>,
    #[serde(default)]
    pub(crate) filters: Vec<FilterModel>,
}

/// An HTTPRoute / GRPCRoute filter.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FilterModel {
    #[serde(rename = "type")]
    pub(crate) type_: String,
    pub(crate) request_header_modifier: Option<HeaderModifierModel>,
    pub(crate) response_header_modifier: Option<HeaderModifierModel>,
    pub(crate) request_redirect: Option<RedirectModel>,
    pub(crate) url_rewrite: Option<RewriteModel>,
    pub(crate) request_mirror: Option<MirrorModel>,
    pub(crate) cors: Option<CorsModel>,
}

/// An `HTTPCORSFilter`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CorsModel {
    #[serde(default)]
    pub(crate) allow_origins: Vec<String>,
    pub(crate) allow_credentials: Option<bool>,
    #[serde(default)]
    pub(crate) allow_methods: Vec<String>,
    #[serde(default)]
    pub(crate) allow_headers: Vec<String>,
    #[serde(default)]
    pub(crate) expose_headers: Vec<String>,
    pub(crate) max_age: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct NameValue {
    pub(crate) name: String,
    pub(crate) value: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct HeaderModifierModel {
    #[serde(default)]
    pub(crate) set: Vec<NameValue>,
    #[serde(default)]
    pub(crate) add: Vec<NameValue>,
    #[serde(default)]
    pub(crate) remove: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RedirectModel {
    pub(crate) scheme: Option<String>,
    pub(crate) hostname: Option<String>,
    pub(crate) path: Option<PathModifierModel>,
    pub(crate) port: Option<i64>,
    pub(crate) status_code: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PathModifierModel {
    #[serde(rename = "type")]
    pub(crate) type_: String,
    pub(crate) replace_full_path: Option<String>,
    pub(crate) replace_prefix_match: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RewriteModel {
    pub(crate) hostname: Option<String>,
    pub(crate) path: Option<PathModifierModel>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MirrorModel {
    pub(crate) backend_ref: BackendRefModel,
    pub(crate) percent: Option<i64>,
    pub(crate) fraction: Option<FractionModel>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct FractionModel {
    pub(crate) numerator: i64,
    pub(crate) denominator: Option<i64>,
}

/// A header or query parameter match.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ValueMatchModel {
    pub(crate) name: String,
    #[serde(rename = "type")]
    pub(crate) type_: Option<String>,
    pub(crate) value: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct PathMatchModel {
    #[serde(rename = "type")]
    pub(crate) type_: Option<String>,
    pub(crate) value: Option<String>,
}

/// An HTTPRoute match.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HttpMatchModel {
    pub(crate) path: Option<PathMatchModel>,
    pub(crate) method: Option<String>,
    #[serde(default)]
    pub(crate) headers: Vec<ValueMatchModel>,
    #[serde(default)]
    pub(crate) query_params: Vec<ValueMatchModel>,
}

/// A GRPCRoute method match.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct GrpcMethodModel {
    #[serde(rename = "type")]
    pub(crate) type_: Option<String>,
    pub(crate) service: Option<String>,
    pub(crate) method: Option<String>,
}

/// A GRPCRoute match.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct GrpcMatchModel {
    pub(crate) method: Option<GrpcMethodModel>,
    #[serde(default)]
    pub(crate) headers: Vec<ValueMatchModel>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TimeoutsModel {
    pub(crate) request: Option<String>,
    pub(crate) backend_request: Option<String>,
}

/// The matches of a rule, by route kind.
#[derive(Debug, Clone)]
pub(crate) enum RuleMatches {
    Http(Vec<HttpMatchModel>),
    Grpc(Vec<GrpcMatchModel>),
    /// TLSRoute and TCPRoute rules have no matches.
    None,
}

/// A rule of any route kind.
#[derive(Debug, Clone)]
pub(crate) struct RuleModel {
    pub(crate) matches: RuleMatches,
    pub(crate) filters: Vec<FilterModel>,
    pub(crate) backend_refs: Vec<BackendRefModel>,
    pub(crate) timeouts: Option<TimeoutsModel>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecModel<R> {
    #[serde(default)]
    hostnames: Vec<String>,
    #[serde(default)]
    parent_refs: Vec<ParentRefModel>,
    #[serde(default = "Vec::new")]
    rules: Vec<R>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HttpRuleModel {
    #[serde(default)]
    matches: Vec<HttpMatchModel>,
    #[serde(default)]
    filters: Vec<FilterModel>,
    #[serde(default)]
    backend_refs: Vec<BackendRefModel>,
    timeouts: Option<TimeoutsModel>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GrpcRuleModel {
    #[serde(default)]
    matches: Vec<GrpcMatchModel>,
    #[serde(default)]
    filters: Vec<FilterModel>,
    #[serde(default)]
    backend_refs: Vec<BackendRefModel>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct L4RuleModel {
    #[serde(default)]
    backend_refs: Vec<BackendRefModel>,
}

/// A route of any kind, as the translator reads it.
#[derive(Debug, Clone)]
pub(crate) struct RouteModel<'a> {
    pub(crate) kind: RouteKind,
    pub(crate) namespace: &'a str,
    pub(crate) name: &'a str,
    pub(crate) generation: Option<i64>,
    pub(crate) created: Option<&'a Time>,
    pub(crate) hostnames: Vec<String>,
    pub(crate) parent_refs: Vec<ParentRefModel>,
    pub(crate) rules: Vec<RuleModel>,
}

impl<'a> RouteModel<'a> {
    /// Reads a route; `Err` carries the reason the JSON did not fit (a bug: the caller skips the
    /// route and logs it at `warn`; no status says so).
    pub(crate) fn read(route: RouteObject<'a>) -> Result<Self, String> {
        let meta = route.meta();
        let json = route.spec_json();
        let (hostnames, parent_refs, rules) = match route.kind() {
            RouteKind::Http => {
                let s: SpecModel<HttpRuleModel> = from_json(json)?;
                let rules = s
                    .rules
                    .into_iter()
                    .map(|r| RuleModel {
                        matches: RuleMatches::Http(r.matches),
                        filters: r.filters,
                        backend_refs: r.backend_refs,
                        timeouts: r.timeouts,
                    })
                    .collect();
                (s.hostnames, s.parent_refs, rules)
            }
            RouteKind::Grpc => {
                let s: SpecModel<GrpcRuleModel> = from_json(json)?;
                let rules = s
                    .rules
                    .into_iter()
                    .map(|r| RuleModel {
                        matches: RuleMatches::Grpc(r.matches),
                        filters: r.filters,
                        backend_refs: r.backend_refs,
                        timeouts: None,
                    })
                    .collect();
                (s.hostnames, s.parent_refs, rules)
            }
            RouteKind::Tls | RouteKind::Tcp => {
                let s: SpecModel<L4RuleModel> = from_json(json)?;
                let rules = s
                    .rules
                    .into_iter()
                    .map(|r| RuleModel {
                        matches: RuleMatches::None,
                        filters: Vec::new(),
                        backend_refs: r.backend_refs,
                        timeouts: None,
                    })
                    .collect();
                (s.hostnames, s.parent_refs, rules)
            }
        };
        Ok(Self {
            kind: route.kind(),
            namespace: ns_of(meta),
            name: name_of(meta),
            generation: meta.generation,
            created: meta.creation_timestamp.as_ref(),
            hostnames,
            parent_refs,
            rules,
        })
    }
}

fn from_json<T: serde::de::DeserializeOwned>(json: Value) -> Result<T, String> {
    serde_json::from_value(json).map_err(|e| e.to_string())
}
