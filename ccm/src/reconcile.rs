//! One tenant SyncSecret: finalizer first, then its copy in the management
//! cluster; on deletion the copy goes first and the finalizer last.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use syncsecret_api::contract::{FIELD_MANAGER_CCM, copy_name};
use syncsecret_api::desired::{copy_needs_write, desired_copy, desired_copy_metadata};
use syncsecret_api::status::{
    cluster_name_conflict, mirrored, pending, phase, shown_conflict, status, verdict_differs,
    with_condition,
};
use syncsecret_api::{SyncSecret, SyncSecretPhase, SyncSecretStatus};
use syncsecret_runtime::cache::recent::{self, Cached};
use syncsecret_runtime::cache::summary::Summary;
use syncsecret_runtime::cache::{self, Unreadable};
use syncsecret_runtime::reconcile::status_writer::write_status;
use syncsecret_runtime::reconcile::{Finalized, Outcome, retry_later};
use syncsecret_runtime::report;

use crate::{Context, Error};

/// Reconciles one tenant SyncSecret; counts it, and reports a failure as a
/// Warning event on the object.
pub async fn reconcile(obj: Arc<Summary<SyncSecret>>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let api: Api<Summary<SyncSecret>> = Api::namespaced(ctx.tenant.clone(), &namespace);
    let c = &ctx;
    let result = Finalized {
        api: &api,
        metrics: &ctx.metrics,
        backoffs: &ctx.backoffs,
        recent: Some(&ctx.recent_tenant),
        resource: "syncsecrets",
    }
    .run(
        obj.clone(),
        |o| async move { apply(&o, c).await },
        |o| async move { cleanup(&o, c).await },
    )
    .await;
    match &result {
        Err(e) if e.is_wait() => tracing::info!(%namespace, %name, "{}", report(e)),
        Err(e) => {
            tracing::warn!(%namespace, %name, reason = e.category(), "{}", report(e));
            let deleting = obj.meta().deletion_timestamp.is_some();
            if !deleting && !matches!(e, Error::PatchStatus { .. }) {
                // The tenant sees why; observedGeneration keeps saying what
                // the management cluster last held.
                let failed = with_conflict(
                    status(
                        SyncSecretPhase::Failed,
                        obj.status.as_ref().and_then(|s| s.observed_generation),
                        false,
                        e.category(),
                        report(e),
                    ),
                    obj.status.as_ref(),
                    &ctx,
                );
                // An event for a new verdict only (see the manager).
                let new_verdict = verdict_differs(obj.status.as_ref(), &failed);
                let wrote = write_status(&api, &obj, failed, &ctx.metrics, &ctx.recent_tenant)
                    .await
                    .unwrap_or(true);
                if !wrote || !new_verdict {
                    return result;
                }
            }
            ctx.events
                .warning(&obj.object_ref(&()), e.category(), report(e))
                .await;
        }
        Ok(_) => {}
    }
    result
}

/// Retries a failed object with per-object exponential backoff.
pub fn error_policy(obj: Arc<Summary<SyncSecret>>, error: &Error, ctx: Arc<Context>) -> Action {
    if error.is_wait() {
        // Waiting for the copy to go is no failure: look again soon (a
        // cache read) instead of backing off for minutes. The copy's
        // deletion event normally comes first.
        return Action::requeue(WAIT_RECHECK);
    }
    retry_later(&ctx.backoffs, obj.as_ref())
}

/// How often a deleted tenant object whose copy is still terminating is
/// looked at again, besides the copy's deletion event.
const WAIT_RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// Creates or updates the copy (nothing when it is already right), then
/// mirrors the manager's verdict on it into the tenant object's status.
///
/// Whether to write is decided from the caches (the copy's metadata as it
/// would be, the payload's digest); the tenant object is read whole only to
/// write it.
async fn apply(obj: &Summary<SyncSecret>, ctx: &Context) -> Result<Action, Error> {
    if let Some(reason) = obj.unreadable() {
        return Err(undecodable(obj, reason));
    }
    let desired = desired_copy_metadata(obj, &ctx.tenant_namespace, Some(&ctx.cluster_id))
        .ok_or(Error::NotStored)?;
    let copy = copy_name(obj).ok_or(Error::NotStored)?;
    // Copies are read as summaries: the tenant's identity may have written
    // one in any shape the CRD lets through.
    let api: Api<Summary<SyncSecret>> =
        Api::namespaced(ctx.management.clone(), &ctx.tenant_namespace);
    let apply_err = |source| Error::ApplyCopy {
        namespace: ctx.tenant_namespace.clone(),
        name: copy.clone(),
        source,
    };
    let live = match ctx.lookup_copy(&copy).await {
        // Our last write is not in the cache yet: its watch event brings
        // this object back (the requeue only guards against a missed one).
        Cached::Stale => return Ok(Action::requeue(recent::TTL)),
        Cached::Known(live) => live,
        // A cache that has not finished listing within `LIST_WAIT` (the
        // management cluster slow or unreachable since the start) is never
        // taken for an absent copy: a restart must not rewrite what is
        // already there.
        Cached::Unknown => api.get_opt(&copy).await.map_err(apply_err)?.map(Arc::new),
    };
    if live
        .as_ref()
        .is_some_and(|l| l.meta().deletion_timestamp.is_some())
    {
        // Someone deleted the copy; once the manager has let it go, the copy
        // watch brings us back to create it anew.
        return Ok(Action::await_change());
    }
    let needs_write = live
        .as_ref()
        .is_none_or(|l| copy_needs_write(l.as_ref(), &desired, &obj.payload, FIELD_MANAGER_CCM));
    let held = needs_write && {
        let mut changed = obj
            .payload
            .changes_from(live.as_deref().map(|l| &l.payload));
        if changed.is_empty() {
            changed.push("metadata".to_owned());
        }
        ctx.metrics.hold(
            "syncsecrets",
            "patch",
            &ctx.tenant_namespace,
            &copy,
            &changed,
        )
    };
    if needs_write && !held {
        let Some(whole) = read_whole(obj, ctx).await? else {
            // Deleted or made anew since it was cached: its watch event
            // brings the next state.
            return Ok(Action::await_change());
        };
        let desired = desired_copy(&whole, &ctx.tenant_namespace, Some(&ctx.cluster_id))
            .ok_or(Error::NotStored)?;
        let merged = if live.as_ref().is_some_and(|l| l.has_string_data) {
            // Someone else's stringData on the copy: not ours to own, so an
            // apply would leave it (and the tenant limits refuse a copy
            // with it). A copy carries data only: it goes first.
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER_CCM.to_owned()),
                ..PatchParams::default()
            };
            let written = api
                .patch(&copy, &params, &Patch::Merge(json!({"stringData": null})))
                .await
                .map_err(apply_err)?;
            ctx.metrics.wrote("syncsecrets", "patch");
            // Both writes are ours until the cache shows the second: the
            // first one's watch event must not look like someone else's.
            ctx.recent_copies.wrote_over_as(
                &ctx.tenant_namespace,
                &copy,
                live.as_deref(),
                &written,
            );
            Some(written)
        } else {
            None
        };
        let applied = api
            .patch(
                &copy,
                &PatchParams::apply(FIELD_MANAGER_CCM).force(),
                &Patch::Apply(&desired),
            )
            .await
            .map_err(apply_err)?;
        ctx.metrics.wrote("syncsecrets", "patch");
        let replaced = merged.as_ref().or(live.as_deref());
        ctx.recent_copies
            .wrote_over_as(&ctx.tenant_namespace, &copy, replaced, &applied);
        ctx.asked(&copy);
        let verb = if live.is_some() { "updated" } else { "created" };
        tracing::info!(namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any(), copy = %format!("{}/{copy}", ctx.tenant_namespace), "copy {verb}");
        // A new object's first sync is told by its `Synced` event; an
        // update changes no phase, so it gets an event of its own.
        if live.is_some() {
            ctx.events
                .normal(
                    &obj.object_ref(&()),
                    "CopyUpdated",
                    format!(
                        "copy {}/{copy} updated in the management cluster",
                        ctx.tenant_namespace
                    ),
                )
                .await;
        }
    }
    // Status comes home: the manager's verdict on the copy as it is now.
    // A copy just written has none yet: the manager's verdict usually
    // follows within milliseconds and the copy's watch event brings us
    // back, so a new object is marked Pending only if it waits longer.
    let Some(live) = live.filter(|_| !needs_write) else {
        return Ok(Action::requeue(PENDING_AFTER));
    };
    match mirrored(live.as_ref(), obj.metadata.generation) {
        Some(verdict) => {
            ctx.answered(&copy);
            mirror(obj, verdict, ctx).await?;
        }
        None if obj.status.is_none() => {
            let waited = ctx
                .asked_ago(&copy)
                .or_else(|| {
                    let created = live.metadata.creation_timestamp.as_ref()?;
                    Duration::try_from(Timestamp::now().duration_since(created.0)).ok()
                })
                .unwrap_or(PENDING_AFTER);
            if waited < PENDING_AFTER {
                return Ok(Action::requeue(PENDING_AFTER - waited));
            }
            mirror(obj, pending(), ctx).await?;
        }
        None => {}
    }
    Ok(Action::await_change())
}

/// The tenant object as stored now (see `cache::whole`).
async fn read_whole(obj: &Summary<SyncSecret>, ctx: &Context) -> Result<Option<SyncSecret>, Error> {
    cache::whole(&ctx.tenant, obj).await.map_err(|e| match e {
        Unreadable::Undecodable(reason) => undecodable(obj, &reason),
        Unreadable::Read(source) => Error::ReadObject {
            namespace: obj.namespace().unwrap_or_default(),
            name: obj.name_any(),
            source,
        },
    })
}

fn undecodable(obj: &Summary<SyncSecret>, reason: &str) -> Error {
    Error::Undecodable {
        namespace: obj.namespace().unwrap_or_default(),
        name: obj.name_any(),
        reason: reason.to_owned(),
    }
}

/// `status` with the `ClusterNameConflict` condition while another cluster
/// claims this cluster's name; before the first sweep since start has
/// judged, with the one `live` shows.
fn with_conflict(
    status: SyncSecretStatus,
    live: Option<&SyncSecretStatus>,
    ctx: &Context,
) -> SyncSecretStatus {
    let condition = if ctx
        .conflict_judged
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        let generation = status.observed_generation;
        let conflict = ctx.conflict.borrow().clone();
        conflict.map(|m| cluster_name_conflict(&m, generation))
    } else {
        shown_conflict(live)
    };
    with_condition(status, condition)
}

/// How long a new object may wait for the manager's verdict before its
/// status says `Pending`.
pub(crate) const PENDING_AFTER: Duration = Duration::from_secs(5);

/// Writes the tenant status (only if it changed) and tells the user about a
/// new verdict with an event.
async fn mirror(
    obj: &Summary<SyncSecret>,
    verdict: SyncSecretStatus,
    ctx: &Context,
) -> Result<(), Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let api: Api<Summary<SyncSecret>> = Api::namespaced(ctx.tenant.clone(), &namespace);
    let before = phase(obj.status.as_ref());
    let verdict = with_conflict(verdict, obj.status.as_ref(), ctx);
    let new_verdict = verdict_differs(obj.status.as_ref(), &verdict);
    let wrote = write_status(&api, obj, verdict.clone(), &ctx.metrics, &ctx.recent_tenant)
        .await
        .map_err(|source| Error::PatchStatus {
            namespace: namespace.clone(),
            name: obj.name_any(),
            source,
        })?;
    let Some(condition) = verdict.conditions.iter().flatten().next() else {
        return Ok(());
    };
    let reference = obj.object_ref(&());
    match verdict.phase {
        Some(SyncSecretPhase::Synced) if wrote && before != verdict.phase => {
            ctx.events
                .normal(&reference, "Synced", condition.message.clone())
                .await;
        }
        Some(SyncSecretPhase::Failed) if wrote && new_verdict => {
            ctx.events
                .warning(&reference, &condition.reason, condition.message.clone())
                .await;
        }
        _ => {}
    }
    Ok(())
}

/// How long a copy may be terminating before the tenant object gets an
/// event saying its deletion waits for the management cluster. The manager
/// usually removes a copy within milliseconds; an event for every deletion
/// would be one more write per object for nothing.
const ANNOUNCE_WAIT_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// Once per deletion, when the copy has been terminating for a while: a
/// `CopyDeleting` event saying what the tenant object waits for.
async fn announce_wait(obj: &Summary<SyncSecret>, copy: &Summary<SyncSecret>, ctx: &Context) {
    let since = copy
        .meta()
        .deletion_timestamp
        .as_ref()
        .map(|t| k8s_openapi::jiff::Timestamp::now().duration_since(t.0));
    let long = since.is_some_and(|d| d.as_secs_f64() >= ANNOUNCE_WAIT_AFTER.as_secs_f64());
    if !long || !ctx.first_wait(obj) {
        return;
    }
    ctx.events
        .normal(
            &obj.object_ref(&()),
            "CopyDeleting",
            format!(
                "copy {}/{} is being deleted in the management cluster; the finalizer is released once it is gone (the manager deletes its Secret first)",
                ctx.tenant_namespace,
                copy.name_any()
            ),
        )
        .await;
}

/// Deletes the copy and succeeds only once it is gone from the management
/// cluster (a 404 means gone), so that the finalizer is released last.
async fn cleanup(obj: &Summary<SyncSecret>, ctx: &Context) -> Result<Action, Error> {
    let Some(copy) = copy_name(obj) else {
        return Ok(Action::await_change());
    };
    let api: Api<Summary<SyncSecret>> =
        Api::namespaced(ctx.management.clone(), &ctx.tenant_namespace);
    let err = |source| Error::DeleteCopy {
        namespace: ctx.tenant_namespace.clone(),
        name: copy.clone(),
        source,
    };
    let waiting = || Error::CopyTerminating {
        namespace: ctx.tenant_namespace.clone(),
        name: copy.clone(),
    };
    let live = match ctx.lookup_copy(&copy).await {
        Cached::Known(live) => live,
        // A write of ours the cache has not shown yet (a copy created a
        // moment ago, our own delete): ask. A deletion is rare enough for
        // one read, and waiting silently on a cache that a broken watch
        // keeps stale would leave the tenant object Terminating with
        // nothing saying why. A cache that has not finished listing is
        // waited for first (`LIST_WAIT` at most), then asked too.
        Cached::Stale | Cached::Unknown => api.get_opt(&copy).await.map_err(err)?.map(Arc::new),
    };
    match &live {
        None => {
            ctx.forget_wait(obj);
            ctx.answered(&copy);
            return Ok(Action::await_change());
        }
        Some(live) if live.meta().deletion_timestamp.is_some() => {
            announce_wait(obj, live, ctx).await;
            return Err(waiting());
        }
        Some(_) => {}
    }
    if ctx
        .metrics
        .hold("syncsecrets", "delete", &ctx.tenant_namespace, &copy, &[])
    {
        return Err(waiting());
    }
    match api.delete(&copy, &DeleteParams::default()).await {
        Ok(either) => {
            ctx.metrics.wrote("syncsecrets", "delete");
            ctx.recent_copies
                .wrote_over(&ctx.tenant_namespace, &copy, live.as_deref());
            tracing::info!(namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any(), copy = %format!("{}/{copy}", ctx.tenant_namespace), "copy deleted");
            if either.is_right() {
                ctx.forget_wait(obj);
                Ok(Action::await_change())
            } else {
                // It has the manager's finalizer: wait for it to go. The copy
                // watch wakes us when it does (usually within milliseconds);
                // the recheck is a backstop, and announces a long wait.
                Err(waiting())
            }
        }
        Err(kube::Error::Api(s)) if s.code == 404 => {
            ctx.forget_wait(obj);
            Ok(Action::await_change())
        }
        Err(e) => Err(err(e)),
    }
}
