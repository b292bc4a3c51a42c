//! The README's install, typed as a newcomer types it, on two fresh real
//! clusters (contexts `mgmt` and `shop`, no CRD yet): its `helm` and
//! `kubectl` commands, with the kubeconfig minted as docs/install.md says,
//! run as written. This machine has no kubelet, so the test stands in for
//! one: it runs each release's pod (and the `helm test` hook) with podman
//! from what Helm installed, and then the README's "See it working"
//! commands must show the sample Synced.
//!
//! Not run here: the README's first block, `make image` (`make test` ran
//! it before the tests) and `podman push` to the user's registry: the
//! local images are tagged under the registry's names instead, as a
//! kubelet would find them after a pull.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step fails the test"
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use kube::Api;
use syncsecret_api::{SyncSecret, SyncSecretPhase};
use syncsecret_e2e::control_plane::{Cluster, ControlPlane, Options, free_port};
use syncsecret_e2e::kube_util::eventually;
use syncsecret_e2e::podman::{self, Identity, Running};
use syncsecret_e2e::{asset, repo_root};

/// Image names given for the test, removed again on drop.
struct Tags(Vec<String>);

impl Drop for Tags {
    fn drop(&mut self) {
        for t in &self.0 {
            // The name twice: `podman untag IMAGE` alone drops every name.
            let _ = podman::podman(&["untag", t, t]);
        }
    }
}

/// The `sh` blocks of a markdown file's `## heading` section.
fn blocks(file: &str, heading: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
    let start = text
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("{file} has no section {heading}"));
    let section = &text[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    section
        .split("```sh\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap().to_owned())
        .collect()
}

/// Both admin kubeconfigs as one file with the README's contexts.
fn kubeconfig(clusters: &[(&str, &Cluster)], path: &Path) {
    let mut merged = serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": [],
    });
    for (context, cluster) in clusters {
        let one: serde_json::Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(cluster.kubeconfig()).unwrap())
                .unwrap();
        let user = format!("{context}-admin");
        merged["clusters"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "name": context, "cluster": one["clusters"][0]["cluster"],
            }));
        merged["users"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "name": user, "user": one["users"][0]["user"],
            }));
        merged["contexts"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "name": context, "context": {"cluster": context, "user": user},
            }));
    }
    std::fs::write(path, serde_yaml_ng::to_string(&merged).unwrap()).unwrap();
}

/// Runs a block as one bash script in `dir` (which links the repository's
/// charts/ and config/), with the README's contexts and the tools on PATH.
fn run(block: &str, dir: &Path, kubeconfig: &Path) -> anyhow::Result<String> {
    // The README says `kubectl` and `helm`: linked by those names.
    let bin = dir.join("bin");
    for (var, name) in [
        ("TEST_ASSET_KUBECTL", "kubectl"),
        ("TEST_ASSET_HELM", "helm"),
    ] {
        if !bin.join(name).exists() {
            std::fs::create_dir_all(&bin)?;
            std::os::unix::fs::symlink(asset(var)?, bin.join(name))?;
        }
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    println!("$ {}", block.trim().replace('\n', "\n$ "));
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", block])
        .current_dir(dir)
        .env("KUBECONFIG", kubeconfig)
        .env("PATH", path)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    ensure!(
        out.status.success(),
        "the block failed:\n{block}\n{stdout}{stderr}"
    );
    Ok(stdout)
}

/// The pod of a release, as Helm installed it, run as the kubelet would:
/// with its ServiceAccount's token and the Secrets its volumes name.
async fn run_release_pod(
    cluster: &Cluster,
    release: &str,
    namespace: &str,
    dir: &Path,
    kubeconfig: &Path,
    context: &str,
) -> anyhow::Result<(Running, BTreeMap<String, std::path::PathBuf>)> {
    let manifest = run(
        &format!("helm --kube-context {context} get manifest {release} -n {namespace}"),
        dir,
        kubeconfig,
    )?;
    let pod = podman::deployment(&manifest)?;
    let client = cluster.client().await?;
    let volumes = podman::secret_volumes(&client, namespace, &pod, &dir.join(release)).await?;
    let name = format!("readme-{release}");
    let running = Running::launch(cluster, &pod, &name, namespace, dir, &volumes).await?;
    Ok((running, volumes))
}

#[tokio::test]
async fn the_readme_install_works_as_written() -> anyhow::Result<()> {
    let plane = ControlPlane::start_with(
        &["mgmt", "shop"],
        Options {
            without_crd: true,
            ..Options::default()
        },
    )
    .await?;
    let (mgmt, shop) = (plane.management(), plane.cluster("shop").unwrap());
    let dir = tempfile::tempdir()?;
    for linked in ["charts", "config"] {
        std::os::unix::fs::symlink(repo_root().join(linked), dir.path().join(linked))?;
    }
    let contexts = dir.path().join("kubeconfig");
    kubeconfig(&[("mgmt", mgmt), ("shop", shop)], &contexts);

    let install = blocks("README.md", "Install");
    ensure!(
        install.len() == 3,
        "README's Install has {} blocks",
        install.len()
    );
    ensure!(install[0].trim_start().starts_with("make image"));
    // The management cluster, then the tenant's identity as docs/install.md
    // mints it without KubeLB, then the tenant cluster.
    run(&install[1], dir.path(), &contexts)?;
    let identity = blocks("docs/install.md", "The tenant's management identity")
        .into_iter()
        .find(|b| b.contains("create token"))
        .context("docs/install.md mints no token")?;
    run(&identity, dir.path(), &contexts)?;
    run(&install[2], dir.path(), &contexts)?;

    // The README pushes the images to the user's registry and the kubelet
    // pulls them from there: tagged here under that name instead.
    let registry = "registry.example.com/syncsecret";
    let mut tags = Tags(Vec::new());
    for bin in ["syncsecret-manager", "syncsecret-ccm"] {
        let name = format!("{registry}/{bin}:dev");
        podman::podman(&["tag", &format!("localhost/syncsecret/{bin}:dev"), &name])
            .context("no local image: build it with `make image` (make test does)")?;
        tags.0.push(name);
    }

    // No kubelet here: the pods run with podman, each on its own ports (a
    // pod network would give each its own; this host network cannot).
    for (context, release, namespace) in [
        ("mgmt", "syncsecret-manager", "kubelb"),
        ("shop", "syncsecret-ccm", "kube-system"),
    ] {
        let (metrics, probes) = (free_port()?, free_port()?);
        run(
            &format!(
                "helm --kube-context {context} upgrade {release} charts/{release} -n {namespace} \
                 --reuse-values --set metrics.port={metrics} --set probes.port={probes}"
            ),
            dir.path(),
            &contexts,
        )?;
    }
    let (manager, _) = run_release_pod(
        mgmt,
        "syncsecret-manager",
        "kubelb",
        dir.path(),
        &contexts,
        "mgmt",
    )
    .await?;
    let (ccm, volumes) = run_release_pod(
        shop,
        "syncsecret-ccm",
        "kube-system",
        dir.path(),
        &contexts,
        "shop",
    )
    .await?;
    let shop_client = shop.client().await?;

    // "See it working": `helm test` is its hook Pod, run the same way; the
    // rest as written.
    let working = blocks("README.md", "See it working");
    ensure!(
        working.len() == 1,
        "README's See it working has {} blocks",
        working.len()
    );
    let (helm_test, rest): (Vec<&str>, Vec<&str>) = working[0]
        .lines()
        .partition(|l| l.starts_with("helm ") && l.contains(" test "));
    ensure!(
        helm_test.len() == 1
            && helm_test[0]
                .starts_with("helm --kube-context shop test -n kube-system syncsecret-ccm "),
        "the README's helm test is not the one run here: {helm_test:?}"
    );
    let hooks = run(
        "helm --kube-context shop get hooks syncsecret-ccm -n kube-system",
        dir.path(),
        &contexts,
    )?;
    let test_identity = Identity::of_service_account(
        shop,
        "kube-system",
        "syncsecret-ccm",
        &dir.path().join("ccm-test-serviceaccount"),
    )
    .await?;
    let check = Running::start(
        &podman::test_pod(&hooks)?,
        "readme-syncsecret-ccm-test",
        &test_identity,
        &volumes,
    )?;
    let code = check.wait()?;
    ensure!(
        code == 0,
        "helm test's Pod failed ({code}):\n{}",
        check.logs()
    );
    println!("helm test: {}", check.logs().trim());

    let (apply, show): (Vec<&str>, Vec<&str>) =
        rest.into_iter().partition(|l| l.contains(" apply "));
    run(&apply.join("\n"), dir.path(), &contexts)?;
    let objects: Api<SyncSecret> = Api::namespaced(shop_client, "default");
    // Right after the first install kube-controller-manager has not yet
    // counted the new CRD's objects for the tenant quota, and the API
    // server refuses copies until it has ("status unknown for quota"):
    // the sample syncs on a retry (docs/failure-modes.md).
    let applied = std::time::Instant::now();
    let said = std::sync::Mutex::new(std::collections::BTreeSet::new());
    eventually("the sample Synced", Duration::from_secs(600), || async {
        let o = objects
            .get("db-credentials")
            .await
            .map_err(|e| e.to_string())?;
        let status = o.status.unwrap_or_default();
        for c in status.conditions.iter().flatten() {
            said.lock().unwrap().insert(c.message.clone());
        }
        (status.phase == Some(SyncSecretPhase::Synced))
            .then_some(())
            .ok_or_else(|| format!("{:?}", status.phase))
    })
    .await
    .with_context(|| format!("manager:\n{}\nccm:\n{}", manager.logs(), ccm.logs()))?;
    // What the tenant read meanwhile: the quota's wait explained, never
    // called a missing grant.
    for m in said.lock().unwrap().iter() {
        ensure!(
            !m.contains("grant this identity"),
            "the tenant was told: {m}"
        );
        if m.contains("status unknown for quota") {
            ensure!(
                m.contains("retried automatically"),
                "the tenant was told: {m}"
            );
            println!("meanwhile the tenant read: {m}");
        }
    }
    println!(
        "the sample synced {} s after it was applied",
        applied.elapsed().as_secs()
    );
    let shown = run(&show.join("\n"), dir.path(), &contexts)?;
    // The Secret the tenant's MESSAGE names is the one the management
    // cluster lists.
    let secret = shown
        .split("Secret tenant-shop/")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .with_context(|| format!("no Secret named in:\n{shown}"))?;
    ensure!(
        shown.contains("db-credentials")
            && shown.contains("Synced")
            && shown.contains(&format!("secret/{secret} ")),
        "See it working does not show the sample synced:\n{shown}"
    );
    Ok(())
}
