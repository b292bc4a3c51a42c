//! The status the manager writes on a copy (and, later, the ccm mirrors on
//! the tenant object): phase, condition `Synced`, observedGeneration. Pure,
//! so that "write status only when it changed" is decided without a client.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use kube_core::object::HasStatus;

use crate::contract::ANNOTATION_ORIGIN_GENERATION;
use crate::labelled::{KeptOff, Labelled};
use crate::v1alpha1::{SyncSecretPhase, SyncSecretStatus};

/// The condition type both controllers write.
pub const CONDITION_SYNCED: &str = "Synced";
/// Reason of a `Synced=True` condition.
pub const REASON_SYNCED: &str = "SecretSynced";
/// Reason of a tenant object whose copy the manager has not judged yet.
pub const REASON_PENDING: &str = "Pending";

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

/// The status a tenant object shows, mirrored from its management copy:
/// the manager's phase, reason and message, and as observedGeneration the
/// tenant generation the copy holds (its `origin-generation` annotation, or
/// `holds` when the copy has none: a copy adopted from KubeLB whose content
/// the caller found equal to the tenant's current generation).
/// `None` while the manager has not judged the copy's current generation.
pub fn mirrored<K>(copy: &K, holds: Option<i64>) -> Option<SyncSecretStatus>
where
    K: Labelled + HasStatus<Status = SyncSecretStatus>,
{
    let status = copy.status()?;
    if status.observed_generation != copy.meta().generation {
        return None;
    }
    let origin_generation = copy
        .annotation(ANNOTATION_ORIGIN_GENERATION)
        .and_then(|g| g.parse::<i64>().ok())
        .or(holds);
    synced_condition(status)?;
    let conditions = status
        .conditions
        .iter()
        .flatten()
        .map(|c| Condition {
            observed_generation: origin_generation,
            message: for_tenant(&c.message),
            ..c.clone()
        })
        .collect();
    Some(SyncSecretStatus {
        observed_generation: origin_generation,
        phase: Some(status.phase?),
        conditions: Some(conditions),
    })
}

/// The message of a `Synced` copy: which Secret holds it and, when the
/// policy kept some of the tenant's labels or annotations off it, which
/// (names only, the first [`KeptOff::NAMED`] of each).
pub fn synced_message(namespace: &str, name: &str, kept_off: Option<&KeptOff>) -> String {
    let mut message = format!("Secret {namespace}/{name} is in sync");
    let Some(off) = kept_off else {
        return message;
    };
    let named = |what: &str, keys: &[String], total: usize| {
        let mut out = format!("{what} {}", keys.join(", "));
        if total > keys.len() {
            out.push_str(&format!(" and {} more", total - keys.len()));
        }
        out
    };
    let parts: Vec<String> = [
        ("labels", &off.labels, off.labels_total),
        ("annotations", &off.annotations, off.annotations_total),
    ]
    .into_iter()
    .filter(|(_, _, total)| *total > 0)
    .map(|(what, keys, total)| named(what, keys, total))
    .collect();
    if !parts.is_empty() {
        message.push_str(&format!(
            "; not copied to it (not among the manager's --allowed-metadata): {}",
            parts.join("; ")
        ));
    }
    message
}

/// The most of a management-side message a tenant object shows.
pub const MAX_MIRRORED_MESSAGE: usize = 1024;

/// What the tenant may read of a management-side message: at most
/// [`MAX_MIRRORED_MESSAGE`] bytes, and no management identity (the API
/// server's `forbidden` names the user it refused, which tells a tenant
/// whom to impersonate or phish): `User "…"` and service account names
/// are replaced by what they stand for.
pub fn for_tenant(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_MIRRORED_MESSAGE));
    let mut rest = message;
    while let Some(at) = rest.find("User \"") {
        out.push_str(&rest[..at]);
        out.push_str("User \"(a management identity)\"");
        let after = &rest[at + "User \"".len()..];
        rest = after.find('"').map_or("", |end| &after[end + 1..]);
    }
    out.push_str(rest);
    let mut out = hide_service_accounts(&out);
    if out.len() > MAX_MIRRORED_MESSAGE {
        let mut cut = MAX_MIRRORED_MESSAGE - '…'.len_utf8();
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// `system:serviceaccount:<namespace>:<name>` replaced, wherever it stands.
fn hide_service_accounts(text: &str) -> String {
    const PREFIX: &str = "system:serviceaccount:";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(PREFIX) {
        out.push_str(&rest[..at]);
        out.push_str("(a management service account)");
        let after = &rest[at + PREFIX.len()..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':')))
            .unwrap_or(after.len());
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// What a new tenant object shows until the manager has judged its copy.
pub fn pending() -> SyncSecretStatus {
    status(
        SyncSecretPhase::Pending,
        None,
        false,
        REASON_PENDING,
        "waiting for the management cluster".to_owned(),
    )
}

/// Whether a tenant object has had no verdict from the management cluster
/// yet: no status, or only the ccm's own failure to write its copy (a
/// `Failed` that holds no observedGeneration). Once its copy is written,
/// such an object waits for the manager as a new one does (and shows
/// `Pending` if that is late), rather than keep a failure that no longer
/// holds.
pub fn awaits_first_verdict(s: Option<&SyncSecretStatus>) -> bool {
    s.is_none_or(|s| s.observed_generation.is_none() && s.phase == Some(SyncSecretPhase::Failed))
}

/// The phase of a status, if any.
pub fn phase(s: Option<&SyncSecretStatus>) -> Option<SyncSecretPhase> {
    s.and_then(|s| s.phase)
}

fn synced_condition(s: &SyncSecretStatus) -> Option<&Condition> {
    s.conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == CONDITION_SYNCED)
}

/// Whether writing `desired` would change `live` (transition times aside):
/// phase, observedGeneration, and every condition's status, reason, message
/// and observedGeneration, by type.
pub fn status_differs(live: Option<&SyncSecretStatus>, desired: &SyncSecretStatus) -> bool {
    let Some(live) = live else { return true };
    let key = |s: &SyncSecretStatus| {
        let mut c: Vec<_> = s
            .conditions
            .iter()
            .flatten()
            .map(|c| {
                (
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    c.message.clone(),
                    c.observed_generation,
                )
            })
            .collect();
        c.sort();
        c
    };
    // A Synced verdict on the same generation is the same verdict, whoever
    // worded it: KubeLB's manager writes reason "Synced" and its own message
    // (adoption without a write).
    let synced_alike = |s: &SyncSecretStatus| {
        s.phase == Some(SyncSecretPhase::Synced)
            && synced_condition(s).is_some_and(|c| c.status == "True")
    };
    if live.phase == desired.phase
        && live.observed_generation == desired.observed_generation
        && synced_alike(live)
        && synced_alike(desired)
        && synced_condition(live).map(|c| c.observed_generation)
            == synced_condition(desired).map(|c| c.observed_generation)
    {
        let others = |s: &SyncSecretStatus| {
            let mut k = key(s);
            k.retain(|c| c.0 != CONDITION_SYNCED);
            k
        };
        return others(live) != others(desired);
    }
    live.phase != desired.phase
        || live.observed_generation != desired.observed_generation
        || key(live) != key(desired)
}

/// Keeps each live condition's lastTransitionTime when its status did not
/// flip, else stamps `now`.
pub fn with_transition_time(
    live: Option<&SyncSecretStatus>,
    mut desired: SyncSecretStatus,
    now: Timestamp,
) -> SyncSecretStatus {
    for c in desired.conditions.iter_mut().flatten() {
        let previous = live
            .and_then(|l| l.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|p| p.type_ == c.type_));
        c.last_transition_time = match previous {
            Some(p) if p.status == c.status => p.last_transition_time.clone(),
            _ => Time(now),
        };
    }
    desired
}

/// Condition type on a tenant object while another tenant cluster's ccm
/// writes copies under this cluster's name (in the same tenant namespace).
pub const CONDITION_CLUSTER_NAME_CONFLICT: &str = "ClusterNameConflict";

/// What every tenant object of a cluster shows while another cluster
/// claims its name: `message` says what to do.
pub fn cluster_name_conflict(message: &str, generation: Option<i64>) -> Condition {
    Condition {
        type_: CONDITION_CLUSTER_NAME_CONFLICT.to_owned(),
        status: "True".to_owned(),
        reason: CONDITION_CLUSTER_NAME_CONFLICT.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        // Filled in by `with_transition_time`.
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
    }
}

/// The cluster-name conflict condition `live` shows, if any.
pub fn shown_conflict(live: Option<&SyncSecretStatus>) -> Option<Condition> {
    live.and_then(|l| l.conditions.as_ref())?
        .iter()
        .find(|c| c.type_ == CONDITION_CLUSTER_NAME_CONFLICT)
        .cloned()
}

/// Whether `desired` says something other than `live` once the
/// cluster-name conflict condition is set aside on both: a new verdict
/// (what gets an event), not just that condition coming or going.
pub fn verdict_differs(live: Option<&SyncSecretStatus>, desired: &SyncSecretStatus) -> bool {
    let without = |s: &SyncSecretStatus| {
        let mut s = s.clone();
        if let Some(c) = s.conditions.as_mut() {
            c.retain(|c| c.type_ != CONDITION_CLUSTER_NAME_CONFLICT);
        }
        s
    };
    status_differs(live.map(without).as_ref(), &without(desired))
}

/// Adds a condition (e.g. a certificate's) to a status.
pub fn with_condition(
    mut status: SyncSecretStatus,
    condition: Option<Condition>,
) -> SyncSecretStatus {
    if let Some(c) = condition {
        status.conditions.get_or_insert_default().push(c);
    }
    status
}

#[cfg(test)]
mod mirrored_text {
    use super::*;

    #[test]
    fn a_synced_message_names_the_keys_the_policy_kept_off() {
        assert_eq!(synced_message("t", "s", None), "Secret t/s is in sync");
        let off = KeptOff {
            labels: (0..8).map(|i| format!("l{i}")).collect(),
            labels_total: 10,
            annotations: vec!["owner".to_owned()],
            annotations_total: 1,
        };
        let m = synced_message("t", "s", Some(&off));
        assert_eq!(
            m,
            "Secret t/s is in sync; not copied to it (not among the manager's --allowed-metadata): labels l0, l1, l2, l3, l4, l5, l6, l7 and 2 more; annotations owner"
        );
    }

    #[test]
    fn a_mirrored_message_names_no_management_identity_and_is_capped() {
        let forbidden = r#"secrets "x" is forbidden: User "system:serviceaccount:kubelb:syncsecret-manager" cannot create resource "secrets" in API group "" in the namespace "tenant-a""#;
        let shown = for_tenant(forbidden);
        assert_eq!(
            shown,
            r#"secrets "x" is forbidden: User "(a management identity)" cannot create resource "secrets" in API group "" in the namespace "tenant-a""#
        );
        assert_eq!(
            for_tenant("as system:serviceaccount:kubelb:mgr, then"),
            "as (a management service account), then"
        );
        let long = "é".repeat(2000);
        let capped = for_tenant(&long);
        assert!(capped.len() <= MAX_MIRRORED_MESSAGE && capped.ends_with('…'));
        assert_eq!(for_tenant("Secret a/b is in sync"), "Secret a/b is in sync");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1alpha1::SyncSecret;

    #[test]
    fn only_a_failure_before_any_verdict_still_awaits_the_first() {
        let failed = |generation| {
            status(
                SyncSecretPhase::Failed,
                generation,
                false,
                "ApplyCopyFailed",
                "exceeded quota".to_owned(),
            )
        };
        assert!(awaits_first_verdict(None));
        assert!(awaits_first_verdict(Some(&failed(None))));
        // A failure after a verdict keeps saying what the management
        // cluster last held; Pending already waits.
        assert!(!awaits_first_verdict(Some(&failed(Some(1)))));
        assert!(!awaits_first_verdict(Some(&pending())));
    }

    #[test]
    fn a_synced_verdict_worded_otherwise_is_no_change() {
        let kubelb = status(
            SyncSecretPhase::Synced,
            Some(4),
            true,
            "Synced",
            "Secret synced successfully".into(),
        );
        let ours = status(
            SyncSecretPhase::Synced,
            Some(4),
            true,
            REASON_SYNCED,
            "Secret x/y is in sync".into(),
        );
        assert!(!status_differs(Some(&kubelb), &ours));
        let newer = status(
            SyncSecretPhase::Synced,
            Some(5),
            true,
            REASON_SYNCED,
            "Secret x/y is in sync".into(),
        );
        assert!(status_differs(Some(&kubelb), &newer));
        let failed = status(SyncSecretPhase::Failed, Some(4), false, "X", "y".into());
        assert!(status_differs(Some(&kubelb), &failed));
    }

    #[test]
    fn tenant_mirrors_a_current_verdict_with_its_own_generation() {
        let mut copy = SyncSecret::default();
        copy.metadata.generation = Some(3);
        copy.metadata.annotations =
            Some([(ANNOTATION_ORIGIN_GENERATION.to_owned(), "5".to_owned())].into());
        assert_eq!(mirrored(&copy, None), None, "no verdict yet");
        copy.status = Some(status(
            SyncSecretPhase::Synced,
            Some(2),
            true,
            REASON_SYNCED,
            "old".into(),
        ));
        assert_eq!(
            mirrored(&copy, None),
            None,
            "verdict on an older generation of the copy"
        );
        copy.status = Some(status(
            SyncSecretPhase::Failed,
            Some(3),
            false,
            "ApplySecretFailed",
            "denied".into(),
        ));
        let m = mirrored(&copy, None).unwrap();
        assert_eq!(m.phase, Some(SyncSecretPhase::Failed));
        assert_eq!(m.observed_generation, Some(5));
        let c = &m.conditions.unwrap()[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.message.as_str()),
            ("False", "ApplySecretFailed", "denied")
        );
    }

    #[test]
    fn a_cluster_name_conflict_is_written_and_taken_back_once() {
        let t0: Timestamp = "2026-12-02T08:00:00Z".parse().unwrap();
        let synced = || {
            status(
                SyncSecretPhase::Synced,
                Some(3),
                true,
                REASON_SYNCED,
                "ok".into(),
            )
        };
        let plain = with_transition_time(None, synced(), t0);
        let conflict = || {
            with_condition(
                synced(),
                Some(cluster_name_conflict("two clusters", Some(3))),
            )
        };
        assert!(status_differs(Some(&plain), &conflict()));
        let told = with_transition_time(Some(&plain), conflict(), t0);
        assert!(!status_differs(Some(&told), &conflict()));
        assert!(status_differs(Some(&told), &synced()));
        // What a restarted ccm keeps until its first sweep has judged.
        assert_eq!(
            shown_conflict(Some(&told)).map(|c| c.message).as_deref(),
            Some("two clusters")
        );
        assert!(shown_conflict(Some(&plain)).is_none());
        // Not a new verdict either way: no event for it.
        assert!(!verdict_differs(Some(&plain), &conflict()));
        assert!(!verdict_differs(Some(&told), &synced()));
        let failed = status(SyncSecretPhase::Failed, Some(3), false, "X", "why".into());
        assert!(verdict_differs(Some(&told), &failed));
    }

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
