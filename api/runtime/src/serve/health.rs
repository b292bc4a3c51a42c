//! What the probes answer: ready once the watches have synced, unhealthy
//! once a task that must run forever (a watch, the lease) has died.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Shared between the controller and the admin server.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    leading: AtomicBool,
    failed: Mutex<Option<String>>,
    /// What `/readyz` says besides its verdict (e.g. the management
    /// cluster not answering), by topic. Not readiness conditions.
    notes: Mutex<BTreeMap<&'static str, String>>,
}

impl Health {
    /// A new state: not ready, healthy.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the watches as synced (or not).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Marks this replica as leading (or not).
    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::SeqCst);
    }

    /// Whether this replica leads.
    pub fn leading(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    /// Records that a task died; `/healthz` and `/readyz` fail from now on.
    pub fn fail(&self, reason: impl Into<String>) {
        if let Ok(mut f) = self.failed.lock() {
            f.get_or_insert_with(|| reason.into());
        }
    }

    /// `Err(reason)` once a task has died.
    pub fn healthy(&self) -> Result<(), String> {
        match self.failed.lock() {
            Ok(f) => f.clone().map_or(Ok(()), Err),
            Err(_) => Err("health state poisoned".to_owned()),
        }
    }

    /// Sets (or with `None` clears) the note on `topic` that `/readyz`
    /// shows.
    pub fn note(&self, topic: &'static str, note: Option<String>) {
        if let Ok(mut notes) = self.notes.lock() {
            match note {
                Some(n) => notes.insert(topic, n),
                None => notes.remove(topic),
            };
        }
    }

    /// The body of a `/readyz` that answers 200: `ok`, whether this
    /// replica leads, and each note on its own line.
    pub fn ready_text(&self) -> String {
        let role = if self.leading() {
            "leading"
        } else {
            "standby: another replica holds the Lease"
        };
        let mut text = format!("ok ({role})");
        if let Ok(notes) = self.notes.lock() {
            for note in notes.values() {
                text.push_str("\nnote: ");
                text.push_str(note);
            }
        }
        text
    }

    /// `Err(reason)` until ready, or once unhealthy.
    pub fn ready(&self) -> Result<(), String> {
        self.healthy()?;
        if self.ready.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("watches have not synced yet".to_owned())
        }
    }
}

/// Resolves once a reflector store has seen its first full list (true), or
/// its writer is gone (false).
///
/// kube-runtime's `Store::wait_until_ready` sits on a oneshot channel that
/// remembers only the last waiter's waker: when the controller waits on the
/// same store (it does, before it starts reconciling), one of the two may
/// never be woken. Re-polling on a short timer sidesteps that.
pub async fn store_synced<K>(store: &kube::runtime::reflector::Store<K>) -> bool
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store_synced_before(store, None).await.unwrap_or(false)
}

/// [`store_synced`], giving up at `deadline` (`None`: it passed first).
pub async fn store_synced_before<K>(
    store: &kube::runtime::reflector::Store<K>,
    deadline: Option<tokio::time::Instant>,
) -> Option<bool>
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        let next = tokio::time::Instant::now() + std::time::Duration::from_millis(100);
        let until = deadline.map_or(next, |d| d.min(next));
        if let Ok(result) = tokio::time::timeout_at(until, store.wait_until_ready()).await {
            return Some(result.is_ok());
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_probe_can_say_no() {
        let h = Health::new();
        assert!(h.healthy().is_ok());
        assert!(h.ready().is_err());
        h.set_ready(true);
        assert!(h.ready().is_ok());
        h.fail("tenant SyncSecret watch ended");
        assert_eq!(h.healthy().unwrap_err(), "tenant SyncSecret watch ended");
        assert!(h.ready().is_err());
        h.fail("second failure keeps the first reason");
        assert_eq!(h.healthy().unwrap_err(), "tenant SyncSecret watch ended");
    }

    #[test]
    fn readyz_says_the_role_and_every_note() {
        let h = Health::new();
        h.set_leading(true);
        assert_eq!(h.ready_text(), "ok (leading)");
        h.note(
            "management",
            Some("the management cluster does not answer: x".into()),
        );
        assert_eq!(
            h.ready_text(),
            "ok (leading)\nnote: the management cluster does not answer: x"
        );
        h.note("management", None);
        h.set_leading(false);
        assert_eq!(
            h.ready_text(),
            "ok (standby: another replica holds the Lease)"
        );
    }
}
