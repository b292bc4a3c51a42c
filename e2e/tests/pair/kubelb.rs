//! Taking over from KubeLB: objects its controllers made are adopted,
//! and its Secret synchronizer's labelled Secrets follow.

use anyhow::ensure;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use syncsecret_api::contract::{
    FINALIZER, LABEL_MANAGED_BY, LABEL_ORIGIN_NAME, LABEL_ORIGIN_NS, MANAGED_BY_KUBELB,
    tenant_namespace,
};
use syncsecret_api::{SyncSecret, SyncSecretPhase};
use syncsecret_e2e::kube_util::eventually;
use syncsecret_e2e::pair::{ensure_namespace, writes_by_resource};

use super::support::{
    data_of, gone, management, settled, sync_secret, synced, tenant_client, tenant_shows,
};
use super::{Shared, TENANTS, WAIT};

pub(super) async fn objects_kubelb_made_are_adopted_and_made_data_only(
    s: &Shared,
) -> anyhow::Result<()> {
    // KubeLB's controllers made these; ours are not running.
    {
        let mut pair = s.pair.lock().await;
        pair.manager.stop()?;
        pair.ccms[0].stop()?;
    }
    let tenant_client = tenant_client(s, 0).await;
    ensure_namespace(&tenant_client, "adopt").await?;
    let tenants: Api<SyncSecret> = Api::namespaced(tenant_client, "adopt");
    let mgmt = management(s).await;
    let ns = tenant_namespace(TENANTS[0]);
    let copies: Api<SyncSecret> = Api::namespaced(mgmt.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(mgmt, &ns);
    let kubelb = PostParams {
        field_manager: Some("kubelb".into()),
        ..Default::default()
    };
    for (name, stale) in [("kubelb-made", false), ("kubelb-stale", true)] {
        let value = s.value("adopted");
        let mut t = sync_secret(name);
        t.labels_mut().insert("app".into(), "legacy".into());
        t.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
        t.string_data = Some([("password".to_owned(), value.clone())].into());
        let t = tenants.create(&kubelb, &t).await?;
        // KubeLB's ccm: named by the tenant UID, short origin label only.
        let mut c = sync_secret(&t.uid().unwrap());
        c.metadata.labels = Some(
            [
                ("app".to_owned(), "legacy".to_owned()),
                (LABEL_ORIGIN_NAME.to_owned(), name.to_owned()),
                (LABEL_ORIGIN_NS.to_owned(), "adopt".to_owned()),
            ]
            .into(),
        );
        c.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
        c.string_data = t.string_data.clone();
        let c = copies.create(&kubelb, &c).await?;
        // KubeLB's manager: its status wording, its owner reference.
        let generation = c.metadata.generation;
        copies
            .patch_status(
                &c.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Synced", "observedGeneration": generation, "conditions": [{
                    "type": "Synced", "status": "True", "reason": "Synced", "message": "Secret synced successfully",
                    "observedGeneration": generation, "lastTransitionTime": "2026-11-01T00:00:00Z"}]}})),
            )
            .await?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: c.uid(),
                labels: c.metadata.labels.clone(),
                owner_references: Some(vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        api_version: "kubelb.k8c.io/v1alpha1".into(),
                        kind: "SyncSecret".into(),
                        name: c.name_any(),
                        uid: c.uid().unwrap(),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            string_data: Some(
                [(
                    "password".to_owned(),
                    if stale { "old".to_owned() } else { value },
                )]
                .into(),
            ),
            ..Default::default()
        };
        secrets.create(&kubelb, &secret).await?;
    }

    // Ours take over.
    {
        let mut pair = s.pair.lock().await;
        pair.manager.start().await?;
        pair.ccms[0].start().await?;
    }
    tenant_shows(s, 0, "adopt", "kubelb-made", SyncSecretPhase::Synced).await?;
    let stale_tenant = tenants.get("kubelb-stale").await?;
    let values = s.values.lock().unwrap().clone();
    let want = stale_tenant.string_data.as_ref().unwrap()["password"].clone();
    ensure!(values.contains(&want));
    synced(s, 0, "adopt", "kubelb-stale", |sec| {
        data_of(sec).get("password").map(Vec::as_slice) == Some(want.as_bytes())
    })
    .await?;
    tenant_shows(s, 0, "adopt", "kubelb-stale", SyncSecretPhase::Synced).await?;
    // Let every start-up reconcile finish before counting.
    settled(s).await?;
    let pair = s.pair.lock().await;
    let ccm = writes_by_resource(&pair.ccms[0].metrics()?, "kubelb_ccm");
    let manager = writes_by_resource(&pair.manager.metrics()?, "kubelb_manager");
    drop(pair);
    println!("    writes after taking over: ccm {ccm:?}, manager {manager:?}");
    // KubeLB's copies carry stringData: each is rewritten once to data only
    // (no value in clear in the management cluster): a merge patch that
    // drops stringData, then our apply. Their Secrets follow the copy's
    // new metadata (at most once per copy write), and so does the copy's
    // status. Tenant objects, which KubeLB never gave a status, get
    // theirs. The manager never patches a copy itself.
    let copies_adopted = 2.0;
    let expected = [
        (
            &ccm,
            "syncsecrets/patch",
            2.0 * copies_adopted,
            "each adopted copy with stringData: two writes",
        ),
        (
            &manager,
            "syncsecrets/patch",
            0.0,
            "the manager patched an adopted copy",
        ),
        (
            &ccm,
            "syncsecrets/status/patch",
            copies_adopted,
            "expected one tenant status write per object",
        ),
    ];
    for (writes, key, want, why) in expected {
        let have = writes.get(key).copied().unwrap_or(0.0);
        ensure!(have == want, "{why}: {key} = {have}");
    }
    // At most once per copy write, and the stale Secret's content once.
    for (key, most) in [
        ("secrets/patch", 2.0 * copies_adopted + 1.0),
        ("syncsecrets/status/patch", 2.0 * copies_adopted),
    ] {
        let have = manager.get(key).copied().unwrap_or(0.0);
        ensure!(
            have <= most,
            "the manager wrote {key} {have} times, more than once per copy write"
        );
    }
    Ok(())
}

pub(super) async fn secret_synchronizer_takes_labelled_secrets_only(
    s: &Shared,
) -> anyhow::Result<()> {
    let client = tenant_client(s, 0).await;
    ensure_namespace(&client, "synchronizer").await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "synchronizer");
    let syncsecrets: Api<SyncSecret> = Api::namespaced(client, "synchronizer");
    let (plain_value, labelled_value) = (s.value("unlabelled"), s.value("labelled"));
    let secret = |name: &str, value: &str, labelled: bool| Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: labelled
                .then(|| [(LABEL_MANAGED_BY.to_owned(), MANAGED_BY_KUBELB.to_owned())].into()),
            ..Default::default()
        },
        string_data: Some([("value".to_owned(), value.to_owned())].into()),
        ..Default::default()
    };
    secrets
        .create(
            &PostParams::default(),
            &secret("plain", &plain_value, false),
        )
        .await?;
    secrets
        .create(
            &PostParams::default(),
            &secret("labelled", &labelled_value, true),
        )
        .await?;
    synced(s, 0, "synchronizer", "labelled", |sec| {
        data_of(sec).get("value").map(Vec::as_slice) == Some(labelled_value.as_bytes())
    })
    .await?;
    ensure!(
        syncsecrets.get_opt("plain").await?.is_none(),
        "an unlabelled Secret became a SyncSecret"
    );
    let plain = secrets.get("plain").await?;
    ensure!(
        plain.finalizers().is_empty(),
        "an unlabelled Secret was touched"
    );
    ensure!(
        secrets
            .get("labelled")
            .await?
            .finalizers()
            .iter()
            .any(|f| f == FINALIZER),
        "the labelled Secret lacks the cleanup finalizer"
    );

    // The SyncSecret edited on its own is put back as its Secret says:
    // the synchronizer hears of the change.
    let edited = k8s_openapi::ByteString(s.value("edited").into_bytes());
    let edit = json!({"data": {"value": edited}});
    syncsecrets
        .patch("labelled", &PatchParams::default(), &Patch::Merge(&edit))
        .await?;
    eventually("the edited SyncSecret put back", WAIT, || async {
        let now = syncsecrets
            .get("labelled")
            .await
            .map_err(|e| e.to_string())?;
        let value = now.data.as_ref().and_then(|d| d.get("value"));
        match value {
            Some(v) if v.0 == labelled_value.as_bytes() => Ok(()),
            _ => Err("not put back yet".to_owned()),
        }
    })
    .await?;

    // The SyncSecret deleted on its own comes back while its Secret is
    // labelled: the synchronizer hears of the deletion.
    let first = syncsecrets.get("labelled").await?.uid();
    syncsecrets
        .delete("labelled", &DeleteParams::default())
        .await?;
    eventually("the SyncSecret made anew from its Secret", WAIT, || async {
        let now = syncsecrets
            .get_opt("labelled")
            .await
            .map_err(|e| e.to_string())?;
        match now {
            Some(ss) if ss.uid() != first => Ok(()),
            Some(_) => Err("still the deleted one".to_owned()),
            None => Err("absent".to_owned()),
        }
    })
    .await?;
    synced(s, 0, "synchronizer", "labelled", |sec| {
        data_of(sec).get("value").map(Vec::as_slice) == Some(labelled_value.as_bytes())
    })
    .await?;

    // Deleting the Secret deletes its SyncSecret, and with it the copy.
    secrets.delete("labelled", &DeleteParams::default()).await?;
    gone(&syncsecrets, "labelled").await?;
    // And the Secret goes once the ccm released its finalizer: the last
    // write of this test, not one another test would count.
    gone(&secrets, "labelled").await?;
    Ok(())
}
