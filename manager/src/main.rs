//! syncsecret-manager. Management-side controller: turns SyncSecret copies into owner-referenced Secrets.
//!
//! The controller itself lands with the controller-pair issue; until then the
//! binary only describes itself.

use std::process::ExitCode;

fn main() -> ExitCode {
    let help = std::env::args().skip(1).any(|a| a == "--help" || a == "-h");
    println!(
        "syncsecret-manager {}: Management-side controller: turns SyncSecret copies into owner-referenced Secrets.",
        env!("CARGO_PKG_VERSION")
    );
    if help {
        return ExitCode::SUCCESS;
    }
    eprintln!("error: the controller is not implemented yet in this version");
    ExitCode::FAILURE
}
