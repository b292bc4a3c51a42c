//! The controller pair end to end: one management and two tenant clusters on
//! the real control plane; `syncsecret-manager` and one `syncsecret-ccm` per
//! tenant run as processes with their own kubeconfigs, the ccm's management
//! identity limited by RBAC to its own tenant namespace.
//!
//! The tests share one environment and run in order: the restart test and
//! the log scan come last, over everything the others did.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step fails the test"
)]

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use libtest_mimic::{Arguments, Trial};
use serde_json::json;
use syncsecret_api::contract::{
    FINALIZER, LABEL_MANAGED_BY, LABEL_ORIGIN_NAME, LABEL_ORIGIN_NAMESPACE, LABEL_ORIGIN_NS,
    MANAGED_BY_KUBELB, tenant_namespace,
};
use syncsecret_api::{SyncSecret, SyncSecretPhase};
use syncsecret_e2e::kube_util::{eventually, has_event};
use syncsecret_e2e::pair::{
    ControllerProcess, Pair, ensure_namespace, sum_samples, writes_by_resource,
};
use syncsecret_e2e::prometheus::{Prometheus, Target};
use syncsecret_runtime::generate::rbac;
use tokio::runtime::Runtime;

const TENANTS: [&str; 2] = ["tenant1", "tenant2"];
const WAIT: Duration = Duration::from_secs(60);

/// The environment all tests share, started by the first test that runs.
struct Shared {
    pair: tokio::sync::Mutex<Pair>,
    /// Scrapes every controller process from the start, alert rules loaded.
    prometheus: Prometheus,
    /// Every secret value a test wrote; none may appear in any log.
    values: Mutex<Vec<String>>,
}

impl Shared {
    /// A value no log line could contain by accident, remembered for the scan.
    fn value(&self, what: &str) -> String {
        let v = format!("{what}-{}", uuid::Uuid::new_v4().simple());
        self.values.lock().unwrap().push(v.clone());
        v
    }
}

type TestFn = for<'a> fn(&'a Shared) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>;

macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        vec![$((stringify!($name), (|s| Box::pin($name(s))) as TestFn)),*]
    };
}

fn main() -> std::process::ExitCode {
    let mut args = Arguments::from_args();
    // In order, one at a time: they share the clusters and the controllers.
    args.test_threads = Some(1);
    let rt = Arc::new(Runtime::new().expect("tokio runtime"));
    let env: Arc<OnceLock<Result<Shared, String>>> = Arc::new(OnceLock::new());
    let tests: Vec<(&str, TestFn)> = tests![
        opaque_syncsecret_becomes_an_owned_secret_and_shows_synced,
        updates_follow_and_then_cost_no_writes,
        deleting_the_tenant_object_removes_copy_and_secret_first,
        tls_type_and_binary_bytes_are_preserved,
        a_secret_the_api_server_refuses_is_failed_in_both_clusters,
        tampering_in_the_management_cluster_is_repaired,
        service_account_tokens_and_oversize_secrets_are_refused,
        orphans_left_while_a_controller_was_down_are_swept,
        same_name_in_two_tenants_stays_isolated,
        a_tenant_at_its_budget_gets_over_budget_on_the_next_one_only,
        certificates_show_their_expiry_in_conditions_and_gauges,
        immutable_syncs_immutable_and_a_type_change_replaces_the_secret,
        content_changed_on_admission_is_caught_and_named,
        prometheus_has_data_for_every_dashboard_query_and_alert,
        a_dry_run_writes_nothing_and_reports_each_pending_write,
        objects_kubelb_made_are_adopted_and_made_data_only,
        secret_synchronizer_takes_labelled_secrets_only,
        restarting_both_controllers_costs_zero_writes,
        no_secret_value_reaches_any_log,
    ];
    let trials = tests
        .into_iter()
        .map(|(name, f)| {
            let rt = rt.clone();
            let env = env.clone();
            Trial::test(name, move || {
                let shared = env
                    .get_or_init(|| {
                        rt.block_on(async {
                            let mut pair =
                                Pair::start(&TENANTS).await.map_err(|e| e.to_string())?;
                            pair.record_written();
                            let prometheus = start_prometheus(&pair).map_err(|e| e.to_string())?;
                            Ok(Shared {
                                pair: tokio::sync::Mutex::new(pair),
                                prometheus,
                                values: Mutex::new(Vec::new()),
                            })
                        })
                    })
                    .as_ref()
                    .map_err(|e| format!("the environment did not start: {e}"))?;
                rt.block_on(async {
                    let started = Instant::now();
                    match f(shared).await {
                        Ok(()) => {
                            println!("    {name}: {:.1} s", started.elapsed().as_secs_f64());
                            Ok(())
                        }
                        Err(e) => {
                            let dump = shared.pair.lock().await.dump();
                            Err(format!("{e:#}\n--- state at failure ---\n{dump}").into())
                        }
                    }
                })
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    // Stop the controllers and clusters before exiting.
    if let Some(env) = Arc::into_inner(env) {
        drop(env.into_inner());
    }
    conclusion.exit_code()
}

// ---------------------------------------------------------------- helpers

fn bytes(s: &str) -> ByteString {
    ByteString(s.as_bytes().to_vec())
}

async fn tenant_client(s: &Shared, i: usize) -> Client {
    s.pair.lock().await.tenants[i].clone()
}

async fn management(s: &Shared) -> Client {
    s.pair.lock().await.management.clone()
}

fn sync_secret(name: &str) -> SyncSecret {
    SyncSecret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Creates a SyncSecret in a fresh namespace of tenant `i`.
async fn create(s: &Shared, i: usize, ns: &str, obj: SyncSecret) -> anyhow::Result<SyncSecret> {
    let client = tenant_client(s, i).await;
    ensure_namespace(&client, ns).await?;
    let api: Api<SyncSecret> = Api::namespaced(client, ns);
    Ok(api.create(&PostParams::default(), &obj).await?)
}

/// See `Pair::synced`.
async fn synced(
    s: &Shared,
    i: usize,
    ns: &str,
    name: &str,
    check: impl Fn(&Secret) -> bool,
) -> anyhow::Result<(SyncSecret, Secret)> {
    Ok(s.pair.lock().await.synced(i, ns, name, check).await?)
}

/// See `Pair::tenant_shows`.
async fn tenant_shows(
    s: &Shared,
    i: usize,
    ns: &str,
    name: &str,
    phase: SyncSecretPhase,
) -> anyhow::Result<SyncSecret> {
    Ok(s.pair.lock().await.tenant_shows(i, ns, name, phase).await?)
}

fn synced_condition(
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
async fn user_visible_text(client: &Client) -> anyhow::Result<Vec<String>> {
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

fn data_of(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

/// Sum of a metric over every controller.
async fn total(s: &Shared, metric_suffix: &str) -> anyhow::Result<f64> {
    let pair = s.pair.lock().await;
    let mut sum = 0.0;
    for (prefix, c) in std::iter::once(("kubelb_manager", &pair.manager))
        .chain(pair.ccms.iter().map(|c| ("kubelb_ccm", c)))
    {
        sum += c.metric_sum(&format!("{prefix}_{metric_suffix}"))?;
    }
    Ok(sum)
}

async fn reconciles(s: &Shared) -> anyhow::Result<(f64, f64)> {
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
async fn gone<K>(api: &Api<K>, name: &str) -> anyhow::Result<()>
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
async fn settled(s: &Shared) -> anyhow::Result<()> {
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

async fn opaque_syncsecret_becomes_an_owned_secret_and_shows_synced(
    s: &Shared,
) -> anyhow::Result<()> {
    let (user, password) = (s.value("user"), s.value("password"));
    let mut obj = sync_secret("db");
    obj.metadata.labels = Some([("app".to_owned(), "shop".to_owned())].into());
    obj.type_ = Some("Opaque".into());
    obj.data = Some(
        [
            ("username".to_owned(), bytes("from-data")),
            ("host".to_owned(), bytes("db.local")),
        ]
        .into(),
    );
    obj.string_data = Some(
        [
            ("username".to_owned(), user.clone()),
            ("password".to_owned(), password.clone()),
        ]
        .into(),
    );
    let created = create(s, 0, "opaque", obj).await?;

    let (copy, secret) = synced(s, 0, "opaque", "db", |sec| {
        data_of(sec).get("password").map(Vec::as_slice) == Some(password.as_bytes())
    })
    .await?;
    // The copy: named by the tenant UID, origin labels (both spellings).
    ensure!(
        copy.name_any() == created.uid().unwrap(),
        "copy not named by the tenant UID"
    );
    let labels = copy.labels();
    ensure!(labels.get(LABEL_ORIGIN_NAME).map(String::as_str) == Some("db"));
    ensure!(labels.get(LABEL_ORIGIN_NAMESPACE).map(String::as_str) == Some("opaque"));
    ensure!(labels.get(LABEL_ORIGIN_NS).map(String::as_str) == Some("opaque"));
    ensure!(
        copy.finalizers().iter().any(|f| f == FINALIZER),
        "copy lacks the manager's finalizer"
    );

    // The Secret: named by the copy UID, merged data (stringData wins), type,
    // labels, controller ownerReference to the copy.
    ensure!(
        secret.name_any() == copy.uid().unwrap(),
        "Secret not named by the copy UID"
    );
    let data = data_of(&secret);
    ensure!(
        data["username"] == user.as_bytes(),
        "stringData did not win over data"
    );
    ensure!(data["host"] == b"db.local");
    ensure!(data.len() == 3, "unexpected keys {:?}", data.keys());
    ensure!(secret.type_.as_deref() == Some("Opaque"));
    ensure!(secret.labels().get("app").map(String::as_str) == Some("shop"));
    ensure!(secret.labels().get(LABEL_ORIGIN_NAME).map(String::as_str) == Some("db"));
    let owner = &secret.metadata.owner_references.clone().unwrap_or_default()[0];
    ensure!(owner.kind == "SyncSecret" && owner.api_version == "kubelb.k8c.io/v1alpha1");
    ensure!(owner.uid == copy.uid().unwrap() && owner.name == copy.name_any());
    ensure!(owner.controller == Some(true) && owner.block_owner_deletion == Some(true));

    // Status on the copy, and the tenant object holds the ccm's finalizer.
    let status = copy.status.clone().unwrap();
    let cond = status.conditions.unwrap_or_default();
    ensure!(
        cond.iter()
            .any(|c| c.type_ == "Synced" && c.status == "True"),
        "no Synced=True condition: {cond:?}"
    );
    let tenant: Api<SyncSecret> = Api::namespaced(tenant_client(s, 0).await, "opaque");
    ensure!(
        tenant
            .get("db")
            .await?
            .finalizers()
            .iter()
            .any(|f| f == FINALIZER)
    );

    // Status comes home: the tenant object shows the manager's verdict.
    let home = tenant_shows(s, 0, "opaque", "db", SyncSecretPhase::Synced).await?;
    let c = synced_condition(&home).ok_or_else(|| anyhow!("no Synced condition in the tenant"))?;
    ensure!(c.status == "True" && c.reason == "SecretSynced", "{c:?}");
    // The first sync is told by one event, `Synced`, on the tenant object.
    has_event(&tenant_client(s, 0).await, "opaque", "db", "Synced").await?;

    // What a person sees with kubectl on the management cluster.
    let text = syncsecret_e2e::helm::kubectl(
        &mgmt_kubeconfig(s).await,
        &["get", "syncsecrets", "-A"],
        None,
    )?;
    println!("    $ kubectl get syncsecrets -A   # management cluster\n{text}");
    let row = text
        .lines()
        .find(|l| l.contains(&copy.name_any()))
        .ok_or_else(|| anyhow!("copy not listed by kubectl"))?;
    ensure!(
        row.split_whitespace().any(|w| w == "Synced"),
        "kubectl row without Phase Synced: {row}"
    );
    Ok(())
}

async fn updates_follow_and_then_cost_no_writes(s: &Shared) -> anyhow::Result<()> {
    let (v1, v2) = (s.value("token-v1"), s.value("token-v2"));
    let mut obj = sync_secret("api-token");
    obj.string_data = Some([("token".to_owned(), v1.clone())].into());
    create(s, 0, "update", obj).await?;
    synced(s, 0, "update", "api-token", |sec| {
        data_of(sec).get("token").map(Vec::as_slice) == Some(v1.as_bytes())
    })
    .await?;

    let tenant: Api<SyncSecret> = Api::namespaced(tenant_client(s, 0).await, "update");
    tenant
        .patch(
            "api-token",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"token": v2}})),
        )
        .await?;
    let (copy, secret) = synced(s, 0, "update", "api-token", |sec| {
        data_of(sec).get("token").map(Vec::as_slice) == Some(v2.as_bytes())
    })
    .await?;
    ensure!(copy.status.as_ref().unwrap().observed_generation == Some(2));
    let home = tenant_shows(s, 0, "update", "api-token", SyncSecretPhase::Synced).await?;
    ensure!(home.status.and_then(|st| st.observed_generation) == Some(2));
    // An update changes no phase: events say it, on both sides.
    has_event(
        &tenant_client(s, 0).await,
        "update",
        "api-token",
        "CopyUpdated",
    )
    .await?;
    has_event(
        &management(s).await,
        &tenant_namespace(TENANTS[0]),
        &copy.name_any(),
        "SecretUpdated",
    )
    .await?;

    // Now nothing changes: events that make both controllers reconcile must
    // not make them write.
    let writes_before = total(s, "writes_total").await?;
    let (ccm_before, mgr_before) = reconciles(s).await?;
    let mgmt = management(s).await;
    let secrets: Api<Secret> = Api::namespaced(mgmt, &tenant_namespace(TENANTS[0]));
    secrets
        .patch(
            &secret.name_any(),
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"labels": {"team": "ops"}}})),
        )
        .await?;
    tenant
        .patch(
            "api-token",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": [FINALIZER, "example.com/hold"]}})),
        )
        .await?;
    tenant
        .patch(
            "api-token",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": [FINALIZER]}})),
        )
        .await?;
    eventually(
        "both controllers reconciled the no-op changes",
        WAIT,
        || async {
            let (c, m) = reconciles(s).await.map_err(|e| e.to_string())?;
            // Events that arrive together may be reconciled once.
            if c > ccm_before && m > mgr_before {
                Ok(())
            } else {
                Err(format!(
                    "ccm {c} (was {ccm_before}), manager {m} (was {mgr_before})"
                ))
            }
        },
    )
    .await?;
    let writes_after = total(s, "writes_total").await?;
    println!("    writes before the no-op changes: {writes_before}, after: {writes_after}");
    ensure!(
        writes_after == writes_before,
        "no-op reconciles wrote {} times",
        writes_after - writes_before
    );
    let live = secrets.get(&secret.name_any()).await?;
    ensure!(
        live.labels().get("team").map(String::as_str) == Some("ops"),
        "a foreign label was removed"
    );
    Ok(())
}

async fn deleting_the_tenant_object_removes_copy_and_secret_first(
    s: &Shared,
) -> anyhow::Result<()> {
    let mut obj = sync_secret("short-lived");
    obj.string_data = Some([("k".to_owned(), s.value("short"))].into());
    let created = create(s, 0, "delete", obj).await?;
    let (copy, secret) = synced(s, 0, "delete", "short-lived", |_| true).await?;

    let tenant: Api<SyncSecret> = Api::namespaced(tenant_client(s, 0).await, "delete");
    tenant
        .delete("short-lived", &DeleteParams::default())
        .await?;
    eventually("tenant object gone", WAIT, || async {
        match tenant
            .get_opt("short-lived")
            .await
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(o) if o.uid() != created.uid() => Ok(()),
            Some(_) => Err("still there".to_owned()),
        }
    })
    .await?;
    // The finalizer was released only after the copy was gone, and the
    // copy's only after its Secret was gone: both must be gone already.
    let mgmt = management(s).await;
    let ns = tenant_namespace(TENANTS[0]);
    let copies: Api<SyncSecret> = Api::namespaced(mgmt.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(mgmt, &ns);
    ensure!(
        copies.get_opt(&copy.name_any()).await?.is_none(),
        "copy outlived the tenant object"
    );
    ensure!(
        secrets.get_opt(&secret.name_any()).await?.is_none(),
        "Secret outlived the tenant object"
    );
    let leftovers = copies
        .list(&ListParams::default().labels(&format!("{LABEL_ORIGIN_NAMESPACE}=delete")))
        .await?;
    ensure!(leftovers.items.is_empty(), "copies left behind");
    // Waiting for the copy to go is a normal step, not an error: it must
    // not feed the SyncSecretReconcileErrors alert.
    let text = s.pair.lock().await.ccms[0].metrics()?;
    let count = |result: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("kubelb_ccm_sync_secret_reconcile_total{"))
            .filter(|l| {
                l.contains("namespace=\"delete\"") && l.contains(&format!("result=\"{result}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    ensure!(
        count("waiting") >= 1.0,
        "the wait for the copy was not counted as waiting"
    );
    ensure!(
        count("error") == 0.0,
        "a normal deletion was counted as an error"
    );
    Ok(())
}

async fn tls_type_and_binary_bytes_are_preserved(s: &Shared) -> anyhow::Result<()> {
    let marker = s.value("tls");
    let mut crt = b"-----BEGIN CERTIFICATE-----\n".to_vec();
    crt.extend_from_slice(marker.as_bytes());
    let key: Vec<u8> = (0u8..=255).chain([0, 0, 255, 254]).collect();
    let mut obj = sync_secret("ingress-tls");
    obj.type_ = Some("kubernetes.io/tls".into());
    obj.data = Some(
        [
            ("tls.crt".to_owned(), ByteString(crt.clone())),
            ("tls.key".to_owned(), ByteString(key.clone())),
        ]
        .into(),
    );
    create(s, 0, "tls", obj).await?;
    let (_, secret) = synced(s, 0, "tls", "ingress-tls", |_| true).await?;
    ensure!(secret.type_.as_deref() == Some("kubernetes.io/tls"));
    let data = data_of(&secret);
    ensure!(data["tls.crt"] == crt, "tls.crt bytes changed");
    ensure!(data["tls.key"] == key, "tls.key bytes changed");
    Ok(())
}

async fn a_secret_the_api_server_refuses_is_failed_in_both_clusters(
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
    Ok(())
}

async fn tampering_in_the_management_cluster_is_repaired(s: &Shared) -> anyhow::Result<()> {
    let value = s.value("drift");
    let mut obj = sync_secret("guarded");
    obj.labels_mut().insert("app".into(), "guarded".into());
    obj.string_data = Some([("token".to_owned(), value.clone())].into());
    create(s, 0, "drift", obj).await?;
    let holds_value =
        |sec: &Secret| data_of(sec).get("token").map(Vec::as_slice) == Some(value.as_bytes());
    let (copy, secret) = synced(s, 0, "drift", "guarded", holds_value).await?;
    let mgmt = management(s).await;
    let ns = tenant_namespace(TENANTS[0]);
    let copies: Api<SyncSecret> = Api::namespaced(mgmt.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(mgmt, &ns);
    let hand = PatchParams::default();
    let mut report = Vec::new();

    // 1. Someone edits the copy's payload and drops a label: the ccm restores it.
    let t = Instant::now();
    copies
        .patch(
            &copy.name_any(),
            &hand,
            &Patch::Merge(
                json!({"metadata": {"labels": {"app": null}}, "stringData": {"token": "tampered"}}),
            ),
        )
        .await?;
    eventually("copy restored", WAIT, || async {
        let c = copies
            .get(&copy.name_any())
            .await
            .map_err(|e| e.to_string())?;
        // A copy carries data only: the tampered stringData is gone.
        let ok = c.string_data.is_none()
            && c.data
                .as_ref()
                .and_then(|d| d.get("token"))
                .map(|v| v.0.as_slice())
                == Some(value.as_bytes())
            && c.labels().get("app").map(String::as_str) == Some("guarded");
        ok.then_some(()).ok_or_else(|| "still tampered".to_owned())
    })
    .await?;
    synced(s, 0, "drift", "guarded", holds_value).await?;
    report.push(("copy edited", t.elapsed()));

    // 2. Someone deletes the copy: the ccm makes it again (the manager lets
    // the old one go with its Secret first), and a new Secret follows.
    let t = Instant::now();
    copies
        .delete(&copy.name_any(), &DeleteParams::default())
        .await?;
    eventually("copy recreated", WAIT, || async {
        let c = copies
            .get_opt(&copy.name_any())
            .await
            .map_err(|e| e.to_string())?;
        match c {
            Some(c) if c.uid() != copy.uid() && c.metadata.deletion_timestamp.is_none() => Ok(()),
            _ => Err("not recreated yet".to_owned()),
        }
    })
    .await?;
    let (copy, secret2) = synced(s, 0, "drift", "guarded", holds_value).await?;
    ensure!(
        secrets.get_opt(&secret.name_any()).await?.is_none(),
        "the old copy's Secret was left behind"
    );
    report.push(("copy deleted", t.elapsed()));

    // 3. Someone edits the Secret's data and removes our label: the manager
    // restores them; a label of their own stays.
    let t = Instant::now();
    secrets
        .patch(
            &secret2.name_any(),
            &hand,
            &Patch::Merge(json!({
                "metadata": {"labels": {LABEL_ORIGIN_NAME: null, "someone": "else"}},
                "stringData": {"token": "tampered", "extra": "added"},
            })),
        )
        .await?;
    let restored = eventually("Secret restored", WAIT, || async {
        let sec = secrets
            .get(&secret2.name_any())
            .await
            .map_err(|e| e.to_string())?;
        let d = data_of(&sec);
        let ok = d.get("token").map(Vec::as_slice) == Some(value.as_bytes())
            && sec.labels().get(LABEL_ORIGIN_NAME).map(String::as_str) == Some("guarded");
        ok.then_some(sec).ok_or_else(|| "still tampered".to_owned())
    })
    .await?;
    report.push(("Secret edited", t.elapsed()));
    ensure!(
        restored.labels().get("someone").map(String::as_str) == Some("else"),
        "a foreign label was removed"
    );

    // 4. Someone deletes the Secret: the manager makes it again.
    let t = Instant::now();
    secrets
        .delete(&secret2.name_any(), &DeleteParams::default())
        .await?;
    synced(s, 0, "drift", "guarded", holds_value).await?;
    ensure!(copy.uid().is_some());
    report.push(("Secret deleted", t.elapsed()));

    for (what, took) in &report {
        println!("    repaired after {what}: {:.2} s", took.as_secs_f64());
        ensure!(
            *took < Duration::from_secs(10),
            "{what}: repair took {took:?} (goal: under 10 s)"
        );
    }
    Ok(())
}

async fn service_account_tokens_and_oversize_secrets_are_refused(s: &Shared) -> anyhow::Result<()> {
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

    // Over the API server's 1 MiB Secret limit: refused before any write.
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
    ensure!(c.reason == "TooLarge", "{c:?}");

    // Neither Secret exists; no token was minted anywhere in the namespace.
    let mgmt = management(s).await;
    let ns = tenant_namespace(TENANTS[0]);
    let copies: Api<SyncSecret> = Api::namespaced(mgmt.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(mgmt, &ns);
    for o in [&refused, &refused_big] {
        let copy = copies.get(&o.uid().unwrap()).await?;
        ensure!(copy.status.as_ref().and_then(|st| st.phase) == Some(SyncSecretPhase::Failed));
        ensure!(
            secrets.get_opt(&copy.uid().unwrap()).await?.is_none(),
            "a refused Secret exists"
        );
    }
    let tokens = secrets
        .list(&ListParams::default().fields("type=kubernetes.io/service-account-token"))
        .await?;
    ensure!(
        tokens.items.is_empty(),
        "service-account tokens exist in {ns}"
    );
    Ok(())
}

async fn a_tenant_at_its_budget_gets_over_budget_on_the_next_one_only(
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

async fn orphans_left_while_a_controller_was_down_are_swept(s: &Shared) -> anyhow::Result<()> {
    let mgmt = management(s).await;
    let ns = tenant_namespace(TENANTS[0]);
    let copies: Api<SyncSecret> = Api::namespaced(mgmt.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(mgmt.clone(), &ns);
    // Unrelated objects in the same namespace, without our labels.
    let mut unrelated = sync_secret("unrelated-copy");
    unrelated.string_data = Some([("k".to_owned(), "v".to_owned())].into());
    copies.create(&PostParams::default(), &unrelated).await?;
    let foreign = Secret {
        metadata: ObjectMeta {
            name: Some("unrelated-secret".into()),
            ..Default::default()
        },
        string_data: Some([("k".to_owned(), "v".to_owned())].into()),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &foreign).await?;

    let tenant: Api<SyncSecret> = Api::namespaced(tenant_client(s, 0).await, "orphans");
    for name in ["left-by-ccm", "left-by-manager"] {
        let mut obj = sync_secret(name);
        obj.string_data = Some([("k".to_owned(), s.value("orphan"))].into());
        create(s, 0, "orphans", obj).await?;
    }
    let (copy1, secret1) = synced(s, 0, "orphans", "left-by-ccm", |_| true).await?;
    let (copy2, secret2) = synced(s, 0, "orphans", "left-by-manager", |_| true).await?;
    let strip = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    let pp = PatchParams::default();

    // 1. The ccm is down; someone strips the tenant finalizer and deletes the
    // object. Back up, the ccm's sweep deletes the copy, the manager its Secret.
    s.pair.lock().await.ccms[0].stop()?;
    tenant.patch("left-by-ccm", &pp, &strip).await?;
    tenant
        .delete("left-by-ccm", &DeleteParams::default())
        .await?;
    let t = Instant::now();
    s.pair.lock().await.ccms[0].start().await?;
    eventually("orphaned copy and its Secret gone", WAIT, || async {
        let c = copies
            .get_opt(&copy1.name_any())
            .await
            .map_err(|e| e.to_string())?;
        let sec = secrets
            .get_opt(&secret1.name_any())
            .await
            .map_err(|e| e.to_string())?;
        (c.is_none() && sec.is_none())
            .then_some(())
            .ok_or_else(|| "still there".to_owned())
    })
    .await?;
    println!(
        "    orphaned copy swept {:.2} s after the ccm started",
        t.elapsed().as_secs_f64()
    );
    // Counted (before the ccm restarts below and its counters start over).
    let ccm_swept = s.pair.lock().await.ccms[0].metric_sum("kubelb_ccm_orphans_deleted_total")?;

    // 2. The manager is down; someone removes the Secret's ownerReference (so
    // the garbage collector will not take it) and force-deletes the copy.
    // Back up, the manager's sweep deletes the Secret.
    secrets
        .patch(
            &secret2.name_any(),
            &pp,
            &Patch::Merge(json!({"metadata": {"ownerReferences": null}})),
        )
        .await?;
    s.pair.lock().await.manager.stop()?;
    s.pair.lock().await.ccms[0].stop()?;
    tenant.patch("left-by-manager", &pp, &strip).await?;
    tenant
        .delete("left-by-manager", &DeleteParams::default())
        .await?;
    copies.patch(&copy2.name_any(), &pp, &strip).await?;
    copies
        .delete(&copy2.name_any(), &DeleteParams::default())
        .await?;
    let t = Instant::now();
    s.pair.lock().await.manager.start().await?;
    s.pair.lock().await.ccms[0].start().await?;
    eventually("orphaned Secret gone", WAIT, || async {
        let sec = secrets
            .get_opt(&secret2.name_any())
            .await
            .map_err(|e| e.to_string())?;
        sec.is_none()
            .then_some(())
            .ok_or_else(|| "still there".to_owned())
    })
    .await?;
    println!(
        "    orphaned Secret swept {:.2} s after the manager started",
        t.elapsed().as_secs_f64()
    );

    // Counted, and nothing of anyone else's touched.
    let mgr_swept = s
        .pair
        .lock()
        .await
        .manager
        .metric_sum("kubelb_manager_orphans_deleted_total")?;
    ensure!(
        ccm_swept >= 1.0 && mgr_swept >= 1.0,
        "orphans counted: ccm {ccm_swept}, manager {mgr_swept}"
    );
    ensure!(
        copies.get_opt("unrelated-copy").await?.is_some(),
        "an unrelated copy was swept"
    );
    ensure!(
        secrets.get_opt("unrelated-secret").await?.is_some(),
        "an unrelated Secret was swept"
    );
    Ok(())
}

/// A self-signed certificate (PEM) valid from `from_days` to `to_days`
/// relative to today.
fn certificate(from_days: i64, to_days: i64) -> String {
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

async fn certificates_show_their_expiry_in_conditions_and_gauges(s: &Shared) -> anyhow::Result<()> {
    let cases = [
        ("valid", certificate(-1, 365), None),
        (
            "expiring",
            certificate(-10, 1),
            Some(("CertificateExpiring", "True")),
        ),
        (
            "expired",
            certificate(-10, -2),
            Some(("CertificateExpired", "True")),
        ),
        (
            "malformed",
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
                .to_owned(),
            Some(("CertificateExpired", "Unknown")),
        ),
    ];
    for (name, pem, _) in &cases {
        let mut obj = sync_secret(name);
        obj.type_ = Some("kubernetes.io/tls".into());
        obj.string_data = Some(
            [
                ("tls.crt".to_owned(), pem.clone()),
                ("tls.key".to_owned(), s.value("key")),
            ]
            .into(),
        );
        create(s, 1, "certs", obj).await?;
    }
    for (name, pem, expected) in &cases {
        // Synced whatever the certificate says: it is the tenant's data.
        let (copy, secret) = synced(s, 1, "certs", name, |_| true).await?;
        ensure!(
            data_of(&secret)["tls.crt"] == pem.as_bytes(),
            "{name}: content changed"
        );
        let conditions = copy.status.and_then(|st| st.conditions).unwrap_or_default();
        let cert: Vec<_> = conditions
            .iter()
            .filter(|c| c.type_.starts_with("Certificate"))
            .collect();
        match expected {
            None => ensure!(cert.is_empty(), "{name}: unexpected {cert:?}"),
            Some((type_, status)) => {
                let c = cert
                    .iter()
                    .find(|c| c.type_ == *type_)
                    .ok_or_else(|| anyhow!("{name}: no {type_} in {conditions:?}"))?;
                ensure!(c.status == *status, "{name}: {c:?}");
                println!(
                    "    {name}: {} {} {}: {}",
                    c.type_, c.status, c.reason, c.message
                );
            }
        }
        // And the tenant sees it too.
        let home = tenant_shows(s, 1, "certs", name, SyncSecretPhase::Synced).await?;
        if let Some((type_, _)) = expected {
            let types: Vec<_> = home
                .status
                .and_then(|st| st.conditions)
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.type_)
                .collect();
            ensure!(
                types.iter().any(|t| t == type_),
                "{name}: tenant lacks {type_}: {types:?}"
            );
        }
    }
    let metrics = s.pair.lock().await.manager.metrics()?;
    let ns = tenant_namespace(TENANTS[1]);
    for state in ["valid", "expiring", "expired"] {
        let line = format!("kubelb_manager_certificates{{namespace=\"{ns}\",state=\"{state}\"}} 1");
        ensure!(metrics.contains(&line), "missing {line}");
    }
    ensure!(
        metrics.contains(&format!(
            "kubelb_manager_certificate_earliest_expiry_timestamp_seconds{{namespace=\"{ns}\"}}"
        )),
        "no earliest-expiry gauge"
    );
    Ok(())
}

async fn immutable_syncs_immutable_and_a_type_change_replaces_the_secret(
    s: &Shared,
) -> anyhow::Result<()> {
    let mut frozen = sync_secret("frozen");
    frozen.immutable = Some(true);
    frozen.string_data = Some([("k".to_owned(), s.value("frozen"))].into());
    create(s, 1, "immutable", frozen).await?;
    let (_, secret) = synced(s, 1, "immutable", "frozen", |_| true).await?;
    ensure!(
        secret.immutable == Some(true),
        "the Secret is not immutable"
    );

    // A Secret's type cannot change: the manager replaces it, once.
    let mut typed = sync_secret("retyped");
    typed.string_data = Some([("username".to_owned(), s.value("user"))].into());
    create(s, 1, "immutable", typed).await?;
    let (_, before) = synced(s, 1, "immutable", "retyped", |_| true).await?;
    let tenant: Api<SyncSecret> = Api::namespaced(tenant_client(s, 1).await, "immutable");
    tenant
        .patch(
            "retyped",
            &PatchParams::default(),
            &Patch::Merge(json!({"type": "kubernetes.io/basic-auth"})),
        )
        .await?;
    let (copy, after) = synced(s, 1, "immutable", "retyped", |sec| {
        sec.type_.as_deref() == Some("kubernetes.io/basic-auth")
    })
    .await?;
    ensure!(after.uid() != before.uid(), "the Secret was not replaced");
    has_event(
        &management(s).await,
        &tenant_namespace(TENANTS[1]),
        &copy.name_any(),
        "ImmutableReplaced",
    )
    .await?;
    Ok(())
}

const TAMPER_POLICY: &str = r#"apiVersion: admissionregistration.k8s.io/v1
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

fn kubectl_mgmt(
    kubeconfig: &std::path::Path,
    args: &[&str],
    stdin: Option<&str>,
) -> anyhow::Result<()> {
    syncsecret_e2e::helm::kubectl(kubeconfig, args, stdin)?;
    Ok(())
}

/// The management cluster's admin kubeconfig.
async fn mgmt_kubeconfig(s: &Shared) -> std::path::PathBuf {
    s.pair
        .lock()
        .await
        .plane
        .management()
        .kubeconfig()
        .to_owned()
}

async fn content_changed_on_admission_is_caught_and_named(s: &Shared) -> anyhow::Result<()> {
    let kubeconfig = mgmt_kubeconfig(s).await;
    kubectl_mgmt(&kubeconfig, &["apply", "-f", "-"], Some(TAMPER_POLICY))?;
    // The policy takes effect once the API server has loaded it: probe.
    let mgmt = management(s).await;
    let ns = tenant_namespace(TENANTS[1]);
    let secrets: Api<Secret> = Api::namespaced(mgmt.clone(), &ns);
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

    let mut obj = sync_secret("tampered-on-write");
    obj.labels_mut().insert("e2e-tamper".into(), "yes".into());
    obj.string_data = Some([("token".to_owned(), s.value("admission"))].into());
    create(s, 1, "admission", obj).await?;
    let failed = tenant_shows(
        s,
        1,
        "admission",
        "tampered-on-write",
        SyncSecretPhase::Failed,
    )
    .await?;
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

    // Clean up: the policy, and the object (so it stops retrying).
    kubectl_mgmt(&kubeconfig, &["delete", "-f", "-"], Some(TAMPER_POLICY))?;
    let tenant: Api<SyncSecret> = Api::namespaced(tenant_client(s, 1).await, "admission");
    tenant
        .delete("tampered-on-write", &DeleteParams::default())
        .await?;
    gone(&tenant, "tampered-on-write").await?;
    Ok(())
}

async fn a_dry_run_writes_nothing_and_reports_each_pending_write(s: &Shared) -> anyhow::Result<()> {
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

async fn objects_kubelb_made_are_adopted_and_made_data_only(s: &Shared) -> anyhow::Result<()> {
    // KubeLB's controllers made these; ours are not running.
    {
        let mut pair = s.pair.lock().await;
        pair.manager.stop()?;
        pair.ccms[0].stop()?;
    }
    let tenant_client = tenant_client(s, 0).await;
    ensure_namespace(&tenant_client, "adopt").await?;
    let tenants: Api<SyncSecret> = Api::namespaced(tenant_client, "adopt");
    let mgmt = management(s).await;
    let ns = tenant_namespace(TENANTS[0]);
    let copies: Api<SyncSecret> = Api::namespaced(mgmt.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(mgmt, &ns);
    let kubelb = PostParams {
        field_manager: Some("kubelb".into()),
        ..Default::default()
    };
    for (name, stale) in [("kubelb-made", false), ("kubelb-stale", true)] {
        let value = s.value("adopted");
        let mut t = sync_secret(name);
        t.labels_mut().insert("app".into(), "legacy".into());
        t.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
        t.string_data = Some([("password".to_owned(), value.clone())].into());
        let t = tenants.create(&kubelb, &t).await?;
        // KubeLB's ccm: named by the tenant UID, short origin label only.
        let mut c = sync_secret(&t.uid().unwrap());
        c.metadata.labels = Some(
            [
                ("app".to_owned(), "legacy".to_owned()),
                (LABEL_ORIGIN_NAME.to_owned(), name.to_owned()),
                (LABEL_ORIGIN_NS.to_owned(), "adopt".to_owned()),
            ]
            .into(),
        );
        c.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
        c.string_data = t.string_data.clone();
        let c = copies.create(&kubelb, &c).await?;
        // KubeLB's manager: its status wording, its owner reference.
        let generation = c.metadata.generation;
        copies
            .patch_status(
                &c.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Synced", "observedGeneration": generation, "conditions": [{
                    "type": "Synced", "status": "True", "reason": "Synced", "message": "Secret synced successfully",
                    "observedGeneration": generation, "lastTransitionTime": "2026-11-01T00:00:00Z"}]}})),
            )
            .await?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: c.uid(),
                labels: c.metadata.labels.clone(),
                owner_references: Some(vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        api_version: "kubelb.k8c.io/v1alpha1".into(),
                        kind: "SyncSecret".into(),
                        name: c.name_any(),
                        uid: c.uid().unwrap(),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            string_data: Some(
                [(
                    "password".to_owned(),
                    if stale { "old".to_owned() } else { value },
                )]
                .into(),
            ),
            ..Default::default()
        };
        secrets.create(&kubelb, &secret).await?;
    }

    // Ours take over.
    {
        let mut pair = s.pair.lock().await;
        pair.manager.start().await?;
        pair.ccms[0].start().await?;
    }
    tenant_shows(s, 0, "adopt", "kubelb-made", SyncSecretPhase::Synced).await?;
    let stale_tenant = tenants.get("kubelb-stale").await?;
    let values = s.values.lock().unwrap().clone();
    let want = stale_tenant.string_data.as_ref().unwrap()["password"].clone();
    ensure!(values.contains(&want));
    synced(s, 0, "adopt", "kubelb-stale", |sec| {
        data_of(sec).get("password").map(Vec::as_slice) == Some(want.as_bytes())
    })
    .await?;
    tenant_shows(s, 0, "adopt", "kubelb-stale", SyncSecretPhase::Synced).await?;
    // Let every start-up reconcile finish before counting.
    settled(s).await?;
    let pair = s.pair.lock().await;
    let ccm = writes_by_resource(&pair.ccms[0].metrics()?, "kubelb_ccm");
    let manager = writes_by_resource(&pair.manager.metrics()?, "kubelb_manager");
    drop(pair);
    println!("    writes after taking over: ccm {ccm:?}, manager {manager:?}");
    // KubeLB's copies carry stringData: each is rewritten once to data only
    // (no value in clear in the management cluster): a merge patch that
    // drops stringData, then our apply. Their Secrets follow the copy's
    // new metadata (at most once per copy write), and so does the copy's
    // status. Tenant objects, which KubeLB never gave a status, get
    // theirs. The manager never patches a copy itself.
    let copies_adopted = 2.0;
    let expected = [
        (
            &ccm,
            "syncsecrets/patch",
            2.0 * copies_adopted,
            "each adopted copy with stringData: two writes",
        ),
        (
            &manager,
            "syncsecrets/patch",
            0.0,
            "the manager patched an adopted copy",
        ),
        (
            &ccm,
            "syncsecrets/status/patch",
            copies_adopted,
            "expected one tenant status write per object",
        ),
    ];
    for (writes, key, want, why) in expected {
        let have = writes.get(key).copied().unwrap_or(0.0);
        ensure!(have == want, "{why}: {key} = {have}");
    }
    // At most once per copy write, and the stale Secret's content once.
    for (key, most) in [
        ("secrets/patch", 2.0 * copies_adopted + 1.0),
        ("syncsecrets/status/patch", 2.0 * copies_adopted),
    ] {
        let have = manager.get(key).copied().unwrap_or(0.0);
        ensure!(
            have <= most,
            "the manager wrote {key} {have} times, more than once per copy write"
        );
    }
    Ok(())
}

async fn same_name_in_two_tenants_stays_isolated(s: &Shared) -> anyhow::Result<()> {
    let values = [s.value("tenant1-value"), s.value("tenant2-value")];
    for (i, v) in values.iter().enumerate() {
        let mut obj = sync_secret("same-name");
        obj.string_data = Some([("value".to_owned(), v.clone())].into());
        create(s, i, "shared-ns", obj).await?;
    }
    for (i, v) in values.iter().enumerate() {
        let (copy, secret) = synced(s, i, "shared-ns", "same-name", |sec| {
            data_of(sec).get("value").map(Vec::as_slice) == Some(v.as_bytes())
        })
        .await?;
        ensure!(copy.namespace().as_deref() == Some(tenant_namespace(TENANTS[i]).as_str()));
        ensure!(secret.namespace() == copy.namespace());
    }
    // RBAC really separates them: tenant1's ccm identity (its ServiceAccount
    // in the management cluster, a fresh token) cannot read tenant2's
    // namespace, nor Secrets in its own.
    let pair = s.pair.lock().await;
    let identity = pair
        .plane
        .management()
        .service_account_kubeconfig(&tenant_namespace(TENANTS[0]), rbac::CCM_ROLE)
        .await?;
    let ccm1 = syncsecret_e2e::control_plane::client_from(&identity).await?;
    drop(pair);
    let other: Api<SyncSecret> = Api::namespaced(ccm1.clone(), &tenant_namespace(TENANTS[1]));
    match other.list(&ListParams::default()).await {
        Err(kube::Error::Api(e)) if e.code == 403 => {
            println!("    tenant1's ccm on tenant2: {}", e.message)
        }
        other => bail!(
            "tenant1's ccm could list tenant2's copies: {:?}",
            other.map(|l| l.items.len())
        ),
    }
    let secrets: Api<Secret> = Api::namespaced(ccm1, &tenant_namespace(TENANTS[0]));
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(e)) if e.code == 403 => Ok(()),
        other => bail!(
            "tenant1's ccm could list Secrets: {:?}",
            other.map(|l| l.items.len())
        ),
    }
}

async fn secret_synchronizer_takes_labelled_secrets_only(s: &Shared) -> anyhow::Result<()> {
    let client = tenant_client(s, 0).await;
    ensure_namespace(&client, "synchronizer").await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "synchronizer");
    let syncsecrets: Api<SyncSecret> = Api::namespaced(client, "synchronizer");
    let (plain_value, labelled_value) = (s.value("unlabelled"), s.value("labelled"));
    let secret = |name: &str, value: &str, labelled: bool| Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: labelled
                .then(|| [(LABEL_MANAGED_BY.to_owned(), MANAGED_BY_KUBELB.to_owned())].into()),
            ..Default::default()
        },
        string_data: Some([("value".to_owned(), value.to_owned())].into()),
        ..Default::default()
    };
    secrets
        .create(
            &PostParams::default(),
            &secret("plain", &plain_value, false),
        )
        .await?;
    secrets
        .create(
            &PostParams::default(),
            &secret("labelled", &labelled_value, true),
        )
        .await?;
    synced(s, 0, "synchronizer", "labelled", |sec| {
        data_of(sec).get("value").map(Vec::as_slice) == Some(labelled_value.as_bytes())
    })
    .await?;
    ensure!(
        syncsecrets.get_opt("plain").await?.is_none(),
        "an unlabelled Secret became a SyncSecret"
    );
    let plain = secrets.get("plain").await?;
    ensure!(
        plain.finalizers().is_empty(),
        "an unlabelled Secret was touched"
    );
    ensure!(
        secrets
            .get("labelled")
            .await?
            .finalizers()
            .iter()
            .any(|f| f == FINALIZER),
        "the labelled Secret lacks the cleanup finalizer"
    );

    // Deleting the Secret deletes its SyncSecret, and with it the copy.
    secrets.delete("labelled", &DeleteParams::default()).await?;
    gone(&syncsecrets, "labelled").await?;
    Ok(())
}

async fn restarting_both_controllers_costs_zero_writes(s: &Shared) -> anyhow::Result<()> {
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
    Ok(())
}

async fn no_secret_value_reaches_any_log(s: &Shared) -> anyhow::Result<()> {
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

fn job(c: &ControllerProcess, job: &str) -> Target {
    Target {
        job: job.to_owned(),
        port: c.metrics_port,
    }
}

/// Prometheus scraping the manager and each ccm, one job each.
fn start_prometheus(pair: &Pair) -> anyhow::Result<Prometheus> {
    let dir = pair.plane.dir().ok_or_else(|| anyhow!("no plane dir"))?;
    let p = Prometheus::start(dir)?;
    p.set_targets(&base_targets(pair))?;
    Ok(p)
}

fn base_targets(pair: &Pair) -> Vec<Target> {
    pair.controllers().map(|c| job(c, c.name())).collect()
}

/// A kubeconfig for an API server that is not there.
fn unreachable_kubeconfig(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
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

const DENY_POLICY: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: e2e-deny-copies
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: ["kubelb.k8c.io"]
      apiVersions: ["*"]
      operations: ["CREATE", "UPDATE"]
      resources: ["syncsecrets"]
    objectSelector:
      matchLabels:
        e2e-deny: "yes"
  validations:
  - expression: "false"
    message: "the platform's policy refuses copies labelled e2e-deny"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: e2e-deny-copies
spec:
  policyName: e2e-deny-copies
  validationActions: [Deny]
"#;

/// Every dashboard query and every alert expression returns series on a
/// real Prometheus scraping the real binaries, for data this run made the
/// way users meet it: a Secret type the manager refuses, a copy the
/// management cluster's admission policy refuses (ccm errors), TLS
/// certificates expiring and expired, the admission-mutated write of
/// `content_changed_on_admission_is_caught_and_named` (run just before),
/// standby replicas in jobs of their own (no leader there) and replicas
/// that cannot reach their API server (never ready). Every alert is then
/// pending or firing in Prometheus, and every metric the dashboards name
/// is on a running binary's `/metrics`.
async fn prometheus_has_data_for_every_dashboard_query_and_alert(s: &Shared) -> anyhow::Result<()> {
    use syncsecret_runtime::generate::monitoring::{Binary, alerts, panels};
    let ns = "monitoring";
    let mgmt_kubeconfig = mgmt_kubeconfig(s).await;

    // Refused by the manager's type policy: Failed in both clusters.
    let mut sa = sync_secret("refused-type");
    sa.type_ = Some("kubernetes.io/service-account-token".into());
    sa.string_data = Some([("note".to_owned(), s.value("monitoring"))].into());
    create(s, 0, ns, sa).await?;
    // Refused by an admission policy of the management cluster: the ccm's
    // writes fail (reconcile errors), the tenant object goes Failed.
    kubectl_mgmt(&mgmt_kubeconfig, &["apply", "-f", "-"], Some(DENY_POLICY))?;
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
    kubectl_mgmt(&mgmt_kubeconfig, &["delete", "-f", "-"], Some(DENY_POLICY))?;
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
