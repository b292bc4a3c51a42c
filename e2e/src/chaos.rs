//! The chaos run (`make chaos`; a short one in `make test`): the controller
//! pair on the real control plane takes rounds of creates, updates and
//! deletes while faults are injected, and after each round must converge
//! exactly: every live tenant object has one copy and one Secret with its
//! latest content, nothing else is left, nothing is stuck, and no value
//! used in the run shows up in a log, an event, a status or `/metrics`.
//!
//! Each round runs a burst of operations and injects one fault at a
//! random moment inside it; the fault is healed before the round ends and
//! the time from then until everything matches is that fault's
//! convergence. The schedule comes from `seed` (printed), so a failing run
//! can be repeated.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde::Serialize;
use serde_json::json;
use syncsecret_api::SyncSecret;
use syncsecret_api::contract::{LABEL_ORIGIN_NAME, tenant_namespace};

use crate::HarnessError;
use crate::pair::{ControllerProcess, Launch, Pair, ensure_namespace};

/// The namespace of the tenant objects in every tenant cluster.
pub const NAMESPACE: &str = "chaos";

/// A fault the run injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Fault {
    /// kill -9 of one tenant's ccm, restarted after a moment.
    KillCcm,
    /// kill -9 of the manager, restarted after a moment.
    KillManager,
    /// The management cluster's kube-apiserver stopped, etcd compacted,
    /// started again (same port, same data): watches resume with 410 Gone.
    RestartManagementApiServer,
    /// The same for one tenant cluster.
    RestartTenantApiServer,
    /// The management cluster's kube-apiserver down for `outage` while the
    /// tenants create, update and delete. Before it comes back the run
    /// checks what a user would: deleted tenant objects wait (Terminating,
    /// with an event saying why), and every ccm's
    /// `kubelb_ccm_management_reachable` is 0.
    ManagementOutage,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::KillCcm => "kill -9 ccm",
            Self::KillManager => "kill -9 manager",
            Self::RestartManagementApiServer => "management API server restart + etcd compaction",
            Self::RestartTenantApiServer => "tenant API server restart + etcd compaction",
            Self::ManagementOutage => "management outage",
        })
    }
}

/// Every fault kind, in schedule order.
pub const ALL_FAULTS: [Fault; 5] = [
    Fault::KillCcm,
    Fault::KillManager,
    Fault::RestartManagementApiServer,
    Fault::RestartTenantApiServer,
    Fault::ManagementOutage,
];

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Tenant clusters.
    pub tenants: usize,
    /// Rounds; round `i` injects `faults[i % faults.len()]`.
    pub rounds: usize,
    /// Operations (create, update, delete) per round.
    pub ops_per_round: usize,
    /// Operations in flight at once.
    pub concurrency: usize,
    /// The faults, cycled through.
    pub faults: Vec<Fault>,
    /// How long a killed controller or a stopped API server stays down.
    pub downtime: Duration,
    /// How long a management outage lasts.
    pub outage: Duration,
    /// How long a round may take to converge after its fault is healed.
    pub settle: Duration,
    /// Seed of the schedule.
    pub seed: u64,
}

/// What the run found; every "must be 0" field is 0 in a good run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Findings {
    /// The seed, to repeat the schedule.
    pub seed: u64,
    /// Tenant objects created over the run.
    pub objects: usize,
    /// Operations done (creates, updates, deletes).
    pub operations: BTreeMap<&'static str, usize>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, usize>,
    /// Live tenant objects whose Secret does not hold their latest content
    /// (or that have none) at the end. Must be 0.
    pub lost_updates: usize,
    /// Copies or Secrets without a live tenant object, or more than one
    /// per object, at the end. Must be 0.
    pub orphans: usize,
    /// Tenant objects still Terminating at the end. Must be 0.
    pub stuck: usize,
    /// Values of the run found in a log line, event, status or `/metrics`.
    /// Must be 0.
    pub leaked_values: usize,
    /// Where they were found (file or object), never the value.
    pub leaks: Vec<String>,
    /// Controllers that exited during an API server restart (they must
    /// ride it out). Must be 0.
    pub controller_exits: usize,
    /// Slowest convergence after each kind of fault, in seconds.
    pub slowest_convergence_s: BTreeMap<String, f64>,
    /// Rounds that did not converge within `settle`, with what was off.
    pub unconverged: Vec<String>,
    /// What a management outage looked like from the tenants, per outage:
    /// deleted objects held Terminating, those with an event saying why,
    /// and the ccms' reachable gauges.
    pub outages: Vec<OutageSeen>,
    /// What a user would have been told wrongly during an outage (a
    /// deletion not held, a gauge not at 0). Must be empty. Held deletions
    /// without an event saying why are reported in `outages` (a known gap:
    /// see docs/reliability.md), not counted here.
    pub outage_violations: Vec<String>,
}

/// The tenants' view of one management outage, just before it ended.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OutageSeen {
    /// How long it lasted, in seconds.
    pub seconds: f64,
    /// Tenant objects deleted and still there (their finalizer holds).
    pub held_deletions: usize,
    /// Of those, how many carry an event that says why: a Warning
    /// `DeleteCopyFailed` with the API server's error, or `CopyDeleting`.
    pub explained: usize,
    /// Each ccm's `kubelb_ccm_management_reachable`.
    pub reachable_gauges: Vec<String>,
    /// Held deletions without such an event, with the events they have.
    pub unexplained: Vec<String>,
}

impl Findings {
    /// Whether every "must be 0" count is 0.
    pub fn clean(&self) -> bool {
        self.lost_updates == 0
            && self.orphans == 0
            && self.stuck == 0
            && self.leaked_values == 0
            && self.controller_exits == 0
            && self.unconverged.is_empty()
            && self.outage_violations.is_empty()
    }
}

impl fmt::Display for Findings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "chaos summary (seed {})", self.seed)?;
        writeln!(f, "  objects created        {}", self.objects)?;
        let ops: Vec<String> = self
            .operations
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        writeln!(f, "  operations             {}", ops.join(", "))?;
        for (kind, n) in &self.faults {
            let slowest = self
                .slowest_convergence_s
                .get(kind)
                .map_or("-".to_owned(), |s| format!("{s:.2} s"));
            writeln!(
                f,
                "  fault {kind:<48} x{n:<3} slowest convergence after it {slowest}"
            )?;
        }
        writeln!(f, "  lost updates           {}", self.lost_updates)?;
        writeln!(f, "  orphans                {}", self.orphans)?;
        writeln!(f, "  stuck objects          {}", self.stuck)?;
        writeln!(f, "  leaked values          {}", self.leaked_values)?;
        writeln!(f, "  controller exits       {}", self.controller_exits)?;
        for o in &self.outages {
            writeln!(
                f,
                "  management outage {:.0} s: {} deletions held (Terminating), {} with an event saying why; reachable gauges {}",
                o.seconds,
                o.held_deletions,
                o.explained,
                o.reachable_gauges.join(", ")
            )?;
        }
        for o in &self.outages {
            if !o.unexplained.is_empty() {
                writeln!(
                    f,
                    "  known gap: {} held deletion(s) without an event saying why yet: {}",
                    o.unexplained.len(),
                    o.unexplained.join("; ")
                )?;
            }
        }
        for v in &self.outage_violations {
            writeln!(f, "  DURING THE OUTAGE: {v}")?;
        }
        for u in &self.unconverged {
            writeln!(f, "  NOT CONVERGED: {u}")?;
        }
        Ok(())
    }
}

/// A small seeded generator (xorshift64*): the schedule needs
/// repeatability, not cryptographic randomness.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        // 53 random bits: exact in an f64.
        #[allow(clippy::cast_precision_loss, reason = "53 bits fit an f64 exactly")]
        let v = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        v
    }
}

/// One planned operation on tenant `tenant`'s object `name`.
#[derive(Clone, Debug)]
enum Op {
    Create {
        tenant: usize,
        name: String,
        value: String,
    },
    Update {
        tenant: usize,
        name: String,
        value: String,
    },
    Delete {
        tenant: usize,
        name: String,
    },
}

impl Op {
    fn kind(&self) -> &'static str {
        match self {
            Self::Create { .. } => "creates",
            Self::Update { .. } => "updates",
            Self::Delete { .. } => "deletes",
        }
    }
}

/// What the tenants should hold: (tenant, name) → latest value.
type Expected = BTreeMap<(usize, String), String>;

/// Runs the chaos run on a pair of its own and returns its summary.
pub async fn run(cfg: &Config) -> Result<Findings, HarnessError> {
    let names: Vec<String> = (1..=cfg.tenants).map(|i| format!("chaos{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut pair = Pair::start_with(&refs, &Launch::default()).await?;
    for t in &pair.tenants {
        ensure_namespace(t, NAMESPACE).await?;
    }
    let mut rng = Rng::new(cfg.seed);
    let mut summary = Findings {
        seed: cfg.seed,
        ..Findings::default()
    };
    let mut expected = Expected::new();
    let values: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut next_name = 0usize;

    for round in 0..cfg.rounds {
        let fault = cfg.faults[round % cfg.faults.len().max(1)];
        let ops = plan(cfg, &mut rng, &expected, &mut next_name, round);
        for op in &ops {
            if let Op::Create { value, .. } | Op::Update { value, .. } = op {
                values.lock().map_err(poisoned)?.push(value.clone());
            }
            *summary.operations.entry(op.kind()).or_default() += 1;
            if matches!(op, Op::Create { .. }) {
                summary.objects += 1;
            }
        }
        // The fault lands somewhere inside the burst; an outage from its
        // start, so that the round's deletions meet it.
        let delay = Duration::from_secs_f64(rng.unit() * 1.5);
        let delay = if fault == Fault::ManagementOutage {
            Duration::ZERO
        } else {
            delay
        };
        let victim = rng.below(cfg.tenants);
        let tenants = pair.tenants.clone();
        let burst = execute(&tenants, ops, cfg.concurrency);
        let inject = async {
            tokio::time::sleep(delay).await;
            inject(&mut pair, fault, victim, cfg).await
        };
        let (done, injected) = futures::join!(burst, inject);
        let (exits, outage) = injected?;
        summary.controller_exits += exits;
        if let Some(seen) = outage {
            summary.outage_violations.extend(seen.violations(&pair));
            summary.outages.push(seen);
        }
        *summary.faults.entry(fault.to_string()).or_default() += 1;
        for (key, value) in done? {
            match value {
                Some(v) => expected.insert(key, v),
                None => expected.remove(&key),
            };
        }
        let healed = Instant::now();
        match converge(&pair, &expected, cfg.settle).await? {
            Ok(()) => {
                let took = healed.elapsed().as_secs_f64();
                let slowest = summary
                    .slowest_convergence_s
                    .entry(fault.to_string())
                    .or_default();
                *slowest = slowest.max(took);
                println!(
                    "chaos round {}/{}: {fault}: {} live objects converged {took:.2} s after it was healed",
                    round + 1,
                    cfg.rounds,
                    expected.len()
                );
            }
            Err(off) => {
                println!(
                    "chaos round {}/{}: {fault}: NOT converged: {off}",
                    round + 1,
                    cfg.rounds
                );
                summary
                    .unconverged
                    .push(format!("round {} ({fault}): {off}", round + 1));
            }
        }
    }

    let state = State::read(&pair).await?;
    let report = state.compare(&pair, &expected);
    summary.lost_updates = report.lost;
    summary.orphans = report.orphans;
    summary.stuck = report.stuck;
    let values = values.lock().map_err(poisoned)?.clone();
    summary.leaks = crate::leaks::scan(&pair, &values).await?;
    summary.leaked_values = summary.leaks.len();
    // `CHAOS_LOGS=<dir>` keeps every log of the run (they go with the
    // control plane's directory otherwise).
    if let Some(dir) = std::env::var_os("CHAOS_LOGS") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).map_err(|e| HarnessError::io(&dir, e))?;
        let root = pair
            .plane
            .dir()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        for log in pair.log_files() {
            let rel = log.strip_prefix(&root).unwrap_or(&log);
            let to = dir.join(rel.to_string_lossy().replace('/', "_"));
            std::fs::copy(&log, &to).map_err(|e| HarnessError::io(&to, e))?;
        }
    }
    Ok(summary)
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> HarnessError {
    HarnessError::Usage("a chaos task panicked".into())
}

/// Plans a round: new objects, and updates and deletes of live ones, each
/// object touched at most once per round (so that operations in flight at
/// once never race on one object).
fn plan(
    cfg: &Config,
    rng: &mut Rng,
    expected: &Expected,
    next: &mut usize,
    round: usize,
) -> Vec<Op> {
    let mut live: Vec<(usize, String)> = expected.keys().cloned().collect();
    let mut ops = Vec::new();
    for _ in 0..cfg.ops_per_round {
        let roll = rng.unit();
        // More creates while few objects live, more changes later.
        if live.is_empty() || roll < 0.4 {
            *next += 1;
            ops.push(Op::Create {
                tenant: rng.below(cfg.tenants),
                name: format!("o{next}"),
                value: token(rng, round),
            });
        } else {
            let (tenant, name) = live.swap_remove(rng.below(live.len()));
            if roll < 0.8 {
                ops.push(Op::Update {
                    tenant,
                    name,
                    value: token(rng, round),
                });
            } else {
                ops.push(Op::Delete { tenant, name });
            }
        }
    }
    ops
}

/// A value nobody else would write, so that a leak scan finds only ours.
fn token(rng: &mut Rng, round: usize) -> String {
    format!("chaosval-{round}-{:016x}{:016x}", rng.next(), rng.next())
}

/// Runs `ops` with `concurrency` in flight; each is retried until it
/// succeeds (an API server may be down for a while). Returns the new
/// expected state of each object touched (`None`: deleted).
async fn execute(
    tenants: &[Client],
    ops: Vec<Op>,
    concurrency: usize,
) -> Result<Vec<((usize, String), Option<String>)>, HarnessError> {
    let results: Vec<Result<_, HarnessError>> = futures::stream::iter(ops)
        .map(|op| async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                match attempt(tenants, &op).await {
                    Ok(done) => return Ok(done),
                    Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

/// One try of `op`; an answer that says it was already done (a retry of a
/// request whose reply was lost) counts as done.
async fn attempt(
    tenants: &[Client],
    op: &Op,
) -> Result<((usize, String), Option<String>), HarnessError> {
    let api = |t: usize| Api::<SyncSecret>::namespaced(tenants[t].clone(), NAMESPACE);
    match op {
        Op::Create {
            tenant,
            name,
            value,
        } => {
            let obj: SyncSecret = serde_json::from_value(json!({
                "apiVersion": "kubelb.k8c.io/v1alpha1",
                "kind": "SyncSecret",
                "metadata": {"name": name},
                "stringData": {"v": value},
            }))
            .map_err(|e| HarnessError::Usage(e.to_string()))?;
            match api(*tenant).create(&PostParams::default(), &obj).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            Ok(((*tenant, name.clone()), Some(value.clone())))
        }
        Op::Update {
            tenant,
            name,
            value,
        } => {
            api(*tenant)
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"stringData": {"v": value}})),
                )
                .await?;
            Ok(((*tenant, name.clone()), Some(value.clone())))
        }
        Op::Delete { tenant, name } => {
            match api(*tenant).delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            Ok(((*tenant, name.clone()), None))
        }
    }
}

/// Injects `fault` (on tenant `victim` where it names one), keeps it for
/// its time, heals it. Returns how many controllers exited meanwhile and,
/// for an outage, what the tenants showed during it.
async fn inject(
    pair: &mut Pair,
    fault: Fault,
    victim: usize,
    cfg: &Config,
) -> Result<(usize, Option<OutageSeen>), HarnessError> {
    let downtime = cfg.downtime;
    let exits = match fault {
        Fault::KillCcm => {
            pair.ccms[victim].kill();
            tokio::time::sleep(downtime).await;
            pair.ccms[victim].start().await?;
            0
        }
        Fault::KillManager => {
            pair.manager.kill();
            tokio::time::sleep(downtime).await;
            pair.manager.start().await?;
            0
        }
        Fault::ManagementOutage => {
            let cluster = pair.plane.management().name().to_owned();
            let started = Instant::now();
            pair.plane.stop_apiserver(&cluster)?;
            tokio::time::sleep(cfg.outage).await;
            let mut seen = OutageSeen::read(pair).await?;
            seen.seconds = started.elapsed().as_secs_f64();
            pair.plane.start_apiserver(&cluster).await?;
            let exited = count_exited(pair);
            return Ok((exited, Some(seen)));
        }
        Fault::RestartManagementApiServer | Fault::RestartTenantApiServer => {
            let cluster = if fault == Fault::RestartManagementApiServer {
                pair.plane.management().name().to_owned()
            } else {
                pair.tenant_names[victim].clone()
            };
            pair.plane.stop_apiserver(&cluster)?;
            tokio::time::sleep(downtime).await;
            pair.plane.compact_etcd()?;
            pair.plane.start_apiserver(&cluster).await?;
            // The controllers ride it out: none may have exited.
            count_exited(pair)
        }
    };
    Ok((exits, None))
}

fn count_exited(pair: &mut Pair) -> usize {
    pair.ccms
        .iter_mut()
        .chain(std::iter::once(&mut pair.manager))
        .map(ControllerProcess::has_exited)
        .filter(|exited| *exited)
        .count()
}

impl OutageSeen {
    /// Reads the tenants (the management cluster is down).
    async fn read(pair: &Pair) -> Result<Self, HarnessError> {
        let mut seen = Self::default();
        for t in &pair.tenants {
            let objects = Api::<SyncSecret>::namespaced(t.clone(), NAMESPACE)
                .list(&ListParams::default())
                .await?;
            let events = Api::<Event>::namespaced(t.clone(), NAMESPACE)
                .list(&ListParams::default())
                .await?;
            for o in objects
                .items
                .iter()
                .filter(|o| o.metadata.deletion_timestamp.is_some())
            {
                seen.held_deletions += 1;
                let uid = o.uid();
                // Why it waits: a Warning that the copy's deletion failed
                // (with the API server's error), or `CopyDeleting` (the copy
                // was deleted and the management cluster has yet to remove
                // it).
                let about: Vec<&Event> = events
                    .items
                    .iter()
                    .filter(|e| e.regarding.as_ref().and_then(|r| r.uid.clone()) == uid)
                    .collect();
                let explained = about.iter().any(|e| {
                    matches!(
                        e.reason.as_deref(),
                        Some("DeleteCopyFailed" | "CopyDeleting")
                    )
                });
                if explained {
                    seen.explained += 1;
                } else {
                    let reasons: Vec<String> = about
                        .iter()
                        .map(|e| e.reason.clone().unwrap_or_default())
                        .collect();
                    seen.unexplained
                        .push(format!("{}: events {reasons:?}", o.name_any()));
                }
            }
        }
        for c in &pair.ccms {
            let gauge = c
                .metrics()
                .ok()
                .and_then(|m| {
                    m.lines()
                        .find(|l| l.starts_with("kubelb_ccm_management_reachable "))
                        .map(|l| {
                            l.trim_start_matches("kubelb_ccm_management_reachable ")
                                .to_owned()
                        })
                })
                .unwrap_or_else(|| "missing".to_owned());
            seen.reachable_gauges.push(format!("{}={gauge}", c.name()));
        }
        Ok(seen)
    }

    /// What a user would have been told wrongly.
    fn violations(&self, pair: &Pair) -> Vec<String> {
        let mut v = Vec::new();
        if self.held_deletions == 0 {
            v.push(
                "no deleted tenant object was held Terminating (did the round delete any?)"
                    .to_owned(),
            );
        }
        for (g, c) in self.reachable_gauges.iter().zip(&pair.ccms) {
            if !g.ends_with("=0") {
                v.push(format!(
                    "{}: kubelb_ccm_management_reachable is not 0 ({g})",
                    c.name()
                ));
            }
        }
        v
    }
}

/// Everything the run looks at, read once.
struct State {
    /// Per tenant: name → (uid, terminating).
    tenants: Vec<BTreeMap<String, (String, bool)>>,
    /// Per tenant: copies (ours, by origin label): name (the tenant
    /// object's uid) → (origin name, the copy's own uid).
    copies: Vec<BTreeMap<String, (String, String)>>,
    /// Per tenant: Secrets (ours): owner copy uid → value of key `v`.
    secrets: Vec<Vec<(String, Option<String>)>>,
}

/// What differs from the expected state.
#[derive(Debug, Default)]
struct Report {
    lost: usize,
    orphans: usize,
    stuck: usize,
    detail: Vec<String>,
}

impl State {
    async fn read(pair: &Pair) -> Result<Self, HarnessError> {
        let mut s = Self {
            tenants: Vec::new(),
            copies: Vec::new(),
            secrets: Vec::new(),
        };
        let ours = ListParams::default().labels(LABEL_ORIGIN_NAME);
        for (i, t) in pair.tenants.iter().enumerate() {
            let objects = Api::<SyncSecret>::namespaced(t.clone(), NAMESPACE)
                .list(&ListParams::default())
                .await?;
            s.tenants.push(
                objects
                    .items
                    .iter()
                    .map(|o| {
                        (
                            o.name_any(),
                            (
                                o.uid().unwrap_or_default(),
                                o.metadata.deletion_timestamp.is_some(),
                            ),
                        )
                    })
                    .collect(),
            );
            let ns = tenant_namespace(&pair.tenant_names[i]);
            let copies = Api::<SyncSecret>::namespaced(pair.management.clone(), &ns)
                .list(&ours)
                .await?;
            s.copies.push(
                copies
                    .items
                    .iter()
                    .map(|c| {
                        (
                            c.name_any(),
                            (
                                c.labels()
                                    .get(LABEL_ORIGIN_NAME)
                                    .cloned()
                                    .unwrap_or_default(),
                                c.uid().unwrap_or_default(),
                            ),
                        )
                    })
                    .collect(),
            );
            let secrets = Api::<Secret>::namespaced(pair.management.clone(), &ns)
                .list(&ours)
                .await?;
            s.secrets.push(
                secrets
                    .items
                    .iter()
                    .map(|sec| {
                        let owner = sec
                            .owner_references()
                            .iter()
                            .map(|o| o.uid.clone())
                            .next()
                            .unwrap_or_default();
                        let value = sec
                            .data
                            .as_ref()
                            .and_then(|d| d.get("v"))
                            .map(|v| String::from_utf8_lossy(&v.0).into_owned());
                        (owner, value)
                    })
                    .collect(),
            );
        }
        Ok(s)
    }

    fn compare(&self, pair: &Pair, expected: &Expected) -> Report {
        let mut r = Report::default();
        for (i, tenant) in self.tenants.iter().enumerate() {
            let want: BTreeMap<&String, &String> = expected
                .iter()
                .filter(|((t, _), _)| *t == i)
                .map(|((_, n), v)| (n, v))
                .collect();
            let tenant_name = &pair.tenant_names[i];
            // Stuck: deleted in the tenant but still there.
            for (name, (_, terminating)) in tenant {
                if !want.contains_key(name) {
                    r.stuck += 1;
                    r.detail.push(format!(
                        "{tenant_name}/{name} still there{}",
                        if *terminating { " (Terminating)" } else { "" }
                    ));
                }
            }
            // Each live object: one copy, one Secret, the latest value.
            let copies_by_origin: BTreeMap<&String, Vec<&String>> =
                self.copies[i]
                    .iter()
                    .fold(BTreeMap::new(), |mut m, (copy, (origin, _))| {
                        m.entry(origin).or_insert_with(Vec::new).push(copy);
                        m
                    });
            let mut secrets_by_owner: HashMap<&String, Vec<&Option<String>>> = HashMap::new();
            for (owner, value) in &self.secrets[i] {
                secrets_by_owner.entry(owner).or_default().push(value);
            }
            let mut accounted_copies = BTreeSet::new();
            let mut accounted_owners = BTreeSet::new();
            for (name, value) in &want {
                let Some((uid, _)) = tenant.get(*name) else {
                    r.lost += 1;
                    r.detail
                        .push(format!("{tenant_name}/{name} missing in the tenant"));
                    continue;
                };
                let copy_uid = self.copies[i].get(uid).map(|(_, copy_uid)| copy_uid);
                let secrets = copy_uid.and_then(|u| secrets_by_owner.get(u));
                let ok = copy_uid.is_some()
                    && secrets
                        .is_some_and(|s| s.len() == 1 && s[0].as_deref() == Some(value.as_str()));
                if let Some(u) = copy_uid {
                    accounted_copies.insert(uid.clone());
                    accounted_owners.insert(u.clone());
                }
                if !ok {
                    r.lost += 1;
                    r.detail.push(format!(
                        "{tenant_name}/{name}: copy {}, Secrets {}",
                        if copy_uid.is_some() {
                            "present"
                        } else {
                            "missing"
                        },
                        secrets.map_or(0, Vec::len)
                    ));
                }
                if copies_by_origin.get(*name).map_or(0, Vec::len) > 1 {
                    r.orphans += 1;
                    r.detail
                        .push(format!("{tenant_name}/{name}: more than one copy"));
                }
            }
            for copy in self.copies[i].keys() {
                if !accounted_copies.contains(copy) {
                    r.orphans += 1;
                    r.detail.push(format!(
                        "{tenant_name}: copy {copy} without a live tenant object"
                    ));
                }
            }
            for (owner, secrets) in &secrets_by_owner {
                if !accounted_owners.contains(*owner) {
                    r.orphans += secrets.len();
                    r.detail.push(format!(
                        "{tenant_name}: {} Secret(s) of copy {owner} without a live tenant object",
                        secrets.len()
                    ));
                }
            }
        }
        r
    }
}

/// Polls until the clusters hold exactly `expected`; `Ok(Err(what))` if
/// they do not within `settle`.
async fn converge(
    pair: &Pair,
    expected: &Expected,
    settle: Duration,
) -> Result<Result<(), String>, HarnessError> {
    let deadline = Instant::now() + settle;
    loop {
        let report = match State::read(pair).await {
            Ok(state) => state.compare(pair, expected),
            Err(e) => Report {
                lost: 1,
                detail: vec![e.to_string()],
                ..Report::default()
            },
        };
        if report.lost == 0 && report.orphans == 0 && report.stuck == 0 {
            return Ok(Ok(()));
        }
        if Instant::now() > deadline {
            let mut detail = report.detail;
            detail.truncate(10);
            return Ok(Err(format!(
                "{} lost, {} orphans, {} stuck after {} s: {}",
                report.lost,
                report.orphans,
                report.stuck,
                settle.as_secs(),
                detail.join("; ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_repeats_with_its_seed() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let xs: Vec<u64> = (0..5).map(|_| a.next()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next()).collect();
        assert_eq!(xs, ys);
        assert!((0..1000).all(|_| a.below(3) < 3));
        assert!((0..1000).map(|_| a.unit()).all(|u| (0.0..1.0).contains(&u)));
    }

    #[test]
    fn a_round_touches_each_object_once() {
        let cfg = Config {
            tenants: 2,
            rounds: 1,
            ops_per_round: 200,
            concurrency: 8,
            faults: ALL_FAULTS.to_vec(),
            downtime: Duration::from_secs(1),
            outage: Duration::from_secs(1),
            settle: Duration::from_secs(1),
            seed: 42,
        };
        let mut expected = Expected::new();
        for i in 0..100 {
            expected.insert((i % 2, format!("x{i}")), "v".into());
        }
        let mut next = 0;
        let ops = plan(&cfg, &mut Rng::new(42), &expected, &mut next, 0);
        let touched: Vec<(usize, String)> = ops
            .iter()
            .map(|op| match op {
                Op::Create { tenant, name, .. }
                | Op::Update { tenant, name, .. }
                | Op::Delete { tenant, name } => (*tenant, name.clone()),
            })
            .collect();
        let unique: BTreeSet<_> = touched.iter().collect();
        assert_eq!(unique.len(), touched.len());
        assert!(ops.iter().any(|o| matches!(o, Op::Delete { .. })));
        assert!(ops.iter().any(|o| matches!(o, Op::Update { .. })));
    }
}
