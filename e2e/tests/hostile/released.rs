//! Labelled Secrets whose label the tenant takes off.

use crate::support::*;

/// A Secret the synchronizer syncs, its label taken off: the SyncSecret it
/// made goes (and with it the copy and the management Secret), our
/// finalizer is released, and deleting the Secret later does not hang.
/// Once while the ccm runs, once while it is down (its start sweeps).
pub(crate) async fn unlabelled_secrets_are_released(
    pair: &mut Pair,
    values: &mut Values,
) -> anyhow::Result<()> {
    use syncsecret_api::contract::{FINALIZER, LABEL_MANAGED_BY, MANAGED_BY_KUBELB};
    let secrets: Api<Secret> = Api::namespaced(pair.tenants[EVIL].clone(), NS);
    let tenant: Api<SyncSecret> = Api::namespaced(pair.tenants[EVIL].clone(), NS);
    let evil_ns = tenant_namespace(&pair.tenant_names[EVIL]);
    let copies = dynamic(&pair.management, &evil_ns);
    for (name, ccm_down) in [("labelled-live", false), ("labelled-down", true)] {
        let value = values.fresh(name);
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": NS, "labels": {LABEL_MANAGED_BY: MANAGED_BY_KUBELB}},
            "stringData": {"v": value},
        }))?;
        secrets.create(&PostParams::default(), &secret).await?;
        secret_holds(pair, EVIL, name, "v", value.as_bytes()).await?;
        let uid = tenant.get(name).await?.uid().context("no uid")?;
        if ccm_down {
            pair.ccms[EVIL].stop()?;
        }
        secrets
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {LABEL_MANAGED_BY: null}}})),
            )
            .await?;
        if ccm_down {
            pair.ccms[EVIL].start().await?;
        }
        eventually(&format!("{name} released"), WAIT, || async {
            let s = secrets.get(name).await.map_err(|e| e.to_string())?;
            if s.finalizers().iter().any(|f| f == FINALIZER) {
                return Err("our finalizer is still on the Secret".into());
            }
            if tenant
                .get_opt(name)
                .await
                .map_err(|e| e.to_string())?
                .is_some()
            {
                return Err("its SyncSecret is still there".into());
            }
            if copies
                .get_opt(&uid)
                .await
                .map_err(|e| e.to_string())?
                .is_some()
            {
                return Err("its copy is still there".into());
            }
            Ok(())
        })
        .await?;
        secrets.delete(name, &Default::default()).await?;
        eventually(&format!("{name} deleted"), WAIT, || async {
            match secrets.get_opt(name).await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(_) => Err("still there".into()),
            }
        })
        .await?;
        good_tenant_converges(pair, &format!("after-{name}"), &values.fresh("good-sync")).await?;
    }
    Ok(())
}
