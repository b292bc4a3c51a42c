//! The manager writes Secrets only in tenant namespaces.

use crate::support::*;

/// With the chart's RBAC, the manager's own identity may write Secrets in
/// tenant namespaces only: kube-system and a namespace no tenant owns are
/// Forbidden to it, by the API server's authorizer.
pub(crate) async fn the_manager_writes_secrets_only_in_tenant_namespaces(
    pair: &mut Pair,
) -> anyhow::Result<()> {
    use syncsecret_e2e::pair::MANAGER_NAMESPACE;
    let identity = pair
        .plane
        .management()
        .service_account_kubeconfig(MANAGER_NAMESPACE, rbac::MANAGER_ROLE)
        .await?;
    let as_manager = client_from(&identity).await?;
    ensure_namespace(&pair.management, "not-a-tenant").await?;
    let probe = |ns: &str| -> Secret {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "manager-probe", "namespace": ns},
            "stringData": {"k": "v"},
        }))
        .unwrap()
    };
    for ns in ["kube-system", "not-a-tenant"] {
        let secrets: Api<Secret> = Api::namespaced(as_manager.clone(), ns);
        match secrets.create(&PostParams::default(), &probe(ns)).await {
            Err(kube::Error::Api(s)) if s.code == 403 => {
                println!("    the manager may not write in {ns}: {}", s.message);
            }
            other => bail!("the manager wrote a Secret in {ns}: {other:?}"),
        }
    }
    let good_ns = tenant_namespace(&pair.tenant_names[GOOD]);
    let secrets: Api<Secret> = Api::namespaced(as_manager, &good_ns);
    secrets
        .create(&PostParams::default(), &probe(&good_ns))
        .await
        .context("the manager may write in a tenant namespace")?;
    secrets.delete("manager-probe", &Default::default()).await?;
    Ok(())
}
