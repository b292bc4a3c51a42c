//! A copy's data, bounded in keys and in bytes counting its keys.

use syncsecret_api::bounds::{DATA_BYTES, DATA_KEYS, ENTRY_BYTES};

use crate::support::*;

/// Keys cost as much as values: 4,096 keys of 253 characters with empty
/// values were admitted (the cap counted values only), and the manager
/// retried for ever an apply the API server could not store (the Secret's
/// managedFields name every key again). Refused now by the count of keys,
/// and by bytes with keys counted; a copy that holds them anyway is
/// refused by the manager before any write.
pub(crate) async fn data_is_bounded_in_keys_and_bytes(
    pair: &mut Pair,
    values: &mut Values,
) -> anyhow::Result<()> {
    let (evil_ns, identity) = evil_identity(pair).await?;
    let copies = dynamic(&client_from(&identity).await?, &evil_ns);
    let uuid = || uuid::Uuid::new_v4().to_string();
    let keys = |n: u64, len: usize, value: &str| -> Value {
        let data: serde_json::Map<String, Value> = (0..n)
            .map(|i| (format!("{i:0>len$}"), json!(value)))
            .collect();
        json!({ "data": data })
    };
    let (max_keys, max_bytes) = (DATA_KEYS.default, DATA_BYTES.default);

    // The attack, and one key over: refused by the count of keys.
    for (n, len) in [(4096, 253), (max_keys + 1, 1)] {
        let message = refusal(
            &format!("a copy of {n} keys of {len} characters"),
            copies
                .create(
                    &PostParams::default(),
                    &copy_in(&evil_ns, &uuid(), keys(n, len, "")),
                )
                .await,
        )?;
        let expected = format!("{n} data keys per copy, over the limit of {max_keys}");
        ensure!(message.contains(&expected), "expected «{expected}»");
    }
    // As many keys as allowed, of 253 characters, with four bytes each:
    // under the count, over the bytes only because keys count (twice).
    let at_count = keys(max_keys, 253, "dg==");
    let bytes = max_keys * (2 * 253 + 4 + ENTRY_BYTES);
    ensure!(bytes > max_bytes, "the probe fits: {bytes} bytes");
    let message = refusal(
        &format!("a copy of {max_keys} keys of 253 characters"),
        copies
            .create(
                &PostParams::default(),
                &copy_in(&evil_ns, &uuid(), at_count),
            )
            .await,
    )?;
    let expected = DATA_BYTES.refusal(bytes);
    ensure!(message.contains(&expected), "expected «{expected}»");

    // Through the tenant's own ccm: its object says which bound it met.
    let api = dynamic(&pair.tenants[EVIL], NS);
    let many: serde_json::Map<String, Value> = (0..=max_keys)
        .map(|i| (format!("k{i}"), json!(values.fresh("key"))))
        .collect();
    create(&api, "many-keys", json!({ "stringData": many })).await?;
    let message = eventually(
        "the tenant told its copy has too many keys",
        WAIT,
        || async {
            let (reason, message) = verdict(&api, "many-keys").await?;
            (reason == "ApplyCopyFailed" && message.contains("data keys per copy, over the limit"))
                .then(|| message.clone())
                .ok_or(format!("{reason}: {message}"))
        },
    )
    .await?;
    println!("    many-keys: {message}");
    api.delete("many-keys", &Default::default()).await?;

    // A copy holding them anyway (an admin's, or one stored before the
    // policy): the manager refuses it before any write of a Secret.
    let admin = dynamic(&pair.management, &evil_ns);
    let name = uuid();
    let before = manager_writes(pair, "secrets/patch")?;
    admin
        .create(
            &PostParams::default(),
            &copy_in(&evil_ns, &name, keys(4096, 253, "")),
        )
        .await?;
    let message = eventually(
        "the manager refused the copy of 4,096 long keys",
        WAIT,
        || async {
            let (reason, message) = verdict(&admin, &name).await?;
            (reason == "TooLarge")
                .then(|| message.clone())
                .ok_or(format!("{reason}: {message}"))
        },
    )
    .await?;
    println!("    an admin's copy of 4,096 keys of 253 characters: {message}");
    ensure!(message.contains("4096 keys"), "{message}");
    let wrote = manager_writes(pair, "secrets/patch")? - before;
    ensure!(
        wrote == 0.0,
        "the manager tried {wrote} writes of its Secret"
    );
    admin.delete(&name, &Default::default()).await?;
    good_tenant_converges(pair, "after-data", &values.fresh("good-data")).await?;
    ready(&pair.manager)
}
