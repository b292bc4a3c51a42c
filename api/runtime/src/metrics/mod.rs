//! The metrics each controller exports, with KubeLB's names and labels so
//! that its dashboards keep working, plus a write counter that proves a
//! steady state costs nothing. Labels are bounded: namespace, result,
//! resource, verb; never an object name.
//!
//! Gauges read at scrape time live in [`gauges`].

pub mod gauges;

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::error::RuntimeError;

/// Outcome of one reconcile, as KubeLB labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconcileResult {
    /// The object is as it should be.
    Success,
    /// The reconcile failed and will be retried.
    Error,
    /// The object is not ours to act on.
    Skipped,
    /// The object waits for something else to happen first (a deleted
    /// tenant object for its copy to go): a normal step, looked at again.
    Waiting,
}

impl ReconcileResult {
    fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Error => "error",
            Self::Skipped => "skipped",
            Self::Waiting => "waiting",
        }
    }
}

/// A controller's metrics, registered under `kubelb_<binary>_`.
#[derive(Clone)]
pub struct ControllerMetrics {
    reconcile_total: IntCounterVec,
    reconcile_duration: HistogramVec,
    writes_total: IntCounterVec,
    orphans_deleted_total: IntCounterVec,
    dry_run: Option<std::sync::Arc<crate::reconcile::dry_run::DryRun>>,
}

impl ControllerMetrics {
    /// Registers `<prefix>_sync_secret_reconcile_total{namespace,result}`,
    /// `<prefix>_sync_secret_reconcile_duration_seconds{namespace}` and
    /// `<prefix>_writes_total{resource,verb}` (prefix: `kubelb_ccm` or
    /// `kubelb_manager`).
    pub fn register(prefix: &str, registry: &Registry) -> Result<Self, RuntimeError> {
        let reconcile_total = IntCounterVec::new(
            Opts::new(
                format!("{prefix}_sync_secret_reconcile_total"),
                "SyncSecret reconciles by namespace and result (success, error, skipped, waiting).",
            ),
            &["namespace", "result"],
        )?;
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new(
                format!("{prefix}_sync_secret_reconcile_duration_seconds"),
                "Time one SyncSecret reconcile took, by namespace.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["namespace"],
        )?;
        let writes_total = IntCounterVec::new(
            Opts::new(
                format!("{prefix}_writes_total"),
                "Writes this controller sent to an API server, by resource and verb. Zero at steady state.",
            ),
            &["resource", "verb"],
        )?;
        let orphans_deleted_total = IntCounterVec::new(
            Opts::new(
                format!("{prefix}_orphans_deleted_total"),
                "Objects this controller made whose origin was gone, deleted by the orphan sweep, by resource.",
            ),
            &["resource"],
        )?;
        registry.register(Box::new(orphans_deleted_total.clone()))?;
        registry.register(Box::new(reconcile_total.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(writes_total.clone()))?;
        Ok(Self {
            reconcile_total,
            reconcile_duration,
            writes_total,
            orphans_deleted_total,
            dry_run: None,
        })
    }

    /// Counts one reconcile and its duration.
    pub fn reconciled(&self, namespace: &str, result: ReconcileResult, took: Duration) {
        self.reconcile_total
            .with_label_values(&[namespace, result.as_str()])
            .inc();
        self.reconcile_duration
            .with_label_values(&[namespace])
            .observe(took.as_secs_f64());
    }

    /// Turns this controller into a dry run: every write is held (see
    /// [`crate::reconcile::writer`]).
    pub fn with_dry_run(mut self, dry_run: crate::reconcile::dry_run::DryRun) -> Self {
        self.dry_run = Some(std::sync::Arc::new(dry_run));
        self
    }

    /// Whether this is a dry run.
    pub fn is_dry_run(&self) -> bool {
        self.dry_run.is_some()
    }

    /// Asks before every write: in a dry run, records and logs it (with the
    /// names of the keys that differ) and answers true, meaning "do not
    /// write"; otherwise false. Only the writer and events ask.
    pub(crate) fn hold(
        &self,
        resource: &'static str,
        verb: &'static str,
        namespace: &str,
        name: &str,
        changed: &[String],
    ) -> bool {
        match &self.dry_run {
            Some(d) => {
                d.record(resource, verb, namespace, name, changed);
                true
            }
            None => false,
        }
    }

    /// Marks the start of a sweep over `resource`: its orphan counter is
    /// exported (at zero until something is swept), so that dashboards show
    /// zero rather than no data and `increase()` sees the first deletion.
    pub fn sweeping(&self, resource: &'static str) {
        self.orphans_deleted_total.with_label_values(&[resource]);
    }

    /// Counts one orphan the sweep deleted (its write is counted by the
    /// writer).
    pub fn orphan_deleted(&self, resource: &'static str) {
        self.orphans_deleted_total
            .with_label_values(&[resource])
            .inc();
    }

    /// Counts one write (`resource`: syncsecrets, secrets, events;
    /// `verb`: create, patch, delete). Only the writer and events count.
    pub(crate) fn wrote(&self, resource: &'static str, verb: &'static str) {
        self.writes_total.with_label_values(&[resource, verb]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Encoder;

    #[test]
    fn names_and_labels_are_kubelbs() {
        let registry = Registry::new();
        let m = ControllerMetrics::register("kubelb_ccm", &registry).unwrap();
        m.reconciled("shop", ReconcileResult::Success, Duration::from_millis(3));
        m.wrote("syncsecrets", "patch");
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(
                r#"kubelb_ccm_sync_secret_reconcile_total{namespace="shop",result="success"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"kubelb_ccm_sync_secret_reconcile_duration_seconds_count{namespace="shop"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"kubelb_ccm_writes_total{resource="syncsecrets",verb="patch"} 1"#),
            "{text}"
        );
    }
}
