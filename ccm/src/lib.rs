//! syncsecret-ccm: runs in a tenant cluster. It watches SyncSecrets in every
//! namespace, puts the `kubelb.k8c.io/cleanup` finalizer on them, and keeps a
//! copy of each in the tenant's namespace of the management cluster, named by
//! the tenant object's UID. On deletion it deletes the copy, waits until the
//! management cluster has really removed it, and only then releases the
//! finalizer. With `--enable-secret-synchronizer` it also turns Secrets
//! labelled `kubelb.k8c.io/managed-by=kubelb` into SyncSecrets.

mod asked;
pub mod error;
pub mod flags;
mod reconcile;
mod sweep;
mod synchronizer;

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use prometheus::Registry;
use syncsecret_api::SyncSecret;
use syncsecret_api::contract::{
    FIELD_MANAGER_CCM, LABEL_MANAGED_BY, LABEL_ORIGIN_NAME, MANAGED_BY_KUBELB,
    tenant_namespace_with,
};
use syncsecret_runtime::cache;
use syncsecret_runtime::cache::recent::{self, Cached, RecentWrites};
use syncsecret_runtime::cache::summary::Summary;
use syncsecret_runtime::metrics::ControllerMetrics;
use syncsecret_runtime::metrics::gauges;
use syncsecret_runtime::reconcile::backoff::{Backoffs, WatchBackoff};
use syncsecret_runtime::reconcile::events::Events;
use syncsecret_runtime::reconcile::writer::Writer;
use syncsecret_runtime::reconcile::{Outcome, Scoped, sweep_periodically};
use syncsecret_runtime::report;
use syncsecret_runtime::serve::client;
use syncsecret_runtime::serve::health::{Health, store_synced};
use syncsecret_runtime::serve::runner::{Leading, Plumbing};
use syncsecret_runtime::serve::shutdown::Shutdown;

use crate::asked::Asked;

pub use error::{Error, StartError};
pub use flags::Flags;

/// Name of the Lease (in the tenant cluster) that elects the active replica.
pub const LEASE_NAME: &str = "syncsecret-ccm";
/// Metric name prefix, as KubeLB's ccm.
pub const METRICS_PREFIX: &str = "kubelb_ccm";

/// What every reconcile needs.
pub struct Context {
    /// Client of the tenant cluster.
    pub tenant: Client,
    /// Client of the management cluster, as the identity of
    /// `--kubelb-kubeconfig`.
    pub management: Client,
    /// The tenant's namespace in the management cluster.
    pub tenant_namespace: String,
    /// This tenant cluster's identity: its kube-system namespace's UID,
    /// stamped on every copy (`kubelb.k8c.io/origin-cluster`).
    pub cluster_id: String,
    /// Probe state, for the note of a cluster-name conflict.
    pub health: Arc<Health>,
    /// Whether a cluster-name conflict has been told by an event.
    pub conflict_told: std::sync::atomic::AtomicBool,
    /// While another cluster claims this cluster's name: what every tenant
    /// object's `ClusterNameConflict` condition says. A change reconciles
    /// them all.
    pub conflict: tokio::sync::watch::Sender<Option<String>>,
    /// Whether a sweep has judged the conflict since start; until then each
    /// object keeps the condition it shows (no flapping at a restart).
    pub conflict_judged: std::sync::atomic::AtomicBool,
    /// Copies in that namespace, as the watch last saw them (summaries,
    /// compared with what would be written).
    pub copies: Store<Summary<SyncSecret>>,
    /// Tenant SyncSecrets, as the watch last saw them (summaries too: the
    /// one written from is needed whole when its copy is written).
    pub tenant_objects: Store<Summary<SyncSecret>>,
    /// Tenant SyncSecrets the watch just delivered, whole: the one written
    /// from is taken from here when it is the cached version.
    pub delivered: cache::Delivered<SyncSecret>,
    /// Reconcile and write counters.
    pub metrics: ControllerMetrics,
    /// Events on tenant objects.
    pub events: Events,
    /// Retry delays of failing objects.
    pub backoffs: Backoffs,
    /// Our writes of tenant objects (finalizer, status) not yet cached.
    pub recent_tenant: RecentWrites,
    /// Our writes of copies not yet cached.
    pub recent_copies: RecentWrites,
    /// Tenant objects (by UID) whose long wait for their copy's deletion
    /// has been announced with an event.
    pub announced_waits: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Copies written and not yet answered by the manager, and when it
    /// last answered one: what decides whether a new object is `Pending`.
    pub asked: Arc<std::sync::Mutex<Asked>>,
}

impl Context {
    /// Writes copies in the tenant's management namespace.
    pub fn copy_writer(&self) -> Writer<'_, Summary<SyncSecret>> {
        let api = Api::namespaced(self.management.clone(), &self.tenant_namespace);
        Writer::new(api, "syncsecrets", &self.metrics).remembering(Some(&self.recent_copies))
    }

    /// Writes tenant SyncSecrets in `namespace` (theirs and the
    /// synchronizer's).
    pub fn tenant_writer(&self, namespace: &str) -> Writer<'_, Summary<SyncSecret>> {
        let api = Api::namespaced(self.tenant.clone(), namespace);
        Writer::new(api, "syncsecrets", &self.metrics).remembering(Some(&self.recent_tenant))
    }

    /// Whether this is the first time `obj`'s wait is announced (and
    /// remembers that it now is).
    pub fn first_wait(&self, obj: &Summary<SyncSecret>) -> bool {
        let uid = obj.uid().unwrap_or_default();
        self.announced_waits
            .lock()
            .map(|mut a| a.insert(uid))
            .unwrap_or(true)
    }

    /// What the copies cache says of the copy named `copy`, waiting for
    /// its first list if need be ([`RecentWrites::lookup_listed`]).
    pub async fn lookup_copy(&self, copy: &str) -> Cached<Summary<SyncSecret>> {
        let key = ObjectRef::new(copy).within(&self.tenant_namespace);
        self.recent_copies
            .lookup_listed(&self.copies, &key, recent::LIST_WAIT)
            .await
    }

    /// Forgets `obj`'s wait (its copy is gone).
    pub fn forget_wait(&self, obj: &Summary<SyncSecret>) {
        if let Ok(mut a) = self.announced_waits.lock() {
            a.remove(&obj.uid().unwrap_or_default());
        }
    }
}

/// Touches no cluster until flags, listen addresses and kubeconfigs are
/// known good; then runs until SIGTERM.
pub async fn run(flags: Flags, registry: Registry) -> Result<(), StartError> {
    if flags.check_management_access {
        return check_management_access(&flags).await;
    }
    let plumbing = Plumbing::new(&flags, METRICS_PREFIX, registry).await?;
    // Re-read while running: a rotated identity takes effect without a
    // restart (the controllers restart in-process with it).
    let management = client::Reloading::from_file(&flags.kubelb_kubeconfig).await?;
    let tenant =
        client::from_flag_or_environment(flags.kubeconfig.as_deref(), "kubeconfig").await?;

    let lease = plumbing
        .lease(
            flags.common.enable_leader_election,
            flags.kubeconfig.as_deref(),
            &flags.leader_election_namespace,
            LEASE_NAME,
        )
        .await?;
    let tenant_namespace =
        tenant_namespace_with(&flags.tenant_namespace_prefix, &flags.cluster_name);
    let (reachability, _probe) = plumbing.reachability(METRICS_PREFIX, {
        let (management, tenant_namespace) = (management.clone(), tenant_namespace.clone());
        move || Api::namespaced(management.current(), &tenant_namespace)
    })?;
    tracing::info!(%tenant_namespace, synchronizer = flags.enable_secret_synchronizer, "starting");
    let setup = Setup {
        tenant,
        management,
        tenant_namespace,
        synchronizer: flags.enable_secret_synchronizer,
        asked: Arc::new(std::sync::Mutex::new(Asked::new(
            std::time::Duration::from_secs(flags.pending_timeout_seconds),
            std::time::Instant::now(),
        ))),
        common: plumbing.leading(&flags.common, reachability),
    };
    plumbing
        .run_leading(lease, setup, |setup, shutdown| async move {
            setup.controllers_until_rotated(shutdown).await;
        })
        .await?;
    tracing::info!("stopped");
    Ok(())
}

/// `--check-management-access`: one list of at most one SyncSecret in the
/// tenant namespace, as the management identity.
async fn check_management_access(flags: &Flags) -> Result<(), StartError> {
    let management = client::from_file(&flags.kubelb_kubeconfig).await?;
    let namespace = tenant_namespace_with(&flags.tenant_namespace_prefix, &flags.cluster_name);
    let api: Api<SyncSecret> = Api::namespaced(management, &namespace);
    api.list_metadata(&kube::api::ListParams::default().limit(1))
        .await
        .map_err(|source| StartError::ManagementAccess {
            namespace: namespace.clone(),
            source,
        })?;
    println!(
        "ok: the identity of {} may list SyncSecrets in namespace {namespace} of the management cluster",
        flags.kubelb_kubeconfig.display()
    );
    Ok(())
}

/// Everything the controllers are built from once this replica leads.
struct Setup {
    tenant: Client,
    management: client::Reloading,
    tenant_namespace: String,
    synchronizer: bool,
    /// What this process asked of the manager: kept when the controllers
    /// restart with rotated credentials (it says what the manager does,
    /// not what these credentials may).
    asked: Arc<std::sync::Mutex<Asked>>,
    common: Leading,
}

impl Setup {
    /// The controllers with the management credentials of the moment,
    /// started anew (caches relisted; a restart costs no writes) each time
    /// the `--kubelb-kubeconfig` file is replaced, until they drain after
    /// SIGTERM.
    async fn controllers_until_rotated(&self, shutdown: Shutdown) {
        let mut rotations = self.management.subscribe();
        loop {
            let management = rotations.borrow_and_update().clone();
            tokio::select! {
                () = self.controllers(management, shutdown.clone()) => return,
                Ok(()) = rotations.changed() => {
                    // Dropped mid-reconcile, as on a lost lease: every
                    // reconcile is idempotent and starts from the caches.
                    self.common.health.set_ready(false);
                    tracing::info!("management credentials replaced; controllers restarted with them");
                }
            }
        }
    }

    /// This tenant cluster's identity, asked until the tenant API server
    /// answers (or shutdown is asked for): `None` then.
    async fn cluster_id(&self, shutdown: &Shutdown) -> Option<String> {
        let namespaces: Api<Namespace> = Api::all(self.tenant.clone());
        let mut told = false;
        loop {
            match namespaces.get("kube-system").await {
                Ok(ns) => return Some(ns.uid().unwrap_or_default()),
                Err(e) if !told => {
                    told = true;
                    tracing::warn!(
                        "{}; retrying",
                        syncsecret_runtime::report(&StartError::ClusterIdentity(e))
                    );
                }
                Err(_) => {}
            }
            tokio::select! {
                () = shutdown.clone().requested() => return None,
                () = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
            }
        }
    }

    async fn controllers(&self, management: Client, shutdown: Shutdown) {
        let Some(cluster_id) = self.cluster_id(&shutdown).await else {
            return;
        };
        let tenant_api: Api<Summary<SyncSecret>> = Api::all(self.tenant.clone());
        let copies_api: Api<Summary<SyncSecret>> =
            Api::namespaced(management.clone(), &self.tenant_namespace);

        // Copies we made (they carry the origin labels), cached, and mapped
        // back to their tenant object so that a change or deletion in the
        // management cluster reconciles it.
        let (copies, copies_writer) = reflector::store();
        let recent_copies = RecentWrites::default();
        let recent_tenant = RecentWrites::default();
        let copy_events = cache::watch(
            copies_api,
            watcher::Config::default().labels(LABEL_ORIGIN_NAME),
            copies_writer,
            Some(FIELD_MANAGER_CCM),
            cache::Kept::default(),
            recent_copies.clone(),
            "copies",
        )
        .touched_objects();

        // Tenant objects, cached slim too (the synchronizer compares our
        // applied metadata on them).
        let (tenant_objects, tenant_writer) = reflector::store();
        let delivered = cache::Delivered::new();
        // The synchronizer learns of SyncSecrets from this one watch, once
        // the cache holds what it learns: a second watch of them would list
        // them all again at each start, decode each event twice and could
        // trigger it before this cache showed the change. Only those named
        // as a labelled Secret it holds are passed on (it reconciles no
        // other; one not yet held is reconciled when its Secret's event
        // comes, but not after a relist of that watch: docs/failure-modes.md),
        // so a start does not queue every SyncSecret for it.
        let labelled_secrets = self.synchronizer.then(reflector::store::<Secret>);
        let (to_synchronizer, synchronizer_triggers) = futures::channel::mpsc::unbounded();
        let to_synchronizer = labelled_secrets
            .as_ref()
            .map(|(store, _)| (to_synchronizer, store.clone()));
        let tenant_events = cache::watch(
            tenant_api,
            watcher::Config::default(),
            tenant_writer,
            Some(FIELD_MANAGER_CCM),
            cache::Kept {
                delivered: Some(delivered.clone()),
                ..cache::Kept::default()
            },
            recent_tenant.clone(),
            "tenant syncsecrets",
        )
        .inspect_ok(move |event| {
            // (A list's objects come as `Apply` once it is cached; the
            // others would do too.)
            let (
                Some((to, labelled)),
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) | watcher::Event::Delete(o),
            ) = (&to_synchronizer, event)
            else {
                return;
            };
            let Some(namespace) = o.namespace() else {
                return;
            };
            let secret = ObjectRef::new(&o.name_any()).within(&namespace);
            if labelled.get(&secret).is_some() {
                // Closed only when the synchronizer has stopped.
                let _ = to.unbounded_send(secret);
            }
        })
        .applied_objects();

        let (conflict, _) = tokio::sync::watch::channel(None);
        let conflict_changes = futures::stream::unfold(conflict.subscribe(), |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        });
        let config =
            kube::runtime::controller::Config::default().concurrency(self.common.concurrency);
        let controller = Controller::for_stream(tenant_events, tenant_objects.clone())
            .with_config(config.clone())
            .reconcile_on(cache::triggers(copy_events, origin_of))
            // Back from a management outage: everything at once, not when
            // each object's backoff runs out.
            .reconcile_all_on(self.common.reachability.recoveries())
            // A cluster-name conflict found or gone: every status says so.
            .reconcile_all_on(conflict_changes)
            .graceful_shutdown_on(shutdown.clone().requested());
        if let Err(e) = gauges::register_phases(
            METRICS_PREFIX,
            "Tenant SyncSecrets",
            tenant_objects.clone(),
            &self.common.registry,
        ) {
            tracing::warn!(error = %e, "cannot export the phase gauge");
        }
        if let Err(e) = gauges::register_foreign_copies(
            METRICS_PREFIX,
            copies.clone(),
            cluster_id.clone(),
            &self.common.registry,
        ) {
            tracing::warn!(error = %e, "cannot export the cluster-name conflict gauge");
        }
        for (cluster, store) in [("tenant", &tenant_objects), ("management", &copies)] {
            if let Err(e) = gauges::register_undecodable(
                METRICS_PREFIX,
                cluster,
                store.clone(),
                &self.common.registry,
            ) {
                tracing::warn!(error = %e, "cannot export the undecodable-objects gauge");
            }
        }

        let ctx = Arc::new(Context {
            tenant: self.tenant.clone(),
            management,
            tenant_namespace: self.tenant_namespace.clone(),
            cluster_id,
            health: self.common.health.clone(),
            conflict_told: std::sync::atomic::AtomicBool::new(false),
            conflict,
            conflict_judged: std::sync::atomic::AtomicBool::new(false),
            copies: copies.clone(),
            tenant_objects: tenant_objects.clone(),
            metrics: self.common.metrics.clone(),
            events: Events::new(
                self.tenant.clone(),
                "syncsecret-ccm",
                &self.common.identity,
                self.common.metrics.clone(),
            ),
            backoffs: Backoffs::default(),
            recent_tenant,
            recent_copies,
            delivered,
            announced_waits: std::sync::Mutex::default(),
            asked: self.asked.clone(),
        });
        ctx.controllers_started();

        let health = self.common.health.clone();
        let mut secrets_store = None;
        let mut synchronizer = None;
        let mut releases = None;
        if let Some((store, writer)) = labelled_secrets {
            let secrets: Api<Secret> = Api::all(self.tenant.clone());
            let selector = format!("{LABEL_MANAGED_BY}={MANAGED_BY_KUBELB}");
            // The labelled Secrets' watch, built here rather than by the
            // controller, so that a Secret that leaves it (its label taken
            // off: the API server tells that as a deletion) is released.
            let (left, mut gone) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
            let labelled = cache::initial_lists_streamed(
                secrets,
                watcher::Config::default().labels(&selector),
                "labelled secrets",
            )
            .backoff(WatchBackoff::default())
            .reflect(writer)
            .inspect_ok(move |event| {
                if let watcher::Event::Delete(s) = event {
                    let _ = left.send((s.namespace().unwrap_or_default(), s.name_any()));
                }
            })
            .applied_objects();
            // Each SyncSecret's change or deletion reconciles the Secret of
            // its name, if there is a labelled one.
            let c = Controller::for_stream(labelled, store.clone())
                .with_config(config)
                .reconcile_on(synchronizer_triggers)
                .graceful_shutdown_on(shutdown.clone().requested());
            secrets_store = Some(store);
            let release_ctx = ctx.clone();
            releases = Some(Scoped::spawn(async move {
                while let Some((namespace, name)) = gone.recv().await {
                    if let Err(e) = synchronizer::release(&release_ctx, &namespace, &name).await {
                        tracing::warn!(%namespace, %name, reason = e.category(), "{}; the next sweep tries again", report(&e));
                    }
                }
            }));
            synchronizer = Some(
                c.run(
                    synchronizer::reconcile,
                    synchronizer::error_policy,
                    ctx.clone(),
                )
                .for_each(|_| async {}),
            );
        }

        // Ready once every watch has listed: both clusters, and the
        // labelled Secrets when the synchronizer runs.
        let sweeper = {
            let ctx = ctx.clone();
            let (tenant_objects, copies) = (tenant_objects.clone(), copies.clone());
            let (labelled, listed) = (secrets_store.clone(), secrets_store.clone());
            Scoped::spawn(sweep_periodically(
                async move {
                    store_synced(&tenant_objects).await
                        && store_synced(&copies).await
                        && match &listed {
                            Some(s) => store_synced(s).await,
                            None => true,
                        }
                },
                self.common.sweep_period,
                move || sweep::orphans(ctx.clone(), labelled.clone()),
            ))
        };
        let readiness = Scoped::spawn(async move {
            let mut synced = store_synced(&tenant_objects).await && store_synced(&copies).await;
            if let Some(s) = secrets_store {
                synced = synced && store_synced(&s).await;
            }
            if synced {
                tracing::info!("watches synced; ready");
                health.set_ready(true);
            }
        });

        let main = controller
            .run(reconcile::reconcile, reconcile::error_policy, ctx)
            .for_each(|_| async {});
        match synchronizer {
            Some(s) => {
                futures::join!(main, s);
            }
            None => main.await,
        }
        drop((readiness, sweeper, releases));
    }
}

/// The tenant object a copy was made from, from its origin labels.
fn origin_of(copy: &Summary<SyncSecret>) -> Option<ObjectRef<Summary<SyncSecret>>> {
    let (namespace, name) = syncsecret_api::sweep::origin(copy)?;
    Some(ObjectRef::new(&name).within(&namespace))
}
