//! Per-object exponential backoff for `error_policy`: the first retry after
//! a second, doubling up to five minutes, reset by a success.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The first retry delay.
pub const BASE: Duration = Duration::from_secs(1);
/// The longest retry delay.
pub const MAX: Duration = Duration::from_secs(300);

/// Failure counts by object key (`namespace/name`).
#[derive(Debug, Default)]
pub struct Backoffs {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoffs {
    /// Records a failure of `key`; returns how long to wait before retrying.
    pub fn failed(&self, key: &str) -> Duration {
        let n = match self.failures.lock() {
            Ok(mut f) => {
                let n = f.entry(key.to_owned()).or_insert(0);
                *n = n.saturating_add(1);
                *n
            }
            Err(_) => 1,
        };
        let factor = 1u32
            .checked_shl(n.saturating_sub(1).min(16))
            .unwrap_or(u32::MAX);
        BASE.saturating_mul(factor).min(MAX)
    }

    /// Forgets the failures of `key` after a success.
    pub fn succeeded(&self, key: &str) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_per_failure_caps_and_resets() {
        let b = Backoffs::default();
        assert_eq!(b.failed("a/x"), Duration::from_secs(1));
        assert_eq!(b.failed("a/x"), Duration::from_secs(2));
        assert_eq!(b.failed("a/x"), Duration::from_secs(4));
        assert_eq!(
            b.failed("a/y"),
            Duration::from_secs(1),
            "objects back off independently"
        );
        for _ in 0..20 {
            b.failed("a/x");
        }
        assert_eq!(b.failed("a/x"), MAX);
        b.succeeded("a/x");
        assert_eq!(b.failed("a/x"), Duration::from_secs(1));
    }
}
