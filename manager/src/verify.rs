//! What lands is what was sent: after each write the manager compares the
//! SHA-256 of the type and data it meant to write with what the API server
//! stored. An admission plugin (mutating webhook, MutatingAdmissionPolicy,
//! policy engine) that changed it is reported, naming keys only.

use k8s_openapi::api::core::v1::Secret;
use prometheus::{IntCounterVec, Opts, Registry};
use syncsecret_api::payload::Payload;

use crate::Error;

/// `<prefix>_write_verify_failures_total{namespace}`.
#[derive(Clone)]
pub struct VerifyFailures(IntCounterVec);

impl VerifyFailures {
    /// Registers the counter.
    pub fn register(prefix: &str, registry: &Registry) -> Result<Self, prometheus::Error> {
        let c = IntCounterVec::new(
            Opts::new(
                format!("{prefix}_write_verify_failures_total"),
                "Writes whose stored content differed from what was written (changed on admission), by namespace.",
            ),
            &["namespace"],
        )?;
        registry.register(Box::new(c.clone()))?;
        Ok(Self(c))
    }

    /// Compares what was meant with what the API server returned.
    pub fn check(&self, namespace: &str, intended: &Secret, stored: &Secret) -> Result<(), Error> {
        // The namespace's series exists (at zero) from its first verified
        // write, so that `increase()` sees the first failure too.
        let failures = self.0.with_label_values(&[namespace]);
        let want = Payload::of_secret(intended).digested();
        let have = Payload::of_secret(stored).digested();
        if want == have {
            return Ok(());
        }
        failures.inc();
        let mut changed = want.changed_keys(&have);
        if want.type_ != have.type_ {
            changed.push("(type)".to_owned());
        }
        Err(Error::Refused {
            reason: "MutatedOnWrite",
            message: format!(
                "the API server stored Secret {namespace}/{} with other content than written: keys {} were changed on admission (a mutating webhook or admission policy); the tenant's data was not delivered as sent",
                intended.metadata.name.as_deref().unwrap_or_default(),
                syncsecret_api::quote::names(&changed)
            ),
        })
    }
}
