//! The plumbing both controllers run, written once: the admin HTTP server
//! (`/metrics`, `/healthz`, `/readyz`), controller metrics, the leader lease,
//! signal handling, client building and logging. Behind the `runtime`
//! feature so that the contract stays light.

pub mod admin;
pub mod backoff;
pub mod cache;
pub mod client;
pub mod dry_run;
pub mod events;
pub mod flags;
pub mod gauges;
pub mod health;
pub mod leader;
pub mod logging;
pub mod metrics;
pub mod reachable;
pub mod recent;
pub mod reconcile;
pub mod runner;
pub mod shutdown;
pub mod status_writer;

use std::net::SocketAddr;
use std::path::PathBuf;

/// Failures of the plumbing, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A kubeconfig file could not be read or used.
    #[error("cannot use kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What is wrong (kube's message).
        message: String,
    },
    /// Neither in-cluster configuration nor a kubeconfig is available.
    #[error("no Kubernetes configuration: {message}; pass --{flag} or set KUBECONFIG")]
    NoConfig {
        /// The flag that would name one.
        flag: &'static str,
        /// kube's message.
        message: String,
    },
    /// A bind address could not be parsed.
    #[error(
        "--{flag}: {value:?} is not an address like ':8081' or '127.0.0.1:8081' (or '0' to disable)"
    )]
    BadAddress {
        /// The flag.
        flag: &'static str,
        /// What was given.
        value: String,
    },
    /// The admin server could not listen.
    #[error("cannot listen on {addr} for {what}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// metrics or probes.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A call about the leader lease failed.
    #[error("leader lease {namespace}/{name}: {source}")]
    Lease {
        /// The lease's namespace.
        namespace: String,
        /// The lease's name.
        name: String,
        /// The API server's error, verbatim.
        #[source]
        source: kube::Error,
    },
    /// Leadership was lost; the process stops so that the other replica leads.
    #[error("lost the leader lease {namespace}/{name} to {holder}")]
    LeaseLost {
        /// The lease's namespace.
        namespace: String,
        /// The lease's name.
        name: String,
        /// Who holds it now.
        holder: String,
    },
    /// The controllers stopped without being asked to (a watch ended).
    #[error("the controllers stopped without a shutdown request")]
    ControllerStopped,
    /// A metric could not be registered (a bug: duplicate name).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The logging subscriber could not be installed.
    #[error("logging: {0}")]
    Logging(String),
}

/// The API server's own words for a failed call, with what to do where the
/// cause is clear: RBAC forbidden names the missing verb and resource, an
/// unreachable server says so.
pub fn explain(error: &kube::Error) -> String {
    match error {
        // An admission policy's refusal is a 403 too, and says why itself.
        kube::Error::Api(status)
            if status.code == 403 && status.message.contains("ValidatingAdmissionPolicy") =>
        {
            without_invalid_values(&status.message)
        }
        kube::Error::Api(status)
            if status.code == 403 && status.message.contains("exceeded quota") =>
        {
            format!(
                "{} (the tenant's quota in the management cluster is full: delete SyncSecrets, or ask the platform team for more)",
                status.message
            )
        }
        kube::Error::Api(status) if status.code == 403 => format!(
            "{} (grant this identity that verb on that resource; see config/rbac)",
            status.message
        ),
        kube::Error::Api(status) => without_invalid_values(&status.message),
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            format!("API server unreachable: {error}")
        }
        // serde's message quotes what it could not read, which may be a
        // secret value: never shown. (Objects are read leniently, so this
        // is an answer that is not what its request returns at all.)
        kube::Error::SerdeError(_) => {
            "the API server's answer could not be decoded (not shown: it may hold secret values)"
                .to_owned()
        }
        other => other.to_string(),
    }
}

/// The API server's message with the values it quotes taken out: a 422
/// says `<field>: Invalid value: "<the value>": <why>` for a value refused
/// by a pattern, a CEL rule or an admission policy, and the value may be a
/// secret (core Secret validation redacts its own; a CRD's and a policy's
/// do not).
pub fn without_invalid_values(message: &str) -> String {
    const MARK: &str = "Invalid value: \"";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        out.push_str("Invalid value: (not shown)");
        let quoted = &rest[at + MARK.len()..];
        // Go's %q escapes a quote inside as \".
        let mut end = None;
        let mut escaped = false;
        for (i, c) in quoted.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        rest = end.map_or("", |e| &quoted[e + 1..]);
    }
    out.push_str(rest);
    out
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

/// The HTTP status of a failed call, if the API server answered.
pub fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
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
mod invalid_values {
    use super::*;

    #[test]
    fn values_the_api_server_quotes_are_taken_out() {
        let m = r#"SyncSecret.kubelb.k8c.io "x" is invalid: [data[k]: Invalid value: "hunter2\"x": canonical, type: Invalid value: "string": needs tls.key]"#;
        assert_eq!(
            without_invalid_values(m),
            r#"SyncSecret.kubelb.k8c.io "x" is invalid: [data[k]: Invalid value: (not shown): canonical, type: Invalid value: (not shown): needs tls.key]"#
        );
        assert_eq!(without_invalid_values("not found"), "not found");
    }
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
