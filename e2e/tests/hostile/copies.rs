//! Copies no ccm would write, oversized metadata, and a flood over the quota.

use syncsecret_api::bounds::METADATA_BYTES;

use crate::support::*;

/// The management cluster bounds what a tenant writes, by the API server,
/// whatever the tenant's objects say: copies in a shape no ccm writes,
/// oversized metadata, and more copies than its quota are refused, and the
/// tenant sees why in its own status.
pub(crate) async fn copies_are_bounded_by_the_management_cluster(
    pair: &mut Pair,
    values: &mut Values,
) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::ResourceQuota;
    let (evil_ns, identity) = evil_identity(pair).await?;
    let copies = dynamic(&client_from(&identity).await?, &evil_ns);
    let uuid = || uuid::Uuid::new_v4().to_string();
    let copy = |name: &str, extra: Value| {
        let mut body = json!({"data": {"k": "dg=="}});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        copy_in(&evil_ns, name, body)
    };
    let big = "x".repeat(20_000);
    let over_metadata = format!("{}, over the limit", METADATA_BYTES.what);
    for (what, o, expected) in [
        (
            "not named by a UID",
            copy("by-hand", json!({})),
            "named by its tenant object's UID",
        ),
        (
            "with stringData",
            copy(&uuid(), json!({"stringData": {"k": values.fresh("clear")}})),
            "data only",
        ),
        (
            "oversized metadata",
            {
                let mut o = copy(&uuid(), json!({}));
                o.annotations_mut().insert("big".to_owned(), big.clone());
                o
            },
            over_metadata.as_str(),
        ),
        (
            // 1,100 characters, 4,400 bytes: the cap counts bytes.
            "with metadata over the cap in bytes, not in characters",
            {
                let mut o = copy(&uuid(), json!({}));
                o.annotations_mut()
                    .insert("wide".to_owned(), "\u{1D11E}".repeat(1_100));
                o
            },
            over_metadata.as_str(),
        ),
    ] {
        match copies.create(&PostParams::default(), &o).await {
            Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 || s.code == 413 => {
                ensure!(s.message.contains(expected), "{what}: {}", s.message);
                println!(
                    "    a copy {what} refused: {}",
                    s.message.chars().take(200).collect::<String>()
                );
            }
            other => bail!("a copy {what} was not refused: {other:?}"),
        }
    }

    // Through the tenant's own ccm: oversized metadata is refused, and said.
    let api = dynamic(&pair.tenants[EVIL], NS);
    let mut heavy = object(
        "heavy-metadata",
        json!({"stringData": {"v": values.fresh("heavy")}}),
    );
    heavy.annotations_mut().insert("big".to_owned(), big);
    api.create(&PostParams::default(), &heavy).await?;
    let message = eventually("the tenant told its copy is too large", WAIT, || async {
        let (reason, message) = verdict(&api, "heavy-metadata").await?;
        (reason == "ApplyCopyFailed" && message.contains(METADATA_BYTES.what))
            .then(|| message.clone())
            .ok_or(format!("{reason}: {message}"))
    })
    .await?;
    println!(
        "    heavy-metadata: {}",
        message.chars().take(240).collect::<String>()
    );
    ensure!(
        !message.contains("xxxxxxxx"),
        "the metadata value reached the message"
    );

    // A flood beyond the tenant's quota: the platform sets it to what the
    // tenant holds plus three.
    let quotas: Api<ResourceQuota> = Api::namespaced(pair.management.clone(), &evil_ns);
    let used = eventually("the quota counted", WAIT, || async {
        let q = quotas
            .get(syncsecret_api::admission::QUOTA_NAME)
            .await
            .map_err(|e| e.to_string())?;
        q.status
            .and_then(|s| s.used)
            .and_then(|u| u.get("count/syncsecrets.kubelb.k8c.io").cloned())
            .and_then(|q| q.0.parse::<u32>().ok())
            .ok_or_else(|| "not counted yet".to_owned())
    })
    .await?;
    quotas
        .patch(
            syncsecret_api::admission::QUOTA_NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hard": {"count/syncsecrets.kubelb.k8c.io": (used + 3).to_string()}}})),
        )
        .await?;
    let flood: Vec<String> = (0..6).map(|i| format!("flood-{i}")).collect();
    for name in &flood {
        create(
            &api,
            name,
            json!({"stringData": {"v": values.fresh("flood")}}),
        )
        .await?;
    }
    let (synced, refused) = eventually("the flood judged", WAIT, || async {
        let (mut synced, mut refused) = (0, 0);
        for name in &flood {
            match verdict(&api, name).await {
                Ok((r, _)) if r == "SecretSynced" => synced += 1,
                Ok((r, m)) if r == "ApplyCopyFailed" && m.contains("exceeded quota") => {
                    refused += 1
                }
                _ => {}
            }
        }
        (synced + refused == flood.len())
            .then_some((synced, refused))
            .ok_or_else(|| format!("{synced} synced, {refused} refused"))
    })
    .await?;
    println!(
        "    a flood of {}: {synced} synced, {refused} refused by the quota",
        flood.len()
    );
    ensure!(
        synced == 3 && refused == 3,
        "{synced} synced, {refused} refused"
    );
    good_tenant_converges(pair, "during-flood", &values.fresh("good-flood")).await?;
    ready(&pair.manager)?;
    // The platform gives the quota back; the refused ones sync by themselves.
    quotas
        .patch(
            syncsecret_api::admission::QUOTA_NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hard": {"count/syncsecrets.kubelb.k8c.io":
                syncsecret_api::bounds::COPIES.default.to_string()}}})),
        )
        .await?;
    eventually(
        "the whole flood synced once there is room",
        WAIT,
        || async {
            for name in &flood {
                let (reason, _) = verdict(&api, name).await?;
                if reason != "SecretSynced" {
                    return Err(format!("{name}: {reason}"));
                }
            }
            Ok(())
        },
    )
    .await?;
    Ok(())
}
