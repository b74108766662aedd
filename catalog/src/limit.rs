//! Rate limits per API key: requests per second (GCRA, `governor`) and bytes of ingest bodies
//! per second; over the limit, a [`RateLimited`] refusal (429 with `Retry-After` over HTTP,
//! SQLSTATE `53400` over the Postgres protocol). One [`RateLimits`] serves both endpoints, so
//! a key has one budget wherever it is used.
//!
//! Each key has its own limit (`rate_limit = { requests_per_second = 50, burst = 100 }` on the
//! key in `tarn.toml`), else the server's `[rate_limit]`, which also bounds an open server's
//! callers (all of them together, as one). Publishable keys, which sit in public pages, get
//! [`RateLimit::PUBLISHABLE`] unless they say otherwise. Requests that need no key (health
//! checks, the console's files) are not limited.
//!
//! Ingest bytes are charged as a body is read: a request is admitted while the key's byte
//! budget is not overdrawn, and a large body may overdraw it, which the next requests wait
//! out. So a body larger than a second's budget still goes through, and chunked uploads are
//! counted like the others.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tarn_lake::{Classify, ErrorKind};

use crate::auth::{Caller, KeyRing, RateLimit};

/// A request over its caller's rate limit: when to try again, and which limit.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RateLimited {
    /// For the caller: whose limit, which, and when to retry.
    pub message: String,
    /// How long to wait, in whole seconds (rounded up, so a caller that waits is admitted).
    pub retry_after: Duration,
}

impl Classify for RateLimited {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Busy
    }

    fn retry_after(&self) -> Option<Duration> {
        Some(self.retry_after)
    }
}

/// The limiters of every key (and of anonymous callers of an open server).
pub struct RateLimits {
    keys: Vec<Option<Limiter>>,
    anonymous: Option<Limiter>,
}

/// One caller's limiter.
struct Limiter {
    requests: DefaultDirectRateLimiter,
    bytes: Option<Arc<ByteBudget>>,
    limit: RateLimit,
}

/// Bytes per second with a budget of one second's worth, which a large body may overdraw.
pub struct ByteBudget {
    per_second: f64,
    state: Mutex<(f64, Instant)>,
}

impl ByteBudget {
    fn new(per_second: u64) -> Self {
        let per_second = per_second as f64;
        ByteBudget { per_second, state: Mutex::new((per_second, Instant::now())) }
    }

    /// The budget now, refilled since it was last looked at.
    fn refill(&self, state: &mut (f64, Instant)) {
        let now = Instant::now();
        let elapsed = now.duration_since(state.1).as_secs_f64();
        state.0 = (state.0 + elapsed * self.per_second).min(self.per_second);
        state.1 = now;
    }

    /// `Err(wait)` while the budget is overdrawn.
    fn admit(&self) -> Result<(), Duration> {
        let mut state = self.state.lock().expect("byte budget");
        self.refill(&mut state);
        if state.0 >= 0.0 {
            Ok(())
        } else {
            Err(Duration::from_secs_f64(-state.0 / self.per_second))
        }
    }

    /// Takes `bytes` from the budget.
    pub fn charge(&self, bytes: usize) {
        let mut state = self.state.lock().expect("byte budget");
        self.refill(&mut state);
        state.0 -= bytes as f64;
    }
}

impl Limiter {
    fn new(limit: RateLimit) -> Self {
        let rate = NonZeroU32::new(limit.requests_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limit.burst()).unwrap_or(rate);
        Limiter {
            requests: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
            bytes: limit.ingest_bytes_per_second.map(|b| Arc::new(ByteBudget::new(b))),
            limit,
        }
    }
}

impl RateLimits {
    /// The limiters of `keys`' keys, with `default` for keys that set none (and, on an open
    /// server, for everyone).
    pub fn new(keys: &KeyRing, default: Option<RateLimit>) -> Self {
        let keys_limits =
            (0..keys.len()).map(|i| keys.rate_limit_of(i, default).map(Limiter::new)).collect();
        let anonymous = if keys.is_open() { default.map(Limiter::new) } else { None };
        RateLimits { keys: keys_limits, anonymous }
    }

    /// Admits a request of `caller` or refuses it; for an ingest request, answers the byte
    /// budget its body is charged to. `interface` (`http`, `pg`) labels the refusals counted.
    pub fn admit(
        &self,
        caller: Caller,
        ingest: bool,
        key_name: Option<&str>,
        interface: &'static str,
    ) -> Result<Option<Arc<ByteBudget>>, RateLimited> {
        let limiter = match caller {
            Caller::Anonymous => self.anonymous.as_ref(),
            Caller::Key(index) => self.keys.get(index).and_then(Option::as_ref),
        };
        let Some(limiter) = limiter else { return Ok(None) };
        let who = key_name.map_or("this server's callers".to_string(), |n| format!("key '{n}'"));
        if let Err(not_until) = limiter.requests.check() {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            return Err(too_many(
                format!(
                    "{who} is over its rate limit of {} requests per second (burst {}); retry in {} ms",
                    limiter.limit.requests_per_second,
                    limiter.limit.burst(),
                    wait.as_millis().max(1)
                ),
                wait,
                "requests",
                interface,
            ));
        }
        match (&limiter.bytes, ingest) {
            (Some(budget), true) => {
                budget.admit().map_err(|wait| {
                    too_many(
                        format!(
                            "{who} is over its ingest limit of {} bytes per second; retry in {} ms",
                            limiter.limit.ingest_bytes_per_second.unwrap_or(0),
                            wait.as_millis().max(1)
                        ),
                        wait,
                        "ingest_bytes",
                        interface,
                    )
                })?;
                Ok(Some(budget.clone()))
            }
            _ => Ok(None),
        }
    }
}

fn too_many(
    message: String,
    wait: Duration,
    limit: &'static str,
    interface: &'static str,
) -> RateLimited {
    metrics::counter!("tarn_rate_limited_total", "limit" => limit, "interface" => interface)
        .increment(1);
    RateLimited {
        message,
        retry_after: Duration::from_secs(wait.as_secs_f64().ceil().max(1.0) as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{hash_secret, KeySpec};

    fn ring(limit: Option<RateLimit>, publishable: bool) -> KeyRing {
        KeyRing::new(&[KeySpec {
            name: "k".into(),
            hash: hash_secret("tk_k"),
            scopes: vec!["ingest:*".into()],
            publishable,
            allowed_origins: if publishable { vec!["https://a.test".into()] } else { vec![] },
            rate_limit: limit,
        }])
        .unwrap()
    }

    #[test]
    fn a_burst_passes_then_429_with_retry_after() {
        let limit =
            RateLimit { requests_per_second: 2, burst: Some(3), ingest_bytes_per_second: None };
        let limits = RateLimits::new(&ring(Some(limit), false), None);
        for _ in 0..3 {
            limits.admit(Caller::Key(0), false, Some("k"), "http").unwrap();
        }
        let refused = limits.admit(Caller::Key(0), false, Some("k"), "http").err().unwrap();
        assert_eq!(refused.kind(), ErrorKind::Busy);
        assert_eq!(refused.retry_after, Duration::from_secs(1));
        assert!(
            refused
                .message
                .contains("key 'k' is over its rate limit of 2 requests per second (burst 3)"),
            "{}",
            refused.message
        );
    }

    #[test]
    fn publishable_keys_get_a_low_default_and_others_the_servers() {
        let open_default =
            RateLimit { requests_per_second: 1000, burst: None, ingest_bytes_per_second: None };
        let limits = RateLimits::new(&ring(None, true), Some(open_default));
        assert_eq!(limits.keys[0].as_ref().unwrap().limit, RateLimit::PUBLISHABLE);
        let limits = RateLimits::new(&ring(None, false), Some(open_default));
        assert_eq!(limits.keys[0].as_ref().unwrap().limit, open_default);
        assert!(
            limits.anonymous.is_none(),
            "a server with keys limits keys, not anonymous callers"
        );
        let open = RateLimits::new(&KeyRing::default(), Some(open_default));
        assert!(open.anonymous.is_some());
        assert!(RateLimits::new(&KeyRing::default(), None).anonymous.is_none());
    }

    #[test]
    fn a_large_body_overdraws_the_byte_budget_and_the_next_request_waits() {
        let limit = RateLimit {
            requests_per_second: 1000,
            burst: None,
            ingest_bytes_per_second: Some(1000),
        };
        let limits = RateLimits::new(&ring(Some(limit), false), None);
        let budget = limits.admit(Caller::Key(0), true, Some("k"), "http").unwrap().unwrap();
        budget.charge(3000);
        let refused = limits.admit(Caller::Key(0), true, Some("k"), "http").err().unwrap();
        assert_eq!(refused.retry_after, Duration::from_secs(2), "{}", refused.message);
        // Requests that are not ingest are not charged bytes.
        assert!(limits.admit(Caller::Key(0), false, Some("k"), "http").unwrap().is_none());
    }
}
