//! One tenant SyncSecret: finalizer first, then its copy in the management
//! cluster; on deletion the copy goes first and the finalizer last.

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use syncsecret_api::contract::{FIELD_MANAGER_CCM, copy_name};
use syncsecret_api::desired::{copy_needs_write, desired_copy, desired_copy_metadata};
use syncsecret_api::status::{
    awaits_first_verdict, cluster_name_conflict, mirrored, pending, phase, shown_conflict, status,
    verdict_differs, with_condition,
};
use syncsecret_api::{SyncSecret, SyncSecretPhase, SyncSecretStatus};
use syncsecret_runtime::cache::recent::{self, Cached};
use syncsecret_runtime::cache::summary::Summary;
use syncsecret_runtime::cache::{self, Unreadable};
use syncsecret_runtime::reconcile::failure::Failure;
use syncsecret_runtime::reconcile::writer::Deleted;
use syncsecret_runtime::reconcile::{Finalized, Outcome, retry_later};
use syncsecret_runtime::report;

use crate::asked::PENDING_AFTER;
use crate::{Context, Error};

/// Reconciles one tenant SyncSecret; counts it, and reports a failure in
/// its status and as a Warning event.
pub async fn reconcile(obj: Arc<Summary<SyncSecret>>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let api: Api<Summary<SyncSecret>> = Api::namespaced(ctx.tenant.clone(), &namespace);
    let c = &ctx;
    let result = Finalized {
        api: &api,
        metrics: &ctx.metrics,
        backoffs: &ctx.backoffs,
        recent: Some(&ctx.recent_tenant),
        cache: Some(&ctx.tenant_objects),
        resource: "syncsecrets",
    }
    .run(
        obj.clone(),
        |o| async move { apply(&o, c).await },
        |o| async move { cleanup(&o, c).await },
    )
    .await;
    if let Err(e) = &result {
        let mut failure = Failure::of(obj.as_ref(), e, &ctx.backoffs);
        let deleting = obj.meta().deletion_timestamp.is_some();
        if !deleting && !e.is_wait() && !matches!(e, Error::PatchStatus { .. }) {
            // The tenant sees why; observedGeneration keeps saying what
            // the management cluster last held.
            let generation = obj.status.as_ref().and_then(|s| s.observed_generation);
            let failed = status(
                SyncSecretPhase::Failed,
                generation,
                false,
                e.category(),
                report(e),
            );
            let failed = with_conflict(failed, obj.status.as_ref(), &ctx);
            failure = failure
                .in_status(&ctx.tenant_writer(&namespace), failed)
                .await;
        }
        failure.tell(&ctx.events).await;
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
/// would be, the payload's digest); the tenant object is needed whole only
/// to write it.
async fn apply(obj: &Summary<SyncSecret>, ctx: &Context) -> Result<Action, Error> {
    if let Some(reason) = obj.unreadable() {
        return Err(undecodable(obj, reason));
    }
    let desired = desired_copy_metadata(obj, &ctx.tenant_namespace, Some(&ctx.cluster_id))
        .ok_or(Error::NotStored)?;
    let copy = copy_name(obj).ok_or(Error::NotStored)?;
    let live = match ctx.lookup_copy(&copy).await {
        // Our last write is not in the cache yet: its watch event brings
        // this object back (the requeue only guards against a missed one).
        Cached::Stale => return Ok(Action::requeue(recent::TTL)),
        Cached::Known(live) => live,
        // A cache that has not finished listing within `LIST_WAIT` (the
        // management cluster slow or unreachable since the start) is never
        // taken for an absent copy: a restart must not rewrite what is
        // already there.
        Cached::Unknown => read_copy(&copy, ctx)
            .await
            .map_err(|source| apply_failed(&copy, ctx, source))?,
    };
    match live {
        // Someone deleted the copy; once the manager has let it go, the copy
        // watch brings us back to create it anew.
        Some(l) if l.meta().deletion_timestamp.is_some() => Ok(Action::await_change()),
        Some(l) if !copy_needs_write(l.as_ref(), &desired, &obj.payload, FIELD_MANAGER_CCM) => {
            mirror_verdict(obj, &copy, &l, ctx).await
        }
        live => write_copy(obj, &copy, live.as_deref(), ctx).await,
    }
}

/// Reads a copy (its summary: the tenant's identity may have written one
/// in any shape the CRD lets through).
async fn read_copy(
    copy: &str,
    ctx: &Context,
) -> Result<Option<Arc<Summary<SyncSecret>>>, kube::Error> {
    let api: Api<Summary<SyncSecret>> =
        Api::namespaced(ctx.management.clone(), &ctx.tenant_namespace);
    Ok(api.get_opt(copy).await?.map(Arc::new))
}

fn apply_failed(copy: &str, ctx: &Context, source: kube::Error) -> Error {
    Error::ApplyCopy {
        namespace: ctx.tenant_namespace.clone(),
        name: copy.to_owned(),
        source,
    }
}

/// Writes the copy from the tenant object whole (`cache::whole`; `live`:
/// the copy as cached). The manager's verdict usually follows within milliseconds
/// and the copy's watch event brings us back, so a new object is marked
/// Pending only if it waits longer.
#[tracing::instrument(skip_all, fields(copy = %copy))]
async fn write_copy(
    obj: &Summary<SyncSecret>,
    copy: &str,
    live: Option<&Summary<SyncSecret>>,
    ctx: &Context,
) -> Result<Action, Error> {
    let mut changed = obj.payload.changes_from(live.map(|l| &l.payload));
    if changed.is_empty() {
        changed.push("metadata".to_owned());
    }
    let writer = ctx.copy_writer();
    if writer.holds("patch", copy, &changed) {
        return Ok(Action::requeue(PENDING_AFTER));
    }
    let Some(whole) = read_whole(obj, ctx).await? else {
        // Deleted or made anew since it was cached: its watch event brings
        // the next state.
        return Ok(Action::await_change());
    };
    let desired = desired_copy(&whole, &ctx.tenant_namespace, Some(&ctx.cluster_id))
        .ok_or(Error::NotStored)?;
    let failed = |source| apply_failed(copy, ctx, source);
    let merged = match live {
        // Someone else's stringData on the copy: not ours to own, so an
        // apply would leave it (and the tenant limits refuse a copy with
        // it). A copy carries data only: it goes first.
        Some(l) if l.has_string_data => {
            let drop = json!({"stringData": null});
            let before = Some(l.meta());
            writer
                .merge(copy, FIELD_MANAGER_CCM, drop, before, &changed)
                .await
                .map_err(failed)?
        }
        _ => None,
    };
    // Both writes are ours until the cache shows the second: the first
    // one's watch event must not look like someone else's.
    let before = merged
        .as_ref()
        .map(Resource::meta)
        .or(live.map(Resource::meta));
    let applied = writer.apply(copy, FIELD_MANAGER_CCM, &desired, before, &changed);
    let Some(written) = applied.await.map_err(failed)? else {
        return Ok(Action::requeue(PENDING_AFTER));
    };
    // A write that leaves the generation as it was (labels, annotations)
    // asks the manager for nothing: the verdict the copy carries stands.
    if live.is_none_or(|l| l.meta().generation != written.meta().generation) {
        ctx.asked(copy);
    }
    let verb = if live.is_some() { "updated" } else { "created" };
    tracing::info!(namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any(), copy = %format!("{}/{copy}", ctx.tenant_namespace), "copy {verb}");
    // An update changes no phase, so it gets an event of its own (a new
    // object's first sync is told by its status).
    if live.is_some() {
        let note = format!(
            "copy {}/{copy} updated in the management cluster",
            ctx.tenant_namespace
        );
        ctx.events
            .normal(&obj.object_ref(&()), "CopyUpdated", note)
            .await;
    }
    Ok(Action::requeue(PENDING_AFTER))
}

/// Status comes home: the manager's verdict on the copy as it is now, or
/// Pending for a new object once it has waited `PENDING_AFTER` for one
/// and the verdict is late ([`Context::verdict_wait`]).
async fn mirror_verdict(
    obj: &Summary<SyncSecret>,
    copy: &str,
    live: &Summary<SyncSecret>,
    ctx: &Context,
) -> Result<Action, Error> {
    match mirrored(live, obj.metadata.generation) {
        Some(verdict) => {
            ctx.answered(copy, awaits_first_verdict(obj.status.as_ref()));
            mirror(obj, verdict, ctx).await?;
        }
        None if awaits_first_verdict(obj.status.as_ref()) => {
            let created = live.metadata.creation_timestamp.as_ref();
            match ctx.verdict_wait(copy, created) {
                Ok(wait) => return Ok(Action::requeue(wait)),
                Err(late) => {
                    tracing::info!(namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any(), copy = %format!("{}/{copy}", ctx.tenant_namespace), "Pending: {late}");
                }
            }
            mirror(obj, pending(), ctx).await?;
        }
        None => {}
    }
    Ok(Action::await_change())
}

/// The tenant object whole: as its watch just delivered it, else as stored
/// now (see `cache::whole`).
async fn read_whole(obj: &Summary<SyncSecret>, ctx: &Context) -> Result<Option<SyncSecret>, Error> {
    cache::whole(&ctx.tenant, obj, &ctx.delivered)
        .await
        .map_err(|e| match e {
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

/// Writes the tenant status (only if it changed) and tells the user about a
/// new verdict with an event.
async fn mirror(
    obj: &Summary<SyncSecret>,
    verdict: SyncSecretStatus,
    ctx: &Context,
) -> Result<(), Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let before = phase(obj.status.as_ref());
    let verdict = with_conflict(verdict, obj.status.as_ref(), ctx);
    let new_verdict = verdict_differs(obj.status.as_ref(), &verdict);
    let wrote = ctx
        .tenant_writer(&namespace)
        .status(obj, verdict.clone())
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
        // A first sync is told by the status alone (one write fewer per
        // object); a `Synced` event marks a change of a phase the user may
        // have seen: from `Pending` or `Failed`.
        Some(SyncSecretPhase::Synced) if wrote && before.is_some() && before != verdict.phase => {
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

/// How long a copy may be terminating, with the manager letting no other
/// copy go meanwhile, before the tenant object gets an event saying its
/// deletion waits for the management cluster. The manager usually removes
/// a copy within milliseconds; an event for every deletion would be one
/// more write per object for nothing.
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
    // A manager that lets other copies go works through a backlog (many
    // deleted at once): this one waits its turn, and an event each would
    // be one more write per object.
    if !long || ctx.manager_answering(ANNOUNCE_WAIT_AFTER) || !ctx.first_wait(obj) {
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
#[tracing::instrument(skip_all)]
async fn cleanup(obj: &Summary<SyncSecret>, ctx: &Context) -> Result<Action, Error> {
    let Some(copy) = copy_name(obj) else {
        return Ok(Action::await_change());
    };
    let failed = |source| Error::DeleteCopy {
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
        Cached::Stale | Cached::Unknown => read_copy(&copy, ctx).await.map_err(failed)?,
    };
    let deleted = match &live {
        None => Deleted::Absent,
        Some(live) if live.meta().deletion_timestamp.is_some() => {
            ctx.saw_terminating(&copy);
            announce_wait(obj, live, ctx).await;
            Deleted::Terminating
        }
        Some(live) => {
            let before = Some(live.meta());
            let writer = ctx.copy_writer();
            let deleted = writer.delete(&copy, before, &[]);
            let deleted = deleted.await.map_err(failed)?;
            if deleted == Deleted::Terminating {
                ctx.saw_terminating(&copy);
            }
            if matches!(deleted, Deleted::Gone | Deleted::Terminating) {
                tracing::info!(namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any(), copy = %format!("{}/{copy}", ctx.tenant_namespace), "copy deleted");
            }
            deleted
        }
    };
    match deleted {
        Deleted::Gone | Deleted::Absent => {
            ctx.forget_wait(obj);
            ctx.copy_gone(&copy);
            Ok(Action::await_change())
        }
        // It has the manager's finalizer: wait for it to go. The copy
        // watch wakes us when it does (usually within milliseconds); the
        // recheck is a backstop, and announces a long wait.
        Deleted::Terminating | Deleted::Held => Err(waiting()),
    }
}
