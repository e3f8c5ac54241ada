//! Per-source connection accounting: who a connection is from (the PROXY header's source address)
//! and how many connections each source holds, so that one source cannot take every slot.
//!
//! A source is an IPv4 address or an IPv6 /64 (one subscriber's usual allocation); an IPv4-mapped
//! IPv6 address counts as its IPv4 address.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, PoisonError};

/// The unit a per-source limit counts: an IPv4 address or an IPv6 /64 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKey {
    /// One IPv4 address (also IPv4-mapped IPv6).
    V4(Ipv4Addr),
    /// The upper 64 bits of an IPv6 address.
    V6Prefix(u64),
}

impl SourceKey {
    /// The source a client address belongs to.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4),
                None => Self::V6Prefix((v6.to_bits() >> 64) as u64),
            },
        }
    }
}

/// Counts open connections per [`SourceKey`] and refuses a source's connection beyond `max`.
/// Only sources with an open connection are remembered, so its memory is bounded by the number
/// of open connections.
#[derive(Debug)]
pub struct SourceLimiter {
    max: usize,
    open: Mutex<HashMap<SourceKey, usize>>,
}

/// One connection counted against its source until dropped.
#[derive(Debug)]
pub struct SourcePermit {
    limiter: Arc<SourceLimiter>,
    key: SourceKey,
}

impl SourceLimiter {
    /// A limiter allowing at most `max` (at least 1) concurrent connections per source.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Counts one more connection from `ip`, or `None` when its source already holds `max`.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<SourcePermit> {
        let key = SourceKey::of(ip);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(key).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(SourcePermit {
            limiter: Arc::clone(self),
            key,
        })
    }

    /// Connections currently counted for `ip`'s source.
    pub fn open(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&SourceKey::of(ip)).copied().unwrap_or(0)
    }
}

impl Drop for SourcePermit {
    fn drop(&mut self) {
        let mut open = self
            .limiter
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_mapped_counts_as_ipv4_and_ipv6_counts_by_64() {
        assert_eq!(
            SourceKey::of(ip("::ffff:192.0.2.1")),
            SourceKey::of(ip("192.0.2.1"))
        );
        assert_eq!(
            SourceKey::of(ip("2001:db8:1:2::1")),
            SourceKey::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            SourceKey::of(ip("2001:db8:1:2::1")),
            SourceKey::of(ip("2001:db8:1:3::1"))
        );
    }

    #[test]
    fn a_source_at_its_cap_is_refused_and_others_are_not() {
        let limiter = SourceLimiter::new(2);
        let a = ip("192.0.2.1");
        let first = limiter.try_acquire(a).expect("first");
        let _second = limiter.try_acquire(a).expect("second");
        assert!(limiter.try_acquire(a).is_none(), "third refused");
        assert!(
            limiter.try_acquire(ip("192.0.2.2")).is_some(),
            "other source served"
        );
        drop(first);
        assert!(limiter.try_acquire(a).is_some(), "a freed slot is reusable");
    }

    #[test]
    fn sources_are_forgotten_when_their_last_connection_ends() {
        let limiter = SourceLimiter::new(1);
        drop(limiter.try_acquire(ip("2001:db8::1")));
        assert!(limiter.open.lock().unwrap().is_empty());
    }
}
