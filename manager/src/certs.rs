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
        let states = [CertState::Valid, CertState::Expiring, CertState::Expired];
        if in_ns.is_empty() {
            // No series left behind for a namespace with no certificate
            // (its copies gone, or moved to another shard): a stale zero
            // would say this manager still watches it.
            for state in states {
                let _ = self.count.remove_label_values(&[namespace, state.as_str()]);
            }
            let _ = self.earliest.remove_label_values(&[namespace]);
            return;
        }
        for state in states {
            let n = in_ns.iter().filter(|(_, s, _)| *s == state).count();
            self.count
                .with_label_values(&[namespace, state.as_str()])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        if let Some(na) = in_ns.iter().map(|(_, _, na)| *na).min() {
            // Seconds since the epoch fit an f64 exactly for any real date.
            self.earliest.with_label_values(&[namespace]).set(na as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use prometheus::Encoder;

    use super::*;

    fn exposed(registry: &Registry) -> String {
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_namespace_whose_certificates_are_gone_leaves_no_series() {
        let registry = Registry::new();
        let certs = Certificates::register("m", &registry).unwrap();
        let info = |state, not_after| CertInfo { state, not_after };
        certs.observe("a", "a/one", Some(&info(CertState::Valid, 200)));
        certs.observe("a", "a/two", Some(&info(CertState::Expiring, 100)));
        certs.observe("b", "b/one", Some(&info(CertState::Valid, 300)));
        let text = exposed(&registry);
        assert!(
            text.contains("m_certificates{namespace=\"a\",state=\"expiring\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("m_certificates{namespace=\"a\",state=\"expired\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("m_certificate_earliest_expiry_timestamp_seconds{namespace=\"a\"} 100"),
            "{text}"
        );
        certs.observe("a", "a/two", None);
        // Namespace "a" moved away: the sweep forgets what it no longer caches.
        certs.retain(|k| !k.starts_with("a/"));
        let text = exposed(&registry);
        assert!(!text.contains("namespace=\"a\""), "{text}");
        assert!(
            text.contains("m_certificates{namespace=\"b\",state=\"valid\"} 1"),
            "{text}"
        );
    }
}
