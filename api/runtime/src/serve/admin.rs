//! The admin HTTP server: `/metrics` (Prometheus text), `/healthz` and
//! `/readyz`. Both listen addresses (metrics, probes) serve every path.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;

use crate::error::RuntimeError;
use crate::serve::health::Health;

/// What the server answers from.
#[derive(Clone)]
pub struct AdminState {
    /// The metrics registry built in `main`.
    pub registry: Registry,
    /// Probe state.
    pub health: Arc<Health>,
}

/// Binds `addr`, so that a taken port fails at start-up with one line.
pub async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, RuntimeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RuntimeError::Bind { addr, what, source })
}

/// How long a client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection may stay open, idle or not: a scraper
/// reconnects; a client that holds connections open cannot pile them up.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Connections served at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 64;
/// The pause after a failed accept (out of file descriptors, say), so that
/// the loop does not spin on it.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves `listener` until the task is dropped. Anyone who reaches the
/// port may connect, so each connection is bounded: its headers in
/// [`HEADER_TIMEOUT`], its life in [`CONNECTION_LIFETIME`], and at most
/// [`MAX_CONNECTIONS`] at once.
pub async fn serve(listener: TcpListener, state: AdminState) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "accepting an admin connection failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&req, &state)) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            // A client hanging up mid-request, or overstaying, is not our
            // problem: the connection is dropped.
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

fn respond<B>(req: &Request<B>, state: &AdminState) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => {
            let mut out = Vec::new();
            match TextEncoder::new().encode(&state.registry.gather(), &mut out) {
                Ok(()) => text(StatusCode::OK, out),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        "/healthz" | "/livez" => match state.health.healthy() {
            Ok(()) => text(StatusCode::OK, "ok"),
            Err(why) => text(StatusCode::INTERNAL_SERVER_ERROR, why),
        },
        "/readyz" => match state.health.ready() {
            Ok(()) => text(StatusCode::OK, state.health.ready_text()),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, why),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz",
        ),
    }
}

/// Parsed listen addresses, bound: the metrics listener and the probe
/// listener (either may be disabled with `0`).
pub struct Listeners {
    listeners: Vec<TcpListener>,
}

impl Listeners {
    /// Binds both addresses now (before any cluster is touched).
    pub async fn bind(
        metrics: Option<SocketAddr>,
        probes: Option<SocketAddr>,
    ) -> Result<Self, RuntimeError> {
        let mut listeners = Vec::new();
        if let Some(a) = metrics {
            listeners.push(bind(a, "metrics").await?);
        }
        if let Some(a) = probes {
            listeners.push(bind(a, "health probes").await?);
        }
        Ok(Self { listeners })
    }

    /// Serves all of them until the returned task is aborted.
    pub fn spawn(self, state: AdminState) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let servers = self
                .listeners
                .into_iter()
                .map(|l| tokio::spawn(serve(l, state.clone())));
            futures::future::join_all(servers).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_dropped() {
        let listener = bind("127.0.0.1:0".parse().unwrap(), "metrics")
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let state = AdminState {
            registry: Registry::new(),
            health: Arc::new(Health::new()),
        };
        let server = tokio::spawn(serve(listener, state));
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        // A whole request on another connection is still answered.
        let mut fine = tokio::net::TcpStream::connect(addr).await.unwrap();
        fine.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        fine.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // The slow one is closed once its header time is up (with a
        // margin: the assertion is that it closes, not how fast).
        let mut buf = Vec::new();
        let read = tokio::time::timeout(HEADER_TIMEOUT * 3, slow.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the connection is still open");
        server.abort();
    }
}
