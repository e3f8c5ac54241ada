//! The installation around the objects, read from the cluster (what it changes in statuses:
//! [`crate::status_installation`]):
//!
//! * Gateway addresses: `--gateway-address` when given, else the `status.loadBalancer.ingress` of
//!   the edge Service (`--edge-service`, default [`DEFAULT_EDGE_SERVICE`]), watched (the operator
//!   already lists and watches Services, so no new permission is needed).
//! * The Gateway API CRD bundle version: the [`BUNDLE_VERSION_ANNOTATION`] of the CRDs of the
//!   kinds Bulkhead reads ([`GATEWAY_API_CRDS`]), read with `get` (metadata only) at start and
//!   every [`CRD_CHECK_INTERVAL`]. A CRD that is not installed is skipped; one without the
//!   annotation or with an unsupported version makes `SupportedVersion` `False`. When the CRDs
//!   cannot be read (no permission, API server down) the condition is left out and a warning
//!   logged.

use crate::status_installation::{
    addresses_of_ingress, CrdBundle, GatewayAddress, Installation, BUNDLE_VERSION_ANNOTATION,
    SUPPORTED_BUNDLE_VERSIONS,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The edge Service whose load-balancer addresses become the Gateways' addresses, as
/// `NAMESPACE/NAME`. Override: `bulkhead operator --edge-service`.
pub const DEFAULT_EDGE_SERVICE: &str = "bulkhead-system/bulkhead-edge";

/// How often the CRDs' bundle version is read again (a CRD upgrade changes it without touching
/// any object the operator watches).
pub const CRD_CHECK_INTERVAL: Duration = Duration::from_secs(300);

/// The Gateway API CRDs whose bundle version is checked: the kinds Bulkhead reads.
pub const GATEWAY_API_CRDS: &[&str] = &[
    "gatewayclasses.gateway.networking.k8s.io",
    "gateways.gateway.networking.k8s.io",
    "httproutes.gateway.networking.k8s.io",
    "grpcroutes.gateway.networking.k8s.io",
    "referencegrants.gateway.networking.k8s.io",
    "tlsroutes.gateway.networking.k8s.io",
    "tcproutes.gateway.networking.k8s.io",
];

/// Where the installation is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallationSource {
    /// Static addresses (`--gateway-address`); when not empty the edge Service is not watched.
    pub static_addresses: Vec<GatewayAddress>,
    /// Namespace and name of the edge Service.
    pub edge_service: (String, String),
}

/// Parses `NAMESPACE/NAME` (`--edge-service`).
pub fn parse_service_ref(text: &str) -> Result<(String, String), String> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => Err(format!("{text:?} is not NAMESPACE/NAME")),
    }
}

/// Starts reading the installation; the receiver sees every change until `shutdown`.
/// `missing_kinds` are the required Gateway API kinds API discovery did not find (see
/// [`super::discovery`]), reported on the GatewayClass.
pub fn spawn(
    client: Client,
    source: InstallationSource,
    missing_kinds: Vec<String>,
    shutdown: CancellationToken,
) -> watch::Receiver<Installation> {
    let (tx, rx) = watch::channel(Installation {
        addresses: source.static_addresses.clone(),
        crd_bundle: CrdBundle::Unknown,
        missing_kinds,
    });
    if source.static_addresses.is_empty() {
        let (client, tx, stop) = (client.clone(), tx.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = watch_edge_service(client, source.edge_service, tx) => {}
            }
        });
    }
    tokio::spawn(async move {
        loop {
            let bundle = match read_bundle(&client).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the Gateway API CRDs: GatewayClass SupportedVersion left out");
                    CrdBundle::Unknown
                }
            };
            tx.send_if_modified(|i| replace(&mut i.crd_bundle, bundle));
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(CRD_CHECK_INTERVAL) => {}
            }
        }
    });
    rx
}

fn replace<T: PartialEq>(slot: &mut T, value: T) -> bool {
    let changed = *slot != value;
    *slot = value;
    changed
}

/// Watches the edge Service and publishes its load-balancer addresses (none while it has none or
/// is gone).
async fn watch_edge_service(
    client: Client,
    (namespace, name): (String, String),
    tx: watch::Sender<Installation>,
) {
    let api: Api<Service> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = std::pin::pin!(watcher(api, config).default_backoff());
    while let Some(event) = stream.next().await {
        let addresses = match event {
            Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => addresses_of_service(&s),
            Ok(watcher::Event::Delete(_)) => Vec::new(),
            Ok(watcher::Event::Init | watcher::Event::InitDone) => continue,
            Err(e) => {
                tracing::warn!(error = %e, service = %format!("{namespace}/{name}"), "cannot watch the edge Service");
                continue;
            }
        };
        tracing::info!(service = %format!("{namespace}/{name}"), addresses = ?addresses, "Gateway addresses");
        tx.send_if_modified(|i| replace(&mut i.addresses, addresses));
    }
}

/// The load-balancer addresses of a Service.
pub fn addresses_of_service(service: &Service) -> Vec<GatewayAddress> {
    let ingress = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default();
    addresses_of_ingress(ingress)
}

/// Reads the bundle version of every installed CRD of [`GATEWAY_API_CRDS`]: supported when all
/// carry a supported version, else the first missing or unsupported one.
pub async fn read_bundle(client: &Client) -> Result<CrdBundle, kube::Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut versions: Vec<Option<String>> = Vec::new();
    for name in GATEWAY_API_CRDS {
        let Some(meta) = api.get_metadata_opt(name).await? else {
            continue;
        };
        versions.push(
            meta.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(BUNDLE_VERSION_ANNOTATION))
                .cloned(),
        );
    }
    Ok(bundle_of(versions))
}

fn bundle_of(versions: Vec<Option<String>>) -> CrdBundle {
    let supported = |v: &Option<String>| {
        v.as_deref()
            .is_some_and(|v| SUPPORTED_BUNDLE_VERSIONS.iter().any(|p| v.starts_with(p)))
    };
    match versions.iter().find(|v| !supported(v)) {
        Some(odd) => CrdBundle::Installed(odd.clone()),
        None => match versions.into_iter().next() {
            Some(first) => CrdBundle::Installed(first),
            None => CrdBundle::Unknown,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::testing::{failure, respond_json, MockApi};
    use serde_json::json;

    fn crd_metadata(name: &str, version: Option<&str>) -> serde_json::Value {
        let annotations = version.map(|v| json!({ BUNDLE_VERSION_ANNOTATION: v }));
        json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadata",
            "metadata": {"name": name, "annotations": annotations},
        })
    }

    /// Answers the CRD reads in order: `answers[i]` for `GATEWAY_API_CRDS[i]` (`None`: 404).
    async fn serve_crds(mut api: MockApi, answers: Vec<Option<Option<&'static str>>>) {
        for (name, answer) in GATEWAY_API_CRDS.iter().zip(answers) {
            let (request, send) = api.next_request().await;
            assert_eq!(request.method(), http::Method::GET);
            assert_eq!(
                request.uri().path(),
                format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
            );
            match answer {
                Some(version) => respond_json(send, 200, &crd_metadata(name, version)),
                None => respond_json(send, 404, &failure(404, "NotFound", "not found")),
            }
        }
    }

    #[tokio::test]
    async fn installed_crds_decide_the_bundle_version() {
        let cases: Vec<(Vec<Option<Option<&'static str>>>, CrdBundle)> = vec![
            (
                vec![Some(Some("v1.4.0")); 7],
                CrdBundle::Installed(Some("v1.4.0".into())),
            ),
            (
                // Standard channel: TLSRoute and TCPRoute CRDs not installed.
                vec![
                    Some(Some("v1.5.1")),
                    Some(Some("v1.5.1")),
                    Some(Some("v1.5.1")),
                    Some(Some("v1.5.1")),
                    Some(Some("v1.5.1")),
                    None,
                    None,
                ],
                CrdBundle::Installed(Some("v1.5.1".into())),
            ),
            (
                vec![
                    Some(Some("v1.4.0")),
                    Some(Some("v1.2.0")),
                    None,
                    None,
                    None,
                    None,
                    None,
                ],
                CrdBundle::Installed(Some("v1.2.0".into())),
            ),
            (
                vec![
                    Some(Some("v1.4.0")),
                    Some(None),
                    None,
                    None,
                    None,
                    None,
                    None,
                ],
                CrdBundle::Installed(None),
            ),
            (vec![None; 7], CrdBundle::Unknown),
        ];
        for (answers, want) in cases {
            let (client, api) = MockApi::pair();
            let server = tokio::spawn(serve_crds(api, answers.clone()));
            let got = read_bundle(&client).await.expect("read");
            server.await.expect("mock API server");
            assert_eq!(got, want, "{answers:?}");
        }
    }

    #[tokio::test]
    async fn forbidden_crds_are_an_error_not_a_verdict() {
        let (client, mut api) = MockApi::pair();
        let server = tokio::spawn(async move {
            let (_, send) = api.next_request().await;
            respond_json(send, 403, &failure(403, "Forbidden", "forbidden"));
        });
        assert!(read_bundle(&client).await.is_err());
        server.await.expect("mock API server");
    }

    #[tokio::test]
    async fn the_edge_service_load_balancer_becomes_the_gateway_addresses() {
        let (client, mut api) = MockApi::pair();
        let source = InstallationSource {
            static_addresses: Vec::new(),
            edge_service: ("bulkhead-system".into(), "bulkhead-edge".into()),
        };
        let stop = CancellationToken::new();
        let mut rx = spawn(client, source, Vec::new(), stop.clone());
        let mut listed = false;
        while !listed {
            let (request, send) = api.next_request().await;
            let path = request.uri().path().to_owned();
            if path.contains("/customresourcedefinitions/") {
                respond_json(send, 404, &failure(404, "NotFound", "not found"));
                continue;
            }
            assert_eq!(path, "/api/v1/namespaces/bulkhead-system/services");
            assert_eq!(
                crate::kube::testing::query_param(&request, "fieldSelector").as_deref(),
                Some("metadata.name%3Dbulkhead-edge")
            );
            respond_json(
                send,
                200,
                &json!({
                    "apiVersion": "v1", "kind": "ServiceList",
                    "metadata": {"resourceVersion": "7"},
                    "items": [{
                        "apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": "bulkhead-edge", "namespace": "bulkhead-system", "resourceVersion": "7"},
                        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}, {"hostname": "lb.example.test"}]}}
                    }]
                }),
            );
            listed = true;
        }
        let got = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if !rx.borrow_and_update().addresses.is_empty() {
                    return rx.borrow().addresses.clone();
                }
                rx.changed().await.expect("installation sender alive");
            }
        })
        .await
        .expect("addresses published");
        assert_eq!(
            got,
            vec![
                GatewayAddress::parse("203.0.113.5"),
                GatewayAddress::parse("lb.example.test"),
            ]
        );
        stop.cancel();
    }
}
