//! When a new object's status says `Pending`: what this process asked of
//! the manager (the copies it wrote), what the manager answered, and so
//! whether the verdict on a copy is late or only queued.

use std::collections::HashMap;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::Context;

/// How long a new object may wait for the manager's verdict before its
/// status may say `Pending`, and how long the manager may answer none of
/// our writes before it is late.
pub(crate) const PENDING_AFTER: Duration = Duration::from_secs(5);

/// The copies this process wrote (by name) and not yet answered by the
/// manager, with when: a new object's `Pending` clock runs from our
/// write, not from the copy's creation (an adopted or updated copy is
/// old).
#[derive(Debug)]
pub struct Asked {
    at: Since,
    /// When the manager last answered one of them.
    last_answer: Option<Instant>,
    /// How long after our first write of a copy it is late whatever the
    /// manager answers (`--pending-timeout-seconds`). The manager answers
    /// a backlog in no useful order (its queue is not first in, first
    /// out), so answers to later writes say nothing of a copy waiting.
    timeout: Duration,
    /// Copies this process saw terminating (held by the manager's
    /// finalizer): only their going counts as the manager at work, not
    /// that of a copy it never held.
    terminating: Since,
}

impl Asked {
    /// Nothing asked yet; a copy is late `timeout` after our first write
    /// of it at the latest.
    pub fn new(timeout: Duration) -> Self {
        Self {
            at: Since::default(),
            last_answer: None,
            timeout,
            terminating: Since::default(),
        }
    }

    /// The verdict on `copy` is in (see [`Context::answered`]).
    fn answered(&mut self, copy: &str, now: Instant) {
        if self.at.at.remove(copy).is_some() {
            self.last_answer = Some(now);
        }
    }

    /// How much longer a copy written at `written`, still without a
    /// verdict at `now`, waits before it is late; or why it is.
    fn wait(&self, written: Written, now: Instant) -> Result<Duration, Late> {
        let timeout = self
            .timeout
            .checked_sub(now.saturating_duration_since(written.first))
            .filter(|d| !d.is_zero())
            .ok_or(Late::Timeout(self.timeout))?;
        let waited = now.saturating_duration_since(written.last);
        if let Some(left) = PENDING_AFTER.checked_sub(waited).filter(|d| !d.is_zero()) {
            return Ok(left.min(timeout));
        }
        if self
            .last_answer
            .is_none_or(|at| now.saturating_duration_since(at) >= PENDING_AFTER)
        {
            return Err(Late::Quiet);
        }
        Ok(PENDING_AFTER.min(timeout))
    }

    /// See [`Context::copy_gone`].
    fn gone(&mut self, copy: &str, now: Instant) {
        self.at.at.remove(copy);
        if self.terminating.at.remove(copy).is_some() {
            self.last_answer = Some(now);
        }
    }
}

/// Why a new object's verdict is late (logged with its `Pending`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Late {
    #[error("the manager has answered none of this ccm's copies for 5 s")]
    Quiet,
    #[error("no verdict {}s after this ccm first wrote the copy (--pending-timeout-seconds)", .0.as_secs())]
    Timeout(Duration),
}

/// When this process first and last wrote a copy (or saw it terminating).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Written {
    first: Instant,
    last: Instant,
}

/// Names with when each was put in, forgotten [`ASKED_FORGET`] after the
/// last put: far longer than any queue of the manager's, so that an
/// answer still counts when it comes, while an object deleted before its
/// verdict leaves nothing behind for longer.
#[derive(Debug)]
struct Since {
    at: HashMap<String, Written>,
    /// Size at which entries past [`ASKED_FORGET`] are purged next: twice
    /// what was left by the last purge, so that purging costs nothing per
    /// insert however many wait.
    purge_above: usize,
}

impl Default for Since {
    fn default() -> Self {
        Self {
            at: HashMap::new(),
            purge_above: ASKED_PURGE_ABOVE,
        }
    }
}

impl Since {
    /// Puts `name` in as of `now`, keeping when it was first put in.
    fn put(&mut self, name: &str, now: Instant) {
        if self.at.len() >= self.purge_above {
            self.at
                .retain(|_, w| now.saturating_duration_since(w.last) < ASKED_FORGET);
            self.purge_above = (2 * self.at.len()).max(ASKED_PURGE_ABOVE);
        }
        let w = self.at.entry(name.to_owned()).or_insert(Written {
            first: now,
            last: now,
        });
        w.last = now;
    }
}

/// A [`Since`] is purged of entries older than [`ASKED_FORGET`] once it
/// holds at least this many.
const ASKED_PURGE_ABOVE: usize = 1024;

/// How long an entry of a [`Since`] is remembered.
const ASKED_FORGET: Duration = Duration::from_secs(600);

impl Context {
    /// Remembers that the copy named `copy` was written just now, asking
    /// the manager for a new verdict.
    pub fn asked(&self, copy: &str) {
        if let Ok(mut a) = self.asked.lock() {
            a.at.put(copy, Instant::now());
        }
    }

    /// The manager's verdict on `copy` is in: if it answers a write of
    /// ours, the manager is at work on this tenant's copies.
    pub fn answered(&self, copy: &str) {
        if let Ok(mut a) = self.asked.lock() {
            a.answered(copy, Instant::now());
        }
    }

    /// Remembers that the copy named `copy` was seen terminating.
    pub fn saw_terminating(&self, copy: &str) {
        if let Ok(mut a) = self.asked.lock() {
            a.terminating.put(copy, Instant::now());
        }
    }

    /// The copy `copy` is gone: forgets our write of it. If this process
    /// saw it terminating, the manager released its finalizer: that counts
    /// as the manager at work. A copy that went without it (never held by
    /// the manager: refused by a quota, or deleted while it had no
    /// finalizer) says nothing of the manager.
    pub fn copy_gone(&self, copy: &str) {
        if let Ok(mut a) = self.asked.lock() {
            a.gone(copy, Instant::now());
        }
    }

    /// Whether the manager has answered a write of ours (or let a copy
    /// go) within `within`: its queue moves.
    pub fn manager_answering(&self, within: Duration) -> bool {
        self.asked
            .lock()
            .ok()
            .and_then(|a| a.last_answer)
            .is_some_and(|at| at.elapsed() < within)
    }

    /// How much longer a new object may wait for the manager's verdict on
    /// its copy `copy` (created at `created`) before its status says
    /// `Pending`; or why it says so now. It is late once it has waited
    /// [`PENDING_AFTER`] since our write and the manager has answered
    /// none of our writes (nor let a copy go) for as long, or
    /// `--pending-timeout-seconds` after our first write whatever the
    /// manager does. A copy this process did not write (it wrote it
    /// before a restart) counts as written when it was created.
    pub(crate) fn verdict_wait(
        &self,
        copy: &str,
        created: Option<&Time>,
    ) -> Result<Duration, Late> {
        let now = Instant::now();
        // A panic elsewhere while holding the lock leaves times that are
        // still times: use them.
        let a = self.asked.lock().unwrap_or_else(PoisonError::into_inner);
        let written = a.at.at.get(copy).copied().unwrap_or_else(|| {
            let at = created
                .and_then(|c| Duration::try_from(Timestamp::now().duration_since(c.0)).ok())
                .and_then(|ago| now.checked_sub(ago))
                .unwrap_or(now);
            Written {
                first: at,
                last: at,
            }
        });
        a.wait(written, now)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(300);

    #[test]
    fn only_a_copy_seen_terminating_counts_as_the_manager_at_work() {
        let mut a = Asked::new(TIMEOUT);
        let now = Instant::now();
        a.at.put("refused", now);
        // Gone without ever being held (a quota refused it, or it had no
        // finalizer): nothing said of the manager.
        a.gone("refused", now);
        assert!(a.last_answer.is_none());
        assert!(a.at.at.is_empty());
        a.terminating.put("held", now);
        a.gone("held", now);
        assert_eq!(a.last_answer, Some(now));
        assert!(a.terminating.at.is_empty());
    }

    #[test]
    fn a_copy_is_late_when_the_manager_is_quiet_or_at_the_timeout() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut a = Asked::new(TIMEOUT);
        for (name, at) in [("first", 0), ("ours", 1), ("later", 8)] {
            a.at.put(name, s(at));
        }
        let ours = a.at.at["ours"];
        // Within 5 s of our write: wait the rest, whatever the manager.
        assert_eq!(a.wait(ours, s(3)), Ok(Duration::from_secs(3)));
        // Never answered anything: quiet, late.
        assert_eq!(a.wait(ours, s(6)), Err(Late::Quiet));
        // The manager answers our writes, in any order: not late.
        a.answered("later", s(9));
        assert_eq!(a.wait(ours, s(12)), Ok(PENDING_AFTER));
        a.answered("first", s(13));
        assert_eq!(a.wait(ours, s(17)), Ok(PENDING_AFTER));
        // Quiet for 5 s: late.
        assert_eq!(a.wait(ours, s(18)), Err(Late::Quiet));
        // Answering all along, till the timeout after our first write.
        a.last_answer = Some(s(300));
        assert_eq!(a.wait(ours, s(300)), Ok(Duration::from_secs(1)));
        assert_eq!(a.wait(ours, s(301)), Err(Late::Timeout(TIMEOUT)));
    }

    #[test]
    fn a_copy_rewritten_again_and_again_is_late_at_the_timeout() {
        let t0 = Instant::now();
        let mut a = Asked::new(TIMEOUT);
        let mut now = t0;
        // Rewritten every 2 s (each write restarts the 5 s) while the
        // manager answers others: the timeout runs from the first write.
        while now < t0 + TIMEOUT {
            a.at.put("ours", now);
            a.last_answer = Some(now);
            assert!(a.wait(a.at.at["ours"], now).is_ok(), "{:?}", now - t0);
            now += Duration::from_secs(2);
        }
        let w = a.at.at["ours"];
        assert_eq!(w.first, t0);
        assert_eq!(a.wait(w, now), Err(Late::Timeout(TIMEOUT)));
    }

    #[test]
    fn since_keeps_the_first_moment_and_purges_old_entries() {
        let mut s = Since::default();
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(5);
        s.put("x", t0);
        s.put("x", later);
        assert_eq!(
            s.at["x"],
            Written {
                first: t0,
                last: later
            }
        );
        // Filled to the purge size: the next put purges what was last put
        // in longer than ASKED_FORGET ago.
        let old = Written {
            first: t0,
            last: t0,
        };
        for i in 1..ASKED_PURGE_ABOVE {
            s.at.insert(format!("old-{i}"), old);
        }
        let much_later = t0 + ASKED_FORGET + Duration::from_secs(1);
        s.put("new", much_later);
        let mut left: Vec<&String> = s.at.keys().collect();
        left.sort();
        assert_eq!(left, ["new", "x"]);
        assert_eq!(s.purge_above, ASKED_PURGE_ABOVE);
    }
}
