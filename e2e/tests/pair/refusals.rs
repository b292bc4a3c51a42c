//! What is refused, and how it looks: a Secret the API server refuses,
//! the manager's type and size policy, a tenant's budget, and content an
//! admission webhook changed on the way.

use std::time::Instant;

use anyhow::{anyhow, ensure};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use syncsecret_api::contract::{FINALIZER, LABEL_ORIGIN_NAME, tenant_namespace};
use syncsecret_api::{SyncSecret, SyncSecretPhase};
use syncsecret_e2e::kube_util::{eventually, has_event};
use syncsecret_e2e::pair::ensure_namespace;

use super::support::{
    create, data_of, delete_all, gone, kubectl_mgmt, management, mgmt_kubeconfig, sync_secret,
    synced_condition, tenant_client, tenant_shows,
};
use super::{Shared, TENANTS, WAIT};

pub(super) async fn a_secret_the_api_server_refuses_is_failed_in_both_clusters(
    s: &Shared,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut obj = sync_secret("registry");
    obj.type_ = Some("kubernetes.io/dockerconfigjson".into());
    obj.string_data = Some(
        [(
            ".dockerconfigjson".to_owned(),
            format!("not json {}", s.value("docker")),
        )]
        .into(),
    );
    create(s, 0, "refused", obj).await?;
    let failed = tenant_shows(s, 0, "refused", "registry", SyncSecretPhase::Failed).await?;
    let took = started.elapsed();
    let c = synced_condition(&failed).ok_or_else(|| anyhow!("no Synced condition"))?;
    println!(
        "    tenant shows Failed after {:.2} s: {}: {}",
        took.as_secs_f64(),
        c.reason,
        c.message
    );
    ensure!(
        c.status == "False" && c.reason == "ApplySecretFailed",
        "{c:?}"
    );
    // The API server's own words, with the offending field.
    ensure!(
        c.message.contains(".dockerconfigjson") && c.message.contains("invalid"),
        "{}",
        c.message
    );
    has_event(
        &tenant_client(s, 0).await,
        "refused",
        "registry",
        "ApplySecretFailed",
    )
    .await?;
    let mgmt = management(s).await;
    let copies: Api<SyncSecret> = Api::namespaced(mgmt.clone(), &tenant_namespace(TENANTS[0]));
    let copy = copies.get(&failed.uid().unwrap()).await?;
    ensure!(copy.status.as_ref().and_then(|st| st.phase) == Some(SyncSecretPhase::Failed));
    let secrets: Api<Secret> = Api::namespaced(mgmt, &tenant_namespace(TENANTS[0]));
    ensure!(
        secrets.get_opt(&copy.uid().unwrap()).await?.is_none(),
        "a refused Secret exists"
    );

    // Fixed in the tenant cluster, it recovers on its own.
    let tenant: Api<SyncSecret> = Api::namespaced(tenant_client(s, 0).await, "refused");
    tenant
        .patch(
            "registry",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {".dockerconfigjson": "{\"auths\":{}}"}})),
        )
        .await?;
    tenant_shows(s, 0, "refused", "registry", SyncSecretPhase::Synced).await?;
    // The way back from Failed is a change the user saw: it gets an event.
    has_event(&tenant_client(s, 0).await, "refused", "registry", "Synced").await?;
    Ok(())
}

pub(super) async fn service_account_tokens_and_oversize_secrets_are_refused(
    s: &Shared,
) -> anyhow::Result<()> {
    // A service-account-token Secret in the management cluster would make its
    // token controller mint a token for the named service account there.
    let mut sa = sync_secret("sa-token");
    sa.type_ = Some("kubernetes.io/service-account-token".into());
    sa.annotations_mut().insert(
        "kubernetes.io/service-account.name".into(),
        "default".into(),
    );
    sa.string_data = Some([("note".to_owned(), s.value("sa"))].into());
    create(s, 0, "policy", sa).await?;
    let refused = tenant_shows(s, 0, "policy", "sa-token", SyncSecretPhase::Failed).await?;
    let c = synced_condition(&refused).ok_or_else(|| anyhow!("no condition"))?;
    println!("    tenant: {}: {}", c.reason, c.message);
    ensure!(
        c.reason == "TypeDenied" && c.message.contains("mint a token"),
        "{c:?}"
    );

    // Over the API server's 1 MiB Secret limit: refused before any write,
    // by the management cluster's admission policy (its per-copy bound is
    // far lower by default); the manager's own check, for a copy that gets
    // in anyway, is in the hostile suite (`data`).
    let mut big = sync_secret("too-big");
    big.data = Some(
        [(
            "big".to_owned(),
            ByteString(vec![7u8; syncsecret_api::policy::MAX_SECRET_BYTES]),
        )]
        .into(),
    );
    create(s, 0, "policy", big).await?;
    let refused_big = tenant_shows(s, 0, "policy", "too-big", SyncSecretPhase::Failed).await?;
    let c = synced_condition(&refused_big).ok_or_else(|| anyhow!("no condition"))?;
    println!("    tenant: {}: {}", c.reason, c.message);
    let bound = syncsecret_api::bounds::DATA_BYTES;
    ensure!(
        c.reason == "ApplyCopyFailed"
            && c.message.contains(&format!(
                "{}, over the limit of {}",
                bound.what, bound.default
            )),
        "{c:?}"
    );

    // Neither Secret exists; no token was minted anywhere in the namespace.
    let mgmt = management(s).await;
    let ns = tenant_namespace(TENANTS[0]);
    let copies: Api<SyncSecret> = Api::namespaced(mgmt.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(mgmt, &ns);
    let copy = copies.get(&refused.uid().unwrap()).await?;
    ensure!(copy.status.as_ref().and_then(|st| st.phase) == Some(SyncSecretPhase::Failed));
    ensure!(
        secrets.get_opt(&copy.uid().unwrap()).await?.is_none(),
        "a refused Secret exists"
    );
    ensure!(
        copies.get_opt(&refused_big.uid().unwrap()).await?.is_none(),
        "the oversized copy was stored"
    );
    let tokens = secrets
        .list(&ListParams::default().fields("type=kubernetes.io/service-account-token"))
        .await?;
    ensure!(
        tokens.items.is_empty(),
        "service-account tokens exist in {ns}"
    );
    // Refused objects are retried forever: they go, so that no other test
    // sees their retries.
    delete_all(s, 0, "policy", &["sa-token", "too-big"]).await
}

pub(super) async fn a_tenant_at_its_budget_gets_over_budget_on_the_next_one_only(
    s: &Shared,
) -> anyhow::Result<()> {
    let mgmt = management(s).await;
    let ns = tenant_namespace(TENANTS[1]);
    let secrets: Api<Secret> = Api::namespaced(mgmt, &ns);
    let have = secrets
        .list(&ListParams::default().labels(LABEL_ORIGIN_NAME))
        .await?
        .items
        .len();
    let budget = format!("--max-secrets-per-tenant={}", have + 1);
    s.pair.lock().await.manager.restart_with(&[&budget]).await?;
    println!("    tenant2 holds {have} Secrets; manager restarted with {budget}");

    // One after the other: created together, either may take the last
    // place (the manager reconciles concurrently), and the other is refused.
    for name in ["fits", "one-too-many"] {
        let mut obj = sync_secret(name);
        obj.string_data = Some([("v".to_owned(), s.value("budget"))].into());
        create(s, 1, "budget", obj).await?;
        if name == "fits" {
            tenant_shows(s, 1, "budget", "fits", SyncSecretPhase::Synced).await?;
        }
    }
    let over = tenant_shows(s, 1, "budget", "one-too-many", SyncSecretPhase::Failed).await?;
    let c = synced_condition(&over).ok_or_else(|| anyhow!("no condition"))?;
    println!("    tenant2: {}: {}", c.reason, c.message);
    ensure!(c.reason == "OverBudget", "{c:?}");
    ensure!(
        secrets
            .list(&ListParams::default().labels(LABEL_ORIGIN_NAME))
            .await?
            .items
            .len()
            == have + 1,
        "the budget was overrun"
    );

    // Without the budget, the refused one syncs: nothing was lost.
    s.pair.lock().await.manager.restart_with(&[]).await?;
    tenant_shows(s, 1, "budget", "one-too-many", SyncSecretPhase::Synced).await?;
    Ok(())
}

pub(super) const TAMPER_POLICY: &str = r#"apiVersion: admissionregistration.k8s.io/v1
kind: MutatingAdmissionPolicy
metadata:
  name: e2e-tamper-secrets
spec:
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE", "UPDATE"]
      resources: ["secrets"]
  matchConditions:
  - name: only-marked
    expression: "has(object.metadata.labels) && 'e2e-tamper' in object.metadata.labels"
  failurePolicy: Fail
  reinvocationPolicy: Never
  mutations:
  - patchType: ApplyConfiguration
    applyConfiguration:
      expression: 'Object{data: {"injected": "YWRkZWQtb24tYWRtaXNzaW9u"}}'
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingAdmissionPolicyBinding
metadata:
  name: e2e-tamper-secrets
spec:
  policyName: e2e-tamper-secrets
"#;

pub(super) async fn content_changed_on_admission_is_caught_and_named(
    s: &Shared,
) -> anyhow::Result<()> {
    let failed = tampered_on_write(s, "admission", "tampered-on-write").await?;
    let c = synced_condition(&failed).ok_or_else(|| anyhow!("no condition"))?;
    println!("    tenant: {}: {}", c.reason, c.message);
    ensure!(
        c.reason == "MutatedOnWrite" && c.message.contains("injected"),
        "{c:?}"
    );
    ensure!(
        !c.message.contains("added-on-admission"),
        "a value reached the message"
    );
    let failures = s
        .pair
        .lock()
        .await
        .manager
        .metric_sum("kubelb_manager_write_verify_failures_total")?;
    ensure!(failures >= 1.0, "write_verify_failures_total is {failures}");
    stop_tampering(s, "admission", "tampered-on-write").await
}

/// Installs `TAMPER_POLICY` in the management cluster and makes tenant 2's
/// SyncSecret `ns/name` with the label it changes: its Secret is changed
/// on admission, which the manager catches. Returns the tenant object once
/// it shows `Failed`.
pub(super) async fn tampered_on_write(
    s: &Shared,
    ns: &str,
    name: &str,
) -> anyhow::Result<SyncSecret> {
    let kubeconfig = mgmt_kubeconfig(s).await;
    kubectl_mgmt(&kubeconfig, &["apply", "-f", "-"], Some(TAMPER_POLICY))?;
    // The policy takes effect once the API server has loaded it: probe.
    let mgmt = management(s).await;
    let secrets: Api<Secret> = Api::namespaced(mgmt.clone(), &tenant_namespace(TENANTS[1]));
    eventually("the mutating admission policy is active", WAIT, || async {
        let probe = Secret {
            metadata: ObjectMeta {
                generate_name: Some("probe-".into()),
                labels: Some([("e2e-tamper".to_owned(), "yes".to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let made = secrets
            .create(&PostParams::default(), &probe)
            .await
            .map_err(|e| e.to_string())?;
        let _ = secrets
            .delete(&made.name_any(), &DeleteParams::default())
            .await;
        data_of(&made)
            .contains_key("injected")
            .then_some(())
            .ok_or_else(|| "not yet".to_owned())
    })
    .await?;
    let mut obj = sync_secret(name);
    obj.labels_mut().insert("e2e-tamper".into(), "yes".into());
    obj.string_data = Some([("token".to_owned(), s.value("admission"))].into());
    create(s, 1, ns, obj).await?;
    tenant_shows(s, 1, ns, name, SyncSecretPhase::Failed).await
}

/// Removes `TAMPER_POLICY` and the object [`tampered_on_write`] made (so
/// that it stops retrying).
pub(super) async fn stop_tampering(s: &Shared, ns: &str, name: &str) -> anyhow::Result<()> {
    let kubeconfig = mgmt_kubeconfig(s).await;
    kubectl_mgmt(&kubeconfig, &["delete", "-f", "-"], Some(TAMPER_POLICY))?;
    let tenant: Api<SyncSecret> = Api::namespaced(tenant_client(s, 1).await, ns);
    tenant.delete(name, &DeleteParams::default()).await?;
    gone(&tenant, name).await?;
    Ok(())
}

/// A copy outside the tenant namespaces (`--tenant-namespace-prefix`) is
/// not synced; born with the manager's finalizer, as the ccm makes every
/// copy, it is still let go when deleted, not left Terminating.
pub(super) async fn a_copy_outside_the_tenant_namespaces_is_skipped_and_let_go(
    s: &Shared,
) -> anyhow::Result<()> {
    let mgmt = management(s).await;
    let ns = "not-a-tenant";
    ensure_namespace(&mgmt, ns).await?;
    let copies: Api<SyncSecret> = Api::namespaced(mgmt.clone(), ns);
    let mut copy = sync_secret("stray");
    copy.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
    copy.metadata.namespace = Some(ns.to_owned());
    copy.metadata.labels = Some([(LABEL_ORIGIN_NAME.to_owned(), "stray".to_owned())].into());
    let copy = copies.create(&PostParams::default(), &copy).await?;
    eventually("the manager skips the stray copy", WAIT, || async {
        let metrics = s.pair.lock().await.manager.metrics();
        let metrics = metrics.map_err(|e| e.to_string())?;
        let skipped: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("kubelb_manager_sync_secret_reconcile_total{"))
            .filter(|l| l.contains(&format!("namespace=\"{ns}\"")))
            .filter(|l| l.contains("result=\"skipped\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if skipped > 0.0 {
            Ok(())
        } else {
            Err("not reconciled yet".to_owned())
        }
    })
    .await?;
    let secrets: Api<Secret> = Api::namespaced(mgmt.clone(), ns);
    let made = secrets.list(&ListParams::default()).await?;
    ensure!(
        made.items
            .iter()
            .all(|s| s.name_any() != copy.uid().unwrap()),
        "a Secret was made outside the tenant namespaces"
    );
    // Live, it keeps its finalizer: only a deleted one is let go.
    let live = copies.get("stray").await?;
    ensure!(
        live.finalizers() == [FINALIZER.to_owned()],
        "{:?}",
        live.finalizers()
    );
    copies.delete("stray", &DeleteParams::default()).await?;
    gone(&copies, "stray").await
}
