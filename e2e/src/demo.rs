//! `make up` and `make demo`: a local management and tenant cluster for a
//! person, with kubectl output they can compare with their own.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::{ControlPlane, HarnessError, asset, repo_root};

/// A SyncSecret the CRD must refuse: type tls without `tls.key`.
const BAD_SYNCSECRET: &str = r#"apiVersion: kubelb.k8c.io/v1alpha1
kind: SyncSecret
metadata:
  name: broken-tls
  namespace: default
type: kubernetes.io/tls
stringData:
  tls.crt: "only the certificate, no key"
"#;

/// Runs kubectl against a kubeconfig, echoing the command and its output.
/// Returns whether kubectl succeeded.
fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Result<bool, HarnessError> {
    let bin = asset("TEST_ASSET_KUBECTL")?;
    let cluster = kubeconfig
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    println!("\n[{cluster}] $ kubectl {}", args.join(" "));
    let mut child = Command::new(&bin)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .spawn()
        .map_err(|e| HarnessError::Spawn {
            name: "kubectl".into(),
            program: bin.clone(),
            source: e,
        })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        pipe.write_all(text.as_bytes())
            .map_err(|e| HarnessError::Io {
                path: bin.clone(),
                source: e,
            })?;
    }
    let status = child.wait().map_err(|e| HarnessError::Io {
        path: bin.clone(),
        source: e,
    })?;
    Ok(status.success())
}

/// Prints how to reach each cluster.
pub fn print_access(cp: &ControlPlane) {
    println!("\nClusters (admin kubeconfigs):");
    for c in cp.clusters() {
        println!(
            "  {:<12} export KUBECONFIG={}",
            c.name(),
            c.kubeconfig().display()
        );
    }
}

/// The demo: a good SyncSecret stored in the tenant cluster, a bad one
/// refused by the API server with its message.
pub fn run_demo(cp: &ControlPlane) -> Result<(), HarnessError> {
    let tenant = cp
        .clusters()
        .get(1)
        .ok_or_else(|| HarnessError::Usage("the demo needs a tenant cluster".into()))?;
    let kc = tenant.kubeconfig();
    let sample = repo_root().join("config/samples/opaque.yaml");
    println!("\n== A good SyncSecret is stored in the tenant cluster");
    kubectl(kc, &["apply", "-f", &sample.display().to_string()], None)?;
    kubectl(kc, &["get", "syncsecrets", "-A"], None)?;
    println!(
        "\n== A bad one (type kubernetes.io/tls without tls.key) is refused at admission, with the reason"
    );
    let refused = !kubectl(kc, &["apply", "-f", "-"], Some(BAD_SYNCSECRET))?;
    if !refused {
        return Err(HarnessError::Usage(
            "the API server accepted a tls SyncSecret without tls.key: is the generated CRD installed?".into(),
        ));
    }
    kubectl(kc, &["get", "syncsecrets", "-A"], None)?;
    Ok(())
}
