//! What every user sees first: a SyncSecret becomes an owned Secret and
//! shows Synced, updates follow at no cost once settled, deletion goes
//! one hop at a time, types, bytes and immutability are kept, and two
//! tenants with the same names stay apart.

use anyhow::{anyhow, bail, ensure};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use syncsecret_api::contract::{
    FINALIZER, LABEL_ORIGIN_NAME, LABEL_ORIGIN_NAMESPACE, LABEL_ORIGIN_NS, tenant_namespace,
};
use syncsecret_api::{SyncSecret, SyncSecretPhase};
use syncsecret_e2e::kube_util::{eventually, has_event};
use syncsecret_runtime::generate::rbac;

use super::support::{
    bytes, ccm_reconciles_in, create, data_of, management, mgmt_kubeconfig, reconciles, settled,
    sync_secret, synced, synced_condition, tenant_client, tenant_shows, total,
};
use super::{Shared, TENANTS, WAIT};

pub(super) async fn opaque_syncsecret_becomes_an_owned_secret_and_shows_synced(
    s: &Shared,
) -> anyhow::Result<()> {
    let (user, password) = (s.value("user"), s.value("password"));
    let mut obj = sync_secret("db");
    obj.metadata.labels = Some([("app".to_owned(), "shop".to_owned())].into());
    obj.type_ = Some("Opaque".into());
    obj.data = Some(
        [
            ("username".to_owned(), bytes("from-data")),
            ("host".to_owned(), bytes("db.local")),
        ]
        .into(),
    );
    obj.string_data = Some(
        [
            ("username".to_owned(), user.clone()),
            ("password".to_owned(), password.clone()),
        ]
        .into(),
    );
    let created = create(s, 0, "opaque", obj).await?;

    let (copy, secret) = synced(s, 0, "opaque", "db", |sec| {
        data_of(sec).get("password").map(Vec::as_slice) == Some(password.as_bytes())
    })
    .await?;
    // The copy: named by the tenant UID, origin labels (both spellings).
    ensure!(
        copy.name_any() == created.uid().unwrap(),
        "copy not named by the tenant UID"
    );
    let labels = copy.labels();
    ensure!(labels.get(LABEL_ORIGIN_NAME).map(String::as_str) == Some("db"));
    ensure!(labels.get(LABEL_ORIGIN_NAMESPACE).map(String::as_str) == Some("opaque"));
    ensure!(labels.get(LABEL_ORIGIN_NS).map(String::as_str) == Some("opaque"));
    ensure!(
        copy.finalizers().iter().any(|f| f == FINALIZER),
        "copy lacks the manager's finalizer"
    );

    // The Secret: named by the copy UID, merged data (stringData wins), type,
    // labels, controller ownerReference to the copy.
    ensure!(
        secret.name_any() == copy.uid().unwrap(),
        "Secret not named by the copy UID"
    );
    let data = data_of(&secret);
    ensure!(
        data["username"] == user.as_bytes(),
        "stringData did not win over data"
    );
    ensure!(data["host"] == b"db.local");
    ensure!(data.len() == 3, "unexpected keys {:?}", data.keys());
    ensure!(secret.type_.as_deref() == Some("Opaque"));
    ensure!(secret.labels().get("app").map(String::as_str) == Some("shop"));
    ensure!(secret.labels().get(LABEL_ORIGIN_NAME).map(String::as_str) == Some("db"));
    let owner = &secret.metadata.owner_references.clone().unwrap_or_default()[0];
    ensure!(owner.kind == "SyncSecret" && owner.api_version == "kubelb.k8c.io/v1alpha1");
    ensure!(owner.uid == copy.uid().unwrap() && owner.name == copy.name_any());
    ensure!(owner.controller == Some(true) && owner.block_owner_deletion == Some(true));

    // Status on the copy, and the tenant object holds the ccm's finalizer.
    let status = copy.status.clone().unwrap();
    let cond = status.conditions.unwrap_or_default();
    ensure!(
        cond.iter()
            .any(|c| c.type_ == "Synced" && c.status == "True"),
        "no Synced=True condition: {cond:?}"
    );
    let tenant: Api<SyncSecret> = Api::namespaced(tenant_client(s, 0).await, "opaque");
    ensure!(
        tenant
            .get("db")
            .await?
            .finalizers()
            .iter()
            .any(|f| f == FINALIZER)
    );

    // Status comes home: the tenant object shows the manager's verdict.
    let home = tenant_shows(s, 0, "opaque", "db", SyncSecretPhase::Synced).await?;
    let c = synced_condition(&home).ok_or_else(|| anyhow!("no Synced condition in the tenant"))?;
    ensure!(c.status == "True" && c.reason == "SecretSynced", "{c:?}");

    // What a person sees with kubectl on the management cluster.
    let text = syncsecret_e2e::helm::kubectl(
        &mgmt_kubeconfig(s).await,
        &["get", "syncsecrets", "-A"],
        None,
    )?;
    println!("    $ kubectl get syncsecrets -A   # management cluster\n{text}");
    let row = text
        .lines()
        .find(|l| l.contains(&copy.name_any()))
        .ok_or_else(|| anyhow!("copy not listed by kubectl"))?;
    ensure!(
        row.split_whitespace().any(|w| w == "Synced"),
        "kubectl row without Phase Synced: {row}"
    );
    // The first sync is told by the status alone, no event: the reconcile
    // that wrote the status would have sent one before kubectl ran.
    let events: Api<Event> = Api::namespaced(tenant_client(s, 0).await, "opaque");
    let told: Vec<String> = events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("db"))
        .filter_map(|e| e.reason)
        .collect();
    ensure!(told.is_empty(), "events on a first sync: {told:?}");
    Ok(())
}

pub(super) async fn updates_follow_and_then_cost_no_writes(s: &Shared) -> anyhow::Result<()> {
    let (v1, v2) = (s.value("token-v1"), s.value("token-v2"));
    let mut obj = sync_secret("api-token");
    obj.string_data = Some([("token".to_owned(), v1.clone())].into());
    create(s, 0, "update", obj).await?;
    synced(s, 0, "update", "api-token", |sec| {
        data_of(sec).get("token").map(Vec::as_slice) == Some(v1.as_bytes())
    })
    .await?;

    let tenant: Api<SyncSecret> = Api::namespaced(tenant_client(s, 0).await, "update");
    tenant
        .patch(
            "api-token",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"token": v2}})),
        )
        .await?;
    let (copy, secret) = synced(s, 0, "update", "api-token", |sec| {
        data_of(sec).get("token").map(Vec::as_slice) == Some(v2.as_bytes())
    })
    .await?;
    ensure!(copy.status.as_ref().unwrap().observed_generation == Some(2));
    let home = tenant_shows(s, 0, "update", "api-token", SyncSecretPhase::Synced).await?;
    ensure!(home.status.and_then(|st| st.observed_generation) == Some(2));
    // An update changes no phase: events say it, on both sides.
    has_event(
        &tenant_client(s, 0).await,
        "update",
        "api-token",
        "CopyUpdated",
    )
    .await?;
    has_event(
        &management(s).await,
        &tenant_namespace(TENANTS[0]),
        &copy.name_any(),
        "SecretUpdated",
    )
    .await?;

    // Now nothing changes: events that make both controllers reconcile must
    // not make them write.
    settled(s).await?;
    let writes_before = total(s, "writes_total").await?;
    let ccm_before = ccm_reconciles_in(s, 0, "update").await?;
    let (_, mgr_before) = reconciles(s).await?;
    let mgmt = management(s).await;
    let secrets: Api<Secret> = Api::namespaced(mgmt, &tenant_namespace(TENANTS[0]));
    secrets
        .patch(
            &secret.name_any(),
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"labels": {"team": "ops"}}})),
        )
        .await?;
    tenant
        .patch(
            "api-token",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": [FINALIZER, "example.com/hold"]}})),
        )
        .await?;
    tenant
        .patch(
            "api-token",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": [FINALIZER]}})),
        )
        .await?;
    eventually(
        "both controllers reconciled the no-op changes",
        WAIT,
        || async {
            let c = ccm_reconciles_in(s, 0, "update")
                .await
                .map_err(|e| e.to_string())?;
            let (_, m) = reconciles(s).await.map_err(|e| e.to_string())?;
            // Events that arrive together may be reconciled once.
            if c > ccm_before && m > mgr_before {
                Ok(())
            } else {
                Err(format!(
                    "ccm {c} (was {ccm_before}), manager {m} (was {mgr_before})"
                ))
            }
        },
    )
    .await?;
    // The manager's count is of the whole tenant namespace: let every
    // reconcile those changes caused finish.
    settled(s).await?;
    let writes_after = total(s, "writes_total").await?;
    println!("    writes before the no-op changes: {writes_before}, after: {writes_after}");
    ensure!(
        writes_after == writes_before,
        "no-op reconciles wrote {} times",
        writes_after - writes_before
    );
    let live = secrets.get(&secret.name_any()).await?;
    ensure!(
        live.labels().get("team").map(String::as_str) == Some("ops"),
        "a foreign label was removed"
    );
    Ok(())
}

pub(super) async fn deleting_the_tenant_object_removes_copy_and_secret_first(
    s: &Shared,
) -> anyhow::Result<()> {
    let mut obj = sync_secret("short-lived");
    obj.string_data = Some([("k".to_owned(), s.value("short"))].into());
    let created = create(s, 0, "delete", obj).await?;
    let (copy, secret) = synced(s, 0, "delete", "short-lived", |_| true).await?;

    let tenant: Api<SyncSecret> = Api::namespaced(tenant_client(s, 0).await, "delete");
    tenant
        .delete("short-lived", &DeleteParams::default())
        .await?;
    eventually("tenant object gone", WAIT, || async {
        match tenant
            .get_opt("short-lived")
            .await
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(o) if o.uid() != created.uid() => Ok(()),
            Some(_) => Err("still there".to_owned()),
        }
    })
    .await?;
    // The finalizer was released only after the copy was gone, and the
    // copy's only after its Secret was gone: both must be gone already.
    let mgmt = management(s).await;
    let ns = tenant_namespace(TENANTS[0]);
    let copies: Api<SyncSecret> = Api::namespaced(mgmt.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(mgmt, &ns);
    ensure!(
        copies.get_opt(&copy.name_any()).await?.is_none(),
        "copy outlived the tenant object"
    );
    ensure!(
        secrets.get_opt(&secret.name_any()).await?.is_none(),
        "Secret outlived the tenant object"
    );
    let leftovers = copies
        .list(&ListParams::default().labels(&format!("{LABEL_ORIGIN_NAMESPACE}=delete")))
        .await?;
    ensure!(leftovers.items.is_empty(), "copies left behind");
    // Waiting for the copy to go is a normal step, not an error: it must
    // not feed the SyncSecretReconcileErrors alert.
    let text = s.pair.lock().await.ccms[0].metrics()?;
    let count = |result: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("kubelb_ccm_sync_secret_reconcile_total{"))
            .filter(|l| {
                l.contains("namespace=\"delete\"") && l.contains(&format!("result=\"{result}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    ensure!(
        count("waiting") >= 1.0,
        "the wait for the copy was not counted as waiting"
    );
    ensure!(
        count("error") == 0.0,
        "a normal deletion was counted as an error"
    );
    Ok(())
}

pub(super) async fn tls_type_and_binary_bytes_are_preserved(s: &Shared) -> anyhow::Result<()> {
    let marker = s.value("tls");
    let mut crt = b"-----BEGIN CERTIFICATE-----\n".to_vec();
    crt.extend_from_slice(marker.as_bytes());
    let key: Vec<u8> = (0u8..=255).chain([0, 0, 255, 254]).collect();
    let mut obj = sync_secret("ingress-tls");
    obj.type_ = Some("kubernetes.io/tls".into());
    obj.data = Some(
        [
            ("tls.crt".to_owned(), ByteString(crt.clone())),
            ("tls.key".to_owned(), ByteString(key.clone())),
        ]
        .into(),
    );
    create(s, 0, "tls", obj).await?;
    let (_, secret) = synced(s, 0, "tls", "ingress-tls", |_| true).await?;
    ensure!(secret.type_.as_deref() == Some("kubernetes.io/tls"));
    let data = data_of(&secret);
    ensure!(data["tls.crt"] == crt, "tls.crt bytes changed");
    ensure!(data["tls.key"] == key, "tls.key bytes changed");
    Ok(())
}

pub(super) async fn immutable_syncs_immutable_and_a_type_change_replaces_the_secret(
    s: &Shared,
) -> anyhow::Result<()> {
    let mut frozen = sync_secret("frozen");
    frozen.immutable = Some(true);
    frozen.string_data = Some([("k".to_owned(), s.value("frozen"))].into());
    create(s, 1, "immutable", frozen).await?;
    let (_, secret) = synced(s, 1, "immutable", "frozen", |_| true).await?;
    ensure!(
        secret.immutable == Some(true),
        "the Secret is not immutable"
    );

    // A Secret's type cannot change: the manager replaces it, once.
    let mut typed = sync_secret("retyped");
    typed.string_data = Some([("username".to_owned(), s.value("user"))].into());
    create(s, 1, "immutable", typed).await?;
    let (_, before) = synced(s, 1, "immutable", "retyped", |_| true).await?;
    let tenant: Api<SyncSecret> = Api::namespaced(tenant_client(s, 1).await, "immutable");
    tenant
        .patch(
            "retyped",
            &PatchParams::default(),
            &Patch::Merge(json!({"type": "kubernetes.io/basic-auth"})),
        )
        .await?;
    let (copy, after) = synced(s, 1, "immutable", "retyped", |sec| {
        sec.type_.as_deref() == Some("kubernetes.io/basic-auth")
    })
    .await?;
    ensure!(after.uid() != before.uid(), "the Secret was not replaced");
    has_event(
        &management(s).await,
        &tenant_namespace(TENANTS[1]),
        &copy.name_any(),
        "ImmutableReplaced",
    )
    .await?;
    Ok(())
}

pub(super) async fn same_name_in_two_tenants_stays_isolated(s: &Shared) -> anyhow::Result<()> {
    let values = [s.value("tenant1-value"), s.value("tenant2-value")];
    for (i, v) in values.iter().enumerate() {
        let mut obj = sync_secret("same-name");
        obj.string_data = Some([("value".to_owned(), v.clone())].into());
        create(s, i, "shared-ns", obj).await?;
    }
    for (i, v) in values.iter().enumerate() {
        let (copy, secret) = synced(s, i, "shared-ns", "same-name", |sec| {
            data_of(sec).get("value").map(Vec::as_slice) == Some(v.as_bytes())
        })
        .await?;
        ensure!(copy.namespace().as_deref() == Some(tenant_namespace(TENANTS[i]).as_str()));
        ensure!(secret.namespace() == copy.namespace());
    }
    // RBAC really separates them: tenant1's ccm identity (its ServiceAccount
    // in the management cluster, a fresh token) cannot read tenant2's
    // namespace, nor Secrets in its own.
    let pair = s.pair.lock().await;
    let identity = pair
        .plane
        .management()
        .service_account_kubeconfig(&tenant_namespace(TENANTS[0]), rbac::CCM_ROLE)
        .await?;
    let ccm1 = syncsecret_e2e::control_plane::client_from(&identity).await?;
    drop(pair);
    let other: Api<SyncSecret> = Api::namespaced(ccm1.clone(), &tenant_namespace(TENANTS[1]));
    match other.list(&ListParams::default()).await {
        Err(kube::Error::Api(e)) if e.code == 403 => {
            println!("    tenant1's ccm on tenant2: {}", e.message)
        }
        other => bail!(
            "tenant1's ccm could list tenant2's copies: {:?}",
            other.map(|l| l.items.len())
        ),
    }
    let secrets: Api<Secret> = Api::namespaced(ccm1, &tenant_namespace(TENANTS[0]));
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(e)) if e.code == 403 => Ok(()),
        other => bail!(
            "tenant1's ccm could list Secrets: {:?}",
            other.map(|l| l.items.len())
        ),
    }
}
