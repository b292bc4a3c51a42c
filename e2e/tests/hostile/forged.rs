//! Forged Secret types and metadata.

use crate::support::*;

/// What other controllers of the management cluster act on, forged by the
/// tenant: a Helm release record (its type and Helm's labels), a
/// replicator's and a reflector's annotations, our own label keys. The
/// type is refused, the keys are kept off the Secret, and the tenant's own
/// status says which.
pub(crate) async fn forged_types_and_metadata_stay_out(
    pair: &mut Pair,
    values: &mut Values,
) -> anyhow::Result<()> {
    let api = dynamic(&pair.tenants[EVIL], NS);
    let metadata = json!({
        "labels": {"owner": "helm", "name": "platform", "status": "deployed", "version": "99",
                   "kubelb.k8c.io/managed-by": "forged", "app": "allowed-by-the-harness"},
        "annotations": {"replicator.v1.mittwald.de/replicate-to": "kube-system",
                        "reflector.v1.k8s.emberstack.com/reflection-allowed": "true"},
    });
    let forged = |name: &str, type_: &str, value: &str| {
        let mut o = object(
            name,
            json!({"type": type_, "stringData": {"release": value}}),
        );
        o.metadata = serde_json::from_value(json!({
            "name": name, "namespace": NS,
            "labels": metadata["labels"], "annotations": metadata["annotations"],
        }))
        .unwrap();
        o
    };
    api.create(
        &PostParams::default(),
        &forged(
            "helm-release",
            "helm.sh/release.v1",
            &values.fresh("forged-helm"),
        ),
    )
    .await?;
    let value = values.fresh("forged-opaque");
    api.create(
        &PostParams::default(),
        &forged("helm-labels", "Opaque", &value),
    )
    .await?;

    let (reason, message) = eventually("the Helm release type refused", WAIT, || async {
        let (reason, message) = verdict(&api, "helm-release").await?;
        (reason == "TypeDenied")
            .then(|| (reason.clone(), message.clone()))
            .ok_or(format!("{reason}: {message}"))
    })
    .await?;
    println!("    helm-release: {reason}: {message}");
    ensure!(message.contains("--allowed-secret-types"), "{message}");

    secret_holds(pair, EVIL, "helm-labels", "release", value.as_bytes()).await?;
    let evil_ns = tenant_namespace(&pair.tenant_names[EVIL]);
    let copies = dynamic(&pair.management, &evil_ns);
    let tenant: Api<SyncSecret> = Api::namespaced(pair.tenants[EVIL].clone(), NS);
    let uid = tenant.get("helm-labels").await?.uid().context("uid")?;
    let copy_uid = copies.get(&uid).await?.uid().context("copy uid")?;
    let secret: Secret = Api::namespaced(pair.management.clone(), &evil_ns)
        .get(&copy_uid)
        .await?;
    let labels = secret.labels();
    for key in ["owner", "name", "status", "version"] {
        ensure!(
            !labels.contains_key(key),
            "label {key} reached the Secret: {labels:?}"
        );
    }
    ensure!(
        labels.get("kubelb.k8c.io/managed-by").is_none(),
        "a forged label in our domain reached the Secret"
    );
    ensure!(labels.get("app").is_some(), "an allowed label was dropped");
    ensure!(
        labels
            .get(syncsecret_api::contract::LABEL_ORIGIN_NAME)
            .map(String::as_str)
            == Some("helm-labels"),
        "the origin label is the manager's"
    );
    ensure!(
        secret
            .annotations()
            .keys()
            .all(|k| !k.contains("replicator") && !k.contains("reflector")),
        "a replicator or reflector annotation reached the Secret: {:?}",
        secret.annotations()
    );
    // The tenant sees which keys stayed out, in its own status.
    let message = eventually("the tenant told which keys stayed out", WAIT, || async {
        let (reason, message) = verdict(&api, "helm-labels").await?;
        (reason == "SecretSynced" && message.contains("not copied"))
            .then(|| message.clone())
            .ok_or(format!("{reason}: {message}"))
    })
    .await?;
    println!("    helm-labels: {message}");
    for key in ["owner", "status", "replicator.v1.mittwald.de/replicate-to"] {
        ensure!(message.contains(key), "{key} not named: {message}");
    }
    good_tenant_converges(pair, "after-forgery", &values.fresh("good-forgery")).await?;
    Ok(())
}
