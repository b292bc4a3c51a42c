//! syncsecret-ccm: flags, logging, metrics registry, run (see the library).

/// jemalloc, not the platform's malloc (feature `jemalloc`, on by default):
/// see `docs/benchmarks.md`, the seventh run.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    syncsecret_api::runtime::runner::main(syncsecret_ccm::run).await
}
