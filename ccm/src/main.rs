//! syncsecret-ccm: flags, logging, metrics registry, run (see the library).

/// jemalloc, not the platform's malloc (feature `jemalloc`, on by default):
/// glibc's per-thread arenas kept freed cache memory (docs/benchmarks.md).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    syncsecret_runtime::serve::runner::main(syncsecret_ccm::run).await
}
