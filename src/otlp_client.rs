//! The HTTP client of OTLP trace export: plain HTTP, or HTTPS trusting the CA bundle named by
//! the standard variable (`OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE` or
//! `OTEL_EXPORTER_OTLP_CERTIFICATE`), built on the hyper and rustls the data plane already links.
//! One connection per export (the batch processor sends one every few seconds).

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use rustls_pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Largest collector answer read (the exporter only needs its status).
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Sends OTLP export requests; see the module documentation.
#[derive(Clone)]
pub struct OtlpClient {
    tls: Option<TlsConnector>,
    timeout: Duration,
}

impl std::fmt::Debug for OtlpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpClient")
            .field("https", &self.tls.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl OtlpClient {
    /// A client for `http://` endpoints and, when `ca_pem` is given, `https://` endpoints whose
    /// certificate that CA bundle signs. Each export must finish within `timeout`.
    ///
    /// # Errors
    /// When `ca_pem` holds no usable certificate.
    pub fn new(ca_pem: Option<&[u8]>, timeout: Duration) -> anyhow::Result<Self> {
        let tls = match ca_pem {
            None => None,
            Some(pem) => {
                let roots = bulkhead_snapshot_wire::tls::ca_roots(pem)?;
                let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
                Some(TlsConnector::from(Arc::new(config)))
            }
        };
        Ok(Self { tls, timeout })
    }

    async fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (mut parts, body) = request.into_parts();
        let https = match parts.uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            other => return Err(format!("unsupported OTLP endpoint scheme {other:?}").into()),
        };
        let host = parts
            .uri
            .host()
            .ok_or("OTLP endpoint without a host")?
            .to_owned();
        let port = parts.uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = parts
            .uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_else(|| host.clone());
        parts.headers.insert(http::header::HOST, authority.parse()?);
        parts.uri = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()?;
        let request = Request::from_parts(parts, Full::new(body));
        let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port)).await?;
        tcp.set_nodelay(true)?;
        if https {
            let tls = self
                .tls
                .as_ref()
                .ok_or("an https:// OTLP endpoint needs OTEL_EXPORTER_OTLP_CERTIFICATE")?;
            let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())?;
            let stream = tls.connect(name, tcp).await?;
            exchange(stream, request).await
        } else {
            exchange(tcp, request).await
        }
    }
}

/// One HTTP/1.1 request on `io`, its answer read whole (up to [`MAX_RESPONSE_BYTES`]).
async fn exchange<I>(io: I, request: Request<Full<Bytes>>) -> Result<Response<Bytes>, HttpError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    // The connection ends when the sender is dropped, after the answer.
    tokio::spawn(conn);
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    let bytes = Limited::new(body, MAX_RESPONSE_BYTES)
        .collect()
        .await?
        .to_bytes();
    Ok(Response::from_parts(parts, bytes))
}

#[async_trait]
impl HttpClient for OtlpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        tokio::time::timeout(self.timeout, self.send(request))
            .await
            .map_err(|_| "OTLP export timed out")?
    }
}
