//! tracing set up once: human-readable by default, JSON on request. Log
//! lines carry fields (namespace, name, verb), never an object's payload.

use tracing_subscriber::EnvFilter;

use super::RuntimeError;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    Human,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "human" | "text" => Ok(Self::Human),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format {other:?}: use human or json")),
        }
    }
}

/// Installs the global subscriber; the level comes from `RUST_LOG`
/// (default `info`).
pub fn init(format: LogFormat) -> Result<(), RuntimeError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| RuntimeError::Logging(e.to_string()))
}
