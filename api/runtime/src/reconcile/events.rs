//! Kubernetes Events on the objects a controller acts on: a reason from a
//! bounded set and a note that names objects and causes, never a value.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::metrics::ControllerMetrics;

/// The longest note events.k8s.io takes.
pub const NOTE: usize = syncsecret_api::quote::MESSAGE;

/// Publishes events and counts them as writes.
///
/// Warnings go through one long-lived [`Recorder`], whose cache turns a
/// warning repeated within six minutes into a series (one Event with a
/// count). Normal events are one-offs (a new object synced, a copy
/// updated): each goes through a fresh recorder, so that the cache never
/// holds them: one shared recorder kept every new object's event for six
/// minutes, and every publish scanned them all.
#[derive(Clone)]
pub struct Events {
    client: Client,
    reporter: Reporter,
    warnings: Recorder,
    metrics: ControllerMetrics,
}

impl Events {
    /// Events reported as `controller` (e.g. `syncsecret-ccm`) by `instance`.
    pub fn new(
        client: Client,
        controller: &str,
        instance: &str,
        metrics: ControllerMetrics,
    ) -> Self {
        let reporter = Reporter {
            controller: controller.to_owned(),
            instance: Some(instance.to_owned()),
        };
        Self {
            warnings: Recorder::new(client.clone(), reporter.clone()),
            client,
            reporter,
            metrics,
        }
    }

    async fn publish(
        &self,
        type_: EventType,
        reference: &ObjectReference,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            // events.k8s.io refuses a note over 1 KiB: a longer one was
            // lost whole.
            note: Some(syncsecret_api::quote::cut(&note, NOTE)),
            action: reason.to_owned(),
            secondary: None,
        };
        let namespace = reference.namespace.clone().unwrap_or_default();
        let name = reference.name.clone().unwrap_or_default();
        if self
            .metrics
            .hold("events", "create", &namespace, &name, &[])
        {
            return;
        }
        self.metrics.wrote("events", "create");
        let sent = match type_ {
            EventType::Warning => self.warnings.publish(&event, reference).await,
            EventType::Normal => {
                Recorder::new(self.client.clone(), self.reporter.clone())
                    .publish(&event, reference)
                    .await
            }
        };
        if let Err(e) = sent {
            // An event is a courtesy; failing to send one never fails a sync.
            tracing::warn!(error = %crate::error::explain(&e), %reason, "could not publish event");
        }
    }

    /// A Normal event.
    pub async fn normal(&self, reference: &ObjectReference, reason: &str, note: String) {
        self.publish(EventType::Normal, reference, reason, note)
            .await;
    }

    /// A Warning event.
    pub async fn warning(&self, reference: &ObjectReference, reason: &str, note: String) {
        self.publish(EventType::Warning, reference, reason, note)
            .await;
    }
}
