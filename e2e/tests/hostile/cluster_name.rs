//! A second tenant cluster under the first one's cluster name.

use crate::support::*;

/// The evil tenant runs a second cluster's ccm under its first one's
/// cluster name (and management identity): each sees copies the other
/// made, says so (gauge, Warning event, `/readyz` note), and neither's
/// sweep deletes the other's copies.
pub(crate) async fn a_second_ccm_with_the_same_cluster_name(
    pair: &mut Pair,
    values: &mut Values,
) -> anyhow::Result<()> {
    let (evil_ns, identity) = evil_identity(pair).await?;
    let args: Vec<String> = pair.ccms[SECOND]
        .base_args()
        .iter()
        .map(|a| {
            if a.starts_with("--cluster-name=") {
                format!("--cluster-name={}", pair.tenant_names[EVIL])
            } else if a.starts_with("--kubelb-kubeconfig=") {
                format!("--kubelb-kubeconfig={}", identity.display())
            } else {
                a.clone()
            }
        })
        .collect();
    pair.ccms[SECOND].stop()?;
    let mut claimer = pair.ccms[SECOND].variant("syncsecret-ccm-claims-evil", args)?;
    claimer.wait_ready().await?;
    ensure_namespace(&pair.tenants[SECOND], NS).await?;
    let second = dynamic(&pair.tenants[SECOND], NS);
    let value = values.fresh("second-cluster");
    create(&second, "from-second", json!({"stringData": {"v": value}})).await?;
    let second_uid = Api::<SyncSecret>::namespaced(pair.tenants[SECOND].clone(), NS)
        .get("from-second")
        .await?
        .uid()
        .context("uid")?;
    let copies = dynamic(&pair.management, &evil_ns);
    eventually("the second cluster's copy", WAIT, || async {
        copies
            .get_opt(&second_uid)
            .await
            .map_err(|e| e.to_string())?
            .map(|_| ())
            .ok_or_else(|| "no copy yet".to_owned())
    })
    .await?;

    // The first cluster's ccm restarts (it sweeps at start, and here every
    // 2 s): the copy it did not make stays, and both say two clusters
    // claim the name.
    pair.ccms[EVIL]
        .restart_with(&["--orphan-sweep-period=2"])
        .await?;
    for c in [&pair.ccms[EVIL], &claimer] {
        metric_reads_at_least(c, "kubelb_ccm_cluster_name_conflicts", 1.0).await?;
        eventually(
            &format!("{} notes the conflict", c.name()),
            WAIT,
            || async {
                let (_, body) = c.readyz().map_err(|e| e.to_string())?;
                body.contains("another cluster").then_some(()).ok_or(body)
            },
        )
        .await?;
    }
    // Every tenant object of each cluster says so in its status: Synced
    // ones, one the manager failed (helm-release) and one the ccm failed
    // (heavy-metadata) too.
    for (cluster, name) in [
        (EVIL, "after-restart"),
        (EVIL, "helm-release"),
        (EVIL, "heavy-metadata"),
        (SECOND, "from-second"),
    ] {
        let api = dynamic(&pair.tenants[cluster], NS);
        let message = eventually(
            &format!("{name} shows the cluster-name conflict"),
            WAIT,
            || async {
                let o = api.get(name).await.map_err(|e| e.to_string())?;
                let conditions = o.data["status"]["conditions"].as_array().cloned();
                conditions
                    .into_iter()
                    .flatten()
                    .find(|c| c["type"] == "ClusterNameConflict" && c["status"] == "True")
                    .and_then(|c| c["message"].as_str().map(str::to_owned))
                    .ok_or_else(|| "no ClusterNameConflict condition yet".to_owned())
            },
        )
        .await?;
        println!("    {name}: ClusterNameConflict: {message}");
    }
    // About the cluster itself (its kube-system Namespace): such events
    // are kept in `default`.
    has_event(
        &pair.tenants[EVIL],
        "default",
        "kube-system",
        "ClusterNameConflict",
    )
    .await?;
    ensure!(
        copies.get_opt(&second_uid).await?.is_some(),
        "the first cluster's ccm deleted the second cluster's copy"
    );
    good_tenant_converges(pair, "after-name-conflict", &values.fresh("good-conflict")).await?;

    // The second cluster gone (its ccm stopped, its copy removed by the
    // platform): the first cluster's objects no longer say so.
    claimer.stop()?;
    dynamic(&pair.management, &evil_ns)
        .delete(&second_uid, &Default::default())
        .await?;
    eventually("the second cluster's copy gone", WAIT, || async {
        match copies.get_opt(&second_uid).await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err("still there".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;
    // No restart: the running ccm's next sweep finds the conflict gone.
    let api: Api<SyncSecret> = Api::namespaced(pair.tenants[EVIL].clone(), NS);
    eventually(
        "after-restart no longer shows the conflict",
        WAIT,
        || async {
            let o = api.get("after-restart").await.map_err(|e| e.to_string())?;
            let conflict = o
                .status
                .and_then(|s| s.conditions)
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "ClusterNameConflict");
            (!conflict)
                .then_some(())
                .ok_or_else(|| "still shows it".to_owned())
        },
    )
    .await?;
    pair.ccms[EVIL].restart_with(&[]).await?;
    Ok(())
}
