//! Errors of the tenant router: starting it ([`RouterError`]) and refusing a snapshot ([`CompileError`]).

use std::net::SocketAddr;

/// Why a router could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's answer.
        source: std::io::Error,
    },
    /// The configuration given to [`crate::Router::bind`] is unusable.
    #[error("invalid router configuration: {0}")]
    Config(String),
    /// The thread that applies snapshots could not be started.
    #[error("cannot start the snapshot applier: {0}")]
    Applier(std::io::Error),
}

/// Why a snapshot was refused (the previous configuration keeps serving). The message names the
/// route, certificate or field at fault; it is sent back as the snapshot's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// The snapshot is for another tenant.
    #[error("snapshot is for tenant {found:?}, this router serves {expected:?}")]
    WrongTenant {
        /// This router's tenant.
        expected: String,
        /// The snapshot's tenant.
        found: String,
    },
    /// A hostname or pattern is malformed.
    #[error("{field}: invalid hostname {value:?}: {reason}")]
    Hostname {
        /// Where it appeared.
        field: String,
        /// The hostname.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The same hostname pattern appears twice where it must be unique.
    #[error("{field}: hostname {value:?} appears more than once")]
    DuplicateHostname {
        /// Where it appeared.
        field: String,
        /// The hostname.
        value: String,
    },
    /// A certificate or key cannot be used.
    #[error("certificate {id:?}: {reason}")]
    Certificate {
        /// The certificate id.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A listener's client certificate validation cannot be used (an unusable CA bundle).
    #[error("client validation of listener {listener:?}: {reason}")]
    ClientValidation {
        /// The listener id.
        listener: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A regular expression does not compile (or is too large).
    #[error("{route}: {field}: invalid regular expression {pattern:?}: {reason}")]
    Regex {
        /// The route it belongs to.
        route: String,
        /// Which match field.
        field: String,
        /// The expression.
        pattern: String,
        /// The compiler's message.
        reason: String,
    },
    /// Any other invalid field of a route (header name, redirect, rewrite...).
    #[error("{route}: {field}: {reason}")]
    Route {
        /// The route it belongs to.
        route: String,
        /// Which field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The snapshot breaks the contract both planes check ([`TenantSnapshot::validate`]).
    ///
    /// [`TenantSnapshot::validate`]: bulkhead_snapshot::TenantSnapshot::validate
    #[error(transparent)]
    Contract(#[from] bulkhead_snapshot::SnapshotError),
}
