//! The cluster transport of snapshots between the operator and the data plane.
//!
//! HTTP/2 over TLS (rustls, ring). A data-plane process opens one long-lived stream and receives
//! complete snapshots as length-delimited JSON frames ([`frame`]): the current one first, then each
//! newer one (latest wins; intermediate versions may be skipped), with keep-alive frames in between
//! so a dead stream is noticed. It acknowledges the version it serves, or refuses it with a reason,
//! by posting an [`AckMessage`].
//!
//! | request | who | answer |
//! |---|---|---|
//! | `GET /v1/snapshots/edge` | the edge ([`Identity::Edge`]) | 200, frames |
//! | `GET /v1/snapshots/tenants/{tenant}` | that tenant's routers ([`Identity::Tenant`]) | 200, frames |
//! | `POST /v1/acks` | either, for its own stream only | 204 |
//!
//! Every request carries `Authorization: Bearer <token>`; an [`Authenticator`] turns the token into
//! an [`Identity`] (401 when it cannot), and an identity may use only its own stream (403
//! otherwise): a router can never read another tenant's snapshot, which holds private keys.
//!
//! The operator runs a [`SnapshotServer`], publishes snapshots into it and reads acknowledgements
//! from its channel; the edge and the routers call [`subscribe`], which returns the same
//! [`bulkhead_snapshot::Subscription`] the in-process transport gives, so they never know which
//! transport they run on. A client that loses the server keeps its last snapshot and reconnects
//! with backoff; one that starts while the server is down serves its bootstrap file
//! ([`write_bootstrap`] writes one).
#![forbid(unsafe_code)]

pub mod ack;
pub mod auth;
mod backoff;
mod body;
pub mod bootstrap;
pub mod cert_reload;
pub mod client;
pub mod frame;
mod handler;
pub mod limits;
pub mod server;
mod session;
mod shared;
pub mod stream;
pub mod tls;

pub use ack::{AckMessage, AckMessageError};
pub use auth::{Admission, AuthError, Authenticator, Identity, StaticTokens, StreamGuard};
pub use bootstrap::{read_bootstrap, write_bootstrap, BootstrapError};
pub use cert_reload::{server_tls_config, watch_cert_files, watch_files, CertFiles, ReloadingCert};
pub use client::{subscribe, ClientConfig, ClientDriver, ClientError, LinkStatus};
pub use frame::{encode_frame, Frame, FrameDecoder, FrameError};
pub use handler::{FRAMES_CONTENT_TYPE, SUBSCRIBER_HEADER};
pub use server::{AckReceiver, PublishError, ServerStats, SnapshotServer};
pub use stream::{StreamName, StreamNameError};
pub use tls::{client_tls_config, TlsError};
