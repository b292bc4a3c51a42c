//! What every attack of the hostile suite uses: the two tenants, the
//! evil one's management identity, objects written as plain JSON, and the
//! checks that the good tenant still converges.

pub(crate) use std::time::Duration;

pub(crate) use anyhow::{Context as _, bail, ensure};
pub(crate) use k8s_openapi::api::core::v1::Secret;
pub(crate) use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
pub(crate) use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
pub(crate) use kube::{Api, Client, ResourceExt};
pub(crate) use serde_json::{Value, json};
pub(crate) use syncsecret_api::contract::tenant_namespace;
pub(crate) use syncsecret_api::{SyncSecret, SyncSecretPhase};
pub(crate) use syncsecret_e2e::control_plane::{Options, client_from};
pub(crate) use syncsecret_e2e::kube_util::{eventually, generated_crd, has_event, install_crd_as};
pub(crate) use syncsecret_e2e::leaks::needles;
pub(crate) use syncsecret_e2e::pair::{
    ControllerProcess, Launch, Pair, ensure_namespace, metric_reaches,
};
pub(crate) use syncsecret_runtime::generate::rbac;

pub(crate) const GOOD: usize = 0;
pub(crate) const EVIL: usize = 1;
pub(crate) const SECOND: usize = 2;
pub(crate) const WAIT: Duration = Duration::from_secs(60);
pub(crate) const NS: &str = "hostile";

/// Every value either tenant wrote; none may leak.
pub(crate) struct Values(pub(crate) Vec<String>);

impl Values {
    pub(crate) fn fresh(&mut self, what: &str) -> String {
        let v = format!("{what}-{}", uuid::Uuid::new_v4().simple());
        self.0.push(v.clone());
        v
    }
}

/// A tenant object as the API server would take it: the JSON as given,
/// in namespace `NS`.
pub(crate) fn object(name: &str, body: Value) -> DynamicObject {
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

/// A copy as a tenant's identity could write it by hand in `namespace`:
/// `body` as given, with the origin label every copy must carry.
pub(crate) fn copy_in(namespace: &str, name: &str, body: Value) -> DynamicObject {
    let mut o = object(name, body);
    o.metadata.namespace = Some(namespace.to_owned());
    o.labels_mut().insert(
        syncsecret_api::contract::LABEL_ORIGIN_NAME.to_owned(),
        "by-hand".to_owned(),
    );
    o
}

/// The manager's writes of `resource/verb` (e.g. `syncsecrets/patch`) so far.
pub(crate) fn manager_writes(pair: &Pair, resource_verb: &str) -> anyhow::Result<f64> {
    let metrics = pair.manager.metrics()?;
    Ok(
        syncsecret_e2e::pair::writes_by_resource(&metrics, "kubelb_manager")
            .get(resource_verb)
            .copied()
            .unwrap_or(0.0),
    )
}

/// What the API server answered a write it refused: its message, if the
/// refusal was an admission refusal (403, 413 or 422).
pub(crate) fn refusal<T: std::fmt::Debug>(
    what: &str,
    written: Result<T, kube::Error>,
) -> anyhow::Result<String> {
    match written {
        Err(kube::Error::Api(s)) if [403, 413, 422].contains(&s.code) => {
            println!(
                "    {what} refused: {} ({} bytes)",
                s.message.chars().take(300).collect::<String>(),
                s.message.len()
            );
            Ok(s.message)
        }
        other => bail!("{what} was not refused: {:?}", other.map(|_| "stored")),
    }
}

pub(crate) fn dynamic(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<SyncSecret>(&()))
}

pub(crate) async fn create(
    api: &Api<DynamicObject>,
    name: &str,
    body: Value,
) -> anyhow::Result<()> {
    api.create(&PostParams::default(), &object(name, body))
        .await
        .with_context(|| format!("creating {name}"))?;
    Ok(())
}

/// The evil tenant's namespace in the management cluster, and a
/// kubeconfig of the identity its ccm holds there (a token of the ccm
/// chart's ServiceAccount, bound by the chart's Role only).
pub(crate) async fn evil_identity(pair: &Pair) -> anyhow::Result<(String, std::path::PathBuf)> {
    let evil_ns = tenant_namespace(&pair.tenant_names[EVIL]);
    let identity = pair
        .plane
        .management()
        .service_account_kubeconfig(&evil_ns, rbac::CCM_ROLE)
        .await?;
    Ok((evil_ns, identity))
}

/// The good tenant's object `name` with `value`: it must sync, as always.
pub(crate) async fn good_tenant_converges(
    pair: &Pair,
    name: &str,
    value: &str,
) -> anyhow::Result<()> {
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
pub(crate) fn ready(c: &ControllerProcess) -> anyhow::Result<()> {
    let (ok, body) = c.readyz()?;
    ensure!(ok, "{} is not ready: {body}", c.name());
    Ok(())
}

/// The generated CRD with `data` replaced: what a tenant admin (or a
/// platform still on KubeLB's CRD) may have installed instead of ours.
pub(crate) fn crd_with_data(data: Value) -> CustomResourceDefinition {
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
pub(crate) fn kubelb_data() -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string", "format": "byte"}})
}

/// A `data` that takes anything at all.
pub(crate) fn anything_data() -> Value {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// Waits until the API server serves `data`'s new schema (a create that
/// only the new schema allows goes through), then deletes the probe.
pub(crate) async fn schema_served(client: &Client, ns: &str, probe: Value) -> anyhow::Result<()> {
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
pub(crate) async fn metric_reads(
    c: &ControllerProcess,
    metric: &str,
    value: f64,
) -> anyhow::Result<()> {
    metric_reaches(c, metric, &format!("= {value}"), |v| v == value).await?;
    Ok(())
}

/// The `Synced` condition's reason and message of `name`, read as plain
/// JSON (an object no type reads still has a status).
pub(crate) async fn verdict(
    api: &Api<DynamicObject>,
    name: &str,
) -> Result<(String, String), String> {
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
pub(crate) async fn secret_holds(
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

/// Waits until `metric` on `c` reads at least `value`.
pub(crate) async fn metric_reads_at_least(
    c: &ControllerProcess,
    metric: &str,
    value: f64,
) -> anyhow::Result<()> {
    metric_reaches(c, metric, &format!(">= {value}"), |v| v >= value).await?;
    Ok(())
}

/// One write the management cluster's audit log holds.
pub(crate) struct Audited {
    pub(crate) user: String,
    pub(crate) verb: String,
    pub(crate) resource: String,
    pub(crate) subresource: String,
    pub(crate) namespace: String,
    pub(crate) name: String,
}

/// Every write that succeeded, as the management cluster's audit log holds
/// them, in its order. A write is there a moment after it was answered.
pub(crate) fn audited_writes(pair: &Pair) -> anyhow::Result<Vec<Audited>> {
    let log = pair
        .plane
        .audit_log()
        .context("the management cluster keeps no audit log")?;
    let text = std::fs::read_to_string(log)?;
    let text_of = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| {
            e["stage"] == "ResponseComplete"
                && !matches!(e["verb"].as_str(), Some("get" | "list" | "watch"))
                && e["responseStatus"]["code"]
                    .as_u64()
                    .is_some_and(|c| c < 300)
        })
        .map(|e| Audited {
            user: text_of(&e["user"]["username"]),
            verb: text_of(&e["verb"]),
            resource: text_of(&e["objectRef"]["resource"]),
            subresource: text_of(&e["objectRef"]["subresource"]),
            namespace: text_of(&e["objectRef"]["namespace"]),
            name: text_of(&e["objectRef"]["name"]),
        })
        .collect())
}

/// Waits until the copy `name` (`what`) has synced.
pub(crate) async fn synced(api: &Api<DynamicObject>, name: &str, what: &str) -> anyhow::Result<()> {
    eventually(&format!("{what} synced"), WAIT, || async {
        let (reason, message) = verdict(api, name).await?;
        (reason == "SecretSynced")
            .then_some(())
            .ok_or(format!("{reason}: {message}"))
    })
    .await?;
    Ok(())
}

/// Waits until the copy `name` is gone.
pub(crate) async fn gone(api: &Api<DynamicObject>, name: &str) -> anyhow::Result<()> {
    eventually(&format!("copy {name} gone"), WAIT, || async {
        match api.get_opt(name).await {
            Ok(None) => Ok(()),
            Ok(Some(o)) => Err(format!(
                "{} finalizers left",
                o.metadata.finalizers.map_or(0, |f| f.len())
            )),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;
    Ok(())
}
