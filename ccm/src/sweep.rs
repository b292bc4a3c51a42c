//! The ccm's orphan sweep: copies in its tenant namespace that it made and
//! whose tenant object is gone (its finalizer stripped by hand while the
//! ccm was down, or its namespace force-deleted). Deleting the copy lets the
//! manager remove its Secret.

use std::sync::Arc;

use kube::api::DeleteParams;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use syncsecret_api::SyncSecret;
use syncsecret_api::contract::FIELD_MANAGER_CCM;
use syncsecret_api::runtime::explain;
use syncsecret_api::sweep::orphaned_copies;

use crate::Context;

/// One sweep; failures are logged and left for the next one.
pub async fn orphans(ctx: Arc<Context>) {
    ctx.metrics.sweeping("syncsecrets");
    let copies = ctx.copies.state();
    let tenant_uid = |namespace: &str, name: &str| {
        ctx.tenant_objects
            .get(&ObjectRef::new(name).within(namespace))
            .and_then(|t| t.uid())
    };
    let orphans = orphaned_copies(
        copies.iter().map(AsRef::as_ref),
        tenant_uid,
        FIELD_MANAGER_CCM,
    );
    let api: Api<SyncSecret> = Api::namespaced(ctx.management.clone(), &ctx.tenant_namespace);
    for name in orphans {
        if ctx.metrics.hold(
            "syncsecrets",
            "delete",
            &ctx.tenant_namespace,
            &name,
            &["(orphan)".to_owned()],
        ) {
            continue;
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                ctx.metrics.orphan_deleted("syncsecrets");
                tracing::info!(namespace = %ctx.tenant_namespace, %name, "orphaned copy deleted: its tenant object is gone");
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                tracing::warn!(namespace = %ctx.tenant_namespace, %name, "cannot delete orphaned copy: {}", explain(&e))
            }
        }
    }
}
