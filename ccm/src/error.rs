//! The ccm's errors, named after the step that failed. Messages carry the
//! API server's words (see `runtime::explain`) and never a payload.

use kube::runtime::finalizer;
use syncsecret_api::runtime::{RuntimeError, explain};

/// What went wrong in one reconcile, or at start-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The plumbing failed (flags, kubeconfig, lease, metrics).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The object has no UID or namespace yet.
    #[error("the object has no UID yet")]
    NotStored,
    /// Adding the cleanup finalizer to the tenant object failed.
    #[error("adding finalizer to {namespace}/{name} in the tenant cluster: {}", explain(.source))]
    AddFinalizer {
        /// Tenant namespace.
        namespace: String,
        /// Tenant name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Removing the cleanup finalizer from the tenant object failed.
    #[error("removing finalizer from {namespace}/{name} in the tenant cluster: {}", explain(.source))]
    RemoveFinalizer {
        /// Tenant namespace.
        namespace: String,
        /// Tenant name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Writing the copy in the management cluster failed.
    #[error("applying copy {namespace}/{name} in the management cluster: {}", explain(.source))]
    ApplyCopy {
        /// Management namespace.
        namespace: String,
        /// Copy name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Reading or deleting the copy in the management cluster failed.
    #[error("deleting copy {namespace}/{name} in the management cluster: {}", explain(.source))]
    DeleteCopy {
        /// Management namespace.
        namespace: String,
        /// Copy name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The copy is being deleted and still exists (the manager's finalizer
    /// holds it until its Secret is gone); not a failure, a wait.
    #[error("waiting for copy {namespace}/{name} to be deleted in the management cluster")]
    CopyTerminating {
        /// Management namespace.
        namespace: String,
        /// Copy name.
        name: String,
    },
    /// Writing a SyncSecret for a labelled Secret failed.
    #[error("applying SyncSecret {namespace}/{name} for its Secret: {}", explain(.source))]
    ApplySyncSecret {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Deleting the SyncSecret of a deleted Secret failed.
    #[error("deleting SyncSecret {namespace}/{name} of a deleted Secret: {}", explain(.source))]
    DeleteSyncSecret {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// A bounded name for event reasons and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Runtime(_) => "Runtime",
            Self::NotStored => "NotStored",
            Self::AddFinalizer { .. } => "AddFinalizerFailed",
            Self::RemoveFinalizer { .. } => "RemoveFinalizerFailed",
            Self::ApplyCopy { .. } => "ApplyCopyFailed",
            Self::DeleteCopy { .. } => "DeleteCopyFailed",
            Self::CopyTerminating { .. } => "WaitingForCopyDeletion",
            Self::ApplySyncSecret { .. } => "ApplySyncSecretFailed",
            Self::DeleteSyncSecret { .. } => "DeleteSyncSecretFailed",
        }
    }

    /// Whether this is a wait rather than a failure.
    pub fn is_wait(&self) -> bool {
        matches!(self, Self::CopyTerminating { .. })
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
