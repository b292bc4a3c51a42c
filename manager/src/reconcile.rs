//! One copy: finalizer, Secret, status; on deletion the Secret goes first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use syncsecret_runtime::cache::certificate::{
    CertState, condition as certificate_condition, judge,
};
use syncsecret_runtime::report;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use syncsecret_api::contract::{FIELD_MANAGER_MANAGER, LABEL_ORIGIN_NAME, secret_name};
use syncsecret_api::desired::{desired_secret, desired_secret_metadata, secret_needs_write};
use syncsecret_api::labelled::Labelled;
use syncsecret_api::payload::{Payload, PayloadDigest};
use syncsecret_api::status::{REASON_SYNCED, for_tenant, status, synced_message, with_condition};
use syncsecret_api::{SyncSecret, SyncSecretPhase, SyncSecretStatus};
use syncsecret_runtime::cache::recent::{self, Cached};
use syncsecret_runtime::cache::summary::{Summarize, Summary};
use syncsecret_runtime::cache::{self, Unreadable};
use syncsecret_runtime::explain;
use syncsecret_runtime::metrics::ReconcileResult;
use syncsecret_runtime::reconcile::status_writer;
use syncsecret_runtime::reconcile::{Finalized, retry_later};

use crate::{Context, Error};

/// Reconciles one copy; counts it; reports a failure in its status and as
/// a Warning event.
pub async fn reconcile(copy: Arc<Summary<SyncSecret>>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = copy.namespace().unwrap_or_default();
    if !namespace.starts_with(&ctx.tenant_namespace_prefix) {
        ctx.metrics
            .reconciled(&namespace, ReconcileResult::Skipped, started.elapsed());
        return Ok(Action::await_change());
    }
    let api: Api<Summary<SyncSecret>> = Api::namespaced(ctx.client.clone(), &namespace);
    let c = &ctx;
    let result = Finalized {
        api: &api,
        metrics: &ctx.metrics,
        backoffs: &ctx.backoffs,
        recent: Some(&ctx.recent_copies),
        resource: "syncsecrets",
    }
    .run(
        copy.clone(),
        |o| async move { apply(&o, c).await },
        |o| async move { cleanup(&o, c).await },
    )
    .await;
    if let Err(e) = &result {
        tracing::warn!(%namespace, name = %copy.name_any(), reason = e.category(), "{}", report(e));
        let deleting = copy.meta().deletion_timestamp.is_some();
        // An event for a new verdict only: a copy refused again after a
        // restart or a retry already says so in its status.
        let mut new_verdict = true;
        if !matches!(e, Error::PatchStatus { .. }) {
            // A deletion that does not go through says why in the copy's
            // status too (the happy path writes no status: the copy is
            // gone a moment later).
            let phase = if deleting {
                SyncSecretPhase::Terminating
            } else {
                SyncSecretPhase::Failed
            };
            // The tenant's identity reads copies: capped, and naming no
            // management identity (the log line above has it all).
            let verdict = status(
                phase,
                copy.meta().generation,
                false,
                e.category(),
                for_tenant(&report(e)),
            );
            new_verdict = write_status(&copy, verdict, &ctx).await.unwrap_or(true);
        }
        if new_verdict {
            ctx.events
                .warning(&copy.object_ref(&()), e.category(), report(e))
                .await;
        }
    }
    result
}

/// Retries a failed copy with per-object exponential backoff.
pub fn error_policy(copy: Arc<Summary<SyncSecret>>, _error: &Error, ctx: Arc<Context>) -> Action {
    retry_later(&ctx.backoffs, copy.as_ref())
}

/// Writes the copy's status if it differs from the live one.
async fn write_status(
    copy: &Summary<SyncSecret>,
    desired: SyncSecretStatus,
    ctx: &Context,
) -> Result<bool, Error> {
    let namespace = copy.namespace().unwrap_or_default();
    let api: Api<Summary<SyncSecret>> = Api::namespaced(ctx.client.clone(), &namespace);
    status_writer::write_status(&api, copy, desired, &ctx.metrics, &ctx.recent_copies)
        .await
        .map_err(|source| Error::PatchStatus {
            namespace,
            name: copy.name_any(),
            source,
        })
}

/// Creates or updates the Secret (nothing when it already holds the
/// content), then records `Synced` in the status (nothing when already so).
///
/// Whether to write is decided from the caches (the Secret's metadata as it
/// would be, the copy's payload digest); the copy is read whole only to
/// write its Secret.
async fn apply(copy: &Summary<SyncSecret>, ctx: &Context) -> Result<Action, Error> {
    if let Some(reason) = copy.unreadable() {
        return Err(undecodable(copy, reason));
    }
    // The management side never trusts a tenant: type and size first.
    ctx.policy.check(&copy.payload.type_, copy.payload.size)?;
    let desired = desired_secret_metadata(copy, &ctx.policy).ok_or(Error::NotStored)?;
    let namespace = copy.namespace().unwrap_or_default();
    let name = secret_name(copy).ok_or(Error::NotStored)?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let apply_err = |source| Error::ApplySecret {
        namespace: namespace.clone(),
        name: name.clone(),
        source,
    };
    // Only Secrets with the origin label are watched and cached: a copy
    // made by hand without one has its Secret read every time.
    let cached = desired
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(LABEL_ORIGIN_NAME));
    let key = ObjectRef::new(&name).within(&namespace);
    let found = if cached {
        ctx.recent_secrets
            .lookup_listed(&ctx.secrets, &key, recent::LIST_WAIT)
            .await
    } else {
        ctx.recent_secrets.lookup(&ctx.secrets, &key)
    };
    let live = match found {
        // Our last write is not in the cache yet: its watch event brings
        // this copy back (the requeue only guards against a missed one).
        Cached::Stale => return Ok(Action::requeue(recent::TTL)),
        Cached::Known(Some(live)) => Some(live),
        Cached::Known(None) if cached => None,
        // A cache that has not finished listing within `LIST_WAIT` (the
        // Secrets' list slow, or forbidden) is never taken for an absent
        // Secret: a restart must not rewrite what is already there.
        Cached::Known(None) | Cached::Unknown => api
            .get_opt(&name)
            .await
            .map_err(apply_err)?
            .map(|s| Arc::new(s.summary())),
    };
    // A Secret's type never changes, nor an immutable one's content: such a
    // Secret is deleted and made anew (once per generation, never in a loop).
    let live = match live {
        Some(l) if must_replace(&l, &copy.payload) => {
            replace(copy, &l, ctx).await?;
            None
        }
        other => other,
    };
    let needs_write = live.as_ref().is_none_or(|l| {
        secret_needs_write(l.as_ref(), &desired, &copy.payload, FIELD_MANAGER_MANAGER)
    });
    let held = needs_write && {
        let changed = copy
            .payload
            .changes_from(live.as_deref().map(|l| &l.payload));
        ctx.metrics
            .hold("secrets", "patch", &namespace, &name, &changed)
    };
    if needs_write && !held {
        let Some(whole) = read_whole(copy, ctx).await? else {
            // Deleted or made anew since it was cached: its watch event
            // brings the next state.
            return Ok(Action::await_change());
        };
        // What is written is the copy as stored now (it may be newer than
        // the cache): it passes the same checks.
        let payload = Payload::of_sync_secret(&whole);
        ctx.policy.check(&payload.type_, payload.size())?;
        let desired = desired_secret(&whole, &ctx.policy).ok_or(Error::NotStored)?;
        // Held until the write is done, so that two new objects of one
        // tenant cannot both fit the last place of its budget.
        let _budget = check_budget(ctx, &api, &namespace, payload.size(), live.as_deref()).await?;
        let stored = api
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER_MANAGER).force(),
                &Patch::Apply(&desired),
            )
            .await
            .map_err(apply_err)?;
        ctx.metrics.wrote("secrets", "patch");
        if cached {
            ctx.recent_secrets
                .wrote_over_as(&namespace, &name, live.as_deref(), &stored);
        }
        ctx.verify_failures.check(&namespace, &desired, &stored)?;
        let verb = if live.is_some() { "updated" } else { "created" };
        tracing::info!(%namespace, copy = %copy.name_any(), secret = %name, "secret {verb}");
        // A new Secret is told by the copy turning `Synced` (and the tenant
        // object's `Synced` event); an update changes no phase.
        if live.is_some() {
            ctx.events
                .normal(
                    &copy.object_ref(&()),
                    "SecretUpdated",
                    format!("Secret {namespace}/{name} updated"),
                )
                .await;
        }
    }
    let generation = copy.meta().generation;
    let now = Timestamp::now().as_second();
    let certificate = copy
        .certificate
        .as_ref()
        .map(|c| judge(c, now, ctx.expiry_window_secs));
    let key = format!("{namespace}/{}", copy.name_any());
    ctx.certificates.observe(
        &namespace,
        &key,
        certificate.as_ref().and_then(|c| c.as_ref().ok()),
    );
    let synced = with_condition(
        status(
            SyncSecretPhase::Synced,
            generation,
            true,
            REASON_SYNCED,
            synced_message(&namespace, &name, copy.kept_off()),
        ),
        certificate
            .as_ref()
            .and_then(|c| certificate_condition(c, generation)),
    );
    write_status(copy, synced, ctx).await?;
    // A certificate turns from valid to expiring to expired with time alone:
    // look again when it next changes state.
    Ok(match certificate {
        Some(Ok(info)) if info.state != CertState::Expired => {
            let next = if info.state == CertState::Valid {
                info.not_after - ctx.expiry_window_secs
            } else {
                info.not_after
            };
            let wait = u64::try_from(next - now).unwrap_or(0).clamp(1, 86_400);
            Action::requeue(Duration::from_secs(wait))
        }
        _ => Action::await_change(),
    })
}

/// Whether `live` cannot be updated to hold `want`: the type differs (a
/// Secret's type is immutable) or it is immutable and its content differs.
fn must_replace(live: &Summary<Secret>, want: &PayloadDigest) -> bool {
    let have = &live.payload;
    have.type_ != want.type_ || (have.immutable && have != want)
}

/// The copy as stored now (see `cache::whole`).
async fn read_whole(
    copy: &Summary<SyncSecret>,
    ctx: &Context,
) -> Result<Option<SyncSecret>, Error> {
    cache::whole(&ctx.client, copy).await.map_err(|e| match e {
        Unreadable::Undecodable(reason) => undecodable(copy, &reason),
        Unreadable::Read(source) => Error::ReadCopy {
            namespace: copy.namespace().unwrap_or_default(),
            name: copy.name_any(),
            source,
        },
    })
}

fn undecodable(copy: &Summary<SyncSecret>, reason: &str) -> Error {
    Error::Undecodable {
        namespace: copy.namespace().unwrap_or_default(),
        name: copy.name_any(),
        reason: reason.to_owned(),
    }
}

/// Deletes `live` (only that very object: a UID precondition) so that it
/// can be made anew, says so in an event, and refuses a second replacement
/// for the same generation of the copy.
async fn replace(
    copy: &Summary<SyncSecret>,
    live: &Summary<Secret>,
    ctx: &Context,
) -> Result<(), Error> {
    let namespace = copy.namespace().unwrap_or_default();
    let name = live.name_any();
    let generation = copy.meta().generation.unwrap_or_default();
    let copy_uid = copy.uid().unwrap_or_default();
    let again = match ctx.replaced.lock() {
        Ok(mut replaced) => replaced.insert(copy_uid, generation) == Some(generation),
        Err(_) => false,
    };
    if again {
        return Err(Error::Refused {
            reason: "ReplaceLoop",
            message: format!(
                "Secret {namespace}/{name} was already replaced for this generation and still differs after the write; something changes it on admission"
            ),
        });
    }
    if ctx.metrics.hold(
        "secrets",
        "delete",
        &namespace,
        &name,
        &["(replace)".to_owned()],
    ) {
        return Ok(());
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let params = DeleteParams {
        preconditions: live.uid().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => {
            ctx.metrics.wrote("secrets", "delete");
            if live.label(LABEL_ORIGIN_NAME).is_some() {
                ctx.recent_secrets.wrote_over(&namespace, &name, Some(live));
            }
        }
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(source) => {
            return Err(Error::DeleteSecret {
                namespace,
                name,
                source,
            });
        }
    }
    tracing::info!(%namespace, copy = %copy.name_any(), secret = %name, "immutable Secret replaced");
    ctx.events
        .normal(
            &copy.object_ref(&()),
            "ImmutableReplaced",
            format!("Secret {namespace}/{name} could not be updated in place (type or immutable content changed); it was deleted and made anew"),
        )
        .await;
    Ok(())
}

/// With a budget set, counts the tenant's Secrets (a real list: the cache
/// lags behind our own writes) under the tenant's lock and refuses a new or
/// growing Secret that would not fit. Returns the held lock.
async fn check_budget(
    ctx: &Context,
    api: &Api<Secret>,
    namespace: &str,
    size: usize,
    live: Option<&Summary<Secret>>,
) -> Result<Option<tokio::sync::OwnedMutexGuard<()>>, Error> {
    let replacing = live.map(|l| l.payload.size);
    if !ctx.policy.has_budget() || replacing.is_some_and(|r| size <= r) {
        return Ok(None);
    }
    let lock = match ctx.budget_locks.lock() {
        Ok(mut locks) => locks.entry(namespace.to_owned()).or_default().clone(),
        Err(_) => Arc::default(),
    };
    let guard = lock.lock_owned().await;
    let ours = api
        .list(&ListParams::default().labels(LABEL_ORIGIN_NAME))
        .await
        .map_err(|source| Error::CountSecrets {
            namespace: namespace.to_owned(),
            source,
        })?;
    // Counted by what the manager owns: its controller ownerReference to a
    // copy. The label only narrows the list (the manager sets it on every
    // Secret it makes); nothing a tenant writes decides what counts.
    let owned: Vec<&Secret> = ours.items.iter().filter(|s| owned_by_a_copy(s)).collect();
    let bytes = owned.iter().map(|s| Payload::of_secret(s).size()).sum();
    ctx.policy
        .check_budget(owned.len(), bytes, size, replacing)?;
    Ok(Some(guard))
}

/// Whether `secret` is one the manager made: controlled by a copy.
fn owned_by_a_copy(secret: &Secret) -> bool {
    secret.owner_references().iter().any(|o| {
        o.controller == Some(true)
            && o.kind == SyncSecret::kind(&())
            && o.api_version == SyncSecret::api_version(&())
    })
}

/// Deletes the Secret (a 404 means gone); the ownerReference makes the
/// garbage collector the backstop should this never run.
async fn cleanup(copy: &Summary<SyncSecret>, ctx: &Context) -> Result<Action, Error> {
    let namespace = copy.namespace().unwrap_or_default();
    ctx.certificates.observe(
        &namespace,
        &format!("{namespace}/{}", copy.name_any()),
        None,
    );
    let Some(name) = secret_name(copy) else {
        return Ok(Action::await_change());
    };
    if let Ok(mut replaced) = ctx.replaced.lock() {
        replaced.remove(&name);
    }
    if ctx
        .metrics
        .hold("secrets", "delete", &namespace, &name, &[])
    {
        return Ok(Action::await_change());
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {
            ctx.metrics.wrote("secrets", "delete");
            tracing::info!(%namespace, copy = %copy.name_any(), secret = %name, "secret deleted");
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::await_change()),
        Err(source) => {
            tracing::debug!(%namespace, secret = %name, "delete failed: {}", explain(&source));
            Err(Error::DeleteSecret {
                namespace,
                name,
                source,
            })
        }
    }
}
