//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go does
//! it: the holder renews every retry period and stops leading once it has
//! not renewed within the renew deadline; another replica takes over once
//! it has seen the Lease unchanged for its duration, by its own monotonic
//! clock (never by comparing the stored renewTime with its own clock, which
//! another machine's skew would make wrong). Writes are guarded by
//! resourceVersion, so two replicas can never both take it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};

use crate::error::RuntimeError;

/// How long a lease is valid without renewal (client-go's default).
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long the holder keeps trying to renew before it gives up leading.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often the holder renews and a candidate retries.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// One replica's view of one lease.
pub struct LeaderLease {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    /// The Lease as this replica last saw it.
    seen: Mutex<Option<Seen>>,
    /// Leases named from this base (`syncsecret_api::shard`): a new
    /// acquireTime sorts after every held one of theirs.
    peers: Option<String>,
}

/// What this process last saw of one Lease: its holder and renewTime,
/// and when it saw them change.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    stamp: (String, Option<Timestamp>),
    changed: Instant,
}

impl Seen {
    /// Records `lease` as read at `now` in `seen`; its holder if it is
    /// live: held, and changed within its duration by this process's
    /// clock. A Lease first seen counts as just changed.
    pub(crate) fn live<'a>(
        seen: &mut Option<Seen>,
        lease: &'a Lease,
        now: Instant,
    ) -> Option<&'a str> {
        let spec = lease.spec.as_ref()?;
        let holder = spec.holder_identity.as_deref().unwrap_or_default();
        let stamp = (holder.to_owned(), spec.renew_time.as_ref().map(|t| t.0));
        match seen {
            Some(s) if s.stamp == stamp => {}
            _ => {
                *seen = Some(Seen {
                    stamp,
                    changed: now,
                })
            }
        }
        let changed = seen.as_ref().map_or(now, |s| s.changed);
        let valid_for = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(LEASE_DURATION, Duration::from_secs);
        (!holder.is_empty() && now.duration_since(changed) < valid_for).then_some(holder)
    }
}

enum Attempt {
    Held,
    HeldBy(String),
}

impl LeaderLease {
    /// A lease `namespace/name`; `identity` names this replica (pod name or
    /// host name plus a random suffix).
    pub fn new(client: Client, namespace: &str, name: &str, identity: String) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity,
            seen: Mutex::default(),
            peers: None,
        }
    }

    /// Takes the Lease with an acquireTime after that of every held Lease
    /// named from `base` in its namespace, whatever this machine's clock
    /// says: shards are ordered by it (`syncsecret_api::shard`), and a
    /// newcomer must sort after the shards it meets.
    pub fn ordered_after_peers(mut self, base: &str) -> Self {
        self.peers = Some(base.to_owned());
        self
    }

    /// This replica's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn err(&self, source: kube::Error) -> RuntimeError {
        RuntimeError::Lease {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }

    /// Waits until this replica holds the lease. Errors (a missing
    /// namespace, RBAC) are logged and retried: another replica may be
    /// leading, and the operator may fix the cause.
    pub async fn acquire(&self) {
        self.acquire_then(|| {}).await;
    }

    /// [`LeaderLease::acquire`], calling `waiting` after each attempt that
    /// did not take it.
    pub async fn acquire_then(&self, waiting: impl Fn()) {
        let mut logged_holder = String::new();
        loop {
            match self.try_hold().await {
                Ok(Attempt::Held) => {
                    tracing::info!(lease = %self.name, namespace = %self.namespace, identity = %self.identity, "leading");
                    return;
                }
                Ok(Attempt::HeldBy(holder)) => {
                    if holder != logged_holder {
                        tracing::info!(lease = %self.name, %holder, "waiting for the leader lease");
                        logged_holder = holder;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %crate::error::report(&e), "cannot take the leader lease; retrying")
                }
            }
            waiting();
            tokio::time::sleep(RETRY_PERIOD).await;
        }
    }

    /// Renews the lease every retry period; returns why leadership ended
    /// (lost to another replica, or not renewable within the deadline).
    pub async fn keep(&self) -> RuntimeError {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(RETRY_PERIOD).await;
            // A renewal that hangs must not keep this replica leading past
            // the deadline: by then another may have taken over.
            let left = RENEW_DEADLINE.saturating_sub(renewed.elapsed());
            let Ok(attempt) = tokio::time::timeout(left, self.try_hold()).await else {
                return RuntimeError::RenewDeadline {
                    namespace: self.namespace.clone(),
                    name: self.name.clone(),
                };
            };
            match attempt {
                Ok(Attempt::Held) => renewed = Instant::now(),
                Ok(Attempt::HeldBy(holder)) => {
                    return RuntimeError::LeaseLost {
                        namespace: self.namespace.clone(),
                        name: self.name.clone(),
                        holder,
                    };
                }
                Err(e) if renewed.elapsed() > RENEW_DEADLINE => return e,
                Err(e) => {
                    tracing::warn!(error = %crate::error::report(&e), "cannot renew the leader lease; retrying")
                }
            }
        }
    }

    /// Gives the lease up (on shutdown) so that another replica need not
    /// wait for it to expire.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.acquire_time = None;
        spec.renew_time = None;
        if let Err(e) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(error = %crate::error::explain(&e), "could not release the leader lease; it expires on its own");
        }
    }

    async fn try_hold(&self) -> Result<Attempt, RuntimeError> {
        let now = Timestamp::now();
        let duration_secs = i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(15);
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.err(e))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    Ok(Attempt::HeldBy("another replica".into()))
                }
                Err(e) => Err(self.err(e)),
            };
        };
        let live = match self.seen.lock() {
            Ok(mut seen) => Seen::live(&mut seen, &lease, Instant::now()).map(str::to_owned),
            Err(_) => None,
        };
        let acquired = match &live {
            Some(_) => now,
            None => self.after_peers(now).await,
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        match live {
            Some(h) if h != self.identity => return Ok(Attempt::HeldBy(h)),
            Some(_) => {}
            // Taken anew, or ours again after it lapsed: a new acquireTime,
            // which is what shards are ordered by (`syncsecret_api::shard`).
            None => {
                spec.acquire_time = Some(MicroTime(acquired));
                if !mine {
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
            }
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(duration_secs);
        spec.renew_time = Some(MicroTime(now));
        // The resourceVersion in `lease` makes this a compare-and-swap.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Attempt::Held),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                Ok(Attempt::HeldBy("another replica".into()))
            }
            Err(e) => Err(self.err(e)),
        }
    }

    /// `now`, or just after the latest acquireTime of the other held
    /// Leases named from the peers' base, whichever is later. Without the
    /// list (not allowed, say), `now`.
    async fn after_peers(&self, now: Timestamp) -> Timestamp {
        let Some(base) = &self.peers else {
            return now;
        };
        let leases = match self.api.list(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(e) => {
                tracing::debug!(error = %crate::error::explain(&e), "cannot list the peer Leases; acquireTime from this clock");
                return now;
            }
        };
        let latest = leases
            .iter()
            .filter(|l| l.name_any() != self.name)
            .filter(|l| syncsecret_api::shard::shard_of_lease(base, &l.name_any()).is_some())
            .filter_map(|l| {
                let spec = l.spec.as_ref()?;
                spec.holder_identity.as_deref().filter(|h| !h.is_empty())?;
                spec.acquire_time.as_ref().map(|t| t.0)
            })
            .max();
        match latest {
            Some(t) if t >= now => t + SignedDuration::from_micros(1),
            _ => now,
        }
    }
}

/// A default identity: the host (pod) name and a random suffix.
pub fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .or_else(|_| {
            std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|_| "syncsecret".to_owned());
    format!("{host}_{}", uuid::Uuid::new_v4())
}
