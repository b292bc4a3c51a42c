//! The controller pair on the real control plane: one management cluster,
//! tenant clusters, a `syncsecret-manager` process and one `syncsecret-ccm`
//! process per tenant, each with its own kubeconfig. Every identity is a
//! chart's own ServiceAccount with a token from the TokenRequest API, bound
//! only by the RBAC the charts render (the ccm's management identity: the
//! Role in its own tenant namespace, from the manager chart's `tenants`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use syncsecret_api::contract::tenant_namespace;
use syncsecret_api::{SyncSecret, SyncSecretPhase};
use syncsecret_runtime::generate::rbac;

use crate::control_plane::{self, free_port};
use crate::kube_util::{TEST_FIELD_MANAGER, eventually};
use crate::process::Process;
use crate::{ControlPlane, HarnessError};
use crate::{helm, leaks};

/// Namespace of the manager (and its lease) in the management cluster.
pub const MANAGER_NAMESPACE: &str = "kubelb";

/// The label and annotation keys the harness's manager lets tenants put on
/// their Secrets (`--allowed-metadata`).
pub const ALLOWED_METADATA: &str = "app,team,note,e2e-tamper";
/// Namespace of the ccm (and its lease) in each tenant cluster.
pub const CCM_NAMESPACE: &str = "kube-system";

/// Builds the controller binaries (once per test process) with the same
/// cargo and profile as the tests, and returns the directory holding them.
pub fn controller_binaries() -> Result<PathBuf, HarnessError> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
            if dir.ends_with("deps") {
                dir.pop();
            }
            let release = dir.ends_with("release");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Command::new(cargo);
            // Cargo gives a test process CARGO_* variables of its own; passed
            // on, they change build-script fingerprints and make this build
            // and the next `cargo test` rebuild each other's dependencies.
            for (k, _) in std::env::vars_os() {
                let k = k.to_string_lossy();
                if k.starts_with("CARGO_")
                    && !matches!(k.as_ref(), "CARGO_HOME" | "CARGO_TARGET_DIR")
                    && !k.starts_with("CARGO_BUILD_")
                {
                    cmd.env_remove(k.as_ref());
                }
            }
            cmd.args([
                "build",
                "-q",
                "-p",
                "syncsecret-ccm",
                "-p",
                "syncsecret-manager",
            ]);
            if release {
                cmd.arg("--release");
            }
            let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "cargo build of the controllers failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(dir)
        })
        .clone()
        .map_err(HarnessError::Usage)
}

/// One controller process and how to reach it.
pub struct ControllerProcess {
    name: String,
    bin: PathBuf,
    args: Vec<String>,
    base_args: Vec<String>,
    extra_args: Vec<String>,
    log_dir: PathBuf,
    starts: u32,
    process: Option<Process>,
    /// Port of `/metrics`.
    pub metrics_port: u16,
    /// Port of `/healthz` and `/readyz`.
    pub probe_port: u16,
    /// Whether it serves `/readyz` on `probe_port` (a command template may
    /// not).
    probes: bool,
    /// The container it runs in, when it runs as its image (`podman run`
    /// in the foreground): removed when it is killed or dropped, since
    /// killing podman leaves the container running.
    container: Option<String>,
}

/// How the controllers are started: ours (the binaries of this workspace,
/// with extra flags) or any implementation of the same contract, given as
/// shell command templates.
#[derive(Clone, Debug, Default)]
pub struct Launch {
    /// The manager's command; placeholders `{kubeconfig}`, `{namespace}`,
    /// `{metrics_addr}`, `{probe_addr}`. `None`: ours.
    pub manager: Option<String>,
    /// The ccm's command; placeholders `{tenant}`, `{kubeconfig}` (tenant
    /// cluster), `{kubelb_kubeconfig}` (management cluster),
    /// `{metrics_addr}`, `{probe_addr}`. `None`: ours.
    pub ccm: Option<String>,
    /// Extra flags for our manager.
    pub manager_args: Vec<String>,
    /// Extra flags for our ccm.
    pub ccm_args: Vec<String>,
    /// Each tenant's quota of copies (the manager chart's
    /// `tenantLimits.copies`); `None`: the chart's default.
    pub tenant_copies: Option<u32>,
    /// Run our manager as this image (`localhost/syncsecret/syncsecret-manager:dev`,
    /// as `make image` builds it), its chart's Deployment container as
    /// rendered and under the chart's memory limit, with a token of its
    /// ServiceAccount where in-cluster configuration reads it; `None`:
    /// the binary of this workspace, as a process.
    pub manager_image: Option<String>,
    /// More `--set` values of the manager chart (e.g. a raised
    /// `tenantLimits` bound).
    pub manager_chart: Vec<String>,
}

impl ControllerProcess {
    /// Starts `template` (placeholders already filled in, except the listen
    /// addresses) with `sh -c exec`, so that its PID is the controller's.
    pub fn launch_template(
        name: &str,
        template: &str,
        log_dir: &Path,
    ) -> Result<Self, HarnessError> {
        let metrics_port = free_port()?;
        let probe_port = free_port()?;
        let command = template
            .replace("{metrics_addr}", &format!("127.0.0.1:{metrics_port}"))
            .replace("{probe_addr}", &format!("127.0.0.1:{probe_port}"));
        let args = vec!["-c".to_owned(), format!("exec {command}")];
        let mut c = Self {
            name: name.to_owned(),
            bin: PathBuf::from("/bin/sh"),
            args: args.clone(),
            base_args: args,
            extra_args: Vec::new(),
            log_dir: log_dir.to_owned(),
            starts: 0,
            process: None,
            metrics_port,
            probe_port,
            probes: template.contains("{probe_addr}"),
            container: None,
        };
        c.spawn()?;
        Ok(c)
    }

    /// Its PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// Starts `bin` as `name` with `args` (listen addresses added), its
    /// log in `log_dir`, without waiting for it to become ready.
    pub fn launch(
        name: &str,
        bin: PathBuf,
        mut args: Vec<String>,
        log_dir: &Path,
    ) -> Result<Self, HarnessError> {
        let base_args = args.clone();
        let metrics_port = free_port()?;
        let probe_port = free_port()?;
        args.push(format!("--metrics-addr=127.0.0.1:{metrics_port}"));
        args.push(format!(
            "--health-probe-bind-address=127.0.0.1:{probe_port}"
        ));
        let mut c = Self {
            name: name.to_owned(),
            bin,
            args,
            base_args,
            extra_args: Vec::new(),
            log_dir: log_dir.to_owned(),
            starts: 0,
            process: None,
            metrics_port,
            probe_port,
            probes: true,
            container: None,
        };
        c.spawn()?;
        Ok(c)
    }

    /// Runs the manager chart's Deployment container, rendered with
    /// `sets`, as a `podman run` in the foreground (its log is the
    /// controller's), on free ports of the host's network, as a pod of
    /// `cluster` in `namespace` would run. Restarts and extra flags work as
    /// for a process; a kill removes the container.
    pub async fn launch_image(
        name: &str,
        cluster: &crate::control_plane::Cluster,
        namespace: &str,
        sets: &[String],
        log_dir: &Path,
    ) -> Result<Self, HarnessError> {
        let metrics_port = free_port()?;
        let probe_port = free_port()?;
        let mut sets: Vec<String> = sets.to_vec();
        sets.push(format!("metrics.port={metrics_port}"));
        sets.push(format!("probes.port={probe_port}"));
        let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
        let pod_spec = crate::podman::deployment(&crate::helm::template(
            rbac::MANAGER_ROLE,
            namespace,
            &sets,
        )?)?;
        let account = pod_spec.service_account_name.clone().unwrap_or_default();
        let identity = crate::podman::Identity::of_service_account(
            cluster,
            namespace,
            &account,
            &log_dir.join(format!("{name}-serviceaccount")),
        )
        .await?;
        let container = format!("{name}-{}", uuid::Uuid::new_v4().simple());
        let (_, mut args) =
            crate::podman::run_args(&pod_spec, &container, &identity, &BTreeMap::new())?;
        // Removed when it exits; the signals podman gets go to it.
        args.insert(1, "--rm".into());
        let mut c = Self {
            name: name.to_owned(),
            bin: PathBuf::from("podman"),
            args: args.clone(),
            base_args: args,
            extra_args: Vec::new(),
            log_dir: log_dir.to_owned(),
            starts: 0,
            process: None,
            metrics_port,
            probe_port,
            probes: true,
            container: Some(container),
        };
        c.spawn()?;
        Ok(c)
    }

    fn spawn(&mut self) -> Result<(), HarnessError> {
        self.starts += 1;
        let log = self
            .log_dir
            .join(format!("{}.{}.log", self.name, self.starts));
        let args: Vec<String> = self.args.iter().chain(&self.extra_args).cloned().collect();
        self.process = Some(Process::spawn(&self.name, &self.bin, &args, &log)?);
        Ok(())
    }

    /// Its name (`syncsecret-manager`, `syncsecret-ccm-<tenant>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stops it with SIGTERM, which must make it drain and exit 0 within the
    /// grace period, and starts it again with the same flags.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop()?;
        self.spawn()
    }

    /// Starts it again after [`Self::stop`] and waits until it is ready.
    pub async fn start(&mut self) -> Result<(), HarnessError> {
        self.spawn()?;
        self.wait_ready().await
    }

    /// Stops it with SIGTERM, which must make it drain and exit 0 within the
    /// grace period.
    pub fn stop(&mut self) -> Result<(), HarnessError> {
        if let Some(mut p) = self.process.take() {
            match p.stop() {
                Some(status) if status.success() => {}
                other => {
                    return Err(HarnessError::Usage(format!(
                        "{} did not exit 0 on SIGTERM ({other:?}); log:\n{}",
                        self.name,
                        p.log_tail(20)
                    )));
                }
            }
        }
        Ok(())
    }

    /// Whether it is not running: it exited by itself (or was stopped and
    /// not started again).
    pub fn has_exited(&mut self) -> bool {
        self.process.as_mut().is_none_or(|p| p.exited().is_some())
    }

    /// Kills it with SIGKILL (a crash: no drain, no lease release, writes
    /// cut off wherever they were); [`Self::start`] brings it back.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
        if let Some(container) = &self.container {
            let _ = crate::podman::podman(&["rm", "--force", "--time=0", "--ignore", container]);
        }
    }

    /// Its peak resident memory so far, in KiB (`VmHWM`; in a container,
    /// of the controller inside it), if it runs.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let pid = match &self.container {
            Some(c) => crate::podman::podman(&["inspect", "--format={{.State.Pid}}", c])
                .ok()?
                .parse::<u32>()
                .ok()?,
            None => self.pid()?,
        };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    }

    /// Whether the kernel killed it for its memory limit (only a container
    /// has one: `false` for a process).
    pub fn oom_killed(&self) -> bool {
        self.container.as_ref().is_some_and(|c| {
            crate::podman::podman(&["inspect", "--format={{.State.OOMKilled}}", c])
                .is_ok_and(|o| o == "true")
        })
    }

    /// Starts another process of the same binary with the same flags plus
    /// `extra` (e.g. `--dry-run`), on ports and a log of its own, and waits
    /// until it is ready.
    pub async fn sibling(
        &self,
        name: &str,
        extra: &[&str],
    ) -> Result<ControllerProcess, HarnessError> {
        let mut args = self.base_args.clone();
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let mut c = Self::launch(name, self.bin.clone(), args, &self.log_dir)?;
        c.wait_ready().await?;
        Ok(c)
    }

    /// Its flags, without the listen addresses.
    pub fn base_args(&self) -> &[String] {
        &self.base_args
    }

    /// Starts another process of the same binary with `args` instead of
    /// its own (listen addresses added), on ports and a log of its own,
    /// without waiting for it to become ready.
    pub fn variant(
        &self,
        name: &str,
        args: Vec<String>,
    ) -> Result<ControllerProcess, HarnessError> {
        Self::launch(name, self.bin.clone(), args, &self.log_dir)
    }

    /// Restarts it with `extra` flags added to its usual ones (none: back to
    /// the usual ones) and waits until it is ready.
    pub async fn restart_with(&mut self, extra: &[&str]) -> Result<(), HarnessError> {
        self.extra_args = extra.iter().map(|a| (*a).to_owned()).collect();
        self.restart()?;
        self.wait_ready().await
    }

    /// The body of `GET path` on `port`, or the HTTP status line on failure.
    fn get(port: u16, path: &str) -> Result<(bool, String), String> {
        http_get(port, path)
    }

    /// The text of `/metrics`.
    pub fn metrics(&self) -> Result<String, HarnessError> {
        match Self::get(self.metrics_port, "/metrics") {
            Ok((true, body)) => Ok(body),
            Ok((false, body)) => Err(HarnessError::Usage(format!(
                "{} /metrics: {body}",
                self.name
            ))),
            Err(e) => Err(HarnessError::Usage(format!("{} /metrics: {e}", self.name))),
        }
    }

    /// `/readyz`: whether it answered 200, and its body.
    pub fn readyz(&self) -> Result<(bool, String), HarnessError> {
        Self::get(self.probe_port, "/readyz")
            .map_err(|e| HarnessError::Usage(format!("{} /readyz: {e}", self.name)))
    }

    /// The sum of every sample of `metric` (all label sets).
    pub fn metric_sum(&self, metric: &str) -> Result<f64, HarnessError> {
        Ok(sum_samples(&self.metrics()?, metric))
    }

    /// Waits until `/readyz` answers 200; fails early if the process exited.
    pub async fn wait_ready(&mut self) -> Result<(), HarnessError> {
        let port = self.probe_port;
        let name = self.name.clone();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(p) = self.process.as_mut()
                && let Some(status) = p.exited()
            {
                return Err(HarnessError::Exited {
                    name,
                    status,
                    log_tail: p.log_tail(30),
                });
            }
            if !self.probes && std::time::Instant::now() + Duration::from_secs(58) > deadline {
                // No probe to ask: alive for two seconds is all we know.
                return Ok(());
            }
            if self.probes
                && let Ok((true, _)) = Self::get(port, "/readyz")
            {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(HarnessError::Timeout {
                    what: format!("{name} /readyz"),
                    seconds: 60,
                    detail: self
                        .process
                        .as_ref()
                        .map(|p| p.log_tail(20))
                        .unwrap_or_default(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The end of its current log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process
            .as_ref()
            .map(|p| p.log_tail(lines))
            .unwrap_or_default()
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        if self.container.is_some() {
            self.kill();
        }
    }
}

/// `<prefix>_writes_total` by `resource/verb`, from `/metrics` text.
pub fn writes_by_resource(metrics: &str, prefix: &str) -> std::collections::BTreeMap<String, f64> {
    let head = format!("{prefix}_writes_total{{");
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(&head))
        .filter_map(|rest| {
            let (labels, value) = rest.split_once("} ")?;
            let get = |k: &str| {
                labels.split(',').find_map(|kv| {
                    kv.strip_prefix(&format!("{k}=\""))?
                        .strip_suffix('"')
                        .map(str::to_owned)
                })
            };
            Some((
                format!("{}/{}", get("resource")?, get("verb")?),
                value.parse().ok()?,
            ))
        })
        .collect()
}

/// Waits (up to a minute) until the samples of `metric` on `c` (a name,
/// or a name with its labels: `name{a="b"}`) add up to a value `ok`
/// takes; `what` says which, for the error.
pub async fn metric_reaches(
    c: &ControllerProcess,
    metric: &str,
    what: &str,
    ok: impl Fn(f64) -> bool,
) -> Result<f64, HarnessError> {
    crate::kube_util::eventually(
        &format!("{} {metric} {what}", c.name()),
        Duration::from_secs(60),
        || async {
            let v = c.metric_sum(metric).map_err(|e| e.to_string())?;
            if ok(v) { Ok(v) } else { Err(format!("{v}")) }
        },
    )
    .await
}

/// The sum of every sample of `metric` in Prometheus text.
pub fn sum_samples(text: &str, metric: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `GET http://127.0.0.1:<port><path>`: whether it answered 200, and the
/// body.
pub fn http_get(port: u16, path: &str) -> Result<(bool, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).map_err(|e| e.to_string())?;
    let ok = buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200");
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((ok, body))
}

/// The running pair and its clusters.
pub struct Pair {
    /// ccm per tenant, in the order of the tenant names.
    pub ccms: Vec<ControllerProcess>,
    /// The manager.
    pub manager: ControllerProcess,
    /// Admin client of the management cluster.
    pub management: Client,
    /// Admin clients of the tenant clusters.
    pub tenants: Vec<Client>,
    /// The tenant cluster names.
    pub tenant_names: Vec<String>,
    /// Every value the tenant clusters' SyncSecrets held, once
    /// [`Self::record_written`] started it.
    written: Option<leaks::Written>,
    /// The clusters; dropped last, after the controllers.
    pub plane: ControlPlane,
}

impl Pair {
    /// Starts a management cluster and the named tenant clusters, prepares
    /// tenant namespaces and least-privilege access, and starts the
    /// controllers (ccm with the Secret synchronizer on), waiting until each
    /// is ready.
    pub async fn start(tenant_names: &[&str]) -> Result<Self, HarnessError> {
        Self::start_with(tenant_names, &Launch::default()).await
    }

    /// [`Self::start`], with the controllers started as `launch` says.
    pub async fn start_with(tenant_names: &[&str], launch: &Launch) -> Result<Self, HarnessError> {
        Self::start_on(tenant_names, launch, control_plane::Options::default()).await
    }

    /// [`Self::start_with`], with the management cluster run as `options`
    /// say.
    pub async fn start_on(
        tenant_names: &[&str],
        launch: &Launch,
        options: control_plane::Options,
    ) -> Result<Self, HarnessError> {
        let bin_dir = controller_binaries()?;
        let mut names = vec!["management"];
        names.extend_from_slice(tenant_names);
        let plane = ControlPlane::start_with(&names, options).await?;
        let mgmt = plane.management();
        let management = mgmt.client().await?;
        let log_dir = plane.dir().map(Path::to_path_buf).unwrap_or_default();
        ensure_namespace(&management, MANAGER_NAMESPACE).await?;

        // Every identity is a chart's own ServiceAccount, bound only by the
        // chart-rendered RBAC, with a token from the TokenRequest API. The
        // manager chart also renders each tenant's access (its namespace,
        // ServiceAccount and Role in the management cluster).
        let tenant_list = format!("tenants={{{}}}", tenant_names.join(","));
        let mut sets = vec![tenant_list, "createTenantNamespaces=true".to_owned()];
        sets.extend(
            launch
                .tenant_copies
                .map(|n| format!("tenantLimits.copies={n}")),
        );
        sets.extend(launch.manager_chart.iter().cloned());
        let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
        helm::apply_access(
            mgmt.kubeconfig(),
            rbac::MANAGER_ROLE,
            MANAGER_NAMESPACE,
            &sets,
        )?;
        let manager_identity = mgmt
            .service_account_kubeconfig(MANAGER_NAMESPACE, rbac::MANAGER_ROLE)
            .await?;
        let manager = match (&launch.manager, &launch.manager_image) {
            (None, Some(image)) => {
                let (repository, tag) = image.rsplit_once(':').unwrap_or((image, "dev"));
                // The chart's own flags, and the same additions as ours get.
                let mut flags = vec![
                    format!("--allowed-metadata={ALLOWED_METADATA}"),
                    "--log-format=human".to_owned(),
                ];
                flags.extend(launch.manager_args.iter().cloned());
                let mut image_sets = sets.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
                image_sets.push(format!("image.repository={repository}"));
                image_sets.push(format!("image.tag={tag}"));
                // Helm reads a comma as the next element of the list.
                let flags: Vec<String> = flags.iter().map(|f| f.replace(',', "\\,")).collect();
                image_sets.push(format!("extraArgs={{{}}}", flags.join(",")));
                ControllerProcess::launch_image(
                    "syncsecret-manager",
                    mgmt,
                    MANAGER_NAMESPACE,
                    &image_sets,
                    &log_dir,
                )
                .await?
            }
            (Some(t), _) => ControllerProcess::launch_template(
                "manager",
                &t.replace("{kubeconfig}", &manager_identity.to_string_lossy())
                    .replace("{namespace}", MANAGER_NAMESPACE),
                &log_dir,
            )?,
            (None, None) => ControllerProcess::launch(
                "syncsecret-manager",
                bin_dir.join("syncsecret-manager"),
                [
                    format!("--kubeconfig={}", manager_identity.display()),
                    format!("--namespace={MANAGER_NAMESPACE}"),
                    // What a platform team lets through: the tests' own
                    // labels (nothing passes by default).
                    format!("--allowed-metadata={ALLOWED_METADATA}"),
                ]
                .into_iter()
                .chain(launch.manager_args.iter().cloned())
                .collect(),
                &log_dir,
            )?,
        };
        let mut ccms = Vec::new();
        let mut tenants = Vec::new();
        for name in tenant_names {
            // In the management cluster: its own tenant namespace only.
            let identity = mgmt
                .service_account_kubeconfig(&tenant_namespace(name), rbac::CCM_ROLE)
                .await?;
            // In its tenant cluster: the ccm chart's RBAC (synchronizer on).
            let cluster = plane
                .cluster(name)
                .ok_or_else(|| HarnessError::Usage(format!("no cluster {name}")))?;
            let tenant = cluster.client().await?;
            let cluster_name = format!("clusterName={name}");
            helm::apply_access(
                cluster.kubeconfig(),
                rbac::CCM_ROLE,
                CCM_NAMESPACE,
                &[
                    &cluster_name,
                    "kubelbKubeconfig.secretName=kubelb-kubeconfig",
                    "secretSynchronizer.enabled=true",
                ],
            )?;
            let tenant_identity = cluster
                .service_account_kubeconfig(CCM_NAMESPACE, rbac::CCM_ROLE)
                .await?;
            tenants.push(tenant);
            ccms.push(match &launch.ccm {
                Some(t) => ControllerProcess::launch_template(
                    &format!("ccm-{name}"),
                    &t.replace("{tenant}", name)
                        .replace("{kubelb_kubeconfig}", &identity.to_string_lossy())
                        .replace("{kubeconfig}", &tenant_identity.to_string_lossy()),
                    &log_dir,
                )?,
                None => ControllerProcess::launch(
                    &format!("syncsecret-ccm-{name}"),
                    bin_dir.join("syncsecret-ccm"),
                    [
                        format!("--cluster-name={name}"),
                        format!("--kubelb-kubeconfig={}", identity.display()),
                        format!("--kubeconfig={}", tenant_identity.display()),
                        "--enable-secret-synchronizer".to_owned(),
                    ]
                    .into_iter()
                    .chain(launch.ccm_args.iter().cloned())
                    .collect(),
                    &log_dir,
                )?,
            });
        }
        let mut pair = Self {
            ccms,
            manager,
            management,
            tenants,
            tenant_names: tenant_names.iter().map(|n| (*n).to_owned()).collect(),
            written: None,
            plane,
        };
        pair.wait_ready().await?;
        Ok(pair)
    }

    /// From now on, records every value the tenant clusters' SyncSecrets
    /// hold, for [`Self::leaks`]. (Not for the benchmark: one more watch of
    /// every tenant cluster.)
    pub fn record_written(&mut self) {
        self.written = Some(leaks::Written::record(&self.tenants));
    }

    /// The values recorded since [`Self::record_written`].
    pub fn written(&self) -> Vec<String> {
        self.written
            .as_ref()
            .map(leaks::Written::values)
            .unwrap_or_default()
    }

    /// The leak scan ([`leaks::scan`]) for every value recorded since
    /// [`Self::record_written`] and each of `also`: where one was found.
    /// Fails when the recording has a gap (a tenant cluster recorded
    /// nothing, or its watch could not read an answer), as a scan for what
    /// was missed proves nothing.
    pub async fn leaks(&self, also: &[String]) -> Result<Vec<String>, HarnessError> {
        let Some(written) = &self.written else {
            return Err(HarnessError::Usage(
                "the leak scan has nothing recorded: call Pair::record_written first".into(),
            ));
        };
        let gaps = written.gaps();
        if !gaps.is_empty() {
            return Err(HarnessError::Usage(format!(
                "the leak scan's recording of the tenant clusters ({}) has gaps: {}",
                self.tenant_names.join(", "),
                gaps.join("; ")
            )));
        }
        let mut values = written.values();
        values.extend_from_slice(also);
        leaks::scan(self, &values).await
    }

    /// Waits until the management cluster holds a Synced copy of tenant
    /// `i`'s object `ns/name` (for the object's current generation) and a
    /// Secret for it that passes `check`; returns both.
    pub async fn synced(
        &self,
        i: usize,
        ns: &str,
        name: &str,
        check: impl Fn(&Secret) -> bool,
    ) -> Result<(SyncSecret, Secret), HarnessError> {
        let tenant: Api<SyncSecret> = Api::namespaced(self.tenants[i].clone(), ns);
        let tenant_ns = tenant_namespace(&self.tenant_names[i]);
        let copies: Api<SyncSecret> = Api::namespaced(self.management.clone(), &tenant_ns);
        let secrets: Api<Secret> = Api::namespaced(self.management.clone(), &tenant_ns);
        eventually(
            &format!("{ns}/{name} synced"),
            Duration::from_secs(60),
            || async {
                let t = tenant.get(name).await.map_err(|e| e.to_string())?;
                let uid = t.uid().ok_or("no uid")?;
                let copy = copies
                    .get_opt(&uid)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("no copy yet")?;
                // The copy read must already carry the tenant object's
                // generation (the Secret, read after it, may be newer).
                let copy_generation = copy
                    .annotations()
                    .get(syncsecret_api::contract::ANNOTATION_ORIGIN_GENERATION)
                    .cloned();
                if copy_generation.is_some()
                    && copy_generation != t.metadata.generation.map(|g| g.to_string())
                {
                    return Err("copy not at the tenant object's generation yet".into());
                }
                let status = copy.status.clone().ok_or("copy has no status yet")?;
                if status.phase != Some(SyncSecretPhase::Synced)
                    || status.observed_generation != copy.metadata.generation
                {
                    return Err(format!("copy status {:?}", status.phase));
                }
                let secret = secrets
                    .get_opt(&copy.uid().ok_or("copy without uid")?)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("no Secret yet")?;
                if !check(&secret) {
                    return Err("Secret content not as expected yet".into());
                }
                Ok((copy, secret))
            },
        )
        .await
    }

    /// Waits until tenant `i`'s object `ns/name` shows `phase` in its own
    /// status (mirrored home by the ccm) — for its current generation when
    /// `phase` is Synced — and returns it.
    pub async fn tenant_shows(
        &self,
        i: usize,
        ns: &str,
        name: &str,
        phase: SyncSecretPhase,
    ) -> Result<SyncSecret, HarnessError> {
        let api: Api<SyncSecret> = Api::namespaced(self.tenants[i].clone(), ns);
        eventually(
            &format!("tenant {ns}/{name} {phase}"),
            Duration::from_secs(60),
            || async {
                let o = api.get(name).await.map_err(|e| e.to_string())?;
                let st = o.status.clone().unwrap_or_default();
                let current = phase != SyncSecretPhase::Synced
                    || st.observed_generation == o.metadata.generation;
                if st.phase == Some(phase) && current {
                    Ok(o)
                } else {
                    Err(format!(
                        "{:?} for generation {:?}",
                        st.phase, st.observed_generation
                    ))
                }
            },
        )
        .await
    }

    /// Waits until every controller answers `/readyz`.
    pub async fn wait_ready(&mut self) -> Result<(), HarnessError> {
        self.manager.wait_ready().await?;
        for c in &mut self.ccms {
            c.wait_ready().await?;
        }
        Ok(())
    }

    /// Restarts every controller and waits until they are ready again.
    pub async fn restart_all(&mut self) -> Result<(), HarnessError> {
        self.manager.restart()?;
        for c in &mut self.ccms {
            c.restart()?;
        }
        self.wait_ready().await
    }

    /// Every controller, manager first.
    pub fn controllers(&self) -> impl Iterator<Item = &ControllerProcess> {
        std::iter::once(&self.manager).chain(self.ccms.iter())
    }

    /// Every log file the run wrote: controllers, API servers, etcd,
    /// kube-controller-manager.
    pub fn log_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "log") {
                    out.push(p);
                }
            }
        }
        let mut out = Vec::new();
        if let Some(d) = self.plane.dir() {
            walk(d, &mut out);
        }
        out
    }

    /// What a person would look at when a test fails: the objects in every
    /// cluster (names, phases) and the end of each controller's log.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        let kubectl = crate::asset("TEST_ASSET_KUBECTL").ok();
        for c in self.plane.clusters() {
            if let Some(k) = &kubectl {
                let res = Command::new(k)
                    .arg(format!("--kubeconfig={}", c.kubeconfig().display()))
                    .args(["get", "syncsecrets,secrets", "-A", "-o", "wide"])
                    .output();
                if let Ok(o) = res {
                    out.push_str(&format!(
                        "--- {} objects:\n{}{}",
                        c.name(),
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    ));
                }
            }
        }
        for c in self.controllers() {
            out.push_str(&format!("--- {} log:\n{}\n", c.name, c.log_tail(40)));
        }
        out
    }
}

/// Server-side applies a namespaced object as the tests' field manager.
pub async fn apply<K>(client: &Client, obj: &K) -> Result<(), HarnessError>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let ns = obj.meta().namespace.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    patch_apply(&api, obj).await
}

/// Server-side applies a cluster-scoped object as the tests' field manager.
pub async fn apply_cluster<K>(client: &Client, obj: &K) -> Result<(), HarnessError>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    patch_apply(&Api::all(client.clone()), obj).await
}

async fn patch_apply<K>(api: &Api<K>, obj: &K) -> Result<(), HarnessError>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(TEST_FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await?;
    Ok(())
}

/// Creates a namespace if it does not exist.
pub async fn ensure_namespace(client: &Client, name: &str) -> Result<(), HarnessError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    eventually(
        &format!("namespace {name}"),
        Duration::from_secs(10),
        || async {
            api.get_opt(name)
                .await
                .map_err(|e| e.to_string())?
                .map(|_| ())
                .ok_or_else(|| "not there yet".to_owned())
        },
    )
    .await
}
