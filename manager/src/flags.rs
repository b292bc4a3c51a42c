//! The manager's flags; each can also be set by the environment variable in
//! brackets.

use std::path::PathBuf;

use clap::{ArgAction, Parser};
use syncsecret_api::runtime::logging::LogFormat;

/// Turns SyncSecret copies in tenant namespaces of the management cluster
/// into owner-referenced Secrets.
#[derive(Debug, Parser)]
#[command(name = "syncsecret-manager", version)]
pub struct Flags {
    /// Kubeconfig of the management cluster [default: in-cluster
    /// configuration, then $KUBECONFIG or ~/.kube/config].
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,

    /// Address of the /metrics endpoint (`0` disables it).
    #[arg(long, env = "METRICS_ADDR", default_value = ":9443")]
    pub metrics_addr: String,

    /// Address of the /healthz and /readyz probes (`0` disables them).
    #[arg(long, env = "HEALTH_PROBE_BIND_ADDRESS", default_value = ":8081")]
    pub health_probe_bind_address: String,

    /// Run only while holding a Lease in --namespace, so that several
    /// replicas can run with one active.
    #[arg(long, env = "ENABLE_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enable_leader_election: bool,

    /// Namespace the manager runs in; it holds the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "kubelb")]
    pub namespace: String,

    /// Namespaces whose names start with this are tenant namespaces; copies
    /// elsewhere are left alone and counted as skipped (KubeLB's convention).
    #[arg(long, env = "TENANT_NAMESPACE_PREFIX", default_value = "tenant-")]
    pub tenant_namespace_prefix: String,

    /// How many objects are reconciled at once.
    #[arg(long, env = "MAX_CONCURRENT_RECONCILES", default_value_t = 16)]
    pub max_concurrent_reconciles: u16,

    /// Log format: human or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "human")]
    pub log_format: LogFormat,
}

impl syncsecret_api::runtime::runner::BinaryFlags for Flags {
    fn log_format(&self) -> LogFormat {
        self.log_format
    }
}
