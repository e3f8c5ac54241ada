//! The Gateway API features Bulkhead implements, by their official names (the gateway-api
//! repository's `pkg/features`): the one list behind `GatewayClass.status.supportedFeatures`, the
//! support tables of `README.md` and `tenant-router/README.md`, and the per-feature test index
//! (`tests/conformance_features.rs` checks that every claimed feature names a test function that
//! exists, and that both README tables say exactly what this list says).
//!
//! A feature is listed only when the router implements it and a test proves it the way the
//! official conformance suite exercises it. Features that are implemented only in part (TCPRoute:
//! only behind a `TLS`/`Terminate` listener, since the edge cannot tell plain TCP connections
//! apart) are not claimed.

/// Where a feature sits in the Gateway API's support levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Core conformance, standard channel.
    Core,
    /// Extended conformance, standard channel.
    Extended,
    /// Experimental channel.
    Experimental,
}

impl Level {
    /// The level as written in the README tables (`core`, `extended`, `experimental`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Core => "core",
            Self::Extended => "extended",
            Self::Experimental => "experimental",
        }
    }
}

/// One feature Bulkhead implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feature {
    /// The official feature name (`HTTPRouteQueryParamMatching`, ...).
    pub name: &'static str,
    /// Its support level.
    pub level: Level,
    /// The test that proves it, as `PATH::FUNCTION` relative to the workspace root.
    pub proven_by: &'static str,
}

const fn feature(name: &'static str, level: Level, proven_by: &'static str) -> Feature {
    Feature {
        name,
        level,
        proven_by,
    }
}

/// Every Gateway API feature Bulkhead implements, sorted by name in byte order (the order
/// `GatewayClass.status.supportedFeatures` must have: `GRPCRoute` before `Gateway`).
pub const SUPPORTED_FEATURES: &[Feature] = &[
    feature(
        "BackendTLSPolicy",
        Level::Core,
        "tests/conformance_backend_tls.rs::backend_tls_policy_follows_the_specification",
    ),
    feature(
        "BackendTLSPolicySANValidation",
        Level::Extended,
        "tests/conformance_backend_tls.rs::subject_alt_names_replace_the_hostname_for_authentication",
    ),
    feature(
        "GRPCRoute",
        Level::Core,
        "tests/conformance_grpc_route.rs::grpc_calls_are_routed_by_service_and_method",
    ),
    feature(
        "Gateway",
        Level::Core,
        "tests/tenancy.rs::https_reaches_each_tenants_backend_with_its_own_certificate",
    ),
    feature(
        "GatewayBackendClientCertificate",
        Level::Experimental,
        "tests/conformance_backend_tls.rs::a_gateway_presents_its_backend_client_certificate_and_only_its_own",
    ),
    feature(
        "GatewayFrontendClientCertificateValidation",
        Level::Extended,
        "tests/conformance_frontend_tls.rs::allow_valid_only_serves_only_clients_with_a_valid_certificate_and_passes_their_identity",
    ),
    feature(
        "GatewayFrontendClientCertificateValidationInsecureFallback",
        Level::Extended,
        "tests/conformance_frontend_tls.rs::insecure_fallback_serves_every_client_but_only_a_valid_certificate_gives_an_identity",
    ),
    feature(
        "GatewayHTTPListenerIsolation",
        Level::Extended,
        "tests/conformance_listener_isolation.rs::each_request_reaches_only_the_routes_of_its_most_specific_listener",
    ),
    feature(
        "GatewayHTTPSListenerDetectMisdirectedRequests",
        Level::Extended,
        "tests/conformance_misdirected.rs::https_listeners_on_one_port_answer_421_for_hosts_the_sni_listener_does_not_serve",
    ),
    feature(
        "GatewayListenerSet",
        Level::Extended,
        "tests/conformance_listenerset.rs::an_admitted_listener_set_is_served_over_tls_and_plain_http",
    ),
    feature(
        "HTTPRoute",
        Level::Core,
        "tests/conformance_by_address.rs::host_by_ipv4_and_ipv6_address_with_or_without_port_reaches_the_catch_all_tenant",
    ),
    feature(
        "HTTPRouteBackendProtocolH2C",
        Level::Extended,
        "tenant-router/tests/router/backend_faults.rs::h2c_backend_gets_http2_with_the_original_authority",
    ),
    feature(
        "HTTPRouteBackendProtocolWebSocket",
        Level::Extended,
        "tenant-router/tests/router/backend_faults.rs::websocket_upgrade_is_relayed_both_ways",
    ),
    feature(
        "HTTPRouteCORS",
        Level::Extended,
        "tests/conformance_cors.rs::preflights_are_answered_by_the_router_from_the_route_policy",
    ),
    feature(
        "HTTPRouteHostRewrite",
        Level::Extended,
        "tests/gateway_api_filters.rs::url_rewrites_change_what_the_backend_sees",
    ),
    feature(
        "HTTPRouteMethodMatching",
        Level::Extended,
        "tests/gateway_api_matching.rs::header_query_and_method_matches_follow_gateway_api_precedence",
    ),
    feature(
        "HTTPRoutePathRedirect",
        Level::Extended,
        "tests/gateway_api_filters.rs::request_redirects_build_location_from_the_listener_port",
    ),
    feature(
        "HTTPRoutePathRewrite",
        Level::Extended,
        "tests/gateway_api_filters.rs::url_rewrites_change_what_the_backend_sees",
    ),
    feature(
        "HTTPRoutePortRedirect",
        Level::Extended,
        "tests/gateway_api_filters.rs::request_redirects_build_location_from_the_listener_port",
    ),
    feature(
        "HTTPRouteQueryParamMatching",
        Level::Extended,
        "tests/gateway_api_matching.rs::header_query_and_method_matches_follow_gateway_api_precedence",
    ),
    feature(
        "HTTPRouteRequestMirror",
        Level::Extended,
        "tenant-router/tests/router/filters.rs::request_mirror_sends_a_copy_and_the_answer_comes_from_the_backend",
    ),
    feature(
        "HTTPRouteRequestTimeout",
        Level::Extended,
        "tenant-router/tests/router/backend_faults.rs::unreachable_backend_is_503_and_deadline_is_504",
    ),
    feature(
        "HTTPRouteResponseHeaderModification",
        Level::Extended,
        "tests/gateway_api_filters.rs::request_and_response_header_modifiers_edit_headers",
    ),
    feature(
        "HTTPRouteSchemeRedirect",
        Level::Extended,
        "tests/gateway_api_filters.rs::request_redirects_build_location_from_the_listener_port",
    ),
    feature(
        "ReferenceGrant",
        Level::Core,
        "tests/gateway_api_filters.rs::cross_namespace_backend_needs_a_reference_grant",
    ),
    feature(
        "TLSRoute",
        Level::Core,
        "tests/passthrough.rs::tls_route_passthrough_delivers_the_clients_bytes_unchanged",
    ),
];

/// The names of [`SUPPORTED_FEATURES`], in order.
pub fn supported_feature_names() -> impl Iterator<Item = &'static str> {
    SUPPORTED_FEATURES.iter().map(|f| f.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_features_are_sorted_and_unique() {
        let names: Vec<&str> = supported_feature_names().collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            names, sorted,
            "SUPPORTED_FEATURES must be sorted by name, without duplicates"
        );
    }
}
