//! Starting and stopping the clusters.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;
use tempfile::TempDir;

use crate::certs::{self, Authority};
use crate::gctrace;
use crate::kube_util::install_crd;
use crate::process::{self, Process};
use crate::{Binaries, HarnessError};

/// How long a component may take to come up before start fails.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// One cluster: a kube-apiserver with its own CA, identities and kubeconfig.
pub struct Cluster {
    name: String,
    server: String,
    dir: PathBuf,
    kubeconfig: PathBuf,
    ca: Authority,
}

impl Cluster {
    /// The name given at start (also its etcd prefix).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The PEM of this cluster's CA (what a pod finds in its `ca.crt`).
    pub fn ca_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    /// The admin kubeconfig (user `admin`, group `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// An admin client.
    pub async fn client(&self) -> Result<Client, HarnessError> {
        client_from(&self.kubeconfig).await
    }

    /// Writes a kubeconfig for a new identity of this cluster (a client
    /// certificate signed by its CA) and returns its path. The identity can do
    /// nothing until RBAC grants it something.
    pub fn mint_identity(&self, user: &str, group: Option<&str>) -> Result<PathBuf, HarnessError> {
        let pair = self.ca.client(user, group)?;
        let file_stem: String = user
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = self.dir.join(format!("kubeconfig-{file_stem}.yaml"));
        write_kubeconfig(
            &path,
            &self.name,
            &self.server,
            &self.ca.cert_pem,
            user,
            &pair,
        )?;
        Ok(path)
    }

    /// A token for ServiceAccount `namespace/name` from this API server's
    /// TokenRequest API, valid for a day.
    pub async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<String, HarnessError> {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        use k8s_openapi::api::core::v1::ServiceAccount;
        let api: kube::Api<ServiceAccount> = kube::Api::namespaced(self.client().await?, namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(86_400),
                ..Default::default()
            }),
            ..Default::default()
        };
        let minted: TokenRequest = api
            .create_subresource("token", name, &kube::api::PostParams::default(), &request)
            .await?;
        minted
            .status
            .and_then(|s| s.token)
            .ok_or_else(|| HarnessError::Usage(format!("no token for {namespace}/{name}")))
    }

    /// A kubeconfig for ServiceAccount `namespace/name`, with a token minted
    /// by this API server's TokenRequest API (valid for a day), as a
    /// platform team would hand it to a controller.
    pub async fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<PathBuf, HarnessError> {
        let token = self.service_account_token(namespace, name).await?;
        let user = format!("system:serviceaccount:{namespace}:{name}");
        let path = self
            .dir
            .join(format!("kubeconfig-sa-{namespace}-{name}.yaml"));
        write_kubeconfig_with(
            &path,
            &self.name,
            &self.server,
            &self.ca.cert_pem,
            &user,
            &json!({ "token": token }),
        )?;
        Ok(path)
    }

    /// Writes (over whatever is at `path`, in place) a kubeconfig for this
    /// cluster whose user `user` gets its credentials from `command`, an
    /// exec credential plugin as client-go runs them (it prints an
    /// `ExecCredential`).
    pub fn write_exec_kubeconfig(
        &self,
        path: &Path,
        user: &str,
        command: &Path,
    ) -> Result<(), HarnessError> {
        write_kubeconfig_with(
            path,
            &self.name,
            &self.server,
            &self.ca.cert_pem,
            user,
            &json!({ "exec": {
                "apiVersion": "client.authentication.k8s.io/v1",
                "command": command,
                "interactiveMode": "Never",
            }}),
        )
    }
}

/// A kube client from a kubeconfig file.
pub async fn client_from(kubeconfig: &Path) -> Result<Client, HarnessError> {
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| HarnessError::Kubeconfig {
        path: kubeconfig.to_owned(),
        message: e.to_string(),
    })?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| HarnessError::Kubeconfig {
            path: kubeconfig.to_owned(),
            message: e.to_string(),
        })?;
    // The controllers' own builder (TCP_NODELAY): the bench's writes and
    // watches must not add a stall the controllers do not have.
    Ok(syncsecret_runtime::serve::client::build(config)?)
}

fn write_kubeconfig(
    path: &Path,
    cluster: &str,
    server: &str,
    ca_pem: &str,
    user: &str,
    pair: &certs::Pair,
) -> Result<(), HarnessError> {
    let b64 = |s: &str| ByteString(s.as_bytes().to_vec());
    let credentials = json!({
        "client-certificate-data": b64(&pair.cert_pem),
        "client-key-data": b64(&pair.key_pem),
    });
    write_kubeconfig_with(path, cluster, server, ca_pem, user, &credentials)
}

fn write_kubeconfig_with(
    path: &Path,
    cluster: &str,
    server: &str,
    ca_pem: &str,
    user: &str,
    credentials: &serde_json::Value,
) -> Result<(), HarnessError> {
    let b64 = |s: &str| ByteString(s.as_bytes().to_vec());
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {
            "server": server,
            "certificate-authority-data": b64(ca_pem),
        }}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
    });
    let text = serde_yaml_ng::to_string(&doc).map_err(|e| HarnessError::Kubeconfig {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    write(path, text)
}

fn write(path: &Path, content: impl AsRef<[u8]>) -> Result<(), HarnessError> {
    std::fs::write(path, content).map_err(|e| HarnessError::io(path, e))
}

/// A loopback port that was free a moment ago, for a server to bind.
///
/// Drawn below the kernel's ephemeral range (32768 and up by default), not
/// from it with port 0: outgoing connections (the API servers' to etcd,
/// every client's) take their local ports from that range, and one took a
/// port picked so before etcd could bind it. Each test process starts at
/// its own place in the range, then counts up.
pub fn free_port() -> Result<u16, HarnessError> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..SPAN {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        let port = u16::try_from(FIRST + offset).unwrap_or(u16::MAX);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    let l = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| HarnessError::io(Path::new("127.0.0.1:0"), e))?;
    let port = l
        .local_addr()
        .map_err(|e| HarnessError::io(Path::new("127.0.0.1:0"), e))?
        .port();
    Ok(port)
}

/// What the management cluster runs with beyond what every test needs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Secrets and SyncSecrets encrypted at rest, and an audit log at
    /// Metadata level for both, with the files in `config/management/`
    /// (what docs/security.md tells a platform team to run).
    pub hardened: bool,
    /// No SyncSecret CRD in any cluster: the clusters as a user's are
    /// before a chart installs it.
    pub without_crd: bool,
    /// Extra flags of every cluster's kube-apiserver (e.g. a feature gate
    /// turned off, as some platforms run them).
    pub apiserver_args: &'static [&'static str],
}

/// etcd, the API servers and kube-controller-manager, as local processes.
///
/// Dropping it stops every process (SIGTERM, then SIGKILL after a grace
/// period, to each whole process group) and removes its directory, also when
/// a test panics.
pub struct ControlPlane {
    clusters: Vec<Cluster>,
    /// In stop order: kube-controller-manager, API servers, etcd last.
    processes: Vec<Process>,
    /// How each cluster's kube-apiserver was started, to start it again.
    apiservers: Vec<ApiServerLaunch>,
    /// etcd's client URL.
    etcd_url: String,
    /// The management cluster's audit log, when it keeps one.
    audit_log: Option<PathBuf>,
    dir: Option<TempDir>,
    started_in: Duration,
    version: String,
}

impl ControlPlane {
    /// Starts one cluster per name, each with the generated SyncSecret CRD
    /// installed. The first is the management cluster: it also gets a
    /// kube-controller-manager (garbage collector, namespace, service account
    /// and token controllers).
    pub async fn start(names: &[&str]) -> Result<Self, HarnessError> {
        Self::start_with(names, Options::default()).await
    }

    /// [`Self::start`], with the management cluster run as `options` say.
    pub async fn start_with(names: &[&str], options: Options) -> Result<Self, HarnessError> {
        if names.is_empty() {
            return Err(HarnessError::Usage(
                "ControlPlane::start needs at least one cluster name".into(),
            ));
        }
        let bins = Binaries::from_env()?;
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("syncsecret-cp-")
            .tempdir()
            .map_err(|e| HarnessError::io(&std::env::temp_dir(), e))?;
        let mut plane = Self {
            clusters: Vec::new(),
            processes: Vec::new(),
            apiservers: Vec::new(),
            etcd_url: String::new(),
            audit_log: None,
            dir: None,
            started_in: Duration::ZERO,
            version: String::new(),
        };
        let root = dir.path().to_owned();
        plane.dir = Some(dir);

        // etcd, shared by all clusters (each has its own key prefix).
        let etcd_port = free_port()?;
        let peer_port = free_port()?;
        let etcd_dir = root.join("etcd");
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        plane.etcd_url.clone_from(&etcd_url);
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        plane.processes.push(Process::spawn_with(
            "etcd",
            &bins.etcd,
            &[
                "--name=e2e".to_owned(),
                format!("--data-dir={}", etcd_dir.display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=e2e={peer_url}"),
                // Test data: durability is not worth the fsyncs.
                "--unsafe-no-fsync".to_owned(),
                "--log-level=warn".to_owned(),
            ],
            &[("GODEBUG", &gctrace::godebug())],
            &root.join("etcd.log"),
        )?);

        for (i, name) in names.iter().enumerate() {
            let cluster_dir = root.join(name);
            std::fs::create_dir_all(&cluster_dir).map_err(|e| HarnessError::io(&cluster_dir, e))?;
            let ca = Authority::new(name)?;
            let serving = ca.serving()?;
            let admin = ca.client("admin", Some("system:masters"))?;
            let (sa_key, sa_pub) = certs::service_account_key()?;
            let p = |f: &str| cluster_dir.join(f);
            write(&p("ca.crt"), &ca.cert_pem)?;
            write(&p("serving.crt"), &serving.cert_pem)?;
            write(&p("serving.key"), &serving.key_pem)?;
            write(&p("sa.key"), &sa_key)?;
            write(&p("sa.pub"), &sa_pub)?;
            let port = free_port()?;
            let server = format!("https://127.0.0.1:{port}");
            let kubeconfig = p("kubeconfig.yaml");
            write_kubeconfig(&kubeconfig, name, &server, &ca.cert_pem, "admin", &admin)?;
            let path = |f: &str| p(f).display().to_string();
            let mut args = vec![
                format!("--etcd-servers={etcd_url}"),
                format!("--etcd-prefix=/{name}"),
                "--bind-address=127.0.0.1".to_owned(),
                // Without a default route it cannot pick one and exits.
                "--advertise-address=127.0.0.1".to_owned(),
                format!("--secure-port={port}"),
                format!("--cert-dir={}", path("certs")),
                format!("--tls-cert-file={}", path("serving.crt")),
                format!("--tls-private-key-file={}", path("serving.key")),
                format!("--client-ca-file={}", path("ca.crt")),
                format!("--service-account-key-file={}", path("sa.pub")),
                format!("--service-account-signing-key-file={}", path("sa.key")),
                format!("--service-account-issuer=https://{name}.syncsecret-e2e.local"),
                "--service-cluster-ip-range=10.0.0.0/24".to_owned(),
                "--authorization-mode=RBAC".to_owned(),
                "--endpoint-reconciler-type=none".to_owned(),
                "--allow-privileged=true".to_owned(),
            ];
            args.extend(options.apiserver_args.iter().map(|a| (*a).to_owned()));
            if i == 0 && options.hardened {
                args.extend(harden(&cluster_dir)?);
                plane.audit_log = Some(p("audit.log"));
            }
            let launch = ApiServerLaunch {
                cluster: (*name).to_owned(),
                program: bins.kube_apiserver.clone(),
                args,
                dir: cluster_dir.clone(),
                starts: 1,
            };
            plane.processes.push(launch.spawn()?);
            plane.apiservers.push(launch);
            plane.clusters.push(Cluster {
                name: (*name).to_owned(),
                server,
                dir: cluster_dir,
                kubeconfig,
                ca,
            });
        }

        for i in 0..plane.clusters.len() {
            let client = plane.clusters[i].client().await?;
            let what = format!("kube-apiserver {}", plane.clusters[i].name);
            plane.wait_for(&what, || readyz(&client)).await?;
            if i == 0 {
                plane.version = client.apiserver_version().await?.git_version;
            }
            // Before kube-controller-manager starts, so that its garbage
            // collector knows SyncSecrets from its first discovery (it
            // re-reads discovery only every 30 s).
            if !options.without_crd {
                install_crd(&client).await?;
            }
        }

        let mgmt_name = plane.management().name.clone();
        let mgmt_dir = plane.management().dir.clone();
        let mgmt_kubeconfig = plane.management().kubeconfig.clone();
        let p = |f: &str| mgmt_dir.join(f).display().to_string();
        let args = vec![
            format!("--kubeconfig={}", mgmt_kubeconfig.display()),
            "--controllers=garbage-collector-controller,namespace-controller,serviceaccount-controller,serviceaccount-token-controller,resourcequota-controller".to_owned(),
            "--leader-elect=false".to_owned(),
            "--secure-port=0".to_owned(),
            format!("--service-account-private-key-file={}", p("sa.key")),
            format!("--root-ca-file={}", p("ca.crt")),
        ];
        let kcm = Process::spawn(
            &format!("kube-controller-manager {mgmt_name}"),
            &bins.kube_controller_manager,
            &args,
            &mgmt_dir.join("kube-controller-manager.log"),
        )?;
        // In front: it stops first.
        plane.processes.insert(0, kcm);
        // Its service-account controller creating `default` in `default`
        // shows that its controllers run.
        let accounts: Api<ServiceAccount> =
            Api::namespaced(client_from(&mgmt_kubeconfig).await?, "default");
        plane
            .wait_for("kube-controller-manager", || async {
                match accounts.get_opt("default").await {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err("no default service account yet".to_owned()),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await?;
        plane.started_in = started.elapsed();
        println!(
            "control plane: kube-apiserver {} ({}), etcd {}, {} cluster(s) [{}] ready in {:.1} s",
            plane.version,
            bins.kube_apiserver.display(),
            bins.etcd.display(),
            names.len(),
            names.join(", "),
            plane.started_in.as_secs_f64()
        );
        Ok(plane)
    }

    /// Polls `check` until it succeeds; fails early, with the log, when a
    /// process has exited.
    async fn wait_for<F, Fut>(&mut self, what: &str, mut check: F) -> Result<(), HarnessError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let last = match check().await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            for p in &mut self.processes {
                if let Some(status) = p.exited() {
                    return Err(HarnessError::Exited {
                        name: p.name().to_owned(),
                        status,
                        log_tail: p.log_tail(30),
                    });
                }
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Timeout {
                    what: what.to_owned(),
                    seconds: START_TIMEOUT.as_secs(),
                    detail: format!("last error: {last}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The clusters, management first.
    pub fn clusters(&self) -> &[Cluster] {
        &self.clusters
    }

    /// A cluster by name.
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// The management cluster (the first one started).
    pub fn management(&self) -> &Cluster {
        // `start` refuses an empty list of names, so there is a first one.
        &self.clusters[0]
    }

    /// The kube-apiserver version the clusters run, as `/version` reports it.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// How long `start` took.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The process ids of everything it runs.
    pub fn pids(&self) -> Vec<u32> {
        self.processes.iter().map(Process::pid).collect()
    }

    /// What each process is (`etcd`, `kube-apiserver <cluster>`, ...) and
    /// its process id.
    pub fn processes(&self) -> impl Iterator<Item = (&str, u32)> {
        self.processes.iter().map(|p| (p.name(), p.pid()))
    }

    /// The garbage collections so far of etcd and of each API server (as
    /// running now), in the order of the processes.
    pub fn gc_cycles(&self) -> Vec<gctrace::GcCycle> {
        self.processes
            .iter()
            .filter(|p| p.name() == "etcd" || p.name().starts_with("kube-apiserver "))
            .flat_map(|p| gctrace::cycles_in(p.name(), p.log(), p.started()))
            .collect()
    }

    /// Its working directory (certificates, kubeconfigs, logs, etcd data).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(TempDir::path)
    }

    fn apiserver_process(&mut self, cluster: &str) -> Result<&mut Process, HarnessError> {
        let name = format!("kube-apiserver {cluster}");
        self.processes
            .iter_mut()
            .find(|p| p.name() == name)
            .ok_or_else(|| HarnessError::Usage(format!("no {name}")))
    }

    /// Stops cluster `cluster`'s kube-apiserver (SIGTERM, as a rolling
    /// restart does; SIGKILL after the grace period). Its clients see
    /// connection refused until [`Self::start_apiserver`].
    pub fn stop_apiserver(&mut self, cluster: &str) -> Result<(), HarnessError> {
        self.apiserver_process(cluster)?.stop();
        Ok(())
    }

    /// Starts cluster `cluster`'s kube-apiserver again, on the same port
    /// with the same flags and etcd data (a fresh watch cache: clients
    /// resuming a watch from before get `410 Gone` once etcd is compacted),
    /// and waits until it is ready.
    pub async fn start_apiserver(&mut self, cluster: &str) -> Result<(), HarnessError> {
        let launch = self
            .apiservers
            .iter_mut()
            .find(|a| a.cluster == cluster)
            .ok_or_else(|| HarnessError::Usage(format!("no cluster {cluster}")))?;
        launch.starts += 1;
        let fresh = launch.spawn()?;
        *self.apiserver_process(cluster)? = fresh;
        let client = self
            .cluster(cluster)
            .ok_or_else(|| HarnessError::Usage(format!("no cluster {cluster}")))?
            .client()
            .await?;
        self.wait_for(&format!("kube-apiserver {cluster} (restarted)"), || {
            readyz(&client)
        })
        .await
    }

    /// The management cluster's audit log, when [`Options::hardened`].
    pub fn audit_log(&self) -> Option<&Path> {
        self.audit_log.as_deref()
    }

    /// Every key under `prefix` in etcd with its stored value, as the API
    /// servers wrote it (each cluster's keys start with `/<cluster name>/`).
    pub fn etcd_values(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, HarnessError> {
        let b64 = |b: &[u8]| serde_json::to_value(ByteString(b.to_vec())).unwrap_or_default();
        let bytes = |v: &serde_json::Value| {
            serde_json::from_value::<ByteString>(v.clone())
                .map(|b| b.0)
                .unwrap_or_default()
        };
        // The end of the range: the prefix with its last byte raised by one.
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let mut from = prefix.as_bytes().to_vec();
        let mut out = Vec::new();
        // In pages, so that no reply outgrows the gateway's message limit.
        loop {
            let page = etcd_post(
                &self.etcd_url,
                "/v3/kv/range",
                &json!({"key": b64(&from), "range_end": b64(&end), "limit": "200"}),
            )?;
            let kvs = page["kvs"].as_array().cloned().unwrap_or_default();
            for kv in &kvs {
                let key = bytes(&kv["key"]);
                out.push((
                    String::from_utf8_lossy(&key).into_owned(),
                    bytes(&kv["value"]),
                ));
            }
            match kvs.last() {
                Some(kv) if page["more"].as_bool() == Some(true) => {
                    from = bytes(&kv["key"]);
                    // The next key after the last one read.
                    from.push(0);
                }
                _ => return Ok(out),
            }
        }
    }

    /// etcd's database size in bytes: on disk, and in use (what a
    /// defragmentation would keep), from its `/metrics`.
    pub fn etcd_size(&self) -> Result<(f64, f64), HarnessError> {
        let port = self
            .etcd_url
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .ok_or_else(|| HarnessError::Usage(format!("no port in {}", self.etcd_url)))?;
        let (ok, text) = crate::pair::http_get(port, "/metrics").map_err(HarnessError::Usage)?;
        if !ok {
            return Err(HarnessError::Usage(format!("etcd /metrics: {text}")));
        }
        let read = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
                .unwrap_or(0.0)
        };
        Ok((
            read("etcd_mvcc_db_total_size_in_bytes"),
            read("etcd_mvcc_db_total_size_in_use_in_bytes"),
        ))
    }

    /// Compacts etcd up to its current revision (what the API server's own
    /// compaction does every 5 minutes): every watch that resumes from an
    /// older resourceVersion than the API server's watch cache holds gets
    /// `410 Gone` and must list again. Returns the revision.
    pub fn compact_etcd(&self) -> Result<i64, HarnessError> {
        // etcd's JSON gateway: read the current revision, compact to it.
        let header = etcd_post(&self.etcd_url, "/v3/kv/range", &json!({"key": "Lw=="}))?;
        let revision: i64 = header["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| HarnessError::Usage(format!("etcd range: no revision in {header}")))?;
        etcd_post(
            &self.etcd_url,
            "/v3/kv/compaction",
            &json!({"revision": revision.to_string(), "physical": true}),
        )?;
        Ok(revision)
    }
}

/// The kube-apiserver flags for [`Options::hardened`], with its files
/// written to `dir`: the encryption configuration of `config/management/`
/// with a fresh key, its audit policy, and the audit log at `audit.log`.
fn harden(dir: &Path) -> Result<Vec<String>, HarnessError> {
    let config = crate::repo_root().join("config/management");
    let read = |f: &str| {
        let path = config.join(f);
        std::fs::read_to_string(&path).map_err(|e| HarnessError::io(&path, e))
    };
    // 32 random bytes (two v4 UUIDs), in base64 as the configuration wants.
    let mut key = uuid::Uuid::new_v4().as_bytes().to_vec();
    key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    let key = serde_json::to_value(ByteString(key))
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let encryption = read("encryption-configuration.yaml")?.replace("ENCRYPTION_KEY", &key);
    let (encryption_path, policy_path) =
        (dir.join("encryption.yaml"), dir.join("audit-policy.yaml"));
    write(&encryption_path, &encryption)?;
    write(&policy_path, &read("audit-policy.yaml")?)?;
    Ok(vec![
        format!("--encryption-provider-config={}", encryption_path.display()),
        format!("--audit-policy-file={}", policy_path.display()),
        format!("--audit-log-path={}", dir.join("audit.log").display()),
    ])
}

/// How a cluster's kube-apiserver is started.
struct ApiServerLaunch {
    cluster: String,
    program: PathBuf,
    args: Vec<String>,
    dir: PathBuf,
    /// Starts so far (names the log of each).
    starts: u32,
}

impl ApiServerLaunch {
    fn spawn(&self) -> Result<Process, HarnessError> {
        let log = if self.starts <= 1 {
            self.dir.join("kube-apiserver.log")
        } else {
            self.dir.join(format!("kube-apiserver.{}.log", self.starts))
        };
        Process::spawn_with(
            &format!("kube-apiserver {}", self.cluster),
            &self.program,
            &self.args,
            &[("GODEBUG", &gctrace::godebug())],
            &log,
        )
    }
}

/// POSTs `body` to etcd's JSON gateway at `url` + `path`; the reply as JSON.
fn etcd_post(
    url: &str,
    path: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, HarnessError> {
    use std::io::{Read, Write};
    let authority = url.trim_start_matches("http://");
    let fail = |e: String| HarnessError::Usage(format!("etcd {path}: {e}"));
    let mut s = std::net::TcpStream::connect(authority).map_err(|e| fail(e.to_string()))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| fail(e.to_string()))?;
    let body = body.to_string();
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| fail(e.to_string()))?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)
        .map_err(|e| fail(e.to_string()))?;
    let (head, json) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    if !head.contains(" 200 ") {
        return Err(fail(format!("{head}\n{json}")));
    }
    serde_json::from_str(json).map_err(|e| fail(e.to_string()))
}

async fn readyz(client: &Client) -> Result<(), String> {
    let req = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    match client.request_text(req).await {
        Ok(body) if body.trim() == "ok" => Ok(()),
        Ok(body) => Err(body),
        Err(e) => Err(e.to_string()),
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Controllers first, so that nothing writes to a stopping API server;
        // etcd last, so that API servers can shut down cleanly.
        let etcd_at = self.processes.len().saturating_sub(1);
        let (rest, etcd) = self.processes.split_at_mut(etcd_at);
        process::stop_all(rest);
        process::stop_all(etcd);
        // TempDir removes the directory when it drops, after this.
    }
}
