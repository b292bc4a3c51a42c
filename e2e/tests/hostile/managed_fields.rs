//! A copy's managedFields: the API server keeps the entries a client
//! sends, so the policy bounds them in width, depth and characters.

use syncsecret_api::bounds::{MANAGED_FIELDS_BYTES, MANAGED_FIELDS_ENTRIES, MANAGED_FIELDS_WIDTH};
use syncsecret_e2e::kube_util::{MANAGED_FIELDS_HEADROOM, made_up_fields, manager_lease};

use crate::support::*;

/// Made-up fields in managedFields were stored as sent: 1.4 MiB on every
/// copy, which etcd keeps and the manager reads, beyond what the data and
/// metadata bounds count. The tenant's identity is refused past the width,
/// the depth and the characters of the bound, each naming it; a copy at
/// the bound syncs, and the tenant's next write of it (after the
/// manager's status entry) is still admitted.
pub(crate) async fn managed_fields_are_bounded(
    pair: &mut Pair,
    values: &mut Values,
) -> anyhow::Result<()> {
    let (evil_ns, identity) = evil_identity(pair).await?;
    let copies = dynamic(&client_from(&identity).await?, &evil_ns);
    let lease_before = manager_lease(&pair.management).await?;
    let with_fields = |entry: Value| -> anyhow::Result<DynamicObject> {
        let mut o = copy_in(
            &evil_ns,
            &uuid::Uuid::new_v4().to_string(),
            json!({"data": {"k": "dg=="}}),
        );
        o.metadata.managed_fields = Some(vec![serde_json::from_value(entry)?]);
        Ok(o)
    };
    let entry = |fields: Value| {
        json!({
            "manager": "evil", "operation": "Update",
            "apiVersion": syncsecret_api::v1alpha1::API_VERSION,
            "fieldsType": "FieldsV1", "fieldsV1": fields,
        })
    };

    // 200 levels deep (serde_json reads 128; this used to fail every list
    // of copies): refused by the depth a copy has.
    let mut deep = json!({});
    for _ in 0..200 {
        deep = json!({ "f:x": deep });
    }
    let message = refusal(
        "managedFields 200 levels deep",
        copies
            .create(&PostParams::default(), &with_fields(entry(deep))?)
            .await,
    )?;
    ensure!(
        message.contains("managedFields name fields below the 4 levels a copy has"),
        "{message}"
    );

    // Wider than the width at one depth: refused by the count, before any
    // character is counted.
    let width = MANAGED_FIELDS_WIDTH.default;
    let wide: serde_json::Map<String, Value> =
        (0..=width).map(|i| (format!("f:{i}"), json!({}))).collect();
    let message = refusal(
        &format!("managedFields of {} fields at one depth", width + 1),
        copies
            .create(
                &PostParams::default(),
                &with_fields(entry(json!({ "f:spec": wide })))?,
            )
            .await,
    )?;
    ensure!(
        message.contains(&format!(
            "fields at one depth of managedFields per copy, over the limit of {width}"
        )),
        "{message}"
    );

    // The size, 1.4 MiB in fields few enough to count: refused by
    // the characters, naming the size met.
    let limit = MANAGED_FIELDS_BYTES.default;
    for (what, chars) in [("1.4 MiB", 1_400_000), ("one allowance", limit as usize)] {
        let message = refusal(
            &format!("made-up managedFields of {what}"),
            copies
                .create(&PostParams::default(), &with_fields(made_up_fields(chars))?)
                .await,
        )?;
        let met: u64 = message
            .split(&format!(
                " {}, over the limit of ",
                MANAGED_FIELDS_BYTES.what
            ))
            .next()
            .and_then(|m| m.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no size met in «{message}»"))?;
        ensure!(
            met > limit && met as usize >= chars,
            "the refusal met {met} characters for {chars} made up"
        );
    }

    // Names that JSON escapes (`<` is stored as six bytes): a few fields
    // that fit counted a character a byte are refused by what they store.
    let escaped: serde_json::Map<String, Value> = (0..6)
        .map(|i| (format!("f:{}{i}", "<".repeat(100)), json!({})))
        .collect();
    let message = refusal(
        "six made-up fields of 100 characters JSON escapes",
        copies
            .create(
                &PostParams::default(),
                &with_fields(entry(json!({ "f:spec": escaped })))?,
            )
            .await,
    )?;
    ensure!(message.contains(MANAGED_FIELDS_BYTES.what), "{message}");

    // More entries than the bound (the API server caps updates' at ten,
    // not applies'), each costing its manager's name and time.
    let entries = MANAGED_FIELDS_ENTRIES.default as usize + 1;
    let mut o = with_fields(entry(json!({})))?;
    o.metadata.managed_fields = Some(
        (0..entries)
            .map(|i| {
                serde_json::from_value(json!({
                    "manager": format!("evil-{i}"), "operation": "Apply",
                    "apiVersion": syncsecret_api::v1alpha1::API_VERSION,
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {format!("f:{i}"): {}}},
                }))
            })
            .collect::<Result<_, _>>()?,
    );
    let message = refusal(
        &format!("{entries} managedFields entries"),
        copies.create(&PostParams::default(), &o).await,
    )?;
    ensure!(
        message.contains(
            &MANAGED_FIELDS_ENTRIES.refusal_with("", &MANAGED_FIELDS_ENTRIES.default.to_string())
        ),
        "{message}"
    );

    // At the bound but for the room the manager's own entries take: it
    // syncs, and the tenant's next write of it, after the manager wrote
    // its status, is admitted and synced too.
    let at_bound = with_fields(made_up_fields(limit as usize - MANAGED_FIELDS_HEADROOM))?;
    let name = at_bound.name_any();
    copies.create(&PostParams::default(), &at_bound).await?;
    synced(&copies, &name, "a copy with managedFields at the bound").await?;
    let value = values.fresh("evil-managed-fields");
    copies
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"data": {"k": k8s_openapi::ByteString(value.clone().into_bytes())}}),
            ),
        )
        .await
        .context("the tenant's write of its copy at the bound, after the manager's status")?;
    let uid = copies.get(&name).await?.uid().context("no UID")?;
    let secrets: Api<Secret> = Api::namespaced(pair.management.clone(), &evil_ns);
    eventually("the Secret holds the tenant's new value", WAIT, || async {
        let secret = secrets.get_opt(&uid).await.map_err(|e| e.to_string())?;
        let held = secret
            .and_then(|s| s.data)
            .and_then(|d| d.get("k").cloned());
        (held.map(|v| v.0) == Some(value.clone().into_bytes()))
            .then_some(())
            .ok_or_else(|| "not yet".to_owned())
    })
    .await?;
    copies.delete(&name, &Default::default()).await?;
    gone(&copies, &name).await?;

    good_tenant_converges(pair, "after-managed-fields", &values.fresh("good-mf")).await?;
    ready(&pair.manager)?;
    let lease_after = manager_lease(&pair.management).await?;
    ensure!(
        lease_after == lease_before,
        "the manager's Lease changed hands: {lease_before:?} → {lease_after:?}"
    );
    Ok(())
}
