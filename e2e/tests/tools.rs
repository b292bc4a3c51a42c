//! hack/tools.sh reuses binaries a user already has, as envtest does, and
//! builds nothing then.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step fails the test"
)]

use std::collections::BTreeMap;
use std::process::Command;

use syncsecret_e2e::{asset, repo_root};

fn exports(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The cache holds nothing but tools.sh's lock file: nothing was built or
/// fetched into it.
fn nothing_but_the_lock_in(cache: &std::path::Path) {
    let written: Vec<_> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".lock")
        .collect();
    assert!(written.is_empty(), "cache got {written:?}");
}

#[test]
fn kubebuilder_assets_and_test_asset_variables_are_used_as_they_are() {
    // An envtest-style bundle: etcd, kube-apiserver, kubectl (no
    // kube-controller-manager), made of links to the binaries under test.
    let assets = tempfile::tempdir().unwrap();
    for (var, name) in [
        ("TEST_ASSET_ETCD", "etcd"),
        ("TEST_ASSET_KUBE_APISERVER", "kube-apiserver"),
        ("TEST_ASSET_KUBECTL", "kubectl"),
    ] {
        std::os::unix::fs::symlink(asset(var).unwrap(), assets.path().join(name)).unwrap();
    }
    let cache = tempfile::tempdir().unwrap();
    let kcm = asset("TEST_ASSET_KUBE_CONTROLLER_MANAGER").unwrap();
    let helm = asset("TEST_ASSET_HELM").unwrap();
    let (prometheus, promtool) = (asset("PROMETHEUS").unwrap(), asset("PROMTOOL").unwrap());
    let crds = std::env::var("PROMETHEUS_OPERATOR_CRDS").expect("PROMETHEUS_OPERATOR_CRDS");
    let promcfg = asset("PROMETHEUS_OPERATOR_CONFIG").unwrap();
    let out = Command::new("bash")
        .arg(repo_root().join("hack/tools.sh"))
        .arg("env")
        .env("KUBEBUILDER_ASSETS", assets.path())
        .env("SYNCSECRET_CACHE", cache.path())
        .env_remove("TEST_ASSET_ETCD")
        .env_remove("TEST_ASSET_KUBE_APISERVER")
        .env_remove("TEST_ASSET_KUBECTL")
        .env("TEST_ASSET_KUBE_CONTROLLER_MANAGER", &kcm)
        .env("TEST_ASSET_HELM", &helm)
        .env("PROMETHEUS", &prometheus)
        .env("PROMTOOL", &promtool)
        .env("PROMETHEUS_OPERATOR_CRDS", &crds)
        .env("PROMETHEUS_OPERATOR_CONFIG", &promcfg)
        .env("CONTAINERS_CONF", "/etc/containers/mine.conf")
        .env("CONTAINERS_STORAGE_CONF", "/etc/containers/my-storage.conf")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("building"), "it built something: {stderr}");
    let env = exports(&String::from_utf8_lossy(&out.stdout));
    let in_assets = |name: &str| assets.path().join(name).display().to_string();
    assert_eq!(env["TEST_ASSET_ETCD"], in_assets("etcd"));
    assert_eq!(
        env["TEST_ASSET_KUBE_APISERVER"],
        in_assets("kube-apiserver")
    );
    assert_eq!(env["TEST_ASSET_KUBECTL"], in_assets("kubectl"));
    assert_eq!(
        env["TEST_ASSET_KUBE_CONTROLLER_MANAGER"],
        kcm.display().to_string()
    );
    assert_eq!(env["TEST_ASSET_HELM"], helm.display().to_string());
    assert_eq!(env["PROMETHEUS"], prometheus.display().to_string());
    assert_eq!(env["PROMTOOL"], promtool.display().to_string());
    assert_eq!(env["PROMETHEUS_OPERATOR_CRDS"], crds);
    assert_eq!(
        env["PROMETHEUS_OPERATOR_CONFIG"],
        promcfg.display().to_string()
    );
    assert_eq!(env["CONTAINERS_CONF"], "/etc/containers/mine.conf");
    assert_eq!(
        env["CONTAINERS_STORAGE_CONF"],
        "/etc/containers/my-storage.conf"
    );
    // Nothing but the lock file was written into the cache.
    nothing_but_the_lock_in(cache.path());
}

#[test]
fn a_test_asset_variable_naming_nothing_is_an_error() {
    let out = Command::new("bash")
        .arg(repo_root().join("hack/tools.sh"))
        .arg("env")
        .env("TEST_ASSET_ETCD", "/nonexistent/etcd")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TEST_ASSET_ETCD=/nonexistent/etcd is not an executable file"),
        "{stderr}"
    );
}

#[test]
fn the_demo_profile_installs_only_the_control_plane_and_helm() {
    // Everything the demo runs is provided; nothing else is. The full
    // profile would write podman's storage configuration and the
    // prometheus-operator CRDs into this empty cache.
    let cache = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("hack/tools.sh"))
        .args(["env", "demo"])
        .env("SYNCSECRET_CACHE", cache.path())
        .env_remove("KUBEBUILDER_ASSETS")
        .env_remove("PROMETHEUS")
        .env_remove("PROMTOOL")
        .env_remove("PROMETHEUS_OPERATOR_CRDS")
        .env_remove("PROMETHEUS_OPERATOR_CONFIG")
        .env_remove("CONTAINERS_CONF")
        .env_remove("CONTAINERS_STORAGE_CONF");
    for var in [
        "TEST_ASSET_ETCD",
        "TEST_ASSET_KUBE_APISERVER",
        "TEST_ASSET_KUBE_CONTROLLER_MANAGER",
        "TEST_ASSET_KUBECTL",
        "TEST_ASSET_HELM",
    ] {
        cmd.env(var, asset(var).unwrap());
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("[3/3] build helm") && !stderr.contains("[4/"),
        "the demo profile ran other steps: {stderr}"
    );
    let env = exports(&String::from_utf8_lossy(&out.stdout));
    let names: Vec<&str> = env.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "TEST_ASSET_ETCD",
            "TEST_ASSET_HELM",
            "TEST_ASSET_KUBECTL",
            "TEST_ASSET_KUBE_APISERVER",
            "TEST_ASSET_KUBE_CONTROLLER_MANAGER"
        ]
    );
    nothing_but_the_lock_in(cache.path());
}
