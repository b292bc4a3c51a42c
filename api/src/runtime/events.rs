//! Kubernetes Events on the objects a controller acts on: a reason from a
//! bounded set and a note that names objects and causes, never a value.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use super::metrics::ControllerMetrics;

/// Publishes events and counts them as writes.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
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
            recorder: Recorder::new(client, reporter),
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
            note: Some(note),
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
        if let Err(e) = self.recorder.publish(&event, reference).await {
            // An event is a courtesy; failing to send one never fails a sync.
            tracing::warn!(error = %e, %reason, "could not publish event");
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
