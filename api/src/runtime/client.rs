//! Kubernetes clients from flags.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::RuntimeError;

/// The longest any one read from an API server may take. kube sets none, so
/// a request whose connection silently died (an API server killed during a
/// restart, a dropped NAT entry) would wait forever; the chaos run saw a
/// watch stall for minutes after an API server restart. Watches are closed
/// by the server every [`super::cache::WATCH_TIMEOUT_SECS`] (and carry
/// bookmarks), so a healthy one never waits this long.
pub const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn bounded(mut config: Config) -> Config {
    config.read_timeout = Some(READ_TIMEOUT);
    config
}

/// A client from an explicit kubeconfig file.
pub async fn from_file(path: &Path) -> Result<Client, RuntimeError> {
    let err = |message: String| RuntimeError::Kubeconfig {
        path: path.to_owned(),
        message,
    };
    let kc = Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| err(e.to_string()))?;
    Client::try_from(bounded(config)).map_err(|e| err(e.to_string()))
}

/// A client for the cluster the process runs in: the kubeconfig named by
/// `flag` if given; else the in-cluster service account; else `KUBECONFIG`
/// (or `~/.kube/config`).
pub async fn from_flag_or_environment(
    path: Option<&Path>,
    flag: &'static str,
) -> Result<Client, RuntimeError> {
    if let Some(p) = path {
        return from_file(p).await;
    }
    let config = match Config::incluster() {
        Ok(c) => c,
        Err(in_cluster) => Config::from_kubeconfig(&KubeConfigOptions::default())
            .await
            .map_err(|e| RuntimeError::NoConfig {
                flag,
                message: format!("not in a cluster ({in_cluster}) and no usable kubeconfig ({e})"),
            })?,
    };
    Client::try_from(bounded(config)).map_err(|e| RuntimeError::NoConfig {
        flag,
        message: e.to_string(),
    })
}
