//! Gauges read at scrape time from state the controller already keeps, so
//! that they can never drift from it: whether this replica is ready and
//! leads, and how many SyncSecrets it sees in each phase.

use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};

use crate::cache::summary::Summary;
use crate::serve::health::Health;
use syncsecret_api::SyncSecret;
use syncsecret_api::status::phase;
use syncsecret_api::v1alpha1::SyncSecretPhase;

/// `<prefix>_ready` and `<prefix>_leader`, from the probe state.
struct HealthGauges {
    health: Arc<Health>,
    ready: IntGauge,
    leader: IntGauge,
}

impl Collector for HealthGauges {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.ready.desc();
        d.extend(self.leader.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.ready.set(i64::from(self.health.ready().is_ok()));
        self.leader.set(i64::from(self.health.leading()));
        let mut m = self.ready.collect();
        m.extend(self.leader.collect());
        m
    }
}

/// Registers `<prefix>_ready` (1 while `/readyz` answers ok) and
/// `<prefix>_leader` (1 while this replica holds the Lease, or runs
/// without leader election and has started its controllers).
pub fn register_health(
    prefix: &str,
    health: Arc<Health>,
    registry: &Registry,
) -> Result<(), prometheus::Error> {
    let ready = IntGauge::new(
        format!("{prefix}_ready"),
        "1 while this replica's /readyz answers ok (watches synced, nothing failed).",
    )?;
    let leader = IntGauge::new(
        format!("{prefix}_leader"),
        "1 while this replica leads (holds the Lease, or leader election is off and it runs).",
    )?;
    registry.register(Box::new(HealthGauges {
        health,
        ready,
        leader,
    }))
}

/// A shard's gauges, read from the probe state at each scrape.
struct ShardGauges {
    health: Arc<Health>,
    shards: IntGauge,
    leader: IntGauge,
}

impl Collector for ShardGauges {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.shards.desc();
        d.extend(self.leader.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.leader.set(i64::from(self.health.leading()));
        let mut m = self.shards.collect();
        m.extend(self.leader.collect());
        m
    }
}

/// Registers `<prefix>_shards` (how many shards share the tenant
/// namespaces, as this replica was told) and `<prefix>_shard_leader{shard}`
/// (1 while this replica leads shard `shard`): fewer shards with a leader
/// than `_shards` says is a shard whose tenants nobody serves.
pub fn register_shard(
    prefix: &str,
    shard: u32,
    count: u32,
    health: Arc<Health>,
    registry: &Registry,
) -> Result<(), prometheus::Error> {
    let shards = IntGauge::new(
        format!("{prefix}_shards"),
        "How many shards share the tenant namespaces (--shards).",
    )?;
    shards.set(i64::from(count));
    let leader = IntGauge::with_opts(
        Opts::new(
            format!("{prefix}_shard_leader"),
            "1 while this replica leads its shard (holds the shard's Lease).",
        )
        .const_label("shard", shard.to_string()),
    )?;
    registry.register(Box::new(ShardGauges {
        health,
        shards,
        leader,
    }))
}

/// Registers the collector `make` builds, replacing one registered before
/// with the same descriptors: leading again after losing the lease, the
/// new store replaces the old one.
fn register_replacing<C: Collector + 'static>(
    registry: &Registry,
    make: impl Fn() -> C,
) -> Result<(), prometheus::Error> {
    match registry.register(Box::new(make())) {
        Err(prometheus::Error::AlreadyReg) => {
            registry.unregister(Box::new(make()))?;
            registry.register(Box::new(make()))
        }
        other => other,
    }
}

/// A gauge vector counted from a reflector store at each scrape: each
/// object adds one to the series its `labels` give (none: not counted).
struct StoreCount {
    store: Store<Summary<SyncSecret>>,
    labels: fn(&Summary<SyncSecret>) -> Option<Vec<String>>,
    gauge: Mutex<IntGaugeVec>,
    desc: Vec<Desc>,
}

impl Collector for StoreCount {
    fn desc(&self) -> Vec<&Desc> {
        self.desc.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(gauge) = self.gauge.lock() else {
            return Vec::new();
        };
        gauge.reset();
        for o in self.store.state() {
            if let Some(values) = (self.labels)(&o) {
                let values: Vec<&str> = values.iter().map(String::as_str).collect();
                gauge.with_label_values(&values).inc();
            }
        }
        gauge.collect()
    }
}

/// Registers `gauge`, counted from `store` by `labels` (see [`StoreCount`]).
fn register_store_count(
    gauge: IntGaugeVec,
    store: Store<Summary<SyncSecret>>,
    labels: fn(&Summary<SyncSecret>) -> Option<Vec<String>>,
    registry: &Registry,
) -> Result<(), prometheus::Error> {
    let desc: Vec<Desc> = gauge.desc().into_iter().cloned().collect();
    register_replacing(registry, || StoreCount {
        store: store.clone(),
        labels,
        gauge: Mutex::new(gauge.clone()),
        desc: desc.clone(),
    })
}

/// Registers `<prefix>_sync_secrets{namespace,phase}`: the SyncSecrets in
/// `store` (the tenant objects for the ccm, the copies for the manager) by
/// namespace and phase; an object without a status counts as Pending, one
/// being deleted as Terminating.
pub fn register_phases(
    prefix: &str,
    what: &str,
    store: Store<Summary<SyncSecret>>,
    registry: &Registry,
) -> Result<(), prometheus::Error> {
    let gauge = IntGaugeVec::new(
        Opts::new(
            format!("{prefix}_sync_secrets"),
            format!("{what} by namespace and phase (Pending, Synced, Failed, Terminating)."),
        ),
        &["namespace", "phase"],
    )?;
    register_store_count(
        gauge,
        store,
        |o| {
            let p = if o.metadata.deletion_timestamp.is_some() {
                SyncSecretPhase::Terminating
            } else {
                phase(o.status.as_ref()).unwrap_or(SyncSecretPhase::Pending)
            };
            Some(vec![
                o.namespace().unwrap_or_default(),
                p.as_str().to_owned(),
            ])
        },
        registry,
    )
}

/// Registers `<prefix>_undecodable_objects{cluster,namespace}` for the
/// SyncSecrets in `store`, which come from `cluster` (`tenant` or
/// `management`): one collector per cluster, told apart by that label.
pub fn register_undecodable(
    prefix: &str,
    cluster: &str,
    store: Store<Summary<SyncSecret>>,
    registry: &Registry,
) -> Result<(), prometheus::Error> {
    let gauge = IntGaugeVec::new(
        Opts::new(
            format!("{prefix}_undecodable_objects"),
            "SyncSecrets the API server holds that cannot be read as one (never synced; their status or events say which field), by cluster and namespace.",
        )
        .const_label("cluster", cluster),
        &["namespace"],
    )?;
    register_store_count(
        gauge,
        store,
        |o| {
            o.unreadable()
                .map(|_| vec![o.namespace().unwrap_or_default()])
        },
        registry,
    )
}

/// `<prefix>_cluster_name_conflicts`: copies in the ccm's tenant
/// namespace that another tenant cluster's ccm made under the same cluster
/// name, counted from the copies cache at each scrape.
struct ForeignCopies {
    store: Store<Summary<SyncSecret>>,
    cluster: String,
    gauge: IntGauge,
}

impl Collector for ForeignCopies {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let n = self
            .store
            .state()
            .iter()
            .filter(|c| syncsecret_api::sweep::from_another_cluster(c.as_ref(), &self.cluster))
            .count();
        self.gauge.set(i64::try_from(n).unwrap_or(i64::MAX));
        self.gauge.collect()
    }
}

/// Registers `<prefix>_cluster_name_conflicts` for the copies in `store`
/// and this cluster's identity `cluster`.
pub fn register_foreign_copies(
    prefix: &str,
    store: Store<Summary<SyncSecret>>,
    cluster: String,
    registry: &Registry,
) -> Result<(), prometheus::Error> {
    let gauge = IntGauge::new(
        format!("{prefix}_cluster_name_conflicts"),
        "Copies in this tenant's namespace made by another tenant cluster's ccm under the same cluster name (0 unless two clusters claim one name).",
    )?;
    let make = |store: Store<Summary<SyncSecret>>| ForeignCopies {
        store,
        cluster: cluster.clone(),
        gauge: gauge.clone(),
    };
    register_replacing(registry, || make(store.clone()))
}

/// The commit a build was made from: `SYNCSECRET_COMMIT` at build time
/// (`make image` sets it), else `unknown`.
pub const COMMIT: &str = match option_env!("SYNCSECRET_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

/// Registers `<prefix>_build_info{version,commit}`, always 1: joined on,
/// it tells which build each replica runs.
pub fn register_build_info(prefix: &str, registry: &Registry) -> Result<(), prometheus::Error> {
    let info = IntGaugeVec::new(
        Opts::new(
            format!("{prefix}_build_info"),
            "Always 1; its labels say which version and commit this replica runs.",
        ),
        &["version", "commit"],
    )?;
    info.with_label_values(&[env!("CARGO_PKG_VERSION"), COMMIT])
        .set(1);
    registry.register(Box::new(info))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::summary::Summarize;
    use kube::runtime::reflector::store;
    use kube::runtime::watcher::Event;
    use syncsecret_api::v1alpha1::SyncSecretStatus;

    fn object(ns: &str, name: &str, p: Option<SyncSecretPhase>) -> SyncSecret {
        let mut o = SyncSecret::default();
        o.metadata.namespace = Some(ns.to_owned());
        o.metadata.name = Some(name.to_owned());
        o.status = p.map(|phase| SyncSecretStatus {
            phase: Some(phase),
            ..Default::default()
        });
        o
    }

    #[test]
    fn phases_are_counted_from_the_store_at_each_scrape() {
        let registry = Registry::new();
        let (reader, mut writer) = store::<Summary<SyncSecret>>();
        register_phases("kubelb_ccm", "Tenant SyncSecrets", reader, &registry).unwrap();
        for o in [
            object("a", "x", Some(SyncSecretPhase::Synced)),
            object("a", "y", Some(SyncSecretPhase::Synced)),
            object("a", "z", None),
            object("b", "x", Some(SyncSecretPhase::Failed)),
        ] {
            writer.apply_watcher_event(&Event::Apply(o.summary()));
        }
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(
            text.contains(r#"kubelb_ccm_sync_secrets{namespace="a",phase="Synced"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kubelb_ccm_sync_secrets{namespace="a",phase="Pending"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kubelb_ccm_sync_secrets{namespace="b",phase="Failed"} 1"#),
            "{text}"
        );
        writer.apply_watcher_event(&Event::Delete(object("b", "x", None).summary()));
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(
            !text.contains(r#"namespace="b""#),
            "a gone object leaves no series: {text}"
        );
    }

    #[test]
    fn undecodable_objects_are_counted_by_cluster_and_namespace() {
        use crate::cache::decode::Undecodable;
        let registry = Registry::new();
        let (tenant, mut tenant_writer) = store::<Summary<SyncSecret>>();
        let (management, mut management_writer) = store::<Summary<SyncSecret>>();
        register_undecodable("kubelb_ccm", "tenant", tenant, &registry).unwrap();
        register_undecodable("kubelb_ccm", "management", management, &registry).unwrap();
        let bad = |ns: &str, name: &str| {
            let mut u = Undecodable::default();
            u.metadata.namespace = Some(ns.to_owned());
            u.metadata.name = Some(name.to_owned());
            Summary::undecodable(u)
        };
        tenant_writer.apply_watcher_event(&Event::Apply(bad("a", "x")));
        tenant_writer.apply_watcher_event(&Event::Apply(bad("a", "y")));
        tenant_writer.apply_watcher_event(&Event::Apply(object("a", "z", None).summary()));
        management_writer.apply_watcher_event(&Event::Apply(bad("tenant-a", "x")));
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(
            text.contains(r#"kubelb_ccm_undecodable_objects{cluster="tenant",namespace="a"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"kubelb_ccm_undecodable_objects{cluster="management",namespace="tenant-a"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn health_gauges_follow_the_probe_state() {
        let registry = Registry::new();
        let health = Arc::new(Health::new());
        register_health("kubelb_manager", health.clone(), &registry).unwrap();
        let scrape = || {
            prometheus::TextEncoder::new()
                .encode_to_string(&registry.gather())
                .unwrap()
        };
        assert!(scrape().contains("kubelb_manager_ready 0"));
        assert!(scrape().contains("kubelb_manager_leader 0"));
        health.set_ready(true);
        health.set_leading(true);
        assert!(scrape().contains("kubelb_manager_ready 1"));
        assert!(scrape().contains("kubelb_manager_leader 1"));
        health.fail("watch ended");
        assert!(scrape().contains("kubelb_manager_ready 0"));
    }
}
