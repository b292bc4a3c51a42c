//! The admin HTTP server: `/metrics` (Prometheus text), `/healthz` and
//! `/readyz`. Both listen addresses (metrics, probes) serve every path.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;

use super::RuntimeError;
use super::health::Health;

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

/// Serves `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: AdminState) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&req, &state)) }
            });
            // A client hanging up mid-request is not our problem.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
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
