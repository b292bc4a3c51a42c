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

mod execute;
mod faults;
mod findings;
mod plan;
mod state;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::HarnessError;
use crate::pair::{Launch, Pair, ensure_namespace};
use execute::execute;
use faults::inject;
pub use findings::{Findings, OutageSeen};
use plan::{Op, Rng, plan};
use state::{State, converge};

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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

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
