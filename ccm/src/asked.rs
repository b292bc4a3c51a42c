//! When a new object's status says `Pending`: what this process asked of
//! the manager (the copies it wrote), what the manager answered, and so
//! whether the verdict on a copy is late or only queued.

use std::collections::HashMap;
use std::sync::{MutexGuard, PoisonError};
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
    /// How long an entry is remembered: past the timeout, so that an
    /// answer that comes late still counts.
    forget: Duration,
    /// Copies this process saw terminating (held by the manager's
    /// finalizer): only their going counts as the manager at work, not
    /// that of a copy it never held.
    terminating: Since,
}

impl Asked {
    /// Nothing asked yet as of `now`, when the manager's silence starts
    /// to count; a copy is late `timeout` after our first write of it at
    /// the latest.
    pub fn new(timeout: Duration, now: Instant) -> Self {
        Self {
            at: Since::default(),
            last_answer: Some(now),
            timeout,
            forget: ASKED_FORGET.max(timeout.saturating_add(PENDING_AFTER)),
            terminating: Since::default(),
        }
    }

    /// The controllers start (again) at `now`, as leader or with rotated
    /// credentials: the manager's silence counts from then.
    pub fn controllers_started(&mut self, now: Instant) {
        self.last_answer = self.last_answer.max(Some(now));
    }

    /// The verdict on `copy` is in (see [`Context::answered`]): an answer
    /// if it answers a write of ours, or is the `first` verdict its object
    /// shows (a copy written before this process started).
    fn answered(&mut self, copy: &str, first: bool, now: Instant) {
        if self.at.at.remove(copy).is_some() || first {
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Late {
    /// The manager answered none of our writes for [`PENDING_AFTER`].
    Quiet,
    /// `--pending-timeout-seconds` since our first write of the copy.
    Timeout(Duration),
}

impl std::fmt::Display for Late {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Quiet => write!(
                f,
                "the manager has answered none of this ccm's copies for {}s",
                PENDING_AFTER.as_secs()
            ),
            Self::Timeout(t) => write!(
                f,
                "no verdict {}s after this ccm first wrote the copy (--pending-timeout-seconds)",
                t.as_secs()
            ),
        }
    }
}

/// When this process first and last wrote a copy (or saw it terminating).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Written {
    first: Instant,
    last: Instant,
}

/// Names with when each was put in, forgotten a while after the last put
/// (see [`Asked::forget`]), so that an object deleted before its verdict
/// leaves nothing behind for longer.
#[derive(Debug)]
struct Since {
    at: HashMap<String, Written>,
    /// Size at which forgotten entries are purged next: twice
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
    /// Puts `name` in as of `now`, keeping when it was first put in; what
    /// was last put in `forget` or longer ago may go.
    fn put(&mut self, name: &str, now: Instant, forget: Duration) {
        if self.at.len() >= self.purge_above {
            self.at
                .retain(|_, w| now.saturating_duration_since(w.last) < forget);
            self.purge_above = (2 * self.at.len()).max(ASKED_PURGE_ABOVE);
        }
        let w = self.at.entry(name.to_owned()).or_insert(Written {
            first: now,
            last: now,
        });
        w.last = now;
    }
}

/// A [`Since`] is purged of forgotten entries once it holds at least
/// this many.
const ASKED_PURGE_ABOVE: usize = 1024;

/// How long an entry of a [`Since`] is remembered at least: far longer
/// than any queue of the manager's.
const ASKED_FORGET: Duration = Duration::from_secs(600);

impl Context {
    /// What this process asked of the manager. A panic elsewhere while
    /// holding the lock leaves times that are still times: use them.
    fn asked_lock(&self) -> MutexGuard<'_, Asked> {
        self.asked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The controllers start (again) with this context, as leader or with
    /// rotated credentials: the manager's silence counts from now.
    pub(crate) fn controllers_started(&self) {
        self.asked_lock().controllers_started(Instant::now());
    }

    /// Remembers that the copy named `copy` was written just now, asking
    /// the manager for a new verdict.
    pub fn asked(&self, copy: &str) {
        let mut a = self.asked_lock();
        let forget = a.forget;
        a.at.put(copy, Instant::now(), forget);
    }

    /// The manager's verdict on `copy` is in, the `first` its object
    /// shows or not: the manager is at work on this tenant's copies if it
    /// answers a write of ours or a new object.
    pub fn answered(&self, copy: &str, first: bool) {
        self.asked_lock().answered(copy, first, Instant::now());
    }

    /// Remembers that the copy named `copy` was seen terminating.
    pub fn saw_terminating(&self, copy: &str) {
        let mut a = self.asked_lock();
        let forget = a.forget;
        a.terminating.put(copy, Instant::now(), forget);
    }

    /// The copy `copy` is gone: forgets our write of it. If this process
    /// saw it terminating, the manager released its finalizer: that counts
    /// as the manager at work. A copy that went without it (never held by
    /// the manager: refused by a quota, or deleted while it had no
    /// finalizer) says nothing of the manager.
    pub fn copy_gone(&self, copy: &str) {
        self.asked_lock().gone(copy, Instant::now());
    }

    /// Whether the manager has answered a write of ours (or let a copy
    /// go) within `within`: its queue moves.
    pub fn manager_answering(&self, within: Duration) -> bool {
        self.asked_lock()
            .last_answer
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
        let a = self.asked_lock();
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
        let started = Instant::now();
        let mut a = Asked::new(TIMEOUT, started);
        let now = started + Duration::from_secs(1);
        a.at.put("refused", now, a.forget);
        // Gone without ever being held (a quota refused it, or it had no
        // finalizer): nothing said of the manager.
        a.gone("refused", now);
        assert_eq!(a.last_answer, Some(started));
        assert!(a.at.at.is_empty());
        a.terminating.put("held", now, a.forget);
        a.gone("held", now);
        assert_eq!(a.last_answer, Some(now));
        assert!(a.terminating.at.is_empty());
    }

    #[test]
    fn a_first_verdict_counts_as_an_answer_after_a_restart() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        // Started at 10 s, beside a copy written at 0 by the process
        // before: this one never asked for it.
        let mut a = Asked::new(TIMEOUT, s(10));
        let old = Written {
            first: s(0),
            last: s(0),
        };
        assert_eq!(
            a.wait(old, s(11)),
            Ok(PENDING_AFTER),
            "silence counts from the start"
        );
        a.answered("synced-long-ago", false, s(12));
        assert_eq!(
            a.last_answer,
            Some(s(10)),
            "a verdict already shown is no answer"
        );
        a.answered("new-object", true, s(14));
        assert_eq!(a.wait(old, s(18)), Ok(PENDING_AFTER));
        assert_eq!(a.wait(old, s(19)), Err(Late::Quiet));
        // Restarted with rotated credentials at 30 s: silence counts anew.
        a.controllers_started(s(30));
        assert_eq!(a.wait(old, s(34)), Ok(PENDING_AFTER));
    }

    #[test]
    fn a_copy_is_late_when_the_manager_is_quiet_or_at_the_timeout() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut a = Asked::new(TIMEOUT, t0);
        for (name, at) in [("first", 0), ("ours", 1), ("later", 8)] {
            a.at.put(name, s(at), a.forget);
        }
        let ours = a.at.at["ours"];
        // Within 5 s of our write: wait the rest, whatever the manager.
        assert_eq!(a.wait(ours, s(3)), Ok(Duration::from_secs(3)));
        // Nothing answered since the start: quiet, late.
        assert_eq!(a.wait(ours, s(6)), Err(Late::Quiet));
        // The manager answers our writes, in any order: not late.
        a.answered("later", false, s(9));
        assert_eq!(a.wait(ours, s(12)), Ok(PENDING_AFTER));
        a.answered("first", false, s(13));
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
        let mut a = Asked::new(TIMEOUT, t0);
        let mut now = t0;
        // Rewritten every 2 s (each write restarts the 5 s) while the
        // manager answers others: the timeout runs from the first write.
        while now < t0 + TIMEOUT {
            a.at.put("ours", now, a.forget);
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
        s.put("x", t0, ASKED_FORGET);
        s.put("x", later, ASKED_FORGET);
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
        s.put("new", much_later, ASKED_FORGET);
        let mut left: Vec<&String> = s.at.keys().collect();
        left.sort();
        assert_eq!(left, ["new", "x"]);
        assert_eq!(s.purge_above, ASKED_PURGE_ABOVE);
        // A timeout past ASKED_FORGET is remembered past too.
        let hour = Duration::from_secs(3600);
        assert_eq!(Asked::new(hour, t0).forget, hour + PENDING_AFTER);
    }
}
