//! [`RateLimiter`]: a token bucket per key, in a table of bounded size. A bucket holds up to
//! `burst` tokens, refills at `per_second`, and each admitted event takes one. Buckets that are
//! full again (their key was idle long enough) are evicted when room is needed; when the table is
//! full of busy buckets a new key is admitted untracked (fail-open, see the crate's README).

use crate::shards::{Shards, SHARDS};
use hashbrown::HashTable;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How often a full shard may be swept for idle buckets: a sweep costs the shard's size, so a flood
/// of new keys into a full table cannot make every admission pay for one.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// A rate: `per_second` events on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Tokens added per second.
    pub per_second: u32,
    /// Most tokens a bucket holds (events allowed at once after an idle period).
    pub burst: u32,
}

/// What [`RateLimiter::check`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Within the key's rate; a token was taken.
    Allowed,
    /// The key's bucket is empty: refuse.
    Limited,
    /// The table is full of busy buckets: admitted without a bucket (fail-open); count it.
    Untracked,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

#[derive(Debug)]
struct RateShard<K> {
    /// `(key, bucket)` by the key's hash (see [`Shards`]).
    buckets: HashTable<(K, Bucket)>,
    last_sweep: Option<Instant>,
}

/// Token buckets per key, at most `capacity` of them.
#[derive(Debug)]
pub struct RateLimiter<K> {
    shards: Shards<RateShard<K>>,
    limit: RateLimit,
    shard_capacity: usize,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter of `limit` per key holding at most `capacity` buckets (rounded up to a multiple of
    /// the shard count).
    pub fn new(limit: RateLimit, capacity: usize) -> Self {
        Self {
            shards: Shards::new(|| RateShard {
                buckets: HashTable::new(),
                last_sweep: None,
            }),
            limit,
            shard_capacity: capacity.div_ceil(SHARDS).max(1),
        }
    }

    /// Takes a token from `key`'s bucket at time `now`.
    pub fn check(&self, key: K, now: Instant) -> RateDecision {
        let limit = self.limit;
        let hash = self.shards.hash(&key);
        let mut shard = self.shards.lock(hash);
        if let Some((_, bucket)) = shard.buckets.find_mut(hash, |(k, _)| *k == key) {
            refill(bucket, limit, now);
            return if bucket.tokens >= 1.0 {
                bucket.tokens -= 1.0;
                RateDecision::Allowed
            } else {
                RateDecision::Limited
            };
        }
        if limit.burst == 0 {
            return RateDecision::Limited;
        }
        if shard.buckets.len() >= self.shard_capacity && !sweep(&mut shard, limit, now) {
            return RateDecision::Untracked;
        }
        let bucket = Bucket {
            tokens: f64::from(limit.burst) - 1.0,
            updated: now,
        };
        shard
            .buckets
            .insert_unique(hash, (key, bucket), |(k, _)| self.shards.hash(k));
        RateDecision::Allowed
    }

    /// Buckets in the table.
    pub fn tracked(&self) -> usize {
        self.shards.each().map(|shard| shard.buckets.len()).sum()
    }
}

/// Adds the tokens earned since the bucket was last updated, up to the burst.
fn refill(bucket: &mut Bucket, limit: RateLimit, now: Instant) {
    let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
    bucket.tokens =
        (bucket.tokens + elapsed * f64::from(limit.per_second)).min(f64::from(limit.burst));
    // Readings from different threads' clocks may arrive out of order: time never goes back.
    bucket.updated = bucket.updated.max(now);
}

/// Evicts the buckets that are full again, at most once per [`SWEEP_INTERVAL`]; whether there is
/// room for one more afterwards.
fn sweep<K>(shard: &mut RateShard<K>, limit: RateLimit, now: Instant) -> bool {
    let before = shard.buckets.len();
    let due = shard
        .last_sweep
        .is_none_or(|last| now.saturating_duration_since(last) >= SWEEP_INTERVAL);
    if due {
        shard.last_sweep = Some(now);
        shard.buckets.retain(|(_, bucket)| {
            let mut b = *bucket;
            refill(&mut b, limit, now);
            b.tokens < f64::from(limit.burst)
        });
    }
    shard.buckets.len() < before
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        per_second: 10,
        burst: 3,
    };

    #[test]
    fn a_burst_is_allowed_then_the_rate() {
        let limiter = RateLimiter::new(LIMIT, 1000);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check("a", t0), RateDecision::Allowed);
        }
        assert_eq!(limiter.check("a", t0), RateDecision::Limited);
        assert_eq!(limiter.check("b", t0), RateDecision::Allowed, "per key");
        let later = t0 + Duration::from_millis(100);
        assert_eq!(
            limiter.check("a", later),
            RateDecision::Allowed,
            "one token per 100 ms"
        );
        assert_eq!(limiter.check("a", later), RateDecision::Limited);
    }

    #[test]
    fn a_reading_older_than_the_last_refills_nothing_twice() {
        // Workers read their own clocks: a check may carry an earlier time than the one before.
        let limiter = RateLimiter::new(LIMIT, 1000);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check("a", t0), RateDecision::Allowed);
        }
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(limiter.check("a", t1), RateDecision::Allowed);
        let late = t0 + Duration::from_millis(50);
        assert_eq!(limiter.check("a", late), RateDecision::Limited);
        // 50 ms after t1 is half a token: the 50 ms before t1 were already counted.
        let t2 = t1 + Duration::from_millis(50);
        assert_eq!(limiter.check("a", t2), RateDecision::Limited);
    }

    #[test]
    fn idle_buckets_make_room_and_a_full_table_fails_open() {
        let limiter = RateLimiter::new(LIMIT, SHARDS);
        let t0 = Instant::now();
        // Fill the table with busy buckets (each key spent a token): new keys go untracked.
        let mut untracked = 0;
        for key in 0..10 * SHARDS {
            match limiter.check(key, t0) {
                RateDecision::Allowed => {}
                RateDecision::Untracked => untracked += 1,
                RateDecision::Limited => panic!("a new key is never limited"),
            }
        }
        assert!(untracked > 0, "the table is bounded");
        assert!(limiter.tracked() <= SHARDS);
        // Once the buckets are full again they are evicted for new keys.
        let idle = t0 + Duration::from_secs(1);
        assert_eq!(limiter.check(usize::MAX, idle), RateDecision::Allowed);
        assert!(limiter.tracked() <= SHARDS);
    }

    proptest::proptest! {
        /// Any sequence of checks across a few keys, at any spacing, decides as a plain token
        /// bucket per key does (no capacity pressure: the table has room for every key), and the
        /// table holds exactly the keys checked since their bucket was last full.
        #[test]
        fn decisions_agree_with_a_plain_bucket_per_key(
            per_second in 1u32..50,
            burst in 0u32..4,
            steps in proptest::collection::vec((0u8..5, 0u64..400), 0..80),
        ) {
            let limit = RateLimit { per_second, burst };
            let limiter = RateLimiter::new(limit, 1000);
            let mut model: std::collections::HashMap<u8, Bucket> = std::collections::HashMap::new();
            let mut now = Instant::now();
            for (key, gap_ms) in steps {
                now += Duration::from_millis(gap_ms);
                let expected = match model.get_mut(&key) {
                    Some(bucket) => {
                        refill(bucket, limit, now);
                        if bucket.tokens >= 1.0 {
                            bucket.tokens -= 1.0;
                            RateDecision::Allowed
                        } else {
                            RateDecision::Limited
                        }
                    }
                    None if burst == 0 => RateDecision::Limited,
                    None => {
                        let tokens = f64::from(burst) - 1.0;
                        model.insert(key, Bucket { tokens, updated: now });
                        RateDecision::Allowed
                    }
                };
                proptest::prop_assert_eq!(limiter.check(key, now), expected);
                proptest::prop_assert_eq!(limiter.tracked(), model.len());
            }
        }
    }
}
