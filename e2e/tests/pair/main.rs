//! The controller pair end to end: one management and two tenant clusters on
//! the real control plane; `syncsecret-manager` and one `syncsecret-ccm` per
//! tenant run as processes with their own kubeconfigs, the ccm's management
//! identity limited by RBAC to its own tenant namespace.
//!
//! The tests share one environment, one at a time, in a random order (see
//! `shuffle`): each makes the objects it needs and leaves the controllers
//! as it found them. The log scan comes last, over everything the others
//! did. One file per area: `basics`, `refusals`, `repair`, `certificates`,
//! `kubelb`, `monitoring`, `operations`; helpers in `support`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step fails the test"
)]

mod basics;
mod certificates;
mod kubelb;
mod monitoring;
mod operations;
mod refusals;
mod repair;
mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Trial};
use syncsecret_e2e::pair::Pair;
use syncsecret_e2e::prometheus::Prometheus;
use tokio::runtime::Runtime;

use monitoring::start_prometheus;

const TENANTS: [&str; 2] = ["tenant1", "tenant2"];

const WAIT: Duration = Duration::from_secs(60);

/// The environment all tests share, started by the first test that runs.
struct Shared {
    pair: tokio::sync::Mutex<Pair>,
    /// Scrapes every controller process from the start, alert rules loaded.
    prometheus: Prometheus,
    /// Every secret value a test wrote; none may appear in any log.
    values: Mutex<Vec<String>>,
}

impl Shared {
    /// A value no log line could contain by accident, remembered for the scan.
    fn value(&self, what: &str) -> String {
        let v = format!("{what}-{}", uuid::Uuid::new_v4().simple());
        self.values.lock().unwrap().push(v.clone());
        v
    }
}

type TestFn = for<'a> fn(&'a Shared) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>;

macro_rules! tests {
    ($($area:ident :: $name:ident),* $(,)?) => {
        vec![$((concat!(stringify!($area), "::", stringify!($name)), (|s| Box::pin($area::$name(s))) as TestFn)),*]
    };
}

fn main() -> std::process::ExitCode {
    let mut args = Arguments::from_args();
    // One at a time: they share the clusters and the controllers.
    args.test_threads = Some(1);
    let rt = Arc::new(Runtime::new().expect("tokio runtime"));
    let env: Arc<OnceLock<Result<Shared, String>>> = Arc::new(OnceLock::new());
    let mut tests: Vec<(&str, TestFn)> = tests![
        basics::opaque_syncsecret_becomes_an_owned_secret_and_shows_synced,
        basics::updates_follow_and_then_cost_no_writes,
        basics::deleting_the_tenant_object_removes_copy_and_secret_first,
        basics::tls_type_and_binary_bytes_are_preserved,
        basics::immutable_syncs_immutable_and_a_type_change_replaces_the_secret,
        basics::same_name_in_two_tenants_stays_isolated,
        refusals::a_secret_the_api_server_refuses_is_failed_in_both_clusters,
        refusals::service_account_tokens_and_oversize_secrets_are_refused,
        refusals::a_tenant_at_its_budget_gets_over_budget_on_the_next_one_only,
        refusals::content_changed_on_admission_is_caught_and_named,
        refusals::a_copy_outside_the_tenant_namespaces_is_skipped_and_let_go,
        repair::tampering_in_the_management_cluster_is_repaired,
        repair::orphans_left_while_a_controller_was_down_are_swept,
        certificates::certificates_show_their_expiry_in_conditions_and_gauges,
        monitoring::prometheus_has_data_for_every_dashboard_query_and_alert,
        operations::a_dry_run_writes_nothing_and_reports_each_pending_write,
        operations::a_copy_the_manager_never_answers_shows_pending_at_the_timeout,
        operations::a_failure_before_the_first_verdict_gives_way_to_pending,
        kubelb::objects_kubelb_made_are_adopted_and_made_data_only,
        kubelb::secret_synchronizer_takes_labelled_secrets_only,
        operations::restarting_both_controllers_costs_zero_writes,
    ];
    shuffle(&mut tests);
    // Last, whatever the order: it makes values of its own, and scans the
    // logs of everything the others did too.
    tests.extend(tests![operations::no_secret_value_reaches_any_log]);
    let trials = tests
        .into_iter()
        .map(|(name, f)| {
            let rt = rt.clone();
            let env = env.clone();
            Trial::test(name, move || {
                let shared = env
                    .get_or_init(|| {
                        rt.block_on(async {
                            let mut pair =
                                Pair::start(&TENANTS).await.map_err(|e| e.to_string())?;
                            pair.record_written();
                            let prometheus = start_prometheus(&pair).map_err(|e| e.to_string())?;
                            Ok(Shared {
                                pair: tokio::sync::Mutex::new(pair),
                                prometheus,
                                values: Mutex::new(Vec::new()),
                            })
                        })
                    })
                    .as_ref()
                    .map_err(|e| format!("the environment did not start: {e}"))?;
                rt.block_on(async {
                    let started = Instant::now();
                    match f(shared).await {
                        Ok(()) => {
                            println!("    {name}: {:.1} s", started.elapsed().as_secs_f64());
                            Ok(())
                        }
                        Err(e) => {
                            let dump = shared.pair.lock().await.dump();
                            Err(format!("{e:#}\n--- state at failure ---\n{dump}").into())
                        }
                    }
                })
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    // Stop the controllers and clusters before exiting.
    if let Some(env) = Arc::into_inner(env) {
        drop(env.into_inner());
    }
    conclusion.exit_code()
}

// ---------------------------------------------------------------- helpers

/// Puts the tests in a random order, so that none can lean on another
/// having run first; `PAIR_SEED` repeats an order (the seed is printed).
fn shuffle<T>(tests: &mut [T]) {
    let seed = std::env::var("PAIR_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.map_or(1, |d| d.as_nanos() as u64) | 1
        });
    println!("test order: PAIR_SEED={seed}");
    let mut state = seed;
    for i in (1..tests.len()).rev() {
        // xorshift64: enough to mix an order, no dependency for it.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let j = usize::try_from(state % (i as u64 + 1)).unwrap_or(0);
        tests.swap(i, j);
    }
}
