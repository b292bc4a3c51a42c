//! syncsecret-manager: runs in the management cluster. For every SyncSecret
//! copy in a tenant namespace it keeps a Secret named by the copy's UID,
//! owner-referenced to the copy, with the copy's type, effective data,
//! immutability, labels and annotations; it writes the copy's status, and on
//! deletion removes the Secret before releasing its finalizer. It writes
//! nothing when the Secret already holds what it would write.

mod budget;
mod certs;
pub mod error;
pub mod flags;
mod pause;
mod reconcile;
mod sweep;
mod verify;

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client};
use prometheus::Registry;
use syncsecret_api::SyncSecret;
use syncsecret_api::contract::{FIELD_MANAGER_MANAGER, LABEL_ORIGIN_NAME};
use syncsecret_api::policy::Policy;
use syncsecret_api::shard::{self, Ownership, Shard};
use syncsecret_runtime::cache;
use syncsecret_runtime::cache::recent::RecentWrites;
use syncsecret_runtime::cache::summary::Summary;
use syncsecret_runtime::metrics::ControllerMetrics;
use syncsecret_runtime::metrics::gauges;
use syncsecret_runtime::reconcile::backoff::Backoffs;
use syncsecret_runtime::reconcile::events::Events;
use syncsecret_runtime::reconcile::writer::Writer;
use syncsecret_runtime::reconcile::{Scoped, sweep_periodically};
use syncsecret_runtime::report;
use syncsecret_runtime::serve::client;
use syncsecret_runtime::serve::health::store_synced;
use syncsecret_runtime::serve::leader::RETRY_PERIOD;
use syncsecret_runtime::serve::runner::{Leading, Plumbing};
use syncsecret_runtime::serve::shards::ShardLeases;
use syncsecret_runtime::serve::shutdown::Shutdown;

pub use error::{Error, StartError};
pub use flags::Flags;

/// Name of the Lease (in `--namespace`) that elects the active replica.
pub const LEASE_NAME: &str = "syncsecret-manager";
/// Metric name prefix, as KubeLB's manager.
pub const METRICS_PREFIX: &str = "kubelb_manager";

/// What every reconcile needs.
pub struct Context {
    /// Client of the management cluster.
    pub client: Client,
    /// Secrets we made (they carry the origin labels), as last seen
    /// (summaries, compared with what would be written).
    pub secrets: Store<Summary<Secret>>,
    /// Copies, as last seen (summaries too: the one written from is needed
    /// whole when its Secret is written).
    pub copies: Store<Summary<SyncSecret>>,
    /// Copies the watch just delivered, whole: the one written from is
    /// taken from here when it is the cached version.
    pub delivered: cache::Delivered<SyncSecret>,
    /// Namespaces starting with this are tenant namespaces.
    pub tenant_namespace_prefix: String,
    /// What the management cluster accepts from a tenant.
    pub policy: Policy,
    /// Certificate gauges.
    pub certificates: certs::Certificates,
    /// Writes whose stored content differed.
    pub verify_failures: verify::VerifyFailures,
    /// How close to notAfter a certificate counts as expiring, in seconds.
    pub expiry_window_secs: i64,
    /// Copies (UID) whose Secret was replaced, and for which generation: a
    /// second replacement for the same generation is a loop and is refused.
    pub replaced: std::sync::Mutex<HashMap<String, i64>>,
    /// One lock per tenant namespace, held while a budget is counted and a
    /// new Secret written, so that concurrent reconciles cannot overrun it.
    pub budget_locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Reconcile and write counters.
    pub metrics: ControllerMetrics,
    /// What the manager may still write for each tenant before it paces it.
    pub budgets: Arc<budget::WriteBudgets>,
    /// Events on copies.
    pub events: Events,
    /// Retry delays of failing objects.
    pub backoffs: Backoffs,
    /// Our writes of copies (finalizer, status) not yet cached.
    pub recent_copies: RecentWrites,
    /// Our writes of Secrets not yet cached.
    pub recent_secrets: RecentWrites,
}

impl Context {
    /// Writes copies (their status) in `namespace`.
    pub fn copy_writer(&self, namespace: &str) -> Writer<'_, Summary<SyncSecret>> {
        let api = Api::namespaced(self.client.clone(), namespace);
        Writer::new(api, "syncsecrets", &self.metrics).remembering(Some(&self.recent_copies))
    }

    /// Writes Secrets in `namespace`; those the Secrets' cache holds (with
    /// the origin label: `cached`) are remembered until it shows them.
    pub fn secret_writer(&self, namespace: &str, cached: bool) -> Writer<'_, Secret> {
        let api = Api::namespaced(self.client.clone(), namespace);
        let recent = cached.then_some(&self.recent_secrets);
        Writer::new(api, "secrets", &self.metrics).remembering(recent)
    }
}

/// Touches no cluster until flags, listen addresses and kubeconfig are
/// known good; then runs until SIGTERM.
pub async fn run(flags: Flags, registry: Registry) -> Result<(), StartError> {
    syncsecret_api::contract::check_tenant_prefix(&flags.tenant_namespace_prefix, &flags.namespace)
        .map_err(|why| StartError::Flag {
            flag: "--tenant-namespace-prefix",
            why,
        })?;
    let shard = flags.shard()?;
    let plumbing = Plumbing::new(&flags, METRICS_PREFIX, registry).await?;
    let client =
        client::from_flag_or_environment(flags.kubeconfig.as_deref(), "kubeconfig").await?;
    let lease = plumbing
        .lease(
            flags.common.enable_leader_election,
            flags.kubeconfig.as_deref(),
            &flags.namespace,
            &shard::lease_name(LEASE_NAME, shard),
        )
        .await?
        .map(|l| l.ordered_after_peers(LEASE_NAME));
    // Every manager that holds a Lease reads the others', an unsharded one
    // too: it may meet shards of another count while the count changes.
    let shards = lease.as_ref().map(|l| {
        ShardLeases::new(
            client.clone(),
            &flags.namespace,
            LEASE_NAME,
            shard,
            l.identity(),
        )
    });
    // After its API server comes back (a restart, an outage, RBAC not
    // loaded yet), every copy is reconciled at once.
    let (reachability, _probe) = plumbing.reachability(METRICS_PREFIX, {
        let client = client.clone();
        move || Api::all(client.clone())
    })?;
    gauges::register_shard(
        METRICS_PREFIX,
        shard.index,
        shard.count,
        plumbing.health.clone(),
        plumbing.registry(),
    )
    .map_err(syncsecret_runtime::RuntimeError::from)?;
    tracing::info!(prefix = %flags.tenant_namespace_prefix, %shard, "starting");
    let setup = Setup {
        client,
        shard,
        shards,
        prefix: flags.tenant_namespace_prefix.clone(),
        policy: flags.policy(),
        certificates: certs::Certificates::register(METRICS_PREFIX, plumbing.registry())
            .map_err(syncsecret_runtime::RuntimeError::from)?,
        verify_failures: verify::VerifyFailures::register(METRICS_PREFIX, plumbing.registry())
            .map_err(syncsecret_runtime::RuntimeError::from)?,
        expiry_window_secs: i64::from(flags.certificate_expiry_window_days) * 86_400,
        budgets: Arc::new(
            budget::WriteBudgets::register(
                flags.tenant_write_bytes_per_minute,
                flags.tenant_write_burst_bytes_per_copy,
                METRICS_PREFIX,
                plumbing.registry(),
            )
            .map_err(syncsecret_runtime::RuntimeError::from)?,
        ),
        pause: (!flags.write_pause_config_map.is_empty()).then(|| {
            (
                flags.namespace.clone(),
                flags.write_pause_config_map.clone(),
            )
        }),
        common: plumbing.leading(&flags.common, reachability),
    };
    plumbing
        .run_leading(lease, setup, |setup, shutdown| async move {
            setup.controllers_following_shards(shutdown).await;
        })
        .await?;
    tracing::info!("stopped");
    Ok(())
}

struct Setup {
    client: Client,
    shard: Shard,
    /// The shard Leases, when this manager holds one.
    shards: Option<ShardLeases>,
    prefix: String,
    policy: Policy,
    certificates: certs::Certificates,
    verify_failures: verify::VerifyFailures,
    expiry_window_secs: i64,
    /// Kept across restarts of the controllers: a new leader term does not
    /// give a tenant a fresh budget.
    budgets: Arc<budget::WriteBudgets>,
    /// The pause policy's params (namespace, name) this manager keeps;
    /// `None`: tenants over budget are paced, never refused.
    pause: Option<(String, String)>,
    common: Leading,
}

impl Setup {
    /// The controller for the namespaces this shard acts on, started anew
    /// (caches relisted; a restart costs no writes) each time that changes
    /// (a shard of another count came or went), until it drains after
    /// SIGTERM.
    async fn controllers_following_shards(&self, shutdown: Shutdown) {
        let alone = Ownership {
            shard: self.shard,
            yields_to: Vec::new(),
        };
        let Some(shards) = &self.shards else {
            return self.controller(alone, shutdown).await;
        };
        let mut ownership = loop {
            match shards.ownership().await {
                Ok(o) => break o,
                // An unsharded manager whose Role predates shards (a new
                // image on old RBAC): no shard can run beside it without
                // that Role either, so it acts on everything, as before.
                Err(e) if self.shard == Shard::ALL && forbidden(&e) => {
                    tracing::warn!(error = %report(&e), "cannot list the Leases in this namespace; acting on every tenant namespace, unaware of shards (grant list on leases: upgrade the chart, or config/rbac/manager.yaml)");
                    return self.controller(alone, shutdown).await;
                }
                Err(e) => {
                    tracing::warn!(error = %report(&e), "cannot read the shard Leases; retrying")
                }
            }
            tokio::select! {
                () = shutdown.clone().requested() => return,
                () = tokio::time::sleep(RETRY_PERIOD) => {}
            }
        };
        loop {
            let yields_to: Vec<String> = ownership
                .yields_to
                .iter()
                .map(ToString::to_string)
                .collect();
            tracing::info!(shard = %self.shard, yields_to = %yields_to.join(", "), "acting on this shard's tenant namespaces");
            let controller = self.controller(ownership.clone(), shutdown.clone());
            tokio::pin!(controller);
            ownership = loop {
                tokio::select! {
                    () = &mut controller => return,
                    next = shards.changed(&ownership, &self.common.health), if !shutdown.is_requested() => {
                        if shutdown.is_requested() {
                            // Draining: a new view no longer matters.
                            continue;
                        }
                        break next;
                    }
                }
            };
            // Dropped mid-reconcile, as on a lost lease: every reconcile
            // is idempotent and starts from the caches.
            self.common.health.set_ready(false);
        }
    }

    async fn controller(&self, ownership: Ownership, shutdown: Shutdown) {
        // A shard caches (and so reconciles and sweeps) only the
        // namespaces it acts on.
        let namespaces = (ownership != Ownership::all())
            .then(|| Arc::new(move |ns: &str| ownership.acts_on(ns)) as cache::KeyFilter);
        let copies: Api<Summary<SyncSecret>> = Api::all(self.client.clone());
        // Only Secrets we made are listed and cached (label selector); a
        // change to one reconciles its owner, so drift is repaired at once.
        let (secrets, writer) = reflector::store();
        let recent_secrets = RecentWrites::default();
        let recent_copies = RecentWrites::default();
        let secret_events = cache::watch(
            Api::<Summary<Secret>>::all(self.client.clone()),
            watcher::Config::default().labels(LABEL_ORIGIN_NAME),
            writer,
            Some(FIELD_MANAGER_MANAGER),
            cache::Kept {
                namespaces: namespaces.clone(),
                ..cache::Kept::default()
            },
            recent_secrets.clone(),
            "secrets",
        )
        .touched_objects();
        // Copies are never applied by the manager: none of their
        // managedFields is kept.
        let (copies_store, copies_writer) = reflector::store();
        // What the tenant writes over its copies is charged to its budget
        // as the watch shows it; it is paused (refused by the API server)
        // once the budget is down to its reserve.
        let pauser = self.pause.as_ref().map(|(namespace, name)| {
            Scoped::spawn(
                pause::Pauser::new(
                    self.client.clone(),
                    namespace,
                    name,
                    self.shard,
                    self.budgets.clone(),
                    namespaces.clone(),
                    self.common.metrics.clone(),
                )
                .run(),
            )
        });
        let theirs = {
            let budgets = self.budgets.clone();
            Arc::new(move |copy: &Summary<SyncSecret>| {
                let namespace = copy.metadata.namespace.as_deref().unwrap_or_default();
                budgets.charge(namespace, budget::copy_bytes(copy));
            }) as cache::Theirs<SyncSecret>
        };
        let delivered = cache::Delivered::new();
        let copy_events = cache::watch(
            copies,
            watcher::Config::default(),
            copies_writer,
            None,
            // Of what a tenant put in a copy's metadata, only what the
            // policy lets through is held: memory bounded by the policy.
            cache::Kept {
                keys: Some({
                    let policy = self.policy.clone();
                    Arc::new(move |k: &str| policy.caches_key(k)) as cache::KeyFilter
                }),
                namespaces,
                delivered: Some(delivered.clone()),
                theirs: Some(theirs),
            },
            recent_copies.clone(),
            "copies",
        )
        .applied_objects();
        let controller = Controller::for_stream(copy_events, copies_store.clone())
            .with_config(
                kube::runtime::controller::Config::default().concurrency(self.common.concurrency),
            )
            .reconcile_on(cache::triggers(secret_events, |s: &Summary<Secret>| {
                cache::owners::<Summary<SyncSecret>>(s)
            }))
            .reconcile_all_on(self.common.reachability.recoveries())
            .graceful_shutdown_on(shutdown.requested());
        if let Err(e) = gauges::register_phases(
            METRICS_PREFIX,
            "Copies in tenant namespaces",
            copies_store.clone(),
            &self.common.registry,
        ) {
            tracing::warn!(error = %e, "cannot export the phase gauge");
        }
        if let Err(e) = gauges::register_undecodable(
            METRICS_PREFIX,
            "management",
            copies_store.clone(),
            &self.common.registry,
        ) {
            tracing::warn!(error = %e, "cannot export the undecodable-objects gauge");
        }
        let ctx = Arc::new(Context {
            client: self.client.clone(),
            secrets: secrets.clone(),
            copies: copies_store.clone(),
            tenant_namespace_prefix: self.prefix.clone(),
            policy: self.policy.clone(),
            certificates: self.certificates.clone(),
            verify_failures: self.verify_failures.clone(),
            expiry_window_secs: self.expiry_window_secs,
            replaced: std::sync::Mutex::default(),
            budget_locks: std::sync::Mutex::default(),
            metrics: self.common.metrics.clone(),
            budgets: self.budgets.clone(),
            events: Events::new(
                self.client.clone(),
                "syncsecret-manager",
                &self.common.identity,
                self.common.metrics.clone(),
            ),
            backoffs: Backoffs::default(),
            recent_copies,
            delivered,
            recent_secrets,
        });
        let health = self.common.health.clone();
        let sweeper = {
            let ctx = ctx.clone();
            let (copies, secrets) = (copies_store.clone(), secrets.clone());
            Scoped::spawn(sweep_periodically(
                async move { store_synced(&copies).await && store_synced(&secrets).await },
                self.common.sweep_period,
                move || sweep::orphans(ctx.clone()),
            ))
        };
        let readiness = Scoped::spawn(async move {
            if store_synced(&copies_store).await && store_synced(&secrets).await {
                tracing::info!("watches synced; ready");
                health.set_ready(true);
            }
        });
        controller
            .run(reconcile::reconcile, reconcile::error_policy, ctx)
            .for_each(|_| async {})
            .await;
        drop((readiness, sweeper, pauser));
    }
}

/// Whether the API server refused the list of shard Leases with 403.
fn forbidden(e: &syncsecret_runtime::RuntimeError) -> bool {
    matches!(
        e,
        syncsecret_runtime::RuntimeError::ShardLeases { source, .. }
            if syncsecret_runtime::status_code(source) == Some(403)
    )
}
