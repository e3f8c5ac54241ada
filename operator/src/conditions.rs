//! Condition types and reasons the operator writes, named once.
//!
//! The types and reasons are Gateway API's (and the `Tenant` CRD's); call sites use these
//! constants instead of string literals, so a typo is a compile error. The translator's call
//! sites (`translator/`) still spell some of them out; they move here as that code is reshaped.

/// Condition type: the object is valid and taken on.
pub const ACCEPTED: &str = "Accepted";
/// Condition type: the data plane serves the object.
pub const PROGRAMMED: &str = "Programmed";
/// Condition type of a `Tenant`: its routers serve the current snapshot.
pub const READY: &str = "Ready";
/// Condition type: every reference of the object resolved.
pub const RESOLVED_REFS: &str = "ResolvedRefs";
/// Condition type of a `GatewayClass`: the installed Gateway API CRDs are a supported version.
pub const SUPPORTED_VERSION: &str = "SupportedVersion";

/// Reason of `Accepted=True`.
pub const REASON_ACCEPTED: &str = "Accepted";
/// Reason of `Programmed=True`.
pub const REASON_PROGRAMMED: &str = "Programmed";
/// Reason of a `Tenant`'s `Ready=True`.
pub const REASON_READY: &str = "Ready";
/// Reason of a `Programmed` / `Ready` condition that waits for the routers' acknowledgement.
pub const REASON_PENDING: &str = "Pending";
/// Reason of `ResolvedRefs=False` for a certificate reference that cannot be served (missing or
/// unreadable Secret, bad PEM, unsupported kind).
pub const REASON_INVALID_CERTIFICATE_REF: &str = "InvalidCertificateRef";
/// Reason of `SupportedVersion=True`.
pub const REASON_SUPPORTED_VERSION: &str = "SupportedVersion";
/// Reason of `SupportedVersion=False`.
pub const REASON_UNSUPPORTED_VERSION: &str = "UnsupportedVersion";
