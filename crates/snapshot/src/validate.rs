//! The structural checks of each snapshot kind, applied identically by the side that publishes a
//! snapshot and the side that serves it ([`EdgeSnapshot::validate`], [`TenantSnapshot::validate`]).
//! A snapshot that fails them is refused whole and the previous one keeps serving; the error names
//! the route, listener or reference at fault.

use crate::redirect::is_redirect_status;
use crate::regex::MAX_REGEX_LEN;
use crate::schema::{
    EdgeSnapshot, HttpFilter, HttpMatch, MatchType, PathMatch, RouteEntry, RouteRef,
    TenantSnapshot, WeightedBackend,
};
use bulkhead_hostmatch::HostPattern;
use std::collections::HashSet;

/// Why a snapshot breaks the contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// An edge route names a tenant the snapshot does not list.
    #[error("route {index} ({hostname}): tenant {tenant:?} is not in tenants")]
    UnknownTenant {
        /// Position of the route.
        index: usize,
        /// Its hostname pattern.
        hostname: String,
        /// The missing tenant.
        tenant: String,
    },
    /// A hostname pattern does not parse.
    #[error("{field}: invalid hostname {value:?}: {reason}")]
    Hostname {
        /// Where it appeared.
        field: String,
        /// The pattern.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A hostname pattern appears twice where it must be unique.
    #[error("{field}: hostname {value} is owned by more than one route")]
    DuplicateHostname {
        /// Where it appeared.
        field: String,
        /// The pattern.
        value: String,
    },
    /// A TLS listener names a certificate that is not in the snapshot.
    #[error("{field}: certificate {id:?} is not in the snapshot")]
    DanglingCertificate {
        /// Where it was referenced.
        field: String,
        /// The missing id.
        id: String,
    },
    /// Client validation is set for a listener no `https.terminate` entry names.
    #[error("client_validation: listener {listener:?} terminates no HTTPS hostname")]
    DanglingClientValidation {
        /// The listener id.
        listener: String,
    },
    /// A backend with TLS has no SNI hostname.
    #[error("backends[{id:?}].tls.hostname is empty")]
    BackendTlsHostname {
        /// The backend id.
        id: String,
    },
    /// A route names a backend that is not in the snapshot.
    #[error("{route}: backend {id:?} is not in the snapshot")]
    DanglingBackend {
        /// The route that refers to it.
        route: String,
        /// The missing id.
        id: String,
    },
    /// A redirect carries a status code the Gateway API does not allow.
    #[error("{route}: redirect status code {code} is not a redirect status")]
    RedirectStatus {
        /// The route it belongs to.
        route: String,
        /// The code.
        code: u16,
    },
    /// A CORS filter carries a value [`crate::cors`] refuses.
    #[error("{route}: CORS filter: {reason}")]
    Cors {
        /// The route it belongs to.
        route: String,
        /// What is wrong.
        reason: String,
    },
    /// A regular expression is longer than [`MAX_REGEX_LEN`].
    #[error("{route}: {field}: regular expression longer than {MAX_REGEX_LEN} characters")]
    RegexTooLong {
        /// The route it belongs to.
        route: String,
        /// Which match field.
        field: String,
    },
}

impl EdgeSnapshot {
    /// Every route names a listed tenant, every pattern parses, and no pattern appears twice.
    ///
    /// # Errors
    /// The first [`SnapshotError`] found.
    pub fn validate(&self) -> Result<(), SnapshotError> {
        let mut seen = HashSet::new();
        for (index, route) in self.routes.iter().enumerate() {
            if !self.tenants.contains_key(&route.tenant) {
                return Err(SnapshotError::UnknownTenant {
                    index,
                    hostname: route.hostname.clone(),
                    tenant: route.tenant.clone(),
                });
            }
            let field = format!("route {index}");
            let pattern =
                HostPattern::parse(&route.hostname).map_err(|e| SnapshotError::Hostname {
                    field: field.clone(),
                    value: route.hostname.clone(),
                    reason: e.to_string(),
                })?;
            if !seen.insert(pattern.clone()) {
                return Err(SnapshotError::DuplicateHostname {
                    field,
                    value: pattern.to_string(),
                });
            }
        }
        Ok(())
    }
}

impl TenantSnapshot {
    /// Every certificate and backend a listener, route, filter or mirror names is in the snapshot;
    /// every redirect status is one the Gateway API allows; every CORS filter passes
    /// [`Cors::check`](crate::schema::Cors::check); every regular expression is at most
    /// [`MAX_REGEX_LEN`] long. (Compiling the expressions and parsing the PEM is left to
    /// [`crate::regex`] and [`crate::pem`], which the router applies when it compiles a snapshot.)
    ///
    /// # Errors
    /// The first [`SnapshotError`] found.
    pub fn validate(&self) -> Result<(), SnapshotError> {
        let https = &self.https;
        let terminate = https.terminate.iter().map(|t| &t.certificate);
        self.check_certificates("https.terminate", terminate)?;
        let terminate_tcp = https.terminate_tcp.iter().map(|t| &t.certificate);
        self.check_certificates("https.terminate_tcp", terminate_tcp)?;
        self.check_backend_tls()?;
        for p in &https.passthrough {
            self.check_backends(&p.route, &p.backends)?;
        }
        for t in &https.terminate_tcp {
            self.check_backends(&t.route, &t.backends)?;
        }
        let vhosts = https.virtual_hosts.iter().chain(&self.http.virtual_hosts);
        for route in vhosts.flat_map(|vh| &vh.routes) {
            self.check_route(route)?;
        }
        self.check_client_validation()
    }

    /// Every backend with TLS names an SNI hostname, and the client certificate it presents (if
    /// any) is in `certificates`.
    fn check_backend_tls(&self) -> Result<(), SnapshotError> {
        for (id, backend) in &self.backends {
            let Some(tls) = &backend.tls else { continue };
            if tls.hostname.is_empty() {
                return Err(SnapshotError::BackendTlsHostname { id: id.clone() });
            }
            let client = tls.client_certificate.iter();
            self.check_certificates(&format!("backends[{id:?}].tls.client_certificate"), client)?;
        }
        Ok(())
    }

    /// Every listener with client validation terminates HTTPS for some hostname.
    fn check_client_validation(&self) -> Result<(), SnapshotError> {
        let terminating: HashSet<String> = self
            .https
            .terminate
            .iter()
            .map(|t| t.listener.id())
            .collect();
        match self
            .client_validation
            .keys()
            .find(|l| !terminating.contains(*l))
        {
            Some(listener) => Err(SnapshotError::DanglingClientValidation {
                listener: listener.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Every id of `list` (a field of [`TlsPort`](crate::schema::TlsPort)) is in `certificates`.
    fn check_certificates<'a>(
        &self,
        list: &str,
        ids: impl Iterator<Item = &'a String>,
    ) -> Result<(), SnapshotError> {
        for (i, id) in ids.enumerate() {
            if !self.certificates.contains_key(id) {
                return Err(SnapshotError::DanglingCertificate {
                    field: format!("{list}[{i}]"),
                    id: id.clone(),
                });
            }
        }
        Ok(())
    }

    fn check_route(&self, entry: &RouteEntry) -> Result<(), SnapshotError> {
        check_regex_lengths(&entry.route, &entry.matches)?;
        self.check_filters(&entry.route, &entry.filters)?;
        self.check_backends(&entry.route, &entry.backends)
    }

    fn check_backends(
        &self,
        route: &RouteRef,
        list: &[WeightedBackend],
    ) -> Result<(), SnapshotError> {
        for wb in list {
            if let Some(id) = &wb.backend {
                self.check_backend(route, id)?;
            }
            self.check_filters(route, &wb.filters)?;
        }
        Ok(())
    }

    fn check_backend(&self, route: &RouteRef, id: &str) -> Result<(), SnapshotError> {
        if self.backends.contains_key(id) {
            return Ok(());
        }
        Err(SnapshotError::DanglingBackend {
            route: route_label(route),
            id: id.to_owned(),
        })
    }

    fn check_filters(&self, route: &RouteRef, filters: &[HttpFilter]) -> Result<(), SnapshotError> {
        for f in filters {
            match f {
                HttpFilter::RequestRedirect(r)
                    if r.status_code != 0 && !is_redirect_status(r.status_code) =>
                {
                    return Err(SnapshotError::RedirectStatus {
                        route: route_label(route),
                        code: r.status_code,
                    })
                }
                HttpFilter::RequestMirror(m) => self.check_backend(route, &m.backend)?,
                HttpFilter::Cors(c) => c.check().map_err(|reason| SnapshotError::Cors {
                    route: route_label(route),
                    reason,
                })?,
                _ => {}
            }
        }
        Ok(())
    }
}

fn check_regex_lengths(route: &RouteRef, m: &HttpMatch) -> Result<(), SnapshotError> {
    let path = match &m.path {
        Some(PathMatch::RegularExpression(re)) => Some(("match.path", re)),
        _ => None,
    };
    let values = m
        .headers
        .iter()
        .map(|h| ("match.headers", h))
        .chain(m.query_params.iter().map(|q| ("match.queryParams", q)))
        .filter(|(_, v)| v.kind == MatchType::RegularExpression)
        .map(|(field, v)| (field, &v.value));
    for (field, re) in path.into_iter().chain(values) {
        if re.len() > MAX_REGEX_LEN {
            return Err(SnapshotError::RegexTooLong {
                route: route_label(route),
                field: field.to_owned(),
            });
        }
    }
    Ok(())
}

fn route_label(r: &RouteRef) -> String {
    r.label()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{
        Backend, BackendProtocol, BackendTls, BackendTrust, Certificate, ClientValidation,
        ClientValidationMode, EdgeRoute, ListenerRef, Mirror, Redirect, RouterEndpoints,
        TlsTerminate, ValueMatch, VirtualHost,
    };

    fn route(backend: &str, filters: Vec<HttpFilter>, matches: HttpMatch) -> RouteEntry {
        RouteEntry {
            route: RouteRef {
                kind: "HTTPRoute".into(),
                namespace: "acme".into(),
                name: "web".into(),
                rule: 0,
            },
            matches,
            filters,
            backends: vec![WeightedBackend {
                backend: Some(backend.into()),
                weight: 1,
                filters: vec![],
            }],
            timeouts: Default::default(),
        }
    }

    fn tenant(entry: RouteEntry) -> TenantSnapshot {
        let mut s = TenantSnapshot::default();
        s.backends.insert(
            "acme/web:80".into(),
            Backend {
                protocol: BackendProtocol::Http1,
                endpoints: vec![],
                tls: None,
            },
        );
        s.http.virtual_hosts.push(VirtualHost {
            hostname: "*".into(),
            listener_port: 80,
            routes: vec![entry],
        });
        s
    }

    fn plain(backend: &str) -> TenantSnapshot {
        tenant(route(backend, vec![], HttpMatch::default()))
    }

    #[test]
    fn a_tenant_snapshot_whose_references_resolve_is_valid() {
        assert_eq!(plain("acme/web:80").validate(), Ok(()));
    }

    #[test]
    fn a_route_to_a_backend_not_in_the_snapshot_is_refused() {
        let e = plain("acme/gone:80").validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"HTTPRoute acme/web rule 0: backend "acme/gone:80" is not in the snapshot"#
        );
    }

    #[test]
    fn a_mirror_to_a_backend_not_in_the_snapshot_is_refused() {
        let mirror = HttpFilter::RequestMirror(Mirror {
            backend: "acme/shadow:80".into(),
            percent: 100,
        });
        let s = tenant(route("acme/web:80", vec![mirror], HttpMatch::default()));
        assert!(matches!(
            s.validate(),
            Err(SnapshotError::DanglingBackend { id, .. }) if id == "acme/shadow:80"
        ));
    }

    #[test]
    fn backend_tls_needs_a_hostname_and_a_known_client_certificate() {
        let mut s = plain("acme/web:80");
        let tls = BackendTls {
            hostname: String::new(),
            trust: BackendTrust::System,
            subject_alt_names: vec![],
            client_certificate: Some("acme/client".into()),
        };
        let backend = s.backends.get_mut("acme/web:80").expect("backend");
        backend.tls = Some(tls.clone());
        assert_eq!(
            s.validate(),
            Err(SnapshotError::BackendTlsHostname {
                id: "acme/web:80".into()
            })
        );
        let backend = s.backends.get_mut("acme/web:80").expect("backend");
        backend.tls = Some(BackendTls {
            hostname: "web.acme.test".into(),
            ..tls
        });
        assert!(matches!(
            s.validate(),
            Err(SnapshotError::DanglingCertificate { id, .. }) if id == "acme/client"
        ));
    }

    #[test]
    fn a_listener_naming_a_certificate_not_in_the_snapshot_is_refused() {
        let mut s = plain("acme/web:80");
        let listener = ListenerRef {
            namespace: "acme".into(),
            gateway: "gw".into(),
            listener: "https".into(),
            port: 443,
        };
        for id in ["acme/cert", "acme/missing"] {
            s.https.terminate.push(TlsTerminate {
                hostname: "a.acme.test".into(),
                certificate: id.into(),
                listener: listener.clone(),
            });
        }
        let pem = Certificate {
            cert_pem: String::new(),
            key_pem: String::new(),
        };
        s.certificates.insert("acme/cert".into(), pem);
        assert_eq!(
            s.validate(),
            Err(SnapshotError::DanglingCertificate {
                field: "https.terminate[1]".into(),
                id: "acme/missing".into(),
            })
        );
    }

    #[test]
    fn client_validation_must_name_a_terminating_listener() {
        let mut s = plain("acme/web:80");
        let listener = ListenerRef {
            namespace: "acme".into(),
            gateway: "gw".into(),
            listener: "https".into(),
            port: 443,
        };
        s.https.terminate.push(TlsTerminate {
            hostname: "a.acme.test".into(),
            certificate: "acme/cert".into(),
            listener: listener.clone(),
        });
        s.certificates.insert(
            "acme/cert".into(),
            Certificate {
                cert_pem: String::new(),
                key_pem: String::new(),
            },
        );
        let validation = ClientValidation {
            ca_pem: String::new(),
            mode: ClientValidationMode::AllowValidOnly,
        };
        s.client_validation
            .insert(listener.id(), validation.clone());
        assert_eq!(s.validate(), Ok(()));
        s.client_validation
            .insert("acme/gw/other".into(), validation);
        assert_eq!(
            s.validate(),
            Err(SnapshotError::DanglingClientValidation {
                listener: "acme/gw/other".into()
            })
        );
    }

    #[test]
    fn only_gateway_api_redirect_codes_are_valid() {
        let redirect = |status_code| {
            let f = HttpFilter::RequestRedirect(Redirect {
                status_code,
                ..Default::default()
            });
            tenant(route("acme/web:80", vec![f], HttpMatch::default())).validate()
        };
        assert_eq!(redirect(301), Ok(()));
        assert_eq!(redirect(0), Ok(()), "0 means the default");
        assert!(matches!(
            redirect(200),
            Err(SnapshotError::RedirectStatus { code: 200, .. })
        ));
    }

    #[test]
    fn a_regular_expression_longer_than_the_limit_is_refused() {
        let header = |len: usize| HttpMatch {
            headers: vec![ValueMatch {
                kind: MatchType::RegularExpression,
                name: "x-id".into(),
                value: "a".repeat(len),
            }],
            ..Default::default()
        };
        let check = |m| tenant(route("acme/web:80", vec![], m)).validate();
        assert_eq!(check(header(MAX_REGEX_LEN)), Ok(()));
        assert!(matches!(
            check(header(MAX_REGEX_LEN + 1)),
            Err(SnapshotError::RegexTooLong { field, .. }) if field == "match.headers"
        ));
        let path = HttpMatch {
            path: Some(PathMatch::RegularExpression("b".repeat(MAX_REGEX_LEN + 1))),
            ..Default::default()
        };
        assert!(check(path).is_err());
    }

    fn edge(routes: &[(&str, &str)], tenants: &[&str]) -> EdgeSnapshot {
        EdgeSnapshot {
            routes: routes
                .iter()
                .map(|(h, t)| EdgeRoute {
                    hostname: (*h).into(),
                    tenant: (*t).into(),
                })
                .collect(),
            tenants: tenants
                .iter()
                .map(|t| ((*t).to_owned(), RouterEndpoints::default()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn an_edge_route_must_name_a_listed_tenant_and_a_unique_valid_pattern() {
        assert_eq!(edge(&[("a.example", "acme")], &["acme"]).validate(), Ok(()));
        assert!(matches!(
            edge(&[("a.example", "ghost")], &["acme"]).validate(),
            Err(SnapshotError::UnknownTenant { tenant, .. }) if tenant == "ghost"
        ));
        assert!(matches!(
            edge(&[("a..example", "acme")], &["acme"]).validate(),
            Err(SnapshotError::Hostname { .. })
        ));
        assert!(matches!(
            edge(&[("A.example", "acme"), ("a.example", "acme")], &["acme"]).validate(),
            Err(SnapshotError::DuplicateHostname { field, .. }) if field == "route 1"
        ));
    }
}
