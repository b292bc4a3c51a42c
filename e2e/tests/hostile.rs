//! A hostile tenant, with nothing but what a tenant admin has: its own
//! tenant cluster (the CRD there included), its ccm, and the management
//! identity that ccm holds. Each attack runs on one pair with two tenants,
//! `good` and `evil`; during and after each, the good tenant's objects keep
//! converging (the suite's usual wait), the manager stays ready, and at the
//! end no value either tenant wrote is in any controller log, event,
//! status or `/metrics` (issue 18).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step fails the test"
)]

use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use syncsecret_api::contract::tenant_namespace;
use syncsecret_api::{SyncSecret, SyncSecretPhase};
use syncsecret_e2e::control_plane::{Options, client_from};
use syncsecret_e2e::kube_util::{eventually, generated_crd, has_event, install_crd_as};
use syncsecret_e2e::leaks::needles;
use syncsecret_e2e::pair::{ControllerProcess, Launch, Pair, ensure_namespace, metric_reaches};
use syncsecret_runtime::generate::rbac;

const GOOD: usize = 0;
const EVIL: usize = 1;
const SECOND: usize = 2;
const WAIT: Duration = Duration::from_secs(60);
const NS: &str = "hostile";

/// Every value either tenant wrote; none may leak.
struct Values(Vec<String>);

impl Values {
    fn fresh(&mut self, what: &str) -> String {
        let v = format!("{what}-{}", uuid::Uuid::new_v4().simple());
        self.0.push(v.clone());
        v
    }
}

/// A tenant object as the API server would take it: the JSON as given,
/// in namespace `NS`.
fn object(name: &str, body: Value) -> DynamicObject {
    let mut o = json!({
        "apiVersion": "kubelb.k8c.io/v1alpha1",
        "kind": "SyncSecret",
        "metadata": {"name": name, "namespace": NS},
    });
    if let (Some(o), Some(b)) = (o.as_object_mut(), body.as_object()) {
        o.extend(b.clone());
    }
    serde_json::from_value(o).unwrap()
}

fn dynamic(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<SyncSecret>(&()))
}

async fn create(api: &Api<DynamicObject>, name: &str, body: Value) -> anyhow::Result<()> {
    api.create(&PostParams::default(), &object(name, body))
        .await
        .with_context(|| format!("creating {name}"))?;
    Ok(())
}

/// The evil tenant's namespace in the management cluster, and a
/// kubeconfig of the identity its ccm holds there (a token of the ccm
/// chart's ServiceAccount, bound by the chart's Role only).
async fn evil_identity(pair: &Pair) -> anyhow::Result<(String, std::path::PathBuf)> {
    let evil_ns = tenant_namespace(&pair.tenant_names[EVIL]);
    let identity = pair
        .plane
        .management()
        .service_account_kubeconfig(&evil_ns, rbac::CCM_ROLE)
        .await?;
    Ok((evil_ns, identity))
}

/// The good tenant's object `name` with `value`: it must sync, as always.
async fn good_tenant_converges(pair: &Pair, name: &str, value: &str) -> anyhow::Result<()> {
    let api = dynamic(&pair.tenants[GOOD], NS);
    create(&api, name, json!({"stringData": {"v": value}})).await?;
    pair.synced(GOOD, NS, name, |s| {
        s.data
            .as_ref()
            .and_then(|d| d.get("v"))
            .is_some_and(|v| v.0 == value.as_bytes())
    })
    .await?;
    Ok(())
}

/// `/readyz` answers 200 now.
fn ready(c: &ControllerProcess) -> anyhow::Result<()> {
    let (ok, body) = c.readyz()?;
    ensure!(ok, "{} is not ready: {body}", c.name());
    Ok(())
}

/// The generated CRD with `data` replaced: what a tenant admin (or a
/// platform still on KubeLB's CRD) may have installed instead of ours.
fn crd_with_data(data: Value) -> CustomResourceDefinition {
    let mut crd = serde_json::to_value(generated_crd().unwrap()).unwrap();
    let properties = crd
        .pointer_mut("/spec/versions/0/schema/openAPIV3Schema/properties")
        .and_then(Value::as_object_mut)
        .unwrap();
    properties.insert("data".to_owned(), data);
    // Our rules read `data`; the other CRD has none.
    crd.pointer_mut("/spec/versions/0/schema/openAPIV3Schema")
        .and_then(Value::as_object_mut)
        .unwrap()
        .remove("x-kubernetes-validations");
    serde_json::from_value(crd).unwrap()
}

/// KubeLB's own CRD's `data`: `format: byte`, checked by Go's decoder.
fn kubelb_data() -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string", "format": "byte"}})
}

/// A `data` that takes anything at all.
fn anything_data() -> Value {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// Waits until the API server serves `data`'s new schema (a create that
/// only the new schema allows goes through), then deletes the probe.
async fn schema_served(client: &Client, ns: &str, probe: Value) -> anyhow::Result<()> {
    let api = dynamic(client, ns);
    let mut o = object("schema-probe", probe);
    o.metadata.namespace = Some(ns.to_owned());
    eventually("the new CRD schema served", WAIT, || async {
        api.create(&PostParams::default(), &o)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await?;
    api.delete("schema-probe", &Default::default()).await?;
    Ok(())
}

/// Waits until `metric` on `c` reads `value`.
async fn metric_reads(c: &ControllerProcess, metric: &str, value: f64) -> anyhow::Result<()> {
    metric_reaches(c, metric, &format!("= {value}"), |v| v == value).await?;
    Ok(())
}

/// The `Synced` condition's reason and message of `name`, read as plain
/// JSON (an object no type reads still has a status).
async fn verdict(api: &Api<DynamicObject>, name: &str) -> Result<(String, String), String> {
    let o = api.get(name).await.map_err(|e| e.to_string())?;
    let conditions = o.data["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let c = conditions
        .iter()
        .find(|c| c["type"] == "Synced")
        .ok_or("no Synced condition yet")?;
    let text = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
    Ok((text("reason"), text("message")))
}

/// Waits until the Secret of tenant `i`'s object `name` holds `key` = `want`.
async fn secret_holds(
    pair: &Pair,
    i: usize,
    name: &str,
    key: &str,
    want: &[u8],
) -> anyhow::Result<()> {
    let tenant_ns = tenant_namespace(&pair.tenant_names[i]);
    let tenant: Api<SyncSecret> = Api::namespaced(pair.tenants[i].clone(), NS);
    let copies = dynamic(&pair.management, &tenant_ns);
    let secrets: Api<Secret> = Api::namespaced(pair.management.clone(), &tenant_ns);
    eventually(&format!("{name}'s Secret holds {key}"), WAIT, || async {
        let uid = tenant
            .get(name)
            .await
            .map_err(|e| e.to_string())?
            .uid()
            .ok_or("no uid")?;
        let copy = copies
            .get_opt(&uid)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no copy")?;
        let secret = secrets
            .get_opt(&copy.uid().ok_or("no copy uid")?)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no Secret")?;
        let have = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| v.0.clone());
        if have.as_deref() == Some(want) {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_tenant_cannot_stop_or_read_another() {
    // evil-second is the evil tenant's second cluster: its ccm is started
    // again with evil's cluster name and management identity.
    // The management cluster runs as docs/security.md says it should:
    // Secrets and copies encrypted at rest, audited at Metadata level.
    let mut pair = Pair::start_on(
        &["good", "evil", "evil-second"],
        &Launch::default(),
        Options {
            hardened: true,
            ..Options::default()
        },
    )
    .await
    .expect("the pair starts");
    pair.record_written();
    let mut values = Values(Vec::new());
    let result = attacks(&mut pair, &mut values).await;
    if let Err(e) = result {
        panic!("{e:#}\n--- state at failure ---\n{}", pair.dump());
    }
}

async fn attacks(pair: &mut Pair, values: &mut Values) -> anyhow::Result<()> {
    for i in [GOOD, EVIL] {
        ensure_namespace(&pair.tenants[i], NS).await?;
    }
    good_tenant_converges(pair, "before", &values.fresh("good-before")).await?;

    undecodable_tenant_objects(pair, values).await?;
    undecodable_copies(pair, values).await?;
    copies_nested_too_deep(pair, values).await?;
    unlabelled_secrets_are_released(pair, values).await?;
    forged_types_and_metadata_stay_out(pair, values).await?;
    copies_are_bounded_by_the_management_cluster(pair, values).await?;
    a_second_ccm_with_the_same_cluster_name(pair, values).await?;
    the_manager_writes_secrets_only_in_tenant_namespaces(pair).await?;
    stored_encrypted_and_audited_without_values(pair, values).await?;

    let found = pair.leaks(&values.0).await?;
    ensure!(found.is_empty(), "a secret value leaked in: {found:?}");
    println!(
        "    leak scan: {} values written by the test and {} recorded in the tenant clusters, in every log, event, status and /metrics: none found",
        values.0.len(),
        pair.written().len()
    );
    Ok(())
}

/// The evil tenant admin replaces the CRD in its own cluster and writes
/// what our types cannot read, or read only as Go does: the tenant's other
/// objects sync, the bad one says why, and a restart of its ccm (whose
/// first list holds them all) changes nothing.
async fn undecodable_tenant_objects(pair: &mut Pair, values: &mut Values) -> anyhow::Result<()> {
    let evil = pair.tenants[EVIL].clone();
    install_crd_as(&evil, &crd_with_data(anything_data())).await?;
    schema_served(&evil, NS, json!({"data": {"k": 1}})).await?;
    let api = dynamic(&evil, NS);
    let in_clear = values.fresh("evil-string-data");
    // Leftover bits ("QR==" is "A" to Go) and line breaks: Go reads both.
    create(
        &api,
        "leftover-bits",
        json!({"data": {"k": "QR=="}, "stringData": {"s": in_clear}}),
    )
    .await?;
    create(
        &api,
        "line-breaks",
        json!({"data": {"k": "aGVs\nbG8=\r\n"}}),
    )
    .await?;
    // Not a string at all, beside a value that must not leak.
    let hidden = values.fresh("evil-hidden");
    create(
        &api,
        "not-a-string",
        json!({"data": {"k": 42}, "stringData": {"s": hidden}}),
    )
    .await?;
    // A status in a form the CRD's `date-time` takes and ours does not.
    let odd = values.fresh("evil-odd");
    create(&api, "odd-status", json!({"stringData": {"s": odd}})).await?;
    let forged = api
        .patch_status(
            "odd-status",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Synced", "conditions": [{
                "type": "Synced", "status": "True", "reason": "Forged", "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00"}]}})),
        )
        .await;
    match forged {
        Ok(_) => println!("    a status with a zone-less time was stored"),
        Err(kube::Error::Api(s)) if s.code == 422 => {
            println!(
                "    a status with a zone-less time was refused: {}",
                s.message
            );
        }
        Err(e) => bail!("forging a status: {e}"),
    }

    secret_holds(pair, EVIL, "leftover-bits", "k", b"A").await?;
    secret_holds(pair, EVIL, "leftover-bits", "s", in_clear.as_bytes()).await?;
    secret_holds(pair, EVIL, "line-breaks", "k", b"hello").await?;
    secret_holds(pair, EVIL, "odd-status", "s", odd.as_bytes()).await?;
    let lenient = dynamic(&evil, NS);
    let (reason, message) = eventually("not-a-string reported", WAIT, || async {
        let (reason, message) = verdict(&lenient, "not-a-string").await?;
        if reason == "Undecodable" {
            Ok((reason, message))
        } else {
            Err(format!("{reason}: {message}"))
        }
    })
    .await?;
    println!("    not-a-string: {reason}: {message}");
    ensure!(
        message.contains("field data.k should be a string"),
        "the message names the field: {message}"
    );
    has_event(&evil, NS, "not-a-string", "Undecodable").await?;
    metric_reads(
        &pair.ccms[EVIL],
        r#"kubelb_ccm_undecodable_objects{cluster="tenant",namespace="hostile"}"#,
        1.0,
    )
    .await?;
    good_tenant_converges(pair, "during-tenant-attack", &values.fresh("good-1")).await?;

    // Both restarted: their first lists hold every object above.
    pair.restart_all().await?;
    for c in pair.controllers() {
        ready(c)?;
    }
    let after = values.fresh("evil-after");
    create(&api, "after-restart", json!({"stringData": {"s": after}})).await?;
    secret_holds(pair, EVIL, "after-restart", "s", after.as_bytes()).await?;
    good_tenant_converges(pair, "after-tenant-attack", &values.fresh("good-2")).await?;
    ensure!(
        verdict(&lenient, "not-a-string")
            .await
            .map_err(anyhow::Error::msg)?
            .0
            == "Undecodable",
        "still reported after the restart"
    );
    Ok(())
}

/// The evil tenant's management identity writes copies itself: our CRD
/// refuses what only Go would read, with a clear message; on a management
/// cluster whose CRD takes anything, the manager reports the copy it
/// cannot read and keeps serving every tenant, across a restart too.
async fn undecodable_copies(pair: &mut Pair, values: &mut Values) -> anyhow::Result<()> {
    let (evil_ns, identity) = evil_identity(pair).await?;
    let as_evil = client_from(&identity).await?;
    let copies = dynamic(&as_evil, &evil_ns);
    // Named as a ccm names them (the tenant limits refuse any other name).
    let (kubelb_shape, not_a_string) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let (kubelb_shape, not_a_string) = (kubelb_shape.as_str(), not_a_string.as_str());
    let copy = |name: &str, data: Value| {
        let mut o = object(name, json!({"data": data}));
        o.metadata.namespace = Some(evil_ns.clone());
        o.labels_mut().insert(
            syncsecret_api::contract::LABEL_ORIGIN_NAME.to_owned(),
            name.to_owned(),
        );
        o
    };
    match copies
        .create(
            &PostParams::default(),
            &copy(&uuid::Uuid::new_v4().to_string(), json!({"k": "QR=="})),
        )
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 422 => {
            println!("    refused copy: {}", s.message);
            ensure!(
                s.message
                    .contains("data values must be base64 exactly as an encoder writes it"),
                "a clear message: {}",
                s.message
            );
        }
        other => bail!("a copy with leftover bits was not refused: {other:?}"),
    }

    // A management cluster still on KubeLB's CRD (`format: byte`): what
    // Go reads is read as Go reads it.
    let management = pair.management.clone();
    install_crd_as(&management, &crd_with_data(kubelb_data())).await?;
    schema_served(&management, &evil_ns, json!({"data": {"k": "QR=="}})).await?;
    copies
        .create(
            &PostParams::default(),
            &copy(kubelb_shape, json!({"k": "QR=="})),
        )
        .await?;
    // A CRD that takes anything.
    install_crd_as(&management, &crd_with_data(anything_data())).await?;
    schema_served(&management, &evil_ns, json!({"data": {"k": 1}})).await?;
    let hidden = values.fresh("evil-copy");
    let hidden = serde_json::to_value(k8s_openapi::ByteString(hidden.into_bytes()))?;
    let bad = copy(not_a_string, json!({"k": 42, "s": hidden}));
    // The tenant limits refuse this from the tenant (`size` of a number
    // fails, and a policy that fails denies); written as an admin, it
    // stands for one stored before them, and proves the manager's own
    // reading.
    dynamic(&management, &evil_ns)
        .create(&PostParams::default(), &bad)
        .await?;
    let lenient = dynamic(&management, &evil_ns);
    eventually(
        "the manager reports the copy it cannot read",
        WAIT,
        || async {
            let (reason, message) = verdict(&lenient, not_a_string).await?;
            if reason == "Undecodable" && message.contains("field data.k should be a string") {
                Ok(())
            } else {
                Err(format!("{reason}: {message}"))
            }
        },
    )
    .await?;
    has_event(&management, &evil_ns, not_a_string, "Undecodable").await?;
    metric_reads(
        &pair.manager,
        &format!(
            r#"kubelb_manager_undecodable_objects{{cluster="management",namespace="{evil_ns}"}}"#
        ),
        1.0,
    )
    .await?;
    let secrets: Api<Secret> = Api::namespaced(management.clone(), &evil_ns);
    eventually(
        "the KubeLB-shaped copy synced as Go reads it",
        WAIT,
        || async {
            let (reason, _) = verdict(&lenient, kubelb_shape).await?;
            if reason != "SecretSynced" {
                return Err(reason);
            }
            let uid = lenient
                .get(kubelb_shape)
                .await
                .map_err(|e| e.to_string())?
                .uid()
                .ok_or("no uid")?;
            let secret = secrets.get(&uid).await.map_err(|e| e.to_string())?;
            let k = secret.data.and_then(|d| d.get("k").cloned());
            (k.map(|v| v.0) == Some(b"A".to_vec()))
                .then_some(())
                .ok_or_else(|| "the Secret does not hold A".to_owned())
        },
    )
    .await?;
    good_tenant_converges(pair, "during-copy-attack", &values.fresh("good-3")).await?;

    // The manager's first list after a restart holds the copy it cannot read.
    pair.manager.restart()?;
    pair.manager.wait_ready().await?;
    ready(&pair.manager)?;
    good_tenant_converges(pair, "after-copy-attack", &values.fresh("good-4")).await?;
    let tenant = pair
        .tenant_shows(GOOD, NS, "after-copy-attack", SyncSecretPhase::Synced)
        .await?;
    ensure!(tenant.status.is_some());

    // Back on our CRD: the copies stay as they are, nothing else changes.
    copies.delete(not_a_string, &Default::default()).await?;
    install_crd_as(&management, &generated_crd()?).await?;
    install_crd_as(&pair.tenants[EVIL], &generated_crd()?).await?;
    good_tenant_converges(pair, "after-crd-restored", &values.fresh("good-5")).await?;
    Ok(())
}

/// The copy at `path` as the API server sends it (no type reads it), or
/// `None` once it is gone.
async fn raw(client: &Client, path: &str) -> anyhow::Result<Option<String>> {
    let req = http::Request::get(path).body(Vec::new())?;
    match client.request_text(req).await {
        Ok(text) => Ok(Some(text)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The evil tenant's management identity sends a copy with managedFields
/// nested 200 levels deep, which the API server keeps as sent and
/// serde_json will not read into a tree (128 levels; it used to fail
/// every list of copies, so every tenant's sync): the copy syncs, the
/// controllers' first lists after a restart read it and every other
/// object, and deleting it finishes.
async fn copies_nested_too_deep(pair: &mut Pair, values: &mut Values) -> anyhow::Result<()> {
    let (evil_ns, identity) = evil_identity(pair).await?;
    let as_evil = client_from(&identity).await?;
    // The first copy in the management cluster (tenant-evil sorts first):
    // the one the manager's reachability probe, a list of one, gets.
    let name = uuid::Uuid::nil().to_string();
    let mut fields = json!({});
    for _ in 0..200 {
        fields = json!({ "f:x": fields });
    }
    let hidden = values.fresh("evil-deep");
    let body = json!({
        "apiVersion": "kubelb.k8c.io/v1alpha1",
        "kind": "SyncSecret",
        "metadata": {
            "name": name,
            "namespace": evil_ns,
            "labels": {(syncsecret_api::contract::LABEL_ORIGIN_NAME): name},
            "managedFields": [{
                "manager": "evil", "operation": "Update", "apiVersion": "kubelb.k8c.io/v1alpha1",
                "fieldsType": "FieldsV1", "fieldsV1": fields,
            }],
        },
        "data": {"s": k8s_openapi::ByteString(hidden.into_bytes())},
    });
    let path = format!("/apis/kubelb.k8c.io/v1alpha1/namespaces/{evil_ns}/syncsecrets");
    let req = http::Request::post(&path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body)?)?;
    if let Err(e) = as_evil.request_text(req).await {
        println!("    a copy with managedFields 200 levels deep was refused: {e}");
        return Ok(());
    }
    let stored = raw(&pair.management, &format!("{path}/{name}"))
        .await?
        .context("the deep copy is not there")?;
    let depth = stored.matches("f:x").count();
    println!("    a copy with managedFields 200 levels deep was stored ({depth} levels kept)");
    ensure!(
        depth > 128,
        "only {depth} levels were kept: the attack needs more than 128"
    );
    // Read without the managedFields entry too deep to read, it syncs
    // like any copy. It cannot be read as a type (serde's 128 levels): its
    // UID and phase are read by skipping the rest, which has no limit.
    #[derive(serde::Deserialize)]
    struct Keys {
        metadata: KeyMeta,
        status: Option<KeyStatus>,
    }
    #[derive(serde::Deserialize)]
    struct KeyMeta {
        uid: String,
    }
    #[derive(serde::Deserialize)]
    struct KeyStatus {
        phase: Option<String>,
    }
    let secrets: Api<Secret> = Api::namespaced(pair.management.clone(), &evil_ns);
    eventually("the deep copy synced", WAIT, || async {
        let text = raw(&pair.management, &format!("{path}/{name}"))
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        let keys: Keys = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let phase = keys.status.and_then(|s| s.phase);
        if phase.as_deref() != Some("Synced") {
            return Err(format!("phase {phase:?}"));
        }
        secrets
            .get_opt(&keys.metadata.uid)
            .await
            .map_err(|e| e.to_string())?
            .map(|_| ())
            .ok_or_else(|| "no Secret".to_owned())
    })
    .await?;
    good_tenant_converges(pair, "during-deep-copy", &values.fresh("good-deep-1")).await?;
    // The probe has listed it since: the management cluster still answers.
    tokio::time::sleep(syncsecret_runtime::serve::reachable::EVERY * 2).await;
    metric_reads(&pair.manager, "kubelb_manager_management_reachable", 1.0).await?;
    let (_, body) = pair.manager.readyz()?;
    ensure!(
        !body.contains("does not answer"),
        "the manager calls the management cluster down: {body}"
    );
    // Both restarted: their first lists of copies hold it.
    pair.restart_all().await?;
    for c in pair.controllers() {
        ready(c)?;
    }
    good_tenant_converges(pair, "after-deep-copy", &values.fresh("good-deep-2")).await?;

    let req = http::Request::delete(format!("{path}/{name}")).body(Vec::new())?;
    as_evil.request_text(req).await?;
    eventually("the deep copy gone", WAIT, || async {
        match raw(&pair.management, &format!("{path}/{name}")).await {
            Ok(None) => Ok(()),
            Ok(Some(text)) => Err(format!(
                "still there: {}",
                text.split("\"managedFields\"").next().unwrap_or_default()
            )),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;
    Ok(())
}

/// A Secret the synchronizer syncs, its label taken off: the SyncSecret it
/// made goes (and with it the copy and the management Secret), our
/// finalizer is released, and deleting the Secret later does not hang.
/// Once while the ccm runs, once while it is down (its start sweeps).
async fn unlabelled_secrets_are_released(
    pair: &mut Pair,
    values: &mut Values,
) -> anyhow::Result<()> {
    use syncsecret_api::contract::{FINALIZER, LABEL_MANAGED_BY, MANAGED_BY_KUBELB};
    let secrets: Api<Secret> = Api::namespaced(pair.tenants[EVIL].clone(), NS);
    let tenant: Api<SyncSecret> = Api::namespaced(pair.tenants[EVIL].clone(), NS);
    let evil_ns = tenant_namespace(&pair.tenant_names[EVIL]);
    let copies = dynamic(&pair.management, &evil_ns);
    for (name, ccm_down) in [("labelled-live", false), ("labelled-down", true)] {
        let value = values.fresh(name);
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": NS, "labels": {LABEL_MANAGED_BY: MANAGED_BY_KUBELB}},
            "stringData": {"v": value},
        }))?;
        secrets.create(&PostParams::default(), &secret).await?;
        secret_holds(pair, EVIL, name, "v", value.as_bytes()).await?;
        let uid = tenant.get(name).await?.uid().context("no uid")?;
        if ccm_down {
            pair.ccms[EVIL].stop()?;
        }
        secrets
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {LABEL_MANAGED_BY: null}}})),
            )
            .await?;
        if ccm_down {
            pair.ccms[EVIL].start().await?;
        }
        eventually(&format!("{name} released"), WAIT, || async {
            let s = secrets.get(name).await.map_err(|e| e.to_string())?;
            if s.finalizers().iter().any(|f| f == FINALIZER) {
                return Err("our finalizer is still on the Secret".into());
            }
            if tenant
                .get_opt(name)
                .await
                .map_err(|e| e.to_string())?
                .is_some()
            {
                return Err("its SyncSecret is still there".into());
            }
            if copies
                .get_opt(&uid)
                .await
                .map_err(|e| e.to_string())?
                .is_some()
            {
                return Err("its copy is still there".into());
            }
            Ok(())
        })
        .await?;
        secrets.delete(name, &Default::default()).await?;
        eventually(&format!("{name} deleted"), WAIT, || async {
            match secrets.get_opt(name).await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(_) => Err("still there".into()),
            }
        })
        .await?;
        good_tenant_converges(pair, &format!("after-{name}"), &values.fresh("good-sync")).await?;
    }
    Ok(())
}

/// With the chart's RBAC, the manager's own identity may write Secrets in
/// tenant namespaces only: kube-system and a namespace no tenant owns are
/// Forbidden to it, by the API server's authorizer.
async fn the_manager_writes_secrets_only_in_tenant_namespaces(
    pair: &mut Pair,
) -> anyhow::Result<()> {
    use syncsecret_e2e::pair::MANAGER_NAMESPACE;
    let identity = pair
        .plane
        .management()
        .service_account_kubeconfig(MANAGER_NAMESPACE, rbac::MANAGER_ROLE)
        .await?;
    let as_manager = client_from(&identity).await?;
    ensure_namespace(&pair.management, "not-a-tenant").await?;
    let probe = |ns: &str| -> Secret {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "manager-probe", "namespace": ns},
            "stringData": {"k": "v"},
        }))
        .unwrap()
    };
    for ns in ["kube-system", "not-a-tenant"] {
        let secrets: Api<Secret> = Api::namespaced(as_manager.clone(), ns);
        match secrets.create(&PostParams::default(), &probe(ns)).await {
            Err(kube::Error::Api(s)) if s.code == 403 => {
                println!("    the manager may not write in {ns}: {}", s.message);
            }
            other => bail!("the manager wrote a Secret in {ns}: {other:?}"),
        }
    }
    let good_ns = tenant_namespace(&pair.tenant_names[GOOD]);
    let secrets: Api<Secret> = Api::namespaced(as_manager, &good_ns);
    secrets
        .create(&PostParams::default(), &probe(&good_ns))
        .await
        .context("the manager may write in a tenant namespace")?;
    secrets.delete("manager-probe", &Default::default()).await?;
    Ok(())
}

/// What other controllers of the management cluster act on, forged by the
/// tenant: a Helm release record (its type and Helm's labels), a
/// replicator's and a reflector's annotations, our own label keys. The
/// type is refused, the keys are kept off the Secret, and the tenant's own
/// status says which.
async fn forged_types_and_metadata_stay_out(
    pair: &mut Pair,
    values: &mut Values,
) -> anyhow::Result<()> {
    let api = dynamic(&pair.tenants[EVIL], NS);
    let metadata = json!({
        "labels": {"owner": "helm", "name": "platform", "status": "deployed", "version": "99",
                   "kubelb.k8c.io/managed-by": "forged", "app": "allowed-by-the-harness"},
        "annotations": {"replicator.v1.mittwald.de/replicate-to": "kube-system",
                        "reflector.v1.k8s.emberstack.com/reflection-allowed": "true"},
    });
    let forged = |name: &str, type_: &str, value: &str| {
        let mut o = object(
            name,
            json!({"type": type_, "stringData": {"release": value}}),
        );
        o.metadata = serde_json::from_value(json!({
            "name": name, "namespace": NS,
            "labels": metadata["labels"], "annotations": metadata["annotations"],
        }))
        .unwrap();
        o
    };
    api.create(
        &PostParams::default(),
        &forged(
            "helm-release",
            "helm.sh/release.v1",
            &values.fresh("forged-helm"),
        ),
    )
    .await?;
    let value = values.fresh("forged-opaque");
    api.create(
        &PostParams::default(),
        &forged("helm-labels", "Opaque", &value),
    )
    .await?;

    let (reason, message) = eventually("the Helm release type refused", WAIT, || async {
        let (reason, message) = verdict(&api, "helm-release").await?;
        (reason == "TypeDenied")
            .then(|| (reason.clone(), message.clone()))
            .ok_or(format!("{reason}: {message}"))
    })
    .await?;
    println!("    helm-release: {reason}: {message}");
    ensure!(message.contains("--allowed-secret-types"), "{message}");

    secret_holds(pair, EVIL, "helm-labels", "release", value.as_bytes()).await?;
    let evil_ns = tenant_namespace(&pair.tenant_names[EVIL]);
    let copies = dynamic(&pair.management, &evil_ns);
    let tenant: Api<SyncSecret> = Api::namespaced(pair.tenants[EVIL].clone(), NS);
    let uid = tenant.get("helm-labels").await?.uid().context("uid")?;
    let copy_uid = copies.get(&uid).await?.uid().context("copy uid")?;
    let secret: Secret = Api::namespaced(pair.management.clone(), &evil_ns)
        .get(&copy_uid)
        .await?;
    let labels = secret.labels();
    for key in ["owner", "name", "status", "version"] {
        ensure!(
            !labels.contains_key(key),
            "label {key} reached the Secret: {labels:?}"
        );
    }
    ensure!(
        labels.get("kubelb.k8c.io/managed-by").is_none(),
        "a forged label in our domain reached the Secret"
    );
    ensure!(labels.get("app").is_some(), "an allowed label was dropped");
    ensure!(
        labels
            .get(syncsecret_api::contract::LABEL_ORIGIN_NAME)
            .map(String::as_str)
            == Some("helm-labels"),
        "the origin label is the manager's"
    );
    ensure!(
        secret
            .annotations()
            .keys()
            .all(|k| !k.contains("replicator") && !k.contains("reflector")),
        "a replicator or reflector annotation reached the Secret: {:?}",
        secret.annotations()
    );
    // The tenant sees which keys stayed out, in its own status.
    let message = eventually("the tenant told which keys stayed out", WAIT, || async {
        let (reason, message) = verdict(&api, "helm-labels").await?;
        (reason == "SecretSynced" && message.contains("not copied"))
            .then(|| message.clone())
            .ok_or(format!("{reason}: {message}"))
    })
    .await?;
    println!("    helm-labels: {message}");
    for key in ["owner", "status", "replicator.v1.mittwald.de/replicate-to"] {
        ensure!(message.contains(key), "{key} not named: {message}");
    }
    good_tenant_converges(pair, "after-forgery", &values.fresh("good-forgery")).await?;
    Ok(())
}

/// The management cluster bounds what a tenant writes, by the API server,
/// whatever the tenant's objects say: copies in a shape no ccm writes,
/// oversized metadata, and more copies than its quota are refused, and the
/// tenant sees why in its own status.
async fn copies_are_bounded_by_the_management_cluster(
    pair: &mut Pair,
    values: &mut Values,
) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::ResourceQuota;
    let (evil_ns, identity) = evil_identity(pair).await?;
    let copies = dynamic(&client_from(&identity).await?, &evil_ns);
    let uuid = || uuid::Uuid::new_v4().to_string();
    let copy = |name: &str, extra: Value| {
        let mut body = json!({"data": {"k": "dg=="}});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let mut o = object(name, body);
        o.metadata.namespace = Some(evil_ns.clone());
        o.labels_mut().insert(
            syncsecret_api::contract::LABEL_ORIGIN_NAME.to_owned(),
            "x".to_owned(),
        );
        o
    };
    let big = "x".repeat(20_000);
    for (what, o, expected) in [
        (
            "not named by a UID",
            copy("by-hand", json!({})),
            "named by its tenant object's UID",
        ),
        (
            "with stringData",
            copy(&uuid(), json!({"stringData": {"k": values.fresh("clear")}})),
            "data only",
        ),
        (
            "oversized metadata",
            {
                let mut o = copy(&uuid(), json!({}));
                o.annotations_mut().insert("big".to_owned(), big.clone());
                o
            },
            "bytes of labels and annotations, more than the management cluster takes",
        ),
        (
            // 4,200 characters, 16,800 bytes: the cap counts bytes.
            "with metadata over the cap in bytes, not in characters",
            {
                let mut o = copy(&uuid(), json!({}));
                o.annotations_mut()
                    .insert("wide".to_owned(), "\u{1D11E}".repeat(4_200));
                o
            },
            "bytes of labels and annotations, more than the management cluster takes",
        ),
    ] {
        match copies.create(&PostParams::default(), &o).await {
            Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 || s.code == 413 => {
                ensure!(s.message.contains(expected), "{what}: {}", s.message);
                println!(
                    "    a copy {what} refused: {}",
                    s.message.chars().take(200).collect::<String>()
                );
            }
            other => bail!("a copy {what} was not refused: {other:?}"),
        }
    }

    // Through the tenant's own ccm: oversized metadata is refused, and said.
    let api = dynamic(&pair.tenants[EVIL], NS);
    let mut heavy = object(
        "heavy-metadata",
        json!({"stringData": {"v": values.fresh("heavy")}}),
    );
    heavy.annotations_mut().insert("big".to_owned(), big);
    api.create(&PostParams::default(), &heavy).await?;
    let message = eventually("the tenant told its copy is too large", WAIT, || async {
        let (reason, message) = verdict(&api, "heavy-metadata").await?;
        (reason == "ApplyCopyFailed" && message.contains("bytes of labels and annotations"))
            .then(|| message.clone())
            .ok_or(format!("{reason}: {message}"))
    })
    .await?;
    println!(
        "    heavy-metadata: {}",
        message.chars().take(240).collect::<String>()
    );
    ensure!(
        !message.contains("xxxxxxxx"),
        "the metadata value reached the message"
    );

    // A flood beyond the tenant's quota: the platform sets it to what the
    // tenant holds plus three.
    let quotas: Api<ResourceQuota> = Api::namespaced(pair.management.clone(), &evil_ns);
    let used = eventually("the quota counted", WAIT, || async {
        let q = quotas
            .get(syncsecret_api::admission::QUOTA_NAME)
            .await
            .map_err(|e| e.to_string())?;
        q.status
            .and_then(|s| s.used)
            .and_then(|u| u.get("count/syncsecrets.kubelb.k8c.io").cloned())
            .and_then(|q| q.0.parse::<u32>().ok())
            .ok_or_else(|| "not counted yet".to_owned())
    })
    .await?;
    quotas
        .patch(
            syncsecret_api::admission::QUOTA_NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hard": {"count/syncsecrets.kubelb.k8c.io": (used + 3).to_string()}}})),
        )
        .await?;
    let flood: Vec<String> = (0..6).map(|i| format!("flood-{i}")).collect();
    for name in &flood {
        create(
            &api,
            name,
            json!({"stringData": {"v": values.fresh("flood")}}),
        )
        .await?;
    }
    let (synced, refused) = eventually("the flood judged", WAIT, || async {
        let (mut synced, mut refused) = (0, 0);
        for name in &flood {
            match verdict(&api, name).await {
                Ok((r, _)) if r == "SecretSynced" => synced += 1,
                Ok((r, m)) if r == "ApplyCopyFailed" && m.contains("exceeded quota") => {
                    refused += 1
                }
                _ => {}
            }
        }
        (synced + refused == flood.len())
            .then_some((synced, refused))
            .ok_or_else(|| format!("{synced} synced, {refused} refused"))
    })
    .await?;
    println!(
        "    a flood of {}: {synced} synced, {refused} refused by the quota",
        flood.len()
    );
    ensure!(
        synced == 3 && refused == 3,
        "{synced} synced, {refused} refused"
    );
    good_tenant_converges(pair, "during-flood", &values.fresh("good-flood")).await?;
    ready(&pair.manager)?;
    // The platform gives the quota back; the refused ones sync by themselves.
    quotas
        .patch(
            syncsecret_api::admission::QUOTA_NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hard": {"count/syncsecrets.kubelb.k8c.io":
                syncsecret_api::admission::DEFAULT_COPIES.to_string()}}})),
        )
        .await?;
    eventually(
        "the whole flood synced once there is room",
        WAIT,
        || async {
            for name in &flood {
                let (reason, _) = verdict(&api, name).await?;
                if reason != "SecretSynced" {
                    return Err(format!("{name}: {reason}"));
                }
            }
            Ok(())
        },
    )
    .await?;
    Ok(())
}

/// The evil tenant runs a second cluster's ccm under its first one's
/// cluster name (and management identity): each sees copies the other
/// made, says so (gauge, Warning event, `/readyz` note), and neither's
/// sweep deletes the other's copies.
async fn a_second_ccm_with_the_same_cluster_name(
    pair: &mut Pair,
    values: &mut Values,
) -> anyhow::Result<()> {
    let (evil_ns, identity) = evil_identity(pair).await?;
    let args: Vec<String> = pair.ccms[SECOND]
        .base_args()
        .iter()
        .map(|a| {
            if a.starts_with("--cluster-name=") {
                format!("--cluster-name={}", pair.tenant_names[EVIL])
            } else if a.starts_with("--kubelb-kubeconfig=") {
                format!("--kubelb-kubeconfig={}", identity.display())
            } else {
                a.clone()
            }
        })
        .collect();
    pair.ccms[SECOND].stop()?;
    let mut claimer = pair.ccms[SECOND].variant("syncsecret-ccm-claims-evil", args)?;
    claimer.wait_ready().await?;
    ensure_namespace(&pair.tenants[SECOND], NS).await?;
    let second = dynamic(&pair.tenants[SECOND], NS);
    let value = values.fresh("second-cluster");
    create(&second, "from-second", json!({"stringData": {"v": value}})).await?;
    let second_uid = Api::<SyncSecret>::namespaced(pair.tenants[SECOND].clone(), NS)
        .get("from-second")
        .await?
        .uid()
        .context("uid")?;
    let copies = dynamic(&pair.management, &evil_ns);
    eventually("the second cluster's copy", WAIT, || async {
        copies
            .get_opt(&second_uid)
            .await
            .map_err(|e| e.to_string())?
            .map(|_| ())
            .ok_or_else(|| "no copy yet".to_owned())
    })
    .await?;

    // The first cluster's ccm restarts (it sweeps at start, and here every
    // 2 s): the copy it did not make stays, and both say two clusters
    // claim the name.
    pair.ccms[EVIL]
        .restart_with(&["--orphan-sweep-period=2"])
        .await?;
    for c in [&pair.ccms[EVIL], &claimer] {
        metric_reads_at_least(c, "kubelb_ccm_cluster_name_conflicts", 1.0).await?;
        eventually(
            &format!("{} notes the conflict", c.name()),
            WAIT,
            || async {
                let (_, body) = c.readyz().map_err(|e| e.to_string())?;
                body.contains("another cluster").then_some(()).ok_or(body)
            },
        )
        .await?;
    }
    // Every tenant object of each cluster says so in its status: Synced
    // ones, one the manager failed (helm-release) and one the ccm failed
    // (heavy-metadata) too.
    for (cluster, name) in [
        (EVIL, "after-restart"),
        (EVIL, "helm-release"),
        (EVIL, "heavy-metadata"),
        (SECOND, "from-second"),
    ] {
        let api = dynamic(&pair.tenants[cluster], NS);
        let message = eventually(
            &format!("{name} shows the cluster-name conflict"),
            WAIT,
            || async {
                let o = api.get(name).await.map_err(|e| e.to_string())?;
                let conditions = o.data["status"]["conditions"].as_array().cloned();
                conditions
                    .into_iter()
                    .flatten()
                    .find(|c| c["type"] == "ClusterNameConflict" && c["status"] == "True")
                    .and_then(|c| c["message"].as_str().map(str::to_owned))
                    .ok_or_else(|| "no ClusterNameConflict condition yet".to_owned())
            },
        )
        .await?;
        println!("    {name}: ClusterNameConflict: {message}");
    }
    // About the cluster itself (its kube-system Namespace): such events
    // are kept in `default`.
    has_event(
        &pair.tenants[EVIL],
        "default",
        "kube-system",
        "ClusterNameConflict",
    )
    .await?;
    ensure!(
        copies.get_opt(&second_uid).await?.is_some(),
        "the first cluster's ccm deleted the second cluster's copy"
    );
    good_tenant_converges(pair, "after-name-conflict", &values.fresh("good-conflict")).await?;

    // The second cluster gone (its ccm stopped, its copy removed by the
    // platform): the first cluster's objects no longer say so.
    claimer.stop()?;
    dynamic(&pair.management, &evil_ns)
        .delete(&second_uid, &Default::default())
        .await?;
    eventually("the second cluster's copy gone", WAIT, || async {
        match copies.get_opt(&second_uid).await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err("still there".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;
    // No restart: the running ccm's next sweep finds the conflict gone.
    let api: Api<SyncSecret> = Api::namespaced(pair.tenants[EVIL].clone(), NS);
    eventually(
        "after-restart no longer shows the conflict",
        WAIT,
        || async {
            let o = api.get("after-restart").await.map_err(|e| e.to_string())?;
            let conflict = o
                .status
                .and_then(|s| s.conditions)
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "ClusterNameConflict");
            (!conflict)
                .then_some(())
                .ok_or_else(|| "still shows it".to_owned())
        },
    )
    .await?;
    pair.ccms[EVIL].restart_with(&[]).await?;
    Ok(())
}

/// What etcd holds for the management cluster, read directly: no value of
/// the run in clear or in base64 anywhere, the copy and the Secret stored
/// encrypted. The tenant cluster, which encrypts nothing, is the control:
/// there the same read finds the value. The audit log records Secrets and
/// copies at Metadata level, without a value.
async fn stored_encrypted_and_audited_without_values(
    pair: &Pair,
    values: &mut Values,
) -> anyhow::Result<()> {
    let value = values.fresh("good-at-rest");
    good_tenant_converges(pair, "at-rest", &value).await?;
    let (copy, secret) = pair.synced(GOOD, NS, "at-rest", |_| true).await?;
    let tenant_ns = tenant_namespace(&pair.tenant_names[GOOD]);
    let needles = needles(&values.0);
    let holds_value = |stored: &[u8]| {
        needles
            .iter()
            .any(|n| stored.windows(n.len()).any(|w| w == n.as_bytes()))
    };

    let stored = pair.plane.etcd_values("/management/")?;
    let in_clear: Vec<&str> = stored
        .iter()
        .filter(|(_, v)| holds_value(v))
        .map(|(k, _)| k.as_str())
        .collect();
    ensure!(
        in_clear.is_empty(),
        "etcd holds a value in clear under {} keys, among them {:?}",
        in_clear.len(),
        &in_clear[..in_clear.len().min(5)]
    );
    let encrypted = |key: String| -> anyhow::Result<()> {
        let (_, v) = stored
            .iter()
            .find(|(k, _)| *k == key)
            .with_context(|| format!("etcd has no {key}"))?;
        ensure!(
            v.starts_with(b"k8s:enc:secretbox:v1:key1:"),
            "{key} is not stored encrypted: it starts with {:?}",
            String::from_utf8_lossy(&v[..v.len().min(24)])
        );
        Ok(())
    };
    encrypted(format!(
        "/management/kubelb.k8c.io/syncsecrets/{tenant_ns}/{}",
        copy.name_any()
    ))?;
    encrypted(format!(
        "/management/secrets/{tenant_ns}/{}",
        secret.name_any()
    ))?;
    let tenant_key = format!(
        "/{}/kubelb.k8c.io/syncsecrets/{NS}/at-rest",
        pair.tenant_names[GOOD]
    );
    let control = pair.plane.etcd_values(&tenant_key)?;
    ensure!(
        control.iter().any(|(_, v)| holds_value(v)),
        "the control failed: the tenant cluster's unencrypted {tenant_key} does not show the value"
    );
    println!(
        "    etcd: {} management keys, none holds a value; the copy and the Secret are encrypted; the tenant cluster's object shows its value",
        stored.len()
    );

    let audit_log = pair
        .plane
        .audit_log()
        .context("the management cluster keeps no audit log")?;
    let audit = std::fs::read_to_string(audit_log)
        .with_context(|| format!("reading {}", audit_log.display()))?;
    let mut audited = std::collections::BTreeMap::<String, usize>::new();
    for line in audit.lines() {
        let event: Value = serde_json::from_str(line).context("an audit line that is not JSON")?;
        let resource = event["objectRef"]["resource"].as_str().unwrap_or_default();
        ensure!(
            event["level"] == "Metadata",
            "an audit event at level {} for {resource}",
            event["level"]
        );
        ensure!(
            event.get("requestObject").is_none() && event.get("responseObject").is_none(),
            "an audit event for {resource} carries a body"
        );
        *audited.entry(resource.to_owned()).or_default() += 1;
    }
    for resource in ["secrets", "syncsecrets"] {
        ensure!(
            audited.get(resource).copied().unwrap_or(0) > 0,
            "no audit event for {resource}: {audited:?}"
        );
    }
    ensure!(
        !holds_value(audit.as_bytes()),
        "the audit log holds a value"
    );
    println!("    audit log at Metadata level, no value: {audited:?}");
    Ok(())
}

/// Waits until `metric` on `c` reads at least `value`.
async fn metric_reads_at_least(
    c: &ControllerProcess,
    metric: &str,
    value: f64,
) -> anyhow::Result<()> {
    metric_reaches(c, metric, &format!(">= {value}"), |v| v >= value).await?;
    Ok(())
}
