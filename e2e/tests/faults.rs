//! The faults the chaos run does not inject at random, each on a pair of
//! its own (one tenant): permissions pulled and restored, management
//! credentials rotated in place (to an exec-plugin kubeconfig), a conflict
//! storm on the Secrets' foreign metadata, leader failover between two
//! replicas of each controller, and odd but valid objects. They run one at
//! a time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step fails the test"
)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use syncsecret_api::contract::tenant_namespace;
use syncsecret_api::{SyncSecret, SyncSecretPhase};
use syncsecret_e2e::kube_util::{has_event, holds_value, put_value};
use syncsecret_e2e::pair::{
    ControllerProcess, Pair, ensure_namespace, metric_reaches, writes_by_resource,
};
use syncsecret_runtime::generate::rbac;
use syncsecret_runtime::serve::leader::{LEASE_DURATION, RETRY_PERIOD};

const TENANT: &str = "tenant1";

/// One pair at a time: these machines have two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `body` on a fresh pair, then the leak scan for every value the
/// tenant cluster held; on failure, panics with the state a person would
/// look at.
async fn on_a_pair<F>(body: F)
where
    F: for<'a> FnOnce(
        &'a mut Pair,
    ) -> std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>,
{
    let _one = SERIAL.lock().await;
    let mut pair = Pair::start(&[TENANT]).await.expect("the pair starts");
    pair.record_written();
    let result = async {
        body(&mut pair).await?;
        let found = pair.leaks(&[]).await?;
        ensure!(found.is_empty(), "a secret value leaked in: {found:?}");
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        panic!("{e:#}\n--- state at failure ---\n{}", pair.dump());
    }
}

/// Applies tenant object `name` with one data key holding `value`.
async fn put(api: &Api<SyncSecret>, name: &str, value: &str) -> anyhow::Result<()> {
    put_value(api, name, value)
        .await
        .with_context(|| format!("applying {name}"))
}

fn holds(value: &str) -> impl Fn(&Secret) -> bool + '_ {
    holds_value(value)
}

fn condition_message(o: &SyncSecret) -> String {
    o.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Synced"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// Waits until `metric` on `c` reads `value`.
async fn gauge_reads(c: &ControllerProcess, metric: &str, value: f64) -> anyhow::Result<()> {
    metric_reaches(c, metric, &format!("= {value}"), |v| v == value).await?;
    Ok(())
}

fn tenant_api(pair: &Pair, ns: &str) -> Api<SyncSecret> {
    Api::namespaced(pair.tenants[0].clone(), ns)
}

// ------------------------------------------------------------------ tests

/// Behaviour 6: the ccm's management RoleBinding removed, tenant objects
/// changed meanwhile go Failed with the API server's Forbidden message
/// (verb, resource, namespace) and what to do, with a Warning event; the
/// reachable gauge reads 0; restored, everything syncs without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_pulled_fail_with_the_forbidden_message_and_recover_when_restored() {
    on_a_pair(|pair| Box::pin(permissions_pulled(pair))).await;
}

async fn permissions_pulled(pair: &mut Pair) -> anyhow::Result<()> {
    let ns = "perm";
    ensure_namespace(&pair.tenants[0], ns).await?;
    let api = tenant_api(pair, ns);
    put(&api, "a", "perm-a-1").await?;
    pair.synced(0, ns, "a", holds("perm-a-1")).await?;
    let pid = pair.ccms[0].pid();

    let tenant_ns = tenant_namespace(TENANT);
    let bindings: Api<RoleBinding> = Api::namespaced(pair.management.clone(), &tenant_ns);
    let mut binding = bindings.get(rbac::CCM_ROLE).await?;
    bindings
        .delete(rbac::CCM_ROLE, &DeleteParams::default())
        .await?;

    // A change and a new object while the ccm may not write its copies.
    put(&api, "a", "perm-a-2").await?;
    put(&api, "b", "perm-b-1").await?;
    let user = format!("system:serviceaccount:{tenant_ns}:{}", rbac::CCM_ROLE);
    for name in ["a", "b"] {
        let o = pair
            .tenant_shows(0, ns, name, SyncSecretPhase::Failed)
            .await?;
        let message = condition_message(&o);
        for part in [
            format!(r#"is forbidden: User "{user}" cannot patch resource "syncsecrets""#),
            format!(r#"in API group "kubelb.k8c.io" in the namespace "{tenant_ns}""#),
            "grant this identity that verb on that resource".to_owned(),
        ] {
            ensure!(
                message.contains(&part),
                "{name}'s message lacks {part:?}: {message}"
            );
        }
        let event = has_event(&pair.tenants[0], ns, name, "ApplyCopyFailed").await?;
        let note = event.note.unwrap_or_default();
        ensure!(note.contains("is forbidden"), "event note: {note}");
    }
    gauge_reads(&pair.ccms[0], "kubelb_ccm_management_reachable", 0.0).await?;
    // Still ready (nothing would route differently), and saying why not
    // everything is well.
    let (ready, body) = pair.ccms[0].readyz()?;
    ensure!(
        ready
            && body.contains("note: the management cluster does not answer")
            && body.contains("is forbidden"),
        "/readyz: {ready} {body}"
    );

    // Restored: both sync, by the same process.
    binding.metadata.resource_version = None;
    binding.metadata.uid = None;
    bindings.create(&PostParams::default(), &binding).await?;
    pair.synced(0, ns, "a", holds("perm-a-2")).await?;
    pair.synced(0, ns, "b", holds("perm-b-1")).await?;
    for name in ["a", "b"] {
        pair.tenant_shows(0, ns, name, SyncSecretPhase::Synced)
            .await?;
    }
    gauge_reads(&pair.ccms[0], "kubelb_ccm_management_reachable", 1.0).await?;
    let (ready, body) = pair.ccms[0].readyz()?;
    ensure!(ready && !body.contains("note:"), "/readyz: {ready} {body}");
    ensure!(pair.ccms[0].pid() == pid, "the ccm was restarted");
    ensure!(!pair.ccms[0].has_exited(), "the ccm exited");
    Ok(())
}

/// Behaviour 5: the ccm's management kubeconfig replaced in place by one
/// for another identity whose token comes from an exec credential plugin,
/// and the old identity's RoleBinding removed: the ccm carries on (same
/// process) as the new identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_credentials_and_an_exec_plugin_are_picked_up_without_a_restart() {
    on_a_pair(|pair| Box::pin(credentials_rotated(pair))).await;
}

async fn credentials_rotated(pair: &mut Pair) -> anyhow::Result<()> {
    let ns = "rotate";
    ensure_namespace(&pair.tenants[0], ns).await?;
    let api = tenant_api(pair, ns);
    put(&api, "a", "rotate-a-1").await?;
    pair.synced(0, ns, "a", holds("rotate-a-1")).await?;
    let pid = pair.ccms[0].pid();

    // The new identity: its own ServiceAccount, bound to the same Role.
    let tenant_ns = tenant_namespace(TENANT);
    let new_name = "syncsecret-ccm-rotated";
    let accounts: Api<ServiceAccount> = Api::namespaced(pair.management.clone(), &tenant_ns);
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": new_name}}))?,
        )
        .await?;
    let bindings: Api<RoleBinding> = Api::namespaced(pair.management.clone(), &tenant_ns);
    bindings
        .create(
            &PostParams::default(),
            &serde_json::from_value::<RoleBinding>(json!({
                "metadata": {"name": new_name},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": rbac::CCM_ROLE,
                },
                "subjects": [{
                    "kind": "ServiceAccount",
                    "name": new_name,
                    "namespace": tenant_ns,
                }],
            }))?,
        )
        .await?;
    let mgmt = pair.plane.management();
    let token = mgmt.service_account_token(&tenant_ns, new_name).await?;
    // The plugin: prints an ExecCredential with the token, and leaves a
    // mark that it ran.
    let dir = pair
        .plane
        .dir()
        .context("the control plane has a directory")?
        .to_owned();
    let ran = dir.join("exec-plugin-ran");
    let plugin = dir.join("exec-plugin.sh");
    let credential = json!({
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": token},
    });
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\ntouch '{}'\ncat <<'EOF'\n{credential}\nEOF\n",
            ran.display()
        ),
    )?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o700))?;
    }
    let kubeconfig = pair.ccms[0]
        .base_args()
        .iter()
        .find_map(|a| a.strip_prefix("--kubelb-kubeconfig="))
        .context("the ccm has --kubelb-kubeconfig")?
        .to_owned();
    mgmt.write_exec_kubeconfig(
        std::path::Path::new(&kubeconfig),
        &format!("system:serviceaccount:{tenant_ns}:{new_name}"),
        &plugin,
    )?;
    // The old identity loses its access at once.
    bindings
        .delete(rbac::CCM_ROLE, &DeleteParams::default())
        .await?;

    // Only the new identity can write these.
    put(&api, "a", "rotate-a-2").await?;
    put(&api, "b", "rotate-b-1").await?;
    pair.synced(0, ns, "a", holds("rotate-a-2")).await?;
    pair.synced(0, ns, "b", holds("rotate-b-1")).await?;
    pair.tenant_shows(0, ns, "b", SyncSecretPhase::Synced)
        .await?;
    ensure!(ran.exists(), "the exec plugin never ran");
    ensure!(pair.ccms[0].pid() == pid, "the ccm was restarted");
    ensure!(!pair.ccms[0].has_exited(), "the ccm exited");
    let log = pair.ccms[0].log_tail(400);
    ensure!(
        log.contains("kubeconfig replaced; using its credentials from now on"),
        "the ccm did not say it took the new credentials:\n{log}"
    );
    ensure!(!log.contains(&token), "the token reached the ccm's log");
    Ok(())
}

/// Behaviour 7: for a minute another writer changes the Secrets' foreign
/// labels and annotations as fast as it can (merge patches, and
/// read-modify-write updates that retry on conflict) while the tenant
/// updates the same objects: our content wins, theirs survives, nothing is
/// lost, and the manager writes only for the tenant's updates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_storm_on_foreign_metadata_loses_nothing_and_costs_no_extra_writes() {
    on_a_pair(|pair| Box::pin(conflict_storm(pair))).await;
}

const STORM: Duration = Duration::from_secs(60);
const STORM_OBJECTS: usize = 10;

async fn conflict_storm(pair: &mut Pair) -> anyhow::Result<()> {
    let ns = "storm";
    ensure_namespace(&pair.tenants[0], ns).await?;
    let api = tenant_api(pair, ns);
    let names: Vec<String> = (0..STORM_OBJECTS).map(|i| format!("s{i}")).collect();
    let mut latest: BTreeMap<String, String> = BTreeMap::new();
    for n in &names {
        let v = format!("storm-{n}-0");
        put(&api, n, &v).await?;
        latest.insert(n.clone(), v);
    }
    let mut secret_names = BTreeMap::new();
    for n in &names {
        let (copy, _) = pair.synced(0, ns, n, holds(&latest[n])).await?;
        secret_names.insert(n.clone(), copy.uid().context("copy uid")?);
    }
    let secret_writes = |pair: &Pair| -> anyhow::Result<f64> {
        let m = pair.manager.metrics()?;
        Ok(writes_by_resource(&m, "kubelb_manager")
            .iter()
            .filter(|(k, _)| k.starts_with("secrets/"))
            .map(|(_, v)| v)
            .sum())
    };
    let writes_before = secret_writes(pair)?;

    let secrets: Api<Secret> = Api::namespaced(pair.management.clone(), &tenant_namespace(TENANT));
    let stop = Arc::new(AtomicBool::new(false));
    let foreign_writes = Arc::new(AtomicU64::new(0));
    let mut storm = Vec::new();
    for worker in 0..4u64 {
        let (secrets, stop, count) = (secrets.clone(), stop.clone(), foreign_writes.clone());
        let targets: Vec<String> = secret_names.values().cloned().collect();
        storm.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for name in &targets {
                    n += 1;
                    let label = format!("storm.example.com/w{worker}");
                    let ok = if worker % 2 == 0 {
                        let patch = json!({"metadata": {
                            "labels": {&label: n.to_string()},
                            "annotations": {&label: format!("note {n}")},
                        }});
                        secrets
                            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                            .is_ok()
                    } else {
                        // Read, modify, write: a 409 when we wrote in between.
                        match secrets.get(name).await {
                            Ok(mut s) => {
                                s.labels_mut().insert(label.clone(), n.to_string());
                                s.annotations_mut().insert(label, format!("note {n}"));
                                secrets
                                    .replace(name, &PostParams::default(), &s)
                                    .await
                                    .is_ok()
                            }
                            Err(_) => false,
                        }
                    };
                    if ok {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            n
        }));
    }
    // The tenant side: one update every 250 ms, round robin.
    let started = Instant::now();
    let mut updates = 0usize;
    while started.elapsed() < STORM {
        let n = &names[updates % names.len()];
        updates += 1;
        let v = format!("storm-{n}-{updates}");
        put(&api, n, &v).await?;
        latest.insert(n.clone(), v);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for s in storm {
        s.await?;
    }
    let foreign = foreign_writes.load(Ordering::Relaxed);

    for n in &names {
        let (_, secret) = pair.synced(0, ns, n, holds(&latest[n])).await?;
        for w in 0..4 {
            let key = format!("storm.example.com/w{w}");
            ensure!(
                secret.labels().contains_key(&key) && secret.annotations().contains_key(&key),
                "{n}: the other writer's {key} did not survive: {:?}",
                secret.labels()
            );
        }
    }
    let ours = secret_writes(pair)? - writes_before;
    println!(
        "conflict storm: {foreign} foreign writes, {updates} tenant updates, {ours} manager Secret writes"
    );
    ensure!(
        foreign > 10 * updates as u64,
        "the storm was too weak to mean anything: {foreign} foreign writes"
    );
    // One write per tenant update at most, plus one retry each for the
    // updates that raced a foreign write.
    ensure!(
        ours <= (2 * updates) as f64,
        "the manager wrote {ours} times for {updates} tenant updates under {foreign} foreign writes: a hot loop"
    );
    Ok(())
}

/// Behaviour 4: two replicas of each controller; the leader of each is
/// killed with SIGKILL while the tenant keeps updating; the other takes
/// over within the lease duration (plus a retry period), the `_leader`
/// gauges never show two leaders at once, and no update is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_from_a_killed_leader_and_nothing_is_lost() {
    on_a_pair(|pair| Box::pin(leader_failover(pair))).await;
}

async fn leader_failover(pair: &mut Pair) -> anyhow::Result<()> {
    let ns = "failover";
    ensure_namespace(&pair.tenants[0], ns).await?;
    let api = tenant_api(pair, ns);
    let names: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
    let mut latest: BTreeMap<String, String> = BTreeMap::new();
    for n in &names {
        let v = format!("failover-{n}-0");
        put(&api, n, &v).await?;
        latest.insert(n.clone(), v);
    }
    for n in &names {
        pair.synced(0, ns, n, holds(&latest[n])).await?;
    }
    let mut manager_b = pair.manager.sibling("syncsecret-manager-b", &[]).await?;
    let mut ccm_b = pair.ccms[0]
        .sibling(&format!("syncsecret-ccm-{TENANT}-b"), &[])
        .await?;
    let manager_leader = "kubelb_manager_leader";
    let ccm_leader = "kubelb_ccm_leader";
    gauge_reads(&pair.manager, manager_leader, 1.0).await?;
    gauge_reads(&manager_b, manager_leader, 0.0).await?;
    gauge_reads(&pair.ccms[0], ccm_leader, 1.0).await?;
    gauge_reads(&ccm_b, ccm_leader, 0.0).await?;

    let bound = LEASE_DURATION + 2 * RETRY_PERIOD;
    let mut updates = 0usize;
    for (what, metric) in [("manager", manager_leader), ("ccm", ccm_leader)] {
        match what {
            "manager" => pair.manager.kill(),
            _ => pair.ccms[0].kill(),
        }
        let killed = Instant::now();
        let standby = if what == "manager" {
            &manager_b
        } else {
            &ccm_b
        };
        // The tenant keeps changing objects while nobody leads.
        let mut took_over = None;
        while killed.elapsed() < bound + Duration::from_secs(10) {
            let n = &names[updates % names.len()];
            updates += 1;
            let v = format!("failover-{n}-{updates}");
            put(&api, n, &v).await?;
            latest.insert(n.clone(), v);
            if took_over.is_none() && standby.metric_sum(metric)? == 1.0 {
                took_over = Some(killed.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let Some(after) = took_over else {
            bail!(
                "the standby {what} did not lead within {:?}",
                bound + Duration::from_secs(10)
            );
        };
        println!(
            "leader failover: the standby {what} leads {:.1} s after the kill",
            after.as_secs_f64()
        );
        ensure!(
            after <= bound,
            "the standby {what} took {after:?} to lead; the lease lasts {LEASE_DURATION:?}"
        );
    }
    for n in &names {
        pair.synced(0, ns, n, holds(&latest[n])).await?;
    }
    // The killed ones come back as standbys; one leader each, never two.
    pair.manager.start().await?;
    pair.ccms[0].start().await?;
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(10) {
        let m = pair.manager.metric_sum(manager_leader)? + manager_b.metric_sum(manager_leader)?;
        let c = pair.ccms[0].metric_sum(ccm_leader)? + ccm_b.metric_sum(ccm_leader)?;
        ensure!(m == 1.0 && c == 1.0, "leaders: {m} managers, {c} ccms");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gauge_reads(&manager_b, manager_leader, 1.0).await?;
    gauge_reads(&ccm_b, ccm_leader, 1.0).await?;
    put(&api, "f0", "failover-after").await?;
    pair.synced(0, ns, "f0", holds("failover-after")).await?;
    manager_b.stop()?;
    ccm_b.stop()?;
    Ok(())
}

/// Behaviour 8 on the real control plane: objects the API server accepts
/// but that are odd — no data, an empty map, a zero-length value, keys only
/// in stringData, unicode stringData, every byte value — sync exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_but_valid_objects_sync_exactly() {
    on_a_pair(|pair| Box::pin(odd_objects(pair))).await;
}

type Data = BTreeMap<String, ByteString>;
type StringData = BTreeMap<String, String>;

async fn odd_objects(pair: &mut Pair) -> anyhow::Result<()> {
    let ns = "odd";
    ensure_namespace(&pair.tenants[0], ns).await?;
    let api = tenant_api(pair, ns);
    let every_byte: Vec<u8> = (0..=255u8).collect();
    let cases: Vec<(&str, Option<Data>, Option<StringData>)> = vec![
        ("no-data", None, None),
        ("empty-map", Some(BTreeMap::new()), None),
        (
            "zero-length",
            Some(BTreeMap::from([(
                "empty".to_owned(),
                ByteString(Vec::new()),
            )])),
            None,
        ),
        (
            "string-data-only",
            None,
            Some(BTreeMap::from([("k".to_owned(), "v".to_owned())])),
        ),
        (
            "unicode",
            Some(BTreeMap::from([(
                "k".to_owned(),
                ByteString(b"from data".to_vec()),
            )])),
            Some(BTreeMap::from([
                ("k".to_owned(), "stringData wins: ünï©ødé ✓".to_owned()),
                ("emoji".to_owned(), "🔐".to_owned()),
            ])),
        ),
        (
            "every-byte",
            Some(BTreeMap::from([(
                "bin".to_owned(),
                ByteString(every_byte.clone()),
            )])),
            None,
        ),
    ];
    for (name, data, string_data) in &cases {
        let obj = SyncSecret {
            metadata: ObjectMeta {
                name: Some((*name).to_owned()),
                ..Default::default()
            },
            data: data.clone(),
            string_data: string_data.clone(),
            ..Default::default()
        };
        api.create(&PostParams::default(), &obj)
            .await
            .with_context(|| format!("creating {name}"))?;
    }
    for (name, data, string_data) in &cases {
        // What the API server would make of it as a Secret: stringData
        // over data, as bytes.
        let mut want: BTreeMap<String, Vec<u8>> = data
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        for (k, v) in string_data.clone().unwrap_or_default() {
            want.insert(k, v.into_bytes());
        }
        let (_, secret) = pair
            .synced(0, ns, name, |s| {
                let got: BTreeMap<String, Vec<u8>> = s
                    .data
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                got == want
            })
            .await
            .with_context(|| format!("{name} synced with {want:?}"))?;
        ensure!(
            secret.string_data.is_none(),
            "{name}: stringData left on the Secret"
        );
        pair.tenant_shows(0, ns, name, SyncSecretPhase::Synced)
            .await?;
    }
    Ok(())
}
