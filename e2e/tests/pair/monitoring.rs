//! Prometheus scrapes every controller process: every dashboard query and
//! alert has data, and the alerts fire on what they should.

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use syncsecret_api::contract::tenant_namespace;
use syncsecret_api::{SyncSecret, SyncSecretPhase};
use syncsecret_e2e::kube_util::eventually;
use syncsecret_e2e::pair::{ControllerProcess, Pair};
use syncsecret_e2e::prometheus::{Prometheus, Target};

use super::refusals::{stop_tampering, tampered_on_write};
use super::support::{
    certificate, create, delete_all, gone, kubectl_mgmt, management, mgmt_kubeconfig,
    refusing_policy, sync_secret, synced, synced_condition, tenant_client, tenant_shows,
};
use super::{Shared, TENANTS, WAIT};

pub(super) fn job(c: &ControllerProcess, job: &str) -> Target {
    Target {
        job: job.to_owned(),
        port: c.metrics_port,
    }
}

/// Prometheus scraping the manager and each ccm, one job each.
pub(super) fn start_prometheus(pair: &Pair) -> anyhow::Result<Prometheus> {
    let dir = pair.plane.dir().ok_or_else(|| anyhow!("no plane dir"))?;
    let p = Prometheus::start(dir)?;
    p.set_targets(&base_targets(pair))?;
    Ok(p)
}

pub(super) fn base_targets(pair: &Pair) -> Vec<Target> {
    pair.controllers().map(|c| job(c, c.name())).collect()
}

/// A kubeconfig for an API server that is not there.
pub(super) fn unreachable_kubeconfig(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let port = syncsecret_e2e::control_plane::free_port()?;
    let path = dir.join("kubeconfig-unreachable.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: unused\ncontexts:\n- name: gone\n  context: {{cluster: gone, user: u}}\ncurrent-context: gone\n"
        ),
    )?;
    Ok(path)
}

/// Refuses copies labelled `e2e-deny` in the management cluster.
fn deny_policy() -> String {
    refusing_policy(
        "e2e-deny-copies",
        "syncsecrets",
        &["CREATE", "UPDATE"],
        "e2e-deny",
        "the platform's policy refuses copies labelled e2e-deny",
    )
}

/// Every dashboard query and every alert expression returns series on a
/// real Prometheus scraping the real binaries, for data this run made the
/// way users meet it: a Secret type the manager refuses, a copy the
/// management cluster's admission policy refuses (ccm errors), TLS
/// certificates expiring and expired, a Secret changed on admission,
/// standby replicas in jobs of their own (no leader there) and replicas
/// that cannot reach their API server (never ready). Every alert is then
/// pending or firing in Prometheus, and every metric the dashboards name
/// is on a running binary's `/metrics`.
pub(super) async fn prometheus_has_data_for_every_dashboard_query_and_alert(
    s: &Shared,
) -> anyhow::Result<()> {
    use syncsecret_runtime::generate::monitoring::{Binary, alerts, panels};
    let ns = "monitoring";
    let mgmt_kubeconfig = mgmt_kubeconfig(s).await;
    // A Secret changed on admission (the write-verification alert's data),
    // after one written as sent: the counter is scraped before the failure
    // (at zero on a fresh start), or `increase()` would not see it.
    let admission = "monitoring-admission";
    let mut sent = sync_secret("written-as-sent");
    sent.string_data = Some([("k".to_owned(), s.value("monitoring"))].into());
    create(s, 1, admission, sent).await?;
    synced(s, 1, admission, "written-as-sent", |_| true).await?;
    let counter = format!(
        "kubelb_manager_write_verify_failures_total{{namespace=\"{}\"}}",
        tenant_namespace(TENANTS[1])
    );
    eventually("Prometheus has scraped the counter", WAIT, || async {
        match s.prometheus.query(&counter) {
            Ok(series) if !series.is_empty() => Ok(()),
            other => Err(format!("not yet: {other:?}")),
        }
    })
    .await?;
    tampered_on_write(s, admission, "tampered").await?;
    stop_tampering(s, admission, "tampered").await?;
    delete_all(s, 1, admission, &["written-as-sent"]).await?;

    // Refused by the manager's type policy: Failed in both clusters.
    let mut sa = sync_secret("refused-type");
    sa.type_ = Some("kubernetes.io/service-account-token".into());
    sa.string_data = Some([("note".to_owned(), s.value("monitoring"))].into());
    create(s, 0, ns, sa).await?;
    // Refused by an admission policy of the management cluster: the ccm's
    // writes fail (reconcile errors), the tenant object goes Failed.
    kubectl_mgmt(
        &mgmt_kubeconfig,
        &["apply", "-f", "-"],
        Some(&deny_policy()),
    )?;
    // The policy takes effect once the API server has loaded it: probe
    // with a server-side dry run.
    let probe_api: Api<SyncSecret> =
        Api::namespaced(management(s).await, &tenant_namespace(TENANTS[0]));
    eventually(
        "the validating admission policy is active",
        WAIT,
        || async {
            let mut probe = sync_secret("deny-probe");
            probe.labels_mut().insert("e2e-deny".into(), "yes".into());
            match probe_api
                .create(
                    &PostParams {
                        dry_run: true,
                        ..Default::default()
                    },
                    &probe,
                )
                .await
            {
                Err(kube::Error::Api(e)) if e.message.contains("e2e-deny") => Ok(()),
                other => Err(format!("not yet: {:?}", other.map(|o| o.name_any()))),
            }
        },
    )
    .await?;
    let mut denied = sync_secret("refused-copy");
    denied.labels_mut().insert("e2e-deny".into(), "yes".into());
    denied.string_data = Some([("k".to_owned(), s.value("monitoring"))].into());
    create(s, 0, ns, denied).await?;
    // Certificates expiring and expired.
    for (name, pem) in [
        ("expiring", certificate(-10, 2)),
        ("expired", certificate(-10, -1)),
    ] {
        let mut obj = sync_secret(name);
        obj.type_ = Some("kubernetes.io/tls".into());
        obj.string_data = Some(
            [
                ("tls.crt".to_owned(), pem),
                ("tls.key".to_owned(), s.value("key")),
            ]
            .into(),
        );
        create(s, 1, ns, obj).await?;
    }
    let failed = tenant_shows(s, 0, ns, "refused-copy", SyncSecretPhase::Failed).await?;
    let c = synced_condition(&failed).ok_or_else(|| anyhow!("no condition"))?;
    println!("    tenant: {}: {}", c.reason, c.message);
    ensure!(
        c.message.contains("refuses copies labelled e2e-deny"),
        "{c:?}"
    );

    // Replicas that do not lead (standbys, in jobs of their own) and
    // replicas that never become ready (their API server is unreachable).
    let (extra, extra_targets) = {
        let pair = s.pair.lock().await;
        let dir = pair.plane.dir().ok_or_else(|| anyhow!("no plane dir"))?;
        let gone = unreachable_kubeconfig(dir)?;
        let mut extra = Vec::new();
        for c in [&pair.manager, &pair.ccms[0]] {
            extra.push((
                format!("{}-standby", c.name()),
                c.variant(&format!("{}-standby", c.name()), c.base_args().to_vec())?,
            ));
            let args = c
                .base_args()
                .iter()
                .map(|a| match a.split_once('=') {
                    Some((flag, _)) if flag.ends_with("kubeconfig") => {
                        format!("{flag}={}", gone.display())
                    }
                    _ => a.clone(),
                })
                .chain(["--enable-leader-election=false".to_owned()])
                .collect();
            extra.push((
                format!("{}-unreachable", c.name()),
                c.variant(&format!("{}-unreachable", c.name()), args)?,
            ));
        }
        let mut targets = base_targets(&pair);
        targets.extend(extra.iter().map(|(j, c)| job(c, j)));
        (extra, targets)
    };
    s.prometheus.set_targets(&extra_targets)?;

    let mut exprs: Vec<(String, String)> = Vec::new();
    for b in Binary::ALL {
        for a in alerts(b) {
            exprs.push((format!("alert {} ({})", a.name, b.name()), a.expr));
        }
        for p in panels(b) {
            for (q, _) in p.queries {
                // As Grafana runs it with "All" namespaces chosen.
                let q = q.replace("$namespace", ".*");
                exprs.push((format!("panel {:?} ({})", p.title, b.name()), q));
            }
        }
    }
    let prom = &s.prometheus;
    let started = Instant::now();
    let outcome = eventually(
        "every query returns a series",
        Duration::from_secs(120),
        || async {
            let mut empty = Vec::new();
            for (what, q) in &exprs {
                let r = prom.query(q).map_err(|e| format!("{what}: {e}"))?;
                if r.is_empty() {
                    empty.push(format!("{what}: {q}"));
                }
            }
            if empty.is_empty() {
                Ok(())
            } else {
                Err(empty.join("\n"))
            }
        },
    )
    .await;
    if let Err(e) = outcome {
        bail!(
            "{e}\ntargets: {:?}\nprometheus log: {}",
            prom.targets()?,
            prom.log_tail(20)
        );
    }
    println!(
        "    {} dashboard queries and alert expressions return series ({:.1} s after the data was made)",
        exprs.len(),
        started.elapsed().as_secs_f64()
    );
    // The ccm says whether it reaches the management cluster: 1 for the
    // real one, 0 for the replica whose management kubeconfig points
    // nowhere.
    let reachable = |c: &ControllerProcess| -> Result<String, String> {
        let m = c.metrics().map_err(|e| e.to_string())?;
        m.lines()
            .find(|l| l.starts_with("kubelb_ccm_management_reachable "))
            .map(str::to_owned)
            .ok_or_else(|| "no kubelb_ccm_management_reachable".to_owned())
    };
    let unreachable_ccm = extra
        .iter()
        .find(|(job, _)| job.contains("ccm") && job.ends_with("-unreachable"))
        .map(|(_, c)| c)
        .ok_or_else(|| anyhow!("no unreachable ccm replica"))?;
    eventually("the unreachable replica says so", WAIT, || async {
        let line = reachable(unreachable_ccm)?;
        (line.ends_with(" 0")).then_some(()).ok_or(line)
    })
    .await?;
    let real = reachable(&s.pair.lock().await.ccms[0]).map_err(|e| anyhow!(e))?;
    ensure!(real.ends_with(" 1"), "the real ccm: {real}");
    // Prometheus evaluates the loaded rules: each alert pending or firing.
    let wanted: Vec<(String, &str)> = Binary::ALL
        .into_iter()
        .flat_map(|b| {
            let short = if b == Binary::Ccm { "ccm" } else { "manager" };
            alerts(b)
                .into_iter()
                .map(move |a| (a.name.to_owned(), short))
        })
        .collect();
    eventually(
        "every alert is pending or firing",
        Duration::from_secs(60),
        || async {
            let active = prom.alerts().map_err(|e| e.to_string())?;
            let missing: Vec<String> = wanted
                .iter()
                .filter(|(name, controller)| {
                    !active.iter().any(|a| {
                        a["labels"]["alertname"] == name.as_str()
                            && a["labels"]["controller"] == *controller
                    })
                })
                .map(|(n, c)| format!("{n} ({c})"))
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("not active: {missing:?}"))
            }
        },
    )
    .await?;
    println!(
        "    all {} alerts pending or firing in Prometheus",
        wanted.len()
    );

    // The dashboards are valid JSON, and each metric they name is exported.
    {
        let pair = s.pair.lock().await;
        for (b, running) in [
            (Binary::Ccm, &pair.ccms[0]),
            (Binary::Manager, &pair.manager),
        ] {
            let file = syncsecret_e2e::repo_root()
                .join("charts")
                .join(b.name())
                .join("dashboards")
                .join(format!("{}.json", b.name()));
            let dashboard: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&file)?)
                    .with_context(|| file.display().to_string())?;
            let metrics = running.metrics()?;
            let mut named = std::collections::BTreeSet::new();
            for panel in dashboard["panels"].as_array().into_iter().flatten() {
                for t in panel["targets"].as_array().into_iter().flatten() {
                    let expr = t["expr"].as_str().unwrap_or_default();
                    for (i, _) in expr.match_indices(b.prefix()) {
                        let name: String = expr[i..]
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        named.insert(name);
                    }
                }
            }
            ensure!(named.len() >= 5, "{}: only {named:?}", b.name());
            for n in &named {
                ensure!(
                    metrics.lines().any(
                        |l| l.starts_with(&format!("{n}{{")) || l.starts_with(&format!("{n} "))
                    ),
                    "{} names {n}, which {} does not export",
                    file.display(),
                    running.name()
                );
            }
            println!(
                "    {}: {} metrics named, all exported",
                b.name(),
                named.len()
            );
        }
    }

    // Clean up: the extra replicas, the policy, the objects.
    for (_, mut c) in extra {
        c.stop()?;
    }
    s.prometheus
        .set_targets(&base_targets(&*s.pair.lock().await))?;
    kubectl_mgmt(
        &mgmt_kubeconfig,
        &["delete", "-f", "-"],
        Some(&deny_policy()),
    )?;
    for (i, name) in [
        (0, "refused-type"),
        (0, "refused-copy"),
        (1, "expiring"),
        (1, "expired"),
    ] {
        let api: Api<SyncSecret> = Api::namespaced(tenant_client(s, i).await, ns);
        api.delete(name, &DeleteParams::default()).await?;
        gone(&api, name).await?;
    }
    Ok(())
}
