//! The ccm's orphan sweep: copies in its tenant namespace that it made and
//! whose tenant object is gone (its finalizer stripped by hand while the
//! ccm was down, or its namespace force-deleted). Deleting the copy lets the
//! manager remove its Secret.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use syncsecret_api::contract::FIELD_MANAGER_CCM;
use syncsecret_api::labelled::Labelled;
use syncsecret_api::sweep::{from_another_cluster, orphaned_copies};
use syncsecret_runtime::explain;
use syncsecret_runtime::reconcile::writer::Deleted;
use syncsecret_runtime::reconcile::{Outcome, backoff_key};
use syncsecret_runtime::report;

use crate::{Context, synchronizer};

/// One sweep; failures are logged and left for the next one. With the
/// Secret synchronizer on (`labelled`: the Secrets it syncs), SyncSecrets
/// it made whose Secret is no longer labelled are released too.
#[tracing::instrument(name = "sweep", skip_all, fields(namespace = %ctx.tenant_namespace))]
pub async fn orphans(ctx: Arc<Context>, labelled: Option<Store<Secret>>) {
    forget_gone(&ctx, labelled.as_ref());
    if let Some(labelled) = labelled {
        unlabelled(&ctx, &labelled).await;
    }
    ctx.metrics.sweeping("syncsecrets");
    let copies = ctx.copies.state();
    let tenant_uid = |namespace: &str, name: &str| {
        ctx.tenant_objects
            .get(&ObjectRef::new(name).within(namespace))
            .and_then(|t| t.uid())
    };
    let orphans = orphaned_copies(
        copies.iter().map(AsRef::as_ref),
        tenant_uid,
        FIELD_MANAGER_CCM,
        &ctx.cluster_id,
    );
    let foreign = copies
        .iter()
        .filter(|c| from_another_cluster(c.as_ref(), &ctx.cluster_id))
        .count();
    tell_conflict(&ctx, foreign).await;
    let writer = ctx.copy_writer();
    let why = ["(orphan)".to_owned()];
    for name in orphans {
        match writer.delete(&name, None, &why).await {
            Ok(Deleted::Held | Deleted::Absent) => {}
            Ok(_) => {
                ctx.metrics.orphan_deleted("syncsecrets");
                tracing::info!(namespace = %ctx.tenant_namespace, %name, "orphaned copy deleted: its tenant object is gone");
            }
            Err(e) => {
                tracing::warn!(namespace = %ctx.tenant_namespace, %name, "cannot delete orphaned copy: {}", explain(&e))
            }
        }
    }
}

/// SyncSecrets the synchronizer made (our field manager applied them)
/// whose Secret is not among the labelled ones: the label was taken off
/// while the ccm was down or its watch was away.
async fn unlabelled(ctx: &Context, labelled: &Store<Secret>) {
    let made: Vec<(String, String)> = ctx
        .tenant_objects
        .state()
        .iter()
        .filter(|o| o.made_by(FIELD_MANAGER_CCM) && o.meta().deletion_timestamp.is_none())
        .filter_map(|o| Some((o.namespace()?, o.name_any())))
        .filter(|(namespace, name)| {
            labelled
                .get(&ObjectRef::new(name).within(namespace))
                .is_none()
        })
        .collect();
    for (namespace, name) in made {
        if let Err(e) = synchronizer::release(ctx, &namespace, &name).await {
            tracing::warn!(%namespace, %name, reason = e.category(), "{}", report(&e));
        }
    }
}

/// Forgets what the ccm keeps per object (backoffs, announced waits) for
/// objects no longer cached: a deleted object's entries would otherwise
/// stay for good.
fn forget_gone(ctx: &Context, labelled: Option<&Store<Secret>>) {
    let tenant_objects = ctx.tenant_objects.state();
    let mut live: std::collections::HashSet<String> = tenant_objects
        .iter()
        .map(|o| backoff_key(o.as_ref()))
        .collect();
    live.extend(
        labelled
            .map(Store::state)
            .unwrap_or_default()
            .iter()
            .map(|s| backoff_key(s.as_ref())),
    );
    ctx.backoffs.retain(|k| live.contains(k));
    let uids: std::collections::HashSet<String> =
        tenant_objects.iter().filter_map(|o| o.uid()).collect();
    if let Ok(mut waits) = ctx.announced_waits.lock() {
        waits.retain(|uid| uids.contains(uid));
    }
}

/// `foreign` copies in our tenant namespace came from another tenant
/// cluster whose ccm uses our cluster name: a `ClusterNameConflict`
/// condition on every tenant object while it lasts, a note on `/readyz`, a
/// warning log line at each sweep, and one Warning event about this
/// cluster (its kube-system Namespace) per start. Neither cluster's ccm deletes the
/// other's copies (see `from_another_cluster`).
async fn tell_conflict(ctx: &Context, foreign: usize) {
    use std::sync::atomic::Ordering;
    const TOPIC: &str = "cluster-name";
    // Worded without the count, so that more copies write no status.
    let condition = (foreign > 0).then(|| {
        format!(
            "another tenant cluster's ccm writes copies in {} under this cluster's name: give each cluster its own --cluster-name; neither deletes the other's copies",
            ctx.tenant_namespace
        )
    });
    // The first judgment since start reconciles everything, so that a
    // condition left from before (the conflict ended meanwhile) goes too.
    let first = !ctx.conflict_judged.swap(true, Ordering::Relaxed);
    ctx.conflict.send_if_modified(|c| {
        let changed = first || *c != condition;
        c.clone_from(&condition);
        changed
    });
    if foreign == 0 {
        ctx.health.note(TOPIC, None);
        return;
    }
    let text = format!(
        "another cluster's ccm writes copies in {} under this cluster's name ({foreign} copies): two tenant clusters claim one cluster name; give each its own --cluster-name. Neither deletes the other's copies",
        ctx.tenant_namespace
    );
    tracing::warn!(namespace = %ctx.tenant_namespace, foreign, "{text}");
    ctx.health.note(TOPIC, Some(text.clone()));
    if !ctx.conflict_told.swap(true, Ordering::Relaxed) {
        let cluster = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Namespace".to_owned()),
            name: Some("kube-system".to_owned()),
            uid: Some(ctx.cluster_id.clone()),
            ..Default::default()
        };
        ctx.events
            .warning(&cluster, "ClusterNameConflict", text)
            .await;
    }
}
