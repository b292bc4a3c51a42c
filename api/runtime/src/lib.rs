//! The plumbing both controllers run, written once, and the generators of
//! everything installed beside them.
//!
//! The contract (types, naming, the pure decisions) is `syncsecret-api`;
//! what a controller decides lives in `ccm` and `manager`. This crate is
//! how they talk to clusters and to operators:
//!
//! - [`serve`]: the process: flags, logging, clients, the admin server and
//!   probes, the leader lease, shutdown.
//! - [`cache`]: what the watches keep (summaries, read leniently), our own
//!   writes not yet seen, and the triggers between caches.
//! - [`reconcile`]: what every reconcile shares: the finalizer wrapper,
//!   backoff, dry-run, status writes, events.
//! - [`metrics`]: the counters and gauges each controller exports.
//! - [`generate`]: the CRD, RBAC, admission policy, alerts and dashboards
//!   as YAML (the `syncsecret-manifests` binary writes them).

pub mod cache;
pub mod error;
pub mod generate;
pub mod metrics;
pub mod reconcile;
pub mod serve;

pub use error::{RuntimeError, explain, report, status_code, without_invalid_values};
