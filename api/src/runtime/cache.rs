//! What the watch caches keep of an object. A cached object is compared
//! with what we would write, never written back, so most of its
//! `managedFields` is dead weight: each entry is a parsed JSON tree, several
//! KiB per object once a loader, the API server and both controllers have
//! written it (most of the 10 KiB per cached object the first heap profile
//! of `make bench` found). The comparisons read only our own field
//! manager's applied labels and annotations ([`applied_keys`]) and whether
//! it wrote the object at all ([`made_by`]); that is what is kept, as a
//! list of keys rather than a tree of JSON maps.
//!
//! [`applied_keys`]: crate::desired::applied_keys
//! [`made_by`]: crate::sweep::made_by

use futures::{Stream, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};

use super::backoff::WatchBackoff;
use super::recent::RecentWrites;

use crate::desired::compact_applied;

/// Drops every managedFields entry but `field_manager`'s (none when
/// `None`), and reduces those to the applied label and annotation keys in
/// the compact form of [`compact_applied`].
pub fn slim_managed_fields(meta: &mut ObjectMeta, field_manager: Option<&str>) {
    let Some(entries) = meta.managed_fields.take() else {
        return;
    };
    let kept: Vec<ManagedFieldsEntry> = entries
        .into_iter()
        .filter(|e| field_manager.is_some() && e.manager.as_deref() == field_manager)
        .map(|e| ManagedFieldsEntry {
            fields_v1: e.fields_v1.as_ref().map(compact_applied),
            manager: e.manager,
            operation: e.operation,
            ..ManagedFieldsEntry::default()
        })
        .collect();
    meta.managed_fields = (!kept.is_empty()).then_some(kept);
}

/// A `watcher` modifier ([`kube::runtime::WatchStreamExt::modify`]) that
/// slims every object before it reaches the cache.
pub fn slim<K: Resource>(field_manager: Option<&'static str>) -> impl Fn(&mut K) + Clone {
    move |obj: &mut K| slim_managed_fields(obj.meta_mut(), field_manager)
}

/// How long the API server keeps one watch request open before the watcher
/// makes the next (from where it was; bookmarks keep that cheap). kube's
/// default is 290 s, and a watch whose connection died unnoticed is found
/// only after that plus 5 s; at 50 s it is found within 55 s.
pub const WATCH_TIMEOUT_SECS: u32 = 50;

/// The watch behind each of the controllers' caches, built one way: retried
/// with [`WatchBackoff`], every failure logged (`what` names the watch),
/// objects slimmed to what `field_manager`'s comparisons read, applied to
/// `writer`'s cache, and then shown to `recent` (which forgets our writes
/// the cache now holds) before anything is reconciled.
pub fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: Writer<K>,
    field_manager: Option<&'static str>,
    recent: RecentWrites,
    what: &'static str,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    watcher(api, config.timeout(WATCH_TIMEOUT_SECS))
        .inspect_err(move |e| tracing::warn!(watch = what, "watch failed, retrying: {e}"))
        .backoff(WatchBackoff::default())
        .modify(slim(field_manager))
        .reflect(writer)
        .inspect_ok(move |event| recent.observe(event))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::applied_keys;
    use crate::sweep::made_by;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;
    use serde_json::{Value, json};

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
            json!(["labels/x", "annotations/y"])
        );
        assert_eq!(entries[1].fields_v1.as_ref().unwrap().0, json!([]));
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
