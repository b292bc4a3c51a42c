//! Writing a SyncSecret's status: only when it changed, keeping the
//! condition's transition time, counted as a write.

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use std::fmt::Debug;

use kube::core::object::HasStatus;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::cache::recent::RecentWrites;
use crate::metrics::ControllerMetrics;
use syncsecret_api::status::{status_differs, with_transition_time};
use syncsecret_api::v1alpha1::SyncSecretStatus;

/// Patches `desired` into the status of `obj` if it differs from the live
/// one; returns whether it wrote. The write is remembered in `recent` until
/// the watch cache shows it.
pub async fn write_status<K>(
    api: &Api<K>,
    obj: &K,
    desired: SyncSecretStatus,
    metrics: &ControllerMetrics,
    recent: &RecentWrites,
) -> Result<bool, kube::Error>
where
    K: Resource + HasStatus<Status = SyncSecretStatus> + Clone + DeserializeOwned + Debug,
{
    if !status_differs(obj.status(), &desired) {
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
    let stamped = with_transition_time(obj.status(), desired, Timestamp::now());
    let written = api
        .patch_status(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": stamped })),
        )
        .await?;
    metrics.wrote("syncsecrets/status", "patch");
    recent.wrote_over_as(&namespace, &obj.name_any(), Some(obj), &written);
    Ok(true)
}
