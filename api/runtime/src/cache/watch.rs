//! The watches behind the controllers' caches, and the reads and triggers
//! around them. A cached object is a [`Summary`], compared with what we
//! would write and never written back; of its `managedFields` it keeps
//! only the label and annotation keys our own field manager applied
//! ([`Summary::keep_applied_by`]), which is all the comparisons read
//! ([`syncsecret_api::labelled::Labelled`]). Whole, each entry would be
//! a parsed JSON tree of several KiB once a loader, the API server and both
//! controllers have written it.

use std::sync::Arc;

use futures::{Stream, StreamExt, TryStreamExt};
use kube::api::GetParams;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};

use crate::cache::recent::RecentWrites;
use crate::reconcile::backoff::WatchBackoff;

use crate::cache::decode::Lenient;
use crate::cache::delivered::{Delivered, Fresh};
use crate::cache::summary::{Summarize, Summary};

/// Objects per page of a watch's list, where the API server does not
/// stream them ([`initial_lists_streamed`]). kube's default is 500: a page
/// is held whole while it is decoded (its JSON text and every object with
/// its full managedFields), which dominated a restarted manager's peak
/// heap; a smaller page costs a few more list requests, once per
/// (re)list. (In a watch with a [`Delivered`], a page's small objects are
/// also held whole until the watch hands each on: [`Fresh`].) A page's
/// bytes still grow with what tenants write: 100 copies at a raised
/// per-copy bound of 1.4 MB are 140 MB at once.
pub const LIST_PAGE_SIZE: u32 = 100;

/// `config` with the list page size and watch timeout every watch of the
/// controllers uses.
pub fn tuned(config: watcher::Config) -> watcher::Config {
    config.timeout(WATCH_TIMEOUT_SECS).page_size(LIST_PAGE_SIZE)
}

/// kube's watcher on `api` ([`tuned`]), its first list and every relist
/// streamed where the API server offers it (a watch with
/// `sendInitialEvents`: the WatchList feature, on by default from
/// Kubernetes 1.34): objects arrive one at a time, so what a list holds
/// at once is one object, whatever the objects' sizes. An API server that
/// refuses it (the feature gate turned off) gets paged lists instead, for
/// good, said once in the log.
pub fn initial_lists_streamed<T>(
    api: Api<T>,
    config: watcher::Config,
    what: &'static str,
) -> impl Stream<Item = Result<watcher::Event<T>, watcher::Error>> + Send
where
    T: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    type Events<T> = futures::stream::BoxStream<'static, Result<watcher::Event<T>, watcher::Error>>;
    enum Mode<T> {
        Streamed(Events<T>, Box<dyn FnOnce() -> Events<T> + Send>),
        Paged(Events<T>),
    }
    let streamed = watcher(api.clone(), tuned(config.clone()).streaming_lists()).boxed();
    let paged = Box::new(move || watcher(api, tuned(config)).boxed());
    futures::stream::unfold(Mode::Streamed(streamed, paged), move |mode| async move {
        match mode {
            Mode::Streamed(mut events, paged) => match events.next().await {
                Some(Err(e)) if refuses_streaming(&e) => {
                    tracing::warn!(
                        watch = what,
                        "the API server does not stream lists (the WatchList feature is off); listing in pages of {LIST_PAGE_SIZE} instead, which hold a page's objects at once"
                    );
                    let mut events = paged();
                    let first = events.next().await?;
                    Some((first, Mode::Paged(events)))
                }
                Some(item) => Some((item, Mode::Streamed(events, paged))),
                None => None,
            },
            Mode::Paged(mut events) => {
                let item = events.next().await?;
                Some((item, Mode::Paged(events)))
            }
        }
    })
}

/// Whether `e` is an API server's refusal of `sendInitialEvents`.
fn refuses_streaming(e: &watcher::Error) -> bool {
    matches!(
        e,
        watcher::Error::WatchStartFailed(kube::Error::Api(s))
            if matches!(s.code, 400 | 422) && s.message.contains("sendInitialEvents")
    )
}

/// How long the API server keeps one watch request open before the watcher
/// makes the next (from where it was; bookmarks keep that cheap). kube's
/// default is 290 s, and a watch whose connection died unnoticed is found
/// only after that plus 5 s; at 50 s it is found within 55 s.
pub const WATCH_TIMEOUT_SECS: u32 = 50;

/// The watch behind each of the controllers' caches, built one way
/// ([`tuned`]): retried
/// with [`WatchBackoff`], every failure logged (`what` names the watch),
/// objects slimmed to what `field_manager`'s comparisons read (and, with
/// `keep_key`, to the label and annotation keys it allows), applied to
/// `writer`'s cache (only the objects and keys `kept` lets through), the
/// small objects it delivers kept whole a moment if `kept` has a
/// [`Delivered`] (else dropped before caching), a
/// (re)list told as it ends ([`relisted`]), and every event shown to
/// `recent` (which forgets our writes the cache now holds) before anything
/// is reconciled.
pub fn watch<K>(
    api: Api<Summary<K>>,
    config: watcher::Config,
    writer: Writer<Summary<K>>,
    field_manager: Option<&'static str>,
    kept: Kept<K>,
    recent: RecentWrites,
    what: &'static str,
) -> impl Stream<Item = Result<watcher::Event<Summary<K>>, watcher::Error>> + Send
where
    K: Summarize + Resource<Scope = k8s_openapi::NamespaceResourceScope> + Send + Sync + 'static,
{
    let cached = writer.as_reader();
    let Kept {
        keys,
        namespaces,
        delivered,
        theirs,
    } = kept;
    // Whole objects go beside the cache or nowhere, never into it; a
    // watch with no stash never decodes them.
    let events = match delivered {
        Some(delivered) => {
            let client = api.clone().into_client();
            let api: Api<Fresh<K>> = match api.namespace() {
                Some(namespace) => Api::namespaced(client, namespace),
                None => Api::all(client),
            };
            events(api, config, namespaces, what)
                .map_ok(move |event| delivered.observe(event))
                .boxed()
        }
        None => events(api, config, namespaces, what).boxed(),
    };
    events
        .modify(move |o: &mut Summary<K>| {
            o.keep_applied_by(field_manager);
            if let Some(keep) = &keys {
                o.retain_metadata(keep.as_ref());
            }
        })
        .inspect_ok(move |event| match event {
            watcher::Event::Init => tracing::debug!(watch = what, "listing"),
            watcher::Event::InitDone => tracing::debug!(watch = what, "listed; watching"),
            _ => {}
        })
        .inspect_ok({
            let (cached, recent) = (cached.clone(), recent.clone());
            move |event| {
                let Some(theirs) = &theirs else { return };
                // A change that replaces a version (an update, a
                // deletion), not a create: the version it replaced is
                // what stays in etcd until a compaction. Looked at before
                // the cache takes it in.
                let ours = match event {
                    watcher::Event::Apply(o) if cached.get(&ObjectRef::from_obj(o)).is_some() => {
                        recent.made(o)
                    }
                    watcher::Event::Delete(o) => recent.made(o) || recent.deleted(o),
                    _ => return,
                };
                if let (false, watcher::Event::Apply(o) | watcher::Event::Delete(o)) = (ours, event)
                {
                    theirs(o);
                }
            }
        })
        .reflect(writer)
        .flat_map(relisted(cached))
        .inspect_ok(move |event| recent.observe(event))
}

/// A watch's events, retried with [`WatchBackoff`] and every failure
/// logged, of the objects in the namespaces `namespaces` lets through.
fn events<T>(
    api: Api<T>,
    config: watcher::Config,
    namespaces: Option<KeyFilter>,
    what: &'static str,
) -> impl Stream<Item = Result<watcher::Event<T>, watcher::Error>> + Send
where
    T: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    initial_lists_streamed(api, config, what)
        .inspect_err(move |e| {
            tracing::warn!(
                watch = what,
                "watch failed, retrying: {}",
                crate::error::explain_watch(e)
            )
        })
        .backoff(WatchBackoff::default())
        .try_filter(move |event| {
            let kept = match (&namespaces, event) {
                (
                    Some(keep),
                    watcher::Event::Apply(o)
                    | watcher::Event::InitApply(o)
                    | watcher::Event::Delete(o),
                ) => keep(o.meta().namespace.as_deref().unwrap_or_default()),
                _ => true,
            };
            std::future::ready(kept)
        })
}

/// Which label and annotation keys a cache keeps of what tenants wrote
/// ([`Summary::retain_metadata`]), or which namespaces' objects it holds.
pub type KeyFilter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// What a cache keeps beyond what its comparisons read: all of it unless
/// told otherwise.
pub struct Kept<K> {
    /// Of the label and annotation keys tenants wrote, these only.
    pub keys: Option<KeyFilter>,
    /// Objects in these namespaces only (a sharded manager's share); the
    /// others are dropped as they arrive, never cached or reconciled.
    pub namespaces: Option<KeyFilter>,
    /// Beside the cache, the small objects the watch just delivered,
    /// whole, for the writes they trigger ([`Delivered`]).
    pub delivered: Option<Delivered<K>>,
    /// Told of every update and deletion the watch shows after its list
    /// that our own writes did not make (as [`RecentWrites`] knows them):
    /// what someone else wrote over a version that etcd keeps until its
    /// next compaction. Creates are not told.
    pub theirs: Option<Theirs<K>>,
}

/// A callback of [`Kept::theirs`].
pub type Theirs<K> = Arc<dyn Fn(&Summary<K>) + Send + Sync>;

impl<K> Default for Kept<K> {
    fn default() -> Self {
        Self {
            keys: None,
            namespaces: None,
            delivered: None,
            theirs: None,
        }
    }
}

/// Reconcile triggers, for `Controller::reconcile_on`, from another
/// watch's objects: each mapped by `related` to the objects it concerns.
/// What kube's `owns_stream` and `watches_stream` do, less the reason they
/// attach to every request (the related object's type-erased reference,
/// boxed, with its API resource's five strings), which our reconcilers
/// never read, and which a restarted manager held for every pending
/// request while its lists completed. The references made here carry no resource version or UID
/// either. A watch error triggers nothing: [`watch`] logs and retries it.
pub fn triggers<T, K, I>(
    events: impl Stream<Item = Result<T, watcher::Error>> + Send,
    related: impl Fn(&T) -> I + Send,
) -> impl Stream<Item = ObjectRef<K>> + Send
where
    T: Send,
    K: Resource,
    I: IntoIterator<Item = ObjectRef<K>>,
    I::IntoIter: Send,
{
    events
        .filter_map(|e| std::future::ready(e.ok()))
        .flat_map(move |o| futures::stream::iter(related(&o)))
}

/// The objects of kind `K` that own `obj`, in its namespace (its owner
/// references of `K`'s kind and API version): what `owns_stream` triggers.
pub fn owners<K: Resource<DynamicType = ()>>(obj: &impl Resource) -> Vec<ObjectRef<K>> {
    let (kind, api_version) = (K::kind(&()), K::api_version(&()));
    obj.owner_references()
        .iter()
        .filter(|o| o.kind == kind && o.api_version == api_version)
        .map(|o| match obj.meta().namespace.as_deref() {
            Some(namespace) => ObjectRef::new(&o.name).within(namespace),
            None => ObjectRef::new(&o.name),
        })
        .collect()
}

/// The object `cached` summarizes, read whole to be written from (the
/// caches hold no values): `None` if it is gone or was made anew (another
/// UID) — its watch event brings the next state. Read leniently: an object
/// that is not a valid `K` comes back [`Lenient::Undecodable`], never as a
/// decode error (whose text would quote the value).
///
/// Taken from `delivered` when the watch delivered exactly the cached
/// version a moment ago (no read at all). Else read first from the API
/// server's watch cache (`resourceVersion=0`: no
/// etcd read, the cheapest request there is), which holds at least what our
/// watch delivered; only if that answer is not the version cached here (a
/// newer one, or a lagging API server of several) is it read again from
/// etcd, and the latest taken.
pub async fn whole<K>(
    client: &kube::Client,
    cached: &Summary<K>,
    delivered: &Delivered<K>,
) -> Result<Option<K>, Unreadable>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    if let Some(whole) = delivered.take(cached) {
        return Ok(Some(whole));
    }
    let api: Api<Lenient<K>> =
        Api::namespaced(client.clone(), &cached.namespace().unwrap_or_default());
    match whole_lenient(&api, cached).await {
        Ok(Some(Lenient::Decoded(whole))) => Ok(Some(whole)),
        Ok(Some(Lenient::Undecodable(u))) => Err(Unreadable::Undecodable(u.reason)),
        Ok(None) => Ok(None),
        Err(e) => Err(Unreadable::Read(e)),
    }
}

/// Why an object could not be read whole.
#[derive(Debug)]
pub enum Unreadable {
    /// The read failed.
    Read(kube::Error),
    /// It is not a valid `K`: which field, and what it should be (never
    /// its value).
    Undecodable(String),
}

async fn whole_lenient<K>(
    api: &Api<Lenient<K>>,
    cached: &Summary<K>,
) -> Result<Option<Lenient<K>>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let name = cached.name_any();
    let fast = match api.get_with(&name, &GetParams::any()).await {
        Ok(o) => Some(o),
        Err(kube::Error::Api(s)) if s.code == 404 => None,
        Err(e) => return Err(e),
    };
    let same = |o: &Lenient<K>| o.uid() == cached.uid();
    let found = match fast {
        Some(o) if same(&o) && o.resource_version() == cached.resource_version() => Some(o),
        _ => api.get_opt(&name).await?,
    };
    Ok(found.filter(same))
}

/// Items handed on one at a time (a relist's objects are cloned out of
/// the cache as they are consumed, not all at once).
type Lazy<K, E> =
    futures::stream::Iter<Box<dyn Iterator<Item = Result<watcher::Event<K>, E>> + Send>>;

/// What a (re)list means downstream, told once the cache holds it.
///
/// A list's objects reach the cache only when the list is complete (the
/// reflector swaps the new list in at `InitDone`), but the watcher reports
/// each as it arrives. A controller triggered by those reports reconciles
/// against the cache as it was *before* the list: after a relist, an
/// object changed while the watch was away (a copy deleted during an API
/// server restart, say) was reconciled in its old state, found in order,
/// and never looked at again (a stall the chaos run found). And an
/// object deleted while the watch was away just vanishes from the cache:
/// whatever waits for that deletion (the ccm releasing a tenant object's
/// finalizer once its copy is gone) would wait until its retry backoff
/// runs out — minutes after a long outage.
///
/// This stage, after the cache, holds the list's objects back and, at
/// `InitDone`, hands on a `Delete` for each object the cache held when the
/// list began and no longer holds, then an `Apply` for each object it now
/// holds. It keeps only the snapshot of the cache taken when the list
/// began (a pointer per object), not a set of references per listed
/// object, which a restart of a large manager paid for in memory.
fn relisted<K, E>(cached: Store<K>) -> impl FnMut(Result<watcher::Event<K>, E>) -> Lazy<K, E>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    E: Send + 'static,
{
    let mut before: Vec<Arc<K>> = Vec::new();
    move |item| {
        let out: Box<dyn Iterator<Item = Result<watcher::Event<K>, E>> + Send> = match item {
            // The reflector swaps the list in only at `InitDone`: the
            // cache still holds the old state here.
            Ok(watcher::Event::Init) => {
                before = cached.state();
                Box::new(std::iter::once(Ok(watcher::Event::Init)))
            }
            Ok(watcher::Event::InitApply(_)) => Box::new(std::iter::empty()),
            Ok(watcher::Event::InitDone) => {
                let store = cached.clone();
                let gone = std::mem::take(&mut before)
                    .into_iter()
                    .filter(move |o| store.get(&ObjectRef::from_obj(o.as_ref())).is_none())
                    .map(|o| Ok(watcher::Event::Delete(K::clone(&o))));
                let listed = cached
                    .state()
                    .into_iter()
                    .map(|o| Ok(watcher::Event::Apply(K::clone(&o))));
                Box::new(
                    std::iter::once(Ok(watcher::Event::InitDone))
                        .chain(gone)
                        .chain(listed),
                )
            }
            other => Box::new(std::iter::once(other)),
        };
        futures::stream::iter(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
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
    async fn a_list_is_told_once_cached_with_what_vanished_while_the_watch_was_away() {
        use watcher::Event::{Apply, Delete, Init, InitApply, InitDone};
        let (store, writer) = reflector::store::<ConfigMap>();
        let events: Vec<Result<watcher::Event<ConfigMap>, watcher::Error>> = vec![
            // The first list: nothing was cached, nothing is reported gone.
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
        let cached = store.clone();
        // What a controller would be triggered with, and what the cache
        // held when each event reached it.
        let out: Vec<(String, usize)> = futures::stream::iter(events)
            .reflect(writer)
            .flat_map(relisted(store.clone()))
            .map(|e| {
                let told = match e {
                    Ok(Init) => "init".to_owned(),
                    Ok(InitDone) => "done".to_owned(),
                    Ok(Apply(o)) => format!("apply {}", o.metadata.name.unwrap_or_default()),
                    Ok(Delete(o)) => format!("delete {}", o.metadata.name.unwrap_or_default()),
                    Ok(InitApply(_)) | Err(_) => "unexpected".to_owned(),
                };
                (told, cached.state().len())
            })
            .collect()
            .await;
        let mut told: Vec<&str> = out.iter().map(|(t, _)| t.as_str()).collect();
        // The cache's order is a hash map's: the listed two and the two
        // gone may come either way round.
        told[2..4].sort_unstable();
        told[7..9].sort_unstable();
        assert_eq!(
            told,
            [
                "init", "done", "apply a", "apply b", "apply c", "init", "done", "delete b",
                "delete c", "apply a"
            ]
        );
        // Every listed object is told once the cache holds the whole list.
        assert_eq!(out[2].1, 2, "the first is told when both are cached");
        assert_eq!(out[9].1, 1, "after the relist only a is cached");
        let names: Vec<_> = store
            .state()
            .iter()
            .filter_map(|o| o.metadata.name.clone())
            .collect();
        assert_eq!(names, ["a"]);
    }

    #[tokio::test]
    async fn a_secret_triggers_the_copy_that_owns_it_and_a_watch_error_nothing() {
        use k8s_openapi::api::core::v1::Secret;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        use syncsecret_api::v1alpha1::SyncSecret;
        let owner = |api_version: &str, kind: &str, name: &str| OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            ..OwnerReference::default()
        };
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some("s".into()),
                namespace: Some("tenant-a".into()),
                owner_references: Some(vec![
                    owner("kubelb.k8c.io/v1alpha1", "SyncSecret", "copy"),
                    owner("v1", "ConfigMap", "not-a-copy"),
                    owner("other.io/v1", "SyncSecret", "same-kind-other-group"),
                ]),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        };
        let events: Vec<Result<Secret, watcher::Error>> = vec![
            Err(watcher::Error::NoResourceVersion),
            Ok(secret),
            Ok(Secret::default()),
        ];
        let triggered: Vec<ObjectRef<SyncSecret>> =
            triggers(futures::stream::iter(events), owners::<SyncSecret>)
                .collect()
                .await;
        assert_eq!(triggered, [ObjectRef::new("copy").within("tenant-a")]);
    }

    #[tokio::test]
    async fn a_write_takes_the_object_its_watch_delivered_without_a_read() {
        use std::sync::Mutex;

        use http_body_util::Full;
        use syncsecret_api::v1alpha1::SyncSecret;

        let wire = serde_json::json!({
            "apiVersion": "kubelb.k8c.io/v1alpha1", "kind": "SyncSecret",
            "metadata": {"name": "a", "namespace": "ns", "uid": "u", "resourceVersion": "7"},
            "data": {"k": "dg=="}
        });
        let reads = Arc::new(Mutex::new(0));
        let counted = reads.clone();
        let answer = wire.to_string();
        let client = kube::Client::new(
            tower::service_fn(move |_: http::Request<kube::client::Body>| {
                *counted.lock().unwrap() += 1;
                let body = bytes::Bytes::from(answer.clone());
                async move {
                    http::Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(body))
                }
            }),
            "ns",
        );
        let delivered = Delivered::new();
        let event = serde_json::from_value(wire).unwrap();
        let watcher::Event::Apply(cached) = delivered.observe(watcher::Event::Apply(event)) else {
            unreachable!("an apply stays an apply")
        };
        let taken: Option<SyncSecret> = whole(&client, &cached, &delivered).await.unwrap();
        assert!(taken.is_some());
        assert_eq!(*reads.lock().unwrap(), 0, "no request");
        // Taken once: the next write of the same version reads it.
        let read = whole(&client, &cached, &delivered).await.unwrap();
        assert_eq!(read.and_then(|o| o.data), taken.and_then(|o| o.data));
        assert_eq!(*reads.lock().unwrap(), 1, "one GET");
    }
}
