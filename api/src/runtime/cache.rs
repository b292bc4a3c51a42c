//! What the watch caches keep of an object. A cached object is compared
//! with what we would write, never written back, so most of its
//! `managedFields` is dead weight: each entry is a parsed JSON tree, several
//! KiB per object once a loader, the API server and both controllers have
//! written it (most of the 10 KiB per cached object the first heap profile
//! of `make bench` found). The comparisons read only our own field
//! manager's applied labels and annotations ([`applied_keys`]) and whether
//! it wrote the object at all ([`made_by`]); that is what is kept.
//!
//! [`applied_keys`]: crate::desired::applied_keys
//! [`made_by`]: crate::sweep::made_by

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, ObjectMeta};
use kube::Resource;
use serde_json::{Map, Value};

/// Drops every managedFields entry but `field_manager`'s (none when
/// `None`), and from those keeps only `f:metadata` → `f:labels` and
/// `f:annotations`, with an empty `fieldsV1` where there is neither.
pub fn slim_managed_fields(meta: &mut ObjectMeta, field_manager: Option<&str>) {
    let Some(entries) = meta.managed_fields.take() else {
        return;
    };
    let kept: Vec<ManagedFieldsEntry> = entries
        .into_iter()
        .filter(|e| field_manager.is_some() && e.manager.as_deref() == field_manager)
        .map(|e| ManagedFieldsEntry {
            fields_v1: Some(FieldsV1(metadata_keys(e.fields_v1.as_ref()))),
            manager: e.manager,
            operation: e.operation,
            ..ManagedFieldsEntry::default()
        })
        .collect();
    meta.managed_fields = (!kept.is_empty()).then_some(kept);
}

/// `{"f:metadata": {"f:labels": …, "f:annotations": …}}` of a fieldsV1 tree
/// (only the parts that are present).
fn metadata_keys(fields: Option<&FieldsV1>) -> Value {
    let mut metadata = Map::new();
    if let Some(Value::Object(m)) = fields.and_then(|f| f.0.get("f:metadata")) {
        for key in ["f:labels", "f:annotations"] {
            if let Some(v) = m.get(key) {
                metadata.insert(key.to_owned(), v.clone());
            }
        }
    }
    let mut root = Map::new();
    if !metadata.is_empty() {
        root.insert("f:metadata".to_owned(), Value::Object(metadata));
    }
    Value::Object(root)
}

/// A `watcher` modifier ([`kube::runtime::WatchStreamExt::modify`]) that
/// slims every object before it reaches the cache.
pub fn slim<K: Resource>(field_manager: Option<&'static str>) -> impl Fn(&mut K) + Clone {
    move |obj: &mut K| slim_managed_fields(obj.meta_mut(), field_manager)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::applied_keys;
    use crate::sweep::made_by;
    use serde_json::json;

    fn entry(manager: &str, operation: &str, fields: Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(operation.into()),
            api_version: Some("v1".into()),
            fields_type: Some("FieldsV1".into()),
            fields_v1: Some(FieldsV1(fields)),
            time: None,
            subresource: None,
        }
    }

    fn meta() -> ObjectMeta {
        ObjectMeta {
            managed_fields: Some(vec![
                entry(
                    "ours",
                    "Apply",
                    json!({"f:data": {"f:a": {}}, "f:metadata": {"f:labels": {"f:x": {}}, "f:annotations": {"f:y": {}}, "f:finalizers": {}}}),
                ),
                entry(
                    "kubectl",
                    "Apply",
                    json!({"f:metadata": {"f:labels": {"f:z": {}}}}),
                ),
                entry("ours", "Update", json!({"f:status": {}})),
            ]),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn keeps_what_the_comparisons_read_and_nothing_else() {
        let before = meta();
        let mut after = before.clone();
        slim_managed_fields(&mut after, Some("ours"));
        for field in ["labels", "annotations"] {
            assert_eq!(
                applied_keys(&after, "ours", field),
                applied_keys(&before, "ours", field)
            );
        }
        assert!(made_by(&after, "ours"));
        assert!(!made_by(&after, "kubectl"));
        let entries = after.managed_fields.unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0].fields_v1.as_ref().unwrap().0,
            json!({"f:metadata": {"f:labels": {"f:x": {}}, "f:annotations": {"f:y": {}}}})
        );
        assert_eq!(entries[1].fields_v1.as_ref().unwrap().0, json!({}));
        assert!(entries.iter().all(|e| e.api_version.is_none()));
    }

    #[test]
    fn without_a_field_manager_nothing_is_kept() {
        let mut m = meta();
        slim_managed_fields(&mut m, None);
        assert!(m.managed_fields.is_none());
        let mut empty = ObjectMeta::default();
        slim_managed_fields(&mut empty, Some("ours"));
        assert!(empty.managed_fields.is_none());
    }
}
