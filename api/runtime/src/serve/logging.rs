//! tracing set up once: human-readable by default, JSON on request. Log
//! lines carry fields (namespace, name, verb), never an object's payload.

use tracing_subscriber::EnvFilter;

use crate::error::RuntimeError;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[value(alias = "text")]
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

/// Installs the global subscriber; the level comes from `level`
/// (`--log-level`), else `RUST_LOG`, else `info`, less what [`shown`]
/// withholds. Panics are reported by where they happened only
/// ([`report_panic`]).
pub fn init(format: LogFormat, level: Option<&str>) -> Result<(), RuntimeError> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = match level {
        Some(level) => filter_of(level).map_err(RuntimeError::Logging)?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    // Colours only on a terminal: a pod's log is a file.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    let output = match format {
        LogFormat::Human => output.boxed(),
        LogFormat::Json => output.json().flatten_event(true).boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::filter::filter_fn(shown))
        .with(output)
        .try_init()
        .map_err(|e| RuntimeError::Logging(e.to_string()))?;
    std::panic::set_hook(Box::new(report_panic));
    Ok(())
}

/// The filter `--log-level` asks for: a level alone, or a filter with
/// targets as `RUST_LOG` takes it. A bare word that is no level is refused
/// (`EnvFilter` would take it for a target and log nothing of ours).
fn filter_of(level: &str) -> Result<EnvFilter, String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let bare = !level.contains(['=', ',']);
    if bare && !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
        return Err(format!(
            "--log-level {level:?}: use one of {}, or a filter such as info,syncsecret_runtime=debug",
            LEVELS.join(", ")
        ));
    }
    EnvFilter::try_new(level).map_err(|e| format!("--log-level {level:?}: {e}"))
}

/// The one target whose events quote answers: kube's client logs a whole
/// response body at WARN when it cannot decode it (a list page with every
/// object's values), and at TRACE every `Status` it receives.
const BODY_DUMPS: &str = "kube_client::client";

/// Whether an event may be logged whatever `RUST_LOG` says: none of kube's
/// client below ERROR ([`BODY_DUMPS`]; its other WARNs there are poll
/// timeouts the watch retries anyway), and no library's TRACE (HTTP
/// frames and bodies). Our own crates log fields, never values, at every
/// level.
pub fn shown(meta: &tracing::Metadata<'_>) -> bool {
    let target = meta.target();
    if target == BODY_DUMPS {
        return *meta.level() == tracing::Level::ERROR;
    }
    *meta.level() < tracing::Level::TRACE || target.starts_with("syncsecret")
}

/// A panic, reported by where it happened, not by its message: a library's
/// panic message may quote whatever it was handed.
fn report_panic(info: &std::panic::PanicHookInfo<'_>) {
    let location = info
        .location()
        .map(|l| format!("{}:{}", l.file(), l.line()))
        .unwrap_or_default();
    let thread = std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_owned();
    tracing::error!(%location, %thread, "panicked (the message is not shown: it may quote a value)");
    eprintln!(
        "panicked at {location} in thread {thread} (the message is not shown: it may quote a value)"
    );
}

#[cfg(test)]
mod tests {
    use tracing::Level;
    use tracing::callsite::Identifier;
    use tracing::field::FieldSet;
    use tracing::metadata::Kind;

    use super::*;

    #[test]
    fn a_log_level_is_a_level_or_a_filter() {
        for ok in [
            "info",
            "DEBUG",
            "off",
            "info,syncsecret_runtime=debug",
            "kube=warn",
        ] {
            assert!(filter_of(ok).is_ok(), "{ok}");
        }
        let e = filter_of("verbose").unwrap_err();
        assert!(
            e.contains("use one of off, error, warn, info, debug, trace"),
            "{e}"
        );
    }

    struct Site;
    impl tracing::Callsite for Site {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            unreachable!()
        }
    }
    static SITE: Site = Site;

    fn meta(target: &'static str, level: Level) -> tracing::Metadata<'static> {
        tracing::Metadata::new(
            "event",
            target,
            level,
            None,
            None,
            None,
            FieldSet::new(&[], Identifier(&SITE)),
            Kind::EVENT,
        )
    }

    #[test]
    fn kube_clients_body_dumps_and_library_traces_are_never_shown() {
        assert!(!shown(&meta(BODY_DUMPS, Level::WARN)));
        assert!(!shown(&meta(BODY_DUMPS, Level::TRACE)));
        assert!(shown(&meta(BODY_DUMPS, Level::ERROR)));
        assert!(!shown(&meta("hyper::proto", Level::TRACE)));
        assert!(shown(&meta("kube_runtime::controller", Level::DEBUG)));
        assert!(shown(&meta("kube_client::client::builder", Level::WARN)));
        assert!(shown(&meta("syncsecret_ccm::reconcile", Level::TRACE)));
    }
}
