//! Whether the management cluster answers: both controllers make one small
//! authorized read there every few seconds and export the answer as
//! `<prefix>_management_reachable` (1 or 0). When it comes back after not
//! answering, every tenant object is reconciled at once: objects whose
//! writes failed during the outage would otherwise wait out their backoff
//! (up to minutes after a long outage), and objects made meanwhile have no
//! copy whose watch event could bring them back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::Stream;
use kube::Api;
use prometheus::{IntGauge, Registry};
use tokio::sync::watch;

use crate::reconcile::Scoped;
use syncsecret_api::SyncSecret;

/// How often the probe asks while the cluster answers.
pub const EVERY: Duration = Duration::from_secs(5);
/// How often it asks while the cluster does not answer.
pub const EVERY_WHILE_DOWN: Duration = Duration::from_secs(1);
/// How long one answer may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The gauge and the recoveries of one cluster.
#[derive(Clone)]
pub struct Reachability {
    gauge: IntGauge,
    /// Whether it has answered at least once (the first answer is no
    /// recovery).
    answered: Arc<AtomicBool>,
    recovered: watch::Sender<u64>,
    /// Where `/readyz` learns that the cluster does not answer.
    health: Option<Arc<crate::serve::health::Health>>,
}

impl Reachability {
    /// Registers `<prefix>_<cluster>_reachable` (0 until the first answer).
    pub fn register(
        prefix: &str,
        cluster: &str,
        registry: &Registry,
    ) -> Result<Self, prometheus::Error> {
        let gauge = IntGauge::new(
            format!("{prefix}_{cluster}_reachable"),
            format!(
                "1 while the {cluster} cluster's API server answers (asked every {} s), else 0.",
                EVERY.as_secs()
            ),
        )?;
        registry.register(Box::new(gauge.clone()))?;
        Ok(Self {
            gauge,
            answered: Arc::default(),
            recovered: watch::Sender::new(0),
            health: None,
        })
    }

    /// Also tells `/readyz` (as a note, not a readiness condition) while
    /// the cluster does not answer, and why.
    #[must_use]
    pub fn reporting_to(mut self, health: Arc<crate::serve::health::Health>) -> Self {
        self.health = Some(health);
        self
    }

    /// Records one answer (or its absence); returns whether this is a
    /// recovery (it did not answer before).
    pub fn observe(&self, reachable: bool) -> bool {
        let was = self.gauge.get() == 1;
        self.gauge.set(i64::from(reachable));
        let answered_before = reachable && self.answered.swap(true, Ordering::Relaxed);
        let recovery = reachable && !was && answered_before;
        if recovery {
            self.recovered.send_modify(|n| *n += 1);
        }
        recovery
    }

    /// Whether the last answer came.
    pub fn reachable(&self) -> bool {
        self.gauge.get() == 1
    }

    /// A stream that yields once per recovery after it is made (for
    /// `Controller::reconcile_all_on`).
    pub fn recoveries(&self) -> impl Stream<Item = ()> + Send + 'static {
        let mut rx = self.recovered.subscribe();
        rx.mark_unchanged();
        futures::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        })
    }

    /// Starts [`Self::probe`] with the check both controllers use: a list
    /// of one SyncSecret from `api()` (their own tenant namespace for the
    /// ccm, every namespace for the manager), as their own identity (asked
    /// anew each time: the ccm's credentials may be replaced). The probe
    /// stops when the returned handle drops.
    pub fn probe_with(&self, api: impl Fn() -> Api<SyncSecret> + Send + Sync + 'static) -> Scoped {
        Scoped::spawn(self.clone().probe("management", move || {
            let api = api();
            async move {
                // The answer is not decoded: the object in it is a tenant's
                // and may be one no type reads (managedFields nested beyond
                // serde's limit), which must not make the cluster look down.
                let url = format!("{}?limit=1", api.resource_url());
                let request = hyper::Request::get(url)
                    .header(
                        "accept",
                        "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
                    )
                    .body(Vec::new())
                    .map_err(kube::Error::HttpError)?;
                api.into_client().request_text(request).await.map(|_| ())
            }
        }))
    }

    /// Runs `check` (one small request as this controller's identity, e.g.
    /// a list of one object it may read) every few seconds, forever. A
    /// refusal counts as not reachable: right after an API server restart
    /// it refuses everything for a moment (its RBAC cache is not filled
    /// yet), and a pulled RoleBinding is an outage too; both end with a
    /// reconcile of everything.
    pub async fn probe<F, Fut>(self, cluster: &'static str, check: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), kube::Error>>,
    {
        let mut first = true;
        loop {
            let answer = tokio::time::timeout(TIMEOUT, check()).await;
            let reachable = matches!(answer, Ok(Ok(())));
            let (was, answered) = (self.reachable(), self.answered.load(Ordering::Relaxed));
            self.observe(reachable);
            if was != reachable || first {
                if reachable {
                    if answered {
                        tracing::info!(%cluster, "API server answers again; reconciling everything");
                    }
                    if let Some(h) = &self.health {
                        h.note(cluster, None);
                    }
                } else {
                    let why = match answer {
                        Ok(Err(e)) => crate::error::explain(&e),
                        _ => format!("no answer within {} s", TIMEOUT.as_secs()),
                    };
                    tracing::warn!(%cluster, "API server does not answer: {why}");
                    if let Some(h) = &self.health {
                        h.note(
                            cluster,
                            Some(format!("the {cluster} cluster does not answer: {why}")),
                        );
                    }
                }
            }
            first = false;
            tokio::time::sleep(if reachable { EVERY } else { EVERY_WHILE_DOWN }).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn only_a_return_after_an_outage_is_a_recovery() {
        let registry = Registry::new();
        let r = Reachability::register("kubelb_ccm", "management", &registry).unwrap();
        let mut recoveries = Box::pin(r.recoveries());
        assert!(!r.observe(true), "the first answer is no recovery");
        assert!(!r.observe(true));
        assert!(!r.observe(false));
        assert!(!r.reachable());
        assert!(r.observe(true), "answering again after none is");
        assert!(r.reachable());
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(1), recoveries.next()).await,
            Ok(Some(()))
        );
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(text.contains("kubelb_ccm_management_reachable 1"), "{text}");
    }
}
