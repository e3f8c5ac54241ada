//! Why sniffing a connection's first bytes failed, with a short stable label per cause for metrics.

use bulkhead_hostmatch::HostError;

/// Why no routing name could be read from a connection's first bytes.
#[derive(Debug, thiserror::Error)]
pub enum SniffError {
    /// The bytes do not start with a TLS handshake record.
    #[error("not a TLS handshake")]
    NotTls,
    /// The bytes do not start like an HTTP/1.x request.
    #[error("not an HTTP/1 request")]
    NotHttp,
    /// The bytes look like the expected protocol but break its grammar.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The ClientHello or request head exceeds its byte limit.
    #[error("ClientHello or request head exceeds its size limit")]
    TooLarge,
    /// The peer did not deliver the name before the deadline.
    #[error("timed out waiting for the ClientHello or request head")]
    Timeout,
    /// The peer closed the connection before the name was known.
    #[error("peer closed the connection before sending a complete ClientHello or request head")]
    Closed,
    /// Reading from the peer failed.
    #[error("i/o error while sniffing: {0}")]
    Io(#[from] std::io::Error),
    /// An HTTP request carries no `Host` (nor an absolute-form target).
    #[error("request has no Host header")]
    MissingHost,
    /// The SNI or `Host` is not a valid DNS hostname.
    #[error("invalid hostname: {0}")]
    BadHost(HostError),
}

impl SniffError {
    /// A short, stable label for metrics and logs (a bounded set of values).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotTls => "not_tls",
            Self::NotHttp => "not_http",
            Self::Malformed(_) => "malformed",
            Self::TooLarge => "too_large",
            Self::Timeout => "timeout",
            Self::Closed => "closed",
            Self::Io(_) => "io",
            Self::MissingHost => "missing_host",
            Self::BadHost(_) => "bad_host",
        }
    }

    /// Every label [`SniffError::reason`] can return, e.g. to pre-create metric series.
    pub const REASONS: [&'static str; 9] = [
        "not_tls",
        "not_http",
        "malformed",
        "too_large",
        "timeout",
        "closed",
        "io",
        "missing_host",
        "bad_host",
    ];

    pub(crate) fn malformed(msg: impl Into<String>) -> Self {
        Self::Malformed(msg.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_listed() {
        let all = [
            SniffError::NotTls,
            SniffError::NotHttp,
            SniffError::malformed("x"),
            SniffError::TooLarge,
            SniffError::Timeout,
            SniffError::Closed,
            SniffError::Io(std::io::Error::other("x")),
            SniffError::MissingHost,
            SniffError::BadHost(HostError::Empty),
        ];
        let reasons: Vec<_> = all.iter().map(SniffError::reason).collect();
        assert_eq!(reasons, SniffError::REASONS);
    }
}
