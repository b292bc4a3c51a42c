//! The many-tenants benchmark: one management cluster with `tenants`
//! tenant namespaces, each with the access the manager chart renders for
//! a tenant (its own ServiceAccount, Role and quota); copies written as
//! each tenant's ccm writes them (`syncsecret_api::desired::desired_copy`,
//! server-side applied as the ccm's field manager) through that tenant's
//! own RBAC-limited identity; the manager run as `shards` shards. No
//! tenant cluster runs: the loader stands in for a thousand of them, so
//! what is measured is the management side.

use std::time::{Duration, Instant};

use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use syncsecret_api::SyncSecret;
use syncsecret_api::contract::{FIELD_MANAGER_CCM, tenant_namespace};
use syncsecret_api::desired::desired_copy;
use syncsecret_runtime::generate::rbac;

use super::accounting::{cost_of, cpu_of, cpu_spent, delta, requests, writes_between};
use super::load::{for_each_concurrently, object};
use super::track::Tracker;
use crate::control_plane::client_from;
use crate::pair::{ControllerProcess, MANAGER_NAMESPACE, controller_binaries, ensure_namespace};
use crate::{ControlPlane, HarnessError, helm};

/// One many-tenants run.
#[derive(Clone, Debug)]
pub struct TenantsConfig {
    /// Tenant namespaces, each with its own identity.
    pub tenants: usize,
    /// Copies per tenant.
    pub objects_per_tenant: usize,
    /// Manager shards.
    pub shards: u32,
    /// Copy writes and deletes in flight at once.
    pub concurrency: usize,
    /// How long any one phase may take before the run fails.
    pub timeout: Duration,
}

/// The tenant objects' namespace in the (simulated) tenant clusters.
const ORIGIN_NAMESPACE: &str = "bench";

/// Runs the many-tenants benchmark once; the result as JSON.
pub async fn run_tenants(cfg: &TenantsConfig) -> Result<Value, HarnessError> {
    let started = Instant::now();
    let plane = ControlPlane::start(&["management"]).await?;
    let mgmt = plane.management();
    let management = mgmt.client().await?;
    ensure_namespace(&management, MANAGER_NAMESPACE).await?;
    let names: Vec<String> = (1..=cfg.tenants).map(|t| format!("t{t:04}")).collect();
    let tenants = format!("tenants={{{}}}", names.join(","));
    let copies = format!("tenantLimits.copies={}", cfg.objects_per_tenant.max(1000));
    helm::apply_access(
        mgmt.kubeconfig(),
        rbac::MANAGER_ROLE,
        MANAGER_NAMESPACE,
        &[&tenants, "createTenantNamespaces=true", &copies],
    )?;
    // Each tenant's own identity, as its ccm would hold it.
    let mut clients = Vec::with_capacity(names.len());
    for name in &names {
        let namespace = tenant_namespace(name);
        let kubeconfig = mgmt
            .service_account_kubeconfig(&namespace, rbac::CCM_ROLE)
            .await?;
        clients.push(client_from(&kubeconfig).await?);
    }
    let setup = started.elapsed();

    let bin = controller_binaries()?.join("syncsecret-manager");
    let identity = mgmt
        .service_account_kubeconfig(MANAGER_NAMESPACE, rbac::MANAGER_ROLE)
        .await?;
    let log_dir = plane
        .dir()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let mut managers = Vec::new();
    for i in 0..cfg.shards {
        let args = vec![
            format!("--kubeconfig={}", identity.display()),
            format!("--namespace={MANAGER_NAMESPACE}"),
            format!("--shard={i}"),
            format!("--shards={}", cfg.shards),
        ];
        let name = format!("syncsecret-manager-{i}-of-{}", cfg.shards);
        managers.push(ControllerProcess::launch(
            &name,
            bin.clone(),
            args,
            &log_dir,
        )?);
    }
    for m in &mut managers {
        m.wait_ready().await?;
    }
    let tracker = Tracker::default();
    let result = phases(
        &plane,
        &management,
        &clients,
        &names,
        &managers,
        &tracker,
        cfg,
    )
    .await;
    tracker.stop();
    let mut result = result?;
    result["setup_s"] = json!(setup.as_secs_f64());
    Ok(result)
}

async fn phases(
    plane: &ControlPlane,
    management: &Client,
    clients: &[Client],
    names: &[String],
    managers: &[ControllerProcess],
    tracker: &Tracker,
    cfg: &TenantsConfig,
) -> Result<Value, HarnessError> {
    tracker.secrets(management.clone());
    tracker.copies(management.clone());
    let items: Vec<(usize, String)> = (0..cfg.objects_per_tenant)
        .flat_map(|i| (0..names.len()).map(move |t| (t, format!("o{t}-{i}"))))
        .collect();
    let n = items.len();
    let apis: Vec<Api<SyncSecret>> = names
        .iter()
        .zip(clients)
        .map(|(name, c)| Api::namespaced(c.clone(), &tenant_namespace(name)))
        .collect();
    // What each tenant's ccm would apply: the tenant object's copy, named
    // by the object's UID (made up here: no tenant cluster stores it).
    let copy_of = |t: usize, name: &str| {
        let mut obj = object(name, 0);
        obj.metadata.namespace = Some(ORIGIN_NAMESPACE.to_owned());
        obj.metadata.uid = Some(uuid::Uuid::new_v4().to_string());
        obj.metadata.generation = Some(1);
        desired_copy(&obj, &tenant_namespace(&names[t]), Some("bench-cluster"))
    };

    // 1. Bulk convergence.
    let before = requests(management).await?;
    let cpu_before = cpu_of(plane, managers.iter());
    let t0 = Instant::now();
    let copy_names = std::sync::Mutex::new(Vec::with_capacity(n));
    for_each_concurrently(items.clone(), cfg.concurrency, |t, name| {
        let api = apis[t].clone();
        let copy = copy_of(t, &name);
        let copy_names = &copy_names;
        async move {
            let copy = copy.ok_or_else(|| HarnessError::Usage("no copy built".into()))?;
            let copy_name = copy.metadata.name.clone().unwrap_or_default();
            let params = PatchParams::apply(FIELD_MANAGER_CCM).force();
            api.patch(&copy_name, &params, &Patch::Apply(&copy)).await?;
            if let Ok(mut names) = copy_names.lock() {
                names.push((t, copy_name));
            }
            Ok(())
        }
    })
    .await?;
    let written = t0.elapsed();
    let done = tracker
        .first_contents("every Secret holds its content", n, cfg.timeout)
        .await?;
    let converge = done - t0;
    // The copies' statuses follow their Secrets: let them land so that the
    // request counts are complete.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu_after, wall) = (cpu_of(plane, managers.iter()), t0.elapsed());
    let after = requests(management).await?;
    let create_cpu = cpu_spent(
        &cpu_before,
        &cpu_after,
        wall,
        writes_between(&before, &after),
    );
    let create_requests = delta(&before, &after);
    let costs = cost_of(managers.iter());

    // 2. Bulk delete: until no copy and no Secret is left.
    let copy_names = copy_names.into_inner().unwrap_or_default();
    let before_delete = requests(management).await?;
    let t1 = Instant::now();
    for_each_concurrently(copy_names, cfg.concurrency, |t, name| {
        let api = apis[t].clone();
        async move {
            api.delete(&name, &DeleteParams::default()).await?;
            Ok(())
        }
    })
    .await?;
    tracker
        .until("no copy and no Secret is left", cfg.timeout, |s| {
            s.secrets == 0 && s.copies == 0
        })
        .await?;
    let delete = t1.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let delete_requests = delta(&before_delete, &requests(management).await?);

    let per_object = |requests: &std::collections::BTreeMap<String, f64>| -> Value {
        requests
            .iter()
            .map(|(k, v)| (k.clone(), json!(v / n as f64)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(json!({
        "tenants": names.len(),
        "objects_per_tenant": cfg.objects_per_tenant,
        "objects": n,
        "shards": cfg.shards,
        "concurrency": cfg.concurrency,
        "create": { "loader_ms": ms(written), "converged_ms": ms(converge), "cpu_s": create_cpu },
        "delete": { "converged_ms": ms(delete) },
        "cost": costs,
        "requests_per_object": per_object(&create_requests),
        "delete_requests_per_object": per_object(&delete_requests),
    }))
}
