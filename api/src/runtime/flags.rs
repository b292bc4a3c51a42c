//! Flags both binaries take, with the same names, defaults and environment
//! variables. Listen addresses differ in default per binary and stay there.

use clap::{ArgAction, Args};

use super::logging::LogFormat;

/// Leader election, concurrency and log format.
#[derive(Debug, Args)]
pub struct CommonFlags {
    /// Run only while holding the leader Lease, so that several replicas can
    /// run with one active.
    #[arg(long, env = "ENABLE_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enable_leader_election: bool,

    /// How many objects are reconciled at once.
    #[arg(long, env = "MAX_CONCURRENT_RECONCILES", default_value_t = 16)]
    pub max_concurrent_reconciles: u16,

    /// Seconds between orphan sweeps (one always runs once the caches have
    /// synced at start; 0: only that one).
    #[arg(long, env = "ORPHAN_SWEEP_PERIOD", default_value_t = 600)]
    pub orphan_sweep_period: u64,

    /// Read and compare everything, write nothing: log and count each write
    /// that would happen. Implies no leader election (a Lease is a write).
    #[arg(long, env = "DRY_RUN", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub dry_run: bool,

    /// Log format: human or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "human")]
    pub log_format: LogFormat,
}
