//! Per-source limits at the edge, so that one client address cannot starve the others: a token
//! bucket on new connections and a cap on connections still sniffing, both per source (an IPv4
//! address or an IPv6 /64, [`SourceKey`]), and a cap on forwarded connections per source and
//! tenant. Behind a trusted load balancer
//! ([`EdgeConfig::accept_proxy_from`](crate::EdgeConfig::accept_proxy_from)) the source is the
//! client its PROXY header declares: the balancer's own address is exempt (every client comes
//! through it), and the caps apply once the header has been read. The mechanism lives in
//! `bulkhead-source-limit`; this module decides who counts and what a refusal is called.

use crate::cidr::{any_contains, Cidr};
use crate::config::EdgeLimits;
use bulkhead_source_limit::{
    ConcurrencyGuard, ConcurrencyLimiter, RateDecision, RateLimit, RateLimiter, SourceKey,
};
use prometheus_client::metrics::counter::Counter;
use std::net::IpAddr;
use std::sync::Arc;

/// Refusal reason (metric label): the source opened connections faster than its rate.
pub(crate) const SOURCE_RATE_LIMIT: &str = "source_rate_limit";
/// Refusal reason: the source already has its maximum of connections still sniffing.
pub(crate) const SOURCE_SNIFFING_LIMIT: &str = "source_sniffing_limit";
/// Refusal reason: the source already has its maximum of forwarded connections to the tenant.
pub(crate) const SOURCE_TENANT_LIMIT: &str = "source_tenant_limit";

/// A connection's slot among its source's sniffing connections (`None` for an exempt source).
pub(crate) type SniffingSlot = Option<ConcurrencyGuard<SourceKey>>;
/// A connection's slot among its source's forwarded connections to one tenant.
pub(crate) type ForwardedSlot = Option<ConcurrencyGuard<(Arc<str>, SourceKey)>>;

/// The per-source limits of one edge.
#[derive(Debug)]
pub(crate) struct SourceLimits {
    /// Trusted load balancers: exempt, their clients are counted instead.
    exempt: Vec<Cidr>,
    rate: RateLimiter<SourceKey>,
    sniffing: Arc<ConcurrencyLimiter<SourceKey>>,
    forwarded: Arc<ConcurrencyLimiter<(Arc<str>, SourceKey)>>,
    /// Admissions the full rate table could not track.
    untracked: Counter,
}

impl SourceLimits {
    /// The limits of `limits`; peers in `exempt` are never limited per source.
    pub(crate) fn new(limits: &EdgeLimits, exempt: Vec<Cidr>, untracked: Counter) -> Self {
        let rate = RateLimit {
            per_second: limits.source_connect_rate,
            burst: limits.source_connect_burst,
        };
        Self {
            exempt,
            rate: RateLimiter::new(rate, limits.source_rate_table_size),
            sniffing: ConcurrencyLimiter::new(limits.max_sniffing_per_source),
            forwarded: ConcurrencyLimiter::new(limits.max_connections_per_source_per_tenant),
            untracked,
        }
    }

    /// Admits a new connection from `ip` to sniffing: takes a token of its rate and one of its
    /// sniffing slots. `Ok(None)` for an exempt source; `Err(reason)` when refused.
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<SniffingSlot, &'static str> {
        if any_contains(&self.exempt, ip) {
            return Ok(None);
        }
        let key = SourceKey::of(ip);
        match self.rate.check(key, bulkhead_net::clock::now()) {
            RateDecision::Allowed => {}
            RateDecision::Untracked => {
                self.untracked.inc();
            }
            RateDecision::Limited => return Err(SOURCE_RATE_LIMIT),
        }
        match self.sniffing.try_acquire(key) {
            Some(slot) => Ok(Some(slot)),
            None => Err(SOURCE_SNIFFING_LIMIT),
        }
    }

    /// Takes one of `ip`'s forwarded-connection slots for `tenant`. `Ok(None)` for an exempt
    /// source; `Err(reason)` when refused.
    pub(crate) fn forward(
        &self,
        tenant: &Arc<str>,
        ip: IpAddr,
    ) -> Result<ForwardedSlot, &'static str> {
        if any_contains(&self.exempt, ip) {
            return Ok(None);
        }
        let key = (Arc::clone(tenant), SourceKey::of(ip));
        match self.forwarded.try_acquire(key) {
            Some(slot) => Ok(Some(slot)),
            None => Err(SOURCE_TENANT_LIMIT),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> EdgeLimits {
        EdgeLimits {
            max_sniffing_per_source: 2,
            source_connect_rate: 1,
            source_connect_burst: 3,
            max_connections_per_source_per_tenant: 1,
            ..EdgeLimits::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sniffing_slots_are_per_source_and_mapped_ipv4_is_the_same_source() {
        let sources = SourceLimits::new(&limits(), Vec::new(), Counter::default());
        let _a = sources.admit(ip("192.0.2.1")).unwrap();
        let _b = sources.admit(ip("::ffff:192.0.2.1")).unwrap();
        assert_eq!(
            sources.admit(ip("192.0.2.1")).unwrap_err(),
            SOURCE_SNIFFING_LIMIT
        );
        assert!(sources.admit(ip("192.0.2.2")).unwrap().is_some());
    }

    #[test]
    fn the_rate_refuses_beyond_the_burst() {
        let sources = SourceLimits::new(&limits(), Vec::new(), Counter::default());
        for _ in 0..3 {
            drop(sources.admit(ip("2001:db8::1")).unwrap());
        }
        assert_eq!(
            sources.admit(ip("2001:db8::2")).unwrap_err(),
            SOURCE_RATE_LIMIT,
            "the same /64"
        );
        assert!(sources.admit(ip("2001:db8:0:1::1")).is_ok());
    }

    #[test]
    fn trusted_balancers_are_exempt_and_their_clients_are_not() {
        let exempt = vec!["10.0.0.0/8".parse().unwrap()];
        let sources = SourceLimits::new(&limits(), exempt, Counter::default());
        for _ in 0..10 {
            assert!(sources.admit(ip("10.1.1.1")).unwrap().is_none());
            assert!(sources
                .forward(&"acme".into(), ip("10.1.1.1"))
                .unwrap()
                .is_none());
        }
        let held = sources.forward(&"acme".into(), ip("203.0.113.7")).unwrap();
        assert_eq!(
            sources
                .forward(&"acme".into(), ip("203.0.113.7"))
                .unwrap_err(),
            SOURCE_TENANT_LIMIT
        );
        assert!(
            sources.forward(&"globex".into(), ip("203.0.113.7")).is_ok(),
            "per tenant"
        );
        drop(held);
        assert!(sources.forward(&"acme".into(), ip("203.0.113.7")).is_ok());
    }
}
