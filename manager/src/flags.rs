//! The manager's flags; each can also be set by the environment variable in
//! brackets.

use std::path::PathBuf;

use clap::Parser;
use syncsecret_api::shard::Shard;
use syncsecret_runtime::serve::flags::CommonFlags;

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
    #[arg(long, env = "SYNCSECRET_METRICS_ADDR", default_value = ":9443")]
    pub metrics_addr: String,

    /// Address of the /healthz and /readyz probes (`0` disables them).
    #[arg(
        long,
        env = "SYNCSECRET_HEALTH_PROBE_BIND_ADDRESS",
        default_value = ":8081"
    )]
    pub health_probe_bind_address: String,

    /// Namespace the manager runs in; it holds the leader Lease.
    #[arg(long, env = "SYNCSECRET_NAMESPACE", default_value = "kubelb")]
    pub namespace: String,

    /// Namespaces whose names start with this are tenant namespaces; copies
    /// elsewhere are left alone and counted as skipped (KubeLB's convention).
    #[arg(
        long,
        env = "SYNCSECRET_TENANT_NAMESPACE_PREFIX",
        default_value = "tenant-"
    )]
    pub tenant_namespace_prefix: String,

    /// Only these Secret types are synced (comma-separated). The default
    /// is the types that carry workload credentials and that no
    /// management-cluster controller acts on.
    #[arg(
        long,
        env = "SYNCSECRET_ALLOWED_SECRET_TYPES",
        value_delimiter = ',',
        default_value = "Opaque,kubernetes.io/tls,kubernetes.io/dockerconfigjson,kubernetes.io/dockercfg,kubernetes.io/basic-auth,kubernetes.io/ssh-auth"
    )]
    pub allowed_secret_types: Vec<String>,

    /// Label and annotation keys a tenant may put on its Secrets here
    /// (comma-separated; `prefix*` for prefixes). Default: none; the
    /// origin labels are set by the manager either way.
    #[arg(long, env = "SYNCSECRET_ALLOWED_METADATA", value_delimiter = ',')]
    pub allowed_metadata: Vec<String>,

    /// KubeLB's behaviour: sync every Secret type but the denied ones, and
    /// copy every label and annotation a tenant writes but the dropped
    /// ones. This lets a tenant make Secrets that controllers of the
    /// management cluster act on: a Helm release record (type
    /// helm.sh/release.v1 with Helm's labels), a replicator's or
    /// reflector's source (their annotations), anything a policy engine
    /// selects by label.
    #[arg(long, env = "SYNCSECRET_UNSAFE_COPY_ALL_TYPES_AND_METADATA")]
    pub unsafe_copy_all_types_and_metadata: bool,

    /// These Secret types are never synced (comma-separated).
    #[arg(
        long,
        env = "SYNCSECRET_DENIED_SECRET_TYPES",
        value_delimiter = ',',
        default_value = "kubernetes.io/service-account-token"
    )]
    pub denied_secret_types: Vec<String>,

    /// Label and annotation keys never copied onto Secrets, whatever else
    /// allows them, besides kubernetes.io/service-account.* and kubectl's
    /// last-applied configuration (comma-separated; `prefix*` for
    /// prefixes).
    #[arg(long, env = "SYNCSECRET_DROP_METADATA", value_delimiter = ',')]
    pub drop_metadata: Vec<String>,

    /// Most Secrets per tenant namespace (0: no limit).
    #[arg(long, env = "SYNCSECRET_MAX_SECRETS_PER_TENANT", default_value_t = 0)]
    pub max_secrets_per_tenant: usize,

    /// Most bytes of Secret data per tenant namespace (0: no limit).
    #[arg(long, env = "SYNCSECRET_MAX_BYTES_PER_TENANT", default_value_t = 0)]
    pub max_bytes_per_tenant: usize,

    /// Bytes the manager writes per tenant namespace per minute, on
    /// average (Secrets, copies' status and finalizers, events): a tenant
    /// rewriting its copies as fast as it can is synced at this pace
    /// (0: no pace).
    #[arg(
        long,
        env = "SYNCSECRET_TENANT_WRITE_BYTES_PER_MINUTE",
        default_value_t = syncsecret_api::bounds::WRITE_BYTES_PER_MINUTE.default
    )]
    pub tenant_write_bytes_per_minute: u64,

    /// Bytes the manager writes per tenant namespace at once before it
    /// paces them by --tenant-write-bytes-per-minute, per copy of the
    /// tenant's quota (its ResourceQuota `syncsecret-tenant`; without one,
    /// 100 copies).
    #[arg(
        long,
        env = "SYNCSECRET_TENANT_WRITE_BURST_BYTES_PER_COPY",
        default_value_t = syncsecret_api::bounds::WRITE_BURST_BYTES.default
    )]
    pub tenant_write_burst_bytes_per_copy: u64,

    /// The ConfigMap, in --namespace, in which the manager lists the tenant
    /// namespaces whose write budget is spent: the chart's admission policy
    /// (`syncsecret-tenant-write-pause`) refuses their writes of copies
    /// until it has refilled. Empty: such tenants are paced, not refused.
    #[arg(
        long,
        env = "SYNCSECRET_WRITE_PAUSE_CONFIG_MAP",
        default_value = syncsecret_api::admission::PAUSE_CONFIG_MAP
    )]
    pub write_pause_config_map: String,

    /// A kubernetes.io/tls certificate expiring within this many days gets
    /// the CertificateExpiring condition.
    #[arg(
        long,
        env = "SYNCSECRET_CERTIFICATE_EXPIRY_WINDOW_DAYS",
        default_value_t = 14
    )]
    pub certificate_expiry_window_days: u32,

    /// How many shards share the tenant namespaces, each run as its own
    /// Deployment with its own Lease (`syncsecret-manager-<i>-of-<n>`). A
    /// namespace belongs to one shard by a hash of its name; 1: this
    /// manager acts on every tenant namespace.
    #[arg(long, env = "SYNCSECRET_SHARDS", default_value_t = 1)]
    pub shards: u32,

    /// Which shard this manager is, from 0 (below --shards).
    #[arg(long, env = "SYNCSECRET_SHARD", default_value_t = 0)]
    pub shard: u32,

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

impl Flags {
    /// The shard `--shard` and `--shards` name.
    pub fn shard(&self) -> Result<Shard, crate::StartError> {
        let refuse = |flag, why: String| crate::StartError::Flag { flag, why };
        if self.shards == 0 {
            return Err(refuse("--shards", "must be at least 1".to_owned()));
        }
        let shard = Shard::new(self.shard, self.shards).ok_or_else(|| {
            let why = format!("{} is not below --shards ({})", self.shard, self.shards);
            refuse("--shard", why)
        })?;
        // Shards agree on who acts where through their Leases: without
        // them, two counts running at once during a change would both act.
        if self.shards > 1 && !self.common.enable_leader_election {
            let why = "above 1 needs leader election (--enable-leader-election)".to_owned();
            return Err(refuse("--shards", why));
        }
        Ok(shard)
    }

    /// The policy the flags describe.
    pub fn policy(&self) -> syncsecret_api::policy::Policy {
        let non_empty = |v: &[String]| v.iter().filter(|s| !s.is_empty()).cloned().collect();
        syncsecret_api::policy::Policy {
            allowed_types: non_empty(&self.allowed_secret_types),
            denied_types: non_empty(&self.denied_secret_types),
            allowed_metadata: non_empty(&self.allowed_metadata),
            dropped_metadata: non_empty(&self.drop_metadata),
            copy_everything: self.unsafe_copy_all_types_and_metadata,
            max_secrets_per_tenant: (self.max_secrets_per_tenant > 0)
                .then_some(self.max_secrets_per_tenant),
            max_bytes_per_tenant: (self.max_bytes_per_tenant > 0)
                .then_some(self.max_bytes_per_tenant),
        }
    }
}
