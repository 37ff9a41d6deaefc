//! The operations surface: Prometheus metrics, health probes and the admin
//! API, served over HTTP on loopback and HTTPS (the gateway's certificate)
//! beyond it. docs/OPERATIONS.md is the operator's guide.
//!
//! A thin shell around the hub: handlers read live state (registry, groups)
//! or the store (bounded queries, on the blocking pool, one lock at a time
//! so that an SOS waiting to be stored never waits behind a listing), and
//! actions go through the same operations the protocol uses. Every action
//! is written to the admin audit table with the operator who took it.
//!
//! Bounds: at most [`MAX_CONNECTIONS`] HTTP connections at once, a request
//! header within [`HEADER_TIMEOUT`], a TLS handshake within the same; list
//! answers are capped (`limit`, at most [`api::MAX_LIMIT`] rows).

mod api;
mod console;
mod exposition;
mod token;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::hub::Hub;

pub use console::hash_password;
pub use token::{Error as TokenError, Tokens};

/// HTTP connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// Time for a TLS handshake and for a request's header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the operations surface could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TCP address could not be bound.
    #[error("binding the operations surface on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The operator token file.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The certificate could not serve HTTPS.
    #[error("HTTPS with the gateway's certificate: {0}")]
    Tls(#[from] rustls::Error),
}

/// A bound operations surface, ready for [`crate::Gateway::serve_http`].
pub struct Listener {
    tcp: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    tokens: Tokens,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("addr", &self.tcp.local_addr().ok())
            .field("https", &self.tls.is_some())
            .finish()
    }
}

impl Listener {
    /// Binds `config.listen`: plain HTTP on a loopback address, HTTPS with
    /// the certificate `id` otherwise. Loads the operator tokens (creating
    /// the file under `data_dir` on first start).
    pub async fn bind(
        config: &crate::config::Http,
        data_dir: &Path,
        id: &crate::tls::Identity,
    ) -> Result<Listener, Error> {
        let path = config.token_path(data_dir);
        let (tokens, created) = Tokens::load_or_create(&path)?;
        if created {
            tracing::warn!(file = %path.display(), "created an operator token for the admin API");
        }
        let tls = if config.listen.ip().is_loopback() {
            None
        } else {
            let tls =
                rustls::ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
                    .with_no_client_auth()
                    .with_single_cert(id.certs.clone(), id.key.clone_key())?;
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls)))
        };
        let tcp = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        Ok(Listener { tcp, tls, tokens })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Whether it serves HTTPS.
    pub fn is_https(&self) -> bool {
        self.tls.is_some()
    }
}

/// What every handler reaches.
#[derive(Debug)]
pub(crate) struct Ops {
    hub: Arc<Hub>,
    tokens: Tokens,
    registry: prometheus_client::registry::Registry,
    /// The last readiness answer and when it was made: probes (and anyone
    /// who can reach the port) get it for a second without touching the
    /// store again.
    ready: std::sync::Mutex<Option<(std::time::Instant, api::Readiness)>>,
}

/// Serves `listener` for `hub` until the task is dropped.
pub(crate) async fn serve(hub: Arc<Hub>, listener: Listener) {
    let Listener { tcp, tls, tokens } = listener;
    let ops = Arc::new(Ops {
        registry: exposition::registry(hub.clone()),
        hub,
        tokens,
        ready: std::sync::Mutex::new(None),
    });
    let app = router(ops);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // The semaphore is never closed.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match tcp.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: back off, go on.
                tracing::warn!("operations surface: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // The client's address, for the console's sign-in bounds.
        let app = app
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = TowerToHyperService::new(app);
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let served = match tls {
                None => http.serve_connection(TokioIo::new(stream), service).await,
                Some(tls) => match tokio::time::timeout(HEADER_TIMEOUT, tls.accept(stream)).await {
                    Ok(Ok(stream)) => http.serve_connection(TokioIo::new(stream), service).await,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "operations surface: TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => return,
                },
            };
            if let Err(e) = served {
                tracing::debug!(%peer, "operations surface: connection ended: {e}");
            }
        });
    }
}

fn router(ops: Arc<Ops>) -> Router {
    let operator = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(api::status))
        .route("/api/v1/terminals", get(api::terminals))
        .route("/api/v1/groups", get(api::groups))
        .route("/api/v1/groups/{id}/bursts", get(api::bursts))
        .route("/api/v1/alerts", get(api::alerts))
        .route("/api/v1/drills", get(api::drills))
        .route("/api/v1/drills/{alert}", get(api::drill_report))
        .route("/api/v1/actions", get(api::actions))
        .route("/api/v1/terminals/{id}/disconnect", post(api::disconnect))
        .route("/api/v1/terminals/{id}/sos/cancel", post(api::cancel_sos))
        .route("/api/v1/terminals/{id}/revoke", post(api::revoke))
        .route("/api/v1/terminals/{id}/unrevoke", post(api::unrevoke))
        .route("/api/v1/recordings", get(api::recordings))
        .route("/api/v1/recordings/{id}/audio", get(api::recording_audio))
        .route("/api/v1/link", get(api::link))
        .route_layer(middleware::from_fn_with_state(ops.clone(), authorize));
    let console = Router::new()
        .route("/console/api/signout", post(console::signout))
        .route("/console/api/session", get(console::session))
        .route("/console/api/tree", get(console::tree))
        .route("/console/api/groups/{id}/bursts", get(console::bursts))
        .route(
            "/console/api/recordings/{id}/audio",
            get(console::recording_audio),
        )
        .route(
            "/console/api/drills/{alert}/report.csv",
            get(console::drill_csv),
        )
        .route_layer(middleware::from_fn_with_state(
            ops.clone(),
            console::authorize,
        ))
        .route("/console/api/signin", post(console::signin))
        .route("/console", get(console::asset))
        .route("/console/", get(console::asset))
        .route("/console/{*path}", get(console::asset));
    let console = if ops.hub.config().console.enabled {
        console
    } else {
        Router::new()
    };
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(api::readyz))
        .merge(operator)
        .merge(console)
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such endpoint\n") })
        .with_state(ops)
}

/// The operator who made a request (inserted by [`authorize`]).
#[derive(Debug, Clone)]
pub(crate) struct Operator(pub(crate) String);

/// Lets a request with a known operator's `Authorization: Bearer` token
/// through, with the operator's name; anything else gets 401.
async fn authorize(State(ops): State<Arc<Ops>>, mut request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    let Some(name) = presented.and_then(|t| ops.tokens.operator(t)) else {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "an operator token is required: Authorization: Bearer <token> (docs/OPERATIONS.md)\n",
        )
            .into_response();
    };
    let operator = Operator(name.to_owned());
    request.extensions_mut().insert(operator);
    next.run(request).await
}

async fn metrics(State(ops): State<Arc<Ops>>) -> Response {
    match exposition::encode(&ops.registry) {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
