//! Failures of the plumbing, and the API server's messages made fit to
//! show: what failed, with what to do about it, never a value.

use std::net::SocketAddr;
use std::path::PathBuf;
use syncsecret_api::quote;

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
    #[error("cannot listen on {addr} for {what}")]
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
    #[error("leader lease {namespace}/{name}")]
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
    /// The leader lease was not renewed within the renew deadline (its API
    /// server slow or unreachable): this replica stops leading.
    #[error("leader lease {namespace}/{name} not renewed within the renew deadline")]
    RenewDeadline {
        /// The lease's namespace.
        namespace: String,
        /// The lease's name.
        name: String,
    },
    /// The shard Leases could not be listed (a sharded manager reads them
    /// to know which namespaces it acts on).
    #[error("listing the shard Leases in {namespace}")]
    ShardLeases {
        /// The manager's namespace.
        namespace: String,
        /// The API server's error, verbatim.
        #[source]
        source: kube::Error,
    },
    /// This replica no longer holds its shard's Lease.
    #[error("this replica does not hold the shard Lease {namespace}/{name}")]
    NotHolding {
        /// The lease's namespace.
        namespace: String,
        /// The lease's name.
        name: String,
    },
    /// The controllers stopped without being asked to (a watch ended).
    #[error("the controllers stopped without a shutdown request")]
    ControllerStopped,
    /// A metric could not be registered (a bug: duplicate name).
    #[error("registering metrics")]
    Metrics(#[from] prometheus::Error),
    /// The logging subscriber could not be installed.
    #[error("logging: {0}")]
    Logging(String),
    /// The thread that serves the probes and renews the Lease could not
    /// be started, or stopped.
    #[error("the keep-alive thread")]
    KeepAlive(#[source] std::io::Error),
}

/// An error and its causes in one line, as a status, an event or a log
/// shows it: what failed, then why. An API server's answer is shown in its
/// own words ([`explain`]) and ends the line: what kube nests under it
/// (a decoder's message may quote a value) is never shown.
///
/// Cut to [`REPORT`] bytes, control characters escaped: the API server's
/// words may quote what a tenant wrote, of any length.
pub fn report(error: &(dyn std::error::Error + 'static)) -> String {
    quote::cut(&report_whole(error), REPORT)
}

/// The most a [`report`] holds: what a status or an event shows of it is
/// cut again to their own limits.
pub const REPORT: usize = 2 * quote::MESSAGE;

fn report_whole(error: &(dyn std::error::Error + 'static)) -> String {
    if let Some(k) = error.downcast_ref::<kube::Error>() {
        return explain(k);
    }
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        if let Some(k) = e.downcast_ref::<kube::Error>() {
            text.push_str(&explain(k));
            break;
        }
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// The API server's own words for a failed call, with what to do where the
/// cause is clear: RBAC forbidden names the missing verb and resource, an
/// unreachable server says so. Cut as [`report`] is.
pub fn explain(error: &kube::Error) -> String {
    quote::cut(&explain_whole(error), REPORT)
}

/// Why a watch failed, in the API server's words ([`explain`]): kube's own
/// text of it carries the whole `Status`, causes and all, each quoting
/// what it found.
pub fn explain_watch(error: &kube::runtime::watcher::Error) -> String {
    use kube::runtime::watcher::Error as W;
    match error {
        W::InitialListFailed(e) => format!("listing failed: {}", explain(e)),
        W::WatchStartFailed(e) => format!("starting the watch failed: {}", explain(e)),
        W::WatchFailed(e) => format!("the watch failed: {}", explain(e)),
        W::WatchError(status) => format!(
            "the API server ended the watch: {}",
            quote::quoted(&without_invalid_values(&status.message), quote::MESSAGE)
        ),
        W::NoResourceVersion => error.to_string(),
    }
}

fn explain_whole(error: &kube::Error) -> String {
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
        // Right after the CRD is installed, until kube-controller-manager
        // has counted the new kind for a quota: not a missing grant.
        kube::Error::Api(status)
            if status.code == 403 && status.message.contains("status unknown for quota") =>
        {
            format!(
                "{} (the quota controller has not yet counted this kind for that quota, as right after a CRD or a quota is first installed; it usually does within 6 to 7 minutes (kube-controller-manager's --resource-quota-sync-period, 5 minutes by default, then a retry) and this is retried automatically; if it lasts longer, the platform team should look at kube-controller-manager's quota controller)",
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

/// The HTTP status of a failed call, if the API server answered.
pub fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

#[cfg(test)]
mod reports {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("applying Secret ns/name")]
    struct Apply(#[source] kube::Error);

    #[test]
    fn a_report_names_what_failed_then_the_api_servers_words_once() {
        let status = kube::core::Status::failure("secrets \"x\" is forbidden: nope", "Forbidden")
            .with_code(403);
        let e = Apply(kube::Error::Api(Box::new(status)));
        let text = report(&e);
        assert!(
            text.starts_with("applying Secret ns/name: secrets \"x\" is forbidden: nope"),
            "{text}"
        );
        assert_eq!(text.matches("forbidden").count(), 1, "{text}");
        assert_eq!(
            e.to_string(),
            "applying Secret ns/name",
            "Display is only what failed"
        );
        // An API error on its own is shown in the API server's words too.
        let Apply(k) = e;
        assert_eq!(report(&k), explain(&k));
    }

    #[test]
    fn a_quota_not_yet_counted_is_not_called_a_missing_grant() {
        let status = kube::core::Status::failure(
            "syncsecrets.kubelb.k8c.io \"u\" is forbidden: status unknown for quota: syncsecret-tenant, resources: count/syncsecrets.kubelb.k8c.io",
            "Forbidden",
        )
        .with_code(403);
        let text = explain(&kube::Error::Api(Box::new(status)));
        assert!(text.contains("retried automatically"), "{text}");
        assert!(!text.contains("grant this identity"), "{text}");
    }
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
