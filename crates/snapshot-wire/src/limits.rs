//! Every limit and timeout of the snapshot transport, in one reviewed place.

use std::time::Duration;

/// Largest snapshot frame accepted or sent: 64 MiB of JSON (the 4-byte header excluded).
pub const MAX_FRAME_LEN: usize = 64 * 1024 * 1024;

/// Length of a frame header: the payload length as a big-endian `u32`.
pub const FRAME_HEADER_LEN: usize = 4;

/// How often the server sends a keep-alive frame (length 0) on a stream with nothing newer to send.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// A client that receives nothing on its stream (not even a keep-alive) for this long drops the
/// connection and reconnects: three missed keep-alives and a little slack.
pub const READ_IDLE_TIMEOUT: Duration = Duration::from_secs(35);

/// A subscriber that does not take the next frame within this long is disconnected (a stuck or far
/// too slow reader must not pin a server task and a snapshot in memory forever).
pub const SEND_STALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Deadline of a TLS handshake, on both ends.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Deadline of name resolution plus the TCP connect (client).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Deadline for a response head, to the stream request and to each acknowledgement (client).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Deadline of one [`Authenticator`](crate::Authenticator) answer (e.g. a TokenReview round trip);
/// past it the request is answered 503 and the client retries.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// Deadline for reading an acknowledgement body (server).
pub const ACK_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2 PING interval on both ends: detects a vanished peer below the frame layer.
pub const H2_PING_INTERVAL: Duration = Duration::from_secs(20);

/// How long an HTTP/2 PING may go unanswered before the connection is closed.
pub const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Most connections served at once; further ones wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 4096;

/// Most concurrent HTTP/2 streams (a snapshot stream plus acknowledgements) per connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 32;

/// Longest bearer token accepted (projected service-account tokens are about 1 KiB).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Largest acknowledgement body accepted (a reason of [`MAX_ACK_REASON_LEN`] bytes fits even when
/// every byte is JSON-escaped).
pub const MAX_ACK_BODY: usize = 64 * 1024;

/// Longest acknowledgement reason, in bytes; the client truncates longer ones on a character boundary.
pub const MAX_ACK_REASON_LEN: usize = 4 * 1024;

/// Longest subscriber name (e.g. `router/acme/acme-router-7d9f-xk2p`).
pub const MAX_SUBSCRIBER_LEN: usize = 253;

/// Capacity of the server's acknowledgement channel; an acknowledgement that finds it full is
/// answered 503 and sent again by the client.
pub const SERVER_ACK_QUEUE: usize = 1024;

/// Acknowledgements a client keeps while it cannot deliver them (oldest dropped first).
pub const MAX_PENDING_ACKS: usize = 64;

/// First reconnect delay of a client (before jitter).
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(250);

/// Longest reconnect delay of a client (before jitter).
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Largest bootstrap file read, the same as a frame.
pub const MAX_BOOTSTRAP_LEN: usize = MAX_FRAME_LEN;
