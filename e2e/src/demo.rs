//! `make up` and `make demo`: a local management and tenant cluster for a
//! person, with kubectl output they can compare with their own.

use std::path::Path;
use std::process::{Command, Stdio};

use kube::ResourceExt;
use syncsecret_api::contract::tenant_namespace;

use crate::pair::Pair;
use crate::{HarnessError, asset, repo_root};

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
    let shown: Vec<&str> = args
        .iter()
        .map(|a| if a.contains('\n') { "<template>" } else { a })
        .collect();
    println!("\n[{cluster}] $ kubectl {}", shown.join(" "));
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

/// Prints how to reach each cluster and the controllers.
pub fn print_access(pair: &Pair) {
    println!("\nClusters (admin kubeconfigs):");
    for c in pair.plane.clusters() {
        println!(
            "  {:<12} export KUBECONFIG={}",
            c.name(),
            c.kubeconfig().display()
        );
    }
    println!("\nControllers (metrics and probes):");
    for c in pair.controllers() {
        println!(
            "  {:<26} http://127.0.0.1:{}/metrics  http://127.0.0.1:{}/readyz",
            c.name(),
            c.metrics_port,
            c.probe_port
        );
    }
}

/// The demo: a SyncSecret travels from the tenant cluster to an
/// owner-referenced Secret in the management cluster; a bad one is refused
/// with its reason; deleting the tenant object cleans up both clusters.
pub async fn run_demo(pair: &Pair) -> Result<(), HarnessError> {
    let tenant = pair
        .plane
        .clusters()
        .get(1)
        .ok_or_else(|| HarnessError::Usage("the demo needs a tenant cluster".into()))?;
    let kc = tenant.kubeconfig();
    let mgmt = pair.plane.management().kubeconfig();
    let tenant_ns = tenant_namespace(tenant.name());
    let sample = repo_root().join("config/samples/opaque.yaml");

    println!("\n== 1. A SyncSecret is created in the tenant cluster");
    kubectl(kc, &["apply", "-f", &sample.display().to_string()], None)?;
    let (copy, secret) = pair
        .synced(0, "default", "db-credentials", |_| true)
        .await?;
    kubectl(kc, &["get", "syncsecrets", "-A"], None)?;

    println!(
        "\n== 2. The management cluster holds a copy (named by the tenant object's UID) and a Secret (named by the copy's UID)"
    );
    kubectl(
        mgmt,
        &["get", "syncsecrets,secrets", "-n", &tenant_ns],
        None,
    )?;
    println!(
        "tenant default/db-credentials -> copy {tenant_ns}/{} -> Secret {tenant_ns}/{}",
        copy.name_any(),
        secret.name_any()
    );
    // Labels, owner and key names; values stay out of the terminal.
    let template = r#"go-template=labels: {{.metadata.labels}}
owner:  {{with index .metadata.ownerReferences 0}}{{.kind}}/{{.name}} controller={{.controller}}{{end}}
keys:   {{range $k, $v := .data}}{{$k}} {{end}}
"#;
    kubectl(
        mgmt,
        &[
            "get",
            "secret",
            "-n",
            &tenant_ns,
            &secret.name_any(),
            "-o",
            template,
        ],
        None,
    )?;

    println!(
        "\n== 3. A bad one (type kubernetes.io/tls without tls.key) is refused at admission, with the reason"
    );
    let refused = !kubectl(kc, &["apply", "-f", "-"], Some(BAD_SYNCSECRET))?;
    if !refused {
        return Err(HarnessError::Usage(
            "the API server accepted a tls SyncSecret without tls.key: is the generated CRD installed?".into(),
        ));
    }

    println!("\n== 4. Deleting it in the tenant cluster removes the copy and the Secret first");
    kubectl(
        kc,
        &["delete", "-f", &sample.display().to_string(), "--wait=true"],
        None,
    )?;
    kubectl(
        mgmt,
        &["get", "syncsecrets,secrets", "-n", &tenant_ns],
        None,
    )?;
    Ok(())
}
