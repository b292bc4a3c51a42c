//! A real local Kubernetes control plane for tests, the demo and the
//! benchmarks: one etcd, one kube-apiserver per named cluster (each with its
//! own etcd prefix, CA, admin identity and kubeconfig, RBAC on), and
//! kube-controller-manager on the management cluster so that garbage
//! collection and namespace deletion really happen.
//!
//! The binaries come from `TEST_ASSET_*` variables, as envtest names them;
//! `make test` sets them from `hack/tools.sh env`, which builds them once.

pub mod bench;
pub mod certs;
pub mod chaos;
pub mod control_plane;
pub mod demo;
pub mod gctrace;
pub mod helm;
pub mod kube_util;
pub mod leaks;
pub mod pair;
pub mod podman;
pub mod process;
pub mod prometheus;

use std::path::{Path, PathBuf};

pub use control_plane::{Cluster, ControlPlane};

/// What went wrong while starting or using the control plane.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A binary of the control plane is not configured.
    #[error(
        "{var} is not set (or not executable): run the tests with `make test`, which builds the control plane once (hack/tools.sh) and points at it, or run `eval \"$(hack/tools.sh env)\"` in this shell first"
    )]
    MissingBinary {
        /// The environment variable that names it.
        var: &'static str,
    },
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A process could not be started.
    #[error("cannot start {name} ({program}): {source}")]
    Spawn {
        /// What it is.
        name: String,
        /// The binary.
        program: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A process exited while it should have been serving.
    #[error("{name} exited ({status}); last lines of its log:\n{log_tail}")]
    Exited {
        /// What it is.
        name: String,
        /// How it exited.
        status: std::process::ExitStatus,
        /// The end of its log.
        log_tail: String,
    },
    /// Something did not become ready in time.
    #[error("{what} was not ready after {seconds} s; {detail}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        seconds: u64,
        /// The last error seen, or the end of a log.
        detail: String,
    },
    /// Certificate generation failed.
    #[error("cannot generate certificates: {0}")]
    Certificate(String),
    /// A kubeconfig could not be written or loaded.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A call to the API server failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The harness was called wrongly.
    #[error("{0}")]
    Usage(String),
    /// A manifest could not be parsed.
    #[error("manifest {path}: {message}")]
    Manifest {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

impl HarnessError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// The paths of the control-plane binaries.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// etcd.
    pub etcd: PathBuf,
    /// kube-apiserver.
    pub kube_apiserver: PathBuf,
    /// kube-controller-manager.
    pub kube_controller_manager: PathBuf,
    /// kubectl.
    pub kubectl: PathBuf,
}

impl Binaries {
    /// Reads `TEST_ASSET_ETCD`, `TEST_ASSET_KUBE_APISERVER`,
    /// `TEST_ASSET_KUBE_CONTROLLER_MANAGER` and `TEST_ASSET_KUBECTL`.
    pub fn from_env() -> Result<Self, HarnessError> {
        Ok(Self {
            etcd: asset("TEST_ASSET_ETCD")?,
            kube_apiserver: asset("TEST_ASSET_KUBE_APISERVER")?,
            kube_controller_manager: asset("TEST_ASSET_KUBE_CONTROLLER_MANAGER")?,
            kubectl: asset("TEST_ASSET_KUBECTL")?,
        })
    }
}

/// The path in `var`, if it names an existing file.
pub fn asset(var: &'static str) -> Result<PathBuf, HarnessError> {
    match std::env::var_os(var).map(PathBuf::from) {
        Some(p) if p.is_file() => Ok(p),
        _ => Err(HarnessError::MissingBinary { var }),
    }
}

/// The repository root (for the generated manifests under `config/`).
pub fn repo_root() -> PathBuf {
    let e2e = Path::new(env!("CARGO_MANIFEST_DIR"));
    e2e.parent().unwrap_or(e2e).to_path_buf()
}
