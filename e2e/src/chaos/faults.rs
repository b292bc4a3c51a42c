//! Faults: killing and restarting controllers and API servers, and
//! watching an outage from the outside while it lasts.

use std::time::Instant;

use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use syncsecret_api::SyncSecret;

use super::findings::OutageSeen;
use super::{Config, Fault, NAMESPACE};
use crate::HarnessError;
use crate::pair::{ControllerProcess, Pair};

/// Injects `fault` (on tenant `victim` where it names one), keeps it for
/// its time, heals it. Returns how many controllers exited meanwhile and,
/// for an outage, what the tenants showed during it.
pub(super) async fn inject(
    pair: &mut Pair,
    fault: Fault,
    victim: usize,
    cfg: &Config,
) -> Result<(usize, Option<OutageSeen>), HarnessError> {
    let downtime = cfg.downtime;
    let exits = match fault {
        Fault::KillCcm => {
            pair.ccms[victim].kill();
            tokio::time::sleep(downtime).await;
            pair.ccms[victim].start().await?;
            0
        }
        Fault::KillManager => {
            pair.manager.kill();
            tokio::time::sleep(downtime).await;
            pair.manager.start().await?;
            0
        }
        Fault::ManagementOutage => {
            let cluster = pair.plane.management().name().to_owned();
            let started = Instant::now();
            pair.plane.stop_apiserver(&cluster)?;
            tokio::time::sleep(cfg.outage).await;
            let mut seen = OutageSeen::read(pair).await?;
            seen.seconds = started.elapsed().as_secs_f64();
            pair.plane.start_apiserver(&cluster).await?;
            let exited = count_exited(pair);
            return Ok((exited, Some(seen)));
        }
        Fault::RestartManagementApiServer | Fault::RestartTenantApiServer => {
            let cluster = if fault == Fault::RestartManagementApiServer {
                pair.plane.management().name().to_owned()
            } else {
                pair.tenant_names[victim].clone()
            };
            pair.plane.stop_apiserver(&cluster)?;
            tokio::time::sleep(downtime).await;
            pair.plane.compact_etcd()?;
            pair.plane.start_apiserver(&cluster).await?;
            // The controllers ride it out: none may have exited.
            count_exited(pair)
        }
    };
    Ok((exits, None))
}

pub(super) fn count_exited(pair: &mut Pair) -> usize {
    pair.ccms
        .iter_mut()
        .chain(std::iter::once(&mut pair.manager))
        .map(ControllerProcess::has_exited)
        .filter(|exited| *exited)
        .count()
}

impl OutageSeen {
    /// Reads the tenants (the management cluster is down).
    pub(super) async fn read(pair: &Pair) -> Result<Self, HarnessError> {
        let mut seen = Self::default();
        for t in &pair.tenants {
            let objects = Api::<SyncSecret>::namespaced(t.clone(), NAMESPACE)
                .list(&ListParams::default())
                .await?;
            let events = Api::<Event>::namespaced(t.clone(), NAMESPACE)
                .list(&ListParams::default())
                .await?;
            for o in objects
                .items
                .iter()
                .filter(|o| o.metadata.deletion_timestamp.is_some())
            {
                seen.held_deletions += 1;
                let uid = o.uid();
                // Why it waits: a Warning that the copy's deletion failed
                // (with the API server's error), or `CopyDeleting` (the copy
                // was deleted and the management cluster has yet to remove
                // it).
                let about: Vec<&Event> = events
                    .items
                    .iter()
                    .filter(|e| e.regarding.as_ref().and_then(|r| r.uid.clone()) == uid)
                    .collect();
                let explained = about.iter().any(|e| {
                    matches!(
                        e.reason.as_deref(),
                        Some("DeleteCopyFailed" | "CopyDeleting")
                    )
                });
                if explained {
                    seen.explained += 1;
                } else {
                    let reasons: Vec<String> = about
                        .iter()
                        .map(|e| e.reason.clone().unwrap_or_default())
                        .collect();
                    seen.unexplained
                        .push(format!("{}: events {reasons:?}", o.name_any()));
                }
            }
        }
        for c in &pair.ccms {
            let gauge = c
                .metrics()
                .ok()
                .and_then(|m| {
                    m.lines()
                        .find(|l| l.starts_with("kubelb_ccm_management_reachable "))
                        .map(|l| {
                            l.trim_start_matches("kubelb_ccm_management_reachable ")
                                .to_owned()
                        })
                })
                .unwrap_or_else(|| "missing".to_owned());
            seen.reachable_gauges.push(format!("{}={gauge}", c.name()));
        }
        Ok(seen)
    }

    /// What a user would have been told wrongly.
    pub(super) fn violations(&self, pair: &Pair) -> Vec<String> {
        let mut v = Vec::new();
        if self.held_deletions == 0 {
            v.push(
                "no deleted tenant object was held Terminating (did the round delete any?)"
                    .to_owned(),
            );
        }
        for (g, c) in self.reachable_gauges.iter().zip(&pair.ccms) {
            if !g.ends_with("=0") {
                v.push(format!(
                    "{}: kubelb_ccm_management_reachable is not 0 ({g})",
                    c.name()
                ));
            }
        }
        v
    }
}
