//! The browser console's pages and its HTTP API (docs/CONSOLE.md): the
//! static assets embedded from `gateway/console/`, sign-in and sign-out,
//! and the few reads the protocol does not carry (the org tree with
//! presence, positions and link quality; burst history with recordings;
//! drill reports as CSV). Everything live (floor, voice, alerts, receipts,
//! SOS) goes over WebTransport in the protocol itself.
//!
//! Every API call but sign-in carries `Authorization: Bearer <token>`,
//! the session token sign-in returned; an operator sees only the subtree
//! of the console terminal they sit at.

use std::net::SocketAddr;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ptt_codec::GroupId;
use serde::Deserialize;
use serde_json::{json, Value};

use super::Ops;
use crate::alert::now_ms;
use crate::hub::{token_hash, Attempter};
use crate::metrics::Metrics;
use crate::store::{self, ConsoleSession, RecordingQuery};

/// The console's static files, embedded in the binary.
#[derive(rust_embed::RustEmbed)]
#[folder = "console/"]
#[exclude = "test/*"]
#[exclude = "dev/*"]
struct Assets;

/// The console page may run only its own scripts, talk only to its own
/// origin and to WebTransport (`https:`, the QUIC port), and show images
/// of its own, from photos (`blob:`) or a configured tile server: what a
/// member's report carries can never run in the dispatcher's page.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
                   img-src 'self' blob: data: https:; media-src 'self' blob:; \
                   connect-src 'self' https:; worker-src 'self'; object-src 'none'; \
                   base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// Sign-in names and passwords longer than this are refused unchecked.
const MAX_CREDENTIAL_BYTES: usize = 256;

/// Hashes `password` with argon2id and a random salt, as a PHC string
/// (`ptt-gateway operator add`).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Whether `password` matches `phc`, a hash from [`hash_password`].
fn password_matches(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// A hash to check wrong names against, so that an unknown name takes as
/// long as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy").unwrap_or_default())
}

/// The signed-in operator of a request and the token it presented
/// (inserted by [`authorize`]).
#[derive(Debug, Clone)]
pub(crate) struct Signed(ConsoleSession, Vec<u8>);

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// `GET /console` and everything under `/console/`: the embedded assets
/// (`index.html` for the folder itself).
pub(super) async fn asset(request: Request) -> Response {
    let path = request.uri().path();
    let path = path
        .strip_prefix("/console")
        .unwrap_or(path)
        .trim_start_matches('/');
    if path.is_empty() && !request.uri().path().ends_with('/') {
        // Relative links in the page resolve against /console/.
        return (
            StatusCode::MOVED_PERMANENTLY,
            [(header::LOCATION, "/console/")],
        )
            .into_response();
    }
    let path = if path.is_empty() { "index.html" } else { path };
    match Assets::get(path) {
        Some(file) => {
            let mime = mime_of(path);
            (
                [
                    (header::CONTENT_TYPE, mime),
                    (header::CACHE_CONTROL, "no-cache"),
                    (header::CONTENT_SECURITY_POLICY, CSP),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                ],
                file.data.into_owned(),
            )
                .into_response()
        }
        None => error(StatusCode::NOT_FOUND, format!("no console file {path}")),
    }
}

/// The media type of an asset, by its extension.
fn mime_of(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("wav") => "audio/wav",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}

/// Lets a request with a live console session's Bearer token through;
/// anything else gets 401.
pub(super) async fn authorize(
    State(ops): State<Arc<Ops>>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| hex::decode(t.trim()).ok());
    let signed = token.and_then(|t| {
        let session = ops.hub.consoles().find(&token_hash(&t), now_ms())?;
        Some(Signed(session, t))
    });
    let Some(signed) = signed else {
        return error(
            StatusCode::UNAUTHORIZED,
            "sign in first (or again: the session ended)",
        );
    };
    request.extensions_mut().insert(signed);
    next.run(request).await
}

#[derive(Debug, Deserialize)]
pub(super) struct SignIn {
    name: String,
    password: String,
}

/// `POST /console/api/signin`: checks the password and starts a session.
pub(super) async fn signin(
    State(ops): State<Arc<Ops>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(form): Json<SignIn>,
) -> Response {
    let hub = &ops.hub;
    let metrics = hub.metrics();
    if form.name.len() > MAX_CREDENTIAL_BYTES || form.password.len() > MAX_CREDENTIAL_BYTES {
        return error(StatusCode::BAD_REQUEST, "name or password too long");
    }
    let who = [
        Attempter::Name(form.name.clone()),
        Attempter::Address(peer.ip()),
    ];
    let now = now_ms();
    if hub.consoles().throttled(&who, now) {
        Metrics::add(&metrics.console_signins_throttled, 1);
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed sign-ins; wait 15 minutes or ask an administrator",
        );
    }
    // At most `console.password_checks` argon2 checks at once; the
    // semaphore is never closed.
    let Ok(_check) = hub.consoles().checks().clone().acquire_owned().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    };
    let name = form.name.clone();
    let store = hub.desk().store().clone();
    let checked = tokio::task::spawn_blocking(move || {
        let found = store.operator_password(&name)?;
        let phc = found.as_ref().map_or(decoy_hash(), |(_, phc)| phc.as_str());
        let matches = password_matches(phc, &form.password);
        Ok::<_, store::Error>(found.filter(|_| matches).map(|(op, _)| op))
    })
    .await;
    let operator = match checked {
        Ok(Ok(Some(operator))) => operator,
        Ok(Ok(None)) => {
            Metrics::add(&metrics.console_signin_failures, 1);
            hub.consoles().failed(&who, now);
            tracing::warn!(name = %form.name, %peer, "console sign-in failed");
            return error(StatusCode::UNAUTHORIZED, "wrong name or password");
        }
        Ok(Err(e)) => return super::api::internal(e),
        Err(e) => return super::api::internal(e),
    };
    let org = hub.org();
    if !org
        .terminal(operator.terminal)
        .is_some_and(|t| t.is_console())
    {
        return error(
            StatusCode::FORBIDDEN,
            format!(
                "operator {} sits at terminal {}, which is not a console of the org",
                operator.name, operator.terminal
            ),
        );
    }
    let token: [u8; 32] = rand::random();
    let session = ConsoleSession {
        token_hash: token_hash(&token),
        operator: operator.name.clone(),
        terminal: operator.terminal,
        created_ms: now,
        expires_ms: now + u64::from(hub.config().console.session_minutes) * 60_000,
    };
    let stored = session.clone();
    if let Err(e) = hub
        .desk()
        .blocking(move |s| s.put_console_session(&stored))
        .await
    {
        return super::api::internal(e);
    }
    hub.consoles().insert(session.clone());
    hub.consoles().succeeded(&who[0]);
    Metrics::add(&metrics.console_signins, 1);
    tracing::info!(operator = %operator.name, terminal = %operator.terminal, %peer, "console signed in");
    Json(describe(&ops, &session, &hex::encode(token), &headers)).into_response()
}

/// `POST /console/api/signout`: ends the session and closes its
/// WebTransport session.
pub(super) async fn signout(
    State(ops): State<Arc<Ops>>,
    axum::Extension(Signed(session, _)): axum::Extension<Signed>,
) -> Response {
    let hash = session.token_hash;
    if let Err(e) = ops
        .hub
        .desk()
        .blocking(move |s| s.remove_console_session(&hash))
        .await
    {
        return super::api::internal(e);
    }
    if let Some(ended) = ops.hub.consoles().remove(&session.token_hash) {
        ops.hub.end_consoles(&[ended]);
    }
    tracing::info!(operator = %session.operator, "console signed out");
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /console/api/session`: the session again, with the current
/// certificate hashes.
pub(super) async fn session(
    State(ops): State<Arc<Ops>>,
    axum::Extension(Signed(session, token)): axum::Extension<Signed>,
    headers: HeaderMap,
) -> Response {
    Json(describe(&ops, &session, &hex::encode(token), &headers)).into_response()
}

/// The `Session` object of docs/CONSOLE.md.
fn describe(ops: &Ops, session: &ConsoleSession, token: &str, headers: &HeaderMap) -> Value {
    let hub = &ops.hub;
    let org = hub.org();
    let terminal = org.terminal(session.terminal);
    let node = terminal.map(|t| t.node).unwrap_or_default();
    let hashes: Vec<String> = match hub.web() {
        crate::tls::Web::OwnCerts(certs) => certs.hashes().iter().map(hex::encode).collect(),
        _ => Vec::new(),
    };
    json!({
        "token": token,
        "operator": session.operator,
        "terminal": session.terminal.0,
        "terminal_name": terminal.map(|t| t.name.as_str()).unwrap_or_default(),
        "node": node,
        "node_name": org.node(GroupId(node)).map(|n| n.name.as_str()).unwrap_or_default(),
        "expires_ms": session.expires_ms,
        "webtransport": {
            "url": webtransport_url(hub.status().quic_addr.get().copied(), headers),
            "cert_hashes": hashes,
        },
        "map": { "tiles": hub.config().console.tiles },
    })
}

/// Where the page opens its WebTransport session: the host the page was
/// loaded from (its `Host` header), on the gateway's QUIC port.
fn webtransport_url(quic: Option<SocketAddr>, headers: &HeaderMap) -> String {
    let port = quic.map_or(4433, |a| a.port());
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(host_without_port)
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| {
            quic.filter(|a| !a.ip().is_unspecified()).map_or_else(
                || "127.0.0.1".to_owned(),
                |a| match a {
                    SocketAddr::V4(a) => a.ip().to_string(),
                    SocketAddr::V6(a) => format!("[{}]", a.ip()),
                },
            )
        });
    format!("https://{host}:{port}{}", crate::webtransport::PATH)
}

/// `host:port`, `[v6]:port` or a bare host, without the port.
fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Whether `node` is the operator's node or under it.
fn in_scope(ops: &Ops, session: &ConsoleSession, node: u32) -> bool {
    let org = ops.hub.org();
    org.terminal(session.terminal)
        .is_some_and(|t| org.is_ancestor_or_self(t.node, node))
}

/// `GET /console/api/tree`: the operator's subtree, its terminals with
/// presence, last position and link quality.
pub(super) async fn tree(
    State(ops): State<Arc<Ops>>,
    axum::Extension(Signed(session, _)): axum::Extension<Signed>,
) -> Response {
    let hub = &ops.hub;
    let org = hub.org();
    let Some(root) = org.terminal(session.terminal).map(|t| t.node) else {
        return error(
            StatusCode::FORBIDDEN,
            "your console is no longer in the org",
        );
    };
    let nodes: Vec<Value> = org
        .groups()
        .filter_map(|g| org.node(g))
        .filter(|n| org.is_ancestor_or_self(root, n.id))
        .map(|n| json!({ "id": n.id, "parent": n.parent, "kind": n.kind, "name": n.name }))
        .collect();
    let registry = hub.registry();
    let terminals: Vec<Value> = org
        .terminals()
        .filter(|t| org.is_ancestor_or_self(root, t.node))
        .map(|t| {
            let link = registry.conn(t.id);
            let position = hub.watch().last(t.id).map(|f| {
                json!({
                    "lat": f64::from(f.lat_e7) / 1e7,
                    "lon": f64::from(f.lon_e7) / 1e7,
                    "accuracy_m": f.accuracy_m,
                    "at_ms": f.at_ms,
                })
            });
            let quality = link.as_ref().map(|l| {
                let stats = l.quic().stats();
                json!({
                    "rtt_ms": stats.path.rtt.as_secs_f64() * 1e3,
                    "lost_packets": stats.path.lost_packets,
                    "sent_packets": stats.path.sent_packets,
                })
            });
            json!({
                "id": t.id.0,
                "name": t.name,
                "role": t.role,
                "kind": t.kind,
                "node": t.node,
                "online": link.is_some() || hub.connected_at(t.id).is_some(),
                "gateway_node": hub.connected_at(t.id).filter(|n| !n.is_empty()).map(|n| n.to_string()),
                "position": position,
                "link": quality,
            })
        })
        .collect();
    Json(json!({ "root": root, "nodes": nodes, "terminals": terminals })).into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct Limit {
    limit: Option<u32>,
}

/// `GET /console/api/groups/{id}/bursts[?limit=N]`: recent bursts, newest
/// first, with their recordings.
pub(super) async fn bursts(
    State(ops): State<Arc<Ops>>,
    axum::Extension(Signed(session, _)): axum::Extension<Signed>,
    Path(id): Path<u32>,
    Query(q): Query<Limit>,
) -> Response {
    if !in_scope(&ops, &session, id) {
        return error(
            StatusCode::FORBIDDEN,
            format!("group {id} is outside your command"),
        );
    }
    let query = RecordingQuery {
        group: Some(id),
        limit: Some(q.limit.unwrap_or(50).clamp(1, 500)),
        ..RecordingQuery::default()
    };
    let rows = match ops.hub.desk().blocking(move |s| s.recordings(&query)).await {
        Ok(rows) => rows,
        Err(e) => return super::api::internal(e),
    };
    let org = ops.hub.org();
    let list: Vec<Value> = rows
        .iter()
        .rev()
        .map(|r| {
            json!({
                "burst": r.burst,
                "speaker": r.terminal.0,
                "speaker_name": org.terminal(r.terminal).map(|t| t.name.as_str()).unwrap_or_default(),
                "class": r.class,
                "started_ms": r.started_ms,
                "ended_ms": r.ended_ms,
                "recording": r.path.as_ref().map(|_| r.id),
            })
        })
        .collect();
    Json(list).into_response()
}

/// `GET /console/api/recordings/{id}/audio`: a recording of a group in the
/// operator's subtree, as Ogg Opus.
pub(super) async fn recording_audio(
    State(ops): State<Arc<Ops>>,
    axum::Extension(Signed(session, _)): axum::Extension<Signed>,
    Path(id): Path<u64>,
    request: Request,
) -> Response {
    let group = match ops.hub.desk().blocking(move |s| s.recording(id)).await {
        Ok(Some(row)) => row.group,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no recording {id}")),
        Err(e) => return super::api::internal(e),
    };
    if !in_scope(&ops, &session, group) {
        return error(
            StatusCode::FORBIDDEN,
            format!("recording {id} is outside your command"),
        );
    }
    super::api::recording_audio(State(ops), Path(id), request).await
}

/// `GET /console/api/drills/{alert}/report.csv`: the drill report as the
/// CLI's `drill-report --format csv` writes it, for a drill issued at or
/// under the operator's node.
pub(super) async fn drill_csv(
    State(ops): State<Arc<Ops>>,
    axum::Extension(Signed(session, _)): axum::Extension<Signed>,
    Path(alert): Path<u64>,
) -> Response {
    let hub = ops.hub.clone();
    let made = tokio::task::spawn_blocking(move || {
        let Some(stored) = hub.desk().store().alert(alert)? else {
            return Err(store::Error::UnknownAlert(alert));
        };
        let org = hub.org();
        let issuer_node = org.terminal(stored.issuer).map(|t| t.node);
        Ok((
            issuer_node,
            crate::drill::from_store(
                hub.desk().store(),
                &org,
                &hub.config().drill.marks_s,
                alert,
                now_ms(),
            )?,
        ))
    })
    .await;
    match made {
        Ok(Ok((issuer_node, report))) => {
            if !issuer_node.is_some_and(|n| in_scope(&ops, &session, n)) {
                return error(
                    StatusCode::FORBIDDEN,
                    format!("drill {alert} is outside your command"),
                );
            }
            (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"drill-{alert}.csv\""),
                    ),
                ],
                report.to_csv(),
            )
                .into_response()
        }
        Ok(Err(e @ (store::Error::UnknownAlert(_) | store::Error::NotADrill { .. }))) => {
            error(StatusCode::NOT_FOUND, e.to_string())
        }
        Ok(Err(e)) => super::api::internal(e),
        Err(e) => super::api::internal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_check() {
        let phc = hash_password("城南 2026").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(password_matches(&phc, "城南 2026"));
        assert!(!password_matches(&phc, "城南 2027"));
        assert!(!password_matches("not a hash", "x"));
        assert_ne!(phc, hash_password("城南 2026").unwrap(), "salted");
    }

    #[test]
    fn the_webtransport_url_follows_the_page_host() {
        let mut headers = HeaderMap::new();
        let quic = Some("0.0.0.0:4433".parse().unwrap());
        headers.insert(header::HOST, "10.1.2.3:9090".parse().unwrap());
        assert_eq!(
            webtransport_url(quic, &headers),
            "https://10.1.2.3:4433/console"
        );
        headers.insert(header::HOST, "[::1]:9090".parse().unwrap());
        assert_eq!(
            webtransport_url(quic, &headers),
            "https://[::1]:4433/console"
        );
        headers.insert(header::HOST, "console.example".parse().unwrap());
        assert_eq!(
            webtransport_url(quic, &headers),
            "https://console.example:4433/console"
        );
        let none = HeaderMap::new();
        assert_eq!(
            webtransport_url(Some("127.0.0.1:5000".parse().unwrap()), &none),
            "https://127.0.0.1:5000/console"
        );
    }

    #[test]
    fn asset_types() {
        assert_eq!(mime_of("index.html"), "text/html; charset=utf-8");
        assert_eq!(mime_of("js/app.js"), "text/javascript; charset=utf-8");
        assert_eq!(mime_of("x"), "application/octet-stream");
    }
}
