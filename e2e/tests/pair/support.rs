//! Helpers the tests share: clients, objects, waits and counters.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::ensure;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use syncsecret_api::{SyncSecret, SyncSecretPhase};
use syncsecret_e2e::kube_util::eventually;
use syncsecret_e2e::pair::ensure_namespace;

use super::{Shared, WAIT};

pub(super) fn bytes(s: &str) -> ByteString {
    ByteString(s.as_bytes().to_vec())
}

pub(super) async fn tenant_client(s: &Shared, i: usize) -> Client {
    s.pair.lock().await.tenants[i].clone()
}

pub(super) async fn management(s: &Shared) -> Client {
    s.pair.lock().await.management.clone()
}

pub(super) fn sync_secret(name: &str) -> SyncSecret {
    SyncSecret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Creates a SyncSecret in a fresh namespace of tenant `i`.
pub(super) async fn create(
    s: &Shared,
    i: usize,
    ns: &str,
    obj: SyncSecret,
) -> anyhow::Result<SyncSecret> {
    let client = tenant_client(s, i).await;
    ensure_namespace(&client, ns).await?;
    let api: Api<SyncSecret> = Api::namespaced(client, ns);
    Ok(api.create(&PostParams::default(), &obj).await?)
}

/// See `Pair::synced`.
pub(super) async fn synced(
    s: &Shared,
    i: usize,
    ns: &str,
    name: &str,
    check: impl Fn(&Secret) -> bool,
) -> anyhow::Result<(SyncSecret, Secret)> {
    Ok(s.pair.lock().await.synced(i, ns, name, check).await?)
}

/// See `Pair::tenant_shows`.
pub(super) async fn tenant_shows(
    s: &Shared,
    i: usize,
    ns: &str,
    name: &str,
    phase: SyncSecretPhase,
) -> anyhow::Result<SyncSecret> {
    Ok(s.pair.lock().await.tenant_shows(i, ns, name, phase).await?)
}

pub(super) fn synced_condition(
    o: &SyncSecret,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    o.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Synced")
        .cloned()
}

/// Every event note and reason, and every SyncSecret status message, in a
/// cluster: text a user reads, which must not carry values either.
pub(super) async fn user_visible_text(client: &Client) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for e in Api::<Event>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
    {
        out.extend(e.note);
        out.extend(e.reason);
    }
    for ss in Api::<SyncSecret>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
    {
        for c in ss.status.and_then(|s| s.conditions).unwrap_or_default() {
            out.push(c.message);
        }
    }
    Ok(out)
}

pub(super) fn data_of(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

/// Sum of a metric over every controller.
pub(super) async fn total(s: &Shared, metric_suffix: &str) -> anyhow::Result<f64> {
    let pair = s.pair.lock().await;
    let mut sum = 0.0;
    for (prefix, c) in std::iter::once(("kubelb_manager", &pair.manager))
        .chain(pair.ccms.iter().map(|c| ("kubelb_ccm", c)))
    {
        sum += c.metric_sum(&format!("{prefix}_{metric_suffix}"))?;
    }
    Ok(sum)
}

pub(super) async fn reconciles(s: &Shared) -> anyhow::Result<(f64, f64)> {
    let pair = s.pair.lock().await;
    let m = pair
        .manager
        .metric_sum("kubelb_manager_sync_secret_reconcile_total")?;
    let mut c = 0.0;
    for ccm in &pair.ccms {
        c += ccm.metric_sum("kubelb_ccm_sync_secret_reconcile_total")?;
    }
    Ok((c, m))
}

/// Waits until `name` is gone from `api`.
pub(super) async fn gone<K>(api: &Api<K>, name: &str) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(&format!("{name} gone"), WAIT, || async {
        match api.get_opt(name).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err("still there".to_owned()),
        }
    })
    .await?;
    Ok(())
}

/// Waits until the reconcile counters stop moving (several events per
/// object may reach the queue at start: its own list, its copy's list).
pub(super) async fn settled(s: &Shared) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    let mut last = reconciles(s).await?;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = reconciles(s).await?;
        if now == last {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "reconciles never settled: {now:?}"
        );
        last = now;
    }
}

// ------------------------------------------------------------------ tests

/// A self-signed certificate (PEM) valid from `from_days` to `to_days`
/// relative to today.
pub(super) fn certificate(from_days: i64, to_days: i64) -> String {
    use k8s_openapi::jiff::{Timestamp, ToSpan, tz::TimeZone};
    let day = |d: i64| {
        let date = Timestamp::now()
            .to_zoned(TimeZone::UTC)
            .date()
            .checked_add(d.days())
            .unwrap();
        rcgen::date_time_ymd(i32::from(date.year()), date.month() as u8, date.day() as u8)
    };
    let mut params = rcgen::CertificateParams::new(vec!["shop.example".to_owned()]).unwrap();
    params.not_before = day(from_days);
    params.not_after = day(to_days);
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().pem()
}

pub(super) fn kubectl_mgmt(
    kubeconfig: &std::path::Path,
    args: &[&str],
    stdin: Option<&str>,
) -> anyhow::Result<()> {
    syncsecret_e2e::helm::kubectl(kubeconfig, args, stdin)?;
    Ok(())
}

/// A ValidatingAdmissionPolicy of the management cluster named `name`,
/// with its binding, that refuses `operations` on `resource` (of
/// SyncSecrets) for objects labelled `label: "yes"`, saying `message`.
/// Deletes the ValidatingAdmissionPolicy `name` and its binding (of
/// [`refusing_policy`]), if there.
pub(super) fn remove_policy(kubeconfig: &std::path::Path, name: &str) -> anyhow::Result<()> {
    kubectl_mgmt(
        kubeconfig,
        &[
            "delete",
            "--ignore-not-found",
            "validatingadmissionpolicybinding,validatingadmissionpolicy",
            name,
        ],
        None,
    )
}

pub(super) fn refusing_policy(
    name: &str,
    resource: &str,
    operations: &[&str],
    label: &str,
    message: &str,
) -> String {
    let operations = operations
        .iter()
        .map(|o| format!("\"{o}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: {name}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: ["kubelb.k8c.io"]
      apiVersions: ["*"]
      operations: [{operations}]
      resources: ["{resource}"]
    objectSelector:
      matchLabels:
        {label}: "yes"
  validations:
  - expression: "false"
    message: "{message}"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: {name}
spec:
  policyName: {name}
  validationActions: [Deny]
"#
    )
}

/// The management cluster's admin kubeconfig.
pub(super) async fn mgmt_kubeconfig(s: &Shared) -> std::path::PathBuf {
    s.pair
        .lock()
        .await
        .plane
        .management()
        .kubeconfig()
        .to_owned()
}

/// Deletes tenant `i`'s SyncSecrets `ns/names` and waits until they are
/// gone: what a test leaves retrying or expiring would disturb another.
pub(super) async fn delete_all(
    s: &Shared,
    i: usize,
    ns: &str,
    names: &[&str],
) -> anyhow::Result<()> {
    let api: Api<SyncSecret> = Api::namespaced(tenant_client(s, i).await, ns);
    for name in names {
        api.delete(name, &DeleteParams::default()).await?;
    }
    for name in names {
        gone(&api, name).await?;
    }
    Ok(())
}

/// Reconciles counted by tenant `i`'s ccm for objects in namespace `ns`.
pub(super) async fn ccm_reconciles_in(s: &Shared, i: usize, ns: &str) -> anyhow::Result<f64> {
    let metrics = s.pair.lock().await.ccms[i].metrics()?;
    let label = format!("namespace=\"{ns}\"");
    Ok(metrics
        .lines()
        .filter(|l| l.starts_with("kubelb_ccm_sync_secret_reconcile_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}
