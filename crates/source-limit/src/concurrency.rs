//! [`ConcurrencyLimiter`]: at most `limit` concurrent holders per key. A holder is an RAII
//! [`ConcurrencyGuard`]; a key's entry exists only while it has holders, so the table never holds
//! more entries than there are open guards.

use crate::shards::Shards;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

/// Counts concurrent holders per key and refuses the holder beyond `limit`.
#[derive(Debug)]
pub struct ConcurrencyLimiter<K> {
    counts: Shards<HashMap<K, usize>>,
    limit: usize,
}

impl<K: Hash + Eq + Clone> ConcurrencyLimiter<K> {
    /// A limiter allowing `limit` concurrent holders per key (0 refuses every one).
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            counts: Shards::new(HashMap::new),
            limit,
        })
    }

    /// The most concurrent holders per key.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Takes one of `key`'s slots, or `None` when it already has `limit` holders.
    pub fn try_acquire(self: &Arc<Self>, key: K) -> Option<ConcurrencyGuard<K>> {
        let mut counts = self.counts.lock(&key);
        let count = counts.entry(key.clone()).or_insert(0);
        if *count >= self.limit {
            if *count == 0 {
                counts.remove(&key);
            }
            return None;
        }
        *count += 1;
        drop(counts);
        Some(ConcurrencyGuard {
            limiter: self.clone(),
            key,
        })
    }

    /// Current holders of `key`.
    pub fn holders(&self, key: &K) -> usize {
        self.counts.lock(key).get(key).copied().unwrap_or(0)
    }

    /// Keys with at least one holder (the table's size).
    pub fn keys(&self) -> usize {
        self.counts.each().map(|shard| shard.len()).sum()
    }

    fn release(&self, key: &K) {
        let mut counts = self.counts.lock(key);
        if let Some(count) = counts.get_mut(key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(key);
            }
        }
    }
}

/// One held slot of a key; released when dropped.
#[derive(Debug)]
pub struct ConcurrencyGuard<K: Hash + Eq + Clone> {
    limiter: Arc<ConcurrencyLimiter<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> ConcurrencyGuard<K> {
    /// The key this slot counts against.
    pub fn key(&self) -> &K {
        &self.key
    }
}

impl<K: Hash + Eq + Clone> Drop for ConcurrencyGuard<K> {
    fn drop(&mut self) {
        self.limiter.release(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_beyond_the_limit_per_key_and_frees_on_drop() {
        let limiter = ConcurrencyLimiter::new(2);
        let a1 = limiter.try_acquire("a").unwrap();
        let _a2 = limiter.try_acquire("a").unwrap();
        assert!(limiter.try_acquire("a").is_none(), "third holder of a");
        let _b = limiter
            .try_acquire("b")
            .expect("another key is not affected");
        assert_eq!(limiter.holders(&"a"), 2);
        drop(a1);
        assert!(
            limiter.try_acquire("a").is_some(),
            "a freed slot is reusable"
        );
    }

    #[test]
    fn entries_vanish_when_their_last_holder_leaves() {
        let limiter = ConcurrencyLimiter::new(3);
        let guards: Vec<_> = (0..100).map(|i| limiter.try_acquire(i).unwrap()).collect();
        assert_eq!(limiter.keys(), 100);
        drop(guards);
        assert_eq!(limiter.keys(), 0, "memory is bounded by the open guards");
        let zero = ConcurrencyLimiter::new(0);
        assert!(zero.try_acquire(1).is_none());
        assert_eq!(zero.keys(), 0, "a refusal leaves no entry behind");
    }
}
