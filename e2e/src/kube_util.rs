//! Small helpers on top of kube for tests: install the generated CRD, wait
//! for a condition.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};

use crate::{HarnessError, repo_root};

/// Field manager of what tests apply.
pub const TEST_FIELD_MANAGER: &str = "syncsecret-e2e";

/// Reads the generated CRD from `config/` (what users install) and parses it.
pub fn generated_crd() -> Result<CustomResourceDefinition, HarnessError> {
    let path = repo_root().join(syncsecret_runtime::generate::manifests::CRD_PATH);
    read_yaml(&path)
}

/// Parses a one-document YAML file.
pub fn read_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, HarnessError> {
    let text = std::fs::read_to_string(path).map_err(|e| HarnessError::Io {
        path: path.to_owned(),
        source: e,
    })?;
    serde_yaml_ng::from_str(&text).map_err(|e| HarnessError::Manifest {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Installs the generated SyncSecret CRD and waits until it is Established.
pub async fn install_crd(client: &Client) -> Result<(), HarnessError> {
    install_crd_as(client, &generated_crd()?).await
}

/// Installs (or replaces) `crd` and waits until it is Established.
pub async fn install_crd_as(
    client: &Client,
    crd: &CustomResourceDefinition,
) -> Result<(), HarnessError> {
    let name = crd.metadata.name.clone().unwrap_or_default();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(
        &name,
        &PatchParams::apply(TEST_FIELD_MANAGER).force(),
        &Patch::Apply(crd),
    )
    .await?;
    eventually(
        &format!("CRD {name} Established"),
        Duration::from_secs(30),
        || async {
            let crd = api.get(&name).await.map_err(|e| e.to_string())?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                Ok(())
            } else {
                Err("not Established yet".into())
            }
        },
    )
    .await
}

/// Polls `check` every 100 ms until it returns Ok or `timeout` passes; the
/// error then carries the last failure. For conditions that an event would
/// make true soon, never to wait a fixed time.
pub async fn eventually<F, Fut, T>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> Result<T, HarnessError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(last) if Instant::now() >= deadline => {
                return Err(HarnessError::Timeout {
                    what: what.to_owned(),
                    seconds: timeout.as_secs(),
                    detail: format!("last: {last}"),
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The name in object metadata ("" when unset).
pub fn name_of(meta: &kube::api::ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

/// Waits (up to a minute) for an event with `reason` about object `name`
/// in namespace `ns`, and returns it.
pub async fn has_event(
    client: &Client,
    ns: &str,
    name: &str,
    reason: &str,
) -> Result<Event, HarnessError> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    eventually(
        &format!("event {reason} on {ns}/{name}"),
        Duration::from_secs(60),
        || async {
            let list = events
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let count = list.items.len();
            list.items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                })
                .ok_or_else(|| format!("{count} events, none {reason}"))
        },
    )
    .await
}

/// Applies (as [`TEST_FIELD_MANAGER`]) the SyncSecret `name` whose one key
/// `value` holds `value`: what the tests that follow a value through both
/// hops write.
pub async fn put_value(
    api: &Api<syncsecret_api::SyncSecret>,
    name: &str,
    value: &str,
) -> Result<(), HarnessError> {
    let obj = syncsecret_api::SyncSecret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        data: Some(std::collections::BTreeMap::from([(
            "value".to_owned(),
            k8s_openapi::ByteString(value.as_bytes().to_vec()),
        )])),
        ..Default::default()
    };
    let params = PatchParams::apply(TEST_FIELD_MANAGER).force();
    api.patch(name, &params, &Patch::Apply(&obj)).await?;
    Ok(())
}

/// Whether a Secret's key `value` holds `value` (see [`put_value`]).
pub fn holds_value(value: &str) -> impl Fn(&k8s_openapi::api::core::v1::Secret) -> bool + '_ {
    move |s| {
        s.data
            .as_ref()
            .and_then(|d| d.get("value"))
            .is_some_and(|v| v.0 == value.as_bytes())
    }
}

/// Entry `i` of [`copy_at_every_bound`]'s data: its key and base64 value,
/// the value's bytes starting with `tag`.
pub fn bound_entry(data_bytes: usize, i: usize, tag: &str) -> (String, serde_json::Value) {
    use syncsecret_api::bounds::{DATA_KEYS, ENTRY_BYTES};
    // As the policy counts it: the key twice, the value, ENTRY_BYTES.
    let per_key = (data_bytes / DATA_KEYS.default as usize).saturating_sub(ENTRY_BYTES as usize);
    // Four characters of key at least, the rest base64 without padding.
    let value_len = per_key.saturating_sub(8) / 4 * 4;
    let key_len = (per_key - value_len) / 2;
    let mut raw = format!("{tag}:{i}:").into_bytes();
    raw.resize(value_len / 4 * 3, b'x');
    (
        format!("{i:0>key_len$}"),
        serde_json::json!(k8s_openapi::ByteString(raw)),
    )
}

/// A copy in tenant namespace `namespace` as a tenant's identity may write
/// it, at every per-copy bound of the manager chart's defaults
/// (`syncsecret_api::bounds`) but `data_bytes` (a platform may raise it):
/// as many keys as allowed, keys and base64 values filling `data_bytes`
/// exactly, labels and annotations filling the metadata bytes exactly,
/// our finalizer (as a ccm writes it), managedFields naming made-up fields up to their bound but for
/// [`MANAGED_FIELDS_HEADROOM`]. Each value's bytes start with `tag`. As
/// JSON, named by a fresh UID.
pub fn copy_at_every_bound(namespace: &str, data_bytes: usize, tag: &str) -> serde_json::Value {
    use syncsecret_api::bounds::{DATA_KEYS, ENTRY_BYTES, MANAGED_FIELDS_BYTES, METADATA_BYTES};
    use syncsecret_api::contract::LABEL_ORIGIN_NAME;
    let data: serde_json::Map<String, serde_json::Value> = (0..DATA_KEYS.default as usize)
        .map(|i| bound_entry(data_bytes, i, tag))
        .collect();
    let label = (LABEL_ORIGIN_NAME, "by-hand");
    // As the policy counts them: keys twice, values, ENTRY_BYTES each.
    let entry = |key: &str, value: usize| 2 * key.len() + value + ENTRY_BYTES as usize;
    let pad = METADATA_BYTES.default as usize - entry(label.0, label.1.len()) - entry("pad", 0);
    serde_json::json!({
        "apiVersion": syncsecret_api::v1alpha1::API_VERSION,
        "kind": syncsecret_api::v1alpha1::KIND,
        "metadata": {
            "name": uuid::Uuid::new_v4().to_string(),
            "namespace": namespace,
            "labels": {label.0: label.1},
            "annotations": {"pad": "p".repeat(pad)},
            "finalizers": [syncsecret_api::contract::FINALIZER],
            "managedFields": [made_up_fields(
                MANAGED_FIELDS_BYTES.default as usize - MANAGED_FIELDS_HEADROOM,
            )],
        },
        "data": data,
    })
}

/// What a copy's managedFields need beyond a tenant's made-up fields, by
/// `syncsecret_api::bounds::MANAGED_FIELDS_BYTES`'s count: the entry of
/// whoever creates it and the manager's finalizer and status entries
/// (about 1.5 KiB), and room for one more.
pub const MANAGED_FIELDS_HEADROOM: usize = 2048;

/// A managedFields entry of made-up fields (under `f:spec`, which a copy
/// has not) of `chars` characters as the admission policy counts them
/// (`syncsecret_api::bounds::MANAGED_FIELDS_BYTES`): the API server keeps
/// the entries a client sends.
pub fn made_up_fields(chars: usize) -> serde_json::Value {
    // The entry counts its own, `f:spec` its name and 6, each field the
    // same.
    let entry = syncsecret_api::bounds::MANAGED_FIELDS_ENTRY_BYTES as usize;
    let mut left = chars.saturating_sub(entry + "f:spec".len() + 6);
    let mut fields = serde_json::Map::new();
    while left >= 16 {
        let name_len = left.min(256) - 6;
        let name = format!("f:{:0>width$}", fields.len(), width = name_len - 2);
        left -= name.len() + 6;
        fields.insert(name, serde_json::json!({}));
    }
    serde_json::json!({
        "manager": "made-up",
        "operation": "Update",
        "apiVersion": syncsecret_api::v1alpha1::API_VERSION,
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": fields},
    })
}

/// The manager's Lease (its own, unsharded: syncsecret-manager's
/// `LEASE_NAME`): its holder and how often it changed hands.
pub async fn manager_lease(client: &Client) -> Result<(String, i32), HarnessError> {
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
        client.clone(),
        crate::pair::MANAGER_NAMESPACE,
    )
    .get("syncsecret-manager")
    .await?;
    let spec = lease.spec.unwrap_or_default();
    Ok((
        spec.holder_identity.unwrap_or_default(),
        spec.lease_transitions.unwrap_or_default(),
    ))
}
