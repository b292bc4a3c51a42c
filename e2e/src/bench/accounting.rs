//! What a run costs: API requests by verb and resource (the API servers'
//! own counters) and CPU from `/proc`, for the controllers and the servers.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::Client;
use serde_json::{Value, json};

use crate::HarnessError;
use crate::pair::Pair;

/// `apiserver_request_total` of one API server, by `resource[/subresource]`
/// and verb, for our resources only. Requests the server did not accept
/// (a 409 conflict, a 429 or 503 on a loaded machine) are counted apart,
/// with their code after the verb (`syncsecrets PATCH 409`).
pub async fn requests(client: &Client) -> Result<BTreeMap<String, f64>, HarnessError> {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .map_err(|e| HarnessError::Usage(e.to_string()))?;
    let text = client.request_text(req).await?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        let resource = label("resource");
        if !matches!(resource.as_str(), "syncsecrets" | "secrets" | "events") {
            continue;
        }
        let sub = label("subresource");
        let mut key = if sub.is_empty() {
            format!("{resource} {}", label("verb"))
        } else {
            format!("{resource}/{sub} {}", label("verb"))
        };
        let code = label("code");
        if !code.starts_with('2') {
            key = format!("{key} {code}");
        }
        *out.entry(key).or_insert(0.0) += value.trim().parse::<f64>().unwrap_or(0.0);
    }
    Ok(out)
}

/// How many lists of `resource` an API server has streamed: watches with
/// `sendInitialEvents` that sent all their initial events
/// (`apiserver_watch_list_duration_seconds`, every scope).
pub async fn streamed_lists(client: &Client, resource: &str) -> Result<f64, HarnessError> {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .map_err(|e| HarnessError::Usage(e.to_string()))?;
    let text = client.request_text(req).await?;
    let wanted = format!("resource=\"{resource}\"");
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("apiserver_watch_list_duration_seconds_count{"))
        .filter(|rest| rest.contains(&wanted))
        .filter_map(|rest| rest.rsplit_once("} ")?.1.trim().parse::<f64>().ok())
        .sum::<f64>()
        // An empty sum is -0.
        + 0.0)
}

/// Request counts of the management (`m`) and tenant (`t`) API servers.
pub(super) async fn all_requests(pair: &Pair) -> Result<BTreeMap<String, f64>, HarnessError> {
    let mut out = BTreeMap::new();
    for (k, v) in requests(&pair.management).await? {
        out.insert(format!("management {k}"), v);
    }
    for c in &pair.tenants {
        for (k, v) in requests(c).await? {
            *out.entry(format!("tenant {k}")).or_insert(0.0) += v;
        }
    }
    Ok(out)
}

pub(super) fn delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

const WRITE_VERBS: [&str; 5] = ["POST", "PUT", "PATCH", "DELETE", "APPLY"];

/// Whether `key` (of [`requests`]) counts write requests, accepted or not.
pub(super) fn is_write(key: &str) -> bool {
    key.split(' ').any(|word| WRITE_VERBS.contains(&word))
}

/// Whether `key` counts writes the API server accepted.
pub(super) fn is_accepted_write(key: &str) -> bool {
    key.rsplit(' ')
        .next()
        .is_some_and(|verb| WRITE_VERBS.contains(&verb))
}

/// Peak RSS (KiB) and CPU seconds of a process, from /proc.
pub(super) fn cost(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after ") ".
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, r)| r.split(' ').collect())
        .unwrap_or_default();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
        .sum();
    (hwm, ticks / 100.0)
}

/// The machine's idle CPU seconds so far (idle and iowait of all cores,
/// from /proc/stat).
pub(super) fn idle_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: f64 = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .map(|l| {
            l.split_whitespace()
                .skip(3)
                .take(2)
                .filter_map(|v| v.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or(0.0);
    ticks / 100.0
}

/// CPU seconds used so far by each part of the run: etcd, the API servers,
/// kube-controller-manager, the controllers, this process (the loader and
/// its watches), and what the machine left idle.
pub(super) fn cpu_now(pair: &Pair) -> BTreeMap<&'static str, f64> {
    cpu_of(&pair.plane, pair.controllers())
}

/// [`cpu_now`] of a control plane and the controllers run on it.
pub(super) fn cpu_of<'a>(
    plane: &crate::ControlPlane,
    controllers: impl Iterator<Item = &'a crate::pair::ControllerProcess>,
) -> BTreeMap<&'static str, f64> {
    let mut cpu = BTreeMap::new();
    for (name, pid) in plane.processes() {
        let role = match name.split(' ').next() {
            Some("etcd") => "etcd",
            Some("kube-apiserver") => "kube-apiserver",
            Some("kube-controller-manager") => "kube-controller-manager",
            _ => "other",
        };
        *cpu.entry(role).or_default() += cost(pid).1;
    }
    let controllers = controllers.filter_map(|c| c.pid()).map(|p| cost(p).1);
    cpu.insert("controllers", controllers.sum());
    cpu.insert("loader", cost(std::process::id()).1);
    cpu.insert("idle", idle_seconds());
    cpu
}

/// The write requests (every API server's `apiserver_request_total`)
/// between two readings of [`all_requests`].
pub(super) fn writes_between(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> f64 {
    delta(before, after)
        .iter()
        .filter(|(k, _)| is_write(k))
        .map(|(_, v)| v)
        .sum()
}

/// What each part used between two [`cpu_now`] readings, with the wall
/// time between them and `writes`, the write requests in it: where the
/// time of a phase went. Read the API servers' metrics outside the two
/// readings: rendering them costs CPU of its own.
pub(super) fn cpu_spent(
    before: &BTreeMap<&'static str, f64>,
    after: &BTreeMap<&'static str, f64>,
    wall: Duration,
    writes: f64,
) -> Value {
    let mut spent = serde_json::Map::new();
    for (role, a) in after {
        let d = (a - before.get(role).copied().unwrap_or(0.0)).max(0.0);
        spent.insert((*role).to_owned(), json!(d));
    }
    spent.insert("wall".to_owned(), json!(wall.as_secs_f64()));
    spent.insert("writes".to_owned(), json!(writes));
    Value::Object(spent)
}

pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Peak RSS and CPU seconds of each controller process, as it is now.
pub(super) fn cost_now(pair: &Pair) -> Vec<Value> {
    cost_of(pair.controllers())
}

/// [`cost_now`] of some controllers.
pub(super) fn cost_of<'a>(
    controllers: impl Iterator<Item = &'a crate::pair::ControllerProcess>,
) -> Vec<Value> {
    controllers
        .filter_map(|c| {
            let (rss_kib, cpu) = cost(c.pid()?);
            Some(json!({ "process": c.name(), "peak_rss_mib": rss_kib as f64 / 1024.0, "cpu_seconds": cpu }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_writes_are_writes_but_not_accepted_ones() {
        for (key, write, accepted) in [
            ("management syncsecrets APPLY", true, true),
            ("tenant syncsecrets/status PATCH 409", true, false),
            ("management secrets DELETE 404", true, false),
            ("management secrets GET", false, false),
            ("management secrets GET 404", false, false),
            ("tenant events POST", true, true),
        ] {
            assert_eq!(is_write(key), write, "{key}");
            assert_eq!(is_accepted_write(key), accepted, "{key}");
        }
    }
}
