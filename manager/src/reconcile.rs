//! One copy: finalizer, Secret, status; on deletion the Secret goes first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use syncsecret_runtime::cache::certificate::{
    CertState, condition as certificate_condition, judge,
};
use syncsecret_runtime::report;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use syncsecret_api::contract::{FIELD_MANAGER_MANAGER, FINALIZER, LABEL_ORIGIN_NAME, secret_name};
use syncsecret_api::desired::{desired_secret, desired_secret_metadata, secret_needs_write};
use syncsecret_api::labelled::Labelled;
use syncsecret_api::payload::{Payload, PayloadDigest};
use syncsecret_api::status::{REASON_SYNCED, for_tenant, status, synced_message, with_condition};
use syncsecret_api::{SyncSecret, SyncSecretPhase};
use syncsecret_runtime::cache::recent::{self, Cached};
use syncsecret_runtime::cache::summary::{Summarize, Summary};
use syncsecret_runtime::cache::{self, Unreadable};
use syncsecret_runtime::explain;
use syncsecret_runtime::metrics::ReconcileResult;
use syncsecret_runtime::reconcile::FinalizerError;
use syncsecret_runtime::reconcile::failure::Failure;
use syncsecret_runtime::reconcile::writer::{Deleted, Writer};
use syncsecret_runtime::reconcile::{Finalized, Outcome, retry_later};

use crate::budget::{copy_bytes, secret_bytes};
use crate::{Context, Error};

/// Reconciles one copy; counts it; reports a failure in its status and as
/// a Warning event.
pub async fn reconcile(copy: Arc<Summary<SyncSecret>>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = copy.namespace().unwrap_or_default();
    if !namespace.starts_with(&ctx.tenant_namespace_prefix) {
        ctx.metrics
            .reconciled(&namespace, ReconcileResult::Skipped, started.elapsed());
        return let_go(&copy, &namespace, ctx.as_ref()).await;
    }
    let deleting = copy.meta().deletion_timestamp.is_some();
    let ours = copy.finalizers().iter().any(|f| f == FINALIZER);
    // A tenant whose write budget is spent waits, holding no worker. Its
    // deletions too: a tenant making and deleting copies in a loop would
    // otherwise have the manager write for it at no pace.
    ctx.budgets.read_quota(&ctx.client, &namespace).await;
    if let Some(wait) = ctx.budgets.wait(&namespace) {
        tracing::debug!(%namespace, copy = %copy.name_any(), ?wait, "the tenant's write budget is spent; waiting");
        ctx.metrics
            .reconciled(&namespace, ReconcileResult::Skipped, started.elapsed());
        return Ok(Action::requeue(wait));
    }
    // The finalizer is added by the first reconcile, and taken off after
    // the Secret's deletion: a write of the copy each.
    if deleting == ours {
        ctx.budgets.charge(&namespace, copy_bytes(&copy));
    }
    if deleting && ours {
        ctx.budgets.charge(&namespace, 0);
    }
    let api: Api<Summary<SyncSecret>> = Api::namespaced(ctx.client.clone(), &namespace);
    let c = &ctx;
    let result = Finalized {
        api: &api,
        metrics: &ctx.metrics,
        backoffs: &ctx.backoffs,
        recent: Some(&ctx.recent_copies),
        cache: Some(&ctx.copies),
        resource: "syncsecrets",
    }
    .run(
        copy.clone(),
        |o| async move { apply(&o, c).await },
        |o| async move { cleanup(&o, c).await },
    )
    .await;
    if let Err(e) = &result {
        let mut failure = Failure::of(copy.as_ref(), e, &ctx.backoffs);
        if !matches!(e, Error::PatchStatus { .. }) {
            // A deletion that does not go through says why in the copy's
            // status too (the happy path writes no status: the copy is
            // gone a moment later).
            let phase = match copy.meta().deletion_timestamp {
                Some(_) => SyncSecretPhase::Terminating,
                None => SyncSecretPhase::Failed,
            };
            // The tenant's identity reads copies: capped, and naming no
            // management identity (the log line has it all).
            let message = for_tenant(&report(e));
            let failed = status(phase, copy.meta().generation, false, e.category(), message);
            failure = failure
                .in_status(&ctx.copy_writer(&namespace), failed)
                .await;
            if failure.wrote_status() {
                ctx.budgets.charge(&namespace, copy_bytes(&copy));
            }
        }
        failure.tell(&ctx.events).await;
    }
    result
}

/// A copy outside the tenant namespaces is not ours to sync, but the ccm
/// gives every copy our finalizer at birth: a deleted one a ccm made (it
/// carries the origin labels) is let go at once, or it (and its
/// namespace) would wait for a cleanup that never comes. A Secret the
/// manager made for it earlier goes with it through its ownerReference.
/// Any other copy there (another installation's) is left alone.
async fn let_go(
    copy: &Summary<SyncSecret>,
    namespace: &str,
    ctx: &Context,
) -> Result<Action, Error> {
    if copy.meta().deletion_timestamp.is_none() || copy.label(LABEL_ORIGIN_NAME).is_none() {
        return Ok(Action::await_change());
    }
    // Not `copy_writer`: the copy goes once released, and a remembered
    // write whose watch event never comes would only linger.
    let api = Api::namespaced(ctx.client.clone(), namespace);
    let writer = Writer::<Summary<SyncSecret>>::new(api, "syncsecrets", &ctx.metrics);
    match writer.release_finalizer(copy.meta(), FINALIZER).await {
        Ok(released) => {
            if released.is_some() {
                tracing::info!(%namespace, copy = %copy.name_any(), "copy outside the tenant namespaces let go");
            }
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::await_change()),
        Err(e) => Err(FinalizerError::Remove(e).into()),
    }
}

/// Retries a failed copy with per-object exponential backoff.
pub fn error_policy(copy: Arc<Summary<SyncSecret>>, _error: &Error, ctx: Arc<Context>) -> Action {
    retry_later(&ctx.backoffs, copy.as_ref())
}

/// Makes the copy's Secret hold its content (nothing when it already
/// does), then records `Synced` in the status (nothing when already so).
///
/// Whether to write is decided from the caches (the Secret's metadata as it
/// would be, the copy's payload digest); the copy is needed whole only to
/// write its Secret.
async fn apply(copy: &Summary<SyncSecret>, ctx: &Context) -> Result<Action, Error> {
    if let Some(reason) = copy.unreadable() {
        return Err(undecodable(copy, reason));
    }
    // The management side never trusts a tenant: type and size first.
    let digest = &copy.payload;
    ctx.policy.check(
        &digest.type_,
        digest.size,
        digest.key_bytes(),
        digest.values.len(),
    )?;
    let desired = desired_secret_metadata(copy, &ctx.policy).ok_or(Error::NotStored)?;
    let namespace = copy.namespace().unwrap_or_default();
    let name = secret_name(copy).ok_or(Error::NotStored)?;
    // Only Secrets with the origin label are watched and cached: a copy
    // made by hand without one has its Secret read every time.
    let cached = desired
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(LABEL_ORIGIN_NAME));
    let Some(live) = live_secret(&namespace, &name, cached, ctx).await? else {
        // Our last write is not in the cache yet: its watch event brings
        // this copy back (the requeue only guards against a missed one).
        return Ok(Action::requeue(recent::TTL));
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
    if live.as_ref().is_none_or(|l| {
        secret_needs_write(l.as_ref(), &desired, &copy.payload, FIELD_MANAGER_MANAGER)
    }) && !write_secret(copy, &name, live.as_deref(), cached, ctx).await?
    {
        // Deleted or made anew since it was cached: its watch event brings
        // the next state.
        return Ok(Action::await_change());
    }
    mark_synced(copy, &name, ctx).await
}

/// The Secret `namespace/name` as it is (`None`: absent), from the cache
/// where it holds it; `None` back while the cache still shows what our
/// last write of it replaced.
async fn live_secret(
    namespace: &str,
    name: &str,
    cached: bool,
    ctx: &Context,
) -> Result<Option<Option<Arc<Summary<Secret>>>>, Error> {
    let key = ObjectRef::new(name).within(namespace);
    let found = if cached {
        ctx.recent_secrets
            .lookup_listed(&ctx.secrets, &key, recent::LIST_WAIT)
            .await
    } else {
        ctx.recent_secrets.lookup(&ctx.secrets, &key)
    };
    Ok(Some(match found {
        Cached::Stale => return Ok(None),
        Cached::Known(Some(live)) => Some(live),
        Cached::Known(None) if cached => None,
        // A cache that has not finished listing within `LIST_WAIT` (the
        // Secrets' list slow, or forbidden) is never taken for an absent
        // Secret: a restart must not rewrite what is already there.
        Cached::Known(None) | Cached::Unknown => {
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
            let read = api.get_opt(name).await;
            let read = read.map_err(|source| apply_failed(namespace, name, source))?;
            read.map(|s| Arc::new(s.summary()))
        }
    }))
}

fn apply_failed(namespace: &str, name: &str, source: kube::Error) -> Error {
    Error::ApplySecret {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        source,
    }
}

/// Writes the Secret `name` from the copy whole (`cache::whole`; `live`:
/// the Secret as last seen); false if the copy is gone or made anew since it
/// was cached.
#[tracing::instrument(skip_all, fields(secret = %name))]
async fn write_secret(
    copy: &Summary<SyncSecret>,
    name: &str,
    live: Option<&Summary<Secret>>,
    cached: bool,
    ctx: &Context,
) -> Result<bool, Error> {
    let namespace = copy.namespace().unwrap_or_default();
    let writer = ctx.secret_writer(&namespace, cached);
    let changed = copy.payload.changes_from(live.map(|l| &l.payload));
    if writer.holds("patch", name, &changed) {
        return Ok(true);
    }
    let Some(whole) = read_whole(copy, ctx).await? else {
        return Ok(false);
    };
    // What is written is the copy whole (the cached version, or a newer
    // one read): it passes the same checks.
    let payload = Payload::of_sync_secret(&whole);
    ctx.policy.check(
        &payload.type_,
        payload.size(),
        payload.key_bytes(),
        payload.data.len(),
    )?;
    let desired = desired_secret(&whole, &ctx.policy).ok_or(Error::NotStored)?;
    // Held until the write is done, so that two new objects of one tenant
    // cannot both fit the last place of its budget.
    let budget = check_budget(ctx, &namespace, payload.size(), live).await?;
    let before = live.map(Resource::meta);
    let stored = writer.apply(name, FIELD_MANAGER_MANAGER, &desired, before, &changed);
    let stored = stored
        .await
        .map_err(|source| apply_failed(&namespace, name, source))?;
    let Some(stored) = stored else {
        return Ok(true);
    };
    if budget.is_some() {
        until_cached(ctx, &stored).await;
    }
    drop(budget);
    ctx.budgets
        .charge(&namespace, secret_bytes(&payload, &desired.metadata));
    ctx.verify_failures.check(&namespace, &desired, &stored)?;
    let verb = if live.is_some() { "updated" } else { "created" };
    tracing::info!(%namespace, copy = %copy.name_any(), secret = %name, "secret {verb}");
    // A new Secret is told by the copy turning `Synced` (and the tenant
    // object's `Synced` event); an update changes no phase.
    if live.is_some() {
        let note = format!("Secret {namespace}/{name} updated");
        ctx.events
            .normal(&copy.object_ref(&()), "SecretUpdated", note)
            .await;
    }
    Ok(true)
}

/// Records `Synced` (with the certificate's condition, if it holds one)
/// in the copy's status. A certificate turns from valid to expiring to
/// expired with time alone: the copy is looked at again when it next does.
async fn mark_synced(
    copy: &Summary<SyncSecret>,
    name: &str,
    ctx: &Context,
) -> Result<Action, Error> {
    let namespace = copy.namespace().unwrap_or_default();
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
            synced_message(&namespace, name, copy.kept_off()),
        ),
        certificate
            .as_ref()
            .and_then(|c| certificate_condition(c, generation)),
    );
    let writer = ctx.copy_writer(&namespace);
    let wrote = writer
        .status(copy, synced)
        .await
        .map_err(|source| Error::PatchStatus {
            namespace: namespace.clone(),
            name: copy.name_any(),
            source,
        })?;
    if wrote {
        ctx.budgets.charge(&namespace, copy_bytes(copy));
    }
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

/// The copy whole: as its watch just delivered it, else as stored now
/// (see `cache::whole`).
async fn read_whole(
    copy: &Summary<SyncSecret>,
    ctx: &Context,
) -> Result<Option<SyncSecret>, Error> {
    cache::whole(&ctx.client, copy, &ctx.delivered)
        .await
        .map_err(|e| match e {
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
#[tracing::instrument(skip_all, fields(secret = %live.name_any()))]
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
    let writer = ctx.secret_writer(&namespace, live.label(LABEL_ORIGIN_NAME).is_some());
    let why = ["(replace)".to_owned()];
    let deleted = writer.delete_exactly(&name, live.meta(), &why);
    let deleted = deleted.await.map_err(|source| Error::DeleteSecret {
        namespace: namespace.clone(),
        name: name.clone(),
        source,
    })?;
    if deleted == Deleted::Held {
        return Ok(());
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

/// With a budget set, counts the tenant's Secrets from the Secrets' cache
/// (their sizes, never their data) under the tenant's lock and refuses a
/// new or growing Secret that would not fit. Returns the held lock, to be
/// kept until the cache shows the Secret written ([`until_cached`]), so
/// that the next count sees it. A list of the tenant's Secrets with their
/// data, as before, cost the manager and the API server every byte each
/// time.
async fn check_budget(
    ctx: &Context,
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
    // Counted by what the manager owns: its controller ownerReference to a
    // copy. The cache holds only Secrets with the origin label (the
    // manager sets it on every Secret it makes); nothing a tenant writes
    // decides what counts.
    let (mut count, mut bytes) = (0, 0);
    for s in ctx.secrets.state() {
        if s.namespace().as_deref() == Some(namespace) && owned_by_a_copy(s.as_ref()) {
            count += 1;
            bytes += s.payload.size;
        }
    }
    ctx.policy.check_budget(count, bytes, size, replacing)?;
    Ok(Some(guard))
}

/// Waits (a while at most) until the Secrets' cache holds `written`:
/// while the budget's lock is held, the next count must see it.
async fn until_cached(ctx: &Context, written: &Secret) {
    let key = ObjectRef::<Summary<Secret>>::new(&written.name_any())
        .within(&written.namespace().unwrap_or_default());
    let deadline = Instant::now() + recent::TTL;
    while Instant::now() < deadline {
        if ctx
            .secrets
            .get(&key)
            .is_some_and(|s| s.resource_version() == written.resource_version())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `secret` is one the manager made: controlled by a copy.
fn owned_by_a_copy(secret: &impl Resource) -> bool {
    secret.owner_references().iter().any(|o| {
        o.controller == Some(true)
            && o.kind == SyncSecret::kind(&())
            && o.api_version == SyncSecret::api_version(&())
    })
}

/// Deletes the Secret (a 404 means gone); the ownerReference makes the
/// garbage collector the backstop should this never run.
#[tracing::instrument(skip_all)]
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
    let writer = ctx.secret_writer(&namespace, false);
    match writer.delete(&name, None, &[]).await {
        Ok(Deleted::Held | Deleted::Absent) => Ok(Action::await_change()),
        Ok(_) => {
            tracing::info!(%namespace, copy = %copy.name_any(), secret = %name, "secret deleted");
            Ok(Action::await_change())
        }
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
