//! A tenant rewriting its copies as fast as its identity can.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use syncsecret_api::bounds::{COPIES, DATA_BYTES, WRITE_BURST_BYTES, WRITE_BYTES_PER_MINUTE};

use crate::support::*;

/// How long the storm lasts.
const STORM: Duration = Duration::from_secs(30);
/// The longest the good tenant's update may take to arrive meanwhile: the
/// suite's own wait is a minute; before the write budget and the flow
/// schemas it took up to 200 s.
const WITHIN: Duration = Duration::from_secs(10);

/// The evil tenant's identity rewrites its copies, each at every bound,
/// with 16 writes in flight, for 30 s. The API server queues its requests
/// by user at the tenants' own priority level (the chart's FlowSchema);
/// the manager syncs them within the tenant's write budget; once that is
/// down to its reserve the API server refuses the tenant's updates (the
/// pause policy), the manager pacing what is left, holding no worker; the
/// good tenant's updates arrive within 10 s each throughout, and the
/// manager stays ready and leading.
pub(crate) async fn a_write_storm_is_paced_and_others_keep_converging(
    pair: &mut Pair,
    values: &mut Values,
) -> anyhow::Result<()> {
    let (evil_ns, identity) = evil_identity(pair).await?;
    let copies = dynamic(&client_from(&identity).await?, &evil_ns);
    let data_bytes = DATA_BYTES.default as usize;
    let mut names = Vec::new();
    for i in 0..20 {
        let copy =
            syncsecret_e2e::kube_util::copy_at_every_bound(&evil_ns, data_bytes, &format!("c{i}"));
        let copy: DynamicObject = serde_json::from_value(copy)?;
        names.push(copy.name_any());
        copies.create(&PostParams::default(), &copy).await?;
    }
    let audited_before = audited_writes(pair)?.len();
    let storming = Arc::new(AtomicBool::new(true));
    let written = Arc::new(AtomicUsize::new(0));
    let paused = Arc::new(AtomicUsize::new(0));
    let other = Arc::new(std::sync::Mutex::new(None::<String>));
    let storm = {
        let (copies, names, storming, written, paused, other) = (
            copies.clone(),
            names.clone(),
            storming.clone(),
            written.clone(),
            paused.clone(),
            other.clone(),
        );
        tokio::spawn(async move {
            let mut round = 0usize;
            while storming.load(Ordering::Relaxed) {
                round += 1;
                let writes = names.iter().map(|name| {
                    let (key, value) =
                        syncsecret_e2e::kube_util::bound_entry(data_bytes, 0, &format!("r{round}"));
                    let patch = json!({"data": {key: value}});
                    let copies = copies.clone();
                    let (written, paused, other) = (written.clone(), paused.clone(), other.clone());
                    async move {
                        match copies
                            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
                            .await
                        {
                            Ok(_) => {
                                written.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(kube::Error::Api(s)) if is_pause(&s) => {
                                paused.fetch_add(1, Ordering::Relaxed);
                            }
                            // Flow control turning the tenant away.
                            Err(kube::Error::Api(s)) if s.code == 429 => {}
                            Err(e) => {
                                if let Ok(mut o) = other.lock() {
                                    o.get_or_insert(e.to_string());
                                }
                            }
                        }
                    }
                });
                futures::future::join_all(writes).await;
            }
        })
    };
    let started = std::time::Instant::now();
    let mut slowest = Duration::ZERO;
    let mut i = 0;
    while started.elapsed() < STORM {
        let t = std::time::Instant::now();
        let name = format!("during-storm-{i}");
        good_tenant_converges(pair, &name, &values.fresh("good-storm")).await?;
        let took = t.elapsed();
        // Deleted again, so that the good tenant's quota is not what
        // holds it up.
        dynamic(&pair.tenants[GOOD], NS)
            .delete(&name, &Default::default())
            .await?;
        ensure!(
            took <= WITHIN,
            "a good tenant's object took {took:?} during the storm"
        );
        slowest = slowest.max(took);
        ready(&pair.manager)?;
        i += 1;
    }
    storming.store(false, Ordering::Relaxed);
    storm.await?;
    let seconds = started.elapsed().as_secs_f64();
    // The manager's writes of the evil tenant's Secrets, by the audit log
    // (its write counter counts every tenant's), once they have landed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let manager = "system:serviceaccount:kubelb:syncsecret-manager";
    let secrets = audited_writes(pair)?[audited_before..]
        .iter()
        .filter(|w| w.user == manager && w.resource == "secrets" && w.namespace == evil_ns)
        .filter(|w| w.verb == "patch" || w.verb == "create")
        .count() as f64;
    let writes = written.load(Ordering::Relaxed);
    let refused = paused.load(Ordering::Relaxed);
    if let Some(e) = other.lock().ok().and_then(|o| o.clone()) {
        bail!("a write of the storm failed otherwise than by the pause: {e}");
    }
    // Each write of the tenant's is charged at least its copy's data; its
    // budget lets through its burst and its rate over the storm, less what
    // the manager wrote for it (what the tenant gets admitted before the
    // first refusal comes out of the burst's last quarter).
    let tenant_most = budget_bytes(seconds) / data_bytes as f64;
    println!(
        "    the tenant's own writes: {writes} admitted (its budget allows at most {tenant_most:.0}), {refused} refused while its writes were paused"
    );
    ensure!(
        refused > 0,
        "no write of the storm was refused: the tenant was never paused"
    );
    ensure!(
        (writes as f64) <= tenant_most,
        "the API server admitted {writes} writes of copies at every bound from the tenant"
    );
    // Each sync of one of these is charged at least its Secret's data
    // (three quarters of the copy's base64) and its copy's (the status).
    let per_sync = (data_bytes * 3 / 4 + data_bytes) as f64;
    // What the budget lets through: its burst (per copy of the tenant's
    // quota, the chart's default here) and its rate over the storm.
    let most = budget_bytes(seconds) / per_sync + 16.0;
    println!(
        "    a storm of {writes} writes of copies at every bound in {seconds:.0} s: the manager wrote {secrets} of its Secrets (its budget allows at most {most:.0}); {i} good objects synced meanwhile, the slowest in {:.1} s",
        slowest.as_secs_f64()
    );
    ensure!(
        secrets <= most,
        "the manager wrote {secrets} Secrets for the storm"
    );
    // The manager says so: the tenant is listed as paused (whether its
    // own reconciles also had to wait depends on whether the budget went
    // past the reserve into debt).
    metric_reads_at_least(&pair.manager, "kubelb_manager_tenants_paused", 1.0).await?;
    // The tenants' requests went through the chart's flow schema.
    let dispatched = flow_schema_dispatched(&pair.management, "syncsecret-manager-tenants").await?;
    println!(
        "    the API server dispatched {dispatched} requests of the tenants' identities at their own priority level"
    );
    ensure!(
        dispatched >= writes as f64,
        "only {dispatched} requests through the tenants' flow schema"
    );
    churn_is_paced(pair, values, &copies, &evil_ns).await?;
    for name in &names {
        copies.delete(name, &Default::default()).await?;
    }
    ready(&pair.manager)
}

/// What the tenant's budget lets into its namespace in `seconds`: its
/// burst (per copy of the tenant's quota, the chart's default here) and
/// its rate.
fn budget_bytes(seconds: f64) -> f64 {
    (COPIES.default * WRITE_BURST_BYTES.default) as f64
        + WRITE_BYTES_PER_MINUTE.default as f64 * seconds / 60.0
}

/// Whether the API server refused a write because the tenant's writes are
/// paused: the pause policy's refusal, naming its namespace and budget.
pub(crate) fn is_pause(s: &kube::core::Status) -> bool {
    s.code == 403 && s.message.contains("has spent its write budget")
}

/// How long the tenant makes and deletes copies in a loop.
const CHURN: Duration = Duration::from_secs(20);

/// The evil tenant, its budget spent by the storm, makes copies with our
/// finalizer (as a ccm writes them) and deletes each at once, in a loop.
/// Each deletion needs the manager to take its finalizer off: charged and
/// paced like any write, so a handful in 20 s, not one per loop (the
/// quota holds the copies waiting). The good tenant converges meanwhile.
async fn churn_is_paced(
    pair: &Pair,
    values: &mut Values,
    copies: &Api<DynamicObject>,
    evil_ns: &str,
) -> anyhow::Result<()> {
    let audited_before = audited_writes(pair)?.len();
    let started = std::time::Instant::now();
    let mut made = std::collections::HashSet::new();
    let mut held_by_quota = 0;
    let mut held_by_pause = 0;
    while started.elapsed() < CHURN {
        let mut o = copy_in(
            evil_ns,
            &uuid::Uuid::new_v4().to_string(),
            json!({"data": {"k": "dg=="}}),
        );
        o.metadata.finalizers = Some(vec![syncsecret_api::contract::FINALIZER.to_owned()]);
        match copies.create(&PostParams::default(), &o).await {
            Ok(_) => {
                made.insert(o.name_any());
                copies.delete(&o.name_any(), &Default::default()).await?;
            }
            Err(kube::Error::Api(s)) if s.message.contains("exceeded quota") => {
                held_by_quota += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(kube::Error::Api(s)) if is_pause(&s) => {
                held_by_pause += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    good_tenant_converges(pair, "after-churn", &values.fresh("good-churn")).await?;
    // The audit log has a write a moment after it was answered.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let manager = "system:serviceaccount:kubelb:syncsecret-manager";
    let released = audited_writes(pair)?[audited_before..]
        .iter()
        .filter(|w| w.user == manager && w.verb == "patch" && w.subresource.is_empty())
        .filter(|w| w.namespace == evil_ns && made.contains(&w.name))
        .count() as f64;
    // Each release is charged at least twice the overhead (the Secret's
    // deletion, the copy without our finalizer); the budget refills at its
    // rate, and the reconciles running when it ran out may each finish.
    let per_release = 2.0 * 1024.0;
    let most = WRITE_BYTES_PER_MINUTE.default as f64 * seconds / 60.0 / per_release + 16.0;
    println!(
        "    a churn of {} copies made and deleted in {seconds:.0} s ({held_by_quota} refused by the quota, {held_by_pause} by the pause meanwhile): the manager released {released} (its budget allows at most {most:.0})",
        made.len()
    );
    ensure!(
        released <= most,
        "the manager released {released} copies of the churn"
    );
    // And the churn itself: each deletion is charged, and creates are
    // refused while the budget is in debt.
    ensure!(
        made.len() as f64 <= most,
        "the tenant made and deleted {} copies",
        made.len()
    );
    ready(&pair.manager)
}

/// Requests the API server dispatched through FlowSchema `name`.
async fn flow_schema_dispatched(client: &Client, name: &str) -> anyhow::Result<f64> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(req).await?;
    let wanted = format!("flow_schema=\"{name}\"");
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("apiserver_flowcontrol_dispatched_requests_total{"))
        .filter(|rest| rest.contains(&wanted))
        .filter_map(|rest| rest.rsplit_once("} ")?.1.trim().parse::<f64>().ok())
        .sum::<f64>()
        + 0.0)
}
