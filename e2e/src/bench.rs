//! The benchmark: bulk convergence against the API-server floor,
//! propagation latency, quiet after a restart, and what it costs, on the
//! real control plane with the controllers as processes. `make bench` runs
//! it at 1,000 and 10,000 objects over 1 and 4 tenants; a short run
//! (`e2e/tests/bench.rs`) asserts only correctness.
//!
//! Convergence is detected by watches, never by polling: a watch on the
//! management cluster's Secrets (and copies, and each tenant's objects)
//! records when each object's content arrives.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use syncsecret_api::SyncSecret;
use syncsecret_api::contract::{LABEL_ORIGIN_NAME, LABEL_ORIGIN_NS, tenant_namespace};
use tokio::sync::Notify;

use crate::HarnessError;
use crate::pair::{Launch, Pair, ensure_namespace};

/// The tenant namespace every benchmark object lives in.
const NAMESPACE: &str = "bench";
/// Bytes of data per object.
pub const VALUE_BYTES: usize = 1024;

/// One benchmark run.
#[derive(Clone, Debug)]
pub struct Config {
    /// SyncSecrets in all, spread evenly over the tenants.
    pub objects: usize,
    /// Tenant clusters.
    pub tenants: usize,
    /// Creates, deletes (and floor writes) in flight at once.
    pub concurrency: usize,
    /// Paced single updates for the latency percentiles.
    pub updates: usize,
    /// Pause between two of those updates.
    pub pace: Duration,
    /// Also measure the floor (plain client writes).
    pub floor: bool,
    /// How the controllers are started.
    pub launch: Launch,
    /// How long any one phase may take before the run fails.
    pub timeout: Duration,
    /// CPU profiles of the API servers while converging, if asked for.
    pub profile: Option<ProfileApiServers>,
    /// Bytes of labels and annotations each copy carries, as the tenant
    /// copy policy counts them (keys and values); the tenant objects are
    /// padded with one annotation to reach it. 0: no padding.
    pub metadata_bytes: usize,
    /// End with the leak scan of every value written (for the short run
    /// in `make test`; at 10,000 objects it costs the loader more than a
    /// benchmark should).
    pub leak_scan: bool,
}

/// The annotation that pads a tenant object to [`Config::metadata_bytes`].
pub const PAD_ANNOTATION: &str = "bench-pad";

/// CPU profiles of the management cluster's and the first tenant
/// cluster's kube-apiserver (their `/debug/pprof/profile`, on by default)
/// during each converge phase: ours, the floor, the contract floor. Each is
/// `seconds` long from `after` into the phase, written to `dir` as
/// `<objects>x<tenants>-<phase>-<cluster>.pprof` (`go tool pprof -top
/// FILE`). A profile is a CPU cost of its own: runs with one are for
/// finding where the time goes, not for the table.
#[derive(Clone, Debug)]
pub struct ProfileApiServers {
    /// Where the profiles go.
    pub dir: std::path::PathBuf,
    /// How long into each phase a profile starts.
    pub after: Duration,
    /// How long it lasts.
    pub seconds: u64,
}

/// Starts the CPU profiles of one phase (see [`ProfileApiServers`]).
fn start_profiles(pair: &Pair, cfg: &Config, phase: &str) -> Vec<tokio::task::JoinHandle<()>> {
    let Some(p) = &cfg.profile else {
        return Vec::new();
    };
    let clusters = [
        ("management", pair.management.clone()),
        ("tenant", pair.tenants[0].clone()),
    ];
    clusters
        .into_iter()
        .map(|(cluster, client)| {
            let file = p.dir.join(format!(
                "{}x{}-{phase}-{cluster}.pprof",
                cfg.objects, cfg.tenants
            ));
            let (after, seconds) = (p.after, p.seconds);
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                if let Err(e) = profile_apiserver(&client, seconds, &file).await {
                    eprintln!("bench: no profile {}: {e}", file.display());
                }
            })
        })
        .collect()
}

/// Waits for a phase's profiles (they may outlast a short phase).
async fn finish_profiles(profiles: Vec<tokio::task::JoinHandle<()>>) {
    for p in profiles {
        let _ = p.await;
    }
}

/// One CPU profile of the API server `client` talks to, written to `file`.
async fn profile_apiserver(
    client: &Client,
    seconds: u64,
    file: &std::path::Path,
) -> Result<(), HarnessError> {
    use futures::AsyncReadExt;
    let request = http::Request::get(format!("/debug/pprof/profile?seconds={seconds}"))
        .body(Vec::new())
        .map_err(|e| HarnessError::Usage(format!("profile request: {e}")))?;
    let mut body = Box::pin(client.request_stream(request).await?);
    let mut bytes = Vec::new();
    body.read_to_end(&mut bytes)
        .await
        .map_err(|e| HarnessError::io(file, e))?;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| HarnessError::io(dir, e))?;
    }
    std::fs::write(file, bytes).map_err(|e| HarnessError::io(file, e))
}

/// What the management-side watches saw: per object name, the version of
/// the content its Secret holds and when that arrived; and how many
/// copies, Secrets and tenant objects exist.
#[derive(Default)]
struct Seen {
    secret_version: HashMap<String, (u32, Instant)>,
    secrets: usize,
    copies: usize,
    /// Per tenant cluster.
    tenant_objects: Vec<usize>,
}

#[derive(Clone, Default)]
struct Tracker {
    seen: Arc<Mutex<Seen>>,
    changed: Arc<Notify>,
    /// The watch tasks, stopped with the run (before its clusters go).
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

/// The content of object `name` at `version`: `VALUE_BYTES` bytes that
/// start with `name:version:`.
fn value(name: &str, version: u32) -> Vec<u8> {
    let mut v = format!("{name}:{version}:").into_bytes();
    v.resize(VALUE_BYTES, b'x');
    v
}

fn version_of(secret: &Secret) -> Option<(String, u32)> {
    let data = secret.data.as_ref()?.get("v")?;
    let text = std::str::from_utf8(data.0.get(..64.min(data.0.len()))?).ok()?;
    let mut parts = text.splitn(3, ':');
    let name = parts.next()?.to_owned();
    let version = parts.next()?.parse().ok()?;
    Some((name, version))
}

impl Tracker {
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(handle);
        }
    }

    fn stop(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
    }

    /// Reads the state (no notification: a waiter that notified itself
    /// would spin without ever yielding to the watch tasks).
    fn read<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        let seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&seen)
    }

    /// Changes the state and wakes the waiters.
    fn with<T>(&self, f: impl FnOnce(&mut Seen) -> T) -> T {
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
    fn watch<K>(
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

    /// Watches `api` and keeps the number of its objects in `count`.
    fn count<K>(
        &self,
        api: Api<K>,
        labels: Option<&str>,
        count: impl Fn(&mut Seen) -> &mut usize + Send + 'static,
    ) where
        K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    {
        self.watch(api, labels, count, |_, _, _, _| {});
    }

    /// Watches the management cluster's Secrets that carry an origin label
    /// and records the content version each holds, and when it arrived.
    fn secrets(&self, management: Client) {
        self.watch(
            Api::<Secret>::all(management),
            Some(LABEL_ORIGIN_NAME),
            |s| &mut s.secrets,
            |seen, secret: &Secret, present, now| {
                let Some((name, version)) = version_of(secret) else {
                    return;
                };
                if !present {
                    seen.secret_version.remove(&name);
                    return;
                }
                let e = seen.secret_version.entry(name).or_insert((version, now));
                if e.0 != version {
                    *e = (version, now);
                }
            },
        );
    }

    /// Waits until `done` holds; fails after `timeout` saying `what`.
    async fn until(
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

/// Tenant object `name`; with `pad` bytes of annotation value.
fn object(name: &str, pad: usize) -> SyncSecret {
    SyncSecret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            annotations: (pad > 0).then(|| [(PAD_ANNOTATION.to_owned(), "x".repeat(pad))].into()),
            ..Default::default()
        },
        data: Some([("v".to_owned(), ByteString(value(name, 0)))].into()),
        ..Default::default()
    }
}

/// The pad that makes each copy carry `cfg.metadata_bytes` of labels and
/// annotations: what a copy carries besides the pad is measured on one
/// probe object (its labels and annotations as the copy policy counts
/// them), which is then deleted. The probe's name is the longest of the
/// run's, so no copy carries more than `cfg.metadata_bytes`, and those
/// with shorter names a few dozen bytes less.
async fn padding(
    pair: &Pair,
    cfg: &Config,
    items: &[(usize, String)],
) -> Result<usize, HarnessError> {
    if cfg.metadata_bytes == 0 {
        return Ok(0);
    }
    let Some((t, probe)) = items.last().cloned() else {
        return Ok(0);
    };
    let probe = format!("{probe}-probe");
    let api: Api<SyncSecret> = Api::namespaced(pair.tenants[t].clone(), NAMESPACE);
    let created = api
        .create(&PostParams::default(), &object(&probe, 0))
        .await?;
    let uid = created.metadata.uid.unwrap_or_default();
    let copies: Api<SyncSecret> = Api::namespaced(
        pair.management.clone(),
        &syncsecret_api::contract::tenant_namespace(&pair.tenant_names[t]),
    );
    let copy = crate::kube_util::eventually("the probe's copy", cfg.timeout, || async {
        copies
            .get_opt(&uid)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "no copy yet".to_owned())
    })
    .await?;
    let size = |m: Option<&BTreeMap<String, String>>| {
        m.into_iter()
            .flatten()
            .map(|(k, v)| k.chars().count() + v.chars().count())
            .sum::<usize>()
    };
    let own = size(copy.metadata.labels.as_ref()) + size(copy.metadata.annotations.as_ref());
    api.delete(&probe, &DeleteParams::default()).await?;
    // Gone in both clusters before the run starts counting.
    crate::kube_util::eventually("the probe gone", cfg.timeout, || async {
        match copies.get_opt(&uid).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err("its copy is still there".to_owned()),
        }
    })
    .await?;
    let pad = cfg
        .metadata_bytes
        .checked_sub(own + PAD_ANNOTATION.len())
        .ok_or_else(|| {
            HarnessError::Usage(format!(
                "--metadata-bytes {} is less than a copy's own {own} bytes",
                cfg.metadata_bytes
            ))
        })?;
    Ok(pad)
}

/// Object `i` of tenant `t`.
fn name(t: usize, i: usize) -> String {
    format!("o{t}-{i}")
}

/// `apiserver_request_total` of one API server, by `resource[/subresource]`
/// and verb, for our resources only.
async fn requests(client: &Client) -> Result<BTreeMap<String, f64>, HarnessError> {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .map_err(|e| HarnessError::Usage(e.to_string()))?;
    let text = client.request_text(req).await?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        let resource = label("resource");
        if !matches!(resource.as_str(), "syncsecrets" | "secrets" | "events") {
            continue;
        }
        let sub = label("subresource");
        let key = if sub.is_empty() {
            format!("{resource} {}", label("verb"))
        } else {
            format!("{resource}/{sub} {}", label("verb"))
        };
        *out.entry(key).or_insert(0.0) += value.trim().parse::<f64>().unwrap_or(0.0);
    }
    Ok(out)
}

/// Request counts of the management (`m`) and tenant (`t`) API servers.
async fn all_requests(pair: &Pair) -> Result<BTreeMap<String, f64>, HarnessError> {
    let mut out = BTreeMap::new();
    for (k, v) in requests(&pair.management).await? {
        out.insert(format!("management {k}"), v);
    }
    for c in &pair.tenants {
        for (k, v) in requests(c).await? {
            *out.entry(format!("tenant {k}")).or_insert(0.0) += v;
        }
    }
    Ok(out)
}

fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

fn is_write(key: &str) -> bool {
    ["POST", "PUT", "PATCH", "DELETE", "APPLY"]
        .iter()
        .any(|v| key.ends_with(&format!(" {v}")))
}

/// Peak RSS (KiB) and CPU seconds of a process, from /proc.
fn cost(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after ") ".
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, r)| r.split(' ').collect())
        .unwrap_or_default();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
        .sum();
    (hwm, ticks / 100.0)
}

/// The machine's idle CPU seconds so far (idle and iowait of all cores,
/// from /proc/stat).
fn idle_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: f64 = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .map(|l| {
            l.split_whitespace()
                .skip(3)
                .take(2)
                .filter_map(|v| v.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or(0.0);
    ticks / 100.0
}

/// CPU seconds used so far by each part of the run: etcd, the API servers,
/// kube-controller-manager, the controllers, this process (the loader and
/// its watches), and what the machine left idle.
fn cpu_now(pair: &Pair) -> BTreeMap<&'static str, f64> {
    let mut cpu = BTreeMap::new();
    for (name, pid) in pair.plane.processes() {
        let role = match name.split(' ').next() {
            Some("etcd") => "etcd",
            Some("kube-apiserver") => "kube-apiserver",
            Some("kube-controller-manager") => "kube-controller-manager",
            _ => "other",
        };
        *cpu.entry(role).or_default() += cost(pid).1;
    }
    let controllers = pair
        .controllers()
        .filter_map(|c| c.pid())
        .map(|p| cost(p).1);
    cpu.insert("controllers", controllers.sum());
    cpu.insert("loader", cost(std::process::id()).1);
    cpu.insert("idle", idle_seconds());
    cpu
}

/// The write requests (every API server's `apiserver_request_total`)
/// between two readings of [`all_requests`].
fn writes_between(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> f64 {
    delta(before, after)
        .iter()
        .filter(|(k, _)| is_write(k))
        .map(|(_, v)| v)
        .sum()
}

/// What each part used between two [`cpu_now`] readings, with the wall
/// time between them and `writes`, the write requests in it: where the
/// time of a phase went. Read the API servers' metrics outside the two
/// readings: rendering them costs CPU of its own.
fn cpu_spent(
    before: &BTreeMap<&'static str, f64>,
    after: &BTreeMap<&'static str, f64>,
    wall: Duration,
    writes: f64,
) -> Value {
    let mut spent = serde_json::Map::new();
    for (role, a) in after {
        let d = (a - before.get(role).copied().unwrap_or(0.0)).max(0.0);
        spent.insert((*role).to_owned(), json!(d));
    }
    spent.insert("wall".to_owned(), json!(wall.as_secs_f64()));
    spent.insert("writes".to_owned(), json!(writes));
    Value::Object(spent)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Peak RSS and CPU seconds of each controller process, as it is now.
fn cost_now(pair: &Pair) -> Vec<Value> {
    pair.controllers()
        .filter_map(|c| {
            let (rss_kib, cpu) = cost(c.pid()?);
            Some(json!({ "process": c.name(), "peak_rss_mib": rss_kib as f64 / 1024.0, "cpu_seconds": cpu }))
        })
        .collect()
}

async fn for_each_concurrently<F, Fut>(
    items: Vec<(usize, String)>,
    concurrency: usize,
    f: F,
) -> Result<(), HarnessError>
where
    F: Fn(usize, String) -> Fut,
    Fut: std::future::Future<Output = Result<(), HarnessError>>,
{
    futures::stream::iter(items.into_iter().map(|(t, n)| f(t, n)))
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await
        .map(|_| ())
}

/// Runs the benchmark once; the result as JSON.
pub async fn run(cfg: &Config) -> Result<Value, HarnessError> {
    if cfg.metadata_bytes > 0 && cfg.floor {
        return Err(HarnessError::Usage(
            "the floors write no padding: a run with metadata bytes needs the floors off (--no-floors)"
                .into(),
        ));
    }
    let names: Vec<String> = (1..=cfg.tenants).map(|t| format!("bench{t}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let started = Instant::now();
    let mut pair = Pair::start_with(&refs, &cfg.launch).await?;
    let plane_start = started.elapsed();
    if cfg.leak_scan {
        pair.record_written();
    }
    let tracker = Tracker::default();
    let mut result = phases(&mut pair, &tracker, cfg, &names, plane_start).await;
    tracker.stop();
    if cfg.leak_scan && result.is_ok() {
        let found = pair.leaks(&[]).await?;
        if !found.is_empty() {
            result = Err(HarnessError::Usage(format!(
                "a secret value leaked in: {found:?}"
            )));
        }
    }
    result.map_err(|e| HarnessError::Usage(format!("{e}\n{}", pair.dump())))
}

async fn phases(
    pair: &mut Pair,
    tracker: &Tracker,
    cfg: &Config,
    names: &[String],
    plane_start: Duration,
) -> Result<Value, HarnessError> {
    for c in &pair.tenants {
        ensure_namespace(c, NAMESPACE).await?;
    }
    tracker.secrets(pair.management.clone());
    tracker.count(
        Api::<SyncSecret>::all(pair.management.clone()),
        Some(LABEL_ORIGIN_NS),
        |s| &mut s.copies,
    );
    tracker.with(|s| s.tenant_objects = vec![0; pair.tenants.len()]);
    for (t, c) in pair.tenants.iter().enumerate() {
        tracker.count(
            Api::<SyncSecret>::namespaced(c.clone(), NAMESPACE),
            None,
            move |s| &mut s.tenant_objects[t],
        );
    }
    let per_tenant = cfg.objects / cfg.tenants.max(1);
    let n = per_tenant * cfg.tenants;
    let items: Vec<(usize, String)> = (0..per_tenant)
        .flat_map(|i| (0..cfg.tenants).map(move |t| (t, name(t, i))))
        .collect();
    let apis: Vec<Api<SyncSecret>> = pair
        .tenants
        .iter()
        .map(|c| Api::namespaced(c.clone(), NAMESPACE))
        .collect();
    let pad = padding(pair, cfg, &items).await?;

    // 1. Bulk convergence.
    let before = all_requests(pair).await?;
    let cpu_before = cpu_now(pair);
    let profiles = start_profiles(pair, cfg, "ours");
    let t0 = Instant::now();
    for_each_concurrently(items.clone(), cfg.concurrency, |t, n| {
        let api = apis[t].clone();
        async move {
            api.create(&PostParams::default(), &object(&n, pad)).await?;
            Ok(())
        }
    })
    .await?;
    let created = t0.elapsed();
    let done = tracker
        .until("every Secret holds its content", cfg.timeout, |s| {
            s.secret_version.values().filter(|(v, _)| *v == 0).count() >= n
        })
        .await?;
    let converge = done - t0;
    // Status mirrored home too (each tenant object Synced): the rest of
    // the work a create causes, so that request counts are complete.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu_after, wall) = (cpu_now(pair), t0.elapsed());
    let after = all_requests(pair).await?;
    let create_cpu = cpu_spent(
        &cpu_before,
        &cpu_after,
        wall,
        writes_between(&before, &after),
    );
    let create_requests = delta(&before, &after);
    finish_profiles(profiles).await;

    // 2. Propagation latency, one paced update at a time.
    let mut latencies = Vec::new();
    let requests_before_updates = all_requests(pair).await?;
    let cpu_before_updates = cpu_now(pair);
    let t_updates = Instant::now();
    for k in 0..cfg.updates {
        let (t, n) = &items[(k * 7919) % items.len()];
        let version = u32::try_from(k + 1).unwrap_or(u32::MAX);
        let patch = json!({ "data": { "v": ByteString(value(n, version)) } });
        let sent = Instant::now();
        apis[*t]
            .patch(n, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let arrived = tracker
            .until(&format!("update {k} of {n} arrives"), cfg.timeout, |s| {
                s.secret_version
                    .get(n.as_str())
                    .is_some_and(|(v, _)| *v == version)
            })
            .await?;
        let at = tracker.read(|s| s.secret_version.get(n.as_str()).map(|(_, at)| *at));
        let at = at.unwrap_or(arrived);
        latencies.push(at.saturating_duration_since(sent).as_secs_f64() * 1000.0);
        tokio::time::sleep(cfg.pace).await;
    }
    latencies.sort_by(f64::total_cmp);
    let (cpu_after, wall) = (cpu_now(pair), t_updates.elapsed());
    let update_writes = writes_between(&requests_before_updates, &all_requests(pair).await?);
    let updates_cpu = cpu_spent(&cpu_before_updates, &cpu_after, wall, update_writes);

    // 3. Cost so far (peak RSS, CPU) of each controller process.
    let costs = cost_now(pair);

    // 4. Quiet after a restart: no write to either cluster.
    let writes = |pair: &Pair| -> f64 {
        pair.controllers()
            .filter_map(|c| c.metrics().ok())
            .map(|m| {
                crate::pair::sum_samples(&m, "kubelb_ccm_writes_total")
                    + crate::pair::sum_samples(&m, "kubelb_manager_writes_total")
            })
            .fold(0.0, |a, b| a + b)
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let quiet_before = all_requests(pair).await?;
    pair.restart_all().await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let restart_requests = delta(&quiet_before, &all_requests(pair).await?);
    let restart_writes: BTreeMap<String, f64> = restart_requests
        .iter()
        .filter(|(k, _)| is_write(k))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let counted_writes = writes(pair);
    // A restarted controller lists everything at once: its own peak.
    let restart_costs = cost_now(pair);

    // 5. Bulk delete: until nothing is left in either cluster.
    let t1 = Instant::now();
    for_each_concurrently(items.clone(), cfg.concurrency, |t, n| {
        let api = apis[t].clone();
        async move {
            api.delete(&n, &DeleteParams::default()).await?;
            Ok(())
        }
    })
    .await?;
    tracker
        .until("nothing is left in either cluster", cfg.timeout, |s| {
            s.secrets == 0 && s.copies == 0 && s.tenant_objects.iter().all(|n| *n == 0)
        })
        .await?;
    let delete = t1.elapsed();

    // 6. The floor: the same final objects (copy and Secret per object)
    // written straight to the management cluster by a plain client, with
    // the controllers stopped, detected the same way.
    let floor = if cfg.floor {
        pair.manager.stop()?;
        for c in &mut pair.ccms {
            c.stop()?;
        }
        Some(floor(pair, tracker, &items, names, cfg).await?)
    } else {
        None
    };
    // 7. The contract floor: every write the contract makes, by a plain
    // client, each object's chain in order.
    let contract_floor = if cfg.floor {
        Some(contract_floor(pair, tracker, &items, names, cfg).await?)
    } else {
        None
    };

    let per_object: BTreeMap<String, f64> = create_requests
        .iter()
        .map(|(k, v)| (k.clone(), v / n as f64))
        .collect();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(json!({
        "objects": n,
        "tenants": cfg.tenants,
        "value_bytes": VALUE_BYTES,
        "metadata_bytes": cfg.metadata_bytes,
        "metadata_pad_bytes": pad,
        "concurrency": cfg.concurrency,
        "launch": {
            "manager": cfg.launch.manager.clone().unwrap_or_else(|| format!("syncsecret-manager {}", cfg.launch.manager_args.join(" "))),
            "ccm": cfg.launch.ccm.clone().unwrap_or_else(|| format!("syncsecret-ccm {}", cfg.launch.ccm_args.join(" "))),
        },
        "control_plane_start_s": plane_start.as_secs_f64(),
        "create": { "loader_ms": ms(created), "converged_ms": ms(converge), "cpu_s": create_cpu },
        "delete": { "converged_ms": ms(delete) },
        "floor": floor,
        "contract_floor": contract_floor,
        "latency_ms": {
            "updates": latencies.len(),
            "pace_ms": ms(cfg.pace),
            "p50": percentile(&latencies, 50.0),
            "p90": percentile(&latencies, 90.0),
            "p99": percentile(&latencies, 99.0),
            "max": latencies.last().copied().unwrap_or(f64::NAN),
            "cpu_s": updates_cpu,
        },
        "after_restart": {
            "api_writes": restart_writes,
            "api_requests": restart_requests,
            "writes_total_of_new_processes": counted_writes,
        },
        "cost": costs,
        "cost_after_restart": restart_costs,
        "requests_per_object": per_object,
    }))
}

/// A `Synced` event about the SyncSecret `namespace/name`, as a
/// controller writes one, reported by `syncsecret-bench/<by>`.
fn synced_event(
    name: &str,
    namespace: &str,
    uid: Option<String>,
    by: &str,
) -> k8s_openapi::api::events::v1::Event {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    k8s_openapi::api::events::v1::Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.synced")),
            ..Default::default()
        },
        event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
        action: Some("Sync".into()),
        reason: Some("Synced".into()),
        note: Some("synced".into()),
        type_: Some("Normal".into()),
        reporting_controller: Some(format!("syncsecret-bench/{by}")),
        reporting_instance: Some("bench".into()),
        regarding: Some(k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("kubelb.k8c.io/v1alpha1".into()),
            kind: Some("SyncSecret".into()),
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            uid,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A floor's copy of object `name`, named `floor_name`, with the origin
/// labels.
fn floor_copy(name: &str, floor_name: &str) -> SyncSecret {
    let mut copy = object(name, 0);
    copy.metadata.name = Some(floor_name.to_owned());
    copy.metadata.labels = Some(
        [
            (LABEL_ORIGIN_NAME.to_owned(), name.to_owned()),
            (LABEL_ORIGIN_NS.to_owned(), NAMESPACE.to_owned()),
        ]
        .into(),
    );
    copy
}

/// A floor's Secret for `copy`: its name, labels and data.
fn floor_secret(copy: &SyncSecret) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: copy.metadata.name.clone(),
            labels: copy.metadata.labels.clone(),
            ..Default::default()
        },
        data: copy.data.clone(),
        ..Default::default()
    }
}

/// Writes each object's copy and then its Secret (both named
/// `floor-<name>`) straight to the management cluster, in the tenants'
/// namespaces, then deletes them all.
async fn floor(
    pair: &Pair,
    tracker: &Tracker,
    items: &[(usize, String)],
    tenants: &[String],
    cfg: &Config,
) -> Result<Value, HarnessError> {
    let n = items.len();
    let requests_before = all_requests(pair).await?;
    let cpu_before = cpu_now(pair);
    let profiles = start_profiles(pair, cfg, "floor");
    let t0 = Instant::now();
    for_each_concurrently(items.to_vec(), cfg.concurrency, |t, name| {
        let ns = tenant_namespace(&tenants[t]);
        let copies: Api<SyncSecret> = Api::namespaced(pair.management.clone(), &ns);
        let secrets: Api<Secret> = Api::namespaced(pair.management.clone(), &ns);
        async move {
            let copy = copies
                .create(
                    &PostParams::default(),
                    &floor_copy(&name, &format!("floor-{name}")),
                )
                .await?;
            secrets
                .create(&PostParams::default(), &floor_secret(&copy))
                .await?;
            Ok(())
        }
    })
    .await?;
    let done = tracker
        .until("every floor Secret exists", cfg.timeout, |s| {
            s.secret_version.values().filter(|(v, _)| *v == 0).count() >= n
        })
        .await?;
    let create = done - t0;
    let (cpu_after, wall) = (cpu_now(pair), t0.elapsed());
    let writes = writes_between(&requests_before, &all_requests(pair).await?);
    let cpu = cpu_spent(&cpu_before, &cpu_after, wall, writes);
    finish_profiles(profiles).await;
    let t1 = Instant::now();
    for_each_concurrently(items.to_vec(), cfg.concurrency, |t, name| {
        let ns = tenant_namespace(&tenants[t]);
        let copies: Api<SyncSecret> = Api::namespaced(pair.management.clone(), &ns);
        let secrets: Api<Secret> = Api::namespaced(pair.management.clone(), &ns);
        async move {
            let name = format!("floor-{name}");
            secrets.delete(&name, &DeleteParams::default()).await?;
            copies.delete(&name, &DeleteParams::default()).await?;
            Ok(())
        }
    })
    .await?;
    tracker
        .until("every floor object is gone", cfg.timeout, |s| {
            s.secrets == 0 && s.copies == 0
        })
        .await?;
    let delete = t1.elapsed();
    Ok(json!({
        "create_ms": create.as_secs_f64() * 1000.0,
        "cpu_s": cpu,
        "delete_ms": delete.as_secs_f64() * 1000.0,
    }))
}

/// The writes [`contract_floor`] makes per object.
const CONTRACT_WRITES: usize = 8;

/// What the contract writes for one object, in the order the controllers
/// write it, by a plain client with nothing to watch, queue or compare:
/// the tenant object (the loader's create), its finalizer, the copy, the
/// copy's finalizer, the Secret, the copy's status, the tenant object's
/// status and one event; and on deletion: the tenant object, the copy, the
/// Secret, and both finalizers released. `ours / this` is what the
/// controllers add to the API servers' own cost of the contract.
async fn contract_floor(
    pair: &Pair,
    tracker: &Tracker,
    items: &[(usize, String)],
    tenants: &[String],
    cfg: &Config,
) -> Result<Value, HarnessError> {
    use k8s_openapi::api::events::v1::Event;
    use syncsecret_api::contract::FINALIZER;
    let n = items.len();
    let name_of = |name: &str| format!("cfloor-{name}");
    let with_finalizer = json!({ "metadata": { "finalizers": [FINALIZER] } });
    let without_finalizer = json!({ "metadata": { "finalizers": null } });
    let synced = json!({ "status": { "phase": "Synced", "conditions": [{
        "type": "Synced", "status": "True", "reason": "Synced", "message": "synced",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }]}});
    let requests_before = all_requests(pair).await?;
    let cpu_before = cpu_now(pair);
    let profiles = start_profiles(pair, cfg, "contract-floor");
    let t0 = Instant::now();
    for_each_concurrently(items.to_vec(), cfg.concurrency, |t, name| {
        let ns = tenant_namespace(&tenants[t]);
        let tenant: Api<SyncSecret> = Api::namespaced(pair.tenants[t].clone(), NAMESPACE);
        let events: Api<Event> = Api::namespaced(pair.tenants[t].clone(), NAMESPACE);
        let copies: Api<SyncSecret> = Api::namespaced(pair.management.clone(), &ns);
        let secrets: Api<Secret> = Api::namespaced(pair.management.clone(), &ns);
        let (with_finalizer, synced) = (with_finalizer.clone(), synced.clone());
        let cname = name_of(&name);
        async move {
            let merge = PatchParams::default();
            let mut obj = object(&name, 0);
            obj.metadata.name = Some(cname.clone());
            let created = tenant.create(&PostParams::default(), &obj).await?;
            tenant
                .patch(&cname, &merge, &Patch::Merge(&with_finalizer))
                .await?;
            let copy = copies
                .create(&PostParams::default(), &floor_copy(&name, &cname))
                .await?;
            copies
                .patch(&cname, &merge, &Patch::Merge(&with_finalizer))
                .await?;
            secrets
                .create(&PostParams::default(), &floor_secret(&copy))
                .await?;
            copies
                .patch_status(&cname, &merge, &Patch::Merge(&synced))
                .await?;
            tenant
                .patch_status(&cname, &merge, &Patch::Merge(&synced))
                .await?;
            let event = synced_event(
                &cname,
                NAMESPACE,
                created.metadata.uid.clone(),
                "contract-floor",
            );
            events.create(&PostParams::default(), &event).await?;
            Ok(())
        }
    })
    .await?;
    let chains = t0.elapsed();
    let done = tracker
        .until("every contract-floor Secret exists", cfg.timeout, |s| {
            s.secret_version.values().filter(|(v, _)| *v == 0).count() >= n
        })
        .await?;
    // When the last Secret arrived (the chains go on to the statuses and
    // the event after it), as for ours.
    let last = tracker.read(|s| s.secret_version.values().map(|(_, at)| *at).max());
    let create = last.unwrap_or(done).saturating_duration_since(t0);
    let (cpu_after, wall) = (cpu_now(pair), t0.elapsed());
    let writes = writes_between(&requests_before, &all_requests(pair).await?);
    let cpu = cpu_spent(&cpu_before, &cpu_after, wall, writes);
    finish_profiles(profiles).await;
    let t1 = Instant::now();
    for_each_concurrently(items.to_vec(), cfg.concurrency, |t, name| {
        let ns = tenant_namespace(&tenants[t]);
        let tenant: Api<SyncSecret> = Api::namespaced(pair.tenants[t].clone(), NAMESPACE);
        let copies: Api<SyncSecret> = Api::namespaced(pair.management.clone(), &ns);
        let secrets: Api<Secret> = Api::namespaced(pair.management.clone(), &ns);
        let without_finalizer = without_finalizer.clone();
        let cname = name_of(&name);
        async move {
            let merge = PatchParams::default();
            tenant.delete(&cname, &DeleteParams::default()).await?;
            copies.delete(&cname, &DeleteParams::default()).await?;
            secrets.delete(&cname, &DeleteParams::default()).await?;
            copies
                .patch(&cname, &merge, &Patch::Merge(&without_finalizer))
                .await?;
            tenant
                .patch(&cname, &merge, &Patch::Merge(&without_finalizer))
                .await?;
            Ok(())
        }
    })
    .await?;
    tracker
        .until("every contract-floor object is gone", cfg.timeout, |s| {
            s.secrets == 0 && s.copies == 0 && s.tenant_objects.iter().all(|n| *n == 0)
        })
        .await?;
    let delete = t1.elapsed();
    Ok(json!({
        "create_ms": create.as_secs_f64() * 1000.0,
        "all_writes_ms": chains.as_secs_f64() * 1000.0,
        "cpu_s": cpu,
        "delete_ms": delete.as_secs_f64() * 1000.0,
        "writes_per_object": CONTRACT_WRITES,
    }))
}

/// A kind of request [`request_costs`] measures.
#[derive(Clone, Copy, Debug)]
enum RequestKind {
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

    fn label(self) -> &'static str {
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
struct Requester {
    copies: Api<SyncSecret>,
    secrets: Api<Secret>,
    events: Api<k8s_openapi::api::events::v1::Event>,
}

impl Requester {
    /// One request of `kind` on object number `i` (the kinds before it in
    /// [`RequestKind::ALL`] made what it needs).
    async fn make(&self, kind: RequestKind, i: usize) -> Result<(), HarnessError> {
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
/// with merge patches, and read whole objects before they write.
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
