//! `syncsecret-bench --request-costs`: what one request of each kind the
//! controllers make costs the API server, timed alone.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use syncsecret_api::SyncSecret;

use super::accounting::cost;
use super::floor::{floor_copy, floor_secret};
use super::load::{for_each_concurrently, synced_event};
use crate::HarnessError;

/// A kind of request [`request_costs`] measures.
#[derive(Clone, Copy, Debug)]
pub(super) enum RequestKind {
    CopyPost,
    CopyApplyNew,
    CopyApplyUnchanged,
    CopyFinalizerMerge,
    CopyFinalizerJson,
    CopyStatusMerge,
    CopyGetCached,
    CopyGet,
    SecretPost,
    SecretApplyNew,
    EventPost,
}

impl RequestKind {
    const ALL: [Self; 11] = [
        Self::CopyPost,
        Self::CopyApplyNew,
        Self::CopyApplyUnchanged,
        Self::CopyFinalizerMerge,
        Self::CopyFinalizerJson,
        Self::CopyStatusMerge,
        Self::CopyGetCached,
        Self::CopyGet,
        Self::SecretPost,
        Self::SecretApplyNew,
        Self::EventPost,
    ];

    pub(super) fn label(self) -> &'static str {
        match self {
            Self::CopyPost => "syncsecrets POST",
            Self::CopyApplyNew => "syncsecrets APPLY (new)",
            Self::CopyApplyUnchanged => "syncsecrets APPLY (unchanged)",
            Self::CopyFinalizerMerge => "syncsecrets PATCH (merge, a finalizer)",
            Self::CopyFinalizerJson => "syncsecrets PATCH (JSON patch, a finalizer)",
            Self::CopyStatusMerge => "syncsecrets/status PATCH (merge)",
            Self::CopyGetCached => "syncsecrets GET (resourceVersion=0)",
            Self::CopyGet => "syncsecrets GET",
            Self::SecretPost => "secrets POST",
            Self::SecretApplyNew => "secrets APPLY (new)",
            Self::EventPost => "events POST",
        }
    }
}

/// The requests [`request_costs`] makes, on one namespace.
pub(super) struct Requester {
    pub(super) copies: Api<SyncSecret>,
    pub(super) secrets: Api<Secret>,
    pub(super) events: Api<k8s_openapi::api::events::v1::Event>,
}

impl Requester {
    /// One request of `kind` on object number `i` (the kinds before it in
    /// [`RequestKind::ALL`] made what it needs).
    pub(super) async fn make(&self, kind: RequestKind, i: usize) -> Result<(), HarnessError> {
        use kube::api::GetParams;
        let (name, applied) = (format!("c{i}"), format!("a{i}"));
        let apply = PatchParams::apply("syncsecret-bench").force();
        let merge = PatchParams::default();
        match kind {
            RequestKind::CopyPost => {
                self.copies
                    .create(&PostParams::default(), &floor_copy(&name, &name))
                    .await?;
            }
            RequestKind::CopyApplyNew | RequestKind::CopyApplyUnchanged => {
                let copy = floor_copy(&applied, &applied);
                self.copies
                    .patch(&applied, &apply, &Patch::Apply(copy))
                    .await?;
            }
            RequestKind::CopyFinalizerMerge => {
                let patch =
                    json!({ "metadata": { "finalizers": [syncsecret_api::contract::FINALIZER] } });
                self.copies
                    .patch(&name, &merge, &Patch::Merge(&patch))
                    .await?;
            }
            RequestKind::CopyFinalizerJson => {
                // As kube-runtime's finalizer helper adds one to an object
                // that has some: a test of the list it read, then an add.
                // (The list is known here: the merge patch before set it.)
                let patch: json_patch::Patch = serde_json::from_value(json!([
                    { "op": "test", "path": "/metadata/finalizers",
                      "value": [syncsecret_api::contract::FINALIZER] },
                    { "op": "add", "path": "/metadata/finalizers/-",
                      "value": "bench.kubelb.k8c.io/second" },
                ]))
                .map_err(|e| HarnessError::Usage(format!("JSON patch: {e}")))?;
                self.copies
                    .patch(&name, &merge, &Patch::<()>::Json(patch))
                    .await?;
            }
            RequestKind::CopyStatusMerge => {
                let patch = json!({ "status": { "phase": "Synced" } });
                self.copies
                    .patch_status(&name, &merge, &Patch::Merge(&patch))
                    .await?;
            }
            RequestKind::CopyGetCached => {
                self.copies.get_with(&name, &GetParams::any()).await?;
            }
            RequestKind::CopyGet => {
                self.copies.get(&name).await?;
            }
            RequestKind::SecretPost => {
                let secret = floor_secret(&floor_copy(&name, &name));
                self.secrets.create(&PostParams::default(), &secret).await?;
            }
            RequestKind::SecretApplyNew => {
                let secret = floor_secret(&floor_copy(&applied, &applied));
                self.secrets
                    .patch(&applied, &apply, &Patch::Apply(secret))
                    .await?;
            }
            RequestKind::EventPost => {
                let event = synced_event(&name, "default", None, "request-costs");
                self.events.create(&PostParams::default(), &event).await?;
            }
        }
        Ok(())
    }
}

/// The API server's own cost of each kind of request the contract makes:
/// on a fresh management cluster with none of our controllers running
/// (kube-controller-manager does), `n` requests of each kind,
/// `concurrency` at a time, and the CPU seconds kube-apiserver and etcd
/// spent on them (from /proc), per request, less what they spend idle in
/// the same time. What a phase's "etcd + API servers ÷ writes" is made of:
/// the floors write with POST and merge patches; the controllers apply
/// copies and Secrets, add finalizers with JSON patches, write statuses
/// with merge patches, and read whole objects before they write when
/// their watch has not just delivered them.
pub async fn request_costs(n: usize, concurrency: usize) -> Result<Value, HarnessError> {
    use crate::control_plane::ControlPlane;
    if n == 0 {
        return Err(HarnessError::Usage(
            "--request-costs needs at least one request".into(),
        ));
    }
    let plane = ControlPlane::start(&["management"]).await?;
    let client = plane.management().client().await?;
    let pids: Vec<(&'static str, u32)> = plane
        .processes()
        .filter_map(|(name, pid)| match name.split(' ').next() {
            Some("etcd") => Some(("etcd", pid)),
            Some("kube-apiserver") => Some(("kube-apiserver", pid)),
            _ => None,
        })
        .collect();
    let cpu = || {
        let mut by_role: BTreeMap<&'static str, f64> = BTreeMap::new();
        for (role, pid) in &pids {
            *by_role.entry(role).or_default() += cost(*pid).1;
        }
        by_role
    };
    let requester = Requester {
        copies: Api::namespaced(client.clone(), "default"),
        secrets: Api::namespaced(client.clone(), "default"),
        events: Api::namespaced(client, "default"),
    };
    // Warm up (connections, the new CRD's handlers, kube-controller-manager's
    // first lists), then measure what the servers spend doing nothing.
    let warm: Vec<(usize, String)> = (0..n.min(500)).map(|i| (n + i, String::new())).collect();
    for_each_concurrently(warm, concurrency, |i, _| {
        requester.make(RequestKind::CopyPost, i)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_before = cpu();
    let idle_for = Duration::from_secs(10);
    tokio::time::sleep(idle_for).await;
    let idle_after = cpu();
    let idle_per_s = |role: &str| {
        (idle_after.get(role).copied().unwrap_or(0.0)
            - idle_before.get(role).copied().unwrap_or(0.0))
            / idle_for.as_secs_f64()
    };
    let mut kinds = Vec::new();
    for kind in RequestKind::ALL {
        let items: Vec<(usize, String)> = (0..n).map(|i| (i, String::new())).collect();
        let before = cpu();
        let t0 = Instant::now();
        for_each_concurrently(items, concurrency, |i, _| requester.make(kind, i)).await?;
        let wall = t0.elapsed().as_secs_f64();
        let after = cpu();
        let mut per_request = serde_json::Map::new();
        for (role, a) in &after {
            let spent = a - before.get(role).copied().unwrap_or(0.0) - idle_per_s(role) * wall;
            per_request.insert(
                (*role).to_owned(),
                json!(spent.max(0.0) * 1000.0 / n as f64),
            );
        }
        kinds.push(json!({ "kind": kind.label(), "requests": n, "wall_s": wall, "cpu_ms_per_request": per_request }));
    }
    let idle: serde_json::Map<String, Value> = ["etcd", "kube-apiserver"]
        .iter()
        .map(|r| ((*r).to_owned(), json!(idle_per_s(r))))
        .collect();
    Ok(
        json!({ "requests_per_kind": n, "concurrency": concurrency, "idle_cpu_per_second": idle, "kinds": kinds }),
    )
}
