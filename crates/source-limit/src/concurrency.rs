//! [`ConcurrencyLimiter`]: at most `limit` concurrent holders per key. A holder is an RAII
//! [`ConcurrencyGuard`]; a key's entry exists only while it has holders, so the table never holds
//! more entries than there are open guards.
//!
//! A key is hashed once, when its slot is taken (see [`Shards`]), and the guard keeps the hash, so
//! giving the slot back hashes nothing.

use crate::shards::Shards;
use hashbrown::hash_table::{Entry, HashTable};
use std::hash::Hash;
use std::sync::Arc;

/// Counts concurrent holders per key and refuses the holder beyond `limit`.
#[derive(Debug)]
pub struct ConcurrencyLimiter<K> {
    /// `(key, holders)` by the key's hash.
    shards: Shards<HashTable<(K, usize)>>,
    limit: usize,
}

impl<K: Hash + Eq + Clone> ConcurrencyLimiter<K> {
    /// A limiter allowing `limit` concurrent holders per key (0 refuses every one).
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            shards: Shards::new(HashTable::new),
            limit,
        })
    }

    /// The most concurrent holders per key.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Takes one of `key`'s slots, or `None` when it already has `limit` holders.
    pub fn try_acquire(self: &Arc<Self>, key: K) -> Option<ConcurrencyGuard<K>> {
        let hash = self.shards.hash(&key);
        let mut table = self.shards.lock(hash);
        let rehash = |(k, _): &(K, usize)| self.shards.hash(k);
        match table.entry(hash, |(k, _)| *k == key, rehash) {
            Entry::Occupied(mut held) if held.get().1 < self.limit => held.get_mut().1 += 1,
            Entry::Occupied(_) => return None,
            Entry::Vacant(_) if self.limit == 0 => return None,
            Entry::Vacant(free) => {
                free.insert((key.clone(), 1));
            }
        }
        drop(table);
        Some(ConcurrencyGuard {
            limiter: Arc::clone(self),
            key,
            hash,
        })
    }

    /// Current holders of `key`.
    pub fn holders(&self, key: &K) -> usize {
        let hash = self.shards.hash(key);
        let table = self.shards.lock(hash);
        table.find(hash, |(k, _)| k == key).map_or(0, |(_, n)| *n)
    }

    /// Keys with at least one holder (the table's size).
    pub fn keys(&self) -> usize {
        self.shards.each().map(|table| table.len()).sum()
    }

    fn release(&self, key: &K, hash: u64) {
        let mut table = self.shards.lock(hash);
        if let Ok(mut held) = table.find_entry(hash, |(k, _)| k == key) {
            let holders = &mut held.get_mut().1;
            *holders = holders.saturating_sub(1);
            if *holders == 0 {
                held.remove();
            }
        }
    }
}

/// One held slot of a key; released when dropped.
#[derive(Debug)]
pub struct ConcurrencyGuard<K: Hash + Eq + Clone> {
    limiter: Arc<ConcurrencyLimiter<K>>,
    key: K,
    /// The key's hash in the limiter, kept so that the release hashes nothing.
    hash: u64,
}

impl<K: Hash + Eq + Clone> ConcurrencyGuard<K> {
    /// The key this slot counts against.
    pub fn key(&self) -> &K {
        &self.key
    }
}

impl<K: Hash + Eq + Clone> Drop for ConcurrencyGuard<K> {
    fn drop(&mut self) {
        self.limiter.release(&self.key, self.hash);
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

    proptest::proptest! {
        /// Any sequence of takes and gives back across a few keys agrees with a plain count per
        /// key: a take succeeds exactly below the limit, and the table holds exactly the keys
        /// with holders.
        #[test]
        fn counts_agree_with_a_plain_model(
            limit in 0usize..4,
            steps in proptest::collection::vec((0u8..5, proptest::bool::ANY), 0..80),
        ) {
            let limiter = ConcurrencyLimiter::new(limit);
            let mut held: Vec<Vec<ConcurrencyGuard<u8>>> = (0..5).map(|_| Vec::new()).collect();
            for (key, take) in steps {
                let mine = &mut held[usize::from(key)];
                if take {
                    let got = limiter.try_acquire(key);
                    proptest::prop_assert_eq!(got.is_some(), mine.len() < limit);
                    mine.extend(got);
                } else {
                    mine.pop();
                }
                for (k, guards) in held.iter().enumerate() {
                    let k = u8::try_from(k).expect("five keys");
                    proptest::prop_assert_eq!(limiter.holders(&k), guards.len());
                }
                let live = held.iter().filter(|g| !g.is_empty()).count();
                proptest::prop_assert_eq!(limiter.keys(), live);
            }
        }
    }
}
