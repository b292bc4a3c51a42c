//! The manager's errors, named after the step that failed. Messages carry
//! the API server's words (see `syncsecret_runtime::explain`) and never a payload.

use syncsecret_runtime::RuntimeError;
use syncsecret_runtime::reconcile::{FinalizerError, Outcome};

/// What stops the manager from starting or running on.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The plumbing failed (flags, kubeconfig, lease, metrics).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A flag's value is refused (before any cluster is touched).
    #[error("{flag}: {why}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// Why, and what to do.
        why: String,
    },
}

/// What went wrong in one reconcile: a failure the copy's status, the
/// tenant's and the events show.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Adding or removing the cleanup finalizer failed.
    #[error(transparent)]
    Finalizer(#[from] FinalizerError),
    /// The copy has no UID or namespace yet.
    #[error("the copy has no UID yet")]
    NotStored,
    /// Reading the copy whole, to write its Secret, failed (the cache holds
    /// summaries without values).
    #[error("reading copy {namespace}/{name} to write its Secret")]
    ReadCopy {
        /// Namespace.
        namespace: String,
        /// Copy name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The copy cannot be read as a SyncSecret (written by hand in a shape
    /// the CRD lets through); nothing was written, its Secret is kept.
    #[error(
        "copy {namespace}/{name} cannot be read as a SyncSecret: {reason}; nothing was synced from it: fix it or delete it"
    )]
    Undecodable {
        /// Namespace.
        namespace: String,
        /// Copy name.
        name: String,
        /// Which field, and what it should be (never its value).
        reason: String,
    },
    /// Writing the Secret failed.
    #[error("applying Secret {namespace}/{name}")]
    ApplySecret {
        /// Namespace.
        namespace: String,
        /// Secret name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Deleting the Secret failed.
    #[error("deleting Secret {namespace}/{name}")]
    DeleteSecret {
        /// Namespace.
        namespace: String,
        /// Secret name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The policy refuses the copy (type, size, budget); nothing was written.
    #[error("{message}")]
    Refused {
        /// `TypeDenied`, `TooLarge` or `OverBudget`.
        reason: &'static str,
        /// Why, and what to do.
        message: String,
    },
    /// Writing the copy's status failed.
    #[error("writing status of {namespace}/{name}")]
    PatchStatus {
        /// Namespace.
        namespace: String,
        /// Copy name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// The manager never waits: deleting a Secret is done when the call is.
impl Outcome for Error {
    fn category(&self) -> &'static str {
        match self {
            Self::NotStored => "NotStored",
            Self::Finalizer(e) => e.category(),
            Self::ReadCopy { .. } => "ReadCopyFailed",
            Self::Undecodable { .. } => "Undecodable",
            Self::ApplySecret { .. } => "ApplySecretFailed",
            Self::DeleteSecret { .. } => "DeleteSecretFailed",
            Self::PatchStatus { .. } => "PatchStatusFailed",
            Self::Refused { reason, .. } => reason,
        }
    }
}

impl From<syncsecret_api::policy::Refusal> for Error {
    fn from(r: syncsecret_api::policy::Refusal) -> Self {
        Self::Refused {
            reason: r.reason,
            message: r.message,
        }
    }
}
