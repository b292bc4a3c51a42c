//! The status the manager writes on a copy (and, later, the ccm mirrors on
//! the tenant object): phase, condition `Synced`, observedGeneration. Pure,
//! so that "write status only when it changed" is decided without a client.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::v1alpha1::{SyncSecretPhase, SyncSecretStatus};

/// The condition type both controllers write.
pub const CONDITION_SYNCED: &str = "Synced";
/// Reason of a `Synced=True` condition.
pub const REASON_SYNCED: &str = "SecretSynced";
/// Reason while the object is being deleted.
pub const REASON_TERMINATING: &str = "Terminating";

/// A status: phase, one `Synced` condition, observedGeneration.
pub fn status(
    phase: SyncSecretPhase,
    generation: Option<i64>,
    synced: bool,
    reason: &str,
    message: String,
) -> SyncSecretStatus {
    SyncSecretStatus {
        observed_generation: generation,
        phase: Some(phase),
        conditions: Some(vec![Condition {
            type_: CONDITION_SYNCED.to_owned(),
            status: if synced { "True" } else { "False" }.to_owned(),
            reason: reason.to_owned(),
            message,
            observed_generation: generation,
            // Filled in by `with_transition_time`.
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
        }]),
    }
}

fn synced_condition(s: &SyncSecretStatus) -> Option<&Condition> {
    s.conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == CONDITION_SYNCED)
}

/// Whether writing `desired` would change `live` (transition times aside).
pub fn status_differs(live: Option<&SyncSecretStatus>, desired: &SyncSecretStatus) -> bool {
    let Some(live) = live else { return true };
    let same_condition = match (synced_condition(live), synced_condition(desired)) {
        (Some(a), Some(b)) => {
            a.status == b.status
                && a.reason == b.reason
                && a.message == b.message
                && a.observed_generation == b.observed_generation
        }
        (None, None) => true,
        _ => false,
    };
    !(same_condition
        && live.phase == desired.phase
        && live.observed_generation == desired.observed_generation)
}

/// Keeps the live condition's lastTransitionTime when its status did not
/// flip, else stamps `now`.
pub fn with_transition_time(
    live: Option<&SyncSecretStatus>,
    mut desired: SyncSecretStatus,
    now: Timestamp,
) -> SyncSecretStatus {
    let previous = live.and_then(synced_condition).cloned();
    for c in desired.conditions.iter_mut().flatten() {
        c.last_transition_time = match &previous {
            Some(p) if p.status == c.status => p.last_transition_time.clone(),
            _ => Time(now),
        };
    }
    desired
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_verdict_is_no_change_and_keeps_its_transition_time() {
        let t0: Timestamp = "2026-11-23T08:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-11-23T09:00:00Z".parse().unwrap();
        let first = with_transition_time(
            None,
            status(
                SyncSecretPhase::Synced,
                Some(1),
                true,
                REASON_SYNCED,
                "ok".into(),
            ),
            t0,
        );
        let again = status(
            SyncSecretPhase::Synced,
            Some(1),
            true,
            REASON_SYNCED,
            "ok".into(),
        );
        assert!(!status_differs(Some(&first), &again));
        let newer = status(
            SyncSecretPhase::Synced,
            Some(2),
            true,
            REASON_SYNCED,
            "ok".into(),
        );
        assert!(status_differs(Some(&first), &newer));
        let stamped = with_transition_time(Some(&first), newer, t1);
        assert_eq!(
            stamped.conditions.unwrap()[0].last_transition_time,
            Time(t0)
        );

        let failed = status(
            SyncSecretPhase::Failed,
            Some(2),
            false,
            "ApplySecretFailed",
            "forbidden".into(),
        );
        assert!(status_differs(Some(&first), &failed));
        let stamped = with_transition_time(Some(&first), failed, t1);
        assert_eq!(
            stamped.conditions.unwrap()[0].last_transition_time,
            Time(t1)
        );
        assert!(status_differs(None, &again));
    }
}
