//! The ccm's errors, named after the step that failed. Messages carry the
//! API server's words (see `syncsecret_runtime::explain`) and never a payload.

use syncsecret_runtime::RuntimeError;
use syncsecret_runtime::reconcile::{FinalizerError, Outcome};

/// What stops the ccm from starting or running on.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The plumbing failed (flags, kubeconfig, lease, metrics).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Reading the tenant cluster's identity (its kube-system namespace's
    /// UID, stamped on every copy) failed, at start.
    #[error(
        "reading namespace kube-system in the tenant cluster (its UID tells this cluster's copies from another's)"
    )]
    ClusterIdentity(#[source] kube::Error),
    /// `--check-management-access`: the management identity may not list
    /// SyncSecrets in its tenant namespace.
    #[error(
        "listing SyncSecrets in namespace {namespace} of the management cluster as the identity of --kubelb-kubeconfig"
    )]
    ManagementAccess {
        /// The tenant namespace.
        namespace: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// What went wrong in one reconcile: a failure the object's status and
/// events show, or a wait.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Adding or removing the cleanup finalizer failed.
    #[error(transparent)]
    Finalizer(#[from] FinalizerError),
    /// The object has no UID or namespace yet.
    #[error("the object has no UID yet")]
    NotStored,
    /// Writing the copy in the management cluster failed.
    #[error("applying copy {namespace}/{name} in the management cluster")]
    ApplyCopy {
        /// Management namespace.
        namespace: String,
        /// Copy name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Reading the tenant object whole, to write its copy, failed (the
    /// cache holds summaries without values).
    #[error("reading {namespace}/{name} in the tenant cluster to copy it")]
    ReadObject {
        /// Tenant namespace.
        namespace: String,
        /// Tenant name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The tenant object cannot be read as a SyncSecret (a shape the CRD in
    /// the tenant cluster lets through); nothing was written for it, and
    /// a copy made of an earlier version is kept.
    #[error(
        "{namespace}/{name} cannot be read as a SyncSecret: {reason}; nothing was synced from it: fix it or delete it"
    )]
    Undecodable {
        /// Tenant namespace.
        namespace: String,
        /// Tenant name.
        name: String,
        /// Which field, and what it should be (never its value).
        reason: String,
    },
    /// Reading or deleting the copy in the management cluster failed.
    #[error("deleting copy {namespace}/{name} in the management cluster")]
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
    /// Writing the tenant object's status failed.
    #[error("writing status of {namespace}/{name} in the tenant cluster")]
    PatchStatus {
        /// Tenant namespace.
        namespace: String,
        /// Tenant name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Writing a SyncSecret for a labelled Secret failed.
    #[error("applying SyncSecret {namespace}/{name} for its Secret")]
    ApplySyncSecret {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Releasing our finalizer from a Secret no longer labelled for
    /// syncing failed.
    #[error("releasing the finalizer of Secret {namespace}/{name}, no longer labelled for syncing")]
    ReleaseSecret {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Deleting the SyncSecret of a deleted Secret failed.
    #[error("deleting SyncSecret {namespace}/{name} of a deleted Secret")]
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

impl Outcome for Error {
    fn category(&self) -> &'static str {
        match self {
            Self::NotStored => "NotStored",
            Self::Finalizer(e) => e.category(),
            Self::ReadObject { .. } => "ReadFailed",
            Self::Undecodable { .. } => "Undecodable",
            Self::ApplyCopy { .. } => "ApplyCopyFailed",
            Self::DeleteCopy { .. } => "DeleteCopyFailed",
            Self::CopyTerminating { .. } => "WaitingForCopyDeletion",
            Self::PatchStatus { .. } => "PatchStatusFailed",
            Self::ApplySyncSecret { .. } => "ApplySyncSecretFailed",
            Self::DeleteSyncSecret { .. } => "DeleteSyncSecretFailed",
            Self::ReleaseSecret { .. } => "ReleaseSecretFailed",
        }
    }

    fn is_wait(&self) -> bool {
        matches!(self, Self::CopyTerminating { .. })
    }
}
