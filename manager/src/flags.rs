//! The manager's flags; each can also be set by the environment variable in
//! brackets.

use std::path::PathBuf;

use clap::Parser;
use syncsecret_api::runtime::flags::CommonFlags;

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

    /// Namespace the manager runs in; it holds the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "kubelb")]
    pub namespace: String,

    /// Namespaces whose names start with this are tenant namespaces; copies
    /// elsewhere are left alone and counted as skipped (KubeLB's convention).
    #[arg(long, env = "TENANT_NAMESPACE_PREFIX", default_value = "tenant-")]
    pub tenant_namespace_prefix: String,

    /// Leader election, concurrency, log format.
    #[command(flatten)]
    pub common: CommonFlags,
}

impl syncsecret_api::runtime::runner::BinaryFlags for Flags {
    fn common(&self) -> &CommonFlags {
        &self.common
    }
}
