//! The benchmark: bulk convergence against the API-server floor,
//! propagation latency, quiet after a restart, and what it costs, on the
//! real control plane with the controllers as processes. `make bench` runs
//! it at 1,000 and 10,000 objects over 1 and 4 tenants; a short run
//! (`e2e/tests/bench.rs`) asserts only correctness.
//!
//! Convergence is detected by watches, never by polling: a watch on the
//! management cluster's Secrets (and copies, and each tenant's objects)
//! records when each object's content arrives.

pub mod accounting;
mod floor;
mod latency;
mod load;
mod profile;
mod request_costs;
mod tenants;
mod track;
mod worst;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use syncsecret_api::SyncSecret;

use crate::HarnessError;
use crate::pair::{Launch, Pair, ensure_namespace};
use accounting::{
    all_requests, cost_now, cpu_now, cpu_spent, delta, is_accepted_write, is_write, percentile,
    writes_between,
};
use floor::{contract_floor, floor};
use latency::{Stages, ms_between, reconciles, reconciles_since};
use load::{for_each_concurrently, name, object, padding};
pub use profile::ProfileApiServers;
use profile::{finish_profiles, start_profiles};
pub use request_costs::request_costs;
pub use tenants::{TenantsConfig, run_tenants};
use track::{Tracker, value};
pub use worst::{WorstConfig, run_worst};

/// The tenant namespace every benchmark object lives in.
const NAMESPACE: &str = "bench";

/// Bytes of data per object.
pub const VALUE_BYTES: usize = 1024;

/// One benchmark run.
#[derive(Clone, Debug)]
pub struct Config {
    /// SyncSecrets in all, spread evenly over the tenants.
    pub objects: usize,
    /// Tenant clusters.
    pub tenants: usize,
    /// Creates, deletes (and floor writes) in flight at once.
    pub concurrency: usize,
    /// Paced single updates for the latency percentiles.
    pub updates: usize,
    /// Pause between two of those updates.
    pub pace: Duration,
    /// Also measure the floor (plain client writes).
    pub floor: bool,
    /// How the controllers are started.
    pub launch: Launch,
    /// How long any one phase may take before the run fails.
    pub timeout: Duration,
    /// CPU profiles of the API servers while converging, if asked for.
    pub profile: Option<ProfileApiServers>,
    /// Bytes of labels and annotations each copy carries, as the tenant
    /// copy policy counts them (keys and values); the tenant objects are
    /// padded with one annotation to reach it. 0: no padding.
    pub metadata_bytes: usize,
    /// End with the leak scan of every value written (for the short run
    /// in `make test`; at 10,000 objects it costs the loader more than a
    /// benchmark should).
    pub leak_scan: bool,
}

/// The annotation that pads a tenant object to [`Config::metadata_bytes`].
pub const PAD_ANNOTATION: &str = "bench-pad";

/// Runs the benchmark once; the result as JSON.
pub async fn run(cfg: &Config) -> Result<Value, HarnessError> {
    if cfg.metadata_bytes > 0 && cfg.floor {
        return Err(HarnessError::Usage(
            "the floors write no padding: a run with metadata bytes needs the floors off (--no-floors)"
                .into(),
        ));
    }
    let names: Vec<String> = (1..=cfg.tenants).map(|t| format!("bench{t}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let started = Instant::now();
    // Room in each tenant's quota for every object of the run (the
    // chart's default of 1,000 copies would cap a 10,000-object tenant).
    let per_tenant = u32::try_from(cfg.objects / cfg.tenants.max(1)).unwrap_or(u32::MAX);
    let launch = Launch {
        tenant_copies: Some(per_tenant.max(1000)),
        ..cfg.launch.clone()
    };
    let mut pair = Pair::start_with(&refs, &launch).await?;
    let plane_start = started.elapsed();
    if cfg.leak_scan {
        pair.record_written();
    }
    let tracker = Tracker::default();
    let mut result = phases(&mut pair, &tracker, cfg, &names, plane_start).await;
    tracker.stop();
    if cfg.leak_scan && result.is_ok() {
        let found = pair.leaks(&[]).await?;
        if !found.is_empty() {
            result = Err(HarnessError::Usage(format!(
                "a secret value leaked in: {found:?}"
            )));
        }
    }
    result.map_err(|e| HarnessError::Usage(format!("{e}\n{}", pair.dump())))
}

async fn phases(
    pair: &mut Pair,
    tracker: &Tracker,
    cfg: &Config,
    names: &[String],
    plane_start: Duration,
) -> Result<Value, HarnessError> {
    for c in &pair.tenants {
        ensure_namespace(c, NAMESPACE).await?;
    }
    tracker.secrets(pair.management.clone());
    tracker.copies(pair.management.clone());
    for (t, c) in pair.tenants.iter().enumerate() {
        tracker.tenant_objects(Api::namespaced(c.clone(), NAMESPACE), t);
    }
    let per_tenant = cfg.objects / cfg.tenants.max(1);
    let n = per_tenant * cfg.tenants;
    let items: Vec<(usize, String)> = (0..per_tenant)
        .flat_map(|i| (0..cfg.tenants).map(move |t| (t, name(t, i))))
        .collect();
    let apis: Vec<Api<SyncSecret>> = pair
        .tenants
        .iter()
        .map(|c| Api::namespaced(c.clone(), NAMESPACE))
        .collect();
    let pad = padding(pair, cfg, &items).await?;

    // 1. Bulk convergence.
    let before = all_requests(pair).await?;
    let cpu_before = cpu_now(pair);
    let profiles = start_profiles(pair, cfg, "ours");
    let t0 = Instant::now();
    for_each_concurrently(items.clone(), cfg.concurrency, |t, n| {
        let api = apis[t].clone();
        async move {
            api.create(&PostParams::default(), &object(&n, pad)).await?;
            Ok(())
        }
    })
    .await?;
    let created = t0.elapsed();
    let done = tracker
        .first_contents("every Secret holds its content", n, cfg.timeout)
        .await?;
    let converge = done - t0;
    // Status mirrored home too (each tenant object Synced): the rest of
    // the work a create causes, so that request counts are complete.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu_after, wall) = (cpu_now(pair), t0.elapsed());
    let after = all_requests(pair).await?;
    let create_cpu = cpu_spent(
        &cpu_before,
        &cpu_after,
        wall,
        writes_between(&before, &after),
    );
    let create_requests = delta(&before, &after);
    finish_profiles(profiles).await;

    // 2. Propagation latency, one paced update at a time, and where it
    // goes: each stage ends when the run's own watch sees the new content
    // (tenant object, copy, Secret), so each includes one watch delivery.
    let mut latencies = Vec::new();
    let mut stages = Stages::default();
    let requests_before_updates = all_requests(pair).await?;
    let cpu_before_updates = cpu_now(pair);
    let reconciles_before = reconciles(pair);
    let t_updates = Instant::now();
    for k in 0..cfg.updates {
        let (t, n) = &items[(k * 7919) % items.len()];
        let version = u32::try_from(k + 1).unwrap_or(u32::MAX);
        let patch = json!({ "data": { "v": ByteString(value(n, version)) } });
        let sent = Instant::now();
        apis[*t]
            .patch(n, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let answered = Instant::now();
        // Every stage's end, as the watches saw this version arrive.
        let at = |m: &std::collections::HashMap<String, (u32, Instant)>| {
            m.get(n.as_str())
                .filter(|(v, _)| *v == version)
                .map(|(_, at)| *at)
        };
        let what = format!("update {k} of {n} arrives");
        tracker
            .until(&what, cfg.timeout, |s| {
                [&s.tenant_version, &s.copy_version, &s.secret_version]
                    .iter()
                    .all(|m| at(m).is_some())
            })
            .await?;
        let ends = tracker.read(|s| {
            Some((
                at(&s.tenant_version)?,
                at(&s.copy_version)?,
                at(&s.secret_version)?,
            ))
        });
        let Some((tenant, copy, secret)) = ends else {
            return Err(HarnessError::Usage(format!(
                "{what}: its content went before it was read"
            )));
        };
        latencies.push(ms_between(sent, secret));
        stages.record((n, *t), sent, answered, tenant, copy, secret);
        tokio::time::sleep(cfg.pace).await;
    }
    latencies.sort_by(f64::total_cmp);
    let (cpu_after, wall) = (cpu_now(pair), t_updates.elapsed());
    let update_writes = writes_between(&requests_before_updates, &all_requests(pair).await?);
    let updates_cpu = cpu_spent(&cpu_before_updates, &cpu_after, wall, update_writes);
    let update_reconciles = reconciles_since(&reconciles_before, &reconciles(pair));
    let gc_cycles = pair.plane.gc_cycles();

    // 3. Cost so far (peak RSS, CPU) of each controller process.
    let costs = cost_now(pair);

    // 4. Quiet after a restart: no write to either cluster.
    let writes = |pair: &Pair| -> f64 {
        pair.controllers()
            .filter_map(|c| c.metrics().ok())
            .map(|m| {
                crate::pair::sum_samples(&m, "kubelb_ccm_writes_total")
                    + crate::pair::sum_samples(&m, "kubelb_manager_writes_total")
            })
            .fold(0.0, |a, b| a + b)
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let quiet_before = all_requests(pair).await?;
    pair.restart_all().await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let restart_requests = delta(&quiet_before, &all_requests(pair).await?);
    let restart_writes: BTreeMap<String, f64> = restart_requests
        .iter()
        .filter(|(k, _)| is_write(k))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let counted_writes = writes(pair);
    // A restarted controller lists everything at once: its own peak.
    let restart_costs = cost_now(pair);

    // 5. Bulk delete: until nothing is left in either cluster.
    let before_delete = all_requests(pair).await?;
    let t1 = Instant::now();
    for_each_concurrently(items.clone(), cfg.concurrency, |t, n| {
        let api = apis[t].clone();
        async move {
            api.delete(&n, &DeleteParams::default()).await?;
            Ok(())
        }
    })
    .await?;
    tracker
        .until("nothing is left in either cluster", cfg.timeout, |s| {
            s.secrets == 0 && s.copies == 0 && s.tenant_objects.iter().all(|n| *n == 0)
        })
        .await?;
    let delete = t1.elapsed();
    // The tenant objects' finalizer release is the last write of a
    // deletion; an event may trail it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let delete_requests = delta(&before_delete, &all_requests(pair).await?);

    // 6. The floor: the same final objects (copy and Secret per object)
    // written straight to the management cluster by a plain client, with
    // the controllers stopped, detected the same way.
    let floor = if cfg.floor {
        pair.manager.stop()?;
        for c in &mut pair.ccms {
            c.stop()?;
        }
        Some(floor(pair, tracker, &items, names, cfg).await?)
    } else {
        None
    };
    // 7. The contract floor: every write the contract makes, by a plain
    // client, each object's chain in order.
    let contract_floor = if cfg.floor {
        Some(contract_floor(pair, tracker, &items, names, cfg).await?)
    } else {
        None
    };

    let per_object = |requests: &BTreeMap<String, f64>| -> BTreeMap<String, f64> {
        requests
            .iter()
            .map(|(k, v)| (k.clone(), v / n as f64))
            .collect()
    };
    let (create_per_object, delete_per_object) =
        (per_object(&create_requests), per_object(&delete_requests));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(json!({
        "objects": n,
        "tenants": cfg.tenants,
        "value_bytes": VALUE_BYTES,
        "metadata_bytes": cfg.metadata_bytes,
        "metadata_pad_bytes": pad,
        "concurrency": cfg.concurrency,
        "launch": {
            "manager": cfg.launch.manager.clone().unwrap_or_else(|| format!("syncsecret-manager {}", cfg.launch.manager_args.join(" "))),
            "ccm": cfg.launch.ccm.clone().unwrap_or_else(|| format!("syncsecret-ccm {}", cfg.launch.ccm_args.join(" "))),
        },
        "control_plane_start_s": plane_start.as_secs_f64(),
        "create": { "loader_ms": ms(created), "converged_ms": ms(converge), "cpu_s": create_cpu },
        "delete": { "converged_ms": ms(delete) },
        "floor": floor,
        "contract_floor": contract_floor,
        "latency_ms": {
            "updates": latencies.len(),
            "pace_ms": ms(cfg.pace),
            "p50": percentile(&latencies, 50.0),
            "p90": percentile(&latencies, 90.0),
            "p99": percentile(&latencies, 99.0),
            "max": latencies.last().copied().unwrap_or(f64::NAN),
            "cpu_s": updates_cpu,
            "stages": stages.percentiles(&gc_cycles),
            "gc": stages.gc(&gc_cycles),
            "reconciles": update_reconciles,
        },
        "after_restart": {
            "api_writes": restart_writes,
            "api_requests": restart_requests,
            "writes_total_of_new_processes": counted_writes,
        },
        "cost": costs,
        "cost_after_restart": restart_costs,
        "requests_per_object": create_per_object,
        "delete_requests_per_object": delete_per_object,
        "writes_per_object": {
            "create": writes_beyond(&create_per_object, LOADER_CREATE),
            "delete": writes_beyond(&delete_per_object, LOADER_DELETE),
        },
        "refused_writes_per_object": {
            "create": refused(&create_per_object),
            "delete": refused(&delete_per_object),
        },
    }))
}

/// The loader's own request per object in each phase, not ours.
const LOADER_CREATE: &str = "tenant syncsecrets POST";
const LOADER_DELETE: &str = "tenant syncsecrets DELETE";

/// The writes per object the API servers refused (a conflict, throttling).
fn refused(per_object: &BTreeMap<String, f64>) -> f64 {
    per_object
        .iter()
        .filter(|(k, _)| is_write(k) && !is_accepted_write(k))
        .map(|(_, v)| v)
        .sum()
}

/// The writes per object the API servers accepted, but the loader's own
/// (`loader`). A write refused and retried (a conflict, throttling on a
/// loaded machine) is shown in the requests by its code, not counted here:
/// the budget is what the design writes.
fn writes_beyond(per_object: &BTreeMap<String, f64>, loader: &str) -> f64 {
    let all: f64 = per_object
        .iter()
        .filter(|(k, _)| is_accepted_write(k))
        .map(|(_, v)| v)
        .sum();
    all - per_object.get(loader).copied().unwrap_or(0.0)
}
