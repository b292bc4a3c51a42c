//! Running it: a dry run writes nothing, a restart writes nothing, and no
//! secret value reaches any log.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use syncsecret_api::contract::{
    LABEL_MANAGED_BY, LABEL_ORIGIN_NAME, MANAGED_BY_KUBELB, tenant_namespace,
};
use syncsecret_api::{SyncSecret, SyncSecretPhase};
use syncsecret_e2e::kube_util::eventually;
use syncsecret_e2e::pair::sum_samples;

use super::support::{
    create, delete_all, gone, kubectl_mgmt, management, mgmt_kubeconfig, reconciles,
    refusing_policy, remove_policy, settled, sync_secret, synced, synced_condition, tenant_client,
    tenant_shows, total, user_visible_text,
};
use super::{Shared, TENANTS, WAIT};

pub(super) async fn a_dry_run_writes_nothing_and_reports_each_pending_write(
    s: &Shared,
) -> anyhow::Result<()> {
    // Pending work: the manager is down while a tenant object is made, so its
    // copy exists (the ccm is up) but no Secret, finalizer or status.
    s.pair.lock().await.manager.stop()?;
    let mut obj = sync_secret("pending");
    obj.string_data = Some([("k".to_owned(), s.value("dry"))].into());
    let created = create(s, 0, "dry-run", obj).await?;
    let mgmt = management(s).await;
    let ns = tenant_namespace(TENANTS[0]);
    let copies: Api<SyncSecret> = Api::namespaced(mgmt.clone(), &ns);
    let copy_name = created.uid().unwrap();
    let copy = eventually("copy made by the ccm", WAIT, || async {
        copies
            .get_opt(&copy_name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "no copy yet".to_owned())
    })
    .await?;
    // No verdict from the manager within seconds: the tenant says Pending.
    tenant_shows(s, 0, "dry-run", "pending", SyncSecretPhase::Pending).await?;

    let dry = s
        .pair
        .lock()
        .await
        .manager
        .sibling("syncsecret-manager-dry-run", &["--dry-run"])
        .await?;
    let pending = eventually("the dry run reports the pending Secret", WAIT, || async {
        let m = dry.metrics().map_err(|e| e.to_string())?;
        let line = r#"kubelb_manager_dry_run_pending_writes{resource="secrets",verb="patch"}"#;
        m.lines()
            .find(|l| l.starts_with(line))
            .map(str::to_owned)
            .ok_or_else(|| "not reported yet".to_owned())
    })
    .await?;
    println!("    {pending}");
    ensure!(
        dry.metric_sum("kubelb_manager_writes_total")? == 0.0,
        "the dry run wrote"
    );
    let log = dry.log_tail(200);
    ensure!(
        log.contains("would write") && log.contains(&copy_name),
        "the pending write is not logged: {log}"
    );
    // Nothing changed in the cluster.
    let after = copies.get(&copy_name).await?;
    ensure!(
        after.resource_version() == copy.resource_version(),
        "the dry run changed the copy"
    );
    let secrets: Api<Secret> = Api::namespaced(mgmt, &ns);
    ensure!(
        secrets.get_opt(&copy_name).await?.is_none(),
        "the dry run made a Secret"
    );
    drop(dry);

    // The real manager does the work.
    s.pair.lock().await.manager.start().await?;
    synced(s, 0, "dry-run", "pending", |_| true).await?;

    // Same for the ccm: its real process down, a dry-run one up, a new
    // tenant object: no finalizer, no copy, each pending write reported.
    s.pair.lock().await.ccms[1].stop()?;
    let mut obj = sync_secret("pending-copy");
    obj.string_data = Some([("k".to_owned(), s.value("dry-ccm"))].into());
    let created = create(s, 1, "dry-run", obj).await?;
    let dry_ccm = s.pair.lock().await.ccms[1]
        .sibling("syncsecret-ccm-dry-run", &["--dry-run"])
        .await?;
    let reported = eventually("the dry-run ccm reports the pending copy", WAIT, || async {
        let m = dry_ccm.metrics().map_err(|e| e.to_string())?;
        let pending = sum_samples(&m, "kubelb_ccm_dry_run_pending_writes");
        (pending >= 2.0)
            .then_some(pending)
            .ok_or_else(|| format!("{pending} pending so far"))
    })
    .await?;
    println!("    dry-run ccm: {reported} pending writes (finalizer, copy)");
    ensure!(
        dry_ccm.metric_sum("kubelb_ccm_writes_total")? == 0.0,
        "the dry-run ccm wrote"
    );
    let tenant: Api<SyncSecret> = Api::namespaced(tenant_client(s, 1).await, "dry-run");
    let still = tenant.get("pending-copy").await?;
    ensure!(
        still.finalizers().is_empty(),
        "the dry-run ccm added a finalizer"
    );
    ensure!(
        still.resource_version() == created.resource_version(),
        "the dry-run ccm changed the tenant object"
    );
    let copies2: Api<SyncSecret> =
        Api::namespaced(management(s).await, &tenant_namespace(TENANTS[1]));
    ensure!(
        copies2.get_opt(&created.uid().unwrap()).await?.is_none(),
        "the dry-run ccm made a copy"
    );
    drop(dry_ccm);
    s.pair.lock().await.ccms[1].start().await?;
    synced(s, 1, "dry-run", "pending-copy", |_| true).await?;
    Ok(())
}

/// A copy the manager never answers (its status writes refused) while it
/// answers the tenant's others: the tenant object shows `Pending` at the
/// ccm's `--pending-timeout-seconds`, and `Synced` once the manager gets
/// through.
pub(super) async fn a_copy_the_manager_never_answers_shows_pending_at_the_timeout(
    s: &Shared,
) -> anyhow::Result<()> {
    let ns = "never-answered";
    let kubeconfig = mgmt_kubeconfig(s).await;
    let mut names = Vec::new();
    let result = never_answered(s, ns, &kubeconfig, &mut names).await;
    // Whatever happened: no policy, no objects, the usual flags, for the
    // tests after this one.
    let policy = remove_policy(&kubeconfig, "e2e-hold-status");
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let objects = delete_all(s, 0, ns, &names).await;
    let flags = s.pair.lock().await.ccms[0].restart_with(&[]).await;
    result?;
    policy?;
    objects?;
    Ok(flags?)
}

async fn never_answered(
    s: &Shared,
    ns: &str,
    kubeconfig: &std::path::Path,
    names: &mut Vec<String>,
) -> anyhow::Result<()> {
    // Holds the manager's status writes to copies labelled `e2e-stuck`.
    let policy = refusing_policy(
        "e2e-hold-status",
        "syncsecrets/status",
        &["UPDATE"],
        "e2e-stuck",
        "the platform's policy holds the status of copies labelled e2e-stuck",
    );
    kubectl_mgmt(kubeconfig, &["apply", "-f", "-"], Some(&policy))?;
    // Active once a status write of a labelled object is refused (a
    // server-side dry run, on an object outside the tenant namespaces).
    let probes: Api<SyncSecret> = Api::namespaced(management(s).await, "default");
    let mut probe = sync_secret("hold-probe");
    probe.labels_mut().insert("e2e-stuck".into(), "yes".into());
    probes.create(&PostParams::default(), &probe).await?;
    let active = eventually("the status policy is active", WAIT, || async {
        let status = json!({ "status": { "phase": "Synced" } });
        let params = PatchParams {
            dry_run: true,
            ..Default::default()
        };
        match probes
            .patch_status("hold-probe", &params, &Patch::Merge(&status))
            .await
        {
            Err(kube::Error::Api(e)) if e.message.contains("e2e-stuck") => Ok(()),
            other => Err(format!("not yet: {:?}", other.map(|o| o.name_any()))),
        }
    })
    .await;
    probes
        .delete("hold-probe", &DeleteParams::default())
        .await?;
    active?;
    s.pair.lock().await.ccms[0]
        .restart_with(&["--pending-timeout-seconds=10"])
        .await?;

    let flow = |i: usize| {
        let mut o = sync_secret(&format!("flow-{i}"));
        o.string_data = Some([("k".to_owned(), s.value("flow"))].into());
        o
    };
    // The restarted ccm has seen the manager answer before `stuck` comes.
    create(s, 0, ns, flow(0)).await?;
    names.push("flow-0".to_owned());
    tenant_shows(s, 0, ns, "flow-0", SyncSecretPhase::Synced).await?;
    let mut stuck = sync_secret("stuck");
    stuck.labels_mut().insert("e2e-stuck".into(), "yes".into());
    stuck.string_data = Some([("k".to_owned(), s.value("stuck"))].into());
    create(s, 0, ns, stuck).await?;
    names.push("stuck".to_owned());
    let api: Api<SyncSecret> = Api::namespaced(tenant_client(s, 0).await, ns);
    // A new object every second: the manager answers all along (it is
    // never quiet for 5 s), so only the timeout makes `stuck` late.
    let started = std::time::Instant::now();
    let mut pending_after = None;
    for i in 1..=30 {
        create(s, 0, ns, flow(i)).await?;
        names.push(format!("flow-{i}"));
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let phase = api.get("stuck").await?.status.and_then(|st| st.phase);
        if phase == Some(SyncSecretPhase::Pending) {
            pending_after = Some(started.elapsed());
            break;
        }
    }
    let Some(after) = pending_after else {
        bail!("stuck never showed Pending while the manager answered 30 later objects");
    };
    println!("    stuck: Pending after {:.1} s", after.as_secs_f64());
    let log = s.pair.lock().await.ccms[0].log_tail(2000);
    ensure!(
        !log.contains("Pending: the manager has answered none"),
        "the manager went quiet: Pending came from that rule, not the timeout"
    );
    ensure!(
        log.contains("Pending: no verdict 10s after this ccm first wrote the copy"),
        "the ccm's log does not say why stuck is Pending"
    );
    ensure!(
        after.as_secs() >= 9,
        "Pending before the 10 s timeout, with the manager answering: {after:?}"
    );
    // Those were answered: the manager was at work, not down.
    tenant_shows(s, 0, ns, "flow-1", SyncSecretPhase::Synced).await?;
    remove_policy(kubeconfig, "e2e-hold-status")?;
    // The manager retries and gets through: `Synced`, by itself.
    tenant_shows(s, 0, ns, "stuck", SyncSecretPhase::Synced).await?;
    Ok(())
}

/// A new object whose first copy write is refused shows `Failed`. Once its
/// copy is written while the manager answers nothing, it shows `Pending`,
/// not the failure that no longer holds; `Synced` once the manager is back.
pub(super) async fn a_failure_before_the_first_verdict_gives_way_to_pending(
    s: &Shared,
) -> anyhow::Result<()> {
    let kubeconfig = mgmt_kubeconfig(s).await;
    let ns = "first-verdict";
    let mut names = Vec::new();
    let result = failed_then_pending(s, ns, &kubeconfig, &mut names).await;
    // Whatever happened: no policy, the manager up and no objects, for the
    // tests after.
    let policy = remove_policy(&kubeconfig, "e2e-refuse-copy");
    let manager = {
        let mut pair = s.pair.lock().await;
        if pair.manager.has_exited() {
            pair.manager.start().await
        } else {
            Ok(())
        }
    };
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let objects = delete_all(s, 0, ns, &names).await;
    result?;
    policy?;
    manager?;
    objects
}

async fn failed_then_pending(
    s: &Shared,
    ns: &str,
    kubeconfig: &std::path::Path,
    names: &mut Vec<String>,
) -> anyhow::Result<()> {
    let policy = refusing_policy(
        "e2e-refuse-copy",
        "syncsecrets",
        &["CREATE"],
        "e2e-refuse-copy",
        "the platform's policy refuses copies labelled e2e-refuse-copy",
    );
    kubectl_mgmt(kubeconfig, &["apply", "-f", "-"], Some(&policy))?;
    // Active once a labelled create is refused (a server-side dry run).
    let probes: Api<SyncSecret> = Api::namespaced(management(s).await, "default");
    let mut probe = sync_secret("refuse-probe");
    probe
        .labels_mut()
        .insert("e2e-refuse-copy".into(), "yes".into());
    eventually("the copy policy is active", WAIT, || async {
        let params = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        match probes.create(&params, &probe).await {
            Err(kube::Error::Api(e)) if e.message.contains("e2e-refuse-copy") => Ok(()),
            other => Err(format!("not yet: {:?}", other.map(|o| o.name_any()))),
        }
    })
    .await?;
    s.pair.lock().await.manager.stop()?;

    let mut obj = sync_secret("refused-first");
    obj.labels_mut()
        .insert("e2e-refuse-copy".into(), "yes".into());
    obj.string_data = Some([("k".to_owned(), s.value("refused-first"))].into());
    create(s, 0, ns, obj).await?;
    names.push("refused-first".to_owned());
    let failed = tenant_shows(s, 0, ns, "refused-first", SyncSecretPhase::Failed).await?;
    let reason = synced_condition(&failed)
        .map(|c| c.reason)
        .unwrap_or_default();
    ensure!(
        reason == "ApplyCopyFailed",
        "the refused copy write shows {reason}"
    );

    // The platform lets it through; the ccm's retry writes the copy, and
    // with no manager to judge it the object waits, as a new one does.
    remove_policy(kubeconfig, "e2e-refuse-copy")?;
    let pending = tenant_shows(s, 0, ns, "refused-first", SyncSecretPhase::Pending).await?;
    let reason = synced_condition(&pending)
        .map(|c| c.reason)
        .unwrap_or_default();
    println!("    refused-first: Failed, then Pending ({reason}) once its copy was written");

    s.pair.lock().await.manager.start().await?;
    tenant_shows(s, 0, ns, "refused-first", SyncSecretPhase::Synced).await?;
    Ok(())
}

pub(super) async fn restarting_both_controllers_costs_zero_writes(
    s: &Shared,
) -> anyhow::Result<()> {
    // Objects of its own (so that it also runs alone), plus whatever the
    // earlier tests left, all converged.
    for i in 0..3 {
        let name = format!("steady-{i}");
        let mut obj = sync_secret(&name);
        obj.string_data = Some([("v".to_owned(), s.value("steady"))].into());
        create(s, i % TENANTS.len(), "restart", obj).await?;
        synced(s, i % TENANTS.len(), "restart", &name, |_| true).await?;
    }
    // And one the Secret synchronizer made from a labelled Secret: its
    // reconcile after the restart must find the SyncSecret it made, even
    // before the ccm's cache of them has listed.
    let labelled = Secret {
        metadata: ObjectMeta {
            name: Some("steady-labelled".into()),
            labels: Some([(LABEL_MANAGED_BY.to_owned(), MANAGED_BY_KUBELB.to_owned())].into()),
            ..Default::default()
        },
        string_data: Some([("v".to_owned(), s.value("steady"))].into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(tenant_client(s, 0).await, "restart")
        .create(&PostParams::default(), &labelled)
        .await?;
    synced(s, 0, "restart", "steady-labelled", |_| true).await?;
    let mgmt = management(s).await;
    let mut copies = 0;
    let mut versions_before = BTreeMap::new();
    for t in TENANTS {
        let ns = tenant_namespace(t);
        for c in Api::<SyncSecret>::namespaced(mgmt.clone(), &ns)
            .list(&ListParams::default().labels(LABEL_ORIGIN_NAME))
            .await?
            .items
        {
            versions_before.insert(format!("copy {ns}/{}", c.name_any()), c.resource_version());
            copies += 1;
        }
        for sec in Api::<Secret>::namespaced(mgmt.clone(), &ns)
            .list(&ListParams::default().labels(LABEL_ORIGIN_NAME))
            .await?
            .items
        {
            versions_before.insert(
                format!("secret {ns}/{}", sec.name_any()),
                sec.resource_version(),
            );
        }
    }
    ensure!(
        copies >= 4,
        "expected at least this test's 4 copies, found {copies}"
    );

    // What the tenant API servers have answered of SyncSecret lists, and
    // how many SyncSecrets each holds.
    let mut lists_before = Vec::new();
    for i in 0..TENANTS.len() {
        let client = tenant_client(s, i).await;
        let held = Api::<SyncSecret>::all(client.clone())
            .list_metadata(&ListParams::default())
            .await?
            .items
            .len();
        lists_before.push((held, syncsecret_lists(&client).await?));
    }

    s.pair.lock().await.restart_all().await?;
    // Every object is reconciled once after a restart; wait for that.
    eventually(
        "every object reconciled after the restart",
        WAIT,
        || async {
            let (c, m) = reconciles(s).await.map_err(|e| e.to_string())?;
            if c >= f64::from(copies) && m >= f64::from(copies) {
                Ok(())
            } else {
                Err(format!("ccm {c}, manager {m} of {copies}"))
            }
        },
    )
    .await?;
    // Several events per object may reach the queue at start (its own
    // list, its copy's list); wait until the counts stop moving.
    settled(s).await?;
    let (c, m) = reconciles(s).await?;
    let writes = total(s, "writes_total").await?;
    println!(
        "    after restart: {c} ccm and {m} manager reconciles of {copies} objects, {writes} writes"
    );
    if writes != 0.0 {
        let pair = s.pair.lock().await;
        let detail: Vec<String> = pair
            .controllers()
            .filter_map(|c| c.metrics().ok())
            .flat_map(|m| {
                m.lines()
                    .filter(|l| l.contains("writes_total{"))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        bail!("a restart with nothing changed wrote {writes} times: {detail:#?}");
    }
    for (what, version) in versions_before {
        let (kind, rest) = what.split_once(' ').unwrap();
        let (ns, name) = rest.split_once('/').unwrap();
        let now = if kind == "copy" {
            Api::<SyncSecret>::namespaced(mgmt.clone(), ns)
                .get(name)
                .await?
                .resource_version()
        } else {
            Api::<Secret>::namespaced(mgmt.clone(), ns)
                .get(name)
                .await?
                .resource_version()
        };
        ensure!(now == version, "{what} changed across the restart");
    }
    // Each ccm (the Secret synchronizer's included) listed its tenant's
    // SyncSecrets once, streamed (no paged list at all).
    for (i, (held, (lists_then, streamed_then))) in lists_before.into_iter().enumerate() {
        let (lists, streamed) = syncsecret_lists(&tenant_client(s, i).await).await?;
        let (lists, streamed) = (lists - lists_then, streamed - streamed_then);
        ensure!(
            lists == 0.0 && streamed == 1.0,
            "the restarted ccm of {} listed its {held} SyncSecrets {streamed} times streamed and in {lists} paged requests; one streamed list is all it needs",
            TENANTS[i]
        );
    }
    Ok(())
}

/// The SyncSecret lists an API server has answered: paged (`LIST`
/// requests), and streamed (watches that sent their initial events).
async fn syncsecret_lists(client: &kube::Client) -> anyhow::Result<(f64, f64)> {
    use syncsecret_e2e::bench::accounting;
    let requests = accounting::requests(client).await?;
    let lists = requests.get("syncsecrets LIST").copied().unwrap_or(0.0);
    let streamed = accounting::streamed_lists(client, "syncsecrets").await?;
    Ok((lists, streamed))
}

pub(super) async fn no_secret_value_reaches_any_log(s: &Shared) -> anyhow::Result<()> {
    // Traffic of its own, so that the scan means something in any order:
    // objects made, updated, refused and deleted, each with fresh values.
    let ns = "log-scan";
    for i in 0..10 {
        let name = format!("scan-{i}");
        let tenant = i % TENANTS.len();
        let mut obj = sync_secret(&name);
        obj.string_data = Some([("v".to_owned(), s.value("scan"))].into());
        if i == 9 {
            obj.type_ = Some("kubernetes.io/service-account-token".into());
            create(s, tenant, ns, obj).await?;
            tenant_shows(s, tenant, ns, &name, SyncSecretPhase::Failed).await?;
            continue;
        }
        create(s, tenant, ns, obj).await?;
        synced(s, tenant, ns, &name, |_| true).await?;
        let api: Api<SyncSecret> = Api::namespaced(tenant_client(s, tenant).await, ns);
        let patch = json!({"stringData": {"v": s.value("scan-update")}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    for i in 0..10 {
        let api: Api<SyncSecret> = Api::namespaced(tenant_client(s, i % TENANTS.len()).await, ns);
        let name = format!("scan-{i}");
        api.delete(&name, &DeleteParams::default()).await?;
        gone(&api, &name).await?;
    }
    let values = s.values.lock().unwrap().clone();
    ensure!(
        values.len() >= 10,
        "too few values to scan for: {}",
        values.len()
    );
    let needles = syncsecret_e2e::leaks::needles(&values);
    let files = s.pair.lock().await.log_files();
    let mut lines = 0usize;
    for f in &files {
        let text = std::fs::read_to_string(f).with_context(|| f.display().to_string())?;
        // The controllers run with the generated RBAC only: none of their
        // calls may have been refused by it (`... is forbidden: User "..."
        // cannot ...`; an admission policy's refusal reads differently).
        if f.to_string_lossy().contains("syncsecret-")
            && let Some(l) = text
                .lines()
                .find(|l| l.contains("forbidden: User") || l.contains(r#"forbidden: User \""#))
        {
            bail!("{} was refused a call by RBAC: {l}", f.display());
        }
        for line in text.lines() {
            lines += 1;
            for n in &needles {
                ensure!(
                    !line.contains(n.as_str()),
                    "{} leaks a secret value: {line}",
                    f.display()
                );
            }
        }
    }
    println!(
        "    scanned {lines} lines in {} log files for {} values: none found",
        files.len(),
        values.len()
    );
    ensure!(
        files
            .iter()
            .any(|f| f.to_string_lossy().contains("syncsecret-ccm")),
        "no ccm log scanned"
    );
    ensure!(lines > 50, "suspiciously few log lines: {lines}");
    let mut texts = user_visible_text(&management(s).await).await?;
    for i in 0..TENANTS.len() {
        texts.extend(user_visible_text(&tenant_client(s, i).await).await?);
    }
    for t in &texts {
        for n in &needles {
            ensure!(
                !t.contains(n.as_str()),
                "an event or status leaks a secret value: {t}"
            );
        }
    }
    ensure!(
        texts.len() > 10,
        "suspiciously few events and statuses: {}",
        texts.len()
    );
    println!(
        "    and {} event notes, reasons and status messages: none found",
        texts.len()
    );
    // And every value any tenant object of the run held, recorded by a
    // watch, in the controllers' logs, events, statuses and /metrics.
    let found = s.pair.lock().await.leaks(&values).await?;
    ensure!(found.is_empty(), "a secret value leaked in: {found:?}");
    Ok(())
}

// ------------------------------------------------------------- monitoring
