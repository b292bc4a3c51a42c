//! The manager's orphan sweep: Secrets we made whose copy is gone (the
//! garbage collector normally takes them through the ownerReference; this
//! covers a cluster without it, or an ownerReference removed by hand).

use std::collections::HashSet;
use std::sync::Arc;

use kube::ResourceExt;
use syncsecret_api::contract::FIELD_MANAGER_MANAGER;
use syncsecret_api::sweep::orphaned_secrets;
use syncsecret_runtime::explain;
use syncsecret_runtime::reconcile::backoff_key;
use syncsecret_runtime::reconcile::writer::Deleted;

use crate::Context;

/// One sweep; failures are logged and left for the next one. Also forgets
/// what the manager keeps per copy (backoff, replacement, certificate) for
/// copies no longer cached.
#[tracing::instrument(name = "sweep", skip_all)]
pub async fn orphans(ctx: Arc<Context>) {
    ctx.metrics.sweeping("secrets");
    let copies = ctx.copies.state();
    let copy_uids: HashSet<String> = copies.iter().filter_map(|c| c.uid()).collect();
    let copy_keys: HashSet<String> = copies.iter().map(|c| backoff_key(c.as_ref())).collect();
    let cert_keys: HashSet<String> = copies
        .iter()
        .map(|c| format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any()))
        .collect();
    ctx.backoffs.retain(|k| copy_keys.contains(k));
    ctx.certificates.retain(|k| cert_keys.contains(k));
    if let Ok(mut replaced) = ctx.replaced.lock() {
        replaced.retain(|uid, _| copy_uids.contains(uid));
    }
    let secrets = ctx.secrets.state();
    let orphans = orphaned_secrets(
        secrets.iter().map(AsRef::as_ref),
        &copy_uids,
        FIELD_MANAGER_MANAGER,
    );
    let why = ["(orphan)".to_owned()];
    for (namespace, name) in orphans {
        let writer = ctx.secret_writer(&namespace, false);
        match writer.delete(&name, None, &why).await {
            Ok(Deleted::Held | Deleted::Absent) => {}
            Ok(_) => {
                ctx.metrics.orphan_deleted("secrets");
                tracing::info!(%namespace, %name, "orphaned Secret deleted: its copy is gone");
            }
            Err(e) => {
                tracing::warn!(%namespace, %name, "cannot delete orphaned Secret: {}", explain(&e))
            }
        }
    }
}
