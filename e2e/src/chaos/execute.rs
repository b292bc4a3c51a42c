//! Carrying out one planned operation against the tenant cluster, with
//! retries for what the API server refuses while a fault is on.

use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use syncsecret_api::SyncSecret;

use super::NAMESPACE;
use super::plan::Op;
use crate::HarnessError;

/// Runs `ops` with `concurrency` in flight; each is retried until it
/// succeeds (an API server may be down for a while). Returns the new
/// expected state of each object touched (`None`: deleted).
pub(super) async fn execute(
    tenants: &[Client],
    ops: Vec<Op>,
    concurrency: usize,
) -> Result<Vec<((usize, String), Option<String>)>, HarnessError> {
    let results: Vec<Result<_, HarnessError>> = futures::stream::iter(ops)
        .map(|op| async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                match attempt(tenants, &op).await {
                    Ok(done) => return Ok(done),
                    Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

/// One try of `op`; an answer that says it was already done (a retry of a
/// request whose reply was lost) counts as done.
pub(super) async fn attempt(
    tenants: &[Client],
    op: &Op,
) -> Result<((usize, String), Option<String>), HarnessError> {
    let api = |t: usize| Api::<SyncSecret>::namespaced(tenants[t].clone(), NAMESPACE);
    match op {
        Op::Create {
            tenant,
            name,
            value,
        } => {
            let obj: SyncSecret = serde_json::from_value(json!({
                "apiVersion": "kubelb.k8c.io/v1alpha1",
                "kind": "SyncSecret",
                "metadata": {"name": name},
                "stringData": {"v": value},
            }))
            .map_err(|e| HarnessError::Usage(e.to_string()))?;
            match api(*tenant).create(&PostParams::default(), &obj).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            Ok(((*tenant, name.clone()), Some(value.clone())))
        }
        Op::Update {
            tenant,
            name,
            value,
        } => {
            api(*tenant)
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"stringData": {"v": value}})),
                )
                .await?;
            Ok(((*tenant, name.clone()), Some(value.clone())))
        }
        Op::Delete { tenant, name } => {
            match api(*tenant).delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            Ok(((*tenant, name.clone()), None))
        }
    }
}
