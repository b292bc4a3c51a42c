//! `--dry-run`: everything is read and compared, nothing is written. Each
//! write that would happen is logged (namespace, name, verb, the names of
//! the keys that differ) and counted, per distinct object, in
//! `<prefix>_dry_run_pending_writes{resource,verb}`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use prometheus::{IntGaugeVec, Opts, Registry};

/// The pending writes a dry run has found.
pub struct DryRun {
    pending: Mutex<HashMap<(&'static str, &'static str), BTreeSet<String>>>,
    gauge: IntGaugeVec,
}

impl DryRun {
    /// Registers `<prefix>_dry_run_pending_writes{resource,verb}`.
    pub fn register(prefix: &str, registry: &Registry) -> Result<Self, prometheus::Error> {
        let gauge = IntGaugeVec::new(
            Opts::new(
                format!("{prefix}_dry_run_pending_writes"),
                "Writes a --dry-run instance would have made, by resource and verb (distinct objects).",
            ),
            &["resource", "verb"],
        )?;
        registry.register(Box::new(gauge.clone()))?;
        Ok(Self {
            pending: Mutex::default(),
            gauge,
        })
    }

    /// Records and logs one write that is not made.
    pub fn record(
        &self,
        resource: &'static str,
        verb: &'static str,
        namespace: &str,
        name: &str,
        changed: &[String],
    ) {
        tracing::info!(dry_run = true, %namespace, %name, resource, verb, changed = %syncsecret_api::quote::names(changed), "would write");
        if let Ok(mut pending) = self.pending.lock() {
            let set = pending.entry((resource, verb)).or_default();
            set.insert(format!("{namespace}/{name}"));
            self.gauge
                .with_label_values(&[resource, verb])
                .set(i64::try_from(set.len()).unwrap_or(i64::MAX));
        }
    }
}
