//! The floors the controllers are measured against: the plain two-write
//! floor (copy and Secret written directly) and the contract floor (every
//! write the contract needs, made by the loader itself).

use std::time::Instant;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use syncsecret_api::SyncSecret;
use syncsecret_api::contract::{LABEL_ORIGIN_NAME, LABEL_ORIGIN_NS, tenant_namespace};

use super::accounting::{all_requests, cpu_now, cpu_spent, writes_between};
use super::load::{for_each_concurrently, object, synced_event};
use super::profile::{finish_profiles, start_profiles};
use super::track::Tracker;
use super::{Config, NAMESPACE};
use crate::HarnessError;
use crate::pair::Pair;

/// A floor's copy of object `name`, named `floor_name`, with the origin
/// labels.
pub(super) fn floor_copy(name: &str, floor_name: &str) -> SyncSecret {
    let mut copy = object(name, 0);
    copy.metadata.name = Some(floor_name.to_owned());
    copy.metadata.labels = Some(
        [
            (LABEL_ORIGIN_NAME.to_owned(), name.to_owned()),
            (LABEL_ORIGIN_NS.to_owned(), NAMESPACE.to_owned()),
        ]
        .into(),
    );
    copy
}

/// A floor's Secret for `copy`: its name, labels and data.
pub(super) fn floor_secret(copy: &SyncSecret) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: copy.metadata.name.clone(),
            labels: copy.metadata.labels.clone(),
            ..Default::default()
        },
        data: copy.data.clone(),
        ..Default::default()
    }
}

/// Writes each object's copy and then its Secret (both named
/// `floor-<name>`) straight to the management cluster, in the tenants'
/// namespaces, then deletes them all.
pub(super) async fn floor(
    pair: &Pair,
    tracker: &Tracker,
    items: &[(usize, String)],
    tenants: &[String],
    cfg: &Config,
) -> Result<Value, HarnessError> {
    let n = items.len();
    let requests_before = all_requests(pair).await?;
    let cpu_before = cpu_now(pair);
    let profiles = start_profiles(pair, cfg, "floor");
    let t0 = Instant::now();
    for_each_concurrently(items.to_vec(), cfg.concurrency, |t, name| {
        let ns = tenant_namespace(&tenants[t]);
        let copies: Api<SyncSecret> = Api::namespaced(pair.management.clone(), &ns);
        let secrets: Api<Secret> = Api::namespaced(pair.management.clone(), &ns);
        async move {
            let copy = copies
                .create(
                    &PostParams::default(),
                    &floor_copy(&name, &format!("floor-{name}")),
                )
                .await?;
            secrets
                .create(&PostParams::default(), &floor_secret(&copy))
                .await?;
            Ok(())
        }
    })
    .await?;
    let done = tracker
        .first_contents("every floor Secret exists", n, cfg.timeout)
        .await?;
    let create = done - t0;
    let (cpu_after, wall) = (cpu_now(pair), t0.elapsed());
    let writes = writes_between(&requests_before, &all_requests(pair).await?);
    let cpu = cpu_spent(&cpu_before, &cpu_after, wall, writes);
    finish_profiles(profiles).await;
    let t1 = Instant::now();
    for_each_concurrently(items.to_vec(), cfg.concurrency, |t, name| {
        let ns = tenant_namespace(&tenants[t]);
        let copies: Api<SyncSecret> = Api::namespaced(pair.management.clone(), &ns);
        let secrets: Api<Secret> = Api::namespaced(pair.management.clone(), &ns);
        async move {
            let name = format!("floor-{name}");
            secrets.delete(&name, &DeleteParams::default()).await?;
            copies.delete(&name, &DeleteParams::default()).await?;
            Ok(())
        }
    })
    .await?;
    tracker
        .until("every floor object is gone", cfg.timeout, |s| {
            s.secrets == 0 && s.copies == 0
        })
        .await?;
    let delete = t1.elapsed();
    Ok(json!({
        "create_ms": create.as_secs_f64() * 1000.0,
        "cpu_s": cpu,
        "delete_ms": delete.as_secs_f64() * 1000.0,
    }))
}

/// The writes [`contract_floor`] makes per object.
pub(super) const CONTRACT_WRITES: usize = 8;

/// What the contract writes for one object, in the order the controllers
/// write it, by a plain client with nothing to watch, queue or compare:
/// the tenant object (the loader's create), its finalizer, the copy, the
/// copy's finalizer, the Secret, the copy's status, the tenant object's
/// status and one event; and on deletion: the tenant object, the copy, the
/// Secret, and both finalizers released. `ours / this` is what the
/// controllers add to the API servers' own cost of the contract.
pub(super) async fn contract_floor(
    pair: &Pair,
    tracker: &Tracker,
    items: &[(usize, String)],
    tenants: &[String],
    cfg: &Config,
) -> Result<Value, HarnessError> {
    use k8s_openapi::api::events::v1::Event;
    use syncsecret_api::contract::FINALIZER;
    let n = items.len();
    let name_of = |name: &str| format!("cfloor-{name}");
    let with_finalizer = json!({ "metadata": { "finalizers": [FINALIZER] } });
    let without_finalizer = json!({ "metadata": { "finalizers": null } });
    let synced = json!({ "status": { "phase": "Synced", "conditions": [{
        "type": "Synced", "status": "True", "reason": "Synced", "message": "synced",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }]}});
    let requests_before = all_requests(pair).await?;
    let cpu_before = cpu_now(pair);
    let profiles = start_profiles(pair, cfg, "contract-floor");
    let t0 = Instant::now();
    for_each_concurrently(items.to_vec(), cfg.concurrency, |t, name| {
        let ns = tenant_namespace(&tenants[t]);
        let tenant: Api<SyncSecret> = Api::namespaced(pair.tenants[t].clone(), NAMESPACE);
        let events: Api<Event> = Api::namespaced(pair.tenants[t].clone(), NAMESPACE);
        let copies: Api<SyncSecret> = Api::namespaced(pair.management.clone(), &ns);
        let secrets: Api<Secret> = Api::namespaced(pair.management.clone(), &ns);
        let (with_finalizer, synced) = (with_finalizer.clone(), synced.clone());
        let cname = name_of(&name);
        async move {
            let merge = PatchParams::default();
            let mut obj = object(&name, 0);
            obj.metadata.name = Some(cname.clone());
            let created = tenant.create(&PostParams::default(), &obj).await?;
            tenant
                .patch(&cname, &merge, &Patch::Merge(&with_finalizer))
                .await?;
            let copy = copies
                .create(&PostParams::default(), &floor_copy(&name, &cname))
                .await?;
            copies
                .patch(&cname, &merge, &Patch::Merge(&with_finalizer))
                .await?;
            secrets
                .create(&PostParams::default(), &floor_secret(&copy))
                .await?;
            copies
                .patch_status(&cname, &merge, &Patch::Merge(&synced))
                .await?;
            tenant
                .patch_status(&cname, &merge, &Patch::Merge(&synced))
                .await?;
            let event = synced_event(
                &cname,
                NAMESPACE,
                created.metadata.uid.clone(),
                "contract-floor",
            );
            events.create(&PostParams::default(), &event).await?;
            Ok(())
        }
    })
    .await?;
    let chains = t0.elapsed();
    let done = tracker
        .first_contents("every contract-floor Secret exists", n, cfg.timeout)
        .await?;
    // When the last Secret arrived (the chains go on to the statuses and
    // the event after it), as for ours.
    let last = tracker.read(|s| s.secret_version.values().map(|(_, at)| *at).max());
    let create = last.unwrap_or(done).saturating_duration_since(t0);
    let (cpu_after, wall) = (cpu_now(pair), t0.elapsed());
    let writes = writes_between(&requests_before, &all_requests(pair).await?);
    let cpu = cpu_spent(&cpu_before, &cpu_after, wall, writes);
    finish_profiles(profiles).await;
    let t1 = Instant::now();
    for_each_concurrently(items.to_vec(), cfg.concurrency, |t, name| {
        let ns = tenant_namespace(&tenants[t]);
        let tenant: Api<SyncSecret> = Api::namespaced(pair.tenants[t].clone(), NAMESPACE);
        let copies: Api<SyncSecret> = Api::namespaced(pair.management.clone(), &ns);
        let secrets: Api<Secret> = Api::namespaced(pair.management.clone(), &ns);
        let without_finalizer = without_finalizer.clone();
        let cname = name_of(&name);
        async move {
            let merge = PatchParams::default();
            tenant.delete(&cname, &DeleteParams::default()).await?;
            copies.delete(&cname, &DeleteParams::default()).await?;
            secrets.delete(&cname, &DeleteParams::default()).await?;
            copies
                .patch(&cname, &merge, &Patch::Merge(&without_finalizer))
                .await?;
            tenant
                .patch(&cname, &merge, &Patch::Merge(&without_finalizer))
                .await?;
            Ok(())
        }
    })
    .await?;
    tracker
        .until("every contract-floor object is gone", cfg.timeout, |s| {
            s.secrets == 0 && s.copies == 0 && s.tenant_objects.iter().all(|n| *n == 0)
        })
        .await?;
    let delete = t1.elapsed();
    Ok(json!({
        "create_ms": create.as_secs_f64() * 1000.0,
        "all_writes_ms": chains.as_secs_f64() * 1000.0,
        "cpu_s": cpu,
        "delete_ms": delete.as_secs_f64() * 1000.0,
        "writes_per_object": CONTRACT_WRITES,
    }))
}
