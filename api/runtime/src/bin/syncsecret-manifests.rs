//! Writes the generated YAML (`config/...`) from the Rust types.
//!
//! Usage: `syncsecret-manifests [ROOT]` (default: the repository this binary
//! was built from).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."));
    let files = match syncsecret_runtime::generate::manifests::generated(&root) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for (path, content) in files {
        let dest = root.join(&path);
        let written = dest
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&dest, content));
        if let Err(e) = written {
            eprintln!("error: cannot write {}: {e}", dest.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
