//! Telling a failed reconcile, the same way in all three reconcilers: a
//! log line; the failed status on the object, where it has one; a Warning
//! event for a new verdict. A wait is logged and nothing more.

use std::fmt::Debug;

use kube::core::object::HasStatus;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use syncsecret_api::status::verdict_differs;
use syncsecret_api::v1alpha1::SyncSecretStatus;

use crate::error::report;
use crate::reconcile::backoff::{Backoffs, Telling};
use crate::reconcile::events::Events;
use crate::reconcile::writer::Writer;
use crate::reconcile::{Outcome, backoff_key};

/// A failed reconcile of one object, being told.
pub struct Failure<'a, K, E> {
    obj: &'a K,
    error: &'a E,
    /// Whether the event would say something the object does not show yet.
    new_verdict: bool,
    /// Whether its status was written.
    wrote_status: bool,
}

impl<'a, K, E> Failure<'a, K, E>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    E: Outcome + std::error::Error + 'static,
{
    /// Logs `error` (the whole chain, cut to [`crate::error::REPORT`])
    /// against `obj`, in full only when it is news for `obj`
    /// ([`Backoffs::telling`]): a retry of the same failure is logged at
    /// debug, and counted at warn after 10, 100, 1,000… attempts.
    pub fn of(obj: &'a K, error: &'a E, backoffs: &Backoffs) -> Self {
        let namespace = obj.namespace().unwrap_or_default();
        let name = obj.name_any();
        let text = report(error);
        let reason = error.category();
        match backoffs.telling(&backoff_key(obj), &text) {
            Telling::New if error.is_wait() => tracing::info!(%namespace, %name, "{text}"),
            Telling::New => tracing::warn!(%namespace, %name, reason, "{text}"),
            Telling::Again { attempts } => {
                tracing::debug!(%namespace, %name, reason, attempts, "{text}");
                if !error.is_wait() && attempts >= 10 && is_power_of_ten(attempts) {
                    tracing::warn!(%namespace, %name, reason, attempts, "still failing as logged before");
                }
            }
        }
        Self {
            obj,
            error,
            new_verdict: !error.is_wait(),
            wrote_status: false,
        }
    }

    /// Writes `failed` into the object's status. The event follows only
    /// if that is a new verdict and was written (or could not be: then the
    /// event is all the user gets); a dry run writes neither.
    pub async fn in_status(mut self, writer: &Writer<'_, K>, failed: SyncSecretStatus) -> Self
    where
        K: HasStatus<Status = SyncSecretStatus>,
    {
        if !self.new_verdict {
            return self;
        }
        let new = verdict_differs(self.obj.status(), &failed);
        let written = writer.status(self.obj, failed).await;
        self.wrote_status = written.as_ref().is_ok_and(|w| *w);
        self.new_verdict = new && written.unwrap_or(true);
        self
    }

    /// Whether [`Failure::in_status`] wrote the object's status.
    pub fn wrote_status(&self) -> bool {
        self.wrote_status
    }

    /// Sends the Warning event (reason: the error's category; note: the
    /// chain) unless the object already says so.
    pub async fn tell(self, events: &Events) {
        if self.new_verdict {
            events
                .warning(
                    &self.obj.object_ref(&()),
                    self.error.category(),
                    report(self.error),
                )
                .await;
        }
    }
}

fn is_power_of_ten(mut n: u32) -> bool {
    while n >= 10 && n.is_multiple_of(10) {
        n /= 10;
    }
    n == 1
}
