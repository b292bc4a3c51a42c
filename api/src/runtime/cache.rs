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

use std::collections::HashSet;
use std::sync::Arc;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
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
    let cached = writer.as_reader();
    watcher(api, config.timeout(WATCH_TIMEOUT_SECS))
        .inspect_err(move |e| tracing::warn!(watch = what, "watch failed, retrying: {e}"))
        .backoff(WatchBackoff::default())
        .modify(slim(field_manager))
        .inspect_ok(move |event| match event {
            watcher::Event::Init => tracing::debug!(watch = what, "listing"),
            watcher::Event::InitDone => tracing::debug!(watch = what, "listed; watching"),
            _ => {}
        })
        .flat_map(deletions_a_relist_missed(cached.clone()))
        .reflect(writer)
        .inspect_ok(move |event| recent.observe(event))
        .flat_map(listed_objects_once_cached(cached))
}

/// Items handed on one at a time (a relist's objects are cloned out of
/// the cache as they are consumed, not all at once).
type Lazy<K, E> =
    futures::stream::Iter<Box<dyn Iterator<Item = Result<watcher::Event<K>, E>> + Send>>;

/// A list's objects reach the cache only when the list is complete (the
/// reflector swaps the new list in at `InitDone`), but the watcher reports
/// each as it arrives. A controller triggered by those reports reconciles
/// against the cache as it was *before* the list: after a relist, an
/// object changed while the watch was away (a copy deleted during an API
/// server restart, say) was reconciled in its old state, found in order,
/// and never looked at again — the long chaos run's last stall. This stage,
/// after the cache, holds the list's objects back and hands each on (as an
/// `Apply`, read from the cache) once the list is in.
fn listed_objects_once_cached<K, E>(
    cached: Store<K>,
) -> impl FnMut(Result<watcher::Event<K>, E>) -> Lazy<K, E>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    E: Send + 'static,
{
    let mut listed: Vec<ObjectRef<K>> = Vec::new();
    move |item| {
        let out: Box<dyn Iterator<Item = Result<watcher::Event<K>, E>> + Send> = match item {
            Ok(watcher::Event::Init) => {
                listed.clear();
                Box::new(std::iter::once(Ok(watcher::Event::Init)))
            }
            Ok(watcher::Event::InitApply(o)) => {
                listed.push(ObjectRef::from_obj(&o));
                Box::new(std::iter::empty())
            }
            Ok(watcher::Event::InitDone) => {
                let store = cached.clone();
                let objects = std::mem::take(&mut listed)
                    .into_iter()
                    .filter_map(move |r| store.get(&r))
                    .map(|o| Ok(watcher::Event::Apply(K::clone(&o))));
                Box::new(std::iter::once(Ok(watcher::Event::InitDone)).chain(objects))
            }
            other => Box::new(std::iter::once(other)),
        };
        futures::stream::iter(out)
    }
}

/// One watch item and whatever follows from it.
type Items<K, E> = futures::stream::Iter<std::vec::IntoIter<Result<watcher::Event<K>, E>>>;

/// A relist (the watch resumed too late for the API server: `410 Gone`, a
/// restart) replaces the cache with the new list, and an object deleted
/// while the watch was away just vanishes from it: nothing downstream hears
/// of the deletion. Whatever waits for that deletion (the ccm releasing a
/// tenant object's finalizer once its copy is gone) would wait until its
/// retry backoff runs out — minutes after a long outage; the long chaos run
/// found exactly that. This stage, placed before the cache, remembers what
/// the cache held when a relist starts and, right after it ends, adds a
/// `Delete` for each object the new list lacks.
fn deletions_a_relist_missed<K, E>(
    cached: Store<K>,
) -> impl FnMut(Result<watcher::Event<K>, E>) -> Items<K, E>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let mut before: Vec<Arc<K>> = Vec::new();
    let mut listed: HashSet<ObjectRef<K>> = HashSet::new();
    move |item| {
        let mut out = Vec::new();
        match &item {
            // The cache still holds the old state here: the reflector
            // applies this event only after this stage has passed it on.
            Ok(watcher::Event::Init) => {
                before = cached.state();
                listed.clear();
            }
            Ok(watcher::Event::InitApply(o)) => {
                listed.insert(ObjectRef::from_obj(o));
            }
            Ok(watcher::Event::InitDone) => {
                out.extend(
                    std::mem::take(&mut before)
                        .into_iter()
                        .filter(|o| !listed.contains(&ObjectRef::from_obj(o.as_ref())))
                        .map(|o| Ok(watcher::Event::Delete(K::clone(&o)))),
                );
                listed.clear();
            }
            _ => {}
        }
        out.insert(0, item);
        futures::stream::iter(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::applied_keys;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector;

    fn config_map(name: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    #[tokio::test]
    async fn a_relist_reports_what_vanished_while_the_watch_was_away() {
        use watcher::Event::{Apply, Delete, Init, InitApply, InitDone};
        let (store, writer) = reflector::store::<ConfigMap>();
        let events: Vec<Result<watcher::Event<ConfigMap>, watcher::Error>> = vec![
            // The first list: nothing was cached, nothing is reported.
            Ok(Init),
            Ok(InitApply(config_map("a"))),
            Ok(InitApply(config_map("b"))),
            Ok(InitDone),
            Ok(Apply(config_map("c"))),
            // A relist after `410 Gone`: b and c were deleted meanwhile.
            Ok(Init),
            Ok(InitApply(config_map("a"))),
            Ok(InitDone),
        ];
        let out: Vec<_> = futures::stream::iter(events)
            .flat_map(deletions_a_relist_missed(store.clone()))
            .reflect(writer)
            .collect()
            .await;
        // What a controller would be triggered with: after the cache.
        let mut deleted: Vec<String> = out
            .iter()
            .filter_map(|e| match e {
                Ok(Delete(o)) => o.metadata.name.clone(),
                _ => None,
            })
            .collect();
        deleted.sort();
        assert_eq!(deleted, ["b", "c"]);
        assert_eq!(out.len(), 10, "every event passes, plus the two deletions");
        let names: Vec<_> = store
            .state()
            .iter()
            .filter_map(|o| o.metadata.name.clone())
            .collect();
        assert_eq!(names, ["a"]);
    }

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
