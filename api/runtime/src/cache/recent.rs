//! Our own writes, remembered until the watch cache has caught up with them.
//!
//! A reconcile reads the watch cache, which lags behind the API server by a
//! few milliseconds. Right after we write an object, another trigger (an
//! event on a related object, our own status patch) can bring a reconcile
//! that still sees the version our write replaced, or no object at all
//! when we created it, and would write again (docs/benchmarks.md counts
//! how often). So each write is remembered with the resourceVersions it
//! replaced (none for a create) and, when its answer is at hand, the one
//! it made; while the cache shows an older version, the cache is stale for
//! that object and the reconcile waits for the watch event of our write,
//! which brings it back. The watch stream clears an entry once the cache
//! shows our version (or, not knowing it, anything but the replaced
//! ones); a relist clears what was written before it began, and an entry
//! nothing clears expires after [`TTL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::FutureExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

/// How long a write is remembered at most.
pub const TTL: Duration = Duration::from_secs(30);

/// How long a reconcile waits for a related cache to finish its first
/// list before it reads the API server instead
/// ([`RecentWrites::lookup_listed`]).
pub const LIST_WAIT: Duration = Duration::from_secs(10);

/// Entries above this many trigger a purge of expired ones.
const PURGE_ABOVE: usize = 1024;

#[derive(Debug)]
struct Entry {
    /// The resourceVersions our writes replaced, oldest first (`None`: we
    /// created the object). Two writes in a row (a merge patch, then an
    /// apply) leave two versions that are not ours yet.
    replaced: Vec<Option<String>>,
    /// The resourceVersion our last write made, when its answer said (and
    /// it reads as a number, as every API server's etcd revisions do): the
    /// cache is stale while it shows an older one, even one someone else
    /// wrote in between.
    written: Option<u64>,
    /// Every resourceVersion our writes are known to have made and the
    /// watch has not shown yet (a few at most: the entry goes once the
    /// cache shows the newest).
    made: Vec<u64>,
    /// Our last write deleted the object (it took the last finalizer off).
    deleted: bool,
    at: Instant,
}

/// The most versions an entry remembers having made.
const MADE: usize = 8;

/// Writes not yet seen by the watch cache, by `namespace/name`.
#[derive(Debug, Default, Clone)]
pub struct RecentWrites {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    /// Until when a miss waits for the cache's first list: set by the
    /// first miss that waits, so that every later one waits only until the
    /// same moment ([`RecentWrites::lookup_listed`]).
    list_deadline: Arc<OnceLock<tokio::time::Instant>>,
    /// When the relist under way began.
    listing_since: Arc<Mutex<Option<Instant>>>,
}

/// A resourceVersion as a number, if it is one. The API calls them opaque;
/// only the order of our own write and what the cache shows is read from
/// them, and anything else falls back to comparing for equality.
fn revision(rv: Option<&str>) -> Option<u64> {
    rv?.parse().ok()
}

fn key_of(namespace: Option<&str>, name: &str) -> String {
    format!("{}/{name}", namespace.unwrap_or_default())
}

/// What the cache can say about an object.
#[derive(Debug)]
pub enum Cached<K> {
    /// The cache still shows what our last write replaced (or nothing,
    /// for an object we created): wait for the watch event of our write.
    Stale,
    /// The cache is authoritative: the object as it is, or `None` if it
    /// does not exist.
    Known(Option<Arc<K>>),
    /// A miss in a cache that has not finished its first list: read the
    /// API server (so that a restart never rewrites what is already there).
    Unknown,
}

impl RecentWrites {
    /// Records a successful write of `namespace/name`; `replaced` is the
    /// resourceVersion of the version it replaced (`None` for a create).
    pub fn wrote(&self, namespace: Option<&str>, name: &str, replaced: Option<&str>) {
        self.wrote_to(namespace, name, replaced, None);
    }

    /// [`RecentWrites::wrote`], knowing the resourceVersion the write made.
    pub fn wrote_to(
        &self,
        namespace: Option<&str>,
        name: &str,
        replaced: Option<&str>,
        written: Option<&str>,
    ) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() > PURGE_ABOVE {
            entries.retain(|_, e| e.at.elapsed() < TTL);
        }
        let entry = entries.entry(key_of(namespace, name)).or_insert(Entry {
            replaced: Vec::new(),
            written: None,
            made: Vec::new(),
            deleted: false,
            at: Instant::now(),
        });
        if entry.at.elapsed() >= TTL {
            entry.replaced.clear();
            entry.written = None;
            entry.made.clear();
            entry.deleted = false;
        }
        entry.replaced.push(replaced.map(str::to_owned));
        // The newest version our writes are known to have made: writes of
        // one object by two reconcilers may be recorded out of order, and
        // one whose answer is not at hand (a finalizer patch) says nothing.
        let written = written.and_then(|w| w.parse::<u64>().ok());
        if let Some(w) = written {
            if entry.made.len() >= MADE {
                entry.made.remove(0);
            }
            entry.made.push(w);
        }
        entry.written = match (entry.written, written) {
            (Some(known), Some(new)) => Some(known.max(new)),
            (known, new) => known.or(new),
        };
        entry.at = Instant::now();
    }

    /// Records a write of `obj` as the cache last showed it (`None`: it
    /// was absent, we created it).
    pub fn wrote_over<K: ResourceExt>(&self, namespace: &str, name: &str, before: Option<&K>) {
        let replaced = before.map(|b| b.resource_version().unwrap_or_default());
        self.wrote(Some(namespace), name, replaced.as_deref());
    }

    /// [`RecentWrites::wrote_over`], with `after`, what the write returned.
    pub fn wrote_over_as<K: ResourceExt, A: ResourceExt>(
        &self,
        namespace: &str,
        name: &str,
        before: Option<&K>,
        after: &A,
    ) {
        let replaced = before.map(|b| b.resource_version().unwrap_or_default());
        let written = after.resource_version();
        self.wrote_to(
            Some(namespace),
            name,
            replaced.as_deref(),
            written.as_deref(),
        );
    }

    /// Records that our write of `namespace/name` (recorded just before)
    /// deleted it: the API server answered with the version it replaced,
    /// not the deletion's.
    pub fn deleted_by_us(&self, namespace: Option<&str>, name: &str) {
        if let Ok(mut entries) = self.entries.lock()
            && let Some(entry) = entries.get_mut(&key_of(namespace, name))
        {
            entry.deleted = true;
        }
    }

    /// Whether a deletion the watch shows is one of our writes
    /// ([`RecentWrites::deleted_by_us`]).
    pub fn deleted<K: ResourceExt>(&self, obj: &K) -> bool {
        let key = key_of(obj.namespace().as_deref(), &obj.name_any());
        self.entries
            .lock()
            .is_ok_and(|e| e.get(&key).is_some_and(|e| e.deleted))
    }

    /// Whether `obj`, as a watch shows it, is a version one of our writes
    /// made (as far as its answer said; one whose answer came after its
    /// watch event counts as someone else's). Asked before
    /// [`RecentWrites::observe`] clears the entry.
    pub fn made<K: ResourceExt>(&self, obj: &K) -> bool {
        let Some(shown) = revision(obj.resource_version().as_deref()) else {
            return false;
        };
        let key = key_of(obj.namespace().as_deref(), &obj.name_any());
        self.entries
            .lock()
            .is_ok_and(|e| e.get(&key).is_some_and(|e| e.made.contains(&shown)))
    }

    /// Called with every watch event after the cache applied it: an entry
    /// is cleared once the cache holds something other than the versions
    /// our writes replaced, or the object is deleted.
    pub fn observe<K: ResourceExt>(&self, event: &watcher::Event<K>) {
        let (obj, deleted) = match event {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => (o, false),
            watcher::Event::Delete(o) => (o, true),
            watcher::Event::Init => {
                if let Ok(mut since) = self.listing_since.lock() {
                    *since = Some(Instant::now());
                }
                return;
            }
            // A relist shows at least every write that ended before it
            // began, whatever version it shows.
            watcher::Event::InitDone => {
                let since = self.listing_since.lock().ok().and_then(|mut s| s.take());
                if let (Some(since), Ok(mut entries)) = (since, self.entries.lock()) {
                    entries.retain(|_, e| e.at >= since);
                }
                return;
            }
        };
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.is_empty() {
            return;
        }
        let key = key_of(obj.namespace().as_deref(), &obj.name_any());
        let seen = deleted
            || entries.get(&key).is_some_and(|e| {
                let shown = obj.resource_version();
                match (e.written, revision(shown.as_deref())) {
                    (Some(written), Some(shown)) => shown >= written,
                    _ => !e.replaced.iter().any(|r| r.is_some() && *r == shown),
                }
            });
        if seen {
            entries.remove(&key);
        }
    }

    /// Whether `cached` (what the cache shows for `namespace/name`) is older
    /// than our last write of it.
    pub fn stale<K: ResourceExt>(
        &self,
        namespace: Option<&str>,
        name: &str,
        cached: Option<&K>,
    ) -> bool {
        let Ok(entries) = self.entries.lock() else {
            return false;
        };
        let Some(entry) = entries.get(&key_of(namespace, name)) else {
            return false;
        };
        let shown = cached.map(|c| c.resource_version().unwrap_or_default());
        entry.at.elapsed() < TTL
            && match (entry.written, revision(shown.as_deref())) {
                (Some(written), Some(shown)) => shown < written,
                _ => entry.replaced.contains(&shown),
            }
    }

    /// Looks `key` up in `store`, telling a stale or not yet listed cache
    /// from an authoritative answer.
    pub fn lookup<K>(&self, store: &Store<K>, key: &ObjectRef<K>) -> Cached<K>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        let cached = store.get(key);
        if self.stale(key.namespace.as_deref(), &key.name, cached.as_deref()) {
            return Cached::Stale;
        }
        match cached {
            Some(c) => Cached::Known(Some(c)),
            None if synced(store) => Cached::Known(None),
            None => Cached::Unknown,
        }
    }

    /// [`lookup`](Self::lookup), but a miss in a cache still listing waits
    /// for the list to finish and looks again; `Unknown` only when it has
    /// not finished by then (the API server unreachable, or slower than
    /// `wait`). The first miss that waits sets the deadline, `wait` from
    /// then, for every later one: a cluster unreachable from the start
    /// stalls the reconciles once, not `wait` each. Use one
    /// `RecentWrites` per store.
    ///
    /// The store's writer must go on being driven while reconciles wait
    /// (kube-runtime's controller reads its trigger streams, the related
    /// watches included, even with every reconcile slot busy). Any number
    /// of reconciles may wait at once.
    ///
    /// Right after a start, the objects reconciled before a related cache
    /// has listed would otherwise each cost a read of the API server.
    pub async fn lookup_listed<K>(
        &self,
        store: &Store<K>,
        key: &ObjectRef<K>,
        wait: Duration,
    ) -> Cached<K>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        match self.lookup(store, key) {
            Cached::Unknown => {
                let deadline = *self
                    .list_deadline
                    .get_or_init(|| tokio::time::Instant::now() + wait);
                tracing::debug!(object = %key, "waiting for the cache's first list");
                // Not `wait_until_ready` itself: it wakes only the last of
                // several waiters (see `store_synced`).
                match crate::serve::health::store_synced_before(store, Some(deadline)).await {
                    Some(true) => self.lookup(store, key),
                    _ => {
                        tracing::debug!(object = %key, "the cache has not listed: asking the API server");
                        Cached::Unknown
                    }
                }
            }
            answer => answer,
        }
    }
}

/// Whether the cache has moved on from `obj`, a version of one of its
/// objects: it now holds another version, or none. kube-runtime takes a
/// reconcile's object from the cache when it starts the reconcile's task,
/// and the watch event of our own last write may land before the task
/// first runs; that event clears the write from [`RecentWrites`], so only
/// this tells the reconcile it holds an outdated copy. Every watch event
/// that changes the cache also triggers a reconcile of that object, which
/// runs after this one; an object gone from the cache has nothing left to
/// reconcile (what its deletion leaves behind is the sweeps' and the
/// garbage collector's job).
pub fn superseded<K>(store: &Store<K>, obj: &K) -> bool
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .get(&ObjectRef::from_obj(obj))
        .is_none_or(|now| now.resource_version() != obj.resource_version())
}

/// Whether `store` has finished its first list (without waiting).
pub fn synced<K>(store: &Store<K>) -> bool
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .wait_until_ready()
        .now_or_never()
        .is_some_and(|r| r.is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn obj(rv: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("a".into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    #[test]
    fn changes_our_writes_made_are_told_apart_from_others() {
        let recent = RecentWrites::default();
        let theirs = |recent: &RecentWrites, rv: &str| {
            let changed = !recent.made(&obj(rv));
            recent.observe(&watcher::Event::Apply(obj(rv)));
            changed
        };
        assert!(theirs(&recent, "1"), "nothing of ours yet");
        // Two writes of ours (a finalizer, then a status), with a
        // tenant's write between them.
        recent.wrote_to(Some("ns"), "a", Some("1"), Some("2"));
        recent.wrote_to(Some("ns"), "a", Some("3"), Some("4"));
        assert!(!theirs(&recent, "2"));
        assert!(theirs(&recent, "3"));
        assert!(!theirs(&recent, "4"));
        assert!(theirs(&recent, "5"), "ours all seen; the next is theirs");
        // A write whose answer is not at hand cannot be told apart.
        recent.wrote_over("ns", "a", Some(&obj("6")));
        assert!(theirs(&recent, "7"));
        // A write that took the last finalizer off deleted the object.
        recent.wrote_to(Some("ns"), "a", Some("7"), None);
        assert!(!recent.deleted(&obj("8")));
        recent.deleted_by_us(Some("ns"), "a");
        assert!(recent.deleted(&obj("8")));
    }

    #[test]
    fn an_update_is_stale_until_the_cache_shows_another_version() {
        let recent = RecentWrites::default();
        let before = obj("1");
        recent.wrote_over("ns", "a", Some(&before));
        assert!(recent.stale(Some("ns"), "a", Some(&before)));
        // The watch delivers the old version late: still stale.
        recent.observe(&watcher::Event::Apply(before.clone()));
        assert!(recent.stale(Some("ns"), "a", Some(&before)));
        // Our version arrives: the entry is gone, the cache is trusted.
        recent.observe(&watcher::Event::Apply(obj("2")));
        assert!(!recent.stale(Some("ns"), "a", Some(&before)));
        assert!(!recent.stale(Some("ns"), "a", Some(&obj("2"))));
    }

    #[test]
    fn two_writes_in_a_row_are_stale_until_the_cache_shows_the_second() {
        let recent = RecentWrites::default();
        let (before, first) = (obj("1"), obj("2"));
        recent.wrote_over("ns", "a", Some(&before));
        recent.wrote_over("ns", "a", Some(&first));
        // The first write's event: the second is still on its way.
        recent.observe(&watcher::Event::Apply(first.clone()));
        assert!(recent.stale(Some("ns"), "a", Some(&before)));
        assert!(recent.stale(Some("ns"), "a", Some(&first)));
        recent.observe(&watcher::Event::Apply(obj("3")));
        assert!(!recent.stale(Some("ns"), "a", Some(&first)));
    }

    #[test]
    fn a_write_whose_answer_is_known_is_stale_until_the_cache_shows_it() {
        let recent = RecentWrites::default();
        let (before, theirs, ours) = (obj("1"), obj("2"), obj("3"));
        recent.wrote_over_as("ns", "a", Some(&before), &ours);
        // Someone else's write landed between the version we read and ours.
        recent.observe(&watcher::Event::Apply(theirs.clone()));
        assert!(recent.stale(Some("ns"), "a", Some(&theirs)));
        recent.observe(&watcher::Event::Apply(ours.clone()));
        assert!(!recent.stale(Some("ns"), "a", Some(&theirs)));
        assert!(!recent.stale(Some("ns"), "a", Some(&ours)));
    }

    #[test]
    fn writes_recorded_out_of_order_keep_the_newest_version() {
        let recent = RecentWrites::default();
        let (before, first, second) = (obj("1"), obj("2"), obj("3"));
        recent.wrote_over_as("ns", "a", Some(&first), &second);
        recent.wrote_over_as("ns", "a", Some(&before), &first);
        // A write whose answer is not at hand (a finalizer patch).
        recent.wrote(Some("ns"), "a", Some("3"));
        recent.observe(&watcher::Event::Apply(first.clone()));
        assert!(recent.stale(Some("ns"), "a", Some(&first)));
        recent.observe(&watcher::Event::Apply(second.clone()));
        assert!(!recent.stale(Some("ns"), "a", Some(&second)));
    }

    #[test]
    fn a_write_whose_event_came_first_is_not_stale() {
        let recent = RecentWrites::default();
        let (before, ours, later) = (obj("1"), obj("2"), obj("3"));
        // The watch event of our write arrives before its answer is read.
        recent.observe(&watcher::Event::Apply(ours.clone()));
        recent.wrote_over_as("ns", "a", Some(&before), &ours);
        assert!(!recent.stale(Some("ns"), "a", Some(&ours)));
        // Someone changes it after us: that is no stale cache.
        recent.observe(&watcher::Event::Apply(later.clone()));
        assert!(!recent.stale(Some("ns"), "a", Some(&later)));
    }

    #[test]
    fn a_relist_clears_what_was_written_before_it_began() {
        let recent = RecentWrites::default();
        let (before, ours, listed) = (obj("1"), obj("2"), obj("9"));
        recent.wrote_over_as("ns", "a", Some(&before), &ours);
        recent.observe::<ConfigMap>(&watcher::Event::Init);
        recent.observe::<ConfigMap>(&watcher::Event::InitDone);
        assert!(!recent.stale(Some("ns"), "a", Some(&listed)));
    }

    #[test]
    fn a_create_is_stale_while_the_cache_misses_it() {
        let recent = RecentWrites::default();
        recent.wrote_over::<ConfigMap>("ns", "a", None);
        assert!(recent.stale::<ConfigMap>(Some("ns"), "a", None));
        assert!(!recent.stale(Some("ns"), "a", Some(&obj("5"))));
        recent.observe(&watcher::Event::Apply(obj("5")));
        assert!(!recent.stale::<ConfigMap>(Some("ns"), "a", None));
    }

    /// The race a reconcile loses when kube-runtime read its object before
    /// the watch event of our own write landed: the event cleared the
    /// write from `recent`, so only the cache tells the object is old.
    #[test]
    fn an_object_read_before_our_write_landed_is_superseded() {
        use kube::runtime::reflector;
        let (store, mut writer) = reflector::store::<ConfigMap>();
        writer.apply_watcher_event(&watcher::Event::Apply(obj("1")));
        let taken = store.get(&ObjectRef::from_obj(&obj("1"))).unwrap();
        assert!(!superseded(&store, taken.as_ref()));

        let recent = RecentWrites::default();
        recent.wrote_to(Some("ns"), "a", Some("1"), Some("2"));
        writer.apply_watcher_event(&watcher::Event::Apply(obj("2")));
        recent.observe(&watcher::Event::Apply(obj("2")));
        assert!(!recent.stale(Some("ns"), "a", Some(taken.as_ref())));
        assert!(superseded(&store, taken.as_ref()));

        // Gone from the cache: nothing left to reconcile either.
        writer.apply_watcher_event(&watcher::Event::Delete(obj("2")));
        assert!(superseded(&store, &obj("2")));
    }

    #[tokio::test]
    async fn a_miss_waits_for_the_first_list_and_only_so_long() {
        use kube::runtime::reflector;
        let recent = RecentWrites::default();
        let key = ObjectRef::<ConfigMap>::new("a").within("ns");

        // The list finishes while the lookup waits: its answer counts.
        let (store, mut writer) = reflector::store::<ConfigMap>();
        let lister = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            writer.apply_watcher_event(&watcher::Event::Init);
            writer.apply_watcher_event(&watcher::Event::InitApply(obj("7")));
            writer.apply_watcher_event(&watcher::Event::InitDone);
            writer
        });
        let waited = tokio::time::Instant::now();
        // Several reconciles wait at once (kube-runtime's own wait wakes
        // only the last of them): each comes back with the list, not at the
        // deadline.
        let others: Vec<_> = (0..4)
            .map(|_| {
                let (recent, store, key) = (recent.clone(), store.clone(), key.clone());
                tokio::spawn(async move {
                    matches!(
                        recent.lookup_listed(&store, &key, LIST_WAIT).await,
                        Cached::Known(Some(_))
                    )
                })
            })
            .collect();
        let found = recent.lookup_listed(&store, &key, LIST_WAIT).await;
        for other in others {
            assert!(other.await.unwrap(), "another waiter got no answer");
        }
        assert!(waited.elapsed() < LIST_WAIT / 2, "{:?}", waited.elapsed());
        assert!(
            matches!(&found, Cached::Known(Some(c)) if c.resource_version().as_deref() == Some("7")),
            "{found:?}"
        );
        let _writer = lister.await.unwrap();
        let other = ObjectRef::<ConfigMap>::new("b").within("ns");
        assert!(matches!(
            recent.lookup_listed(&store, &other, LIST_WAIT).await,
            Cached::Known(None)
        ));

        // A list that does not finish in time: still unknown, never absent;
        // and the next miss does not wait again.
        let slow_writes = RecentWrites::default();
        let (slow, _writer) = reflector::store::<ConfigMap>();
        let wait = Duration::from_millis(200);
        let started = tokio::time::Instant::now();
        assert!(matches!(
            slow_writes.lookup_listed(&slow, &key, wait).await,
            Cached::Unknown
        ));
        assert!(started.elapsed() >= wait);
        let again = tokio::time::Instant::now();
        assert!(matches!(
            slow_writes.lookup_listed(&slow, &other, wait).await,
            Cached::Unknown
        ));
        assert!(again.elapsed() < wait / 2, "{:?}", again.elapsed());
    }

    #[test]
    fn a_delete_event_clears_the_entry() {
        let recent = RecentWrites::default();
        let before = obj("1");
        recent.wrote_over("ns", "a", Some(&before));
        recent.observe(&watcher::Event::Delete(before.clone()));
        assert!(!recent.stale(Some("ns"), "a", Some(&before)));
        // Other objects are not touched.
        recent.wrote_over("ns", "b", Some(&before));
        recent.observe(&watcher::Event::Delete(before.clone()));
        assert!(recent.stale(Some("ns"), "b", Some(&before)));
    }
}
