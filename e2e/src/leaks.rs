//! The leak scan every end-to-end run ends with: no value a test wrote may
//! appear, in clear or in base64, in a controller's log, an event, a
//! status or a controller's `/metrics`.

use k8s_openapi::api::events::v1::Event;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::{Api, Client, ResourceExt};
use syncsecret_api::SyncSecret;

use crate::HarnessError;
use crate::pair::Pair;

/// The forms a value could leak in: as written, and base64-encoded (as in
/// a `data` field or a body dump).
pub fn needles(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| {
            let b64 = serde_json::to_value(k8s_openapi::ByteString(v.as_bytes().to_vec()))
                .ok()
                .and_then(|j| j.as_str().map(str::to_owned));
            std::iter::once(v.clone()).chain(b64)
        })
        .collect()
}

/// Every place a value of the run could leak to, searched for each value
/// ([`needles`]): the controllers' logs, every event's reason and note and
/// every SyncSecret's status in every cluster (read as plain JSON: a
/// hostile test leaves objects no type reads), and each controller's
/// `/metrics`. Returns the places where one was found.
pub async fn scan(pair: &Pair, values: &[String]) -> Result<Vec<String>, HarnessError> {
    let needles = needles(values);
    let mut texts: Vec<(String, String)> = Vec::new();
    for path in pair.log_files() {
        let name = path.display().to_string();
        // The API servers' and etcd's own logs are not ours to judge.
        if name.contains("kube-apiserver")
            || name.ends_with("etcd.log")
            || name.contains("kube-controller-manager")
        {
            continue;
        }
        texts.push((name, std::fs::read_to_string(&path).unwrap_or_default()));
    }
    let clients: Vec<(String, Client)> =
        std::iter::once(("management".to_owned(), pair.management.clone()))
            .chain(
                pair.tenant_names
                    .iter()
                    .cloned()
                    .zip(pair.tenants.iter().cloned()),
            )
            .collect();
    let resource = ApiResource::erase::<SyncSecret>(&());
    for (cluster, client) in &clients {
        let events = Api::<Event>::all(client.clone())
            .list(&ListParams::default())
            .await?;
        for e in events.items {
            texts.push((
                format!(
                    "{cluster} event {}/{}",
                    e.namespace().unwrap_or_default(),
                    e.name_any()
                ),
                format!(
                    "{} {}",
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default()
                ),
            ));
        }
        let objects = Api::<DynamicObject>::all_with(client.clone(), &resource)
            .list(&ListParams::default())
            .await?;
        for o in objects.items {
            texts.push((
                format!(
                    "{cluster} status of {}/{}",
                    o.namespace().unwrap_or_default(),
                    o.name_any()
                ),
                o.data
                    .get("status")
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            ));
        }
    }
    for c in pair.controllers() {
        if let Ok(m) = c.metrics() {
            texts.push((format!("{} /metrics", c.name()), m));
        }
    }
    let mut found = Vec::new();
    for (place, text) in &texts {
        if needles.iter().any(|v| text.contains(v.as_str())) {
            found.push(place.clone());
        }
    }
    Ok(found)
}
