//! The manager chart's ServiceMonitor through prometheus-operator's own
//! relabelling: the scrape configuration the operator's config generator
//! makes from the rendered ServiceMonitor (`prometheus-operator-config`,
//! built by hack/tools.sh from the operator's Go module), its relabelling
//! unchanged, a real Prometheus scraping the running manager.
//!
//! Debian's Prometheus is built without Kubernetes discovery, so the test
//! discovers for it: it reads the Service and its Endpoints back from the
//! real management cluster and hands Prometheus each endpoint as a file
//! target carrying the `__meta_kubernetes_*` labels its `endpoints` role
//! gives, which the operator's rules select and relabel by. The metrics keep their own
//! `namespace` label, the tenant namespace, because the chart sets
//! `honorLabels`; the same ServiceMonitor without it, scraped by a second
//! Prometheus, turns that label into `exported_namespace`, and every
//! `sum by (namespace)` would group by the manager's own namespace.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

use std::io::Write as _;
use std::net::{IpAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use syncsecret_api::{SyncSecret, SyncSecretPhase};
use syncsecret_e2e::asset;
use syncsecret_e2e::helm;
use syncsecret_e2e::kube_util::eventually;
use syncsecret_e2e::pair::{MANAGER_NAMESPACE, Pair, ensure_namespace};
use syncsecret_e2e::podman::first_of;
use syncsecret_e2e::prometheus::Prometheus;
use syncsecret_runtime::generate::rbac::MANAGER_ROLE;

/// An address of this machine other than loopback: the API server refuses
/// loopback addresses in Endpoints, and Prometheus scrapes what they say.
fn host_address() -> anyhow::Result<IpAddr> {
    // Connecting a UDP socket sends nothing; it only picks the route.
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.connect("10.255.255.255:9").context(
        "no route from this machine to another address: Endpoints need a non-loopback one",
    )?;
    let ip = socket.local_addr()?.ip();
    ensure!(
        !ip.is_loopback() && !ip.is_unspecified(),
        "this machine has no address but loopback ({ip}): Endpoints cannot name one"
    );
    Ok(ip)
}

/// A label name as Prometheus's discovery writes one: every character but
/// letters, digits and `_` as `_`.
fn sanitized(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The targets Prometheus's `endpoints` role would discover for a Service
/// and its Endpoints, with the meta labels it documents.
fn endpoint_targets(service: &Value, endpoints: &Value) -> Value {
    let mut labels = serde_json::Map::new();
    let mut put = |k: String, v: &Value| {
        labels.insert(k, json!(v.as_str().unwrap_or_default()));
    };
    put(
        "__meta_kubernetes_namespace".into(),
        &service["metadata"]["namespace"],
    );
    put(
        "__meta_kubernetes_service_name".into(),
        &service["metadata"]["name"],
    );
    put(
        "__meta_kubernetes_endpoints_name".into(),
        &endpoints["metadata"]["name"],
    );
    for (k, v) in service["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
    {
        put(
            format!("__meta_kubernetes_service_label_{}", sanitized(k)),
            v,
        );
        put(
            format!("__meta_kubernetes_service_labelpresent_{}", sanitized(k)),
            &json!("true"),
        );
    }
    let mut groups = Vec::new();
    for subset in endpoints["subsets"].as_array().into_iter().flatten() {
        for port in subset["ports"].as_array().into_iter().flatten() {
            for address in subset["addresses"].as_array().into_iter().flatten() {
                let mut l = labels.clone();
                l.insert(
                    "__meta_kubernetes_endpoint_port_name".into(),
                    port["name"].clone(),
                );
                l.insert(
                    "__meta_kubernetes_endpoint_port_protocol".into(),
                    json!("TCP"),
                );
                l.insert("__meta_kubernetes_endpoint_ready".into(), json!("true"));
                groups.push(json!({
                    "targets": [format!("{}:{}", address["ip"].as_str().unwrap_or_default(), port["port"])],
                    "labels": l,
                }));
            }
        }
    }
    Value::Array(groups)
}

/// prometheus-operator's configuration for `monitor`, with its Kubernetes
/// discovery replaced by the file `targets`.
fn operator_config(monitor: &Value, targets: &std::path::Path) -> anyhow::Result<String> {
    let bin = asset("PROMETHEUS_OPERATOR_CONFIG")?;
    // The configuration for the Prometheus that will read it.
    let version = Command::new(asset("PROMETHEUS")?)
        .arg("--version")
        .output()?;
    let version = String::from_utf8_lossy(&version.stdout)
        .split_whitespace()
        .nth(2)
        // Debian's says "2.42.0+ds".
        .map(|v| format!("v{}", v.split('+').next().unwrap_or(v)))
        .context("prometheus --version said no version")?;
    let mut child = Command::new(&bin)
        .arg(&version)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", bin.display()))?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_yaml_ng::to_string(monitor)?.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "prometheus-operator-config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The operator's config reloader puts the pod's name and shard number
    // in before Prometheus reads it: one Prometheus, shard 0.
    let text = String::from_utf8(out.stdout)?
        .replace("$(SHARD)", "0")
        .replace("$(POD_NAME)", "prometheus-k8s-0");
    let mut config: Value = serde_yaml_ng::from_str(&text)?;
    // Discovery from the file, every second; everything else as the
    // operator wrote it.
    config["global"]["scrape_interval"] = json!("1s");
    config["global"]["evaluation_interval"] = json!("1s");
    for job in config["scrape_configs"]
        .as_array_mut()
        .context("no scrape_configs")?
    {
        job["scrape_interval"] = json!("1s");
        if let Some(j) = job.as_object_mut() {
            j.remove("scrape_timeout");
        }
        let j = job.as_object_mut().context("a job that is not a map")?;
        let sd = j
            .remove("kubernetes_sd_configs")
            .context("a job without Kubernetes discovery")?;
        // What is replaced is what the file stands for: the endpoints of
        // the manager's namespace.
        ensure!(
            sd == json!([{"role": "endpoints", "namespaces": {"names": [MANAGER_NAMESPACE]}}]),
            "the operator discovers otherwise than the file stands for: {sd}"
        );
        j.insert(
            "file_sd_configs".into(),
            json!([{"files": [targets.display().to_string()], "refresh_interval": "1s"}]),
        );
    }
    Ok(serde_yaml_ng::to_string(&config)?)
}

#[tokio::test]
async fn the_metrics_keep_their_namespace_label_through_the_operators_relabelling()
-> anyhow::Result<()> {
    let host = host_address()?;
    let mut pair = Pair::start(&["tenant1"]).await?;
    // Reachable from the host address the Endpoints name; given twice, a
    // flag takes its last value.
    let port = pair.manager.metrics_port;
    pair.manager
        .restart_with(&[&format!("--metrics-addr=0.0.0.0:{port}")])
        .await?;

    // One object synced, so that the manager's series carry a tenant
    // namespace.
    ensure_namespace(&pair.tenants[0], "shop").await?;
    let objects: Api<SyncSecret> = Api::namespaced(pair.tenants[0].clone(), "shop");
    let object = SyncSecret {
        metadata: ObjectMeta {
            name: Some("db".into()),
            ..ObjectMeta::default()
        },
        string_data: Some([("password".to_owned(), "s3cr3t".to_owned())].into()),
        ..SyncSecret::default()
    };
    objects.create(&PostParams::default(), &object).await?;
    eventually("the object Synced", Duration::from_secs(60), || async {
        let o = objects.get("db").await.map_err(|e| e.to_string())?;
        let phase = o.status.and_then(|s| s.phase);
        (phase == Some(SyncSecretPhase::Synced))
            .then_some(())
            .ok_or_else(|| format!("{phase:?}"))
    })
    .await?;

    // The chart's Service and ServiceMonitor. No kubelet runs pods here,
    // so the Service has no selector and its Endpoints name the manager
    // process, as the endpoints controller would name its pod.
    let rendered = helm::template(
        MANAGER_ROLE,
        MANAGER_NAMESPACE,
        &[
            "metrics.serviceMonitor.enabled=true",
            &format!("metrics.port={port}"),
        ],
    )?;
    let mut service = first_of::<Value>(&rendered, "Service")?;
    service["spec"]
        .as_object_mut()
        .context("a Service without spec")?
        .remove("selector");
    let name = service["metadata"]["name"].as_str().unwrap().to_owned();
    let port_name = service["spec"]["ports"][0]["name"]
        .as_str()
        .context("the Service's port has no name")?
        .to_owned();
    let apply = PatchParams::apply("servicemonitor-test").force();
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(pair.management.clone(), MANAGER_NAMESPACE);
    services
        .patch(&name, &apply, &Patch::Apply(&service))
        .await?;
    let endpoints: Api<k8s_openapi::api::core::v1::Endpoints> =
        Api::namespaced(pair.management.clone(), MANAGER_NAMESPACE);
    let addresses = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": name, "labels": service["metadata"]["labels"]},
        "subsets": [{"addresses": [{"ip": host.to_string()}],
                     "ports": [{"name": port_name, "port": port}]}],
    });
    endpoints
        .patch(&name, &apply, &Patch::Apply(&addresses))
        .await?;

    let monitor = first_of::<Value>(&rendered, "ServiceMonitor")?;
    ensure!(
        monitor["spec"]["endpoints"][0]["honorLabels"] == json!(true),
        "the chart's ServiceMonitor does not honour labels: {monitor:?}"
    );
    let mut dishonoured = monitor.clone();
    dishonoured["spec"]["endpoints"][0]["honorLabels"] = json!(false);

    // What the endpoints role would discover, from the objects the API
    // server holds.
    let stored_service = serde_json::to_value(services.get(&name).await?)?;
    let stored_endpoints = serde_json::to_value(endpoints.get(&name).await?)?;
    let dir = tempfile::tempdir()?;
    let targets = dir.path().join("targets.json");
    std::fs::write(
        &targets,
        endpoint_targets(&stored_service, &stored_endpoints).to_string(),
    )?;
    let mut seen = Vec::new();
    for (what, m) in [
        ("the chart's", &monitor),
        ("without honorLabels", &dishonoured),
    ] {
        let config = operator_config(m, &targets)?;
        let sub = dir
            .path()
            .join(if seen.is_empty() { "chart" } else { "without" });
        let prometheus = Prometheus::start_with_config(&sub, &config)?;
        let series = eventually(
            &format!("{what}: the manager's reconciles scraped"),
            Duration::from_secs(60),
            || async {
                let found = prometheus
                    .query("kubelb_manager_sync_secret_reconcile_total")
                    .map_err(|e| format!("{e}; log {}", prometheus.log_tail(10)))?;
                let labels: Vec<Value> = found.into_iter().map(|s| s["metric"].clone()).collect();
                labels
                    .iter()
                    .any(|l| l.to_string().contains("tenant-tenant1"))
                    .then_some(labels.clone())
                    .ok_or_else(|| {
                        format!(
                            "{labels:?}; targets {:?}; log {}",
                            prometheus.targets(),
                            prometheus.log_tail(5)
                        )
                    })
            },
        )
        .await?;
        println!("{what}: {}", series[0]);
        seen.push(series);
    }
    let of_tenant = |series: &[Value], label: &str| {
        series
            .iter()
            .filter(|l| l[label] == "tenant-tenant1")
            .count()
    };
    // The chart's: the tenant namespace as `namespace`, the target's own
    // (the manager's namespace) not laid over it.
    ensure!(
        of_tenant(&seen[0], "namespace") > 0 && of_tenant(&seen[0], "exported_namespace") == 0,
        "through the chart's ServiceMonitor: {:?}",
        seen[0]
    );
    // Without honorLabels the operator's target label wins.
    ensure!(
        of_tenant(&seen[1], "namespace") == 0
            && of_tenant(&seen[1], "exported_namespace") > 0
            && seen[1].iter().all(|l| l["namespace"] == MANAGER_NAMESPACE),
        "without honorLabels: {:?}",
        seen[1]
    );
    Ok(())
}
