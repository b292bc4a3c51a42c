//! syncsecret-ccm: flags, logging, metrics registry, run (see the library).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    syncsecret_api::runtime::runner::main(syncsecret_ccm::run).await
}
