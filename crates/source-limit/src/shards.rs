//! [`Shards`]: a fixed number of mutex-protected maps, one chosen by the key's hash, so that
//! connections from different sources rarely wait for the same lock.

use std::hash::{BuildHasher, Hash};
use std::sync::{Mutex, MutexGuard};

/// Shards per table: a power of two well above the worker threads of a data-plane process.
pub(crate) const SHARDS: usize = 16;

/// `SHARDS` values of `T`, chosen by a key's hash.
///
/// The shard is picked with foldhash (randomly seeded), not SipHash: a shard is only a lock, so a
/// source that lands many keys in one shard gains nothing but its own waiting; the maps inside
/// keep std's SipHash, which is what stops a peer choosing keys that collide.
#[derive(Debug)]
pub(crate) struct Shards<T> {
    shards: Box<[Mutex<T>]>,
    hasher: foldhash::fast::RandomState,
}

impl<T> Shards<T> {
    /// `SHARDS` shards, each made by `make`.
    pub(crate) fn new(mut make: impl FnMut() -> T) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(make())).collect(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// The locked shard of `key`. A poisoned lock only means another thread panicked while it
    /// held it; counts stay usable.
    pub(crate) fn lock<K: Hash>(&self, key: &K) -> MutexGuard<'_, T> {
        let hash = self.hasher.hash_one(key);
        // The remainder is below SHARDS, so it fits.
        let index = usize::try_from(hash % SHARDS as u64).unwrap_or(0);
        self.shards[index]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every shard, one after the other.
    pub(crate) fn each(&self) -> impl Iterator<Item = MutexGuard<'_, T>> {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}
