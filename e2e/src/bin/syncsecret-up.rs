//! Starts a local management cluster and a tenant cluster on the real
//! control plane with both controllers, and keeps them running until Ctrl-C
//! (`make up`), or runs the demo on them and stops (`make demo`).

use std::process::ExitCode;

use syncsecret_e2e::demo;
use syncsecret_e2e::pair::Pair;

#[tokio::main]
async fn main() -> ExitCode {
    let demo_only = std::env::args().any(|a| a == "--demo");
    let start = std::time::Instant::now();
    println!(
        "[demo] starting a management and a tenant cluster (etcd, kube-apiserver, \
         kube-controller-manager each) and both controllers; a few seconds"
    );
    let pair = match Pair::start(&["tenant1"]).await {
        Ok(p) => {
            println!(
                "[demo] both clusters and controllers ready in {} s",
                start.elapsed().as_secs()
            );
            p
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if demo_only {
        let result = demo::run_demo(&pair).await;
        drop(pair);
        return match result {
            Ok(()) => {
                println!(
                    "\nDemo done; clusters and controllers are stopped and removed. `make up` keeps them running."
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    demo::print_access(&pair);
    println!("\nPress Ctrl-C to stop and remove them.");
    let _ = tokio::signal::ctrl_c().await;
    println!("stopping...");
    ExitCode::SUCCESS
}
