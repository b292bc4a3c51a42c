//! The Secret synchronizer: a tenant Secret labelled
//! `kubelb.k8c.io/managed-by=kubelb` becomes a SyncSecret of the same name
//! and namespace and follows it; deleting the Secret deletes the SyncSecret
//! (the cleanup finalizer on the Secret makes sure of it). Only labelled
//! Secrets are ever listed, cached or touched.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use syncsecret_api::SyncSecret;
use syncsecret_api::contract::{FIELD_MANAGER_CCM, FINALIZER, LABEL_MANAGED_BY, MANAGED_BY_KUBELB};
use syncsecret_api::desired::{desired_sync_secret_from_secret, metadata_differs};
use syncsecret_api::labelled::Labelled;
use syncsecret_api::payload::Payload;
use syncsecret_runtime::cache::recent::{self, Cached};
use syncsecret_runtime::cache::summary::Summary;
use syncsecret_runtime::reconcile::failure::Failure;
use syncsecret_runtime::reconcile::writer::{Deleted, Writer};
use syncsecret_runtime::reconcile::{Finalized, retry_later};

use crate::{Context, Error};

/// Reconciles one labelled Secret.
pub async fn reconcile(secret: Arc<Secret>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = secret.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.tenant.clone(), &namespace);
    let c = &ctx;
    let result = Finalized {
        api: &api,
        metrics: &ctx.metrics,
        backoffs: &ctx.backoffs,
        recent: None,
        cache: None,
        resource: "secrets",
    }
    .run(
        secret.clone(),
        |s| async move { apply(&s, c).await },
        |s| async move { cleanup(&s, c).await },
    )
    .await;
    if let Err(e) = &result {
        Failure::of(secret.as_ref(), e, &ctx.backoffs)
            .tell(&ctx.events)
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
    let api: Api<Summary<SyncSecret>> = Api::namespaced(ctx.tenant.clone(), &namespace);
    let key = ObjectRef::new(&name).within(&namespace);
    let live = match ctx
        .recent_tenant
        .lookup_listed(&ctx.tenant_objects, &key, recent::LIST_WAIT)
        .await
    {
        // Our last write is not in the tenant objects' cache yet: its
        // watch event brings this Secret back, and the recheck covers a
        // relist that skipped it.
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
            .map(Arc::new),
    };
    let digest = Payload::of_sync_secret(&desired).digested();
    if let Some(live) = &live
        && live.payload == digest
        && !metadata_differs(live.as_ref(), &desired.metadata, FIELD_MANAGER_CCM)
    {
        return Ok(Action::await_change());
    }
    let changed = digest.changes_from(live.as_deref().map(|l| &l.payload));
    let before = live.as_deref().map(Resource::meta);
    let writer = ctx.tenant_writer(&namespace);
    let applied = writer.apply(&name, FIELD_MANAGER_CCM, &desired, before, &changed);
    let applied = applied.await.map_err(|source| Error::ApplySyncSecret {
        namespace: namespace.clone(),
        name: name.clone(),
        source,
    })?;
    if applied.is_some() {
        tracing::info!(%namespace, %name, "SyncSecret applied from its Secret");
    }
    Ok(Action::await_change())
}

async fn cleanup(secret: &Secret, ctx: &Context) -> Result<Action, Error> {
    let namespace = secret.namespace().unwrap_or_default();
    let name = secret.name_any();
    let writer = ctx.tenant_writer(&namespace);
    match writer.delete(&name, None, &[]).await {
        Ok(Deleted::Held | Deleted::Absent) => Ok(Action::await_change()),
        Ok(_) => {
            tracing::info!(%namespace, %name, "SyncSecret deleted with its Secret");
            Ok(Action::await_change())
        }
        Err(source) => Err(Error::DeleteSyncSecret {
            namespace,
            name,
            source,
        }),
    }
}

/// A Secret that left the synchronizer's watch without being deleted (its
/// `kubelb.k8c.io/managed-by` label taken off or changed) is no longer
/// ours to sync: the SyncSecret we made from it is deleted (its copy and
/// management Secret go with it) and our finalizer released, so that
/// deleting the Secret later does not hang. Also called by the sweep for
/// every SyncSecret we made whose Secret is not among the labelled ones
/// (a label taken off while the ccm was down, or during a relist).
#[tracing::instrument(skip_all, fields(namespace = %namespace, name = %name))]
pub async fn release(ctx: &Context, namespace: &str, name: &str) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.tenant.clone(), namespace);
    let read_err = |source| Error::ReadObject {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        source,
    };
    let secret = secrets.get_metadata_opt(name).await.map_err(read_err)?;
    if secret.as_ref().is_some_and(|s| synchronized(s.labels())) {
        // Labelled again meanwhile: the controller has it.
        return Ok(());
    }
    delete_made_sync_secret(ctx, namespace, name).await?;
    let Some(secret) = secret else {
        return Ok(());
    };
    let writer = Writer::new(secrets, "secrets", &ctx.metrics);
    let released = writer.release_finalizer(&secret.metadata, FINALIZER);
    let released = released.await.map_err(|source| Error::ReleaseSecret {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        source,
    })?;
    if released.is_none() {
        return Ok(());
    }
    tracing::info!(%namespace, %name, "Secret no longer labelled for syncing: its SyncSecret deleted, finalizer released");
    Ok(())
}

/// Whether a Secret's labels ask for it to be synced.
pub fn synchronized(labels: &std::collections::BTreeMap<String, String>) -> bool {
    labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY_KUBELB)
}

/// Deletes the SyncSecret `namespace/name` if the synchronizer made it
/// (our field manager applied it): one a user made by hand is theirs.
async fn delete_made_sync_secret(ctx: &Context, namespace: &str, name: &str) -> Result<(), Error> {
    let key = ObjectRef::new(name).within(namespace);
    let made = match ctx
        .recent_tenant
        .lookup_listed(&ctx.tenant_objects, &key, recent::LIST_WAIT)
        .await
    {
        Cached::Known(live) => live.is_some_and(|l| l.made_by(FIELD_MANAGER_CCM)),
        // Not listed yet, or our own write not shown yet: read it.
        Cached::Stale | Cached::Unknown => {
            let api: Api<Summary<SyncSecret>> = Api::namespaced(ctx.tenant.clone(), namespace);
            api.get_opt(name)
                .await
                .map_err(|source| Error::ReadObject {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    source,
                })?
                .is_some_and(|l| l.made_by(FIELD_MANAGER_CCM))
        }
    };
    if !made {
        return Ok(());
    }
    let writer = ctx.tenant_writer(namespace);
    match writer.delete(name, None, &[]).await {
        Ok(Deleted::Held | Deleted::Absent) => Ok(()),
        Ok(_) => {
            tracing::info!(%namespace, %name, "SyncSecret deleted: its Secret is no longer labelled for syncing");
            Ok(())
        }
        Err(source) => Err(Error::DeleteSyncSecret {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        }),
    }
}
