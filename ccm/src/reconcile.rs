//! One tenant SyncSecret: finalizer first, then its copy in the management
//! cluster; on deletion the copy goes first and the finalizer last.

use std::sync::Arc;
use std::time::Instant;

use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::Event as Finalizer;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use syncsecret_api::contract::{FIELD_MANAGER_CCM, copy_name};
use syncsecret_api::desired::{copy_needs_write, desired_copy};
use syncsecret_api::payload::Payload;
use syncsecret_api::runtime::reconcile::{finalized, record, retry_later};
use syncsecret_api::runtime::status_writer::write_status;
use syncsecret_api::status::{mirrored, pending, phase, status};
use syncsecret_api::{SyncSecret, SyncSecretPhase, SyncSecretStatus};

use crate::{Context, Error};

/// Reconciles one tenant SyncSecret; counts it, and reports a failure as a
/// Warning event on the object.
pub async fn reconcile(obj: Arc<SyncSecret>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let api: Api<SyncSecret> = Api::namespaced(ctx.tenant.clone(), &namespace);
    let result = finalized(
        &api,
        obj.clone(),
        &ctx.metrics,
        "syncsecrets",
        |event| async {
            match event {
                Finalizer::Apply(o) => apply(&o, &ctx).await,
                Finalizer::Cleanup(o) => cleanup(&o, &ctx).await,
            }
        },
    )
    .await;
    record(&ctx.metrics, &ctx.backoffs, obj.as_ref(), started, &result);
    match &result {
        Err(e) if e.is_wait() => tracing::info!(%namespace, %name, "{e}"),
        Err(e) => {
            tracing::warn!(%namespace, %name, reason = e.category(), "{e}");
            let deleting = obj.meta().deletion_timestamp.is_some();
            if !deleting && !matches!(e, Error::PatchStatus { .. }) {
                // The tenant sees why; observedGeneration keeps saying what
                // the management cluster last held.
                let failed = status(
                    SyncSecretPhase::Failed,
                    obj.status.as_ref().and_then(|s| s.observed_generation),
                    false,
                    e.category(),
                    e.to_string(),
                );
                // An event for a new verdict only (see the manager).
                if !write_status(&api, &obj, failed, &ctx.metrics)
                    .await
                    .unwrap_or(true)
                {
                    return result;
                }
            }
            ctx.events
                .warning(&obj.object_ref(&()), e.category(), e.to_string())
                .await;
        }
        Ok(_) => {}
    }
    result
}

/// Retries a failed object with per-object exponential backoff.
pub fn error_policy(obj: Arc<SyncSecret>, _error: &Error, ctx: Arc<Context>) -> Action {
    retry_later(&ctx.backoffs, obj.as_ref())
}

/// Creates or updates the copy (nothing when it is already right), then
/// mirrors the manager's verdict on it into the tenant object's status.
async fn apply(obj: &SyncSecret, ctx: &Context) -> Result<Action, Error> {
    let desired = desired_copy(obj, &ctx.tenant_namespace).ok_or(Error::NotStored)?;
    let copy = desired.name_any();
    let api: Api<SyncSecret> = Api::namespaced(ctx.management.clone(), &ctx.tenant_namespace);
    let apply_err = |source| Error::ApplyCopy {
        namespace: ctx.tenant_namespace.clone(),
        name: copy.clone(),
        source,
    };
    // The cache first; on a miss a real read, so that a cache still filling
    // (right after start) never makes us rewrite what is already there.
    let live = match ctx
        .copies
        .get(&ObjectRef::new(&copy).within(&ctx.tenant_namespace))
    {
        Some(l) => Some(l),
        None => api.get_opt(&copy).await.map_err(apply_err)?.map(Arc::new),
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
        .is_none_or(|l| copy_needs_write(l, &desired, FIELD_MANAGER_CCM));
    let held = needs_write && {
        let mut changed = Payload::of_sync_secret(&desired)
            .changes_from(live.as_deref().map(Payload::of_sync_secret).as_ref());
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
        api.patch(
            &copy,
            &PatchParams::apply(FIELD_MANAGER_CCM).force(),
            &Patch::Apply(&desired),
        )
        .await
        .map_err(apply_err)?;
        ctx.metrics.wrote("syncsecrets", "patch");
        let (reason, verb) = if live.is_some() {
            ("CopyUpdated", "updated")
        } else {
            ("CopyCreated", "created")
        };
        tracing::info!(namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any(), copy = %format!("{}/{copy}", ctx.tenant_namespace), "copy {verb}");
        ctx.events
            .normal(
                &obj.object_ref(&()),
                reason,
                format!(
                    "copy {}/{copy} {verb} in the management cluster",
                    ctx.tenant_namespace
                ),
            )
            .await;
    }
    // Status comes home: the manager's verdict on the copy as it is now;
    // Pending for an object that has none yet.
    let verdict = match &live {
        Some(copy) if !needs_write => mirrored(copy, obj.metadata.generation),
        _ => obj.status.is_none().then(pending),
    };
    if let Some(verdict) = verdict {
        mirror(obj, verdict, ctx).await?;
    }
    Ok(Action::await_change())
}

/// Writes the tenant status (only if it changed) and tells the user about a
/// new verdict with an event.
async fn mirror(obj: &SyncSecret, verdict: SyncSecretStatus, ctx: &Context) -> Result<(), Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let api: Api<SyncSecret> = Api::namespaced(ctx.tenant.clone(), &namespace);
    let before = phase(obj.status.as_ref());
    let wrote = write_status(&api, obj, verdict.clone(), &ctx.metrics)
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
        Some(SyncSecretPhase::Failed) if wrote => {
            ctx.events
                .warning(&reference, &condition.reason, condition.message.clone())
                .await;
        }
        _ => {}
    }
    Ok(())
}

/// Deletes the copy and succeeds only once it is gone from the management
/// cluster (a 404 means gone), so that the finalizer is released last.
async fn cleanup(obj: &SyncSecret, ctx: &Context) -> Result<Action, Error> {
    let Some(copy) = copy_name(obj) else {
        return Ok(Action::await_change());
    };
    let api: Api<SyncSecret> = Api::namespaced(ctx.management.clone(), &ctx.tenant_namespace);
    let err = |source| Error::DeleteCopy {
        namespace: ctx.tenant_namespace.clone(),
        name: copy.clone(),
        source,
    };
    let waiting = || Error::CopyTerminating {
        namespace: ctx.tenant_namespace.clone(),
        name: copy.clone(),
    };
    // A real read: the cache may not have seen a copy created a moment ago.
    match api.get_opt(&copy).await.map_err(err)? {
        None => return Ok(Action::await_change()),
        Some(live) if live.meta().deletion_timestamp.is_some() => return Err(waiting()),
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
            tracing::info!(namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any(), copy = %format!("{}/{copy}", ctx.tenant_namespace), "copy deleted");
            if either.is_right() {
                Ok(Action::await_change())
            } else {
                ctx.events
                    .normal(
                        &obj.object_ref(&()),
                        "CopyDeleting",
                        format!(
                            "deleted copy {}/{copy}; the finalizer is released once the management cluster has removed it",
                            ctx.tenant_namespace
                        ),
                    )
                    .await;
                // It has the manager's finalizer: wait for it to go. The copy
                // watch wakes us when it does; the requeue is a backstop.
                Err(waiting())
            }
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::await_change()),
        Err(e) => Err(err(e)),
    }
}
