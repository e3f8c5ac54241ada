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
