//! The manager's orphan sweep: Secrets we made whose copy is gone (the
//! garbage collector normally takes them through the ownerReference; this
//! covers a cluster without it, or an ownerReference removed by hand).

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::DeleteParams;
use kube::{Api, ResourceExt};
use syncsecret_api::contract::FIELD_MANAGER_MANAGER;
use syncsecret_api::sweep::orphaned_secrets;
use syncsecret_runtime::explain;
use syncsecret_runtime::reconcile::backoff_key;

use crate::Context;

/// One sweep; failures are logged and left for the next one. Also forgets
/// what the manager keeps per copy (backoff, replacement, certificate) for
/// copies no longer cached.
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
    for (namespace, name) in orphans {
        if ctx.metrics.hold(
            "secrets",
            "delete",
            &namespace,
            &name,
            &["(orphan)".to_owned()],
        ) {
            continue;
        }
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                ctx.metrics.orphan_deleted("secrets");
                tracing::info!(%namespace, %name, "orphaned Secret deleted: its copy is gone");
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                tracing::warn!(%namespace, %name, "cannot delete orphaned Secret: {}", explain(&e))
            }
        }
    }
}
