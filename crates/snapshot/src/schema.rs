//! The snapshot schema: what the control plane compiles and the data plane serves.
//!
//! A snapshot is immutable, complete (never a patch), carries a monotonically increasing `version`
//! per stream and a `hash` of its content, and is swapped atomically by its consumer. The operator's
//! translator produces them; the snapshot transport carries them (JSON on the wire); the edge and the
//! tenant router validate and serve them. Everything here is already resolved: hostnames are
//! normalised patterns, routes are sorted by Gateway API precedence, backends are endpoint addresses.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

/// Computes the content hash of a snapshot (hex SHA-256 of its JSON with `hash` left empty).
pub trait Sealed: Serialize {
    /// The `hash` field.
    fn hash_mut(&mut self) -> &mut String;

    /// Fills `hash` from the content; call after building or changing a snapshot.
    fn seal(&mut self) {
        self.hash_mut().clear();
        let json = serde_json::to_vec(&*self).unwrap_or_default();
        let digest = Sha256::digest(&json);
        *self.hash_mut() = hex::encode(&digest[..12]);
    }
}

/// Deserialises a list without spare capacity.
///
/// While reading a JSON array, serde grows the vector as elements arrive (a one-element list gets
/// room for four), and a decoded [`TenantSnapshot`] is kept for as long as it is served: for thousands
/// of routes the unused room would outweigh the routes themselves.
fn compact<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    let mut list = Vec::<T>::deserialize(deserializer)?;
    list.shrink_to_fit();
    Ok(list)
}

/// Which edge listener a tenant router port receives traffic from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgePort {
    /// TLS traffic (Gateway listeners on port 443 or with protocol HTTPS/TLS), routed by SNI.
    Https,
    /// Plain HTTP traffic (Gateway listeners on port 80, protocol HTTP), routed by `Host`.
    Http,
}

/// The edge tier's configuration: which tenant owns which hostname, and where its routers are.
/// It changes when tenants are onboarded or their routers move, never when a tenant edits a route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeSnapshot {
    /// Version, increasing with every published change.
    pub version: u64,
    /// Content hash (see [`Sealed`]).
    #[serde(default)]
    pub hash: String,
    /// Hostname pattern → tenant. Patterns are unique (conflicts were resolved by the translator).
    pub routes: Vec<EdgeRoute>,
    /// Tenant name → the addresses of its routers.
    pub tenants: BTreeMap<String, RouterEndpoints>,
}

impl Sealed for EdgeSnapshot {
    fn hash_mut(&mut self) -> &mut String {
        &mut self.hash
    }
}

/// One hostname pattern owned by one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EdgeRoute {
    /// A normalised pattern: `name`, `*.suffix` or `*`.
    pub hostname: String,
    /// The owning tenant (the `Tenant` object's name).
    pub tenant: String,
}

/// Where a tenant's routers listen, per edge port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterEndpoints {
    /// Router addresses that take TLS traffic (with a PROXY v2 header).
    #[serde(default)]
    pub https: Vec<SocketAddr>,
    /// Router addresses that take plain HTTP traffic (with a PROXY v2 header).
    #[serde(default)]
    pub http: Vec<SocketAddr>,
}

impl RouterEndpoints {
    /// The endpoints for one edge port.
    pub fn for_port(&self, port: EdgePort) -> &[SocketAddr] {
        match port {
            EdgePort::Https => &self.https,
            EdgePort::Http => &self.http,
        }
    }
}

/// One tenant's complete router configuration.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantSnapshot {
    /// The tenant's name.
    pub tenant: String,
    /// The tenant's namespace.
    pub namespace: String,
    /// Version, increasing with every published change of this tenant.
    pub version: u64,
    /// Content hash (see [`Sealed`]).
    #[serde(default)]
    pub hash: String,
    /// Hostname patterns the tenant owns; a request for any other name is refused (421).
    #[serde(deserialize_with = "compact")]
    pub hostnames: Vec<String>,
    /// More specific patterns, inside `hostnames`, that other tenants own: names only, never their
    /// certificates or routes. The edge sends these names to their owners, so a request for one
    /// that reaches this tenant came over a reused connection (HTTP/2 coalescing, HTTP/1.1
    /// keep-alive) and is refused (421). Empty, and then left out on the wire, for most tenants.
    #[serde(
        default,
        deserialize_with = "compact",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub foreign_hostnames: Vec<String>,
    /// What arrives on the edge's TLS listener.
    pub https: TlsPort,
    /// What arrives on the edge's plain HTTP listener.
    pub http: HttpPort,
    /// Certificate id (`namespace/secret`) → PEM chain and key.
    #[serde(default)]
    pub certificates: BTreeMap<String, Certificate>,
    /// Backend id (`namespace/service:port`) → endpoints.
    #[serde(default)]
    pub backends: BTreeMap<String, Backend>,
    /// Listener id ([`ListenerRef::id`]) of an HTTPS listener of `https.terminate` → how the
    /// certificates its clients present are validated (the Gateway's `spec.tls.frontend`, per port
    /// or default). A listener not listed asks for no client certificate. Empty, and then left out
    /// on the wire, for most tenants.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub client_validation: BTreeMap<String, ClientValidation>,
}

impl Sealed for TenantSnapshot {
    fn hash_mut(&mut self) -> &mut String {
        &mut self.hash
    }
}

impl TenantSnapshot {
    /// Releases the spare capacity of every list, as a snapshot decoded from the wire has none.
    ///
    /// A snapshot built in process (grown by `push`) keeps room it will never use for as long as it
    /// is published; with thousands of routes that room outweighs the routes. Call once it is built.
    pub fn shrink_to_fit(&mut self) {
        self.hostnames.shrink_to_fit();
        self.foreign_hostnames.shrink_to_fit();
        let https = &mut self.https;
        https.terminate.shrink_to_fit();
        https.passthrough.shrink_to_fit();
        for p in &mut https.passthrough {
            shrink_backends(&mut p.backends);
        }
        https.terminate_tcp.shrink_to_fit();
        for t in &mut https.terminate_tcp {
            shrink_backends(&mut t.backends);
        }
        for hosts in [&mut https.virtual_hosts, &mut self.http.virtual_hosts] {
            hosts.shrink_to_fit();
            for vh in hosts.iter_mut() {
                vh.routes.shrink_to_fit();
                for r in &mut vh.routes {
                    r.matches.headers.shrink_to_fit();
                    r.matches.query_params.shrink_to_fit();
                    r.filters.shrink_to_fit();
                    shrink_backends(&mut r.backends);
                }
            }
        }
        for b in self.backends.values_mut() {
            b.endpoints.shrink_to_fit();
        }
    }
}

fn shrink_backends(list: &mut Vec<WeightedBackend>) {
    list.shrink_to_fit();
    for wb in list {
        wb.filters.shrink_to_fit();
    }
}

impl fmt::Debug for TenantSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantSnapshot")
            .field("tenant", &self.tenant)
            .field("version", &self.version)
            .field("hash", &self.hash)
            .field("hostnames", &self.hostnames)
            .field("foreign_hostnames", &self.foreign_hostnames)
            .field("https", &self.https)
            .field("http", &self.http)
            .field(
                "certificates",
                &self.certificates.keys().collect::<Vec<_>>(),
            )
            .field("backends", &self.backends)
            .finish()
    }
}

/// The TLS side of a tenant router: the SNI decides between termination and passthrough.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsPort {
    /// SNI pattern → certificate, for HTTPS (and TLS terminate) listeners.
    #[serde(default, deserialize_with = "compact")]
    pub terminate: Vec<TlsTerminate>,
    /// SNI pattern → backends, for TLS passthrough listeners (TLSRoute). Never in `terminate` too.
    #[serde(default, deserialize_with = "compact")]
    pub passthrough: Vec<PassthroughRoute>,
    /// Virtual hosts for HTTP requests inside terminated TLS, routed by `Host` / `:authority`.
    #[serde(default, deserialize_with = "compact")]
    pub virtual_hosts: Vec<VirtualHost>,
    /// SNI pattern → certificate and backends, for TLS listeners with mode `Terminate` and a
    /// TCPRoute (or TLSRoute) attached: the router terminates TLS and copies the plaintext to a
    /// backend. Never in `terminate` or `passthrough` too.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "compact"
    )]
    pub terminate_tcp: Vec<TlsTerminateTcp>,
}

/// A certificate served for an SNI pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsTerminate {
    /// Normalised SNI pattern (`*` = a client without SNI or any name).
    pub hostname: String,
    /// The certificate id in [`TenantSnapshot::certificates`].
    pub certificate: String,
    /// The Gateway listener this comes from.
    pub listener: ListenerRef,
}

/// TLS terminated by the router, then plain TCP to a backend (a TLS `Terminate` listener with a
/// TCPRoute or TLSRoute).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsTerminateTcp {
    /// Normalised SNI pattern (`*` = a client without SNI or any name).
    pub hostname: String,
    /// The certificate id in [`TenantSnapshot::certificates`].
    pub certificate: String,
    /// The Gateway listener this comes from.
    pub listener: ListenerRef,
    /// The route object this comes from.
    pub route: RouteRef,
    /// Weighted backends (protocol [`BackendProtocol::Tcp`]).
    #[serde(deserialize_with = "compact")]
    pub backends: Vec<WeightedBackend>,
}

/// A TLSRoute: the raw TLS stream goes to a backend untouched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassthroughRoute {
    /// Normalised SNI pattern.
    pub hostname: String,
    /// The route object this comes from.
    pub route: RouteRef,
    /// Weighted backends.
    #[serde(deserialize_with = "compact")]
    pub backends: Vec<WeightedBackend>,
}

/// The plain HTTP side of a tenant router.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpPort {
    /// Virtual hosts routed by `Host`.
    #[serde(default, deserialize_with = "compact")]
    pub virtual_hosts: Vec<VirtualHost>,
}

/// A Gateway listener, as a route or a certificate refers to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ListenerRef {
    /// Gateway namespace.
    pub namespace: String,
    /// Gateway name.
    pub gateway: String,
    /// Listener name (`sectionName`).
    pub listener: String,
    /// The listener's port as written in the Gateway (80, 443, ...), used for redirects.
    pub port: u16,
}

impl ListenerRef {
    /// The listener's identity: `namespace/gateway/listener`.
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.namespace, self.gateway, self.listener)
    }
}

/// Frontend TLS validation of one HTTPS listener: the trust anchors client certificates are
/// verified against, and what happens to a client without a valid one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientValidation {
    /// PEM bundle of CA certificates (the `ca.crt` of the referenced ConfigMaps, concatenated).
    pub ca_pem: String,
    /// What a client without a valid certificate gets.
    pub mode: ClientValidationMode,
}

/// The Gateway API's `FrontendValidationModeType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ClientValidationMode {
    /// The handshake fails unless the client presents a certificate that verifies.
    #[default]
    AllowValidOnly,
    /// A client without a certificate, or with one that does not verify, is served too, but never
    /// as the identity it claims: only a verified certificate's identity reaches the backend.
    AllowInsecureFallback,
}

/// A route object and rule, for logs, metrics and status.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RouteRef {
    /// `HTTPRoute`, `GRPCRoute`, `TLSRoute` or `TCPRoute`.
    pub kind: String,
    /// Route namespace.
    pub namespace: String,
    /// Route name.
    pub name: String,
    /// Index of the rule inside the route.
    #[serde(default)]
    pub rule: usize,
}

impl RouteRef {
    /// `kind namespace/name rule N`, as logs, metrics and refusals name a route.
    pub fn label(&self) -> String {
        format!(
            "{} {}/{} rule {}",
            self.kind, self.namespace, self.name, self.rule
        )
    }
}

/// All routes for one hostname pattern on one port, sorted by Gateway API precedence (first match wins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualHost {
    /// Normalised hostname pattern (`*` = any host).
    pub hostname: String,
    /// The port of the Gateway listener (for redirects without an explicit port).
    pub listener_port: u16,
    /// Route entries, most specific first; a request takes the first that matches.
    #[serde(deserialize_with = "compact")]
    pub routes: Vec<RouteEntry>,
}

/// One (rule, match) pair of an HTTPRoute or GRPCRoute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteEntry {
    /// Which route and rule.
    pub route: RouteRef,
    /// What a request must look like.
    #[serde(rename = "match")]
    pub matches: HttpMatch,
    /// Filters applied in order before forwarding.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "compact"
    )]
    pub filters: Vec<HttpFilter>,
    /// Weighted backends; empty with no redirect filter means 500 (all backends invalid).
    #[serde(default, deserialize_with = "compact")]
    pub backends: Vec<WeightedBackend>,
    /// Request timeouts.
    #[serde(default, skip_serializing_if = "Timeouts::is_empty")]
    pub timeouts: Timeouts,
}

/// Gateway API request match. Every present condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpMatch {
    /// Path condition; `None` = any path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// Method condition (upper case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Header conditions (names lower case).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "compact"
    )]
    pub headers: Vec<ValueMatch>,
    /// Query parameter conditions (names exact).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "compact"
    )]
    pub query_params: Vec<ValueMatch>,
}

/// A path condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value")]
pub enum PathMatch {
    /// The path equals the value.
    Exact(String),
    /// The path starts with the value, element-wise (`/foo` matches `/foo` and `/foo/bar`, not `/foobar`).
    PathPrefix(String),
    /// The path matches the (anchored) regular expression.
    RegularExpression(String),
}

/// A header or query parameter condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueMatch {
    /// `Exact` or `RegularExpression`.
    #[serde(rename = "type")]
    pub kind: MatchType,
    /// Header name (lower case) or query parameter name.
    pub name: String,
    /// Expected value or regular expression.
    pub value: String,
}

/// How a value is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchType {
    /// Byte-for-byte equality.
    Exact,
    /// Anchored regular expression.
    RegularExpression,
}

/// A Gateway API HTTPRoute filter, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum HttpFilter {
    /// Edit request headers.
    RequestHeaderModifier(HeaderModifier),
    /// Edit response headers.
    ResponseHeaderModifier(HeaderModifier),
    /// Answer with a redirect instead of forwarding.
    RequestRedirect(Redirect),
    /// Rewrite host and/or path before forwarding.
    #[serde(rename = "URLRewrite")]
    UrlRewrite(UrlRewrite),
    /// Send a copy of the request to another backend, ignoring its answer.
    RequestMirror(Mirror),
    /// Answer CORS preflights and add CORS headers to responses.
    #[serde(rename = "CORS")]
    Cors(Cors),
}

/// A Gateway API `HTTPCORSFilter` (rules: [`crate::cors`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cors {
    /// Allowed origins: `*`, or `scheme://host[:port]` whose host may start with `*.`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<String>,
    /// Whether `Access-Control-Allow-Credentials: true` is sent (and `*` values are never sent).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_credentials: bool,
    /// Methods a preflight may ask for (`*` = any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    /// Request headers a preflight may ask for (`*` = any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    /// Response headers exposed to scripts (`*` = all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// Seconds a preflight's answer may be cached (`Access-Control-Max-Age`).
    #[serde(default = "default_cors_max_age")]
    pub max_age: u32,
}

impl Default for Cors {
    fn default() -> Self {
        Self {
            allow_origins: Vec::new(),
            allow_credentials: false,
            allow_methods: Vec::new(),
            allow_headers: Vec::new(),
            expose_headers: Vec::new(),
            max_age: crate::cors::DEFAULT_CORS_MAX_AGE,
        }
    }
}

fn default_cors_max_age() -> u32 {
    crate::cors::DEFAULT_CORS_MAX_AGE
}

/// Header edits: `set` replaces, `add` appends, `remove` deletes (names lower case).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderModifier {
    /// Headers to set (replacing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(String, String)>,
    /// Headers to add (appending).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<(String, String)>,
    /// Headers to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// A redirect; absent fields keep the request's value (the port defaults per the Gateway API rules).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// New host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// New port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// New path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
    /// 301 or 302 (default 302).
    pub status_code: u16,
}

/// A rewrite before forwarding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlRewrite {
    /// New `Host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// New path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
}

/// A path change for redirects and rewrites.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value")]
pub enum PathModifier {
    /// Replace the whole path.
    ReplaceFullPath(String),
    /// Replace the part matched by the rule's PathPrefix match.
    ReplacePrefixMatch(String),
}

/// A mirror target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mirror {
    /// Backend id in [`TenantSnapshot::backends`].
    pub backend: String,
    /// Share of requests mirrored, in percent (default 100).
    #[serde(default = "hundred")]
    pub percent: u32,
}

fn hundred() -> u32 {
    100
}

/// A backend with its weight. `backend: None` stands for an invalid reference: the share of requests
/// it would get is answered with 500, as the Gateway API requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightedBackend {
    /// Backend id in [`TenantSnapshot::backends`], or `None` when the reference is invalid.
    pub backend: Option<String>,
    /// Relative weight (0 = never chosen).
    pub weight: u32,
    /// Filters that apply only when this backend is chosen.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "compact"
    )]
    pub filters: Vec<HttpFilter>,
}

/// Request timeouts from the rule's `timeouts`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// Whole request, client to last response byte (milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_ms: Option<u64>,
    /// One attempt to the backend (milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request_ms: Option<u64>,
}

impl Timeouts {
    /// Whether no timeout is set.
    pub fn is_empty(&self) -> bool {
        self.request_ms.is_none() && self.backend_request_ms.is_none()
    }
}

/// A Service port resolved to endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    /// How to speak to it.
    #[serde(default)]
    pub protocol: BackendProtocol,
    /// Ready endpoint addresses (from EndpointSlices).
    #[serde(deserialize_with = "compact")]
    pub endpoints: Vec<SocketAddr>,
    /// TLS from the router to the endpoints (a `BackendTLSPolicy`); `None`: plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<BackendTls>,
}

/// TLS origination to a backend, from a `BackendTLSPolicy` (and the Gateway's backend client
/// certificate). A backend with TLS never receives plaintext, and the router offers ALPN `h2` for
/// [`BackendProtocol::H2c`] backends, `http/1.1` for the others.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BackendTls {
    /// SNI sent to the backend (`validation.hostname`); also the name its certificate must hold
    /// when `subject_alt_names` is empty.
    pub hostname: String,
    /// What the backend's certificate chain is verified against.
    pub trust: BackendTrust,
    /// Subject alternative names of which the backend's certificate must hold at least one;
    /// empty: `hostname` is checked instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<SubjectAltName>,
    /// Key in [`TenantSnapshot::certificates`] of the client certificate presented to the backend
    /// (the Gateway's `spec.tls.backend.clientCertificateRef`); `None`: none is presented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
}

/// Trust anchors of a [`BackendTls`] (internally tagged by `kind`, so that YAML renders it
/// without tags).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BackendTrust {
    /// A PEM bundle of CA certificates (the `ca.crt` of the referenced ConfigMaps, concatenated).
    CaPem {
        /// The bundle.
        ca_pem: String,
    },
    /// The router's system trust store (`wellKnownCACertificates: System`).
    System,
}

/// A subject alternative name the backend's certificate must hold (`{type, value}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum SubjectAltName {
    /// A DNS name (exact, compared case-insensitively; a `*.` wildcard in the certificate matches
    /// one label).
    Hostname(String),
    /// A URI, compared exactly (e.g. a SPIFFE ID).
    Uri(String),
}

/// Upstream protocol of a backend, from the Service port's `appProtocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendProtocol {
    /// HTTP/1.1 (default).
    #[default]
    Http1,
    /// HTTP/2 over cleartext (`kubernetes.io/h2c`, `grpc`).
    H2c,
    /// Raw TCP (TLSRoute / TCPRoute backends).
    Tcp,
}

/// A certificate chain and its private key, PEM.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// PEM certificate chain, leaf first.
    pub cert_pem: String,
    /// PEM private key.
    pub key_pem: String,
}

impl Certificate {
    /// SHA-256 over the chain and the key, each prefixed by its length (so no two pairs collide by
    /// moving bytes from one to the other): what identifies a pair for caches of parsed keys.
    pub fn content_digest(&self) -> [u8; 32] {
        pem_pair_digest(&self.cert_pem, &self.key_pem)
    }
}

/// [`Certificate::content_digest`] of a chain and a key not (yet) held in a [`Certificate`].
pub fn pem_pair_digest(cert_pem: &str, key_pem: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [cert_pem, key_pem] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("cert_pem_len", &self.cert_pem.len())
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_digest_tells_chain_from_key() {
        let pair = |c: &str, k: &str| Certificate {
            cert_pem: c.into(),
            key_pem: k.into(),
        };
        assert_eq!(
            pair("C", "K").content_digest(),
            pem_pair_digest("C", "K"),
            "one digest for both forms"
        );
        assert_ne!(
            pair("CK", "").content_digest(),
            pair("C", "K").content_digest()
        );
        assert_ne!(
            pair("C", "K").content_digest(),
            pair("C", "K2").content_digest()
        );
    }

    #[test]
    fn seal_is_stable_and_content_sensitive() {
        let mut a = EdgeSnapshot {
            version: 1,
            routes: vec![EdgeRoute {
                hostname: "a.example".into(),
                tenant: "acme".into(),
            }],
            ..Default::default()
        };
        a.seal();
        let h1 = a.hash.clone();
        a.seal();
        assert_eq!(a.hash, h1, "sealing twice gives the same hash");
        a.routes[0].tenant = "globex".into();
        a.seal();
        assert_ne!(a.hash, h1, "a content change changes the hash");
    }

    #[test]
    fn certificate_debug_never_prints_the_key() {
        let c = Certificate {
            cert_pem: "CERT".into(),
            key_pem: "SECRET-KEY".into(),
        };
        assert!(!format!("{c:?}").contains("SECRET"));
    }

    fn vhost_with_one_route() -> VirtualHost {
        VirtualHost {
            hostname: "a.acme.test".into(),
            listener_port: 443,
            routes: vec![RouteEntry {
                route: RouteRef {
                    kind: "HTTPRoute".into(),
                    namespace: "acme".into(),
                    name: "web".into(),
                    rule: 0,
                },
                matches: HttpMatch::default(),
                filters: vec![],
                backends: vec![WeightedBackend {
                    backend: Some("acme/web:80".into()),
                    weight: 1,
                    filters: vec![],
                }],
                timeouts: Timeouts::default(),
            }],
        }
    }

    #[test]
    fn decoded_lists_keep_no_spare_capacity() {
        let mut s = TenantSnapshot::default();
        s.https.virtual_hosts.push(vhost_with_one_route());
        let back: TenantSnapshot =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        let vh = &back.https.virtual_hosts;
        assert_eq!(vh.capacity(), 1);
        assert_eq!(vh[0].routes.capacity(), 1);
        assert_eq!(vh[0].routes[0].backends.capacity(), 1);
    }

    #[test]
    fn shrink_to_fit_releases_spare_capacity_only() {
        let mut s = TenantSnapshot::default();
        let mut vh = vhost_with_one_route();
        vh.routes.reserve(8);
        vh.routes[0].backends.reserve(8);
        s.http.virtual_hosts.reserve(8);
        s.http.virtual_hosts.push(vh);
        let before = s.clone();
        s.shrink_to_fit();
        assert_eq!(s, before);
        let vh = &s.http.virtual_hosts;
        assert_eq!(vh.capacity(), 1);
        assert_eq!(vh[0].routes.capacity(), 1);
        assert_eq!(vh[0].routes[0].backends.capacity(), 1);
    }

    #[test]
    fn tenant_snapshot_round_trips_through_json() {
        let mut s = TenantSnapshot {
            tenant: "acme".into(),
            namespace: "acme".into(),
            version: 3,
            ..Default::default()
        };
        s.http.virtual_hosts.push(VirtualHost {
            hostname: "*".into(),
            listener_port: 80,
            routes: vec![RouteEntry {
                route: RouteRef {
                    kind: "HTTPRoute".into(),
                    namespace: "acme".into(),
                    name: "web".into(),
                    rule: 0,
                },
                matches: HttpMatch {
                    path: Some(PathMatch::PathPrefix("/".into())),
                    ..Default::default()
                },
                filters: vec![HttpFilter::RequestRedirect(Redirect {
                    scheme: Some("https".into()),
                    status_code: 301,
                    ..Default::default()
                })],
                backends: vec![],
                timeouts: Timeouts::default(),
            }],
        });
        s.seal();
        let json = serde_json::to_string(&s).unwrap();
        let back: TenantSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }
}
