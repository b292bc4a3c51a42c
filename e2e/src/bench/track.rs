//! Tracking convergence by watches, never by polling: when each object's
//! copy, Secret and status arrive, and which version of its content.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use syncsecret_api::SyncSecret;
use syncsecret_api::contract::{LABEL_ORIGIN_NAME, LABEL_ORIGIN_NS};
use tokio::sync::Notify;

use super::VALUE_BYTES;
use crate::HarnessError;

/// What the watches saw: per object name, the version of the content its
/// Secret, its copy and the tenant object hold and when that arrived; and
/// how many copies, Secrets and tenant objects exist.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) secret_version: HashMap<String, (u32, Instant)>,
    pub(super) copy_version: HashMap<String, (u32, Instant)>,
    pub(super) tenant_version: HashMap<String, (u32, Instant)>,
    pub(super) secrets: usize,
    pub(super) copies: usize,
    /// Per tenant cluster.
    pub(super) tenant_objects: Vec<usize>,
}

#[derive(Clone, Default)]
pub(super) struct Tracker {
    pub(super) seen: Arc<Mutex<Seen>>,
    pub(super) changed: Arc<Notify>,
    /// The watch tasks, stopped with the run (before its clusters go).
    pub(super) tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

/// The content of object `name` at `version`: `VALUE_BYTES` bytes that
/// start with `name:version:`.
pub(super) fn value(name: &str, version: u32) -> Vec<u8> {
    let mut v = format!("{name}:{version}:").into_bytes();
    v.resize(VALUE_BYTES, b'x');
    v
}

pub(super) fn version_of(secret: &Secret) -> Option<(String, u32)> {
    version_in(secret.data.as_ref())
}

/// The object name and content version that `data` (of a Secret, a copy
/// or a tenant object) holds.
fn version_in(data: Option<&BTreeMap<String, ByteString>>) -> Option<(String, u32)> {
    let data = data?.get("v")?;
    let text = std::str::from_utf8(data.0.get(..64.min(data.0.len()))?).ok()?;
    let mut parts = text.splitn(3, ':');
    let name = parts.next()?.to_owned();
    let version = parts.next()?.parse().ok()?;
    Some((name, version))
}

/// Records in `versions` that `version` (object name and content
/// version) arrived at `now`, or went.
fn arrived(
    versions: &mut HashMap<String, (u32, Instant)>,
    version: Option<(String, u32)>,
    present: bool,
    now: Instant,
) {
    let Some((name, version)) = version else {
        return;
    };
    if !present {
        versions.remove(&name);
        return;
    }
    let e = versions.entry(name).or_insert((version, now));
    if e.0 != version {
        *e = (version, now);
    }
}

impl Tracker {
    pub(super) fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(handle);
        }
    }

    pub(super) fn stop(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
    }

    /// Reads the state (no notification: a waiter that notified itself
    /// would spin without ever yielding to the watch tasks).
    pub(super) fn read<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        let seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&seen)
    }

    /// Changes the state and wakes the waiters.
    pub(super) fn with<T>(&self, f: impl FnOnce(&mut Seen) -> T) -> T {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let out = f(&mut seen);
        drop(seen);
        self.changed.notify_waiters();
        out
    }

    /// Watches `api`, keeps the number of its objects in `count` and lets
    /// `seen` look at each object that arrives (`true`) or goes (`false`).
    pub(super) fn watch<K>(
        &self,
        api: Api<K>,
        labels: Option<&str>,
        count: impl Fn(&mut Seen) -> &mut usize + Send + 'static,
        seen: impl Fn(&mut Seen, &K, bool, Instant) + Send + 'static,
    ) where
        K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    {
        let tracker = self.clone();
        let mut config = watcher::Config::default();
        if let Some(l) = labels {
            config = config.labels(l);
        }
        self.spawn(async move {
            let mut live = std::collections::HashSet::new();
            let mut stream = watcher(api, config).default_backoff().boxed();
            while let Some(event) = stream.next().await {
                let now = Instant::now();
                let (o, present) = match event {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => (o, true),
                    Ok(watcher::Event::Delete(o)) => (o, false),
                    Ok(watcher::Event::Init | watcher::Event::InitDone) => continue,
                    Err(e) => {
                        eprintln!("bench: watch error (retrying): {e}");
                        continue;
                    }
                };
                let uid = o.uid().unwrap_or_default();
                if present {
                    live.insert(uid);
                } else {
                    live.remove(&uid);
                }
                let n = live.len();
                tracker.with(|s| {
                    seen(s, &o, present, now);
                    *count(s) = n;
                });
            }
        });
    }

    /// Watches the management cluster's Secrets that carry an origin label
    /// and records the content version each holds, and when it arrived.
    pub(super) fn secrets(&self, management: Client) {
        self.watch(
            Api::<Secret>::all(management),
            Some(LABEL_ORIGIN_NAME),
            |s| &mut s.secrets,
            |seen, secret: &Secret, present, now| {
                arrived(&mut seen.secret_version, version_of(secret), present, now);
            },
        );
    }

    /// Watches the copies (what carries the ccm's origin labels) in the
    /// management cluster, as [`Tracker::secrets`] does the Secrets.
    pub(super) fn copies(&self, management: Client) {
        self.watch(
            Api::<SyncSecret>::all(management),
            Some(LABEL_ORIGIN_NS),
            |s| &mut s.copies,
            |seen, copy: &SyncSecret, present, now| {
                let version = version_in(copy.data.as_ref());
                arrived(&mut seen.copy_version, version, present, now);
            },
        );
    }

    /// Watches the tenant objects in `api` (tenant cluster `t`), as
    /// [`Tracker::secrets`] does the Secrets.
    pub(super) fn tenant_objects(&self, api: Api<SyncSecret>, t: usize) {
        self.with(|s| {
            if s.tenant_objects.len() <= t {
                s.tenant_objects.resize(t + 1, 0);
            }
        });
        self.watch(
            api,
            None,
            move |s| &mut s.tenant_objects[t],
            |seen, obj: &SyncSecret, present, now| {
                let version = version_in(obj.data.as_ref());
                arrived(&mut seen.tenant_version, version, present, now);
            },
        );
    }

    /// Waits until `n` Secrets hold their objects' first content; fails
    /// after `timeout` saying `what`.
    pub(super) async fn first_contents(
        &self,
        what: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<Instant, HarnessError> {
        self.until(what, timeout, |s| {
            s.secret_version.values().filter(|(v, _)| *v == 0).count() >= n
        })
        .await
    }

    /// Waits until `done` holds; fails after `timeout` saying `what`.
    pub(super) async fn until(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Seen) -> bool,
    ) -> Result<Instant, HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if self.read(|s| done(s)) {
                return Ok(Instant::now());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let state = self.read(|s| {
                    format!(
                        "{} Secrets with content, {} Secrets, {} copies, {:?} tenant objects",
                        s.secret_version.len(),
                        s.secrets,
                        s.copies,
                        s.tenant_objects
                    )
                });
                return Err(HarnessError::Timeout {
                    what: what.to_owned(),
                    seconds: timeout.as_secs(),
                    detail: state,
                });
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(500)), notified).await;
        }
    }
}
