//! The ccm's flags, named as KubeLB's ccm names them; each can also be set by
//! the environment variable in brackets.

use std::path::PathBuf;

use clap::{ArgAction, Parser};
use syncsecret_runtime::serve::flags::CommonFlags;

/// Copies SyncSecrets from this tenant cluster into the tenant's namespace
/// of the KubeLB management cluster.
#[derive(Debug, Parser)]
#[command(name = "syncsecret-ccm", version)]
pub struct Flags {
    /// Name of this tenant cluster; the tenant namespace prefix is put in
    /// front when missing. It names the tenant's namespace in the
    /// management cluster.
    #[arg(long, env = "SYNCSECRET_CLUSTER_NAME")]
    pub cluster_name: String,

    /// Prefix of tenant namespaces in the management cluster, as the
    /// manager's --tenant-namespace-prefix.
    #[arg(long, env = "SYNCSECRET_TENANT_NAMESPACE_PREFIX", default_value = syncsecret_api::contract::TENANT_NAMESPACE_PREFIX, value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub tenant_namespace_prefix: String,

    /// Kubeconfig of the management (KubeLB) cluster.
    #[arg(long, env = "SYNCSECRET_KUBELB_KUBECONFIG")]
    pub kubelb_kubeconfig: PathBuf,

    /// Kubeconfig of this tenant cluster [default: in-cluster configuration,
    /// then $KUBECONFIG or ~/.kube/config].
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,

    /// Address of the /metrics endpoint (`0` disables it).
    #[arg(long, env = "SYNCSECRET_METRICS_ADDR", default_value = ":9445")]
    pub metrics_addr: String,

    /// Address of the /healthz and /readyz probes (`0` disables them).
    #[arg(
        long,
        env = "SYNCSECRET_HEALTH_PROBE_BIND_ADDRESS",
        default_value = ":8081"
    )]
    pub health_probe_bind_address: String,

    /// Namespace of the tenant cluster that holds the leader Lease.
    #[arg(
        long,
        env = "SYNCSECRET_LEADER_ELECTION_NAMESPACE",
        default_value = "kube-system"
    )]
    pub leader_election_namespace: String,

    /// Also turn Secrets labelled kubelb.k8c.io/managed-by=kubelb into
    /// SyncSecrets of the same name.
    #[arg(long, env = "SYNCSECRET_ENABLE_SECRET_SYNCHRONIZER", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enable_secret_synchronizer: bool,

    /// Seconds a new object may wait for the manager's first verdict on its
    /// copy, from this ccm's first write of the copy, before its status
    /// says Pending however busy the manager is with other copies. A
    /// manager that answers none of this ccm's copies shows Pending after
    /// 5 s anyway; raise this where one manager works through bursts that
    /// take longer. From 5 s (the first wait of every new object) to a
    /// day.
    #[arg(long, env = "SYNCSECRET_PENDING_TIMEOUT_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(5..=86_400))]
    pub pending_timeout_seconds: u64,

    /// Check that the identity of --kubelb-kubeconfig may list SyncSecrets
    /// in this tenant's namespace of the management cluster, say so and
    /// exit (non-zero if it may not); nothing else runs. The chart's `helm
    /// test` runs this.
    #[arg(long)]
    pub check_management_access: bool,

    /// Leader election, concurrency, log format.
    #[command(flatten)]
    pub common: CommonFlags,
}

impl syncsecret_runtime::serve::runner::BinaryFlags for Flags {
    fn common(&self) -> &CommonFlags {
        &self.common
    }
    fn listen(&self) -> (&str, &str) {
        (&self.metrics_addr, &self.health_probe_bind_address)
    }
}
