//! The process both binaries are: flags and logging, Kubernetes clients,
//! the admin HTTP server with its probes, the leader lease, and shutdown on
//! SIGTERM. Nothing here reads or writes a SyncSecret; that is `cache` and
//! the controllers.

pub mod admin;
pub mod client;
pub mod flags;
pub mod health;
pub mod keepalive;
pub mod leader;
pub mod logging;
pub mod reachable;
pub mod runner;
pub mod shards;
pub mod shutdown;
