//! Running a chart's pod as a container, as a kubelet would: the
//! Deployment's container exactly as `helm template` rendered it (image,
//! command, args, env, ports, the security context's user, read-only root
//! and capabilities), its Secret volumes materialized as files at their
//! mountPath, and the pod's service-account token where in-cluster
//! configuration looks for it. podman runs it on the host's network, so it
//! reaches the local control plane on 127.0.0.1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Secret};
use kube::{Api, Client};

use crate::HarnessError;

/// Where in-cluster configuration finds the pod's identity.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Runs `podman args...`; its stdout. Fails with podman's own words, or
/// with how to get podman when it is missing.
pub fn podman(args: &[&str]) -> Result<String, HarnessError> {
    let out = Command::new("podman").args(args).output().map_err(|e| {
        HarnessError::Usage(format!(
            "cannot run podman ({e}): `hack/tools.sh install` installs podman and runc, and `eval \"$(hack/tools.sh env)\"` configures them"
        ))
    })?;
    if !out.status.success() {
        return Err(HarnessError::Usage(format!(
            "podman {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The first document of `kind` among a chart's rendered documents.
pub fn first_of<T: serde::de::DeserializeOwned>(
    rendered: &str,
    kind: &str,
) -> Result<T, HarnessError> {
    let line = format!("kind: {kind}");
    rendered
        .split("\n---")
        .filter(|doc| doc.lines().any(|l| l.trim() == line))
        .map(|doc| {
            serde_yaml_ng::from_str::<T>(doc)
                .map_err(|e| HarnessError::Usage(format!("the rendered {kind}: {e}")))
        })
        .next()
        .unwrap_or_else(|| Err(HarnessError::Usage(format!("no {kind} rendered"))))
}

/// The one Deployment among a chart's rendered documents: its pod.
pub fn deployment(rendered: &str) -> Result<PodSpec, HarnessError> {
    let deployment: Deployment = first_of(rendered, "Deployment")?;
    deployment
        .spec
        .template
        .spec
        .ok_or_else(|| HarnessError::Usage("the rendered Deployment has no pod spec".into()))
}

/// The Pod a chart renders for `helm test`.
pub fn test_pod(rendered: &str) -> Result<PodSpec, HarnessError> {
    let pod: Pod = first_of(rendered, "Pod")?;
    pod.spec
        .ok_or_else(|| HarnessError::Usage("the rendered test Pod has no spec".into()))
}

/// The pod's identity, as the kubelet would project it: a token for its
/// ServiceAccount, the cluster's CA and the namespace, plus the address
/// in-cluster configuration reads from the environment.
pub struct Identity {
    /// Holds `token`, `ca.crt` and `namespace`.
    pub dir: PathBuf,
    /// `KUBERNETES_SERVICE_HOST`.
    pub host: String,
    /// `KUBERNETES_SERVICE_PORT`.
    pub port: u16,
}

impl Identity {
    /// Writes the files into `dir` (readable by the container's user).
    pub fn write(
        dir: &Path,
        server: &str,
        token: &str,
        ca_pem: &str,
        namespace: &str,
    ) -> Result<Self, HarnessError> {
        let files = [
            ("token", token),
            ("ca.crt", ca_pem),
            ("namespace", namespace),
        ];
        materialize(dir, files.iter().map(|(k, v)| (*k, v.as_bytes())))?;
        let (host, port) = server
            .trim_start_matches("https://")
            .rsplit_once(':')
            .ok_or_else(|| HarnessError::Usage(format!("no port in {server}")))?;
        let port = port
            .parse()
            .map_err(|_| HarnessError::Usage(format!("no port in {server}")))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            host: host.to_owned(),
            port,
        })
    }

    /// A token of ServiceAccount `account` in `namespace` of `cluster`,
    /// from the TokenRequest API, written into `dir`.
    pub async fn of_service_account(
        cluster: &crate::control_plane::Cluster,
        namespace: &str,
        account: &str,
        dir: &Path,
    ) -> Result<Self, HarnessError> {
        let token = cluster.service_account_token(namespace, account).await?;
        Self::write(dir, cluster.server(), &token, cluster.ca_pem(), namespace)
    }
}

/// Writes `files` into `dir` as a kubelet writes a Secret volume's keys:
/// one file per key, readable by any user, the directory replaced whole
/// (so that a running container sees the new files, never half of them).
pub fn materialize<'a>(
    dir: &Path,
    files: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Result<(), HarnessError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |p: &Path, e| HarnessError::io(p, e);
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io(dir, e))?;
    for (key, value) in files {
        let path = dir.join(key);
        let fresh = dir.join(format!(".{key}.new"));
        std::fs::write(&fresh, value).map_err(|e| io(&fresh, e))?;
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| io(&fresh, e))?;
        std::fs::rename(&fresh, &path).map_err(|e| io(&path, e))?;
    }
    Ok(())
}

/// Reads Secret `namespace/name` and writes its keys into `dir`.
pub async fn materialize_secret(
    client: &Client,
    namespace: &str,
    name: &str,
    dir: &Path,
) -> Result<(), HarnessError> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(name)
        .await?;
    let data = secret.data.unwrap_or_default();
    materialize(dir, data.iter().map(|(k, v)| (k.as_str(), v.0.as_slice())))
}

/// Every Secret volume of `pod_spec`, as a kubelet mounts it: the Secret
/// it names, read from `namespace`, materialized under `dir`; volume name
/// to directory. A Secret that does not exist is an error, as it keeps a
/// real pod from starting.
pub async fn secret_volumes(
    client: &Client,
    namespace: &str,
    pod_spec: &PodSpec,
    dir: &Path,
) -> Result<BTreeMap<String, PathBuf>, HarnessError> {
    let mut volumes = BTreeMap::new();
    for v in pod_spec.volumes.iter().flatten() {
        let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) else {
            continue;
        };
        let path = dir.join(format!("volume-{}", v.name));
        materialize_secret(client, namespace, name, &path).await?;
        volumes.insert(v.name.clone(), path);
    }
    Ok(volumes)
}

/// The `podman run` arguments (from `run` to the container's own) of the
/// container of `pod_spec` as pod `pod` (see [`Running::start`]), and that
/// container as rendered.
pub fn run_args(
    pod_spec: &PodSpec,
    pod: &str,
    identity: &Identity,
    secrets: &BTreeMap<String, PathBuf>,
) -> Result<(Container, Vec<String>), HarnessError> {
    let usage = |m: &str| HarnessError::Usage(format!("the rendered pod: {m}"));
    let [container] = pod_spec.containers.as_slice() else {
        return Err(usage("not exactly one container"));
    };
    let mut args: Vec<String> = vec![
        "run".into(),
        format!("--name={pod}"),
        "--network=host".into(),
        format!("--hostname={pod}"),
    ];
    // The user and group: the container's securityContext over the pod's.
    let pod_sc = pod_spec.security_context.as_ref();
    let sc = container.security_context.as_ref();
    let user = sc
        .and_then(|s| s.run_as_user)
        .or_else(|| pod_sc.and_then(|s| s.run_as_user));
    let group = sc
        .and_then(|s| s.run_as_group)
        .or_else(|| pod_sc.and_then(|s| s.run_as_group));
    if let Some(user) = user {
        args.push(match group {
            Some(g) => format!("--user={user}:{g}"),
            None => format!("--user={user}"),
        });
    }
    // The memory limit, so that an OOM is an OOM (swap none: a
    // kubelet runs without).
    if let Some(memory) = container
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("memory"))
    {
        let bytes =
            podman_bytes(&memory.0).ok_or_else(|| usage(&format!("memory limit {}", memory.0)))?;
        args.push(format!("--memory={bytes}"));
        args.push(format!("--memory-swap={bytes}"));
    }
    if sc.and_then(|s| s.read_only_root_filesystem) == Some(true) {
        args.push("--read-only".into());
    }
    if sc.and_then(|s| s.allow_privilege_escalation) == Some(false) {
        args.push("--security-opt=no-new-privileges".into());
    }
    for cap in sc
        .and_then(|s| s.capabilities.as_ref())
        .and_then(|c| c.drop.as_ref())
        .into_iter()
        .flatten()
    {
        args.push(format!("--cap-drop={cap}"));
    }
    // The environment: values as given, the downward API's pod name.
    for env in container.env.iter().flatten() {
        let value = match (&env.value, &env.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                Some("metadata.name") => pod.to_owned(),
                Some("metadata.namespace") => identity_namespace(identity)?,
                other => return Err(usage(&format!("env {} from {other:?}", env.name))),
            },
            (None, None) => String::new(),
        };
        args.push(format!("--env={}={value}", env.name));
    }
    args.push(format!("--env=KUBERNETES_SERVICE_HOST={}", identity.host));
    args.push(format!("--env=KUBERNETES_SERVICE_PORT={}", identity.port));
    args.push(format!(
        "--volume={}:{SERVICE_ACCOUNT_DIR}:ro",
        identity.dir.display()
    ));
    // Volume mounts: each must be a Secret volume we were given.
    for mount in container.volume_mounts.iter().flatten() {
        let volume = pod_spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .ok_or_else(|| usage(&format!("no volume {}", mount.name)))?;
        if volume.secret.is_none() {
            return Err(usage(&format!("volume {} is not a Secret", mount.name)));
        }
        let dir = secrets
            .get(&mount.name)
            .ok_or_else(|| usage(&format!("no files for volume {}", mount.name)))?;
        let ro = if mount.read_only == Some(true) {
            ":ro"
        } else {
            ""
        };
        args.push(format!(
            "--volume={}:{}{ro}",
            dir.display(),
            mount.mount_path
        ));
    }
    if let Some(command) = &container.command {
        args.push(format!("--entrypoint={}", serde_json::json!(command)));
    }
    let image = container.image.clone().ok_or_else(|| usage("no image"))?;
    args.push(image);
    args.extend(container.args.iter().flatten().cloned());
    Ok((container.clone(), args))
}

/// A memory quantity (`256Mi`, `1Gi`, `500M`, `1000000`) in bytes.
fn podman_bytes(quantity: &str) -> Option<u64> {
    let split = quantity
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(quantity.len());
    let (number, unit) = quantity.split_at(split);
    let factor: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(factor)
}

/// A running container, removed on drop.
pub struct Running {
    /// The container's name.
    pub name: String,
    /// The Deployment's only container, as rendered.
    pub spec: Container,
    /// `terminationGracePeriodSeconds`.
    pub grace_seconds: i64,
}

impl Running {
    /// Runs the pod of `pod_spec` as a kubelet would in `namespace` of
    /// `cluster`: with a token of the ServiceAccount it names (written
    /// under `dir`) and `secrets` as its Secret volumes. Returns once every
    /// probe it declares answers 200.
    pub async fn launch(
        cluster: &crate::control_plane::Cluster,
        pod_spec: &PodSpec,
        pod: &str,
        namespace: &str,
        dir: &Path,
        secrets: &BTreeMap<String, PathBuf>,
    ) -> Result<Self, HarnessError> {
        let account = pod_spec.service_account_name.as_deref().ok_or_else(|| {
            HarnessError::Usage("the rendered pod names no ServiceAccount".into())
        })?;
        let identity = Identity::of_service_account(
            cluster,
            namespace,
            account,
            &dir.join(format!("{pod}-serviceaccount")),
        )
        .await?;
        let running = Self::start(pod_spec, pod, &identity, secrets)?;
        for (path, port) in running.probes()? {
            crate::kube_util::eventually(
                &format!("{pod} {path} on :{port}"),
                std::time::Duration::from_secs(60),
                || async {
                    if !running.running().map_err(|e| e.to_string())? {
                        return Err(format!("exited:\n{}", running.logs()));
                    }
                    match crate::pair::http_get(port, &path) {
                        Ok((true, _)) => Ok(()),
                        other => Err(format!("{other:?}")),
                    }
                },
            )
            .await?;
            println!("    {pod}: {path} answers on the declared port {port}");
        }
        Ok(running)
    }

    /// Starts the container of `pod_spec` as pod `pod`: its Secret volumes
    /// from `secrets` (volume name → directory of materialized keys).
    pub fn start(
        pod_spec: &PodSpec,
        pod: &str,
        identity: &Identity,
        secrets: &BTreeMap<String, PathBuf>,
    ) -> Result<Self, HarnessError> {
        let (container, mut args) = run_args(pod_spec, pod, identity, secrets)?;
        args.insert(1, "--detach".into());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        // One left over from an interrupted run would hold the name.
        let _ = podman(&["rm", "--force", "--ignore", pod]);
        podman(&refs)?;
        Ok(Self {
            name: pod.to_owned(),
            spec: container,
            grace_seconds: pod_spec.termination_grace_period_seconds.unwrap_or(30),
        })
    }

    /// The host port of the container port named `name`.
    pub fn port(&self, name: &str) -> Result<u16, HarnessError> {
        self.spec
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| HarnessError::Usage(format!("no port named {name}")))
    }

    /// The (path, port) of the liveness and readiness probes, as declared.
    pub fn probes(&self) -> Result<Vec<(String, u16)>, HarnessError> {
        let mut out = Vec::new();
        for probe in [&self.spec.liveness_probe, &self.spec.readiness_probe] {
            let get = probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .ok_or_else(|| HarnessError::Usage("a probe that is not httpGet".into()))?;
            let port = match &get.port {
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p) => {
                    u16::try_from(*p).map_err(|_| HarnessError::Usage(format!("port {p}")))?
                }
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(n) => {
                    self.port(n)?
                }
            };
            out.push((get.path.clone().unwrap_or_else(|| "/".into()), port));
        }
        Ok(out)
    }

    /// Waits until it exits; its exit code.
    pub fn wait(&self) -> Result<i64, HarnessError> {
        let code = podman(&["wait", &self.name])?;
        code.parse()
            .map_err(|_| HarnessError::Usage(format!("exit code {code:?}")))
    }

    /// Whether it still runs.
    pub fn running(&self) -> Result<bool, HarnessError> {
        Ok(podman(&["inspect", "--format={{.State.Running}}", &self.name])? == "true")
    }

    /// Its log: what it wrote to stdout, then to stderr (podman hands each
    /// back on its own stream).
    pub fn logs(&self) -> String {
        match Command::new("podman").args(["logs", &self.name]).output() {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("podman logs {}: {e}", self.name),
        }
    }

    /// Stops it as a kubelet does: SIGTERM, then SIGKILL after the grace
    /// period. Returns how long it took and the exit code.
    pub fn stop(&self) -> Result<(std::time::Duration, i64), HarnessError> {
        let started = std::time::Instant::now();
        let grace = self.grace_seconds.to_string();
        podman(&["stop", "--time", &grace, &self.name])?;
        let took = started.elapsed();
        let code = podman(&["inspect", "--format={{.State.ExitCode}}", &self.name])?;
        let code = code
            .parse()
            .map_err(|_| HarnessError::Usage(format!("exit code {code:?}")))?;
        Ok((took, code))
    }
}

fn identity_namespace(identity: &Identity) -> Result<String, HarnessError> {
    let path = identity.dir.join("namespace");
    std::fs::read_to_string(&path).map_err(|e| HarnessError::io(&path, e))
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = podman(&["rm", "--force", "--time=0", &self.name]);
    }
}
