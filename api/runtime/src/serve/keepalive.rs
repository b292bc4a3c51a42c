//! The thread that keeps a replica alive in the eyes of others: the probes
//! and `/metrics` are served, and the leader Lease renewed, on a runtime of
//! their own, on a thread of its own. Nothing the controllers do (decoding
//! a list of large objects, hashing payloads, thousands of reconciles at
//! once) runs there, so none of it can delay a renewal past the renew
//! deadline or a probe past its timeout: a manager listing a tenant's
//! whole quota at the per-copy maximum lost its Lease about every 12 s,
//! restarted its controllers and listed again, for ever.
//!
//! Its API client is its own too, built there: a kube client's connections
//! are driven by tasks of the runtime that built it.

use std::future::Future;

use tokio::sync::{oneshot, watch};

use crate::error::RuntimeError;
use crate::serve::leader::LeaderLease;

/// A handle on the keep-alive thread's runtime. The thread lives as long
/// as the process.
#[derive(Clone, Debug)]
pub struct KeepAlive {
    handle: tokio::runtime::Handle,
}

impl KeepAlive {
    /// Starts the thread and its single-threaded runtime.
    pub fn start() -> Result<Self, RuntimeError> {
        let (sent, handle) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("keepalive".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => {
                        let _ = sent.send(Ok(runtime.handle().clone()));
                        runtime.block_on(std::future::pending::<()>());
                    }
                    Err(e) => {
                        let _ = sent.send(Err(e));
                    }
                }
            })
            .map_err(RuntimeError::KeepAlive)?;
        let handle = handle
            .recv()
            .map_err(|_| RuntimeError::KeepAlive(std::io::Error::other("the thread ended")))?
            .map_err(RuntimeError::KeepAlive)?;
        Ok(Self { handle })
    }

    /// Runs `work` on the keep-alive thread (whatever it builds, a client's
    /// connections included, lives there) and hands its result back.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, RuntimeError> {
        self.handle
            .spawn(work)
            .await
            .map_err(|e| RuntimeError::KeepAlive(std::io::Error::other(e.to_string())))
    }

    /// Spawns `work` on the keep-alive thread.
    pub fn spawn(
        &self,
        work: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        self.handle.spawn(work)
    }

    /// Holds `lease` from the keep-alive thread: takes it when it can,
    /// renews it, and tells each change of leadership through the returned
    /// [`Leadership`]; on [`Leadership::release`] gives it up and stops.
    pub fn hold(&self, lease: LeaderLease) -> Leadership {
        let (tell, leading) = watch::channel(Leading::Starting);
        let (release, released) = oneshot::channel::<oneshot::Sender<()>>();
        // Runs as long as the process: released on shutdown.
        drop(self.spawn(hold(lease, tell, released)));
        Leadership {
            leading,
            release: Some(release),
        }
    }
}

/// Whether this replica leads, as the keep-alive thread last saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leading {
    /// Its first attempt at the Lease has not come back yet.
    Starting,
    /// It holds the Lease.
    Yes,
    /// It does not: another replica does (or the Lease cannot be read).
    No,
    /// It lost the Lease: why.
    Lost(String),
}

/// The controllers' side of a Lease held from the keep-alive thread.
#[derive(Debug)]
pub struct Leadership {
    leading: watch::Receiver<Leading>,
    release: Option<oneshot::Sender<oneshot::Sender<()>>>,
}

impl Leadership {
    /// Waits until this replica leads.
    pub async fn acquired(&self) {
        let _ = self.leading.clone().wait_for(|l| *l == Leading::Yes).await;
    }

    /// Waits until this replica knows it stands by: an attempt at the
    /// Lease found another holder, or it lost the Lease.
    pub async fn standing_by(&self) {
        let _ = self
            .leading
            .clone()
            .wait_for(|l| matches!(l, Leading::No | Leading::Lost(_)))
            .await;
    }

    /// Waits until this replica stops leading; why.
    pub async fn lost(&self) -> String {
        match self.leading.clone().wait_for(|l| *l != Leading::Yes).await {
            Ok(l) => match &*l {
                Leading::Lost(why) => why.clone(),
                _ => "the Lease is no longer held".to_owned(),
            },
            Err(_) => "the keep-alive thread stopped".to_owned(),
        }
    }

    /// Gives the Lease up (on shutdown, so that another replica need not
    /// wait for it to expire) and waits until that is done.
    pub async fn release(&mut self) {
        if let Some(release) = self.release.take() {
            let (done, wait) = oneshot::channel();
            if release.send(done).is_ok() {
                let _ = wait.await;
            }
        }
    }
}

/// The keep-alive thread's loop: acquire, renew until lost, again; give
/// the Lease up when asked.
async fn hold(
    lease: LeaderLease,
    tell: watch::Sender<Leading>,
    mut release: oneshot::Receiver<oneshot::Sender<()>>,
) {
    loop {
        let waiting = || {
            tell.send_if_modified(|l| {
                let changed = *l != Leading::No;
                *l = Leading::No;
                changed
            });
        };
        tokio::select! {
            () = lease.acquire_then(waiting) => {}
            done = &mut release => {
                if let Ok(done) = done {
                    let _ = done.send(());
                }
                return;
            }
        }
        let _ = tell.send(Leading::Yes);
        tokio::select! {
            e = lease.keep() => {
                let _ = tell.send(Leading::Lost(crate::error::report(&e)));
            }
            done = &mut release => {
                lease.release().await;
                let _ = tell.send(Leading::No);
                if let Ok(done) = done {
                    let _ = done.send(());
                }
                return;
            }
        }
    }
}
