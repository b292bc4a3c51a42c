//! `make chaos`: the long chaos run (see `syncsecret_e2e::chaos`). Prints
//! one summary; exits non-zero when anything was lost, orphaned, stuck or
//! leaked, or a round did not converge. `--out` also writes it as JSON.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use syncsecret_e2e::chaos::{ALL_FAULTS, Config, run};

#[derive(Parser, Debug)]
#[command(about = "Chaos run of the controller pair on the real control plane")]
struct Flags {
    /// Tenant clusters.
    #[arg(long, default_value_t = 2)]
    tenants: usize,
    /// Rounds; each injects one fault (cycling through every kind).
    #[arg(long, default_value_t = 8)]
    rounds: usize,
    /// Creates, updates and deletes per round.
    #[arg(long, default_value_t = 250)]
    ops_per_round: usize,
    /// Operations in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds a killed controller or stopped API server stays down.
    #[arg(long, default_value_t = 3)]
    downtime: u64,
    /// Seconds a management outage lasts.
    #[arg(long, default_value_t = 60)]
    outage: u64,
    /// Seconds a round may take to converge after its fault is healed.
    #[arg(long, default_value_t = 120)]
    settle: u64,
    /// Seed of the schedule (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Also write the summary as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let flags = Flags::parse();
    let seed = flags.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    let cfg = Config {
        tenants: flags.tenants.max(1),
        rounds: flags.rounds,
        ops_per_round: flags.ops_per_round,
        concurrency: flags.concurrency,
        faults: ALL_FAULTS.to_vec(),
        downtime: Duration::from_secs(flags.downtime),
        outage: Duration::from_secs(flags.outage),
        settle: Duration::from_secs(flags.settle),
        seed,
    };
    match run(&cfg).await {
        Ok(summary) => {
            println!("{summary}");
            if let Some(out) = &flags.out {
                let json = serde_json::to_string_pretty(&summary).unwrap_or_default();
                if let Err(e) = std::fs::write(out, json) {
                    eprintln!("error: {}: {e}", out.display());
                    return ExitCode::FAILURE;
                }
            }
            if summary.clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
