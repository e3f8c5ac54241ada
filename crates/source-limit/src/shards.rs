//! [`Shards`]: a fixed number of mutex-protected tables, and the keyed hash that picks a key's
//! shard and finds its entry in it. A key is hashed once per operation: the same hash chooses
//! the shard (bits the table does not use) and the bucket within it.
//!
//! The hash is std's randomly keyed SipHash, so a peer cannot choose keys that collide, in a
//! shard or in a table.

use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Shards per table: a power of two well above the worker threads of a data-plane process.
pub(crate) const SHARDS: usize = 16;

/// `SHARDS` values of `T`, chosen by a key's hash.
#[derive(Debug)]
pub(crate) struct Shards<T> {
    shards: Box<[Mutex<T>]>,
    hasher: RandomState,
}

impl<T> Shards<T> {
    /// `SHARDS` shards, each made by `make`.
    pub(crate) fn new(mut make: impl FnMut() -> T) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(make())).collect(),
            hasher: RandomState::new(),
        }
    }

    /// `key`'s keyed hash: what [`Shards::lock`] takes, and what finds the key in its table.
    pub(crate) fn hash<K: Hash + ?Sized>(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The locked shard of a key hash, chosen by bits the shard's table does not use for its
    /// bucket index (the low ones) or control byte (the top seven), so that the keys of one shard
    /// still spread in its table. A poisoned lock only means another thread panicked while it
    /// held it; counts stay usable.
    pub(crate) fn lock(&self, hash: u64) -> MutexGuard<'_, T> {
        // Below SHARDS, so it fits.
        let index = usize::try_from((hash >> 32) % SHARDS as u64).unwrap_or(0);
        lock(&self.shards[index])
    }

    /// Every shard, one after the other.
    pub(crate) fn each(&self) -> impl Iterator<Item = MutexGuard<'_, T>> {
        self.shards.iter().map(lock)
    }
}

fn lock<T>(shard: &Mutex<T>) -> MutexGuard<'_, T> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}
