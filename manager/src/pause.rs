//! Keeps the pause policy's params (a ConfigMap in the manager's
//! namespace, [`syncsecret_api::admission::PAUSE_CONFIG_MAP`]) listing the
//! tenant namespaces whose write budget is down to its reserve, so that the API server
//! refuses their writes of copies until it has refilled
//! ([`crate::budget`]). Each shard changes only its own namespaces' keys,
//! by merge patches that name them, so that shards never undo each other;
//! a new leader term reads the list first and takes off what an earlier
//! term left.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::{Api, Client};
use serde_json::json;
use syncsecret_api::admission::Pause;
use syncsecret_api::shard::Shard;
use syncsecret_runtime::cache::KeyFilter;
use syncsecret_runtime::metrics::ControllerMetrics;
use syncsecret_runtime::reconcile::writer::Writer;

use crate::budget::WriteBudgets;

/// How often the list is looked at besides when a tenant goes into its
/// reserve (how late, at most, a tenant is let through again), and the
/// least time between two writes of it.
const PERIOD: Duration = Duration::from_secs(1);

/// How often the live list is read again.
const REREAD: Duration = Duration::from_secs(60);

/// Sets the gauge of paused tenants to zero when this term's list keeper
/// ends: another replica keeps the list now.
struct ZeroOnDrop(prometheus::IntGauge);

impl Drop for ZeroOnDrop {
    fn drop(&mut self) {
        self.0.set(0);
    }
}

/// Where the list goes and who writes it.
pub struct Pauser {
    /// The ConfigMap, in the manager's namespace.
    pub config_map: Api<ConfigMap>,
    /// Its name.
    pub name: String,
    /// The field manager of this shard's keys.
    pub field_manager: String,
    /// The buckets.
    pub budgets: Arc<WriteBudgets>,
    /// The namespaces this shard acts on (`None`: all).
    pub namespaces: Option<KeyFilter>,
    /// Counts the writes.
    pub metrics: ControllerMetrics,
}

impl Pauser {
    /// One for `shard`, writing `name` in `namespace`.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        shard: Shard,
        budgets: Arc<WriteBudgets>,
        namespaces: Option<KeyFilter>,
        metrics: ControllerMetrics,
    ) -> Self {
        Self {
            config_map: Api::namespaced(client, namespace),
            name: name.to_owned(),
            field_manager: format!(
                "{}-shard-{}-of-{}",
                syncsecret_api::contract::FIELD_MANAGER_MANAGER,
                shard.index,
                shard.count
            ),
            budgets,
            namespaces,
            metrics,
        }
    }

    /// Keeps the list until dropped: read first (a restart that finds
    /// nothing to change writes nothing), then changed whenever the set of
    /// this shard's paused namespaces differs from it, at most once a
    /// second; read again once a minute, so that an entry an earlier term
    /// or another shard left, or an edit by hand, is put right. The
    /// moments only inform a refusal's message and are not rewritten.
    pub async fn run(self) {
        let _zero = ZeroOnDrop(self.budgets.paused_gauge());
        let mut listed: Option<BTreeMap<String, Pause>> = None;
        let mut read_at: Option<tokio::time::Instant> = None;
        let mut last_error: Option<String> = None;
        loop {
            if read_at.is_none_or(|t| t.elapsed() >= REREAD) {
                match self.read().await {
                    Ok(keys) => {
                        listed = Some(keys);
                        read_at = Some(tokio::time::Instant::now());
                    }
                    Err(e) => self.failed("read", &e, &mut last_error),
                }
            }
            // Nothing is written before the list has been read once.
            if let Some(current) = &listed {
                let now = Timestamp::now();
                let pauses = self.budgets.paused(|ns| self.ours(ns));
                let keys: BTreeMap<String, Pause> =
                    pauses.iter().map(|(ns, p, _)| (ns.clone(), *p)).collect();
                let paused: BTreeMap<String, String> = pauses
                    .into_iter()
                    .map(|(ns, p, wait)| (ns, p.value(&until(now, wait))))
                    .collect();
                if &keys != current {
                    // Taken off with a null, whoever listed it; put on (or
                    // changed) with what is refused and until when.
                    let mut data = serde_json::Map::new();
                    for ns in current.keys().filter(|ns| !keys.contains_key(*ns)) {
                        data.insert(ns.clone(), serde_json::Value::Null);
                    }
                    for (ns, p) in &keys {
                        if current.get(ns) != Some(p) {
                            data.insert(ns.clone(), paused[ns].clone().into());
                        }
                    }
                    match self.write(data, &paused).await {
                        Ok(()) => {
                            let names: Vec<&str> = keys.keys().map(String::as_str).collect();
                            tracing::info!(paused = %names.join(", "), "tenants whose writes of copies the API server refuses until their write budget has refilled");
                            self.budgets.paused_gauge().set(keys.len() as i64);
                            listed = Some(keys);
                            last_error = None;
                            // At most one write a second, however many
                            // tenants come and go.
                            tokio::time::sleep(PERIOD).await;
                        }
                        Err(e) => self.failed("write", &e, &mut last_error),
                    }
                }
            }
            tokio::select! {
                () = self.budgets.indebted() => {}
                () = tokio::time::sleep(PERIOD) => {}
            }
        }
    }

    /// Whether this shard acts on `namespace`.
    fn ours(&self, namespace: &str) -> bool {
        self.namespaces.as_ref().is_none_or(|keep| keep(namespace))
    }

    /// The namespaces of this shard the live list names, and what it
    /// refuses them (a value this manager did not write: everything).
    async fn read(&self) -> Result<BTreeMap<String, Pause>, kube::Error> {
        let updates_only = Pause::Updates.value("");
        Ok(self
            .config_map
            .get_opt(&self.name)
            .await?
            .and_then(|c| c.data)
            .into_iter()
            .flatten()
            .filter(|(ns, _)| self.ours(ns))
            .map(|(ns, v)| {
                let pause = if v.starts_with(&updates_only) {
                    Pause::Updates
                } else {
                    Pause::CreatesAndUpdates
                };
                (ns, pause)
            })
            .collect())
    }

    /// Logs a failure to `verb` the list, once per distinct failure.
    fn failed(&self, verb: &str, e: &kube::Error, last: &mut Option<String>) {
        let message = syncsecret_runtime::explain(e);
        if last.as_ref() != Some(&message) {
            tracing::warn!(config_map = %self.name, error = %message, "cannot {verb} the list of paused tenants, retrying; until it can, tenants over their write budget are paced, not refused (grant get, create and patch on this ConfigMap: upgrade the chart, or config/rbac/manager.yaml)");
            *last = Some(message);
        }
    }

    /// A merge patch of `data`; where the ConfigMap is missing, it is made
    /// (applied) with `paused`.
    async fn write(
        &self,
        data: serde_json::Map<String, serde_json::Value>,
        paused: &BTreeMap<String, String>,
    ) -> Result<(), kube::Error> {
        let writer = Writer::new(self.config_map.clone(), "configmaps", &self.metrics);
        let changed = ["data".to_owned()];
        let patch = json!({"data": data});
        match writer
            .merge(&self.name, &self.field_manager, patch, None, &changed)
            .await
        {
            Err(kube::Error::Api(s)) if s.code == 404 => {
                let desired = json!({
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": self.name},
                    "data": paused,
                });
                writer
                    .apply(&self.name, &self.field_manager, &desired, None, &changed)
                    .await
                    .map(|_| ())
            }
            other => other.map(|_| ()),
        }
    }
}

/// The moment `wait` from `now`, to the second after.
fn until(now: Timestamp, wait: Duration) -> String {
    let then = now
        .checked_add(SignedDuration::from_secs(wait.as_secs() as i64 + 1))
        .unwrap_or(now);
    then.round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or(then)
        .to_string()
}
