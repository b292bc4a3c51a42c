//! The load: benchmark objects, their metadata padding, names, and
//! writing many of them at a bounded concurrency.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use syncsecret_api::SyncSecret;

use super::track::value;
use super::{Config, NAMESPACE, PAD_ANNOTATION};
use crate::HarnessError;
use crate::pair::Pair;

/// Tenant object `name`; with `pad` bytes of annotation value.
pub(super) fn object(name: &str, pad: usize) -> SyncSecret {
    SyncSecret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            annotations: (pad > 0).then(|| [(PAD_ANNOTATION.to_owned(), "x".repeat(pad))].into()),
            ..Default::default()
        },
        data: Some([("v".to_owned(), ByteString(value(name, 0)))].into()),
        ..Default::default()
    }
}

/// The pad that makes each copy carry `cfg.metadata_bytes` of labels and
/// annotations: what a copy carries besides the pad is measured on one
/// probe object (its labels and annotations as the copy policy counts
/// them), which is then deleted. The probe's name is the longest of the
/// run's, so no copy carries more than `cfg.metadata_bytes`, and those
/// with shorter names a few dozen bytes less.
pub(super) async fn padding(
    pair: &Pair,
    cfg: &Config,
    items: &[(usize, String)],
) -> Result<usize, HarnessError> {
    if cfg.metadata_bytes == 0 {
        return Ok(0);
    }
    let Some((t, probe)) = items.last().cloned() else {
        return Ok(0);
    };
    let probe = format!("{probe}-probe");
    let api: Api<SyncSecret> = Api::namespaced(pair.tenants[t].clone(), NAMESPACE);
    let created = api
        .create(&PostParams::default(), &object(&probe, 0))
        .await?;
    let uid = created.metadata.uid.unwrap_or_default();
    let copies: Api<SyncSecret> = Api::namespaced(
        pair.management.clone(),
        &syncsecret_api::contract::tenant_namespace(&pair.tenant_names[t]),
    );
    let copy = crate::kube_util::eventually("the probe's copy", cfg.timeout, || async {
        copies
            .get_opt(&uid)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "no copy yet".to_owned())
    })
    .await?;
    let size = |m: Option<&BTreeMap<String, String>>| {
        m.into_iter()
            .flatten()
            .map(|(k, v)| k.chars().count() + v.chars().count())
            .sum::<usize>()
    };
    let own = size(copy.metadata.labels.as_ref()) + size(copy.metadata.annotations.as_ref());
    api.delete(&probe, &DeleteParams::default()).await?;
    // Gone in both clusters before the run starts counting.
    crate::kube_util::eventually("the probe gone", cfg.timeout, || async {
        match copies.get_opt(&uid).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err("its copy is still there".to_owned()),
        }
    })
    .await?;
    let pad = cfg
        .metadata_bytes
        .checked_sub(own + PAD_ANNOTATION.len())
        .ok_or_else(|| {
            HarnessError::Usage(format!(
                "--metadata-bytes {} is less than a copy's own {own} bytes",
                cfg.metadata_bytes
            ))
        })?;
    Ok(pad)
}

/// Object `i` of tenant `t`.
pub(super) fn name(t: usize, i: usize) -> String {
    format!("o{t}-{i}")
}

pub(super) async fn for_each_concurrently<F, Fut>(
    items: Vec<(usize, String)>,
    concurrency: usize,
    f: F,
) -> Result<(), HarnessError>
where
    F: Fn(usize, String) -> Fut,
    Fut: std::future::Future<Output = Result<(), HarnessError>>,
{
    futures::stream::iter(items.into_iter().map(|(t, n)| f(t, n)))
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await
        .map(|_| ())
}

/// A `Synced` event about the SyncSecret `namespace/name`, as a
/// controller writes one, reported by `syncsecret-bench/<by>`.
pub(super) fn synced_event(
    name: &str,
    namespace: &str,
    uid: Option<String>,
    by: &str,
) -> k8s_openapi::api::events::v1::Event {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    k8s_openapi::api::events::v1::Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.synced")),
            ..Default::default()
        },
        event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
        action: Some("Sync".into()),
        reason: Some("Synced".into()),
        note: Some("synced".into()),
        type_: Some("Normal".into()),
        reporting_controller: Some(format!("syncsecret-bench/{by}")),
        reporting_instance: Some("bench".into()),
        regarding: Some(k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("kubelb.k8c.io/v1alpha1".into()),
            kind: Some("SyncSecret".into()),
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            uid,
            ..Default::default()
        }),
        ..Default::default()
    }
}
