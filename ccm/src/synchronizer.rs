//! The Secret synchronizer: a tenant Secret labelled
//! `kubelb.k8c.io/managed-by=kubelb` becomes a SyncSecret of the same name
//! and namespace and follows it; deleting the Secret deletes the SyncSecret
//! (the cleanup finalizer on the Secret makes sure of it). Only labelled
//! Secrets are ever listed, cached or touched.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::Event as Finalizer;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use syncsecret_api::SyncSecret;
use syncsecret_api::contract::FIELD_MANAGER_CCM;
use syncsecret_api::desired::{desired_sync_secret_from_secret, metadata_differs};
use syncsecret_api::payload::Payload;
use syncsecret_api::runtime::recent::{self, Cached};
use syncsecret_api::runtime::reconcile::{finalized, record, retry_later};
use syncsecret_api::summary::Summarize;

use crate::{Context, Error};

/// Reconciles one labelled Secret.
pub async fn reconcile(secret: Arc<Secret>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = secret.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.tenant.clone(), &namespace);
    let result = finalized(
        &api,
        secret.clone(),
        &ctx.metrics,
        None,
        "secrets",
        |event| async {
            match event {
                Finalizer::Apply(s) => apply(&s, &ctx).await,
                Finalizer::Cleanup(s) => cleanup(&s, &ctx).await,
            }
        },
    )
    .await;
    record(
        &ctx.metrics,
        &ctx.backoffs,
        secret.as_ref(),
        started,
        &result,
    );
    if let Err(e) = &result {
        tracing::warn!(%namespace, name = %secret.name_any(), reason = e.category(), "{e}");
        ctx.events
            .warning(&secret.object_ref(&()), e.category(), e.to_string())
            .await;
    }
    result
}

/// How soon a Secret whose SyncSecret we just wrote is looked at again
/// while the cache does not show that write yet.
const STALE_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Retries a failed Secret with per-object exponential backoff.
pub fn error_policy(secret: Arc<Secret>, _error: &Error, ctx: Arc<Context>) -> Action {
    retry_later(&ctx.backoffs, secret.as_ref())
}

async fn apply(secret: &Secret, ctx: &Context) -> Result<Action, Error> {
    let desired = desired_sync_secret_from_secret(secret).ok_or(Error::NotStored)?;
    let namespace = desired.namespace().unwrap_or_default();
    let name = desired.name_any();
    let api: Api<SyncSecret> = Api::namespaced(ctx.tenant.clone(), &namespace);
    let key = ObjectRef::new(&name).within(&namespace);
    let live = match ctx
        .recent_tenant
        .lookup_listed(&ctx.tenant_objects, &key, recent::LIST_WAIT)
        .await
    {
        // Our last write is not in the tenant objects' cache yet. The
        // SyncSecret watch that triggers this controller is not that
        // cache's and may fire first: look again soon.
        Cached::Stale => return Ok(Action::requeue(STALE_RECHECK)),
        Cached::Known(live) => live,
        // Not listed yet (a start): never taken for an absent SyncSecret,
        // or a restart would apply every one of them again.
        Cached::Unknown => api
            .get_opt(&name)
            .await
            .map_err(|source| Error::ReadObject {
                namespace: namespace.clone(),
                name: name.clone(),
                source,
            })?
            .map(|o| Arc::new(o.summary())),
    };
    let digest = Payload::of_sync_secret(&desired).digested();
    if let Some(live) = &live
        && live.payload == digest
        && !metadata_differs(live.as_ref(), &desired.metadata, FIELD_MANAGER_CCM)
    {
        return Ok(Action::await_change());
    }
    let changed = digest.changes_from(live.as_deref().map(|l| &l.payload));
    if ctx
        .metrics
        .hold("syncsecrets", "patch", &namespace, &name, &changed)
    {
        return Ok(Action::await_change());
    }
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER_CCM).force(),
            &Patch::Apply(&desired),
        )
        .await
        .map_err(|source| Error::ApplySyncSecret {
            namespace: namespace.clone(),
            name: name.clone(),
            source,
        })?;
    ctx.metrics.wrote("syncsecrets", "patch");
    // A write that changed nothing brings no watch event to clear it.
    if live
        .as_ref()
        .is_none_or(|l| l.resource_version() != applied.resource_version())
    {
        ctx.recent_tenant
            .wrote_over(&namespace, &name, live.as_deref());
    }
    tracing::info!(%namespace, %name, "SyncSecret applied from its Secret");
    Ok(Action::await_change())
}

async fn cleanup(secret: &Secret, ctx: &Context) -> Result<Action, Error> {
    let namespace = secret.namespace().unwrap_or_default();
    let name = secret.name_any();
    if ctx
        .metrics
        .hold("syncsecrets", "delete", &namespace, &name, &[])
    {
        return Ok(Action::await_change());
    }
    let api: Api<SyncSecret> = Api::namespaced(ctx.tenant.clone(), &namespace);
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {
            ctx.metrics.wrote("syncsecrets", "delete");
            tracing::info!(%namespace, %name, "SyncSecret deleted with its Secret");
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::await_change()),
        Err(source) => Err(Error::DeleteSyncSecret {
            namespace,
            name,
            source,
        }),
    }
}
