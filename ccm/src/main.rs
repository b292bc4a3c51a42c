//! syncsecret-ccm. Tenant-side controller: copies SyncSecrets into the tenant's namespace of the management cluster.
//!
//! The controller itself lands with the controller-pair issue; until then the
//! binary only describes itself.

use std::process::ExitCode;

fn main() -> ExitCode {
    let help = std::env::args().skip(1).any(|a| a == "--help" || a == "-h");
    println!(
        "syncsecret-ccm {}: Tenant-side controller: copies SyncSecrets into the tenant's namespace of the management cluster.",
        env!("CARGO_PKG_VERSION")
    );
    if help {
        return ExitCode::SUCCESS;
    }
    eprintln!("error: the controller is not implemented yet in this version");
    ExitCode::FAILURE
}
