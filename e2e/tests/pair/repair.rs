//! What the controllers put back: a copy or Secret tampered with in the
//! management cluster, and orphans left while a controller was down.

use std::time::{Duration, Instant};

use anyhow::ensure;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use syncsecret_api::SyncSecret;
use syncsecret_api::contract::{LABEL_ORIGIN_NAME, tenant_namespace};
use syncsecret_e2e::kube_util::eventually;

use super::support::{create, data_of, management, sync_secret, synced, tenant_client};
use super::{Shared, TENANTS, WAIT};

pub(super) async fn tampering_in_the_management_cluster_is_repaired(
    s: &Shared,
) -> anyhow::Result<()> {
    let value = s.value("drift");
    let mut obj = sync_secret("guarded");
    obj.labels_mut().insert("app".into(), "guarded".into());
    obj.string_data = Some([("token".to_owned(), value.clone())].into());
    create(s, 0, "drift", obj).await?;
    let holds_value =
        |sec: &Secret| data_of(sec).get("token").map(Vec::as_slice) == Some(value.as_bytes());
    let (copy, secret) = synced(s, 0, "drift", "guarded", holds_value).await?;
    let mgmt = management(s).await;
    let ns = tenant_namespace(TENANTS[0]);
    let copies: Api<SyncSecret> = Api::namespaced(mgmt.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(mgmt, &ns);
    let hand = PatchParams::default();
    let mut report = Vec::new();

    // 1. Someone edits the copy's payload and drops a label: the ccm restores it.
    let t = Instant::now();
    copies
        .patch(
            &copy.name_any(),
            &hand,
            &Patch::Merge(
                json!({"metadata": {"labels": {"app": null}}, "stringData": {"token": "tampered"}}),
            ),
        )
        .await?;
    eventually("copy restored", WAIT, || async {
        let c = copies
            .get(&copy.name_any())
            .await
            .map_err(|e| e.to_string())?;
        // A copy carries data only: the tampered stringData is gone.
        let ok = c.string_data.is_none()
            && c.data
                .as_ref()
                .and_then(|d| d.get("token"))
                .map(|v| v.0.as_slice())
                == Some(value.as_bytes())
            && c.labels().get("app").map(String::as_str) == Some("guarded");
        ok.then_some(()).ok_or_else(|| "still tampered".to_owned())
    })
    .await?;
    synced(s, 0, "drift", "guarded", holds_value).await?;
    report.push(("copy edited", t.elapsed()));

    // 2. Someone deletes the copy: the ccm makes it again (the manager lets
    // the old one go with its Secret first), and a new Secret follows.
    let t = Instant::now();
    copies
        .delete(&copy.name_any(), &DeleteParams::default())
        .await?;
    eventually("copy recreated", WAIT, || async {
        let c = copies
            .get_opt(&copy.name_any())
            .await
            .map_err(|e| e.to_string())?;
        match c {
            Some(c) if c.uid() != copy.uid() && c.metadata.deletion_timestamp.is_none() => Ok(()),
            _ => Err("not recreated yet".to_owned()),
        }
    })
    .await?;
    let (copy, secret2) = synced(s, 0, "drift", "guarded", holds_value).await?;
    ensure!(
        secrets.get_opt(&secret.name_any()).await?.is_none(),
        "the old copy's Secret was left behind"
    );
    report.push(("copy deleted", t.elapsed()));

    // 3. Someone edits the Secret's data and removes our label: the manager
    // restores them; a label of their own stays.
    let t = Instant::now();
    secrets
        .patch(
            &secret2.name_any(),
            &hand,
            &Patch::Merge(json!({
                "metadata": {"labels": {LABEL_ORIGIN_NAME: null, "someone": "else"}},
                "stringData": {"token": "tampered", "extra": "added"},
            })),
        )
        .await?;
    let restored = eventually("Secret restored", WAIT, || async {
        let sec = secrets
            .get(&secret2.name_any())
            .await
            .map_err(|e| e.to_string())?;
        let d = data_of(&sec);
        let ok = d.get("token").map(Vec::as_slice) == Some(value.as_bytes())
            && sec.labels().get(LABEL_ORIGIN_NAME).map(String::as_str) == Some("guarded");
        ok.then_some(sec).ok_or_else(|| "still tampered".to_owned())
    })
    .await?;
    report.push(("Secret edited", t.elapsed()));
    ensure!(
        restored.labels().get("someone").map(String::as_str) == Some("else"),
        "a foreign label was removed"
    );

    // 4. Someone deletes the Secret: the manager makes it again.
    let t = Instant::now();
    secrets
        .delete(&secret2.name_any(), &DeleteParams::default())
        .await?;
    synced(s, 0, "drift", "guarded", holds_value).await?;
    ensure!(copy.uid().is_some());
    report.push(("Secret deleted", t.elapsed()));

    for (what, took) in &report {
        println!("    repaired after {what}: {:.2} s", took.as_secs_f64());
        ensure!(
            *took < Duration::from_secs(10),
            "{what}: repair took {took:?} (goal: under 10 s)"
        );
    }
    Ok(())
}

pub(super) async fn orphans_left_while_a_controller_was_down_are_swept(
    s: &Shared,
) -> anyhow::Result<()> {
    let mgmt = management(s).await;
    let ns = tenant_namespace(TENANTS[0]);
    let copies: Api<SyncSecret> = Api::namespaced(mgmt.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(mgmt.clone(), &ns);
    // Unrelated objects in the same namespace, without our labels.
    let mut unrelated = sync_secret("unrelated-copy");
    unrelated.string_data = Some([("k".to_owned(), "v".to_owned())].into());
    copies.create(&PostParams::default(), &unrelated).await?;
    let foreign = Secret {
        metadata: ObjectMeta {
            name: Some("unrelated-secret".into()),
            ..Default::default()
        },
        string_data: Some([("k".to_owned(), "v".to_owned())].into()),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &foreign).await?;

    let tenant: Api<SyncSecret> = Api::namespaced(tenant_client(s, 0).await, "orphans");
    for name in ["left-by-ccm", "left-by-manager"] {
        let mut obj = sync_secret(name);
        obj.string_data = Some([("k".to_owned(), s.value("orphan"))].into());
        create(s, 0, "orphans", obj).await?;
    }
    let (copy1, secret1) = synced(s, 0, "orphans", "left-by-ccm", |_| true).await?;
    let (copy2, secret2) = synced(s, 0, "orphans", "left-by-manager", |_| true).await?;
    let strip = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    let pp = PatchParams::default();

    // 1. The ccm is down; someone strips the tenant finalizer and deletes the
    // object. Back up, the ccm's sweep deletes the copy, the manager its Secret.
    s.pair.lock().await.ccms[0].stop()?;
    tenant.patch("left-by-ccm", &pp, &strip).await?;
    tenant
        .delete("left-by-ccm", &DeleteParams::default())
        .await?;
    let t = Instant::now();
    s.pair.lock().await.ccms[0].start().await?;
    eventually("orphaned copy and its Secret gone", WAIT, || async {
        let c = copies
            .get_opt(&copy1.name_any())
            .await
            .map_err(|e| e.to_string())?;
        let sec = secrets
            .get_opt(&secret1.name_any())
            .await
            .map_err(|e| e.to_string())?;
        (c.is_none() && sec.is_none())
            .then_some(())
            .ok_or_else(|| "still there".to_owned())
    })
    .await?;
    println!(
        "    orphaned copy swept {:.2} s after the ccm started",
        t.elapsed().as_secs_f64()
    );
    // Counted (before the ccm restarts below and its counters start over).
    let ccm_swept = s.pair.lock().await.ccms[0].metric_sum("kubelb_ccm_orphans_deleted_total")?;

    // 2. The manager is down; someone removes the Secret's ownerReference (so
    // the garbage collector will not take it) and force-deletes the copy.
    // Back up, the manager's sweep deletes the Secret.
    secrets
        .patch(
            &secret2.name_any(),
            &pp,
            &Patch::Merge(json!({"metadata": {"ownerReferences": null}})),
        )
        .await?;
    s.pair.lock().await.manager.stop()?;
    s.pair.lock().await.ccms[0].stop()?;
    tenant.patch("left-by-manager", &pp, &strip).await?;
    tenant
        .delete("left-by-manager", &DeleteParams::default())
        .await?;
    copies.patch(&copy2.name_any(), &pp, &strip).await?;
    copies
        .delete(&copy2.name_any(), &DeleteParams::default())
        .await?;
    let t = Instant::now();
    s.pair.lock().await.manager.start().await?;
    s.pair.lock().await.ccms[0].start().await?;
    eventually("orphaned Secret gone", WAIT, || async {
        let sec = secrets
            .get_opt(&secret2.name_any())
            .await
            .map_err(|e| e.to_string())?;
        sec.is_none()
            .then_some(())
            .ok_or_else(|| "still there".to_owned())
    })
    .await?;
    println!(
        "    orphaned Secret swept {:.2} s after the manager started",
        t.elapsed().as_secs_f64()
    );

    // Counted, and nothing of anyone else's touched.
    let mgr_swept = s
        .pair
        .lock()
        .await
        .manager
        .metric_sum("kubelb_manager_orphans_deleted_total")?;
    ensure!(
        ccm_swept >= 1.0 && mgr_swept >= 1.0,
        "orphans counted: ccm {ccm_swept}, manager {mgr_swept}"
    );
    ensure!(
        copies.get_opt("unrelated-copy").await?.is_some(),
        "an unrelated copy was swept"
    );
    ensure!(
        secrets.get_opt("unrelated-secret").await?.is_some(),
        "an unrelated Secret was swept"
    );
    Ok(())
}
