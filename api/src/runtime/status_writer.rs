//! Writing a SyncSecret's status: only when it changed, keeping the
//! condition's transition time, counted as a write.

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::metrics::ControllerMetrics;
use super::recent::RecentWrites;
use crate::status::{status_differs, with_transition_time};
use crate::v1alpha1::{SyncSecret, SyncSecretStatus};

/// Patches `desired` into the status of `obj` if it differs from the live
/// one; returns whether it wrote. The write is remembered in `recent` until
/// the watch cache shows it.
pub async fn write_status(
    api: &Api<SyncSecret>,
    obj: &SyncSecret,
    desired: SyncSecretStatus,
    metrics: &ControllerMetrics,
    recent: &RecentWrites,
) -> Result<bool, kube::Error> {
    if !status_differs(obj.status.as_ref(), &desired) {
        return Ok(false);
    }
    let namespace = obj.namespace().unwrap_or_default();
    if metrics.hold(
        "syncsecrets/status",
        "patch",
        &namespace,
        &obj.name_any(),
        &["status".to_owned()],
    ) {
        return Ok(false);
    }
    let stamped = with_transition_time(obj.status.as_ref(), desired, Timestamp::now());
    api.patch_status(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": stamped })),
    )
    .await?;
    metrics.wrote("syncsecrets/status", "patch");
    recent.wrote_over(&namespace, &obj.name_any(), Some(obj));
    Ok(true)
}
