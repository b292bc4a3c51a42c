//! A manager's view of the shards: every live shard Lease in its
//! namespace, and so which tenant namespaces it acts on now
//! ([`syncsecret_api::shard::Ownership`]). Read by a list every retry
//! period while it leads; a change restarts its controllers with the new
//! view (their caches hold only what it acts on).
//!
//! Whether another shard's Lease is live is judged as client-go judges a
//! leader's: by when this process saw its holder or renewTime change, on
//! its own monotonic clock, never by comparing another machine's
//! timestamps with this one's clock. A Lease first seen counts as just
//! renewed, so a newcomer waits up to one Lease duration for a shard that
//! has in fact gone. The order of claims (`acquireTime`) is read from the
//! stored Leases, so every shard sees the same order whatever the skew.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use syncsecret_api::shard::{Claim, Ownership, Shard, lease_name, shard_of_lease};

use crate::error::RuntimeError;
use crate::serve::health::Health;
use crate::serve::leader::{LEASE_DURATION, RETRY_PERIOD, Seen};

/// The shard Leases of one manager installation (named from `base`, in
/// one namespace), as seen by the holder of one of them.
pub struct ShardLeases {
    api: Api<Lease>,
    namespace: String,
    base: String,
    shard: Shard,
    identity: String,
    seen: Mutex<Sightings>,
}

impl ShardLeases {
    /// The Leases named from `base` in `namespace`, seen by shard `shard`
    /// whose replica is `identity` (its Lease holder).
    pub fn new(client: Client, namespace: &str, base: &str, shard: Shard, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            base: base.to_owned(),
            shard,
            identity: identity.to_owned(),
            seen: Mutex::default(),
        }
    }

    /// What this shard acts on now: an error if the Leases cannot be
    /// listed, or this replica does not hold its shard's Lease.
    pub async fn ownership(&self) -> Result<Ownership, RuntimeError> {
        let leases = self
            .api
            .list(&ListParams::default())
            .await
            .map_err(|source| RuntimeError::ShardLeases {
                namespace: self.namespace.clone(),
                source,
            })?;
        let ours: Vec<(Shard, &Lease)> = leases
            .items
            .iter()
            .filter_map(|l| Some((shard_of_lease(&self.base, &l.name_any())?, l)))
            .collect();
        let live = match self.seen.lock() {
            Ok(mut seen) => seen.live(&ours, Instant::now()),
            Err(_) => Vec::new(),
        };
        let own = lease_name(&self.base, self.shard);
        let mine = live
            .iter()
            .find(|(c, holder)| c.lease == own && *holder == self.identity)
            .map(|(c, _)| c.clone())
            .ok_or_else(|| RuntimeError::NotHolding {
                namespace: self.namespace.clone(),
                name: own,
            })?;
        let claims: Vec<Claim> = live.into_iter().map(|(c, _)| c).collect();
        Ok(Ownership::among(&mine, &claims))
    }

    /// Returns the next view that differs from `from`, looking every retry
    /// period. A view that cannot be read keeps the last one (a stale view
    /// never makes two shards act on one namespace: a shard only yields
    /// less once it sees a Lease go); once that lasts a Lease duration it
    /// is logged as a warning and noted in `/readyz`, since a newcomer
    /// waiting for a shard that has gone waits until it reads again.
    pub async fn changed(&self, from: &Ownership, health: &Health) -> Ownership {
        let mut failing_since: Option<Instant> = None;
        let mut warned = false;
        loop {
            tokio::time::sleep(RETRY_PERIOD).await;
            match self.ownership().await {
                Ok(now) => {
                    if warned {
                        health.note("shards", None);
                        tracing::info!("the shard Leases are readable again");
                    }
                    (failing_since, warned) = (None, false);
                    if now != *from {
                        return now;
                    }
                }
                Err(e) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if !warned && since.elapsed() >= LEASE_DURATION {
                        warned = true;
                        let report = crate::error::report(&e);
                        tracing::warn!(error = %report, "cannot read the shard Leases; acting on the last view");
                        health.note(
                            "shards",
                            Some(format!("{report}; acting on the shard view read last")),
                        );
                    }
                }
            }
        }
    }
}

/// What each shard Lease looked like when last listed, and when this
/// process saw it change.
#[derive(Default)]
struct Sightings(HashMap<String, Seen>);

impl Sightings {
    /// The live claims among `leases` (with their holders) as of `now`,
    /// remembering what each looked like ([`Seen::live`]).
    fn live(&mut self, leases: &[(Shard, &Lease)], now: Instant) -> Vec<(Claim, String)> {
        self.0
            .retain(|name, _| leases.iter().any(|(_, l)| l.name_any() == *name));
        let mut live = Vec::new();
        for (shard, lease) in leases {
            let name = lease.name_any();
            let mut seen = self.0.remove(&name);
            let holder = Seen::live(&mut seen, lease, now).map(str::to_owned);
            if let Some(seen) = seen {
                self.0.insert(name.clone(), seen);
            }
            let (Some(holder), Some(spec)) = (holder, lease.spec.as_ref()) else {
                continue;
            };
            // Without an acquireTime (not written by our code): first of
            // all, so that the others wait for it to lapse, and fixed, so
            // that the view does not change with each renewal.
            let since = spec
                .acquire_time
                .as_ref()
                .map_or(Timestamp::UNIX_EPOCH, |t| t.0);
            let claim = Claim {
                shard: *shard,
                since,
                lease: name,
            };
            live.push((claim, holder));
        }
        live
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use std::time::Duration;

    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use kube::api::ObjectMeta;

    use super::*;

    fn lease(name: &str, holder: &str, acquired: i64, renewed: i64) -> Lease {
        let at = |s| Some(MicroTime(Timestamp::from_second(s).unwrap()));
        Lease {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.to_owned()),
                lease_duration_seconds: Some(15),
                acquire_time: at(acquired),
                renew_time: at(renewed),
                ..LeaseSpec::default()
            }),
        }
    }

    fn holders(live: &[(Claim, String)]) -> Vec<&str> {
        live.iter().map(|(_, h)| h.as_str()).collect()
    }

    #[test]
    fn liveness_is_judged_by_what_this_process_saw_change() {
        let (a, b) = (Shard::new(0, 2).unwrap(), Shard::new(1, 2).unwrap());
        let mut seen = Sightings::default();
        let t0 = Instant::now();
        // Stored times far in the past (a skewed clock, or a dead shard):
        // first seen, each still counts as just renewed.
        let (la, lb) = (
            lease("m-0-of-2", "x", 10, 20),
            lease("m-1-of-2", "y", 10, 20),
        );
        let live = seen.live(&[(a, &la), (b, &lb)], t0);
        assert_eq!(holders(&live), ["x", "y"]);
        // One renews (its renewTime moves); the other stands still.
        let la2 = lease("m-0-of-2", "x", 10, 22);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            holders(&seen.live(&[(a, &la2), (b, &lb)], later)),
            ["x", "y"]
        );
        let past = t0 + Duration::from_secs(16);
        assert_eq!(holders(&seen.live(&[(a, &la2), (b, &lb)], past)), ["x"]);
        // Stored times far in the future do not keep a Lease alive either.
        let mut seen = Sightings::default();
        let future = lease("m-1-of-2", "y", 10, 4_000_000_000);
        assert_eq!(holders(&seen.live(&[(b, &future)], t0)), ["y"]);
        assert!(seen.live(&[(b, &future)], past).is_empty());
    }

    #[test]
    fn a_released_or_vanished_lease_is_not_live_and_a_new_holder_is() {
        let s = Shard::new(0, 2).unwrap();
        let mut seen = Sightings::default();
        let t0 = Instant::now();
        assert_eq!(
            holders(&seen.live(&[(s, &lease("m-0-of-2", "x", 1, 2))], t0)),
            ["x"]
        );
        let released = lease("m-0-of-2", "", 1, 2);
        assert!(seen.live(&[(s, &released)], t0).is_empty());
        // Gone from the list: forgotten, and first seen again as new.
        assert!(seen.live(&[], t0).is_empty());
        assert!(seen.0.is_empty());
        // Taken by another replica after a long wait: live again.
        let t1 = t0 + Duration::from_secs(60);
        let taken = lease("m-0-of-2", "z", 50, 50);
        let live = seen.live(&[(s, &taken)], t1);
        assert_eq!(holders(&live), ["z"]);
        assert_eq!(live[0].0.since, Timestamp::from_second(50).unwrap());
    }
}
