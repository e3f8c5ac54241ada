//! Condition types and reasons the operator writes, named once.
//!
//! The types and reasons are Gateway API's (grouped as the specification groups them: by the
//! object and condition they belong to) and the `Tenant` CRD's; call sites use these constants
//! instead of string literals, so a typo is a compile error. A reason that several conditions
//! share (`Invalid`, `RefNotPermitted`, `HostnameConflict`) is defined once, with the first group
//! that uses it.

// ---------------------------------------------------------------------------------------------
// Condition types.

/// Condition type: the object is valid and taken on.
pub const ACCEPTED: &str = "Accepted";
/// Condition type: the data plane serves the object.
pub const PROGRAMMED: &str = "Programmed";
/// Condition type of a `Tenant`: its routers serve the current snapshot.
pub const READY: &str = "Ready";
/// Condition type: every reference of the object resolved.
pub const RESOLVED_REFS: &str = "ResolvedRefs";
/// Condition type of a listener: it conflicts with another listener of the same port.
pub const CONFLICTED: &str = "Conflicted";
/// Condition type of a `GatewayClass`: the installed Gateway API CRDs are a supported version.
pub const SUPPORTED_VERSION: &str = "SupportedVersion";
/// Condition type of a `Gateway` (Gateway API, experimental): its frontend TLS validation
/// accepts clients without a valid certificate.
pub const INSECURE_FRONTEND_VALIDATION_MODE: &str = "InsecureFrontendValidationMode";
/// Condition type of a `Tenant`: its hostnames overlap another tenant's grants (present only
/// when they do).
pub const HOSTNAMES_OVERLAP: &str = "HostnamesOverlap";

// ---------------------------------------------------------------------------------------------
// Reasons shared by every object.

/// Reason of `Accepted=True`.
pub const REASON_ACCEPTED: &str = "Accepted";
/// Reason of `Programmed=True`.
pub const REASON_PROGRAMMED: &str = "Programmed";
/// Reason of `ResolvedRefs=True`.
pub const REASON_RESOLVED_REFS: &str = "ResolvedRefs";
/// Reason of a `Programmed` / `Ready` condition that waits for the routers' acknowledgement.
pub const REASON_PENDING: &str = "Pending";
/// Reason of `Programmed=False`: the object cannot be served.
pub const REASON_INVALID: &str = "Invalid";

// ---------------------------------------------------------------------------------------------
// GatewayClass reasons.

/// Reason of `SupportedVersion=True`.
pub const REASON_SUPPORTED_VERSION: &str = "SupportedVersion";
/// Reason of `SupportedVersion=False`.
pub const REASON_UNSUPPORTED_VERSION: &str = "UnsupportedVersion";

// ---------------------------------------------------------------------------------------------
// Gateway reasons.

/// Reason of a Gateway's `Accepted` when some of its listeners are not valid.
pub const REASON_LISTENERS_NOT_VALID: &str = "ListenersNotValid";
/// Reason of `InsecureFrontendValidationMode=True`.
pub const REASON_CONFIGURATION_CHANGED: &str = "ConfigurationChanged";

// ---------------------------------------------------------------------------------------------
// Listener reasons.

/// Reason of a listener's `Accepted=False`: its port cannot be served.
pub const REASON_PORT_UNAVAILABLE: &str = "PortUnavailable";
/// Reason of a listener's `Accepted=False`: its protocol (or TLS mode) is not supported.
pub const REASON_UNSUPPORTED_PROTOCOL: &str = "UnsupportedProtocol";
/// Reason of `ResolvedRefs=False`: a route kind the listener allows is not supported.
pub const REASON_INVALID_ROUTE_KINDS: &str = "InvalidRouteKinds";
/// Reason of `ResolvedRefs=False` for a certificate reference that cannot be served (missing or
/// unreadable Secret, bad PEM, unsupported kind).
pub const REASON_INVALID_CERTIFICATE_REF: &str = "InvalidCertificateRef";
/// Reason of `ResolvedRefs=False` for a CA certificate reference that cannot be read.
pub const REASON_INVALID_CA_CERTIFICATE_REF: &str = "InvalidCACertificateRef";
/// Reason of `ResolvedRefs=False` for a CA certificate reference of an unsupported kind.
pub const REASON_INVALID_CA_CERTIFICATE_KIND: &str = "InvalidCACertificateKind";
/// Reason of a listener's `Accepted=False` when every CA certificate reference of its frontend
/// validation is invalid.
pub const REASON_NO_VALID_CA_CERTIFICATE: &str = "NoValidCACertificate";
/// Reason of `ResolvedRefs=False`: a reference to another namespace no ReferenceGrant permits
/// (listeners and routes).
pub const REASON_REF_NOT_PERMITTED: &str = "RefNotPermitted";
/// Reason of `Conflicted=False`.
pub const REASON_NO_CONFLICTS: &str = "NoConflicts";
/// Reason of `Conflicted=True`: listeners of the same port share a hostname (also a `Tenant`'s
/// `Accepted=False` reason: hostnames claimed by an older tenant).
pub const REASON_HOSTNAME_CONFLICT: &str = "HostnameConflict";
/// Reason of `Conflicted=True`: listeners of the same port have different protocols.
pub const REASON_PROTOCOL_CONFLICT: &str = "ProtocolConflict";

// ---------------------------------------------------------------------------------------------
// Route reasons.

/// Reason of a route's `Accepted=False`: no listener of the parent allows the route.
pub const REASON_NOT_ALLOWED_BY_LISTENERS: &str = "NotAllowedByListeners";
/// Reason of a route's `Accepted=False`: no listener hostname intersects the route's.
pub const REASON_NO_MATCHING_LISTENER_HOSTNAME: &str = "NoMatchingListenerHostname";
/// Reason of a route's `Accepted=False`: the parent reference names no Gateway (or section) of ours.
pub const REASON_NO_MATCHING_PARENT: &str = "NoMatchingParent";
/// Reason of a route's `Accepted=False` or `ResolvedRefs=False`: a value Bulkhead does not
/// implement.
pub const REASON_UNSUPPORTED_VALUE: &str = "UnsupportedValue";
/// Reason of a route's `ResolvedRefs=False`: a backend reference of an unsupported kind.
pub const REASON_INVALID_KIND: &str = "InvalidKind";
/// Reason of a route's `ResolvedRefs=False`: the backend Service (or its port) does not exist.
pub const REASON_BACKEND_NOT_FOUND: &str = "BackendNotFound";

// ---------------------------------------------------------------------------------------------
// Tenant reasons (Bulkhead's own CRD).

/// Reason of a `Tenant`'s `Ready=True`.
pub const REASON_READY: &str = "Ready";
/// Reason of a `Tenant`'s `Accepted=False`: an older Tenant onboarded its namespace.
pub const REASON_NAMESPACE_CONFLICT: &str = "NamespaceConflict";
/// Reason of a `Tenant`'s `Accepted=False`: its namespace does not exist.
pub const REASON_NAMESPACE_NOT_FOUND: &str = "NamespaceNotFound";
/// Reason of `Accepted=False` for an invalid hostname (a `Tenant`'s, or a listener's).
pub const REASON_INVALID_HOSTNAME: &str = "InvalidHostname";
/// Reason of a listener's `Accepted=False`: its hostname lies outside the tenant's grants.
pub const REASON_HOSTNAME_NOT_PERMITTED: &str = "HostnameNotPermitted";
/// Reason of a `Tenant`'s `Ready=False` when no more specific reason applies.
pub const REASON_NOT_SERVED: &str = "NotServed";
/// Reason of a `Gateway`'s `Accepted=False` / `Programmed=False`: no Tenant onboarded its
/// namespace.
pub const REASON_NAMESPACE_NOT_ONBOARDED: &str = "NamespaceNotOnboarded";
/// Reason of `HostnamesOverlap=True`.
pub const REASON_OVERLAPPING_GRANT: &str = "OverlappingGrant";
