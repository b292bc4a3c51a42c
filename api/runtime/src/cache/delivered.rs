//! The small objects a watch has just delivered, kept whole for a moment.
//!
//! The caches hold summaries, never values, so a write needs the object it
//! writes from whole ([`crate::cache::whole`]): read with a GET, one more
//! round trip on every update's path, once on each side. But the watch
//! event that triggered the reconcile carried that very object. A watch
//! reads its events as [`Fresh`]: the summary, and the object itself if
//! its JSON is at most [`KEPT_BYTES`]. [`Delivered`] keeps the last
//! [`KEPT`] objects a watch delivered (not listed) for at most
//! [`KEPT_FOR`], and hands one over only if it is exactly the version the
//! cache holds (its UID and resourceVersion); anything else, evicted,
//! expired, too large or superseded, is read from the API server as
//! before. So memory stays bounded by [`KEPT`] objects of [`KEPT_BYTES`]
//! and [`KEPT_ENTRIES`] (about 2.5 MiB per watch) whatever tenants write, no value stays in memory long after its watch event
//! unless a write is made from it, and a tenant who floods the stash only
//! sends the writes of others back to the read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::cache::decode::Lenient;
use crate::cache::summary::{Summarize, Summary};

/// How many objects are kept: enough for the updates of a busy moment,
/// which are reconciled within milliseconds of their event.
pub const KEPT: usize = 64;

/// The largest object kept, as the API server sent it (its JSON, status
/// and managedFields included), in bytes. Larger ones are read.
pub const KEPT_BYTES: usize = 32 * 1024;

/// The most entries an object kept may have in its maps and lists (data,
/// stringData, labels, annotations, finalizers, ownerReferences): decoded,
/// each costs about 100 bytes beyond its text, so with [`KEPT_BYTES`]
/// this bounds what one object kept holds to about 40 KiB.
pub const KEPT_ENTRIES: usize = 64;

/// How long an object may be handed over: a reconcile that starts later
/// (a long queue) reads it instead. It is dropped within 1.5 × this.
pub const KEPT_FOR: Duration = Duration::from_secs(2);

/// An object as a watch reads it: its [`Summary`] (what is cached) and,
/// if it is small and of a kind writes are made from, the object itself
/// ([`Summarize::summary_and_whole`]), for [`Delivered`] or nothing. Read
/// leniently, as a summary is.
pub struct Fresh<K> {
    summary: Summary<K>,
    whole: Option<Box<K>>,
}

impl<K> Fresh<K> {
    /// The summary, and the object whole if it was kept.
    pub fn into_parts(self) -> (Summary<K>, Option<Box<K>>) {
        (self.summary, self.whole)
    }
}

impl<'de, K: Summarize> Deserialize<'de> for Fresh<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        let small = raw.get().len() <= KEPT_BYTES;
        let (mut summary, whole) =
            match Lenient::<K>::from_json(raw.get()).map_err(D::Error::custom)? {
                Lenient::Decoded(object) if small => object.summary_and_whole(),
                read => (Summary::of_lenient(read), None),
            };
        summary.stored_bytes = raw.get().len();
        Ok(Self {
            summary,
            whole: whole.map(Box::new),
        })
    }
}

/// The summary alone: the object is never copied.
impl<K> Clone for Fresh<K> {
    fn clone(&self) -> Self {
        Self {
            summary: self.summary.clone(),
            whole: None,
        }
    }
}

/// The summary's (names, never values).
impl<K: Resource<DynamicType = ()>> std::fmt::Debug for Fresh<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.summary.fmt(f)
    }
}

// So that a watch reads `K`'s resource as `Fresh`.
resource_of_k!(Fresh, |this| this.summary.meta(), this.summary.meta_mut());

/// A watch event of [`Fresh`] objects as one of summaries, every object
/// whole dropped.
fn summaries<K>(event: watcher::Event<Fresh<K>>) -> watcher::Event<Summary<K>> {
    match event {
        watcher::Event::Apply(o) => watcher::Event::Apply(o.summary),
        watcher::Event::InitApply(o) => watcher::Event::InitApply(o.summary),
        watcher::Event::Delete(o) => watcher::Event::Delete(o.summary),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// The objects last delivered by one watch (shared by its clones).
pub struct Delivered<K> {
    kept: Arc<Mutex<Kept<K>>>,
}

struct Kept<K> {
    by_key: HashMap<(String, String), Entry<K>>,
    /// Counts insertions: the entry with the lowest goes first.
    next: u64,
}

struct Entry<K> {
    object: Box<K>,
    order: u64,
    at: Instant,
}

impl<K> Clone for Delivered<K> {
    fn clone(&self) -> Self {
        Self {
            kept: self.kept.clone(),
        }
    }
}

impl<K: Send + 'static> Default for Delivered<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Send + 'static> Delivered<K> {
    /// An empty stash. On a tokio runtime, a task drops what has been kept
    /// for [`KEPT_FOR`] (until the last clone is dropped); without one (a
    /// unit test), it is dropped when the stash is next used.
    pub fn new() -> Self {
        let kept = Arc::new(Mutex::new(Kept {
            by_key: HashMap::new(),
            next: 0,
        }));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(expire_every(Arc::downgrade(&kept)));
        }
        Self { kept }
    }
}

async fn expire_every<K>(kept: Weak<Mutex<Kept<K>>>) {
    let mut tick = tokio::time::interval(KEPT_FOR / 2);
    loop {
        tick.tick().await;
        let Some(kept) = kept.upgrade() else {
            return;
        };
        expire(&mut lock(&kept), Instant::now());
    }
}

fn lock<K>(kept: &Mutex<Kept<K>>) -> MutexGuard<'_, Kept<K>> {
    // A panic elsewhere cannot leave an entry half made: take it as is.
    kept.lock().unwrap_or_else(PoisonError::into_inner)
}

fn expire<K>(kept: &mut Kept<K>, now: Instant) {
    kept.by_key
        .retain(|_, e| now.saturating_duration_since(e.at) < KEPT_FOR);
}

impl<K: Resource<DynamicType = ()>> Delivered<K> {
    /// The event as the cache takes it (summaries), keeping the object a
    /// watch delivered whole and forgetting a deleted one. A listed object
    /// is not kept: a list brings them all at once, for the cache only.
    pub fn observe(&self, event: watcher::Event<Fresh<K>>) -> watcher::Event<Summary<K>> {
        self.observe_at(event, Instant::now())
    }

    fn observe_at(
        &self,
        event: watcher::Event<Fresh<K>>,
        now: Instant,
    ) -> watcher::Event<Summary<K>> {
        match event {
            watcher::Event::Apply(Fresh { summary, whole }) => {
                match whole {
                    Some(whole) => self.keep(whole, now),
                    // A version too large to keep: an older one kept
                    // would never be handed over; it goes now.
                    None => {
                        lock(&self.kept).by_key.remove(&key_of(&summary));
                    }
                }
                watcher::Event::Apply(summary)
            }
            watcher::Event::Delete(o) => {
                lock(&self.kept).by_key.remove(&key_of(&o.summary));
                watcher::Event::Delete(o.summary)
            }
            other => summaries(other),
        }
    }

    fn keep(&self, object: Box<K>, now: Instant) {
        let key = key_of(object.as_ref());
        let mut kept = lock(&self.kept);
        expire(&mut kept, now);
        let order = kept.next;
        kept.next += 1;
        kept.by_key.insert(
            key,
            Entry {
                object,
                order,
                at: now,
            },
        );
        while kept.by_key.len() > KEPT {
            let oldest = kept
                .by_key
                .iter()
                .min_by_key(|(_, e)| e.order)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => kept.by_key.remove(&k),
                None => break,
            };
        }
    }

    /// The object `cached` summarizes, if it is kept in exactly that
    /// version (same UID and resourceVersion) and not for longer than
    /// [`KEPT_FOR`]; it is then no longer kept.
    pub fn take(&self, cached: &Summary<K>) -> Option<K> {
        self.take_at(cached, Instant::now())
    }

    fn take_at(&self, cached: &Summary<K>, now: Instant) -> Option<K> {
        let key = key_of(cached);
        let mut kept = lock(&self.kept);
        expire(&mut kept, now);
        let entry = kept.by_key.get(&key)?;
        let same = entry.object.uid() == cached.uid()
            && entry.object.resource_version() == cached.resource_version()
            && cached.resource_version().is_some();
        if !same {
            return None;
        }
        kept.by_key.remove(&key).map(|e| *e.object)
    }

    /// How many objects are kept.
    pub fn len(&self) -> usize {
        lock(&self.kept).by_key.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn key_of(o: &impl Resource) -> (String, String) {
    (o.namespace().unwrap_or_default(), o.name_any())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use syncsecret_api::v1alpha1::SyncSecret;

    use super::*;

    fn object(name: &str, rv: &str, value_bytes: usize) -> SyncSecret {
        let data = BTreeMap::from([("k".to_owned(), ByteString(vec![b'v'; value_bytes]))]);
        SyncSecret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                resource_version: Some(rv.into()),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..SyncSecret::default()
        }
    }

    /// The object as a watch reads it.
    fn fresh(o: &SyncSecret) -> Fresh<SyncSecret> {
        let json = serde_json::to_string(o).unwrap();
        serde_json::from_str(&json).unwrap()
    }

    fn delivered(o: &SyncSecret) -> watcher::Event<Fresh<SyncSecret>> {
        watcher::Event::Apply(fresh(o))
    }

    #[test]
    fn a_watch_reads_a_small_object_whole_and_keeps_no_copy_of_it_elsewhere() {
        let mut o = object("a", "1", 10);
        o.string_data = Some(BTreeMap::from([("user".into(), "admin".into())]));
        o.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some("someone".into()),
            ..ManagedFieldsEntry::default()
        }]);
        o.status = Some(syncsecret_api::status::pending());
        let read = fresh(&o);
        let printed = format!("{read:?}");
        assert!(!printed.contains("admin") && !printed.contains("vvvvvvvvvv"));
        assert!(
            read.clone().into_parts().1.is_none(),
            "a clone is the summary only"
        );

        let (summary, whole) = read.into_parts();
        let as_cached = o.clone().summary();
        assert_eq!(summary.payload, as_cached.payload);
        assert_eq!(summary.meta(), as_cached.meta());
        assert_eq!(summary.status, o.status, "the status goes to the summary");
        let mut expected = o;
        expected.metadata.managed_fields = None;
        expected.status = None;
        assert_eq!(
            whole.as_deref(),
            Some(&expected),
            "whole, but its managedFields and status"
        );
    }

    #[test]
    fn what_counts_against_the_bound_is_the_whole_object_as_sent() {
        // Little data, but a type (or a status, or managedFields) that
        // makes the object large: not kept.
        let mut o = object("a", "1", 1);
        o.type_ = Some("t".repeat(KEPT_BYTES));
        assert!(fresh(&o).into_parts().1.is_none());
        assert!(
            fresh(&object("b", "1", KEPT_BYTES))
                .into_parts()
                .1
                .is_none()
        );
        assert!(
            fresh(&object("c", "1", KEPT_BYTES / 2))
                .into_parts()
                .1
                .is_some()
        );
        // Small, but more entries than KEPT_ENTRIES: decoded, each costs
        // far more than its text.
        let mut many = object("d", "1", 1);
        let data = (0..=KEPT_ENTRIES).map(|i| (format!("k{i}"), ByteString(vec![b'v'])));
        many.data = Some(data.collect());
        assert!(fresh(&many).into_parts().1.is_none());
        many.data.as_mut().unwrap().pop_first();
        assert!(fresh(&many).into_parts().1.is_some(), "at the bound: kept");
        // Secrets are never written from: never kept.
        let secret: Fresh<Secret> = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": "ns"},
            "data": {"k": "dg=="}
        }))
        .unwrap();
        assert!(secret.into_parts().1.is_none());
    }

    #[test]
    fn a_delivered_object_is_handed_over_once_in_the_cached_version_only() {
        let kept = Delivered::new();
        let watcher::Event::Apply(cached) = kept.observe(delivered(&object("a", "1", 10))) else {
            unreachable!("an apply stays an apply")
        };
        // A newer version cached: the kept one is not it.
        assert!(kept.take(&object("a", "2", 10).summary()).is_none());

        let whole = kept.take(&cached).unwrap();
        assert_eq!(whole.data.unwrap()["k"].0.len(), 10, "payload and all");
        assert!(kept.take(&cached).is_none(), "handed over once");
    }

    #[test]
    fn an_object_made_anew_under_the_same_name_is_not_handed_over() {
        let kept = Delivered::new();
        kept.observe(delivered(&object("a", "1", 10)));
        let mut other = object("a", "1", 10);
        other.metadata.uid = Some("another-uid".into());
        assert!(kept.take(&other.summary()).is_none());
        let mut elsewhere = object("a", "1", 10);
        elsewhere.metadata.namespace = Some("other".into());
        assert!(kept.take(&elsewhere.summary()).is_none());
    }

    #[test]
    fn listed_deleted_and_too_large_objects_are_not_kept() {
        let kept = Delivered::new();
        kept.observe(watcher::Event::InitApply(fresh(&object("a", "1", 10))));
        assert!(kept.is_empty(), "a list goes to the cache only");

        kept.observe(delivered(&object("b", "1", 10)));
        kept.observe(watcher::Event::Delete(fresh(&object("b", "2", 10))));
        assert!(kept.is_empty(), "deleted");

        // A small version, then one too large: neither is handed over.
        kept.observe(delivered(&object("c", "1", 10)));
        kept.observe(delivered(&object("c", "2", KEPT_BYTES)));
        assert!(kept.is_empty());
    }

    #[test]
    fn the_oldest_go_first() {
        let kept = Delivered::new();
        for i in 0..=KEPT {
            kept.observe(delivered(&object(&format!("o{i}"), "1", 10)));
        }
        assert_eq!(kept.len(), KEPT);
        assert!(kept.take(&object("o0", "1", 10).summary()).is_none());
        assert!(kept.take(&object("o1", "1", 10).summary()).is_some());
        let last = format!("o{KEPT}");
        assert!(kept.take(&object(&last, "1", 10).summary()).is_some());
    }

    #[test]
    fn an_object_kept_too_long_is_read_instead() {
        let kept = Delivered::new();
        let start = Instant::now();
        kept.observe_at(delivered(&object("a", "1", 10)), start);
        let cached = object("a", "1", 10).summary();
        assert!(kept.take_at(&cached, start + KEPT_FOR).is_none());
        assert!(kept.is_empty(), "dropped, not only refused");
    }

    #[tokio::test(start_paused = true)]
    async fn on_a_runtime_what_is_kept_goes_after_kept_for_unasked() {
        let kept = Delivered::new();
        kept.observe(delivered(&object("a", "1", 10)));
        tokio::time::sleep(KEPT_FOR / 4).await;
        assert_eq!(kept.len(), 1, "kept a moment");
        tokio::time::sleep(KEPT_FOR * 2).await;
        assert!(kept.is_empty(), "dropped by the task, never asked for");
    }
}
