//! Objects our types cannot read, in a tenant cluster and as copies.

use crate::support::*;

/// The evil tenant admin replaces the CRD in its own cluster and writes
/// what our types cannot read, or read only as Go does: the tenant's other
/// objects sync, the bad one says why, and a restart of its ccm (whose
/// first list holds them all) changes nothing.
pub(crate) async fn undecodable_tenant_objects(
    pair: &mut Pair,
    values: &mut Values,
) -> anyhow::Result<()> {
    let evil = pair.tenants[EVIL].clone();
    install_crd_as(&evil, &crd_with_data(anything_data())).await?;
    schema_served(&evil, NS, json!({"data": {"k": 1}})).await?;
    let api = dynamic(&evil, NS);
    let in_clear = values.fresh("evil-string-data");
    // Leftover bits ("QR==" is "A" to Go) and line breaks: Go reads both.
    create(
        &api,
        "leftover-bits",
        json!({"data": {"k": "QR=="}, "stringData": {"s": in_clear}}),
    )
    .await?;
    create(
        &api,
        "line-breaks",
        json!({"data": {"k": "aGVs\nbG8=\r\n"}}),
    )
    .await?;
    // Not a string at all, beside a value that must not leak.
    let hidden = values.fresh("evil-hidden");
    create(
        &api,
        "not-a-string",
        json!({"data": {"k": 42}, "stringData": {"s": hidden}}),
    )
    .await?;
    // A status in a form the CRD's `date-time` takes and ours does not.
    let odd = values.fresh("evil-odd");
    create(&api, "odd-status", json!({"stringData": {"s": odd}})).await?;
    let forged = api
        .patch_status(
            "odd-status",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Synced", "conditions": [{
                "type": "Synced", "status": "True", "reason": "Forged", "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00"}]}})),
        )
        .await;
    match forged {
        Ok(_) => println!("    a status with a zone-less time was stored"),
        Err(kube::Error::Api(s)) if s.code == 422 => {
            println!(
                "    a status with a zone-less time was refused: {}",
                s.message
            );
        }
        Err(e) => bail!("forging a status: {e}"),
    }

    secret_holds(pair, EVIL, "leftover-bits", "k", b"A").await?;
    secret_holds(pair, EVIL, "leftover-bits", "s", in_clear.as_bytes()).await?;
    secret_holds(pair, EVIL, "line-breaks", "k", b"hello").await?;
    secret_holds(pair, EVIL, "odd-status", "s", odd.as_bytes()).await?;
    let lenient = dynamic(&evil, NS);
    let (reason, message) = eventually("not-a-string reported", WAIT, || async {
        let (reason, message) = verdict(&lenient, "not-a-string").await?;
        if reason == "Undecodable" {
            Ok((reason, message))
        } else {
            Err(format!("{reason}: {message}"))
        }
    })
    .await?;
    println!("    not-a-string: {reason}: {message}");
    ensure!(
        message.contains("field data.k should be a string"),
        "the message names the field: {message}"
    );
    has_event(&evil, NS, "not-a-string", "Undecodable").await?;
    metric_reads(
        &pair.ccms[EVIL],
        r#"kubelb_ccm_undecodable_objects{cluster="tenant",namespace="hostile"}"#,
        1.0,
    )
    .await?;
    good_tenant_converges(pair, "during-tenant-attack", &values.fresh("good-1")).await?;

    // Both restarted: their first lists hold every object above.
    pair.restart_all().await?;
    for c in pair.controllers() {
        ready(c)?;
    }
    let after = values.fresh("evil-after");
    create(&api, "after-restart", json!({"stringData": {"s": after}})).await?;
    secret_holds(pair, EVIL, "after-restart", "s", after.as_bytes()).await?;
    good_tenant_converges(pair, "after-tenant-attack", &values.fresh("good-2")).await?;
    ensure!(
        verdict(&lenient, "not-a-string")
            .await
            .map_err(anyhow::Error::msg)?
            .0
            == "Undecodable",
        "still reported after the restart"
    );
    Ok(())
}

/// The evil tenant's management identity writes copies itself: our CRD
/// refuses what only Go would read, with a clear message; on a management
/// cluster whose CRD takes anything, the manager reports the copy it
/// cannot read and keeps serving every tenant, across a restart too.
pub(crate) async fn undecodable_copies(pair: &mut Pair, values: &mut Values) -> anyhow::Result<()> {
    let (evil_ns, identity) = evil_identity(pair).await?;
    let as_evil = client_from(&identity).await?;
    let copies = dynamic(&as_evil, &evil_ns);
    // Named as a ccm names them (the tenant limits refuse any other name).
    let (kubelb_shape, not_a_string) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let (kubelb_shape, not_a_string) = (kubelb_shape.as_str(), not_a_string.as_str());
    let copy = |name: &str, data: Value| {
        let mut o = object(name, json!({"data": data}));
        o.metadata.namespace = Some(evil_ns.clone());
        o.labels_mut().insert(
            syncsecret_api::contract::LABEL_ORIGIN_NAME.to_owned(),
            name.to_owned(),
        );
        o
    };
    match copies
        .create(
            &PostParams::default(),
            &copy(&uuid::Uuid::new_v4().to_string(), json!({"k": "QR=="})),
        )
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 422 => {
            println!("    refused copy: {}", s.message);
            ensure!(
                s.message
                    .contains("data values must be base64 exactly as an encoder writes it"),
                "a clear message: {}",
                s.message
            );
        }
        other => bail!("a copy with leftover bits was not refused: {other:?}"),
    }

    // A management cluster still on KubeLB's CRD (`format: byte`): what
    // Go reads is read as Go reads it.
    let management = pair.management.clone();
    install_crd_as(&management, &crd_with_data(kubelb_data())).await?;
    schema_served(&management, &evil_ns, json!({"data": {"k": "QR=="}})).await?;
    copies
        .create(
            &PostParams::default(),
            &copy(kubelb_shape, json!({"k": "QR=="})),
        )
        .await?;
    // A CRD that takes anything.
    install_crd_as(&management, &crd_with_data(anything_data())).await?;
    schema_served(&management, &evil_ns, json!({"data": {"k": 1}})).await?;
    let hidden = values.fresh("evil-copy");
    let hidden = serde_json::to_value(k8s_openapi::ByteString(hidden.into_bytes()))?;
    let bad = copy(not_a_string, json!({"k": 42, "s": hidden}));
    // The tenant limits refuse this from the tenant (`size` of a number
    // fails, and a policy that fails denies); written as an admin, it
    // stands for one stored before them, and proves the manager's own
    // reading.
    dynamic(&management, &evil_ns)
        .create(&PostParams::default(), &bad)
        .await?;
    let lenient = dynamic(&management, &evil_ns);
    eventually(
        "the manager reports the copy it cannot read",
        WAIT,
        || async {
            let (reason, message) = verdict(&lenient, not_a_string).await?;
            if reason == "Undecodable" && message.contains("field data.k should be a string") {
                Ok(())
            } else {
                Err(format!("{reason}: {message}"))
            }
        },
    )
    .await?;
    has_event(&management, &evil_ns, not_a_string, "Undecodable").await?;
    metric_reads(
        &pair.manager,
        &format!(
            r#"kubelb_manager_undecodable_objects{{cluster="management",namespace="{evil_ns}"}}"#
        ),
        1.0,
    )
    .await?;
    let secrets: Api<Secret> = Api::namespaced(management.clone(), &evil_ns);
    eventually(
        "the KubeLB-shaped copy synced as Go reads it",
        WAIT,
        || async {
            let (reason, _) = verdict(&lenient, kubelb_shape).await?;
            if reason != "SecretSynced" {
                return Err(reason);
            }
            let uid = lenient
                .get(kubelb_shape)
                .await
                .map_err(|e| e.to_string())?
                .uid()
                .ok_or("no uid")?;
            let secret = secrets.get(&uid).await.map_err(|e| e.to_string())?;
            let k = secret.data.and_then(|d| d.get("k").cloned());
            (k.map(|v| v.0) == Some(b"A".to_vec()))
                .then_some(())
                .ok_or_else(|| "the Secret does not hold A".to_owned())
        },
    )
    .await?;
    good_tenant_converges(pair, "during-copy-attack", &values.fresh("good-3")).await?;

    // The manager's first list after a restart holds the copy it cannot read.
    pair.manager.restart()?;
    pair.manager.wait_ready().await?;
    ready(&pair.manager)?;
    good_tenant_converges(pair, "after-copy-attack", &values.fresh("good-4")).await?;
    let tenant = pair
        .tenant_shows(GOOD, NS, "after-copy-attack", SyncSecretPhase::Synced)
        .await?;
    ensure!(tenant.status.is_some());

    // Back on our CRD: the copies stay as they are, nothing else changes.
    copies.delete(not_a_string, &Default::default()).await?;
    install_crd_as(&management, &generated_crd()?).await?;
    install_crd_as(&pair.tenants[EVIL], &generated_crd()?).await?;
    good_tenant_converges(pair, "after-crd-restored", &values.fresh("good-5")).await?;
    Ok(())
}
