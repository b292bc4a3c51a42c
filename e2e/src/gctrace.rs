//! The garbage collections of the control plane's Go processes, from the
//! lines Go's runtime writes to their logs with `GODEBUG=gctrace=1`: the
//! bench tells which paced updates met one (on two shared cores, a large
//! API server's collection takes the CPU every other process was idle on).

use std::path::Path;
use std::time::{Duration, SystemTime};

/// The `GODEBUG` that makes a Go process trace its collections, keeping
/// whatever our own environment sets in it.
pub fn godebug() -> String {
    match std::env::var("GODEBUG") {
        Ok(v) if !v.is_empty() => format!("{v},gctrace=1"),
        _ => "gctrace=1".to_owned(),
    }
}

/// One garbage collection of one process.
#[derive(Clone, Debug, PartialEq)]
pub struct GcCycle {
    /// Which process (`kube-apiserver management`, `etcd`).
    pub process: String,
    /// When it began, by the wall clock: the process's start plus the
    /// trace's offset (from the runtime's own start, which comes a little
    /// after ours).
    pub start: SystemTime,
    /// How long it ran: both pauses and the concurrent mark between them.
    pub clock: Duration,
    /// The CPU it took (pauses, assists, background and idle marking).
    pub cpu: Duration,
    /// The live heap it left, in MB.
    pub live_mb: u64,
}

impl GcCycle {
    /// When it ended (a sum [`cycles_in`] has checked).
    pub fn end(&self) -> SystemTime {
        self.start + self.clock
    }
}

/// The collections traced in `log` of `process`, started at `started`
/// (none if the log cannot be read). Lines that are not a trace line (or
/// were cut by another write, or give an impossible time) are skipped.
pub fn cycles_in(process: &str, log: &Path, started: SystemTime) -> Vec<GcCycle> {
    let bytes = std::fs::read(log).unwrap_or_default();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|line| {
            let (offset, clock, cpu, live_mb) = parse(line)?;
            let start = started.checked_add(offset)?;
            start.checked_add(clock)?;
            Some(GcCycle {
                process: process.to_owned(),
                start,
                clock,
                cpu,
                live_mb,
            })
        })
        .collect()
}

/// One trace line: `gc 70 @300.123s 10%: 0.06+532+0.63 ms clock,
/// 0.12+2.9/286/605+1.2 ms cpu, 682->695->404 MB, ...`: its offset from
/// the runtime's start, wall time, CPU time and live heap.
fn parse(line: &str) -> Option<(Duration, Duration, Duration, u64)> {
    let mut words = line.split_whitespace();
    if words.next()? != "gc" {
        return None;
    }
    words.next()?.parse::<u64>().ok()?;
    let offset = words.next()?.strip_prefix('@')?.strip_suffix('s')?;
    let offset = Duration::try_from_secs_f64(offset.parse().ok()?).ok()?;
    words.next()?; // the share of CPU spent in collections so far
    let clock = ms_sum(words.next()?, &['+'])?;
    (words.next()? == "ms" && words.next()? == "clock,").then_some(())?;
    let cpu = ms_sum(words.next()?, &['+', '/'])?;
    (words.next()? == "ms" && words.next()? == "cpu,").then_some(())?;
    let live_mb = words.next()?.rsplit("->").next()?.parse().ok()?;
    Some((offset, clock, cpu, live_mb))
}

/// The sum of the milliseconds in `field`, split at `separators`.
fn ms_sum(field: &str, separators: &[char]) -> Option<Duration> {
    let mut ms = 0.0;
    for part in field.split(separators) {
        ms += part.parse::<f64>().ok()?;
    }
    Duration::try_from_secs_f64(ms / 1000.0).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_line_gives_when_how_long_and_what_it_left() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("kube-apiserver.log");
        std::fs::write(
            &log,
            "I1206 16:10:08.000000 1 server.go:1] serving\n\
             gc 70 @300.5s 10%: 0.5+532+0.5 ms clock, 0.12+2.9/286/605+1.0 ms cpu, 682->695->404 MB, 1408 MB goal, 4 MB stacks, 0 MB globals, 2 P\n\
             gc 71 @310.25s 10%: 0.1+560\n\
             gc 72 @312s 11%: 1+2+3 ms clock, 1+1/1/1+1 ms cpu, 10->12->6 MB, 12 MB goal, 0 MB stacks, 0 MB globals, 2 P (forced)\n\
             gc 73 @1e30s 0%: 0+0+0 ms clock, 0+0/0/0+0 ms cpu, 1->1->1 MB\n",
        )
        .unwrap();
        let started = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let cycles = cycles_in("kube-apiserver management", &log, started);
        assert_eq!(
            cycles.len(),
            2,
            "the cut line and the impossible time are skipped: {cycles:?}"
        );
        let ms = |d: Duration| (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0;
        let since = |t: SystemTime| ms(t.duration_since(started).unwrap());
        let first = &cycles[0];
        assert_eq!(first.process, "kube-apiserver management");
        assert_eq!(since(first.start), 300_500.0);
        assert_eq!(ms(first.clock), 533.0);
        assert_eq!(ms(first.cpu), 895.02);
        assert_eq!(first.live_mb, 404);
        assert_eq!(since(first.end()), 301_033.0);
        assert_eq!(since(cycles[1].start), 312_000.0);
        assert_eq!(ms(cycles[1].clock), 6.0);
        assert_eq!(cycles[1].live_mb, 6);
    }
}
