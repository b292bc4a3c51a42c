//! A sharded manager's view of the other shards: every live shard Lease in
//! its namespace, and so which tenant namespaces it acts on now
//! ([`syncsecret_api::shard::Ownership`]). Read by a list every retry
//! period while it leads; a change restarts its controllers with the new
//! view (their caches hold only what it acts on).

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use syncsecret_api::shard::{Claim, Ownership, Shard, lease_name, shard_of_lease};

use crate::error::RuntimeError;
use crate::serve::leader::{RETRY_PERIOD, holder};

/// The shard Leases of one manager installation (named from `base`, in
/// one namespace), as seen by the holder of one of them.
pub struct ShardLeases {
    api: Api<Lease>,
    namespace: String,
    base: String,
    shard: Shard,
    identity: String,
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
        let now = Timestamp::now();
        let mut mine = None;
        let mut live = Vec::new();
        for lease in &leases.items {
            let Some(shard) = shard_of_lease(&self.base, &lease.name_any()) else {
                continue;
            };
            let Some((held_by, since)) = holder(lease, now) else {
                continue;
            };
            let claim = Claim {
                shard,
                since,
                lease: lease.name_any(),
            };
            if shard == self.shard && held_by == self.identity {
                mine = Some(claim.clone());
            }
            live.push(claim);
        }
        let mine = mine.ok_or_else(|| RuntimeError::NotHolding {
            namespace: self.namespace.clone(),
            name: lease_name(&self.base, self.shard),
        })?;
        Ok(Ownership::among(&mine, &live))
    }

    /// Returns the next view that differs from `from`, looking every retry
    /// period. A view that cannot be read keeps the last one: a replica
    /// that cannot list cannot renew either, and stops leading in time.
    pub async fn changed(&self, from: &Ownership) -> Ownership {
        loop {
            tokio::time::sleep(RETRY_PERIOD).await;
            match self.ownership().await {
                Ok(now) if now != *from => return now,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %crate::error::report(&e), "cannot read the shard Leases; keeping the last view");
                }
            }
        }
    }
}
