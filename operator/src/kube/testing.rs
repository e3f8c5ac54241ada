//! Test helpers: a `kube::Client` backed by `tower-test`'s mock service (kube-rs's mock-service
//! pattern), so tests see every request the operator makes and answer it.

use ::kube::client::Body;
use ::kube::Client;
use http::{Request, Response};
use http_body_util::BodyExt;
use tower_test::mock::{self, Handle, SendResponse};

/// The API server's end of a mock client.
pub(crate) struct MockApi(Handle<Request<Body>, Response<Body>>);

impl MockApi {
    /// A client and the mock API server it talks to.
    pub(crate) fn pair() -> (Client, Self) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        (Client::new(service, "default"), Self(handle))
    }

    /// The next request the client sends (panics when the client is gone).
    pub(crate) async fn next_request(&mut self) -> (Request<Body>, SendResponse<Response<Body>>) {
        self.0
            .next_request()
            .await
            .expect("the client sent a request")
    }
}

/// The request body as JSON.
pub(crate) async fn json_body(request: Request<Body>) -> serde_json::Value {
    let bytes = request
        .into_body()
        .collect()
        .await
        .expect("request body")
        .to_bytes();
    serde_json::from_slice(&bytes).expect("JSON request body")
}

/// Answers with `status` and a JSON body.
pub(crate) fn respond_json(
    send: SendResponse<Response<Body>>,
    status: u16,
    body: &serde_json::Value,
) {
    let bytes = serde_json::to_vec(body).expect("JSON");
    send.send_response(
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(bytes))
            .expect("response"),
    );
}

/// A `Status` failure body as the API server sends it.
pub(crate) fn failure(code: u16, reason: &str, message: &str) -> serde_json::Value {
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code
    })
}

/// The value of query parameter `name` in the request's URI.
pub(crate) fn query_param(request: &Request<Body>, name: &str) -> Option<String> {
    request.uri().query().and_then(|q| {
        q.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
    })
}

/// A small cluster for control-loop tests: Tenant `acme` (namespace `team-a`, served) and `ghost`
/// (its namespace missing), Gateway `web`, HTTPRoute `app`, its Service, and the router's
/// EndpointSlice.
pub(crate) const WORLD: &str = r#"
apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {name: acme, uid: "0b5c2f4e-0000-4000-8000-000000000001", generation: 1}
spec: {namespace: team-a, hostnames: ["*.acme.test"]}
---
apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {name: ghost, uid: "0b5c2f4e-0000-4000-8000-000000000002"}
spec: {namespace: nowhere, hostnames: ["ghost.test"]}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-a}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: team-a, generation: 1}
spec:
  gatewayClassName: bulkhead
  listeners: [{name: http, protocol: HTTP, port: 80, hostname: www.acme.test}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: app, namespace: team-a}
spec:
  parentRefs: [{name: web}]
  rules: [{backendRefs: [{name: app, port: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: app, namespace: team-a}
spec: {ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: bulkhead-router-x, namespace: team-a, labels: {kubernetes.io/service-name: bulkhead-router}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: ["10.0.0.7"]}]
"#;
