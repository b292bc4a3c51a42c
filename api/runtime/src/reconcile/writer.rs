//! The one way the controllers write an object. A [`Writer`] holds each
//! write in a dry run (recorded with the keys that differ), counts the ones
//! it makes, remembers them until the watch cache shows them, takes a
//! delete's 404 for done, and hands back the API's error unchanged for the
//! caller to name the step that failed. What to write is decided before,
//! from `syncsecret-api`.

use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PartialObjectMeta, Patch, PatchParams, Preconditions};
use kube::core::object::HasStatus;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use syncsecret_api::status::{status_differs, with_transition_time};
use syncsecret_api::v1alpha1::SyncSecretStatus;

use crate::cache::recent::RecentWrites;
use crate::cache::summary::KEPT_FINALIZERS;
use crate::metrics::ControllerMetrics;

/// Writes objects of one API (one kind, one namespace or all).
pub struct Writer<'a, K> {
    api: Api<K>,
    resource: &'static str,
    metrics: &'a ControllerMetrics,
    recent: Option<&'a RecentWrites>,
}

/// What a delete came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// A dry run: nothing was written.
    Held,
    /// Deleted: the object is gone.
    Gone,
    /// It was gone already (a 404): nothing was written.
    Absent,
    /// Deleted, but a finalizer holds it: it goes once that is removed.
    Terminating,
}

impl<'a, K> Writer<'a, K>
where
    K: Resource + Clone + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    /// Writes through `api`, counted as writes of `resource` (the label of
    /// `<prefix>_writes_total`: `syncsecrets`, `secrets`).
    pub fn new(api: Api<K>, resource: &'static str, metrics: &'a ControllerMetrics) -> Self {
        Self {
            api,
            resource,
            metrics,
            recent: None,
        }
    }

    /// Remembers each write in `recent` until the watch cache shows it.
    /// Only for objects that cache holds: an entry nothing clears would
    /// make the object look stale for a whole TTL.
    pub fn remembering(mut self, recent: Option<&'a RecentWrites>) -> Self {
        self.recent = recent;
        self
    }

    fn namespace(&self) -> &str {
        self.api.namespace().unwrap_or_default()
    }

    /// Whether a dry run holds this write; it is then recorded and logged
    /// with the names of the keys that differ (`changed`).
    pub(crate) fn held(
        &self,
        resource: &'static str,
        verb: &'static str,
        name: &str,
        changed: &[String],
    ) -> bool {
        self.metrics
            .hold(resource, verb, self.namespace(), name, changed)
    }

    /// Counts a write made and remembers it: `before` is the version it
    /// replaced (`None`: a create), `after` the version it made, if known.
    pub(crate) fn done(
        &self,
        resource: &'static str,
        verb: &'static str,
        name: &str,
        before: Option<&str>,
        after: Option<&str>,
    ) {
        self.metrics.wrote(resource, verb);
        // A write that changed nothing makes no version and brings no watch
        // event to clear its entry.
        if after.is_some() && after == before {
            return;
        }
        if let Some(recent) = self.recent {
            recent.wrote_to(Some(self.namespace()), name, before, after);
        }
    }

    /// Asks before a write that needs reading first: in a dry run, records
    /// it (as [`Writer::apply`] would) and answers true, so that nothing is
    /// read for a write that is not made.
    pub fn holds(&self, verb: &'static str, name: &str, changed: &[String]) -> bool {
        self.held(self.resource, verb, name, changed)
    }

    /// Server-side applies `desired` as `field_manager`, taking over any
    /// field another manager holds. `before` is the object as last seen
    /// (`None` when absent), `changed` what differs from it. `None` back
    /// means a dry run held it.
    #[tracing::instrument(level = "debug", skip_all, fields(resource = self.resource, namespace = self.namespace(), name = %name))]
    pub async fn apply<S: Serialize + Debug>(
        &self,
        name: &str,
        field_manager: &str,
        desired: &S,
        before: Option<&ObjectMeta>,
        changed: &[String],
    ) -> Result<Option<K>, kube::Error> {
        let params = PatchParams::apply(field_manager).force();
        self.patch(name, &params, &Patch::Apply(desired), before, changed)
            .await
    }

    /// A JSON merge patch of `name`, written as `field_manager` (see
    /// [`Writer::apply`]).
    #[tracing::instrument(level = "debug", skip_all, fields(resource = self.resource, namespace = self.namespace(), name = %name))]
    pub async fn merge(
        &self,
        name: &str,
        field_manager: &str,
        patch: serde_json::Value,
        before: Option<&ObjectMeta>,
        changed: &[String],
    ) -> Result<Option<K>, kube::Error> {
        let params = PatchParams {
            field_manager: Some(field_manager.to_owned()),
            ..PatchParams::default()
        };
        self.patch(name, &params, &Patch::Merge(patch), before, changed)
            .await
    }

    /// A JSON merge patch of `name`'s metadata only: the answer carries no
    /// payload (see [`Writer::apply`]).
    #[tracing::instrument(level = "debug", skip_all, fields(resource = self.resource, namespace = self.namespace(), name = %name))]
    pub async fn merge_metadata(
        &self,
        name: &str,
        patch: serde_json::Value,
        before: Option<&ObjectMeta>,
        changed: &[String],
    ) -> Result<Option<PartialObjectMeta<K>>, kube::Error> {
        if self.held(self.resource, "patch", name, changed) {
            return Ok(None);
        }
        let params = PatchParams::default();
        let written = self
            .api
            .patch_metadata(name, &params, &Patch::Merge(patch))
            .await?;
        // A patch that took the last finalizer off a deleted object deleted
        // it, and the API server answers with the version it replaced: the
        // write is remembered by that version alone, until the watch shows
        // the deletion (remembering the answer's would forget the write).
        let deleted = written.metadata.deletion_timestamp.is_some()
            && written
                .metadata
                .finalizers
                .as_ref()
                .is_none_or(Vec::is_empty);
        let after = if deleted {
            None
        } else {
            written.metadata.resource_version.as_deref()
        };
        self.done(
            self.resource,
            "patch",
            name,
            version(before).as_deref(),
            after,
        );
        if let (true, Some(recent)) = (deleted, self.recent) {
            recent.deleted_by_us(Some(self.namespace()), name);
        }
        Ok(Some(written))
    }

    /// Takes `finalizer` off the object `meta` describes, every entry of
    /// it in one write: a merge patch of its other finalizers, guarded by
    /// its resourceVersion so that a concurrent change fails it (409) and
    /// the next event looks again. `None` back: it had no such finalizer,
    /// or a dry run held the patch.
    pub async fn release_finalizer(
        &self,
        meta: &ObjectMeta,
        finalizer: &str,
    ) -> Result<Option<PartialObjectMeta<K>>, kube::Error> {
        if !meta.finalizers.iter().flatten().any(|f| f == finalizer) {
            return Ok(None);
        }
        let all = self.all_finalizers(meta).await?;
        let rest: Vec<&String> = all.iter().filter(|f| *f != finalizer).collect();
        self.set_finalizers(meta, &rest, finalizer).await
    }

    /// Puts `finalizer` on the object `meta` describes, beside the others,
    /// guarded as [`Writer::release_finalizer`]. `None` back: a dry run
    /// held the patch.
    pub async fn add_finalizer(
        &self,
        meta: &ObjectMeta,
        finalizer: &str,
    ) -> Result<Option<PartialObjectMeta<K>>, kube::Error> {
        let all = self.all_finalizers(meta).await?;
        let mut list: Vec<&String> = all.iter().filter(|f| *f != finalizer).collect();
        let ours = finalizer.to_owned();
        list.push(&ours);
        self.set_finalizers(meta, &list, finalizer).await
    }

    /// The finalizers of the object `meta` describes: `meta`'s own, unless
    /// a cache cut them ([`KEPT_FINALIZERS`]: then as stored, read at
    /// `meta`'s version, which the write is guarded by anyway).
    async fn all_finalizers(&self, meta: &ObjectMeta) -> Result<Vec<String>, kube::Error> {
        let kept = meta.finalizers.clone().unwrap_or_default();
        if kept.len() < KEPT_FINALIZERS {
            return Ok(kept);
        }
        let name = meta.name.as_deref().unwrap_or_default();
        let stored = self.api.get_metadata(name).await?;
        Ok(stored.metadata.finalizers.unwrap_or_default())
    }

    async fn set_finalizers(
        &self,
        meta: &ObjectMeta,
        finalizers: &[&String],
        changed: &str,
    ) -> Result<Option<PartialObjectMeta<K>>, kube::Error> {
        let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": meta.resource_version}});
        let name = meta.name.as_deref().unwrap_or_default();
        self.merge_metadata(name, patch, Some(meta), &[changed.to_owned()])
            .await
    }

    async fn patch<P: Serialize + Debug>(
        &self,
        name: &str,
        params: &PatchParams,
        patch: &Patch<P>,
        before: Option<&ObjectMeta>,
        changed: &[String],
    ) -> Result<Option<K>, kube::Error> {
        if self.held(self.resource, "patch", name, changed) {
            return Ok(None);
        }
        let written = self.api.patch(name, params, patch).await?;
        self.done(
            self.resource,
            "patch",
            name,
            version(before).as_deref(),
            written.resource_version().as_deref(),
        );
        Ok(Some(written))
    }

    /// Deletes `name`; `before` is the object as last seen (only then is
    /// the delete remembered), `why` says in a dry run what it is for.
    #[tracing::instrument(level = "debug", skip_all, fields(resource = self.resource, namespace = self.namespace(), name = %name))]
    pub async fn delete(
        &self,
        name: &str,
        before: Option<&ObjectMeta>,
        why: &[String],
    ) -> Result<Deleted, kube::Error> {
        self.delete_with(name, &DeleteParams::default(), before, why)
            .await
    }

    /// [`Writer::delete`] of exactly the object `before` is (its UID):
    /// one made anew meanwhile stays.
    #[tracing::instrument(level = "debug", skip_all, fields(resource = self.resource, namespace = self.namespace(), name = %name))]
    pub async fn delete_exactly(
        &self,
        name: &str,
        before: &ObjectMeta,
        why: &[String],
    ) -> Result<Deleted, kube::Error> {
        let params = DeleteParams {
            preconditions: before.uid.clone().map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        self.delete_with(name, &params, Some(before), why).await
    }

    async fn delete_with(
        &self,
        name: &str,
        params: &DeleteParams,
        before: Option<&ObjectMeta>,
        why: &[String],
    ) -> Result<Deleted, kube::Error> {
        if self.held(self.resource, "delete", name, why) {
            return Ok(Deleted::Held);
        }
        match self.api.delete(name, params).await {
            Ok(either) => {
                let after = either.as_ref().left().and_then(|o| o.resource_version());
                match before {
                    Some(before) => self.done(
                        self.resource,
                        "delete",
                        name,
                        version(Some(before)).as_deref(),
                        after.as_deref(),
                    ),
                    None => self.metrics.wrote(self.resource, "delete"),
                }
                Ok(if either.is_left() {
                    Deleted::Terminating
                } else {
                    Deleted::Gone
                })
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Deleted::Absent),
            Err(e) => Err(e),
        }
    }
}

impl<K> Writer<'_, K>
where
    K: Resource + HasStatus<Status = SyncSecretStatus> + Clone + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    /// Patches `desired` into the status of `obj` if it differs from the
    /// live one, keeping the condition's transition time when its verdict
    /// stands; returns whether it wrote (counted as `syncsecrets/status`).
    #[tracing::instrument(level = "debug", skip_all, fields(namespace = self.namespace(), name = %obj.name_any()))]
    pub async fn status(&self, obj: &K, desired: SyncSecretStatus) -> Result<bool, kube::Error> {
        const RESOURCE: &str = "syncsecrets/status";
        if !status_differs(obj.status(), &desired) {
            return Ok(false);
        }
        let name = obj.name_any();
        if self.held(RESOURCE, "patch", &name, &["status".to_owned()]) {
            return Ok(false);
        }
        let stamped = with_transition_time(obj.status(), desired, Timestamp::now());
        let written = self
            .api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": stamped })),
            )
            .await?;
        self.done(
            RESOURCE,
            "patch",
            &name,
            obj.resource_version().as_deref(),
            written.resource_version().as_deref(),
        );
        Ok(true)
    }
}

fn version(meta: Option<&ObjectMeta>) -> Option<String> {
    meta.map(|m| m.resource_version.clone().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    //! The writer's bookkeeping against a scripted API server: each test
    //! says what the server answers and checks what was sent, counted and
    //! remembered.

    use std::sync::{Arc, Mutex};

    use http_body_util::Full;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::Client;
    use prometheus::Registry;
    use serde_json::json;

    use super::*;
    use crate::reconcile::dry_run::DryRun;

    /// Requests the server saw, as `METHOD path`.
    type Seen = Arc<Mutex<Vec<String>>>;

    /// A client whose server answers every request with `status` and `body`.
    fn server(status: u16, body: serde_json::Value) -> (Client, Seen) {
        let seen = Seen::default();
        let log = seen.clone();
        let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            log.lock()
                .unwrap()
                .push(format!("{} {}", req.method(), req.uri().path()));
            let body = body.to_string();
            async move {
                http::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Full::new(bytes::Bytes::from(body)))
            }
        });
        (Client::new(service, "ns"), seen)
    }

    fn config_map(rv: &str) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "a", "namespace": "ns", "resourceVersion": rv}})
    }

    fn meta(rv: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some("a".into()),
            namespace: Some("ns".into()),
            resource_version: Some(rv.into()),
            ..ObjectMeta::default()
        }
    }

    fn cached(rv: &str) -> ConfigMap {
        ConfigMap {
            metadata: meta(rv),
            ..ConfigMap::default()
        }
    }

    /// A registry with a controller's metrics, and its recent writes.
    struct Fixture {
        registry: Registry,
        metrics: ControllerMetrics,
        recent: RecentWrites,
    }

    impl Fixture {
        fn new() -> Self {
            let registry = Registry::new();
            let metrics = ControllerMetrics::register("t", &registry).unwrap();
            Self {
                registry,
                metrics,
                recent: RecentWrites::default(),
            }
        }

        fn dry_run() -> Self {
            let mut f = Self::new();
            let dry_run = DryRun::register("t", &f.registry).unwrap();
            f.metrics = f.metrics.with_dry_run(dry_run);
            f
        }

        /// A writer of ConfigMaps in `ns` through `client`, remembering.
        fn writer(&self, client: Client) -> Writer<'_, ConfigMap> {
            Writer::new(Api::namespaced(client, "ns"), "configmaps", &self.metrics)
                .remembering(Some(&self.recent))
        }

        fn writes(&self) -> f64 {
            sum(&self.registry, "t_writes_total")
        }
    }

    /// The sum of a metric's samples, as a scrape shows it.
    fn sum(registry: &Registry, metric: &str) -> f64 {
        let mut text = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &registry.gather(),
            &mut text,
        )
        .unwrap();
        String::from_utf8(text)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with(&format!("{metric}{{")))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    #[tokio::test]
    async fn an_apply_is_counted_and_remembered_until_the_cache_shows_it() {
        let (client, seen) = server(200, config_map("8"));
        let f = Fixture::new();
        let writer = f.writer(client);
        let written = writer
            .apply("a", "us", &json!({}), Some(&meta("5")), &[])
            .await
            .unwrap();
        assert_eq!(written.unwrap().resource_version().as_deref(), Some("8"));
        assert_eq!(
            *seen.lock().unwrap(),
            ["PATCH /api/v1/namespaces/ns/configmaps/a"]
        );
        assert_eq!(f.writes(), 1.0);
        assert!(f.recent.stale(Some("ns"), "a", Some(&cached("5"))));
        assert!(!f.recent.stale(Some("ns"), "a", Some(&cached("8"))));
    }

    #[tokio::test]
    async fn a_write_that_changed_nothing_is_not_remembered() {
        let (client, _) = server(200, config_map("5"));
        let f = Fixture::new();
        let writer = f.writer(client);
        writer
            .apply("a", "us", &json!({}), Some(&meta("5")), &[])
            .await
            .unwrap();
        // No version was made, so no watch event would ever clear it.
        assert!(!f.recent.stale(Some("ns"), "a", Some(&cached("5"))));
        assert_eq!(f.writes(), 1.0);
    }

    /// Taking the last finalizer off a deleted object deletes it; the API
    /// server answers with the version it replaced. The write is still
    /// remembered, so a reconcile of the cached, terminating object (an
    /// owned object's event) does not clean up and patch again (404s).
    #[tokio::test]
    async fn releasing_the_last_finalizer_of_a_deleted_object_is_remembered() {
        let answer = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "ns", "resourceVersion": "5",
                         "deletionTimestamp": "2026-01-01T00:00:00Z"}});
        let (client, seen) = server(200, answer);
        let f = Fixture::new();
        let writer = f.writer(client);
        let mut deleted = meta("5");
        deleted.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        deleted.finalizers = Some(vec!["us".into()]);
        let released = writer.release_finalizer(&deleted, "us").await.unwrap();
        assert!(released.is_some());
        assert_eq!(
            *seen.lock().unwrap(),
            ["PATCH /api/v1/namespaces/ns/configmaps/a"]
        );
        assert_eq!(f.writes(), 1.0);
        assert!(f.recent.stale(Some("ns"), "a", Some(&cached("5"))));
    }

    #[tokio::test]
    async fn a_dry_run_sends_nothing() {
        let (client, seen) = server(500, json!({}));
        let f = Fixture::dry_run();
        let writer = f.writer(client);
        let (desired, changed) = (json!({}), ["k".to_owned()]);
        let applied = writer.apply("a", "us", &desired, None, &changed);
        assert!(applied.await.unwrap().is_none());
        let deleted = writer.delete("a", Some(&meta("5")), &[]).await.unwrap();
        assert_eq!(deleted, Deleted::Held);
        assert!(seen.lock().unwrap().is_empty());
        assert_eq!(f.writes(), 0.0);
        assert!(!f.recent.stale(Some("ns"), "a", Some(&cached("5"))));
        let pending = sum(&f.registry, "t_dry_run_pending_writes");
        assert_eq!(pending, 2.0, "one pending patch and one pending delete");
    }

    #[tokio::test]
    async fn deleting_what_is_gone_is_done_and_no_write() {
        let gone = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                          "message": "configmaps \"a\" not found", "reason": "NotFound", "code": 404});
        let (client, seen) = server(404, gone);
        let f = Fixture::new();
        let writer = f.writer(client);
        let deleted = writer.delete("a", None, &[]).await.unwrap();
        assert_eq!(deleted, Deleted::Absent);
        assert_eq!(
            *seen.lock().unwrap(),
            ["DELETE /api/v1/namespaces/ns/configmaps/a"]
        );
        assert_eq!(f.writes(), 0.0);
    }

    #[tokio::test]
    async fn a_delete_a_finalizer_holds_is_terminating() {
        let mut terminating = config_map("9");
        terminating["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        terminating["metadata"]["finalizers"] = json!(["kubelb.k8c.io/cleanup"]);
        let (client, _) = server(200, terminating);
        let f = Fixture::new();
        let writer = f.writer(client);
        let deleted = writer.delete("a", Some(&meta("5")), &[]).await.unwrap();
        assert_eq!(deleted, Deleted::Terminating);
        assert_eq!(f.writes(), 1.0);
        assert!(f.recent.stale(Some("ns"), "a", Some(&cached("5"))));
        assert!(!f.recent.stale(Some("ns"), "a", Some(&cached("9"))));
    }

    #[tokio::test]
    async fn the_api_error_comes_back_as_it_was() {
        let refused = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                             "message": "admission webhook \"x\" denied the request: no", "reason": "Forbidden", "code": 403});
        let (client, _) = server(403, refused);
        let f = Fixture::new();
        let writer = f.writer(client);
        let err = writer
            .merge("a", "us", json!({"data": null}), None, &[])
            .await
            .unwrap_err();
        match err {
            kube::Error::Api(s) => {
                assert_eq!(s.code, 403);
                assert_eq!(s.message, "admission webhook \"x\" denied the request: no");
            }
            other => panic!("not the API's answer: {other:?}"),
        }
        assert_eq!(f.writes(), 0.0);
    }
}
