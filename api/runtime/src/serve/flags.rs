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
    #[arg(long, env = "SYNCSECRET_ENABLE_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enable_leader_election: bool,

    /// How many objects are reconciled at once.
    #[arg(
        long,
        env = "SYNCSECRET_MAX_CONCURRENT_RECONCILES",
        default_value_t = 16
    )]
    pub max_concurrent_reconciles: u16,

    /// Seconds between orphan sweeps (one always runs once the caches have
    /// synced at start; 0: only that one).
    #[arg(long, env = "SYNCSECRET_ORPHAN_SWEEP_PERIOD", default_value_t = 600)]
    pub orphan_sweep_period: u64,

    /// Read and compare everything, write nothing: log and count each write
    /// that would happen. Implies no leader election (a Lease is a write).
    #[arg(long, env = "SYNCSECRET_DRY_RUN", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub dry_run: bool,

    /// Log format: human or json.
    #[arg(long, env = "SYNCSECRET_LOG_FORMAT", default_value = "human")]
    pub log_format: LogFormat,

    /// Log level: error, warn, info, debug or trace; or a filter as
    /// `RUST_LOG` takes it (`info,syncsecret_runtime=debug`). Wins over
    /// `RUST_LOG`; without either, info.
    #[arg(long, env = "SYNCSECRET_LOG_LEVEL")]
    pub log_level: Option<String>,
}

/// Parses command-line flags. `--help` and `--version` print and give
/// `Err(success)`; a bad or missing flag prints one line on stderr and gives
/// `Err(2)`, before anything else happens.
pub fn parse_flags<F: clap::Parser>() -> Result<F, std::process::ExitCode> {
    use clap::error::ErrorKind;
    parse_from(std::env::args_os()).map_err(|e| {
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

/// Parses `args` (the program's name first). A flag given twice takes its
/// last value, as Go's flag package does: a chart's `extraArgs` come after
/// the flags it sets, and so override them.
fn parse_from<F, I, T>(args: I) -> Result<F, clap::Error>
where
    F: clap::Parser,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let command = F::command();
    // Usage lines name the binary, not whatever argv[0] was (`/controller`
    // in the image).
    let name = command.get_name().to_owned();
    let matches = command
        .bin_name(name)
        .args_override_self(true)
        .try_get_matches_from(args)?;
    F::from_arg_matches(&matches)
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

    #[derive(Debug, clap::Parser)]
    struct Flags {
        #[command(flatten)]
        common: CommonFlags,
    }

    #[test]
    fn a_flag_given_twice_takes_its_last_value() {
        let args = ["x", "--log-format=json", "--max-concurrent-reconciles=2"];
        let flags: Flags = parse_from(args.into_iter().chain(["--log-format=human"])).unwrap();
        assert_eq!(flags.common.log_format, LogFormat::Human);
        assert_eq!(flags.common.max_concurrent_reconciles, 2);
        let flags: Flags = parse_from([
            "x",
            "--enable-leader-election=true",
            "--enable-leader-election=false",
        ])
        .unwrap();
        assert!(!flags.common.enable_leader_election);
    }

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
