//! How much the manager writes for each tenant: a token bucket of bytes
//! per tenant namespace (`--tenant-write-burst-bytes`, refilled at
//! `--tenant-write-bytes-per-minute`). Every write made for a tenant is
//! charged to its bucket; while the bucket is in debt, the tenant's copies
//! wait (requeued, no write, no worker held) until it has refilled. So a
//! tenant that rewrites its copies as fast as its identity can gets them
//! synced at a fixed pace: the revisions our writes leave in etcd between
//! two compactions, and the manager's work for it, are bounded whatever it
//! does, and other tenants' copies never queue behind its writes. A write
//! already decided is never cut short: the bucket may go into debt by what
//! the reconciles running at once write.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, Opts, Registry};

/// What one write costs a bucket beyond its object's bytes: the object's
/// own metadata, managedFields and status, and the event that may follow.
pub const WRITE_OVERHEAD: u64 = 2048;

/// The tenants' buckets.
pub struct WriteBudgets {
    /// Bytes per second (0: no pace).
    rate: f64,
    /// The most a bucket holds.
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// `<prefix>_tenant_writes_paced_total{namespace}`.
    paced: IntCounterVec,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl WriteBudgets {
    /// Buckets of `burst` bytes refilled at `per_minute` bytes a minute
    /// (0: none, nothing is paced); registers the counter of paced
    /// reconciles.
    pub fn register(
        per_minute: u64,
        burst: u64,
        prefix: &str,
        registry: &Registry,
    ) -> Result<Self, prometheus::Error> {
        let paced = IntCounterVec::new(
            Opts::new(
                format!("{prefix}_tenant_writes_paced_total"),
                "Reconciles put off because the tenant's write budget was spent (--tenant-write-bytes-per-minute), by namespace.",
            ),
            &["namespace"],
        )?;
        registry.register(Box::new(paced.clone()))?;
        Ok(Self {
            rate: per_minute as f64 / 60.0,
            burst: burst as f64,
            buckets: Mutex::default(),
            paced,
        })
    }

    fn with<T>(&self, namespace: &str, f: impl FnOnce(&mut Bucket, f64) -> T) -> Option<T> {
        if self.rate <= 0.0 {
            return None;
        }
        let mut buckets = self.buckets.lock().ok()?;
        let now = Instant::now();
        let bucket = buckets.entry(namespace.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        Some(f(bucket, self.rate))
    }

    /// How long `namespace`'s copies must wait before the manager writes
    /// for them again (`None`: they need not); counted when they must.
    pub fn wait(&self, namespace: &str) -> Option<Duration> {
        let wait = self
            .with(namespace, |b, rate| {
                (b.tokens < 0.0).then(|| Duration::from_secs_f64(-b.tokens / rate))
            })
            .flatten()?;
        self.paced.with_label_values(&[namespace]).inc();
        // Never a tight loop, never longer than a refill from empty.
        Some(wait.clamp(Duration::from_millis(100), Duration::from_secs(600)))
    }

    /// Charges `bytes` (and [`WRITE_OVERHEAD`]) written for `namespace`.
    pub fn charge(&self, namespace: &str, bytes: u64) {
        self.with(namespace, |b, _| {
            b.tokens -= (bytes + WRITE_OVERHEAD) as f64;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_writes_its_burst_then_waits_while_others_do_not() {
        let b = WriteBudgets::register(60_000, 10_000, "t", &Registry::new()).unwrap();
        assert_eq!(b.wait("a"), None);
        b.charge("a", 8_000 - WRITE_OVERHEAD);
        assert_eq!(b.wait("a"), None, "within the burst");
        b.charge("a", 4_000 - WRITE_OVERHEAD);
        // 2,000 bytes in debt at 1,000 a second: about two seconds.
        let wait = b.wait("a").expect("in debt");
        assert!(
            wait > Duration::from_millis(1_900) && wait <= Duration::from_secs(2),
            "{wait:?}"
        );
        assert_eq!(b.wait("b"), None, "another tenant is not held up");
        let unpaced = WriteBudgets::register(0, 0, "u", &Registry::new()).unwrap();
        unpaced.charge("a", 1 << 30);
        assert_eq!(unpaced.wait("a"), None);
    }
}
