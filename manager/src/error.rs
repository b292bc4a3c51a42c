//! The manager's errors, named after the step that failed. Messages carry
//! the API server's words (see `runtime::explain`) and never a payload.

use kube::runtime::finalizer;
use syncsecret_api::runtime::{RuntimeError, explain};

/// What went wrong in one reconcile, or at start-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The plumbing failed (flags, kubeconfig, lease, metrics).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The copy has no UID or namespace yet.
    #[error("the copy has no UID yet")]
    NotStored,
    /// Adding the cleanup finalizer to the copy failed.
    #[error("adding finalizer to {namespace}/{name}: {}", explain(.source))]
    AddFinalizer {
        /// Namespace.
        namespace: String,
        /// Copy name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Removing the cleanup finalizer from the copy failed.
    #[error("removing finalizer from {namespace}/{name}: {}", explain(.source))]
    RemoveFinalizer {
        /// Namespace.
        namespace: String,
        /// Copy name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Writing the Secret failed.
    #[error("applying Secret {namespace}/{name}: {}", explain(.source))]
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
    #[error("deleting Secret {namespace}/{name}: {}", explain(.source))]
    DeleteSecret {
        /// Namespace.
        namespace: String,
        /// Secret name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Writing the copy's status failed.
    #[error("writing status of {namespace}/{name}: {}", explain(.source))]
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

impl Error {
    /// A bounded name for status reasons, event reasons and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Runtime(_) => "Runtime",
            Self::NotStored => "NotStored",
            Self::AddFinalizer { .. } => "AddFinalizerFailed",
            Self::RemoveFinalizer { .. } => "RemoveFinalizerFailed",
            Self::ApplySecret { .. } => "ApplySecretFailed",
            Self::DeleteSecret { .. } => "DeleteSecretFailed",
            Self::PatchStatus { .. } => "PatchStatusFailed",
        }
    }

    /// Unwraps kube-runtime's finalizer error into ours.
    pub fn from_finalizer(e: finalizer::Error<Error>, namespace: &str, name: &str) -> Self {
        match e {
            finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
            finalizer::Error::AddFinalizer(source) => Self::AddFinalizer {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                source,
            },
            finalizer::Error::RemoveFinalizer(source) => Self::RemoveFinalizer {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                source,
            },
            finalizer::Error::UnnamedObject | finalizer::Error::InvalidFinalizer => Self::NotStored,
        }
    }
}
