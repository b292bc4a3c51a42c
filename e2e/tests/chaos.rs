//! The short chaos run inside `make test`: every fault kind once (the
//! management outage for 15 s), on a pair of its own, a few hundred
//! operations. It asserts what a user would
//! check after the faults: nothing lost, nothing orphaned, nothing stuck,
//! no value leaked, no controller gone. `make chaos` runs the long one.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step fails the test"
)]

use std::time::Duration;

use syncsecret_e2e::chaos::{ALL_FAULTS, Config, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_once_and_everything_converges_exactly() {
    let cfg = Config {
        tenants: 2,
        rounds: ALL_FAULTS.len(),
        ops_per_round: 80,
        concurrency: 16,
        faults: ALL_FAULTS.to_vec(),
        downtime: Duration::from_secs(2),
        outage: Duration::from_secs(15),
        settle: Duration::from_secs(90),
        seed: std::env::var("CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20_261_123),
    };
    let summary = run(&cfg).await.unwrap();
    println!("{summary}");
    assert_eq!(summary.faults.len(), ALL_FAULTS.len(), "{summary}");
    assert!(
        summary.objects > 0 && summary.operations.len() == 3,
        "{summary}"
    );
    assert_eq!(summary.outages.len(), 1, "{summary}");
    assert!(summary.clean(), "{summary}\nleaks in: {:?}", summary.leaks);
}
