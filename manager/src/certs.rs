//! Certificate gauges, bounded by namespace and state: how many synced
//! `kubernetes.io/tls` Secrets are valid, expiring or expired, and the
//! earliest notAfter per tenant namespace.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus::{GaugeVec, IntGaugeVec, Opts, Registry};
use syncsecret_runtime::cache::certificate::{CertInfo, CertState};

/// Per object key: (namespace, state, notAfter).
type Known = HashMap<String, (String, CertState, i64)>;

/// What the manager knows of each synced certificate (shared by clones).
#[derive(Clone)]
pub struct Certificates {
    /// object key → (namespace, state, notAfter)
    by_object: std::sync::Arc<Mutex<Known>>,
    count: IntGaugeVec,
    earliest: GaugeVec,
}

impl Certificates {
    /// Registers `<prefix>_certificates{namespace,state}` and
    /// `<prefix>_certificate_earliest_expiry_timestamp_seconds{namespace}`.
    pub fn register(prefix: &str, registry: &Registry) -> Result<Self, prometheus::Error> {
        let count = IntGaugeVec::new(
            Opts::new(
                format!("{prefix}_certificates"),
                "Synced kubernetes.io/tls certificates by namespace and state (valid, expiring, expired).",
            ),
            &["namespace", "state"],
        )?;
        let earliest = GaugeVec::new(
            Opts::new(
                format!("{prefix}_certificate_earliest_expiry_timestamp_seconds"),
                "The earliest notAfter of the synced certificates of a namespace.",
            ),
            &["namespace"],
        )?;
        registry.register(Box::new(count.clone()))?;
        registry.register(Box::new(earliest.clone()))?;
        Ok(Self {
            by_object: std::sync::Arc::default(),
            count,
            earliest,
        })
    }

    /// Forgets the certificates of every object `keep` says no to (copies
    /// gone without a cleanup we saw), refreshing their namespaces' gauges.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let gone: Vec<(String, String)> = match self.by_object.lock() {
            Ok(by_object) => by_object
                .iter()
                .filter(|(k, _)| !keep(k))
                .map(|(k, (ns, ..))| (k.clone(), ns.clone()))
                .collect(),
            Err(_) => return,
        };
        for (key, namespace) in gone {
            self.observe(&namespace, &key, None);
        }
    }

    /// Records the certificate of object `key` in `namespace` (`None`: it has
    /// none, or is gone) and refreshes that namespace's gauges.
    pub fn observe(&self, namespace: &str, key: &str, info: Option<&CertInfo>) {
        let Ok(mut by_object) = self.by_object.lock() else {
            return;
        };
        match info {
            Some(i) => {
                by_object.insert(key.to_owned(), (namespace.to_owned(), i.state, i.not_after));
            }
            None => {
                by_object.remove(key);
            }
        }
        let in_ns: Vec<_> = by_object
            .values()
            .filter(|(ns, ..)| ns == namespace)
            .collect();
        for state in [CertState::Valid, CertState::Expiring, CertState::Expired] {
            let n = in_ns.iter().filter(|(_, s, _)| *s == state).count();
            self.count
                .with_label_values(&[namespace, state.as_str()])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        match in_ns.iter().map(|(_, _, na)| *na).min() {
            // Seconds since the epoch fit an f64 exactly for any real date.
            Some(na) => self.earliest.with_label_values(&[namespace]).set(na as f64),
            None => {
                let _ = self.earliest.remove_label_values(&[namespace]);
            }
        }
    }
}
