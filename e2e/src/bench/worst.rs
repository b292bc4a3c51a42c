//! The worst case a tenant can make within the chart's limits (issue 35):
//! one tenant's whole quota at every per-copy bound, beside 10,000
//! ordinary copies of other tenants, on one management cluster. It
//! measures what that costs the management etcd, what the manager holds
//! when it lists it all again after a restart (peak resident memory, time
//! to ready, whether it kept its Lease), and how long another tenant's
//! update takes to arrive while the first writes as fast as its identity
//! can. As in the many-tenants run, no tenant cluster runs: each tenant's
//! identity writes copies as its ccm would.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ResourceQuota, Secret};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use syncsecret_api::SyncSecret;
use syncsecret_api::admission::QUOTA_NAME;
use syncsecret_api::contract::{FIELD_MANAGER_CCM, tenant_namespace};
use syncsecret_api::desired::desired_copy;
use syncsecret_runtime::generate::rbac;

use super::load::{for_each_concurrently, object};
use super::track::{Tracker, value};
use crate::control_plane::client_from;
use crate::pair::{ControllerProcess, MANAGER_NAMESPACE, controller_binaries, ensure_namespace};
use crate::{ControlPlane, HarnessError, helm};

/// One worst-case run.
#[derive(Clone, Debug)]
pub struct WorstConfig {
    /// Ordinary copies, spread over `ordinary_tenants`.
    pub ordinary_objects: usize,
    /// Tenants that hold the ordinary copies.
    pub ordinary_tenants: usize,
    /// The per-copy data bound (`tenantLimits.dataBytes`) the platform
    /// set; the hostile tenant's copies fill it.
    pub data_bytes: usize,
    /// How long the hostile tenant rewrites its copies.
    pub storm: Duration,
    /// Paced updates of another tenant's copy, quiet and during the storm.
    pub probes: usize,
    /// Time between two of them.
    pub pace: Duration,
    /// Writes in flight at once (loader and storm).
    pub concurrency: usize,
    /// The manager under test, as a shell command with placeholders
    /// `{kubeconfig}` `{namespace}` `{metrics_addr}` `{probe_addr}`
    /// (another commit's build); `None`: ours.
    pub manager_cmd: Option<String>,
    /// More `--set` values of the manager chart.
    pub chart_sets: Vec<String>,
    /// More flags of our manager (e.g. a write budget raised with the
    /// per-copy bound).
    pub manager_args: Vec<String>,
    /// More flags of the API server (e.g. `--feature-gates=WatchList=false`,
    /// to measure paged lists).
    pub apiserver_args: &'static [&'static str],
    /// How long any one phase may take before the run fails.
    pub timeout: Duration,
}

const HOSTILE: &str = "hostile";
const PROBE: &str = "probe";

/// Runs the worst case once; the result as JSON.
pub async fn run_worst(cfg: &WorstConfig) -> Result<Value, HarnessError> {
    let plane = ControlPlane::start_with(
        &["management"],
        crate::control_plane::Options {
            apiserver_args: cfg.apiserver_args,
            ..Default::default()
        },
    )
    .await?;
    let mgmt = plane.management();
    let management = mgmt.client().await?;
    ensure_namespace(&management, MANAGER_NAMESPACE).await?;
    let ordinary: Vec<String> = (1..=cfg.ordinary_tenants)
        .map(|t| format!("o{t}"))
        .collect();
    let mut names = vec![HOSTILE.to_owned(), PROBE.to_owned()];
    names.extend(ordinary.iter().cloned());
    let tenants = format!("tenants={{{}}}", names.join(","));
    let data_bytes = format!("tenantLimits.dataBytes={}", cfg.data_bytes);
    let mut sets = vec![tenants.as_str(), "createTenantNamespaces=true", &data_bytes];
    sets.extend(cfg.chart_sets.iter().map(String::as_str));
    helm::apply_access(
        mgmt.kubeconfig(),
        rbac::MANAGER_ROLE,
        MANAGER_NAMESPACE,
        &sets,
    )?;
    // The ordinary tenants get the room their copies need (a platform
    // raises a quota knowingly); the hostile one keeps the chart's.
    let per_tenant = cfg.ordinary_objects.div_ceil(cfg.ordinary_tenants.max(1));
    for name in &ordinary {
        Api::<ResourceQuota>::namespaced(management.clone(), &tenant_namespace(name))
            .patch(
                QUOTA_NAME,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"hard": {
                    "count/syncsecrets.kubelb.k8c.io": per_tenant.to_string()
                }}})),
            )
            .await?;
    }
    let mut clients = Vec::new();
    for name in &names {
        let kubeconfig = mgmt
            .service_account_kubeconfig(&tenant_namespace(name), rbac::CCM_ROLE)
            .await?;
        clients.push(client_from(&kubeconfig).await?);
    }
    let identity = mgmt
        .service_account_kubeconfig(MANAGER_NAMESPACE, rbac::MANAGER_ROLE)
        .await?;
    let log_dir = plane
        .dir()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let mut manager = match &cfg.manager_cmd {
        Some(t) => ControllerProcess::launch_template(
            "manager",
            &t.replace("{kubeconfig}", &identity.to_string_lossy())
                .replace("{namespace}", MANAGER_NAMESPACE),
            &log_dir,
        )?,
        None => ControllerProcess::launch(
            "syncsecret-manager",
            controller_binaries()?.join("syncsecret-manager"),
            [
                format!("--kubeconfig={}", identity.display()),
                format!("--namespace={MANAGER_NAMESPACE}"),
            ]
            .into_iter()
            .chain(cfg.manager_args.iter().cloned())
            .collect(),
            &log_dir,
        )?,
    };
    manager.wait_ready().await?;
    let tracker = Tracker::default();
    tracker.secrets(management.clone());
    let result = phases(
        &plane,
        &management,
        &clients,
        &names,
        &mut manager,
        &tracker,
        cfg,
    )
    .await;
    tracker.stop();
    result
}

/// The copy tenant `name` would hold for its object `object`, content
/// version 0, server-side applied through its identity.
async fn apply_copy(
    api: &Api<SyncSecret>,
    name: &str,
    object_name: &str,
) -> Result<String, HarnessError> {
    let mut obj = object(object_name, 0);
    obj.metadata.namespace = Some("bench".to_owned());
    obj.metadata.uid = Some(uuid::Uuid::new_v4().to_string());
    obj.metadata.generation = Some(1);
    let copy = desired_copy(&obj, &tenant_namespace(name), Some("bench-cluster"))
        .ok_or_else(|| HarnessError::Usage("no copy built".into()))?;
    let copy_name = copy.metadata.name.clone().unwrap_or_default();
    let params = PatchParams::apply(FIELD_MANAGER_CCM).force();
    api.patch(&copy_name, &params, &Patch::Apply(&copy)).await?;
    Ok(copy_name)
}

/// Bytes of every object of `K` in `namespace`, as JSON.
async fn bytes_of<K>(client: &Client, namespace: &str) -> Result<usize, HarnessError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize,
{
    let list = Api::<K>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?;
    Ok(list
        .items
        .iter()
        .map(|o| serde_json::to_vec(o).map_or(0, |v| v.len()))
        .sum())
}

/// At most `probes` paced updates of the probe tenant's copy `name`
/// (content versions from `from`), and none begun after `until` once five
/// are done (a slow manager would make them last hours): each one's time
/// from write to its Secret holding it, in ms, sorted.
async fn probe_latencies(
    api: &Api<SyncSecret>,
    name: &str,
    object_name: &str,
    from: u32,
    until: Option<Instant>,
    tracker: &Tracker,
    cfg: &WorstConfig,
) -> Result<Vec<f64>, HarnessError> {
    let mut out = Vec::with_capacity(cfg.probes);
    for i in 0..cfg.probes {
        if out.len() >= 5 && until.is_some_and(|u| Instant::now() >= u) {
            break;
        }
        let version = from + u32::try_from(i).unwrap_or(u32::MAX);
        let data = json!({"data": {"v": k8s_openapi::ByteString(value(object_name, version))}});
        let sent = Instant::now();
        api.patch(name, &PatchParams::default(), &Patch::Merge(data))
            .await?;
        let arrived = tracker
            .until("the probe's update arrived", cfg.timeout, |s| {
                s.secret_version
                    .get(object_name)
                    .is_some_and(|(v, _)| *v >= version)
            })
            .await?;
        out.push((arrived - sent).as_secs_f64() * 1000.0);
        tokio::time::sleep(cfg.pace).await;
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn summary(sorted: &[f64]) -> Value {
    json!({
        "p50_ms": percentile(sorted, 0.50),
        "p99_ms": percentile(sorted, 0.99),
        "max_ms": sorted.last().copied().unwrap_or(0.0),
        "n": sorted.len(),
    })
}

#[allow(
    clippy::too_many_lines,
    reason = "one phase after another, each a few lines"
)]
async fn phases(
    plane: &ControlPlane,
    management: &Client,
    clients: &[Client],
    names: &[String],
    manager: &mut ControllerProcess,
    tracker: &Tracker,
    cfg: &WorstConfig,
) -> Result<Value, HarnessError> {
    let apis: Vec<Api<SyncSecret>> = names
        .iter()
        .zip(clients)
        .map(|(name, c)| Api::namespaced(c.clone(), &tenant_namespace(name)))
        .collect();
    let (etcd_empty, _) = plane.etcd_size()?;

    // 1. The ordinary copies.
    let t0 = Instant::now();
    let ordinary: Vec<(usize, String)> = (0..cfg.ordinary_objects)
        .map(|i| (2 + i % (names.len() - 2), format!("o-{i}")))
        .collect();
    for_each_concurrently(ordinary, cfg.concurrency, |t, object_name| {
        let api = apis[t].clone();
        let name = names[t].clone();
        async move { apply_copy(&api, &name, &object_name).await.map(|_| ()) }
    })
    .await?;
    tracker
        .until("every ordinary Secret", cfg.timeout, |s| {
            s.secrets >= cfg.ordinary_objects
        })
        .await?;
    let ordinary_s = t0.elapsed().as_secs_f64();
    let (etcd_ordinary, _) = plane.etcd_size()?;

    // 2. The hostile tenant's whole quota at every bound, and one copy of
    // the probe tenant.
    let hostile_ns = tenant_namespace(HOSTILE);
    let quota = Api::<ResourceQuota>::namespaced(management.clone(), &hostile_ns)
        .get(QUOTA_NAME)
        .await?;
    let room: usize = quota
        .spec
        .and_then(|s| s.hard)
        .and_then(|h| h.get("count/syncsecrets.kubelb.k8c.io").cloned())
        .and_then(|q| q.0.parse().ok())
        .unwrap_or(0);
    let hostile_api = Api::<kube::api::DynamicObject>::namespaced_with(
        clients[0].clone(),
        &hostile_ns,
        &kube::api::ApiResource::erase::<SyncSecret>(&()),
    );
    let mut hostile = Vec::new();
    let t1 = Instant::now();
    for i in 0..room {
        let copy =
            crate::kube_util::copy_at_every_bound(&hostile_ns, cfg.data_bytes, &format!("h{i}"));
        let copy: kube::api::DynamicObject =
            serde_json::from_value(copy).map_err(|e| HarnessError::Usage(e.to_string()))?;
        let name = copy.metadata.name.clone().unwrap_or_default();
        hostile_api.create(&Default::default(), &copy).await?;
        hostile.push(name);
    }
    let probe_object = "probe-object";
    let probe_copy = apply_copy(&apis[1], PROBE, probe_object).await?;
    tracker
        .until("every Secret", cfg.timeout, |s| {
            s.secrets > cfg.ordinary_objects + room
        })
        .await?;
    let hostile_s = t1.elapsed().as_secs_f64();
    // Its statuses follow; let them land.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (etcd_full, etcd_full_in_use) = plane.etcd_size()?;
    let hostile_copies = bytes_of::<SyncSecret>(management, &hostile_ns).await?;
    let hostile_secrets = bytes_of::<Secret>(management, &hostile_ns).await?;

    // 3. The manager restarted over all of it.
    let (holder_before, transitions_before) = crate::kube_util::manager_lease(management).await?;
    manager.restart()?;
    let t2 = Instant::now();
    manager.wait_ready().await?;
    let ready_s = t2.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let peak_after_restart = manager.peak_rss_kib().unwrap_or(0) as f64 / 1024.0;
    let (holder_after, transitions_after) = crate::kube_util::manager_lease(management).await?;

    // 4. Another tenant's updates, quiet, then while the hostile tenant
    // rewrites its copies as fast as its identity can.
    let quiet = probe_latencies(&apis[1], &probe_copy, probe_object, 1, None, tracker, cfg).await?;
    let storming = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let storm_writes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let storm = {
        let (api, hostile, storming, writes) = (
            hostile_api.clone(),
            hostile.clone(),
            storming.clone(),
            storm_writes.clone(),
        );
        let (concurrency, data_bytes) = (cfg.concurrency, cfg.data_bytes);
        tokio::spawn(async move {
            let mut round = 0usize;
            while storming.load(std::sync::atomic::Ordering::Relaxed) {
                round += 1;
                let batch: Vec<(usize, String)> =
                    hostile.iter().map(|n| (round, n.clone())).collect();
                let _ = for_each_concurrently(batch, concurrency, |round, name| {
                    let api = api.clone();
                    let writes = writes.clone();
                    async move {
                        // A new value of the first key, of the same size:
                        // a new generation, still at every bound.
                        let (key, v) =
                            crate::kube_util::bound_entry(data_bytes, 0, &format!("s{round}"));
                        let patch = json!({"data": {key: v}});
                        api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                            .await?;
                        writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        Ok(())
                    }
                })
                .await;
            }
        })
    };
    let (etcd_before_storm, _) = plane.etcd_size()?;
    let writes_before = manager
        .metrics()
        .map(|m| crate::pair::writes_by_resource(&m, "kubelb_manager"))?;
    let t3 = Instant::now();
    let during = probe_latencies(
        &apis[1],
        &probe_copy,
        probe_object,
        1_000,
        Some(t3 + cfg.storm),
        tracker,
        cfg,
    )
    .await?;
    let left = cfg.storm.saturating_sub(t3.elapsed());
    tokio::time::sleep(left).await;
    storming.store(false, std::sync::atomic::Ordering::Relaxed);
    let storm_s = t3.elapsed().as_secs_f64();
    let _ = storm.await;
    let (etcd_after_storm, _) = plane.etcd_size()?;
    let writes_after = manager
        .metrics()
        .map(|m| crate::pair::writes_by_resource(&m, "kubelb_manager"))?;
    let peak = manager.peak_rss_kib().unwrap_or(0) as f64 / 1024.0;
    let (holder_end, transitions_end) = crate::kube_util::manager_lease(management).await?;
    let manager_writes: serde_json::Map<String, Value> = writes_after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                json!(v - writes_before.get(k).copied().unwrap_or(0.0)),
            )
        })
        .collect();
    let mib = |b: f64| b / (1024.0 * 1024.0);
    Ok(json!({
        "ordinary_objects": cfg.ordinary_objects,
        "ordinary_tenants": cfg.ordinary_tenants,
        "hostile_copies": room,
        "data_bytes": cfg.data_bytes,
        "ordinary_converged_s": ordinary_s,
        "hostile_converged_s": hostile_s,
        "etcd_mib": {
            "empty": mib(etcd_empty),
            "with_ordinary": mib(etcd_ordinary),
            "with_hostile": mib(etcd_full),
            "with_hostile_in_use": mib(etcd_full_in_use),
            "storm_growth": mib(etcd_after_storm - etcd_before_storm),
        },
        "hostile_json_mib": { "copies": mib(hostile_copies as f64), "secrets": mib(hostile_secrets as f64) },
        "restart": {
            "ready_s": ready_s,
            "peak_rss_mib": peak_after_restart,
            "lease": [holder_before != holder_after, transitions_after - transitions_before],
        },
        "probe_quiet": summary(&quiet),
        "probe_storm": summary(&during),
        "storm": {
            "seconds": storm_s,
            "hostile_writes": storm_writes.load(std::sync::atomic::Ordering::Relaxed),
            "manager_writes": manager_writes,
            "lease_changes_after_restart": transitions_end - transitions_after,
            "same_leader": holder_end == holder_after,
            "peak_rss_mib": peak,
        },
    }))
}
