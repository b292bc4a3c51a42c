//! How both binaries run: admin server first, then (optionally) the leader
//! lease, then the controllers until SIGTERM, all in one place.

use std::future::Future;
use std::sync::Arc;

use crate::error::RuntimeError;
use crate::reconcile::Scoped;
use crate::serve::admin::{AdminState, Listeners};
use crate::serve::health::Health;
use crate::serve::keepalive::{KeepAlive, Leadership};
use crate::serve::leader::LeaderLease;
use crate::serve::reachable::Reachability;
use crate::serve::shutdown::Shutdown;

async fn run_inner<F, Fut>(
    health: &Health,
    lease: Option<&mut Leadership>,
    shutdown: Shutdown,
    mut controllers: F,
) -> Result<(), RuntimeError>
where
    F: FnMut(Shutdown) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(lease) = lease else {
        health.set_leading(true);
        drained(health, &shutdown, controllers(shutdown.clone())).await;
        health.set_leading(false);
        return stopped(health, &shutdown);
    };
    loop {
        // A standby replica is healthy and ready: it is ready to take over.
        // Not before it knows it stands by: a replica that is about to
        // lead would answer ready, then not ready until its watches sync.
        let standby = async {
            lease.standing_by().await;
            health.set_ready(true);
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = lease.acquired() => {},
            () = standby => {},
            () = shutdown.clone().requested() => return Ok(()),
        }
        // Leading: ready again only once the watches have synced.
        health.set_ready(false);
        health.set_leading(true);
        let work = drained(health, &shutdown, controllers(shutdown.clone()));
        tokio::select! {
            () = work => {
                health.set_leading(false);
                return stopped(health, &shutdown);
            }
            why = lease.lost() => {
                // Not renewed in time (its API server unreachable for longer
                // than the renew deadline, say) or taken by another replica:
                // the controllers stop at once (dropped mid-reconcile, so
                // that no write races a new leader) and this replica waits
                // to lead again, without a restart.
                health.set_leading(false);
                tracing::warn!(
                    "leadership lost ({why}); controllers stopped until this replica leads again"
                );
            }
        }
    }
}

/// Runs `work` until it ends, or until shutdown is requested while the
/// watches never synced: kube-runtime holds a controller's runner until its
/// store has synced, so one whose API server cannot be reached would never
/// finish draining. Not ready means nothing was synced, so nothing to
/// finish: such a replica stops at once.
async fn drained(health: &Health, shutdown: &Shutdown, work: impl Future<Output = ()>) {
    let unsynced = async {
        shutdown.clone().requested().await;
        if health.ready().is_ok() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = work => {},
        () = unsynced => tracing::info!("stopping without a drain: the watches never synced"),
    }
}

/// The outcome once the controllers have returned: fine after SIGTERM,
/// an error (and a failing `/healthz`) otherwise.
fn stopped(health: &Health, shutdown: &Shutdown) -> Result<(), RuntimeError> {
    if shutdown.is_requested() {
        Ok(())
    } else {
        let e = RuntimeError::ControllerStopped;
        health.fail(e.to_string());
        Err(e)
    }
}

/// What every controller is built from once its replica leads, the same in
/// both binaries.
#[derive(Clone)]
pub struct Leading {
    /// The controller's counters.
    pub metrics: crate::metrics::ControllerMetrics,
    /// Probe state.
    pub health: Arc<Health>,
    /// This replica's name (event reporter instance).
    pub identity: String,
    /// `--max-concurrent-reconciles`.
    pub concurrency: u16,
    /// `--orphan-sweep-period`.
    pub sweep_period: std::time::Duration,
    /// The registry, for gauges read from the caches.
    pub registry: prometheus::Registry,
    /// Whether the management cluster answers (its recoveries reconcile
    /// everything at once).
    pub reachability: Reachability,
}

/// A binary's flags, as far as the shared entry point needs them.
pub trait BinaryFlags: clap::Parser {
    /// The flags both binaries share.
    fn common(&self) -> &crate::serve::flags::CommonFlags;
    /// `--metrics-addr` and `--health-probe-bind-address` (their defaults
    /// differ per binary, so each declares them).
    fn listen(&self) -> (&str, &str);
}

/// What a binary sets up before it touches a cluster: listen addresses
/// parsed and bound, metrics registered, probe state, its identity.
pub struct Plumbing {
    listeners: Listeners,
    /// Where the probes are served and the Lease renewed.
    keepalive: KeepAlive,
    admin: AdminState,
    /// The controller's counters.
    pub metrics: crate::metrics::ControllerMetrics,
    /// Probe state, shared with the admin server.
    pub health: Arc<Health>,
    /// This replica's name (Lease holder, event reporter instance).
    pub identity: String,
}

impl Plumbing {
    /// Parses and binds `--metrics-addr` and `--health-probe-bind-address`
    /// (one clear error if either is bad or taken) and registers the
    /// metrics under `prefix`.
    pub async fn new(
        flags: &impl BinaryFlags,
        prefix: &str,
        registry: prometheus::Registry,
    ) -> Result<Self, RuntimeError> {
        let (metrics_addr, probe_addr) = flags.listen();
        let metrics_addr = crate::serve::flags::parse_listen_addr("metrics-addr", metrics_addr)?;
        let probe_addr =
            crate::serve::flags::parse_listen_addr("health-probe-bind-address", probe_addr)?;
        let dry_run = flags.common().dry_run;
        // Bound there: a listener is driven by the runtime that made it.
        let keepalive = KeepAlive::start()?;
        let listeners = keepalive
            .run(Listeners::bind(metrics_addr, probe_addr))
            .await??;
        let mut metrics = crate::metrics::ControllerMetrics::register(prefix, &registry)?;
        if dry_run {
            metrics = metrics.with_dry_run(crate::reconcile::dry_run::DryRun::register(
                prefix, &registry,
            )?);
            tracing::warn!(
                "dry run: nothing will be written; pending writes are logged and counted"
            );
        }
        let health = Arc::new(Health::new());
        crate::metrics::gauges::register_health(prefix, health.clone(), &registry)?;
        crate::metrics::gauges::register_build_info(prefix, &registry)?;
        // CPU seconds, resident memory, open files and start time, as every
        // Prometheus client exports them (process_*).
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            listeners,
            keepalive,
            admin: AdminState {
                registry,
                health: health.clone(),
            },
            metrics,
            health,
            identity: crate::serve::leader::default_identity(),
        })
    }

    /// The registry, for metrics only one binary has.
    pub fn registry(&self) -> &prometheus::Registry {
        &self.admin.registry
    }

    /// Registers `<prefix>_management_reachable` and probes the management
    /// cluster through `api` on every replica, leader or not (the gauge says
    /// what each sees), while the returned handle lives.
    pub fn reachability(
        &self,
        prefix: &str,
        api: impl Fn() -> kube::Api<syncsecret_api::SyncSecret> + Send + Sync + 'static,
    ) -> Result<(Reachability, Scoped), RuntimeError> {
        let reachability = Reachability::register(prefix, "management", self.registry())?
            .reporting_to(self.health.clone());
        let probe = reachability.probe_with(api);
        Ok((reachability, probe))
    }

    /// What the controllers are built from, from the flags both binaries
    /// take.
    pub fn leading(
        &self,
        flags: &crate::serve::flags::CommonFlags,
        reachability: Reachability,
    ) -> Leading {
        Leading {
            metrics: self.metrics.clone(),
            health: self.health.clone(),
            identity: self.identity.clone(),
            concurrency: flags.max_concurrent_reconciles,
            sweep_period: std::time::Duration::from_secs(flags.orphan_sweep_period),
            registry: self.registry().clone(),
            reachability,
        }
    }

    /// [`Plumbing::run`], calling `controllers` with `setup` (shared) each
    /// time this replica leads anew.
    pub async fn run_leading<S, F, Fut>(
        self,
        lease: Option<LeaderLease>,
        setup: S,
        controllers: F,
    ) -> Result<(), RuntimeError>
    where
        F: Fn(Arc<S>, Shutdown) -> Fut,
        Fut: Future<Output = ()>,
    {
        let setup = Arc::new(setup);
        self.run(lease, move |shutdown| controllers(setup.clone(), shutdown))
            .await
    }

    /// The leader Lease `namespace/name` for this replica, if enabled,
    /// with a client of its own (from `kubeconfig`, else the pod's
    /// environment) built on the keep-alive thread, where it is renewed.
    pub async fn lease(
        &self,
        enabled: bool,
        kubeconfig: Option<&std::path::Path>,
        namespace: &str,
        name: &str,
    ) -> Result<Option<LeaderLease>, RuntimeError> {
        // A Lease is a write: a dry run never takes one.
        if !enabled || self.metrics.is_dry_run() {
            return Ok(None);
        }
        let kubeconfig = kubeconfig.map(std::path::Path::to_path_buf);
        let client = self
            .keepalive
            .run(async move {
                crate::serve::client::from_flag_or_environment(kubeconfig.as_deref(), "kubeconfig")
                    .await
            })
            .await??;
        Ok(Some(LeaderLease::new(
            client,
            namespace,
            name,
            self.identity.clone(),
        )))
    }

    /// Runs `controllers` (given the shutdown handle to drain on) with the
    /// admin server up the whole time. With a lease, the controllers start
    /// only once this replica leads; if leadership is lost they are stopped
    /// and started anew (by calling `controllers` again) once it leads
    /// again. Returns when the controllers have drained after SIGTERM.
    pub async fn run<F, Fut>(
        self,
        lease: Option<LeaderLease>,
        controllers: F,
    ) -> Result<(), RuntimeError>
    where
        F: FnMut(Shutdown) -> Fut,
        Fut: Future<Output = ()>,
    {
        let health: Arc<Health> = self.admin.health.clone();
        let (listeners, admin) = (self.listeners, self.admin);
        let server = self.keepalive.spawn(async move {
            let _ = listeners.spawn(admin).await;
        });
        let mut leadership = lease.map(|l| self.keepalive.hold(l));
        let shutdown = Shutdown::on_signal();
        let result = run_inner(&health, leadership.as_mut(), shutdown, controllers).await;
        if let Some(leadership) = &mut leadership
            && result.is_ok()
        {
            leadership.release().await;
        }
        server.abort();
        result
    }
}

/// The body of both `main`s: parse flags (one line and exit 2 on a bad
/// one), set up logging, build the metrics registry, run, and turn the
/// outcome into an exit code with one `error:` line.
pub async fn main<F, E, Fut>(
    run: impl FnOnce(F, prometheus::Registry) -> Fut,
) -> std::process::ExitCode
where
    F: BinaryFlags,
    E: std::error::Error + 'static,
    Fut: Future<Output = Result<(), E>>,
{
    let flags: F = match crate::serve::flags::parse_flags() {
        Ok(f) => f,
        Err(code) => return code,
    };
    let common = flags.common();
    if let Err(e) = crate::serve::logging::init(common.log_format, common.log_level.as_deref()) {
        eprintln!("error: {}", crate::error::report(&e));
        return std::process::ExitCode::FAILURE;
    }
    match run(flags, prometheus::Registry::new()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", crate::error::report(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
