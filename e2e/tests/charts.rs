//! The Helm charts: lint clean (strict) and render, for the default values
//! and each documented toggle, into objects the real API server accepts
//! (`kubectl apply --dry-run=server`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step fails the test"
)]

use std::process::Command;

use syncsecret_e2e::helm::kubectl;
use syncsecret_e2e::pair::ensure_namespace;
use syncsecret_e2e::{ControlPlane, asset, repo_root};

const NAMESPACE: &str = "kubelb";

/// A chart, its `--set` values, what the rendering must contain and what
/// it must not.
type Case<'a> = (&'a str, Vec<&'a str>, Vec<&'a str>, Vec<&'a str>);

fn helm(args: &[&str]) -> String {
    syncsecret_e2e::helm::helm(args).unwrap()
}

fn server_dry_run(kubeconfig: &std::path::Path, manifest: &str) -> String {
    kubectl(
        kubeconfig,
        &["apply", "--dry-run=server", "-f", "-"],
        Some(manifest),
    )
    .unwrap_or_else(|e| panic!("the API server refused the rendered chart: {e}"))
}

#[tokio::test]
async fn charts_lint_render_and_are_accepted_by_the_api_server() {
    // The manager chart goes to a management cluster, the ccm chart to a
    // tenant cluster; both have prometheus-operator's CRDs, so that the
    // ServiceMonitor and PrometheusRule toggles are checked too.
    let cp = ControlPlane::start(&["management", "tenant"])
        .await
        .unwrap();
    let crds = std::env::var("PROMETHEUS_OPERATOR_CRDS").expect(
        "PROMETHEUS_OPERATOR_CRDS is not set: run `make test`, or `eval \"$(hack/tools.sh env)\"` first",
    );
    for name in ["management", "tenant"] {
        let cluster = cp.cluster(name).unwrap();
        // The release namespace, and (management) the tenant namespaces the
        // `tenants` case grants access in: a server dry run of a Namespace
        // does not make it exist for the objects after it.
        for ns in [NAMESPACE, "tenant-shop", "tenant-games", "team-shop"] {
            ensure_namespace(&cluster.client().await.unwrap(), ns)
                .await
                .unwrap();
        }
        for crd in ["servicemonitors", "prometheusrules"] {
            let file = format!("{crds}/monitoring.coreos.com_{crd}.yaml");
            kubectl(
                cluster.kubeconfig(),
                &["apply", "--server-side", "-f", &file],
                None,
            )
            .unwrap();
        }
    }
    let monitoring = [
        "metrics.serviceMonitor.enabled=true",
        "metrics.prometheusRule.enabled=true",
        "metrics.dashboard.enabled=true",
    ];

    let ccm_base = [
        "clusterName=shop",
        "kubelbKubeconfig.secretName=kubelb-kubeconfig",
    ];
    let cases: Vec<Case> = vec![
        // chart, --set values, kinds/names expected, names not expected
        (
            "syncsecret-ccm",
            ccm_base.to_vec(),
            vec!["Deployment", "syncsecret-ccm-leader-election"],
            vec!["syncsecret-ccm-synchronizer", "PodDisruptionBudget"],
        ),
        (
            "syncsecret-ccm",
            [
                &ccm_base[..],
                &["secretSynchronizer.enabled=true", "replicaCount=2"],
            ]
            .concat(),
            vec!["syncsecret-ccm-synchronizer", "PodDisruptionBudget"],
            vec![],
        ),
        (
            "syncsecret-ccm",
            [&ccm_base[..], &["tenantNamespacePrefix=team-"]].concat(),
            vec!["--tenant-namespace-prefix=team-"],
            vec![],
        ),
        (
            "syncsecret-ccm",
            [&ccm_base[..], &["leaderElection.enabled=false"]].concat(),
            vec![],
            vec!["syncsecret-ccm-leader-election"],
        ),
        (
            "syncsecret-manager",
            vec![],
            vec!["Deployment", "syncsecret-manager-leader-election"],
            vec!["PodDisruptionBudget"],
        ),
        (
            "syncsecret-ccm",
            [&ccm_base[..], &monitoring[..]].concat(),
            vec![
                "ServiceMonitor",
                "PrometheusRule",
                "grafana_dashboard",
                "SyncSecretNoLeader",
            ],
            vec!["kubelb_manager_"],
        ),
        (
            "syncsecret-manager",
            monitoring.to_vec(),
            vec![
                "ServiceMonitor",
                "PrometheusRule",
                "grafana_dashboard",
                "SyncSecretCertificateExpired",
            ],
            vec!["kubelb_ccm_"],
        ),
        (
            "syncsecret-manager",
            vec!["tenants={shop,tenant-games}", "createTenantNamespaces=true"],
            vec![
                "namespace: tenant-shop",
                "namespace: tenant-games",
                "kind: Namespace",
                // The manager's own Role in each, for the Secrets it writes.
                "name: demo-syncsecret-manager\n  namespace: tenant-shop",
            ],
            vec!["tenant-tenant-games"],
        ),
        (
            // Another prefix: the tenants' access, quotas and the policy
            // all follow it.
            "syncsecret-manager",
            vec!["tenantNamespacePrefix=team-", "tenants={shop}"],
            vec![
                "--tenant-namespace-prefix=team-",
                "name: syncsecret-ccm\n  namespace: team-shop",
                "name: demo-syncsecret-manager\n  namespace: team-shop",
                "kind: ResourceQuota",
                "startsWith('team-')",
            ],
            vec!["tenant-shop"],
        ),
        (
            "syncsecret-manager",
            vec!["replicaCount=2"],
            vec!["PodDisruptionBudget"],
            vec![],
        ),
        (
            "syncsecret-manager",
            vec![],
            vec!["--allowed-secret-types=Opaque,kubernetes.io/tls,"],
            vec!["--allowed-metadata", "--unsafe-copy-all-types-and-metadata"],
        ),
        (
            "syncsecret-manager",
            vec![
                "allowedMetadata={app,example.com/*}",
                "unsafeCopyAllTypesAndMetadata=true",
            ],
            vec![
                "--allowed-metadata=app,example.com/*",
                "--unsafe-copy-all-types-and-metadata",
            ],
            vec![],
        ),
        (
            "syncsecret-manager",
            vec!["leaderElection.enabled=false"],
            vec![],
            vec!["syncsecret-manager-leader-election"],
        ),
        (
            // A tenant's namespace outlives the release.
            "syncsecret-manager",
            vec!["tenants={shop}", "createTenantNamespaces=true"],
            vec![
                "kind: Namespace",
                "# A tenant's namespace holds its Secrets: helm uninstall keeps it.\n  annotations:\n    helm.sh/resource-policy: keep",
            ],
            vec![],
        ),
        (
            // The CRD is a template, so that `helm upgrade` upgrades it;
            // kept on uninstall by default (deleting it deletes every
            // SyncSecret).
            "syncsecret-ccm",
            ccm_base.to_vec(),
            vec![
                "kind: CustomResourceDefinition\nmetadata:\n  annotations:\n    helm.sh/resource-policy: keep",
            ],
            vec![],
        ),
        (
            "syncsecret-ccm",
            [&ccm_base[..], &["crds.install=false"]].concat(),
            vec!["Deployment"],
            vec!["CustomResourceDefinition"],
        ),
        (
            "syncsecret-manager",
            vec!["crds.keep=false"],
            vec!["kind: CustomResourceDefinition"],
            vec!["helm.sh/resource-policy"],
        ),
        (
            "syncsecret-manager",
            vec!["crds.install=false"],
            vec!["Deployment"],
            vec!["CustomResourceDefinition"],
        ),
        (
            // Another ServiceAccount name: the pod runs as it, every
            // binding and the tenant limits' exemption name it.
            "syncsecret-manager",
            vec!["serviceAccount.name=sync-mgr", "tenants={shop}"],
            vec![
                "serviceAccountName: sync-mgr",
                "- kind: ServiceAccount\n  name: sync-mgr",
                "system:serviceaccount:kubelb:sync-mgr",
            ],
            vec!["- kind: ServiceAccount\n  name: demo-syncsecret-manager"],
        ),
        (
            "syncsecret-ccm",
            [&ccm_base[..], &["serviceAccount.name=sync-ccm"]].concat(),
            vec![
                "serviceAccountName: sync-ccm",
                "- kind: ServiceAccount\n  name: sync-ccm",
            ],
            vec!["- kind: ServiceAccount\n  name: demo-syncsecret-ccm"],
        ),
        (
            // What platform teams set on every workload.
            "syncsecret-ccm",
            [
                &ccm_base[..],
                &[
                    "imagePullSecrets[0].name=registry",
                    "podAnnotations.team=platform",
                    "podLabels.tier=control",
                    "priorityClassName=system-cluster-critical",
                    "extraEnv[0].name=HTTPS_PROXY",
                    "extraEnv[0].value=http://proxy:3128",
                    "logLevel=debug",
                    "nameOverride=sync",
                ],
            ]
            .concat(),
            vec![
                "- name: registry",
                "team: platform",
                "tier: control",
                "priorityClassName: system-cluster-critical",
                "name: HTTPS_PROXY",
                "--log-level=debug",
                "name: demo-sync",
            ],
            vec![],
        ),
        (
            // `helm test`: the controller's own access check, as a Pod.
            "syncsecret-ccm",
            ccm_base.to_vec(),
            vec!["helm.sh/hook: test", "--check-management-access"],
            vec![],
        ),
        (
            "syncsecret-manager",
            vec!["metrics.serviceMonitor.enabled=true"],
            vec!["honorLabels: true"],
            vec![],
        ),
        (
            // Shards: one Deployment each, with its own selector, flags
            // and name; the Role may list the Leases.
            "syncsecret-manager",
            vec!["shards=2"],
            vec![
                "name: demo-syncsecret-manager-0-of-2",
                "name: demo-syncsecret-manager-1-of-2",
                "- --shard=1\n        - --shards=2",
                "syncsecret.kubelb.k8c.io/shard: 0-of-2",
                "syncsecret.kubelb.k8c.io/shard: 1-of-2",
                "  - get\n  - list\n  - create\n  - update",
            ],
            vec![
                "kind: Deployment\nmetadata:\n  name: demo-syncsecret-manager\n",
                "--shard=2",
            ],
        ),
        (
            // A disruption budget per shard: a pod of one shard not ready
            // blocks no eviction of another's.
            "syncsecret-manager",
            vec!["shards=2", "replicaCount=2"],
            vec![
                "kind: PodDisruptionBudget\nmetadata:\n  name: demo-syncsecret-manager-0-of-2",
                "kind: PodDisruptionBudget\nmetadata:\n  name: demo-syncsecret-manager-1-of-2",
            ],
            vec!["kind: PodDisruptionBudget\nmetadata:\n  name: demo-syncsecret-manager\n"],
        ),
        (
            // One shard keeps the unsharded names and selector, so that
            // an upgrade leaves the Deployment as it was.
            "syncsecret-manager",
            vec![],
            vec!["kind: Deployment\nmetadata:\n  name: demo-syncsecret-manager\n"],
            vec!["--shard", "syncsecret.kubelb.k8c.io/shard"],
        ),
    ];
    for (chart, values, present, absent) in cases {
        let dir = repo_root().join("charts").join(chart);
        let dir = dir.to_str().unwrap();
        let mut args = vec!["lint", "--strict", dir];
        let image = format!("--set=image.repository=registry.example.com/syncsecret/{chart}");
        let sets: Vec<String> = std::iter::once(image)
            .chain(values.iter().map(|v| format!("--set={v}")))
            .collect();
        args.extend(sets.iter().map(String::as_str));
        helm(&args);
        let mut args = vec!["template", "demo", dir, "--namespace", NAMESPACE];
        args.extend(sets.iter().map(String::as_str));
        let rendered = helm(&args);
        for p in &present {
            assert!(rendered.contains(p), "{chart} {values:?}: {p} missing");
        }
        for a in &absent {
            assert!(!rendered.contains(a), "{chart} {values:?}: {a} rendered");
        }
        let cluster = if chart == "syncsecret-ccm" {
            "tenant"
        } else {
            "management"
        };
        // `helm test` Pods run after the install, when the ServiceAccount
        // they name exists; a dry run of the whole chart has none yet. The
        // container test runs the test Pod for real.
        let installed: String = rendered
            .split("\n---")
            .filter(|doc| !doc.contains("helm.sh/hook: test"))
            .map(|doc| format!("---{}\n", doc.trim_start_matches("---")))
            .collect();
        let accepted = server_dry_run(cp.cluster(cluster).unwrap().kubeconfig(), &installed);
        println!(
            "{chart} {values:?}: {} objects accepted by the {cluster} cluster (server dry run)",
            accepted.lines().count()
        );
    }
}

#[tokio::test]
async fn the_crd_is_part_of_the_release_and_outlives_it() {
    // The harness installs the CRD without Helm, as KubeLB's chart or a
    // hand-applied one would be.
    let cp = ControlPlane::start(&["tenant"]).await.unwrap();
    let cluster = cp.cluster("tenant").unwrap();
    let kubeconfig = cluster.kubeconfig().to_str().unwrap().to_owned();
    let dir = repo_root().join("charts/syncsecret-ccm");
    let dir = dir.to_str().unwrap();
    let install = |extra: &[&str]| {
        let mut args = vec![
            "upgrade",
            "--install",
            "syncsecret-ccm",
            dir,
            "--namespace",
            "kube-system",
            "--kubeconfig",
            &kubeconfig,
            "--set=image.repository=registry.example.com/syncsecret/syncsecret-ccm",
            "--set=clusterName=shop",
            "--set=kubelbKubeconfig.secretName=kubelb-kubeconfig",
        ];
        args.extend_from_slice(extra);
        syncsecret_e2e::helm::helm(&args)
    };
    let refused = install(&[]).expect_err("helm took a CRD it does not own");
    println!("without --take-ownership: {refused}");
    assert!(
        refused.to_string().contains("CustomResourceDefinition")
            && refused.to_string().contains("syncsecrets.kubelb.k8c.io"),
        "{refused}"
    );
    install(&["--take-ownership"]).unwrap();
    let crd = |what: &str| {
        kubectl(
            cluster.kubeconfig(),
            &[
                "get",
                "crd",
                "syncsecrets.kubelb.k8c.io",
                "-o",
                &format!("jsonpath={what}"),
            ],
            None,
        )
    };
    assert_eq!(
        crd("{.metadata.annotations.meta\\.helm\\.sh/release-name}").unwrap(),
        "syncsecret-ccm"
    );
    let sample = repo_root().join("config/samples/opaque.yaml");
    kubectl(
        cluster.kubeconfig(),
        &["apply", "-f", sample.to_str().unwrap()],
        None,
    )
    .unwrap();
    // An upgrade applies the CRD with the rest of the release.
    install(&["--set=logLevel=debug"]).unwrap();
    let release = |verb: &[&str]| {
        let mut args = verb.to_vec();
        args.extend([
            "syncsecret-ccm",
            "--namespace",
            "kube-system",
            "--kubeconfig",
        ]);
        args.push(&kubeconfig);
        syncsecret_e2e::helm::helm(&args).unwrap()
    };
    assert!(release(&["get", "manifest"]).contains("kind: CustomResourceDefinition"));
    release(&["uninstall"]);
    // Kept, and with it every SyncSecret.
    assert_eq!(
        crd("{.metadata.name}").unwrap(),
        "syncsecrets.kubelb.k8c.io"
    );
    let left = kubectl(
        cluster.kubeconfig(),
        &["get", "syncsecrets", "-A", "-o", "name"],
        None,
    )
    .unwrap();
    assert!(left.contains("syncsecret.kubelb.k8c.io/"), "{left}");
}

#[test]
fn a_misspelled_value_is_refused_by_the_schema() {
    for (chart, typo, says) in [
        (
            "syncsecret-manager",
            "imagee.tag=x",
            "additional properties 'imagee' not allowed",
        ),
        (
            "syncsecret-manager",
            "metrics.prot=1",
            "additional properties 'prot' not allowed",
        ),
        ("syncsecret-ccm", "logLevel=verbose", "logLevel"),
    ] {
        let dir = repo_root().join("charts").join(chart);
        let set = format!("--set={typo}");
        let mut args = vec!["template", "demo", dir.to_str().unwrap(), &set];
        if chart == "syncsecret-ccm" {
            args.extend([
                "--set=clusterName=shop",
                "--set=kubelbKubeconfig.secretName=k",
            ]);
        }
        let err = syncsecret_e2e::helm::helm(&args)
            .expect_err(typo)
            .to_string();
        assert!(err.contains(says), "{chart} {typo}: {err}");
        println!("{chart} --set {typo}: refused ({says})");
    }
}

#[test]
fn the_ccm_chart_refuses_to_render_without_its_required_values() {
    let out = Command::new(asset("TEST_ASSET_HELM").unwrap())
        .args([
            "template",
            "demo",
            repo_root().join("charts/syncsecret-ccm").to_str().unwrap(),
            "--set=image.repository=registry.example.com/syncsecret/syncsecret-ccm",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("clusterName is required"));
}

#[test]
fn neither_chart_renders_without_an_image_repository() {
    // No image is published, and a default in a registry namespace we do
    // not hold would run whatever someone else pushed there.
    for (chart, extra) in [
        (
            "syncsecret-ccm",
            vec![
                "--set=clusterName=shop",
                "--set=kubelbKubeconfig.secretName=k",
            ],
        ),
        ("syncsecret-manager", vec![]),
    ] {
        let dir = repo_root().join("charts").join(chart);
        let mut args = vec!["template", "demo", dir.to_str().unwrap()];
        args.extend(extra);
        let err = syncsecret_e2e::helm::helm(&args)
            .expect_err(chart)
            .to_string();
        assert!(
            err.contains("image.repository is required") && err.contains("make image"),
            "{chart}: {err}"
        );
    }
}

#[test]
fn neither_chart_renders_with_an_empty_tenant_namespace_prefix() {
    for (chart, extra) in [
        ("syncsecret-ccm", vec!["--set=clusterName=shop"]),
        ("syncsecret-manager", vec![]),
    ] {
        let dir = repo_root().join("charts").join(chart);
        let mut args = vec![
            "template",
            "demo",
            dir.to_str().unwrap(),
            "--set=tenantNamespacePrefix=",
            "--set=image.repository=registry.example.com/syncsecret/x",
        ];
        args.extend(extra);
        let out = Command::new(asset("TEST_ASSET_HELM").unwrap())
            .args(&args)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{chart} rendered with an empty prefix"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("tenantNamespacePrefix must not be empty"),
            "{chart}: {stderr}"
        );
    }
}

#[test]
fn the_manager_chart_refuses_shards_it_cannot_run() {
    let dir = repo_root().join("charts/syncsecret-manager");
    for (sets, says) in [
        (
            vec!["--set=shards=2", "--set=leaderElection.enabled=false"],
            "shards above 1 need leaderElection.enabled",
        ),
        (vec!["--set=shards=0"], "shards"),
    ] {
        let mut args = vec![
            "template",
            "demo",
            dir.to_str().unwrap(),
            "--set=image.repository=registry.example.com/syncsecret/x",
        ];
        args.extend(&sets);
        let out = Command::new(asset("TEST_ASSET_HELM").unwrap())
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "rendered with {sets:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{sets:?}: {stderr}");
    }
}

/// Dotted keys of a values file; maps passed through as a whole (resources,
/// security contexts, scheduling, extra labels) are one key.
fn value_keys(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    const WHOLE: [&str; 5] = [
        "resources",
        "podSecurityContext",
        "securityContext",
        "nodeSelector",
        "affinity",
    ];
    match v.as_object() {
        Some(map)
            if !map.is_empty() && !WHOLE.contains(&prefix) && !prefix.ends_with(".labels") =>
        {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                value_keys(v, &key, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

#[test]
fn every_value_is_documented_in_the_chart_readme() {
    for chart in ["syncsecret-ccm", "syncsecret-manager"] {
        let dir = repo_root().join("charts").join(chart);
        let values: serde_json::Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join("values.yaml")).unwrap())
                .unwrap();
        let mut keys = Vec::new();
        value_keys(&values, "", &mut keys);
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        let documented: Vec<&str> = readme
            .lines()
            .filter_map(|l| l.strip_prefix("| `")?.split_once('`').map(|(k, _)| k))
            .collect();
        for k in &keys {
            assert!(
                documented.contains(&k.as_str()),
                "{chart}: value {k} is not in README.md"
            );
        }
        for d in &documented {
            assert!(
                keys.iter().any(|k| k == d),
                "{chart}: README.md documents {d}, which values.yaml lacks"
            );
        }
        assert!(keys.len() > 15, "{chart}: only {} keys", keys.len());
    }
}
