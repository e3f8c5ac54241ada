//! Per-source limits shared by every tier: who a connection is from ([`SourceKey`]: an IPv4
//! address, or an IPv6 /64), how many connections each source may hold at once
//! ([`ConcurrencyLimiter`], RAII guards, memory bounded by the open connections) and how fast it may
//! open new ones ([`RateLimiter`], a token bucket per source in a bounded table that fails open when
//! full). The keys are generic so a caller can scope a limit, e.g. per tenant and source.
#![forbid(unsafe_code)]

mod concurrency;
mod key;
mod rate;
mod shards;

pub use concurrency::{ConcurrencyGuard, ConcurrencyLimiter};
pub use key::SourceKey;
pub use rate::{RateDecision, RateLimit, RateLimiter};
