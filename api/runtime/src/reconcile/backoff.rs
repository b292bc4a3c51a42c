//! Per-object exponential backoff for `error_policy`: the first retry after
//! a second, doubling up to five minutes, reset by a success. And the
//! backoff of the watches themselves ([`WatchBackoff`]). Every delay is
//! jittered ([`jittered`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The first retry delay.
pub const BASE: Duration = Duration::from_secs(1);
/// The longest retry delay.
pub const MAX: Duration = Duration::from_secs(300);

/// How a watch retries after its API server went away: 250 ms doubling to
/// 5 s, reset by the first event after. kube's default grows to 30 s, which
/// the chaos run measured as the bulk of the time to converge after an API
/// server restart (the watch, not the work, was waiting); one request per
/// watch every 5 s during an outage costs an API server nothing.
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    next: Duration,
}

impl WatchBackoff {
    /// The first delay.
    pub const FIRST: Duration = Duration::from_millis(250);
    /// The longest delay.
    pub const MAX: Duration = Duration::from_secs(5);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = self.next;
        self.next = (now * 2).min(Self::MAX);
        Some(jittered(now))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// `delay` less a random part of its half: many clients that failed
/// together (every tenant's ccm after a management outage) then retry
/// spread over the second half of the delay, not all at once.
pub fn jittered(delay: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // Each RandomState holds fresh random keys: a random number without a
    // dependency for it.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(delay.subsec_nanos());
    let fraction = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
    delay.mul_f64(0.5 + fraction / 2.0)
}

/// Failure counts by object key (`namespace/name`), and what was last
/// logged of each object's failure.
#[derive(Debug, Default)]
pub struct Backoffs {
    failures: Mutex<HashMap<String, Failing>>,
}

/// One object's failures so far.
#[derive(Debug, Default)]
struct Failing {
    /// Failed attempts since the last success.
    attempts: u32,
    /// A hash of the failure last logged in full.
    told: Option<u64>,
}

/// Whether a failure is news: logged in full only then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Telling {
    /// Not logged for this object since its last success: log it.
    New,
    /// Logged already, word for word: `attempts` failures so far.
    Again {
        /// Failed attempts since the last success, this one not counted.
        attempts: u32,
    },
}

impl Backoffs {
    /// Records a failure of `key`; returns how long to wait before retrying.
    pub fn failed(&self, key: &str) -> Duration {
        let n = match self.failures.lock() {
            Ok(mut f) => {
                let e = f.entry(key.to_owned()).or_default();
                e.attempts = e.attempts.saturating_add(1);
                e.attempts
            }
            Err(_) => 1,
        };
        let factor = 1u32
            .checked_shl(n.saturating_sub(1).min(16))
            .unwrap_or(u32::MAX);
        jittered(BASE.saturating_mul(factor).min(MAX))
    }

    /// Whether `text`, a failure of `key` about to be logged, is news: the
    /// same failure retried for ever (a copy the policy refuses) is logged
    /// in full once per start of the controllers (these backoffs are
    /// theirs), not on every retry or relist.
    pub fn telling(&self, key: &str, text: &str) -> Telling {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(text);
        let Ok(mut f) = self.failures.lock() else {
            return Telling::New;
        };
        let e = f.entry(key.to_owned()).or_default();
        if e.told == Some(hash) {
            Telling::Again {
                attempts: e.attempts,
            }
        } else {
            e.told = Some(hash);
            Telling::New
        }
    }

    /// Forgets every key `keep` says no to (objects gone from the caches:
    /// a deleted object's failures would otherwise stay for good).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        if let Ok(mut f) = self.failures.lock() {
            f.retain(|k, _| keep(k));
        }
    }

    /// How many objects have failures recorded.
    pub fn len(&self) -> usize {
        self.failures.lock().map(|f| f.len()).unwrap_or(0)
    }

    /// Whether no object has failures recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets the failures of `key` after a success; returns how many
    /// attempts had failed before it, if a failure of it was logged.
    pub fn succeeded(&self, key: &str) -> Option<u32> {
        let e = self.failures.lock().ok()?.remove(key)?;
        e.told.map(|_| e.attempts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_retries_fast_and_never_waits_more_than_five_seconds() {
        use kube::runtime::utils::Backoff as _;
        let mut b = WatchBackoff::default();
        let delays: Vec<Duration> = b.by_ref().take(7).collect();
        let within = |d: Duration, of: Duration| d >= of / 2 && d <= of;
        assert!(within(delays[0], Duration::from_millis(250)), "{delays:?}");
        assert!(within(delays[1], Duration::from_millis(500)), "{delays:?}");
        assert!(delays.iter().all(|d| *d <= WatchBackoff::MAX));
        assert!(within(delays[6], WatchBackoff::MAX), "{delays:?}");
        b.reset();
        assert!(within(b.next().unwrap(), WatchBackoff::FIRST));
    }

    #[test]
    fn retries_of_many_clients_spread_over_the_second_half_of_the_delay() {
        let delay = Duration::from_secs(8);
        let draws: Vec<Duration> = (0..1000).map(|_| jittered(delay)).collect();
        assert!(draws.iter().all(|d| *d >= delay / 2 && *d <= delay));
        // Spread, not bunched: every quarter of the range gets some.
        for q in 0..4u32 {
            let (lo, hi) = (delay / 2 + delay / 8 * q, delay / 2 + delay / 8 * (q + 1));
            let n = draws.iter().filter(|d| **d >= lo && **d < hi).count();
            assert!(n > 150, "quarter {q}: {n} of 1000");
        }
    }

    #[test]
    fn the_same_failure_is_news_once_until_a_success_or_another_failure() {
        let b = Backoffs::default();
        assert_eq!(b.telling("a/x", "refused"), Telling::New);
        b.failed("a/x");
        assert_eq!(b.telling("a/x", "refused"), Telling::Again { attempts: 1 });
        b.failed("a/x");
        assert_eq!(b.telling("a/x", "other"), Telling::New, "another failure");
        assert_eq!(b.telling("a/y", "refused"), Telling::New, "another object");
        b.failed("a/x");
        assert_eq!(b.succeeded("a/x"), Some(3));
        assert_eq!(b.telling("a/x", "other"), Telling::New, "after a success");
        assert_eq!(b.succeeded("a/z"), None);
    }

    #[test]
    fn failures_of_objects_gone_are_forgotten() {
        let b = Backoffs::default();
        b.failed("SyncSecret/a/x");
        b.failed("SyncSecret/a/x");
        b.failed("SyncSecret/a/y");
        b.retain(|k| k.ends_with("/x"));
        assert_eq!(b.len(), 1);
        assert!(b.failed("SyncSecret/a/x") > b.failed("SyncSecret/a/y"));
    }

    #[test]
    fn doubles_per_failure_caps_and_resets() {
        // Each delay is jittered into the second half of its nominal value.
        let about = |d: Duration, nominal: Duration| d >= nominal / 2 && d <= nominal;
        let b = Backoffs::default();
        assert!(about(b.failed("a/x"), Duration::from_secs(1)));
        assert!(about(b.failed("a/x"), Duration::from_secs(2)));
        assert!(about(b.failed("a/x"), Duration::from_secs(4)));
        assert!(
            about(b.failed("a/y"), Duration::from_secs(1)),
            "objects back off independently"
        );
        for _ in 0..20 {
            b.failed("a/x");
        }
        assert!(about(b.failed("a/x"), MAX));
        b.succeeded("a/x");
        assert!(about(b.failed("a/x"), Duration::from_secs(1)));
    }
}
