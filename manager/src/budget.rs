//! How much the manager writes for each tenant: a token bucket of bytes
//! per tenant namespace, as large as `--tenant-write-burst-bytes-per-copy`
//! times the tenant's quota of copies (so that a tenant may have its whole
//! quota synced at once, whatever quota the platform gave it), refilled at
//! `--tenant-write-bytes-per-minute`. Every write made for a tenant is
//! charged to its bucket by the bytes it stores; while the bucket is in
//! debt, the tenant's copies wait (requeued, no write, no worker held)
//! until it has refilled. So a tenant that rewrites its copies as fast as
//! its identity can, or makes and deletes them in a loop, gets them synced
//! at a fixed pace: the revisions our writes leave in etcd between two
//! compactions, and the manager's work for it, are bounded whatever it
//! does, and other tenants' copies never queue behind its writes. A write
//! already decided is never cut short: the bucket may go into debt by what
//! the reconciles running at once write.
//!
//! The tenant's own updates and deletions of its copies are charged to
//! the same bucket, as the copies' watch shows them (every change no
//! write of ours made; a create replaces no revision). The manager cannot
//! hold those back itself: it lists the tenant as paused
//! ([`WriteBudgets::paused`], kept in the pause policy's params by
//! [`crate::pause`]) and the API server refuses its updates of copies once
//! the bucket is down to its last quarter (the reserve, which takes in
//! what the tenant gets admitted before the first refusal), and its
//! creates too once the bucket is in debt (so that a whole quota at every
//! bound, whose first sync the burst is sized for, can be created at
//! once). Each is lifted once the bucket holds a burst per copy more than
//! where it began: a paused tenant is let through for at least one more
//! copy at every bound, and the list changes at most twice per burst it
//! spends.
//!
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ResourceQuota;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Api, Client};
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use syncsecret_api::SyncSecret;
use syncsecret_api::admission::{Pause, QUOTA_NAME};
use syncsecret_api::bounds::{ENTRY_BYTES, WRITE_BURST_BYTES};
use syncsecret_api::payload::Payload;
use syncsecret_api::policy::secret_data_bytes;
use syncsecret_runtime::cache::summary::Summary;

/// What one write costs a bucket beyond the object it stores: a status
/// that grows, an event that may follow, a deletion's tombstone.
pub const WRITE_OVERHEAD: u64 = 1024;

/// The share of a bucket kept for what a tenant gets admitted between the
/// moment it is listed as paused and the API server's first refusal.
const RESERVE: f64 = 0.25;

/// How often a tenant's quota is read again.
const REREAD: Duration = Duration::from_secs(60);

/// The quota assumed where a tenant namespace has none (or it cannot be
/// read): the chart's default.
const NO_QUOTA: u64 = syncsecret_api::bounds::COPIES.default;

/// The resource the quota counts copies as.
const COUNTED: &str = "count/syncsecrets.kubelb.k8c.io";

/// What a write of the whole copy stores (a status, a finalizer): the copy
/// as the API server last sent it, its data, metadata, managedFields and
/// status; its data in base64 where that is not known.
pub fn copy_bytes(copy: &Summary<SyncSecret>) -> u64 {
    let data = (copy.payload.size as u64).saturating_mul(4) / 3;
    data.max(copy.stored_bytes as u64)
}

/// What a write of a copy's Secret stores: its keys and values, and its
/// managedFields naming each key again; the labels and annotations the
/// platform lets through (`metadata`), as the policy counts a copy's.
pub fn secret_bytes(payload: &Payload, metadata: &ObjectMeta) -> u64 {
    let data = secret_data_bytes(payload.size(), payload.key_bytes(), payload.data.len());
    let pairs = [&metadata.labels, &metadata.annotations]
        .into_iter()
        .flatten()
        .flatten()
        .map(|(k, v)| 2 * k.len() + v.len() + ENTRY_BYTES as usize)
        .sum::<usize>();
    (data + pairs) as u64
}

/// The tenants' buckets.
pub struct WriteBudgets {
    /// Bytes per second (0: no pace).
    rate: f64,
    /// A bucket's size per copy of the tenant's quota.
    per_copy: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// `<prefix>_tenant_writes_paced_total{namespace}`.
    paced: IntCounterVec,
    /// Woken when a bucket goes into its reserve: a tenant to pause.
    indebted: tokio::sync::Notify,
    /// `<prefix>_tenants_paused`.
    paused_tenants: IntGauge,
}

struct Bucket {
    tokens: f64,
    at: Instant,
    /// What of its writes the API server refuses (listed in the pause
    /// policy's params).
    paused: Option<Pause>,
    /// The tenant's quota of copies, and when it was read (`None`: never).
    quota: u64,
    read: Option<Instant>,
}

impl WriteBudgets {
    /// Buckets of `per_copy` bytes per copy of each tenant's quota,
    /// refilled at `per_minute` bytes a minute (0: none, nothing is
    /// paced); registers the counter of paced reconciles.
    pub fn register(
        per_minute: u64,
        per_copy: u64,
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
        let paused_tenants = IntGauge::new(
            format!("{prefix}_tenants_paused"),
            "Tenant namespaces whose writes of copies the API server refuses until their write budget has refilled (listed in --write-pause-config-map).",
        )?;
        registry.register(Box::new(paused_tenants.clone()))?;
        Ok(Self {
            rate: per_minute as f64 / 60.0,
            per_copy: per_copy as f64,
            buckets: Mutex::default(),
            paced,
            indebted: tokio::sync::Notify::new(),
            paused_tenants,
        })
    }

    /// Whether `namespace`'s quota should be read (never yet, or a while
    /// ago).
    fn quota_stale(&self, namespace: &str) -> bool {
        self.rate > 0.0
            && self.buckets.lock().is_ok_and(|b| {
                b.get(namespace)
                    .and_then(|b| b.read)
                    .is_none_or(|t| t.elapsed() > REREAD)
            })
    }

    /// Reads `namespace`'s quota of copies (the platform's ResourceQuota),
    /// if it was not read lately. Its absence, or a failure to read it,
    /// counts as the chart's default quota.
    pub async fn read_quota(&self, client: &Client, namespace: &str) {
        if !self.quota_stale(namespace) {
            return;
        }
        let api: Api<ResourceQuota> = Api::namespaced(client.clone(), namespace);
        let quota = match api.get_opt(QUOTA_NAME).await {
            Ok(q) => q
                .and_then(|q| q.spec)
                .and_then(|s| s.hard)
                .and_then(|h| h.get(COUNTED).cloned())
                .and_then(|q| q.0.parse::<u64>().ok())
                .unwrap_or(NO_QUOTA),
            Err(e) => {
                tracing::debug!(%namespace, error = %syncsecret_runtime::explain(&e), "cannot read the tenant's quota; its write budget assumes {NO_QUOTA} copies");
                NO_QUOTA
            }
        };
        self.set_quota(namespace, quota);
    }

    /// Records `namespace`'s quota: a bucket starts full (as large as the
    /// default quota's until its own is read, keeping what was charged
    /// meanwhile), and a quota the platform raised brings its copies'
    /// share at once.
    fn set_quota(&self, namespace: &str, quota: u64) {
        let per_copy = self.per_copy;
        self.with(namespace, |b, _, _| {
            if quota > b.quota {
                b.tokens += (quota - b.quota) as f64 * per_copy;
            }
            b.tokens = b.tokens.min(quota as f64 * per_copy);
            b.quota = quota;
            b.read = Some(Instant::now());
        });
    }

    fn with<T>(&self, namespace: &str, f: impl FnOnce(&mut Bucket, f64, f64) -> T) -> Option<T> {
        if self.rate <= 0.0 {
            return None;
        }
        let mut buckets = self.buckets.lock().ok()?;
        let now = Instant::now();
        let bucket = buckets.entry(namespace.to_owned()).or_insert(Bucket {
            tokens: NO_QUOTA as f64 * self.per_copy,
            at: now,
            paused: None,
            quota: NO_QUOTA,
            read: None,
        });
        let capacity = self.refill(bucket, now);
        Some(f(bucket, self.rate, capacity))
    }

    /// Refills `bucket` for the time since it was last looked at, up to
    /// its capacity (its quota's copies' bursts), which it returns.
    fn refill(&self, bucket: &mut Bucket, now: Instant) -> f64 {
        let capacity = bucket.quota as f64 * self.per_copy;
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + refill).min(capacity);
        bucket.at = now;
        capacity
    }

    /// How long `namespace`'s copies must wait before the manager writes
    /// for them again (`None`: they need not); counted when they must.
    pub fn wait(&self, namespace: &str) -> Option<Duration> {
        let wait = self
            .with(namespace, |b, rate, _| {
                (b.tokens < 0.0).then(|| Duration::from_secs_f64(-b.tokens / rate))
            })
            .flatten()?;
        self.paced.with_label_values(&[namespace]).inc();
        // Never a tight loop, and looked at again when the quota is read
        // again (the platform may have raised it).
        Some(wait.clamp(Duration::from_millis(100), REREAD))
    }

    /// Charges `bytes` (and [`WRITE_OVERHEAD`]) written for `namespace`,
    /// at most a burst per copy (the default's, if this one is smaller):
    /// only a copy beyond the admission policy's bounds stores more (an
    /// admin's, or one stored before the policy), and what an admin writes
    /// is not the tenant's churn to pay for.
    pub fn charge(&self, namespace: &str, bytes: u64) {
        let most = self.per_copy.max(WRITE_BURST_BYTES.default as f64);
        let indebted = self.with(namespace, |b, _, capacity| {
            let was = b.tokens;
            b.tokens -= ((bytes + WRITE_OVERHEAD) as f64).min(most);
            let reserve = capacity * RESERVE;
            (was >= reserve && b.tokens < reserve) || (was >= 0.0 && b.tokens < 0.0)
        });
        if indebted == Some(true) {
            self.indebted.notify_one();
        }
    }

    /// Resolves when a bucket has gone into its reserve since the last
    /// call.
    pub async fn indebted(&self) {
        self.indebted.notified().await;
    }

    /// The tenant namespaces whose writes are to be refused, of those
    /// `acts_on` takes, each with what is refused and how long until all
    /// of it is lifted (see the module's documentation).
    pub fn paused(&self, acts_on: impl Fn(&str) -> bool) -> Vec<(String, Pause, Duration)> {
        if self.rate <= 0.0 {
            return Vec::new();
        }
        let Ok(mut buckets) = self.buckets.lock() else {
            return Vec::new();
        };
        let now = Instant::now();
        let mut out = Vec::new();
        for (namespace, b) in buckets.iter_mut().filter(|(ns, _)| acts_on(ns)) {
            let capacity = self.refill(b, now);
            let reserve = capacity * RESERVE;
            let lift = self.per_copy.min(capacity);
            b.paused = if b.tokens < 0.0
                || (b.paused == Some(Pause::CreatesAndUpdates) && b.tokens < lift)
            {
                Some(Pause::CreatesAndUpdates)
            } else if b.tokens < reserve || (b.paused.is_some() && b.tokens < reserve + lift) {
                Some(Pause::Updates)
            } else {
                None
            };
            if let Some(pause) = b.paused {
                let wait = (reserve + lift - b.tokens).max(0.0) / self.rate;
                out.push((namespace.clone(), pause, Duration::from_secs_f64(wait)));
            }
        }
        out.sort();
        out
    }

    /// `<prefix>_tenants_paused`, set by whoever keeps the list.
    pub fn paused_gauge(&self) -> IntGauge {
        self.paused_tenants.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRITE_BYTES_PER_MINUTE_DEFAULT: u64 =
        syncsecret_api::bounds::WRITE_BYTES_PER_MINUTE.default;

    #[test]
    fn a_tenant_writes_its_burst_then_waits_while_others_do_not() {
        // 10,000 bytes a copy, 100 copies: 1,000,000 at once, then 1,000 a
        // second.
        let b = WriteBudgets::register(60_000, 10_000, "t", &Registry::new()).unwrap();
        assert_eq!(b.wait("a"), None);
        for _ in 0..100 {
            b.charge("a", 10_000 - WRITE_OVERHEAD);
        }
        assert_eq!(b.wait("a"), None, "within the burst");
        b.charge("a", 2_000 - WRITE_OVERHEAD);
        // 2,000 bytes in debt at 1,000 a second: about two seconds.
        let wait = b.wait("a").expect("in debt");
        assert!(
            wait > Duration::from_millis(1_900) && wait <= Duration::from_secs(2),
            "{wait:?}"
        );
        // A write of a copy beyond the policy's bounds (an admin's) is
        // charged at most a burst per copy (the default's, being larger).
        b.charge("a", 1 << 30);
        let wait = b.wait("a").expect("in debt").as_secs_f64();
        let most = (2_000 + WRITE_BURST_BYTES.default) as f64 / 1_000.0;
        assert!(wait > most - 0.1 && wait <= most, "{wait} s");
        for _ in 0..10 {
            b.charge("a", 10_000);
        }
        assert_eq!(
            b.wait("a"),
            Some(REREAD),
            "looked at again when the quota is"
        );
        assert_eq!(b.wait("b"), None, "another tenant is not held up");
        let unpaced = WriteBudgets::register(0, 0, "u", &Registry::new()).unwrap();
        unpaced.charge("a", 1 << 30);
        assert_eq!(unpaced.wait("a"), None);
    }

    /// The default burst is one first sync of a copy at every bound, as a
    /// ccm writes it (with our finalizer): its Secret and its status. A
    /// tenant's whole quota at the bounds syncs at once; one written
    /// without our finalizer, a write more each, is paced.
    #[test]
    fn the_default_burst_syncs_a_copy_at_every_bound() {
        use syncsecret_api::bounds::{
            COPIES, DATA_BYTES, MANAGED_FIELDS_BYTES, METADATA_BYTES, WRITE_BURST_BYTES,
            WRITE_BYTES_PER_MINUTE,
        };
        // The copy as stored: its data, labels and annotations as the
        // policy counts them, managedFields beyond their names, 2 KiB of
        // the rest (name, UID, status and its message); the Secret at most
        // its data so counted (keys twice, values decoded).
        let copy =
            DATA_BYTES.default + METADATA_BYTES.default + MANAGED_FIELDS_BYTES.default + 2048;
        let secret = DATA_BYTES.default;
        let quota_synced = |burst: u64| {
            let b = WriteBudgets::register(
                WRITE_BYTES_PER_MINUTE.default,
                burst,
                "t",
                &Registry::new(),
            )
            .unwrap();
            for _ in 0..COPIES.default {
                b.charge("a", secret);
                b.charge("a", copy); // the status
            }
            b.wait("a").is_none()
        };
        assert!(
            quota_synced(WRITE_BURST_BYTES.default),
            "the whole quota synced at once"
        );
        // And little more: the burst is what etcd holds until compaction.
        assert!(!quota_synced(WRITE_BURST_BYTES.default - 2048));
    }

    #[test]
    fn a_tenant_in_its_reserve_is_refused_updates_and_in_debt_creates_too() {
        // 1,000 bytes a second, 10,000 a copy, a quota of 4 copies: a
        // bucket of 40,000 with a reserve of 10,000.
        let b = WriteBudgets::register(60_000, 10_000, "t", &Registry::new()).unwrap();
        b.set_quota("a", 4);
        b.set_quota("b", 4);
        let pauses = |b: &WriteBudgets| -> Vec<(String, Pause)> {
            b.paused(|_| true)
                .into_iter()
                .map(|(ns, p, _)| (ns, p))
                .collect()
        };
        assert!(pauses(&b).is_empty());
        b.charge("a", 30_000 - WRITE_OVERHEAD);
        assert!(pauses(&b).is_empty(), "down to its reserve, not in it");
        b.charge("a", 2_000 - WRITE_OVERHEAD);
        let paused = b.paused(|_| true);
        let [(ns, Pause::Updates, wait)] = paused.as_slice() else {
            panic!("{paused:?}")
        };
        assert_eq!(ns, "a", "the other tenant is not paused");
        assert_eq!(b.wait("a"), None, "the manager still writes for it");
        // 8,000 left, 12,000 to refill to the reserve and a copy's burst.
        assert!(
            *wait > Duration::from_millis(11_900) && *wait <= Duration::from_secs(12),
            "{wait:?}"
        );
        assert!(b.paused(|ns| ns != "a").is_empty(), "another shard's");
        b.charge("a", 9_000 - WRITE_OVERHEAD);
        assert_eq!(pauses(&b), [("a".to_owned(), Pause::CreatesAndUpdates)]);
        // Out of debt, not yet a copy's burst: creates still refused.
        b.with("a", |b, _, _| b.tokens = 5_000.0);
        assert_eq!(pauses(&b), [("a".to_owned(), Pause::CreatesAndUpdates)]);
        b.with("a", |b, _, _| b.tokens = 10_000.0);
        assert_eq!(pauses(&b), [("a".to_owned(), Pause::Updates)]);
        // Back to its reserve but not a copy's burst beyond: updates
        // still refused.
        b.with("a", |b, _, _| b.tokens = 15_000.0);
        assert_eq!(pauses(&b), [("a".to_owned(), Pause::Updates)]);
        b.with("a", |b, _, _| b.tokens = 20_000.0);
        assert!(pauses(&b).is_empty(), "refilled");
    }

    #[test]
    fn a_whole_quota_at_every_bound_is_created_without_refusal() {
        use syncsecret_api::bounds::{COPIES, DATA_BYTES};
        let b = WriteBudgets::register(
            WRITE_BYTES_PER_MINUTE_DEFAULT,
            WRITE_BURST_BYTES.default,
            "t",
            &Registry::new(),
        )
        .unwrap();
        // Each first sync: its Secret and its status (see the next test).
        let copy = DATA_BYTES.default
            + syncsecret_api::bounds::METADATA_BYTES.default
            + syncsecret_api::bounds::MANAGED_FIELDS_BYTES.default
            + 2048;
        for _ in 0..COPIES.default {
            b.charge("a", DATA_BYTES.default);
            b.charge("a", copy);
            let creates_refused = b
                .paused(|_| true)
                .iter()
                .any(|(_, p, _)| *p == Pause::CreatesAndUpdates);
            assert!(!creates_refused, "a create of its quota refused");
        }
        assert!(!b.paused(|_| true).is_empty(), "its updates wait");
    }

    #[tokio::test]
    async fn going_into_debt_wakes_the_pauser() {
        let b = WriteBudgets::register(60, 10_000, "t", &Registry::new()).unwrap();
        b.set_quota("a", 1);
        b.charge("a", 100);
        let woken = tokio::time::timeout(Duration::from_millis(50), b.indebted()).await;
        assert!(woken.is_err(), "not in its reserve yet");
        b.charge("a", 10_000);
        let woken = tokio::time::timeout(Duration::from_secs(5), b.indebted()).await;
        assert!(woken.is_ok(), "in its reserve");
    }

    #[test]
    fn a_larger_quota_is_a_larger_bucket_and_a_raise_counts_at_once() {
        let b = WriteBudgets::register(60, 10_000, "t", &Registry::new()).unwrap();
        assert!(b.quota_stale("big"));
        b.set_quota("big", 250);
        assert!(!b.quota_stale("big"));
        for _ in 0..250 {
            b.charge("big", 10_000 - WRITE_OVERHEAD);
        }
        assert_eq!(b.wait("big"), None, "its whole quota synced at once");
        b.charge("big", 5_000);
        assert!(b.wait("big").is_some());
        b.set_quota("big", 300);
        assert_eq!(b.wait("big"), None, "the platform raised it");
        b.set_quota("small", 1);
        b.charge("small", 5_000);
        b.charge("small", 5_000);
        assert!(
            b.wait("small").is_some(),
            "a smaller quota, a smaller bucket"
        );
    }
}
