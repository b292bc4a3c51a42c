//! How both binaries run: admin server first, then (optionally) the leader
//! lease, then the controllers until SIGTERM, all in one place.

use std::future::Future;
use std::sync::Arc;

use super::RuntimeError;
use super::admin::{AdminState, Listeners};
use super::health::Health;
use super::leader::LeaderLease;
use super::shutdown::Shutdown;

/// Runs `controllers` (given the shutdown handle to drain on) with the admin
/// server up the whole time. With a lease, the controllers start only once
/// this replica leads, and the process stops with an error if leadership is
/// lost. Returns when the controllers have drained after SIGTERM.
pub async fn run<F, Fut>(
    listeners: Listeners,
    admin: AdminState,
    lease: Option<LeaderLease>,
    controllers: F,
) -> Result<(), RuntimeError>
where
    F: FnOnce(Shutdown) -> Fut,
    Fut: Future<Output = ()>,
{
    let health: Arc<Health> = admin.health.clone();
    let server = listeners.spawn(admin);
    let shutdown = Shutdown::on_signal();
    let result = run_inner(&health, lease.as_ref(), shutdown, controllers).await;
    if let Some(lease) = &lease
        && result.is_ok()
    {
        lease.release().await;
    }
    server.abort();
    result
}

async fn run_inner<F, Fut>(
    health: &Health,
    lease: Option<&LeaderLease>,
    shutdown: Shutdown,
    controllers: F,
) -> Result<(), RuntimeError>
where
    F: FnOnce(Shutdown) -> Fut,
    Fut: Future<Output = ()>,
{
    if let Some(lease) = lease {
        // A standby replica is healthy and ready: it is ready to take over.
        health.set_ready(true);
        tokio::select! {
            () = lease.acquire() => {},
            () = shutdown.clone().requested() => return Ok(()),
        }
        // Leading: ready again only once the watches have synced.
        health.set_ready(false);
    }
    let work = controllers(shutdown.clone());
    match lease {
        Some(lease) => tokio::select! {
            () = work => {},
            e = lease.keep() => {
                health.fail(e.to_string());
                return Err(e);
            }
        },
        None => work.await,
    }
    if shutdown.is_requested() {
        Ok(())
    } else {
        let e = RuntimeError::ControllerStopped;
        health.fail(e.to_string());
        Err(e)
    }
}

/// A binary's flags, as far as the shared entry point needs them.
pub trait BinaryFlags: clap::Parser {
    /// The chosen log format.
    fn log_format(&self) -> super::logging::LogFormat;
}

/// The body of both `main`s: parse flags (one line and exit 2 on a bad
/// one), set up logging, build the metrics registry, run, and turn the
/// outcome into an exit code with one `error:` line.
pub async fn main<F, E, Fut>(
    run: impl FnOnce(F, prometheus::Registry) -> Fut,
) -> std::process::ExitCode
where
    F: BinaryFlags,
    E: std::fmt::Display,
    Fut: Future<Output = Result<(), E>>,
{
    let flags: F = match super::parse_flags() {
        Ok(f) => f,
        Err(code) => return code,
    };
    if let Err(e) = super::logging::init(flags.log_format()) {
        eprintln!("error: {e}");
        return std::process::ExitCode::FAILURE;
    }
    match run(flags, prometheus::Registry::new()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
