//! CPU profiles of the API servers during a phase (`--profile-apiservers`):
//! pprof's own endpoint, fetched while the phase runs.

use std::time::Duration;

use kube::Client;

use super::Config;
use crate::HarnessError;
use crate::pair::Pair;

/// CPU profiles of the management cluster's and the first tenant
/// cluster's kube-apiserver (their `/debug/pprof/profile`, on by default)
/// during each converge phase: ours, the floor, the contract floor. Each is
/// `seconds` long from `after` into the phase, written to `dir` as
/// `<objects>x<tenants>-<phase>-<cluster>.pprof` (`go tool pprof -top
/// FILE`). A profile is a CPU cost of its own: runs with one are for
/// finding where the time goes, not for the table.
#[derive(Clone, Debug)]
pub struct ProfileApiServers {
    /// Where the profiles go.
    pub dir: std::path::PathBuf,
    /// How long into each phase a profile starts.
    pub after: Duration,
    /// How long it lasts.
    pub seconds: u64,
}

/// Starts the CPU profiles of one phase (see [`ProfileApiServers`]).
pub(super) fn start_profiles(
    pair: &Pair,
    cfg: &Config,
    phase: &str,
) -> Vec<tokio::task::JoinHandle<()>> {
    let Some(p) = &cfg.profile else {
        return Vec::new();
    };
    let clusters = [
        ("management", pair.management.clone()),
        ("tenant", pair.tenants[0].clone()),
    ];
    clusters
        .into_iter()
        .map(|(cluster, client)| {
            let file = p.dir.join(format!(
                "{}x{}-{phase}-{cluster}.pprof",
                cfg.objects, cfg.tenants
            ));
            let (after, seconds) = (p.after, p.seconds);
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                if let Err(e) = profile_apiserver(&client, seconds, &file).await {
                    eprintln!("bench: no profile {}: {e}", file.display());
                }
            })
        })
        .collect()
}

/// Waits for a phase's profiles (they may outlast a short phase).
pub(super) async fn finish_profiles(profiles: Vec<tokio::task::JoinHandle<()>>) {
    for p in profiles {
        let _ = p.await;
    }
}

/// One CPU profile of the API server `client` talks to, written to `file`.
pub(super) async fn profile_apiserver(
    client: &Client,
    seconds: u64,
    file: &std::path::Path,
) -> Result<(), HarnessError> {
    use futures::AsyncReadExt;
    let request = http::Request::get(format!("/debug/pprof/profile?seconds={seconds}"))
        .body(Vec::new())
        .map_err(|e| HarnessError::Usage(format!("profile request: {e}")))?;
    let mut body = Box::pin(client.request_stream(request).await?);
    let mut bytes = Vec::new();
    body.read_to_end(&mut bytes)
        .await
        .map_err(|e| HarnessError::io(file, e))?;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| HarnessError::io(dir, e))?;
    }
    std::fs::write(file, bytes).map_err(|e| HarnessError::io(file, e))
}
