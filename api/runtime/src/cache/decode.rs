//! Reading what the API server hands us as leniently as it accepts it.
//!
//! Everything a tenant writes is hostile, and the API server accepts shapes
//! our types would refuse: base64 with leftover bits or line breaks (Go's
//! decoder takes both; issue 18), a status field in a form the CRD's
//! `format` allows and `k8s-openapi` does not, or anything at all under a
//! CRD other than ours. One such object must never fail a list or watch
//! page for the others, and what failed must never be shown with its
//! value.
//!
//! So every object is read through [`Lenient`]: decoded as `K` when it can
//! be; failing that, decoded without its `status` (the controllers own
//! status and write it anew); failing that, kept as [`Undecodable`]: its
//! metadata and a reason that names the field and what was expected there,
//! never what was found.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use serde_json::value::RawValue;
use syncsecret_api::quote;

/// An object that could not be read as its type: what the API server
/// stored is not what the type allows (a CRD other than ours, or a shape
/// the CRD lets through).
#[derive(Clone, Default, PartialEq)]
pub struct Undecodable {
    /// Its metadata (as much as could be read: at least the name).
    pub metadata: ObjectMeta,
    /// Which field, and what it should have been; never its value.
    pub reason: String,
}

impl std::fmt::Debug for Undecodable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Undecodable")
            .field("namespace", &self.metadata.namespace)
            .field("name", &self.metadata.name)
            .field("reason", &self.reason)
            .finish()
    }
}

/// An object as read from the API server: decoded, or kept as
/// [`Undecodable`]. Its `Deserialize` fails only on what is not a JSON
/// object with a name, which no API server sends.
#[derive(Clone, Debug)]
pub enum Lenient<K> {
    /// Read as `K` (without its status, if only the status was unreadable).
    Decoded(K),
    /// Not readable as `K` (boxed: rare, and larger than most `K`).
    Undecodable(Box<Undecodable>),
}

impl<K: DeserializeOwned> Lenient<K> {
    /// Reads one object from its JSON text.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        // The common case costs one decode.
        if let Ok(object) = serde_json::from_str::<K>(text) {
            return Ok(Self::Decoded(object));
        }
        match serde_json::from_str::<Value>(text) {
            Ok(value) => Self::from_value(value),
            // Nested deeper than serde_json reads into a tree (128 levels).
            // The API server keeps a client's `managedFields` as sent: read
            // without the entries too deep to read (ours, which say what
            // our field managers wrote, are shallow), else without any.
            Err(e) if is_too_deep(&e) => {
                for keep_readable in [true, false] {
                    if let Some(shallower) = without_deep_managed_fields(text, keep_readable)
                        && let Ok(value) = serde_json::from_str::<Value>(&shallower)
                    {
                        return Self::from_value(value);
                    }
                }
                too_deep(text)
            }
            Err(e) => Err(e),
        }
    }

    /// Reads one object from a JSON tree.
    pub fn from_value(mut value: Value) -> Result<Self, serde_json::Error> {
        let Some(fields) = value.as_object_mut() else {
            return Err(serde_json::Error::custom(
                "an object in the answer is not a JSON object",
            ));
        };
        let metadata = read_metadata(fields.get("metadata"))?;
        let first = match serde_path_to_error::deserialize::<_, K>(Value::Object(fields.clone())) {
            Ok(object) => return Ok(Self::Decoded(object)),
            Err(e) => e,
        };
        let reason = describe(&first);
        if first.path().iter().next().is_some_and(is_status) {
            // A status we cannot read is one we write anew.
            fields.remove("status");
            if let Ok(object) = serde_json::from_value::<K>(value) {
                return Ok(Self::Decoded(object));
            }
        }
        Ok(Self::Undecodable(Box::new(Undecodable {
            metadata,
            reason,
        })))
    }
}

fn is_status(segment: &serde_path_to_error::Segment) -> bool {
    matches!(segment, serde_path_to_error::Segment::Map { key } if key == "status")
}

/// How deep serde_json reads a JSON tree.
const DEEPEST: usize = 128;

fn is_too_deep(e: &serde_json::Error) -> bool {
    e.to_string().starts_with("recursion limit exceeded")
}

/// The object's text without the `metadata.managedFields` entries too deep
/// to read (`keep_readable`) or without any (read as raw text, which has
/// no depth limit); `None` when it has none.
fn without_deep_managed_fields(text: &str, keep_readable: bool) -> Option<String> {
    let mut object: BTreeMap<String, Box<RawValue>> = serde_json::from_str(text).ok()?;
    let mut metadata: BTreeMap<String, Box<RawValue>> =
        serde_json::from_str(object.get("metadata")?.get()).ok()?;
    let entries: Vec<Box<RawValue>> =
        serde_json::from_str(metadata.remove("managedFields")?.get()).ok()?;
    if keep_readable {
        // Read where it sits: three levels down (object, metadata, list).
        let readable: Vec<Box<RawValue>> = entries
            .into_iter()
            .filter(|e| serde_json::from_str::<Value>(&format!("[[[{}]]]", e.get())).is_ok())
            .collect();
        metadata.insert(
            "managedFields".to_owned(),
            serde_json::value::to_raw_value(&readable).ok()?,
        );
    }
    object.insert(
        "metadata".to_owned(),
        serde_json::value::to_raw_value(&metadata).ok()?,
    );
    serde_json::to_string(&object).ok()
}

/// An object too deep to read as a tree even without its managedFields
/// (under a CRD of the tenant's that lets anything through): kept as
/// [`Undecodable`] with what keys it and what a finalizer needs.
fn too_deep<K>(text: &str) -> Result<Lenient<K>, serde_json::Error> {
    #[derive(Deserialize)]
    struct Keys {
        metadata: KeyFields,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct KeyFields {
        name: Option<String>,
        namespace: Option<String>,
        uid: Option<String>,
        resource_version: Option<String>,
        generation: Option<i64>,
        finalizers: Option<Vec<String>>,
        deletion_timestamp: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    }
    let Keys { metadata: m } = serde_json::from_str(text)?;
    let name = m
        .name
        .ok_or_else(|| serde_json::Error::custom("an object in the answer has no name"))?;
    Ok(Lenient::Undecodable(Box::new(Undecodable {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: m.namespace,
            uid: m.uid,
            resource_version: m.resource_version,
            generation: m.generation,
            finalizers: m.finalizers,
            deletion_timestamp: m.deletion_timestamp,
            ..ObjectMeta::default()
        },
        reason: format!("it is nested deeper than {DEEPEST} levels"),
    })))
}

/// The metadata, or (should even it not decode) the name, namespace, UID
/// and resource version as strings: enough to key the object in a cache
/// and to report on it.
fn read_metadata(metadata: Option<&Value>) -> Result<ObjectMeta, serde_json::Error> {
    if let Some(m) = metadata
        && let Ok(meta) = ObjectMeta::deserialize(m)
        && meta.name.is_some()
    {
        return Ok(meta);
    }
    let text = |key: &str| {
        metadata
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let name = text("name")
        .ok_or_else(|| serde_json::Error::custom("an object in the answer has no name"))?;
    Ok(ObjectMeta {
        name: Some(name),
        namespace: text("namespace"),
        uid: text("uid"),
        resource_version: text("resourceVersion"),
        ..ObjectMeta::default()
    })
}

/// What failed, by path and expectation. serde's messages quote the value
/// found (`invalid value: string "…", expected …`): only the part after
/// `expected` and a missing field's name are kept.
fn describe(error: &serde_path_to_error::Error<serde_json::Error>) -> String {
    // A tenant's own CRD may let keys of any length through.
    let path = quote::cut(&error.path().to_string(), quote::SHORT);
    let message = error.inner().to_string();
    if let Some(field) = message.strip_prefix("missing field ") {
        format!(
            "field {path} is missing field {}",
            quote::quoted(field, quote::SHORT)
        )
    } else if let Some((_, expected)) = message.rsplit_once(", expected ") {
        format!(
            "field {path} should be {}",
            quote::quoted(expected, quote::SHORT)
        )
    } else if message.starts_with("the value of key ") {
        // Our own base64 message: names the key, not the value.
        format!(
            "field {path}: {}",
            quote::quoted(&message, quote::SHORT * 2)
        )
    } else {
        format!("field {path} does not have the form the type expects")
    }
}

impl<'de, K: DeserializeOwned> Deserialize<'de> for Lenient<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Self::from_json(raw.get()).map_err(D::Error::custom)
    }
}

// So that an `Api<Lenient<K>>` reads `K`'s resource leniently.
resource_of_k!(
    Lenient,
    |this| match this {
        Self::Decoded(o) => o.meta(),
        Self::Undecodable(u) => &u.metadata,
    },
    match this {
        Self::Decoded(o) => o.meta_mut(),
        Self::Undecodable(u) => &mut u.metadata,
    }
);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use syncsecret_api::SyncSecret;

    fn tenant_object(data: Value, status: Value) -> Value {
        json!({
            "apiVersion": "kubelb.k8c.io/v1alpha1",
            "kind": "SyncSecret",
            "metadata": {"name": "s", "namespace": "ns", "uid": "u-1"},
            "data": data,
            "stringData": {"token": "in-clear-sekrit"},
            "status": status,
        })
    }

    #[test]
    fn a_sync_secret_reads_non_canonical_base64() {
        let wire = tenant_object(json!({"k": "QR=="}), json!({"phase": "Synced"}));
        let ss: SyncSecret = serde_json::from_value(wire).unwrap();
        assert_eq!(ss.data.unwrap()["k"].0, b"A");
    }

    #[test]
    fn an_unreadable_status_is_dropped_and_the_rest_kept() {
        let status = json!({"conditions": [{"type": "Synced", "status": "True", "reason": "x", "message": "", "lastTransitionTime": "2026-01-01T00:00:00"}]});
        let wire = tenant_object(json!({"k": "QQ=="}), status);
        match Lenient::<SyncSecret>::from_json(&wire.to_string()).unwrap() {
            Lenient::Decoded(ss) => {
                assert_eq!(ss.status, None);
                assert_eq!(ss.data.unwrap()["k"].0, b"A");
            }
            Lenient::Undecodable(u) => panic!("{u:?}"),
        }
    }

    #[test]
    fn an_undecodable_object_keeps_its_metadata_and_a_reason_without_values() {
        for (data, reason) in [
            (
                json!({"k": "not base64 hunter2"}),
                "field data: the value of key \"k\" is not standard base64 with padding",
            ),
            (json!({"k": 42}), "field data.k should be a string"),
            (json!("hunter2"), "field data should be a map"),
        ] {
            let wire = tenant_object(data, json!({}));
            let Lenient::Undecodable(u) = Lenient::<SyncSecret>::from_json(&wire.to_string())
                .unwrap_or_else(|e| panic!("{e}"))
            else {
                panic!("decoded");
            };
            assert_eq!(u.metadata.name.as_deref(), Some("s"));
            assert_eq!(u.metadata.uid.as_deref(), Some("u-1"));
            assert_eq!(u.reason, reason);
            let printed = format!("{u:?}");
            assert!(!printed.contains("hunter2") && !printed.contains("sekrit"));
        }
    }

    #[test]
    fn a_list_with_one_bad_item_reads_every_other_item() {
        let list = json!({"items": [
            tenant_object(json!({"k": "QQ=="}), json!({})),
            tenant_object(json!({"k": ["x"]}), json!({})),
            tenant_object(json!({"k": "QR=="}), json!({})),
        ]});
        #[derive(Deserialize)]
        struct List {
            items: Vec<Lenient<SyncSecret>>,
        }
        let read: List = serde_json::from_str(&list.to_string()).unwrap();
        let decoded: Vec<bool> = read
            .items
            .iter()
            .map(|i| matches!(i, Lenient::Decoded(_)))
            .collect();
        assert_eq!(decoded, [true, false, true]);
    }

    /// `levels` of nested objects.
    fn nested(levels: usize) -> Value {
        let mut v = json!({});
        for _ in 0..levels {
            v = json!({ "f:x": v });
        }
        v
    }

    #[test]
    fn objects_nested_deeper_than_serde_reads_never_fail_the_page() {
        #[derive(Deserialize)]
        struct List {
            items: Vec<Lenient<SyncSecret>>,
        }
        // managedFields as a client may send them: read without the deep one.
        let mut deep_fields = tenant_object(json!({"k": "QQ=="}), json!({}));
        deep_fields["metadata"]["managedFields"] = json!([{
            "manager": "evil", "operation": "Update", "fieldsType": "FieldsV1",
            "fieldsV1": nested(200),
        }, {
            // Readable alone, too deep where it sits.
            "manager": "evil-too", "operation": "Update", "fieldsType": "FieldsV1",
            "fieldsV1": nested(125),
        }, {
            "manager": "syncsecret-ccm", "operation": "Apply", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:data": {"f:k": {}}},
        }]);
        // Deep anywhere else (a CRD of the tenant's own): kept by its keys.
        let mut deep_data = tenant_object(json!({"k": nested(200)}), json!({}));
        deep_data["metadata"]["finalizers"] = json!(["kubelb.k8c.io/cleanup"]);
        let list = format!(
            r#"{{"items": [{deep_fields}, {deep_data}, {}]}}"#,
            tenant_object(json!({}), json!({}))
        );
        let read: List = serde_json::from_str(&list).unwrap_or_else(|e| panic!("{e}"));
        let Lenient::Decoded(read_without) = &read.items[0] else {
            panic!("deep managedFields: not decoded");
        };
        assert_eq!(read_without.data.as_ref().unwrap()["k"].0, b"A");
        // Our field manager's entry stays: it says what we wrote.
        let managers: Vec<_> = read_without
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter_map(|m| m.manager.as_deref())
            .collect();
        assert_eq!(managers, ["syncsecret-ccm"]);
        let Lenient::Undecodable(u) = &read.items[1] else {
            panic!("deep data: decoded");
        };
        assert_eq!(u.metadata.uid.as_deref(), Some("u-1"));
        assert_eq!(
            u.metadata.finalizers.as_deref(),
            Some(&["kubelb.k8c.io/cleanup".to_owned()][..])
        );
        assert!(u.reason.contains("nested deeper than 128"), "{}", u.reason);
        assert!(matches!(read.items[2], Lenient::Decoded(_)));
    }

    #[test]
    fn what_no_api_server_sends_fails_without_a_value() {
        for wire in [json!("hunter2"), json!({"metadata": {}, "data": "hunter2"})] {
            let e = Lenient::<SyncSecret>::from_json(&wire.to_string())
                .map(|_| ())
                .unwrap_err();
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }
}
