//! Starts a local management cluster and a tenant cluster on the real
//! control plane and keeps them running until Ctrl-C (`make up`), or runs the
//! demo on them and stops (`make demo`).

use std::process::ExitCode;

use syncsecret_e2e::{ControlPlane, demo};

#[tokio::main]
async fn main() -> ExitCode {
    let demo_only = std::env::args().any(|a| a == "--demo");
    let cp = match ControlPlane::start(&["management", "tenant1"]).await {
        Ok(cp) => cp,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if demo_only {
        let result = demo::run_demo(&cp);
        drop(cp);
        return match result {
            Ok(()) => {
                println!(
                    "\nDemo done; the clusters are stopped and removed. `make up` keeps them running."
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    demo::print_access(&cp);
    println!("\nPress Ctrl-C to stop and remove them.");
    let _ = tokio::signal::ctrl_c().await;
    println!("stopping...");
    ExitCode::SUCCESS
}
