//! A tenant's whole quota of copies, each at every per-copy bound, and the
//! manager restarted over them under its chart's memory limit.

use k8s_openapi::api::core::v1::ResourceQuota;
use syncsecret_api::admission::QUOTA_NAME;
use syncsecret_api::bounds::DATA_BYTES;

use crate::support::*;

/// A copy at every bound of the chart's defaults, with the manager's
/// finalizer from its birth, as a ccm writes it.
fn at_every_bound(namespace: &str) -> DynamicObject {
    let copy = syncsecret_e2e::kube_util::copy_at_every_bound(
        namespace,
        DATA_BYTES.default as usize,
        "quota",
    );
    serde_json::from_value(copy).expect("a copy")
}

/// The evil tenant fills its quota with copies at every per-copy bound;
/// they sync. The manager, restarted over them (a rollout, a node drain),
/// lists them all under its chart's memory limit, becomes ready, and
/// leads throughout, never losing its Lease; the good tenant converges.
pub(crate) async fn a_full_quota_at_every_bound_survives_a_restart(
    pair: &mut Pair,
    values: &mut Values,
) -> anyhow::Result<()> {
    let (evil_ns, identity) = evil_identity(pair).await?;
    let copies = dynamic(&client_from(&identity).await?, &evil_ns);
    // A tenant that fills its quota at once, as one onboarding does,
    // starts from a full budget: a restart refills every budget
    // (docs/security.md), and the storm's copies are released first.
    pair.manager.restart()?;
    pair.manager.wait_ready().await?;
    eventually("the storm's copies released", WAIT * 2, || async {
        let left = copies
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .iter()
            .filter(|c| c.metadata.deletion_timestamp.is_some())
            .count();
        (left == 0)
            .then_some(())
            .ok_or(format!("{left} terminating"))
    })
    .await?;
    pair.manager.restart()?;
    pair.manager.wait_ready().await?;
    let quota = Api::<ResourceQuota>::namespaced(pair.management.clone(), &evil_ns);
    let room = eventually("the quota counted", WAIT, || async {
        let q = quota.get(QUOTA_NAME).await.map_err(|e| e.to_string())?;
        let count = |m: Option<
            &std::collections::BTreeMap<
                String,
                k8s_openapi::apimachinery::pkg::api::resource::Quantity,
            >,
        >| {
            m.and_then(|m| m.get("count/syncsecrets.kubelb.k8c.io"))
                .and_then(|q| q.0.parse::<usize>().ok())
        };
        let status = q.status.unwrap_or_default();
        match (count(status.hard.as_ref()), count(status.used.as_ref())) {
            (Some(hard), Some(used)) => Ok(hard - used),
            _ => Err("not counted yet".to_owned()),
        }
    })
    .await?;
    let mut names = Vec::new();
    for _ in 0..room {
        let o = at_every_bound(&evil_ns);
        names.push(o.name_any());
        copies.create(&PostParams::default(), &o).await?;
    }
    // One more is over the quota.
    let over = copies
        .create(&PostParams::default(), &at_every_bound(&evil_ns))
        .await;
    ensure!(
        matches!(&over, Err(kube::Error::Api(s)) if s.message.contains("exceeded quota")),
        "a copy over the quota: {over:?}"
    );
    eventually(
        &format!("{room} copies at every bound synced"),
        WAIT * 2,
        || async {
            let mut pending = 0;
            for name in &names {
                if verdict(&copies, name).await.map(|v| v.0) != Ok("SecretSynced".to_owned()) {
                    pending += 1;
                }
            }
            (pending == 0)
                .then_some(())
                .ok_or(format!("{pending} not synced"))
        },
    )
    .await?;
    println!("    {room} copies at every bound synced: the tenant's whole quota");

    let (holder, transitions) = syncsecret_e2e::kube_util::manager_lease(&pair.management).await?;
    pair.manager.restart()?;
    let restarted = std::time::Instant::now();
    pair.manager.wait_ready().await?;
    println!(
        "    the manager, restarted as its image under its memory limit, ready in {:.1} s",
        restarted.elapsed().as_secs_f64()
    );
    good_tenant_converges(pair, "after-full-quota", &values.fresh("good-quota")).await?;
    // Leading throughout: ready, one holder, the Lease taken once (the
    // restart's own hand-over), for as long as several renew deadlines.
    let (leader, after) = syncsecret_e2e::kube_util::manager_lease(&pair.management).await?;
    for _ in 0..30 {
        ensure!(!pair.manager.oom_killed(), "the manager was OOM-killed");
        ready(&pair.manager)?;
        metric_reads(&pair.manager, "kubelb_manager_leader", 1.0).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (still, last) = syncsecret_e2e::kube_util::manager_lease(&pair.management).await?;
    let peak = pair.manager.peak_rss_kib().unwrap_or(0) as f64 / 1024.0;
    println!("    the restarted manager's peak resident memory: {peak:.1} MiB");
    println!(
        "    leader {holder} → {leader}; Lease transitions {transitions} → {after} → {last} over 30 s"
    );
    ensure!(
        leader != holder && still == leader,
        "the Lease changed hands again"
    );
    ensure!(
        last == after && after <= transitions + 1,
        "the Lease changed hands {} times",
        last - transitions
    );
    for name in &names {
        copies.delete(name, &Default::default()).await?;
    }
    // Deleting them leaves two versions of each copy and its Secret in
    // etcd until a compaction, more than the burst that synced them: the
    // budget goes into debt and the tenant's creates are refused by the
    // API server (its deletions are not) while the manager releases the
    // rest at its budget's pace.
    eventually("the tenant's creates refused", WAIT, || async {
        let probe = copy_in(
            &evil_ns,
            &uuid::Uuid::new_v4().to_string(),
            json!({"data": {"k": "dg=="}}),
        );
        match copies.create(&PostParams::default(), &probe).await {
            Err(kube::Error::Api(s)) if crate::storm::is_pause(&s) => Ok(()),
            Ok(_) => {
                let _ = copies.delete(&probe.name_any(), &Default::default()).await;
                Err("a write was admitted".to_owned())
            }
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;
    good_tenant_converges(pair, "evil-paused", &values.fresh("good-paused")).await?;
    ready(&pair.manager)?;
    Ok(())
}
