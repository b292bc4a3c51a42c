//! The charts' pods, run as containers: the images `make image` built, each
//! chart's Deployment container exactly as `helm template` renders it (see
//! `syncsecret_e2e::podman`), against the real control plane. The probes
//! answer on the ports the chart declares, a SyncSecret travels from the
//! tenant cluster to a Secret in the management cluster through both
//! containers, `extraArgs` override a flag the chart sets, a management
//! kubeconfig replaced in place is picked up without a restart, and SIGTERM
//! ends each within its grace period.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Api;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use syncsecret_api::contract::{LABEL_ORIGIN_NAME, tenant_namespace};
use syncsecret_api::{SyncSecret, SyncSecretPhase};
use syncsecret_e2e::control_plane::{ControlPlane, free_port};
use syncsecret_e2e::helm;
use syncsecret_e2e::kube_util::eventually;
use syncsecret_e2e::pair::{CCM_NAMESPACE, MANAGER_NAMESPACE, ensure_namespace};
use syncsecret_e2e::podman::{self, Identity, Running};
use syncsecret_runtime::generate::rbac::{CCM_ROLE, MANAGER_ROLE};

const WAIT: Duration = Duration::from_secs(60);
/// The tag `make image` gives by default.
const TAG: &str = "dev";

/// The image of `binary`, failing with how to build it when it is missing.
fn image(binary: &str) -> anyhow::Result<String> {
    let image = format!("localhost/syncsecret/{binary}");
    let reference = format!("{image}:{TAG}");
    podman::podman(&["image", "exists", &reference]).with_context(|| {
        format!("no image {reference}: build it with `make image` (make test does)")
    })?;
    Ok(image)
}

/// A second identity for the ccm in the management cluster (its own
/// ServiceAccount, bound to the same Role); its kubeconfig.
async fn rotate_identity(
    mgmt: &syncsecret_e2e::control_plane::Cluster,
    namespace: &str,
) -> anyhow::Result<std::path::PathBuf> {
    let client = mgmt.client().await?;
    let name = "syncsecret-ccm-rotated";
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?,
        )
        .await?;
    let binding = serde_json::json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": CCM_ROLE},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    });
    Api::<RoleBinding>::namespaced(client, namespace)
        .create(&PostParams::default(), &serde_json::from_value(binding)?)
        .await?;
    Ok(mgmt.service_account_kubeconfig(namespace, name).await?)
}

#[tokio::test]
async fn the_charts_pods_run_as_containers_and_a_syncsecret_travels() -> anyhow::Result<()> {
    let manager_image = image("syncsecret-manager")?;
    let ccm_image = image("syncsecret-ccm")?;
    let plane = ControlPlane::start(&["management", "tenant1"]).await?;
    let mgmt = plane.management();
    let tenant = plane.cluster("tenant1").context("no tenant cluster")?;
    let dir = tempfile::tempdir()?;

    // The manager: its chart's RBAC and tenant namespace, its pod's token.
    let mgmt_client = mgmt.client().await?;
    ensure_namespace(&mgmt_client, MANAGER_NAMESPACE).await?;
    helm::apply_access(
        mgmt.kubeconfig(),
        MANAGER_ROLE,
        MANAGER_NAMESPACE,
        &["tenants={tenant1}", "createTenantNamespaces=true"],
    )?;
    let (metrics, probes) = (free_port()?, free_port()?);
    let sets = [
        format!("image.repository={manager_image}"),
        format!("image.tag={TAG}"),
        format!("metrics.port={metrics}"),
        format!("probes.port={probes}"),
    ];
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let pod_spec = podman::deployment(&helm::template(MANAGER_ROLE, MANAGER_NAMESPACE, &sets)?)?;
    let manager = Running::launch(
        mgmt,
        &pod_spec,
        "syncsecret-manager-0",
        MANAGER_NAMESPACE,
        dir.path(),
        &BTreeMap::new(),
    )
    .await?;

    // The ccm: its chart's RBAC in the tenant cluster, the management
    // kubeconfig as the Secret the chart mounts, its pod's token.
    let tenant_client = tenant.client().await?;
    helm::apply_access(
        tenant.kubeconfig(),
        CCM_ROLE,
        CCM_NAMESPACE,
        &[
            "clusterName=tenant1",
            "kubelbKubeconfig.secretName=kubelb-kubeconfig",
        ],
    )?;
    let kubelb = mgmt
        .service_account_kubeconfig(&tenant_namespace("tenant1"), CCM_ROLE)
        .await?;
    let kubeconfig = std::fs::read(&kubelb)?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("kubelb-kubeconfig".into()),
            ..ObjectMeta::default()
        },
        data: Some([("kubeconfig".to_owned(), ByteString(kubeconfig))].into()),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(tenant_client.clone(), CCM_NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await?;
    let mounted = dir.path().join("kubelb-kubeconfig");
    podman::materialize_secret(&tenant_client, CCM_NAMESPACE, "kubelb-kubeconfig", &mounted)
        .await?;
    let (metrics, probes) = (free_port()?, free_port()?);
    let sets = [
        format!("image.repository={ccm_image}"),
        format!("image.tag={TAG}"),
        format!("metrics.port={metrics}"),
        format!("probes.port={probes}"),
        "clusterName=tenant1".to_owned(),
        "kubelbKubeconfig.secretName=kubelb-kubeconfig".to_owned(),
        // Over the chart's own --log-format=json.
        "extraArgs={--log-format=human}".to_owned(),
    ];
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let ccm_chart = helm::template(CCM_ROLE, CCM_NAMESPACE, &sets)?;
    let pod_spec = podman::deployment(&ccm_chart)?;
    let volumes = [("kubelb-kubeconfig".to_owned(), mounted.clone())].into();
    let ccm = Running::launch(
        tenant,
        &pod_spec,
        "syncsecret-ccm-0",
        CCM_NAMESPACE,
        dir.path(),
        &volumes,
    )
    .await?;

    // A SyncSecret travels: the tenant's object becomes a Secret in its
    // namespace of the management cluster, and shows Synced.
    ensure_namespace(&tenant_client, "shop").await?;
    let tenant_objects: Api<SyncSecret> = Api::namespaced(tenant_client.clone(), "shop");
    let value = format!("from-a-container-{}", uuid::Uuid::new_v4().simple());
    let obj = SyncSecret {
        metadata: ObjectMeta {
            name: Some("db".into()),
            ..ObjectMeta::default()
        },
        string_data: Some([("password".to_owned(), value.clone())].into()),
        ..SyncSecret::default()
    };
    tenant_objects.create(&PostParams::default(), &obj).await?;
    let secrets: Api<Secret> = Api::namespaced(mgmt_client.clone(), &tenant_namespace("tenant1"));
    eventually("the Secret in the management cluster", WAIT, || async {
        let list = secrets
            .list(&ListParams::default().labels(&format!("{LABEL_ORIGIN_NAME}=db")))
            .await
            .map_err(|e| e.to_string())?;
        let holds = list.items.iter().any(|s| {
            s.data
                .as_ref()
                .and_then(|d| d.get("password"))
                .is_some_and(|v| v.0 == value.as_bytes())
        });
        holds
            .then_some(())
            .ok_or_else(|| format!("{} Secrets, none holds it yet", list.items.len()))
    })
    .await
    .with_context(|| format!("manager:\n{}\nccm:\n{}", manager.logs(), ccm.logs()))?;
    eventually("the tenant object shows Synced", WAIT, || async {
        let o = tenant_objects.get("db").await.map_err(|e| e.to_string())?;
        let phase = o.status.as_ref().and_then(|s| s.phase);
        (phase == Some(SyncSecretPhase::Synced))
            .then_some(())
            .ok_or_else(|| format!("{phase:?}"))
    })
    .await?;
    println!("    a SyncSecret travelled through both containers");
    let first = ccm.logs();
    ensure!(
        first.lines().any(|l| l.contains(" INFO ")) && !first.lines().any(|l| l.starts_with('{')),
        "extraArgs did not override the chart's --log-format=json:\n{first}"
    );
    println!("    extraArgs overrode a flag the chart sets (the ccm logs human lines)");

    // The management identity rotated: the Secret replaced in place, the
    // kubelet's copy of it renewed, the old identity gone. The running
    // container picks it up.
    let started = podman::podman(&["inspect", "--format={{.State.StartedAt}}", &ccm.name])?;
    let rotated = rotate_identity(mgmt, &tenant_namespace("tenant1")).await?;
    let mut secret = Api::<Secret>::namespaced(tenant_client.clone(), CCM_NAMESPACE)
        .get("kubelb-kubeconfig")
        .await?;
    secret.data = Some(
        [(
            "kubeconfig".to_owned(),
            ByteString(std::fs::read(&rotated)?),
        )]
        .into(),
    );
    Api::<Secret>::namespaced(tenant_client.clone(), CCM_NAMESPACE)
        .replace("kubelb-kubeconfig", &PostParams::default(), &secret)
        .await?;
    podman::materialize_secret(&tenant_client, CCM_NAMESPACE, "kubelb-kubeconfig", &mounted)
        .await?;
    Api::<ServiceAccount>::namespaced(mgmt_client.clone(), &tenant_namespace("tenant1"))
        .delete(CCM_ROLE, &DeleteParams::default())
        .await?;
    let value = format!("after-rotation-{}", uuid::Uuid::new_v4().simple());
    let mut again = obj.clone();
    again.metadata.name = Some("db-rotated".into());
    again.string_data = Some([("password".to_owned(), value.clone())].into());
    tenant_objects
        .create(&PostParams::default(), &again)
        .await?;
    eventually("a SyncSecret after the rotation", WAIT, || async {
        let list = secrets
            .list(&ListParams::default().labels(&format!("{LABEL_ORIGIN_NAME}=db-rotated")))
            .await
            .map_err(|e| e.to_string())?;
        list.items
            .iter()
            .any(|s| {
                s.data
                    .as_ref()
                    .and_then(|d| d.get("password"))
                    .is_some_and(|v| v.0 == value.as_bytes())
            })
            .then_some(())
            .ok_or_else(|| "not yet".to_owned())
    })
    .await
    .with_context(|| format!("ccm:\n{}", ccm.logs()))?;
    let still = podman::podman(&["inspect", "--format={{.State.StartedAt}}", &ccm.name])?;
    ensure!(
        ccm.running()? && still == started,
        "the ccm container restarted"
    );
    println!("    the rotated kubeconfig was picked up by the running container");

    // `helm test`: its Pod, run the same way, says the mounted management
    // kubeconfig may list SyncSecrets in the tenant namespace; with an
    // identity that may not, it fails and says why.
    let test_pod = podman::test_pod(&ccm_chart)?;
    let identity = Identity::of_service_account(
        tenant,
        CCM_NAMESPACE,
        CCM_ROLE,
        &dir.path().join("ccm-test-serviceaccount"),
    )
    .await?;
    let check = Running::start(&test_pod, "syncsecret-ccm-test", &identity, &volumes)?;
    let code = check.wait()?;
    let said = check.logs();
    ensure!(code == 0, "the helm test failed ({code}):\n{said}");
    println!("    helm test: {}", said.trim());
    drop(check);
    let nobody = dir.path().join("nobody");
    let stranger = mgmt.mint_identity("nobody", None)?;
    podman::materialize(
        &nobody,
        [("kubeconfig", std::fs::read(&stranger)?.as_slice())].into_iter(),
    )?;
    let volumes_of_nobody = [("kubelb-kubeconfig".to_owned(), nobody)].into();
    let check = Running::start(
        &test_pod,
        "syncsecret-ccm-test",
        &identity,
        &volumes_of_nobody,
    )?;
    let code = check.wait()?;
    let said = check.logs();
    ensure!(
        code != 0 && said.contains("forbidden"),
        "the helm test passed for an identity without access ({code}):\n{said}"
    );
    println!("    helm test without access: exit {code}: {}", said.trim());
    drop(check);

    // SIGTERM, as the kubelet sends it: each exits cleanly within its grace.
    for container in [&ccm, &manager] {
        let (took, code) = container.stop()?;
        println!(
            "    {}: exited {code} {:.1} s after SIGTERM (grace {} s)",
            container.name,
            took.as_secs_f64(),
            container.grace_seconds
        );
        ensure!(
            code == 0,
            "{} exited {code}:\n{}",
            container.name,
            container.logs()
        );
        ensure!(
            took < Duration::from_secs(u64::try_from(container.grace_seconds)?),
            "{} took {took:?}, beyond its grace period",
            container.name
        );
    }
    Ok(())
}
