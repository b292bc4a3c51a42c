//! The parts of a reconcile both controllers share: a finalizer helper
//! that writes once whatever the object's list holds, the reconcile
//! counters, per-object backoff for `error_policy` ([`backoff`]), the
//! dry-run gate ([`dry_run`]), every write ([`writer`]) and events
//! ([`events`]). What to write is decided in the controllers, from
//! `syncsecret-api`.

pub mod backoff;
pub mod dry_run;
pub mod events;
pub mod failure;
pub mod writer;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Instant;

use kube::runtime::controller::Action;
use kube::runtime::finalizer::Event;
use kube::runtime::reflector::Store;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::recent::{RecentWrites, superseded};
use crate::metrics::{ControllerMetrics, ReconcileResult};
use crate::reconcile::backoff::Backoffs;
use crate::reconcile::writer::Writer;
use syncsecret_api::contract::FINALIZER;

/// The finalizer helper's own failures (the reconcile's are passed through).
#[derive(Debug, thiserror::Error)]
pub enum FinalizerError {
    /// Adding `kubelb.k8c.io/cleanup` failed.
    #[error("adding finalizer")]
    Add(#[source] kube::Error),
    /// Removing `kubelb.k8c.io/cleanup` failed.
    #[error("removing finalizer")]
    Remove(#[source] kube::Error),
    /// The object has no name (never from a watch).
    #[error("the object has no name")]
    Unnamed,
}

impl FinalizerError {
    /// A bounded name for event reasons and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Add(_) => "AddFinalizerFailed",
            Self::Remove(_) => "RemoveFinalizerFailed",
            Self::Unnamed => "Unnamed",
        }
    }
}

/// How a controller runs each of its objects: where they live, its
/// counters and backoffs, the recent writes of the cache it reads them
/// from, and the resource its finalizer patches count as.
pub struct Finalized<'a, K: Resource<DynamicType = ()> + 'static> {
    /// The objects' API.
    pub api: &'a Api<K>,
    /// The controller's counters.
    pub metrics: &'a ControllerMetrics,
    /// Its per-object retry delays.
    pub backoffs: &'a Backoffs,
    /// Our writes of these objects the cache has not shown yet.
    pub recent: Option<&'a RecentWrites>,
    /// The cache the objects come from, to skip a reconcile of a version
    /// it has since replaced ([`superseded`]).
    pub cache: Option<&'a Store<K>>,
    /// What a finalizer patch counts as (`syncsecrets`, `secrets`).
    pub resource: &'static str,
}

impl<K> Finalized<'_, K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug + 'static,
{
    /// One reconcile of `obj`: skipped (and counted so) while the cache
    /// still shows what our last write of it replaced, since the watch
    /// event of that write brings it back, or once the cache holds another
    /// version of it or none ([`superseded`]); else `apply` on a live object
    /// or `cleanup` on a deleted one, under the cleanup finalizer
    /// ([`finalized`]), counted with its outcome ([`record`]).
    pub async fn run<E, A, AF, C, CF>(&self, obj: Arc<K>, apply: A, cleanup: C) -> Result<Action, E>
    where
        E: std::error::Error + From<FinalizerError> + Outcome + 'static,
        A: FnOnce(Arc<K>) -> AF,
        AF: Future<Output = Result<Action, E>>,
        C: FnOnce(Arc<K>) -> CF,
        CF: Future<Output = Result<Action, E>>,
    {
        let started = Instant::now();
        let namespace = obj.namespace();
        let outdated = self.cache.is_some_and(|c| superseded(c, obj.as_ref()))
            || self.recent.is_some_and(|recent| {
                recent.stale(namespace.as_deref(), &obj.name_any(), Some(obj.as_ref()))
            });
        if outdated {
            self.metrics.reconciled(
                &namespace.unwrap_or_default(),
                ReconcileResult::Skipped,
                started.elapsed(),
            );
            return Ok(Action::await_change());
        }
        let result = finalized(
            self.api,
            obj.clone(),
            self.metrics,
            self.recent,
            self.resource,
            |event| async move {
                match event {
                    Event::Apply(o) => apply(o).await,
                    Event::Cleanup(o) => cleanup(o).await,
                }
            },
        )
        .await;
        record(self.metrics, self.backoffs, obj.as_ref(), started, &result);
        result
    }
}

/// Runs `reconcile` under the `kubelb.k8c.io/cleanup` finalizer, as
/// kube-runtime's `finalizer()` helper does, each patch one write whatever
/// the object's list holds: the finalizer is added to a live object (and
/// the reconcile returns; the change brings the object back), and taken
/// off, every entry of it at once, once cleanup succeeds on a deleted
/// one. The helper took off one entry per reconcile (a JSON patch of one
/// index), which a copy holding 50,000 duplicates turned into hours of
/// patches of a megabyte each. Those patches are counted as writes of
/// `resource` and, with `recent`, remembered until the watch cache shows
/// them.
async fn finalized<K, E, F, Fut>(
    api: &Api<K>,
    obj: Arc<K>,
    metrics: &ControllerMetrics,
    recent: Option<&RecentWrites>,
    resource: &'static str,
    reconcile: F,
) -> Result<Action, E>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
    K::DynamicType: Default,
    E: std::error::Error + From<FinalizerError> + 'static,
    F: FnOnce(Event<K>) -> Fut,
    Fut: Future<Output = Result<Action, E>>,
{
    if obj.meta().name.is_none() {
        return Err(FinalizerError::Unnamed.into());
    }
    let ours = obj.finalizers().iter().any(|f| f == FINALIZER);
    let deleting = obj.meta().deletion_timestamp.is_some();
    let writer = Writer::new(api.clone(), resource, metrics).remembering(recent);
    match (deleting, ours) {
        (false, false) => {
            let added = writer.add_finalizer(obj.meta(), FINALIZER).await;
            // `None`: a dry run held it; the dry run goes on to what the
            // next reconcile would write.
            if added.map_err(FinalizerError::Add)?.is_some() {
                return Ok(Action::await_change());
            }
            reconcile(Event::Apply(obj)).await
        }
        (false, true) => reconcile(Event::Apply(obj)).await,
        (true, true) => {
            let action = reconcile(Event::Cleanup(obj.clone())).await?;
            match writer.release_finalizer(obj.meta(), FINALIZER).await {
                Ok(_) => Ok(action),
                // Gone already (deleted by the API server once its last
                // finalizer went, seen late by the cache).
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::await_change()),
                Err(e) => Err(FinalizerError::Remove(e).into()),
            }
        }
        // Being deleted without ours: nothing of ours to clean up.
        (true, false) => Ok(Action::await_change()),
    }
}

/// The backoff key of an object (see [`Backoffs::retain`]).
pub fn backoff_key<K>(obj: &K) -> String
where
    K: Resource,
    K::DynamicType: Default,
{
    format!(
        "{}/{}/{}",
        K::kind(&Default::default()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// A reconcile's error as the runtime sees it: a failure, or a wait that
/// kube's finalizer helper needs as an `Err` (it releases on `Ok`).
pub trait Outcome {
    /// A bounded name for event reasons and logs.
    fn category(&self) -> &'static str;

    /// Whether this is a wait for something else, not a failure.
    fn is_wait(&self) -> bool {
        false
    }
}

/// Counts one reconcile of `obj` (success, wait or error) and its
/// duration, and resets its backoff on success.
fn record<K, T, E: Outcome>(
    metrics: &ControllerMetrics,
    backoffs: &Backoffs,
    obj: &K,
    started: Instant,
    result: &Result<T, E>,
) where
    K: Resource,
    K::DynamicType: Default,
{
    let namespace = obj.namespace().unwrap_or_default();
    let outcome = match result {
        Ok(_) => {
            if let Some(attempts) = backoffs.succeeded(&backoff_key(obj)) {
                tracing::info!(%namespace, name = %obj.name_any(), attempts, "reconciled after failing");
            }
            ReconcileResult::Success
        }
        Err(e) if e.is_wait() => ReconcileResult::Waiting,
        Err(_) => ReconcileResult::Error,
    };
    metrics.reconciled(&namespace, outcome, started.elapsed());
}

/// `error_policy` for every controller: retry `obj` after its backoff.
pub fn retry_later<K>(backoffs: &Backoffs, obj: &K) -> Action
where
    K: Resource,
    K::DynamicType: Default,
{
    Action::requeue(backoffs.failed(&backoff_key(obj)))
}

/// A task that lives only as long as its owner: aborted when dropped. The
/// controllers' side tasks (sweep, readiness) are held this way, so that a
/// replica that loses its lease (its controllers dropped mid-flight) leaves
/// nothing behind that could still write.
#[derive(Debug)]
pub struct Scoped(tokio::task::JoinHandle<()>);

impl Scoped {
    /// Spawns `task`.
    pub fn spawn(task: impl Future<Output = ()> + Send + 'static) -> Self {
        Self(tokio::spawn(task))
    }
}

impl Drop for Scoped {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `sweep` once `ready` says the caches have synced, then every
/// `period` (never again if zero). Runs until its task is aborted.
pub async fn sweep_periodically<R, S>(
    ready: R,
    period: std::time::Duration,
    mut sweep: impl FnMut() -> S,
) where
    R: Future<Output = bool>,
    S: Future<Output = ()>,
{
    if !ready.await {
        return;
    }
    loop {
        sweep().await;
        if period.is_zero() {
            return;
        }
        tokio::time::sleep(period).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::Client;
    use kube::runtime::reflector::{self, ObjectRef};
    use kube::runtime::watcher;
    use prometheus::Registry;

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error(transparent)]
    struct Failed(#[from] FinalizerError);

    impl Outcome for Failed {
        fn category(&self) -> &'static str {
            "Failed"
        }
    }

    /// Version `rv` of a ConfigMap that already carries our finalizer, so
    /// that a reconcile goes straight to `apply`.
    fn config_map(rv: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("a".into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                finalizers: Some(vec![FINALIZER.to_owned()]),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    /// A deleted object holding our finalizer many times (and another's):
    /// cleanup runs, then one patch takes every entry of ours off, guarded
    /// by the version it was cached at.
    #[tokio::test]
    async fn a_finalizer_held_many_times_is_taken_off_in_one_write() {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let seen = bodies.clone();
        let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let seen = seen.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = http_body_util::BodyExt::collect(body)
                    .await
                    .unwrap()
                    .to_bytes();
                seen.lock().unwrap().push((
                    parts.method.to_string(),
                    String::from_utf8_lossy(&bytes).into_owned(),
                ));
                let mut stored = vec![FINALIZER; 1000];
                stored.push("example.com/other");
                let answer = serde_json::json!({
                    "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                    "metadata": {"name": "a", "namespace": "ns", "resourceVersion": "7", "finalizers": stored}
                });
                Ok::<_, std::convert::Infallible>(
                    http::Response::builder()
                        .header("content-type", "application/json")
                        .body(http_body_util::Full::new(bytes::Bytes::from(
                            answer.to_string(),
                        )))
                        .unwrap(),
                )
            }
        });
        let api: Api<ConfigMap> = Api::namespaced(Client::new(service, "ns"), "ns");
        let metrics = ControllerMetrics::register("t", &Registry::new()).unwrap();
        let mut deleted = config_map("7");
        deleted.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        let mut list = vec![FINALIZER.to_owned(); 1000];
        list.push("example.com/other".to_owned());
        deleted.metadata.finalizers = Some(list);
        let cleaned = Mutex::new(false);
        let result: Result<Action, Failed> = finalized(
            &api,
            Arc::new(deleted),
            &metrics,
            None,
            "configmaps",
            |event| {
                let cleanup = matches!(event, Event::Cleanup(_));
                let cleaned = &cleaned;
                async move {
                    assert!(cleanup);
                    *cleaned.lock().unwrap() = true;
                    Ok(Action::await_change())
                }
            },
        )
        .await;
        assert!(result.is_ok());
        assert!(*cleaned.lock().unwrap(), "cleanup ran first");
        // A list this long may have been cut by a cache: it is read whole
        // first (a GET), and written once.
        let bodies = bodies.lock().unwrap();
        let methods: Vec<&str> = bodies.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(methods, ["GET", "PATCH"]);
        let body = &bodies[1].1;
        let patch: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            patch,
            serde_json::json!({"metadata": {"finalizers": ["example.com/other"], "resourceVersion": "7"}})
        );
    }

    /// kube-runtime hands a reconcile version 1; before it runs, the watch
    /// event of our own write (version 2) lands in the cache and clears
    /// the write from the recent writes. Only version 2 is reconciled.
    #[tokio::test]
    async fn a_version_the_cache_has_replaced_is_not_reconciled() {
        let requests = Arc::new(Mutex::new(0));
        let counted = requests.clone();
        let service = tower::service_fn(move |_req: http::Request<kube::client::Body>| {
            *counted.lock().unwrap() += 1;
            async {
                Err::<http::Response<http_body_util::Full<bytes::Bytes>>, _>("no API server here")
            }
        });
        let api: Api<ConfigMap> = Api::namespaced(Client::new(service, "ns"), "ns");
        let metrics = ControllerMetrics::register("t", &Registry::new()).unwrap();
        let (backoffs, recent) = (Backoffs::default(), RecentWrites::default());
        let (store, mut writer) = reflector::store::<ConfigMap>();
        writer.apply_watcher_event(&watcher::Event::Apply(config_map("1")));
        let key = ObjectRef::from_obj(&config_map("1"));
        let handed = store.get(&key).unwrap();
        recent.wrote_to(Some("ns"), "a", Some("1"), Some("2"));
        writer.apply_watcher_event(&watcher::Event::Apply(config_map("2")));
        recent.observe(&watcher::Event::Apply(config_map("2")));

        let applied = Mutex::new(Vec::new());
        let finalized = Finalized {
            api: &api,
            metrics: &metrics,
            backoffs: &backoffs,
            recent: Some(&recent),
            cache: Some(&store),
            resource: "configmaps",
        };
        for obj in [handed, store.get(&key).unwrap()] {
            let applied = &applied;
            let result: Result<Action, Failed> = finalized
                .run(
                    obj,
                    |o| async move {
                        applied.lock().unwrap().push(o.resource_version());
                        Ok(Action::await_change())
                    },
                    |_| async { Ok(Action::await_change()) },
                )
                .await;
            assert!(result.is_ok());
        }
        assert_eq!(*applied.lock().unwrap(), [Some("2".to_owned())]);
        assert_eq!(*requests.lock().unwrap(), 0);
    }
}
