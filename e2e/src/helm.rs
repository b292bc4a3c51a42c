//! `helm` and `kubectl`, as the tests and the harness run them: the
//! binaries `hack/tools.sh` installed, output captured, a failure carrying
//! the tool's own message.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::{HarnessError, asset, repo_root};

fn run(var: &'static str, args: &[String], stdin: Option<&str>) -> Result<String, HarnessError> {
    let bin = asset(var)?;
    let mut child = Command::new(&bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| HarnessError::io(&bin, e))?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(stdin.unwrap_or_default().as_bytes())
            .map_err(|e| HarnessError::io(&bin, e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| HarnessError::io(&bin, e))?;
    if !out.status.success() {
        return Err(HarnessError::Usage(format!(
            "{} {}: {}{}",
            bin.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `helm args...`; its stdout.
pub fn helm(args: &[&str]) -> Result<String, HarnessError> {
    run(
        "TEST_ASSET_HELM",
        &args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>(),
        None,
    )
}

/// Runs `kubectl --kubeconfig=<kubeconfig> args...` with `stdin`; its stdout.
pub fn kubectl(
    kubeconfig: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, HarnessError> {
    let mut all = vec![format!("--kubeconfig={}", kubeconfig.display())];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    run("TEST_ASSET_KUBECTL", &all, stdin)
}

/// `helm template <chart> charts/<chart>` (release named as the chart) in
/// `namespace`, with `--set` values, the image `make image` builds unless
/// they name another.
pub fn template(chart: &str, namespace: &str, sets: &[&str]) -> Result<String, HarnessError> {
    let dir = repo_root().join("charts").join(chart);
    let dir = dir.to_string_lossy();
    let mut args = vec!["template", chart, &dir, "--namespace", namespace];
    let local = format!("image.repository=localhost/syncsecret/{chart}");
    let sets: Vec<String> = std::iter::once(local.as_str())
        .chain(sets.iter().copied())
        .map(|s| format!("--set={s}"))
        .collect();
    args.extend(sets.iter().map(String::as_str));
    helm(&args)
}

/// The documents of a rendered chart that give an identity its access
/// (Namespaces, ServiceAccounts, Roles, ClusterRoles and their bindings),
/// without the workload.
pub fn access_only(rendered: &str) -> String {
    const KINDS: [&str; 11] = [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        // The tenant limits: every e2e test runs under them.
        "ResourceQuota",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        // And the tenants' flow control.
        "FlowSchema",
        "PriorityLevelConfiguration",
    ];
    rendered
        .split("\n---")
        .filter(|doc| {
            doc.lines().any(|l| {
                l.strip_prefix("kind: ")
                    .is_some_and(|k| KINDS.contains(&k.trim()))
            })
        })
        .map(|doc| format!("---{}\n", doc.trim_start_matches("---")))
        .collect()
}

/// Renders `chart` in `namespace` with `sets` and applies only its access
/// objects (see [`access_only`]) to the cluster of `kubeconfig`.
pub fn apply_access(
    kubeconfig: &Path,
    chart: &str,
    namespace: &str,
    sets: &[&str],
) -> Result<(), HarnessError> {
    let rendered = template(chart, namespace, sets)?;
    kubectl(
        kubeconfig,
        &["apply", "-f", "-"],
        Some(&access_only(&rendered)),
    )?;
    Ok(())
}
