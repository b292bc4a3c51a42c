//! The leak scan every end-to-end run ends with: no value a test wrote may
//! appear, in clear or in base64, in a controller's log, an event, a
//! status or a controller's `/metrics`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use aho_corasick::AhoCorasick;
use futures::StreamExt as _;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::runtime::{WatchStreamExt as _, watcher};
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

/// Values shorter than this are not recorded: too likely to be in a log
/// for other reasons (`v1`, `true`).
const SHORTEST: usize = 8;

/// Every value the SyncSecrets of some clusters held while it ran (`data`
/// as written and decoded, `stringData`), read by a watch of each, so
/// that a test can scan for what it wrote without listing it.
pub struct Written {
    /// Per cluster, in the order given.
    values: Arc<Mutex<Vec<BTreeSet<String>>>>,
    /// Clusters whose watch could not read an answer (what that answer
    /// held went unrecorded, and a scan would miss it).
    unreadable: Arc<Mutex<BTreeSet<usize>>>,
    watches: Vec<tokio::task::JoinHandle<()>>,
}

impl Written {
    /// Starts watching every SyncSecret of each cluster, read as plain
    /// JSON (a hostile test writes objects no type reads).
    pub fn record(clients: &[Client]) -> Self {
        let values = Arc::new(Mutex::new(vec![BTreeSet::new(); clients.len()]));
        let unreadable = Arc::new(Mutex::new(BTreeSet::new()));
        let resource = ApiResource::erase::<SyncSecret>(&());
        let watches = clients
            .iter()
            .enumerate()
            .map(|(i, client)| {
                let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
                let (values, unreadable) = (Arc::clone(&values), Arc::clone(&unreadable));
                tokio::spawn(async move {
                    let mut objects = watcher(api, watcher::Config::default())
                        .default_backoff()
                        .applied_objects()
                        .boxed();
                    while let Some(o) = objects.next().await {
                        match o {
                            Ok(o) => {
                                if let Ok(mut v) = values.lock() {
                                    v[i].extend(held(&o));
                                }
                            }
                            // A connection lost is retried; an answer that
                            // cannot be read is a gap in what was recorded.
                            Err(
                                watcher::Error::InitialListFailed(kube::Error::SerdeError(_))
                                | watcher::Error::WatchFailed(kube::Error::SerdeError(_)),
                            ) => {
                                if let Ok(mut u) = unreadable.lock() {
                                    u.insert(i);
                                }
                            }
                            Err(_) => {}
                        }
                    }
                })
            })
            .collect();
        Self {
            values,
            unreadable,
            watches,
        }
    }

    /// What was recorded so far, all clusters together.
    pub fn values(&self) -> Vec<String> {
        self.values
            .lock()
            .map(|v| v.iter().flatten().cloned().collect())
            .unwrap_or_default()
    }

    /// Why a scan for [`Self::values`] would prove less than it says: a
    /// cluster whose watch recorded nothing, or could not read an answer.
    pub fn gaps(&self) -> Vec<String> {
        let mut gaps: Vec<String> = self
            .values
            .lock()
            .map(|v| {
                v.iter()
                    .enumerate()
                    .filter(|(_, values)| values.is_empty())
                    .map(|(i, _)| format!("cluster {i} recorded no value"))
                    .collect()
            })
            .unwrap_or_default();
        gaps.extend(
            self.unreadable
                .lock()
                .map(|u| {
                    u.iter()
                        .map(|i| format!("cluster {i}'s watch could not read an answer"))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        );
        gaps
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        for w in &self.watches {
            w.abort();
        }
    }
}

/// The values object `o` holds, long enough to search for.
fn held(o: &DynamicObject) -> Vec<String> {
    let strings = |field: &str| {
        o.data
            .get(field)
            .and_then(serde_json::Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(_, v)| v.as_str().map(str::to_owned))
            .collect::<Vec<_>>()
    };
    let decoded = strings("data").into_iter().flat_map(|b64| {
        let clear = syncsecret_api::base64::decode(&b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        std::iter::once(b64).chain(clear)
    });
    decoded
        .chain(strings("stringData"))
        .filter(|v| v.len() >= SHORTEST)
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
    if needles.is_empty() {
        return Ok(Vec::new());
    }
    // One pass over each text for all the needles: a run writes hundreds.
    let finder = AhoCorasick::new(&needles)
        .map_err(|e| HarnessError::Usage(format!("the leak scan's needles: {e}")))?;
    Ok(texts
        .into_iter()
        .filter(|(_, text)| finder.is_match(text))
        .map(|(place, _)| place)
        .collect())
}
