//! Where a paced update's milliseconds go: each stage ends when the run's
//! own watch sees the new content of the tenant object, the copy and the
//! Secret (so the stages add up to the latency), and the controllers'
//! reconcile histograms say how much of a hop is their own work (GET and
//! apply) rather than watch delivery and queueing.

use std::time::Instant;

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::accounting::percentile;
use crate::gctrace::GcCycle;
use crate::pair::{Pair, sum_samples};

/// One paced update, in milliseconds since it was sent.
#[derive(Clone)]
struct Sample {
    /// Which object, in which tenant, and when by the wall clock: to find
    /// a slow update in the controllers' logs.
    object: String,
    cluster: usize,
    sent_at: Timestamp,
    /// The tenant PATCH answered (within the next stage, not before it).
    answered: f64,
    /// The tenant object's new content seen by a watch: the write and the
    /// tenant API server's watch delivery, what the ccm waits for too.
    tenant: f64,
    /// The copy's new content seen: the ccm's queue, GET and copy apply,
    /// and the management watch delivery.
    copy: f64,
    /// The Secret's: the manager's queue, GET and Secret apply, and the
    /// watch delivery. The update's latency.
    secret: f64,
}

/// A stage's length in one update.
type Length = fn(&Sample) -> f64;

/// The stages of every paced update of a run.
#[derive(Default)]
pub(super) struct Stages {
    samples: Vec<Sample>,
}

/// Milliseconds from `from` to `to` (negative if `to` came first).
pub(super) fn ms_between(from: Instant, to: Instant) -> f64 {
    if to >= from {
        to.duration_since(from).as_secs_f64() * 1000.0
    } else {
        -(from.duration_since(to).as_secs_f64() * 1000.0)
    }
}

impl Stages {
    /// Records one update of `object` in tenant cluster `cluster`, sent at
    /// `sent`.
    pub(super) fn record(
        &mut self,
        (object, cluster): (&str, usize),
        sent: Instant,
        answered: Instant,
        tenant: Instant,
        copy: Instant,
        secret: Instant,
    ) {
        self.samples.push(Sample {
            object: object.to_owned(),
            cluster,
            sent_at: Timestamp::now() - sent.elapsed(),
            answered: ms_between(sent, answered),
            tenant: ms_between(sent, tenant),
            copy: ms_between(sent, copy),
            secret: ms_between(sent, secret),
        });
    }

    /// Percentiles of each stage on its own (a stage's length: its end
    /// minus the previous stage's end; the tenant PATCH's from the send,
    /// as part of the first stage), and the mean of each over the slowest
    /// 1% of updates (which stage their time went to), and those updates
    /// one by one under `slowest`, each with the processes whose garbage
    /// collection (of `cycles`) it met.
    pub(super) fn percentiles(&self, cycles: &[GcCycle]) -> Value {
        let stages: [(&str, Length); 4] = [
            ("tenant_write", |s| s.answered),
            ("tenant_watch", |s| s.tenant),
            ("hop1_ccm", |s| s.copy - s.tenant),
            ("hop2_manager", |s| s.secret - s.copy),
        ];
        let mut slowest = self.samples.clone();
        slowest.sort_by(|a, b| b.secret.total_cmp(&a.secret));
        slowest.truncate(self.samples.len().div_ceil(100));
        let mut out = serde_json::Map::new();
        for (name, length) in stages {
            let mut all: Vec<f64> = self
                .samples
                .iter()
                .map(length)
                .filter(|v| !v.is_nan())
                .collect();
            all.sort_by(f64::total_cmp);
            let tail: Vec<f64> = slowest.iter().map(length).filter(|v| !v.is_nan()).collect();
            out.insert(
                name.to_owned(),
                json!({
                    "p50": percentile(&all, 50.0),
                    "p90": percentile(&all, 90.0),
                    "p99": percentile(&all, 99.0),
                    "max": all.last().copied().unwrap_or(f64::NAN),
                    "mean_in_slowest_1pct": mean(&tail),
                }),
            );
        }
        let named = slowest.iter().map(|s| {
            let mut one = serde_json::Map::new();
            one.insert("object".to_owned(), json!(s.object));
            one.insert("tenant".to_owned(), json!(s.cluster));
            one.insert("sent_at".to_owned(), json!(s.sent_at.to_string()));
            for (name, length) in stages {
                one.insert(name.to_owned(), json!(length(s)));
            }
            one.insert("during_gc".to_owned(), json!(s.met(cycles)));
            Value::Object(one)
        });
        out.insert("slowest".to_owned(), Value::Array(named.collect()));
        Value::Object(out)
    }

    /// The garbage collections of etcd and the API servers (of `cycles`)
    /// from the first update's send to the last one's arrival (the pauses
    /// between included; a cycle partly inside counted whole): per process
    /// how many, their seconds and CPU seconds; how many updates met one;
    /// and the latency of the updates that met none. On two shared cores a
    /// large API server's collection takes what the other processes were
    /// idle on, so this says how much of the tail is the control plane's.
    /// Null without updates, or without a traced collection at all (the
    /// logs unreadable or not traced: every update would seem to meet none).
    pub(super) fn gc(&self, cycles: &[GcCycle]) -> Value {
        let (Some(first), Some(last)) = (self.samples.first(), self.samples.last()) else {
            return Value::Null;
        };
        if cycles.is_empty() {
            return Value::Null;
        }
        let (from, to) = (first.sent_at, last.arrived());
        let mut per_process: std::collections::BTreeMap<&str, (u32, f64, f64)> =
            std::collections::BTreeMap::new();
        for c in cycles.iter().filter(|c| overlaps(c, from, to)) {
            let e = per_process.entry(c.process.as_str()).or_default();
            e.0 += 1;
            e.1 += c.clock.as_secs_f64();
            e.2 += c.cpu.as_secs_f64();
        }
        let mut outside: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.met(cycles).is_empty())
            .map(|s| s.secret)
            .collect();
        outside.sort_by(f64::total_cmp);
        let cycles: serde_json::Map<String, Value> = per_process
            .into_iter()
            .map(|(p, (n, clock, cpu))| {
                (
                    p.to_owned(),
                    json!({ "cycles": n, "clock_s": clock, "cpu_s": cpu }),
                )
            })
            .collect();
        json!({
            "cycles": cycles,
            "updates_during": self.samples.len() - outside.len(),
            "outside": {
                "updates": outside.len(),
                "p50": percentile(&outside, 50.0),
                "p90": percentile(&outside, 90.0),
                "p99": percentile(&outside, 99.0),
                "max": outside.last().copied().unwrap_or(f64::NAN),
            },
        })
    }
}

impl Sample {
    /// When the run's watch saw the Secret's new content.
    fn arrived(&self) -> Timestamp {
        let span = k8s_openapi::jiff::SignedDuration::try_from_secs_f64(self.secret / 1000.0);
        self.sent_at + span.unwrap_or_default()
    }

    /// The processes whose garbage collection ran while this update was on
    /// its way, each once.
    fn met(&self, cycles: &[GcCycle]) -> Vec<String> {
        let mut met: Vec<String> = cycles
            .iter()
            .filter(|c| overlaps(c, self.sent_at, self.arrived()))
            .map(|c| c.process.clone())
            .collect();
        met.sort_unstable();
        met.dedup();
        met
    }
}

/// Whether `cycle` ran at some time between `from` and `to`.
fn overlaps(cycle: &GcCycle, from: Timestamp, to: Timestamp) -> bool {
    let (Ok(start), Ok(end)) = (
        Timestamp::try_from(cycle.start),
        Timestamp::try_from(cycle.end()),
    ) else {
        return false;
    };
    start < to && end > from
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Per controller process (by name): the sum of its reconcile durations
/// in seconds and their count, from its `/metrics` (none for a process
/// that serves none, such as KubeLB's).
pub(super) fn reconciles(pair: &Pair) -> Vec<(String, f64, f64)> {
    pair.controllers()
        .filter_map(|c| {
            let m = c.metrics().ok()?;
            let metric = ["kubelb_manager", "kubelb_ccm"]
                .iter()
                .map(|p| format!("{p}_sync_secret_reconcile_duration_seconds"))
                .find(|n| m.contains(&format!("{n}_count")))?;
            let sum = sum_samples(&m, &format!("{metric}_sum"));
            let count = sum_samples(&m, &format!("{metric}_count"));
            Some((c.name().to_owned(), sum, count))
        })
        .collect()
}

/// What each controller reconciled between `before` and `after`: how
/// many reconciles and their milliseconds in all.
pub(super) fn reconciles_since(
    before: &[(String, f64, f64)],
    after: &[(String, f64, f64)],
) -> Value {
    let mut out = serde_json::Map::new();
    for (name, sum, count) in after {
        let Some((_, sum0, count0)) = before.iter().find(|(n, _, _)| n == name) else {
            continue;
        };
        out.insert(
            name.clone(),
            json!({ "reconciles": count - count0, "ms": (sum - sum0) * 1000.0 }),
        );
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn sample(object: &str, sent_at: Timestamp, ms: f64) -> Sample {
        Sample {
            object: object.to_owned(),
            cluster: 0,
            sent_at,
            answered: 1.0,
            tenant: 2.0,
            copy: ms / 2.0,
            secret: ms,
        }
    }

    fn cycle(process: &str, start: SystemTime, ms: u64) -> GcCycle {
        GcCycle {
            process: process.to_owned(),
            start,
            clock: Duration::from_millis(ms),
            cpu: Duration::from_millis(2 * ms),
            live_mb: 100,
        }
    }

    #[test]
    fn the_updates_a_collection_ran_during_are_named_and_left_out() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |ms: u64| Timestamp::try_from(t0 + Duration::from_millis(ms)).unwrap();
        let stages = Stages {
            samples: vec![
                sample("quiet", at(0), 20.0),
                sample("slow", at(1000), 50.0),
                sample("after", at(2000), 30.0),
            ],
        };
        let management = "kube-apiserver management";
        let cycles = [
            // Before the first update: not in the window.
            cycle("etcd", t0 - Duration::from_secs(5), 100),
            // Ends as the first update is sent: met by none.
            cycle("etcd", t0 - Duration::from_millis(100), 100),
            // Within the second update, twice, and a tenant's too.
            cycle(management, t0 + Duration::from_millis(1010), 100),
            cycle(management, t0 + Duration::from_millis(1040), 5),
            cycle(
                "kube-apiserver bench1",
                t0 + Duration::from_millis(1020),
                10,
            ),
        ];
        let gc = stages.gc(&cycles);
        assert_eq!(gc["updates_during"], 1);
        assert_eq!(gc["outside"]["updates"], 2);
        assert_eq!(gc["outside"]["p50"], 20.0);
        assert_eq!(gc["outside"]["max"], 30.0);
        assert_eq!(gc["cycles"][management]["cycles"], 2);
        let seconds = |k: &str| gc["cycles"][management][k].as_f64().unwrap();
        assert!((seconds("clock_s") - 0.105).abs() < 1e-9, "{gc}");
        assert!((seconds("cpu_s") - 0.21).abs() < 1e-9, "{gc}");
        assert!(gc["cycles"]["etcd"].is_null(), "{gc}");

        let slowest = &stages.percentiles(&cycles)["slowest"];
        assert_eq!(slowest[0]["object"], "slow");
        assert_eq!(
            slowest[0]["during_gc"],
            json!(["kube-apiserver bench1", management])
        );
    }

    #[test]
    fn without_a_traced_collection_nothing_is_claimed() {
        let at = Timestamp::try_from(SystemTime::UNIX_EPOCH).unwrap();
        let stages = Stages {
            samples: vec![sample("one", at, 20.0)],
        };
        assert!(stages.gc(&[]).is_null());
    }
}
