//! Compiling a [`TenantSnapshot`] into the immutable [`CompiledConfig`] a connection serves from.
//!
//! Compilation validates everything up front (PEM, regular expressions, header names, backend
//! references, hostnames) so that serving never fails on configuration: a snapshot either compiles
//! whole or is refused with a [`CompileError`] naming the route and field at fault.

pub(crate) mod filters;
pub(crate) mod matcher;
pub(crate) mod tls;

use crate::balance::{CompiledBackend, EndpointRegistry, Weighted};
use crate::error::CompileError;
use crate::upstream::tls::UpstreamTls;
use bulkhead_hostmatch::{HostPattern, HostTable};
use bulkhead_snapshot::SnapshotError;
use bulkhead_snapshot::{
    ListenerRef, PathMatch, RouteEntry, RouteRef, TenantSnapshot, Timeouts, VirtualHost,
    WeightedBackend,
};
use filters::{compile_filters, CompiledFilter};
use matcher::{CompiledMatch, PathCondition};
use rustls::crypto::CryptoProvider;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
pub(crate) use tls::CertificateCache;

/// Everything one snapshot version means to the data plane; never changed after it is built.
#[derive(Debug)]
pub(crate) struct CompiledConfig {
    /// The snapshot version.
    pub(crate) version: u64,
    /// The snapshot content hash.
    pub(crate) hash: String,
    /// Hostnames the tenant owns and, inside them, the more specific ones other tenants own; a
    /// request whose host's most specific match is not [`Ownership::Tenant`] gets 421.
    pub(crate) owned: HostTable<Ownership>,
    /// SNI → terminate or passthrough.
    pub(crate) sni: HostTable<SniTarget>,
    /// TLS server configuration, when HTTPS is terminated.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// TLS server configuration (no ALPN) for TLS terminated in front of a TCP backend.
    pub(crate) tcp_tls: Option<Arc<rustls::ServerConfig>>,
    /// Virtual hosts inside terminated TLS.
    pub(crate) https_vhosts: HostTable<Arc<CompiledVhost>>,
    /// Virtual hosts on the plain HTTP listener.
    pub(crate) http_vhosts: HostTable<Arc<CompiledVhost>>,
}

/// Who owns a hostname pattern of [`CompiledConfig::owned`] (the most specific match decides, as
/// at the edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ownership {
    /// This router's tenant.
    Tenant,
    /// Another tenant holds this more specific grant (`TenantSnapshot::foreign_hostnames`): the
    /// edge sends it there, so a request for it here came over a reused connection.
    OtherTenant,
}

/// What an SNI leads to.
#[derive(Debug, Clone)]
pub(crate) enum SniTarget {
    /// Terminate TLS (the certificate is [`CompiledConfig::tls`]'s, chosen by the same SNI).
    Terminate {
        /// The Gateway listener serving this pattern ([`listener_id`]), compared per request to
        /// detect misdirected requests (GEP-3567).
        listener: Arc<str>,
        /// The listener's client certificate validation, whose server configuration replaces
        /// [`CompiledConfig::tls`] for this pattern.
        client_auth: Option<Arc<tls::ClientAuth>>,
    },
    /// Forward the raw TLS stream.
    Passthrough(Arc<CompiledPassthrough>),
    /// Terminate TLS (with [`CompiledConfig::tcp_tls`]) and forward the plaintext.
    TerminateTcp(Arc<CompiledPassthrough>),
}

/// A TLSRoute or TCPRoute: where a raw (passthrough) or decrypted (terminate) stream goes.
#[derive(Debug)]
pub(crate) struct CompiledPassthrough {
    /// `kind namespace/name rule N`, for logs and metrics.
    pub(crate) label: Arc<str>,
    /// Weighted backends (`None` = invalid reference: the connection is closed).
    pub(crate) backends: Weighted<Option<Arc<CompiledBackend>>>,
}

/// One virtual host.
#[derive(Debug)]
pub(crate) struct CompiledVhost {
    /// The Gateway listener's port (for redirects).
    pub(crate) listener_port: u16,
    /// Routes, first match wins (boxed: no spare capacity kept per host).
    pub(crate) routes: Box<[CompiledRoute]>,
}

/// One route entry.
#[derive(Debug)]
pub(crate) struct CompiledRoute {
    /// `kind namespace/name rule N`, for logs and metrics.
    pub(crate) label: Arc<str>,
    pub(crate) matcher: CompiledMatch,
    pub(crate) filters: Box<[CompiledFilter]>,
    pub(crate) backends: Weighted<CompiledWeightedBackend>,
    /// Whole-request deadline.
    pub(crate) request_timeout: Option<Duration>,
    /// Per-attempt backend deadline.
    pub(crate) backend_timeout: Option<Duration>,
    /// The route's request metrics, resolved at its first request (routes never requested cost
    /// no more than the empty cell).
    pub(crate) series: std::sync::OnceLock<Arc<crate::metrics::RouteSeries>>,
}

impl CompiledRoute {
    /// The matched path prefix (no trailing slash), when the match is a PathPrefix.
    pub(crate) fn matched_prefix(&self) -> Option<&str> {
        match &self.matcher.path {
            Some(PathCondition::Prefix(p)) => Some(p),
            _ => None,
        }
    }
}

/// A weighted backend of a rule.
#[derive(Debug)]
pub(crate) struct CompiledWeightedBackend {
    /// `None` when the reference is invalid: requests that pick it get 500.
    pub(crate) backend: Option<Arc<CompiledBackend>>,
    /// Filters applied only when this backend is picked.
    pub(crate) filters: Box<[CompiledFilter]>,
}

/// A certificate id (shared by every hostname that names it) and the parsed certificate.
type ParsedCertificate = (Arc<str>, Arc<rustls::sign::CertifiedKey>);

/// The certificate `id`, parsed once however many hostnames and listeners use it; its id is
/// allocated once too.
fn cached_key(
    parsed: &mut BTreeMap<String, ParsedCertificate>,
    snapshot: &TenantSnapshot,
    provider: &Arc<CryptoProvider>,
    certificates: &CertificateCache,
    id: &str,
    field: &str,
) -> Result<ParsedCertificate, CompileError> {
    if let Some((id, k)) = parsed.get(id) {
        return Ok((Arc::clone(id), Arc::clone(k)));
    }
    let pem = snapshot.certificates.get(id).ok_or_else(|| {
        CompileError::from(SnapshotError::DanglingCertificate {
            field: field.to_owned(),
            id: id.to_owned(),
        })
    })?;
    let k = certificates.get(id, pem, provider)?;
    let shared: Arc<str> = Arc::from(id);
    parsed.insert(id.to_owned(), (Arc::clone(&shared), Arc::clone(&k)));
    Ok((shared, k))
}

/// The identity of a Gateway listener: `namespace/gateway/listener`.
pub(crate) fn listener_id(l: &ListenerRef) -> String {
    l.id()
}

/// A label naming a route rule: `HTTPRoute acme/web rule 0`.
pub(crate) fn route_label(r: &RouteRef) -> String {
    r.label()
}

/// Compiles a snapshot for `tenant`, taking endpoint states from `registry` and parsed
/// certificates from `certificates`.
pub(crate) fn compile(
    snapshot: &TenantSnapshot,
    tenant: &str,
    provider: &Arc<CryptoProvider>,
    registry: &EndpointRegistry,
    certificates: &CertificateCache,
    tls_resumption: bool,
) -> Result<CompiledConfig, CompileError> {
    if snapshot.tenant != tenant {
        return Err(CompileError::WrongTenant {
            expected: tenant.to_owned(),
            found: snapshot.tenant.clone(),
        });
    }
    snapshot.validate()?;
    let owned = ownership(snapshot)?;

    let backends: BTreeMap<String, Arc<CompiledBackend>> = snapshot
        .backends
        .iter()
        .map(|(key, b)| {
            let id: Arc<str> = Arc::from(key.as_str());
            let endpoints = b.endpoints.iter().map(|a| registry.get(&id, *a)).collect();
            (
                key.clone(),
                Arc::new(
                    CompiledBackend::new(
                        Arc::clone(&id),
                        b.protocol,
                        endpoints,
                        registry.load(&id),
                    )
                    .with_tls(b.tls.as_ref().map(|tls| {
                        Arc::new(UpstreamTls::compile(
                            key,
                            tls,
                            b.protocol,
                            &snapshot.certificates,
                            certificates,
                            provider,
                        ))
                    })),
                ),
            )
        })
        .collect();

    let mut sni = HostTable::new();
    let mut certs = HostTable::new();
    let mut parsed = BTreeMap::new();
    let mut listeners: BTreeMap<String, Arc<str>> = BTreeMap::new();
    let mut key_of = |id: &str, field: &str| {
        cached_key(&mut parsed, snapshot, provider, certificates, id, field)
    };
    let mut terminating = Vec::new();
    for (i, t) in snapshot.https.terminate.iter().enumerate() {
        let field = format!("https.terminate[{i}]");
        let p = pattern(&t.hostname, &field)?;
        let (_, key) = key_of(&t.certificate, &field)?;
        if certs.insert(p.clone(), key).is_some() {
            return Err(duplicate(&field, &t.hostname));
        }
        let listener = listeners
            .entry(listener_id(&t.listener))
            .or_insert_with_key(|id| Arc::from(id.as_str()));
        terminating.push((p, Arc::clone(listener)));
    }
    let resolver = Arc::new(tls::SniResolver::new(certs));
    let client_auth = client_auths(snapshot, &resolver, provider, tls_resumption)?;
    for (p, listener) in terminating {
        let client_auth = client_auth.get(&*listener).cloned();
        sni.insert(
            p,
            SniTarget::Terminate {
                listener,
                client_auth,
            },
        );
    }
    for (i, pt) in snapshot.https.passthrough.iter().enumerate() {
        let field = format!("https.passthrough[{i}]");
        let p = pattern(&pt.hostname, &field)?;
        let target = l4_target(&pt.route, &pt.backends, &backends)?;
        if sni
            .insert(p, SniTarget::Passthrough(Arc::new(target)))
            .is_some()
        {
            return Err(duplicate(&field, &pt.hostname));
        }
    }
    let mut tcp_certs = HostTable::new();
    for (i, t) in snapshot.https.terminate_tcp.iter().enumerate() {
        let field = format!("https.terminate_tcp[{i}]");
        let p = pattern(&t.hostname, &field)?;
        let (_, key) = key_of(&t.certificate, &field)?;
        let target = l4_target(&t.route, &t.backends, &backends)?;
        if sni
            .insert(p.clone(), SniTarget::TerminateTcp(Arc::new(target)))
            .is_some()
        {
            return Err(duplicate(&field, &t.hostname));
        }
        tcp_certs.insert(p, key);
    }
    let server = |resolver: Arc<tls::SniResolver>, alpn: &[&[u8]]| {
        if resolver.is_empty() {
            Ok(None)
        } else {
            tls::server_config(resolver, Arc::clone(provider), alpn, tls_resumption, None).map(Some)
        }
    };
    let tls = server(resolver, &tls::ALPN_PROTOCOLS)?;
    let tcp_tls = server(Arc::new(tls::SniResolver::new(tcp_certs)), &[])?;

    Ok(CompiledConfig {
        version: snapshot.version,
        hash: snapshot.hash.clone(),
        owned,
        sni,
        tls,
        tcp_tls,
        https_vhosts: vhosts(&snapshot.https.virtual_hosts, "https", &backends)?,
        http_vhosts: vhosts(&snapshot.http.virtual_hosts, "http", &backends)?,
    })
}

/// The client certificate validation of each listener that has one, by listener id.
fn client_auths(
    snapshot: &TenantSnapshot,
    resolver: &Arc<tls::SniResolver>,
    provider: &Arc<CryptoProvider>,
    tls_resumption: bool,
) -> Result<BTreeMap<String, Arc<tls::ClientAuth>>, CompileError> {
    snapshot
        .client_validation
        .iter()
        .map(|(listener, v)| {
            let auth =
                tls::ClientAuth::new(listener, v, Arc::clone(resolver), provider, tls_resumption)?;
            Ok((listener.clone(), Arc::new(auth)))
        })
        .collect()
}

/// The tenant's own patterns and the more specific ones other tenants own inside them; a pattern
/// listed as both is refused.
fn ownership(snapshot: &TenantSnapshot) -> Result<HostTable<Ownership>, CompileError> {
    let mut owned = HostTable::new();
    for (i, h) in snapshot.hostnames.iter().enumerate() {
        owned.insert(pattern(h, &format!("hostnames[{i}]"))?, Ownership::Tenant);
    }
    for (i, h) in snapshot.foreign_hostnames.iter().enumerate() {
        let field = format!("foreign_hostnames[{i}]");
        if owned
            .insert(pattern(h, &field)?, Ownership::OtherTenant)
            .is_some()
        {
            return Err(duplicate(&field, h));
        }
    }
    Ok(owned)
}

/// The weighted backends of a TLSRoute or TCPRoute.
fn l4_target(
    route: &RouteRef,
    list: &[WeightedBackend],
    backends: &BTreeMap<String, Arc<CompiledBackend>>,
) -> Result<CompiledPassthrough, CompileError> {
    let label = route_label(route);
    let entries = list
        .iter()
        .map(|wb| Ok((wb.weight, resolve_backend(wb, &label, backends)?)))
        .collect::<Result<Vec<_>, CompileError>>()?;
    Ok(CompiledPassthrough {
        label: Arc::from(label),
        backends: Weighted::new(entries),
    })
}

fn pattern(raw: &str, field: &str) -> Result<HostPattern, CompileError> {
    HostPattern::parse(raw).map_err(|e| CompileError::Hostname {
        field: field.to_owned(),
        value: raw.to_owned(),
        reason: e.to_string(),
    })
}

fn duplicate(field: &str, value: &str) -> CompileError {
    CompileError::DuplicateHostname {
        field: field.to_owned(),
        value: value.to_owned(),
    }
}

fn resolve_backend(
    wb: &WeightedBackend,
    route: &str,
    backends: &BTreeMap<String, Arc<CompiledBackend>>,
) -> Result<Option<Arc<CompiledBackend>>, CompileError> {
    match &wb.backend {
        None => Ok(None),
        Some(id) => backends.get(id).cloned().map(Some).ok_or_else(|| {
            CompileError::from(SnapshotError::DanglingBackend {
                route: route.to_owned(),
                id: id.clone(),
            })
        }),
    }
}

fn vhosts(
    list: &[VirtualHost],
    port: &str,
    backends: &BTreeMap<String, Arc<CompiledBackend>>,
) -> Result<HostTable<Arc<CompiledVhost>>, CompileError> {
    let mut table = HostTable::new();
    for (i, vh) in list.iter().enumerate() {
        let field = format!("{port}.virtual_hosts[{i}]");
        let p = pattern(&vh.hostname, &field)?;
        let routes = vh
            .routes
            .iter()
            .map(|r| compile_route(r, backends))
            .collect::<Result<Box<[_]>, _>>()?;
        let compiled = CompiledVhost {
            listener_port: vh.listener_port,
            routes,
        };
        if table.insert(p, Arc::new(compiled)).is_some() {
            return Err(duplicate(&field, &vh.hostname));
        }
    }
    Ok(table)
}

fn compile_route(
    r: &RouteEntry,
    backends: &BTreeMap<String, Arc<CompiledBackend>>,
) -> Result<CompiledRoute, CompileError> {
    let label = route_label(&r.route);
    let has_prefix = matches!(r.matches.path, Some(PathMatch::PathPrefix(_)));
    let matcher = CompiledMatch::compile(&r.matches, &label)?;
    let filters =
        compile_filters(&r.filters, &label, "filters", has_prefix, backends)?.into_boxed_slice();
    let weighted = r
        .backends
        .iter()
        .enumerate()
        .map(|(i, wb)| {
            let backend = resolve_backend(wb, &label, backends)?;
            let field = format!("backends[{i}].filters");
            let filters = compile_filters(&wb.filters, &label, &field, has_prefix, backends)?
                .into_boxed_slice();
            Ok((wb.weight, CompiledWeightedBackend { backend, filters }))
        })
        .collect::<Result<Vec<_>, CompileError>>()?;
    let Timeouts {
        request_ms,
        backend_request_ms,
    } = r.timeouts;
    Ok(CompiledRoute {
        label: Arc::from(label),
        matcher,
        filters,
        backends: Weighted::new(weighted),
        request_timeout: request_ms.filter(|ms| *ms > 0).map(Duration::from_millis),
        backend_timeout: backend_request_ms
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis),
        series: std::sync::OnceLock::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_snapshot::{ListenerRef, TlsTerminate};

    fn compile_err(s: &TenantSnapshot) -> String {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certificates = CertificateCache::default();
        match compile(
            s,
            "acme",
            &provider,
            &EndpointRegistry::default(),
            &certificates,
            true,
        ) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    fn snapshot() -> TenantSnapshot {
        TenantSnapshot {
            tenant: "acme".into(),
            namespace: "acme".into(),
            version: 1,
            hostnames: vec!["*.acme.test".into()],
            ..Default::default()
        }
    }

    #[test]
    fn empty_snapshot_compiles() {
        assert_eq!(compile_err(&snapshot()), "");
    }

    #[test]
    fn a_new_snapshot_reuses_the_certificates_the_live_one_parsed() {
        let c = rcgen::generate_simple_self_signed(vec!["a.acme.test".to_owned()]).expect("rcgen");
        let mut s = snapshot();
        s.certificates.insert(
            "acme/a".into(),
            bulkhead_snapshot::Certificate {
                cert_pem: c.cert.pem(),
                key_pem: c.signing_key.serialize_pem(),
            },
        );
        for host in ["a.acme.test", "b.acme.test"] {
            s.https.terminate.push(TlsTerminate {
                hostname: host.into(),
                certificate: "acme/a".into(),
                listener: ListenerRef {
                    namespace: "acme".into(),
                    gateway: "gw".into(),
                    listener: "https".into(),
                    port: 443,
                },
            });
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let registry = EndpointRegistry::default();
        let certificates = CertificateCache::default();
        let live =
            compile(&s, "acme", &provider, &registry, &certificates, true).expect("compiles");
        assert_eq!(certificates.len(), 1);
        s.version += 1;
        let next =
            compile(&s, "acme", &provider, &registry, &certificates, true).expect("compiles");
        assert_eq!(certificates.len(), 1);
        assert_eq!(
            certificates.parsed(),
            1,
            "the same pair is not parsed twice"
        );
        drop((live, next));
        certificates.prune();
        assert_eq!(
            certificates.len(),
            0,
            "nothing kept once no configuration holds it"
        );
    }

    #[test]
    fn a_regex_the_operator_refuses_as_too_long_is_refused_here_too() {
        let long = "a".repeat(crate::MAX_REGEX_LEN + 1);
        let mut s = snapshot();
        s.http.virtual_hosts.push(VirtualHost {
            hostname: "a.acme.test".into(),
            listener_port: 80,
            routes: vec![RouteEntry {
                route: RouteRef {
                    kind: "HTTPRoute".into(),
                    namespace: "acme".into(),
                    name: "web".into(),
                    rule: 0,
                },
                matches: bulkhead_snapshot::HttpMatch {
                    path: Some(PathMatch::RegularExpression(long)),
                    ..Default::default()
                },
                filters: vec![],
                backends: vec![],
                timeouts: Timeouts::default(),
            }],
        });
        let e = compile_err(&s);
        assert!(
            e.contains("HTTPRoute acme/web rule 0") && e.contains("longer than 1024"),
            "{e:?}"
        );
    }

    #[test]
    fn dangling_certificate_names_the_field() {
        let mut s = snapshot();
        s.https.terminate.push(TlsTerminate {
            hostname: "a.acme.test".into(),
            certificate: "acme/missing".into(),
            listener: ListenerRef {
                namespace: "acme".into(),
                gateway: "gw".into(),
                listener: "https".into(),
                port: 443,
            },
        });
        let e = compile_err(&s);
        assert!(
            e.contains("https.terminate[0]") && e.contains("acme/missing"),
            "{e}"
        );
    }

    #[test]
    fn names_other_tenants_own_inside_ours_are_theirs() {
        let mut s = snapshot();
        s.hostnames = vec!["*.acme.test".into(), "*".into()];
        s.foreign_hostnames = vec!["shop.acme.test".into(), "*.blog.acme.test".into()];
        let owned = ownership(&s).expect("compiles");
        let owner = |h: &str| owned.lookup(h).copied();
        assert_eq!(owner("www.acme.test"), Some(Ownership::Tenant));
        assert_eq!(owner("shop.acme.test"), Some(Ownership::OtherTenant));
        assert_eq!(owner("x.blog.acme.test"), Some(Ownership::OtherTenant));
        assert_eq!(owner("elsewhere.test"), Some(Ownership::Tenant));
    }

    #[test]
    fn a_name_both_ours_and_another_tenants_is_refused() {
        let mut s = snapshot();
        s.foreign_hostnames = vec!["*.acme.test".into()];
        assert!(compile_err(&s).contains("foreign_hostnames[0]"));
    }

    #[test]
    fn duplicate_virtual_host_and_bad_hostname_are_refused() {
        let mut s = snapshot();
        let vh = VirtualHost {
            hostname: "a.acme.test".into(),
            listener_port: 80,
            routes: vec![],
        };
        s.http.virtual_hosts = vec![vh.clone(), vh];
        assert!(compile_err(&s).contains("http.virtual_hosts[1]"));
        let mut s = snapshot();
        s.hostnames = vec!["a.*.test".into()];
        assert!(compile_err(&s).contains("hostnames[0]"));
    }

    #[test]
    fn terminate_tcp_dangling_certificate_names_the_field() {
        let mut s = snapshot();
        s.https
            .terminate_tcp
            .push(bulkhead_snapshot::TlsTerminateTcp {
                hostname: "db.acme.test".into(),
                certificate: "acme/missing".into(),
                listener: ListenerRef {
                    namespace: "acme".into(),
                    gateway: "gw".into(),
                    listener: "db".into(),
                    port: 5433,
                },
                route: RouteRef {
                    kind: "TCPRoute".into(),
                    namespace: "acme".into(),
                    name: "db".into(),
                    rule: 0,
                },
                backends: vec![],
            });
        let e = compile_err(&s);
        assert!(
            e.contains("https.terminate_tcp[0]") && e.contains("acme/missing"),
            "{e}"
        );
    }

    #[test]
    fn wrong_tenant_is_refused() {
        let mut s = snapshot();
        s.tenant = "globex".into();
        assert!(compile_err(&s).contains("globex"));
    }
}
