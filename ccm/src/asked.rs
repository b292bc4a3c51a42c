//! When a new object's status says `Pending`: what this process asked of
//! the manager (the copies it wrote), what the manager answered, and so
//! whether the verdict on a copy is late or only queued.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::Context;

/// How long a new object may wait for the manager's verdict before its
/// status may say `Pending`, and the lead within which the manager may
/// answer later writes of ours first.
pub(crate) const PENDING_AFTER: Duration = Duration::from_secs(5);

/// How long after this process first wrote its copy a new object shows
/// `Pending` without a verdict, however the manager answers the others:
/// far past a queue that moves, a bound for a copy the other rules miss
/// (the manager letting deleted copies go but never answering this one).
pub(crate) const PENDING_BACKSTOP: Duration = Duration::from_secs(300);

/// The copies this process wrote (by name) and not yet answered by the
/// manager, with when: a new object's `Pending` clock runs from our
/// write, not from the copy's creation (an adopted or updated copy is
/// old).
#[derive(Debug, Default)]
pub struct Asked {
    at: Since,
    /// When the manager last answered one of them.
    last_answer: Option<Instant>,
    /// When we made the latest write the manager has answered. The
    /// manager works in about the order we write, so while it answers
    /// only writes from about ours or before, ours waits its turn; once
    /// it answers one made well after ours, ours was passed over.
    newest_answered: Option<Instant>,
    /// Copies this process saw terminating (held by the manager's
    /// finalizer): only their going counts as the manager at work, not
    /// that of a copy it never held.
    terminating: Since,
}

impl Asked {
    /// The verdict on `copy` is in (see [`Context::answered`]).
    fn answered(&mut self, copy: &str, now: Instant) {
        if let Some(written) = self.at.at.remove(copy) {
            self.last_answer = Some(now);
            self.newest_answered = self.newest_answered.max(Some(written.last));
        }
    }

    /// How much longer a copy written at `written`, still without a
    /// verdict at `now`, waits before it is late; `None`: it is.
    fn wait(&self, written: Written, now: Instant) -> Option<Duration> {
        let backstop = PENDING_BACKSTOP
            .checked_sub(now.saturating_duration_since(written.first))
            .filter(|d| !d.is_zero())?;
        let waited = now.saturating_duration_since(written.last);
        if let Some(left) = PENDING_AFTER.checked_sub(waited).filter(|d| !d.is_zero()) {
            return Some(left.min(backstop));
        }
        let quiet = self
            .last_answer
            .is_none_or(|at| now.saturating_duration_since(at) >= PENDING_AFTER);
        let passed_over = self
            .newest_answered
            .is_some_and(|newest| newest.saturating_duration_since(written.last) > PENDING_AFTER);
        if quiet || passed_over {
            None
        } else {
            Some(PENDING_AFTER.min(backstop))
        }
    }

    /// See [`Context::copy_gone`].
    fn gone(&mut self, copy: &str, now: Instant) {
        self.at.at.remove(copy);
        if self.terminating.at.remove(copy).is_some() {
            self.last_answer = Some(now);
        }
    }
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
    /// `Pending`; `None`: now. It is late once it has waited
    /// [`PENDING_AFTER`] since our write and the manager has answered
    /// none of our writes (nor let a copy go) for as long, or has answered
    /// one we made more than [`PENDING_AFTER`] after it, or
    /// [`PENDING_BACKSTOP`] after our first write whatever the manager
    /// does. A copy this process did not write (it wrote it before a
    /// restart) counts as written when it was created.
    pub fn verdict_wait(&self, copy: &str, created: Option<&Time>) -> Option<Duration> {
        let now = Instant::now();
        let a = self.asked.lock().ok()?;
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

    #[test]
    fn only_a_copy_seen_terminating_counts_as_the_manager_at_work() {
        let mut a = Asked::default();
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
    fn a_copy_is_late_when_the_manager_is_quiet_or_has_passed_it_over() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut a = Asked::default();
        for (name, at) in [("first", 0), ("ours", 1), ("close", 4), ("after", 8)] {
            a.at.put(name, s(at));
        }
        let ours = a.at.at["ours"];
        // Within 5 s of our write: wait the rest, whatever the manager.
        assert_eq!(a.wait(ours, s(3)), Some(Duration::from_secs(3)));
        // Never answered anything: quiet, late.
        assert_eq!(a.wait(ours, s(6)), None);
        // A queue that moves through writes from before ours and about
        // ours, answered out of order: not late.
        a.answered("close", s(9));
        a.answered("first", s(11));
        assert_eq!(a.newest_answered, Some(s(4)), "the latest write answered");
        assert_eq!(a.wait(ours, s(12)), Some(PENDING_AFTER));
        // The manager answered a write made 7 s after ours: passed over.
        a.answered("after", s(13));
        assert_eq!(a.wait(ours, s(14)), None);
        let close = Written {
            first: s(4),
            last: s(4),
        };
        assert_eq!(a.wait(close, s(14)), Some(PENDING_AFTER), "4 s lead");
        // Quiet for 5 s: late, whoever was answered.
        assert_eq!(a.wait(close, s(18)), None);
    }

    #[test]
    fn a_copy_rewritten_again_and_again_is_late_at_the_backstop() {
        let t0 = Instant::now();
        let mut a = Asked::default();
        let mut now = t0;
        // Rewritten every 2 s (each write restarts the 5 s) while the
        // manager answers others: the backstop runs from the first write.
        while now < t0 + PENDING_BACKSTOP {
            a.at.put("ours", now);
            a.last_answer = Some(now);
            assert!(a.wait(a.at.at["ours"], now).is_some(), "{:?}", now - t0);
            now += Duration::from_secs(2);
        }
        let w = a.at.at["ours"];
        assert_eq!(w.first, t0);
        assert_eq!(a.wait(w, now), None);
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
