//! Duplicate finalizers on copies: refused at admission, and taken off in
//! one write where they got in before the policy.

use syncsecret_api::bounds::FINALIZERS;
use syncsecret_api::contract::FINALIZER;

use crate::support::*;

/// The API server keeps duplicate finalizers. A copy holding ours 50,000
/// times cost the manager memory for each, and on deletion one patch of a
/// megabyte per entry (kube-runtime's helper took one off per reconcile):
/// hours of writes. The tenant's identity may write only ours, once; a
/// copy that holds more anyway (written before the policy, or by an
/// admin) loses them all in one write.
pub(crate) async fn finalizers_are_one_and_ours(
    pair: &mut Pair,
    values: &mut Values,
) -> anyhow::Result<()> {
    let (evil_ns, identity) = evil_identity(pair).await?;
    let copies = dynamic(&client_from(&identity).await?, &evil_ns);
    let uuid = || uuid::Uuid::new_v4().to_string();
    let with_finalizers = |n: usize| {
        let mut o = copy_in(&evil_ns, &uuid(), json!({"data": {"k": "dg=="}}));
        o.metadata.finalizers = Some(vec![FINALIZER.to_owned(); n]);
        o
    };
    let limit = FINALIZERS.default;

    // Ours, twice or 50,000 times: refused by the count alone (every entry
    // is ours, so no other rule applies).
    for n in [2, 50_000] {
        let message = refusal(
            &format!("a copy with our finalizer {n} times"),
            copies
                .create(&PostParams::default(), &with_finalizers(n))
                .await,
        )?;
        let expected = format!("{n} finalizers per copy, over the limit of {limit}");
        ensure!(message.contains(&expected), "expected «{expected}»");
    }

    // Once is what a ccm writes; adding a duplicate later is refused too.
    let once = with_finalizers(1);
    let name = once.name_any();
    copies.create(&PostParams::default(), &once).await?;
    let message = refusal(
        "adding a second entry of our finalizer",
        copies
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": [FINALIZER, FINALIZER]}})),
            )
            .await,
    )?;
    ensure!(
        message.contains(&format!("2 finalizers per copy, over the limit of {limit}")),
        "{message}"
    );
    copies.delete(&name, &Default::default()).await?;
    gone(&copies, &name).await?;

    // A copy that holds 50,000 anyway (an admin's, or one stored before
    // the policy): it syncs, and deleting it takes them off in one write.
    let admin = dynamic(&pair.management, &evil_ns);
    let held = with_finalizers(50_000);
    let name = held.name_any();
    admin.create(&PostParams::default(), &held).await?;
    synced(&admin, &name, "the copy with 50,000 finalizers").await?;
    copies.delete(&name, &Default::default()).await?;
    gone(&admin, &name).await?;
    // Who wrote the copy, by the management cluster's audit log: the
    // manager once (its finalizer off), after its status. The log has the
    // write a moment after the object went: waited for, then a moment more
    // for any other.
    let manager = "system:serviceaccount:kubelb:syncsecret-manager";
    let patches = || -> anyhow::Result<usize> {
        Ok(audited_writes(pair)?
            .iter()
            .filter(|w| w.resource == "syncsecrets" && w.name == name)
            .filter(|w| w.user == manager && w.verb == "patch" && w.subresource.is_empty())
            .count())
    };
    eventually("the manager's patch in the audit log", WAIT, || async {
        match patches() {
            Ok(n) if n > 0 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let patches = patches()?;
    let writes: Vec<String> = audited_writes(pair)?
        .into_iter()
        .filter(|w| w.resource == "syncsecrets" && w.name == name)
        .map(|w| format!("{} {} {}", w.user, w.verb, w.subresource))
        .collect();
    println!("    a copy with 50,000 finalizers deleted; its writes: {writes:?}");
    ensure!(
        patches == 1,
        "{patches} patches of the copy by the manager to take 50,000 entries off, not 1"
    );

    // Ours after twenty of others' (an admin's copy): the manager's cache
    // keeps sixteen finalizers, and still sees ours, so deleting the copy
    // takes ours off and leaves the others to their owners.
    let mut late = with_finalizers(0);
    let others: Vec<String> = (0..20).map(|i| format!("example.com/f{i}")).collect();
    let mut list = others.clone();
    list.push(FINALIZER.to_owned());
    late.metadata.finalizers = Some(list);
    let name = late.name_any();
    admin.create(&PostParams::default(), &late).await?;
    synced(&admin, &name, "the copy with ours 21st").await?;
    admin.delete(&name, &Default::default()).await?;
    eventually("ours taken off the 21st place", WAIT, || async {
        let left = admin
            .get(&name)
            .await
            .map_err(|e| e.to_string())?
            .metadata
            .finalizers
            .unwrap_or_default();
        (left == others).then_some(()).ok_or(format!("{left:?}"))
    })
    .await?;
    admin
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await?;
    gone(&admin, &name).await?;

    good_tenant_converges(pair, "after-finalizers", &values.fresh("good-finalizers")).await?;
    ready(&pair.manager)
}
