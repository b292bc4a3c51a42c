//! A copy nested deeper than serde_json reads into a tree.

use crate::support::*;

/// The copy at `path` as the API server sends it (no type reads it), or
/// `None` once it is gone.
pub(crate) async fn raw(client: &Client, path: &str) -> anyhow::Result<Option<String>> {
    let req = http::Request::get(path).body(Vec::new())?;
    match client.request_text(req).await {
        Ok(text) => Ok(Some(text)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A copy with managedFields nested 200 levels deep, which the API server
/// keeps as sent and serde_json will not read into a tree (128 levels; it
/// used to fail every list of copies, so every tenant's sync). The evil
/// tenant's identity is refused it (`managed_fields.rs`); an admin's, or
/// one stored before the policy, syncs, the controllers' first lists
/// after a restart read it and every other object, and deleting it
/// finishes.
pub(crate) async fn copies_nested_too_deep(
    pair: &mut Pair,
    values: &mut Values,
) -> anyhow::Result<()> {
    let (evil_ns, identity) = evil_identity(pair).await?;
    let as_evil = client_from(&identity).await?;
    // The first copy in the management cluster (tenant-evil sorts first):
    // the one the manager's reachability probe, a list of one, gets.
    let name = uuid::Uuid::nil().to_string();
    let mut fields = json!({});
    for _ in 0..200 {
        fields = json!({ "f:x": fields });
    }
    let hidden = values.fresh("evil-deep");
    let body = json!({
        "apiVersion": "kubelb.k8c.io/v1alpha1",
        "kind": "SyncSecret",
        "metadata": {
            "name": name,
            "namespace": evil_ns,
            "labels": {(syncsecret_api::contract::LABEL_ORIGIN_NAME): name},
            "managedFields": [{
                "manager": "evil", "operation": "Update", "apiVersion": "kubelb.k8c.io/v1alpha1",
                "fieldsType": "FieldsV1", "fieldsV1": fields,
            }],
        },
        "data": {"s": k8s_openapi::ByteString(hidden.into_bytes())},
    });
    let path = format!("/apis/kubelb.k8c.io/v1alpha1/namespaces/{evil_ns}/syncsecrets");
    let req = http::Request::post(&path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body)?)?;
    match as_evil.request_text(req).await {
        Err(kube::Error::Api(s)) if s.message.contains("below the 4 levels a copy has") => {
            println!(
                "    the tenant's copy with managedFields 200 levels deep was refused: {}",
                s.message
            );
        }
        other => bail!("the tenant's copy 200 levels deep: {other:?}"),
    }
    let req = http::Request::post(&path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body)?)?;
    pair.management.request_text(req).await?;
    let stored = raw(&pair.management, &format!("{path}/{name}"))
        .await?
        .context("the deep copy is not there")?;
    let depth = stored.matches("f:x").count();
    println!("    a copy with managedFields 200 levels deep was stored ({depth} levels kept)");
    ensure!(
        depth > 128,
        "only {depth} levels were kept: the attack needs more than 128"
    );
    // Read without the managedFields entry too deep to read, it syncs
    // like any copy. It cannot be read as a type (serde's 128 levels): its
    // UID and phase are read by skipping the rest, which has no limit.
    #[derive(serde::Deserialize)]
    struct Keys {
        metadata: KeyMeta,
        status: Option<KeyStatus>,
    }
    #[derive(serde::Deserialize)]
    struct KeyMeta {
        uid: String,
    }
    #[derive(serde::Deserialize)]
    struct KeyStatus {
        phase: Option<String>,
    }
    let secrets: Api<Secret> = Api::namespaced(pair.management.clone(), &evil_ns);
    eventually("the deep copy synced", WAIT, || async {
        let text = raw(&pair.management, &format!("{path}/{name}"))
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        let keys: Keys = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let phase = keys.status.and_then(|s| s.phase);
        if phase.as_deref() != Some("Synced") {
            return Err(format!("phase {phase:?}"));
        }
        secrets
            .get_opt(&keys.metadata.uid)
            .await
            .map_err(|e| e.to_string())?
            .map(|_| ())
            .ok_or_else(|| "no Secret".to_owned())
    })
    .await?;
    good_tenant_converges(pair, "during-deep-copy", &values.fresh("good-deep-1")).await?;
    // The probe has listed it since: the management cluster still answers.
    tokio::time::sleep(syncsecret_runtime::serve::reachable::EVERY * 2).await;
    metric_reads(&pair.manager, "kubelb_manager_management_reachable", 1.0).await?;
    let (_, body) = pair.manager.readyz()?;
    ensure!(
        !body.contains("does not answer"),
        "the manager calls the management cluster down: {body}"
    );
    // Both restarted: their first lists of copies hold it.
    pair.restart_all().await?;
    for c in pair.controllers() {
        ready(c)?;
    }
    good_tenant_converges(pair, "after-deep-copy", &values.fresh("good-deep-2")).await?;

    let req = http::Request::delete(format!("{path}/{name}")).body(Vec::new())?;
    as_evil.request_text(req).await?;
    eventually("the deep copy gone", WAIT, || async {
        match raw(&pair.management, &format!("{path}/{name}")).await {
            Ok(None) => Ok(()),
            Ok(Some(text)) => Err(format!(
                "still there: {}",
                text.split("\"managedFields\"").next().unwrap_or_default()
            )),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;
    Ok(())
}
