//! SIGTERM and SIGINT as a clonable handle: the signal to stop taking work.

use tokio::sync::watch;

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            // Without a SIGTERM handler only Ctrl-C stops us.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM received: finishing what is in flight"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received: finishing what is in flight"),
    }
}

/// A handle every task can wait on; cheap to clone.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Listens for SIGTERM/SIGINT in a background task.
    pub fn on_signal() -> Self {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            signal().await;
            let _ = tx.send(true);
        });
        Self(rx)
    }

    /// Resolves once shutdown was requested.
    pub async fn requested(mut self) {
        let _ = self.0.wait_for(|v| *v).await;
    }

    /// Whether shutdown was requested already.
    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }
}
