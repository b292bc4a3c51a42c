//! Kubernetes clients from flags.

use std::path::Path;

use std::path::PathBuf;
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use kube::client::retry::RetryPolicy;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::sync::watch;

use crate::error::RuntimeError;
use crate::reconcile::Scoped;

/// The longest any one read from an API server may take. kube sets none, so
/// a request whose connection silently died (an API server killed during a
/// restart, a dropped NAT entry) would wait forever; the chaos run saw a
/// watch stall for minutes after an API server restart. Watches are closed
/// by the server every [`crate::cache::watch::WATCH_TIMEOUT_SECS`] (and carry
/// bookmarks), so a healthy one never waits this long.
pub const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn bounded(mut config: Config) -> Config {
    config.read_timeout = Some(READ_TIMEOUT);
    // kube retries a 429, 503 or 504 by itself, silently, up to 15 times
    // with a delay doubling from 5 ms to 1000 s: minutes in which a
    // reconcile holds its slot and says nothing. An API server that is
    // shutting down answers 503 to everything. Our callers retry
    // themselves, visibly: a reconcile fails with the API server's
    // message, says so in a status and an event, and is requeued with its
    // own backoff; watches have theirs.
    config.default_retry = false;
    config
}

/// A client for `config`, built as kube builds one (connect, read and
/// write timeouts; base URI, kube's retries if `default_retry`,
/// credentials, extra headers) except that its connections send each
/// write at once (`TCP_NODELAY`, as Go's clients do). kube leaves Nagle's
/// algorithm on: a request written while the API server has not yet
/// acknowledged our previous segment (say, the last message of a TLS
/// handshake, whose ACK the server holds back to send with an answer)
/// waits for Linux's delayed ACK, up to 40 ms.
///
/// Left out of kube's stack: its request spans and the ERROR line it logs
/// for each 5xx or failed connection (the controllers report a failed
/// request themselves, with what it was for), and the expiry of an exec
/// plugin's client certificate (`Client::valid_until`), which nothing
/// here reads. A proxy is refused, as kube built without a proxy feature
/// refuses one, but without quoting its URL (it may carry a password).
pub fn build(config: Config) -> Result<Client, kube::Error> {
    if config.proxy_url.is_some() {
        return Err(kube::Error::Service(
            "the kubeconfig names a proxy (proxy-url), which this build cannot use; \
             reach the API server directly"
                .into(),
        ));
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let mut connector =
        hyper_timeout::TimeoutConnector::new(config.rustls_https_connector_with_connector(http)?);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let http: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
    let retry = config
        .default_retry
        .then(|| tower::retry::RetryLayer::new(RetryPolicy::server_retry()));
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(retry)
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(http);
    Ok(Client::new(service, config.default_namespace))
}

/// A client from an explicit kubeconfig file.
pub async fn from_file(path: &Path) -> Result<Client, RuntimeError> {
    let err = |message: String| RuntimeError::Kubeconfig {
        path: path.to_owned(),
        message,
    };
    let kc = Kubeconfig::read_from(path).map_err(|e| err(without_content(&e)))?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| err(without_content(&e)))?;
    build(bounded(config)).map_err(|e| err(without_content(&e)))
}

/// A kubeconfig error without the file's content: the YAML parser prints
/// the lines around a syntax error (a token, a key) and quotes a value of
/// the wrong type. Its first line, with every quoted part left out.
fn without_content(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    let mut out = String::with_capacity(first.len());
    let mut quoted = false;
    for c in first.chars() {
        if c == '"' {
            if !quoted {
                out.push_str("(not shown)");
            }
            quoted = !quoted;
        } else if !quoted {
            out.push(c);
        }
    }
    out
}

/// A client for the cluster the process runs in: the kubeconfig named by
/// `flag` if given; else the in-cluster service account; else `KUBECONFIG`
/// (or `~/.kube/config`).
pub async fn from_flag_or_environment(
    path: Option<&Path>,
    flag: &'static str,
) -> Result<Client, RuntimeError> {
    if let Some(p) = path {
        return from_file(p).await;
    }
    let config = match Config::incluster() {
        Ok(c) => c,
        Err(in_cluster) => Config::from_kubeconfig(&KubeConfigOptions::default())
            .await
            .map_err(|e| RuntimeError::NoConfig {
                flag,
                message: format!(
                    "not in a cluster ({in_cluster}) and no usable kubeconfig ({})",
                    without_content(&e)
                ),
            })?,
    };
    build(bounded(config)).map_err(|e| RuntimeError::NoConfig {
        flag,
        message: e.to_string(),
    })
}

/// How often a [`Reloading`] kubeconfig file is read for a replacement.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// A client from a kubeconfig file that is rebuilt whenever the file's
/// content changes: a rotated identity or token written over it in place,
/// or a Secret volume the kubelet updated (an atomic symlink swap, which is
/// why the file is read on a timer rather than watched with inotify). A
/// replacement that cannot be used (half written, bad YAML, a missing
/// certificate file) is logged once and the previous client kept, so a
/// rotation in progress never stops a controller.
#[derive(Clone)]
pub struct Reloading {
    current: watch::Receiver<Client>,
    _poll: std::sync::Arc<Scoped>,
}

impl Reloading {
    /// The client from `path` as it is now (an error if it is unusable, as
    /// [`from_file`]), then re-read every [`RELOAD_EVERY`].
    pub async fn from_file(path: &Path) -> Result<Self, RuntimeError> {
        let read = std::fs::read(path).map_err(|e| RuntimeError::Kubeconfig {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let client = from_file(path).await?;
        let (tx, rx) = watch::channel(client);
        let poll = Scoped::spawn(follow(path.to_owned(), read, tx));
        Ok(Self {
            current: rx,
            _poll: std::sync::Arc::new(poll),
        })
    }

    /// The client from the file's latest usable content.
    pub fn current(&self) -> Client {
        self.current.borrow().clone()
    }

    /// A receiver that sees each new client (`changed()` resolves once the
    /// file's content has changed and the new client is built).
    pub fn subscribe(&self) -> watch::Receiver<Client> {
        self.current.clone()
    }
}

/// Re-reads `path` every [`RELOAD_EVERY`]; sends a new client when its
/// content changed and is usable. Never logs the content (it holds
/// credentials).
async fn follow(path: PathBuf, mut loaded: Vec<u8>, tx: watch::Sender<Client>) {
    // The content last refused (or the read error), so that each is
    // logged once, not every few seconds.
    let mut refused: Option<Result<Vec<u8>, String>> = None;
    loop {
        tokio::time::sleep(RELOAD_EVERY).await;
        // A few KiB from a local file: not worth a blocking-pool hop.
        let now = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) => {
                let e = e.to_string();
                if refused.as_ref() != Some(&Err(e.clone())) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read the kubeconfig; keeping the credentials loaded before");
                    refused = Some(Err(e));
                }
                continue;
            }
        };
        if now == loaded || refused.as_ref() == Some(&Ok(now.clone())) {
            continue;
        }
        match from_file(&path).await {
            Ok(client) => {
                tracing::info!(path = %path.display(), "kubeconfig replaced; using its credentials from now on");
                loaded = now;
                refused = None;
                tx.send_replace(client);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "kubeconfig replaced by one that cannot be used; keeping the credentials loaded before");
                refused = Some(Ok(now));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client of `build` against a loopback server that answers one
    /// request: it arrives with the kubeconfig's token and impersonation,
    /// as from kube's own builder.
    #[tokio::test]
    async fn a_built_client_sends_the_credentials_and_headers_it_is_given() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            let body = r#"{"major":"1","minor":"37","gitVersion":"v1.37.2","gitCommit":"","gitTreeState":"","buildDate":"","goVersion":"","compiler":"","platform":""}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&head).to_lowercase()
        });
        let mut config = Config::new(url.parse().unwrap());
        config.auth_info.token = Some("a-token".to_owned().into());
        config.auth_info.impersonate = Some("someone".to_owned());
        config.auth_info.impersonate_groups = Some(vec!["a-group".to_owned()]);
        let client = build(bounded(config)).unwrap();
        assert_eq!(
            client.apiserver_version().await.unwrap().git_version,
            "v1.37.2"
        );
        let head = server.await.unwrap();
        assert!(head.starts_with("get /version "), "{head}");
        for header in [
            "authorization: bearer a-token\r\n",
            "impersonate-user: someone\r\n",
            "impersonate-group: a-group\r\n",
        ] {
            assert!(head.contains(header), "no {header:?} in {head}");
        }
    }

    #[test]
    fn a_proxy_is_refused_without_its_url() {
        let mut config = Config::new("https://127.0.0.1:1".parse().unwrap());
        config.proxy_url = Some("http://user:PROXY-PASSWORD@proxy:3128".parse().unwrap());
        let Err(e) = build(config) else {
            panic!("a proxy was accepted");
        };
        let e = e.to_string();
        assert!(e.contains("proxy-url"), "{e}");
        assert!(!e.contains("PROXY-PASSWORD"), "{e}");
    }

    #[tokio::test]
    async fn a_broken_kubeconfig_is_reported_without_its_content() {
        let dir = std::env::temp_dir().join(format!("kubeconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, body) in [
            // A syntax error next to a token: the parser quotes the lines.
            (
                "indent",
                "apiVersion: v1\nkind: Config\nusers:\n- name: u\n  user:\n    token: SECRET-TOKEN-VALUE\n   bad: indent\n",
            ),
            // A value of the wrong type: the parser quotes the value.
            (
                "type",
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n    insecure-skip-tls-verify: SECRET-TOKEN-VALUE\n",
            ),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, body).unwrap();
            let Err(e) = from_file(&path).await else {
                panic!("{name}: a broken kubeconfig was accepted");
            };
            let said = crate::error::report(&e);
            assert!(said.contains(&path.display().to_string()), "{name}: {said}");
            assert!(!said.contains("SECRET-TOKEN-VALUE"), "{name}: {said}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
