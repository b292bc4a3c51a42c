//! Flags both binaries take, with the same names, defaults and environment
//! variables. Listen addresses differ in default per binary and stay there.

use clap::{ArgAction, Args};

use std::net::SocketAddr;

use crate::error::RuntimeError;
use crate::serve::logging::LogFormat;

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

/// Parses command-line flags. `--help` and `--version` print and give
/// `Err(success)`; a bad or missing flag prints one line on stderr and gives
/// `Err(2)`, before anything else happens.
pub fn parse_flags<F: clap::Parser>() -> Result<F, std::process::ExitCode> {
    use clap::error::ErrorKind;
    F::try_parse().map_err(|e| {
        let text = e.render().to_string();
        if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
            print!("{text}");
            return std::process::ExitCode::SUCCESS;
        }
        // clap's message spans lines (usage, a hint); keep the error itself.
        let line = text
            .lines()
            .take_while(|l| !l.starts_with("Usage:"))
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        eprintln!("{line}");
        std::process::ExitCode::from(2)
    })
}

/// Parses a Go-style listen address as KubeLB's flags take it: `:9445`
/// (every interface), `127.0.0.1:9445`, or `0` for "disabled" (`None`).
pub fn parse_listen_addr(
    flag: &'static str,
    value: &str,
) -> Result<Option<SocketAddr>, RuntimeError> {
    let bad = || RuntimeError::BadAddress {
        flag,
        value: value.to_owned(),
    };
    if value == "0" {
        return Ok(None);
    }
    let full = if value.starts_with(':') {
        format!("0.0.0.0{value}")
    } else {
        value.to_owned()
    };
    full.parse().map(Some).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse_like_kubelb_flags() {
        assert_eq!(
            parse_listen_addr("metrics-addr", ":9445").unwrap(),
            Some("0.0.0.0:9445".parse().unwrap())
        );
        assert_eq!(
            parse_listen_addr("metrics-addr", "127.0.0.1:1").unwrap(),
            Some("127.0.0.1:1".parse().unwrap())
        );
        assert_eq!(parse_listen_addr("metrics-addr", "0").unwrap(), None);
        let e = parse_listen_addr("metrics-addr", "localhost").unwrap_err();
        assert!(e.to_string().contains("--metrics-addr"), "{e}");
    }
}
